//! Messenger through the Send API (or JSON files with `provider = "file"`).
//!
//! A message is a button template: the text rendered from the view's
//! message template's `messenger/text` (at most 640 characters) and one
//! `web_url` button to the pay link. A bill is usually sent outside the 24-hour window that follows
//! the customer's last message, so it goes as `MESSAGE_TAG` with the
//! configured tag (`POST_PURCHASE_UPDATE` by default); tagged messages must
//! not promote anything. The page token travels in the `Authorization`
//! header, never in the URL, so it cannot reach a log line. `prepare`
//! makes a `ButtonMessage`; `wire.rs` turns it into the Send API's body.
//! Delivery reports arrive on Meta's shared webhook under this channel's
//! `object`.

mod config;
mod wire;

pub use config::{MessageTag, MessengerConfig, MessengerProvider, MAX_BUTTON_TITLE};

use std::borrow::Cow;

use async_trait::async_trait;

use super::meta::{GraphClient, GraphWebhook};
use super::outbox::FileOutbox;
use super::webhook::Webhook;
use super::{
    Adapter, BuildContext, BuildError, Built, Channel, ChannelMessage, Prepared, Providers, Receipt, Request, SendError,
};
use crate::channels::ChannelsConfig;
use crate::domain::ChannelName;
use crate::render::{self, RenderError, Templates};

/// The Send API's limit on a button template's text.
pub const MAX_TEXT_CHARS: usize = 640;

/// The `object` Meta names Page (Messenger) webhooks with.
const WEBHOOK_OBJECT: &str = "page";

pub(super) const ADAPTER: Adapter = Adapter {
    name: ChannelName::Messenger,
    build,
    webhook: Some(webhook),
};

fn build(
    config: &ChannelsConfig,
    context: &BuildContext,
    providers: Providers<'_>,
) -> Option<Result<Built, BuildError>> {
    let messenger = config.messenger.as_ref()?;
    let channel = match providers.files_for(ChannelName::Messenger) {
        None => MessengerChannel::new(messenger, context),
        Some(dir) => MessengerChannel::new(
            &MessengerConfig {
                provider: MessengerProvider::File { dir },
                ..messenger.clone()
            },
            context,
        ),
    };
    Some(channel.map(|c| Built::new(c, &messenger.limits)))
}

fn webhook(config: &ChannelsConfig, _: &BuildContext) -> Box<dyn Webhook> {
    let messenger = config.messenger.as_ref();
    Box::new(GraphWebhook {
        channel: ChannelName::Messenger,
        object: WEBHOOK_OBJECT,
        app_secret: messenger.and_then(|c| c.webhook_secret.clone()),
        verify_token: messenger.and_then(|c| c.verify_token.clone()),
    })
}

/// A payment request as a button template, rendered.
#[derive(Debug, Clone)]
struct ButtonMessage {
    /// Rendered `messenger/text`, at most [`MAX_TEXT_CHARS`].
    text: String,
    /// The pay link the button opens.
    url: String,
    button_title: String,
    tag: MessageTag,
}

impl ChannelMessage for ButtonMessage {
    fn parts(&self) -> Vec<(&'static str, Cow<'_, str>)> {
        vec![
            ("text", Cow::Borrowed(self.text.as_str())),
            ("url", Cow::Borrowed(self.url.as_str())),
            ("button_title", Cow::Borrowed(self.button_title.as_str())),
            ("tag", Cow::Borrowed(self.tag.as_str())),
        ]
    }
}

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

    fn prepare(&self, request: &Request<'_>, templates: &Templates) -> Result<Prepared, RenderError> {
        let [text] = templates.render_message(request.view, render::MESSENGER_PARTS)?;
        let text = truncate(text.trim(), MAX_TEXT_CHARS);
        let url = request.view.pay_url;
        if url.is_empty() {
            return Err(RenderError::Failed {
                name: "messenger button".to_owned(),
                reason: "the view has no pay_url".to_owned(),
            });
        }
        let message = ButtonMessage {
            text,
            url: url.to_owned(),
            button_title: self.button_title.clone(),
            tag: self.tag,
        };
        Ok(Prepared::new(ChannelName::Messenger, request.to, message))
    }

    async fn send(&self, message: &Prepared) -> Result<Receipt, SendError> {
        let payload = wire::SendMessage::try_from(message)?;
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
                let mut parts = message.parts();
                parts.push(("payload", Cow::Owned(body)));
                outbox.write(ChannelName::Messenger, &message.to, &parts).await
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
    use crate::render::View;
    use crate::settings::BillerConfig;
    use serde_json::json;

    fn channel_in(dir: &std::path::Path) -> MessengerChannel {
        MessengerChannel {
            tag: MessageTag::PostPurchaseUpdate,
            button_title: "Pay now".into(),
            sender: Sender::File(FileOutbox::new(ChannelName::Messenger, dir).unwrap()),
        }
    }

    fn view(biller_name: &str) -> View<'static> {
        let data = json!({
            "customer": {"name": "María López", "id": "C-1"},
            "biller": {"id": "acme", "name": biller_name},
            "invoice": {"id": "INV-1", "revision": 1, "description": null, "due_date": "2026-12-01",
                        "due_date_display": "2026-12-01", "source": "erp"},
            "amount": {"value": "1234.50", "currency": "MXN", "display": "MXN 1,234.50", "minor": 123450},
            "pay_url": "https://pay.example/p/tok",
            "locale": "es-MX",
        });
        View {
            pay_url: "https://pay.example/p/tok",
            locale: "es-MX",
            template: "payment_request",
            step: None,
            days_to_due: 3,
            days_overdue: 0,
            data,
        }
    }

    fn prepare(channel: &MessengerChannel, view: &View<'_>) -> Result<Prepared, RenderError> {
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
            p.part("text").as_deref(),
            Some("ACME: la factura INV-1 por MXN 1,234.50 vence el 2026-12-01.")
        );
        assert_eq!(p.part("url").as_deref(), Some("https://pay.example/p/tok"));
        assert_eq!(p.part("button_title").as_deref(), Some("Pay now"));
        assert_eq!(p.part("tag").as_deref(), Some("POST_PURCHASE_UPDATE"));
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
        v.pay_url = "";
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
