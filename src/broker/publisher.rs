//! The event publisher: moves events from the store's outbox to the events
//! exchange with publisher confirms, in order, and forgets each event only
//! after the broker confirmed it.
//!
//! With several instances on one PostgreSQL store, each publisher takes only
//! its own instance's events, and its rounds (`Store::outbox`) renew the
//! instance's lease on them: see `store::postgres`.

use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::ShortString;
use lapin::{BasicProperties, Channel, Confirmation, Connection};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::{timed, BrokerError, BrokerParts};
use crate::metrics::Metrics;
use crate::store::Store;

/// Events published per round; their confirms are awaited together.
const BATCH: u32 = 500;
/// How often the outbox is looked at when nobody signals. Also how often an
/// idle instance renews its outbox lease, which must stay well above it
/// (`store::postgres::OUTBOX_LEASE`).
const IDLE_POLL: Duration = Duration::from_millis(250);
/// Pause before asking a failing store again.
const STORE_RETRY: Duration = Duration::from_secs(1);

pub(super) struct EventPublisher {
    channel: Channel,
    exchange: String,
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    signal: Arc<Notify>,
}

impl EventPublisher {
    pub(super) async fn new(connection: &Connection, parts: &BrokerParts) -> Result<EventPublisher, BrokerError> {
        let channel = timed(connection.create_channel()).await?;
        timed(channel.confirm_select(ConfirmSelectOptions::default())).await?;
        Ok(EventPublisher {
            channel,
            exchange: parts.config.events_exchange.clone(),
            store: parts.store.clone(),
            metrics: parts.metrics.clone(),
            signal: parts.outbox_signal.clone(),
        })
    }

    /// Publishes until `stop`, then drains what is left; cancels `lost` if
    /// the channel fails so the consumer stops too.
    pub(super) async fn run(self, stop: CancellationToken, lost: CancellationToken) -> Result<(), BrokerError> {
        let result = self.publish_loop(&stop).await;
        if result.is_err() {
            lost.cancel();
        }
        let _ = self.channel.close(200, "publisher stopped".into()).await;
        result
    }

    async fn publish_loop(&self, stop: &CancellationToken) -> Result<(), BrokerError> {
        // Events the broker confirmed that are still in the outbox because
        // the store failed to forget them. They are forgotten before the next
        // round, so a store outage neither publishes them again nor stops the
        // publisher (which would stop the consumer and rebuild the broker
        // connection, handing back every delivery kept through the outage).
        let mut confirmed: Vec<i64> = Vec::new();
        loop {
            if !confirmed.is_empty() {
                if let Err(e) = self.store.outbox_done(&confirmed).await {
                    warn!(error = %e, events = confirmed.len(), "cannot forget published events in the outbox; trying again");
                    if stop.is_cancelled() {
                        return Err(e.into());
                    }
                    tokio::time::sleep(STORE_RETRY).await;
                    continue;
                }
                confirmed.clear();
            }
            let batch = match self.store.outbox(BATCH).await {
                Ok(b) => b,
                Err(e) => {
                    warn!(error = %e, "cannot read the event outbox; trying again");
                    if stop.is_cancelled() {
                        return Err(e.into());
                    }
                    tokio::time::sleep(STORE_RETRY).await;
                    continue;
                }
            };
            if batch.is_empty() {
                if stop.is_cancelled() {
                    return Ok(());
                }
                tokio::select! {
                    _ = self.signal.notified() => {}
                    _ = tokio::time::sleep(IDLE_POLL) => {}
                    _ = stop.cancelled() => {}
                }
                continue;
            }
            let mut messages = Vec::with_capacity(batch.len());
            for entry in &batch {
                let body = entry.json.as_bytes();
                let mut properties = BasicProperties::default()
                    .with_content_type(ShortString::from("application/json"))
                    .with_delivery_mode(2)
                    .with_type(ShortString::from(entry.head.event.as_str()));
                if let Some(id) = entry.head.amqp_id() {
                    properties = properties.with_correlation_id(ShortString::from(id));
                }
                messages.push((entry.id, entry.head.event.as_str(), body, properties));
            }
            // Each publish hands its frames to lapin's I/O thread and waits
            // until they are written. Awaited one by one, that is a thread
            // round trip per event; instead every publish is started (its
            // first poll queues its frames, in outbox order, so events stay
            // in order on the wire) and only then are they all awaited,
            // so the I/O thread writes the whole batch in one go.
            let mut started = Vec::with_capacity(messages.len());
            for (id, routing_key, body, properties) in &messages {
                let mut publish = Box::pin(self.channel.basic_publish(
                    self.exchange.as_str().into(),
                    (*routing_key).into(),
                    BasicPublishOptions::default(),
                    body,
                    properties.clone(),
                ));
                let first = futures_util::poll!(publish.as_mut());
                started.push((*id, publish, first));
            }
            let mut pending = Vec::with_capacity(started.len());
            for (id, publish, first) in started {
                let confirm = match first {
                    Poll::Ready(result) => result?,
                    Poll::Pending => timed(publish).await?,
                };
                pending.push((id, confirm));
            }
            let mut done = Vec::with_capacity(pending.len());
            let mut refused = 0;
            for (id, confirm) in pending {
                match timed(confirm).await? {
                    Confirmation::Ack(_) => done.push(id),
                    other => {
                        refused += 1;
                        debug!(?other, "event not confirmed; it stays in the outbox");
                    }
                }
            }
            self.metrics.events_published(done.len() as u64);
            confirmed = done;
            if refused > 0 {
                warn!(refused, "the broker refused events; trying again shortly");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}
