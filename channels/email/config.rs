//! `[channels.email]`: how email leaves payrelay.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::channels::Limits;
use crate::settings::{duration, limits, read, secret, EnvLookup};
use crate::settings::{Problems, Secret};

/// Where email goes.
#[derive(Debug, Clone)]
pub enum Transport {
    /// SMTP through a pooled lettre transport. The URL may hold credentials.
    Smtp {
        url: Secret,
        pool_size: u32,
        timeout: Duration,
    },
    /// `.eml` files in a folder, for running without any account.
    File { dir: PathBuf },
}

#[derive(Debug, Clone)]
pub struct EmailConfig {
    pub transport: Transport,
    /// The `From` mailbox, e.g. `ACME Billing <billing@acme.example>`.
    pub from: lettre::message::Mailbox,
    pub limits: Limits,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawEmail {
    transport: Option<String>,
    smtp_url: Option<String>,
    from: Option<String>,
    outbox_dir: Option<String>,
    pool_size: Option<u32>,
    timeout: Option<String>,
    rate_per_second: Option<f64>,
    burst: Option<u32>,
}

impl EmailConfig {
    pub(crate) fn check(
        value: Value,
        prefix: &str,
        base_dir: &Path,
        env: EnvLookup<'_>,
        problems: &mut Problems,
    ) -> Option<EmailConfig> {
        let raw: RawEmail = read(value, prefix, problems)?;
        let key = |k: &str| format!("{prefix}.{k}");
        let limits = limits(prefix, raw.rate_per_second, raw.burst, 50.0, problems);
        let from = match raw
            .from
            .as_deref()
            .unwrap_or("payrelay <billing@payrelay.invalid>")
            .parse()
        {
            Ok(m) => Some(m),
            Err(_) => {
                problems.push(
                    key("from"),
                    "is not a mailbox like \"ACME Billing <billing@acme.example>\"",
                );
                None
            }
        };
        let transport = match raw.transport.as_deref().unwrap_or("file") {
            "file" => Some(Transport::File {
                dir: crate::settings::resolve(
                    base_dir,
                    Path::new(raw.outbox_dir.as_deref().unwrap_or("var/outbox/email")),
                ),
            }),
            "smtp" => {
                let url = match raw.smtp_url {
                    Some(u) => secret(&key("smtp_url"), Some(u), env, problems),
                    None => {
                        problems.push(key("smtp_url"), "is required when transport = \"smtp\"");
                        None
                    }
                };
                if let Some(u) = &url {
                    match url::Url::parse(u.expose()) {
                        Ok(parsed) if parsed.scheme() == "smtp" || parsed.scheme() == "smtps" => {}
                        _ => problems.push(key("smtp_url"), "must be an smtp:// or smtps:// URL"),
                    }
                }
                let timeout = duration(&key("timeout"), raw.timeout.as_deref().unwrap_or("30s"), problems);
                let pool_size = raw.pool_size.unwrap_or(4);
                if pool_size == 0 {
                    problems.push(key("pool_size"), "must be at least 1");
                }
                match (url, timeout) {
                    (Some(url), Some(timeout)) => Some(Transport::Smtp {
                        url,
                        pool_size,
                        timeout,
                    }),
                    _ => None,
                }
            }
            other => {
                problems.push(
                    key("transport"),
                    format!("\"{other}\" is not a transport; use \"smtp\" or \"file\""),
                );
                None
            }
        };
        Some(EmailConfig {
            transport: transport?,
            from: from?,
            limits,
        })
    }
}
