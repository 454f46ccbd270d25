//! RabbitMQ: the topology, the invoice consumer, the event publisher and the
//! `publish` command.
//!
//! [`run`] is a supervisor: it connects, declares the topology, runs the
//! consumer and the event publisher on one connection, and when anything
//! about the connection fails it tears everything down and starts again
//! with backoff. Unacked deliveries return to the queue on their own when a
//! connection dies, and the store makes their second handling harmless.

mod consumer;
pub mod publish;
mod publisher;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lapin::options::{ExchangeDeclareOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::BrokerConfig;
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
/// (contract §7). Declaring is idempotent when the arguments match.
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

/// Runs until `shutdown` is cancelled, reconnecting after failures.
pub async fn run(parts: BrokerParts, shutdown: CancellationToken) {
    let mut backoff = Duration::from_millis(250);
    while !shutdown.is_cancelled() {
        match run_connected(&parts, &shutdown).await {
            Ok(()) => break,
            Err(e) => {
                parts.ready.store(false, Ordering::SeqCst);
                warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "broker connection lost; reconnecting");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
    parts.ready.store(false, Ordering::SeqCst);
}

async fn run_connected(parts: &BrokerParts, shutdown: &CancellationToken) -> Result<(), BrokerError> {
    let connection = connect(&parts.config).await?;
    let setup = timed(connection.create_channel()).await?;
    declare_topology(&setup, &parts.config).await?;
    let _ = setup.close(200, "topology declared".into()).await;
    info!(broker = %display_host(&parts.config), queue = %parts.config.queue, "connected to RabbitMQ");
    parts.ready.store(true, Ordering::SeqCst);

    // The publisher stops after the consumer, so the last outcomes' events
    // are flushed; if it fails first, `lost` stops the consumer too.
    let publisher_stop = CancellationToken::new();
    let lost = CancellationToken::new();
    let publisher = publisher::EventPublisher::new(&connection, parts).await?;
    let publisher_task = tokio::spawn(publisher.run(publisher_stop.clone(), lost.clone()));
    let consumed = consumer::consume(&connection, parts, shutdown, &lost).await;
    publisher_stop.cancel();
    let published = publisher_task
        .await
        .map_err(|e| BrokerError::Other(format!("event publisher stopped: {e}")))?;
    let _ = connection.close(200, "payrelay stopping".into()).await;
    consumed.and(published)
}
