//! Reading settings, and the settings several layers share.
//!
//! The checked configuration is assembled by [`crate::config`], which
//! knows every section; the pieces here sit below it so that the parts it
//! assembles (each channel's own section, the templates, a biller's
//! settings) can be read and used without depending on the whole: one pass
//! over a config lists every [`Problem`], each under its key, and a
//! [`Secret`] never prints.

mod secret;

pub use secret::Secret;

use std::fmt;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use governor::Quota;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// One thing wrong with the configuration, with the key it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.key, self.message)
        }
    }
}

/// Collects problems while the config is checked.
#[derive(Default)]
pub(crate) struct Problems(pub(crate) Vec<Problem>);

impl Problems {
    pub(crate) fn push(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            key: key.into(),
            message: message.into(),
        });
    }
}

/// Reads the environment for `env:NAME` values.
pub(crate) type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// A biller's `[billers.<id>]` section: what its messages, pages and
/// payment confirmations use.
#[derive(Debug, Clone, Default)]
pub struct BillerConfig {
    pub name: String,
    pub checkout_url: String,
    pub default_locale: Option<String>,
    /// The keys that may sign this biller's payment confirmations; more
    /// than one while the biller rotates its secret. None: all are refused.
    pub webhook_secret: Vec<Secret>,
    /// The bearer token of this biller's API calls (its invoices' status,
    /// erasing its customers): it sees only this biller's data.
    pub api_token: Option<Secret>,
    /// The AMQP user this biller publishes as. When set, a message for the
    /// biller must carry it as its `user_id` property, which RabbitMQ
    /// checks against the connection's user, so another publisher on the
    /// same queue cannot send, close or cancel this biller's invoices.
    pub amqp_user: Option<String>,
    /// IANA time zone for customers whose invoice gives none (quiet hours).
    pub timezone: Option<String>,
    /// This biller's own email sender, when not the channel's `from`.
    pub email_from: Option<lettre::message::Mailbox>,
    /// This biller's approved WhatsApp template, when not the channel's.
    pub whatsapp_template: Option<String>,
    /// Handlebars snippets, one per body parameter of that template, when
    /// not the channel's mapping.
    pub whatsapp_parameters: Option<Vec<String>>,
    /// The journey after this biller's first requests when the deciding
    /// rule names none; `None` here: `[routing] journey`.
    pub journey: Option<JourneyChoice>,
    /// How customers reach the biller (a phone number, an email address,
    /// a URL, in words), shown on every page a customer lands on.
    pub support: Option<String>,
    /// `combine`: how long a first request waits for more invoices of the
    /// same customer and currency, so they go out as one message. `None`:
    /// every invoice is sent on its own, at once.
    pub combine: Option<Duration>,
    /// `brand_color`, `#rrggbb` in lowercase: the Pay button's and the
    /// pages' accent, so customers recognise the biller. `None`: payrelay's blue.
    pub brand_color: Option<String>,
    /// `logo`, read once at start: payrelay serves it itself, so the pages
    /// load nothing from another origin.
    pub logo: Option<Logo>,
}

/// A biller's logo file, in memory.
#[derive(Clone)]
pub struct Logo {
    pub bytes: std::sync::Arc<[u8]>,
    /// `image/png`, `image/jpeg` or `image/svg+xml`, from the file's contents.
    pub content_type: &'static str,
    /// A short hash of the bytes: the pages link `?v=<version>`, so the
    /// logo can be cached for long and a new file is fetched at once.
    pub version: String,
}

impl fmt::Debug for Logo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Logo")
            .field("content_type", &self.content_type)
            .field("bytes", &self.bytes.len())
            .field("version", &self.version)
            .finish()
    }
}

/// A journey named by a rule, a biller or `[routing] journey`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JourneyChoice {
    /// `"none"`: the first request only, no reminders.
    None,
    /// A `[journeys.<name>]` section (`check` makes sure it exists).
    Named(String),
}

/// `rate_per_second` and `burst`, shared by every channel's config.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// May be fractional: 0.5 is one message every two seconds.
    pub rate_per_second: f64,
    pub burst: NonZeroU32,
}

impl Limits {
    /// The governor quota: one cell every `1 / rate` seconds, `burst` at once.
    pub fn quota(&self) -> Quota {
        let period = Duration::from_secs_f64(1.0 / self.rate_per_second.max(1e-6));
        Quota::with_period(period)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(self.burst)
    }
}

/// Deserializes `value` into `T`, reporting unknown keys and type errors,
/// each under `prefix`. A key with a wrong type is reported, removed and the
/// rest read again, so one pass lists every problem in the section.
pub(crate) fn read<T: DeserializeOwned>(mut value: Value, prefix: &str, problems: &mut Problems) -> Option<T> {
    loop {
        let mut unknown = Vec::new();
        let result = {
            let mut note = |path: serde_ignored::Path<'_>| unknown.push(path.to_string());
            let de = serde_ignored::Deserializer::new(value.clone(), &mut note);
            serde_path_to_error::deserialize::<_, T>(de)
        };
        match result {
            Ok(t) => {
                for key in unknown {
                    problems.push(join(prefix, &key), "unknown key (a typo?)");
                }
                return Some(t);
            }
            Err(e) => {
                // A string (from the environment) where the key wants a
                // number, a boolean or a list: read it as a TOML value.
                if coerce_path(&mut value, e.path()) {
                    continue;
                }
                let path = e.path().to_string();
                let removable = remove_path(&mut value, e.path());
                problems.push(
                    join(prefix, if path == "." { "" } else { &path }),
                    e.into_inner().to_string(),
                );
                if !removable {
                    return None;
                }
            }
        }
    }
}

/// The value at `segments` below `value`, if every step exists.
fn value_at<'a>(value: &'a mut Value, segments: &[&serde_path_to_error::Segment]) -> Option<&'a mut Value> {
    use serde_path_to_error::Segment;
    segments
        .iter()
        .try_fold(value, |current, segment| match (segment, current) {
            (Segment::Map { key }, Value::Object(map)) => map.get_mut(key),
            (Segment::Seq { index }, Value::Array(items)) => items.get_mut(*index),
            _ => None,
        })
}

/// Replaces a string at `path` by the TOML value it spells, if it spells
/// something other than a string; true when it did.
fn coerce_path(value: &mut Value, path: &serde_path_to_error::Path) -> bool {
    let segments: Vec<_> = path.iter().collect();
    let Some(Value::String(text)) = value_at(value, &segments).cloned() else {
        return false;
    };
    let parsed = toml::from_str::<toml::Table>(&format!("v = {text}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .and_then(|v| serde_json::to_value(v).ok());
    match (parsed, value_at(value, &segments)) {
        (Some(v), Some(current)) if !v.is_string() => {
            *current = v;
            true
        }
        _ => false,
    }
}

/// Removes the value at `path`; false if there is nothing to remove.
fn remove_path(value: &mut Value, path: &serde_path_to_error::Path) -> bool {
    use serde_path_to_error::Segment;
    let segments: Vec<&Segment> = path.iter().collect();
    let Some((last, parents)) = segments.split_last() else {
        return false;
    };
    let Some(current) = value_at(value, parents) else {
        return false;
    };
    match (last, current) {
        (Segment::Map { key }, Value::Object(map)) => map.remove(key).is_some(),
        (Segment::Seq { index }, Value::Array(items)) if *index < items.len() => {
            items.remove(*index);
            true
        }
        _ => false,
    }
}

pub(crate) fn join(prefix: &str, key: &str) -> String {
    match (prefix.is_empty(), key.is_empty()) {
        (true, _) => key.to_owned(),
        (_, true) => prefix.to_owned(),
        _ => format!("{prefix}.{key}"),
    }
}

/// Resolves `env:NAME` or takes a literal value.
pub(crate) fn secret(key: &str, value: Option<String>, env: EnvLookup<'_>, problems: &mut Problems) -> Option<Secret> {
    let value = value?;
    match value.strip_prefix("env:") {
        Some(name) => match env(name) {
            Some(v) if !v.is_empty() => Some(Secret::new(v)),
            _ => {
                problems.push(key, format!("environment variable {name} is not set"));
                None
            }
        },
        None => Some(Secret::new(value)),
    }
}

/// `rate_per_second` (> 0, may be fractional) and `burst` (defaults to the rate, at least 1).
pub(crate) fn limits(
    prefix: &str,
    rate: Option<f64>,
    burst: Option<u32>,
    default_rate: f64,
    problems: &mut Problems,
) -> Limits {
    let rate_per_second = rate.unwrap_or(default_rate);
    if !(rate_per_second.is_finite() && rate_per_second > 0.0) {
        problems.push(join(prefix, "rate_per_second"), "must be a number above 0");
    }
    let default_burst = NonZeroU32::new(rate_per_second.max(1.0) as u32).unwrap_or(NonZeroU32::MIN);
    let burst = match burst {
        None => default_burst,
        Some(b) => NonZeroU32::new(b).unwrap_or_else(|| {
            problems.push(join(prefix, "burst"), "must be at least 1");
            NonZeroU32::MIN
        }),
    };
    Limits { rate_per_second, burst }
}

/// Parses durations like `45d`, `12h`, `30s`.
pub(crate) fn duration(key: &str, text: &str, problems: &mut Problems) -> Option<Duration> {
    match humantime::parse_duration(text) {
        Ok(d) if !d.is_zero() => Some(d),
        Ok(_) => {
            problems.push(key, "must be longer than zero");
            None
        }
        Err(e) => {
            problems.push(key, format!("\"{text}\" is not a duration like 45d or 12h: {e}"));
            None
        }
    }
}

/// `path` against `base` (the config file's folder) unless it is absolute.
pub(crate) fn resolve(base: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_owned()
    } else {
        base.join(path)
    }
}
