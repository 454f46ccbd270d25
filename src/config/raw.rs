//! Reading the layered config value section by section, collecting problems.

use crate::settings::{duration, read, secret, EnvLookup};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Deserialize;
use serde_json::{Map, Value};
use url::Url;

use super::{
    resolve, BillerConfig, BrokerConfig, ChannelsConfig, Config, HttpConfig, Journey, JourneyChoice, JourneyStep,
    PaylinkConfig, Problems, RateLimitConfig, RoutingConfig, Rule, Secret, StepTime, StoreConfig, Strategy,
    TemplateUses, TemplatesConfig,
};
use crate::channels::email::EmailConfig;
use crate::channels::messenger::MessengerConfig;
use crate::channels::sms::SmsConfig;
use crate::channels::whatsapp::WhatsappConfig;
use crate::domain::ChannelName;

/// One value or a list of them, as rule conditions and a biller's
/// `webhook_secret` (several while it rotates) accept.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// `days_to_due = { min = .., max = .. }`; negative days mean overdue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaysToDue {
    pub min: Option<i64>,
    pub max: Option<i64>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Decimal {
    Number(f64),
    Text(String),
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawBroker {
    url: Option<String>,
    queue: Option<String>,
    events_exchange: Option<String>,
    prefetch: Option<u16>,
    delivery_limit: Option<u32>,
    shutdown_deadline: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawStore {
    url: Option<String>,
    personal_data_ttl: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawHttp {
    listen: Option<String>,
    admin_listen: Option<String>,
    public_base_url: Option<String>,
    admin_token: Option<String>,
    header_timeout: Option<String>,
    request_timeout: Option<String>,
    max_connections: Option<usize>,
    max_body_bytes: Option<usize>,
    unknown_links_per_minute: Option<u32>,
    client_ip_header: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawPaylink {
    ttl: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawBiller {
    name: Option<String>,
    checkout_url: Option<String>,
    default_locale: Option<String>,
    webhook_secret: Option<OneOrMany>,
    api_token: Option<String>,
    amqp_user: Option<String>,
    timezone: Option<String>,
    email_from: Option<String>,
    whatsapp_template: Option<String>,
    whatsapp_parameters: Option<Vec<String>>,
    journey: Option<String>,
    support: Option<String>,
    combine: Option<String>,
    brand_color: Option<String>,
    logo: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawRateLimit {
    redis_url: Option<String>,
    key_prefix: Option<String>,
    timeout: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawTemplates {
    dir: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawRouting {
    default: Option<Vec<String>>,
    default_strategy: Option<Strategy>,
    respect_preferences: Option<bool>,
    quiet_hours: Option<String>,
    rules: Vec<Value>,
    journey: Option<String>,
    max_messages_per_customer_per_day: Option<u32>,
    retry_for: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawRule {
    name: Option<String>,
    biller: Option<OneOrMany>,
    source: Option<OneOrMany>,
    currency: Option<OneOrMany>,
    country: Option<OneOrMany>,
    locale: Option<OneOrMany>,
    min_amount: Option<Decimal>,
    max_amount: Option<Decimal>,
    days_to_due: Option<DaysToDue>,
    channels: Vec<String>,
    strategy: Option<Strategy>,
    journey: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawJourney {
    send_at: Option<String>,
    escalate_after: Option<String>,
    steps: Option<Vec<Value>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawStep {
    name: Option<String>,
    /// Any value, so a bare number is refused with the spelling to use.
    due: Option<Value>,
    after: Option<String>,
    channels: Option<Vec<String>>,
    strategy: Option<Strategy>,
    template: Option<String>,
}

const SECTIONS: [&str; 10] = [
    "broker",
    "store",
    "http",
    "paylink",
    "billers",
    "channels",
    "templates",
    "routing",
    "journeys",
    "rate_limit",
];

fn take(root: &mut Map<String, Value>, key: &str) -> Value {
    root.remove(key).unwrap_or_else(|| Value::Object(Map::new()))
}

/// Reads every section; returns a config only if nothing blocked building
/// one, and what the templates check needs in any case (so that check runs
/// in the same pass as this one).
pub(crate) fn check(
    value: Value,
    base_dir: PathBuf,
    problems: &mut Problems,
    env: EnvLookup<'_>,
) -> (Option<Config>, Option<TemplateUses>) {
    let mut root = match value {
        Value::Object(m) => m,
        _ => {
            problems.push("", "the config must be a TOML table");
            return (None, None);
        }
    };
    let broker = check_broker(
        read(take(&mut root, "broker"), "broker", problems).unwrap_or_default(),
        env,
        problems,
    );
    let store = check_store(
        read(take(&mut root, "store"), "store", problems).unwrap_or_default(),
        &base_dir,
        env,
        problems,
    );
    let http = check_http(
        read(take(&mut root, "http"), "http", problems).unwrap_or_default(),
        env,
        problems,
    );
    let paylink = check_paylink(
        read(take(&mut root, "paylink"), "paylink", problems).unwrap_or_default(),
        problems,
    );
    // Every `[journeys.<name>]` section counts as declared, even one with
    // problems, so the rules and billers naming it are not also reported.
    let journey_names: Vec<String> = root
        .get("journeys")
        .and_then(Value::as_object)
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    let billers = check_billers(take(&mut root, "billers"), &base_dir, &journey_names, env, problems);
    let (channels, declared) = check_channels(take(&mut root, "channels"), &base_dir, env, problems);
    let templates_raw: RawTemplates = read(take(&mut root, "templates"), "templates", problems).unwrap_or_default();
    let templates = TemplatesConfig {
        dir: templates_raw.dir.map(|d| resolve(&base_dir, Path::new(&d))),
    };
    let routing = check_routing(
        take(&mut root, "routing"),
        &declared,
        &billers,
        &journey_names,
        problems,
    );
    let journeys = check_journeys(take(&mut root, "journeys"), &declared, problems);
    // Absent and empty differ here: no section keeps the per-instance limits.
    let rate_limit = root.remove("rate_limit").and_then(|v| {
        let raw = read(v, "rate_limit", problems)?;
        check_rate_limit(raw, env, problems)
    });
    for key in root.keys() {
        problems.push(
            key.clone(),
            format!("unknown section (a typo?); sections are {}", SECTIONS.join(", ")),
        );
    }
    check_api_tokens(http.as_ref(), &billers, problems);
    let uses = TemplateUses::of(&templates, &billers, &channels, &routing);
    let config = (|| {
        Some(Config {
            journeys,
            base_dir,
            broker: broker?,
            store: store?,
            http: http?,
            paylink: paylink?,
            billers,
            channels,
            templates,
            routing,
            rate_limit,
        })
    })();
    (config, Some(uses))
}

fn check_broker(raw: RawBroker, env: EnvLookup<'_>, problems: &mut Problems) -> Option<BrokerConfig> {
    let url = secret(
        "broker.url",
        Some(
            raw.url
                .unwrap_or_else(|| "amqp://guest:guest@127.0.0.1:5672/%2f".into()),
        ),
        env,
        problems,
    );
    if let Some(url) = &url {
        match Url::parse(url.expose()) {
            Ok(u) if u.scheme() == "amqp" || u.scheme() == "amqps" => {}
            _ => problems.push("broker.url", "must be an amqp:// or amqps:// URL"),
        }
    }
    let queue = raw.queue.unwrap_or_else(|| "payrelay.invoices".into());
    if queue.is_empty() || queue.len() > 250 {
        problems.push("broker.queue", "must be 1 to 250 characters");
    }
    let events_exchange = raw.events_exchange.unwrap_or_else(|| "payrelay.events".into());
    if events_exchange.is_empty() {
        problems.push("broker.events_exchange", "must not be empty");
    }
    let prefetch = raw.prefetch.unwrap_or(256);
    if prefetch == 0 {
        problems.push("broker.prefetch", "must be at least 1");
    }
    let delivery_limit = raw.delivery_limit.unwrap_or(10);
    if delivery_limit == 0 {
        problems.push("broker.delivery_limit", "must be at least 1");
    }
    let shutdown_deadline = duration(
        "broker.shutdown_deadline",
        raw.shutdown_deadline.as_deref().unwrap_or("30s"),
        problems,
    );
    Some(BrokerConfig {
        url: url?,
        queue,
        events_exchange,
        prefetch,
        delivery_limit,
        shutdown_deadline: shutdown_deadline?,
    })
}

/// `[store] url`: `sqlite://PATH`, resolved against the config folder, or a
/// `postgres://` / `postgresql://` URL. The whole URL may be `env:NAME`, and
/// so may a PostgreSQL URL's password
/// (`postgres://payrelay:env:PAYRELAY_DB_PASSWORD@db/payrelay`). Problems
/// never quote the URL: it may hold a password.
fn check_store(raw: RawStore, base_dir: &Path, env: EnvLookup<'_>, problems: &mut Problems) -> Option<StoreConfig> {
    const KEY: &str = "store.url";
    let personal_data_ttl = match raw.personal_data_ttl.as_deref() {
        None => Some(None),
        Some(text) => duration("store.personal_data_ttl", text, problems).map(Some),
    };
    let url = secret(
        KEY,
        Some(raw.url.unwrap_or_else(|| "sqlite://var/payrelay.db".into())),
        env,
        problems,
    )?;
    let text = url.expose();
    if let Some(path) = text.strip_prefix("sqlite://") {
        if path.is_empty() {
            problems.push(KEY, "sqlite:// needs a file path, like sqlite://var/payrelay.db");
            return None;
        }
        let path = resolve(base_dir, Path::new(path));
        return Some(StoreConfig {
            url: Secret::new(format!("sqlite://{}", path.display())),
            personal_data_ttl: personal_data_ttl?,
        });
    }
    if !(text.starts_with("postgres://") || text.starts_with("postgresql://")) {
        problems.push(
            KEY,
            "must be sqlite://PATH or postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE",
        );
        return None;
    }
    let Ok(mut parsed) = Url::parse(text) else {
        problems.push(KEY, "is not a valid postgres:// URL");
        return None;
    };
    let password = parsed
        .password()
        .map(|p| percent_encoding::percent_decode_str(p).decode_utf8_lossy().into_owned());
    if let Some(password) = password.filter(|p| p.starts_with("env:")) {
        let password = secret(KEY, Some(password), env, problems)?;
        if parsed.set_password(Some(password.expose())).is_err() {
            problems.push(KEY, "cannot take a password: the URL has no host");
            return None;
        }
    }
    // The parser `store::open` will use, so every URL that passes here opens.
    if let Err(e) = sqlx::postgres::PgConnectOptions::from_str(parsed.as_str()) {
        problems.push(KEY, format!("is not a PostgreSQL URL payrelay can use: {e}"));
        return None;
    }
    Some(StoreConfig {
        url: Secret::new(String::from(parsed)),
        personal_data_ttl: personal_data_ttl?,
    })
}

/// `[rate_limit]`: a Redis URL (or `env:NAME`), checked by the client that
/// will use it; problems never quote it, since it may hold a password.
fn check_rate_limit(raw: RawRateLimit, env: EnvLookup<'_>, problems: &mut Problems) -> Option<RateLimitConfig> {
    const URL: &str = "rate_limit.redis_url";
    let redis_url = match raw.redis_url {
        Some(text) => secret(URL, Some(text), env, problems).filter(|url| {
            let checked = crate::channels::ratelimit::check_redis_url(url.expose());
            if let Err(e) = &checked {
                problems.push(URL, e.clone());
            }
            checked.is_ok()
        }),
        None => {
            problems.push(
                URL,
                "is required in [rate_limit], like redis://127.0.0.1:6379 (without the section each instance paces alone)",
            );
            None
        }
    };
    let key_prefix = raw.key_prefix.unwrap_or_else(|| "payrelay".into());
    if key_prefix.is_empty()
        || key_prefix.len() > 100
        || key_prefix.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        problems.push(
            "rate_limit.key_prefix",
            "must be 1 to 100 characters without spaces, like \"payrelay\" or \"payrelay-staging\"",
        );
    }
    let timeout = duration(
        "rate_limit.timeout",
        raw.timeout.as_deref().unwrap_or("250ms"),
        problems,
    );
    Some(RateLimitConfig {
        redis_url: redis_url?,
        key_prefix,
        timeout: timeout?,
    })
}

/// Whether two listeners would take the same socket: the same port (other
/// than 0, which picks a free one) on the same address, or on any address
/// when either listens on all of them.
fn same_socket(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() != 0 && a.port() == b.port() && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

/// Far above any open-file limit a host grants one process.
const MAX_CONNECTIONS: usize = 65_536;

fn check_http(raw: RawHttp, env: EnvLookup<'_>, problems: &mut Problems) -> Option<HttpConfig> {
    let listen_text = raw.listen.unwrap_or_else(|| "127.0.0.1:8080".into());
    let listen = listen_text
        .parse()
        .map_err(|_| {
            problems.push(
                "http.listen",
                format!("\"{listen_text}\" is not an address like 127.0.0.1:8080"),
            )
        })
        .ok();
    let admin_listen = match raw.admin_listen {
        None => Some(None),
        Some(text) => {
            match text.parse::<SocketAddr>() {
                Err(_) => {
                    problems.push(
                        "http.admin_listen",
                        format!("\"{text}\" is not an address like 127.0.0.1:9090"),
                    );
                    None
                }
                Ok(admin) if listen.is_some_and(|listen| same_socket(listen, admin)) => {
                    problems.push(
                    "http.admin_listen",
                    format!("\"{text}\" is [http] listen's address too: the operators' routes need an address of their own"),
                );
                    None
                }
                Ok(admin) => Some(Some(admin)),
            }
        }
    };
    let base_text = raw.public_base_url.unwrap_or_else(|| format!("http://{listen_text}"));
    let public_base_url = match Url::parse(&base_text) {
        Ok(u) if (u.scheme() == "http" || u.scheme() == "https") && !u.cannot_be_a_base() => Some(u),
        _ => {
            problems.push("http.public_base_url", format!("\"{base_text}\" is not an http(s) URL"));
            None
        }
    };
    let admin_token = secret("http.admin_token", raw.admin_token, env, problems);
    let header_timeout = duration(
        "http.header_timeout",
        raw.header_timeout.as_deref().unwrap_or("10s"),
        problems,
    );
    let request_timeout = duration(
        "http.request_timeout",
        raw.request_timeout.as_deref().unwrap_or("30s"),
        problems,
    );
    let max_connections = raw.max_connections.unwrap_or(1024);
    let connections_ok = (1..=MAX_CONNECTIONS).contains(&max_connections);
    if !connections_ok {
        problems.push(
            "http.max_connections",
            format!("must be between 1 and {MAX_CONNECTIONS}"),
        );
    }
    let max_body_bytes = raw.max_body_bytes.unwrap_or(256 * 1024);
    let unknown_links_per_minute = std::num::NonZeroU32::new(raw.unknown_links_per_minute.unwrap_or(30));
    if unknown_links_per_minute.is_none() {
        problems.push("http.unknown_links_per_minute", "must be at least 1");
    }
    let client_ip_header = match raw
        .client_ip_header
        .map(|h| axum::http::HeaderName::from_str(&h).map_err(|_| h))
    {
        None => Some(None),
        Some(Ok(name)) => Some(Some(name)),
        Some(Err(text)) => {
            problems.push(
                "http.client_ip_header",
                format!("\"{text}\" is not an HTTP header name like X-Forwarded-For"),
            );
            None
        }
    };
    Some(HttpConfig {
        listen: listen?,
        admin_listen: admin_listen?,
        public_base_url: public_base_url?,
        admin_token,
        header_timeout: header_timeout?,
        request_timeout: request_timeout?,
        max_connections: connections_ok.then_some(max_connections)?,
        max_body_bytes,
        unknown_links_per_minute: unknown_links_per_minute?,
        client_ip_header: client_ip_header?,
    })
}

fn check_paylink(raw: RawPaylink, problems: &mut Problems) -> Option<PaylinkConfig> {
    let ttl = duration("paylink.ttl", raw.ttl.as_deref().unwrap_or("45d"), problems)?;
    Some(PaylinkConfig { ttl })
}

/// The checkout placeholders a biller may use (docs/configuration.md).
pub const CHECKOUT_PLACEHOLDERS: [&str; 6] = ["invoice_id", "biller_id", "amount", "amount_minor", "currency", "token"];

fn check_billers(
    value: Value,
    base_dir: &Path,
    journeys: &[String],
    env: EnvLookup<'_>,
    problems: &mut Problems,
) -> BTreeMap<String, BillerConfig> {
    let mut billers = BTreeMap::new();
    let Value::Object(map) = value else {
        problems.push("billers", "must be a table of [billers.<id>] sections");
        return billers;
    };
    if map.is_empty() {
        problems.push("billers", "no biller is configured: add a [billers.<id>] section");
    }
    for (id, v) in map {
        let prefix = format!("billers.{id}");
        if !crate::domain::ids::is_valid_biller_id(&id) {
            problems.push(
                prefix.clone(),
                "a biller id is 1 to 64 of a-z, 0-9, '_' and '-': it is the first word of its events' routing keys",
            );
        }
        let Some(raw) = read::<RawBiller>(v, &prefix, problems) else {
            continue;
        };
        let name = raw.name.unwrap_or_else(|| id.clone());
        let checkout_url = match raw.checkout_url {
            Some(u) => {
                check_checkout_url(&format!("{prefix}.checkout_url"), &u, problems);
                u
            }
            None => {
                problems.push(
                    format!("{prefix}.checkout_url"),
                    "is required: where the Pay button sends the customer",
                );
                String::new()
            }
        };
        let webhook_secret = webhook_secrets(&format!("{prefix}.webhook_secret"), raw.webhook_secret, env, problems);
        let api_token = secret(&format!("{prefix}.api_token"), raw.api_token, env, problems).filter(|token| {
            let blank = token.expose().trim().is_empty();
            if blank {
                problems.push(
                    format!("{prefix}.api_token"),
                    "is empty: give a long random token, or leave the key out",
                );
            }
            !blank
        });
        let email_from = raw.email_from.and_then(|f| {
            f.parse()
                .map_err(|_| {
                    problems.push(
                        format!("{prefix}.email_from"),
                        "is not a mailbox like \"ACME Billing <billing@acme.example>\"",
                    )
                })
                .ok()
        });
        let combine = raw
            .combine
            .and_then(|text| combine_window(&format!("{prefix}.combine"), &text, problems));
        billers.insert(
            id,
            BillerConfig {
                combine,
                name,
                checkout_url,
                default_locale: raw.default_locale,
                webhook_secret,
                api_token,
                amqp_user: raw.amqp_user.filter(|user| {
                    let blank = user.trim().is_empty();
                    if blank {
                        problems.push(
                            format!("{prefix}.amqp_user"),
                            "is empty: name the AMQP user this biller publishes as, or leave the key out",
                        );
                    }
                    !blank
                }),
                timezone: raw.timezone.filter(|tz| {
                    let known = crate::domain::quiet::time_zone(tz);
                    if let Err(e) = &known {
                        problems.push(format!("{prefix}.timezone"), e.clone());
                    }
                    known.is_ok()
                }),
                email_from,
                journey: raw
                    .journey
                    .map(|name| journey_choice(&format!("{prefix}.journey"), name, journeys, problems)),
                whatsapp_template: raw.whatsapp_template.filter(|name| {
                    let checked = crate::channels::whatsapp::check_template_name(name);
                    if let Err(e) = &checked {
                        problems.push(format!("{prefix}.whatsapp_template"), e.clone());
                    }
                    checked.is_ok()
                }),
                whatsapp_parameters: raw.whatsapp_parameters.inspect(|snippets| {
                    for (i, snippet) in snippets.iter().enumerate() {
                        if let Err(e) = crate::channels::whatsapp::check_parameter_snippet(snippet) {
                            problems.push(format!("{prefix}.whatsapp_parameters[{i}]"), e);
                        }
                    }
                }),
                support: raw.support.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()),
                brand_color: raw
                    .brand_color
                    .and_then(|color| brand_color(&format!("{prefix}.brand_color"), &color, problems)),
                logo: raw.logo.and_then(|file| {
                    logo(
                        &format!("{prefix}.logo"),
                        &resolve(base_dir, Path::new(&file)),
                        problems,
                    )
                }),
            },
        );
    }
    billers
}

/// `[billers.<id>] brand_color`: `#rrggbb`, kept in lowercase.
fn brand_color(key: &str, text: &str, problems: &mut Problems) -> Option<String> {
    let text = text.trim();
    let digits = text.strip_prefix('#').unwrap_or_default();
    if digits.len() == 6 && digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        Some(text.to_ascii_lowercase())
    } else {
        problems.push(
            key,
            format!("\"{text}\" is not a colour like \"#0b6bcb\" (# and six hex digits)"),
        );
        None
    }
}

/// The largest `[billers.<id>] logo`: a logo is shown small, and every
/// page a customer opens may fetch it.
pub(crate) const LARGEST_LOGO: usize = 256 * 1024;

/// `[billers.<id>] logo`: a PNG, JPEG or SVG file of at most
/// [`LARGEST_LOGO`] bytes, read now and served by payrelay.
fn logo(key: &str, path: &Path, problems: &mut Problems) -> Option<crate::settings::Logo> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) => {
            problems.push(key, format!("cannot read {}: {e}", path.display()));
            return None;
        }
    };
    if bytes.len() > LARGEST_LOGO {
        problems.push(
            key,
            format!(
                "{} is {} KiB; a logo may be at most {} KiB: export it smaller",
                path.display(),
                bytes.len().div_ceil(1024),
                LARGEST_LOGO / 1024
            ),
        );
        return None;
    }
    let Some(content_type) = image_type(&bytes) else {
        problems.push(key, format!("{} is not a PNG, JPEG or SVG image", path.display()));
        return None;
    };
    use sha2::Digest;
    let version = hex::encode(&sha2::Sha256::digest(&bytes)[..6]);
    Some(crate::settings::Logo {
        bytes: bytes.into(),
        content_type,
        version,
    })
}

/// An image's type by its contents (not its file name, which may lie):
/// PNG and JPEG by their signatures, SVG by an `<svg` element in its start.
fn image_type(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        return Some("image/png");
    }
    if bytes.starts_with(&[0xff, 0xd8, 0xff]) {
        return Some("image/jpeg");
    }
    let start = String::from_utf8_lossy(&bytes[..bytes.len().min(1024)]).to_ascii_lowercase();
    start.contains("<svg").then_some("image/svg+xml")
}

/// A biller's `api_token` sees only that biller's data, so it must differ
/// from the admin token (which sees every biller's) and from every other
/// biller's: a shared token would be both at once.
fn check_api_tokens(http: Option<&HttpConfig>, billers: &BTreeMap<String, BillerConfig>, problems: &mut Problems) {
    let admin = http.and_then(|h| h.admin_token.as_ref());
    for (id, biller) in billers {
        let Some(token) = &biller.api_token else { continue };
        let key = format!("billers.{id}.api_token");
        if admin.is_some_and(|a| a == token) {
            problems.push(
                key.clone(),
                "is the same as [http] admin_token: give each its own token",
            );
        }
        let shared = billers
            .iter()
            .filter(|(other, b)| *other != id && b.api_token.as_ref() == Some(token))
            .map(|(other, _)| other.as_str())
            .collect::<Vec<_>>();
        if !shared.is_empty() {
            problems.push(
                key,
                format!(
                    "is the same as the api_token of {}: give each biller its own token",
                    shared.join(", ")
                ),
            );
        }
    }
}

/// The longest `[billers.<id>] combine`: a first request held longer than
/// a day is no longer the prompt request the biller sent.
pub(crate) const LONGEST_COMBINE: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// `[billers.<id>] combine`: a duration above zero and at most a day.
fn combine_window(key: &str, text: &str, problems: &mut Problems) -> Option<std::time::Duration> {
    let window = duration(key, text, problems)?;
    if window.is_zero() {
        problems.push(
            key,
            "must be longer than 0s; leave the key out to send every invoice on its own",
        );
        return None;
    }
    if window > LONGEST_COMBINE {
        problems.push(
            key,
            "is longer than 24h: a first request would wait more than a day before it goes out; use a shorter window",
        );
        return None;
    }
    Some(window)
}

/// `webhook_secret`: one secret or a list of them, each literal or `env:NAME`.
fn webhook_secrets(key: &str, raw: Option<OneOrMany>, env: EnvLookup<'_>, problems: &mut Problems) -> Vec<Secret> {
    match raw {
        None => Vec::new(),
        Some(OneOrMany::One(value)) => secret(key, Some(value), env, problems).into_iter().collect(),
        Some(OneOrMany::Many(values)) => {
            if values.is_empty() {
                problems.push(key, "is an empty list: give at least one secret, or leave the key out");
            }
            values
                .into_iter()
                .enumerate()
                .filter_map(|(i, value)| secret(&format!("{key}[{i}]"), Some(value), env, problems))
                .collect()
        }
    }
}

fn check_checkout_url(key: &str, template: &str, problems: &mut Problems) {
    let mut rest = template;
    let mut filled = String::new();
    while let Some(start) = rest.find('{') {
        filled.push_str(&rest[..start]);
        let Some(len) = rest[start..].find('}') else {
            problems.push(key, "has a { without a closing }");
            return;
        };
        let name = &rest[start + 1..start + len];
        if !CHECKOUT_PLACEHOLDERS.contains(&name) {
            problems.push(
                key,
                format!(
                    "unknown placeholder {{{name}}}; use {}",
                    CHECKOUT_PLACEHOLDERS.map(|p| format!("{{{p}}}")).join(", ")
                ),
            );
        }
        filled.push('x');
        rest = &rest[start + len + 1..];
    }
    filled.push_str(rest);
    match Url::parse(&filled) {
        Ok(u) if u.scheme() == "https" || u.scheme() == "http" => {}
        _ => problems.push(key, "is not an http(s) URL"),
    }
}

/// Reads `[channels.*]`; also returns the channels that have a section,
/// so a section with problems is not reported again as missing.
fn check_channels(
    value: Value,
    base_dir: &Path,
    env: EnvLookup<'_>,
    problems: &mut Problems,
) -> (ChannelsConfig, Vec<ChannelName>) {
    let mut channels = ChannelsConfig::default();
    let mut declared = Vec::new();
    let Value::Object(map) = value else {
        problems.push("channels", "must be a table of [channels.<name>] sections");
        return (channels, declared);
    };
    if map.is_empty() {
        problems.push("channels", "no channel is configured: add [channels.email] at least");
    }
    for (name, v) in map {
        let prefix = format!("channels.{name}");
        if let Ok(c) = name.parse::<ChannelName>() {
            declared.push(c);
        }
        match name.parse::<ChannelName>() {
            Ok(ChannelName::Email) => channels.email = EmailConfig::check(v, &prefix, base_dir, env, problems),
            Ok(ChannelName::Sms) => channels.sms = SmsConfig::check(v, &prefix, base_dir, env, problems),
            Ok(ChannelName::Whatsapp) => channels.whatsapp = WhatsappConfig::check(v, &prefix, base_dir, env, problems),
            Ok(ChannelName::Messenger) => {
                channels.messenger = MessengerConfig::check(v, &prefix, base_dir, env, problems)
            }
            Err(e) => problems.push(prefix, e),
        }
    }
    (channels, declared)
}

fn channel_list(key: &str, names: &[String], declared: &[ChannelName], problems: &mut Problems) -> Vec<ChannelName> {
    let mut out = Vec::new();
    for n in names {
        match n.parse::<ChannelName>() {
            Ok(c) if !declared.contains(&c) => problems.push(
                key,
                format!("channel {c} is used here but not configured under [channels.{c}]"),
            ),
            Ok(c) if out.contains(&c) => problems.push(key, format!("channel {c} is listed twice")),
            Ok(c) => out.push(c),
            Err(e) => problems.push(key, e),
        }
    }
    if names.is_empty() {
        problems.push(key, "must name at least one channel");
    }
    out
}

pub(super) fn check_routing(
    value: Value,
    channels: &[ChannelName],
    billers: &BTreeMap<String, BillerConfig>,
    journeys: &[String],
    problems: &mut Problems,
) -> RoutingConfig {
    let raw: RawRouting = read(value, "routing", problems).unwrap_or_default();
    let default_names = raw.default.unwrap_or_else(|| vec!["email".into()]);
    let default = channel_list("routing.default", &default_names, channels, problems);
    let quiet_hours = raw.quiet_hours.and_then(|q| {
        q.parse()
            .map_err(|e: String| problems.push("routing.quiet_hours", e))
            .ok()
    });
    let mut rules = Vec::new();
    for (i, v) in raw.rules.into_iter().enumerate() {
        let prefix = format!("routing.rules[{i}]");
        let Some(r) = read::<RawRule>(v, &prefix, problems) else {
            continue;
        };
        let name = r.name.unwrap_or_else(|| format!("rule {}", i + 1));
        let biller = r.biller.map(OneOrMany::into_vec);
        for b in biller.iter().flatten() {
            if !billers.contains_key(b) {
                problems.push(format!("{prefix}.biller"), format!("biller \"{b}\" is not configured"));
            }
        }
        let currency = r.currency.map(OneOrMany::into_vec);
        for c in currency.iter().flatten() {
            if iso_currency::Currency::from_code(c).is_none() {
                problems.push(format!("{prefix}.currency"), format!("\"{c}\" is not an ISO 4217 code"));
            }
        }
        let mut amount = |key: &str, d: Option<Decimal>| -> Option<f64> {
            match d? {
                Decimal::Number(n) => Some(n),
                Decimal::Text(t) => t
                    .parse()
                    .map_err(|_| problems.push(format!("{prefix}.{key}"), format!("\"{t}\" is not a number")))
                    .ok(),
            }
        };
        let min_amount = amount("min_amount", r.min_amount);
        let max_amount = amount("max_amount", r.max_amount);
        if let (Some(lo), Some(hi)) = (min_amount, max_amount) {
            if lo > hi {
                problems.push(
                    format!("{prefix}.min_amount"),
                    "is above max_amount: the rule can never match",
                );
            }
        }
        if let Some(DaysToDue {
            min: Some(lo),
            max: Some(hi),
        }) = r.days_to_due
        {
            if lo > hi {
                problems.push(
                    format!("{prefix}.days_to_due"),
                    "min is above max: the rule can never match",
                );
            }
        }
        let channels = channel_list(&format!("{prefix}.channels"), &r.channels, channels, problems);
        rules.push(Rule {
            name,
            biller,
            source: r.source.map(OneOrMany::into_vec),
            currency,
            country: r.country.map(OneOrMany::into_vec),
            locale: r.locale.map(OneOrMany::into_vec),
            min_amount,
            max_amount,
            days_to_due: r.days_to_due,
            channels,
            strategy: r.strategy.unwrap_or(Strategy::Fallback),
            journey: r
                .journey
                .map(|name| journey_choice(&format!("{prefix}.journey"), name, journeys, problems)),
        });
    }
    // Here "none" and no key mean the same: no reminders.
    let journey = match raw
        .journey
        .map(|name| journey_choice("routing.journey", name, journeys, problems))
    {
        Some(JourneyChoice::Named(name)) => Some(name),
        Some(JourneyChoice::None) | None => None,
    };
    let max_messages_per_customer_per_day = raw.max_messages_per_customer_per_day.and_then(|n| {
        let n = std::num::NonZeroU32::new(n);
        if n.is_none() {
            problems.push(
                "routing.max_messages_per_customer_per_day",
                "must be at least 1; leave the key out for no daily cap",
            );
        }
        n
    });
    let retry_for = duration("routing.retry_for", raw.retry_for.as_deref().unwrap_or("24h"), problems)
        .unwrap_or(std::time::Duration::from_secs(24 * 3600));
    RoutingConfig {
        default,
        default_strategy: raw.default_strategy.unwrap_or(Strategy::Fallback),
        respect_preferences: raw.respect_preferences.unwrap_or(true),
        quiet_hours,
        rules,
        journey,
        max_messages_per_customer_per_day,
        retry_for,
    }
}

/// The journey a rule, a biller or `[routing]` names: `"none"`, or a
/// `[journeys.<name>]` section that must exist.
fn journey_choice(key: &str, name: String, journeys: &[String], problems: &mut Problems) -> JourneyChoice {
    if name == NO_JOURNEY {
        return JourneyChoice::None;
    }
    if !journeys.contains(&name) {
        let known = if journeys.is_empty() {
            "none is configured".to_owned()
        } else {
            format!("configured: {}", journeys.join(", "))
        };
        problems.push(
            key,
            format!(
                "journey \"{name}\" does not exist ({known}): add a [journeys.{name}] section, or write \"none\" for no reminders"
            ),
        );
    }
    JourneyChoice::Named(name)
}

/// The journey name that means "no reminders", so no section may take it.
pub(super) const NO_JOURNEY: &str = "none";

/// How far from the due date a step may be placed, either way: ten years
/// is past any collection process, so more is a typo, and dates computed
/// from it stay far inside the calendar's range.
const MAX_STEP_DAYS: i32 = 3650;

/// Reads `[journeys.<name>]` sections. A journey with problems is still
/// read to its end, so one pass lists all of them.
fn check_journeys(value: Value, channels: &[ChannelName], problems: &mut Problems) -> BTreeMap<String, Journey> {
    let mut journeys = BTreeMap::new();
    let Value::Object(map) = value else {
        problems.push("journeys", "must be a table of [journeys.<name>] sections");
        return journeys;
    };
    for (name, v) in map {
        let prefix = format!("journeys.{name}");
        if name == NO_JOURNEY {
            problems.push(
                prefix.clone(),
                "\"none\" is reserved: a rule, biller or [routing] writes journey = \"none\" for no reminders; give this journey another name",
            );
        } else if !crate::domain::ids::is_valid_biller_id(&name) {
            problems.push(
                prefix.clone(),
                "a journey name is 1 to 64 of a-z, 0-9, '_' and '-', like \"standard\"",
            );
        }
        // A `steps` of the wrong type is reported by `read`; not again as missing.
        let has_steps = v.get("steps").is_some();
        let Some(raw) = read::<RawJourney>(v, &prefix, problems) else {
            continue;
        };
        let send_at = local_time(
            &format!("{prefix}.send_at"),
            raw.send_at.as_deref().unwrap_or("10:00"),
            problems,
        );
        let escalate_after = raw
            .escalate_after
            .and_then(|text| duration(&format!("{prefix}.escalate_after"), &text, problems));
        let steps = match raw.steps {
            Some(steps) if !steps.is_empty() => check_steps(&prefix, steps, channels, problems),
            None if has_steps => Vec::new(),
            _ => {
                problems.push(
                    format!("{prefix}.steps"),
                    "must list at least one step, like steps = [{ name = \"due\", due = \"0d\" }]",
                );
                Vec::new()
            }
        };
        if let Some(send_at) = send_at {
            journeys.insert(
                name.clone(),
                Journey {
                    name,
                    send_at,
                    escalate_after,
                    steps,
                },
            );
        }
    }
    journeys
}

/// Reads a journey's steps: each placed by exactly one of `due` and
/// `after`, named uniquely, and the `due` ones in date order.
fn check_steps(prefix: &str, raws: Vec<Value>, channels: &[ChannelName], problems: &mut Problems) -> Vec<JourneyStep> {
    let mut steps = Vec::new();
    let mut names: Vec<(String, usize)> = Vec::new();
    // The latest `due` so far, with its step's index: a later `due` must
    // come after it (an `after` step is relative, hence always in order).
    let mut latest_due: Option<(i32, usize)> = None;
    for (i, v) in raws.into_iter().enumerate() {
        let key = format!("{prefix}.steps[{i}]");
        // Presence, not value: a `due` of the wrong type is reported once.
        let has_due = v.get("due").is_some();
        let has_after = v.get("after").is_some();
        let Some(r) = read::<RawStep>(v, &key, problems) else {
            continue;
        };
        let name = match r.name {
            None => {
                problems.push(
                    format!("{key}.name"),
                    "is required: events and the status API name the step by it",
                );
                None
            }
            Some(n) if n.trim().is_empty() || n.chars().count() > 64 || n.chars().any(char::is_control) => {
                problems.push(format!("{key}.name"), "must be 1 to 64 characters, not blank");
                None
            }
            Some(n) => match names.iter().find(|(seen, _)| *seen == n) {
                Some((_, j)) => {
                    problems.push(
                        format!("{key}.name"),
                        format!("\"{n}\" is also the name of steps[{j}]: step names must differ within a journey"),
                    );
                    None
                }
                None => {
                    names.push((n.clone(), i));
                    Some(n)
                }
            },
        };
        let due = r.due.and_then(|d| due_days(&format!("{key}.due"), d, problems));
        let after = r
            .after
            .and_then(|text| duration(&format!("{key}.after"), &text, problems));
        let when = match (has_due, has_after) {
            (true, true) => {
                problems.push(
                    key.clone(),
                    "has both due and after: a step is placed by the due date or after the previous message, not both",
                );
                None
            }
            (false, false) => {
                problems.push(
                    key.clone(),
                    "needs due (days from the due date, like \"-3d\") or after (a duration after the previous message, like \"2d\")",
                );
                None
            }
            (true, false) => due.map(|days| StepTime::Due { days }),
            (false, true) => after.map(StepTime::After),
        };
        if let Some(StepTime::Due { days }) = when {
            match latest_due {
                Some((before, j)) if days <= before => problems.push(
                    format!("{key}.due"),
                    format!(
                        "{} is not later than steps[{j}]'s {}: steps placed by due date must be in date order",
                        show_days(days),
                        show_days(before)
                    ),
                ),
                _ => latest_due = Some((days, i)),
            }
        }
        let channels = r
            .channels
            .map(|names| channel_list(&format!("{key}.channels"), &names, channels, problems));
        let template = r.template.filter(|t| {
            let ok = (1..=64).contains(&t.len())
                && t.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            if !ok {
                problems.push(
                    format!("{key}.template"),
                    format!("\"{t}\" is not a template name (1 to 64 of lowercase letters, digits and _, like \"final_notice\")"),
                );
            }
            ok
        });
        if let (Some(name), Some(when)) = (name, when) {
            steps.push(JourneyStep {
                name,
                when,
                channels,
                strategy: r.strategy.unwrap_or(Strategy::Fallback),
                template,
            });
        }
    }
    steps
}

/// `"-3d"`, `"0d"`, `"+10d"` or `"3d"`: whole days from the due date.
fn due_days(key: &str, days: Value, problems: &mut Problems) -> Option<i32> {
    let text = match days {
        Value::String(text) => text,
        Value::Number(n) => {
            let like = n
                .as_i64()
                .map(|d| show_days(d.clamp(-99, 99) as i32))
                .unwrap_or_else(|| "-3d".into());
            problems.push(key, format!("write days as text with a d, like \"{like}\""));
            return None;
        }
        _ => {
            problems.push(
                key,
                "must be days from the due date as text, like \"-3d\", \"0d\" or \"+10d\"",
            );
            return None;
        }
    };
    let bad = || {
        format!(
            "\"{text}\" is not a number of days from the due date, like \"-3d\" (before), \"0d\" or \"+10d\" (after)"
        )
    };
    let Some(number) = text.strip_suffix('d') else {
        problems.push(key, bad());
        return None;
    };
    let (sign, digits) = match number.strip_prefix('-') {
        Some(rest) => (-1, rest),
        None => (1, number.strip_prefix('+').unwrap_or(number)),
    };
    if digits.is_empty() || digits.len() > 9 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        problems.push(key, bad());
        return None;
    }
    let days = digits.parse::<i32>().ok().map(|d| sign * d);
    match days {
        Some(d) if d.abs() <= MAX_STEP_DAYS => Some(d),
        _ => {
            problems.push(
                key,
                format!("\"{text}\" is more than {MAX_STEP_DAYS} days from the due date"),
            );
            None
        }
    }
}

/// Days as a step's `due` is written: `-3d`, `0d`, `+10d`.
fn show_days(days: i32) -> String {
    if days > 0 {
        format!("+{days}d")
    } else {
        format!("{days}d")
    }
}

/// `"HH:MM"`, 24-hour (`"9:30"` too).
fn local_time(key: &str, text: &str, problems: &mut Problems) -> Option<jiff::civil::Time> {
    let parsed = text.split_once(':').and_then(|(h, m)| {
        let digits = |s: &str, lengths: std::ops::RangeInclusive<usize>| {
            (lengths.contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit()))
                .then(|| s.parse::<i8>().ok())
                .flatten()
        };
        jiff::civil::Time::new(digits(h, 1..=2)?, digits(m, 2..=2)?, 0, 0).ok()
    });
    if parsed.is_none() {
        problems.push(key, format!("\"{text}\" is not a 24-hour local time like \"10:00\""));
    }
    parsed
}
