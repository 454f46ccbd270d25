//! Configuration: loaded, layered and checked completely before any I/O.
//!
//! Layers: built-in defaults, then the TOML file, then environment variables
//! `PAYRELAY__SECTION__KEY`. Environment values are laid over the file as
//! strings and take the type of the key they set when it is read (a generic
//! layering crate guesses types up front, which turns a sender number like
//! `+15005550006` into an integer). The raw values are
//! then read section by section so that one run of `payrelay check` lists
//! every problem with its key, instead of stopping at the first. Values of the
//! form `env:NAME` are read from the environment into [`Secret`]s, which never
//! print their contents. Relative paths resolve against the config file's
//! folder, so the service behaves the same from any working directory.

pub mod journey;
pub(crate) mod raw;
mod routing;

pub use crate::channels::ratelimit::RateLimitConfig;
pub use crate::channels::ChannelsConfig;
pub(crate) use crate::settings::{resolve, Problems};
pub use crate::settings::{BillerConfig, Problem, Secret};
pub use journey::{Journey, JourneyChoice, JourneyStep, StepTime};
pub use raw::{DaysToDue, OneOrMany};

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use url::Url;

use crate::domain::ChannelName;

/// Every problem found in one config file.
#[derive(Debug, thiserror::Error)]
#[error("{} has {} problem(s):\n{}", .path.display(), .problems.len(), list(.problems))]
pub struct ConfigError {
    pub path: PathBuf,
    pub problems: Vec<Problem>,
    /// What the templates check needs, when the file was readable enough to
    /// tell: `payrelay check` reports template problems with the config's.
    pub template_uses: Option<TemplateUses>,
}

/// The configuration built into the binary: the local broker, a SQLite
/// store under `var/` and the `file` transports, so `payrelay serve` runs
/// its whole job on a fresh machine. `payrelay config` prints it.
pub const BUILT_IN: &str = include_str!("../../config.toml");

/// The file `--config` names when it is not given.
pub const DEFAULT_PATH: &str = "config.toml";

/// Where the configuration comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    File(PathBuf),
    /// [`BUILT_IN`], its relative paths resolved against the working folder.
    BuiltIn,
}

impl Source {
    /// The file given with `--config` (it must exist); else `config.toml`
    /// in the working folder if there is one; else the built-in defaults.
    pub fn locate(given: Option<&Path>) -> Source {
        match given {
            Some(path) => Source::File(path.to_owned()),
            None if Path::new(DEFAULT_PATH).is_file() => Source::File(PathBuf::from(DEFAULT_PATH)),
            None => Source::BuiltIn,
        }
    }

    /// How reports name it.
    pub fn display(&self) -> String {
        match self {
            Source::File(path) => path.display().to_string(),
            Source::BuiltIn => "the built-in configuration".to_owned(),
        }
    }
}

/// What the templates check needs from a config. It is known even when
/// other sections are broken, so one run of `payrelay check` lists template
/// problems beside config problems.
#[derive(Debug, Clone, Default)]
pub struct TemplateUses {
    /// `[templates] dir`, resolved.
    pub dir: Option<PathBuf>,
    /// Languages templates must exist in: the key that asks, the locale,
    /// and whether it is a biller's default (sent in English otherwise).
    pub locales: Vec<(String, String, bool)>,
    /// Handlebars snippets from the config, by key, rendered with the
    /// sample invoice so a misspelt field fails at check time.
    pub snippets: Vec<(String, String)>,
}

impl TemplateUses {
    fn of(
        templates: &TemplatesConfig,
        billers: &BTreeMap<String, BillerConfig>,
        channels: &ChannelsConfig,
        routing: &RoutingConfig,
    ) -> TemplateUses {
        let mut uses = TemplateUses {
            dir: templates.dir.clone(),
            ..TemplateUses::default()
        };
        for (id, biller) in billers {
            if let Some(locale) = &biller.default_locale {
                uses.locales
                    .push((format!("billers.{id}.default_locale"), locale.clone(), true));
            }
        }
        for (i, rule) in routing.rules.iter().enumerate() {
            for locale in rule.locale.iter().flatten() {
                uses.locales
                    .push((format!("routing.rules[{i}].locale"), locale.clone(), false));
            }
        }
        if let Some(whatsapp) = &channels.whatsapp {
            for (i, snippet) in whatsapp.parameters.iter().enumerate() {
                uses.snippets
                    .push((format!("channels.whatsapp.parameters[{i}]"), snippet.clone()));
            }
        }
        for (id, biller) in billers {
            for (i, snippet) in biller.whatsapp_parameters.iter().flatten().enumerate() {
                uses.snippets
                    .push((format!("billers.{id}.whatsapp_parameters[{i}]"), snippet.clone()));
            }
        }
        uses
    }
}

fn list(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  - {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The whole, checked configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The config file's folder; relative paths were resolved against it.
    pub base_dir: PathBuf,
    pub broker: BrokerConfig,
    pub store: StoreConfig,
    pub http: HttpConfig,
    pub paylink: PaylinkConfig,
    pub billers: BTreeMap<String, BillerConfig>,
    pub channels: ChannelsConfig,
    pub templates: TemplatesConfig,
    pub routing: RoutingConfig,
    /// `[journeys.<name>]`, by name.
    pub journeys: BTreeMap<String, Journey>,
    /// The rate limits instances share through Redis; `None` (no
    /// `[rate_limit]` section): each instance paces its channels alone.
    pub rate_limit: Option<RateLimitConfig>,
}

#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Holds the broker password, hence a secret.
    pub url: Secret,
    pub queue: String,
    pub events_exchange: String,
    pub prefetch: u16,
    pub delivery_limit: u32,
    /// How long in-flight invoices may take to finish on shutdown; what is
    /// left then goes back to the queue unacked.
    pub shutdown_deadline: std::time::Duration,
}

impl BrokerConfig {
    /// `<queue>.dead`, where malformed messages go.
    pub fn dead_letter_queue(&self) -> String {
        format!("{}.dead", self.queue)
    }
}

#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// `sqlite://` with its path already resolved against the config folder,
    /// or `postgres://`, whose password makes the whole URL a secret.
    pub url: Secret,
    /// How long the customer's personal data is kept after an invoice is
    /// closed or its links expired; `None`: kept until erased on request.
    pub personal_data_ttl: Option<Duration>,
}

#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    /// Where the operators' routes are served (`/metrics`, `/v1/invoices`,
    /// `/v1/stats`, `/v1/customers`, `/console`), apart from `listen`,
    /// which then answers 404 for them; `None`: `listen` serves them too.
    pub admin_listen: Option<SocketAddr>,
    pub public_base_url: Url,
    pub admin_token: Option<Secret>,
    /// How long a client may take to send a request's headers, and how long
    /// an idle connection stays open: slow or silent clients hold a socket each.
    pub header_timeout: Duration,
    /// How long one request may take, body included, before it is answered 408.
    pub request_timeout: Duration,
    /// Connections served at once; more wait in the listen backlog, so a
    /// flood cannot use up the file descriptors the channels need.
    pub max_connections: usize,
    /// The largest request body read (payment confirmations, webhooks); 413 above it.
    pub max_body_bytes: usize,
    /// Lookups of pay links that do not exist, per client address: guessing
    /// and crawling get 429 past it; real links are never counted.
    pub unknown_links_per_minute: std::num::NonZeroU32,
    /// Behind a proxy, the header it puts the client's address in (its last
    /// value counts); without it, the connection's address.
    pub client_ip_header: Option<axum::http::HeaderName>,
}

#[derive(Debug, Clone)]
pub struct PaylinkConfig {
    pub ttl: Duration,
}

#[derive(Debug, Clone, Default)]
pub struct TemplatesConfig {
    /// Files here override the built-in templates one by one.
    pub dir: Option<PathBuf>,
}

/// How channels are tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// Next channel only when the previous one failed.
    Fallback,
    /// Every channel.
    All,
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Strategy::Fallback => "fallback",
            Strategy::All => "all",
        })
    }
}

#[derive(Debug, Clone)]
pub struct RoutingConfig {
    pub default: Vec<ChannelName>,
    pub default_strategy: Strategy,
    pub respect_preferences: bool,
    /// When SMS, WhatsApp and Messenger wait, in the customer's local time.
    pub quiet_hours: Option<crate::domain::quiet::QuietHours>,
    pub rules: Vec<Rule>,
    /// The journey when neither the deciding rule nor the biller names
    /// one; `None`: no reminders.
    pub journey: Option<String>,
    /// Reminders and escalations one customer receives a day, across all
    /// their invoices; over it they wait for the next day's `send_at`.
    /// First requests are never delayed, but count.
    pub max_messages_per_customer_per_day: Option<std::num::NonZeroU32>,
    /// How long a transient failure on a step's last channel is tried again
    /// (at growing intervals) before the channel counts as failed.
    pub retry_for: Duration,
}

/// A routing rule (docs/routing.md): all set conditions must hold.
#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    pub biller: Option<Vec<String>>,
    pub source: Option<Vec<String>>,
    pub currency: Option<Vec<String>>,
    pub country: Option<Vec<String>>,
    pub locale: Option<Vec<String>>,
    /// In minor units would need a currency; kept as a decimal in major units.
    pub min_amount: Option<f64>,
    pub max_amount: Option<f64>,
    pub days_to_due: Option<DaysToDue>,
    pub channels: Vec<ChannelName>,
    pub strategy: Strategy,
    /// The journey after the first request this rule routes; `None`: the
    /// biller's, else `[routing] journey`.
    pub journey: Option<JourneyChoice>,
}

impl Config {
    /// Loads and checks `path` with the environment layered on top.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::load_from(&Source::File(path.to_owned()))
    }

    /// Loads and checks a config file or the built-in one, with the
    /// environment layered on top.
    pub fn load_from(source: &Source) -> Result<Config, ConfigError> {
        let fail = |problems: Vec<Problem>| ConfigError {
            path: PathBuf::from(source.display()),
            problems,
            template_uses: None,
        };
        let (text, base_dir) = match source {
            Source::BuiltIn => (BUILT_IN.to_owned(), PathBuf::from(".")),
            Source::File(path) => {
                if !path.is_file() {
                    return Err(fail(vec![Problem {
                        key: String::new(),
                        message: "file not found (pass --config PATH, or run without --config in a folder with no \
                                  config.toml to use the built-in configuration)"
                            .into(),
                    }]));
                }
                let text = std::fs::read_to_string(path).map_err(|e| {
                    fail(vec![Problem {
                        key: String::new(),
                        message: format!("cannot read: {e}"),
                    }])
                })?;
                let base_dir = path
                    .parent()
                    .map(|p| if p.as_os_str().is_empty() { Path::new(".") } else { p })
                    .unwrap_or(Path::new("."))
                    .to_path_buf();
                (text, base_dir)
            }
        };
        let vars: Vec<(String, String)> = std::env::vars().filter(|(k, _)| k.starts_with(ENV_PREFIX)).collect();
        let value = layered(&text, vars.iter().cloned()).map_err(|p| fail(vec![p]))?;
        let mut problems = Problems::default();
        let (config, template_uses) = raw::check(value, base_dir, &mut problems, &|name| std::env::var(name).ok());
        match config {
            Some(c) if problems.0.is_empty() => Ok(c),
            _ => {
                let mut problems = problems.0;
                name_variables(&mut problems, &vars);
                Err(ConfigError {
                    template_uses,
                    ..fail(problems)
                })
            }
        }
    }

    /// What the templates check needs from this config.
    pub fn template_uses(&self) -> TemplateUses {
        TemplateUses::of(&self.templates, &self.billers, &self.channels, &self.routing)
    }

    /// Checks a TOML text with a given environment; for tests and tools.
    pub fn from_toml(
        text: &str,
        base_dir: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, Vec<Problem>> {
        Config::from_layers(text, std::iter::empty(), base_dir, env)
    }

    /// Like [`Config::from_toml`], with `PAYRELAY__…` variables laid over the text.
    pub fn from_layers(
        text: &str,
        vars: impl IntoIterator<Item = (String, String)>,
        base_dir: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, Vec<Problem>> {
        let vars: Vec<(String, String)> = vars.into_iter().collect();
        let value = layered(text, vars.iter().cloned()).map_err(|p| vec![p])?;
        let mut problems = Problems::default();
        match raw::check(value, base_dir.to_path_buf(), &mut problems, env) {
            (Some(c), _) if problems.0.is_empty() => Ok(c),
            _ => {
                let mut problems = problems.0;
                name_variables(&mut problems, &vars);
                Err(problems)
            }
        }
    }

    /// Resolves a path from the config against the config file's folder.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        resolve(&self.base_dir, path)
    }
}

/// Environment variables that set config keys start with this.
pub const ENV_PREFIX: &str = "PAYRELAY__";

/// Parses the TOML text and lays `PAYRELAY__SECTION__KEY=value` over it, the
/// value as a string (see the module doc).
fn layered(text: &str, vars: impl IntoIterator<Item = (String, String)>) -> Result<serde_json::Value, Problem> {
    let table: toml::Table = toml::from_str(text).map_err(|e| Problem {
        key: String::new(),
        message: format!("not valid TOML: {e}"),
    })?;
    let mut root = serde_json::to_value(table).map_err(|e| Problem {
        key: String::new(),
        message: e.to_string(),
    })?;
    for (name, value) in vars {
        let Some(path) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let keys: Vec<String> = path.split("__").map(str::to_ascii_lowercase).collect();
        set_path(&mut root, &keys, value);
    }
    Ok(root)
}

/// Adds to each problem the `PAYRELAY__…` variable that set its key (or a
/// table above it), since the file the operator would look in does not
/// hold the bad value.
fn name_variables(problems: &mut [Problem], vars: &[(String, String)]) {
    for (name, _) in vars {
        let Some(path) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let key = path
            .split("__")
            .map(str::to_ascii_lowercase)
            .collect::<Vec<_>>()
            .join(".");
        for problem in problems.iter_mut() {
            let about = problem.key == key
                || problem.key.starts_with(&format!("{key}."))
                || problem.key.starts_with(&format!("{key}["));
            if about && !problem.message.contains(name.as_str()) {
                problem.message.push_str(&format!(" (set by {name})"));
            }
        }
    }
}

/// Sets `keys` (a path of table names) to a string, making tables on the way.
fn set_path(node: &mut serde_json::Value, keys: &[String], value: String) {
    let Some(map) = node.as_object_mut() else { return };
    match keys {
        [] => {}
        [last] => {
            map.insert(last.clone(), serde_json::Value::String(value));
        }
        [first, rest @ ..] => {
            let child = map
                .entry(first.clone())
                .or_insert_with(|| serde_json::Value::Object(Default::default()));
            if !child.is_object() {
                *child = serde_json::Value::Object(Default::default());
            }
            set_path(child, rest, value);
        }
    }
}

#[cfg(test)]
mod tests;
