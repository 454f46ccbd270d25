//! payrelay's throughput, latency and memory benchmark (issue 5).
//!
//! ```sh
//! cargo run --release --example bench -- --invoices 100000
//! ```
//!
//! One run, one broker, four phases (see bench/README.md):
//!
//! 1. `ceiling`: a bare lapin client doing payrelay's AMQP work and nothing
//!    else: consume N persistent invoice-sized messages from a quorum queue
//!    with manual acks (prefetch as configured) and publish, with confirms,
//!    the two events payrelay publishes per sent invoice (`invoice.accepted`,
//!    `invoice.sent`) to a topic exchange with a bound quorum queue.
//! 2. `file`: the release `payrelay serve` as a child process on the same
//!    backlog, email `transport = "file"`, rate limits lifted.
//! 3. `http`: the same with SMS through Twilio pointed at a local mock
//!    provider in this process (201 with a sid).
//! 4. `latency`: invoices published at a paced rate while payrelay consumes;
//!    p50/p99 from publish to provider accept (the `invoice.sent` event's `at`).
//!
//! Every phase uses fresh, uniquely named queues and exchanges, deleted at
//! the end. The events of every phase (the ceiling's too) are read by the
//! same observer, so the broker and the CPUs carry the same extra load.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use clap::Parser;
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind, PublisherConfirm};
use serde::Deserialize;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;

use payrelay::config::Config;
use payrelay::domain::ChannelName;
use payrelay::domain::InvoiceKey;
use payrelay::events::{Correlation, Event, EventName};

/// The events payrelay publishes per successfully sent invoice
/// (src/dispatch: `begin` stores `invoice.accepted`, `finish_attempt` stores
/// `invoice.sent`; `finish_invoice` adds none on success).
const EVENTS_PER_INVOICE: [EventName; 2] = [EventName::Accepted, EventName::Sent];

/// Target size of one invoice body, as in the issue ("about 600 bytes").
const INVOICE_BYTES: usize = 600;

#[derive(Parser, Debug)]
#[command(
    name = "bench",
    about = "payrelay end to end against the broker's ceiling for the same AMQP work",
    after_help = "Phases: ceiling, file, http, latency (all by default). See bench/README.md."
)]
struct Args {
    /// Backlog size for the ceiling, file and http phases.
    #[arg(long, default_value_t = 20_000)]
    invoices: usize,
    /// Which phases to run, comma-separated: ceiling,file,http,latency.
    #[arg(long, value_delimiter = ',', default_value = "ceiling,file,http,latency")]
    phases: Vec<Phase>,
    /// Paced publish rate for the latency phase, invoices/s [default: half
    /// the file phase's throughput, at most --rate-cap].
    #[arg(long)]
    rate: Option<f64>,
    /// Upper bound of the default latency-phase rate (half of the 5,000/s target).
    #[arg(long, default_value_t = 2_500.0)]
    rate_cap: f64,
    /// How long the latency phase publishes, in seconds.
    #[arg(long, default_value_t = 20)]
    latency_secs: u64,
    /// Invoices published in the latency phase's first this many seconds
    /// are left out of its p50/p99 (the service's start-up: first
    /// connections, threads, caches); the note gives the p99 with them.
    #[arg(long, default_value_t = 2)]
    warmup_secs: u64,
    /// Which transport the latency phase uses.
    #[arg(long, default_value = "file")]
    latency_transport: Transport,
    /// Prefetch for payrelay's consumer and the ceiling's consumer.
    #[arg(long, default_value_t = 256)]
    prefetch: u16,
    /// Publisher confirms in flight (backlog publisher and ceiling events).
    #[arg(long, default_value_t = 1_000)]
    window: usize,
    /// The broker.
    #[arg(
        long,
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f",
        env = "BENCH_AMQP_URL"
    )]
    amqp_url: String,
    /// A payrelay binary to run instead of building target/release/payrelay.
    #[arg(long)]
    payrelay_bin: Option<PathBuf>,
    /// PAYRELAY_LOG for the service (its own default is "info").
    #[arg(long, default_value = "info")]
    payrelay_log: String,
    /// Give up on a phase when no invoice completes for this many seconds.
    #[arg(long, default_value_t = 60)]
    stall_secs: u64,
    /// Keep the temporary folder (configs, SQLite files, outboxes, logs).
    #[arg(long)]
    keep_temp: bool,
    /// Also write the report (markdown) to this file.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Where the `file` transports write (one file per invoice). Default:
    /// /dev/shm when it exists, so what is measured is payrelay and not the
    /// disk filesystem's inode allocator (which, after a few runs that
    /// created and deleted hundreds of thousands of files, spent a third of
    /// the service's CPU in `open`). The SQLite store stays on disk in the
    /// temporary folder either way.
    #[arg(long)]
    outbox_root: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Phase {
    Ceiling,
    File,
    Http,
    Latency,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Transport {
    File,
    Http,
}

impl Transport {
    fn describe(self) -> &'static str {
        match self {
            Transport::File => "email transport = \"file\"",
            Transport::Http => "sms provider = \"twilio\" -> local mock",
        }
    }
}

/// Names unique to this run, so runs never share a queue.
struct Names {
    run: String,
}

impl Names {
    fn prefix(&self, phase: &str) -> String {
        format!("bench.{}.{phase}", self.run)
    }
}

/// What to delete at the end, whatever happened.
#[derive(Default)]
struct Cleanup {
    queues: Vec<String>,
    exchanges: Vec<String>,
}

/// One row of the report.
#[derive(Debug, Default, Clone)]
struct Row {
    phase: String,
    invoices: usize,
    /// Invoices per second by the issue's definition for the phase.
    rate: f64,
    /// A backlog row of payrelay, compared with the ceiling.
    compare: bool,
    /// Extra rate figures, e.g. "from first event".
    note: String,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    seen_p50_ms: Option<f64>,
    seen_p99_ms: Option<f64>,
    peak_rss_mb: Option<f64>,
    cpu: Option<f64>,
    /// CPU time per invoice: payrelay's, and the broker's over the same
    /// span (every `beam.smp` on the machine), in microseconds.
    cpu_us: Option<f64>,
    broker_cpu_us: Option<f64>,
    load_before: String,
    load_after: String,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    if args.invoices == 0 {
        bail!("--invoices must be at least 1");
    }
    if cfg!(debug_assertions) {
        eprintln!("warning: the bench itself is a debug build; run it with `cargo run --release --example bench`");
    }
    let started = Instant::now();
    let names = Names {
        run: format!("{}-{}", std::process::id(), unix_ns() % 1_000_000_000),
    };
    let needs_service = args.phases.iter().any(|p| *p != Phase::Ceiling);
    let bin = if needs_service {
        Some(payrelay_binary(&args)?)
    } else {
        None
    };
    let temp = tempfile::Builder::new()
        .prefix("payrelay-bench-")
        .tempdir()
        .context("cannot create a temporary folder")?;

    let outbox_root = args.outbox_root.clone().or_else(|| {
        let shm = PathBuf::from("/dev/shm");
        shm.is_dir().then_some(shm)
    });
    let outboxes = match &outbox_root {
        Some(root) => Some(
            tempfile::Builder::new()
                .prefix("payrelay-bench-outbox-")
                .tempdir_in(root)
                .with_context(|| format!("cannot create a folder in {}", root.display()))?,
        ),
        None => None,
    };
    let outbox_dir = outboxes.as_ref().map_or(temp.path(), |d| d.path());

    let cleanup = Arc::new(Mutex::new(Cleanup::default()));
    let mut rows = Vec::new();
    let dirs = Dirs {
        temp: temp.path(),
        outboxes: outbox_dir,
    };
    let result = run_phases(&args, &names, bin.as_deref(), &dirs, &cleanup, &mut rows).await;
    let cleaned = clean_up(&args.amqp_url, &cleanup).await;
    if args.keep_temp {
        let kept = temp.keep();
        eprintln!("kept {}", kept.display());
        if let Some(outboxes) = outboxes {
            eprintln!("kept {}", outboxes.keep().display());
        }
    }
    if let Err(e) = cleaned {
        eprintln!("warning: cleanup incomplete: {e:#}");
    }
    // The phases that finished are reported even when a later one failed.
    if !rows.is_empty() {
        let report = report(&args, &rows, started.elapsed()).await;
        println!("\n{report}");
        if let Some(path) = &args.report {
            std::fs::write(path, &report).with_context(|| format!("cannot write {}", path.display()))?;
        }
    }
    result
}

/// Where a run keeps its files.
struct Dirs<'a> {
    /// Configs, SQLite files and logs, on disk.
    temp: &'a Path,
    /// The `file` transports' outboxes (see `--outbox-root`).
    outboxes: &'a Path,
}

async fn run_phases(
    args: &Args,
    names: &Names,
    bin: Option<&Path>,
    dirs: &Dirs<'_>,
    cleanup: &Arc<Mutex<Cleanup>>,
    rows: &mut Vec<Row>,
) -> Result<()> {
    let mut file_rate = None;
    if args.phases.contains(&Phase::Ceiling) {
        eprintln!("== ceiling: bare lapin, {} invoices", args.invoices);
        rows.extend(ceiling(args, names, cleanup, None).await.context("ceiling phase")?);
    }
    let bin = || bin.ok_or_else(|| anyhow!("no payrelay binary was built"));
    for (phase, transport) in [(Phase::File, Transport::File), (Phase::Http, Transport::Http)] {
        if args.phases.contains(&phase) {
            eprintln!(
                "== payrelay, {}: {} invoices backlog",
                transport.describe(),
                args.invoices
            );
            let row = service_phase(args, names, bin()?, dirs, cleanup, transport, None)
                .await
                .with_context(|| format!("{phase:?} phase"))?;
            if phase == Phase::File {
                file_rate = Some(row.rate);
            }
            rows.push(row);
        }
    }
    if args.phases.contains(&Phase::Latency) {
        let rate = match (args.rate, file_rate) {
            (Some(r), _) => r,
            (None, Some(f)) => (f / 2.0).min(args.rate_cap),
            (None, None) => args.rate_cap,
        };
        if !(rate.is_finite() && rate > 0.0) {
            bail!("the latency phase needs a rate above 0 (got {rate})");
        }
        eprintln!(
            "== latency: bare lapin (the ceiling's client), paced at {rate:.0} invoices/s for {} s",
            args.latency_secs
        );
        rows.extend(
            ceiling(args, names, cleanup, Some(rate))
                .await
                .context("latency phase, bare client")?,
        );
        eprintln!(
            "== latency: payrelay, {}, paced at {rate:.0} invoices/s for {} s",
            args.latency_transport.describe(),
            args.latency_secs
        );
        let row = service_phase(args, names, bin()?, dirs, cleanup, args.latency_transport, Some(rate))
            .await
            .context("latency phase")?;
        rows.push(row);
    }
    Ok(())
}

// ---------------------------------------------------------------- builds

/// The release payrelay binary: `--payrelay-bin`, or built now with cargo
/// next to this example (`cargo run --example` builds only the example).
fn payrelay_binary(args: &Args) -> Result<PathBuf> {
    if let Some(bin) = &args.payrelay_bin {
        if !bin.is_file() {
            bail!("--payrelay-bin {} is not a file", bin.display());
        }
        return Ok(bin.clone());
    }
    let manifest_dir = env!("CARGO_MANIFEST_DIR");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("building payrelay (cargo build --release --bin payrelay)...");
    let mut command = std::process::Command::new(&cargo);
    command
        .args(["build", "--release", "--bin", "payrelay"])
        .current_dir(manifest_dir);
    // `cargo run` gives this process the package's CARGO_PKG_*/CARGO_MANIFEST_*
    // variables; build scripts that watch them (ring's) would then rebuild
    // here, and again in every plain `cargo build` after.
    for (name, _) in std::env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        let set_by_cargo_run = name.starts_with("CARGO_PKG_")
            || name.starts_with("CARGO_MANIFEST_")
            || matches!(
                name,
                "CARGO_CRATE_NAME" | "CARGO_BIN_NAME" | "CARGO_PRIMARY_PACKAGE" | "CARGO_TARGET_TMPDIR" | "OUT_DIR"
            );
        if set_by_cargo_run {
            command.env_remove(name);
        }
    }
    let status = command.status().with_context(|| format!("cannot run {cargo}"))?;
    if !status.success() {
        bail!("`cargo build --release --bin payrelay` failed ({status}); fix the build or pass --payrelay-bin");
    }
    // <target>/<profile>/examples/bench -> <target>/release/payrelay.
    let exe = std::env::current_exe().context("cannot locate the bench executable")?;
    let target = exe
        .parent()
        .and_then(Path::parent)
        .and_then(Path::parent)
        .ok_or_else(|| anyhow!("cannot find the target folder from {}", exe.display()))?;
    let bin = target.join("release").join("payrelay");
    if bin.is_file() {
        return Ok(bin);
    }
    let fallback = Path::new(manifest_dir).join("target/release/payrelay");
    if fallback.is_file() {
        return Ok(fallback);
    }
    bail!(
        "built payrelay but found no binary at {}; pass --payrelay-bin",
        bin.display()
    )
}

// ---------------------------------------------------------------- bodies

fn unix_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// One invoice of about [`INVOICE_BYTES`], valid for payrelay, carrying its
/// publish time and sequence number in `metadata` (events echo metadata).
fn invoice_body(run: &str, seq: usize) -> Vec<u8> {
    let mut body = format!(
        r#"{{"kind":"payment_request","invoice_id":"BENCH-{run}-{seq:07}","biller_id":"acme","revision":1,"source":"erp","amount":"1234.50","currency":"MXN","due_date":"2026-12-01","customer":{{"id":"C-{seq:07}","name":"María López","email":"customer{seq:07}@example.com","phone":"+5215512345678","locale":"es-MX","timezone":"America/Mexico_City"}},"metadata":{{"bench_t":{},"seq":{seq}}},"description":"Electricity, November 2026"#,
        unix_ns()
    );
    // Pad the description so every body is the same size.
    while body.len() + 2 < INVOICE_BYTES {
        body.push('.');
    }
    body.push_str("\"}");
    body.into_bytes()
}

fn invoice_properties(seq: usize) -> BasicProperties {
    BasicProperties::default()
        .with_content_type(ShortString::from("application/json"))
        .with_delivery_mode(2)
        .with_message_id(ShortString::from(format!("bench-{seq}")))
}

/// An event body as payrelay serializes it (same type, same size), stamped
/// with the invoice's publish time as payrelay copies the invoice's metadata.
fn event_body(name: EventName, seq: usize, bench_t: i64) -> Vec<u8> {
    let key = InvoiceKey {
        biller_id: "acme".into(),
        invoice_id: format!("BENCH-ceiling-{seq:07}"),
        revision: 1,
    };
    let correlation = Correlation {
        correlation_id: None,
        message_id: Some(format!("bench-{seq}")),
    };
    let mut event =
        Event::about(name, &key, &correlation).metadata(Some(serde_json::json!({"bench_t": bench_t, "seq": seq})));
    event = match name {
        EventName::Accepted => event.detail("routed by default: email (fallback)"),
        _ => event
            .channel(ChannelName::Email, 1)
            .provider_message_id(Some(format!("<{seq}.bench@acme.example>"))),
    };
    serde_json::to_vec(&event).unwrap_or_default()
}

// ---------------------------------------------------------------- broker

async fn connect(url: &str, name: &str) -> Result<Connection> {
    let properties = ConnectionProperties::default().with_connection_name(LongString::from(name));
    tokio::time::timeout(Duration::from_secs(30), Connection::connect(url, properties))
        .await
        .map_err(|_| anyhow!("RabbitMQ did not answer within 30 s"))?
        .with_context(|| format!("cannot connect to RabbitMQ ({}); is it running?", without_password(url)))
}

fn without_password(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_password(None);
            u.to_string()
        }
        Err(_) => "the broker URL".into(),
    }
}

fn quorum() -> FieldTable {
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), AMQPValue::LongString(LongString::from("quorum")));
    args
}

fn durable_queue() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    }
}

/// A durable topic exchange and a quorum queue bound to it with `#`, the
/// way a biller would listen to payrelay's events.
async fn declare_events(channel: &Channel, exchange: &str, queue: &str, cleanup: &Mutex<Cleanup>) -> Result<()> {
    channel
        .exchange_declare(
            exchange.into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .with_context(|| format!("cannot declare exchange {exchange}"))?;
    lock(cleanup).exchanges.push(exchange.to_owned());
    channel
        .queue_declare(queue.into(), durable_queue(), quorum())
        .await
        .with_context(|| format!("cannot declare queue {queue}"))?;
    lock(cleanup).queues.push(queue.to_owned());
    channel
        .queue_bind(
            queue.into(),
            exchange.into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .with_context(|| format!("cannot bind {queue} to {exchange}"))?;
    Ok(())
}

fn lock(cleanup: &Mutex<Cleanup>) -> std::sync::MutexGuard<'_, Cleanup> {
    cleanup.lock().unwrap_or_else(|p| p.into_inner())
}

/// A publisher with confirms: at most `window` unconfirmed messages; a
/// task awaits the confirms in order and fails on any nack or return.
struct Publisher {
    channel: Channel,
    confirms: mpsc::Sender<PublisherConfirm>,
    drained: JoinHandle<Result<u64>>,
}

impl Publisher {
    async fn new(connection: &Connection, window: usize) -> Result<Publisher> {
        let channel = connection.create_channel().await?;
        channel.confirm_select(ConfirmSelectOptions::default()).await?;
        let (confirms, mut rx) = mpsc::channel::<PublisherConfirm>(window.max(1));
        let drained = tokio::spawn(async move {
            let mut n = 0u64;
            while let Some(confirm) = rx.recv().await {
                match confirm.await? {
                    Confirmation::Ack(None) => n += 1,
                    Confirmation::Ack(Some(_)) => bail!("a message was returned as unroutable after {n} confirms"),
                    other => bail!("the broker did not confirm a message after {n} confirms: {other:?}"),
                }
            }
            Ok(n)
        });
        Ok(Publisher {
            channel,
            confirms,
            drained,
        })
    }

    /// Sends one message; its confirm is awaited by the drain task. An
    /// error here means the drain task stopped: [`Publisher::finish`] says why.
    async fn publish(&self, exchange: &str, routing_key: &str, body: &[u8], properties: BasicProperties) -> Result<()> {
        let confirm = self
            .channel
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                body,
                properties,
            )
            .await?;
        self.confirms
            .send(confirm)
            .await
            .map_err(|_| anyhow!("the confirm task stopped"))
    }

    /// Waits for every confirm; returns how many there were.
    async fn finish(self) -> Result<u64> {
        drop(self.confirms);
        let n = self.drained.await.context("the confirm task panicked")??;
        let _ = self.channel.close(200, "bench publisher done".into()).await;
        Ok(n)
    }
}

/// Publishes invoices `0..n` to `queue`, all at once (`rate` None, within the
/// confirm window) or paced at `rate` per second; each is stamped as it goes.
async fn publish_invoices(
    connection: &Connection,
    window: usize,
    run: &str,
    queue: &str,
    n: usize,
    rate: Option<f64>,
) -> Result<Duration> {
    let publisher = Publisher::new(connection, window).await?;
    let started = Instant::now();
    let mut seq = 0;
    let mut failed = None;
    'outer: while seq < n {
        let due = match rate {
            None => n,
            Some(rate) => ((started.elapsed().as_secs_f64() * rate) as usize + 1).min(n),
        };
        while seq < due {
            if let Err(e) = publisher
                .publish("", queue, &invoice_body(run, seq), invoice_properties(seq))
                .await
            {
                failed = Some(e);
                break 'outer;
            }
            seq += 1;
        }
        if seq < n {
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
    }
    let confirmed = publisher.finish().await;
    if let Some(e) = failed {
        // The confirm task's error is the cause; the send error only follows from it.
        return Err(confirmed.err().unwrap_or(e));
    }
    let confirmed = confirmed?;
    if confirmed != n as u64 {
        bail!("only {confirmed} of {n} invoices were confirmed");
    }
    Ok(started.elapsed())
}

async fn clean_up(url: &str, cleanup: &Mutex<Cleanup>) -> Result<()> {
    let (queues, exchanges) = {
        let mut c = lock(cleanup);
        (std::mem::take(&mut c.queues), std::mem::take(&mut c.exchanges))
    };
    if queues.is_empty() && exchanges.is_empty() {
        return Ok(());
    }
    let mut connection = connect(url, "payrelay-bench cleanup").await?;
    let mut problems = Vec::new();
    let objects = queues
        .iter()
        .map(|q| (true, q))
        .chain(exchanges.iter().map(|e| (false, e)));
    for (is_queue, name) in objects {
        // One channel per deletion: an error closes the channel it happened
        // on. The broker has also been seen closing the whole connection;
        // then the deletion is tried once more on a new one.
        let mut outcome = delete(&connection, is_queue, name).await;
        if outcome.is_err() && !connection.status().connected() {
            connection = connect(url, "payrelay-bench cleanup").await?;
            outcome = delete(&connection, is_queue, name).await;
        }
        if let Err(e) = outcome {
            let kind = if is_queue { "queue" } else { "exchange" };
            problems.push(format!("{kind} {name}: {e}"));
        }
    }
    let _ = connection.close(200, "bench cleanup done".into()).await;
    if problems.is_empty() {
        Ok(())
    } else {
        bail!("{}", problems.join("; "))
    }
}

/// Deletes one queue or exchange on a channel of its own.
async fn delete(connection: &Connection, is_queue: bool, name: &str) -> Result<(), lapin::Error> {
    let channel = connection.create_channel().await?;
    let deleted = if is_queue {
        channel
            .queue_delete(name.into(), QueueDeleteOptions::default())
            .await
            .map(|_| ())
    } else {
        channel
            .exchange_delete(name.into(), ExchangeDeleteOptions::default())
            .await
    };
    let _ = channel.close(200, "".into()).await;
    deleted
}

// ---------------------------------------------------------------- observer

/// What the observer saw on the events queue.
#[derive(Default)]
struct Observed {
    /// Distinct invoices with an `invoice.sent` (by `metadata.seq`).
    sent: usize,
    sent_seen: Vec<bool>,
    duplicates: usize,
    events: BTreeMap<String, usize>,
    first_problem: Option<String>,
    first_sent: Option<Instant>,
    last_sent: Option<Instant>,
    /// Publish -> `at` of `invoice.sent` (provider accepted), microseconds.
    to_accept_us: Vec<i64>,
    /// Publish -> the `invoice.sent` event arriving here, microseconds.
    to_seen_us: Vec<i64>,
    /// Invoices with a `seq` below this are the warm-up: their publish ->
    /// accept times go to `warmup_accept_us` instead.
    warmup: usize,
    warmup_accept_us: Vec<i64>,
    unparsable: usize,
}

#[derive(Deserialize)]
struct SeenEvent {
    event: String,
    at: Option<String>,
    detail: Option<String>,
    metadata: Option<SeenMetadata>,
}

#[derive(Deserialize)]
struct SeenMetadata {
    bench_t: Option<i64>,
    seq: Option<usize>,
}

struct Observer {
    state: Arc<Mutex<Observed>>,
    connection: Connection,
    task: JoinHandle<()>,
}

impl Observer {
    async fn start(url: &str, queue: &str, expected: usize) -> Result<Observer> {
        let connection = connect(url, "payrelay-bench observer").await?;
        let channel = connection.create_channel().await?;
        let mut consumer = channel
            .basic_consume(
                queue.into(),
                "bench-observer".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..BasicConsumeOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .with_context(|| format!("cannot consume {queue}"))?;
        let state = Arc::new(Mutex::new(Observed {
            sent_seen: vec![false; expected],
            ..Observed::default()
        }));
        let shared = state.clone();
        let task = tokio::spawn(async move {
            while let Some(Ok(delivery)) = consumer.next().await {
                let now = Instant::now();
                let now_ns = unix_ns();
                let parsed = serde_json::from_slice::<SeenEvent>(&delivery.data);
                let mut s = shared.lock().unwrap_or_else(|p| p.into_inner());
                let Ok(event) = parsed else {
                    s.unparsable += 1;
                    continue;
                };
                *s.events.entry(event.event.clone()).or_default() += 1;
                if event.event != "invoice.sent" {
                    if event.event != "invoice.accepted" && s.first_problem.is_none() {
                        s.first_problem = Some(format!("{}: {}", event.event, event.detail.unwrap_or_default()));
                    }
                    continue;
                }
                let Some(meta) = event.metadata else { continue };
                if let Some(seq) = meta.seq.filter(|seq| *seq < s.sent_seen.len()) {
                    if std::mem::replace(&mut s.sent_seen[seq], true) {
                        s.duplicates += 1;
                        continue;
                    }
                }
                s.sent += 1;
                s.first_sent.get_or_insert(now);
                s.last_sent = Some(now);
                if let Some(published) = meta.bench_t {
                    let accept_us = event
                        .at
                        .as_deref()
                        .and_then(parse_rfc3339_ns)
                        .map(|at| (at - published) / 1_000);
                    if meta.seq.is_some_and(|seq| seq < s.warmup) {
                        s.warmup_accept_us.extend(accept_us);
                    } else {
                        s.to_seen_us.push((now_ns - published) / 1_000);
                        s.to_accept_us.extend(accept_us);
                    }
                }
            }
        });
        Ok(Observer {
            state,
            connection,
            task,
        })
    }

    fn with<T>(&self, f: impl FnOnce(&mut Observed) -> T) -> T {
        lock_observed(&self.state, f)
    }

    /// Stops consuming; what was seen stays readable through the result.
    async fn stop(self) -> Arc<Mutex<Observed>> {
        let _ = self.connection.close(200, "bench observer done".into()).await;
        self.task.abort();
        let _ = self.task.await;
        self.state
    }
}

fn lock_observed<T>(state: &Mutex<Observed>, f: impl FnOnce(&mut Observed) -> T) -> T {
    f(&mut state.lock().unwrap_or_else(|p| p.into_inner()))
}

fn parse_rfc3339_ns(text: &str) -> Option<i64> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp_nanos() as i64)
}

fn percentile_ms(values: &mut [i64], p: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    let rank = ((p / 100.0) * values.len() as f64).ceil() as usize;
    Some(values[rank.clamp(1, values.len()) - 1] as f64 / 1_000.0)
}

// ---------------------------------------------------------------- phase 1

/// The broker doing payrelay's AMQP work for a bare lapin client.
///
/// Backlog (`paced` None), phase 1: N invoices published first, then
/// consumed as fast as the broker gives them; the rate is the ceiling.
/// Paced, phase 4a: invoices published at `rate` while the client consumes,
/// as a reference for payrelay's latency at that rate. Its publish->accept is
/// publish -> delivery to this client (the `at` of the `invoice.sent` it
/// publishes) and publish->event seen is the same path as payrelay's: what
/// the broker's own queueing, commits and scheduling cost at that rate.
async fn ceiling(args: &Args, names: &Names, cleanup: &Arc<Mutex<Cleanup>>, paced: Option<f64>) -> Result<Vec<Row>> {
    let label = if paced.is_some() { "ceiling-paced" } else { "ceiling" };
    let n = match paced {
        None => args.invoices,
        Some(rate) => ((rate * args.latency_secs as f64) as usize).max(1),
    };
    let prefix = names.prefix(label);
    let queue = format!("{prefix}.invoices");
    let exchange = format!("{prefix}.events");
    let events_queue = format!("{prefix}.events.observer");
    let connection = connect(&args.amqp_url, "payrelay-bench ceiling").await?;
    let setup = connection.create_channel().await?;
    setup
        .queue_declare(queue.as_str().into(), durable_queue(), quorum())
        .await
        .with_context(|| format!("cannot declare queue {queue}"))?;
    lock(cleanup).queues.push(queue.clone());
    declare_events(&setup, &exchange, &events_queue, cleanup).await?;

    let load_before = loadavg();
    let mut publish_rate = None;
    if paced.is_none() {
        let took = publish_invoices(&connection, args.window, label, &queue, n, None).await?;
        let rate = n as f64 / took.as_secs_f64();
        eprintln!("   published {n} in {:.2} s ({rate:.0}/s)", took.as_secs_f64());
        publish_rate = Some(rate);
    }

    let observer = Observer::start(&args.amqp_url, &events_queue, n).await?;
    let warmup = paced.map_or(0, |rate| ((rate * args.warmup_secs as f64) as usize).min(n / 2));
    observer.with(|s| s.warmup = warmup);
    let consume = connection.create_channel().await?;
    consume.basic_qos(args.prefetch, BasicQosOptions::default()).await?;
    let events = Arc::new(connection.create_channel().await?);
    events.confirm_select(ConfirmSelectOptions::default()).await?;
    // Backlog: the same bodies for every invoice, built once, so the
    // client spends nothing but AMQP work. Paced: built per invoice from
    // its publish stamp, which the latency figures need.
    let prebuilt: Arc<Vec<(EventName, Vec<u8>)>> = Arc::new(
        EVENTS_PER_INVOICE
            .iter()
            .map(|name| (*name, event_body(*name, 0, unix_ns())))
            .collect(),
    );
    let window = Arc::new(Semaphore::new(args.window.max(EVENTS_PER_INVOICE.len())));
    let exchange = Arc::new(exchange);

    let started = Instant::now();
    let broker_before = broker_cpu_secs();
    let mut consumer = consume
        .basic_consume(
            queue.as_str().into(),
            "bench-ceiling".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let mut publishing = paced.map(|rate| {
        let (url, queue, window) = (args.amqp_url.clone(), queue.clone(), args.window);
        tokio::spawn(async move {
            let connection = connect(&url, "payrelay-bench paced publisher").await?;
            let took = publish_invoices(&connection, window, "ceiling-paced", &queue, n, Some(rate)).await;
            let _ = connection.close(200, "bench paced publisher done".into()).await;
            took
        })
    });
    let mut tasks = tokio::task::JoinSet::new();
    let mut consumed = 0;
    while consumed < n {
        let delivery = match tokio::time::timeout(Duration::from_secs(args.stall_secs), consumer.next()).await {
            Ok(Some(Ok(d))) => d,
            Ok(Some(Err(e))) => bail!("the ceiling consumer failed after {consumed}: {e}"),
            Ok(None) => bail!("the broker cancelled the ceiling consumer after {consumed}"),
            Err(_) => bail!("no delivery for {} s after {consumed}", args.stall_secs),
        };
        consumed += 1;
        let bodies = match paced {
            None => prebuilt.clone(),
            Some(_) => {
                let stamp = serde_json::from_slice::<PublishedInvoice>(&delivery.data)
                    .context("a paced invoice without its metadata")?
                    .metadata;
                let (seq, bench_t) = (stamp.seq.unwrap_or(0), stamp.bench_t.unwrap_or(0));
                Arc::new(
                    EVENTS_PER_INVOICE
                        .iter()
                        .map(|name| (*name, event_body(*name, seq, bench_t)))
                        .collect(),
                )
            }
        };
        // Like payrelay: one task per delivery; each publishes the
        // invoice's events, acks the delivery, then awaits its confirms.
        let (events, window, exchange) = (events.clone(), window.clone(), exchange.clone());
        tasks.spawn(async move {
            let permits = window.acquire_many_owned(EVENTS_PER_INVOICE.len() as u32).await?;
            let mut confirms = Vec::with_capacity(bodies.len());
            for (name, body) in bodies.iter() {
                let properties = BasicProperties::default()
                    .with_content_type(ShortString::from("application/json"))
                    .with_delivery_mode(2)
                    .with_type(ShortString::from(name.as_str()))
                    .with_correlation_id(ShortString::from("bench"));
                confirms.push(
                    events
                        .basic_publish(
                            exchange.as_str().into(),
                            name.as_str().into(),
                            BasicPublishOptions::default(),
                            body,
                            properties,
                        )
                        .await?,
                );
            }
            if !delivery.acker.ack(BasicAckOptions::default()).await? {
                bail!("an ack was not sent (channel closed)");
            }
            for confirm in confirms {
                match confirm.await? {
                    Confirmation::Ack(_) => {}
                    other => bail!("an event was not confirmed: {other:?}"),
                }
            }
            drop(permits);
            anyhow::Ok(())
        });
        while let Some(done) = tasks.try_join_next() {
            done.context("a ceiling task panicked")??;
        }
        if let Some(task) = publishing.take_if(|t| t.is_finished()) {
            task.await.context("the paced publisher panicked")??;
        }
    }
    while let Some(done) = tasks.join_next().await {
        done.context("a ceiling task panicked")??;
    }
    if let Some(task) = publishing {
        task.await.context("the paced publisher panicked")??;
    }
    let took = started.elapsed();
    let _ = consume
        .basic_cancel("bench-ceiling".into(), BasicCancelOptions::default())
        .await;
    let load_after = loadavg();
    let rate = n as f64 / took.as_secs_f64();
    eprintln!(
        "   consumed {n} and published {} events with confirms in {:.2} s ({rate:.0} invoices/s)",
        n * EVENTS_PER_INVOICE.len(),
        took.as_secs_f64()
    );
    // Let the observer catch up so the next phase starts on a quiet broker.
    let expected_events = n * EVENTS_PER_INVOICE.len();
    let deadline = Instant::now() + Duration::from_secs(args.stall_secs);
    while observer.with(|o| o.events.values().sum::<usize>()) < expected_events && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let broker_cpu_us = per_invoice_us(broker_before, broker_cpu_secs(), n);
    let observed = observer.stop().await;
    let _ = connection.close(200, "ceiling done".into()).await;
    clean_up(&args.amqp_url, cleanup).await?;
    let consumed = Row {
        phase: "1. ceiling: consume + 2 events (confirms)".into(),
        invoices: n,
        rate,
        note: format!("prefetch {}", args.prefetch),
        broker_cpu_us,
        load_before: load_before.clone(),
        load_after: load_after.clone(),
        ..Row::default()
    };
    let Some(paced) = paced else {
        let published = Row {
            phase: "1. ceiling: publish backlog (confirms)".into(),
            invoices: n,
            rate: publish_rate.unwrap_or_default(),
            note: format!("{} in flight", args.window),
            load_before,
            load_after,
            ..Row::default()
        };
        return Ok(vec![published, consumed]);
    };
    let mut seen: Observed = lock_observed(&observed, std::mem::take);
    let mut notes = vec!["publish->accept here is publish -> delivery to the bare client".to_owned()];
    if seen.duplicates > 0 || seen.sent < n {
        notes.push(format!(
            "{} of {n} invoice.sent seen, {} twice",
            seen.sent, seen.duplicates
        ));
    }
    if seen.warmup > 0 {
        notes.push(format!(
            "p50/p99 leave out the first {} invoices ({} s warm-up)",
            seen.warmup, args.warmup_secs
        ));
    }
    Ok(vec![Row {
        phase: format!("4a. ceiling (bare lapin), paced at {paced:.0}/s"),
        note: notes.join("; "),
        p50_ms: percentile_ms(&mut seen.to_accept_us, 50.0),
        p99_ms: percentile_ms(&mut seen.to_accept_us, 99.0),
        seen_p50_ms: percentile_ms(&mut seen.to_seen_us, 50.0),
        seen_p99_ms: percentile_ms(&mut seen.to_seen_us, 99.0),
        ..consumed
    }])
}

/// What the paced bare client reads of an invoice: its publish stamp.
#[derive(Deserialize)]
struct PublishedInvoice {
    metadata: SeenMetadata,
}

// ---------------------------------------------------------------- phases 2-4

/// The local Twilio stand-in: every POST is a created message.
struct MockProvider {
    addr: std::net::SocketAddr,
    requests: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl MockProvider {
    async fn start() -> Result<MockProvider> {
        use axum::http::StatusCode;
        let requests = Arc::new(AtomicU64::new(0));
        let counter = requests.clone();
        let app = axum::Router::new().fallback(move |body: axum::body::Bytes| {
            let counter = counter.clone();
            async move {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let _ = body;
                (
                    StatusCode::CREATED,
                    [("content-type", "application/json")],
                    format!(r#"{{"sid":"SM{n:032x}","status":"queued"}}"#),
                )
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("cannot bind the mock provider")?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                eprintln!("mock provider stopped: {e}");
            }
        });
        Ok(MockProvider { addr, requests, task })
    }
}

fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("cannot find a free port")?;
    Ok(listener.local_addr()?.port())
}

fn service_config(
    dir: &Path,
    outbox: &Path,
    args: &Args,
    prefix: &str,
    port: u16,
    mock: Option<&MockProvider>,
) -> String {
    let mut text = format!(
        r#"# Generated by bench/main.rs.
[broker]
url = "{url}"
queue = "{prefix}.invoices"
events_exchange = "{prefix}.events"
prefetch = {prefetch}
delivery_limit = 10

[store]
url = "sqlite://{db}"

[http]
listen = "127.0.0.1:{port}"
public_base_url = "http://127.0.0.1:{port}"

[billers.acme]
name = "ACME Energy"
checkout_url = "https://pay.example/c?inv={{invoice_id}}&amt={{amount}}&cur={{currency}}&t={{token}}"
default_locale = "es-MX"

[channels.email]
transport = "file"
outbox_dir = "{outbox}"
from = "ACME Billing <billing@acme.example>"
rate_per_second = 1000000
burst = 1000000
"#,
        url = args.amqp_url,
        prefetch = args.prefetch,
        db = dir.join("payrelay.db").display(),
        outbox = outbox.display(),
    );
    match mock {
        None => text.push_str("\n[routing]\ndefault = [\"email\"]\ndefault_strategy = \"fallback\"\n"),
        Some(mock) => {
            let _ = write!(
                text,
                r#"
[channels.sms]
provider = "twilio"
base_url = "http://{addr}"
account_sid = "ACbench0000000000000000000000000"
auth_token = "bench-token"
from = "+15005550006"
rate_per_second = 1000000
burst = 1000000

[routing]
default = ["sms"]
default_strategy = "fallback"
"#,
                addr = mock.addr
            );
        }
    }
    text
}

/// Peak RSS (VmHWM) and CPU seconds of a process, from /proc.
fn proc_stats(pid: u32) -> Option<(u64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let hwm_kb = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse::<u64>()
        .ok()?;
    Some((hwm_kb, cpu_secs(pid)?))
}

/// User + system CPU seconds of a process so far, from /proc.
fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at state.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / clock_ticks())
}

/// CPU seconds so far of every RabbitMQ VM (`beam.smp`) on this machine;
/// `None` if none is visible (a broker elsewhere).
fn broker_cpu_secs() -> Option<f64> {
    let mut total = None;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if comm.trim() == "beam.smp" {
            if let Some(secs) = cpu_secs(pid) {
                *total.get_or_insert(0.0) += secs;
            }
        }
    }
    total
}

/// CPU microseconds per invoice between two readings.
fn per_invoice_us(before: Option<f64>, after: Option<f64>, n: usize) -> Option<f64> {
    Some((after? - before?) * 1e6 / n.max(1) as f64)
}

fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn count_files(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

/// The payrelay child, stopped (SIGTERM, then SIGKILL) however the phase ends.
struct Service {
    child: tokio::process::Child,
    pid: u32,
    log: PathBuf,
}

impl Service {
    fn spawn(bin: &Path, config: &Path, log: PathBuf, level: &str) -> Result<Service> {
        let out = std::fs::File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
        let mut command = tokio::process::Command::new(bin);
        command
            .arg("--config")
            .arg(config)
            .arg("serve")
            .env("PAYRELAY_LOG", level)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .kill_on_drop(true);
        for (name, _) in std::env::vars() {
            if name.starts_with("PAYRELAY_") && name != "PAYRELAY_LOG" {
                command.env_remove(name);
            }
        }
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let pid = child.id().ok_or_else(|| anyhow!("payrelay exited at once"))?;
        Ok(Service { child, pid, log })
    }

    fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(format!(
                "payrelay exited ({status}); last lines of {}:\n{}",
                self.log.display(),
                log_tail(&self.log, 20)
            )),
            _ => None,
        }
    }

    async fn stop(mut self) {
        let _ = tokio::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .status()
            .await;
        if tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .is_err()
        {
            eprintln!("   payrelay did not stop within 30 s after SIGTERM; killing it");
            let _ = self.child.kill().await;
        }
    }
}

async fn wait_ready(port: u16, service: &mut Service) -> Result<()> {
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/readyz");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(why) = service.exited() {
            bail!(why);
        }
        if let Ok(r) = client.get(&url).send().await {
            if r.status().is_success() {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!(
                "payrelay was not ready within 30 s ({url}); last lines of {}:\n{}",
                service.log.display(),
                log_tail(&service.log, 20)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn service_phase(
    args: &Args,
    names: &Names,
    bin: &Path,
    dirs: &Dirs<'_>,
    cleanup: &Arc<Mutex<Cleanup>>,
    transport: Transport,
    paced: Option<f64>,
) -> Result<Row> {
    let label = match (paced, transport) {
        (None, Transport::File) => "file",
        (None, Transport::Http) => "http",
        (Some(_), Transport::File) => "latency-file",
        (Some(_), Transport::Http) => "latency-http",
    };
    let n = match paced {
        None => args.invoices,
        Some(rate) => ((rate * args.latency_secs as f64) as usize).max(1),
    };
    let dir = dirs.temp.join(label);
    let outbox = dirs.outboxes.join(label).join("email");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let prefix = names.prefix(label);
    let port = free_port()?;
    let mock = match transport {
        Transport::Http => Some(MockProvider::start().await?),
        Transport::File => None,
    };
    let config_path = dir.join("payrelay.toml");
    std::fs::write(
        &config_path,
        service_config(&dir, &outbox, args, &prefix, port, mock.as_ref()),
    )
    .with_context(|| format!("cannot write {}", config_path.display()))?;
    // The same check `payrelay serve` runs, here so a problem reads clearly.
    let config = Config::load(&config_path).map_err(|e| anyhow!("the generated config is refused:\n{e}"))?;

    let connection = connect(&args.amqp_url, "payrelay-bench publisher").await?;
    let setup = connection.create_channel().await?;
    // payrelay's own declaration, so its arguments match exactly.
    payrelay::broker::declare_topology(&setup, &config.broker)
        .await
        .map_err(|e| anyhow!("cannot declare payrelay's topology: {e}"))?;
    {
        let mut c = lock(cleanup);
        c.queues.push(config.broker.queue.clone());
        c.queues.push(config.broker.dead_letter_queue());
    }
    let events_queue = format!("{prefix}.events.observer");
    declare_events(&setup, &config.broker.events_exchange, &events_queue, cleanup).await?;
    let observer = Observer::start(&args.amqp_url, &events_queue, n).await?;
    let warmup = paced.map_or(0, |rate| ((rate * args.warmup_secs as f64) as usize).min(n / 2));
    observer.with(|s| s.warmup = warmup);

    let load_before = loadavg();
    if paced.is_none() {
        let took = publish_invoices(&connection, args.window, label, &config.broker.queue, n, None).await?;
        eprintln!(
            "   published {n} in {:.2} s ({:.0}/s)",
            took.as_secs_f64(),
            n as f64 / took.as_secs_f64()
        );
    }

    let started = Instant::now();
    let broker_before = broker_cpu_secs();
    let mut service = Service::spawn(bin, &config_path, dir.join("payrelay.log"), &args.payrelay_log)?;
    let outcome = drive(args, &mut service, &observer, label, &config, port, n, paced).await;
    let stats = proc_stats(service.pid);
    let broker_cpu_us = per_invoice_us(broker_before, broker_cpu_secs(), n);
    let load_after = loadavg();
    service.stop().await;
    let observed = observer.stop().await;
    let _ = connection.close(200, "bench phase done".into()).await;
    if let Some(mock) = &mock {
        mock.task.abort();
    }
    clean_up(&args.amqp_url, cleanup).await?;
    let finished = outcome?;

    let mut seen: Observed = lock_observed(&observed, std::mem::take);
    let last = seen.last_sent.unwrap_or(finished);
    let elapsed = last.duration_since(started).as_secs_f64();
    let mut notes = Vec::new();
    if let (Some(first), None) = (seen.first_sent, paced) {
        let steady = last.duration_since(first).as_secs_f64();
        if steady > 0.0 {
            notes.push(format!("{:.0}/s from first sent event", (n - 1) as f64 / steady));
        }
    }
    match &mock {
        Some(m) => notes.push(format!("mock got {} requests", m.requests.load(Ordering::Relaxed))),
        None => notes.push(format!("{} .eml files", count_files(&outbox))),
    }
    let other: Vec<String> = seen
        .events
        .iter()
        .filter(|(name, _)| *name != "invoice.sent" && *name != "invoice.accepted")
        .map(|(name, count)| format!("{count} {name}"))
        .collect();
    if seen.unparsable > 0 {
        notes.push(format!("{} events were not JSON", seen.unparsable));
    }
    if !other.is_empty() || seen.duplicates > 0 {
        notes.push(format!("also: {} {} duplicate sent", other.join(", "), seen.duplicates));
        if let Some(p) = &seen.first_problem {
            notes.push(format!("first: {p}"));
        }
    }
    if paced.is_some() && seen.warmup > 0 {
        let mut all = seen.to_accept_us.clone();
        all.extend_from_slice(&seen.warmup_accept_us);
        notes.push(format!(
            "p50/p99 leave out the first {} invoices ({} s warm-up); with them p99 {} ms",
            seen.warmup,
            args.warmup_secs,
            ms(percentile_ms(&mut all, 99.0))
        ));
    }
    let rate = n as f64 / elapsed;
    let (peak_kb, cpu_total) = stats.map(|(k, c)| (Some(k), Some(c))).unwrap_or((None, None));
    let row = Row {
        phase: match paced {
            None => format!(
                "{}. payrelay, {} (backlog)",
                if transport == Transport::File { 2 } else { 3 },
                transport.describe()
            ),
            Some(r) => format!("4b. payrelay, {}, paced at {r:.0}/s", transport.describe()),
        },
        invoices: n,
        rate,
        compare: paced.is_none(),
        note: notes.join("; "),
        p50_ms: paced.and(percentile_ms(&mut seen.to_accept_us, 50.0)),
        p99_ms: paced.and(percentile_ms(&mut seen.to_accept_us, 99.0)),
        seen_p50_ms: paced.and(percentile_ms(&mut seen.to_seen_us, 50.0)),
        seen_p99_ms: paced.and(percentile_ms(&mut seen.to_seen_us, 99.0)),
        peak_rss_mb: peak_kb.map(|k| k as f64 / 1024.0),
        cpu: cpu_total.map(|c| c / elapsed),
        cpu_us: cpu_total.map(|c| c * 1e6 / n as f64),
        broker_cpu_us,
        load_before,
        load_after,
    };
    eprintln!(
        "   {n} invoices in {elapsed:.2} s: {rate:.0}/s; peak RSS {}; {}",
        row.peak_rss_mb.map_or("?".into(), |m| format!("{m:.1} MB")),
        row.note
    );
    Ok(row)
}

/// Runs one service phase until every invoice's `invoice.sent` was seen;
/// returns when the last one was.
#[allow(clippy::too_many_arguments)]
async fn drive(
    args: &Args,
    service: &mut Service,
    observer: &Observer,
    label: &str,
    config: &Config,
    port: u16,
    n: usize,
    paced: Option<f64>,
) -> Result<Instant> {
    let mut publishing = match paced {
        None => None,
        Some(rate) => {
            wait_ready(port, service).await?;
            let (url, queue, run, window) = (
                args.amqp_url.clone(),
                config.broker.queue.clone(),
                label.to_owned(),
                args.window,
            );
            Some(tokio::spawn(async move {
                let connection = connect(&url, "payrelay-bench paced publisher").await?;
                let took = publish_invoices(&connection, window, &run, &queue, n, Some(rate)).await;
                let _ = connection.close(200, "bench paced publisher done".into()).await;
                took
            }))
        }
    };
    let stall = Duration::from_secs(args.stall_secs);
    let mut progress = (0, Instant::now());
    let mut last_report = Instant::now();
    loop {
        let sent = observer.with(|o| o.sent);
        if sent >= n {
            break;
        }
        if sent != progress.0 {
            progress = (sent, Instant::now());
        } else if progress.1.elapsed() > stall {
            bail!(
                "stalled: no invoice completed for {} s ({sent} of {n}); payrelay log: {}\n{}",
                stall.as_secs(),
                service.log.display(),
                log_tail(&service.log, 20)
            );
        }
        if let Some(why) = service.exited() {
            bail!(why);
        }
        if let Some(task) = publishing.take_if(|t| t.is_finished()) {
            // A publishing error ends the phase at once rather than as a stall.
            let took = task.await.context("the paced publisher panicked")??;
            eprintln!(
                "   published {n} in {:.2} s ({:.0}/s)",
                took.as_secs_f64(),
                n as f64 / took.as_secs_f64()
            );
        }
        if last_report.elapsed() > Duration::from_secs(5) {
            eprintln!("   ... {sent} of {n} sent");
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if let Some(task) = publishing {
        task.await.context("the paced publisher panicked")??;
    }
    Ok(observer.with(|o| o.last_sent).unwrap_or_else(Instant::now))
}

// ---------------------------------------------------------------- report

async fn rabbitmq_version() -> String {
    let run = tokio::process::Command::new("rabbitmqctl")
        .arg("version")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output();
    match tokio::time::timeout(Duration::from_secs(15), run).await {
        Ok(Ok(out)) if out.status.success() => String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        _ => "unknown (rabbitmqctl version failed)".into(),
    }
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_else(|| "?".into())
}

fn ms(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.1}"))
}

async fn report(args: &Args, rows: &[Row], took: Duration) -> String {
    let ceiling = rows
        .iter()
        .find(|r| r.phase.starts_with("1. ceiling: consume"))
        .map(|r| r.rate);
    let mut out = String::new();
    let command: Vec<String> = std::env::args().skip(1).collect();
    let _ = writeln!(out, "## payrelay bench");
    let _ = writeln!(
        out,
        "\ncommand: `cargo run --release --example bench -- {}`",
        command.join(" ")
    );
    let _ = writeln!(
        out,
        "machine: {} cores ({}), RabbitMQ {}, load at the end {} (1/5/15 min); run took {:.0} s",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model(),
        rabbitmq_version().await,
        loadavg(),
        took.as_secs_f64()
    );
    let _ = writeln!(
        out,
        "prefetch {}, confirm window {}, invoice body {} bytes, SQLite store, rate limits lifted\n",
        args.prefetch, args.window, INVOICE_BYTES
    );
    let _ = writeln!(
        out,
        "| phase | invoices | invoices/s | payrelay/ceiling | publish->accept p50 / p99 ms | publish->event seen p50 / p99 ms | peak RSS MB | payrelay CPU (cores) | CPU us/invoice payrelay / broker | load before -> after | notes |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|");
    for r in rows {
        let ratio = match ceiling {
            Some(c) if r.compare && c > 0.0 => format!("{:.0}%", 100.0 * r.rate / c),
            _ => "-".into(),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {:.0} | {} | {} / {} | {} / {} | {} | {} | {} / {} | {} -> {} | {} |",
            r.phase,
            r.invoices,
            r.rate,
            ratio,
            ms(r.p50_ms),
            ms(r.p99_ms),
            ms(r.seen_p50_ms),
            ms(r.seen_p99_ms),
            r.peak_rss_mb.map_or("-".into(), |m| format!("{m:.1}")),
            r.cpu.map_or("-".into(), |c| format!("{c:.2}")),
            r.cpu_us.map_or("-".into(), |c| format!("{c:.0}")),
            r.broker_cpu_us.map_or("-".into(), |c| format!("{c:.0}")),
            r.load_before,
            r.load_after,
            r.note
        );
    }
    let _ = writeln!(
        out,
        "\nTargets (issue 5): payrelay >= 50% of the ceiling and >= 5,000 invoices/s; p99 < 50 ms at half load; peak RSS < 150 MB with a 100,000-invoice backlog."
    );
    out
}
