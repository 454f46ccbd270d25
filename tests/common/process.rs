//! The real `payrelay` binary as a child process, for tests that kill it or
//! run several: a guard that always kills it, its emails, and its events.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties};
use serde_json::Value;
use tokio::sync::mpsc::UnboundedReceiver;

use payrelay::config::BrokerConfig;

/// A payrelay process that is killed when the test ends, even by a panic,
/// so a failed run leaves no service behind holding connections.
pub struct Service(Child);

impl Service {
    /// Starts `payrelay serve`; its log goes next to the config, as `.log`,
    /// at the level in `PAYRELAY_TEST_LOG` (default `warn`).
    pub fn spawn(config: &Path) -> Service {
        let log = std::fs::File::create(config.with_extension("log"))
            .map(Stdio::from)
            .unwrap_or(Stdio::null());
        Service(
            Command::new(env!("CARGO_BIN_EXE_payrelay"))
                .arg("--config")
                .arg(config)
                .arg("serve")
                .env(
                    "PAYRELAY_LOG",
                    std::env::var("PAYRELAY_TEST_LOG").unwrap_or_else(|_| "warn".into()),
                )
                .stdout(log)
                .stderr(Stdio::null())
                .spawn()
                .expect("start payrelay"),
        )
    }

    /// SIGTERM, then waits up to `within` for the process to exit; its exit
    /// status, or `None` if it was still running (it is then killed).
    pub fn terminate(&mut self, within: std::time::Duration) -> Option<std::process::ExitStatus> {
        let sent = Command::new("kill")
            .arg("-TERM")
            .arg(self.0.id().to_string())
            .status()
            .expect("kill runs");
        assert!(sent.success(), "SIGTERM was delivered");
        let deadline = std::time::Instant::now() + within;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.0.try_wait() {
                return Some(status);
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        self.kill();
        None
    }

    /// SIGKILL: no shutdown, no flush.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Service {
    /// Also fails the test if an event it observed broke the published
    /// schema (unless it is failing already).
    fn drop(&mut self) {
        self.kill();
        if !std::thread::panicking() {
            super::schemas::assert_no_violations();
        }
    }
}

/// A free TCP port on 127.0.0.1 (taken for a moment by the OS, then freed),
/// for a child service's HTTP listener or a private broker node.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind port 0")
        .local_addr()
        .expect("local addr")
        .port()
}

/// The recipient of each `.eml` file the `file` transport wrote in `dir`.
pub fn recipients(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "eml"))
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .filter_map(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("To: "))
                .map(|to| to.trim().to_owned())
        })
        .collect()
}

/// How many emails each recipient got, from the `.eml` files in `dir`.
pub fn per_recipient(dir: &Path) -> std::collections::BTreeMap<String, usize> {
    let mut written = std::collections::BTreeMap::new();
    for to in recipients(dir) {
        *written.entry(to).or_default() += 1;
    }
    written
}

/// Declares payrelay's topology and a queue bound to its events exchange,
/// so every event from now on arrives on the returned receiver.
pub async fn observe_events(channel: &Channel, broker: &BrokerConfig) -> UnboundedReceiver<Value> {
    payrelay::broker::declare_topology(channel, broker)
        .await
        .expect("topology");
    let observed = format!("{}.observed", broker.queue);
    let exclusive = QueueDeclareOptions {
        exclusive: true,
        auto_delete: true,
        ..Default::default()
    };
    channel
        .queue_declare(observed.as_str().into(), exclusive, FieldTable::default())
        .await
        .expect("events queue");
    channel
        .queue_bind(
            observed.as_str().into(),
            broker.events_exchange.as_str().into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("bind events");
    let mut consumer = channel
        .basic_consume(
            observed.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume events");
    let (events, received) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(Ok(delivery)) = consumer.next().await {
            let event: Value = serde_json::from_slice(&delivery.data).expect("events are JSON");
            super::schemas::check_event(&event);
            let _ = events.send(event);
            let _ = delivery.acker.ack(BasicAckOptions::default()).await;
        }
    });
    received
}

/// The test's queue and events exchange on the shared broker, with a
/// connection that observes every event; deleted when dropped, also when
/// the test fails.
pub struct Broker {
    pub queue: String,
    pub exchange: String,
    /// Kept open for `channel`, which observes the events.
    _amqp: Connection,
    channel: Channel,
}

impl Broker {
    pub async fn new(name: &str) -> Broker {
        let id = payrelay::domain::ids::random_id()[..10].to_owned();
        let amqp = Connection::connect(super::AMQP_URL, ConnectionProperties::default())
            .await
            .expect("RabbitMQ must run on 127.0.0.1:5672");
        let channel = amqp.create_channel().await.expect("channel");
        Broker {
            queue: format!("payrelay.test.{id}.{name}"),
            exchange: format!("payrelay.test.{id}.{name}-events"),
            _amqp: amqp,
            channel,
        }
    }

    /// Every event from now on, checked against the published schema.
    pub async fn observe(&self, config: &Path) -> UnboundedReceiver<Value> {
        let config = payrelay::config::Config::load(config).expect("test config loads");
        observe_events(&self.channel, &config.broker).await
    }

    pub async fn publish(&self, config: &Path, invoices: &[Value]) {
        let config = payrelay::config::Config::load(config).expect("test config loads");
        let bodies: Vec<String> = invoices.iter().map(Value::to_string).collect();
        let refs: Vec<&str> = bodies.iter().map(String::as_str).collect();
        let published = payrelay::broker::publish::publish(&config.broker, &refs)
            .await
            .expect("publish");
        assert_eq!(published, invoices.len());
    }
}

impl Drop for Broker {
    /// Deletes the queues and exchange from a thread of its own: the test's
    /// runtime may be the one unwinding.
    fn drop(&mut self) {
        let (queue, exchange) = (self.queue.clone(), self.exchange.clone());
        let cleanup = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                return;
            };
            runtime.block_on(async {
                let Ok(connection) = Connection::connect(super::AMQP_URL, ConnectionProperties::default()).await else {
                    return;
                };
                if let Ok(channel) = connection.create_channel().await {
                    for q in [queue.clone(), format!("{queue}.dead")] {
                        let _ = channel
                            .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                            .await;
                    }
                    let _ = channel
                        .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
                        .await;
                }
                let _ = connection.close(200, "test cleanup".into()).await;
            });
        });
        let _ = cleanup.join();
    }
}
