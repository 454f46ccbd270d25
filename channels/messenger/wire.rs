//! The Send API's wire shapes (private to this folder) and the one function
//! that turns a [`Prepared`] message into the exact request body.

use serde::{Deserialize, Serialize};

use crate::channels::{Prepared, Receipt, SendError};

/// `POST /me/messages`: a button template sent with a message tag.
#[derive(Debug, Serialize)]
pub(super) struct SendMessage {
    recipient: Recipient,
    messaging_type: &'static str,
    tag: String,
    message: Message,
}

#[derive(Debug, Serialize)]
struct Recipient {
    /// The page-scoped user id.
    id: String,
}

#[derive(Debug, Serialize)]
struct Message {
    attachment: Attachment,
}

#[derive(Debug, Serialize)]
struct Attachment {
    #[serde(rename = "type")]
    kind: &'static str,
    payload: ButtonTemplate,
}

#[derive(Debug, Serialize)]
struct ButtonTemplate {
    template_type: &'static str,
    text: String,
    buttons: Vec<Button>,
}

#[derive(Debug, Serialize)]
struct Button {
    #[serde(rename = "type")]
    kind: &'static str,
    url: String,
    title: String,
}

/// The request body for `message`, from the parts `prepare` made: `text`,
/// `url` (the pay link), `button_title` and `tag`.
pub(super) fn payload(message: &Prepared) -> Result<SendMessage, SendError> {
    let part = |name: &str| {
        message
            .part(name)
            .map(str::to_owned)
            .ok_or_else(|| SendError::Permanent {
                code: None,
                reason: format!("the prepared Messenger message has no {name} part"),
            })
    };
    let psid = message.to.trim();
    if psid.is_empty() || !psid.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SendError::Permanent {
            code: None,
            reason: "the recipient is not a Messenger PSID".to_owned(),
        });
    }
    Ok(SendMessage {
        recipient: Recipient { id: psid.to_owned() },
        messaging_type: "MESSAGE_TAG",
        tag: part("tag")?,
        message: Message {
            attachment: Attachment {
                kind: "template",
                payload: ButtonTemplate {
                    template_type: "button",
                    text: part("text")?,
                    buttons: vec![Button {
                        kind: "web_url",
                        url: part("url")?,
                        title: part("button_title")?,
                    }],
                },
            },
        },
    })
}

/// `{"recipient_id": "...", "message_id": "m_..."}`.
#[derive(Deserialize)]
struct SendResponse {
    message_id: Option<String>,
}

/// The receipt of a 2xx answer. Without a message id Meta still took the
/// message: sending again would message the customer twice, so it is a
/// receipt without an id (no delivery reports for it), not an error.
pub(super) fn receipt(body: &[u8]) -> Receipt {
    let id = serde_json::from_slice::<SendResponse>(body)
        .ok()
        .and_then(|r| r.message_id)
        .filter(|id| !id.is_empty());
    if id.is_none() {
        tracing::warn!(
            channel = "messenger",
            "Meta accepted the message but gave no message id"
        );
    }
    Receipt {
        provider_message_id: id,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channels::ChannelName;
    use serde_json::json;

    fn prepared() -> Prepared {
        Prepared {
            channel: ChannelName::Messenger,
            to: "6543210987654321".into(),
            parts: vec![
                ("text", "ACME: invoice INV-1 for EUR 12.50 is due on 2026-12-03.".into()),
                ("url", "https://pay.example/p/tok".into()),
                ("button_title", "Pay now".into()),
                ("tag", "POST_PURCHASE_UPDATE".into()),
            ],
        }
    }

    #[test]
    fn the_payload_is_the_documented_button_template() {
        let body = serde_json::to_value(payload(&prepared()).unwrap()).unwrap();
        assert_eq!(
            body,
            json!({"recipient": {"id": "6543210987654321"}, "messaging_type": "MESSAGE_TAG",
                   "tag": "POST_PURCHASE_UPDATE",
                   "message": {"attachment": {"type": "template", "payload": {"template_type": "button",
                     "text": "ACME: invoice INV-1 for EUR 12.50 is due on 2026-12-03.",
                     "buttons": [{"type": "web_url", "url": "https://pay.example/p/tok", "title": "Pay now"}]}}}})
        );
    }

    #[test]
    fn a_malformed_prepared_message_is_permanent() {
        let mut bad = prepared();
        bad.to = "+5215512345678".into();
        assert!(!payload(&bad).unwrap_err().is_transient());
        let mut missing = prepared();
        missing.parts.retain(|(n, _)| *n != "url");
        assert!(payload(&missing).unwrap_err().to_string().contains("url"));
    }

    #[test]
    fn the_receipt_takes_the_message_id() {
        let ok = br#"{"recipient_id":"6543210987654321","message_id":"m_AG5Hz2Uq7"}"#;
        assert_eq!(receipt(ok).provider_message_id.as_deref(), Some("m_AG5Hz2Uq7"));
        assert_eq!(receipt(b"{}").provider_message_id, None);
    }
}
