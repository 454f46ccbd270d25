//! Faults, on the real broker and store: a process killed with SIGKILL in
//! the middle of thousands of invoices, and the broker closing payrelay's
//! connection. Every invoice must reach its outcome; a second send may only
//! happen for a send in flight at the kill, and then it is flagged.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::Duration;

use common::process::{free_port, observe_events, per_recipient, recipients, Service};
use common::{invoice, Options, TestEnv, AMQP_URL, WAIT};
use lapin::{Connection, ConnectionProperties};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkill_in_the_middle_of_thousands_loses_nothing_and_flags_every_possible_duplicate() {
    const N: usize = 2000;
    let id = payrelay::domain::ids::random_id()[..10].to_owned();
    let dir = tempfile::tempdir().unwrap();
    let queue = format!("payrelay.test.{id}.crash");
    let exchange = format!("payrelay.test.{id}.crash-events");
    let port = free_port();
    let config_path = dir.path().join("config.toml");
    std::fs::write(
        &config_path,
        format!(
            r#"
[broker]
url = "{AMQP_URL}"
queue = "{queue}"
events_exchange = "{exchange}"
prefetch = 128
[http]
listen = "127.0.0.1:{port}"
[billers.acme]
checkout_url = "https://pay.example/{{token}}"
[channels.email]
transport = "file"
rate_per_second = 10000
"#
        ),
    )
    .unwrap();
    let config = payrelay::config::Config::load(&config_path).unwrap();

    // Record every event from before the first start.
    // Record every event from before the first start.
    let amqp = Connection::connect(AMQP_URL, ConnectionProperties::default())
        .await
        .unwrap();
    let channel = amqp.create_channel().await.unwrap();
    let mut events_rx = observe_events(&channel, &config.broker).await;

    let bodies: Vec<String> = (0..N)
        .map(|i| invoice(&format!("INV-{i}"), &format!("c{i}@example.com")).to_string())
        .collect();
    let refs: Vec<&str> = bodies.iter().map(String::as_str).collect();
    payrelay::broker::publish::publish(&config.broker, &refs).await.unwrap();

    let outbox = dir.path().join("var/outbox/email");
    let mut service = Service::spawn(&config_path);
    let deadline = tokio::time::Instant::now() + WAIT;
    while recipients(&outbox).len() < N / 5 {
        assert!(tokio::time::Instant::now() < deadline, "the service never got going");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    service.kill(); // SIGKILL: no shutdown, no flush
    let at_kill = recipients(&outbox).len();
    assert!(at_kill < N, "killed before the end ({at_kill} sent)");

    let mut service = Service::spawn(&config_path);
    let mut sent: BTreeMap<String, usize> = BTreeMap::new();
    let mut flagged: BTreeSet<String> = BTreeSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while sent.len() < N {
        let event = match tokio::time::timeout_at(deadline, events_rx.recv()).await {
            Ok(Some(e)) => e,
            _ => panic!("only {} of {N} invoices reached invoice.sent", sent.len()),
        };
        if event["event"] == "invoice.sent" {
            let id = event["invoice_id"].as_str().unwrap().to_owned();
            if event["detail"]
                .as_str()
                .is_some_and(|d| d.contains("possibly sent twice"))
            {
                flagged.insert(id.clone());
            }
            *sent.entry(id).or_default() += 1;
        }
    }
    service.kill();

    // Every invoice went out; an email was written twice only where flagged.
    let written = per_recipient(&outbox);
    assert_eq!(written.len(), N, "every customer got the request");
    for (to, count) in &written {
        if *count > 1 {
            let id = format!("INV-{}", to.trim_start_matches('c').trim_end_matches("@example.com"));
            assert!(
                flagged.contains(&id),
                "{to} got {count} emails but {id} was not flagged"
            );
        }
    }
    assert!(
        flagged.len() <= 128,
        "only sends in flight at the kill can be doubtful: {}",
        flagged.len()
    );
    println!(
        "killed after {at_kill} of {N}; {} flagged as possibly sent twice; {} actually doubled",
        flagged.len(),
        written.values().filter(|c| **c > 1).count()
    );

    for q in [queue.clone(), format!("{queue}.dead")] {
        let _ = channel.queue_delete(q.as_str().into(), Default::default()).await;
    }
    let _ = channel
        .exchange_delete(exchange.as_str().into(), Default::default())
        .await;
}

/// Closes payrelay's connection from the broker side, as an operator or a
/// broker restart would.
fn close_connections_named(name: &str) -> usize {
    let out = Command::new("rabbitmqctl")
        .args([
            "list_connections",
            "pid",
            "client_properties",
            "--quiet",
            "--no-table-headers",
        ])
        .output()
        .expect("rabbitmqctl runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut closed = 0;
    for line in text.lines().filter(|l| l.contains(name)) {
        let pid = line.split_whitespace().next().unwrap_or_default();
        let status = Command::new("rabbitmqctl")
            .args(["close_connection", pid, "closed by the resilience test"])
            .status()
            .expect("rabbitmqctl runs");
        if status.success() {
            closed += 1;
        }
    }
    closed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_closed_by_the_broker_is_rebuilt_and_nothing_is_lost_or_sent_twice() {
    let env = TestEnv::start_with(Options::default()).await;
    env.publish(&[invoice("INV-BEFORE", "before@example.com")]).await;
    env.wait_for("invoice.sent", 1).await;

    let closed = close_connections_named(&format!("payrelay {}", env.config.broker.queue));
    assert!(closed >= 1, "found payrelay's connection");

    let invoices: Vec<Value> = (0..50)
        .map(|i| invoice(&format!("INV-AFTER-{i}"), &format!("a{i}@example.com")))
        .collect();
    env.publish(&invoices).await;
    env.smtp.wait_for(51, WAIT).await;
    env.wait_for("invoice.sent", 51).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while env.get("/readyz").await.status() != 200 {
        assert!(tokio::time::Instant::now() < deadline, "never ready again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(env.smtp.received().len(), 51, "nothing lost, nothing twice");
    assert!(env.events_named("invoice.duplicate").is_empty());
    env.finish().await;
}
