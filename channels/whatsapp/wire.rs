//! The Cloud API's wire shapes (private to this folder), borrowed from the
//! prepared [`TemplateMessage`] by one `TryFrom`, and its answer.

use serde::{Deserialize, Serialize};

use super::TemplateMessage;
use crate::channels::{Prepared, Receipt, SendError};

/// `POST /{phone_number_id}/messages` with a template.
#[derive(Debug, Serialize)]
pub(super) struct SendMessage<'a> {
    messaging_product: &'static str,
    /// E.164 without the `+`.
    to: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    template: Template<'a>,
}

#[derive(Debug, Serialize)]
struct Template<'a> {
    name: &'a str,
    language: Language<'a>,
    components: Vec<Component<'a>>,
}

#[derive(Debug, Serialize)]
struct Language<'a> {
    code: &'a str,
}

#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Component<'a> {
    Body {
        parameters: Vec<TextParameter<'a>>,
    },
    Button {
        sub_type: &'static str,
        /// A string on the wire, as the API wants it.
        index: &'static str,
        parameters: [TextParameter<'a>; 1],
    },
}

#[derive(Debug, Serialize)]
struct TextParameter<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    text: &'a str,
}

impl TextParameter<'_> {
    fn new(text: &str) -> TextParameter<'_> {
        TextParameter { kind: "text", text }
    }
}

/// The request body for a prepared template message; the button's
/// parameter is the pay token, which WhatsApp appends to the template's URL.
impl<'a> TryFrom<&'a Prepared> for SendMessage<'a> {
    type Error = SendError;

    fn try_from(prepared: &'a Prepared) -> Result<SendMessage<'a>, SendError> {
        let message = prepared.message::<TemplateMessage>()?;
        let to = prepared.to.trim().trim_start_matches('+');
        if to.is_empty() || !to.bytes().all(|b| b.is_ascii_digit()) {
            return Err(SendError::Permanent {
                code: None,
                reason: "the recipient is not an E.164 number".to_owned(),
            });
        }
        let mut components = Vec::with_capacity(2);
        // A template without body variables takes no body component at all.
        if !message.parameters.is_empty() {
            components.push(Component::Body {
                parameters: message.parameters.iter().map(|p| TextParameter::new(p)).collect(),
            });
        }
        components.push(Component::Button {
            sub_type: "url",
            index: "0",
            parameters: [TextParameter::new(&message.button)],
        });
        Ok(SendMessage {
            messaging_product: "whatsapp",
            to,
            kind: "template",
            template: Template {
                name: &message.template,
                language: Language {
                    code: &message.language,
                },
                components,
            },
        })
    }
}

/// `{"messaging_product", "contacts": [...], "messages": [{"id": "wamid..."}]}`.
#[derive(Deserialize)]
struct SendResponse {
    #[serde(default)]
    messages: Vec<MessageRef>,
}

#[derive(Deserialize)]
struct MessageRef {
    id: String,
}

/// The receipt of a 2xx answer. An answer without an id still means Meta
/// took the message: sending again would message the customer twice, so it
/// is a receipt without an id (no delivery reports for it), not an error.
pub(super) fn receipt(body: &[u8]) -> Receipt {
    let id = serde_json::from_slice::<SendResponse>(body)
        .ok()
        .and_then(|r| r.messages.into_iter().next())
        .map(|m| m.id)
        .filter(|id| !id.is_empty());
    if id.is_none() {
        tracing::warn!(channel = "whatsapp", "Meta accepted the message but gave no message id");
    }
    Receipt {
        provider_message_id: id,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channels::ChannelMessage;
    use crate::domain::ChannelName;
    use serde_json::json;

    fn prepared(parameters: &[&str]) -> Prepared {
        let message = TemplateMessage {
            template: "payment_request".into(),
            language: "es_MX".into(),
            parameters: parameters.iter().map(|p| p.to_string()).collect(),
            button: "tok_123".into(),
        };
        Prepared::new(ChannelName::Whatsapp, "+5215512345678", message)
    }

    fn payload(prepared: &Prepared) -> Result<serde_json::Value, SendError> {
        SendMessage::try_from(prepared).map(|m| serde_json::to_value(m).unwrap())
    }

    #[test]
    fn the_payload_is_the_documented_template_message() {
        let body = payload(&prepared(&["María", "MXN 1,234.50"])).unwrap();
        assert_eq!(
            body,
            json!({"messaging_product": "whatsapp", "to": "5215512345678", "type": "template",
                   "template": {"name": "payment_request", "language": {"code": "es_MX"},
                    "components": [
                      {"type": "body", "parameters": [{"type": "text", "text": "María"},
                                                      {"type": "text", "text": "MXN 1,234.50"}]},
                      {"type": "button", "sub_type": "url", "index": "0",
                       "parameters": [{"type": "text", "text": "tok_123"}]}]}})
        );
    }

    #[test]
    fn no_parameters_means_no_body_component() {
        let body = payload(&prepared(&[])).unwrap();
        assert_eq!(body["template"]["components"].as_array().unwrap().len(), 1);
        assert_eq!(body["template"]["components"][0]["type"], "button");
    }

    #[test]
    fn a_malformed_prepared_message_is_permanent() {
        let mut bad_to = prepared(&[]);
        bad_to.to = "maria@example.com".into();
        assert!(!payload(&bad_to).unwrap_err().is_transient());
        // A message some other channel prepared.
        #[derive(Debug)]
        struct Text;
        impl ChannelMessage for Text {
            fn parts(&self) -> Vec<(&'static str, std::borrow::Cow<'_, str>)> {
                vec![("text", "hello".into())]
            }
        }
        let other = Prepared::new(ChannelName::Whatsapp, "+5215512345678", Text);
        let error = payload(&other).unwrap_err();
        assert!(!error.is_transient());
        assert!(error.to_string().contains("not prepared by this channel"), "{error}");
    }

    #[test]
    fn the_receipt_takes_the_first_message_id() {
        let ok = br#"{"messaging_product":"whatsapp","contacts":[{"input":"+5215512345678","wa_id":"5215512345678"}],"messages":[{"id":"wamid.HBgM"}]}"#;
        assert_eq!(receipt(ok).provider_message_id.as_deref(), Some("wamid.HBgM"));
        assert_eq!(receipt(b"{}").provider_message_id, None);
        assert_eq!(receipt(b"garbage").provider_message_id, None);
    }
}
