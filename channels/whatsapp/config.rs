//! `[channels.whatsapp]` (skeleton: only the `file` provider so far).

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use crate::channels::Limits;
use crate::config::raw::{limits, read, secret, EnvLookup};
use crate::config::{Problems, Secret};

#[derive(Debug, Clone)]
pub struct WhatsappConfig {
    pub limits: Limits,
    pub outbox_dir: PathBuf,
    /// The key that signs this provider's status webhooks.
    pub webhook_secret: Option<Secret>,
    /// Meta's webhook handshake token (WhatsApp and Messenger only).
    pub verify_token: Option<Secret>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Raw {
    provider: Option<String>,
    outbox_dir: Option<String>,
    rate_per_second: Option<f64>,
    burst: Option<u32>,
}

impl WhatsappConfig {
    pub(crate) fn check(
        value: Value,
        prefix: &str,
        base_dir: &Path,
        env: EnvLookup<'_>,
        problems: &mut Problems,
    ) -> Option<WhatsappConfig> {
        let raw: Raw = read(value, prefix, problems)?;
        let limits = limits(prefix, raw.rate_per_second, raw.burst, 80.0, problems);
        if raw.provider.as_deref().unwrap_or("file") != "file" {
            problems.push(format!("{prefix}.provider"), "only \"file\" is available so far");
        }
        let _ = secret(prefix, None, env, problems);
        Some(WhatsappConfig {
            limits,
            outbox_dir: crate::config::resolve(
                base_dir,
                Path::new(raw.outbox_dir.as_deref().unwrap_or("var/outbox/whatsapp")),
            ),
            webhook_secret: None,
            verify_token: None,
        })
    }
}
