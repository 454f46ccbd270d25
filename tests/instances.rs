//! Two payrelay processes on one queue and one PostgreSQL store share the
//! work, and no invoice is handled twice: every invoice is published twice,
//! so copies of the same invoice land on both instances at once. Their
//! events reach billers once each, and each invoice's in order.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::pg::PgSchema;
use common::process::{free_port, observe_events, recipients, Service};
use common::{invoice, AMQP_URL};
use lapin::{Connection, ConnectionProperties};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_one_queue_and_one_postgres_and_send_each_invoice_once() {
    const N: usize = 300;
    const SETTLE: Duration = Duration::from_secs(90);
    const QUIET: Duration = Duration::from_secs(2);
    let id = payrelay::domain::ids::random_id()[..10].to_owned();
    // Dropped when the test ends, also when it fails.
    let schema = PgSchema::create("payrelay_instances").await;
    let store_url = schema.store_url();

    let dir = tempfile::tempdir().unwrap();
    let queue = format!("payrelay.test.{id}.instances");
    let exchange = format!("payrelay.test.{id}.instances-events");
    let mut configs = Vec::new();
    for instance in ["a", "b"] {
        let port = free_port();
        let path = dir.path().join(format!("{instance}.toml"));
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
[billers.acme]
checkout_url = "https://pay.example/{{token}}"
[channels.email]
transport = "file"
outbox_dir = "outbox-{instance}"
rate_per_second = 10000
"#
            ),
        )
        .unwrap();
        configs.push(path);
    }
    let config = payrelay::config::Config::load(&configs[0]).unwrap();

    let amqp = Connection::connect(AMQP_URL, ConnectionProperties::default())
        .await
        .unwrap();
    let channel = amqp.create_channel().await.unwrap();
    let mut events = observe_events(&channel, &config.broker).await;

    let mut services: Vec<Service> = configs.iter().map(|c| Service::spawn(c)).collect();
    // Both copies of each invoice, back to back, so they go to both consumers.
    let bodies: Vec<String> = (0..N)
        .flat_map(|i| {
            let body = invoice(&format!("INV-{i}"), &format!("c{i}@example.com")).to_string();
            [body.clone(), body]
        })
        .collect();
    let refs: Vec<&str> = bodies.iter().map(String::as_str).collect();
    payrelay::broker::publish::publish(&config.broker, &refs).await.unwrap();

    let mut outcomes: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    // Every event as it arrived, to count copies and check order below.
    let mut seen: Vec<serde_json::Value> = Vec::new();
    let deadline = tokio::time::Instant::now() + SETTLE;
    let settled = |o: &BTreeMap<String, (usize, usize)>| o.len() == N && o.values().all(|(s, d)| *s > 0 && *d > 0);
    while !settled(&outcomes) {
        let event = match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(event)) => event,
            _ => {
                let logs: String = configs
                    .iter()
                    .map(|c| std::fs::read_to_string(c.with_extension("log")).unwrap_or_default())
                    .collect::<Vec<_>>()
                    .join("\n---\n");
                let tail: String = logs.lines().rev().take(40).collect::<Vec<_>>().join("\n");
                panic!(
                    "only {} invoices settled; service logs (last lines first):\n{tail}",
                    outcomes.values().filter(|(s, d)| *s > 0 && *d > 0).count()
                )
            }
        };
        let id = event["invoice_id"].as_str().unwrap_or_default().to_owned();
        match event["event"].as_str() {
            Some("invoice.sent") => outcomes.entry(id).or_default().0 += 1,
            Some("invoice.duplicate") => outcomes.entry(id).or_default().1 += 1,
            _ => {}
        }
        seen.push(event);
    }
    // A second copy of an event would come within a publisher round or two
    // (250 ms when idle): wait for QUIET without any event before counting.
    while let Ok(Some(event)) = tokio::time::timeout(QUIET, events.recv()).await {
        seen.push(event);
    }
    for service in &mut services {
        service.kill();
    }

    let a = recipients(&dir.path().join("outbox-a"));
    let b = recipients(&dir.path().join("outbox-b"));
    assert!(
        !a.is_empty() && !b.is_empty(),
        "both instances worked: {} and {}",
        a.len(),
        b.len()
    );
    let mut emails: BTreeMap<String, usize> = BTreeMap::new();
    for to in a.iter().chain(&b) {
        *emails.entry(to.clone()).or_default() += 1;
    }
    assert_eq!(emails.len(), N);
    assert!(emails.values().all(|n| *n == 1), "no customer got two emails");

    // Each event is told once: one copy per (event, invoice, revision,
    // channel, attempt), and per invoice in the order it happened.
    let mut copies: BTreeMap<String, usize> = BTreeMap::new();
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    for event in &seen {
        let identity = ["event", "biller_id", "invoice_id", "revision", "channel", "attempt"]
            .map(|field| event[field].to_string())
            .join(" ");
        *copies.entry(identity).or_default() += 1;
        *kinds
            .entry(event["event"].as_str().unwrap_or("?").to_owned())
            .or_default() += 1;
    }
    let extra: usize = copies.values().map(|n| n - 1).sum();
    // Per invoice, in arrival order. A copy that reaches the instance already
    // handling the same key is a duplicate at once, decided in memory before
    // the first copy's accepted is even stored ("being handled right now"),
    // so its event is older than accepted and rightly comes first. Every
    // other duplicate is decided by the store and must follow accepted.
    let mut order: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for event in &seen {
        let invoice = event["invoice_id"].as_str().unwrap_or_default();
        let name = match (event["event"].as_str(), event["detail"].as_str()) {
            (Some("invoice.duplicate"), Some(d)) if d.contains("right now") => "duplicate in memory",
            (Some(name), _) => name,
            _ => "?",
        };
        order.entry(invoice).or_default().push(name);
    }
    let out_of_order: Vec<(&str, &Vec<&str>)> = order
        .iter()
        .filter(|(_, names)| {
            let told: Vec<&str> = names.iter().copied().filter(|n| *n != "duplicate in memory").collect();
            told.first() != Some(&"invoice.accepted") || told.iter().filter(|n| **n == "invoice.accepted").count() != 1
        })
        .map(|(invoice, names)| (*invoice, names))
        .collect();
    let in_memory = order
        .values()
        .filter(|names| names.contains(&"duplicate in memory"))
        .count();
    println!(
        "instance a sent {}, instance b sent {}; {} events received, {} distinct, {extra} extra copies; by kind: {kinds:?}; \
         {in_memory} duplicates decided in memory; {} invoices whose events came out of order",
        a.len(),
        b.len(),
        seen.len(),
        copies.len(),
        out_of_order.len(),
    );
    let repeated: Vec<(&String, &usize)> = copies.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert_eq!(
        extra, 0,
        "every event is published exactly once; for example {repeated:?}"
    );
    assert_eq!(
        copies.len(),
        3 * N,
        "accepted, sent and duplicate for each invoice: {kinds:?}"
    );
    assert!(
        out_of_order.is_empty(),
        "each invoice's events come in order, accepted first (then sent, and a duplicate the store decided): {:?}",
        &out_of_order[..out_of_order.len().min(5)]
    );

    for q in [queue.clone(), format!("{queue}.dead")] {
        let _ = channel.queue_delete(q.as_str().into(), Default::default()).await;
    }
    let _ = channel
        .exchange_delete(exchange.as_str().into(), Default::default())
        .await;
}

/// Two instances on one queue and one PostgreSQL store, invoices held by
/// quiet hours: when the window opens, both schedulers wake at the same
/// hold end, and each held invoice must still be sent once, by one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_send_each_quiet_hours_hold_once_when_the_window_opens() {
    const N: usize = 30;
    const QUIET: Duration = Duration::from_secs(3);
    let id = payrelay::domain::ids::random_id()[..10].to_owned();
    let schema = PgSchema::create("payrelay_holds").await;
    let store_url = schema.store_url();

    // Quiet hours (UTC) that hold now and end at a minute boundary 20 to 80 s
    // away: the window is written in minutes.
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let end_s = (now_s / 60 + if now_s % 60 > 40 { 2 } else { 1 }) * 60;
    let hhmm = |s: u64| format!("{:02}:{:02}", (s / 3600) % 24, (s / 60) % 60);
    let window = format!("{}-{}", hhmm(end_s - 3 * 3600), hhmm(end_s));

    let dir = tempfile::tempdir().unwrap();
    let queue = format!("payrelay.test.{id}.holds");
    let exchange = format!("payrelay.test.{id}.holds-events");
    let mut configs = Vec::new();
    for instance in ["a", "b"] {
        let port = free_port();
        let path = dir.path().join(format!("{instance}.toml"));
        std::fs::write(
            &path,
            format!(
                r#"
[broker]
url = "{AMQP_URL}"
queue = "{queue}"
events_exchange = "{exchange}"
[store]
url = "{store_url}"
[http]
listen = "127.0.0.1:{port}"
[billers.acme]
checkout_url = "https://pay.example/{{token}}"
[channels.sms]
provider = "file"
outbox_dir = "sms-{instance}"
rate_per_second = 10000
[routing]
default = ["sms"]
quiet_hours = "{window}"
"#
            ),
        )
        .unwrap();
        configs.push(path);
    }
    let config = payrelay::config::Config::load(&configs[0]).unwrap();
    let amqp = Connection::connect(AMQP_URL, ConnectionProperties::default())
        .await
        .unwrap();
    let channel = amqp.create_channel().await.unwrap();
    let mut events = observe_events(&channel, &config.broker).await;

    let mut services: Vec<Service> = configs.iter().map(|c| Service::spawn(c)).collect();
    let bodies: Vec<String> = (0..N)
        .map(|i| {
            let mut body = invoice(&format!("INV-{i}"), &format!("c{i}@example.com"));
            body["customer"]["timezone"] = "UTC".into();
            body.to_string()
        })
        .collect();
    let refs: Vec<&str> = bodies.iter().map(String::as_str).collect();
    payrelay::broker::publish::publish(&config.broker, &refs).await.unwrap();

    let mut sent: BTreeMap<String, usize> = BTreeMap::new();
    let mut early = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(end_s - now_s + 60);
    while sent.len() < N {
        let Ok(Some(event)) = tokio::time::timeout_at(deadline, events.recv()).await else {
            panic!(
                "only {} of {N} held invoices were sent after the window opened",
                sent.len()
            );
        };
        if event["event"] == "invoice.sent" {
            let at_s = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs();
            early += usize::from(at_s < end_s);
            *sent
                .entry(event["invoice_id"].as_str().unwrap_or_default().to_owned())
                .or_default() += 1;
        }
    }
    // A second send by the other instance would follow within a scheduler
    // round (at most 1 s).
    while let Ok(Some(event)) = tokio::time::timeout(QUIET, events.recv()).await {
        if event["event"] == "invoice.sent" {
            *sent
                .entry(event["invoice_id"].as_str().unwrap_or_default().to_owned())
                .or_default() += 1;
        }
    }
    for service in &mut services {
        service.kill();
    }
    let files = |name: &str| {
        std::fs::read_dir(dir.path().join(name))
            .map(|entries| {
                entries
                    .flatten()
                    .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
                    .count()
            })
            .unwrap_or(0)
    };
    let (a, b) = (files("sms-a"), files("sms-b"));
    println!("window {window}; instance a sent {a}, instance b sent {b}");
    assert_eq!(early, 0, "nothing is sent before the window opens");
    assert_eq!(a + b, N, "one SMS per invoice: {a} from a, {b} from b");
    let twice: Vec<(&String, &usize)> = sent.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(twice.is_empty(), "one invoice.sent per invoice; for example {twice:?}");

    for q in [queue.clone(), format!("{queue}.dead")] {
        let _ = channel.queue_delete(q.as_str().into(), Default::default()).await;
    }
    let _ = channel
        .exchange_delete(exchange.as_str().into(), Default::default())
        .await;
}
