//! The rate limit that instances share through Redis, measured against the
//! real Redis at 127.0.0.1:6379: two instances, each with its own limiter
//! and Redis connection as two processes would have, share one channel's
//! budget; without `[rate_limit]` each gets the full rate; and when Redis
//! does not answer, each instance paces alone and says so once.
//!
//! Every test uses its own random key prefix, so runs share one Redis.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

use payrelay::channels::email::EmailMessage;
use payrelay::channels::ratelimit::SharedLimiter;
use payrelay::channels::{BreakerPolicy, Channel, Limits, Prepared, Receipt, Registry, Request, SendError};
use payrelay::config::{Config, RateLimitConfig};
use payrelay::domain::ChannelName;
use payrelay::metrics::Metrics;
use payrelay::render::{RenderError, Templates};

const REDIS: &str = "127.0.0.1:6379";

/// A channel that only notes when each message went out.
struct Recorder {
    start: Instant,
    sent: Arc<Mutex<Vec<Duration>>>,
}

#[async_trait]
impl Channel for Recorder {
    fn name(&self) -> ChannelName {
        ChannelName::Email
    }

    fn prepare(&self, _: &Request<'_>, _: &Templates) -> Result<Prepared, RenderError> {
        unreachable!("nothing is rendered here")
    }

    async fn send(&self, _: &Prepared) -> Result<Receipt, SendError> {
        self.sent.lock().unwrap().push(self.start.elapsed());
        Ok(Receipt::default())
    }
}

fn message() -> Prepared {
    Prepared::new(ChannelName::Email, "rate@example.com", EmailMessage::default())
}

/// The email channel's limits and the `[rate_limit]` section, read the way
/// `payrelay serve` reads them.
fn config(rate: u32, burst: u32, redis_url: Option<&str>, prefix: &str) -> (Limits, Option<RateLimitConfig>) {
    let section = redis_url
        .map(|url| format!("[rate_limit]\nredis_url = \"{url}\"\nkey_prefix = \"{prefix}\"\n"))
        .unwrap_or_default();
    let text = format!(
        "[billers.acme]\ncheckout_url = \"https://pay.example/{{token}}\"\n\
         [channels.email]\ntransport = \"file\"\nrate_per_second = {rate}\nburst = {burst}\n{section}"
    );
    let config = Config::from_toml(&text, std::path::Path::new("/tmp"), &|_| None).expect("config");
    (config.channels.email.expect("email").limits, config.rate_limit)
}

fn unique_prefix() -> String {
    format!("payrelay-test-{:016x}", rand::random::<u64>())
}

/// One payrelay instance's channels: its own metrics, limiter and Redis
/// connection, recording into `sent`.
fn instance(
    limits: Limits,
    rate_limit: Option<&RateLimitConfig>,
    start: Instant,
    sent: &Arc<Mutex<Vec<Duration>>>,
) -> (Arc<Registry>, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::new());
    let mut registry = Registry::empty(BreakerPolicy::default());
    if let Some(rate_limit) = rate_limit {
        let limiter = SharedLimiter::new(rate_limit, metrics.clone()).expect("limiter");
        registry = registry.with_shared_limiter(Arc::new(limiter));
    }
    let recorder = Recorder {
        start,
        sent: sent.clone(),
    };
    registry.insert(Box::new(recorder), limits.quota());
    (Arc::new(registry), metrics)
}

/// Offers `count` messages at once to each registry and waits for all.
async fn offer(registries: &[Arc<Registry>], count: usize) {
    let mut tasks = JoinSet::new();
    for registry in registries {
        for _ in 0..count {
            let registry = registry.clone();
            tasks.spawn(async move { registry.send(&message()).await.expect("send") });
        }
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("send task");
    }
}

/// The most sends within any one-second window.
fn worst_second(sent: &[Duration]) -> usize {
    let mut first = 0;
    let mut worst = 0;
    for (last, at) in sent.iter().enumerate() {
        while *at - sent[first] >= Duration::from_secs(1) {
            first += 1;
        }
        worst = worst.max(last - first + 1);
    }
    worst
}

/// Sends per second after the initial burst.
fn measured_rate(sent: &[Duration], burst: u32) -> f64 {
    let elapsed = sent.last().expect("something was sent").as_secs_f64();
    (sent.len() - burst as usize) as f64 / elapsed
}

fn fallbacks(metrics: &Metrics) -> u64 {
    let text = metrics.render();
    text.lines()
        .find_map(|line| line.strip_prefix("payrelay_rate_limit_fallback_total{channel=\"email\"} "))
        .map_or(0, |n| n.trim().parse().expect("a count"))
}

async fn redis() -> redis::aio::MultiplexedConnection {
    redis::Client::open(format!("redis://{REDIS}"))
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("Redis answers on 127.0.0.1:6379")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_one_channel_budget_and_the_key_vanishes_when_idle() {
    const RATE: u32 = 40;
    const BURST: u32 = 8;
    const SECONDS: u32 = 5;
    let prefix = unique_prefix();
    let (limits, rate_limit) = config(RATE, BURST, Some(&format!("redis://{REDIS}")), &prefix);
    let rate_limit = rate_limit.expect("[rate_limit] read");
    let start = Instant::now();
    let sent = Arc::new(Mutex::new(Vec::new()));
    let (a, a_metrics) = instance(limits, Some(&rate_limit), start, &sent);
    let (b, b_metrics) = instance(limits, Some(&rate_limit), start, &sent);

    // Each instance alone could send all of its half in half the time.
    let total = BURST + RATE * SECONDS;
    offer(&[a, b], (total / 2) as usize).await;

    let mut sent = sent.lock().unwrap().clone();
    sent.sort();
    assert_eq!(sent.len(), total as usize);
    let rate = measured_rate(&sent, BURST);
    let worst = worst_second(&sent);
    eprintln!(
        "two instances sharing {RATE}/s burst {BURST}: {rate:.2}/s combined over {:.2}s, worst 1 s window {worst}",
        sent.last().unwrap().as_secs_f64()
    );
    assert!(
        (rate - RATE as f64).abs() <= RATE as f64 * 0.05,
        "combined {rate:.2}/s, configured {RATE}/s"
    );
    assert!(worst <= (RATE + BURST) as usize, "{worst} sends within one second");
    assert!(
        sent[BURST as usize - 1] < Duration::from_millis(500),
        "the burst goes at once"
    );
    assert_eq!(
        (fallbacks(&a_metrics), fallbacks(&b_metrics)),
        (0, 0),
        "Redis answered every time"
    );

    // The key expires once its arrival time has passed.
    let key = format!("{prefix}:ratelimit:email");
    let mut redis = redis().await;
    let ttl: i64 = redis::cmd("PTTL").arg(&key).query_async(&mut redis).await.unwrap();
    assert!(
        ttl == -2 || (0..=(BURST as i64 * 1000 / RATE as i64)).contains(&ttl),
        "pttl {ttl}"
    );
    tokio::time::sleep(Duration::from_millis(BURST as u64 * 1000 / RATE as u64 + 50)).await;
    let exists: i64 = redis::cmd("EXISTS").arg(&key).query_async(&mut redis).await.unwrap();
    assert_eq!(exists, 0, "an idle channel leaves no key behind");
}

/// Without `[rate_limit]` (as before it existed) each instance has the
/// channel's whole rate to itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_rate_limit_section_each_instance_sends_the_full_rate() {
    const RATE: u32 = 40;
    const BURST: u32 = 8;
    let (limits, rate_limit) = config(RATE, BURST, None, "unused");
    assert!(rate_limit.is_none());
    let start = Instant::now();
    let sent = Arc::new(Mutex::new(Vec::new()));
    let (a, _) = instance(limits, None, start, &sent);
    let (b, _) = instance(limits, None, start, &sent);

    offer(&[a, b], (BURST + RATE * 2) as usize).await;

    let mut sent = sent.lock().unwrap().clone();
    sent.sort();
    let rate = measured_rate(&sent, 2 * BURST);
    eprintln!("two instances without [rate_limit], {RATE}/s each: {rate:.2}/s combined");
    let twice = 2.0 * RATE as f64;
    assert!((rate - twice).abs() <= twice * 0.1, "combined {rate:.2}/s");
}

/// Log lines written while a test runs on this thread.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// A closed port: every send still goes, paced by the instance's governor,
/// each is counted, and one warning (without the URL) says why.
#[tokio::test]
async fn when_redis_does_not_answer_each_instance_paces_alone_and_counts_it() {
    const RATE: u32 = 20;
    const BURST: u32 = 4;
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    let _logging = tracing::subscriber::set_default(subscriber);

    let (limits, rate_limit) = config(RATE, BURST, Some("redis://:hunter2@127.0.0.1:1"), &unique_prefix());
    let rate_limit = rate_limit.expect("[rate_limit] read");
    let start = Instant::now();
    let sent = Arc::new(Mutex::new(Vec::new()));
    let (registry, metrics) = instance(limits, Some(&rate_limit), start, &sent);

    let total = BURST + RATE * 3 / 2;
    offer(&[registry], total as usize).await;

    let mut sent = sent.lock().unwrap().clone();
    sent.sort();
    assert_eq!(sent.len(), total as usize, "every message went out");
    let rate = measured_rate(&sent, BURST);
    eprintln!("Redis unreachable, {RATE}/s locally: {rate:.2}/s");
    assert!(
        (rate - RATE as f64).abs() <= RATE as f64 * 0.1,
        "{rate:.2}/s, local limit {RATE}/s"
    );
    assert_eq!(fallbacks(&metrics), total as u64, "each send paced locally is counted");
    let logs = logs.text();
    assert_eq!(logs.matches(" WARN ").count(), 1, "one warning per outage:\n{logs}");
    assert!(logs.contains("paces its channels alone"), "{logs}");
    assert!(!logs.contains("hunter2") && !logs.contains("redis://"), "{logs}");
}

/// A TCP relay to Redis that can be switched off (its port refuses
/// connections and open ones drop) and on again on the same port.
struct Relay {
    port: u16,
    task: Option<JoinHandle<()>>,
}

impl Relay {
    async fn start() -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        Relay {
            port,
            task: Some(tokio::spawn(relay(listener))),
        }
    }

    async fn down(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }

    fn up(&mut self) {
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_reuseaddr(true).unwrap();
        socket.bind(([127, 0, 0, 1], self.port).into()).unwrap();
        self.task = Some(tokio::spawn(relay(socket.listen(64).unwrap())));
    }
}

async fn relay(listener: TcpListener) {
    // Dropped with the task, which ends every relayed connection.
    let mut connections = JoinSet::new();
    while let Ok((mut client, _)) = listener.accept().await {
        connections.spawn(async move {
            if let Ok(mut server) = TcpStream::connect(REDIS).await {
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            }
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_an_outage_the_instances_share_the_budget_again() {
    let mut relay = Relay::start().await;
    let prefix = unique_prefix();
    let (limits, rate_limit) = config(50, 1, Some(&format!("redis://127.0.0.1:{}", relay.port)), &prefix);
    let rate_limit = rate_limit.expect("[rate_limit] read");
    let sent = Arc::new(Mutex::new(Vec::new()));
    let (registry, metrics) = instance(limits, Some(&rate_limit), Instant::now(), &sent);
    let key = format!("{prefix}:ratelimit:email");
    let mut redis = redis().await;

    for _ in 0..3 {
        registry.send(&message()).await.unwrap();
    }
    assert_eq!(fallbacks(&metrics), 0);
    let exists: i64 = redis::cmd("EXISTS").arg(&key).query_async(&mut redis).await.unwrap();
    assert_eq!(exists, 1, "the shared limit is in Redis");

    relay.down().await;
    for _ in 0..5 {
        registry
            .send(&message())
            .await
            .expect("sends go on while Redis is away");
    }
    assert_eq!(fallbacks(&metrics), 5);

    relay.up();
    let back = Instant::now();
    let mut last = fallbacks(&metrics);
    loop {
        assert!(
            back.elapsed() < Duration::from_secs(5),
            "still pacing alone 5 s after Redis came back"
        );
        redis::cmd("DEL").arg(&key).exec_async(&mut redis).await.unwrap();
        registry.send(&message()).await.unwrap();
        let now = fallbacks(&metrics);
        if now == last {
            break;
        }
        last = now;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let exists: i64 = redis::cmd("EXISTS").arg(&key).query_async(&mut redis).await.unwrap();
    assert_eq!(exists, 1, "the send went through Redis again");
    eprintln!("shared limit back {:?} after Redis", back.elapsed());
    relay.down().await;
}
