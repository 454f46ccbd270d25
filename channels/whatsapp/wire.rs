//! The Cloud API's wire shapes (private to this folder) and the one function
//! that turns a [`Prepared`] message into the exact request body.

use serde::{Deserialize, Serialize};

use crate::channels::{Prepared, Receipt, SendError};

/// `POST /{phone_number_id}/messages` with a template.
#[derive(Debug, Serialize)]
pub(super) struct SendMessage {
    messaging_product: &'static str,
    /// E.164 without the `+`.
    to: String,
    #[serde(rename = "type")]
    kind: &'static str,
    template: Template,
}

#[derive(Debug, Serialize)]
struct Template {
    name: String,
    language: Language,
    components: Vec<Component>,
}

#[derive(Debug, Serialize)]
struct Language {
    code: String,
}

#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Component {
    Body {
        parameters: Vec<TextParameter>,
    },
    Button {
        sub_type: &'static str,
        /// A string on the wire, as the API wants it.
        index: &'static str,
        parameters: Vec<TextParameter>,
    },
}

#[derive(Debug, Serialize)]
struct TextParameter {
    #[serde(rename = "type")]
    kind: &'static str,
    text: String,
}

impl TextParameter {
    fn new(text: String) -> TextParameter {
        TextParameter { kind: "text", text }
    }
}

/// The request body for `message`, built from the parts `prepare` made:
/// `template`, `language`, `parameters` (a JSON array of strings) and
/// `button` (the pay token, appended by WhatsApp to the template's URL).
pub(super) fn payload(message: &Prepared) -> Result<SendMessage, SendError> {
    let part = |name: &str| {
        message.part(name).ok_or_else(|| SendError::Permanent {
            code: None,
            reason: format!("the prepared WhatsApp message has no {name} part"),
        })
    };
    let parameters: Vec<String> = serde_json::from_str(part("parameters")?).map_err(|e| SendError::Permanent {
        code: None,
        reason: format!("the prepared WhatsApp parameters are not a JSON list of strings: {e}"),
    })?;
    let to = message.to.trim().trim_start_matches('+');
    if to.is_empty() || !to.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SendError::Permanent {
            code: None,
            reason: "the recipient is not an E.164 number".to_owned(),
        });
    }
    let mut components = Vec::with_capacity(2);
    // A template without body variables takes no body component at all.
    if !parameters.is_empty() {
        components.push(Component::Body {
            parameters: parameters.into_iter().map(TextParameter::new).collect(),
        });
    }
    components.push(Component::Button {
        sub_type: "url",
        index: "0",
        parameters: vec![TextParameter::new(part("button")?.to_owned())],
    });
    Ok(SendMessage {
        messaging_product: "whatsapp",
        to: to.to_owned(),
        kind: "template",
        template: Template {
            name: part("template")?.to_owned(),
            language: Language {
                code: part("language")?.to_owned(),
            },
            components,
        },
    })
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
    use crate::channels::ChannelName;
    use serde_json::json;

    fn prepared(parameters: &str) -> Prepared {
        Prepared {
            channel: ChannelName::Whatsapp,
            to: "+5215512345678".into(),
            parts: vec![
                ("template", "payment_request".into()),
                ("language", "es_MX".into()),
                ("parameters", parameters.into()),
                ("button", "tok_123".into()),
            ],
        }
    }

    #[test]
    fn the_payload_is_the_documented_template_message() {
        let body = serde_json::to_value(payload(&prepared(r#"["María","MXN 1,234.50"]"#)).unwrap()).unwrap();
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
        let body = serde_json::to_value(payload(&prepared("[]")).unwrap()).unwrap();
        assert_eq!(body["template"]["components"].as_array().unwrap().len(), 1);
        assert_eq!(body["template"]["components"][0]["type"], "button");
    }

    #[test]
    fn a_malformed_prepared_message_is_permanent() {
        assert!(!payload(&prepared("not json")).unwrap_err().is_transient());
        let mut bad_to = prepared("[]");
        bad_to.to = "maria@example.com".into();
        assert!(!payload(&bad_to).unwrap_err().is_transient());
        let mut missing = prepared("[]");
        missing.parts.retain(|(n, _)| *n != "button");
        assert!(payload(&missing).unwrap_err().to_string().contains("button"));
    }

    #[test]
    fn the_receipt_takes_the_first_message_id() {
        let ok = br#"{"messaging_product":"whatsapp","contacts":[{"input":"+5215512345678","wa_id":"5215512345678"}],"messages":[{"id":"wamid.HBgM"}]}"#;
        assert_eq!(receipt(ok).provider_message_id.as_deref(), Some("wamid.HBgM"));
        assert_eq!(receipt(b"{}").provider_message_id, None);
        assert_eq!(receipt(b"garbage").provider_message_id, None);
    }
}
