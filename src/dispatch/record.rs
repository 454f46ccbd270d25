//! Recording outcomes: how a send ended (a send the provider accepted is
//! recorded through a store outage rather than sent again), and what
//! providers report later about messages they accepted.

use std::sync::Arc;

use tracing::{info, warn};

use super::send::{SendPlan, Sent};
use super::Dispatcher;
use crate::channels::{DeliveryStatus, Receipt, StatusReport};
use crate::domain::ChannelName;
use crate::domain::InvoiceKey;
use crate::events::{Correlation, Event};
use crate::invoice::Invoice;
use crate::store::{AttemptOutcome, AttemptRef, Reached, StoreError};

/// The recorded attempt a send's outcome belongs to.
pub(super) struct Attempt<'a> {
    pub id: i64,
    pub invoice: &'a Invoice,
    pub correlation: &'a Correlation,
    pub channel: ChannelName,
    /// The journey step it was sent for; `None` for the first request.
    pub step: Option<&'a str>,
}

impl Dispatcher {
    /// Records a send the provider accepted after `tries` tries; with
    /// `ends_invoice`, the invoice is stored as sent in the same call.
    pub(super) async fn record_accepted(
        &self,
        attempt: &Attempt<'_>,
        tries: u32,
        receipt: Receipt,
        plan: SendPlan<'_>,
    ) -> Result<Sent, StoreError> {
        let channel = attempt.channel;
        let key = &attempt.invoice.key;
        info!(%channel, tries, "sent");
        self.metrics.send(channel, "sent");
        let mut event = Event::sent(
            key,
            attempt.correlation,
            channel,
            tries,
            receipt.provider_message_id.clone(),
        )
        .step(attempt.step)
        .metadata(attempt.invoice.metadata.clone());
        if plan.possibly_twice {
            event = event.detail("possibly sent twice: an earlier send on this channel was interrupted");
        }
        let outcome = AttemptOutcome::Sent {
            provider_message_id: receipt.provider_message_id,
        };
        self.record_sent(attempt.id, &outcome, &event, plan.ends_invoice.then_some(key))
            .await?;
        Ok(Sent::Accepted)
    }

    /// Records that a channel gave up on the invoice after `tries` tries.
    pub(super) async fn record_failed(
        &self,
        attempt: &Attempt<'_>,
        tries: u32,
        detail: String,
    ) -> Result<Sent, StoreError> {
        self.metrics.send(attempt.channel, "failed");
        let event = Event::channel_failed(
            &attempt.invoice.key,
            attempt.correlation,
            attempt.channel,
            tries,
            detail.clone(),
        )
        .step(attempt.step)
        .metadata(attempt.invoice.metadata.clone());
        self.store
            .finish_attempt(attempt.id, &AttemptOutcome::Failed { detail }, &event)
            .await?;
        Ok(Sent::Failed)
    }

    /// Records a send the provider accepted, with the invoice's end when
    /// `ends` names it, trying again through a store outage: the message went
    /// out, so recording it late is right and sending it again is not. Gives
    /// up after the retry policy's `record_for`; the delivery then takes the
    /// ordinary store-failure path and the send counts as interrupted
    /// ("possibly sent twice" if it is made again).
    async fn record_sent(
        &self,
        attempt_id: i64,
        outcome: &AttemptOutcome,
        event: &Event,
        ends: Option<&InvoiceKey>,
    ) -> Result<(), StoreError> {
        let started = tokio::time::Instant::now();
        let mut pauses = self.retry.record_backoff.pauses();
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
                Err(e) if started.elapsed() < self.retry.record_for => {
                    let pause = pauses.next_pause();
                    warn!(error = %e, retry_in_ms = pause.as_millis() as u64, "sent, but the store did not take the record; trying again");
                    self.metrics.invoice("store_retry");
                    tokio::time::sleep(pause).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Applies a provider's status report: `delivered` and `read` become
    /// events once; a delivery failure fails the channel and, the first time
    /// only, moves the invoice on to its next channel in the background.
    pub async fn handle_report(self: &Arc<Self>, channel: ChannelName, report: StatusReport) -> Result<(), StoreError> {
        // One attempt, or one per invoice a combined message listed: the
        // report reaches each of them.
        let attempts = self
            .store
            .attempts_by_provider_id(channel, &report.provider_message_id)
            .await?;
        if attempts.is_empty() {
            info!(%channel, "status report for a message this store does not know; ignored");
            return Ok(());
        }
        for attempt in &attempts {
            let provider_id = Some(report.provider_message_id.clone());
            match &report.status {
                DeliveryStatus::Delivered => {
                    let event = Event::delivered(
                        &attempt.key,
                        &attempt.correlation,
                        channel,
                        attempt.attempt,
                        provider_id,
                    )
                    .step(attempt.step.as_deref())
                    .metadata(attempt.metadata.clone());
                    self.store
                        .record_reached(attempt.attempt_id, Reached::Delivered, &event)
                        .await?;
                }
                DeliveryStatus::Read => {
                    let event = Event::read(
                        &attempt.key,
                        &attempt.correlation,
                        channel,
                        attempt.attempt,
                        provider_id,
                    )
                    .step(attempt.step.as_deref())
                    .metadata(attempt.metadata.clone());
                    self.store
                        .record_reached(attempt.attempt_id, Reached::Read, &event)
                        .await?;
                }
                DeliveryStatus::Failed { code, reason } => {
                    let code = code.as_ref().map(|c| format!(" (code {c})")).unwrap_or_default();
                    let detail = format!("the provider could not deliver the message{code}: {reason}");
                    self.failed_after_send(attempt, channel, detail, provider_id).await?;
                }
            }
        }
        self.outbox_signal.notify_one();
        Ok(())
    }

    /// Fails a channel whose provider gave up after accepting the message
    /// and, the first time only, moves the invoice on to its next channel.
    async fn failed_after_send(
        self: &Arc<Self>,
        attempt: &AttemptRef,
        channel: ChannelName,
        detail: String,
        provider_id: Option<String>,
    ) -> Result<(), StoreError> {
        let failed = Event::channel_failed(
            &attempt.key,
            &attempt.correlation,
            channel,
            attempt.attempt,
            detail.clone(),
        )
        .provider_message_id(provider_id)
        .step(attempt.step.as_deref())
        .metadata(attempt.metadata.clone());
        if !self.store.fail_after_send(attempt.attempt_id, &detail, &failed).await? {
            return Ok(());
        }
        info!(key = %attempt.key, %channel, "delivery failed after sending; trying the next channel");
        self.metrics.send(channel, "failed_later");
        let dispatcher = Arc::clone(self);
        let key = attempt.key.clone();
        tokio::spawn(async move {
            if let Err(e) = dispatcher.resume(&key).await {
                warn!(%key, error = %e, "could not move on to the next channel");
            }
        });
        Ok(())
    }
}
