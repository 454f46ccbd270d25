//! The invoice consumer: owns prefetch, acks, dead-lettering and shutdown;
//! the handling itself is the [`Dispatcher`](crate::dispatch::Dispatcher)'s.

use std::collections::{BTreeMap, HashMap};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::Acker;
use lapin::{BasicProperties, Channel, Confirmation, Connection};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::{timed, BrokerError, BrokerParts};
use crate::dispatch::{Disposition, Incoming};
use crate::events::Correlation;

pub(super) async fn consume(
    connection: &Connection,
    parts: &BrokerParts,
    shutdown: &CancellationToken,
    lost: &CancellationToken,
) -> Result<(), BrokerError> {
    let channel = timed(connection.create_channel()).await?;
    timed(channel.basic_qos(parts.config.prefetch, BasicQosOptions::default())).await?;
    let dead_letters = timed(connection.create_channel()).await?;
    timed(dead_letters.confirm_select(ConfirmSelectOptions::default())).await?;
    let dead_letters = Arc::new(dead_letters);
    let tag = format!("payrelay-{}", crate::domain::ids::random_id());
    let mut consumer = timed(channel.basic_consume(
        parts.config.queue.as_str().into(),
        tag.as_str().into(),
        BasicConsumeOptions::default(),
        FieldTable::default(),
    ))
    .await?;

    let mut tasks = JoinSet::new();
    let mut acks = Acks::default();
    // Ends the handlers' store-retry waits on shutdown, and also when the
    // connection is lost: their deliveries are back on the queue by then.
    let give_up = shutdown.child_token();
    let mut tick = tokio::time::interval(ACK_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let result = loop {
        tokio::select! {
            _ = shutdown.cancelled() => break Ok(()),
            _ = lost.cancelled() => break Err(BrokerError::Other("the event publisher lost its channel".into())),
            Some(joined) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                acks.finished(joined);
                if acks.ready() >= ACK_BATCH {
                    acks.flush(false).await;
                }
            }
            _ = tick.tick(), if acks.ready() > 0 => acks.flush(false).await,
            next = consumer.next() => match next {
                Some(Ok(delivery)) => {
                    let tag = delivery.delivery_tag;
                    let job = Job {
                        give_up: give_up.clone(),
                        delivery_limit: parts.config.delivery_limit,
                        dispatcher: parts.dispatcher.clone(),
                        store: parts.store.clone(),
                        outbox_signal: parts.outbox_signal.clone(),
                        dead_letters: dead_letters.clone(),
                        dead_letter_queue: parts.config.dead_letter_queue(),
                        metrics: parts.metrics.clone(),
                    };
                    let task = tasks.spawn(job.run(delivery));
                    acks.started(task.id(), tag);
                }
                Some(Err(e)) => break Err(e.into()),
                None => break Err(BrokerError::Other("the broker cancelled the consumer".into())),
            }
        }
    };

    if result.is_err() {
        give_up.cancel();
    }
    // Stop new deliveries, let in-flight ones finish (and ack), then close.
    let _ = timed(channel.basic_cancel(tag.as_str().into(), BasicCancelOptions::default())).await;
    let deadline = parts.config.shutdown_deadline;
    let drained = tokio::time::timeout(deadline, async {
        while let Some(joined) = tasks.join_next_with_id().await {
            acks.finished(joined);
            acks.flush(false).await;
        }
    })
    .await;
    acks.flush(true).await;
    if drained.is_err() {
        warn!(
            left = tasks.len(),
            "shutdown deadline reached; unfinished invoices go back to the queue"
        );
        tasks.abort_all();
    }
    let _ = channel.close(200, "consumer stopped".into()).await;
    let _ = dead_letters.close(200, "consumer stopped".into()).await;
    result
}

/// Everything one delivery's task needs.
struct Job {
    /// Shutdown, or the connection is gone: stop waiting for the store.
    give_up: CancellationToken,
    delivery_limit: u32,
    dispatcher: Arc<crate::dispatch::Dispatcher>,
    store: Arc<dyn crate::store::Store>,
    outbox_signal: Arc<tokio::sync::Notify>,
    dead_letters: Arc<Channel>,
    dead_letter_queue: String,
    metrics: Arc<crate::metrics::Metrics>,
}

/// How often finished deliveries are acked, and acks held back for a
/// slower delivery looked at: one multiple ack per tick instead of a round
/// trip to lapin's I/O thread per invoice.
const ACK_TICK: Duration = Duration::from_millis(5);
/// Finished deliveries that are acked at once rather than on the tick
/// (under a backlog they finish faster than the tick).
const ACK_BATCH: usize = 32;
/// Longest an ack is held back waiting for a slower delivery before it is
/// sent on its own: a held ack keeps a prefetch slot busy.
const ACK_HOLD: Duration = Duration::from_millis(20);

/// The acks of finished deliveries, sent as few `multiple` acks as
/// possible: one ack for every finished delivery below the oldest one
/// still running, instead of one frame (and a broker operation) each.
///
/// A multiple ack covers every outstanding tag up to its own, so it is only
/// sent up to the oldest delivery still being handled. Deliveries that are
/// dead-lettered or handed back settle themselves before their task ends,
/// so no multiple ack can reach them first.
#[derive(Default)]
struct Acks {
    /// Deliveries being handled, by tag, with their task.
    running: BTreeMap<u64, tokio::task::Id>,
    tags: HashMap<tokio::task::Id, u64>,
    /// Finished deliveries waiting to be acked, by tag.
    ready: BTreeMap<u64, (Acker, tokio::time::Instant)>,
}

impl Acks {
    fn started(&mut self, task: tokio::task::Id, tag: u64) {
        self.running.insert(tag, task);
        self.tags.insert(task, tag);
    }

    fn finished(&mut self, joined: Result<(tokio::task::Id, Settle), tokio::task::JoinError>) {
        let (task, settle) = match joined {
            Ok((task, settle)) => (task, Some(settle)),
            Err(e) => {
                error!(error = %e, "an invoice handler panicked; its message will be redelivered");
                (e.id(), None)
            }
        };
        let Some(tag) = self.tags.remove(&task) else { return };
        self.running.remove(&tag);
        if let Some(Settle::Ack(acker)) = settle {
            self.ready.insert(tag, (acker, tokio::time::Instant::now()));
        }
    }

    /// How many finished deliveries wait for their ack.
    fn ready(&self) -> usize {
        self.ready.len()
    }

    /// Acks what can be acked: all finished tags below the oldest running
    /// one in one multiple ack, then, one by one, those held longer than
    /// [`ACK_HOLD`] (or all, with `all`, once nothing runs any more).
    async fn flush(&mut self, all: bool) {
        let floor = self.running.keys().next().copied().unwrap_or(u64::MAX);
        let below: Vec<u64> = self.ready.range(..floor).map(|(tag, _)| *tag).collect();
        if let Some(&last) = below.last() {
            for tag in &below[..below.len() - 1] {
                self.ready.remove(tag);
            }
            if let Some((acker, _)) = self.ready.remove(&last) {
                let multiple = BasicAckOptions { multiple: true };
                settle(acker.ack(multiple)).await;
            }
        }
        let held: Vec<u64> = self
            .ready
            .iter()
            .filter(|(_, (_, since))| all || since.elapsed() >= ACK_HOLD)
            .map(|(tag, _)| *tag)
            .collect();
        for tag in held {
            if let Some((acker, _)) = self.ready.remove(&tag) {
                settle(acker.ack(BasicAckOptions::default())).await;
            }
        }
    }
}

/// What is left to do with a delivery once its task ends.
enum Settle {
    /// Handled: ack it (batched by [`Acks`]).
    Ack(Acker),
    /// Already dead-lettered and acked, or handed back.
    Done,
}

/// Longest an ack, nack or reject may take. lapin can leave one made while
/// the connection fails waiting forever; the broker redelivers an unacked
/// message anyway, and the store dedups it.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(5);

/// Settles a delivery (ack, nack) within [`SETTLE_TIMEOUT`] and logs how it went.
async fn settle(settling: impl std::future::Future<Output = Result<bool, lapin::Error>>) {
    match tokio::time::timeout(SETTLE_TIMEOUT, settling).await {
        Ok(Ok(true)) => {}
        Ok(Ok(false)) => info!("channel closed before the ack; the broker will redeliver and the store dedups"),
        Ok(Err(e)) => warn!(error = %e, "ack failed; the broker will redeliver and the store dedups"),
        Err(_) => warn!(
            timeout_ms = SETTLE_TIMEOUT.as_millis() as u64,
            "ack did not complete; the broker will redeliver and the store dedups"
        ),
    }
}

impl Job {
    async fn run(self, delivery: Delivery) -> Settle {
        let props = &delivery.properties;
        let correlation = Correlation {
            correlation_id: props.correlation_id().as_ref().map(|s| s.to_string()),
            message_id: props.message_id().as_ref().map(|s| s.to_string()),
        };
        let disposition = match self.dispatcher.refuse_oversized(delivery.data.len(), &correlation) {
            Some(refused) => refused,
            None => {
                let incoming = Incoming {
                    body: delivery.data.clone(),
                    correlation,
                    redelivered: delivery.redelivered,
                    user_id: props.user_id().as_ref().map(|s| s.to_string()),
                };
                self.handle(incoming, &delivery).await
            }
        };
        match disposition {
            Disposition::Ack => return Settle::Ack(delivery.acker),
            Disposition::DeadLetter { reason, event } => match self.dead_letter(&delivery, &reason).await {
                Ok(()) => {
                    self.metrics.dead_letter();
                    if let Err(e) = self.store.record_event(&event).await {
                        error!(error = %e, "dead-lettered a message but could not store its rejected event");
                    }
                    self.outbox_signal.notify_one();
                    settle(delivery.acker.ack(BasicAckOptions::default())).await;
                }
                Err(e) => {
                    warn!(error = %e, "could not dead-letter a message; it goes back to the queue");
                    tokio::time::sleep(self.dispatcher.retry_policy().requeue_pause).await;
                    settle(delivery.acker.nack(requeue())).await;
                }
            },
            Disposition::Requeue { .. } => settle(delivery.acker.nack(requeue())).await,
        }
        Settle::Done
    }

    /// Runs the dispatcher, keeping the delivery (unacked) through store
    /// outages as the retry policy says, and turning a handler that keeps
    /// crashing into a dead letter with its reason before the broker's
    /// delivery limit drops it without one.
    async fn handle(&self, incoming: Incoming, delivery: &Delivery) -> Disposition {
        let policy = self.dispatcher.retry_policy();
        let mut pauses = policy.store_outage_backoff.pauses();
        let started = tokio::time::Instant::now();
        loop {
            let handled = AssertUnwindSafe(self.dispatcher.handle(incoming.clone()))
                .catch_unwind()
                .await;
            let disposition = match handled {
                Ok(d) => d,
                Err(panic) => return self.after_crash(delivery, panic_text(&panic)),
            };
            match disposition {
                Disposition::Requeue { error } => {
                    if self.give_up.is_cancelled() || started.elapsed() > policy.store_outage_for {
                        return Disposition::Requeue { error };
                    }
                    let pause = pauses.next_pause();
                    warn!(error = %error, retry_in_ms = pause.as_millis() as u64, "store unavailable; keeping the message and trying again");
                    tokio::select! {
                        _ = self.give_up.cancelled() => return Disposition::Requeue { error },
                        _ = tokio::time::sleep(pause) => {}
                    }
                }
                other => return other,
            }
        }
    }

    /// A handler panicked. The message goes back to the queue, unless this
    /// was its last delivery: then it is dead-lettered with the reason.
    fn after_crash(&self, delivery: &Delivery, panic: String) -> Disposition {
        let deliveries = delivery_count(delivery) + 1;
        error!(deliveries, panic = %crate::redact::text(&panic), "an invoice handler crashed");
        if deliveries < self.delivery_limit as u64 {
            return Disposition::Requeue { error: panic };
        }
        let reason = format!("payrelay failed to handle this message {deliveries} times; last error: {panic}");
        let correlation = Correlation {
            correlation_id: delivery.properties.correlation_id().as_ref().map(|s| s.to_string()),
            message_id: delivery.properties.message_id().as_ref().map(|s| s.to_string()),
        };
        let event = crate::events::Event::rejected(&correlation, reason.clone());
        Disposition::DeadLetter {
            reason,
            event: Box::new(event),
        }
    }

    /// Copies the message, with its properties, the reason and the time, to `<queue>.dead`.
    async fn dead_letter(&self, delivery: &Delivery, reason: &str) -> Result<(), BrokerError> {
        let headers = super::dead_letters::dead_letter_headers(
            delivery.properties.headers().as_ref(),
            reason,
            crate::domain::clock::now_ms(),
        );
        let properties: BasicProperties = delivery.properties.clone().with_headers(headers).with_delivery_mode(2);
        let confirm = timed(self.dead_letters.basic_publish(
            "".into(),
            self.dead_letter_queue.as_str().into(),
            BasicPublishOptions {
                mandatory: true,
                ..BasicPublishOptions::default()
            },
            &delivery.data,
            properties,
        ))
        .await?;
        match timed(confirm).await? {
            Confirmation::Ack(None) => Ok(()),
            Confirmation::Ack(Some(_)) => Err(BrokerError::Other(format!(
                "queue {} does not exist",
                self.dead_letter_queue
            ))),
            other => Err(BrokerError::Other(format!("the broker did not confirm: {other:?}"))),
        }
    }
}

/// How often the broker delivered this message before (quorum queues set
/// `x-delivery-count` on redeliveries).
fn delivery_count(delivery: &Delivery) -> u64 {
    let value = delivery
        .properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get("x-delivery-count").cloned());
    match value {
        Some(AMQPValue::LongLongInt(n)) => n.max(0) as u64,
        Some(AMQPValue::LongInt(n)) => n.max(0) as u64,
        Some(AMQPValue::ShortInt(n)) => n.max(0) as u64,
        Some(AMQPValue::LongUInt(n)) => n as u64,
        Some(AMQPValue::ShortUInt(n)) => n as u64,
        Some(AMQPValue::ShortShortInt(n)) => n.max(0) as u64,
        Some(AMQPValue::ShortShortUInt(n)) => n as u64,
        _ => 0,
    }
}

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "the handler panicked".to_owned())
}

fn requeue() -> BasicNackOptions {
    BasicNackOptions {
        requeue: true,
        ..BasicNackOptions::default()
    }
}
