//! Events for billers: what happened to each invoice (docs/asyncapi.yaml,
//! docs/schemas/event.schema.json).
//!
//! Events are written to the store's outbox in the same transaction as the
//! state change they report, and the broker's event publisher sends them with
//! confirms. So an event is never lost once its outcome is stored, and never
//! published for an outcome that was not.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::domain::ChannelName;
use crate::domain::InvoiceKey;

/// The event names billers receive. An event's routing key is
/// `<biller_id>.<name>` ([`routing_key`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(description = "What happened. The routing key is `<biller_id>.<event>`.")]
pub enum EventName {
    #[serde(rename = "invoice.accepted")]
    Accepted,
    #[serde(rename = "invoice.rejected")]
    Rejected,
    #[serde(rename = "invoice.duplicate")]
    Duplicate,
    #[serde(rename = "invoice.sent")]
    Sent,
    #[serde(rename = "invoice.delivered")]
    Delivered,
    #[serde(rename = "invoice.read")]
    Read,
    #[serde(rename = "invoice.channel_failed")]
    ChannelFailed,
    #[serde(rename = "invoice.exhausted")]
    Exhausted,
    #[serde(rename = "invoice.clicked")]
    Clicked,
    #[serde(rename = "invoice.paid")]
    Paid,
    #[serde(rename = "invoice.cancelled")]
    Cancelled,
    // A message no person opened in time goes out on the next channel.
    #[serde(rename = "invoice.escalated")]
    Escalated,
    // The last step of the journey is done and the invoice is still open.
    #[serde(rename = "invoice.journey_completed")]
    JourneyCompleted,
    // The customer chose channels or stopped one on the pay page.
    #[serde(rename = "customer.preferences_changed")]
    PreferencesChanged,
    // A STOP reply, an unsubscribe or a provider's "unsubscribed" error.
    #[serde(rename = "customer.suppressed")]
    Suppressed,
    // A START reply lifted a suppression.
    #[serde(rename = "customer.unsuppressed")]
    Unsuppressed,
    // The customer's personal data was erased (on request or by retention).
    #[serde(rename = "customer.erased")]
    Erased,
}

impl EventName {
    pub fn as_str(self) -> &'static str {
        match self {
            EventName::Accepted => "invoice.accepted",
            EventName::Rejected => "invoice.rejected",
            EventName::Duplicate => "invoice.duplicate",
            EventName::Sent => "invoice.sent",
            EventName::Delivered => "invoice.delivered",
            EventName::Read => "invoice.read",
            EventName::ChannelFailed => "invoice.channel_failed",
            EventName::Exhausted => "invoice.exhausted",
            EventName::Clicked => "invoice.clicked",
            EventName::Paid => "invoice.paid",
            EventName::Cancelled => "invoice.cancelled",
            EventName::Escalated => "invoice.escalated",
            EventName::JourneyCompleted => "invoice.journey_completed",
            EventName::PreferencesChanged => "customer.preferences_changed",
            EventName::Suppressed => "customer.suppressed",
            EventName::Unsuppressed => "customer.unsuppressed",
            EventName::Erased => "customer.erased",
        }
    }
}

/// Ids copied from the incoming AMQP message into every event about it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Correlation {
    pub correlation_id: Option<String>,
    pub message_id: Option<String>,
}

impl Correlation {
    /// The id set as the event's AMQP `correlation_id`: the sender's
    /// correlation id, or else its message id.
    pub fn amqp_id(&self) -> Option<&str> {
        self.correlation_id.as_deref().or(self.message_id.as_deref())
    }
}

/// One event body, exactly as billers receive it. Every key is always
/// present; what does not apply is null.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
#[schemars(
    title = "payrelay event",
    description = "One event about an invoice, published on the events exchange. Every key is always present; what does not apply is null.",
    extend("additionalProperties" = false)
)]
pub struct Event {
    /// Unique per event and kept with it in the store, so an event published
    /// again (after a broker outage, say) carries the same id: consumers
    /// deduplicate on it. Also the AMQP `message_id`.
    #[serde(default)]
    #[schemars(required, pattern(r"^([0-9a-f]{32}|outbox-[0-9]{26})$"))]
    pub event_id: String,
    /// What happened; also the last words of the routing key.
    pub event: EventName,
    /// The biller the invoice belongs to; null when the message could not
    /// be read far enough to tell.
    pub biller_id: Option<String>,
    /// The biller's invoice id, when known.
    pub invoice_id: Option<String>,
    /// The invoice's revision, when known.
    pub revision: Option<i64>,
    /// The biller's `customer.id` of the debtor the event is about, when the
    /// invoice named one (`customer.*` events, mostly). Never a name or a
    /// contact: those are personal data and stay out of events.
    #[serde(default)]
    pub customer_id: Option<String>,
    /// The channel the event is about (sends, deliveries, clicks, fallbacks).
    pub channel: Option<ChannelName>,
    /// Which try on `channel` this is, from 1.
    pub attempt: Option<u32>,
    /// The journey step this event is about; null for the first request.
    #[serde(default)]
    pub step: Option<String>,
    /// When it happened, RFC 3339 in UTC.
    #[schemars(extend("format" = "date-time"))]
    pub at: String,
    /// Why, in plain words: the rejection reason, the provider's error.
    pub detail: Option<String>,
    /// The provider's id for the message (Twilio's SID, Meta's wamid, the
    /// email's Message-ID).
    pub provider_message_id: Option<String>,
    /// The incoming message's AMQP `correlation_id`, copied.
    pub correlation_id: Option<String>,
    /// The incoming message's AMQP `message_id`, copied.
    pub message_id: Option<String>,
    /// The invoice's `metadata`, copied as the biller sent it.
    pub metadata: Option<serde_json::Value>,
}

/// One named constructor per event kind, so each kind is built the same way
/// wherever it happens; builders add what varies (`metadata`, a `detail`).
impl Event {
    /// The invoice was stored and routed; `routed` says by which rule where.
    pub fn accepted(key: &InvoiceKey, correlation: &Correlation, routed: String) -> Event {
        Event::about(EventName::Accepted, key, correlation).detail(routed)
    }

    /// The message was refused. It may not name its invoice (a body that did
    /// not parse): add [`Event::for_invoice`] when it does.
    pub fn rejected(correlation: &Correlation, reason: impl Into<String>) -> Event {
        Event::bare(EventName::Rejected, correlation).detail(reason)
    }

    /// The same request was already handled, or is being handled.
    pub fn duplicate(key: &InvoiceKey, correlation: &Correlation, why: impl Into<String>) -> Event {
        Event::about(EventName::Duplicate, key, correlation).detail(why)
    }

    /// A channel's provider accepted the message on try `attempt`.
    pub fn sent(
        key: &InvoiceKey,
        correlation: &Correlation,
        channel: ChannelName,
        attempt: u32,
        provider_message_id: Option<String>,
    ) -> Event {
        Event::about(EventName::Sent, key, correlation)
            .channel(channel, attempt)
            .provider_message_id(provider_message_id)
    }

    /// A channel gave up on the invoice, before or after its provider took it.
    pub fn channel_failed(
        key: &InvoiceKey,
        correlation: &Correlation,
        channel: ChannelName,
        attempt: u32,
        detail: impl Into<String>,
    ) -> Event {
        Event::about(EventName::ChannelFailed, key, correlation)
            .channel(channel, attempt)
            .detail(detail)
    }

    /// The journey's last step is done and the invoice is still open.
    pub fn journey_completed(key: &InvoiceKey, correlation: &Correlation, detail: impl Into<String>) -> Event {
        Event::about(EventName::JourneyCompleted, key, correlation).detail(detail)
    }

    /// Every routed channel failed.
    pub fn exhausted(key: &InvoiceKey, correlation: &Correlation, detail: impl Into<String>) -> Event {
        Event::about(EventName::Exhausted, key, correlation).detail(detail)
    }

    /// The provider reports the message delivered.
    pub fn delivered(
        key: &InvoiceKey,
        correlation: &Correlation,
        channel: ChannelName,
        attempt: u32,
        provider_message_id: Option<String>,
    ) -> Event {
        Event::about(EventName::Delivered, key, correlation)
            .channel(channel, attempt)
            .provider_message_id(provider_message_id)
    }

    /// The provider reports the message read.
    pub fn read(
        key: &InvoiceKey,
        correlation: &Correlation,
        channel: ChannelName,
        attempt: u32,
        provider_message_id: Option<String>,
    ) -> Event {
        Event::about(EventName::Read, key, correlation)
            .channel(channel, attempt)
            .provider_message_id(provider_message_id)
    }

    /// The customer opened the pay link from `channel`'s message, for the
    /// first time.
    pub fn clicked(key: &InvoiceKey, correlation: &Correlation, channel: ChannelName) -> Event {
        Event::about(EventName::Clicked, key, correlation)
            .channel(channel, 1)
            .detail("first open of the pay link")
    }

    /// The invoice was paid. The store fills in the latest revision and the
    /// channel that earned the payment.
    pub fn paid(biller_id: &str, invoice_id: &str, correlation: &Correlation) -> Event {
        Event::bare(EventName::Paid, correlation).for_ids(biller_id, invoice_id)
    }

    /// The biller cancelled the invoice. The store fills in the latest revision.
    pub fn cancelled(biller_id: &str, invoice_id: &str, correlation: &Correlation) -> Event {
        Event::bare(EventName::Cancelled, correlation).for_ids(biller_id, invoice_id)
    }
}

impl Event {
    /// An event of any kind about `key`, stamped now: what the named
    /// constructors build on, and what tests that go through every kind use.
    pub fn about(event: EventName, key: &InvoiceKey, correlation: &Correlation) -> Event {
        Event {
            event,
            biller_id: Some(key.biller_id.clone()),
            invoice_id: Some(key.invoice_id.clone()),
            revision: Some(key.revision),
            ..Event::bare(event, correlation)
        }
    }

    /// An event of any kind that may not know its invoice.
    pub fn bare(event: EventName, correlation: &Correlation) -> Event {
        Event {
            event_id: crate::domain::ids::event_id(),
            event,
            biller_id: None,
            invoice_id: None,
            revision: None,
            customer_id: None,
            channel: None,
            attempt: None,
            step: None,
            at: now_rfc3339(),
            detail: None,
            provider_message_id: None,
            correlation_id: correlation.correlation_id.clone(),
            message_id: correlation.message_id.clone(),
            metadata: None,
        }
    }

    /// Names the invoice revision the event is about.
    pub fn for_invoice(mut self, key: &InvoiceKey) -> Event {
        self.biller_id = Some(key.biller_id.clone());
        self.invoice_id = Some(key.invoice_id.clone());
        self.revision = Some(key.revision);
        self
    }

    fn for_ids(mut self, biller_id: &str, invoice_id: &str) -> Event {
        self.biller_id = Some(biller_id.to_owned());
        self.invoice_id = Some(invoice_id.to_owned());
        self
    }

    /// Names the debtor (`customer.id`) the event is about.
    pub fn customer_id(mut self, customer_id: Option<String>) -> Event {
        self.customer_id = customer_id;
        self
    }

    pub fn channel(mut self, channel: ChannelName, attempt: u32) -> Event {
        self.channel = Some(channel);
        self.attempt = Some(attempt);
        self
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Event {
        self.detail = Some(detail.into());
        self
    }

    pub fn metadata(mut self, metadata: Option<serde_json::Value>) -> Event {
        self.metadata = metadata;
        self
    }

    pub fn provider_message_id(mut self, id: Option<String>) -> Event {
        self.provider_message_id = id;
        self
    }

    /// Names the journey step the event is about (`None`: the first request).
    pub fn step(mut self, step: Option<&str>) -> Event {
        self.step = step.map(str::to_owned);
        self
    }
}

/// The routing key of an event: `<biller_id>.<event>`, so a biller binds
/// `acme.#` for its own events and a dashboard `*.invoice.paid`. `_` stands
/// for the biller when none is known (a message that was not JSON).
pub fn routing_key(biller_id: Option<&str>, event: EventName) -> String {
    let biller = biller_id
        .filter(|b| crate::domain::ids::is_valid_biller_id(b))
        .unwrap_or("_");
    let mut key = String::with_capacity(biller.len() + 1 + event.as_str().len());
    key.push_str(biller);
    key.push('.');
    key.push_str(event.as_str());
    key
}

/// A store timestamp (milliseconds since the epoch) as RFC 3339.
pub fn rfc3339_ms(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| ms.to_string())
}

pub fn now_rfc3339() -> String {
    OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_else(|_| String::from("1970-01-01T00:00:00Z"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_keys_start_with_the_biller() {
        assert_eq!(routing_key(Some("acme"), EventName::Sent), "acme.invoice.sent");
        assert_eq!(routing_key(None, EventName::Rejected), "_.invoice.rejected");
        // An id that could add words or wildcards to the key is never used.
        assert_eq!(routing_key(Some("a.b"), EventName::Rejected), "_.invoice.rejected");
        assert_eq!(routing_key(Some("#"), EventName::Rejected), "_.invoice.rejected");
        assert_eq!(routing_key(Some(""), EventName::Rejected), "_.invoice.rejected");
    }

    #[test]
    fn each_kind_has_its_own_constructor() {
        let key = InvoiceKey {
            biller_id: "acme".into(),
            invoice_id: "INV-1".into(),
            revision: 2,
        };
        let c = Correlation::default();
        let sms = ChannelName::Sms;
        let built = [
            Event::accepted(&key, &c, "routed by default: sms (fallback)".into()),
            Event::rejected(&c, "bad").for_invoice(&key),
            Event::duplicate(&key, &c, "already handled"),
            Event::sent(&key, &c, sms, 1, Some("SM1".into())),
            Event::channel_failed(&key, &c, sms, 3, "503"),
            Event::exhausted(&key, &c, "every routed channel failed: sms"),
            Event::delivered(&key, &c, sms, 1, Some("SM1".into())),
            Event::read(&key, &c, sms, 1, Some("SM1".into())),
            Event::clicked(&key, &c, sms),
        ];
        let names: Vec<EventName> = built.iter().map(|e| e.event).collect();
        use EventName::*;
        assert_eq!(
            names,
            [
                Accepted,
                Rejected,
                Duplicate,
                Sent,
                ChannelFailed,
                Exhausted,
                Delivered,
                Read,
                Clicked
            ]
        );
        for event in &built {
            assert_eq!(event.revision, Some(2), "{:?}", event.event);
        }
        // Closing events name the invoice, not a revision: the store adds the latest.
        for (event, name) in [
            (Event::paid("acme", "INV-1", &c), Paid),
            (Event::cancelled("acme", "INV-1", &c), Cancelled),
        ] {
            assert_eq!(event.event, name);
            assert_eq!(event.invoice_id.as_deref(), Some("INV-1"));
            assert_eq!(event.revision, None);
        }
    }

    #[test]
    fn an_event_keeps_its_id_through_the_store_form() {
        let event = Event::bare(EventName::Rejected, &Correlation::default());
        let again: Event = serde_json::from_str(&serde_json::to_string(&event).unwrap()).unwrap();
        assert_eq!(again.event_id, event.event_id);
        assert!(!event.event_id.is_empty());
    }
}
