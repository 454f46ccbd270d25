//! Journeys end to end, on the real binary, the real broker and real time:
//! the reminders that follow a first request go out at their `after`
//! times and end with `invoice.journey_completed`; a payment stops the
//! rest; two processes on one queue and one PostgreSQL store send every
//! step (and every message held by quiet hours) once between them; and a
//! process killed with SIGKILL between two steps loses none and sends none
//! twice. Steps are placed seconds apart, so each test runs in seconds; the
//! quiet-hours tests wait for a window that closes at a minute boundary
//! (12 to 72 s away), which sets the file's running time. The last two
//! keep steps in order when one is held, and on time when one runs late.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::pg::PgSchema;
use common::process::{free_port, per_recipient, Broker, Service};
use common::{invoice, AMQP_URL};
use hmac::{Hmac, Mac};
use payrelay::store::StepStatus;
use serde_json::Value;
use tokio::sync::mpsc::UnboundedReceiver;

/// The test biller's webhook secret, written literally in the configs.
const WEBHOOK_SECRET: &str = "journeys-test-webhook-secret";
/// How long after the last expected event a late second copy (another
/// instance's send, a step sent again) would surely have shown up: a
/// scheduler round is at most 1 s, an outbox round 250 ms.
const QUIET: Duration = Duration::from_secs(3);

// ---------------------------------------------------------------------------
// Harness

/// Writes `<name>.toml` in `dir`: the broker, the store, an HTTP port and
/// the acme biller, then `rest` (channels, routing, journeys).
fn write_config(dir: &Path, name: &str, broker: &Broker, store_url: &str, port: u16, rest: &str) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    let (queue, exchange) = (&broker.queue, &broker.exchange);
    std::fs::write(
        &path,
        format!(
            r#"
[broker]
url = "{AMQP_URL}"
queue = "{queue}"
events_exchange = "{exchange}"
prefetch = 32
[store]
url = "{store_url}"
[http]
listen = "127.0.0.1:{port}"
public_base_url = "http://127.0.0.1:{port}"
[billers.acme]
checkout_url = "https://pay.example/{{token}}"
webhook_secret = "{WEBHOOK_SECRET}"
{rest}
"#
        ),
    )
    .expect("write the test config");
    path
}

/// The last lines of the services' logs, for a failure message.
fn log_tails(configs: &[&Path]) -> String {
    configs
        .iter()
        .map(|c| {
            let log = std::fs::read_to_string(c.with_extension("log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            format!("{} (last lines first):\n{}", c.display(), tail.join("\n"))
        })
        .collect::<Vec<_>>()
        .join("\n---\n")
}

/// Receives events into `seen` until `done(seen)` holds; panics at
/// `deadline` with `what`, the last events and the services' logs.
async fn collect_until(
    events: &mut UnboundedReceiver<Value>,
    seen: &mut Vec<Value>,
    deadline: tokio::time::Instant,
    what: &str,
    logs: &[&Path],
    done: impl Fn(&[Value]) -> bool,
) {
    if !try_collect_until(events, seen, deadline, done).await {
        panic!(
            "timed out waiting for {what}; {} events so far, the last: {:#?}\n{}",
            seen.len(),
            &seen[seen.len().saturating_sub(3)..],
            log_tails(logs)
        )
    }
}

/// Receives events into `seen` until `done(seen)` holds (true) or
/// `deadline` passes (false).
async fn try_collect_until(
    events: &mut UnboundedReceiver<Value>,
    seen: &mut Vec<Value>,
    deadline: tokio::time::Instant,
    done: impl Fn(&[Value]) -> bool,
) -> bool {
    while !done(seen) {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(event)) => seen.push(event),
            _ => return false,
        }
    }
    true
}

/// Receives events into `seen` until none came for `quiet`.
async fn collect_until_quiet(events: &mut UnboundedReceiver<Value>, seen: &mut Vec<Value>, quiet: Duration) {
    while let Ok(Some(event)) = tokio::time::timeout(quiet, events.recv()).await {
        seen.push(event);
    }
}

/// Receives events into `seen` until `until`, however many come.
async fn collect_for(events: &mut UnboundedReceiver<Value>, seen: &mut Vec<Value>, until: tokio::time::Instant) {
    while let Ok(Some(event)) = tokio::time::timeout_at(until, events.recv()).await {
        seen.push(event);
    }
}

/// Each event once: the outbox publishes at least once, so after a kill an
/// event may come again with the same `event_id`.
fn distinct(seen: &[Value]) -> Vec<&Value> {
    let mut ids = BTreeSet::new();
    seen.iter()
        .filter(|e| ids.insert(e["event_id"].as_str().unwrap_or_default().to_owned()))
        .collect()
}

fn is(event: &Value, name: &str, invoice_id: &str) -> bool {
    event["event"] == name && event["invoice_id"] == invoice_id
}

/// `invoice.sent` for `invoice_id` and `step` (`None`: the first request).
fn is_sent(event: &Value, invoice_id: &str, step: Option<&str>) -> bool {
    is(event, "invoice.sent", invoice_id) && event["step"].as_str() == step
}

/// The event's `at`, in ms since the epoch.
fn at_ms(event: &Value) -> i64 {
    event["at"]
        .as_str()
        .and_then(|at| at.parse::<jiff::Timestamp>().ok())
        .map(|t| t.as_millisecond())
        .unwrap_or_else(|| panic!("an event without a readable `at`: {event}"))
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// What a send is about: (invoice, step or "-" for the first request, channel).
type SendKey = (String, String, String);

fn send_key(event: &Value) -> SendKey {
    (
        event["invoice_id"].as_str().unwrap_or_default().to_owned(),
        event["step"].as_str().unwrap_or("-").to_owned(),
        event["channel"].as_str().unwrap_or_default().to_owned(),
    )
}

/// How many distinct `invoice.sent` events each send has.
fn sends(seen: &[&Value]) -> BTreeMap<SendKey, usize> {
    let mut sends = BTreeMap::new();
    for event in seen.iter().filter(|e| e["event"] == "invoice.sent") {
        *sends.entry(send_key(event)).or_default() += 1;
    }
    sends
}

fn flagged_twice(event: &Value) -> bool {
    event["detail"]
        .as_str()
        .is_some_and(|d| d.contains("possibly sent twice"))
}

/// The ids of the messages the `file` providers wrote in `dir` (each
/// file's name is its provider message id).
fn written_ids(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "eml" || x == "json"))
        .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .collect()
}

/// A quiet-hours window in UTC that holds now and ends at a minute
/// boundary at least `ahead_s` seconds away (the window is written in
/// minutes): the window and its end in ms.
fn window_ending_soon(ahead_s: i64) -> (String, i64) {
    let now_s = now_ms() / 1000;
    let mut end_s = (now_s / 60 + 1) * 60;
    if end_s - now_s < ahead_s {
        end_s += 60;
    }
    let hhmm = |s: i64| format!("{:02}:{:02}", (s / 3600) % 24, (s / 60) % 60);
    (format!("{}-{}", hhmm(end_s - 3 * 3600), hhmm(end_s)), end_s * 1000)
}

/// `invoice(...)` in the customer's time zone UTC (so the window above
/// holds them), from `source`.
fn utc_invoice(invoice_id: &str, email: &str, source: &str) -> Value {
    let mut body = invoice(invoice_id, email);
    body["customer"]["timezone"] = "UTC".into();
    body["source"] = source.into();
    body
}

/// Opens the store the services used (after they stopped) and reads the
/// steps of `invoice_id`: (name, status) in order.
async fn step_statuses(store_url: &str, invoice_id: &str) -> Vec<(String, StepStatus)> {
    let store = payrelay::store::open(store_url, Arc::new(payrelay::domain::clock::SystemClock))
        .await
        .expect("the store opens");
    let steps = store.steps("acme", invoice_id).await.expect("steps read");
    steps.into_iter().map(|s| (s.name, s.status)).collect()
}

/// `X-Payrelay-Signature` for `body`, signed now with the biller's secret.
fn signature(body: &[u8]) -> String {
    let t = now_ms() / 1000;
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(WEBHOOK_SECRET.as_bytes()).expect("hmac key");
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

// ---------------------------------------------------------------------------
// 1. One process, real time

/// One process on SQLite, two invoices with a ladder of two email reminders
/// 2 s apart: one goes through its journey to `invoice.journey_completed`;
/// the other is paid (`POST /v1/payments`) after its first reminder and
/// gets nothing more, its second step cancelled in the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reminders_follow_the_request_at_their_times_and_a_payment_stops_the_rest() {
    const AFTER_MS: i64 = 2_000;
    // The scheduler looks at least every second; the rest is a loaded machine.
    const LATE_MS: i64 = 2_500;
    let broker = Broker::new("journey-e2e").await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(
        dir.path(),
        "payrelay",
        &broker,
        "sqlite://var/payrelay.db",
        port,
        r#"
[channels.email]
transport = "file"
outbox_dir = "outbox"
rate_per_second = 1000
[routing]
default = ["email"]
journey = "quick"
[journeys.quick]
steps = [
  { name = "first-reminder", after = "2s" },
  { name = "second-reminder", after = "2s" },
]
"#,
    );
    let mut events = broker.observe(&config).await;
    let mut service = Service::spawn(&config);
    broker
        .publish(
            &config,
            &[
                invoice("INV-OPEN", "open@example.com"),
                invoice("INV-PAID", "paid@example.com"),
            ],
        )
        .await;

    let logs = [config.as_path()];
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    collect_until(
        &mut events,
        &mut seen,
        deadline,
        "INV-PAID's first reminder",
        &logs,
        |s| s.iter().any(|e| is_sent(e, "INV-PAID", Some("first-reminder"))),
    )
    .await;
    let paid_reminded_at = seen
        .iter()
        .find(|e| is_sent(e, "INV-PAID", Some("first-reminder")))
        .map(at_ms)
        .unwrap();
    let body = br#"{"biller_id":"acme","invoice_id":"INV-PAID"}"#;
    let response = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/v1/payments"))
        .header("content-type", "application/json")
        .header("x-payrelay-signature", signature(body))
        .body(body.to_vec())
        .send()
        .await
        .expect("POST /v1/payments");
    assert_eq!(response.status(), 200, "{:?}", response.text().await);
    let paid_at = now_ms();
    assert!(
        paid_at < paid_reminded_at + AFTER_MS,
        "the payment came before INV-PAID's second reminder was due"
    );

    collect_until(
        &mut events,
        &mut seen,
        deadline,
        "INV-OPEN's journey to complete",
        &logs,
        |s| {
            s.iter().any(|e| is(e, "invoice.journey_completed", "INV-OPEN"))
                && s.iter().any(|e| is(e, "invoice.paid", "INV-PAID"))
        },
    )
    .await;
    // INV-PAID's second reminder would have gone 2 s after its first: wait
    // past that, and a scheduler round more.
    let wait = (paid_reminded_at + AFTER_MS + LATE_MS - now_ms()).max(0) as u64;
    collect_for(
        &mut events,
        &mut seen,
        tokio::time::Instant::now() + Duration::from_millis(wait),
    )
    .await;
    collect_until_quiet(&mut events, &mut seen, QUIET).await;
    service.kill();

    let of = |invoice_id: &str| -> Vec<(String, Option<String>)> {
        distinct(&seen)
            .into_iter()
            .filter(|e| e["invoice_id"] == invoice_id && e["event"] != "invoice.accepted")
            .map(|e| {
                (
                    e["event"].as_str().unwrap_or_default().to_owned(),
                    e["step"].as_str().map(str::to_owned),
                )
            })
            .collect()
    };
    let ev = |name: &str, step: Option<&str>| (name.to_owned(), step.map(str::to_owned));
    assert_eq!(
        of("INV-OPEN"),
        [
            ev("invoice.sent", None),
            ev("invoice.sent", Some("first-reminder")),
            ev("invoice.sent", Some("second-reminder")),
            ev("invoice.journey_completed", Some("second-reminder")),
        ],
        "the request, two reminders, then the journey completed, in that order"
    );
    assert_eq!(
        of("INV-PAID"),
        [
            ev("invoice.sent", None),
            ev("invoice.sent", Some("first-reminder")),
            ev("invoice.paid", None),
        ],
        "nothing after the payment: no second reminder, no journey_completed"
    );

    // Each reminder 2 s after the message before it, as `after` says.
    let open = |step: Option<&str>| at_ms(seen.iter().find(|e| is_sent(e, "INV-OPEN", step)).unwrap());
    let (request, first, second) = (open(None), open(Some("first-reminder")), open(Some("second-reminder")));
    for (what, gap) in [("first reminder", first - request), ("second reminder", second - first)] {
        assert!(
            (AFTER_MS..AFTER_MS + LATE_MS).contains(&gap),
            "the {what} went {gap} ms after the message before it; `after` is {AFTER_MS} ms"
        );
    }
    let completed = at_ms(
        seen.iter()
            .find(|e| is(e, "invoice.journey_completed", "INV-OPEN"))
            .unwrap(),
    );
    assert!(completed >= second, "journey_completed follows the last reminder");

    // What was written is what the events say: one file per send.
    let outbox = dir.path().join("outbox");
    let written = per_recipient(&outbox);
    assert_eq!(written.get("open@example.com"), Some(&3), "{written:?}");
    assert_eq!(written.get("paid@example.com"), Some(&2), "{written:?}");
    let mut files = written_ids(&outbox);
    let mut told: Vec<String> = distinct(&seen)
        .into_iter()
        .filter(|e| e["event"] == "invoice.sent")
        .filter_map(|e| e["provider_message_id"].as_str().map(str::to_owned))
        .collect();
    files.sort();
    told.sort();
    assert_eq!(files, told, "each file is one invoice.sent");

    let store_url = format!("sqlite://{}", dir.path().join("var/payrelay.db").display());
    assert_eq!(
        step_statuses(&store_url, "INV-OPEN").await,
        [
            ("first-reminder".to_owned(), StepStatus::Sent),
            ("second-reminder".to_owned(), StepStatus::Sent)
        ]
    );
    assert_eq!(
        step_statuses(&store_url, "INV-PAID").await,
        [
            ("first-reminder".to_owned(), StepStatus::Sent),
            ("second-reminder".to_owned(), StepStatus::Cancelled)
        ],
        "the payment cancelled the step still to come"
    );
}

// ---------------------------------------------------------------------------
// 2. Two processes, one queue, one PostgreSQL store

/// How many invoices of each kind the two-instance test sends.
const LADDERS: usize = 200;
const HELD_REQUESTS: usize = 30;
const HELD_STEPS: usize = 30;
/// The ladder's second step, in seconds after the first. Its exact value
/// does not matter any more (an `after` step waits for the one before it,
/// however late that runs); a few seconds keep the test short.
const AGAIN_S: i64 = 3;

/// Two processes on one queue and one PostgreSQL store: 200 invoices with a
/// ladder of two reminders, 30 whose first request (SMS) quiet hours hold,
/// and 30 whose one reminder (SMS) they hold, the window opening during the
/// test. Both schedulers claim from the same steps table and the same
/// holds: every message goes out once between them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_send_every_step_and_every_held_message_once_between_them() {
    let broker = Broker::new("journey-instances").await;
    let schema = PgSchema::create("payrelay_journeys").await;
    let store_url = schema.store_url().to_string();
    // Far enough ahead that every held invoice is in before the window opens.
    let (window, opens_ms) = window_ending_soon(12);
    let dir = tempfile::tempdir().unwrap();
    let configs: Vec<PathBuf> = ["a", "b"]
        .into_iter()
        .map(|instance| {
            write_config(
                dir.path(),
                instance,
                &broker,
                &store_url,
                free_port(),
                &format!(
                    r#"
[channels.email]
transport = "file"
outbox_dir = "email-{instance}"
rate_per_second = 10000
[channels.sms]
provider = "file"
outbox_dir = "sms-{instance}"
rate_per_second = 10000
[routing]
default = ["email"]
journey = "ladder"
quiet_hours = "{window}"

# First requests by SMS, held until the window opens; no reminders.
[[routing.rules]]
name = "held requests"
source = "held-request"
channels = ["sms"]
journey = "none"

# First requests by email at once, and one reminder by SMS, held.
[[routing.rules]]
name = "held steps"
source = "held-step"
channels = ["email"]
journey = "sms-nudge"

[journeys.ladder]
steps = [
  {{ name = "nudge", after = "1s" }},
  {{ name = "again", after = "{AGAIN_S}s" }},
]

[journeys.sms-nudge]
steps = [{{ name = "sms-nudge", after = "1s", channels = ["sms"] }}]
"#
                ),
            )
        })
        .collect();
    let mut events = broker.observe(&configs[0]).await;
    let mut services: Vec<Service> = configs.iter().map(|c| Service::spawn(c)).collect();

    let mut invoices = Vec::new();
    let mut expected: BTreeSet<SendKey> = BTreeSet::new();
    let mut journeys: BTreeSet<String> = BTreeSet::new();
    let key = |id: &str, step: &str, channel: &str| (id.to_owned(), step.to_owned(), channel.to_owned());
    for i in 0..HELD_REQUESTS {
        let id = format!("HR-{i}");
        invoices.push(utc_invoice(&id, &format!("hr{i}@example.com"), "held-request"));
        expected.insert(key(&id, "-", "sms"));
    }
    for i in 0..HELD_STEPS {
        let id = format!("HS-{i}");
        invoices.push(utc_invoice(&id, &format!("hs{i}@example.com"), "held-step"));
        expected.insert(key(&id, "-", "email"));
        expected.insert(key(&id, "sms-nudge", "sms"));
        journeys.insert(id);
    }
    for i in 0..LADDERS {
        let id = format!("L-{i}");
        invoices.push(utc_invoice(&id, &format!("l{i}@example.com"), "erp"));
        for step in ["-", "nudge", "again"] {
            expected.insert(key(&id, step, "email"));
        }
        journeys.insert(id);
    }
    broker.publish(&configs[0], &invoices).await;

    let logs: Vec<&Path> = configs.iter().map(PathBuf::as_path).collect();
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_millis((opens_ms - now_ms()).max(0) as u64 + 40_000);
    let sent = |s: &[Value]| -> BTreeSet<SendKey> {
        s.iter()
            .filter(|e| e["event"] == "invoice.sent")
            .map(send_key)
            .collect()
    };
    let completed = |s: &[Value]| -> BTreeSet<String> {
        s.iter()
            .filter(|e| e["event"] == "invoice.journey_completed")
            .map(|e| e["invoice_id"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    let done = try_collect_until(&mut events, &mut seen, deadline, |s| {
        sent(s).len() >= expected.len() && completed(s).len() >= journeys.len()
    })
    .await;
    if !done {
        let (sent, completed) = (sent(&seen), completed(&seen));
        let missing: Vec<&SendKey> = expected.difference(&sent).collect();
        let incomplete: Vec<&String> = journeys.difference(&completed).collect();
        panic!(
            "timed out (window {window}): {} sends missing, for example {:?}; {} journeys not completed, for example {:?}\n{}",
            missing.len(),
            &missing[..missing.len().min(8)],
            incomplete.len(),
            &incomplete[..incomplete.len().min(8)],
            log_tails(&logs)
        );
    }
    collect_until_quiet(&mut events, &mut seen, QUIET).await;
    for service in &mut services {
        service.kill();
    }

    // Every send exactly once, none of them flagged as possibly doubled.
    let all: Vec<&Value> = seen.iter().collect();
    let told = sends(&all);
    let twice: Vec<(&SendKey, &usize)> = told.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(twice.is_empty(), "each send is told once; for example {twice:?}");
    let told_keys: BTreeSet<SendKey> = told.keys().cloned().collect();
    assert_eq!(
        told_keys.symmetric_difference(&expected).take(5).collect::<Vec<_>>(),
        Vec::<&SendKey>::new(),
        "exactly the expected sends"
    );
    let flagged: Vec<&Value> = all.iter().copied().filter(|e| flagged_twice(e)).take(3).collect();
    assert!(flagged.is_empty(), "nothing is possibly sent twice: {flagged:#?}");
    let mut completed: BTreeMap<String, usize> = BTreeMap::new();
    for event in all.iter().filter(|e| e["event"] == "invoice.journey_completed") {
        *completed
            .entry(event["invoice_id"].as_str().unwrap_or_default().to_owned())
            .or_default() += 1;
    }
    assert_eq!(completed.keys().cloned().collect::<BTreeSet<_>>(), journeys);
    assert!(completed.values().all(|n| *n == 1), "one journey_completed per journey");

    // The held messages waited for the window, and were in before it.
    for event in all
        .iter()
        .filter(|e| e["event"] == "invoice.sent" && e["channel"] == "sms")
    {
        assert!(at_ms(event) >= opens_ms, "no SMS before the window opens: {event}");
    }
    for event in all.iter().filter(|e| e["event"] == "invoice.accepted") {
        let id = event["invoice_id"].as_str().unwrap_or_default();
        if id.starts_with("HR-") || id.starts_with("HS-") {
            assert!(at_ms(event) < opens_ms, "{id} was taken in before the window opened");
        }
    }
    // Each ladder in order, each step its `after` after the message before.
    let sent_at = |id: &str, step: Option<&str>| all.iter().find(|e| is_sent(e, id, step)).map(|e| at_ms(e));
    for i in 0..LADDERS {
        let id = format!("L-{i}");
        let (Some(request), Some(nudge), Some(again)) = (
            sent_at(&id, None),
            sent_at(&id, Some("nudge")),
            sent_at(&id, Some("again")),
        ) else {
            panic!("{id} has every send");
        };
        assert!(
            nudge - request >= 1_000 && again - nudge >= AGAIN_S * 1_000,
            "{id}: nudge {} ms after the request, again {} ms after the nudge",
            nudge - request,
            again - nudge
        );
    }

    // Each file is one send, and the two instances shared the work.
    let mut files = Vec::new();
    let mut per_instance = Vec::new();
    for instance in ["a", "b"] {
        let (email, sms) = (
            written_ids(&dir.path().join(format!("email-{instance}"))),
            written_ids(&dir.path().join(format!("sms-{instance}"))),
        );
        per_instance.push((instance, email.len(), sms.len()));
        files.extend(email);
        files.extend(sms);
    }
    let mut ids: Vec<String> = all
        .iter()
        .filter(|e| e["event"] == "invoice.sent")
        .filter_map(|e| e["provider_message_id"].as_str().map(str::to_owned))
        .collect();
    files.sort();
    ids.sort();
    assert_eq!(files.len(), expected.len(), "one message per send: {per_instance:?}");
    assert_eq!(files, ids, "each file is one invoice.sent");
    let steps_by: Vec<usize> = ["a", "b"]
        .iter()
        .map(|instance| {
            let written: BTreeSet<String> = written_ids(&dir.path().join(format!("email-{instance}")))
                .into_iter()
                .chain(written_ids(&dir.path().join(format!("sms-{instance}"))))
                .collect();
            all.iter()
                .filter(|e| e["event"] == "invoice.sent" && !e["step"].is_null())
                .filter(|e| e["provider_message_id"].as_str().is_some_and(|id| written.contains(id)))
                .count()
        })
        .collect();
    println!(
        "window {window}; (instance, emails, SMS): {per_instance:?}; steps sent by a and b: {steps_by:?}; {} events",
        seen.len()
    );
    assert!(
        per_instance.iter().all(|(_, email, sms)| email + sms > 0),
        "both instances sent: {per_instance:?}"
    );
}

// ---------------------------------------------------------------------------
// 3. SIGKILL between steps

/// Steps named `name` still planned in the SQLite store at `db`, and how
/// many of them an instance has claimed, read beside the running service
/// (WAL lets a reader in next to the writer).
fn planned(db: &Path, name: &str) -> (i64, i64) {
    let connection = rusqlite::Connection::open(db).expect("the store's SQLite file opens");
    connection
        .query_row(
            "SELECT COUNT(*), COUNT(claimed_ms) FROM steps WHERE name = ?1 AND status = 'planned'",
            [name],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .expect("steps read")
}

/// Invoices with an `invoice.sent` for `step` (`None`: the first request).
fn sent_for(seen: &[Value], step: Option<&str>) -> usize {
    seen.iter()
        .filter(|e| e["event"] == "invoice.sent" && e["step"].as_str() == step)
        .map(|e| e["invoice_id"].as_str().unwrap_or_default().to_owned())
        .collect::<BTreeSet<_>>()
        .len()
}

/// The process is killed twice, each time with every invoice between two
/// steps (the store shows the next step planned and unclaimed), and
/// restarted at once on the same store: every step still goes out, each
/// once, and each journey completes once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkill_between_steps_loses_no_step_and_sends_none_twice() {
    const N: usize = 20;
    let broker = Broker::new("journey-kill").await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "payrelay",
        &broker,
        "sqlite://var/payrelay.db",
        free_port(),
        r#"
[channels.email]
transport = "file"
outbox_dir = "outbox"
rate_per_second = 10000
[routing]
default = ["email"]
journey = "quick"
[journeys.quick]
steps = [
  { name = "nudge", after = "4s" },
  { name = "again", after = "4s" },
]
"#,
    );
    let db = dir.path().join("var/payrelay.db");
    let logs = [config.as_path()];
    let mut events = broker.observe(&config).await;
    let invoices: Vec<Value> = (0..N)
        .map(|i| invoice(&format!("K-{i}"), &format!("k{i}@example.com")))
        .collect();
    broker.publish(&config, &invoices).await;

    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut service = Service::spawn(&config);
    collect_until(&mut events, &mut seen, deadline, "every first request", &logs, |s| {
        sent_for(s, None) == N
    })
    .await;
    service.kill();
    assert_eq!(
        (sent_for(&seen, Some("nudge")), planned(&db, "nudge")),
        (0, (N as i64, 0)),
        "killed with every first request out and every nudge planned, none claimed"
    );

    let mut service = Service::spawn(&config);
    collect_until(&mut events, &mut seen, deadline, "every nudge", &logs, |s| {
        sent_for(s, Some("nudge")) == N
    })
    .await;
    // A nudge's step is ended just after its send is recorded: wait for
    // the last few, then kill before any "again" is due.
    while planned(&db, "nudge").0 > 0 {
        assert!(tokio::time::Instant::now() < deadline, "the nudges never ended");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    service.kill();
    assert_eq!(
        (sent_for(&seen, Some("again")), planned(&db, "again")),
        (0, (N as i64, 0)),
        "killed with every nudge out and every second reminder planned, none claimed"
    );

    let mut service = Service::spawn(&config);
    collect_until(
        &mut events,
        &mut seen,
        deadline,
        "every journey to complete",
        &logs,
        |s| {
            s.iter()
                .filter(|e| e["event"] == "invoice.journey_completed")
                .map(|e| e["invoice_id"].as_str().unwrap_or_default().to_owned())
                .collect::<BTreeSet<_>>()
                .len()
                == N
        },
    )
    .await;
    collect_until_quiet(&mut events, &mut seen, QUIET).await;
    service.kill();

    // Every step of every invoice went out once: one file per send, and a
    // send told twice only if flagged as possibly doubled (none expected,
    // as nothing was in flight at either kill).
    let unique = distinct(&seen);
    let told = sends(&unique);
    let mut expected = BTreeSet::new();
    for i in 0..N {
        for step in ["-", "nudge", "again"] {
            expected.insert((format!("K-{i}"), step.to_owned(), "email".to_owned()));
        }
    }
    assert_eq!(told.keys().cloned().collect::<BTreeSet<_>>(), expected);
    let flagged: Vec<&&Value> = unique.iter().filter(|e| flagged_twice(e)).collect();
    assert!(flagged.is_empty(), "nothing was in flight at a kill: {flagged:#?}");
    let twice: Vec<(&SendKey, &usize)> = told.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "each send once: {twice:?}");
    let written = per_recipient(&dir.path().join("outbox"));
    assert_eq!(written.len(), N, "every customer was written to");
    assert!(
        written.values().all(|n| *n == 3),
        "three messages per customer: {written:?}"
    );
    let completed = unique
        .iter()
        .filter(|e| e["event"] == "invoice.journey_completed")
        .count();
    assert_eq!(completed, N, "one journey_completed per invoice");

    let store_url = format!("sqlite://{}", db.display());
    for i in 0..N {
        assert_eq!(
            step_statuses(&store_url, &format!("K-{i}")).await,
            [
                ("nudge".to_owned(), StepStatus::Sent),
                ("again".to_owned(), StepStatus::Sent)
            ],
            "K-{i}"
        );
    }
    println!(
        "{} events received, {} distinct (the rest published again after a kill)",
        seen.len(),
        unique.len()
    );
}

// ---------------------------------------------------------------------------
// 4. `after` steps held by quiet hours

/// An `after` step counts from the message before it, so the steps of a
/// journey go out in order (docs/configuration.md). Here quiet hours hold
/// the first reminder (SMS) until the window opens: the second must then
/// wait for it, whether it goes by SMS (held too) or by email (not held),
/// and the journey completes once, after both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_steps_held_by_quiet_hours_go_out_in_order_each_once() {
    const N: usize = 5;
    let broker = Broker::new("journey-held-steps").await;
    let (window, opens_ms) = window_ending_soon(8);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "payrelay",
        &broker,
        "sqlite://var/payrelay.db",
        free_port(),
        &format!(
            r#"
[channels.email]
transport = "file"
outbox_dir = "email"
rate_per_second = 1000
[channels.sms]
provider = "file"
outbox_dir = "sms"
rate_per_second = 1000
[routing]
default = ["email"]
quiet_hours = "{window}"

[[routing.rules]]
name = "sms then sms"
source = "sms-sms"
channels = ["email"]
journey = "sms-sms"

[[routing.rules]]
name = "sms then email"
source = "sms-email"
channels = ["email"]
journey = "sms-email"

[journeys.sms-sms]
steps = [
  {{ name = "nudge", after = "1s", channels = ["sms"] }},
  {{ name = "again", after = "2s", channels = ["sms"] }},
]

[journeys.sms-email]
steps = [
  {{ name = "nudge", after = "1s", channels = ["sms"] }},
  {{ name = "again", after = "2s", channels = ["email"] }},
]
"#
        ),
    );
    let mut events = broker.observe(&config).await;
    let mut service = Service::spawn(&config);
    let mut invoices = Vec::new();
    for source in ["sms-sms", "sms-email"] {
        for i in 0..N {
            invoices.push(utc_invoice(
                &format!("{source}-{i}"),
                &format!("{source}-{i}@example.com"),
                source,
            ));
        }
    }
    broker.publish(&config, &invoices).await;

    // The window opens, the held reminders go, the second ones 2 s after
    // them; a scheduler round and a quiet spell more.
    let mut seen = Vec::new();
    let until = tokio::time::Instant::now() + Duration::from_millis((opens_ms - now_ms()).max(0) as u64 + 5_000);
    collect_for(&mut events, &mut seen, until).await;
    collect_until_quiet(&mut events, &mut seen, QUIET).await;
    service.kill();

    let mut wrong = Vec::new();
    for invoice in &invoices {
        let id = invoice["invoice_id"].as_str().unwrap_or_default();
        let journey: Vec<(String, Option<String>, i64)> = distinct(&seen)
            .into_iter()
            .filter(|e| {
                e["invoice_id"] == id && (e["event"] == "invoice.sent" || e["event"] == "invoice.journey_completed")
            })
            .map(|e| {
                (
                    e["event"].as_str().unwrap_or_default().to_owned(),
                    e["step"].as_str().map(str::to_owned),
                    at_ms(e),
                )
            })
            .collect();
        let shape: Vec<(&str, Option<&str>)> = journey.iter().map(|(e, s, _)| (e.as_str(), s.as_deref())).collect();
        let in_order = shape
            == [
                ("invoice.sent", None),
                ("invoice.sent", Some("nudge")),
                ("invoice.sent", Some("again")),
                ("invoice.journey_completed", Some("again")),
            ];
        let timely = in_order && journey[1].2 >= opens_ms && journey[2].2 - journey[1].2 >= 2_000;
        if !timely {
            let offsets: Vec<String> = journey
                .iter()
                .map(|(e, s, at)| format!("{e} {} at window{:+} ms", s.as_deref().unwrap_or("-"), at - opens_ms))
                .collect();
            wrong.push(format!("{id}: {offsets:?}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "each invoice: the request, the held nudge when the window opens, the second reminder 2 s after it, \
         then journey_completed once; window {window}:\n{}",
        wrong.join("\n")
    );
}

// ---------------------------------------------------------------------------
// 5. A step that runs late

/// How long the SMS provider takes to answer the slow invoice's reminder.
const SLOW_SEND: Duration = Duration::from_secs(6);

/// One invoice's reminder goes to an SMS provider that takes 6 s to answer.
/// Other invoices, taken in just after it, have a ladder of two email
/// reminders 1 s and 2 s apart: their steps must not wait for the slow
/// one, and each must go out once, in order, the second 2 s after the
/// first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_send_neither_holds_back_nor_loses_other_invoices_steps() {
    const FAST: usize = 5;
    let twilio = wiremock::MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .respond_with(
            wiremock::ResponseTemplate::new(201)
                .set_body_json(serde_json::json!({"sid": "SM0123456789abcdef0123456789abcdef"}))
                .set_delay(SLOW_SEND),
        )
        .mount(&twilio)
        .await;
    let broker = Broker::new("journey-slow").await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "payrelay",
        &broker,
        "sqlite://var/payrelay.db",
        free_port(),
        &format!(
            r#"
[channels.email]
transport = "file"
outbox_dir = "email"
rate_per_second = 1000
[channels.sms]
provider = "twilio"
base_url = "{twilio}"
account_sid = "AC0123456789abcdef0123456789abcdef"
auth_token = "twilio-auth-token-journeys"
from = "+15005550006"
timeout = "20s"
[routing]
default = ["email"]
journey = "ladder"

[[routing.rules]]
name = "slow"
source = "slow"
channels = ["email"]
journey = "slow-sms"

[journeys.ladder]
steps = [
  {{ name = "nudge", after = "1s" }},
  {{ name = "again", after = "2s" }},
]

[journeys.slow-sms]
steps = [{{ name = "sms", after = "1s", channels = ["sms"] }}]
"#,
            twilio = twilio.uri()
        ),
    );
    let logs = [config.as_path()];
    let mut events = broker.observe(&config).await;
    let mut service = Service::spawn(&config);
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    broker
        .publish(&config, &[utc_invoice("SLOW", "slow@example.com", "slow")])
        .await;
    collect_until(
        &mut events,
        &mut seen,
        deadline,
        "the slow invoice's request",
        &logs,
        |s| s.iter().any(|e| is_sent(e, "SLOW", None)),
    )
    .await;
    // The fast ones come due while the slow reminder is with the provider.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let fast: Vec<Value> = (0..FAST)
        .map(|i| invoice(&format!("FAST-{i}"), &format!("fast{i}@example.com")))
        .collect();
    broker.publish(&config, &fast).await;
    let done = try_collect_until(&mut events, &mut seen, deadline, |s| {
        s.iter().filter(|e| e["event"] == "invoice.journey_completed").count() > FAST
    })
    .await;
    collect_until_quiet(&mut events, &mut seen, QUIET).await;
    service.kill();
    assert!(done, "every journey completed: {}", log_tails(&logs));

    let slow_sent = seen.iter().find(|e| is_sent(e, "SLOW", Some("sms"))).map(at_ms);
    let mut wrong = Vec::new();
    for i in 0..FAST {
        let id = format!("FAST-{i}");
        let steps: Vec<(Option<String>, i64)> = distinct(&seen)
            .into_iter()
            .filter(|e| e["invoice_id"] == id.as_str() && e["event"] == "invoice.sent")
            .map(|e| (e["step"].as_str().map(str::to_owned), at_ms(e)))
            .collect();
        let names: Vec<Option<&str>> = steps.iter().map(|(s, _)| s.as_deref()).collect();
        let ok = names == [None, Some("nudge"), Some("again")]
            && (1_000..3_000).contains(&(steps[1].1 - steps[0].1))
            && steps[2].1 - steps[1].1 >= 2_000;
        if !ok {
            let offsets: Vec<String> = steps
                .iter()
                .map(|(s, at)| format!("{} at +{} ms", s.as_deref().unwrap_or("request"), at - steps[0].1))
                .collect();
            wrong.push(format!("{id}: {offsets:?}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "each fast invoice: the request, its nudge 1 s later, the second reminder 2 s after the nudge \
         (the slow SMS went at {slow_sent:?}):\n{}",
        wrong.join("\n")
    );
}
