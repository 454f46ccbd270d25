//! The invoice consumer: owns prefetch, acks, dead-lettering and shutdown;
//! the handling itself is the [`Dispatcher`](crate::dispatch::Dispatcher)'s.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::{timed, BrokerError, BrokerParts};
use crate::dispatch::{Disposition, Incoming};
use crate::events::Correlation;

/// How long in-flight invoices may take to finish once shutdown starts;
/// whatever is left is handed back to the broker unacked.
const DRAIN_DEADLINE: Duration = Duration::from_secs(30);
/// Pause before handing back a message the store could not take, so a
/// database outage does not become a hot redelivery loop.
const REQUEUE_PAUSE: Duration = Duration::from_secs(1);

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
    let tag = format!("payrelay-{}", crate::paylink::random_id());
    let mut consumer = timed(channel.basic_consume(
        parts.config.queue.as_str().into(),
        tag.as_str().into(),
        BasicConsumeOptions::default(),
        FieldTable::default(),
    ))
    .await?;

    let mut tasks = JoinSet::new();
    let result = loop {
        tokio::select! {
            _ = shutdown.cancelled() => break Ok(()),
            _ = lost.cancelled() => break Err(BrokerError::Other("the event publisher lost its channel".into())),
            Some(joined) = tasks.join_next(), if !tasks.is_empty() => {
                if let Err(e) = joined {
                    error!(error = %e, "an invoice handler panicked; its message will be redelivered");
                }
            }
            next = consumer.next() => match next {
                Some(Ok(delivery)) => {
                    let job = Job {
                        dispatcher: parts.dispatcher.clone(),
                        store: parts.store.clone(),
                        outbox_signal: parts.outbox_signal.clone(),
                        dead_letters: dead_letters.clone(),
                        dead_letter_queue: parts.config.dead_letter_queue(),
                    };
                    tasks.spawn(job.run(delivery));
                }
                Some(Err(e)) => break Err(e.into()),
                None => break Err(BrokerError::Other("the broker cancelled the consumer".into())),
            }
        }
    };

    // Stop new deliveries, let in-flight ones finish (and ack), then close.
    let _ = timed(channel.basic_cancel(tag.as_str().into(), BasicCancelOptions::default())).await;
    let drained = tokio::time::timeout(DRAIN_DEADLINE, async { while tasks.join_next().await.is_some() {} }).await;
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
    dispatcher: Arc<crate::dispatch::Dispatcher>,
    store: Arc<dyn crate::store::Store>,
    outbox_signal: Arc<tokio::sync::Notify>,
    dead_letters: Arc<Channel>,
    dead_letter_queue: String,
}

impl Job {
    async fn run(self, delivery: Delivery) {
        let props = &delivery.properties;
        let correlation = Correlation {
            correlation_id: props.correlation_id().as_ref().map(|s| s.to_string()),
            message_id: props.message_id().as_ref().map(|s| s.to_string()),
        };
        let incoming = Incoming {
            body: delivery.data.clone(),
            correlation,
            redelivered: delivery.redelivered,
        };
        let acked = match self.dispatcher.handle(incoming).await {
            Disposition::Ack => delivery.acker.ack(BasicAckOptions::default()).await,
            Disposition::DeadLetter { reason, event } => match self.dead_letter(&delivery, &reason).await {
                Ok(()) => {
                    if let Err(e) = self.store.record_event(&event).await {
                        error!(error = %e, "dead-lettered a message but could not store its rejected event");
                    }
                    self.outbox_signal.notify_one();
                    delivery.acker.ack(BasicAckOptions::default()).await
                }
                Err(e) => {
                    warn!(error = %e, "could not dead-letter a message; it goes back to the queue");
                    tokio::time::sleep(REQUEUE_PAUSE).await;
                    delivery.acker.nack(requeue()).await
                }
            },
            Disposition::Requeue { .. } => {
                tokio::time::sleep(REQUEUE_PAUSE).await;
                delivery.acker.nack(requeue()).await
            }
        };
        match acked {
            Ok(true) => {}
            Ok(false) => info!("channel closed before the ack; the broker will redeliver and the store dedups"),
            Err(e) => warn!(error = %e, "ack failed; the broker will redeliver and the store dedups"),
        }
    }

    /// Copies the message, with its properties and the reason, to `<queue>.dead`.
    async fn dead_letter(&self, delivery: &Delivery, reason: &str) -> Result<(), BrokerError> {
        let mut headers = delivery.properties.headers().clone().unwrap_or_default();
        headers.insert(
            ShortString::from("x-payrelay-reason"),
            AMQPValue::LongString(LongString::from(reason)),
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

fn requeue() -> BasicNackOptions {
    BasicNackOptions {
        requeue: true,
        ..BasicNackOptions::default()
    }
}
