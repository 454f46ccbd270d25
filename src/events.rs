//! Events for billers (contract §2): what happened to each invoice.
//!
//! Events are written to the store's outbox in the same transaction as the
//! state change they report, and the broker's event publisher sends them with
//! confirms. So an event is never lost once its outcome is stored, and never
//! published for an outcome that was not.

use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::channels::ChannelName;
use crate::invoice::InvoiceKey;

/// The event names of contract §2; each is also its routing key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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

/// One event body, exactly as billers receive it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Event {
    pub event: EventName,
    pub biller_id: Option<String>,
    pub invoice_id: Option<String>,
    pub revision: Option<i64>,
    pub channel: Option<ChannelName>,
    pub attempt: Option<u32>,
    pub at: String,
    pub detail: Option<String>,
    pub provider_message_id: Option<String>,
    pub correlation_id: Option<String>,
    pub message_id: Option<String>,
    pub metadata: Option<serde_json::Value>,
}

impl Event {
    /// An event about `key`, stamped now.
    pub fn about(event: EventName, key: &InvoiceKey, correlation: &Correlation) -> Event {
        Event {
            event,
            biller_id: Some(key.biller_id.clone()),
            invoice_id: Some(key.invoice_id.clone()),
            revision: Some(key.revision),
            ..Event::bare(event, correlation)
        }
    }

    /// An event that may not know its invoice (a message that did not parse).
    pub fn bare(event: EventName, correlation: &Correlation) -> Event {
        Event {
            event,
            biller_id: None,
            invoice_id: None,
            revision: None,
            channel: None,
            attempt: None,
            at: now_rfc3339(),
            detail: None,
            provider_message_id: None,
            correlation_id: correlation.correlation_id.clone(),
            message_id: correlation.message_id.clone(),
            metadata: None,
        }
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
