//! Messenger through the Send API (or JSON files with `provider = "file"`).
//!
//! A payment request is a button template: the text rendered from
//! `messenger/text` (at most 640 characters) and one `web_url` button to the
//! pay link. A bill is usually sent outside the 24-hour window that follows
//! the customer's last message, so it goes as `MESSAGE_TAG` with the
//! configured tag (`POST_PURCHASE_UPDATE` by default); tagged messages must
//! not promote anything. The page token travels in the `Authorization`
//! header, never in the URL, so it cannot reach a log line.

mod config;
mod wire;

pub use config::{MessageTag, MessengerConfig, MessengerProvider, MAX_BUTTON_TITLE};

use async_trait::async_trait;

use super::meta::GraphClient;
use super::outbox::FileOutbox;
use super::{BuildContext, BuildError, Channel, ChannelName, Prepared, Receipt, Request, SendError};
use crate::render::{RenderError, Templates};

/// The Send API's limit on a button template's text.
pub const MAX_TEXT_CHARS: usize = 640;

enum Sender {
    Graph(GraphClient),
    File(FileOutbox),
}

pub struct MessengerChannel {
    tag: MessageTag,
    button_title: String,
    sender: Sender,
}

impl MessengerChannel {
    pub fn new(config: &MessengerConfig, _context: &BuildContext) -> Result<MessengerChannel, BuildError> {
        let sender = match &config.provider {
            MessengerProvider::Meta(graph) => Sender::Graph(GraphClient::new(ChannelName::Messenger, graph)?),
            MessengerProvider::File { dir } => Sender::File(FileOutbox::new(ChannelName::Messenger, dir)?),
        };
        Ok(MessengerChannel {
            tag: config.tag,
            button_title: config.button_title.clone(),
            sender,
        })
    }
}

#[async_trait]
impl Channel for MessengerChannel {
    fn name(&self) -> ChannelName {
        ChannelName::Messenger
    }

    /// Parts: `text` (rendered `messenger/text`, cut to 640 characters),
    /// `url` (the pay link), `button_title` and `tag`.
    fn prepare(&self, request: &Request<'_>, templates: &Templates) -> Result<Prepared, RenderError> {
        let text = truncate(templates.render("messenger/text", request.view)?.trim(), MAX_TEXT_CHARS);
        let url = request
            .view
            .get("pay_url")
            .and_then(|u| u.as_str())
            .filter(|u| !u.is_empty())
            .ok_or_else(|| RenderError::Failed {
                name: "messenger button".to_owned(),
                reason: "the view has no pay_url".to_owned(),
            })?;
        Ok(Prepared {
            channel: ChannelName::Messenger,
            to: request.to.to_owned(),
            parts: vec![
                ("text", text),
                ("url", url.to_owned()),
                ("button_title", self.button_title.clone()),
                ("tag", self.tag.as_str().to_owned()),
            ],
        })
    }

    async fn send(&self, message: &Prepared) -> Result<Receipt, SendError> {
        let payload = wire::payload(message)?;
        match &self.sender {
            Sender::Graph(client) => {
                let body = client.post("me/messages", &payload, &message.to).await?;
                Ok(wire::receipt(&body))
            }
            Sender::File(outbox) => {
                // The file shows the exact body the Send API would get.
                let body = serde_json::to_string_pretty(&payload).map_err(|e| SendError::Permanent {
                    code: None,
                    reason: format!("cannot encode the message: {e}"),
                })?;
                let mut with_payload = message.clone();
                with_payload.parts.push(("payload", body));
                outbox.write(&with_payload).await
            }
        }
    }
}

/// At most `max` characters, cut on a character boundary and ending in `…`
/// when cut.
pub fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BillerConfig;
    use serde_json::json;

    fn channel_in(dir: &std::path::Path) -> MessengerChannel {
        MessengerChannel {
            tag: MessageTag::PostPurchaseUpdate,
            button_title: "Pay now".into(),
            sender: Sender::File(FileOutbox::new(ChannelName::Messenger, dir).unwrap()),
        }
    }

    fn view(biller_name: &str) -> serde_json::Value {
        json!({
            "customer": {"name": "María López", "id": "C-1"},
            "biller": {"id": "acme", "name": biller_name},
            "invoice": {"id": "INV-1", "revision": 1, "description": null, "due_date": "2026-12-01",
                        "due_date_display": "2026-12-01", "source": "erp"},
            "amount": {"value": "1234.50", "currency": "MXN", "display": "MXN 1,234.50", "minor": 123450},
            "pay_url": "https://pay.example/p/tok",
            "locale": "es-MX",
        })
    }

    fn prepare(channel: &MessengerChannel, view: &serde_json::Value) -> Result<Prepared, RenderError> {
        let templates = Templates::load(None).unwrap();
        let biller = BillerConfig::default();
        let request = Request {
            to: "6543210987654321",
            token: "tok",
            view,
            biller: &biller,
        };
        channel.prepare(&request, &templates)
    }

    #[test]
    fn truncation_keeps_characters_whole() {
        assert_eq!(truncate("short", 640), "short");
        assert_eq!(truncate("ééééé", 5), "ééééé");
        assert_eq!(truncate("éééééé", 5), "éééé…");
        assert_eq!(truncate("😀😀😀", 2), "😀…");
        let long = "ñ".repeat(700);
        let cut = truncate(&long, MAX_TEXT_CHARS);
        assert_eq!(cut.chars().count(), MAX_TEXT_CHARS);
        assert!(cut.ends_with('…'));
    }

    #[test]
    fn prepare_renders_the_text_and_carries_link_title_and_tag() {
        let dir = tempfile::tempdir().unwrap();
        let p = prepare(&channel_in(dir.path()), &view("ACME")).unwrap();
        assert_eq!(
            p.part("text"),
            Some("ACME: la factura INV-1 por MXN 1,234.50 vence el 2026-12-01.")
        );
        assert_eq!(p.part("url"), Some("https://pay.example/p/tok"));
        assert_eq!(p.part("button_title"), Some("Pay now"));
        assert_eq!(p.part("tag"), Some("POST_PURCHASE_UPDATE"));
        assert_eq!(p.to, "6543210987654321");
    }

    #[test]
    fn a_long_text_is_cut_to_640_characters() {
        let dir = tempfile::tempdir().unwrap();
        let p = prepare(&channel_in(dir.path()), &view(&"Ñandú ".repeat(200))).unwrap();
        let text = p.part("text").unwrap();
        assert_eq!(text.chars().count(), MAX_TEXT_CHARS);
        assert!(text.ends_with('…'));
    }

    #[test]
    fn no_pay_url_is_a_render_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut v = view("ACME");
        v["pay_url"] = json!(null);
        assert!(prepare(&channel_in(dir.path()), &v).is_err());
    }

    #[tokio::test]
    async fn the_file_provider_writes_the_parts_and_the_exact_payload() {
        let dir = tempfile::tempdir().unwrap();
        let c = channel_in(dir.path());
        let p = prepare(&c, &view("ACME")).unwrap();
        let id = c.send(&p).await.unwrap().provider_message_id.unwrap();
        let written: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join(format!("{id}.json"))).unwrap()).unwrap();
        assert_eq!(written["channel"], "messenger");
        assert_eq!(written["url"], "https://pay.example/p/tok");
        let payload: serde_json::Value = serde_json::from_str(written["payload"].as_str().unwrap()).unwrap();
        assert_eq!(payload["recipient"]["id"], "6543210987654321");
        assert_eq!(payload["messaging_type"], "MESSAGE_TAG");
    }
}
