//! Erasure of a customer's personal data, shared by both stores.
//!
//! An erased invoice revision keeps what the biller's books need (amount,
//! currency, due date, description, metadata, status, attempts with their
//! channels and outcomes, journey steps) and loses who it was for: the
//! customer's name, contacts and time zone. Its `erased_ms` is set, which
//! makes its pay links answer 410 and stops every later send. Texts that
//! may quote an address (attempts' and steps' details: providers' error
//! messages often quote the number) and the events still waiting in the
//! outbox are scrubbed of the values the invoice held.
//!
//! Each store runs the same list of statements, one per table, in one
//! transaction ([`super::sqlite`], [`super::postgres`]); every one of them
//! is idempotent, so an erasure that runs twice (a retried request, two
//! instances sweeping at once) ends the same. A new table that holds
//! personal data keyed by customer adds its statement to that list.
//! Suppressions are not erased: a "do not contact" must outlive erasure,
//! and they hold only hashes.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::StoreError;
use crate::domain::ChannelName;
use crate::events::{Correlation, Event, EventName};

/// What replaces a personal value in a text that is kept.
pub const ERASED: &str = "[erased]";

/// Why a planned journey step of an erased invoice was not sent.
pub const STEP_CANCELLED: &str = "the customer's personal data was erased; nothing more is sent";

/// Shorter values are not searched for in texts: they would match
/// everywhere (and no contact is that short).
const SHORTEST_SCRUBBED: usize = 4;

/// The revisions of one customer's invoices at one biller, erased or not.
pub(super) const CUSTOMER_REVISIONS: &str = "SELECT invoice_id, revision, invoice_json, erased_ms IS NOT NULL
                                             FROM invoices WHERE biller_id = $1 AND customer = $2
                                             ORDER BY invoice_id, revision";

/// `invoices`: the scrubbed JSON, the erasure time, no hold, and an invoice
/// still being handled ends (`exhausted`: nothing more is sent), so no
/// scheduler takes it over. Only once: an erased row matches no more.
pub(super) const ERASE_INVOICE: &str = "UPDATE invoices SET invoice_json = $1, erased_ms = $2, held_until_ms = NULL,
                         status = CASE WHEN status = 'accepted' THEN 'exhausted' ELSE status END
     WHERE biller_id = $3 AND invoice_id = $4 AND revision = $5 AND erased_ms IS NULL";

/// `attempts`: each one's details, and the provider ids the `file`
/// providers named their copies of the messages by.
pub(super) const ATTEMPTS_OF_REVISION: &str = "SELECT id, channel, provider_message_id, detail FROM attempts
                                               WHERE biller_id = $1 AND invoice_id = $2 AND revision = $3";

pub(super) const SET_ATTEMPT_DETAIL: &str = "UPDATE attempts SET detail = $1 WHERE id = $2";

/// `attempts`: the hashes of the numbers messages went to, by which an
/// inbound STOP finds its customers: an erased customer is found no more.
pub(super) const FORGET_ADDRESSES_OF_REVISION: &str = "UPDATE attempts SET address_hash = NULL
     WHERE biller_id = $1 AND invoice_id = $2 AND revision = $3 AND address_hash IS NOT NULL";

/// `steps`: planned steps of the revision end, unsent.
pub(super) const CANCEL_STEPS_OF_REVISION: &str =
    "UPDATE steps SET status = 'cancelled', done_ms = $1, detail = $2, claimed_ms = NULL
     WHERE biller_id = $3 AND invoice_id = $4 AND revision = $5 AND status = 'planned'";

pub(super) const STEP_DETAILS: &str = "SELECT seq, detail FROM steps
                                       WHERE biller_id = $1 AND invoice_id = $2 AND revision = $3
                                         AND detail IS NOT NULL";

pub(super) const SET_STEP_DETAIL: &str =
    "UPDATE steps SET detail = $1 WHERE biller_id = $2 AND invoice_id = $3 AND revision = $4 AND seq = $5";

/// `outbox`: the events not yet published (few: the broker confirms them
/// within moments), each scrubbed in full.
pub(super) const OUTBOX_EVENTS: &str = "SELECT id, event_json FROM outbox";

pub(super) const SET_OUTBOX_EVENT: &str = "UPDATE outbox SET event_json = $1 WHERE id = $2";

/// `debtor_contacts` and `preferences`: what payrelay remembers of the
/// customer across invoices (their addresses' hashes, their channel
/// choice) goes with them, once none of their invoices keeps personal
/// data ($1 biller, $2 customer key). The suppression list stays on
/// purpose: a "do not contact" must outlive the erasure, and it holds only
/// hashes of addresses.
pub(super) const FORGET_DEBTOR: [&str; 2] = [
    "DELETE FROM debtor_contacts WHERE biller_id = $1 AND customer_key = $2
       AND NOT EXISTS (SELECT 1 FROM invoices i WHERE i.biller_id = $1 AND i.customer = $2 AND i.erased_ms IS NULL)",
    "DELETE FROM preferences WHERE biller_id = $1 AND customer_key = $2
       AND NOT EXISTS (SELECT 1 FROM invoices i WHERE i.biller_id = $1 AND i.customer = $2 AND i.erased_ms IS NULL)",
];

/// The (biller, customer key) pairs among `revisions`, once each, for
/// [`FORGET_DEBTOR`].
pub(super) fn debtors_of(revisions: &[Revision]) -> Vec<(&str, &str)> {
    let mut out: Vec<(&str, &str)> = revisions
        .iter()
        .filter_map(|r| Some((r.biller_id.as_str(), r.customer.as_deref()?)))
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// One invoice revision to erase, as a store read it.
pub(super) struct Revision {
    pub biller_id: String,
    pub invoice_id: String,
    pub revision: i64,
    pub json: String,
    /// Erased before: nothing personal is left in it.
    pub erased: bool,
    /// Its [`crate::invoice::Invoice::customer_key`]; `None` for invoices
    /// stored before it was kept.
    pub customer: Option<String>,
}

/// Distinct invoices among `revisions` at `indexes`.
pub(super) fn invoices_among(revisions: &[Revision], indexes: &[usize]) -> u32 {
    let invoices: BTreeSet<(&str, &str)> = indexes
        .iter()
        .map(|&i| (revisions[i].biller_id.as_str(), revisions[i].invoice_id.as_str()))
        .collect();
    invoices.len() as u32
}

/// One `customer.erased` per customer among the revisions at `erased`
/// (retention), each with how many of their invoices.
pub(super) fn retention_events(revisions: &[Revision], erased: &[usize]) -> Vec<Event> {
    // (biller, customer key) -> (their `customer.id`, their invoices)
    type Invoices<'a> = (Option<String>, BTreeSet<&'a str>);
    let mut by_customer: BTreeMap<(&str, &str), Invoices<'_>> = BTreeMap::new();
    for &i in erased {
        let r = &revisions[i];
        // An invoice stored before customers were kept stands for its own.
        let customer = r.customer.as_deref().unwrap_or(r.invoice_id.as_str());
        let entry = by_customer
            .entry((r.biller_id.as_str(), customer))
            .or_insert_with(|| (customer_id_of(&r.json), BTreeSet::new()));
        entry.1.insert(r.invoice_id.as_str());
    }
    by_customer
        .into_iter()
        .map(|((biller_id, _), (customer_id, invoices))| {
            let mut event = Event::bare(EventName::Erased, &Correlation::default())
                .customer_id(customer_id)
                .detail(erased_detail(invoices.len() as u32, BY_RETENTION));
            event.biller_id = Some(biller_id.to_owned());
            event
        })
        .collect()
}

/// What an erasure did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Erasure {
    /// Invoices (every revision) whose personal data this call erased.
    pub invoices_erased: u32,
    /// The messages sent for the erased invoices, erased now or before, by
    /// channel and provider message id: the `file` providers named their
    /// copies by them (see [`crate::channels::outbox::remove_copies`]).
    pub messages: Vec<(ChannelName, String)>,
    /// One `customer.erased` event was queued per customer.
    pub customers: u32,
}

/// The personal values an invoice held, to scrub from texts that are kept.
#[derive(Debug, Default, Clone)]
pub(super) struct Personal {
    values: Vec<String>,
}

impl Personal {
    /// A value to scrub from kept texts (a contact known from elsewhere
    /// than the invoice, say); short ones are ignored.
    pub(super) fn add(&mut self, value: &str) {
        let value = value.trim();
        if value.chars().count() >= SHORTEST_SCRUBBED && !self.values.iter().any(|v| v == value) {
            self.values.push(value.to_owned());
        }
    }

    pub(super) fn extend(&mut self, other: Personal) {
        for value in other.values {
            self.add(&value);
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// `text` with every personal value replaced by [`ERASED`] (ASCII
    /// letters in any case: providers write addresses as they like).
    pub(super) fn scrub<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut text = Cow::Borrowed(text);
        for value in &self.values {
            if let Some(replaced) = replace_ignoring_ascii_case(&text, value) {
                text = Cow::Owned(replaced);
            }
        }
        text
    }

    /// A stored event (JSON) with every string in it scrubbed; `None` when
    /// it held nothing personal.
    pub(super) fn scrub_event_json(&self, json: &str) -> Result<Option<String>, StoreError> {
        if self.values.is_empty() || self.scrub(json) == json {
            return Ok(None);
        }
        let mut event: Value =
            serde_json::from_str(json).map_err(|e| StoreError::Corrupt(format!("an outbox event: {e}")))?;
        self.scrub_value(&mut event);
        serde_json::to_string(&event)
            .map(Some)
            .map_err(|e| StoreError::Corrupt(e.to_string()))
    }

    fn scrub_value(&self, value: &mut Value) {
        match value {
            Value::String(s) => {
                if let Cow::Owned(scrubbed) = self.scrub(s) {
                    *s = scrubbed;
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|v| self.scrub_value(v)),
            Value::Object(map) => map.values_mut().for_each(|v| self.scrub_value(v)),
            _ => {}
        }
    }
}

/// `haystack` with every `needle` replaced, ignoring ASCII case; `None` when
/// there is none.
fn replace_ignoring_ascii_case(haystack: &str, needle: &str) -> Option<String> {
    let (lower_haystack, lower_needle) = (haystack.to_ascii_lowercase(), needle.to_ascii_lowercase());
    // ASCII lowercasing keeps every byte offset, so positions carry over.
    let mut found = lower_haystack.match_indices(&lower_needle).peekable();
    found.peek()?;
    let mut out = String::with_capacity(haystack.len());
    let mut at = 0;
    for (start, _) in found {
        out.push_str(&haystack[at..start]);
        out.push_str(ERASED);
        at = start + needle.len();
    }
    out.push_str(&haystack[at..]);
    Some(out)
}

/// The invoice JSON without the customer's name, contacts and time zone,
/// and every other string in it scrubbed of them (a biller may quote the
/// name in a description); with the values it held. The customer's `id`
/// (the biller's own key, needed to erase again), locale (the language of
/// the page that says the link is gone) and channel choices stay.
pub(super) fn erase_invoice_json(json: &str) -> Result<(String, Personal), StoreError> {
    let mut invoice: Value =
        serde_json::from_str(json).map_err(|e| StoreError::Corrupt(format!("a stored invoice: {e}")))?;
    let mut personal = Personal::default();
    let Some(customer) = invoice.get_mut("customer").and_then(Value::as_object_mut) else {
        return Err(StoreError::Corrupt("a stored invoice has no customer".into()));
    };
    if let Some(name) = customer.get("name").and_then(Value::as_str) {
        personal.add(name);
    }
    customer.insert("name".into(), Value::from(""));
    customer.insert("timezone".into(), Value::Null);
    if let Some(contacts) = customer.get_mut("contacts").and_then(Value::as_object_mut) {
        for (_, contact) in contacts.iter_mut() {
            if let Some(address) = contact.as_str() {
                personal.add(address);
                // Phone numbers as providers also write them: WhatsApp's
                // `wa_id` has no `+`, national formats drop the country code.
                if let Some(digits) = address.strip_prefix('+') {
                    personal.add(digits);
                    if digits.len() > 10 {
                        personal.add(&digits[digits.len() - 10..]);
                    }
                }
            }
            *contact = Value::Null;
        }
    }
    personal.scrub_value(&mut invoice);
    let json = serde_json::to_string(&invoice).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    Ok((json, personal))
}

/// The `customer.id` a stored invoice names, if any (for the event).
pub(super) fn customer_id_of(json: &str) -> Option<String> {
    let invoice: Value = serde_json::from_str(json).ok()?;
    invoice["customer"]["id"].as_str().map(str::to_owned)
}

/// The `customer.erased` detail.
pub(super) fn erased_detail(invoices: u32, why: &str) -> String {
    format!("personal data erased from {invoices} invoice(s) {why}; amounts, dates and outcomes are kept")
}

/// Why a retention erasure happened, in its event's detail.
pub const BY_RETENTION: &str = "by retention ([store] personal_data_ttl)";

/// Why a requested erasure happened, in its event's detail.
pub const ON_REQUEST: &str = "on request";

#[cfg(test)]
mod tests {
    use super::*;

    /// Every statement prepares on the real SQLite schema, with its
    /// parameters numbered in order (what both databases bind by).
    #[test]
    fn the_statements_prepare_on_sqlite_with_their_parameters_in_order() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        for step in crate::store::sqlite::MIGRATIONS {
            conn.execute_batch(step).unwrap();
        }
        for sql in [
            CUSTOMER_REVISIONS,
            ERASE_INVOICE,
            ATTEMPTS_OF_REVISION,
            SET_ATTEMPT_DETAIL,
            CANCEL_STEPS_OF_REVISION,
            STEP_DETAILS,
            SET_STEP_DETAIL,
            OUTBOX_EVENTS,
            SET_OUTBOX_EVENT,
        ] {
            let stmt = conn.prepare(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
            for n in 1..=stmt.parameter_count() {
                assert_eq!(stmt.parameter_name(n), Some(format!("${n}").as_str()), "{sql}");
            }
        }
    }

    /// A stored invoice as the store keeps it.
    fn stored() -> String {
        let body = serde_json::json!({"kind": "payment_request", "invoice_id": "INV-1", "biller_id": "acme",
            "revision": 1, "amount": "10.00", "currency": "MXN", "due_date": "2026-12-01",
            "description": "Electricity for María López",
            "customer": {"id": "C-1", "name": "María López", "email": "maria@example.com",
                         "phone": "+5215512345678", "locale": "es-MX", "timezone": "America/Mexico_City"},
            "metadata": {"note": "call +5215512345678"}});
        let Ok(crate::invoice::Message::PaymentRequest(invoice)) =
            crate::invoice::parse(body.to_string().as_bytes(), |_| true)
        else {
            panic!("the test invoice parses");
        };
        serde_json::to_string(&invoice).unwrap()
    }

    #[test]
    fn an_erased_invoice_keeps_the_books_and_loses_the_person() {
        let (json, personal) = erase_invoice_json(&stored()).unwrap();
        for gone in [
            "María López",
            "maria@example.com",
            "5215512345678",
            "America/Mexico_City",
        ] {
            assert!(!json.contains(gone), "{gone} in {json}");
        }
        for kept in [
            "C-1",
            "es-MX",
            "10.00",
            "[2026,335]",
            "Electricity for [erased]",
            "call [erased]",
        ] {
            assert!(json.contains(kept), "{kept} not in {json}");
        }
        let invoice: crate::invoice::Invoice = serde_json::from_str(&json).unwrap();
        assert!(invoice.customer.contacts.is_empty());
        assert_eq!(
            personal.scrub("Twilio 21211: The 'To' number 15512345678 (5215512345678, MARIA@example.com) is invalid"),
            "Twilio 21211: The 'To' number 1[erased] ([erased], [erased]) is invalid"
        );
    }

    #[test]
    fn events_are_scrubbed_in_every_string_and_left_alone_without_personal_data() {
        let (_, personal) = erase_invoice_json(&stored()).unwrap();
        let event =
            r#"{"event":"invoice.channel_failed","detail":"to +5215512345678","metadata":{"a":["maria@example.com"]}}"#;
        let scrubbed = personal.scrub_event_json(event).unwrap().unwrap();
        assert!(
            !scrubbed.contains("5512345678") && !scrubbed.contains("maria@"),
            "{scrubbed}"
        );
        assert!(scrubbed.contains("to [erased]"), "{scrubbed}");
        assert_eq!(personal.scrub_event_json(r#"{"detail":"no one"}"#).unwrap(), None);
    }
}
