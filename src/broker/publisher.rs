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
use crate::events::{routing_key, Event};
use crate::metrics::Metrics;
use crate::store::{OutboxEntry, Store};

/// Events published per round; their confirms are awaited together.
const BATCH: u32 = 500;
/// How often the outbox is looked at when nobody signals. Also how often an
/// idle instance renews its outbox lease, which must stay well above it
/// (`store::postgres::OUTBOX_LEASE`).
const IDLE_POLL: Duration = Duration::from_millis(250);

pub(super) struct EventPublisher {
    channel: Channel,
    exchange: String,
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    signal: Arc<Notify>,
    /// Pause before asking a failing store again, or publishing refused
    /// events again (the retry policy's `outbox_pause`).
    pause: Duration,
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
            pause: parts.dispatcher.retry_policy().outbox_pause,
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
                    tokio::time::sleep(self.pause).await;
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
                    tokio::time::sleep(self.pause).await;
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
                let (body, properties) = amqp_message(entry);
                let routing_key = routing_key(entry.head.biller_id.as_deref(), entry.head.event);
                messages.push((entry.id, routing_key, body, properties));
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
                    routing_key.as_str().into(),
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
                tokio::time::sleep(self.pause).await;
            }
        }
    }
}

/// An outbox entry's body and AMQP properties: `message_id` is the event's
/// id, `type` its name, `timestamp` its time, `correlation_id` the incoming
/// message's. An event stored before events had ids is given one made from
/// its outbox id, stable across publishes of the same store.
fn amqp_message(entry: &OutboxEntry) -> (std::borrow::Cow<'_, [u8]>, BasicProperties) {
    let head = &entry.head;
    let (event_id, body) = if head.event_id.is_empty() {
        let event_id = format!("outbox-{:026}", entry.id);
        let body = entry.event().ok().and_then(|mut event: Event| {
            event.event_id = event_id.clone();
            serde_json::to_vec(&event).ok()
        });
        (event_id, body.map_or(entry.json.as_bytes().into(), Into::into))
    } else {
        (head.event_id.clone(), entry.json.as_bytes().into())
    };
    let mut properties = BasicProperties::default()
        .with_content_type(ShortString::from("application/json"))
        .with_delivery_mode(2)
        .with_type(ShortString::from(head.event.as_str()))
        .with_message_id(ShortString::from(event_id));
    if let Ok(at) = time::OffsetDateTime::parse(&head.at, &time::format_description::well_known::Rfc3339) {
        properties = properties.with_timestamp(at.unix_timestamp().max(0) as u64);
    }
    if let Some(id) = head.amqp_id() {
        properties = properties.with_correlation_id(ShortString::from(id));
    }
    (body, properties)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::InvoiceKey;
    use crate::events::{Correlation, EventName};

    fn key() -> InvoiceKey {
        InvoiceKey {
            biller_id: "acme".into(),
            invoice_id: "INV-1".into(),
            revision: 1,
        }
    }

    #[test]
    fn an_event_is_published_with_its_id_name_time_and_correlation() {
        let correlation = Correlation {
            correlation_id: Some("corr-1".into()),
            message_id: None,
        };
        let event = Event::about(EventName::Sent, &key(), &correlation);
        let entry = OutboxEntry::new(5, serde_json::to_string(&event).unwrap()).unwrap();
        let (body, properties) = amqp_message(&entry);
        assert_eq!(&*body, entry.json.as_bytes(), "published as stored");
        assert_eq!(properties.message_id().as_ref().unwrap().as_str(), event.event_id);
        assert_eq!(properties.kind().as_ref().unwrap().as_str(), "invoice.sent");
        assert_eq!(properties.correlation_id().as_ref().unwrap().as_str(), "corr-1");
        let at = time::OffsetDateTime::parse(&event.at, &time::format_description::well_known::Rfc3339).unwrap();
        assert_eq!(*properties.timestamp(), Some(at.unix_timestamp() as u64));
        assert_eq!(
            routing_key(entry.head.biller_id.as_deref(), entry.head.event),
            "acme.invoice.sent"
        );
    }

    #[test]
    fn an_event_stored_without_an_id_gets_the_same_one_each_time() {
        let event = Event::about(EventName::Accepted, &key(), &Correlation::default());
        let mut json: serde_json::Value = serde_json::to_value(&event).unwrap();
        json.as_object_mut().unwrap().remove("event_id");
        let entry = OutboxEntry::new(42, json.to_string()).unwrap();
        let (body, properties) = amqp_message(&entry);
        let (again, _) = amqp_message(&entry);
        assert_eq!(body, again);
        let published: Event = serde_json::from_slice(&body).unwrap();
        assert_eq!(published.event_id, properties.message_id().as_ref().unwrap().as_str());
        assert!(!published.event_id.is_empty());
    }
}
