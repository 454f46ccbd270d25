//! One message per debtor end to end (`[billers.<id>] combine`), on the
//! real binary, the real broker and both stores: invoices of one customer
//! and currency that arrive within the window go out as one email and one
//! SMS listing the open ones and their total; an invoice paid meanwhile
//! leaves the list; two customers never mix and two currencies never
//! combine; a SIGKILL while the group waits loses nothing and sends nothing
//! twice; the combined pay link lists the open invoices and sends checkout
//! their ids and total; two instances on one PostgreSQL send each combined
//! message once; a customer's reminders due the same day go out as one
//! reminder per channel.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::pg::PgSchema;
use common::process::{free_port, per_recipient, Broker, Service};
use common::{invoice, parts, pay_link, AMQP_URL};
use serde_json::Value;
use tokio::sync::mpsc::UnboundedReceiver;

/// How long after the last expected event a late second copy would surely
/// have shown up (a scheduler round is at most 1 s).
const QUIET: Duration = Duration::from_secs(3);

/// Writes `<name>.toml` in `dir`: broker, store, HTTP port, the acme biller
/// combining for `window`, file email and SMS, both sent for each request.
fn write_config(dir: &Path, name: &str, broker: &Broker, store_url: &str, port: u16, window: &str) -> PathBuf {
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
checkout_url = "https://pay.example/c?inv={{invoice_id}}&amt={{amount}}&minor={{amount_minor}}&t={{token}}"
combine = "{window}"
[channels.email]
transport = "file"
outbox_dir = "outbox/email"
rate_per_second = 10000
[channels.sms]
provider = "file"
outbox_dir = "outbox/sms"
rate_per_second = 10000
[routing]
default = ["email", "sms"]
default_strategy = "all"
respect_preferences = false
"#
        ),
    )
    .expect("write the test config");
    path
}

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
    while !done(seen) {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(event)) => seen.push(event),
            _ => panic!(
                "timed out waiting for {what}; {} events so far, the last: {:#?}\n{}",
                seen.len(),
                &seen[seen.len().saturating_sub(3)..],
                log_tails(logs)
            ),
        }
    }
}

async fn collect_until_quiet(events: &mut UnboundedReceiver<Value>, seen: &mut Vec<Value>) {
    while let Ok(Some(event)) = tokio::time::timeout(QUIET, events.recv()).await {
        seen.push(event);
    }
}

/// Each event once: the outbox publishes at least once.
fn distinct(seen: &[Value]) -> Vec<&Value> {
    let mut ids = BTreeSet::new();
    seen.iter()
        .filter(|e| ids.insert(e["event_id"].as_str().unwrap_or_default().to_owned()))
        .collect()
}

fn count(seen: &[Value], name: &str) -> usize {
    distinct(seen).iter().filter(|e| e["event"] == name).count()
}

/// An invoice of customer `customer` (email `<customer>@example.com`, a
/// phone of its own) for `amount` in `currency`.
fn invoice_of(invoice_id: &str, customer: &str, currency: &str, amount: &str) -> Value {
    let mut body = invoice(invoice_id, &format!("{}@example.com", customer.to_lowercase()));
    body["customer"]["id"] = customer.into();
    body["customer"]["phone"] = if customer == "C-1" {
        "+5215512340001"
    } else {
        "+5215512340002"
    }
    .into();
    body["currency"] = currency.into();
    body["amount"] = amount.into();
    body["description"] = format!("Service {invoice_id}").into();
    body
}

fn paid(invoice_id: &str) -> Value {
    serde_json::json!({"kind": "invoice_paid", "biller_id": "acme", "invoice_id": invoice_id})
}

/// What a send is about: (invoice, channel).
type Send = (String, String);

/// (invoice, channel) -> how many distinct `invoice.sent`, and the
/// provider message ids by (invoice, channel).
fn sent_by(seen: &[Value]) -> (BTreeMap<Send, usize>, BTreeMap<Send, String>) {
    let mut counts = BTreeMap::new();
    let mut ids = BTreeMap::new();
    for e in distinct(seen).into_iter().filter(|e| e["event"] == "invoice.sent") {
        let key = (
            e["invoice_id"].as_str().unwrap_or_default().to_owned(),
            e["channel"].as_str().unwrap_or_default().to_owned(),
        );
        *counts.entry(key.clone()).or_default() += 1;
        ids.insert(key, e["provider_message_id"].as_str().unwrap_or_default().to_owned());
    }
    (counts, ids)
}

/// The files a `file` channel wrote in `dir`, as text.
fn files(dir: &Path, extension: &str) -> Vec<Vec<u8>> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == extension))
        .filter_map(|p| std::fs::read(p).ok())
        .collect()
}

/// Five invoices of one customer within the window become one email and
/// one SMS listing the four still open (one is paid meanwhile) with their
/// total; the same customer's two USD invoices and another customer's two
/// go in messages of their own. The service is killed with SIGKILL while
/// the groups wait: the restarted one sends each message once. The
/// combined link's page lists the open invoices; paying one takes it off;
/// checkout gets the others' ids and total.
async fn combined_messages_survive_a_sigkill_and_one_link_pays_them(store_url: &str, dir: &Path, broker: &Broker) {
    let port = free_port();
    let config = write_config(dir, "payrelay", broker, store_url, port, "6s");
    let logs = [config.as_path()];
    let mut events = broker.observe(&config).await;
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);

    let mut service = Service::spawn(&config);
    let mut invoices: Vec<Value> = (1..=5)
        .map(|i| invoice_of(&format!("K-{i}"), "C-1", "MXN", "1234.50"))
        .collect();
    invoices.push(invoice_of("L-1", "C-2", "MXN", "100.00"));
    invoices.push(invoice_of("L-2", "C-2", "MXN", "200.00"));
    invoices.push(invoice_of("U-1", "C-1", "USD", "10.00"));
    invoices.push(invoice_of("U-2", "C-1", "USD", "20.00"));
    broker.publish(&config, &invoices).await;
    collect_until(&mut events, &mut seen, deadline, "every invoice accepted", &logs, |s| {
        count(s, "invoice.accepted") == 9
    })
    .await;
    let waits = distinct(&seen)
        .iter()
        .filter(|e| e["event"] == "invoice.accepted")
        .all(|e| e["detail"].as_str().unwrap_or_default().contains("to be combined"));
    assert!(waits, "each accepted event says it waits to be combined: {seen:#?}");
    broker.publish(&config, &[paid("K-3")]).await;
    collect_until(&mut events, &mut seen, deadline, "K-3 paid", &logs, |s| {
        count(s, "invoice.paid") == 1
    })
    .await;
    assert_eq!(
        count(&seen, "invoice.sent"),
        0,
        "nothing goes out while the window is open"
    );
    service.kill();

    let mut service = Service::spawn(&config);
    collect_until(&mut events, &mut seen, deadline, "every combined message", &logs, |s| {
        count(s, "invoice.sent") == 16
    })
    .await;
    collect_until_quiet(&mut events, &mut seen).await;

    let (sent, provider_ids) = sent_by(&seen);
    let mut expected = BTreeMap::new();
    for id in ["K-1", "K-2", "K-4", "K-5", "L-1", "L-2", "U-1", "U-2"] {
        for channel in ["email", "sms"] {
            expected.insert((id.to_owned(), channel.to_owned()), 1);
        }
    }
    assert_eq!(sent, expected, "each open invoice sent once per channel, K-3 never");
    for channel in ["email", "sms"] {
        let of = |id: &str| provider_ids[&(id.to_owned(), channel.to_owned())].clone();
        let k: BTreeSet<String> = ["K-1", "K-2", "K-4", "K-5"].iter().map(|id| of(id)).collect();
        assert_eq!(k.len(), 1, "one {channel} message for the four: {k:?}");
        assert_ne!(of("K-1"), of("L-1"), "two customers never mix");
        assert_ne!(of("K-1"), of("U-1"), "two currencies never combine");
        assert_eq!(of("L-1"), of("L-2"));
        assert_eq!(of("U-1"), of("U-2"));
    }

    let outbox = dir.join("outbox");
    let per = per_recipient(&outbox.join("email"));
    assert_eq!(
        per,
        BTreeMap::from([("c-1@example.com".to_owned(), 2), ("c-2@example.com".to_owned(), 1)]),
        "one email per customer and currency"
    );
    assert_eq!(
        files(&outbox.join("sms"), "json").len(),
        3,
        "one SMS per customer and currency"
    );
    let emails: Vec<(String, String, String)> = files(&outbox.join("email"), "eml")
        .iter()
        .map(|raw| parts(raw))
        .collect();
    let (subject, text, _html) = emails
        .iter()
        .find(|(_, text, _)| text.contains("K-1"))
        .expect("the email listing K-1")
        .clone();
    for id in ["K-1", "K-2", "K-4", "K-5"] {
        assert!(text.contains(id), "lists {id}: {text}");
    }
    assert!(!text.contains("K-3"), "the paid invoice left the list: {text}");
    assert!(
        text.contains("1,234.50") && text.contains("4,938.00"),
        "four amounts and the total: {text}"
    );
    assert!(subject.contains("4 facturas"), "{subject}");
    let sms = files(&outbox.join("sms"), "json")
        .into_iter()
        .map(|raw| String::from_utf8_lossy(&raw).into_owned())
        .find(|s| s.contains("K-1"))
        .expect("the SMS listing K-1");
    assert!(sms.contains("4,938.00") && !sms.contains("K-3"), "{sms}");

    // The one link: its page lists the open invoices and the total.
    let link = pay_link(&text, &format!("http://127.0.0.1:{port}"));
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let page = http.get(&link).send().await.expect("GET the combined link");
    assert_eq!(page.status(), 200);
    let page = page.text().await.unwrap();
    assert!(
        page.contains("K-1") && page.contains("K-5") && page.contains("4,938.00"),
        "{page}"
    );
    assert!(page.contains("lang=\"es"), "in the customer's language: {page}");
    collect_until(
        &mut events,
        &mut seen,
        deadline,
        "a click per listed invoice",
        &logs,
        |s| count(s, "invoice.clicked") == 4,
    )
    .await;

    // K-1 paid after the message went: it leaves the page and the checkout.
    broker.publish(&config, &[paid("K-1")]).await;
    collect_until(&mut events, &mut seen, deadline, "K-1 paid", &logs, |s| {
        count(s, "invoice.paid") == 2
    })
    .await;
    let page = http.get(&link).send().await.unwrap().text().await.unwrap();
    assert!(!page.contains("K-1") && page.contains("3,703.50"), "{page}");
    let checkout = http.get(format!("{link}/pay")).send().await.unwrap();
    assert_eq!(checkout.status(), 303);
    let location = checkout.headers()["location"].to_str().unwrap().to_owned();
    let token = link.rsplit('/').next().unwrap();
    assert_eq!(
        location,
        format!("https://pay.example/c?inv=K-2%2CK-4%2CK-5&amt=3703.50&minor=370350&t={token}")
    );
    for id in ["K-2", "K-4", "K-5"] {
        broker.publish(&config, &[paid(id)]).await;
    }
    collect_until(&mut events, &mut seen, deadline, "all paid", &logs, |s| {
        count(s, "invoice.paid") == 5
    })
    .await;
    let page = http.get(&link).send().await.unwrap();
    assert_eq!(page.status(), 200, "every listed invoice paid: the already-paid page");
    let page = page.text().await.unwrap();
    assert!(
        !page.contains("class=\"pay\""),
        "no pay button once all are paid: {page}"
    );

    // Every invoice of the USD message cancelled: its link is gone.
    let (_, usd_text, _) = emails
        .iter()
        .find(|(_, text, _)| text.contains("U-1"))
        .expect("the email listing U-1")
        .clone();
    let usd_link = pay_link(&usd_text, &format!("http://127.0.0.1:{port}"));
    assert_eq!(http.get(&usd_link).send().await.unwrap().status(), 200);
    let cancelled = |id: &str| serde_json::json!({"kind": "invoice_cancelled", "biller_id": "acme", "invoice_id": id});
    broker.publish(&config, &[cancelled("U-1"), cancelled("U-2")]).await;
    collect_until(&mut events, &mut seen, deadline, "U-1 and U-2 cancelled", &logs, |s| {
        count(s, "invoice.cancelled") == 2
    })
    .await;
    assert_eq!(http.get(&usd_link).send().await.unwrap().status(), 410);
    assert_eq!(http.get(format!("{usd_link}/pay")).send().await.unwrap().status(), 410);
    service.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_combined_messages_survive_a_sigkill_and_one_link_pays_them() {
    let broker = Broker::new("combine-sqlite").await;
    let dir = tempfile::tempdir().unwrap();
    combined_messages_survive_a_sigkill_and_one_link_pays_them("sqlite://var/payrelay.db", dir.path(), &broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_combined_messages_survive_a_sigkill_and_one_link_pays_them() {
    let broker = Broker::new("combine-pg").await;
    let schema = PgSchema::create("payrelay_combine").await;
    let dir = tempfile::tempdir().unwrap();
    combined_messages_survive_a_sigkill_and_one_link_pays_them(schema.store_url().as_str(), dir.path(), &broker).await;
}

/// Two instances on one queue and one PostgreSQL store: each customer's
/// combined message goes out once between them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_postgres_send_each_combined_message_once() {
    const CUSTOMERS: usize = 6;
    let broker = Broker::new("combine-instances").await;
    let schema = PgSchema::create("payrelay_combine_instances").await;
    let dir = tempfile::tempdir().unwrap();
    let a = write_config(dir.path(), "a", &broker, schema.store_url().as_str(), free_port(), "3s");
    let b = write_config(dir.path(), "b", &broker, schema.store_url().as_str(), free_port(), "3s");
    let logs = [a.as_path(), b.as_path()];
    let mut events = broker.observe(&a).await;
    let _a = Service::spawn(&a);
    let _b = Service::spawn(&b);
    let mut invoices = Vec::new();
    for c in 0..CUSTOMERS {
        for i in 0..3 {
            let mut body = invoice_of(&format!("I-{c}-{i}"), &format!("C-{c}"), "MXN", "10.00");
            body["customer"]["phone"] = format!("+521551234{c:04}").into();
            invoices.push(body);
        }
    }
    broker.publish(&a, &invoices).await;
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    collect_until(&mut events, &mut seen, deadline, "every combined message", &logs, |s| {
        count(s, "invoice.sent") == CUSTOMERS * 3 * 2
    })
    .await;
    collect_until_quiet(&mut events, &mut seen).await;
    let (sent, _) = sent_by(&seen);
    assert!(
        sent.values().all(|n| *n == 1),
        "each invoice sent once per channel: {sent:?}"
    );
    let outbox = dir.path().join("outbox");
    let per = per_recipient(&outbox.join("email"));
    assert_eq!(per.len(), CUSTOMERS, "{per:?}");
    assert!(per.values().all(|n| *n == 1), "one email per customer: {per:?}");
    assert_eq!(
        files(&outbox.join("sms"), "json").len(),
        CUSTOMERS,
        "one SMS per customer"
    );
}

/// A customer's reminders due the same day go out together: invoices of
/// two customers, combined into one first request per customer, each get
/// a reminder two seconds later; each customer gets one reminder per
/// channel listing their invoices, saying it is a reminder, and each
/// invoice gets its own `invoice.sent` of the step, once per channel.
async fn reminders_of_one_customer_due_the_same_day_go_out_together(store_url: &str, dir: &Path, broker: &Broker) {
    let port = free_port();
    let config = write_config(dir, "payrelay", broker, store_url, port, "2s");
    let mut toml = std::fs::read_to_string(&config).expect("read the test config");
    toml.push_str("journey = \"nudge\"\n[journeys.nudge]\nsteps = [{ name = \"nudge\", after = \"2s\" }]\n");
    std::fs::write(&config, toml).expect("write the test config");
    let logs = [config.as_path()];
    let mut events = broker.observe(&config).await;
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut service = Service::spawn(&config);
    let mut invoices: Vec<Value> = (1..=3)
        .map(|i| invoice_of(&format!("K-{i}"), "C-1", "MXN", "100.00"))
        .collect();
    invoices.push(invoice_of("L-1", "C-2", "MXN", "10.00"));
    invoices.push(invoice_of("L-2", "C-2", "MXN", "20.00"));
    broker.publish(&config, &invoices).await;
    let step_sent = |s: &[Value]| {
        distinct(s)
            .into_iter()
            .filter(|e| e["event"] == "invoice.sent" && e["step"] == "nudge")
            .count()
    };
    collect_until(&mut events, &mut seen, deadline, "every reminder", &logs, |s| {
        step_sent(s) == 10
    })
    .await;
    collect_until_quiet(&mut events, &mut seen).await;
    assert_eq!(step_sent(&seen), 10, "each invoice's reminder once per channel");
    assert_eq!(count(&seen, "invoice.sent"), 20, "first requests and reminders");

    // One reminder per customer and channel: the reminders of one
    // customer share the message's provider id.
    for channel in ["email", "sms"] {
        let id_of = |invoice_id: &str| {
            distinct(&seen)
                .into_iter()
                .find(|e| {
                    e["event"] == "invoice.sent"
                        && e["step"] == "nudge"
                        && e["invoice_id"] == invoice_id
                        && e["channel"] == channel
                })
                .map(|e| e["provider_message_id"].as_str().unwrap_or_default().to_owned())
                .expect("a reminder sent")
        };
        assert_eq!(id_of("K-1"), id_of("K-2"), "{channel}");
        assert_eq!(id_of("K-1"), id_of("K-3"), "{channel}");
        assert_eq!(id_of("L-1"), id_of("L-2"), "{channel}");
        assert_ne!(id_of("K-1"), id_of("L-1"), "two customers never mix");
    }
    let outbox = dir.join("outbox");
    assert_eq!(
        per_recipient(&outbox.join("email")),
        BTreeMap::from([("c-1@example.com".to_owned(), 2), ("c-2@example.com".to_owned(), 2)]),
        "one first request and one reminder per customer"
    );
    assert_eq!(files(&outbox.join("sms"), "json").len(), 4);
    let reminder = files(&outbox.join("email"), "eml")
        .iter()
        .map(|raw| parts(raw))
        .find(|(subject, text, _)| subject.starts_with("Recordatorio") && text.contains("K-1"))
        .expect("the reminder listing K-1 says it reminds");
    let (_, text, _) = reminder;
    for id in ["K-1", "K-2", "K-3"] {
        assert!(text.contains(id), "lists {id}: {text}");
    }
    assert!(text.contains("300.00") && !text.contains("L-1"), "{text}");
    // Its one link lists the three.
    let link = pay_link(&text, &format!("http://127.0.0.1:{port}"));
    let page = reqwest::get(&link).await.expect("GET the reminder's link");
    assert_eq!(page.status(), 200);
    let page = page.text().await.unwrap();
    assert!(
        page.contains("K-1") && page.contains("K-3") && page.contains("300.00"),
        "{page}"
    );
    service.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_reminders_of_one_customer_due_the_same_day_go_out_together() {
    let broker = Broker::new("remind-sqlite").await;
    let dir = tempfile::tempdir().unwrap();
    reminders_of_one_customer_due_the_same_day_go_out_together("sqlite://var/payrelay.db", dir.path(), &broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_reminders_of_one_customer_due_the_same_day_go_out_together() {
    let broker = Broker::new("remind-pg").await;
    let schema = PgSchema::create("payrelay_remind").await;
    let dir = tempfile::tempdir().unwrap();
    reminders_of_one_customer_due_the_same_day_go_out_together(schema.store_url().as_str(), dir.path(), &broker).await;
}
