//! Erasure and retention in the store, on both stores (`sqlite::<test>` on
//! a new SQLite file, `postgres::<test>` on a new schema, as in
//! `tests/store_suite.rs`): what an erasure scrubs, what it keeps, that it
//! can run again, and which invoices retention picks. Every check of "no
//! personal data left" reads every row of every table of the database.

mod common;

use std::sync::Arc;

use common::pg::PgSchema;

use payrelay::domain::clock::ManualClock;
use payrelay::domain::{ChannelName, InvoiceKey, Status};
use payrelay::events::{Correlation, Event, EventName};
use payrelay::invoice::{Invoice, Message};
use payrelay::store::{AttemptOutcome, AttemptStart, Begin, NewPaylink, PlannedStep, StepStatus, Store};

const NAME: &str = "María López";
const EMAIL: &str = "maria@example.com";
const PHONE: &str = "+5215512345678";
const OTHER_EMAIL: &str = "juan@example.com";

/// 2026-11-01T00:00:00Z: the stores' clock starts here.
const T0: i64 = 1_793_491_200_000;
const DAY: i64 = 24 * 60 * 60 * 1000;

/// A database with a store on a manual clock.
struct TestDb {
    store: Arc<dyn Store>,
    clock: Arc<ManualClock>,
    /// Another instance opens a store here.
    url: String,
    /// Reads every row of every table.
    dump: Dump,
}

enum Dump {
    Sqlite(String, #[allow(dead_code)] tempfile::TempDir),
    Postgres(String, #[allow(dead_code)] PgSchema),
}

impl TestDb {
    /// Every row of every table, as text, one per line.
    async fn everything(&self) -> String {
        match &self.dump {
            Dump::Sqlite(path, _) => {
                let conn = rusqlite::Connection::open(path).unwrap();
                let tables: Vec<String> = conn
                    .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
                    .unwrap()
                    .query_map([], |r| r.get(0))
                    .unwrap()
                    .collect::<Result<_, _>>()
                    .unwrap();
                let mut out = String::new();
                for table in tables {
                    let mut stmt = conn.prepare(&format!("SELECT * FROM \"{table}\"")).unwrap();
                    let columns = stmt.column_count();
                    let mut rows = stmt.query([]).unwrap();
                    while let Some(row) = rows.next().unwrap() {
                        out.push_str(&table);
                        for i in 0..columns {
                            let value: rusqlite::types::Value = row.get(i).unwrap();
                            out.push_str(&format!(" | {value:?}"));
                        }
                        out.push('\n');
                    }
                }
                out
            }
            Dump::Postgres(url, schema) => {
                use sqlx::Connection;
                let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
                let tables: Vec<String> = sqlx::query_scalar(
                    "SELECT table_name::text FROM information_schema.tables WHERE table_schema = $1",
                )
                .bind(&schema.name)
                .fetch_all(&mut conn)
                .await
                .unwrap();
                let mut out = String::new();
                for table in tables {
                    let rows: Vec<String> = sqlx::query_scalar(&format!("SELECT t::text FROM \"{table}\" t"))
                        .fetch_all(&mut conn)
                        .await
                        .unwrap();
                    for row in rows {
                        out.push_str(&format!("{table} | {row}\n"));
                    }
                }
                out
            }
        }
    }
}

async fn sqlite_db() -> TestDb {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("payrelay.db").display().to_string();
    let clock = Arc::new(ManualClock::at_ms(T0));
    let url = format!("sqlite://{path}");
    let store = payrelay::store::open(&url, clock.clone()).await.unwrap();
    TestDb {
        store,
        clock,
        url,
        dump: Dump::Sqlite(path, dir),
    }
}

async fn postgres_db() -> TestDb {
    let schema = PgSchema::create("payrelay_erase").await;
    let url = String::from(schema.store_url());
    let clock = Arc::new(ManualClock::at_ms(T0));
    let store = payrelay::store::open(&url, clock.clone()).await.unwrap();
    TestDb {
        store,
        clock,
        url: url.clone(),
        dump: Dump::Postgres(url, schema),
    }
}

macro_rules! store_suite {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(&super::sqlite_db().await).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(&super::postgres_db().await).await;
                }
            )*
        }
    };
}

store_suite!(
    an_erasure_scrubs_invoices_attempts_steps_and_the_outbox_and_keeps_the_books,
    an_erasure_runs_again_without_changing_anything,
    retention_erases_only_what_was_closed_or_expired_long_enough_ago,
    two_instances_sweeping_together_erase_each_invoice_once,
);

// ---------------------------------------------------------------------------
// Helpers

fn correlation() -> Correlation {
    Correlation {
        correlation_id: Some("corr".into()),
        message_id: None,
    }
}

/// An invoice of `customer_id` (`None`: contacts only) reaching `email`.
fn invoice(invoice_id: &str, customer_id: Option<&str>, email: &str) -> Invoice {
    // Another customer (another email) is another person, with another name and number.
    let (name, phone) = match email {
        EMAIL => (NAME, PHONE),
        _ => ("Juan Pérez", "+5215587654321"),
    };
    let mut customer = serde_json::json!({"name": name, "email": email, "phone": phone, "locale": "es-MX",
                                          "timezone": "America/Mexico_City"});
    if let Some(id) = customer_id {
        customer["id"] = id.into();
    }
    let body = serde_json::json!({
        "kind": "payment_request", "invoice_id": invoice_id, "biller_id": "acme", "revision": 1,
        "amount": "1234.50", "currency": "MXN", "due_date": "2026-12-01",
        "description": "Electricity, November 2026", "customer": customer,
        "metadata": {"erp_doc": format!("doc-{invoice_id}")}
    });
    match payrelay::invoice::parse(body.to_string().as_bytes(), |_| true) {
        Ok(Message::PaymentRequest(invoice)) => *invoice,
        other => panic!("the test invoice parses: {other:?}"),
    }
}

async fn accepted(store: &dyn Store, invoice: &Invoice, steps: &[PlannedStep]) -> InvoiceKey {
    let key = invoice.key.clone();
    let accepted = Event::about(EventName::Accepted, &key, &correlation());
    let begun = store
        .begin(invoice, &correlation(), &accepted, steps, "default")
        .await
        .unwrap();
    assert_eq!(begun, Begin::New);
    key
}

fn paylink(token: &str, expires_at_ms: i64) -> NewPaylink {
    NewPaylink {
        token_hash: format!("hash-{token}"),
        expires_at_ms,
        address_hash: None,
    }
}

/// A sent attempt carrying link `token`, with provider id `provider`.
async fn sent(store: &dyn Store, key: &InvoiceKey, token: &str, provider: &str, expires_at_ms: i64) {
    let id = store
        .start_attempt(key, ChannelName::Email, 1, &paylink(token, expires_at_ms), None)
        .await
        .unwrap()
        .id()
        .unwrap();
    let event = Event::sent(key, &correlation(), ChannelName::Email, 1, Some(provider.to_owned()));
    store.finish_sent(id, Some(provider), &event, key).await.unwrap();
}

/// A failed SMS attempt whose provider error quotes the number.
async fn failed_quoting_the_number(store: &dyn Store, key: &InvoiceKey, token: &str) {
    // Sent to the number: the store remembers whose it is.
    let to_number = NewPaylink {
        address_hash: Some(payrelay::domain::debtor::address_hash(ChannelName::Sms, PHONE)),
        ..paylink(token, T0 + 45 * DAY)
    };
    let id = store
        .start_attempt(key, ChannelName::Sms, 1, &to_number, None)
        .await
        .unwrap()
        .id()
        .unwrap();
    let detail = format!("Twilio error 21211: The 'To' number {PHONE} is not a valid phone number");
    let event = Event::channel_failed(key, &correlation(), ChannelName::Sms, 1, detail.clone());
    store
        .finish_attempt(id, &AttemptOutcome::Failed { detail }, &event)
        .await
        .unwrap();
}

fn erased_event(customer_id: &str) -> Event {
    let mut event = Event::bare(EventName::Erased, &Correlation::default()).customer_id(Some(customer_id.into()));
    event.biller_id = Some("acme".into());
    event
}

async fn outbox(store: &dyn Store) -> Vec<Event> {
    store
        .outbox(100_000)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event().unwrap())
        .collect()
}

fn assert_nothing_personal(everything: &str) {
    for personal in [NAME, EMAIL, PHONE, &PHONE[1..]] {
        let found: Vec<&str> = everything.lines().filter(|l| l.contains(personal)).collect();
        assert!(found.is_empty(), "{personal} is still stored: {found:#?}");
    }
}

// ---------------------------------------------------------------------------
// Tests

async fn an_erasure_scrubs_invoices_attempts_steps_and_the_outbox_and_keeps_the_books(db: &TestDb) {
    let store = db.store.as_ref();
    let step = PlannedStep {
        seq: 1,
        journey: "standard".into(),
        name: "reminder".into(),
        due_ms: T0 + 10 * DAY,
        after_ms: None,
        skipped: None,
    };
    let first = accepted(store, &invoice("INV-1", Some("C-9981"), EMAIL), &[step]).await;
    sent(store, &first, "t1", "provider-1", T0 + 45 * DAY).await;
    let second = accepted(store, &invoice("INV-2", Some("C-9981"), EMAIL), &[]).await;
    failed_quoting_the_number(store, &second, "t2").await;
    // Another customer of the same biller, and the same customer id at
    // another biller's (a different person), are not touched.
    let other = accepted(store, &invoice("INV-3", Some("C-1"), OTHER_EMAIL), &[]).await;
    sent(store, &other, "t3", "provider-3", T0 + 45 * DAY).await;
    assert!(
        db.everything().await.contains(PHONE),
        "the test stores the number first"
    );
    // What payrelay remembers of the customer across invoices: their
    // numbers (as hashes, with each SMS) and a channel choice.
    let chose = Event::about(EventName::PreferencesChanged, &first, &correlation()).customer_id(Some("C-9981".into()));
    store
        .set_preferences(
            "acme",
            "acme/id/C-9981",
            &[ChannelName::Sms],
            &[ChannelName::Email],
            &chose,
        )
        .await
        .unwrap();
    let remembered = |everything: &str, customer: &str| {
        everything
            .lines()
            .filter(|l| (l.starts_with("debtor_contacts") || l.starts_with("preferences")) && l.contains(customer))
            .count()
    };
    assert_eq!(remembered(&db.everything().await, "acme/id/C-9981"), 1);
    // The SMS keeps the hash of the number it went to, by which a STOP
    // replied to it would find the customer.
    let number = payrelay::domain::debtor::address_hash(ChannelName::Sms, PHONE);
    assert!(db.everything().await.contains(&number));
    let other_chose =
        Event::about(EventName::PreferencesChanged, &other, &correlation()).customer_id(Some("C-1".into()));
    store
        .set_preferences("acme", "acme/id/C-1", &[ChannelName::Email], &[], &other_chose)
        .await
        .unwrap();

    db.clock.set_ms(T0 + DAY);
    let erasure = store
        .erase_customer("acme", "acme/id/C-9981", &erased_event("C-9981"))
        .await
        .unwrap();
    assert_eq!(erasure.invoices_erased, 2);
    assert_eq!(erasure.messages, vec![(ChannelName::Email, "provider-1".to_owned())]);

    let everything = db.everything().await;
    assert_nothing_personal(&everything);
    assert!(
        everything.contains(OTHER_EMAIL),
        "another customer's invoice is kept whole"
    );
    assert_eq!(
        remembered(&everything, "acme/id/C-9981"),
        0,
        "the customer's remembered choice goes with them"
    );
    assert!(
        !everything.contains(&number),
        "and so does the hash of the number their messages went to"
    );
    assert!(remembered(&everything, "acme/id/C-1") > 0, "another customer's stay");
    let profile = store.debtor("acme", "acme/id/C-9981", &[]).await.unwrap();
    assert_eq!(profile.preferred, None);

    // The books stay: statuses, attempts and their outcomes, amounts.
    let history = store.history("acme", "INV-2").await.unwrap().unwrap();
    let failed = history.timeline.iter().find(|e| e.what == "send_failed").unwrap();
    assert_eq!(failed.channel, Some(ChannelName::Sms));
    assert_eq!(
        failed.detail.as_deref(),
        Some("Twilio error 21211: The 'To' number [erased] is not a valid phone number")
    );
    assert_eq!(history.status, Status::Exhausted, "an invoice being handled ends");
    let stored = store.invoice(&first).await.unwrap().unwrap();
    assert_eq!(stored.invoice.amount.text, "1234.50");
    assert_eq!(stored.invoice.customer.id.as_deref(), Some("C-9981"));
    assert!(stored.invoice.customer.contacts.is_empty());
    assert_eq!(stored.status, Status::Sent);

    // Links answer 410 (erased), nothing more is sent, the step is cancelled.
    assert!(store.paylink("hash-t1").await.unwrap().unwrap().erased);
    assert!(!store.paylink("hash-t3").await.unwrap().unwrap().erased);
    let again = store
        .start_attempt(&first, ChannelName::Sms, 2, &paylink("t4", T0 + 45 * DAY), None)
        .await
        .unwrap();
    assert_eq!(again, AttemptStart::Closed, "no attempt starts on an erased invoice");
    let steps = store.steps("acme", "INV-1").await.unwrap();
    assert_eq!(steps[0].status, StepStatus::Cancelled);
    assert!(store.claim_due_steps(T0 + 20 * DAY, 0, 10).await.unwrap().is_empty());
    assert!(store.claim_stale(T0 + 20 * DAY, 0, 10).await.unwrap().is_empty());

    // One customer.erased, with the count, and no outbox event quotes the number.
    let events = outbox(store).await;
    let erased: Vec<&Event> = events.iter().filter(|e| e.event == EventName::Erased).collect();
    assert_eq!(erased.len(), 1);
    assert_eq!(erased[0].customer_id.as_deref(), Some("C-9981"));
    assert_eq!(erased[0].biller_id.as_deref(), Some("acme"));
    assert!(
        erased[0].detail.as_deref().unwrap().contains("2 invoice(s) on request"),
        "{:?}",
        erased[0].detail
    );
    let failed = events.iter().find(|e| e.event == EventName::ChannelFailed).unwrap();
    assert!(failed.detail.as_deref().unwrap().contains("[erased]"), "{failed:?}");
}

async fn an_erasure_runs_again_without_changing_anything(db: &TestDb) {
    let store = db.store.as_ref();
    let key = accepted(store, &invoice("INV-1", Some("C-9981"), EMAIL), &[]).await;
    sent(store, &key, "t1", "provider-1", T0 + 45 * DAY).await;
    let first = store
        .erase_customer("acme", "acme/id/C-9981", &erased_event("C-9981"))
        .await
        .unwrap();
    let rows = db.everything().await;
    let without_outbox = |dump: &str| {
        dump.lines()
            .filter(|l| !l.starts_with("outbox") && !l.starts_with("sqlite_sequence"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let second = store
        .erase_customer("acme", "acme/id/C-9981", &erased_event("C-9981"))
        .await
        .unwrap();
    assert_eq!(first.invoices_erased, 1);
    assert_eq!(second.invoices_erased, 0, "nothing was left to erase");
    assert_eq!(
        second.messages, first.messages,
        "the copies are listed again, to be removed"
    );
    assert_eq!(without_outbox(&db.everything().await), without_outbox(&rows));
    let erased = outbox(store)
        .await
        .into_iter()
        .filter(|e| e.event == EventName::Erased)
        .count();
    assert_eq!(erased, 2, "each request is reported");
    // A customer with no invoices at all.
    let none = store
        .erase_customer("acme", "acme/id/nobody", &erased_event("nobody"))
        .await
        .unwrap();
    assert_eq!(none.invoices_erased, 0);
}

async fn retention_erases_only_what_was_closed_or_expired_long_enough_ago(db: &TestDb) {
    let store = db.store.as_ref();
    let ttl = 180 * DAY;
    // Paid on day 0: old enough on day 181.
    let paid = accepted(store, &invoice("PAID-OLD", Some("C-1"), EMAIL), &[]).await;
    sent(store, &paid, "p", "provider-p", T0 + 45 * DAY).await;
    let paid_event = Event::paid("acme", "PAID-OLD", &correlation());
    assert!(store
        .close("acme", "PAID-OLD", Status::Paid, &paid_event)
        .await
        .unwrap());
    // Sent on day 0, its only link expired on day 1: old enough on day 181.
    let expired = accepted(store, &invoice("EXPIRED", None, OTHER_EMAIL), &[]).await;
    sent(store, &expired, "e", "provider-e", T0 + DAY).await;
    // Still open, with a link that never expires within the test.
    let open = accepted(store, &invoice("OPEN", Some("C-1"), EMAIL), &[]).await;
    sent(store, &open, "o", "provider-o", T0 + 1000 * DAY).await;
    // Paid on day 100: not old enough on day 181.
    db.clock.set_ms(T0 + 100 * DAY);
    accepted(store, &invoice("PAID-RECENT", Some("C-1"), EMAIL), &[]).await;
    let recent_event = Event::paid("acme", "PAID-RECENT", &correlation());
    assert!(store
        .close("acme", "PAID-RECENT", Status::Paid, &recent_event)
        .await
        .unwrap());

    let now = T0 + 181 * DAY;
    db.clock.set_ms(now);
    let first = store.erase_expired(now - ttl, 1).await.unwrap();
    assert_eq!((first.invoices_erased, first.customers), (1, 1), "batches of the limit");
    let rest = store.erase_expired(now - ttl, 100).await.unwrap();
    assert_eq!((rest.invoices_erased, rest.customers), (1, 1));
    let none = store.erase_expired(now - ttl, 100).await.unwrap();
    assert_eq!(
        (none.invoices_erased, none.customers),
        (0, 0),
        "nothing is erased twice"
    );

    for (token, erased) in [("hash-p", true), ("hash-e", true), ("hash-o", false)] {
        assert_eq!(store.paylink(token).await.unwrap().unwrap().erased, erased, "{token}");
    }
    let kept = store.invoice(&open).await.unwrap().unwrap();
    assert_eq!(kept.invoice.customer.name, NAME, "an open invoice keeps its data");
    let erased: Vec<Event> = outbox(store)
        .await
        .into_iter()
        .filter(|e| e.event == EventName::Erased)
        .collect();
    assert_eq!(erased.len(), 2, "one per customer");
    let ids: Vec<Option<&str>> = erased.iter().map(|e| e.customer_id.as_deref()).collect();
    assert!(ids.contains(&Some("C-1")) && ids.contains(&None), "{ids:?}");
    for event in &erased {
        assert!(event.detail.as_deref().unwrap().contains("by retention"), "{event:?}");
    }
    let everything = db.everything().await;
    for gone in [OTHER_EMAIL, "Juan Pérez", "+5215587654321"] {
        assert!(!everything.contains(gone), "{gone} is still stored");
    }
    assert!(
        everything.contains(EMAIL),
        "the open and the recent invoices keep theirs"
    );
}

async fn two_instances_sweeping_together_erase_each_invoice_once(db: &TestDb) {
    let store = db.store.as_ref();
    const INVOICES: usize = 40;
    for n in 0..INVOICES {
        let id = format!("INV-{n}");
        accepted(store, &invoice(&id, Some(&format!("C-{n}")), EMAIL), &[]).await;
        let paid = Event::paid("acme", &id, &correlation());
        assert!(store.close("acme", &id, Status::Paid, &paid).await.unwrap());
    }
    db.clock.set_ms(T0 + 200 * DAY);
    let other = payrelay::store::open(&db.url, db.clock.clone()).await.unwrap();
    let sweep = |store: Arc<dyn Store>| async move {
        let mut erased = 0;
        loop {
            let batch = store.erase_expired(T0 + 20 * DAY, 3).await.unwrap();
            if batch.customers == 0 {
                return erased;
            }
            erased += batch.invoices_erased;
        }
    };
    let (a, b) = tokio::join!(
        tokio::spawn(sweep(db.store.clone())),
        tokio::spawn(sweep(other.clone()))
    );
    assert_eq!(a.unwrap() + b.unwrap(), INVOICES as u32, "each invoice erased once");
    let events = [outbox(store).await, outbox(other.as_ref()).await].concat();
    let erased: std::collections::BTreeSet<String> = events
        .iter()
        .filter(|e| e.event == EventName::Erased)
        .map(|e| e.event_id.clone())
        .collect();
    assert_eq!(erased.len(), INVOICES, "one customer.erased per customer");
    assert_nothing_personal(&db.everything().await);
}
