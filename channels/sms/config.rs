//! `[channels.sms]`: which SMS provider, with which account and sender.
//!
//! With `provider = "file"` (the default) the Twilio keys are not read, so a
//! fresh machine runs without any account or environment variable.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use url::Url;

use crate::channels::Limits;
use crate::settings::{duration, limits, read, secret, EnvLookup};
use crate::settings::{Problems, Secret};

/// Most segments `max_segments` may allow: Twilio's recommended ceiling,
/// which also keeps a body under its 1600-character limit.
const MAX_SEGMENTS_CEILING: u32 = 10;

#[derive(Debug, Clone)]
pub struct SmsConfig {
    pub provider: Provider,
    pub limits: Limits,
    /// Twilio's auth token, which signs its status callbacks
    /// (`X-Twilio-Signature`); `None` for the `file` provider, so the
    /// webhook refuses everything.
    pub webhook_secret: Option<Secret>,
    /// Bodies that need more segments are refused: every segment is billed,
    /// and a long payment request is usually a template mistake.
    pub max_segments: u32,
}

/// Where messages go.
#[derive(Debug, Clone)]
pub enum Provider {
    Twilio(TwilioConfig),
    /// One JSON file per message in a folder, for running without an account.
    File {
        dir: PathBuf,
    },
}

#[derive(Debug, Clone)]
pub struct TwilioConfig {
    /// `https://api.twilio.com`, or a sandbox or local mock.
    pub base_url: Url,
    /// `AC…`; the basic-auth user and part of the API path.
    pub account_sid: String,
    pub auth_token: Secret,
    pub sender: TwilioSender,
    /// Bounds each API call; an invoice must not wait on a hanging provider.
    pub timeout: Duration,
}

/// Who the message comes from: a number or sender id, or a messaging
/// service that picks one from its pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TwilioSender {
    /// `From`: an E.164 number, a short code or an alphanumeric sender id.
    From(String),
    /// `MessagingServiceSid`: `MG…`.
    MessagingService(String),
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Raw {
    provider: Option<String>,
    base_url: Option<String>,
    account_sid: Option<String>,
    auth_token: Option<String>,
    from: Option<String>,
    messaging_service_sid: Option<String>,
    rate_per_second: Option<f64>,
    burst: Option<u32>,
    timeout: Option<String>,
    outbox_dir: Option<String>,
    max_segments: Option<u32>,
}

impl SmsConfig {
    pub(crate) fn check(
        value: Value,
        prefix: &str,
        base_dir: &Path,
        env: EnvLookup<'_>,
        problems: &mut Problems,
    ) -> Option<SmsConfig> {
        let raw: Raw = read(value, prefix, problems)?;
        let key = |k: &str| format!("{prefix}.{k}");
        let limits = limits(prefix, raw.rate_per_second, raw.burst, 1.0, problems);
        let max_segments = match raw.max_segments.unwrap_or(3) {
            n @ 1..=MAX_SEGMENTS_CEILING => Some(n),
            _ => {
                problems.push(
                    key("max_segments"),
                    format!("must be 1 to {MAX_SEGMENTS_CEILING} (every segment is billed)"),
                );
                None
            }
        };
        let provider = match raw.provider.as_deref().unwrap_or("file") {
            "file" => Some(Provider::File {
                dir: crate::settings::resolve(
                    base_dir,
                    Path::new(raw.outbox_dir.as_deref().unwrap_or("var/outbox/sms")),
                ),
            }),
            "twilio" => check_twilio(raw, prefix, env, problems).map(Provider::Twilio),
            other => {
                problems.push(
                    key("provider"),
                    format!("\"{other}\" is not an SMS provider; use \"twilio\" or \"file\""),
                );
                None
            }
        };
        let webhook_secret = match &provider {
            Some(Provider::Twilio(twilio)) => Some(twilio.auth_token.clone()),
            _ => None,
        };
        Some(SmsConfig {
            provider: provider?,
            limits,
            webhook_secret,
            max_segments: max_segments?,
        })
    }
}

/// Reads every Twilio key, reporting each problem before giving up.
fn check_twilio(raw: Raw, prefix: &str, env: EnvLookup<'_>, problems: &mut Problems) -> Option<TwilioConfig> {
    let key = |k: &str| format!("{prefix}.{k}");
    let base_text = raw.base_url.unwrap_or_else(|| "https://api.twilio.com".into());
    let base_url = match Url::parse(&base_text) {
        Ok(u) if (u.scheme() == "http" || u.scheme() == "https") && !u.cannot_be_a_base() => Some(u),
        _ => {
            problems.push(key("base_url"), format!("\"{base_text}\" is not an http(s) URL"));
            None
        }
    };

    let account_sid = match raw.account_sid {
        None => {
            problems.push(key("account_sid"), "is required when provider = \"twilio\"");
            None
        }
        // A secret only so that `env:NAME` works; the SID itself is not secret.
        Some(v) => secret(&key("account_sid"), Some(v), env, problems).and_then(|s| {
            let sid = s.expose().trim().to_owned();
            if is_sid(&sid, "AC") {
                Some(sid)
            } else {
                problems.push(
                    key("account_sid"),
                    "is not an Account SID: AC followed by letters and digits (32 hex digits at Twilio)",
                );
                None
            }
        }),
    };

    let auth_token = match raw.auth_token {
        None => {
            problems.push(
                key("auth_token"),
                "is required when provider = \"twilio\" (usually \"env:TWILIO_AUTH_TOKEN\")",
            );
            None
        }
        Some(v) => secret(&key("auth_token"), Some(v), env, problems).and_then(|s| {
            if s.expose().trim().is_empty() {
                problems.push(key("auth_token"), "must not be empty");
                None
            } else {
                Some(s)
            }
        }),
    };

    let sender = match (raw.from, raw.messaging_service_sid) {
        (Some(_), Some(_)) => {
            problems.push(
                key("messaging_service_sid"),
                "set either from or messaging_service_sid, not both",
            );
            None
        }
        (None, None) => {
            problems.push(
                key("from"),
                "is required when provider = \"twilio\" (or set messaging_service_sid)",
            );
            None
        }
        (Some(from), None) => {
            let from = from.trim().to_owned();
            match check_from(&from) {
                Ok(()) => Some(TwilioSender::From(from)),
                Err(why) => {
                    problems.push(key("from"), why);
                    None
                }
            }
        }
        (None, Some(sid)) => {
            let sid = sid.trim().to_owned();
            if is_sid(&sid, "MG") {
                Some(TwilioSender::MessagingService(sid))
            } else {
                problems.push(
                    key("messaging_service_sid"),
                    "is not a Messaging Service SID: MG followed by letters and digits (32 hex digits at Twilio)",
                );
                None
            }
        }
    };

    let timeout = duration(&key("timeout"), raw.timeout.as_deref().unwrap_or("10s"), problems);
    Some(TwilioConfig {
        base_url: base_url?,
        account_sid: account_sid?,
        auth_token: auth_token?,
        sender: sender?,
        timeout: timeout?,
    })
}

/// Twilio SIDs: a two-letter kind, then letters and digits (32 hex digits
/// in production; sandboxes and mocks use shorter ones). Checking the shape
/// catches a token pasted in the wrong key, and keeps the API path clean.
fn is_sid(s: &str, kind: &str) -> bool {
    (3..=64).contains(&s.len()) && s.starts_with(kind) && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// `from`: an E.164 number, a short code, or an alphanumeric sender id
/// (1 to 11 letters, digits and spaces, at least one letter).
fn check_from(from: &str) -> Result<(), String> {
    if from.starts_with('+') {
        return crate::invoice::Phone::parse(from)
            .map(|_| ())
            .map_err(|why| format!("{why} (from = \"{from}\")"));
    }
    if !from.is_empty() && from.bytes().all(|b| b.is_ascii_digit()) {
        return if (3..=8).contains(&from.len()) {
            Ok(())
        } else {
            Err("a phone number must be in E.164 form, starting with + (a short code has 3 to 8 digits)".into())
        };
    }
    let alphanumeric = (1..=11).contains(&from.len())
        && from.bytes().all(|b| b.is_ascii_alphanumeric() || b == b' ')
        && from.bytes().any(|b| b.is_ascii_alphabetic());
    if alphanumeric {
        Ok(())
    } else {
        Err(
            "is not an E.164 number (+15005550006), a short code or an alphanumeric sender id \
             (1 to 11 letters, digits and spaces, with at least one letter)"
                .into(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Problem};
    use std::collections::BTreeSet;

    const SID: &str = "AC0123456789abcdef0123456789abcdef";
    const SERVICE: &str = "MG0123456789abcdef0123456789abcdef";

    fn toml(sms: &str) -> String {
        format!(
            "[billers.acme]\ncheckout_url = \"https://pay.example/c?inv={{invoice_id}}\"\n\n\
             [channels.email]\ntransport = \"file\"\n\n[channels.sms]\n{sms}\n"
        )
    }

    fn env(name: &str) -> Option<String> {
        match name {
            "TWILIO_AUTH_TOKEN" => Some("token-from-env".into()),
            "TWILIO_ACCOUNT_SID" => Some(SID.into()),
            _ => None,
        }
    }

    fn load(sms: &str) -> SmsConfig {
        match Config::from_toml(&toml(sms), Path::new("/etc/payrelay"), &env) {
            Ok(c) => c.channels.sms.unwrap_or_else(|| panic!("no sms config from {sms}")),
            Err(problems) => panic!("config refused: {problems:#?}"),
        }
    }

    fn problems(sms: &str) -> Vec<Problem> {
        match Config::from_toml(&toml(sms), Path::new("/etc/payrelay"), &env) {
            Ok(c) => panic!("config accepted: {:#?}", c.channels.sms),
            Err(problems) => problems,
        }
    }

    fn keys(problems: &[Problem]) -> BTreeSet<String> {
        problems.iter().map(|p| p.key.clone()).collect()
    }

    fn twilio(config: &SmsConfig) -> &TwilioConfig {
        match &config.provider {
            Provider::Twilio(t) => t,
            other => panic!("expected twilio, got {other:?}"),
        }
    }

    fn twilio_with(lines: &str) -> String {
        format!("provider = \"twilio\"\naccount_sid = \"{SID}\"\nauth_token = \"env:TWILIO_AUTH_TOKEN\"\n{lines}")
    }

    #[test]
    fn an_empty_section_is_the_file_provider_with_the_documented_defaults() {
        let c = load("");
        match &c.provider {
            Provider::File { dir } => assert_eq!(dir, Path::new("/etc/payrelay/var/outbox/sms")),
            other => panic!("expected file, got {other:?}"),
        }
        assert_eq!(c.limits.rate_per_second, 1.0);
        assert_eq!(c.limits.burst.get(), 1);
        assert_eq!(c.max_segments, 3);
        assert!(c.webhook_secret.is_none(), "no provider, no webhook key: fail closed");
    }

    #[test]
    fn the_file_provider_ignores_twilio_keys_and_resolves_outbox_dir() {
        let c = load("provider = \"file\"\noutbox_dir = \"out/sms\"\nauth_token = \"env:UNSET\"");
        assert!(matches!(&c.provider, Provider::File { dir } if dir == Path::new("/etc/payrelay/out/sms")));
        let c = load("outbox_dir = \"/var/spool/sms\"");
        assert!(matches!(&c.provider, Provider::File { dir } if dir == Path::new("/var/spool/sms")));
    }

    #[test]
    fn twilio_reads_every_key_and_the_token_becomes_the_webhook_secret() {
        let c = load(&twilio_with(
            "from = \"+15005550006\"\nbase_url = \"http://127.0.0.1:9/\"\nrate_per_second = 3\nburst = 5\n\
             timeout = \"2s\"\nmax_segments = 2",
        ));
        let t = twilio(&c);
        assert_eq!(t.base_url.as_str(), "http://127.0.0.1:9/");
        assert_eq!(t.account_sid, SID);
        assert_eq!(t.auth_token.expose(), "token-from-env");
        assert_eq!(t.sender, TwilioSender::From("+15005550006".into()));
        assert_eq!(t.timeout, Duration::from_secs(2));
        assert_eq!((c.limits.rate_per_second, c.limits.burst.get()), (3.0, 5));
        assert_eq!(c.max_segments, 2);
        assert_eq!(c.webhook_secret.as_ref().map(Secret::expose), Some("token-from-env"));
        assert!(
            !format!("{c:?}").contains("token-from-env"),
            "Debug never shows the token"
        );
    }

    #[test]
    fn twilio_defaults() {
        let c = load(&twilio_with("from = \"ACME\""));
        let t = twilio(&c);
        assert_eq!(t.base_url.as_str(), "https://api.twilio.com/");
        assert_eq!(t.timeout, Duration::from_secs(10));
        assert_eq!(t.sender, TwilioSender::From("ACME".into()));
    }

    #[test]
    fn account_sid_may_come_from_the_environment_and_a_messaging_service_may_send() {
        let c = load(&format!(
            "provider = \"twilio\"\naccount_sid = \"env:TWILIO_ACCOUNT_SID\"\nauth_token = \"literal\"\n\
             messaging_service_sid = \"{SERVICE}\""
        ));
        let t = twilio(&c);
        assert_eq!(t.account_sid, SID);
        assert_eq!(t.sender, TwilioSender::MessagingService(SERVICE.into()));
    }

    #[test]
    fn short_sandbox_sids_are_accepted() {
        let c = load(
            "provider = \"twilio\"\naccount_sid = \"ACtest\"\nauth_token = \"t\"\nmessaging_service_sid = \"MGtest\"",
        );
        assert_eq!(twilio(&c).account_sid, "ACtest");
        assert_eq!(twilio(&c).sender, TwilioSender::MessagingService("MGtest".into()));
    }

    #[test]
    fn senders_accepted() {
        for from in [
            "+15005550006",
            "+5215512345678",
            "12345",
            "ACME",
            "ACME Energy",
            "Pay 4U",
        ] {
            let c = load(&twilio_with(&format!("from = \"{from}\"")));
            assert_eq!(twilio(&c).sender, TwilioSender::From(from.into()), "{from}");
        }
    }

    #[test]
    fn senders_refused_under_from() {
        for from in [
            "15005550006",
            "+0123456789",
            "+1500",
            "ACME Billing Dept",
            "ACME-Billing",
            "12",
            "",
        ] {
            let p = problems(&twilio_with(&format!("from = \"{from}\"")));
            assert_eq!(
                keys(&p),
                BTreeSet::from(["channels.sms.from".to_owned()]),
                "{from}: {p:#?}"
            );
        }
    }

    #[test]
    fn an_empty_twilio_section_lists_every_missing_key() {
        let p = problems("provider = \"twilio\"");
        assert_eq!(
            keys(&p),
            BTreeSet::from([
                "channels.sms.account_sid".to_owned(),
                "channels.sms.auth_token".to_owned(),
                "channels.sms.from".to_owned(),
            ]),
            "{p:#?}"
        );
    }

    #[test]
    fn each_mistake_is_reported_under_its_key() {
        let cases: &[(&str, &str, &[&str])] = &[
            ("unknown provider", "provider = \"vonage\"", &["channels.sms.provider"]),
            (
                "base_url not http",
                &twilio_with("from = \"ACME\"\nbase_url = \"ftp://api.twilio.com\""),
                &["channels.sms.base_url"],
            ),
            (
                "base_url not a URL",
                &twilio_with("from = \"ACME\"\nbase_url = \"api.twilio.com\""),
                &["channels.sms.base_url"],
            ),
            (
                "account sid with the wrong prefix",
                "provider = \"twilio\"\naccount_sid = \"MG0123456789abcdef0123456789abcdef\"\n\
                 auth_token = \"t\"\nfrom = \"ACME\"",
                &["channels.sms.account_sid"],
            ),
            (
                "account sid with a slash",
                "provider = \"twilio\"\naccount_sid = \"AC12/../x\"\nauth_token = \"t\"\nfrom = \"ACME\"",
                &["channels.sms.account_sid"],
            ),
            (
                "account sid is just the kind",
                "provider = \"twilio\"\naccount_sid = \"AC\"\nauth_token = \"t\"\nfrom = \"ACME\"",
                &["channels.sms.account_sid"],
            ),
            (
                "account sid env unset",
                "provider = \"twilio\"\naccount_sid = \"env:NOPE\"\nauth_token = \"t\"\nfrom = \"ACME\"",
                &["channels.sms.account_sid"],
            ),
            (
                "auth token env unset",
                &format!("provider = \"twilio\"\naccount_sid = \"{SID}\"\nauth_token = \"env:NOPE\"\nfrom = \"ACME\""),
                &["channels.sms.auth_token"],
            ),
            (
                "auth token empty",
                &format!("provider = \"twilio\"\naccount_sid = \"{SID}\"\nauth_token = \"\"\nfrom = \"ACME\""),
                &["channels.sms.auth_token"],
            ),
            (
                "both senders",
                &twilio_with(&format!("from = \"ACME\"\nmessaging_service_sid = \"{SERVICE}\"")),
                &["channels.sms.messaging_service_sid"],
            ),
            (
                "bad messaging service sid",
                &twilio_with("messaging_service_sid = \"MG-42\""),
                &["channels.sms.messaging_service_sid"],
            ),
            (
                "bad timeout",
                &twilio_with("from = \"ACME\"\ntimeout = \"soon\""),
                &["channels.sms.timeout"],
            ),
            (
                "zero timeout",
                &twilio_with("from = \"ACME\"\ntimeout = \"0s\""),
                &["channels.sms.timeout"],
            ),
            ("zero max_segments", "max_segments = 0", &["channels.sms.max_segments"]),
            (
                "too many max_segments",
                "max_segments = 11",
                &["channels.sms.max_segments"],
            ),
            ("zero rate", "rate_per_second = 0", &["channels.sms.rate_per_second"]),
            ("zero burst", "burst = 0", &["channels.sms.burst"]),
            ("typo", "provder = \"twilio\"", &["channels.sms.provder"]),
            (
                "verify_token is not an SMS key",
                "verify_token = \"x\"",
                &["channels.sms.verify_token"],
            ),
            (
                "several at once",
                "provider = \"twilio\"\naccount_sid = \"AC 1\"\nauth_token = \"env:NOPE\"\nfrom = \"?\"\n\
                 base_url = \"nope\"\ntimeout = \"x\"\nmax_segments = 0",
                &[
                    "channels.sms.account_sid",
                    "channels.sms.auth_token",
                    "channels.sms.from",
                    "channels.sms.base_url",
                    "channels.sms.timeout",
                    "channels.sms.max_segments",
                ],
            ),
        ];
        for (what, sms, expected) in cases {
            let p = problems(sms);
            let expected: BTreeSet<String> = expected.iter().map(|k| k.to_string()).collect();
            assert_eq!(keys(&p), expected, "{what}: {p:#?}");
        }
    }

    #[test]
    fn problems_never_quote_the_auth_token() {
        let p = problems(&format!(
            "provider = \"twilio\"\naccount_sid = \"s3cr3t-token-in-the-wrong-key\"\nauth_token = \"s3cr3t\"\n\
             from = \"ACME\"\n# {SID}"
        ));
        assert!(p.iter().all(|p| !p.message.contains("s3cr3t")), "{p:#?}");
    }
}
