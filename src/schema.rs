//! The JSON Schemas (2020-12) of what billers send and receive, published
//! in `docs/schemas/`.
//!
//! Events, payment confirmations and the status API's answer are generated
//! from the very types that are serialized and parsed ([`Event`], the
//! payments API's body, the invoice status view). The
//! invoice message is read by a lenient parser that reports every problem
//! at once, so its schema is written here, from the same constants the
//! parser uses; `tests/docs.rs` checks that every message the parser
//! accepts validates, that the messages it refuses for a reason a schema
//! can express do not, and that the committed files equal these.

use schemars::generate::SchemaSettings;
use schemars::JsonSchema;
use serde_json::{json, Value};

use crate::domain::ChannelName;
use crate::events::Event;
use crate::invoice::MAX_BODY_BYTES;

/// Where the schemas are published, relative to the repository.
pub const DIR: &str = "docs/schemas";

/// Every published schema with its file name under [`DIR`].
pub fn all() -> Vec<(&'static str, Value)> {
    vec![
        ("invoice.schema.json", invoice()),
        ("event.schema.json", event()),
        ("payment-confirmation.schema.json", payment_confirmation()),
        ("invoice-status.schema.json", invoice_status()),
    ]
}

/// An event body as published on the events exchange.
pub fn event() -> Value {
    let mut schema = generate::<Event>();
    require_every_key(&mut schema);
    schema
}

/// The body of `GET /v1/invoices/{biller_id}/{invoice_id}`.
pub fn invoice_status() -> Value {
    let mut schema = generate::<crate::server::api::InvoiceView>();
    require_every_key(&mut schema);
    if let Some(defs) = schema.get_mut("$defs").and_then(Value::as_object_mut) {
        defs.values_mut().for_each(require_every_key);
    }
    schema
}

/// Every key is serialized, null when it does not apply: all required.
fn require_every_key(schema: &mut Value) {
    let Some(properties) = schema.get("properties").and_then(Value::as_object) else {
        return;
    };
    let keys: Vec<Value> = properties.keys().map(|k| Value::String(k.clone())).collect();
    schema["required"] = Value::Array(keys);
}

/// The body of `POST /v1/payments`.
pub fn payment_confirmation() -> Value {
    generate::<crate::server::api::Payment>()
}

fn generate<T: JsonSchema>() -> Value {
    SchemaSettings::draft2020_12()
        .into_generator()
        .into_root_schema_for::<T>()
        .to_value()
}

/// A message on the invoices queue: a payment request, or the news that an
/// invoice was paid or cancelled elsewhere.
pub fn invoice() -> Value {
    let channel = json!({ "enum": ChannelName::ALL.map(|c| c.as_str()) });
    let channel_list = json!({ "type": ["array", "null"], "items": channel });
    let text = json!({ "type": ["string", "null"] });
    // A string with something in it besides spaces.
    let filled = |description: &str| json!({ "type": "string", "pattern": "\\S", "description": description });
    let phone = json!({
        "type": ["string", "null"],
        "pattern": "^\\+[0-9]{8,15}$",
        "description": "E.164: + and 8 to 15 digits, with the country code"
    });
    let contact = |field: &str| json!({ "required": [field], "properties": { field: { "type": "string" } } });
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "payrelay invoice message",
        "description": format!(
            "One message on the invoices queue: UTF-8 JSON, at most {MAX_BODY_BYTES} bytes. Keys not listed \
             here are ignored. Beyond this schema, payrelay checks that biller_id names a configured biller, \
             that no object has a key twice, that amount has no more decimals than the currency allows \
             (leading zeros are dropped), that currency is an ISO 4217 code for money (not XAU, XAG, XPT, \
             XPD, XDR, XTS, XXX or another code ISO reserves for metals, units of account and testing), \
             that due_date is a real date, that phone numbers are valid for their country, and that timezone \
             is a known IANA zone; a message that fails any check is dead-lettered with its reason."
        ),
        "type": "object",
        "properties": {
            "kind": {
                "enum": ["payment_request", "invoice_paid", "invoice_cancelled", null],
                "default": "payment_request",
                "description": "payment_request asks the customer to pay; invoice_paid and invoice_cancelled \
                                close the invoice (every revision) and need only biller_id and invoice_id"
            },
            "invoice_id": {
                "type": "string",
                "pattern": "\\S",
                "maxLength": 128,
                "description": "The biller's id for the invoice; with biller_id and revision, the idempotency key"
            },
            "biller_id": {
                "type": "string",
                "pattern": "^[a-z0-9_-]{1,64}$",
                "description": "A biller configured in payrelay ([billers.<id>])"
            },
            "revision": {
                "type": ["integer", "null"],
                "minimum": 0,
                "default": 1,
                "description": "A higher revision supersedes the earlier ones; a lower one is stale and refused"
            }
        },
        "required": ["invoice_id", "biller_id"],
        "if": {
            "required": ["kind"],
            "properties": { "kind": { "enum": ["invoice_paid", "invoice_cancelled"] } }
        },
        "then": true,
        "else": {
            "properties": {
                "source": { "type": ["string", "null"], "description": "Which system sent it (erp, crm, credit, ...); rules can match on it" },
                "amount": {
                    "oneOf": [
                        { "type": "string", "pattern": "^[0-9]+(\\.[0-9]+)?$" },
                        { "type": "number", "exclusiveMinimum": 0 }
                    ],
                    "description": "More than zero, in major units, as a decimal string (\"1234.50\") or a number"
                },
                "currency": { "type": "string", "pattern": "^[A-Z]{3}$", "description": "ISO 4217 code" },
                "due_date": { "type": "string", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$", "format": "date" },
                "description": text.clone(),
                "customer": {
                    "type": "object",
                    "properties": {
                        "id": { "type": ["string", "null"], "description": "The biller's id for the customer" },
                        "name": filled("The customer's name as the messages address them"),
                        "email": { "type": ["string", "null"], "format": "email" },
                        "phone": phone.clone(),
                        "whatsapp": phone,
                        "messenger_psid": {
                            "type": ["string", "null"],
                            "pattern": "^[0-9]{5,32}$",
                            "description": "The customer's page-scoped id on the biller's Facebook page"
                        },
                        "locale": {
                            "type": ["string", "null"],
                            "pattern": "^[A-Za-z]{2,3}([-_][A-Za-z0-9]{1,8})*$",
                            "description": "BCP 47; else the biller's default_locale, else en"
                        },
                        "timezone": {
                            "type": ["string", "null"],
                            "description": "IANA time zone, for quiet hours; else the biller's"
                        },
                        "preferred_channels": channel_list.clone(),
                        "opted_out": channel_list
                    },
                    "required": ["name"],
                    "anyOf": [contact("email"), contact("phone"), contact("whatsapp"), contact("messenger_psid")]
                },
                "channels": {
                    "type": ["array", "null"],
                    "items": channel,
                    "minItems": 1,
                    "description": "Overrides routing with this order; null or absent lets the rules decide"
                },
                "metadata": { "description": "Anything; copied into every event about the invoice" }
            },
            "required": ["amount", "currency", "due_date", "customer"]
        }
    })
}
