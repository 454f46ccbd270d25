//! Test harness: a payrelay service on the real RabbitMQ and a real SQLite
//! file, with its own queue and exchange names (so tests run in parallel and
//! leave nothing behind), a real SMTP listener, and a queue bound to the
//! events exchange that records every event.

#![allow(dead_code)]

pub mod browser;
pub mod pg;
pub mod process;
pub mod schemas;
pub mod smtp;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection, ConnectionProperties};
use serde_json::{json, Value};
use tokio::sync::Notify;

use payrelay::app::Running;
use payrelay::config::Config;
use smtp::SmtpServer;

pub const WAIT: Duration = Duration::from_secs(30);
pub const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// Options that differ between tests.
pub struct Options {
    pub paylink_ttl: &'static str,
    pub email_rate: u32,
    /// More `[channels.*]` sections (SMS, WhatsApp, Messenger against mocks).
    pub channels: String,
    /// The body of `[routing]`.
    pub routing: String,
    /// The service's clock; the real one when None.
    pub clock: Option<Arc<payrelay::domain::clock::ManualClock>>,
    /// `[broker] delivery_limit`.
    pub delivery_limit: u32,
    /// Wraps the real store, to make it fail on cue.
    pub wrap_store: Option<StoreWrapper>,
    /// `[store] url`; an SQLite file in the test's folder when None.
    pub store_url: Option<String>,
    /// More `[http]` keys.
    pub http: String,
    /// More `[billers.*]` sections besides acme.
    pub billers: String,
}

/// Builds a store around the real one.
pub type StoreWrapper = Box<dyn Fn(Arc<dyn payrelay::store::Store>) -> Arc<dyn payrelay::store::Store> + Send + Sync>;

impl Default for Options {
    fn default() -> Self {
        Options {
            paylink_ttl: "45d",
            email_rate: 200,
            channels: String::new(),
            routing: "default = [\"email\"]".into(),
            clock: None,
            delivery_limit: 10,
            wrap_store: None,
            store_url: None,
            http: String::new(),
            billers: String::new(),
        }
    }
}

pub struct TestEnv {
    pub id: String,
    pub dir: tempfile::TempDir,
    pub smtp: SmtpServer,
    pub config: Config,
    pub base_url: String,
    pub http: reqwest::Client,
    running: Option<Running>,
    amqp: Connection,
    channel: Channel,
    events: Arc<Mutex<Vec<Value>>>,
    events_arrived: Arc<Notify>,
    events_queue: String,
    clock: Arc<dyn payrelay::domain::clock::Clock>,
    /// Set by [`TestEnv::finish`]; otherwise (a failed test) dropping the
    /// env deletes its broker objects, so failures leave nothing behind on
    /// the shared broker.
    finished: bool,
}

impl TestEnv {
    pub async fn start() -> TestEnv {
        TestEnv::start_with(Options::default()).await
    }

    pub async fn start_with(options: Options) -> TestEnv {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                std::env::var("PAYRELAY_LOG").unwrap_or_else(|_| "warn".into()),
            ))
            .with_test_writer()
            .try_init();
        let id = payrelay::domain::ids::random_id()[..12].to_owned();
        let dir = tempfile::tempdir().expect("tempdir");
        let smtp = SmtpServer::start().await;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind http");
        let port = listener.local_addr().expect("addr").port();
        let base_url = format!("http://127.0.0.1:{port}");
        let toml = format!(
            r#"
[broker]
url = "{AMQP_URL}"
queue = "payrelay.test.{id}.invoices"
events_exchange = "payrelay.test.{id}.events"
prefetch = 64
delivery_limit = {delivery_limit}

[store]
url = "{store_url}"

[http]
listen = "127.0.0.1:{port}"
public_base_url = "{base_url}"
admin_token = "env:PAYRELAY_ADMIN_TOKEN"
{http}

[paylink]
ttl = "{ttl}"

[billers.acme]
name = "ACME Energy"
checkout_url = "https://pay.example/c?inv={{invoice_id}}&amt={{amount}}&cur={{currency}}&t={{token}}"
default_locale = "es-MX"
webhook_secret = "env:ACME_WEBHOOK_SECRET"

{billers}

[channels.email]
transport = "smtp"
smtp_url = "{smtp}"
from = "ACME Billing <billing@acme.example>"
rate_per_second = {rate}
pool_size = 2
timeout = "5s"

{channels}

[routing]
{routing}
"#,
            ttl = options.paylink_ttl,
            smtp = smtp.url(),
            rate = options.email_rate,
            channels = options.channels,
            routing = options.routing,
            http = options.http,
            delivery_limit = options.delivery_limit,
            store_url = options.store_url.as_deref().unwrap_or("sqlite://var/payrelay.db"),
            billers = options.billers,
        );
        let config = Config::from_toml(&toml, dir.path(), &test_secrets)
            .unwrap_or_else(|problems| panic!("test config is invalid: {problems:#?}"));

        // Bind the events queue before the service starts, so no event is missed.
        let amqp = Connection::connect(AMQP_URL, ConnectionProperties::default())
            .await
            .expect("RabbitMQ must run on 127.0.0.1:5672");
        let channel = amqp.create_channel().await.expect("channel");
        let setup = amqp.create_channel().await.expect("channel");
        payrelay::broker::declare_topology(&setup, &config.broker)
            .await
            .expect("topology");
        let events_queue = format!("payrelay.test.{id}.observed-events");
        channel
            .queue_declare(
                events_queue.as_str().into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("events queue");
        channel
            .queue_bind(
                events_queue.as_str().into(),
                config.broker.events_exchange.as_str().into(),
                "#".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("bind events");
        let events = Arc::new(Mutex::new(Vec::new()));
        let events_arrived = Arc::new(Notify::new());
        let mut consumer = channel
            .basic_consume(
                events_queue.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("consume events");
        let (sink, arrived) = (events.clone(), events_arrived.clone());
        tokio::spawn(async move {
            while let Some(Ok(delivery)) = consumer.next().await {
                let mut event: Value = serde_json::from_slice(&delivery.data).expect("event is JSON");
                schemas::check_event(&event);
                event["_routing_key"] = json!(delivery.routing_key.as_str());
                event["_amqp_correlation_id"] =
                    json!(delivery.properties.correlation_id().as_ref().map(|s| s.to_string()));
                event["_amqp_message_id"] = json!(delivery.properties.message_id().as_ref().map(|s| s.to_string()));
                event["_amqp_type"] = json!(delivery.properties.kind().as_ref().map(|s| s.to_string()));
                event["_amqp_timestamp"] = json!(delivery.properties.timestamp());
                sink.lock().unwrap().push(event);
                arrived.notify_waiters();
                let _ = delivery.acker.ack(BasicAckOptions::default()).await;
            }
        });

        listener.set_nonblocking(true).expect("nonblocking");
        let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
        let clock: Arc<dyn payrelay::domain::clock::Clock> = match &options.clock {
            Some(c) => c.clone(),
            None => Arc::new(payrelay::domain::clock::SystemClock),
        };
        let store = payrelay::store::open(config.store.url.expose(), clock.clone())
            .await
            .expect("store opens");
        let store = match &options.wrap_store {
            Some(wrap) => wrap(store),
            None => store,
        };
        let running = payrelay::app::start_with_store(config.clone(), listener, clock.clone(), store)
            .await
            .expect("service starts");
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("http client");
        TestEnv {
            id,
            dir,
            smtp,
            config,
            base_url,
            http,
            running: Some(running),
            amqp,
            channel,
            events,
            events_arrived,
            events_queue,
            clock,
            finished: false,
        }
    }

    /// Stops the service and starts a new one on the same config, store and
    /// clock, as after a restart of the process.
    pub async fn restart(&mut self) {
        if let Some(running) = self.running.take() {
            running.stop().await;
        }
        let listener = tokio::net::TcpListener::bind(self.config.http.listen)
            .await
            .expect("rebind the same port");
        let running = payrelay::app::start_with_clock(self.config.clone(), listener, self.clock.clone())
            .await
            .expect("service restarts");
        self.running = Some(running);
    }

    /// Publishes raw bodies to the invoices queue with confirms.
    pub async fn publish_raw(&self, bodies: &[Vec<u8>]) {
        for body in bodies {
            schemas::check_published_invoice(body, |b| self.config.billers.contains_key(b));
        }
        let refs: Vec<&str> = bodies
            .iter()
            .map(|b| std::str::from_utf8(b).expect("utf-8 test body"))
            .collect();
        let n = payrelay::broker::publish::publish(&self.config.broker, &refs)
            .await
            .expect("publish");
        assert_eq!(n, bodies.len());
    }

    /// Publishes one message with the AMQP `user_id` property set to
    /// `user_id` (RabbitMQ refuses any but the connection's user, guest).
    pub async fn publish_as(&self, message: &Value, user_id: Option<&str>) {
        let channel = self.amqp.create_channel().await.expect("channel");
        let mut properties = lapin::BasicProperties::default().with_delivery_mode(2);
        if let Some(user) = user_id {
            properties = properties.with_user_id(user.into());
        }
        channel
            .basic_publish(
                "".into(),
                self.config.broker.queue.as_str().into(),
                lapin::options::BasicPublishOptions::default(),
                message.to_string().as_bytes(),
                properties,
            )
            .await
            .expect("publish")
            .await
            .expect("publish sent");
        channel.close(200, "published".into()).await.expect("close");
    }

    pub async fn publish(&self, invoices: &[Value]) {
        let bodies: Vec<Vec<u8>> = invoices.iter().map(|i| i.to_string().into_bytes()).collect();
        self.publish_raw(&bodies).await;
    }

    pub fn events(&self) -> Vec<Value> {
        self.events.lock().unwrap().clone()
    }

    /// Events with a given name, in arrival order.
    pub fn events_named(&self, name: &str) -> Vec<Value> {
        self.events().into_iter().filter(|e| e["event"] == name).collect()
    }

    /// Waits until `ready(events)` holds, or panics with what arrived.
    pub async fn wait_events(&self, what: &str, ready: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            schemas::assert_no_violations();
            let notified = self.events_arrived.notified();
            let events = self.events();
            if ready(&events) {
                return events;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!("timed out waiting for {what}; events so far: {events:#?}");
            }
        }
    }

    /// Waits for `n` events named `name`.
    pub async fn wait_for(&self, name: &str, n: usize) -> Vec<Value> {
        self.wait_events(&format!("{n} {name}"), |events| {
            events.iter().filter(|e| e["event"] == name).count() >= n
        })
        .await;
        self.events_named(name)
    }

    /// Takes every message in the dead-letter queue: (reason header, body).
    pub async fn dead_letters(&self, expected: usize) -> Vec<(String, Vec<u8>)> {
        let queue = self.config.broker.dead_letter_queue();
        let mut out = Vec::new();
        let deadline = tokio::time::Instant::now() + WAIT;
        while out.len() < expected {
            match self
                .channel
                .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true })
                .await
                .expect("basic.get")
            {
                Some(message) => {
                    let reason = message
                        .delivery
                        .properties
                        .headers()
                        .as_ref()
                        .and_then(|h| h.inner().get("x-payrelay-reason").cloned())
                        .map(|v| match v {
                            AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
                            other => format!("{other:?}"),
                        })
                        .unwrap_or_default();
                    out.push((reason, message.delivery.data.clone()));
                }
                None => {
                    if tokio::time::Instant::now() > deadline {
                        panic!("expected {expected} dead letters, got {}", out.len());
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        out
    }

    pub async fn get(&self, path_or_url: &str) -> reqwest::Response {
        let url = if path_or_url.starts_with("http") {
            path_or_url.to_owned()
        } else {
            format!("{}{path_or_url}", self.base_url)
        };
        self.http.get(url).send().await.expect("http request")
    }

    /// Stops the service and deletes the test's queues and exchange.
    pub async fn finish(mut self) {
        if let Some(running) = self.running.take() {
            running.stop().await;
        }
        schemas::assert_no_violations();
        delete_broker_objects(&self.channel, &self.broker_objects()).await;
        let _ = self.amqp.close(200, "test done".into()).await;
        self.finished = true;
    }

    /// The test's queues, then its events exchange.
    fn broker_objects(&self) -> (Vec<String>, String) {
        let broker = &self.config.broker;
        (
            vec![
                broker.queue.clone(),
                broker.dead_letter_queue(),
                self.events_queue.clone(),
            ],
            broker.events_exchange.clone(),
        )
    }
}

impl Drop for TestEnv {
    /// A test that failed before `finish` still removes its queues and
    /// exchange, from a thread of its own: the test's runtime may be the
    /// one unwinding.
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let objects = self.broker_objects();
        let cleanup = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                return;
            };
            runtime.block_on(async {
                let Ok(connection) = Connection::connect(AMQP_URL, ConnectionProperties::default()).await else {
                    return;
                };
                if let Ok(channel) = connection.create_channel().await {
                    delete_broker_objects(&channel, &objects).await;
                }
                let _ = connection.close(200, "test cleanup".into()).await;
            });
        });
        let _ = cleanup.join();
    }
}

async fn delete_broker_objects(channel: &Channel, (queues, exchange): &(Vec<String>, String)) {
    for queue in queues {
        let _ = channel
            .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
    let _ = channel
        .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
        .await;
}

/// The values of `env:NAME` secrets in test configs.
pub fn test_secrets(name: &str) -> Option<String> {
    Some(format!("test-secret-{}", name.to_ascii_lowercase()))
}

/// How many messages are ready in `queue` (a passive declare).
pub async fn messages_in_queue(queue: &str) -> u32 {
    let connection = Connection::connect(AMQP_URL, ConnectionProperties::default())
        .await
        .expect("RabbitMQ");
    let channel = connection.create_channel().await.expect("channel");
    let declared = channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("queue exists");
    let _ = connection.close(200, "done".into()).await;
    declared.message_count()
}

/// A valid payment request, as a biller sends it, for `email`.
pub fn invoice(invoice_id: &str, email: &str) -> Value {
    json!({
        "kind": "payment_request",
        "invoice_id": invoice_id,
        "biller_id": "acme",
        "revision": 1,
        "source": "erp",
        "amount": "1234.50",
        "currency": "MXN",
        "due_date": "2026-12-01",
        "description": "Electricity, November 2026",
        "customer": {
            "id": "C-9981",
            "name": "María López",
            "email": email,
            "phone": "+5215512345678",
            "locale": "es-MX",
            "timezone": "America/Mexico_City"
        },
        "metadata": {"erp_doc": "4711"}
    })
}

/// The pay link in an email's plain-text part.
pub fn pay_link(text: &str, base_url: &str) -> String {
    let start = text.find(&format!("{base_url}/p/")).expect("email has a pay link");
    text[start..]
        .split(|c: char| c.is_whitespace() || c == '"' || c == '<')
        .next()
        .expect("link")
        .to_owned()
}

/// The text and HTML parts of a raw email.
pub fn parts(raw: &[u8]) -> (String, String, String) {
    let message = mail_parser::MessageParser::default()
        .parse(raw)
        .expect("parseable email");
    let subject = message.subject().unwrap_or_default().to_owned();
    let text = message.body_text(0).expect("text part").into_owned();
    let html = message.body_html(0).expect("html part").into_owned();
    (subject, text, html)
}
