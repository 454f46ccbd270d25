//! `[channels.messenger]`: the Messenger Send API (`provider = "meta"`) or
//! JSON files (`provider = "file"`, the default), the message tag and the
//! button's title.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use crate::channels::meta::{self, GraphConfig};
use crate::channels::Limits;
use crate::domain::ChannelName;
use crate::settings::{limits, read, secret, EnvLookup};
use crate::settings::{Problems, Secret};

/// Messenger's limit on a button title.
pub const MAX_BUTTON_TITLE: usize = 20;

/// Where Messenger messages go.
#[derive(Debug, Clone)]
pub enum MessengerProvider {
    /// The Send API as the Page whose access token is configured.
    Meta(GraphConfig),
    /// JSON files in a folder, for running without an account.
    File { dir: PathBuf },
}

/// The message tags that allow a message outside the 24-hour window and fit
/// an automated payment request. `HUMAN_AGENT` is left out: it is for a
/// person answering a customer, not for a dispatcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageTag {
    ConfirmedEventUpdate,
    PostPurchaseUpdate,
    AccountUpdate,
}

impl MessageTag {
    pub const ALL: [MessageTag; 3] = [
        MessageTag::ConfirmedEventUpdate,
        MessageTag::PostPurchaseUpdate,
        MessageTag::AccountUpdate,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MessageTag::ConfirmedEventUpdate => "CONFIRMED_EVENT_UPDATE",
            MessageTag::PostPurchaseUpdate => "POST_PURCHASE_UPDATE",
            MessageTag::AccountUpdate => "ACCOUNT_UPDATE",
        }
    }
}

impl fmt::Display for MessageTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone)]
pub struct MessengerConfig {
    pub provider: MessengerProvider,
    /// Sent with `messaging_type = MESSAGE_TAG`; `POST_PURCHASE_UPDATE` by
    /// default, the tag Meta names for payment and invoice updates.
    pub tag: MessageTag,
    /// The title of the button that opens the pay link.
    pub button_title: String,
    pub limits: Limits,
    /// The `app_secret`: the key of `X-Hub-Signature-256` on webhooks.
    pub webhook_secret: Option<Secret>,
    /// Meta's webhook handshake token.
    pub verify_token: Option<Secret>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Raw {
    provider: Option<String>,
    base_url: Option<String>,
    page_access_token: Option<String>,
    app_secret: Option<String>,
    verify_token: Option<String>,
    tag: Option<String>,
    button_title: Option<String>,
    rate_per_second: Option<f64>,
    burst: Option<u32>,
    timeout: Option<String>,
    outbox_dir: Option<String>,
}

impl MessengerConfig {
    pub(crate) fn check(
        value: Value,
        prefix: &str,
        base_dir: &Path,
        env: EnvLookup<'_>,
        problems: &mut Problems,
    ) -> Option<MessengerConfig> {
        let raw: Raw = read(value, prefix, problems)?;
        let key = |k: &str| format!("{prefix}.{k}");
        let limits = limits(prefix, raw.rate_per_second, raw.burst, 10.0, problems);
        let tag_text = raw.tag.as_deref().unwrap_or("POST_PURCHASE_UPDATE");
        let tag = MessageTag::ALL.into_iter().find(|t| t.as_str() == tag_text);
        if tag.is_none() {
            let allowed = MessageTag::ALL.map(MessageTag::as_str).join(", ");
            problems.push(
                key("tag"),
                format!("\"{tag_text}\" is not a tag payrelay may use; use one of {allowed}"),
            );
        }
        let button_title = raw.button_title.unwrap_or_else(|| "Pay now".to_owned());
        let title_chars = button_title.trim().chars().count();
        if title_chars == 0 || title_chars > MAX_BUTTON_TITLE {
            problems.push(
                key("button_title"),
                format!("must be 1 to {MAX_BUTTON_TITLE} characters (Messenger's limit)"),
            );
        }
        let webhook_secret = secret(&key("app_secret"), raw.app_secret, env, problems);
        let verify_token = secret(&key("verify_token"), raw.verify_token, env, problems);
        let provider = match meta::provider_is_meta(prefix, raw.provider.as_deref(), problems)? {
            true => MessengerProvider::Meta(GraphConfig::check(
                prefix,
                raw.base_url.as_deref(),
                ("page_access_token", raw.page_access_token),
                raw.timeout.as_deref(),
                env,
                problems,
            )?),
            false => MessengerProvider::File {
                dir: meta::outbox_dir(base_dir, raw.outbox_dir.as_deref(), ChannelName::Messenger),
            },
        };
        Some(MessengerConfig {
            provider,
            tag: tag?,
            button_title: button_title.trim().to_owned(),
            limits,
            webhook_secret,
            verify_token,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::time::Duration;

    use super::*;
    use crate::config::{Config, Problem};

    const MINIMAL: &str = r#"
[billers.acme]
checkout_url = "https://pay.example/c?inv={invoice_id}"

[channels.email]
transport = "file"
"#;

    fn env(name: &str) -> Option<String> {
        match name {
            "MESSENGER_TOKEN" => Some("EAAPage".into()),
            "META_APP_SECRET" => Some("app-secret".into()),
            "META_VERIFY_TOKEN" => Some("verify-me".into()),
            _ => None,
        }
    }

    fn load(section: &str) -> Result<Config, Vec<Problem>> {
        Config::from_toml(
            &format!("{MINIMAL}\n[channels.messenger]\n{section}"),
            Path::new("/etc/payrelay"),
            &env,
        )
    }

    fn messenger(section: &str) -> MessengerConfig {
        match load(section) {
            Ok(c) => c.channels.messenger.expect("messenger configured"),
            Err(p) => panic!("refused: {p:#?}"),
        }
    }

    fn problem_keys(section: &str) -> BTreeSet<String> {
        match load(section) {
            Ok(c) => panic!("accepted: {c:#?}"),
            Err(p) => p.into_iter().map(|p| p.key).collect(),
        }
    }

    fn keys(list: &[&str]) -> BTreeSet<String> {
        list.iter().map(|k| format!("channels.messenger.{k}")).collect()
    }

    #[test]
    fn an_empty_section_is_the_file_provider_with_the_documented_defaults() {
        let c = messenger("");
        assert!(
            matches!(&c.provider, MessengerProvider::File { dir } if dir == Path::new("/etc/payrelay/var/outbox/messenger"))
        );
        assert_eq!(c.tag, MessageTag::PostPurchaseUpdate);
        assert_eq!(c.button_title, "Pay now");
        assert_eq!((c.limits.rate_per_second, c.limits.burst.get()), (10.0, 10));
    }

    #[test]
    fn the_meta_provider_reads_every_key() {
        let c = messenger(
            r#"
provider = "meta"
base_url = "http://127.0.0.1:9999/v21.0/"
page_access_token = "env:MESSENGER_TOKEN"
app_secret = "env:META_APP_SECRET"
verify_token = "env:META_VERIFY_TOKEN"
tag = "ACCOUNT_UPDATE"
button_title = "Pagar ahora"
rate_per_second = 2.5
burst = 4
timeout = "1500ms"
"#,
        );
        let MessengerProvider::Meta(graph) = &c.provider else {
            panic!("not meta: {c:?}");
        };
        assert_eq!(graph.base_url.as_str(), "http://127.0.0.1:9999/v21.0/");
        assert_eq!(graph.access_token.expose(), "EAAPage");
        assert_eq!(graph.timeout, Duration::from_millis(1500));
        assert_eq!(c.tag, MessageTag::AccountUpdate);
        assert_eq!(c.button_title, "Pagar ahora");
        assert_eq!(c.webhook_secret.as_ref().map(Secret::expose), Some("app-secret"));
        assert_eq!(c.verify_token.as_ref().map(Secret::expose), Some("verify-me"));
        assert_eq!((c.limits.rate_per_second, c.limits.burst.get()), (2.5, 4));
        assert!(!format!("{c:?}").contains("EAAPage"), "the token never prints");
    }

    #[test]
    fn meta_without_a_page_token_is_refused() {
        assert_eq!(problem_keys("provider = \"meta\""), keys(&["page_access_token"]));
    }

    #[test]
    fn each_mistake_is_reported_under_its_key() {
        let cases: &[(&str, &str, &[&str])] = &[
            ("unknown provider", "provider = \"graph\"", &["provider"]),
            ("typo", "buton_title = \"Pay\"", &["buton_title"]),
            ("human agent tag", "tag = \"HUMAN_AGENT\"", &["tag"]),
            ("retired tag", "tag = \"PAYMENT_UPDATE\"", &["tag"]),
            ("lowercase tag", "tag = \"post_purchase_update\"", &["tag"]),
            ("empty button title", "button_title = \" \"", &["button_title"]),
            (
                "long button title",
                "button_title = \"Pay your invoice right now\"",
                &["button_title"],
            ),
            ("unset app secret", "app_secret = \"env:NOPE\"", &["app_secret"]),
            ("zero rate", "rate_per_second = -1", &["rate_per_second"]),
            (
                "meta with a bad url and timeout",
                "provider = \"meta\"\npage_access_token = \"t\"\nbase_url = \"nope\"\ntimeout = \"1 fortnight\"",
                &["base_url", "timeout"],
            ),
            (
                "meta with an unset token",
                "provider = \"meta\"\npage_access_token = \"env:NOPE\"",
                &["page_access_token"],
            ),
            (
                "several at once",
                "provider = \"meta\"\ntag = \"X\"\nbutton_title = \"\"",
                &["tag", "button_title", "page_access_token"],
            ),
        ];
        for (what, section, expected) in cases {
            assert_eq!(problem_keys(section), keys(expected), "{what}");
        }
    }
}
