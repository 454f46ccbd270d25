//! The Send API's wire shapes (private to this folder), borrowed from the
//! prepared [`ButtonMessage`] by one `TryFrom`, and its answer.

use serde::{Deserialize, Serialize};

use super::ButtonMessage;
use crate::channels::{Prepared, Receipt, SendError};

/// `POST /me/messages`: a button template sent with a message tag.
#[derive(Debug, Serialize)]
pub(super) struct SendMessage<'a> {
    recipient: Recipient<'a>,
    messaging_type: &'static str,
    tag: &'static str,
    message: Message<'a>,
}

#[derive(Debug, Serialize)]
struct Recipient<'a> {
    /// The page-scoped user id.
    id: &'a str,
}

#[derive(Debug, Serialize)]
struct Message<'a> {
    attachment: Attachment<'a>,
}

#[derive(Debug, Serialize)]
struct Attachment<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    payload: ButtonTemplate<'a>,
}

#[derive(Debug, Serialize)]
struct ButtonTemplate<'a> {
    template_type: &'static str,
    text: &'a str,
    buttons: [Button<'a>; 1],
}

#[derive(Debug, Serialize)]
struct Button<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    url: &'a str,
    title: &'a str,
}

/// The request body for a prepared button message, to the PSID it is for.
impl<'a> TryFrom<&'a Prepared> for SendMessage<'a> {
    type Error = SendError;

    fn try_from(prepared: &'a Prepared) -> Result<SendMessage<'a>, SendError> {
        let message = prepared.message::<ButtonMessage>()?;
        let psid = prepared.to.trim();
        if psid.is_empty() || !psid.bytes().all(|b| b.is_ascii_digit()) {
            return Err(SendError::Permanent {
                code: None,
                reason: "the recipient is not a Messenger PSID".to_owned(),
            });
        }
        Ok(SendMessage {
            recipient: Recipient { id: psid },
            messaging_type: "MESSAGE_TAG",
            tag: message.tag.as_str(),
            message: Message {
                attachment: Attachment {
                    kind: "template",
                    payload: ButtonTemplate {
                        template_type: "button",
                        text: &message.text,
                        buttons: [Button {
                            kind: "web_url",
                            url: &message.url,
                            title: &message.button_title,
                        }],
                    },
                },
            },
        })
    }
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
    use crate::channels::messenger::MessageTag;
    use crate::channels::ChannelMessage;
    use crate::domain::ChannelName;
    use serde_json::json;

    fn prepared() -> Prepared {
        let message = ButtonMessage {
            text: "ACME: invoice INV-1 for EUR 12.50 is due on 2026-12-03.".into(),
            url: "https://pay.example/p/tok".into(),
            button_title: "Pay now".into(),
            tag: MessageTag::PostPurchaseUpdate,
        };
        Prepared::new(ChannelName::Messenger, "6543210987654321", message)
    }

    fn payload(prepared: &Prepared) -> Result<serde_json::Value, SendError> {
        SendMessage::try_from(prepared).map(|m| serde_json::to_value(m).unwrap())
    }

    #[test]
    fn the_payload_is_the_documented_button_template() {
        let body = payload(&prepared()).unwrap();
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
        // A message some other channel prepared.
        #[derive(Debug)]
        struct Text;
        impl ChannelMessage for Text {
            fn parts(&self) -> Vec<(&'static str, std::borrow::Cow<'_, str>)> {
                vec![("text", "hello".into())]
            }
        }
        let other = Prepared::new(ChannelName::Messenger, "6543210987654321", Text);
        let error = payload(&other).unwrap_err();
        assert!(!error.is_transient());
        assert!(error.to_string().contains("not prepared by this channel"), "{error}");
    }

    #[test]
    fn the_receipt_takes_the_message_id() {
        let ok = br#"{"recipient_id":"6543210987654321","message_id":"m_AG5Hz2Uq7"}"#;
        assert_eq!(receipt(ok).provider_message_id.as_deref(), Some("m_AG5Hz2Uq7"));
        assert_eq!(receipt(b"{}").provider_message_id, None);
    }
}
