//! RabbitMQ: the topology, the invoice consumer, the event publisher, the
//! `publish` command and the console's look at the dead letters.
//!
//! [`run`] is a supervisor: it connects, declares the topology, runs the
//! consumer and the event publisher on one connection, and when anything
//! about the connection fails it tears everything down and starts again
//! with backoff. Unacked deliveries return to the queue on their own when a
//! connection dies, and the store makes their second handling harmless.

mod consumer;
pub mod dead_letters;
pub mod publish;
mod publisher;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lapin::options::{ExchangeDeclareOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::BrokerConfig;
use crate::dispatch::retry::{Pauses, RetryPolicy};
use crate::dispatch::Dispatcher;
use crate::metrics::Metrics;
use crate::store::Store;

/// Longest time one broker operation may take before the connection is
/// treated as broken (lapin calls can hang while a broker shuts down).
pub const BROKER_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("cannot reach RabbitMQ at {host}: {source}; is it running?")]
    Connect { host: String, source: lapin::Error },
    #[error(
        "RabbitMQ refused to declare {what}: {source} (if it exists with other arguments, delete it or fix the config)"
    )]
    Topology { what: String, source: lapin::Error },
    #[error("RabbitMQ operation failed: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("RabbitMQ did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the store failed: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("{0}")]
    Other(String),
}

/// Bounds a broker call so a hung connection cannot stall a loop forever.
pub(crate) async fn timed<T>(f: impl std::future::Future<Output = Result<T, lapin::Error>>) -> Result<T, BrokerError> {
    match tokio::time::timeout(BROKER_TIMEOUT, f).await {
        Ok(r) => r.map_err(BrokerError::from),
        Err(_) => Err(BrokerError::Timeout(BROKER_TIMEOUT)),
    }
}

/// The broker's host and port, for messages (the URL holds the password).
pub fn display_host(config: &BrokerConfig) -> String {
    match url::Url::parse(config.url.expose()) {
        Ok(u) => format!("{}:{}", u.host_str().unwrap_or("?"), u.port().unwrap_or(5672)),
        Err(_) => "the configured broker".into(),
    }
}

pub async fn connect(config: &BrokerConfig) -> Result<Connection, BrokerError> {
    // Named after the queue, so an operator (or a test) can tell instances
    // of different deployments apart in `rabbitmqctl list_connections`.
    let name = format!("payrelay {}", config.queue);
    let properties = ConnectionProperties::default().with_connection_name(name.as_str().into());
    match tokio::time::timeout(BROKER_TIMEOUT, Connection::connect(config.url.expose(), properties)).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(source)) => Err(BrokerError::Connect {
            host: display_host(config),
            source,
        }),
        Err(_) => Err(BrokerError::Timeout(BROKER_TIMEOUT)),
    }
}

fn quorum_args(extra: &[(&str, AMQPValue)]) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), AMQPValue::LongString(LongString::from("quorum")));
    for (k, v) in extra {
        args.insert(ShortString::from(*k), v.clone());
    }
    args
}

/// Declares the input queue, its dead-letter queue and the events exchange
/// (docs/asyncapi.yaml). Declaring is idempotent when the arguments match.
pub async fn declare_topology(channel: &Channel, config: &BrokerConfig) -> Result<(), BrokerError> {
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    let dead = config.dead_letter_queue();
    timed(channel.queue_declare(dead.as_str().into(), durable, quorum_args(&[])))
        .await
        .map_err(|e| topology_error(&format!("queue {dead}"), e))?;
    let input_args = quorum_args(&[
        ("x-dead-letter-exchange", AMQPValue::LongString(LongString::from(""))),
        (
            "x-dead-letter-routing-key",
            AMQPValue::LongString(LongString::from(dead.as_str())),
        ),
        ("x-delivery-limit", AMQPValue::LongLongInt(config.delivery_limit as i64)),
    ]);
    timed(channel.queue_declare(config.queue.as_str().into(), durable, input_args))
        .await
        .map_err(|e| topology_error(&format!("queue {}", config.queue), e))?;
    let exchange = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    timed(channel.exchange_declare(
        config.events_exchange.as_str().into(),
        ExchangeKind::Topic,
        exchange,
        FieldTable::default(),
    ))
    .await
    .map_err(|e| topology_error(&format!("exchange {}", config.events_exchange), e))?;
    Ok(())
}

fn topology_error(what: &str, e: BrokerError) -> BrokerError {
    match e {
        BrokerError::Amqp(source) => BrokerError::Topology {
            what: what.to_owned(),
            source,
        },
        other => other,
    }
}

/// What the consumer side shares with the rest of the service.
pub struct BrokerParts {
    pub config: BrokerConfig,
    pub dispatcher: Arc<Dispatcher>,
    pub store: Arc<dyn Store>,
    pub metrics: Arc<Metrics>,
    pub outbox_signal: Arc<Notify>,
    /// True while connected with the topology declared, for `/readyz`.
    pub ready: Arc<AtomicBool>,
}

/// Pauses between reconnection attempts, as the retry policy's
/// `reconnect_backoff` doubles them, back to the start once a connection
/// has worked for `reconnect_reset_after`, so a later outage is not met with
/// the long pauses that ended an earlier one (while a connection that fails
/// right after its topology, again and again, still backs off).
#[derive(Debug)]
struct Backoff {
    pauses: Pauses,
    reset_after: Duration,
}

impl Backoff {
    fn new(policy: &RetryPolicy) -> Backoff {
        Backoff {
            pauses: policy.reconnect_backoff.pauses(),
            reset_after: policy.reconnect_reset_after,
        }
    }

    /// The pause after a failure; `ready_for` is how long the connection
    /// that failed had been ready (zero when it never got there).
    fn after_failure(&mut self, ready_for: Duration) -> Duration {
        if ready_for >= self.reset_after {
            self.pauses.reset();
        }
        self.pauses.next_pause()
    }
}

/// Runs until `shutdown` is cancelled, reconnecting after failures.
pub async fn run(parts: BrokerParts, shutdown: CancellationToken) {
    let mut backoff = Backoff::new(parts.dispatcher.retry_policy());
    while !shutdown.is_cancelled() {
        let mut ready_since = None;
        match run_connected(&parts, &shutdown, &mut ready_since).await {
            Ok(()) => break,
            Err(e) => {
                parts.ready.store(false, Ordering::SeqCst);
                let pause = backoff.after_failure(ready_since.map_or(Duration::ZERO, |t: Instant| t.elapsed()));
                warn!(error = %e, retry_in_ms = pause.as_millis() as u64, "broker connection lost; reconnecting");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(pause) => {}
                }
            }
        }
    }
    parts.ready.store(false, Ordering::SeqCst);
}

/// Aborts a task when dropped, whichever way its owner returns.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Clears `ready` as soon as the connection fails (the broker went away,
/// closed the connection, or stopped answering heartbeats). The consumer
/// notices too, but returns only once its in-flight deliveries are
/// finished, which can take up to `shutdown_deadline`; `/readyz` must not
/// say ready meanwhile. lapin reports a channel's error on the same stream:
/// those leave the connection up and are the consumer's business.
async fn watch_connection(
    mut events: impl futures_util::Stream<Item = lapin::Event> + Unpin,
    status: lapin::ConnectionStatus,
    ready: Arc<AtomicBool>,
    failed: CancellationToken,
) {
    use futures_util::StreamExt;
    while let Some(event) = events.next().await {
        if let lapin::Event::Error(e) = event {
            if !status.connected() {
                ready.store(false, Ordering::SeqCst);
                failed.cancel();
                warn!(error = %e, "the broker connection failed; not ready");
                return;
            }
        }
    }
}

/// How long the consumer may take to return after the connection failed
/// or a shutdown began, beyond `[broker] shutdown_deadline` (its own bound
/// for in-flight deliveries); and the event publisher, beyond
/// [`BROKER_TIMEOUT`] (its bound for one broker call), after the
/// connection failed.
const TEARDOWN_GRACE: Duration = Duration::from_secs(5);

/// Completes `wait` after `failed` or `shutdown` (if given) is cancelled:
/// by then a part of the broker side that has not returned is stuck on a
/// broker call that will never complete.
async fn overdue(failed: &CancellationToken, shutdown: Option<&CancellationToken>, wait: Duration) {
    match shutdown {
        Some(shutdown) => tokio::select! {
            _ = failed.cancelled() => {}
            _ = shutdown.cancelled() => {}
        },
        None => failed.cancelled().await,
    }
    tokio::time::sleep(wait).await;
}

async fn run_connected(
    parts: &BrokerParts,
    shutdown: &CancellationToken,
    ready_since: &mut Option<Instant>,
) -> Result<(), BrokerError> {
    let connection = connect(&parts.config).await?;
    // Listening from the start: an error before the watcher runs waits in
    // the stream for it.
    let events = Box::pin(connection.events_listener());
    let setup = timed(connection.create_channel()).await?;
    declare_topology(&setup, &parts.config).await?;
    let _ = setup.close(200, "topology declared".into()).await;
    info!(broker = %display_host(&parts.config), queue = %parts.config.queue, "connected to RabbitMQ");
    parts.ready.store(true, Ordering::SeqCst);
    *ready_since = Some(Instant::now());
    let failed = CancellationToken::new();
    let _watch = AbortOnDrop(tokio::spawn(watch_connection(
        events,
        connection.status().clone(),
        parts.ready.clone(),
        failed.clone(),
    )));

    // The publisher stops after the consumer, so the last outcomes' events
    // are flushed; if it fails first, `lost` stops the consumer too.
    let publisher_stop = CancellationToken::new();
    let lost = CancellationToken::new();
    let publisher = publisher::EventPublisher::new(&connection, parts).await?;
    let publisher_task = tokio::spawn(publisher.run(publisher_stop.clone(), lost.clone()));
    // lapin can leave an ack waiting forever when the connection fails
    // under it, and the consumer awaits its acks: once the connection has
    // failed (or a shutdown began), the consumer gets its own deadline for
    // in-flight deliveries plus a grace, then it is dropped, which aborts
    // whatever it still runs, as its own deadline would. Without this the
    // service would never reconnect.
    let consumer_wait = parts.config.shutdown_deadline + TEARDOWN_GRACE;
    let consumed = tokio::select! {
        consumed = consumer::consume(&connection, parts, shutdown, &lost) => consumed,
        _ = overdue(&failed, Some(shutdown), consumer_wait) => {
            error!(
                waited_ms = consumer_wait.as_millis() as u64,
                "the consumer did not stop after the broker connection ended; abandoning it (its unacked deliveries come back)"
            );
            Err(BrokerError::Other("the consumer hung after the connection ended".into()))
        }
    };
    publisher_stop.cancel();
    // The publisher drains the outbox while the connection lives; once it
    // has failed, every call fails or times out within BROKER_TIMEOUT.
    let publisher_abort = publisher_task.abort_handle();
    let published = tokio::select! {
        joined = publisher_task => joined.map_err(|e| BrokerError::Other(format!("event publisher stopped: {e}")))?,
        _ = overdue(&failed, None, BROKER_TIMEOUT + TEARDOWN_GRACE) => {
            publisher_abort.abort();
            error!("the event publisher did not stop after the broker connection ended; abandoning it");
            Err(BrokerError::Other("the event publisher hung after the connection ended".into()))
        }
    };
    let _ = tokio::time::timeout(TEARDOWN_GRACE, connection.close(200, "payrelay stopping".into())).await;
    consumed.and(published)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let mut b = Backoff::new(&RetryPolicy::STANDARD);
        let pauses: Vec<Duration> = (0..8).map(|_| b.after_failure(Duration::ZERO)).collect();
        assert_eq!(
            pauses,
            [
                ms(250),
                ms(500),
                ms(1000),
                ms(2000),
                ms(4000),
                ms(8000),
                ms(10_000),
                ms(10_000)
            ]
        );
    }

    #[test]
    fn backoff_starts_again_after_a_connection_that_worked() {
        let mut b = Backoff::new(&RetryPolicy::STANDARD);
        for _ in 0..6 {
            b.after_failure(Duration::ZERO);
        }
        // Hours later, the next outage is met at the fastest pace again.
        assert_eq!(b.after_failure(Duration::from_secs(3600)), ms(250));
        assert_eq!(b.after_failure(Duration::ZERO), ms(500));
        // A connection that fails right after becoming ready keeps backing off.
        assert_eq!(b.after_failure(ms(50)), ms(1000));
    }
}
