//! Messages from billers, parsed once at the edge.
//!
//! Everything the rest of payrelay sees is typed here: an [`Invoice`] holds a
//! checked [`Amount`], parsed contacts and a due date, so the router, the
//! templates and the channels never re-validate raw JSON. A message that fails
//! here is [`Rejected`] with every reason in plain words, which becomes the
//! dead-letter header and the `invoice.rejected` event's detail.

mod contact;

pub use crate::domain::money::Amount;
pub use crate::domain::InvoiceKey;
pub use contact::{Contacts, Email, Phone, Psid};

use std::fmt;

use serde::{Deserialize, Serialize};
use time::Date;

use crate::domain::ChannelName;

/// Largest body accepted from the queue (64 KiB, as documented).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// One message from the invoices queue, after parsing.
#[derive(Debug, Clone)]
pub enum Message {
    PaymentRequest(Box<Invoice>),
    /// The invoice was paid elsewhere: close it and stop chasing.
    Paid {
        biller_id: String,
        invoice_id: String,
    },
    /// The biller withdrew the invoice.
    Cancelled {
        biller_id: String,
        invoice_id: String,
    },
}

/// A validated payment request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Invoice {
    pub key: InvoiceKey,
    pub source: Option<String>,
    pub amount: Amount,
    pub due_date: Date,
    pub description: Option<String>,
    pub customer: Customer,
    /// Explicit channel order from the biller; overrides routing rules.
    pub channels: Option<Vec<ChannelName>>,
    pub metadata: Option<serde_json::Value>,
}

impl Invoice {
    /// Who the invoice is for, as a key the store indexes: the biller and
    /// the customer's `id`, else the biller and the invoice's first contact
    /// (email, phone, WhatsApp, Messenger), which then stands for the
    /// customer. The contact is kept as its SHA-256, never in clear.
    pub fn customer_key(&self) -> String {
        use sha2::{Digest, Sha256};
        let biller = &self.key.biller_id;
        if let Some(id) = &self.customer.id {
            return customer_key_of_id(biller, id);
        }
        let contacts = &self.customer.contacts;
        let contact = [
            ChannelName::Email,
            ChannelName::Sms,
            ChannelName::Whatsapp,
            ChannelName::Messenger,
        ]
        .into_iter()
        .find_map(|channel| contacts.address(channel))
        .unwrap_or_default()
        .to_lowercase();
        format!("{biller}/contact/{}", hex::encode(Sha256::digest(contact.as_bytes())))
    }
}

/// [`Invoice::customer_key`] of the customer the biller calls `customer_id`.
pub fn customer_key_of_id(biller_id: &str, customer_id: &str) -> String {
    format!("{biller_id}/id/{customer_id}")
}

/// The person the request is for. `Debug` hides the name: it is personal data.
#[derive(Clone, Serialize, Deserialize)]
pub struct Customer {
    pub id: Option<String>,
    pub name: String,
    pub contacts: Contacts,
    pub locale: Option<String>,
    pub timezone: Option<String>,
    pub preferred_channels: Vec<ChannelName>,
    pub opted_out: Vec<ChannelName>,
}

impl fmt::Debug for Customer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Customer")
            .field("id", &self.id)
            .field("name", &"[redacted]")
            .field("contacts", &self.contacts)
            .field("locale", &self.locale)
            .field("timezone", &self.timezone)
            .field("preferred_channels", &self.preferred_channels)
            .field("opted_out", &self.opted_out)
            .finish()
    }
}

/// Why a message was refused, in words a biller's developer can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .problems.join("; "))]
pub struct Rejected {
    pub problems: Vec<String>,
    /// Whatever ids could be read, so the rejection event can name the invoice.
    pub biller_id: Option<String>,
    pub invoice_id: Option<String>,
    pub revision: Option<i64>,
}

impl Rejected {
    fn one(problem: impl Into<String>) -> Self {
        Rejected {
            problems: vec![problem.into()],
            biller_id: None,
            invoice_id: None,
            revision: None,
        }
    }
}

/// The wire shape, lenient so that every problem can be reported at once.
/// The derived reader refuses a key given twice here; [`Unique`] does so
/// inside the objects kept whole.
#[derive(Deserialize)]
struct RawMessage {
    kind: Option<serde_json::Value>,
    invoice_id: Option<serde_json::Value>,
    biller_id: Option<serde_json::Value>,
    revision: Option<serde_json::Value>,
    source: Option<serde_json::Value>,
    amount: Option<serde_json::Value>,
    currency: Option<serde_json::Value>,
    due_date: Option<serde_json::Value>,
    description: Option<serde_json::Value>,
    customer: Option<Unique>,
    channels: Option<serde_json::Value>,
    metadata: Option<Unique>,
}

/// A JSON value in which no object has a key twice. JSON readers disagree
/// on which of two values counts (`serde_json` keeps the last, others the
/// first), so a biller's `"amount": "1.00", ..., "amount": "9999.00"` is
/// refused rather than guessed at. Built in the same pass as the value,
/// at no extra cost: a repeat shows when the key is inserted.
struct Unique(serde_json::Value);

impl<'de> Deserialize<'de> for Unique {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(UniqueVisitor).map(Unique)
    }
}

struct UniqueVisitor;

impl<'de> serde::de::Visitor<'de> for UniqueVisitor {
    type Value = serde_json::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(serde_json::Value::Null, serde_json::Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(serde_json::Value::Null)
    }

    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(serde_json::Value::Null)
    }

    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        Unique::deserialize(d).map(|u| u.0)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(Unique(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(serde_json::Value::Array(items))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        use serde_json::map::Entry;
        let mut object = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let Unique(value) = map.next_value()?;
            match object.entry(key) {
                Entry::Vacant(slot) => {
                    slot.insert(value);
                }
                Entry::Occupied(slot) => {
                    return Err(serde::de::Error::custom(format_args!(
                        "the key \"{}\" appears twice in one object; give each key once",
                        slot.key()
                    )))
                }
            }
        }
        Ok(serde_json::Value::Object(object))
    }
}

#[derive(Deserialize)]
struct RawCustomer {
    id: Option<serde_json::Value>,
    name: Option<serde_json::Value>,
    email: Option<serde_json::Value>,
    phone: Option<serde_json::Value>,
    whatsapp: Option<serde_json::Value>,
    messenger_psid: Option<serde_json::Value>,
    locale: Option<serde_json::Value>,
    timezone: Option<serde_json::Value>,
    preferred_channels: Option<serde_json::Value>,
    opted_out: Option<serde_json::Value>,
}

/// Collects problems while reading fields, so one message yields one full list.
#[derive(Default)]
struct Problems(Vec<String>);

impl Problems {
    fn push(&mut self, p: impl Into<String>) {
        self.0.push(p.into());
    }

    /// An optional string field; anything but a string or null is a problem.
    fn opt_str(&mut self, field: &str, v: Option<serde_json::Value>) -> Option<String> {
        match v {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(s)) => Some(s),
            Some(_) => {
                self.push(format!("{field} must be a string"));
                None
            }
        }
    }

    fn req_str(&mut self, field: &str, v: Option<serde_json::Value>) -> Option<String> {
        let present = matches!(&v, Some(x) if !x.is_null());
        let s = self.opt_str(field, v);
        match s {
            Some(s) if !s.trim().is_empty() => Some(s),
            Some(_) => {
                self.push(format!("{field} is empty"));
                None
            }
            None if present => None,
            None => {
                self.push(format!("{field} is missing"));
                None
            }
        }
    }

    fn channel_list(&mut self, field: &str, v: Option<serde_json::Value>) -> Option<Vec<ChannelName>> {
        let list = match v {
            None | Some(serde_json::Value::Null) => return None,
            Some(serde_json::Value::Array(items)) => items,
            Some(_) => {
                self.push(format!("{field} must be a list of channel names"));
                return None;
            }
        };
        let mut out = Vec::with_capacity(list.len());
        for item in list {
            match item.as_str().map(str::parse::<ChannelName>) {
                Some(Ok(c)) => out.push(c),
                Some(Err(e)) => self.push(format!("{field}: {e}")),
                None => self.push(format!("{field} must contain channel names as strings")),
            }
        }
        Some(out)
    }
}

/// Refuses a body longer than [`MAX_BODY_BYTES`]; on its length alone, so
/// the consumer can refuse it before copying it.
pub fn check_size(len: usize) -> Result<(), Rejected> {
    if len > MAX_BODY_BYTES {
        return Err(Rejected::one(format!(
            "message body is {len} bytes, more than the {MAX_BODY_BYTES} allowed"
        )));
    }
    Ok(())
}

/// Parses and validates one message body from the queue.
///
/// `known_biller` tells whether a biller id is configured; it is passed in so
/// that parsing stays independent of the config's shape.
pub fn parse(body: &[u8], known_biller: impl Fn(&str) -> bool) -> Result<Message, Rejected> {
    check_size(body.len())?;
    // The whole body must be UTF-8, including the values of keys payrelay
    // ignores (serde skips those without looking at their bytes).
    let body = match std::str::from_utf8(body) {
        Ok(text) => text,
        Err(e) => return Err(Rejected::one(format!("body is not valid JSON: it is not UTF-8 ({e})"))),
    };
    // An object goes straight into the wire shape (a derived struct would
    // also take an array, field by field, hence the look at the first
    // byte). Anything else, or an object that does not fit, is read again
    // as a value to say what is wrong with it.
    let object = body.bytes().find(|b| !b.is_ascii_whitespace()) == Some(b'{');
    let direct = if object {
        serde_json::from_str::<RawMessage>(body).ok()
    } else {
        None
    };
    let raw: RawMessage = match direct {
        Some(raw) => raw,
        None => match serde_json::from_str::<Unique>(body).map(|u| u.0) {
            Err(e) if e.is_data() => return Err(Rejected::one(format!("body is ambiguous: {e}"))),
            Err(e) => return Err(Rejected::one(format!("body is not valid JSON: {e}"))),
            Ok(v @ serde_json::Value::Object(_)) => {
                serde_json::from_value(v).map_err(|e| Rejected::one(format!("body is not an invoice object: {e}")))?
            }
            Ok(_) => return Err(Rejected::one("body must be a JSON object")),
        },
    };

    let mut p = Problems::default();
    let biller_id = p.req_str("biller_id", raw.biller_id);
    let invoice_id = p.req_str("invoice_id", raw.invoice_id);
    if let Some(id) = &invoice_id {
        if id.chars().count() > 128 {
            p.push("invoice_id is longer than 128 characters");
        }
    }
    if let Some(b) = &biller_id {
        if !known_biller(b) {
            p.push(format!("biller_id \"{b}\" is not a biller in payrelay's configuration"));
        }
    }
    let revision = match raw.revision {
        None | Some(serde_json::Value::Null) => Some(1),
        Some(v) => match v.as_i64() {
            Some(r) if r >= 0 => Some(r),
            _ => {
                p.push("revision must be a whole number of 0 or more");
                None
            }
        },
    };

    let kind = p
        .opt_str("kind", raw.kind)
        .unwrap_or_else(|| "payment_request".to_owned());
    let reject = |p: Problems| Rejected {
        problems: p.0,
        biller_id: biller_id.clone(),
        invoice_id: invoice_id.clone(),
        revision,
    };
    match kind.as_str() {
        "payment_request" => {}
        "invoice_paid" | "invoice_cancelled" => {
            return match (&biller_id, &invoice_id) {
                (Some(b), Some(i)) if p.0.is_empty() => Ok(if kind == "invoice_paid" {
                    Message::Paid {
                        biller_id: b.clone(),
                        invoice_id: i.clone(),
                    }
                } else {
                    Message::Cancelled {
                        biller_id: b.clone(),
                        invoice_id: i.clone(),
                    }
                }),
                _ => Err(reject(p)),
            };
        }
        other => {
            p.push(format!(
                "kind \"{other}\" is unknown; use payment_request, invoice_paid or invoice_cancelled"
            ));
            return Err(reject(p));
        }
    }

    let source = p.opt_str("source", raw.source);
    let description = p.opt_str("description", raw.description);
    let currency = p.req_str("currency", raw.currency);
    let amount_text = match raw.amount {
        Some(serde_json::Value::Number(n)) => Some(n.to_string()),
        other => p.req_str("amount", other),
    };
    let amount = match (amount_text, currency) {
        (Some(a), Some(c)) => match Amount::parse(&a, &c) {
            Ok(amount) => Some(amount),
            Err(e) => {
                p.push(e);
                None
            }
        },
        _ => None,
    };
    let due_date = p.req_str("due_date", raw.due_date).and_then(|d| {
        let format = time::macros::format_description!("[year]-[month]-[day]");
        // Exactly YYYY-MM-DD: `time` alone would also take a signed year.
        let shaped = d.len() == 10
            && d.bytes().enumerate().all(|(i, b)| matches!(i, 4 | 7) == (b == b'-'))
            && d.bytes().filter(u8::is_ascii_digit).count() == 8;
        match Date::parse(&d, format).ok().filter(|_| shaped) {
            Some(date) => Some(date),
            None => {
                p.push(format!("due_date \"{d}\" is not a date in the form YYYY-MM-DD"));
                None
            }
        }
    });
    let channels = p.channel_list("channels", raw.channels);
    if matches!(&channels, Some(c) if c.is_empty()) {
        p.push("channels is an empty list; leave it out to let routing decide");
    }
    let metadata = raw.metadata.map(|m| m.0).filter(|m| !m.is_null());
    let customer = parse_customer(&mut p, raw.customer.map(|c| c.0));

    match (
        biller_id.clone(),
        invoice_id.clone(),
        revision,
        amount,
        due_date,
        customer,
    ) {
        (Some(biller_id), Some(invoice_id), Some(revision), Some(amount), Some(due_date), Some(customer))
            if p.0.is_empty() =>
        {
            Ok(Message::PaymentRequest(Box::new(Invoice {
                key: InvoiceKey {
                    biller_id,
                    invoice_id,
                    revision,
                },
                source,
                amount,
                due_date,
                description,
                customer,
                channels,
                metadata,
            })))
        }
        _ => Err(reject(p)),
    }
}

fn parse_customer(p: &mut Problems, raw: Option<serde_json::Value>) -> Option<Customer> {
    let raw: RawCustomer = match raw {
        Some(v @ serde_json::Value::Object(_)) => match serde_json::from_value(v) {
            Ok(c) => c,
            Err(e) => {
                p.push(format!("customer is malformed: {e}"));
                return None;
            }
        },
        None | Some(serde_json::Value::Null) => {
            p.push("customer is missing");
            return None;
        }
        Some(_) => {
            p.push("customer must be an object");
            return None;
        }
    };
    let name = p.req_str("customer.name", raw.name);
    let id = p.opt_str("customer.id", raw.id);
    let mut contacts = Contacts::default();
    let problems_before = p.0.len();
    if let Some(e) = p.opt_str("customer.email", raw.email) {
        match Email::parse(&e) {
            Ok(email) => contacts.email = Some(email),
            Err(e) => p.push(format!("customer.email: {e}")),
        }
    }
    if let Some(s) = p.opt_str("customer.phone", raw.phone) {
        match Phone::parse(&s) {
            Ok(phone) => contacts.phone = Some(phone),
            Err(e) => p.push(format!("customer.phone: {e}")),
        }
    }
    if let Some(s) = p.opt_str("customer.whatsapp", raw.whatsapp) {
        match Phone::parse(&s) {
            Ok(phone) => contacts.whatsapp = Some(phone),
            Err(e) => p.push(format!("customer.whatsapp: {e}")),
        }
    }
    if let Some(s) = p.opt_str("customer.messenger_psid", raw.messenger_psid) {
        match Psid::parse(&s) {
            Ok(psid) => contacts.messenger_psid = Some(psid),
            Err(e) => p.push(format!("customer.messenger_psid: {e}")),
        }
    }
    // A contact that was given but invalid has its own problem already.
    if contacts.is_empty() && p.0.len() == problems_before {
        p.push("customer has no contact: give at least one of email, phone, whatsapp, messenger_psid");
    }
    let locale = p.opt_str("customer.locale", raw.locale);
    if let Some(l) = &locale {
        if !is_plausible_locale(l) {
            p.push(format!(
                "customer.locale \"{l}\" is not a BCP 47 language tag like es-MX"
            ));
        }
    }
    let timezone = p.opt_str("customer.timezone", raw.timezone);
    if let Some(tz) = &timezone {
        if jiff::tz::TimeZone::get(tz).is_err() {
            p.push(format!(
                "customer.timezone \"{tz}\" is not an IANA time zone like America/Mexico_City"
            ));
        }
    }
    let preferred_channels = p
        .channel_list("customer.preferred_channels", raw.preferred_channels)
        .unwrap_or_default();
    let opted_out = p.channel_list("customer.opted_out", raw.opted_out).unwrap_or_default();
    Some(Customer {
        id,
        name: name?,
        contacts,
        locale,
        timezone,
        preferred_channels,
        opted_out,
    })
}

/// A light BCP 47 shape check: letters and digits in 1–8 character subtags.
fn is_plausible_locale(tag: &str) -> bool {
    let mut parts = tag.split(['-', '_']);
    let lang_ok = parts
        .next()
        .is_some_and(|l| (2..=3).contains(&l.len()) && l.chars().all(|c| c.is_ascii_alphabetic()));
    lang_ok && parts.all(|s| (1..=8).contains(&s.len()) && s.chars().all(|c| c.is_ascii_alphanumeric()))
}

#[cfg(test)]
mod tests;
