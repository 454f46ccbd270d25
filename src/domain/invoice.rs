//! An invoice's identity and where it stands.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The idempotency key of a payment request: a second message with the
/// same key is a duplicate.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct InvoiceKey {
    pub biller_id: String,
    pub invoice_id: String,
    pub revision: i64,
}

impl fmt::Display for InvoiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}#{}", self.biller_id, self.invoice_id, self.revision)
    }
}

/// Where an invoice stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Validated and stored; sends may be under way.
    Accepted,
    /// A channel's provider accepted the message.
    Sent,
    /// Every routed channel failed.
    Exhausted,
    Paid,
    Cancelled,
    /// A higher revision replaced it.
    Superseded,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Accepted => "accepted",
            Status::Sent => "sent",
            Status::Exhausted => "exhausted",
            Status::Paid => "paid",
            Status::Cancelled => "cancelled",
            Status::Superseded => "superseded",
        }
    }

    pub fn parse(s: &str) -> Result<Status, UnknownStatus> {
        Ok(match s {
            "accepted" => Status::Accepted,
            "sent" => Status::Sent,
            "exhausted" => Status::Exhausted,
            "paid" => Status::Paid,
            "cancelled" => Status::Cancelled,
            "superseded" => Status::Superseded,
            other => return Err(UnknownStatus(other.to_owned())),
        })
    }

    /// Whether nothing more may be sent for the invoice.
    pub fn is_closed(self) -> bool {
        matches!(self, Status::Paid | Status::Cancelled | Status::Superseded)
    }
}

/// A stored status payrelay does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown invoice status {0}")]
pub struct UnknownStatus(pub String);
