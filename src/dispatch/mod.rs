//! Handling one message from the invoices queue, from bytes to outcome.
//!
//! The [`Dispatcher`] knows nothing about AMQP: it takes a body and its ids
//! and answers with a [`Disposition`] that the consumer turns into an ack, a
//! dead-letter or a requeue. Every outcome is stored, with its events, before
//! the disposition is returned, so acking after it never loses anything.

pub mod quiet;
pub mod scheduler;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use tokio::sync::Notify;
use tracing::{info, warn, Instrument};

use crate::channels::{ChannelName, DeliveryStatus, Prepared, Registry, Request, SendError, Slot, StatusReport};
use crate::clock::Clock;
use crate::config::{Config, Strategy};
use crate::events::{Correlation, Event, EventName};
use crate::invoice::{self, Invoice, InvoiceKey, Message, Rejected};
use crate::metrics::Metrics;
use crate::paylink;
use crate::render::{self, Templates};
use crate::router::{self, Plan};
use crate::store::{
    AttemptOutcome, AttemptRecord, AttemptState, Begin, NewPaylink, Reached, Status, Store, StoreError,
};
use quiet::QuietHours;

/// How many times a transient failure is tried on one channel before it gives up.
const TRIES_PER_CHANNEL: u32 = 3;
/// First pause between tries; doubled each time, with jitter.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// Longest `Retry-After` honoured while holding a delivery.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

/// How one channel's send should behave.
#[derive(Debug, Clone, Copy)]
struct SendPlan {
    /// An earlier send on this channel was interrupted: say so if this one succeeds.
    possibly_twice: bool,
    /// Wait out a paused channel instead of failing it at once.
    wait_if_paused: bool,
    /// A success ends the invoice (`fallback`): store both in one go.
    ends_invoice: bool,
}

/// How a send on one channel ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sent {
    /// The provider accepted it; with `ends_invoice`, the invoice is stored as sent too.
    Accepted,
    /// The channel gave up; its failure is stored.
    Failed,
    /// The invoice was paid, cancelled or superseded meanwhile: nothing was sent.
    Closed,
}

/// One channel's message before its attempt is recorded.
pub struct Outgoing {
    pub channel: ChannelName,
    /// The pay link the message carries, stored with the attempt.
    pub paylink: NewPaylink,
    /// The rendered message, or why it could not be rendered (recorded as
    /// the channel's failure once the attempt exists).
    pub message: Result<Prepared, String>,
}

/// The first send of a new invoice, recorded together with the invoice.
struct Started {
    attempt_id: i64,
    outgoing: Outgoing,
    /// Its place under the channel's rate limits, taken before the record.
    slot: Slot,
}

/// How long an unfinished invoice must sit untouched before another handler
/// may take it over (sends bump its clock, and the longest wait between two
/// bumps is a few retries of at most 30 s or a channel pause).
pub const CLAIM_IDLE: Duration = Duration::from_secs(5 * 60);

/// How long a send the provider accepted keeps trying to be recorded
/// through a store outage before its delivery is handed to the consumer's
/// store-failure path (which keeps it for as long again).
const RECORD_RETRY_FOR: Duration = Duration::from_secs(10 * 60);

/// Longest a send waits for a paused channel.
const MAX_PAUSE_WAIT: Duration = Duration::from_secs(60);

/// One message as it came off the queue.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub body: Vec<u8>,
    pub correlation: Correlation,
    pub redelivered: bool,
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
    /// Keys being handled by this process, so a second copy of a message
    /// arriving meanwhile is a duplicate, not a second send.
    in_flight: Mutex<HashSet<InvoiceKey>>,
    /// Invoices this process began (or took over) whose handling stopped on
    /// a store error. The consumer hands the same delivery back (not
    /// redelivered by the broker), and its retry must take the invoice back
    /// at once rather than see it as another instance's.
    interrupted: Mutex<HashSet<InvoiceKey>>,
}

/// Marks an invoice this process owns as interrupted unless its handling
/// ends well (see [`Dispatcher::interrupted`]).
struct Ownership<'a> {
    set: &'a Mutex<HashSet<InvoiceKey>>,
    key: InvoiceKey,
    owned: bool,
    finished: bool,
}

impl Drop for Ownership<'_> {
    fn drop(&mut self) {
        if self.owned && !self.finished {
            if let Ok(mut set) = self.set.lock() {
                set.insert(self.key.clone());
            }
        }
    }
}

/// Removes a key from the in-flight set however handling ends.
struct InFlight<'a> {
    set: &'a Mutex<HashSet<InvoiceKey>>,
    key: InvoiceKey,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if let Ok(mut set) = self.set.lock() {
            set.remove(&self.key);
        }
    }
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
            in_flight: Mutex::new(HashSet::new()),
            interrupted: Mutex::new(HashSet::new()),
        }
    }

    pub async fn handle(&self, incoming: Incoming) -> Disposition {
        let result = match invoice::parse(&incoming.body, |b| self.config.billers.contains_key(b)) {
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

    fn dead_letter(&self, rejected: Rejected, correlation: &Correlation) -> Disposition {
        let reason = rejected.to_string();
        info!(reason = %crate::redact::text(&reason), "invoice rejected");
        self.metrics.invoice("rejected");
        let mut event = Event::bare(EventName::Rejected, correlation).detail(reason.clone());
        event.biller_id = rejected.biller_id;
        event.invoice_id = rejected.invoice_id;
        event.revision = rejected.revision;
        Disposition::DeadLetter {
            reason,
            event: Box::new(event),
        }
    }

    /// Closes every revision of an invoice as paid or cancelled, once: the
    /// event is published the first time only. Returns whether this call
    /// closed it.
    pub async fn close_invoice(
        &self,
        biller_id: &str,
        invoice_id: &str,
        status: Status,
        correlation: &Correlation,
    ) -> Result<bool, StoreError> {
        let name = if status == Status::Paid {
            EventName::Paid
        } else {
            EventName::Cancelled
        };
        let mut event = Event::bare(name, correlation);
        event.biller_id = Some(biller_id.to_owned());
        event.invoice_id = Some(invoice_id.to_owned());
        let first = self.store.close(biller_id, invoice_id, status, &event).await?;
        info!(biller_id, invoice_id, status = status.as_str(), first, "invoice closed");
        self.metrics.invoice(status.as_str());
        self.outbox_signal.notify_one();
        Ok(first)
    }

    async fn payment_request(&self, invoice: Invoice, incoming: &Incoming) -> Result<Disposition, StoreError> {
        let correlation = &incoming.correlation;
        let plan = router::route(&invoice, &self.config, self.clock.today());
        if plan.channels.is_empty() {
            let reasons: Vec<String> = plan.skipped.iter().map(|(c, why)| format!("{c}: {why}")).collect();
            return Ok(self.dead_letter(
                Rejected {
                    problems: vec![format!(
                        "no contact that any enabled channel can reach ({})",
                        reasons.join("; ")
                    )],
                    biller_id: Some(invoice.key.biller_id.clone()),
                    invoice_id: Some(invoice.key.invoice_id.clone()),
                    revision: Some(invoice.key.revision),
                },
                correlation,
            ));
        }

        let key = invoice.key.clone();
        let first = self
            .in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.clone());
        if !first {
            return self
                .duplicate(&invoice, correlation, "the same request is being handled right now")
                .await;
        }
        let _guard = InFlight {
            set: &self.in_flight,
            key: key.clone(),
        };
        let ours = self.interrupted.lock().unwrap_or_else(|p| p.into_inner()).remove(&key);
        let mut ownership = Ownership {
            set: &self.interrupted,
            key: key.clone(),
            owned: ours,
            finished: false,
        };

        let accepted = Event::about(EventName::Accepted, &key, correlation)
            .detail(format!(
                "routed by {}: {} ({})",
                plan.decided_by,
                plan.channels.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(", "),
                plan.strategy
            ))
            .metadata(invoice.metadata.clone());
        // The first send is recorded with the invoice itself when it can go
        // now: not in quiet hours, and with a place free under its rate
        // limits (one store round trip less per invoice). Otherwise the
        // ordinary path holds it or waits for its turn.
        let first = plan.channels[0];
        let mut started = None;
        let slot = match self.quiet_until(&invoice, first) {
            None => self.channels.try_pace(first).await,
            Some(_) => None,
        };
        let begun = match slot {
            Some(slot) => {
                let outgoing = self.prepare_send(&invoice, first);
                let (begun, attempt) = self
                    .store
                    .begin_with_attempt(&invoice, correlation, &accepted, first, &outgoing.paylink)
                    .await?;
                started = attempt.map(|attempt_id| Started {
                    attempt_id,
                    outgoing,
                    slot,
                });
                begun
            }
            None => self.store.begin(&invoice, correlation, &accepted).await?,
        };
        let done = match begun {
            Begin::New => {
                ownership.owned = true;
                Vec::new()
            }
            Begin::Resume { attempts } => {
                // A redelivered message lost its handler (a crash, a closed
                // channel): take the invoice over; so does this process's own
                // retry after a store error. A fresh copy of a message whose
                // invoice is still moving is being handled by another
                // instance; if that one dies, its own message comes back
                // redelivered, or the scheduler reclaims the idle invoice.
                let idle_ms = if incoming.redelivered || ours {
                    0
                } else {
                    CLAIM_IDLE.as_millis() as i64
                };
                if !self.store.claim(&key, self.clock.now_ms(), idle_ms).await? {
                    return self
                        .duplicate(
                            &invoice,
                            correlation,
                            "the same request is being handled by another instance",
                        )
                        .await;
                }
                ownership.owned = true;
                info!(
                    redelivered = incoming.redelivered,
                    "resuming an invoice whose handling was interrupted"
                );
                attempts
            }
            Begin::Duplicate { status } => {
                return self
                    .duplicate(
                        &invoice,
                        correlation,
                        &format!("already handled (status {})", status.as_str()),
                    )
                    .await;
            }
            Begin::Stale { latest } => {
                self.metrics.invoice("stale");
                let event = Event::about(EventName::Rejected, &key, correlation)
                    .detail(format!("stale revision: revision {latest} is already known"))
                    .metadata(invoice.metadata.clone());
                self.store.record_event(&event).await?;
                return Ok(Disposition::Ack);
            }
            Begin::Closed { status } => {
                self.metrics.invoice("closed");
                let event = Event::about(EventName::Rejected, &key, correlation)
                    .detail(format!("the invoice is already {}", status.as_str()))
                    .metadata(invoice.metadata.clone());
                self.store.record_event(&event).await?;
                return Ok(Disposition::Ack);
            }
        };

        self.deliver(&invoice, &plan, &done, started, correlation).await?;
        ownership.finished = true;
        Ok(Disposition::Ack)
    }

    /// Sends on the plan's channels in order, skipping those with a recorded
    /// outcome, then stores the invoice's final status.
    async fn deliver(
        &self,
        invoice: &Invoice,
        plan: &Plan,
        done: &[AttemptRecord],
        mut started: Option<Started>,
        correlation: &Correlation,
    ) -> Result<(), StoreError> {
        let key = &invoice.key;
        let mut any_sent = false;
        let mut held_until: Option<i64> = None;
        for (i, channel) in plan.channels.iter().enumerate() {
            let previous = done.iter().rev().find(|a| a.channel == *channel);
            let sent = match previous.map(|a| a.state) {
                Some(AttemptState::Sent) => true,
                Some(AttemptState::Failed) => false,
                Some(AttemptState::Sending) | None => {
                    // Recorded with the invoice (quiet hours were checked then).
                    let pre_started = started.take_if(|s| s.outgoing.channel == *channel);
                    let quiet = match pre_started {
                        Some(_) => None,
                        None => self.quiet_until(invoice, *channel),
                    };
                    if let Some(until) = quiet {
                        held_until = Some(held_until.map_or(until, |h| h.min(until)));
                        // `fallback` waits for this channel; `all` sends the others now.
                        if plan.strategy == Strategy::Fallback {
                            break;
                        }
                        continue;
                    }
                    let send = SendPlan {
                        possibly_twice: previous.is_some(),
                        // A paused channel is skipped when another can take
                        // over; the last one waits for the pause to end.
                        wait_if_paused: plan.strategy == Strategy::All || i + 1 == plan.channels.len(),
                        ends_invoice: plan.strategy == Strategy::Fallback && held_until.is_none(),
                    };
                    let sent = match pre_started {
                        Some(s) => {
                            self.complete_send(invoice, correlation, send, s.outgoing, s.attempt_id, Some(s.slot))
                                .await?
                        }
                        None => self.send_on(invoice, *channel, correlation, send).await?,
                    };
                    match sent {
                        Sent::Closed => {
                            info!("invoice closed meanwhile; nothing more is sent");
                            return Ok(());
                        }
                        Sent::Accepted if send.ends_invoice => {
                            self.metrics.invoice(Status::Sent.as_str());
                            return Ok(());
                        }
                        Sent::Accepted => true,
                        Sent::Failed => false,
                    }
                }
            };
            any_sent |= sent;
            if sent && plan.strategy == Strategy::Fallback {
                break;
            }
        }

        if let Some(until) = held_until {
            info!(until = %crate::events::rfc3339_ms(until), "quiet hours: held until the window opens");
            self.store.hold(key, until).await?;
            self.metrics.invoice("held");
            return Ok(());
        }

        let (status, events) = if any_sent {
            (Status::Sent, Vec::new())
        } else {
            let event = Event::about(EventName::Exhausted, key, correlation)
                .detail(format!("every routed channel failed: {}", join_names(&plan.channels)))
                .metadata(invoice.metadata.clone());
            (Status::Exhausted, vec![event])
        };
        self.store.finish_invoice(key, status, &events).await?;
        self.metrics.invoice(status.as_str());
        Ok(())
    }

    /// Applies a provider's status report: `delivered` and `read` become
    /// events once; a delivery failure fails the channel and, the first time
    /// only, moves the invoice on to its next channel in the background.
    pub async fn handle_report(self: &Arc<Self>, channel: ChannelName, report: StatusReport) -> Result<(), StoreError> {
        let Some(attempt) = self
            .store
            .attempt_by_provider_id(channel, &report.provider_message_id)
            .await?
        else {
            info!(%channel, "status report for a message this store does not know; ignored");
            return Ok(());
        };
        let event = |name| {
            Event::about(name, &attempt.key, &attempt.correlation)
                .channel(channel, attempt.attempt)
                .provider_message_id(Some(report.provider_message_id.clone()))
                .metadata(attempt.metadata.clone())
        };
        match report.status {
            DeliveryStatus::Delivered => {
                self.store
                    .record_reached(attempt.attempt_id, Reached::Delivered, &event(EventName::Delivered))
                    .await?;
            }
            DeliveryStatus::Read => {
                self.store
                    .record_reached(attempt.attempt_id, Reached::Read, &event(EventName::Read))
                    .await?;
            }
            DeliveryStatus::Failed { code, reason } => {
                let code = code.map(|c| format!(" (code {c})")).unwrap_or_default();
                let detail = format!("the provider could not deliver the message{code}: {reason}");
                let failed = event(EventName::ChannelFailed).detail(detail.clone());
                if self.store.fail_after_send(attempt.attempt_id, &detail, &failed).await? {
                    info!(key = %attempt.key, %channel, "delivery failed after sending; trying the next channel");
                    self.metrics.send(channel, "failed_later");
                    let dispatcher = Arc::clone(self);
                    let key = attempt.key.clone();
                    tokio::spawn(async move {
                        if let Err(e) = dispatcher.resume(&key).await {
                            warn!(%key, error = %e, "could not move on to the next channel");
                        }
                    });
                }
            }
        }
        self.outbox_signal.notify_one();
        Ok(())
    }

    /// Goes on with an invoice that was reopened by a later delivery failure.
    pub async fn resume(&self, key: &InvoiceKey) -> Result<(), StoreError> {
        let first = self
            .in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.clone());
        if !first {
            return Ok(());
        }
        let _guard = InFlight {
            set: &self.in_flight,
            key: key.clone(),
        };
        let Some(stored) = self.store.invoice(key).await? else {
            return Ok(());
        };
        if stored.status != Status::Accepted {
            return Ok(());
        }
        let plan = router::route(&stored.invoice, &self.config, self.clock.today());
        let result = self
            .deliver(&stored.invoice, &plan, &stored.attempts, None, &stored.correlation)
            .await;
        self.outbox_signal.notify_one();
        result
    }

    async fn duplicate(
        &self,
        invoice: &Invoice,
        correlation: &Correlation,
        why: &str,
    ) -> Result<Disposition, StoreError> {
        info!(why, "duplicate invoice");
        self.metrics.invoice("duplicate");
        let event = Event::about(EventName::Duplicate, &invoice.key, correlation)
            .detail(why)
            .metadata(invoice.metadata.clone());
        self.store.record_event(&event).await?;
        Ok(Disposition::Ack)
    }

    /// Renders, records and sends on one channel, retrying transient
    /// failures.
    async fn send_on(
        &self,
        invoice: &Invoice,
        channel: ChannelName,
        correlation: &Correlation,
        plan: SendPlan,
    ) -> Result<Sent, StoreError> {
        let outgoing = self.prepare_send(invoice, channel);
        // Its turn under the rate limits comes before the send is recorded
        // as started, so a process stopped while the message waited for its
        // turn does not count it as possibly sent. A paused or missing
        // channel takes no place: the send below meets the same answer and
        // handles it.
        let slot = match &outgoing.message {
            Ok(_) => self.channels.pace(channel).await.ok(),
            Err(_) => None,
        };
        let started = self
            .store
            .start_attempt(&invoice.key, channel, 1, &outgoing.paylink)
            .await?;
        let Some(attempt_id) = started else {
            return Ok(Sent::Closed);
        };
        self.complete_send(invoice, correlation, plan, outgoing, attempt_id, slot)
            .await
    }

    /// [`prepare`] with this dispatcher's config, channels and templates.
    fn prepare_send(&self, invoice: &Invoice, channel: ChannelName) -> Outgoing {
        prepare(
            &self.config,
            &self.channels,
            &self.templates,
            self.clock.as_ref(),
            invoice,
            channel,
        )
    }

    /// Sends a message whose attempt is recorded, retrying transient
    /// failures, and records how it ended.
    async fn complete_send(
        &self,
        invoice: &Invoice,
        correlation: &Correlation,
        plan: SendPlan,
        outgoing: Outgoing,
        attempt_id: i64,
        mut slot: Option<Slot>,
    ) -> Result<Sent, StoreError> {
        let key = &invoice.key;
        let channel = outgoing.channel;
        let event = |name| Event::about(name, key, correlation).metadata(invoice.metadata.clone());
        let prepared = match outgoing.message {
            Ok(p) => p,
            Err(reason) => {
                let detail = format!("cannot render the message: {reason}");
                warn!(%channel, %detail, "channel failed");
                self.metrics.send(channel, "failed");
                let e = event(EventName::ChannelFailed)
                    .channel(channel, 1)
                    .detail(detail.clone());
                self.store
                    .finish_attempt(attempt_id, &AttemptOutcome::Failed { detail }, &e)
                    .await?;
                return Ok(Sent::Failed);
            }
        };

        let mut tries = 0;
        let mut pauses_waited = 0;
        let mut backoff = FIRST_BACKOFF;
        loop {
            tries += 1;
            let started = std::time::Instant::now();
            let result = match slot.take() {
                Some(slot) => self.channels.send_in(slot, &prepared).await,
                None => self.channels.send(&prepared).await,
            };
            self.metrics.send_latency(channel, started.elapsed());
            match result {
                Ok(receipt) => {
                    info!(%channel, tries, "sent");
                    self.metrics.send(channel, "sent");
                    let mut e = event(EventName::Sent)
                        .channel(channel, tries)
                        .provider_message_id(receipt.provider_message_id.clone());
                    if plan.possibly_twice {
                        e = e.detail("possibly sent twice: an earlier send on this channel was interrupted");
                    }
                    let outcome = AttemptOutcome::Sent {
                        provider_message_id: receipt.provider_message_id,
                    };
                    self.record_sent(attempt_id, &outcome, &e, plan.ends_invoice.then_some(key))
                        .await?;
                    return Ok(Sent::Accepted);
                }
                Err(SendError::Paused { remaining })
                    if plan.wait_if_paused && remaining <= MAX_PAUSE_WAIT && pauses_waited < 3 =>
                {
                    info!(%channel, wait_ms = remaining.as_millis() as u64, "channel paused; waiting for it");
                    pauses_waited += 1;
                    tries -= 1;
                    tokio::time::sleep(remaining).await;
                }
                Err(err @ SendError::Transient { .. }) if tries < TRIES_PER_CHANNEL => {
                    let wait = match &err {
                        SendError::Transient {
                            retry_after: Some(after),
                            ..
                        } => (*after).min(MAX_RETRY_AFTER),
                        _ => jitter(backoff),
                    };
                    warn!(%channel, tries, code = err.code(), wait_ms = wait.as_millis() as u64, "transient failure; trying again");
                    self.metrics.send(channel, "retried");
                    tokio::time::sleep(wait).await;
                    backoff *= 2;
                }
                Err(err) => {
                    let detail = err.to_string();
                    warn!(%channel, tries, code = err.code(), detail = %crate::redact::text(&detail), "channel failed");
                    self.metrics.send(channel, "failed");
                    let e = event(EventName::ChannelFailed)
                        .channel(channel, tries)
                        .detail(detail.clone());
                    self.store
                        .finish_attempt(attempt_id, &AttemptOutcome::Failed { detail }, &e)
                        .await?;
                    return Ok(Sent::Failed);
                }
            }
        }
    }
}

impl Dispatcher {
    /// Records a send the provider accepted, with the invoice's end when
    /// `ends` names it, trying again through a store outage: the message went
    /// out, so recording it late is right and sending it again is not. Gives
    /// up after [`RECORD_RETRY_FOR`]; the delivery then takes the ordinary
    /// store-failure path and the send counts as interrupted ("possibly sent
    /// twice" if it is made again).
    async fn record_sent(
        &self,
        attempt_id: i64,
        outcome: &AttemptOutcome,
        event: &Event,
        ends: Option<&InvoiceKey>,
    ) -> Result<(), StoreError> {
        let started = tokio::time::Instant::now();
        let mut pause = Duration::from_millis(100);
        loop {
            let recorded = match (ends, outcome) {
                (Some(key), AttemptOutcome::Sent { provider_message_id }) => {
                    self.store
                        .finish_sent(attempt_id, provider_message_id.as_deref(), event, key)
                        .await
                }
                _ => self.store.finish_attempt(attempt_id, outcome, event).await,
            };
            match recorded {
                Ok(()) => return Ok(()),
                Err(e) if started.elapsed() < RECORD_RETRY_FOR => {
                    warn!(error = %e, retry_in_ms = pause.as_millis() as u64, "sent, but the store did not take the record; trying again");
                    self.metrics.invoice("store_retry");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// When a send on `channel` may go, if quiet hours hold it now: in the
    /// customer's time zone, else the biller's, else UTC.
    fn quiet_until(&self, invoice: &Invoice, channel: ChannelName) -> Option<i64> {
        let window = self.config.routing.quiet_hours?;
        if !QuietHours::applies_to(channel) {
            return None;
        }
        let biller_tz = self
            .config
            .billers
            .get(&invoice.key.biller_id)
            .and_then(|b| b.timezone.as_deref());
        let tz = invoice
            .customer
            .timezone
            .as_deref()
            .or(biller_tz)
            .and_then(|name| quiet::time_zone(name).ok())
            .unwrap_or(jiff::tz::TimeZone::UTC);
        window.held_until(&tz, self.clock.now_ms())
    }
}

/// The message for one channel, with a fresh pay link, ready to be recorded
/// as an attempt and sent. `payrelay preview` shows what this makes, so what
/// it shows is what goes out, pay link length included.
pub fn prepare(
    config: &Config,
    channels: &Registry,
    templates: &Templates,
    clock: &dyn Clock,
    invoice: &Invoice,
    channel: ChannelName,
) -> Outgoing {
    let key = &invoice.key;
    let token = paylink::new_token();
    let pay_url = pay_url(config, &token);
    let paylink = NewPaylink {
        token_hash: paylink::token_hash(&token),
        expires_at_ms: clock.now_ms() + config.paylink.ttl.as_millis() as i64,
    };
    let message = match config.billers.get(&key.biller_id) {
        None => Err(format!("biller {} is not configured", key.biller_id)),
        Some(biller) => {
            let view = render::View::new(invoice, &key.biller_id, biller, &pay_url);
            let to = channel.address(&invoice.customer.contacts).unwrap_or_default();
            channels
                .get(channel)
                .ok_or_else(|| format!("channel {channel} is not configured"))
                .and_then(|c| {
                    let request = Request {
                        to,
                        token: &token,
                        view: &view,
                        biller,
                    };
                    c.prepare(&request, templates).map_err(|e| e.to_string())
                })
        }
    };
    Outgoing {
        channel,
        paylink,
        message,
    }
}

/// `public_base_url` + `/p/{token}`.
pub fn pay_url(config: &Config, token: &str) -> String {
    let base = config.http.public_base_url.as_str().trim_end_matches('/');
    format!("{base}/p/{token}")
}

fn join_names(channels: &[ChannelName]) -> String {
    channels.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(", ")
}

/// Between half and all of `d`, so retries of many invoices spread out.
fn jitter(d: Duration) -> Duration {
    let factor = rand::rng().random_range(0.5..=1.0);
    d.mul_f64(factor)
}
