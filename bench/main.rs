//! payrelay's throughput, latency and memory benchmark (issue 5).
//!
//! ```sh
//! cargo run --release --example bench -- --invoices 100000
//! ```
//!
//! One run, one broker, six phases (see bench/README.md):
//!
//! 1. `ceiling`: a bare lapin client doing payrelay's AMQP work and nothing
//!    else: consume N persistent invoice-sized messages from a quorum queue
//!    with manual acks (prefetch as configured) and publish, with confirms,
//!    the two events payrelay publishes per sent invoice (`invoice.accepted`,
//!    `invoice.sent`) to a topic exchange with a bound quorum queue.
//! 2. `file`: the release `payrelay serve` as a child process on the same
//!    backlog, email `transport = "file"`, rate limits lifted.
//!    `journey` (2j): the same with a three-step journey planned for every
//!    invoice (none due during the phase), and the store's bytes per step.
//! 3. `http`: the same with SMS through Twilio pointed at a local mock
//!    provider in this process (201 with a sid).
//! 4. `latency`: invoices published at a paced rate while payrelay consumes;
//!    p50/p99 from publish to provider accept (the `invoice.sent` event's `at`).
//! 5. `wave`: N invoices whose one reminder falls due at the same minute;
//!    the wave's drain rate, and the latency of new invoices published at
//!    a paced rate while it drains.
//!
//! Every phase uses fresh, uniquely named queues and exchanges, deleted at
//! the end. The events of every phase (the ceiling's too) are read by the
//! same observer, so the broker and the CPUs carry the same extra load.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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

mod stats;

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

/// The customer's time zone in every invoice: the wave's time is read in it.
const CUSTOMER_TZ: &str = "America/Mexico_City";

/// Days from today to the due date of every invoice but the wave's: far
/// enough that no step of [`BENCH_JOURNEY`] (-3d, 0d, +3d) falls due during
/// a run. The same in every phase, so `file` and `journey` render alike.
const DUE_IN_DAYS: i64 = 30;

/// The journey phase's ladder, planned for every invoice at intake.
const BENCH_JOURNEY: &str = r#"
[journeys.bench]
send_at = "10:00"
steps = [
  { name = "upcoming", due = "-3d" },
  { name = "due", due = "0d" },
  { name = "overdue", due = "+3d" },
]
"#;

/// Steps in [`BENCH_JOURNEY`].
const BENCH_JOURNEY_STEPS: usize = 3;

#[derive(Parser, Debug)]
#[command(
    name = "bench",
    about = "payrelay end to end against the broker's ceiling for the same AMQP work",
    after_help = "Phases: ceiling, file, journey, http, latency, wave (all by default), and stats (only when named). See bench/README.md."
)]
struct Args {
    /// Backlog size for the ceiling, file, journey and http phases, and the
    /// wave phase's number of reminders falling due together.
    #[arg(long, default_value_t = 20_000)]
    invoices: usize,
    /// Which phases to run, comma-separated: ceiling,file,journey,http,latency,wave,stats.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "ceiling,file,journey,http,latency,wave"
    )]
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
    /// `rate_per_second` and `burst` of every channel the service gets: the
    /// channels' combined rate, which a journey's wave drains at most at.
    /// The default lifts the limits, so payrelay itself sets the pace.
    #[arg(long, default_value_t = 1_000_000)]
    channel_rate: u64,
    /// Paced rate of the new invoices the wave phase publishes while its
    /// reminders drain, invoices/s.
    #[arg(long, default_value_t = 200.0)]
    wave_rate: f64,
    /// How long after the wave phase starts its reminders fall due, rounded
    /// up to a whole minute (`send_at` has minutes) [default: an estimate of
    /// the time to publish and send the first requests, plus 15 s].
    #[arg(long)]
    wave_lead_secs: Option<u64>,
    /// The wave phase's paced publishing starts this long before the wave,
    /// so the report has the same service's latency without it.
    #[arg(long, default_value_t = 5)]
    wave_baseline_secs: u64,
    /// Invoices the stats phase fills each store with.
    #[arg(long, default_value_t = 1_000_000)]
    stats_invoices: usize,
    /// The PostgreSQL database the stats phase makes its schema in.
    #[arg(
        long,
        default_value = "postgres://postgres@127.0.0.1:5432/test",
        env = "PAYRELAY_TEST_POSTGRES_URL"
    )]
    stats_postgres_url: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Phase {
    Ceiling,
    File,
    /// The file backlog with a three-step journey on every invoice.
    Journey,
    Http,
    Latency,
    /// Reminders falling due together while new invoices arrive.
    Wave,
    /// `GET /v1/stats` over a store filled with `--stats-invoices` invoices.
    Stats,
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
    /// Which phase made it, for comparisons between rows ("file", "journey").
    id: &'static str,
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
    /// The bytes the SQLite database uses at the end of the phase.
    db_bytes: Option<u64>,
    /// Journey steps in the store at the end of the phase.
    steps: Option<u64>,
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
    let needs_service = args.phases.iter().any(|p| !matches!(p, Phase::Ceiling | Phase::Stats));
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
    // The stats phase needs neither the broker nor the service.
    let figures = match (&result, args.phases.contains(&Phase::Stats)) {
        (Ok(()), true) => Some(stats::run(args.stats_invoices, temp.path(), &args.stats_postgres_url).await),
        _ => None,
    };
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
    if let Some(figures) = figures {
        let figures = figures?;
        println!("\n{figures}");
        if let Some(path) = &args.report {
            let mut report = std::fs::read_to_string(path).unwrap_or_default();
            report.push_str(&figures);
            std::fs::write(path, report).with_context(|| format!("cannot write {}", path.display()))?;
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
    let backlogs = [
        (Phase::File, Transport::File, false),
        (Phase::Journey, Transport::File, true),
        (Phase::Http, Transport::Http, false),
    ];
    for (phase, transport, journey) in backlogs {
        if args.phases.contains(&phase) {
            eprintln!(
                "== payrelay, {}{}: {} invoices backlog",
                transport.describe(),
                if journey { ", a 3-step journey each" } else { "" },
                args.invoices
            );
            let kind = ServiceKind::Backlog { transport, journey };
            let row = service_phase(args, names, bin()?, dirs, cleanup, kind)
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
        let kind = ServiceKind::Paced {
            transport: args.latency_transport,
            rate,
        };
        let row = service_phase(args, names, bin()?, dirs, cleanup, kind)
            .await
            .context("latency phase")?;
        rows.push(row);
    }
    if args.phases.contains(&Phase::Wave) {
        if !(args.wave_rate.is_finite() && args.wave_rate > 0.0) {
            bail!("--wave-rate must be above 0 (got {})", args.wave_rate);
        }
        eprintln!(
            "== wave: {} reminders due at once, new invoices paced at {:.0}/s meanwhile",
            args.invoices, args.wave_rate
        );
        let row = wave_phase(args, names, bin()?, dirs, cleanup, file_rate)
            .await
            .context("wave phase")?;
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
fn invoice_body(run: &str, seq: usize, due: time::Date) -> Vec<u8> {
    let mut body = format!(
        r#"{{"kind":"payment_request","invoice_id":"BENCH-{run}-{seq:07}","biller_id":"acme","revision":1,"source":"erp","amount":"1234.50","currency":"MXN","due_date":"{due}","customer":{{"id":"C-{seq:07}","name":"María López","email":"customer{seq:07}@example.com","phone":"+5215512345678","locale":"es-MX","timezone":"{CUSTOMER_TZ}"}},"metadata":{{"bench_t":{},"seq":{seq}}},"description":"Electricity, November 2026"#,
        unix_ns(),
        due = iso_date(due),
    );
    // Pad the description so every body is the same size.
    while body.len() + 2 < INVOICE_BYTES {
        body.push('.');
    }
    body.push_str("\"}");
    body.into_bytes()
}

fn iso_date(date: time::Date) -> String {
    format!("{:04}-{:02}-{:02}", date.year(), u8::from(date.month()), date.day())
}

/// The due date of every invoice but the wave's: [`DUE_IN_DAYS`] from today.
fn backlog_due() -> time::Date {
    time::OffsetDateTime::now_utc().date() + time::Duration::days(DUE_IN_DAYS)
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

/// Which invoices a publisher sends: `first..first + n` of `run`, due on `due`.
struct Batch<'a> {
    run: &'a str,
    queue: &'a str,
    first: usize,
    n: usize,
    due: time::Date,
}

impl<'a> Batch<'a> {
    /// `0..n` of `run`, due on [`backlog_due`].
    fn backlog(run: &'a str, queue: &'a str, n: usize) -> Batch<'a> {
        Batch {
            run,
            queue,
            first: 0,
            n,
            due: backlog_due(),
        }
    }
}

/// Publishes the batch to its queue, all at once (`rate` None, within the
/// confirm window) or paced at `rate` per second; each is stamped as it
/// goes. With `stop`, publishing ends early once it is set. Returns how many
/// were published (and confirmed) and how long that took.
async fn publish_invoices(
    connection: &Connection,
    window: usize,
    batch: &Batch<'_>,
    rate: Option<f64>,
    stop: Option<&AtomicBool>,
) -> Result<(usize, Duration)> {
    let publisher = Publisher::new(connection, window).await?;
    let started = Instant::now();
    let n = batch.n;
    let mut i = 0;
    let mut failed = None;
    'outer: while i < n && !stop.is_some_and(|s| s.load(Ordering::Relaxed)) {
        let due = match rate {
            None => n,
            Some(rate) => ((started.elapsed().as_secs_f64() * rate) as usize + 1).min(n),
        };
        while i < due {
            let seq = batch.first + i;
            if let Err(e) = publisher
                .publish(
                    "",
                    batch.queue,
                    &invoice_body(batch.run, seq, batch.due),
                    invoice_properties(seq),
                )
                .await
            {
                failed = Some(e);
                break 'outer;
            }
            i += 1;
        }
        if i < n {
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
    }
    let confirmed = publisher.finish().await;
    if let Some(e) = failed {
        // The confirm task's error is the cause; the send error only follows from it.
        return Err(confirmed.err().unwrap_or(e));
    }
    let confirmed = confirmed?;
    if confirmed != i as u64 {
        bail!("only {confirmed} of {i} invoices were confirmed");
    }
    Ok((i, started.elapsed()))
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
    /// Past the warm-up, per invoice by its publish time (Unix ns): publish
    /// -> the `at` of its `invoice.accepted` (payrelay's intake), in µs.
    intake: Vec<(i64, i64)>,
    /// Past the warm-up, per first request by its publish time: publish ->
    /// the `at` of its `invoice.sent`, and -> that event seen here, in µs.
    timed_sent: Vec<(i64, i64, i64)>,
    /// `invoice.sent` of journey steps (a `step` set): how many, and the
    /// first and last `at` (Unix ns).
    steps_sent: usize,
    first_step_at: Option<i64>,
    last_step_at: Option<i64>,
    unparsable: usize,
}

#[derive(Deserialize)]
struct SeenEvent {
    event: String,
    at: Option<String>,
    detail: Option<String>,
    /// The journey step; absent or null for the first request.
    #[serde(default)]
    step: Option<String>,
    metadata: Option<SeenMetadata>,
}

/// Events of a working journey that are not problems.
const JOURNEY_EVENTS: [&str; 1] = ["invoice.journey_completed"];

/// Invoices the observer tells apart (its duplicate check); any more are
/// counted without it.
const MAX_TRACKED: usize = 10_000_000;

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
                let at = event.at.as_deref().and_then(parse_rfc3339_ns);
                let stamp = event.metadata.as_ref().and_then(|m| m.seq.zip(m.bench_t));
                let measured = stamp.filter(|(seq, _)| *seq >= s.warmup);
                if event.event == "invoice.accepted" {
                    if let (Some((_, published)), Some(at)) = (measured, at) {
                        s.intake.push((published, (at - published) / 1_000));
                    }
                    continue;
                }
                if event.event != "invoice.sent" {
                    if !JOURNEY_EVENTS.contains(&event.event.as_str()) && s.first_problem.is_none() {
                        s.first_problem = Some(format!("{}: {}", event.event, event.detail.unwrap_or_default()));
                    }
                    continue;
                }
                if event.step.is_some() {
                    s.steps_sent += 1;
                    if let Some(at) = at {
                        s.first_step_at = Some(s.first_step_at.map_or(at, |f| f.min(at)));
                        s.last_step_at = Some(s.last_step_at.map_or(at, |l| l.max(at)));
                    }
                    continue;
                }
                let Some(meta) = event.metadata else { continue };
                if let Some(seq) = meta.seq.filter(|seq| *seq < MAX_TRACKED) {
                    if seq >= s.sent_seen.len() {
                        s.sent_seen.resize(seq + 1, false);
                    }
                    if std::mem::replace(&mut s.sent_seen[seq], true) {
                        s.duplicates += 1;
                        continue;
                    }
                }
                s.sent += 1;
                s.first_sent.get_or_insert(now);
                s.last_sent = Some(now);
                if let Some(published) = meta.bench_t {
                    let accept_us = at.map(|at| (at - published) / 1_000);
                    let seen_us = (now_ns - published) / 1_000;
                    if meta.seq.is_some_and(|seq| seq < s.warmup) {
                        s.warmup_accept_us.extend(accept_us);
                    } else {
                        s.to_seen_us.push(seen_us);
                        s.to_accept_us.extend(accept_us);
                        if let Some(accept_us) = accept_us {
                            s.timed_sent.push((published, accept_us, seen_us));
                        }
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
        let (_, took) =
            publish_invoices(&connection, args.window, &Batch::backlog(label, &queue, n), None, None).await?;
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
            let batch = Batch::backlog("ceiling-paced", &queue, n);
            let took = publish_invoices(&connection, window, &batch, Some(rate), None).await;
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

/// A generated service config. `journey`: a `[journeys.bench]` section,
/// made every invoice's journey by `[routing] journey`.
struct ServiceConfig<'a> {
    dir: &'a Path,
    outbox: &'a Path,
    prefix: &'a str,
    port: u16,
    mock: Option<&'a MockProvider>,
    journey: Option<&'a str>,
}

impl ServiceConfig<'_> {
    fn text(&self, args: &Args) -> String {
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
rate_per_second = {rate}
burst = {rate}
"#,
            url = args.amqp_url,
            prefix = self.prefix,
            port = self.port,
            prefetch = args.prefetch,
            db = self.dir.join("payrelay.db").display(),
            outbox = self.outbox.display(),
            rate = args.channel_rate,
        );
        match self.mock {
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
rate_per_second = {rate}
burst = {rate}

[routing]
default = ["sms"]
default_strategy = "fallback"
"#,
                    addr = mock.addr,
                    rate = args.channel_rate,
                );
            }
        }
        // Without the key, no invoice has a journey.
        if let Some(journey) = self.journey {
            text.push_str("journey = \"bench\"\n");
            text.push_str(journey);
        }
        text
    }
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

/// What a service phase runs.
#[derive(Clone, Copy)]
enum ServiceKind {
    /// A backlog published before the service starts, each invoice with a
    /// three-step journey or none.
    Backlog { transport: Transport, journey: bool },
    /// Invoices published at `rate` once the service is ready (4b).
    Paced { transport: Transport, rate: f64 },
}

/// A phase's service, ready to start: its files, config, queues, and the
/// observer on its events.
struct Prepared {
    dir: PathBuf,
    outbox: PathBuf,
    port: u16,
    config_path: PathBuf,
    config: Config,
    /// The bench's publishing connection.
    connection: Connection,
    observer: Observer,
}

/// Writes the phase's config (checked as `payrelay serve` checks it),
/// declares payrelay's topology and the observer's queue, starts observing.
async fn prepare(
    args: &Args,
    names: &Names,
    dirs: &Dirs<'_>,
    cleanup: &Arc<Mutex<Cleanup>>,
    label: &str,
    mock: Option<&MockProvider>,
    journey: Option<&str>,
) -> Result<Prepared> {
    let dir = dirs.temp.join(label);
    let outbox = dirs.outboxes.join(label).join("email");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let prefix = names.prefix(label);
    let port = free_port()?;
    let config_path = dir.join("payrelay.toml");
    let text = ServiceConfig {
        dir: &dir,
        outbox: &outbox,
        prefix: &prefix,
        port,
        mock,
        journey,
    }
    .text(args);
    std::fs::write(&config_path, text).with_context(|| format!("cannot write {}", config_path.display()))?;
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
    let _ = setup.close(200, "bench setup done".into()).await;
    let observer = Observer::start(&args.amqp_url, &events_queue, args.invoices).await?;
    Ok(Prepared {
        dir,
        outbox,
        port,
        config_path,
        config,
        connection,
        observer,
    })
}

async fn service_phase(
    args: &Args,
    names: &Names,
    bin: &Path,
    dirs: &Dirs<'_>,
    cleanup: &Arc<Mutex<Cleanup>>,
    kind: ServiceKind,
) -> Result<Row> {
    let (transport, paced, journey) = match kind {
        ServiceKind::Backlog { transport, journey } => (transport, None, journey),
        ServiceKind::Paced { transport, rate } => (transport, Some(rate), false),
    };
    let label = match (paced, transport, journey) {
        (None, Transport::File, false) => "file",
        (None, Transport::File, true) => "journey",
        (None, Transport::Http, _) => "http",
        (Some(_), Transport::File, _) => "latency-file",
        (Some(_), Transport::Http, _) => "latency-http",
    };
    let n = match paced {
        None => args.invoices,
        Some(rate) => ((rate * args.latency_secs as f64) as usize).max(1),
    };
    let mock = match transport {
        Transport::Http => Some(MockProvider::start().await?),
        Transport::File => None,
    };
    let Prepared {
        dir,
        outbox,
        port,
        config_path,
        config,
        connection,
        observer,
    } = prepare(
        args,
        names,
        dirs,
        cleanup,
        label,
        mock.as_ref(),
        journey.then_some(BENCH_JOURNEY),
    )
    .await?;
    let warmup = paced.map_or(0, |rate| ((rate * args.warmup_secs as f64) as usize).min(n / 2));
    observer.with(|s| s.warmup = warmup);

    let load_before = loadavg();
    if paced.is_none() {
        let batch = Batch::backlog(label, &config.broker.queue, n);
        let (_, took) = publish_invoices(&connection, args.window, &batch, None, None).await?;
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
    // After the stop: the service checkpointed its WAL into the file.
    let db = dir.join("payrelay.db");
    let db_bytes = sqlite_bytes(&db);
    let storage = match journey {
        true => Some(step_storage(&db).context("cannot read the journey phase's store")?),
        false => None,
    };

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
    if let Some(storage) = &storage {
        notes.push(storage.describe(n));
    }
    let rate = n as f64 / elapsed;
    let (peak_kb, cpu_total) = stats.map(|(k, c)| (Some(k), Some(c))).unwrap_or((None, None));
    let row = Row {
        id: label,
        phase: match (paced, journey) {
            (None, false) => format!(
                "{}. payrelay, {} (backlog)",
                if transport == Transport::File { 2 } else { 3 },
                transport.describe()
            ),
            (None, true) => format!(
                "2j. payrelay, {}, {BENCH_JOURNEY_STEPS}-step journey each (backlog)",
                transport.describe()
            ),
            (Some(r), _) => format!("4b. payrelay, {}, paced at {r:.0}/s", transport.describe()),
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
        db_bytes,
        steps: storage.map(|s| s.steps),
    };
    eprintln!(
        "   {n} invoices in {elapsed:.2} s: {rate:.0}/s; peak RSS {}; {}",
        row.peak_rss_mb.map_or("?".into(), |m| format!("{m:.1} MB")),
        row.note
    );
    Ok(row)
}

/// The bytes a SQLite database uses: its pages but the free ones, once
/// its WAL is checkpointed into the file (the file's size alone moves with
/// checkpoint timing and pages freed by the outbox).
fn sqlite_bytes(db: &Path) -> Option<u64> {
    let conn = rusqlite::Connection::open(db).ok()?;
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())).ok()?;
    let pragma = |name: &str| {
        conn.query_row(&format!("PRAGMA {name}"), [], |r| r.get::<_, i64>(0))
            .ok()
    };
    let used = pragma("page_count")? - pragma("freelist_count")?;
    u64::try_from(used * pragma("page_size")?).ok()
}

/// The journey steps a phase's store holds, and what they take.
#[derive(Clone, Copy)]
struct StepStorage {
    steps: u64,
    planned: u64,
    /// Pages of the `steps` table and its two indexes (primary key,
    /// `steps_due`), from SQLite's `dbstat`; `None` without it.
    bytes: Option<u64>,
}

impl StepStorage {
    fn describe(&self, invoices: usize) -> String {
        let per_step = match self.bytes {
            Some(bytes) if self.steps > 0 => format!(
                "{:.0} B per step in the store (steps table + 2 indexes, dbstat: {:.1} MB)",
                bytes as f64 / self.steps as f64,
                bytes as f64 / 1e6
            ),
            _ => "no dbstat in this SQLite".into(),
        };
        format!(
            "{} steps stored for {invoices} invoices, {} still planned; {per_step}",
            self.steps, self.planned
        )
    }
}

/// Reads what the journey phase left in its SQLite file, after the
/// service stopped.
fn step_storage(db: &Path) -> Result<StepStorage> {
    let conn = rusqlite::Connection::open(db).with_context(|| format!("cannot open {}", db.display()))?;
    let (steps, planned) = conn.query_row(
        "SELECT COUNT(*), COALESCE(SUM(status = 'planned'), 0) FROM steps",
        [],
        |row| Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?)),
    )?;
    let bytes = conn
        .query_row(
            "SELECT SUM(pgsize) FROM dbstat WHERE name IN ('steps', 'sqlite_autoindex_steps_1', 'steps_due')",
            [],
            |row| row.get::<_, Option<i64>>(0),
        )
        .ok()
        .flatten();
    let count = |n: i64| u64::try_from(n).unwrap_or(0);
    Ok(StepStorage {
        steps: count(steps),
        planned: count(planned),
        bytes: bytes.map(count),
    })
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
                let batch = Batch::backlog(&run, &queue, n);
                let took = publish_invoices(&connection, window, &batch, Some(rate), None).await;
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
            let (_, took) = task.await.context("the paced publisher panicked")??;
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

// ---------------------------------------------------------------- phase 5

/// When the wave's reminders fall due: on a whole minute (`send_at` has
/// minutes) at least `lead` from now. `due` and `send_at` place the one
/// step `due = "0d"` there, read in the customer's time zone.
struct WaveTime {
    at_ms: i64,
    due: time::Date,
    send_at: String,
}

fn wave_time(lead: Duration) -> Result<WaveTime> {
    let tz = payrelay::domain::quiet::time_zone(CUSTOMER_TZ).map_err(|e| anyhow!(e))?;
    let earliest = unix_ns() / 1_000_000 + lead.as_millis() as i64;
    let at_ms = (earliest + 59_999) / 60_000 * 60_000;
    let zoned = jiff::Timestamp::from_millisecond(at_ms)?.to_zoned(tz.clone());
    let date = zoned.date();
    let due = time::Date::from_calendar_date(
        i32::from(date.year()),
        time::Month::try_from(date.month() as u8)?,
        date.day() as u8,
    )?;
    let send_at = jiff::civil::time(zoned.hour(), zoned.minute(), 0, 0);
    // The service places the step the same way; a zone whose offset is not
    // whole minutes would put it elsewhere.
    let planned = payrelay::journey::due_day_at(due, 0, send_at, &tz);
    if planned != at_ms {
        bail!("the wave's time {at_ms} would be planned at {planned} in {CUSTOMER_TZ}");
    }
    Ok(WaveTime {
        at_ms,
        due,
        send_at: format!("{:02}:{:02}", zoned.hour(), zoned.minute()),
    })
}

/// What the wave phase measured on the way, besides the observer.
struct WaveRun {
    /// The first requests of the load were all seen.
    loaded: Instant,
    /// Wall clock at the wave's time, and payrelay's and the broker's CPU
    /// seconds then; the same when its last reminder was seen.
    wave: (Instant, Option<f64>, Option<f64>),
    drained: (Instant, Option<f64>, Option<f64>),
    /// New invoices published while it ran (from `--wave-baseline-secs`
    /// before the wave until it drained).
    paced: usize,
}

/// Phase 5: `--invoices` invoices whose one reminder falls due at the same
/// minute, sent their first requests well before it; then, from a few
/// seconds before that minute until the last reminder went out, new
/// invoices at `--wave-rate`, whose latency says whether the intake keeps
/// answering while the scheduler drains the wave.
async fn wave_phase(
    args: &Args,
    names: &Names,
    bin: &Path,
    dirs: &Dirs<'_>,
    cleanup: &Arc<Mutex<Cleanup>>,
    file_rate: Option<f64>,
) -> Result<Row> {
    let label = "wave";
    let n = args.invoices;
    let lead = match args.wave_lead_secs {
        Some(secs) => Duration::from_secs(secs),
        None => {
            // Publishing the load (10,000/s and more here), then its first
            // requests at well under the file phase's rate (else 800/s).
            let send_rate = file_rate.map_or(800.0, |r| r * 0.6).max(100.0);
            Duration::from_secs_f64(15.0 + n as f64 / 5_000.0 + n as f64 / send_rate)
        }
    };
    let wave = wave_time(lead)?;
    let journey = format!(
        "\n[journeys.bench]\nsend_at = \"{}\"\nsteps = [{{ name = \"wave\", due = \"0d\" }}]\n",
        wave.send_at
    );
    let prepared = prepare(args, names, dirs, cleanup, label, None, Some(&journey)).await?;
    // The load's invoices are not the ones whose latency is measured.
    prepared.observer.with(|s| s.warmup = n);
    eprintln!(
        "   reminders due at {} {CUSTOMER_TZ} ({}), {:.0} s from now",
        wave.send_at,
        payrelay::events::rfc3339_ms(wave.at_ms),
        (wave.at_ms - unix_ns() / 1_000_000) as f64 / 1_000.0
    );

    let load_before = loadavg();
    let batch = Batch {
        run: label,
        queue: &prepared.config.broker.queue,
        first: 0,
        n,
        due: wave.due,
    };
    let (_, took) = publish_invoices(&prepared.connection, args.window, &batch, None, None).await?;
    eprintln!(
        "   published {n} in {:.2} s ({:.0}/s)",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64()
    );
    let started = Instant::now();
    let mut service = Service::spawn(
        bin,
        &prepared.config_path,
        prepared.dir.join("payrelay.log"),
        &args.payrelay_log,
    )?;
    let outcome = wave_drive(args, &mut service, &prepared, &wave, n).await;
    let stats = proc_stats(service.pid);
    let load_after = loadavg();
    service.stop().await;
    let Prepared {
        observer,
        connection,
        outbox,
        ..
    } = prepared;
    let observed = observer.stop().await;
    let _ = connection.close(200, "bench phase done".into()).await;
    clean_up(&args.amqp_url, cleanup).await?;
    let run = outcome?;
    let seen: Observed = lock_observed(&observed, std::mem::take);

    let at_ns = wave.at_ms * 1_000_000;
    let (first_ns, last_ns) = match (seen.first_step_at, seen.last_step_at) {
        (Some(f), Some(l)) => (f, l),
        _ => bail!("no reminder carried its time"),
    };
    let drain_secs = (last_ns - first_ns) as f64 / 1e9;
    let rate = if drain_secs > 0.0 {
        (n - 1) as f64 / drain_secs
    } else {
        n as f64
    };
    // New invoices by when they were published: during the wave (its due
    // time to its last reminder), and the baseline before it.
    let baseline_ns = at_ns - args.wave_baseline_secs as i64 * 1_000_000_000;
    let during = |t: i64| (at_ns..=last_ns).contains(&t);
    let before = |t: i64| (baseline_ns..at_ns).contains(&t);
    let pick = |samples: &[(i64, i64)], keep: &dyn Fn(i64) -> bool| -> Vec<i64> {
        samples.iter().filter(|(t, _)| keep(*t)).map(|(_, us)| *us).collect()
    };
    let sent_accept: Vec<(i64, i64)> = seen.timed_sent.iter().map(|(t, a, _)| (*t, *a)).collect();
    let sent_seen: Vec<(i64, i64)> = seen.timed_sent.iter().map(|(t, _, s)| (*t, *s)).collect();
    let mut accept_during = pick(&sent_accept, &during);
    let mut seen_during = pick(&sent_seen, &during);
    let mut intake_during = pick(&seen.intake, &during);
    let mut accept_before = pick(&sent_accept, &before);
    let mut intake_before = pick(&seen.intake, &before);

    let (wave_at, cpu_at, broker_at) = run.wave;
    let (drained_at, cpu_drained, broker_drained) = run.drained;
    let wall = drained_at.duration_since(wave_at).as_secs_f64();
    let cpu = cpu_at.zip(cpu_drained).map(|(a, b)| b - a);
    let mut notes = vec![
        format!(
            "due at {} {CUSTOMER_TZ}; first reminder sent {:.0} ms after, the last {:.1} s after; {:.0}/s first to last ({} reminders, {} .eml files)",
            wave.send_at,
            (first_ns - at_ns) as f64 / 1e6,
            (last_ns - at_ns) as f64 / 1e9,
            rate,
            seen.steps_sent,
            count_files(&outbox),
        ),
        format!(
            "channels' combined rate {}/s (email rate_per_second{})",
            args.channel_rate,
            if args.channel_rate >= 1_000_000 { ", lifted" } else { "" }
        ),
        format!(
            "{} new invoices during the wave: intake (publish -> invoice.accepted) p50/p99 {} / {} ms",
            accept_during.len(),
            ms(percentile_ms(&mut intake_during, 50.0)),
            ms(percentile_ms(&mut intake_during, 99.0)),
        ),
        format!(
            "{} in the {} s before it: publish -> accept p50/p99 {} / {} ms, intake {} / {} ms",
            accept_before.len(),
            args.wave_baseline_secs,
            ms(percentile_ms(&mut accept_before, 50.0)),
            ms(percentile_ms(&mut accept_before, 99.0)),
            ms(percentile_ms(&mut intake_before, 50.0)),
            ms(percentile_ms(&mut intake_before, 99.0)),
        ),
        format!(
            "load: {n} first requests in {:.1} s, due {:.0} s after the last; {} new invoices in all",
            run.loaded.duration_since(started).as_secs_f64(),
            wave_at.duration_since(run.loaded).as_secs_f64(),
            run.paced,
        ),
        "CPU figures: payrelay from the wave's time to its last reminder seen, the paced intake included".into(),
    ];
    let other: Vec<String> = seen
        .events
        .iter()
        .filter(|(name, _)| !["invoice.sent", "invoice.accepted", "invoice.journey_completed"].contains(&name.as_str()))
        .map(|(name, count)| format!("{count} {name}"))
        .collect();
    if !other.is_empty() || seen.duplicates > 0 {
        notes.push(format!("also: {} {} duplicate sent", other.join(", "), seen.duplicates));
        if let Some(p) = &seen.first_problem {
            notes.push(format!("first: {p}"));
        }
    }
    let row = Row {
        id: label,
        phase: format!(
            "5. wave: reminders due at once, new invoices paced at {:.0}/s meanwhile",
            args.wave_rate
        ),
        invoices: n,
        rate,
        compare: false,
        note: notes.join("; "),
        p50_ms: percentile_ms(&mut accept_during, 50.0),
        p99_ms: percentile_ms(&mut accept_during, 99.0),
        seen_p50_ms: percentile_ms(&mut seen_during, 50.0),
        seen_p99_ms: percentile_ms(&mut seen_during, 99.0),
        peak_rss_mb: stats.map(|(k, _)| k as f64 / 1024.0),
        cpu: cpu.filter(|_| wall > 0.0).map(|c| c / wall),
        cpu_us: cpu.map(|c| c * 1e6 / n as f64),
        broker_cpu_us: per_invoice_us(broker_at, broker_drained, n),
        load_before,
        load_after,
        db_bytes: None,
        steps: None,
    };
    eprintln!(
        "   {n} reminders drained at {rate:.0}/s; p50/p99 publish -> accept during the wave {} / {} ms; {}",
        ms(row.p50_ms),
        ms(row.p99_ms),
        row.note
    );
    Ok(row)
}

/// Waits for the load's first requests, publishes new invoices from
/// `--wave-baseline-secs` before the wave until its last reminder was
/// seen, then waits for those new invoices' first requests.
async fn wave_drive(
    args: &Args,
    service: &mut Service,
    prepared: &Prepared,
    wave: &WaveTime,
    n: usize,
) -> Result<WaveRun> {
    let observer = &prepared.observer;
    let stall = Duration::from_secs(args.stall_secs);
    let now_ms = || unix_ns() / 1_000_000;
    let until = |ms: i64| Duration::from_millis(u64::try_from(ms - now_ms()).unwrap_or(0));

    wait_for(service, stall, "first requests of the load", n, || {
        observer.with(|o| o.sent)
    })
    .await?;
    let loaded = Instant::now();
    if now_ms() > wave.at_ms - 1_000 {
        bail!(
            "the load's first requests went out only {:.1} s before the wave's time (or after it): \
             pass a larger --wave-lead-secs",
            (wave.at_ms - now_ms()) as f64 / 1_000.0
        );
    }
    tokio::time::sleep(until(wave.at_ms - args.wave_baseline_secs as i64 * 1_000)).await;

    let stop = Arc::new(AtomicBool::new(false));
    let publishing = {
        let (url, queue, window, rate) = (
            args.amqp_url.clone(),
            prepared.config.broker.queue.clone(),
            args.window,
            args.wave_rate,
        );
        // Their own journey step falls due a month later: planned, not sent.
        let due = wave.due + time::Duration::days(DUE_IN_DAYS);
        let stop = stop.clone();
        tokio::spawn(async move {
            let connection = connect(&url, "payrelay-bench paced publisher").await?;
            let batch = Batch {
                run: "wave",
                queue: &queue,
                first: n,
                n: usize::MAX - n,
                due,
            };
            let published = publish_invoices(&connection, window, &batch, Some(rate), Some(&stop)).await;
            let _ = connection.close(200, "bench paced publisher done".into()).await;
            published
        })
    };
    tokio::time::sleep(until(wave.at_ms)).await;
    let wave_at = (Instant::now(), cpu_secs(service.pid), broker_cpu_secs());

    let drained = wait_for(service, stall, "reminders of the wave", n, || {
        if publishing.is_finished() {
            // It only ends early on an error, which the join below reports.
            return usize::MAX;
        }
        observer.with(|o| o.steps_sent)
    })
    .await;
    let drained_at = (Instant::now(), cpu_secs(service.pid), broker_cpu_secs());
    stop.store(true, Ordering::Relaxed);
    let (paced, _) = publishing.await.context("the paced publisher panicked")??;
    drained?;
    wait_for(service, stall, "first requests of the new invoices", n + paced, || {
        observer.with(|o| o.sent)
    })
    .await?;
    Ok(WaveRun {
        loaded,
        wave: wave_at,
        drained: drained_at,
        paced,
    })
}

/// Waits until `count` reaches `n`, failing when the service exits or
/// nothing moves for `stall`.
async fn wait_for(
    service: &mut Service,
    stall: Duration,
    what: &str,
    n: usize,
    count: impl Fn() -> usize,
) -> Result<()> {
    let mut progress = (0, Instant::now());
    let mut last_report = Instant::now();
    loop {
        let done = count();
        if done >= n {
            return Ok(());
        }
        if done != progress.0 {
            progress = (done, Instant::now());
        } else if progress.1.elapsed() > stall {
            bail!(
                "stalled: no progress for {} s ({done} of {n} {what}); payrelay log: {}\n{}",
                stall.as_secs(),
                service.log.display(),
                log_tail(&service.log, 20)
            );
        }
        if let Some(why) = service.exited() {
            bail!(why);
        }
        if last_report.elapsed() > Duration::from_secs(5) {
            eprintln!("   ... {done} of {n} {what}");
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
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
        "prefetch {}, confirm window {}, invoice body {} bytes, SQLite store, channel rate limits {}\n",
        args.prefetch,
        args.window,
        INVOICE_BYTES,
        if args.channel_rate >= 1_000_000 {
            "lifted".to_owned()
        } else {
            format!("{}/s", args.channel_rate)
        }
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
    let by_id = |id: &str| rows.iter().find(|r| r.id == id);
    if let (Some(file), Some(journey)) = (by_id("file"), by_id("journey")) {
        let change = |with: f64, without: f64| format!("{:+.1}%", 100.0 * (with / without - 1.0));
        let cpu = match (journey.cpu_us, file.cpu_us) {
            (Some(with), Some(without)) => change(with, without),
            _ => "?".into(),
        };
        let mut line = format!(
            "\nJourney against file (issue 15: within 10%): invoices/s {}, payrelay CPU per invoice {cpu}",
            change(journey.rate, file.rate)
        );
        if let (Some(with), Some(without), Some(steps)) = (journey.db_bytes, file.db_bytes, journey.steps) {
            if steps > 0 {
                let _ = write!(
                    line,
                    "; SQLite pages in use {:.1} MB against {:.1} MB, {:.0} B more per step",
                    with as f64 / 1e6,
                    without as f64 / 1e6,
                    (with as f64 - without as f64) / steps as f64
                );
            }
        }
        let _ = writeln!(out, "{line}.");
    }
    if by_id("wave").is_some() {
        let _ = writeln!(
            out,
            "\nTarget (issue 15): reminders falling due together drain at the channels' combined rate (`--channel-rate`) with p99 publish->accept of new invoices during the wave < 100 ms."
        );
    }
    out
}
