//! Handling one message from the invoices queue, from bytes to outcome.
//!
//! The [`Dispatcher`] knows nothing about AMQP: it takes a body and its ids
//! and answers with a [`Disposition`] that the consumer turns into an ack, a
//! dead-letter or a requeue. Every outcome is stored, with its events, before
//! the disposition is returned, so acking after it never loses anything.
//!
//! Handling goes by stage, one file each: `admit` (parse, duplicates,
//! ownership, the invoice's first record), `deliver` (the route plan walked
//! channel by channel, quiet-hour holds, the final status), `send` (one
//! channel: pace, start the attempt, send with retries), `record` (storing
//! outcomes and provider reports) and [`retry`] (the one policy every retry
//! follows). Time always comes from the [`Clock`], so holds and expiry can be
//! tested by moving one.

mod admit;
mod combine;
mod debtor;
mod deliver;
pub mod erasure;
mod journey;
mod record;
mod remind;
pub mod retry;
pub mod scheduler;
mod send;
#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tracing::{warn, Instrument};

use crate::channels::Registry;
use crate::config::Config;
use crate::domain::clock::Clock;
use crate::domain::InvoiceKey;
use crate::domain::Status;
use crate::events::{Correlation, Event};
use crate::invoice::{self, Message};
use crate::metrics::Metrics;
use crate::render::Templates;
use crate::store::Store;
use retry::RetryPolicy;

pub use combine::prepare_combined;
pub(crate) use send::local_today;
pub use send::{pay_url, prepare, Outgoing};

/// How long an unfinished invoice must sit untouched before another handler
/// may take it over (sends bump its clock, and the longest wait between two
/// bumps is a few retries of at most 30 s or a channel pause).
pub const CLAIM_IDLE: Duration = Duration::from_secs(5 * 60);

/// One message as it came off the queue.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub body: Vec<u8>,
    pub correlation: Correlation,
    pub redelivered: bool,
    /// The AMQP `user_id` property: RabbitMQ refuses a publish whose
    /// `user_id` is not the connection's user, so it names the publisher.
    pub user_id: Option<String>,
}

/// What the consumer must do with the delivery.
#[derive(Debug, Clone, PartialEq)]
pub enum Disposition {
    /// The outcome is stored: acknowledge.
    Ack,
    /// Malformed or unprocessable: move to the dead-letter queue with
    /// `reason`, then record `event` and acknowledge.
    DeadLetter { reason: String, event: Box<Event> },
    /// Nothing durable could be written (the store failed): hand it back to
    /// the broker to be tried again.
    Requeue { error: String },
}

/// Everything one invoice's handling needs.
pub struct Dispatcher {
    config: Arc<Config>,
    store: Arc<dyn Store>,
    channels: Arc<Registry>,
    templates: Arc<Templates>,
    metrics: Arc<Metrics>,
    /// Wakes the event publisher when new events are in the outbox.
    outbox_signal: Arc<Notify>,
    clock: Arc<dyn Clock>,
    retry: RetryPolicy,
    /// Keys being handled by this process, so a second copy of a message
    /// arriving meanwhile is a duplicate, not a second send.
    in_flight: Mutex<HashSet<InvoiceKey>>,
    /// Invoices this process began (or took over) whose handling stopped on
    /// a store error. The consumer hands the same delivery back (not
    /// redelivered by the broker), and its retry must take the invoice back
    /// at once rather than see it as another instance's.
    interrupted: Mutex<HashSet<InvoiceKey>>,
}

impl Dispatcher {
    pub fn new(
        config: Arc<Config>,
        store: Arc<dyn Store>,
        channels: Arc<Registry>,
        templates: Arc<Templates>,
        metrics: Arc<Metrics>,
        outbox_signal: Arc<Notify>,
        clock: Arc<dyn Clock>,
    ) -> Dispatcher {
        Dispatcher {
            config,
            store,
            channels,
            templates,
            metrics,
            outbox_signal,
            clock,
            retry: RetryPolicy::STANDARD,
            in_flight: Mutex::new(HashSet::new()),
            interrupted: Mutex::new(HashSet::new()),
        }
    }

    /// Retries by `retry` instead of [`RetryPolicy::STANDARD`] (tests use
    /// tiny pauses).
    pub fn with_retry_policy(mut self, retry: RetryPolicy) -> Dispatcher {
        self.retry = retry;
        self
    }

    /// The policy this dispatcher retries by, which the consumer and the
    /// broker connection follow too.
    pub fn retry_policy(&self) -> &RetryPolicy {
        &self.retry
    }

    pub async fn handle(&self, incoming: Incoming) -> Disposition {
        let parsed = invoice::parse(&incoming.body, |b| self.config.billers.contains_key(b))
            .and_then(|message| self.check_publisher(message, incoming.user_id.as_deref()));
        let result = match parsed {
            Err(rejected) => Ok(self.dead_letter(rejected, &incoming.correlation)),
            Ok(Message::PaymentRequest(invoice)) => {
                let span = tracing::info_span!("invoice", key = %invoice.key);
                self.payment_request(*invoice, &incoming).instrument(span).await
            }
            Ok(Message::Paid { biller_id, invoice_id }) => self
                .close_invoice(&biller_id, &invoice_id, Status::Paid, &incoming.correlation)
                .await
                .map(|_| Disposition::Ack),
            Ok(Message::Cancelled { biller_id, invoice_id }) => self
                .close_invoice(&biller_id, &invoice_id, Status::Cancelled, &incoming.correlation)
                .await
                .map(|_| Disposition::Ack),
        };
        self.outbox_signal.notify_one();
        match result {
            Ok(d) => d,
            Err(e) => {
                warn!(error = %e, "store failed; the message goes back to the queue");
                self.metrics.invoice("store_retry");
                Disposition::Requeue { error: e.to_string() }
            }
        }
    }
}

impl Dispatcher {
    /// What the store knows of the invoice's customer that changes where
    /// their messages go (preferences, stopped addresses).
    pub(crate) async fn profile(
        &self,
        invoice: &invoice::Invoice,
    ) -> Result<crate::domain::debtor::Profile, crate::store::StoreError> {
        let addresses = crate::store::hashed_contacts(invoice);
        self.store
            .debtor(&invoice.key.biller_id, &invoice.customer_key(), &addresses)
            .await
    }
}

/// Routes for a customer the store knows. The plan to walk leaves out the
/// channels they stopped on a pay page but keeps those whose address asked
/// to stop: the store refuses each of those at its send, and the refusal
/// shows in the invoice's timeline. `None` when every channel is stopped
/// or suppressed: nothing is sent (see [`EVERY_CHANNEL_SUPPRESSED`]).
pub(crate) fn debtor_plan(
    invoice: &invoice::Invoice,
    config: &Config,
    today: time::Date,
    step: Option<(&[crate::domain::ChannelName], crate::config::Strategy)>,
    profile: &crate::domain::debtor::Profile,
) -> (crate::router::Plan, bool) {
    let full = crate::router::route_for(invoice, config, today, step, profile);
    if full.all_suppressed() || profile.suppressed.is_empty() {
        let all_suppressed = full.all_suppressed();
        return (full, all_suppressed);
    }
    let unchecked = crate::domain::debtor::Profile {
        suppressed: Vec::new(),
        ..profile.clone()
    };
    (
        crate::router::route_for(invoice, config, today, step, &unchecked),
        false,
    )
}

/// The detail of `invoice.rejected` (and of a skipped journey step) when
/// every channel that could reach the customer was stopped by them.
pub const EVERY_CHANNEL_SUPPRESSED: &str = "every channel suppressed";

/// The channels' names, comma-separated, for event details.
fn join_names(channels: &[crate::domain::ChannelName]) -> String {
    channels.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(", ")
}
