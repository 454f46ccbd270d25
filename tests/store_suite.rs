//! The store test suite: every test below runs against both stores, each time
//! on a fresh database, through the same `payrelay::store::open` the service
//! uses.
//!
//! - `sqlite::<test>`: a new SQLite file in a temporary folder.
//! - `postgres::<test>`: a new schema `payrelay_test_<random>` in the
//!   database of `PAYRELAY_TEST_POSTGRES_URL` (default
//!   `postgres://postgres@127.0.0.1:5432/test`; see `common::pg`), dropped
//!   after the test. PostgreSQL must answer: these tests fail, never skip,
//!   when it does not.
//!
//! The concurrency tests open a second store on the same database, as a
//! second payrelay instance would, and race both against each other.
//!
//! The stores run on the real clock, except in the tests that open one on a
//! [`ManualClock`] to show that every time a store writes is its clock's.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Barrier;

use common::pg::PgSchema;

use payrelay::domain::clock::{Clock, ManualClock, SystemClock};
use payrelay::domain::debtor::{address_hash, Profile, Reply};
use payrelay::domain::ChannelName;
use payrelay::domain::InvoiceKey;
use payrelay::domain::Status;
use payrelay::events::{Correlation, Event, EventName};
use payrelay::invoice::{Invoice, Message};
use payrelay::store::{
    AttemptOutcome, AttemptRecord, AttemptStart, AttemptState, Begin, CombineJoin, CustomerDay, DueGroup, DueStep,
    GroupPlace, HeldStep, NewPaylink, Owner, PlannedStep, Reached, StepStatus, Store, StoreError, StoreGauges,
    SuppressionChange,
};

// ---------------------------------------------------------------------------
// Fresh databases

/// One fresh database with a store open on it.
struct TestDb {
    store: Arc<dyn Store>,
    /// The store's clock: the real one.
    clock: Arc<dyn Clock>,
    url: String,
    /// Dropped last: removes the database.
    _place: Place,
}

/// Kept only to be dropped with the test.
#[allow(dead_code)]
enum Place {
    Sqlite(tempfile::TempDir),
    Postgres(PgSchema),
}

impl TestDb {
    /// Another store on the same database: a second payrelay instance.
    async fn another(&self) -> Arc<dyn Store> {
        self.on_clock(self.clock.clone()).await
    }

    /// Another store on the same database, on `clock`.
    async fn on_clock(&self, clock: Arc<dyn Clock>) -> Arc<dyn Store> {
        payrelay::store::open(&self.url, clock)
            .await
            .unwrap_or_else(|e| panic!("a second store opens: {e}"))
    }
}

async fn sqlite_db() -> TestDb {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("payrelay.db").display());
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let store = payrelay::store::open(&url, clock.clone()).await.unwrap();
    TestDb {
        store,
        clock,
        url,
        _place: Place::Sqlite(dir),
    }
}

async fn postgres_db() -> TestDb {
    let schema = PgSchema::create("payrelay_test").await;
    let url = String::from(schema.store_url());
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let store = payrelay::store::open(&url, clock.clone())
        .await
        .unwrap_or_else(|e| panic!("the PostgreSQL store opens in schema {}: {e}", schema.name));
    TestDb {
        store,
        clock,
        url,
        _place: Place::Postgres(schema),
    }
}

/// Runs each named test once per store: `sqlite::name` and `postgres::name`.
macro_rules! store_suite {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let db = super::sqlite_db().await;
                    super::$name(&db).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let db = super::postgres_db().await;
                    super::$name(&db).await;
                }
            )*
        }
    };
}

store_suite!(
    an_event_keeps_its_id_and_time_through_the_outbox,
    begin_stores_a_new_invoice_and_queues_accepted,
    begin_again_resumes_an_unfinished_invoice_after_its_attempts,
    begin_of_a_finished_invoice_is_a_duplicate,
    a_higher_revision_supersedes_lower_ones_which_become_stale,
    a_closed_invoice_refuses_every_revision_even_one_never_seen,
    close_happens_once_and_spares_superseded_revisions,
    the_paid_event_names_the_channel_whose_link_was_opened_last,
    finish_invoice_does_not_override_a_closed_status,
    no_attempt_starts_on_a_paid_cancelled_or_superseded_invoice,
    a_send_that_ends_the_invoice_is_stored_with_it_at_once,
    a_new_invoice_is_stored_with_its_first_attempt_and_nothing_else_is,
    attempts_are_recorded_from_start_to_finish,
    the_outbox_is_oldest_first_and_forgets_confirmed_events,
    a_paylink_is_found_by_its_hash_with_its_invoice,
    an_older_revisions_paylink_comes_with_the_newest_revision,
    the_first_click_queues_clicked_and_every_click_counts,
    attempts_are_found_by_provider_id_on_their_own_channel,
    delivered_and_read_are_recorded_once_each,
    fail_after_send_fails_a_sent_attempt_once_and_reopens_the_invoice,
    fail_after_send_does_not_reopen_a_closed_invoice,
    history_tells_what_happened_in_order,
    an_invoice_closed_before_its_request_has_a_history_and_says_so,
    holds_come_due_in_order_and_end_when_the_invoice_is_finished,
    each_due_hold_is_claimed_once_by_one_of_two_stores_asking_together,
    journey_steps_are_stored_with_their_invoice_and_come_due_in_order,
    each_due_step_is_claimed_once_by_one_of_two_stores_asking_together,
    a_step_ends_once_and_a_close_or_a_new_revision_cancels_the_rest,
    sends_of_a_step_are_recorded_with_its_name,
    messages_to_one_customer_are_counted_across_their_invoices,
    ping_answers,
    a_reopened_store_keeps_its_data,
    concurrent_begins_of_one_key_make_exactly_one_new,
    concurrent_revisions_leave_only_the_highest_accepted,
    a_close_racing_a_begin_never_leaves_the_invoice_open,
    concurrent_fail_after_send_succeeds_exactly_once,
    concurrent_closes_succeed_exactly_once,
    concurrent_delivery_reports_are_recorded_once,
    concurrent_clicks_each_count_and_queue_clicked_once,
    an_unfinished_invoice_is_claimed_only_when_idle_or_unconditionally,
    idle_unheld_unfinished_invoices_are_reclaimed_oldest_first,
    concurrent_claims_of_an_idle_invoice_succeed_exactly_once,
    every_time_the_store_writes_is_its_clock_s,
    an_invoice_goes_idle_by_the_store_s_clock,
    preferences_round_trip_with_their_event,
    a_stop_and_a_start_change_once_and_tell_each_customer_once,
    an_email_stop_holds_for_its_biller_only,
    only_a_send_by_sms_or_whatsapp_remembers_the_address,
    no_attempt_is_recorded_to_a_suppressed_address,
    invoices_of_one_customer_and_currency_wait_in_one_group_from_the_first,
    a_claimed_group_takes_no_new_invoice_and_is_taken_over_once_idle,
    each_due_group_is_claimed_once_by_one_of_two_stores_asking_together,
    concurrent_first_requests_of_one_customer_make_one_group,
    a_combined_link_lists_its_invoices_as_they_stand_now,
    a_provider_id_shared_by_a_combined_message_finds_every_attempt,
    a_customers_reminders_of_one_day_are_claimed_once_by_one_of_two_stores_asking_together,
    a_combined_message_counts_once_toward_the_daily_cap,
    the_gauges_count_the_outbox_backlog_held_invoices_and_planned_steps,
    the_console_finds_invoices_by_id_or_customer_and_lists_those_received_in_a_period,
    the_funnel_counts_each_invoice_once_per_stage_and_attributes_payments,
);

#[tokio::test]
async fn open_refuses_a_url_of_no_known_store() {
    let Err(error) = payrelay::store::open("mysql://root:hunter2@127.0.0.1/test", Arc::new(SystemClock)).await else {
        panic!("a mysql:// URL opened a store");
    };
    assert!(matches!(error, StoreError::Url(_)), "{error}");
    assert!(
        !error.to_string().contains("hunter2"),
        "the error quotes the password: {error}"
    );
}

// ---------------------------------------------------------------------------
// Helpers

const ACME: &str = "acme";

fn correlation(n: &str) -> Correlation {
    Correlation {
        correlation_id: Some(format!("corr-{n}")),
        message_id: Some(format!("msg-{n}")),
    }
}

fn invoice(invoice_id: &str, revision: i64) -> Invoice {
    let body = serde_json::json!({
        "kind": "payment_request",
        "invoice_id": invoice_id,
        "biller_id": ACME,
        "revision": revision,
        "source": "erp",
        "amount": "1234.50",
        "currency": "MXN",
        "due_date": "2026-12-01",
        "description": "Electricity, November 2026",
        "customer": {
            "id": "C-9981",
            "name": "María López",
            "email": "maria@example.com",
            "phone": "+5215512345678",
            "locale": "es-MX",
            "timezone": "America/Mexico_City"
        },
        "metadata": {"erp_doc": format!("doc-{invoice_id}-{revision}")}
    });
    match payrelay::invoice::parse(body.to_string().as_bytes(), |_| true) {
        Ok(Message::PaymentRequest(invoice)) => *invoice,
        other => panic!("the test invoice parses: {other:?}"),
    }
}

fn key_of(invoice_id: &str, revision: i64) -> InvoiceKey {
    InvoiceKey {
        biller_id: ACME.to_owned(),
        invoice_id: invoice_id.to_owned(),
        revision,
    }
}

fn event(name: EventName, key: &InvoiceKey) -> Event {
    Event::about(name, key, &correlation(&key.invoice_id))
}

/// Stores a new invoice; panics unless it is new.
async fn accepted(store: &dyn Store, invoice_id: &str, revision: i64) -> InvoiceKey {
    let invoice = invoice(invoice_id, revision);
    let key = invoice.key.clone();
    let begin = store
        .begin(
            &invoice,
            &correlation(invoice_id),
            &event(EventName::Accepted, &key),
            &[],
            "default",
        )
        .await
        .unwrap();
    assert_eq!(begin, Begin::New, "{key}");
    key
}

async fn begin(store: &dyn Store, invoice_id: &str, revision: i64) -> Begin {
    let invoice = invoice(invoice_id, revision);
    let key = invoice.key.clone();
    let begun = store
        .begin(
            &invoice,
            &correlation(invoice_id),
            &event(EventName::Accepted, &key),
            &[],
            "default",
        )
        .await
        .unwrap();
    match begun {
        Begin::Resume { attempts } => Begin::Resume {
            attempts: untimed(attempts),
        },
        other => other,
    }
}

/// Attempts without their end times, which come from the clock.
fn untimed(attempts: Vec<AttemptRecord>) -> Vec<AttemptRecord> {
    attempts
        .into_iter()
        .map(|a| AttemptRecord { finished_ms: None, ..a })
        .collect()
}

fn paylink(token: &str) -> NewPaylink {
    NewPaylink {
        token_hash: format!("hash-{token}"),
        expires_at_ms: 4_102_444_800_000,
        address_hash: None,
    }
}

/// Starts an attempt carrying the pay link `hash-<token>`.
async fn started(store: &dyn Store, key: &InvoiceKey, channel: ChannelName, attempt: u32, token: &str) -> i64 {
    store
        .start_attempt(key, channel, attempt, &paylink(token), None)
        .await
        .unwrap()
        .id()
        .expect("the invoice is open, so the attempt starts")
}

/// Starts and finishes an attempt as sent, with provider id `provider`.
async fn sent(store: &dyn Store, key: &InvoiceKey, channel: ChannelName, token: &str, provider: &str) -> i64 {
    let id = started(store, key, channel, 1, token).await;
    let outcome = AttemptOutcome::Sent {
        provider_message_id: Some(provider.to_owned()),
    };
    store
        .finish_attempt(id, &outcome, &event(EventName::Sent, key).channel(channel, 1))
        .await
        .unwrap();
    id
}

async fn events(store: &dyn Store) -> Vec<Event> {
    store
        .outbox(100_000)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event().unwrap())
        .collect()
}

async fn count(store: &dyn Store, name: EventName) -> usize {
    events(store).await.iter().filter(|e| e.event == name).count()
}

/// Publishes the outbox as the instances' publishers would: each store in
/// turn takes the events it is to publish and confirms them, until none of
/// them has any left. Every event comes once, in the order it was taken.
/// (With PostgreSQL each instance publishes its own events, and an event
/// waits for an older one of its invoice held by another instance.)
async fn drain(stores: &[&dyn Store]) -> Vec<Event> {
    let mut drained = Vec::new();
    for _ in 0..1_000 {
        let mut any = false;
        for store in stores {
            let batch = store.outbox(100_000).await.unwrap();
            let ids: Vec<i64> = batch.iter().map(|e| e.id).collect();
            store.outbox_done(&ids).await.unwrap();
            any |= !batch.is_empty();
            drained.extend(batch.iter().map(|e| e.event().unwrap()));
        }
        if !any {
            return drained;
        }
    }
    panic!("the outbox does not drain");
}

fn count_of(events: &[Event], name: EventName) -> usize {
    events.iter().filter(|e| e.event == name).count()
}

/// The status of one revision, as the dispatcher reads it.
async fn status(store: &dyn Store, key: &InvoiceKey) -> Option<Status> {
    store.invoice(key).await.unwrap().map(|stored| stored.status)
}

/// Runs `n` copies of `task` at once, each with its index and one of the
/// stores in turn, all released together; returns their answers.
async fn race<T, F, Fut>(stores: &[Arc<dyn Store>], n: usize, task: F) -> Vec<T>
where
    T: Send + 'static,
    F: Fn(usize, Arc<dyn Store>) -> Fut,
    Fut: std::future::Future<Output = T> + Send + 'static,
{
    let barrier = Arc::new(Barrier::new(n));
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let barrier = barrier.clone();
            let work = task(i, stores[i % stores.len()].clone());
            tokio::spawn(async move {
                barrier.wait().await;
                work.await
            })
        })
        .collect();
    let mut answers = Vec::with_capacity(n);
    for handle in handles {
        answers.push(handle.await.unwrap());
    }
    answers
}

const RACERS: usize = 16;

// ---------------------------------------------------------------------------
// begin

async fn an_event_keeps_its_id_and_time_through_the_outbox(db: &TestDb) {
    let store = db.store.as_ref();
    let key = key_of("INV-1", 1);
    let recorded = event(EventName::Clicked, &key);
    store.record_event(&recorded).await.unwrap();
    let read = store.outbox(10).await.unwrap();
    assert_eq!(read.len(), 1);
    assert_eq!(
        read[0].head.event_id, recorded.event_id,
        "published again, it keeps its id"
    );
    assert_eq!(read[0].event().unwrap(), recorded);
    // Read again before it is forgotten (a publish that was not confirmed):
    // the same id.
    assert_eq!(store.outbox(10).await.unwrap()[0].head.event_id, recorded.event_id);
}

async fn begin_stores_a_new_invoice_and_queues_accepted(db: &TestDb) {
    let store = db.store.as_ref();
    let key = accepted(store, "INV-1", 1).await;

    assert_eq!(status(store, &key).await, Some(Status::Accepted));
    let stored = store.invoice(&key).await.unwrap().expect("stored");
    assert_eq!(stored.status, Status::Accepted);
    assert_eq!(stored.invoice.key, key);
    assert_eq!(
        stored.invoice.metadata,
        Some(serde_json::json!({"erp_doc": "doc-INV-1-1"}))
    );
    assert_eq!(stored.correlation.correlation_id.as_deref(), Some("corr-INV-1"));
    assert_eq!(stored.correlation.message_id.as_deref(), Some("msg-INV-1"));
    assert!(stored.attempts.is_empty());

    let queued = events(store).await;
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0], event(EventName::Accepted, &key).at_of(&queued[0]));

    assert!(store.invoice(&key_of("INV-1", 2)).await.unwrap().is_none());
    assert_eq!(status(store, &key_of("INV-2", 1)).await, None);
}

async fn begin_again_resumes_an_unfinished_invoice_after_its_attempts(db: &TestDb) {
    let store = db.store.as_ref();
    let key = accepted(store, "INV-1", 1).await;
    assert_eq!(begin(store, "INV-1", 1).await, Begin::Resume { attempts: vec![] });

    let email = started(store, &key, ChannelName::Email, 1, "a").await;
    assert_eq!(
        begin(store, "INV-1", 1).await,
        Begin::Resume {
            attempts: vec![AttemptRecord {
                channel: ChannelName::Email,
                attempt: 1,
                state: AttemptState::Sending,
                step: None,
                finished_ms: None,
                opened: false,
            }]
        }
    );
    let failed = AttemptOutcome::Failed {
        detail: "smtp 451".into(),
    };
    store
        .finish_attempt(email, &failed, &event(EventName::ChannelFailed, &key))
        .await
        .unwrap();
    sent(store, &key, ChannelName::Sms, "b", "SM1").await;

    let expected = vec![
        AttemptRecord {
            channel: ChannelName::Email,
            attempt: 1,
            state: AttemptState::Failed,
            step: None,
            finished_ms: None,
            opened: false,
        },
        AttemptRecord {
            channel: ChannelName::Sms,
            attempt: 1,
            state: AttemptState::Sent,
            step: None,
            finished_ms: None,
            opened: false,
        },
    ];
    assert_eq!(
        begin(store, "INV-1", 1).await,
        Begin::Resume {
            attempts: expected.clone()
        }
    );
    assert_eq!(
        untimed(store.invoice(&key).await.unwrap().expect("stored").attempts),
        expected
    );
    assert_eq!(count(store, EventName::Accepted).await, 1, "a resume queues nothing");
}

async fn begin_of_a_finished_invoice_is_a_duplicate(db: &TestDb) {
    let store = db.store.as_ref();
    let sent_key = accepted(store, "INV-1", 1).await;
    store
        .finish_invoice(&sent_key, Status::Sent, &[event(EventName::Sent, &sent_key)])
        .await
        .unwrap();
    let exhausted_key = accepted(store, "INV-2", 1).await;
    store
        .finish_invoice(&exhausted_key, Status::Exhausted, &[])
        .await
        .unwrap();

    assert_eq!(
        begin(store, "INV-1", 1).await,
        Begin::Duplicate { status: Status::Sent }
    );
    assert_eq!(
        begin(store, "INV-2", 1).await,
        Begin::Duplicate {
            status: Status::Exhausted
        }
    );
    assert_eq!(count(store, EventName::Accepted).await, 2);
}

async fn a_higher_revision_supersedes_lower_ones_which_become_stale(db: &TestDb) {
    let store = db.store.as_ref();
    let first = accepted(store, "INV-1", 1).await;
    store.finish_invoice(&first, Status::Sent, &[]).await.unwrap();
    let second = accepted(store, "INV-1", 2).await;
    let fifth = accepted(store, "INV-1", 5).await;

    assert_eq!(status(store, &first).await, Some(Status::Superseded));
    assert_eq!(status(store, &second).await, Some(Status::Superseded));
    assert_eq!(status(store, &fifth).await, Some(Status::Accepted));
    assert_eq!(begin(store, "INV-1", 1).await, Begin::Stale { latest: 5 });
    assert_eq!(begin(store, "INV-1", 4).await, Begin::Stale { latest: 5 });
    assert_eq!(begin(store, "INV-1", 5).await, Begin::Resume { attempts: vec![] });
    assert_eq!(
        status(store, &key_of("INV-1", 4)).await,
        None,
        "a stale revision is not stored"
    );
    // Another invoice of the same biller is untouched.
    let other = accepted(store, "INV-2", 1).await;
    assert_eq!(status(store, &other).await, Some(Status::Accepted));
    assert_eq!(status(store, &fifth).await, Some(Status::Accepted));
}

async fn a_closed_invoice_refuses_every_revision_even_one_never_seen(db: &TestDb) {
    let store = db.store.as_ref();
    let paid = event(EventName::Paid, &key_of("INV-1", 1));
    assert!(store.close(ACME, "INV-1", Status::Paid, &paid).await.unwrap());
    assert_eq!(begin(store, "INV-1", 1).await, Begin::Closed { status: Status::Paid });
    assert_eq!(begin(store, "INV-1", 7).await, Begin::Closed { status: Status::Paid });
    assert_eq!(status(store, &key_of("INV-1", 1)).await, None);
    assert_eq!(count(store, EventName::Accepted).await, 0);

    let cancelled = event(EventName::Cancelled, &key_of("INV-2", 1));
    let sent_key = accepted(store, "INV-2", 1).await;
    store.finish_invoice(&sent_key, Status::Sent, &[]).await.unwrap();
    assert!(store.close(ACME, "INV-2", Status::Cancelled, &cancelled).await.unwrap());
    assert_eq!(
        begin(store, "INV-2", 1).await,
        Begin::Closed {
            status: Status::Cancelled
        }
    );
    assert_eq!(
        begin(store, "INV-2", 2).await,
        Begin::Closed {
            status: Status::Cancelled
        }
    );
}

async fn close_happens_once_and_spares_superseded_revisions(db: &TestDb) {
    let store = db.store.as_ref();
    let first = accepted(store, "INV-1", 1).await;
    let second = accepted(store, "INV-1", 2).await;
    store.hold(&second, 4_000_000_000_000).await.unwrap();
    let mut cancelled = event(EventName::Cancelled, &key_of("INV-1", 1));
    cancelled.revision = None;

    assert!(store.close(ACME, "INV-1", Status::Cancelled, &cancelled).await.unwrap());
    assert_eq!(status(store, &first).await, Some(Status::Superseded));
    assert_eq!(status(store, &second).await, Some(Status::Cancelled));
    assert_eq!(store.next_hold().await.unwrap(), None, "a close ends the hold");

    // Once, whichever way it is asked again.
    assert!(!store.close(ACME, "INV-1", Status::Cancelled, &cancelled).await.unwrap());
    let paid = event(EventName::Paid, &first);
    assert!(!store.close(ACME, "INV-1", Status::Paid, &paid).await.unwrap());
    assert_eq!(status(store, &second).await, Some(Status::Cancelled));

    let closing: Vec<Event> = events(store)
        .await
        .into_iter()
        .filter(|e| matches!(e.event, EventName::Cancelled | EventName::Paid))
        .collect();
    assert_eq!(closing.len(), 1);
    assert_eq!(closing[0].event, EventName::Cancelled);
    assert_eq!(closing[0].revision, Some(2), "the event names the latest revision");
    assert_eq!(
        closing[0].metadata,
        Some(serde_json::json!({"erp_doc": "doc-INV-1-2"})),
        "and carries its metadata"
    );
    assert_eq!(closing[0].channel, None, "a cancellation names no channel");
}

async fn the_paid_event_names_the_channel_whose_link_was_opened_last(db: &TestDb) {
    let store = db.store.as_ref();
    let key = accepted(store, "INV-1", 1).await;
    sent(store, &key, ChannelName::Email, "email", "E1").await;
    sent(store, &key, ChannelName::Sms, "sms", "S1").await;
    sent(store, &key, ChannelName::Whatsapp, "whatsapp", "W1").await;
    let clicked = event(EventName::Clicked, &key);
    // SMS first, then email (twice): email's link was opened last. WhatsApp's never.
    store.record_click("hash-sms", &clicked).await.unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    store.record_click("hash-email", &clicked).await.unwrap();
    store.record_click("hash-email", &clicked).await.unwrap();

    let paid = event(EventName::Paid, &key).detail("paid at the counter");
    assert!(store.close(ACME, "INV-1", Status::Paid, &paid).await.unwrap());
    let queued = events(store).await;
    let paid: Vec<&Event> = queued.iter().filter(|e| e.event == EventName::Paid).collect();
    assert_eq!(paid.len(), 1);
    assert_eq!(paid[0].channel, Some(ChannelName::Email), "{:?}", paid[0]);
    assert_eq!(
        paid[0].detail.as_deref(),
        Some("paid at the counter; the customer last opened the pay link from the email message")
    );
    assert_eq!(status(store, &key).await, Some(Status::Paid));

    // No click: the paid event names no channel.
    let unclicked = accepted(store, "INV-2", 1).await;
    sent(store, &unclicked, ChannelName::Email, "email-2", "E2").await;
    let paid = event(EventName::Paid, &unclicked);
    assert!(store.close(ACME, "INV-2", Status::Paid, &paid).await.unwrap());
    let queued = events(store).await;
    let last = queued.last().expect("the paid event");
    assert_eq!(last.event, EventName::Paid);
    assert_eq!(last.invoice_id.as_deref(), Some("INV-2"));
    assert_eq!(last.channel, None);
    assert_eq!(last.detail, None);
}

async fn finish_invoice_does_not_override_a_closed_status(db: &TestDb) {
    let store = db.store.as_ref();
    let key = accepted(store, "INV-1", 1).await;
    sent(store, &key, ChannelName::Email, "a", "E1").await;
    let paid = event(EventName::Paid, &key);
    assert!(store.close(ACME, "INV-1", Status::Paid, &paid).await.unwrap());

    store
        .finish_invoice(&key, Status::Sent, &[event(EventName::Sent, &key)])
        .await
        .unwrap();
    assert_eq!(status(store, &key).await, Some(Status::Paid));
    store.finish_invoice(&key, Status::Exhausted, &[]).await.unwrap();
    assert_eq!(status(store, &key).await, Some(Status::Paid));

    // Nor a superseded one.
    let old = accepted(store, "INV-2", 1).await;
    accepted(store, "INV-2", 2).await;
    store.finish_invoice(&old, Status::Sent, &[]).await.unwrap();
    assert_eq!(status(store, &old).await, Some(Status::Superseded));
}

async fn no_attempt_starts_on_a_paid_cancelled_or_superseded_invoice(db: &TestDb) {
    let store = db.store.as_ref();
    let paid = accepted(store, "INV-1", 1).await;
    assert!(store
        .close(ACME, "INV-1", Status::Paid, &event(EventName::Paid, &paid))
        .await
        .unwrap());
    let cancelled = accepted(store, "INV-2", 1).await;
    assert!(store
        .close(
            ACME,
            "INV-2",
            Status::Cancelled,
            &event(EventName::Cancelled, &cancelled)
        )
        .await
        .unwrap());
    let superseded = accepted(store, "INV-3", 1).await;
    let newer = accepted(store, "INV-3", 2).await;

    for (key, token) in [(&paid, "p"), (&cancelled, "c"), (&superseded, "s")] {
        let started = store
            .start_attempt(key, ChannelName::Email, 1, &paylink(token), None)
            .await
            .unwrap();
        assert_eq!(started, AttemptStart::Closed, "{key} is closed: no attempt");
        assert!(
            store.paylink(&format!("hash-{token}")).await.unwrap().is_none(),
            "{key}: no pay link is recorded for a send that never happens"
        );
        assert!(store.invoice(key).await.unwrap().expect("stored").attempts.is_empty());
    }
    // An open one, sent before or not, still takes attempts.
    assert!(store
        .start_attempt(&newer, ChannelName::Email, 1, &paylink("n"), None)
        .await
        .unwrap()
        .id()
        .is_some());
}

async fn a_send_that_ends_the_invoice_is_stored_with_it_at_once(db: &TestDb) {
    let store = db.store.as_ref();
    let key = accepted(store, "INV-1", 1).await;
    let id = started(store, &key, ChannelName::Sms, 1, "a").await;
    let sent_event = event(EventName::Sent, &key)
        .channel(ChannelName::Sms, 1)
        .provider_message_id(Some("SM1".into()));
    store.finish_sent(id, Some("SM1"), &sent_event, &key).await.unwrap();

    assert_eq!(status(store, &key).await, Some(Status::Sent));
    let attempts = store.invoice(&key).await.unwrap().expect("stored").attempts;
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].state, AttemptState::Sent);
    let found = store
        .attempt_by_provider_id(ChannelName::Sms, "SM1")
        .await
        .unwrap()
        .expect("found by its provider id");
    assert_eq!(found.attempt_id, id);
    let names: Vec<_> = events(store).await.iter().map(|e| e.event).collect();
    assert_eq!(names, vec![EventName::Accepted, EventName::Sent]);
    assert!(
        matches!(
            begin(store, "INV-1", 1).await,
            Begin::Duplicate { status: Status::Sent }
        ),
        "the invoice is finished"
    );

    // Paid while the send was under way: the payment stands.
    let paid = accepted(store, "INV-2", 1).await;
    let id = started(store, &paid, ChannelName::Email, 1, "b").await;
    assert!(store
        .close(ACME, "INV-2", Status::Paid, &event(EventName::Paid, &paid))
        .await
        .unwrap());
    store
        .finish_sent(id, None, &event(EventName::Sent, &paid), &paid)
        .await
        .unwrap();
    assert_eq!(status(store, &paid).await, Some(Status::Paid));
}

async fn a_new_invoice_is_stored_with_its_first_attempt_and_nothing_else_is(db: &TestDb) {
    let store = db.store.as_ref();
    let invoice = invoice("INV-1", 1);
    let key = invoice.key.clone();
    let accepted = event(EventName::Accepted, &key);
    let (begun, attempt) = store
        .begin_with_attempt(
            &invoice,
            &correlation("INV-1"),
            &accepted,
            &[],
            "default",
            ChannelName::Sms,
            &paylink("a"),
        )
        .await
        .unwrap();
    assert_eq!(begun, Begin::New);
    let attempt = attempt.expect("the first attempt is recorded with the invoice");
    let stored = store.invoice(&key).await.unwrap().expect("stored");
    assert_eq!(stored.status, Status::Accepted);
    assert_eq!(
        stored.attempts,
        vec![AttemptRecord {
            channel: ChannelName::Sms,
            attempt: 1,
            state: AttemptState::Sending,
            step: None,
            finished_ms: None,
            opened: false,
        }]
    );
    let link = store.paylink("hash-a").await.unwrap().expect("the pay link is stored");
    assert_eq!(link.key, key);
    assert_eq!(link.channel, ChannelName::Sms);
    let names: Vec<_> = events(store).await.iter().map(|e| e.event).collect();
    assert_eq!(names, vec![EventName::Accepted]);

    // The same key again: no second attempt, no second pay link.
    let (again, none) = store
        .begin_with_attempt(
            &invoice,
            &correlation("INV-1"),
            &accepted,
            &[],
            "default",
            ChannelName::Sms,
            &paylink("b"),
        )
        .await
        .unwrap();
    assert_eq!(
        again,
        Begin::Resume {
            attempts: stored.attempts.clone()
        }
    );
    assert_eq!(none, None);
    assert!(store.paylink("hash-b").await.unwrap().is_none());
    let id = attempt;
    store
        .finish_sent(id, Some("SM1"), &event(EventName::Sent, &key), &key)
        .await
        .unwrap();
    let (finished, none) = store
        .begin_with_attempt(
            &invoice,
            &correlation("INV-1"),
            &accepted,
            &[],
            "default",
            ChannelName::Sms,
            &paylink("c"),
        )
        .await
        .unwrap();
    assert_eq!(finished, Begin::Duplicate { status: Status::Sent });
    assert_eq!(none, None);
    assert!(store.paylink("hash-c").await.unwrap().is_none());
}

async fn attempts_are_recorded_from_start_to_finish(db: &TestDb) {
    let store = db.store.as_ref();
    let key = accepted(store, "INV-1", 1).await;
    let first = started(store, &key, ChannelName::Email, 1, "a").await;
    let second = started(store, &key, ChannelName::Email, 2, "b").await;
    assert!(second > first, "attempt ids grow");

    let failed = AttemptOutcome::Failed {
        detail: "smtp 451".into(),
    };
    let channel_failed = event(EventName::ChannelFailed, &key).channel(ChannelName::Email, 1);
    store.finish_attempt(first, &failed, &channel_failed).await.unwrap();
    let ok = AttemptOutcome::Sent {
        provider_message_id: Some("<m2@acme>".into()),
    };
    let sent_event = event(EventName::Sent, &key)
        .channel(ChannelName::Email, 2)
        .provider_message_id(Some("<m2@acme>".into()));
    store.finish_attempt(second, &ok, &sent_event).await.unwrap();
    let anonymous = started(store, &key, ChannelName::Sms, 1, "c").await;
    let no_id = AttemptOutcome::Sent {
        provider_message_id: None,
    };
    store
        .finish_attempt(anonymous, &no_id, &event(EventName::Sent, &key))
        .await
        .unwrap();

    let attempts = store.invoice(&key).await.unwrap().expect("stored").attempts;
    let states: Vec<_> = attempts.iter().map(|a| (a.channel, a.attempt, a.state)).collect();
    assert_eq!(
        states,
        vec![
            (ChannelName::Email, 1, AttemptState::Failed),
            (ChannelName::Email, 2, AttemptState::Sent),
            (ChannelName::Sms, 1, AttemptState::Sent),
        ]
    );
    let found = store
        .attempt_by_provider_id(ChannelName::Email, "<m2@acme>")
        .await
        .unwrap()
        .expect("found");
    assert_eq!(found.attempt_id, second);
    assert_eq!(found.attempt, 2);

    let queued = events(store).await;
    let names: Vec<_> = queued.iter().map(|e| e.event).collect();
    assert_eq!(
        names,
        vec![
            EventName::Accepted,
            EventName::ChannelFailed,
            EventName::Sent,
            EventName::Sent
        ]
    );
    assert_eq!(queued[2].provider_message_id.as_deref(), Some("<m2@acme>"));

    // A pay link's hash is unique: a repeated one is refused.
    assert!(store
        .start_attempt(&key, ChannelName::Sms, 2, &paylink("a"), None)
        .await
        .is_err());
}

async fn the_outbox_is_oldest_first_and_forgets_confirmed_events(db: &TestDb) {
    let store = db.store.as_ref();
    assert!(store.outbox(10).await.unwrap().is_empty());
    let bare = Event::bare(EventName::Rejected, &Correlation::default());
    for i in 0..7 {
        store.record_event(&bare.clone().detail(format!("e{i}"))).await.unwrap();
    }
    let detail = |entries: &[payrelay::store::OutboxEntry]| -> Vec<String> {
        entries
            .iter()
            .map(|e| e.event().unwrap().detail.unwrap_or_default())
            .collect()
    };

    let first = store.outbox(3).await.unwrap();
    assert_eq!(detail(&first), ["e0", "e1", "e2"]);
    assert!(first.windows(2).all(|w| w[0].id < w[1].id), "ids grow");
    assert_eq!(
        first[0].event().unwrap(),
        bare.clone().detail("e0"),
        "the event comes back as it went in"
    );
    assert_eq!(
        detail(&store.outbox(3).await.unwrap()),
        ["e0", "e1", "e2"],
        "reading forgets nothing"
    );

    // Confirmed out of order, with an id that is not there.
    store.outbox_done(&[first[2].id, first[0].id, 999_999]).await.unwrap();
    store.outbox_done(&[]).await.unwrap();
    assert_eq!(detail(&store.outbox(10).await.unwrap()), ["e1", "e3", "e4", "e5", "e6"]);

    let all: Vec<i64> = store.outbox(10).await.unwrap().iter().map(|e| e.id).collect();
    store.outbox_done(&all).await.unwrap();
    assert!(store.outbox(10).await.unwrap().is_empty());
    store.record_event(&bare.clone().detail("later")).await.unwrap();
    let later = store.outbox(10).await.unwrap();
    assert_eq!(detail(&later), ["later"]);
    assert!(later[0].id > all[all.len() - 1], "ids are not reused");
}

async fn a_paylink_is_found_by_its_hash_with_its_invoice(db: &TestDb) {
    let store = db.store.as_ref();
    let key = accepted(store, "INV-1", 1).await;
    started(store, &key, ChannelName::Whatsapp, 1, "tok").await;

    let link = store.paylink("hash-tok").await.unwrap().expect("found");
    assert_eq!(link.key, key);
    assert_eq!(link.channel, ChannelName::Whatsapp);
    assert_eq!(link.expires_at_ms, 4_102_444_800_000);
    assert_eq!(link.status, Status::Accepted);
    assert_eq!(link.invoice.key, key);
    assert_eq!(link.invoice.description.as_deref(), Some("Electricity, November 2026"));
    assert_eq!(link.correlation.correlation_id.as_deref(), Some("corr-INV-1"));
    assert_eq!(link.correlation.message_id.as_deref(), Some("msg-INV-1"));

    let paid = event(EventName::Paid, &key);
    store.close(ACME, "INV-1", Status::Paid, &paid).await.unwrap();
    let link = store.paylink("hash-tok").await.unwrap().expect("found");
    assert_eq!(link.status, Status::Paid, "the link shows the invoice's status now");

    assert!(store.paylink("hash-unknown").await.unwrap().is_none());
}

/// The pay page of an older message shows what the biller asks for now:
/// the link's own revision and channel, and the invoice's highest revision
/// with its status, read together; a click still counts on the link's own.
async fn an_older_revisions_paylink_comes_with_the_newest_revision(db: &TestDb) {
    let store = db.store.as_ref();
    let first = accepted(store, "INV-1", 1).await;
    started(store, &first, ChannelName::Sms, 1, "old").await;
    let link = store.paylink("hash-old").await.unwrap().expect("found");
    assert!(link.newest.is_none(), "no higher revision yet");

    let third = accepted(store, "INV-1", 3).await;
    started(store, &third, ChannelName::Email, 1, "mid").await;
    // Another invoice's higher revisions are not this one's.
    accepted(store, "INV-2", 7).await;
    let link = store.paylink("hash-old").await.unwrap().expect("found");
    assert_eq!((&link.key, link.channel), (&first, ChannelName::Sms), "the link's own");
    assert_eq!(link.status, Status::Superseded);
    assert_eq!(link.invoice.key, first);
    let newest = link.newest.expect("the newer revision comes with it");
    assert_eq!(newest.invoice.key, third);
    assert_eq!(newest.status, Status::Accepted);
    assert_eq!(
        newest.invoice.metadata,
        Some(serde_json::json!({"erp_doc": "doc-INV-1-3"}))
    );
    assert!(
        store
            .paylink("hash-mid")
            .await
            .unwrap()
            .expect("found")
            .newest
            .is_none(),
        "the newest revision's own link"
    );

    // Revisions skip numbers: the highest one comes, not the next one.
    assert_eq!(begin(store, "INV-1", 2).await, Begin::Stale { latest: 3 });
    let fifth = accepted(store, "INV-1", 5).await;
    for token in ["old", "mid"] {
        let link = store.paylink(&format!("hash-{token}")).await.unwrap().expect("found");
        assert_eq!(link.newest.expect("newer").invoice.key, fifth, "{token}");
    }

    // A click on the old link is the old message's.
    store
        .record_click("hash-old", &event(EventName::Clicked, &first))
        .await
        .unwrap();
    let history = store.history(ACME, "INV-1").await.unwrap().expect("history");
    let clicked: Vec<_> = history
        .timeline
        .iter()
        .filter(|e| e.what == "clicked")
        .map(|e| (e.revision, e.channel))
        .collect();
    assert_eq!(clicked, [(Some(1), Some(ChannelName::Sms))]);

    store
        .close(ACME, "INV-1", Status::Paid, &event(EventName::Paid, &fifth))
        .await
        .unwrap();
    let link = store.paylink("hash-old").await.unwrap().expect("found");
    assert_eq!(link.status, Status::Superseded, "a close spares superseded revisions");
    assert_eq!(
        link.newest.expect("newer").status,
        Status::Paid,
        "the newest shows the close"
    );
}

async fn the_first_click_queues_clicked_and_every_click_counts(db: &TestDb) {
    let store = db.store.as_ref();
    let key = accepted(store, "INV-1", 1).await;
    started(store, &key, ChannelName::Email, 1, "a").await;
    started(store, &key, ChannelName::Sms, 1, "b").await;
    let clicked = event(EventName::Clicked, &key);

    assert_eq!(store.record_click("hash-a", &clicked).await.unwrap(), 1);
    assert_eq!(store.record_click("hash-a", &clicked).await.unwrap(), 2);
    assert_eq!(store.record_click("hash-a", &clicked).await.unwrap(), 3);
    assert_eq!(count(store, EventName::Clicked).await, 1);
    assert_eq!(store.record_click("hash-b", &clicked).await.unwrap(), 1);
    assert_eq!(
        count(store, EventName::Clicked).await,
        2,
        "each link's first click counts"
    );

    assert!(
        store.record_click("hash-unknown", &clicked).await.is_err(),
        "an unknown link is an error"
    );
    assert_eq!(count(store, EventName::Clicked).await, 2);
}

async fn attempts_are_found_by_provider_id_on_their_own_channel(db: &TestDb) {
    let store = db.store.as_ref();
    let key = accepted(store, "INV-1", 3).await;
    let id = sent(store, &key, ChannelName::Sms, "a", "SM123").await;

    let found = store
        .attempt_by_provider_id(ChannelName::Sms, "SM123")
        .await
        .unwrap()
        .expect("found");
    assert_eq!(found.attempt_id, id);
    assert_eq!(found.key, key);
    assert_eq!(found.channel, ChannelName::Sms);
    assert_eq!(found.attempt, 1);
    assert_eq!(found.state, AttemptState::Sent);
    assert_eq!(found.correlation.correlation_id.as_deref(), Some("corr-INV-1"));
    assert_eq!(found.metadata, Some(serde_json::json!({"erp_doc": "doc-INV-1-3"})));

    assert!(store
        .attempt_by_provider_id(ChannelName::Whatsapp, "SM123")
        .await
        .unwrap()
        .is_none());
    assert!(store
        .attempt_by_provider_id(ChannelName::Sms, "SM999")
        .await
        .unwrap()
        .is_none());
}

async fn delivered_and_read_are_recorded_once_each(db: &TestDb) {
    let store = db.store.as_ref();
    let key = accepted(store, "INV-1", 1).await;
    let id = sent(store, &key, ChannelName::Whatsapp, "a", "wamid.1").await;
    let delivered = event(EventName::Delivered, &key);
    let read = event(EventName::Read, &key);

    assert!(store.record_reached(id, Reached::Delivered, &delivered).await.unwrap());
    assert!(!store.record_reached(id, Reached::Delivered, &delivered).await.unwrap());
    assert!(store.record_reached(id, Reached::Read, &read).await.unwrap());
    assert!(!store.record_reached(id, Reached::Read, &read).await.unwrap());
    assert!(!store.record_reached(id, Reached::Delivered, &delivered).await.unwrap());
    assert_eq!(count(store, EventName::Delivered).await, 1);
    assert_eq!(count(store, EventName::Read).await, 1);

    let history = store.history(ACME, "INV-1").await.unwrap().expect("history");
    let reached: Vec<_> = history
        .timeline
        .iter()
        .filter(|e| matches!(e.what, "delivered" | "read"))
        .map(|e| (e.what, e.channel))
        .collect();
    assert_eq!(
        reached,
        [
            ("delivered", Some(ChannelName::Whatsapp)),
            ("read", Some(ChannelName::Whatsapp))
        ]
    );

    assert!(
        !store
            .record_reached(999_999, Reached::Delivered, &delivered)
            .await
            .unwrap(),
        "an unknown attempt records nothing"
    );
    assert_eq!(count(store, EventName::Delivered).await, 1);
}

async fn fail_after_send_fails_a_sent_attempt_once_and_reopens_the_invoice(db: &TestDb) {
    let store = db.store.as_ref();
    let key = accepted(store, "INV-1", 1).await;
    let sending = started(store, &key, ChannelName::Email, 1, "a").await;
    let id = sent(store, &key, ChannelName::Sms, "b", "SM1").await;
    store
        .finish_invoice(&key, Status::Sent, &[event(EventName::Sent, &key)])
        .await
        .unwrap();
    let failed = event(EventName::ChannelFailed, &key).detail("undelivered");

    assert!(
        !store.fail_after_send(sending, "late", &failed).await.unwrap(),
        "an attempt still sending is not failed after send"
    );
    assert!(store
        .fail_after_send(id, "carrier: undelivered", &failed)
        .await
        .unwrap());
    assert_eq!(
        status(store, &key).await,
        Some(Status::Accepted),
        "reopened for the next channel"
    );
    let attempts = untimed(store.invoice(&key).await.unwrap().expect("stored").attempts);
    assert_eq!(attempts[1].state, AttemptState::Failed);
    assert_eq!(begin(store, "INV-1", 1).await, Begin::Resume { attempts });

    assert!(!store.fail_after_send(id, "again", &failed).await.unwrap());
    assert!(!store.fail_after_send(999_999, "unknown", &failed).await.unwrap());
    assert_eq!(count(store, EventName::ChannelFailed).await, 1);
    let history = store.history(ACME, "INV-1").await.unwrap().expect("history");
    assert!(history
        .timeline
        .iter()
        .any(|e| e.what == "send_failed" && e.detail.as_deref() == Some("carrier: undelivered")));

    // An exhausted invoice reopens too.
    let key2 = accepted(store, "INV-2", 1).await;
    let id2 = sent(store, &key2, ChannelName::Email, "c", "E2").await;
    store.finish_invoice(&key2, Status::Exhausted, &[]).await.unwrap();
    assert!(store.fail_after_send(id2, "bounced", &failed).await.unwrap());
    assert_eq!(status(store, &key2).await, Some(Status::Accepted));
}

async fn fail_after_send_does_not_reopen_a_closed_invoice(db: &TestDb) {
    let store = db.store.as_ref();
    let key = accepted(store, "INV-1", 1).await;
    let id = sent(store, &key, ChannelName::Sms, "a", "SM1").await;
    store.finish_invoice(&key, Status::Sent, &[]).await.unwrap();
    let paid = event(EventName::Paid, &key);
    assert!(store.close(ACME, "INV-1", Status::Paid, &paid).await.unwrap());

    let failed = event(EventName::ChannelFailed, &key);
    assert!(store.fail_after_send(id, "undelivered", &failed).await.unwrap());
    assert_eq!(status(store, &key).await, Some(Status::Paid));

    // Nor a superseded revision.
    let old = accepted(store, "INV-2", 1).await;
    let old_id = sent(store, &old, ChannelName::Sms, "b", "SM2").await;
    store.finish_invoice(&old, Status::Sent, &[]).await.unwrap();
    accepted(store, "INV-2", 2).await;
    assert!(store.fail_after_send(old_id, "undelivered", &failed).await.unwrap());
    assert_eq!(status(store, &old).await, Some(Status::Superseded));
}

async fn history_tells_what_happened_in_order(db: &TestDb) {
    let store = db.store.as_ref();
    assert!(store.history(ACME, "INV-1").await.unwrap().is_none());
    // Steps a few milliseconds apart, so the order is the clock's.
    let tick = || tokio::time::sleep(Duration::from_millis(3));
    let first = accepted(store, "INV-1", 1).await;
    tick().await;
    let key = accepted(store, "INV-1", 2).await;
    tick().await;
    let email = started(store, &key, ChannelName::Email, 1, "a").await;
    tick().await;
    let failed = AttemptOutcome::Failed {
        detail: "smtp 550".into(),
    };
    store
        .finish_attempt(email, &failed, &event(EventName::ChannelFailed, &key))
        .await
        .unwrap();
    tick().await;
    let sms = sent(store, &key, ChannelName::Sms, "b", "SM1").await;
    tick().await;
    store
        .record_reached(sms, Reached::Delivered, &event(EventName::Delivered, &key))
        .await
        .unwrap();
    tick().await;
    store
        .record_reached(sms, Reached::Read, &event(EventName::Read, &key))
        .await
        .unwrap();
    tick().await;
    let clicked = event(EventName::Clicked, &key);
    store.record_click("hash-b", &clicked).await.unwrap();
    store.record_click("hash-b", &clicked).await.unwrap();
    tick().await;
    store.finish_invoice(&key, Status::Sent, &[]).await.unwrap();
    let before_close = store.history(ACME, "INV-1").await.unwrap().expect("history");
    assert_eq!(before_close.status, Status::Sent);
    assert_eq!(before_close.key, key);
    store
        .close(ACME, "INV-1", Status::Paid, &event(EventName::Paid, &key))
        .await
        .unwrap();

    let history = store.history(ACME, "INV-1").await.unwrap().expect("history");
    assert_eq!(history.key, key, "the latest revision");
    assert_eq!(history.status, Status::Paid);
    assert_eq!(history.held_until_ms, None);
    let steps: Vec<_> = history
        .timeline
        .iter()
        .map(|e| (e.what, e.revision, e.channel, e.detail.as_deref()))
        .collect();
    let email = Some(ChannelName::Email);
    let sms = Some(ChannelName::Sms);
    assert_eq!(
        steps,
        [
            ("received", Some(first.revision), None, None),
            ("received", Some(2), None, None),
            ("send_started", Some(2), email, None),
            ("send_failed", Some(2), email, Some("smtp 550")),
            ("send_started", Some(2), sms, None),
            ("sent", Some(2), sms, Some("provider id SM1")),
            ("delivered", Some(2), sms, None),
            ("read", Some(2), sms, None),
            ("clicked", Some(2), sms, Some("pay link opened 2 time(s)")),
            ("paid", None, None, None),
        ]
    );
    assert!(history.timeline.windows(2).all(|w| w[0].at_ms <= w[1].at_ms));
    assert!(store.history(ACME, "INV-9").await.unwrap().is_none());
    assert!(store.history("other", "INV-1").await.unwrap().is_none());
}

async fn an_invoice_closed_before_its_request_has_a_history_and_says_so(db: &TestDb) {
    let store = db.store.as_ref();
    let mut paid = event(EventName::Paid, &key_of("INV-EARLY", 1));
    paid.revision = None;
    assert!(store.close(ACME, "INV-EARLY", Status::Paid, &paid).await.unwrap());
    let history = store.history(ACME, "INV-EARLY").await.unwrap().expect("history");
    assert!(!history.received);
    assert_eq!(history.status, Status::Paid);
    let steps: Vec<_> = history.timeline.iter().map(|e| (e.what, e.revision)).collect();
    assert_eq!(steps, [("paid", None)]);
    let detail = history.timeline[0].detail.as_deref().unwrap_or_default();
    assert!(detail.contains("before its payment request arrived"), "{detail}");
    let queued: Vec<Event> = events(store)
        .await
        .into_iter()
        .filter(|e| e.event == EventName::Paid)
        .collect();
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].revision, None);
    assert_eq!(
        queued[0].detail.as_deref(),
        Some(detail),
        "the event says what the timeline says"
    );
}

async fn holds_come_due_in_order_and_end_when_the_invoice_is_finished(db: &TestDb) {
    let store = db.store.as_ref();
    assert_eq!(store.next_hold().await.unwrap(), None);
    assert!(store.due_holds(i64::MAX, 10).await.unwrap().is_empty());
    let late = accepted(store, "INV-1", 1).await;
    let early = accepted(store, "INV-2", 1).await;
    let far = accepted(store, "INV-3", 1).await;
    let unheld = accepted(store, "INV-4", 1).await;
    store.hold(&late, 2_000).await.unwrap();
    store.hold(&early, 1_000).await.unwrap();
    store.hold(&far, 9_000).await.unwrap();

    assert_eq!(store.next_hold().await.unwrap(), Some(1_000));
    assert!(store.due_holds(999, 10).await.unwrap().is_empty());
    assert_eq!(store.due_holds(1_000, 10).await.unwrap(), std::slice::from_ref(&early));
    assert_eq!(store.due_holds(5_000, 10).await.unwrap(), [early.clone(), late.clone()]);
    assert_eq!(store.due_holds(5_000, 1).await.unwrap(), std::slice::from_ref(&early));
    assert_eq!(
        store.due_holds(5_000, 10).await.unwrap(),
        [early.clone(), late.clone()],
        "a due hold stays until the invoice is sent or held again"
    );

    let history = store.history(ACME, "INV-1").await.unwrap().expect("history");
    assert_eq!(history.held_until_ms, Some(2_000));
    let held = history.timeline.iter().find(|e| e.what == "held").expect("held entry");
    assert_eq!(held.revision, Some(1));
    assert!(held
        .detail
        .as_deref()
        .unwrap_or_default()
        .starts_with("quiet hours: held until "));

    // Held again: later. Finished: no longer held.
    store.hold(&early, 3_000).await.unwrap();
    assert_eq!(store.due_holds(2_500, 10).await.unwrap(), std::slice::from_ref(&late));
    store.finish_invoice(&late, Status::Sent, &[]).await.unwrap();
    assert_eq!(store.next_hold().await.unwrap(), Some(3_000));
    assert_eq!(store.due_holds(5_000, 10).await.unwrap(), std::slice::from_ref(&early));
    assert_eq!(
        store
            .history(ACME, "INV-1")
            .await
            .unwrap()
            .expect("history")
            .held_until_ms,
        None
    );

    // Only an accepted invoice can be held.
    store.hold(&late, 100).await.unwrap();
    assert_eq!(store.next_hold().await.unwrap(), Some(3_000));
    // A superseded revision is no longer due.
    accepted(store, "INV-2", 2).await;
    assert!(store.due_holds(5_000, 10).await.unwrap().is_empty());
    assert_eq!(store.next_hold().await.unwrap(), Some(9_000));
    assert_eq!(store.due_holds(i64::MAX, 10).await.unwrap(), [far]);
    assert_eq!(status(store, &unheld).await, Some(Status::Accepted));
}

async fn each_due_hold_is_claimed_once_by_one_of_two_stores_asking_together(db: &TestDb) {
    const N: usize = 40;
    let store = db.store.as_ref();
    let other = db.another().await;
    let now = db.clock.now_ms();
    let mut due = Vec::new();
    for i in 0..N {
        let key = accepted(store, &format!("INV-{i}"), 1).await;
        store.hold(&key, now + 1_000 + i as i64).await.unwrap();
        due.push(key);
    }
    let far = accepted(store, "INV-far", 1).await;
    store.hold(&far, now + 9_000).await.unwrap();
    assert!(store.claim_due_holds(now + 999, 100).await.unwrap().is_empty());
    assert_eq!(
        store.claim_due_holds(now + 5_000, 1).await.unwrap(),
        std::slice::from_ref(&due[0]),
        "oldest first"
    );

    let (a, b) = tokio::join!(
        store.claim_due_holds(now + 5_000, 100),
        other.claim_due_holds(now + 5_000, 100)
    );
    let claimed: Vec<InvoiceKey> = a.unwrap().into_iter().chain(b.unwrap()).collect();
    let distinct: std::collections::HashSet<&InvoiceKey> = claimed.iter().collect();
    assert_eq!(claimed.len(), N - 1, "every other due hold, each once: {claimed:?}");
    assert_eq!(distinct.len(), N - 1);
    assert!(due[1..].iter().all(|k| distinct.contains(k)));

    // Claimed: no longer held or due, still open for its sender.
    assert!(store.due_holds(now + 5_000, 100).await.unwrap().is_empty());
    assert!(store.claim_due_holds(now + 5_000, 100).await.unwrap().is_empty());
    assert_eq!(store.next_hold().await.unwrap(), Some(now + 9_000));
    assert_eq!(status(store, &due[0]).await, Some(Status::Accepted));
    let history = store.history(ACME, "INV-0").await.unwrap().expect("history");
    assert_eq!(history.held_until_ms, None);
    // A claimed hold whose sender died is taken over once idle, like any
    // unfinished invoice.
    assert!(store.claim_stale(now + 5_000, 60_000, 100).await.unwrap().is_empty());
    assert_eq!(store.claim_stale(now + 65_000, 60_000, 100).await.unwrap().len(), N);
}

/// Four steps of journey "standard" for `key`, due at `base` + 1..4 s;
/// the first skipped at intake when `skip_first`.
fn steps_at(base: i64, skip_first: bool) -> Vec<PlannedStep> {
    (1..=4u32)
        .map(|seq| PlannedStep {
            seq,
            journey: "standard".into(),
            name: format!("step-{seq}"),
            due_ms: base + i64::from(seq) * 1_000,
            after_ms: (seq == 4).then_some(1_000),
            skipped: (skip_first && seq == 1).then(|| "its time had passed".to_owned()),
        })
        .collect()
}

async fn with_steps(store: &dyn Store, invoice_id: &str, revision: i64, steps: &[PlannedStep]) -> InvoiceKey {
    let invoice = invoice(invoice_id, revision);
    let key = invoice.key.clone();
    let begun = store
        .begin(
            &invoice,
            &correlation(invoice_id),
            &event(EventName::Accepted, &key),
            steps,
            "default",
        )
        .await
        .unwrap();
    assert_eq!(begun, Begin::New, "{key}");
    key
}

async fn journey_steps_are_stored_with_their_invoice_and_come_due_in_order(db: &TestDb) {
    let store = db.store.as_ref();
    let now = db.clock.now_ms();
    let key = with_steps(store, "INV-1", 1, &steps_at(now, true)).await;
    let steps = store.steps(ACME, "INV-1").await.unwrap();
    let shape: Vec<(u32, &str, StepStatus, i64)> = steps
        .iter()
        .map(|s| (s.seq, s.name.as_str(), s.status, s.due_ms))
        .collect();
    assert_eq!(
        shape,
        [
            (1, "step-1", StepStatus::Skipped, now + 1_000),
            (2, "step-2", StepStatus::Planned, now + 2_000),
            (3, "step-3", StepStatus::Planned, now + 3_000),
            (4, "step-4", StepStatus::Planned, now + 4_000),
        ]
    );
    assert_eq!(steps[0].detail.as_deref(), Some("its time had passed"));
    assert!(steps[0].done_ms.is_some() && steps[1].done_ms.is_none());
    assert!(steps.iter().all(|s| s.journey == "standard" && s.revision == 1));

    // A skipped step never comes due; the planned ones come in order.
    assert_eq!(store.next_step().await.unwrap(), Some(now + 2_000));
    assert!(store.claim_due_steps(now + 1_999, 60_000, 10).await.unwrap().is_empty());
    let due = store.claim_due_steps(now + 3_500, 60_000, 10).await.unwrap();
    let claimed: Vec<(u32, &str, i64)> = due.iter().map(|d| (d.seq, d.name.as_str(), d.due_ms)).collect();
    assert_eq!(claimed, [(2, "step-2", now + 2_000), (3, "step-3", now + 3_000)]);
    assert!(due.iter().all(|d| d.key == key && d.journey == "standard"));
    // Claimed: not claimed again until the claim is stale.
    assert!(store.claim_due_steps(now + 3_500, 60_000, 10).await.unwrap().is_empty());
    let again = store.claim_due_steps(now + 70_000, 60_000, 10).await.unwrap();
    assert_eq!(again.iter().map(|d| d.seq).collect::<Vec<_>>(), [2, 3, 4]);

    // Put back for later: free for any instance then, with why.
    store
        .reschedule_step(&key, 2, now + 100_000, "quiet hours")
        .await
        .unwrap();
    assert!(store
        .claim_due_steps(now + 99_999, 0, 10)
        .await
        .unwrap()
        .iter()
        .all(|d| d.seq != 2));
    let later = store.claim_due_steps(now + 100_000, 1_000_000, 10).await.unwrap();
    assert_eq!(later.iter().map(|d| d.seq).collect::<Vec<_>>(), [2]);
    let steps = store.steps(ACME, "INV-1").await.unwrap();
    assert_eq!(steps[1].due_ms, now + 100_000);
    assert_eq!(steps[1].detail.as_deref(), Some("quiet hours"));

    // An invoice stored again (a redelivery) plans nothing twice.
    assert!(matches!(begin(store, "INV-1", 1).await, Begin::Resume { .. }));
    assert_eq!(store.steps(ACME, "INV-1").await.unwrap().len(), 4);
}

async fn each_due_step_is_claimed_once_by_one_of_two_stores_asking_together(db: &TestDb) {
    const N: usize = 30;
    let store = db.store.as_ref();
    let other = db.another().await;
    let now = db.clock.now_ms();
    for i in 0..N {
        with_steps(store, &format!("INV-{i}"), 1, &steps_at(now, false)).await;
    }
    let (a, b) = tokio::join!(
        store.claim_due_steps(now + 2_500, 60_000, 1_000),
        other.claim_due_steps(now + 2_500, 60_000, 1_000)
    );
    let claimed: Vec<DueStep> = a.unwrap().into_iter().chain(b.unwrap()).collect();
    let distinct: std::collections::HashSet<(InvoiceKey, u32)> =
        claimed.iter().map(|d| (d.key.clone(), d.seq)).collect();
    assert_eq!(claimed.len(), 2 * N, "steps 1 and 2 of every invoice, each once");
    assert_eq!(distinct.len(), 2 * N);
}

async fn a_step_ends_once_and_a_close_or_a_new_revision_cancels_the_rest(db: &TestDb) {
    let store = db.store.as_ref();
    let now = db.clock.now_ms();
    let key = with_steps(store, "INV-1", 1, &steps_at(now, false)).await;
    let completed = event(EventName::JourneyCompleted, &key);
    assert!(store
        .finish_step(
            &key,
            1,
            StepStatus::Sent,
            Some("template reminder"),
            std::slice::from_ref(&completed)
        )
        .await
        .unwrap());
    assert!(
        !store
            .finish_step(&key, 1, StepStatus::Failed, None, std::slice::from_ref(&completed))
            .await
            .unwrap(),
        "a step ends once"
    );
    assert_eq!(
        count(store, EventName::JourneyCompleted).await,
        1,
        "with its events, once"
    );

    // A new revision cancels the old one's planned steps and plans its own.
    let newer = with_steps(store, "INV-1", 2, &steps_at(now, false)[2..]).await;
    let steps = store.steps(ACME, "INV-1").await.unwrap();
    let shape: Vec<(i64, u32, StepStatus)> = steps.iter().map(|s| (s.revision, s.seq, s.status)).collect();
    assert_eq!(
        shape,
        [
            (1, 1, StepStatus::Sent),
            (1, 2, StepStatus::Cancelled),
            (1, 3, StepStatus::Cancelled),
            (1, 4, StepStatus::Cancelled),
            (2, 3, StepStatus::Planned),
            (2, 4, StepStatus::Planned),
        ]
    );
    assert!(steps[1].detail.as_deref().is_some_and(|d| d.contains("newer revision")));
    let due = store.claim_due_steps(now + 10_000, 60_000, 10).await.unwrap();
    assert!(
        due.iter().all(|d| d.key == newer),
        "only the newest revision's steps come due"
    );
    for d in &due {
        store
            .reschedule_step(&d.key, d.seq, now + 1_000, "later")
            .await
            .unwrap();
    }

    // Paying the invoice cancels every planned step.
    store
        .close(ACME, "INV-1", Status::Paid, &event(EventName::Paid, &newer))
        .await
        .unwrap();
    let steps = store.steps(ACME, "INV-1").await.unwrap();
    assert!(steps[4..]
        .iter()
        .all(|s| s.status == StepStatus::Cancelled && s.detail.as_deref() == Some("paid")));
    assert_eq!(store.next_step().await.unwrap(), None);
    assert!(store.claim_due_steps(i64::MAX / 2, 0, 10).await.unwrap().is_empty());
}

async fn sends_of_a_step_are_recorded_with_its_name(db: &TestDb) {
    let store = db.store.as_ref();
    let key = accepted(store, "INV-1", 1).await;
    let first = started(store, &key, ChannelName::Email, 1, "a").await;
    let outcome = AttemptOutcome::Sent {
        provider_message_id: None,
    };
    store
        .finish_sent(first, None, &event(EventName::Sent, &key), &key)
        .await
        .unwrap();
    let reminder = store
        .start_attempt(&key, ChannelName::Sms, 1, &paylink("b"), Some("due"))
        .await
        .unwrap()
        .id()
        .expect("a sent invoice is still open for its reminders");
    store
        .finish_attempt(reminder, &outcome, &event(EventName::Sent, &key))
        .await
        .unwrap();
    let attempts = store.invoice(&key).await.unwrap().expect("stored").attempts;
    let steps: Vec<(ChannelName, Option<&str>)> = attempts.iter().map(|a| (a.channel, a.step.as_deref())).collect();
    assert_eq!(steps, [(ChannelName::Email, None), (ChannelName::Sms, Some("due"))]);
    assert!(attempts.iter().all(|a| a.finished_ms.is_some()));
    assert_eq!(
        status(store, &key).await,
        Some(Status::Sent),
        "a reminder leaves the status as it was"
    );
}

async fn messages_to_one_customer_are_counted_across_their_invoices(db: &TestDb) {
    let store = db.store.as_ref();
    let now = db.clock.now_ms();
    let first = accepted(store, "INV-1", 1).await;
    let second = accepted(store, "INV-2", 1).await;
    let customer = invoice("INV-1", 1).customer_key();
    assert_eq!(customer, invoice("INV-2", 1).customer_key(), "one customer");
    assert_eq!(store.messages_to_customer(&customer, now - 1).await.unwrap(), 0);
    sent(store, &first, ChannelName::Email, "a", "E1").await;
    started(store, &second, ChannelName::Sms, 1, "b").await;
    let failed = started(store, &second, ChannelName::Email, 1, "c").await;
    let outcome = AttemptOutcome::Failed { detail: "no".into() };
    store
        .finish_attempt(failed, &outcome, &event(EventName::ChannelFailed, &second))
        .await
        .unwrap();
    assert_eq!(
        store.messages_to_customer(&customer, now - 1).await.unwrap(),
        2,
        "sent and being sent count, failed does not"
    );
    assert_eq!(
        store.messages_to_customer(&customer, now + 3_600_000).await.unwrap(),
        0,
        "only since"
    );
    assert_eq!(
        store
            .messages_to_customer("acme/id/someone-else", now - 1)
            .await
            .unwrap(),
        0
    );
}

async fn ping_answers(db: &TestDb) {
    db.store.ping().await.unwrap();
    db.another().await.ping().await.unwrap();
}

async fn a_reopened_store_keeps_its_data(db: &TestDb) {
    let key = accepted(db.store.as_ref(), "INV-1", 1).await;
    sent(db.store.as_ref(), &key, ChannelName::Email, "a", "E1").await;
    // Opening again runs the migrations again: they are already applied.
    let again = db.another().await;
    assert_eq!(status(again.as_ref(), &key).await, Some(Status::Accepted));
    assert!(again.paylink("hash-a").await.unwrap().is_some());
    assert_eq!(
        begin(again.as_ref(), "INV-1", 1).await,
        Begin::Resume {
            attempts: vec![AttemptRecord {
                channel: ChannelName::Email,
                attempt: 1,
                state: AttemptState::Sent,
                step: None,
                finished_ms: None,
                opened: false,
            }]
        }
    );
    assert_eq!(drain(&[again.as_ref(), db.store.as_ref()]).await.len(), 2);
}

// ---------------------------------------------------------------------------
// Two instances at once

async fn concurrent_begins_of_one_key_make_exactly_one_new(db: &TestDb) {
    let stores = [db.store.clone(), db.another().await];
    for round in 0..3 {
        let invoice_id = format!("INV-{round}");
        let answers = race(&stores, RACERS, |_, store| {
            let invoice = invoice(&invoice_id, 1);
            async move {
                let accepted = event(EventName::Accepted, &invoice.key);
                store
                    .begin(
                        &invoice,
                        &correlation(&invoice.key.invoice_id),
                        &accepted,
                        &[],
                        "default",
                    )
                    .await
                    .unwrap()
            }
        })
        .await;
        let new = answers.iter().filter(|a| **a == Begin::New).count();
        assert_eq!(new, 1, "round {round}: {answers:?}");
        assert!(
            answers
                .iter()
                .all(|a| *a == Begin::New || *a == Begin::Resume { attempts: vec![] }),
            "{answers:?}"
        );
    }
    let published = drain(&[stores[0].as_ref(), stores[1].as_ref()]).await;
    assert_eq!(count_of(&published, EventName::Accepted), 3);
}

async fn concurrent_revisions_leave_only_the_highest_accepted(db: &TestDb) {
    let stores = [db.store.clone(), db.another().await];
    const REVISIONS: usize = 8;
    let answers = race(&stores, REVISIONS * 2, |i, store| {
        let invoice = invoice("INV-1", (i % REVISIONS) as i64 + 1);
        async move {
            let accepted = event(EventName::Accepted, &invoice.key);
            let answer = store
                .begin(&invoice, &correlation("INV-1"), &accepted, &[], "default")
                .await
                .unwrap();
            (invoice.key.revision, answer)
        }
    })
    .await;
    let store = db.store.as_ref();
    for revision in 1..=REVISIONS as i64 {
        let expected = if revision == REVISIONS as i64 {
            vec![Some(Status::Accepted)]
        } else {
            vec![None, Some(Status::Superseded)]
        };
        let found = status(store, &key_of("INV-1", revision)).await;
        assert!(
            expected.contains(&found),
            "revision {revision} is {found:?}: {answers:?}"
        );
    }
    let new = answers.iter().filter(|(_, a)| *a == Begin::New).count();
    let published = drain(&[stores[0].as_ref(), stores[1].as_ref()]).await;
    assert_eq!(
        count_of(&published, EventName::Accepted),
        new,
        "one accepted event per stored revision"
    );
    assert!(answers
        .iter()
        .filter(|(r, _)| *r == REVISIONS as i64)
        .any(|(_, a)| *a == Begin::New));
}

async fn a_close_racing_a_begin_never_leaves_the_invoice_open(db: &TestDb) {
    let stores = [db.store.clone(), db.another().await];
    const INVOICES: usize = 12;
    let answers = race(&stores, INVOICES * 2, |i, store| {
        let invoice_id = format!("INV-{}", i / 2);
        async move {
            let key = key_of(&invoice_id, 1);
            if i % 2 == 0 {
                let answer = begin(store.as_ref(), &invoice_id, 1).await;
                format!("{answer:?}")
            } else {
                let paid = event(EventName::Paid, &key);
                let closed = store.close(ACME, &invoice_id, Status::Paid, &paid).await.unwrap();
                format!("closed {closed}")
            }
        }
    })
    .await;
    let store = db.store.as_ref();
    for n in 0..INVOICES {
        let key = key_of(&format!("INV-{n}"), 1);
        let found = status(store, &key).await;
        assert!(
            matches!(found, None | Some(Status::Paid)),
            "{key} is {found:?} after a close: {:?}",
            &answers[2 * n..2 * n + 2]
        );
        assert_eq!(
            begin(store, &key.invoice_id, 1).await,
            Begin::Closed { status: Status::Paid }
        );
    }
    let published = drain(&[stores[0].as_ref(), stores[1].as_ref()]).await;
    assert_eq!(count_of(&published, EventName::Paid), INVOICES);
}

async fn concurrent_fail_after_send_succeeds_exactly_once(db: &TestDb) {
    let stores = [db.store.clone(), db.another().await];
    let store = db.store.as_ref();
    let key = accepted(store, "INV-1", 1).await;
    let id = sent(store, &key, ChannelName::Sms, "a", "SM1").await;
    store.finish_invoice(&key, Status::Sent, &[]).await.unwrap();

    let answers = race(&stores, RACERS, |i, store| {
        let failed = event(EventName::ChannelFailed, &key).detail(format!("report {i}"));
        async move { store.fail_after_send(id, "undelivered", &failed).await.unwrap() }
    })
    .await;
    assert_eq!(answers.iter().filter(|a| **a).count(), 1, "{answers:?}");
    let published = drain(&[stores[0].as_ref(), stores[1].as_ref()]).await;
    assert_eq!(count_of(&published, EventName::ChannelFailed), 1);
    assert_eq!(status(store, &key).await, Some(Status::Accepted));
}

async fn concurrent_closes_succeed_exactly_once(db: &TestDb) {
    let stores = [db.store.clone(), db.another().await];
    let store = db.store.as_ref();
    let key = accepted(store, "INV-1", 1).await;
    let answers = race(&stores, RACERS, |i, store| {
        let status = if i % 3 == 0 { Status::Cancelled } else { Status::Paid };
        let name = if status == Status::Paid {
            EventName::Paid
        } else {
            EventName::Cancelled
        };
        let closing = event(name, &key);
        async move { (status, store.close(ACME, "INV-1", status, &closing).await.unwrap()) }
    })
    .await;
    let winners: Vec<Status> = answers.iter().filter(|(_, won)| *won).map(|(s, _)| *s).collect();
    assert_eq!(winners.len(), 1, "{answers:?}");
    let published = drain(&[stores[0].as_ref(), stores[1].as_ref()]).await;
    let closing = count_of(&published, EventName::Paid) + count_of(&published, EventName::Cancelled);
    assert_eq!(closing, 1);
    assert_eq!(status(store, &key).await, Some(winners[0]));
}

async fn concurrent_delivery_reports_are_recorded_once(db: &TestDb) {
    let stores = [db.store.clone(), db.another().await];
    let store = db.store.as_ref();
    let key = accepted(store, "INV-1", 1).await;
    let id = sent(store, &key, ChannelName::Whatsapp, "a", "wamid.1").await;
    let answers = race(&stores, RACERS, |i, store| {
        let reached = if i % 2 == 0 { Reached::Delivered } else { Reached::Read };
        let name = if i % 2 == 0 {
            EventName::Delivered
        } else {
            EventName::Read
        };
        let report = event(name, &key);
        async move { (i % 2, store.record_reached(id, reached, &report).await.unwrap()) }
    })
    .await;
    for kind in 0..2 {
        let firsts = answers.iter().filter(|(k, first)| *k == kind && *first).count();
        assert_eq!(firsts, 1, "kind {kind}: {answers:?}");
    }
    let published = drain(&[stores[0].as_ref(), stores[1].as_ref()]).await;
    assert_eq!(count_of(&published, EventName::Delivered), 1);
    assert_eq!(count_of(&published, EventName::Read), 1);
}

async fn concurrent_clicks_each_count_and_queue_clicked_once(db: &TestDb) {
    let stores = [db.store.clone(), db.another().await];
    let store = db.store.as_ref();
    let key = accepted(store, "INV-1", 1).await;
    started(store, &key, ChannelName::Email, 1, "a").await;
    let counts = race(&stores, RACERS, |_, store| {
        let clicked = event(EventName::Clicked, &key);
        async move { store.record_click("hash-a", &clicked).await.unwrap() }
    })
    .await;
    let counts: BTreeSet<i64> = counts.into_iter().collect();
    assert_eq!(
        counts,
        (1..=RACERS as i64).collect::<BTreeSet<_>>(),
        "every click has its own count"
    );
    let published = drain(&[stores[0].as_ref(), stores[1].as_ref()]).await;
    assert_eq!(count_of(&published, EventName::Clicked), 1);
}

// ---------------------------------------------------------------------------

/// Events are stamped and given their id when made; compare them with
/// those aligned (the store keeps both as they were: see
/// `an_event_keeps_its_id_and_time_through_the_outbox`).
trait AtOf {
    fn at_of(self, other: &Event) -> Event;
}

impl AtOf for Event {
    fn at_of(mut self, other: &Event) -> Event {
        self.at = other.at.clone();
        self.event_id = other.event_id.clone();
        self
    }
}

async fn an_unfinished_invoice_is_claimed_only_when_idle_or_unconditionally(db: &TestDb) {
    let store = db.store.as_ref();
    let key = accepted(store, "INV-1", 1).await;
    let now = db.clock.now_ms();
    assert!(!store.claim(&key, now, 60_000).await.unwrap(), "just touched: not idle");
    assert!(store.claim(&key, now, 0).await.unwrap(), "idle 0 takes it over");
    assert!(
        store.claim(&key, now + 60_000, 60_000).await.unwrap(),
        "a minute without a touch"
    );
    assert!(
        !store.claim(&key, now + 60_000, 60_000).await.unwrap(),
        "and the claim reset its clock"
    );
    store.finish_invoice(&key, Status::Sent, &[]).await.unwrap();
    assert!(
        !store.claim(&key, now + 600_000, 0).await.unwrap(),
        "a finished invoice is nobody's to claim"
    );
    let unknown = payrelay::domain::InvoiceKey {
        biller_id: ACME.into(),
        invoice_id: "NOPE".into(),
        revision: 1,
    };
    assert!(!store.claim(&unknown, now, 0).await.unwrap());
}

async fn idle_unheld_unfinished_invoices_are_reclaimed_oldest_first(db: &TestDb) {
    let store = db.store.as_ref();
    let first = accepted(store, "INV-1", 1).await;
    let second = accepted(store, "INV-2", 1).await;
    let held = accepted(store, "INV-3", 1).await;
    let done = accepted(store, "INV-4", 1).await;
    store.hold(&held, i64::MAX).await.unwrap();
    store.finish_invoice(&done, Status::Sent, &[]).await.unwrap();
    let now = db.clock.now_ms();
    assert!(
        store.claim_stale(now, 60_000, 10).await.unwrap().is_empty(),
        "all fresh"
    );
    store.claim(&second, now + 1, 0).await.unwrap();
    let later = now + 120_000;
    assert_eq!(
        store.claim_stale(later, 60_000, 1).await.unwrap(),
        std::slice::from_ref(&first)
    );
    assert_eq!(
        store.claim_stale(later, 60_000, 10).await.unwrap(),
        std::slice::from_ref(&second)
    );
    assert!(
        store.claim_stale(later, 60_000, 10).await.unwrap().is_empty(),
        "claimed ones are fresh again; held and finished ones never come"
    );
}

async fn concurrent_claims_of_an_idle_invoice_succeed_exactly_once(db: &TestDb) {
    let stores = [db.store.clone(), db.another().await];
    let key = accepted(db.store.as_ref(), "INV-1", 1).await;
    let later = db.clock.now_ms() + 120_000;
    let answers = race(&stores, RACERS, |i, store| {
        let key = key.clone();
        async move {
            if i % 2 == 0 {
                store.claim(&key, later, 60_000).await.unwrap()
            } else {
                !store.claim_stale(later, 60_000, 10).await.unwrap().is_empty()
            }
        }
    })
    .await;
    assert_eq!(answers.iter().filter(|won| **won).count(), 1, "{answers:?}");
}

// ---------------------------------------------------------------------------
// Time

/// A store on a clock that moves only when told, at `ms`.
async fn on_manual_clock(db: &TestDb, ms: i64) -> (Arc<ManualClock>, Arc<dyn Store>) {
    let clock = Arc::new(ManualClock::at_ms(ms));
    let store = db.on_clock(clock.clone()).await;
    (clock, store)
}

/// Each step of the timeline is stamped with the time the store's clock
/// read when it was recorded, the wall clock's none; a hold shows at the
/// time it is looked at.
async fn every_time_the_store_writes_is_its_clock_s(db: &TestDb) {
    let (clock, store) = on_manual_clock(db, 1_000).await;
    let store = store.as_ref();
    let key = accepted(store, "INV-1", 1).await;
    clock.set_ms(2_000);
    let email = started(store, &key, ChannelName::Email, 1, "a").await;
    clock.set_ms(3_000);
    let failed = AttemptOutcome::Failed {
        detail: "smtp 550".into(),
    };
    store
        .finish_attempt(email, &failed, &event(EventName::ChannelFailed, &key))
        .await
        .unwrap();
    clock.set_ms(4_000);
    let sms = started(store, &key, ChannelName::Sms, 1, "b").await;
    clock.set_ms(5_000);
    let outcome = AttemptOutcome::Sent {
        provider_message_id: Some("SM1".into()),
    };
    store
        .finish_attempt(sms, &outcome, &event(EventName::Sent, &key))
        .await
        .unwrap();
    clock.set_ms(6_000);
    store
        .record_reached(sms, Reached::Delivered, &event(EventName::Delivered, &key))
        .await
        .unwrap();
    clock.set_ms(7_000);
    store
        .record_reached(sms, Reached::Read, &event(EventName::Read, &key))
        .await
        .unwrap();
    clock.set_ms(8_000);
    store
        .record_click("hash-b", &event(EventName::Clicked, &key))
        .await
        .unwrap();
    clock.set_ms(8_500);
    store.hold(&key, 50_000).await.unwrap();
    clock.set_ms(8_600);
    let held = store.history(ACME, "INV-1").await.unwrap().expect("history");
    let held_at: Vec<_> = held
        .timeline
        .iter()
        .filter(|e| e.what == "held")
        .map(|e| e.at_ms)
        .collect();
    assert_eq!(held_at, [8_600]);
    clock.set_ms(9_000);
    store.finish_invoice(&key, Status::Sent, &[]).await.unwrap();
    clock.set_ms(10_000);
    store
        .close(ACME, "INV-1", Status::Paid, &event(EventName::Paid, &key))
        .await
        .unwrap();

    let history = store.history(ACME, "INV-1").await.unwrap().expect("history");
    let steps: Vec<_> = history.timeline.iter().map(|e| (e.what, e.at_ms)).collect();
    assert_eq!(
        steps,
        [
            ("received", 1_000),
            ("send_started", 2_000),
            ("send_failed", 3_000),
            ("send_started", 4_000),
            ("sent", 5_000),
            ("delivered", 6_000),
            ("read", 7_000),
            ("clicked", 8_000),
            ("paid", 10_000),
        ]
    );
}

/// An invoice is idle from the last time the store's clock stamped it: its
/// acceptance, then each attempt.
async fn an_invoice_goes_idle_by_the_store_s_clock(db: &TestDb) {
    const T: i64 = 1_000_000;
    let (clock, store) = on_manual_clock(db, T).await;
    let store = store.as_ref();
    let key = accepted(store, "INV-1", 1).await;
    assert!(store.claim_stale(T + 59_999, 60_000, 10).await.unwrap().is_empty());
    assert!(!store.claim(&key, T + 59_999, 60_000).await.unwrap());
    clock.set_ms(T + 30_000);
    started(store, &key, ChannelName::Email, 1, "a").await;
    assert!(
        store.claim_stale(T + 60_000, 60_000, 10).await.unwrap().is_empty(),
        "the attempt at T + 30 s touched it"
    );
    assert_eq!(
        store.claim_stale(T + 90_000, 60_000, 10).await.unwrap(),
        std::slice::from_ref(&key)
    );
}

// ---------------------------------------------------------------------------
// PostgreSQL only: several instances share one outbox. (SQLite's outbox
// serves one process: every handle sees every event.)

/// A store on `db` with its own outbox lease, as one more instance.
async fn instance(db: &TestDb, lease: Duration) -> Arc<dyn Store> {
    Arc::new(
        payrelay::store::postgres::PostgresStore::open_with_lease(&db.url, lease, db.clock.clone())
            .await
            .unwrap(),
    )
}

fn details(entries: &[payrelay::store::OutboxEntry]) -> Vec<String> {
    entries
        .iter()
        .map(|e| e.event().unwrap().detail.unwrap_or_default())
        .collect()
}

/// One event taken by a publisher, with when it was taken and confirmed on
/// one clock shared by both publishers (a counter).
#[derive(Debug, Clone)]
struct Taken {
    detail: String,
    publisher: usize,
    taken: u64,
    confirmed: u64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_instances_publish_disjoint_events_that_together_are_all_in_invoice_order() {
    use std::sync::atomic::{AtomicU64, AtomicUsize};
    use std::sync::Mutex;

    let db = postgres_db().await;
    let stores = [db.store.clone(), db.another().await];
    const INVOICES: usize = 10;
    const PER_INVOICE: usize = 40;
    const TOTAL: usize = INVOICES * PER_INVOICE;
    let clock = Arc::new(AtomicU64::new(0));
    let published = Arc::new(AtomicUsize::new(0));
    let taken: Arc<Mutex<Vec<Taken>>> = Arc::default();
    let writer_of = |invoice: usize, k: usize| (invoice + k) % 2;

    // Each invoice's events one after another, through both instances in
    // turn (as when a webhook lands on the other one), while both
    // publishers take and confirm.
    let writers: Vec<_> = (0..INVOICES)
        .map(|n| {
            let stores = stores.clone();
            tokio::spawn(async move {
                let key = key_of(&format!("INV-{n}"), 1);
                for k in 0..PER_INVOICE {
                    let e = event(EventName::Sent, &key).detail(format!("INV-{n}-{k:02}"));
                    stores[writer_of(n, k)].record_event(&e).await.unwrap();
                }
            })
        })
        .collect();
    let publishers: Vec<_> = (0..2)
        .map(|p| {
            let (store, clock, published, taken) = (stores[p].clone(), clock.clone(), published.clone(), taken.clone());
            tokio::spawn(async move {
                let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
                while published.load(Ordering::SeqCst) < TOTAL {
                    assert!(tokio::time::Instant::now() < deadline, "the outbox does not drain");
                    let batch = store.outbox(25).await.unwrap();
                    if batch.is_empty() {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        continue;
                    }
                    let at = clock.fetch_add(1, Ordering::SeqCst);
                    // Stamped before the confirm, so any event another
                    // publisher takes after this confirm has a later stamp.
                    let confirmed = clock.fetch_add(1, Ordering::SeqCst);
                    let ids: Vec<i64> = batch.iter().map(|e| e.id).collect();
                    store.outbox_done(&ids).await.unwrap();
                    published.fetch_add(batch.len(), Ordering::SeqCst);
                    taken.lock().unwrap().extend(batch.into_iter().map(|e| Taken {
                        detail: e.event().unwrap().detail.unwrap_or_default(),
                        publisher: p,
                        taken: at,
                        confirmed,
                    }));
                }
            })
        })
        .collect();
    for handle in writers.into_iter().chain(publishers) {
        handle.await.unwrap();
    }

    let mut taken = taken.lock().unwrap().clone();
    let mut once: BTreeSet<&str> = BTreeSet::new();
    for t in &taken {
        assert!(once.insert(&t.detail), "{} was taken twice", t.detail);
    }
    assert_eq!(once.len(), TOTAL, "every event is published");
    assert!(stores[0].outbox(10).await.unwrap().is_empty() && stores[1].outbox(10).await.unwrap().is_empty());

    // "INV-n-kk" sorts each invoice's events in the order they were written.
    taken.sort_by(|a, b| a.detail.cmp(&b.detail));
    for t in &taken {
        let (n, k) = t.detail[4..].split_once('-').unwrap();
        let writer = writer_of(n.parse().unwrap(), k.parse().unwrap());
        assert_eq!(
            t.publisher, writer,
            "{} is published by the instance that wrote it",
            t.detail
        );
    }
    let mut handoffs = 0;
    for pair in taken.windows(2).filter(|p| p[0].detail[..6] == p[1].detail[..6]) {
        let (before, after) = (&pair[0], &pair[1]);
        if before.publisher == after.publisher {
            assert!(after.taken >= before.taken, "{before:?} then {after:?}");
        } else {
            handoffs += 1;
            assert!(after.taken > before.confirmed, "{before:?} then {after:?}");
        }
    }
    assert_eq!(handoffs, INVOICES * (PER_INVOICE - 1));
}

/// A clean stop hands the instance's unpublished events over at once, not
/// after its lease (30 s in service); the handle takes a new lease if it
/// publishes again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_events_of_an_instance_that_stopped_cleanly_are_taken_over_at_once() {
    let db = postgres_db().await;
    let a = instance(&db, Duration::from_secs(30)).await;
    let b = instance(&db, Duration::from_secs(30)).await;
    let bare = Event::bare(EventName::Rejected, &Correlation::default());
    a.record_event(&bare.clone().detail("a0")).await.unwrap();
    assert_eq!(details(&a.outbox(10).await.unwrap()), ["a0"]);
    assert!(b.outbox(10).await.unwrap().is_empty(), "a's while its lease lasts");

    a.release_outbox().await.unwrap();
    let taken = b.outbox(10).await.unwrap();
    assert_eq!(details(&taken), ["a0"], "taken over at the next round, not in 30 s");
    assert!(a.outbox(10).await.unwrap().is_empty(), "no longer a's");

    // `a` writes again: the new event is its own, under a new lease.
    a.record_event(&bare.clone().detail("a1")).await.unwrap();
    assert_eq!(details(&a.outbox(10).await.unwrap()), ["a1"]);
    assert_eq!(details(&b.outbox(10).await.unwrap()), ["a0"]);
    b.outbox_done(&taken.iter().map(|e| e.id).collect::<Vec<_>>())
        .await
        .unwrap();
    assert!(b.outbox(10).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_events_of_an_instance_that_stops_renewing_are_taken_over_after_its_lease() {
    const LEASE: Duration = Duration::from_millis(400);
    let db = postgres_db().await;
    let opened = std::time::Instant::now();
    let a = instance(&db, LEASE).await;
    let b = instance(&db, LEASE).await;
    let bare = Event::bare(EventName::Rejected, &Correlation::default());
    for i in 0..3 {
        a.record_event(&bare.clone().detail(format!("a{i}"))).await.unwrap();
    }
    let held = a.outbox(10).await.unwrap();
    assert_eq!(details(&held), ["a0", "a1", "a2"]);
    // From here on `a` stops calling `outbox`, as a dead instance would.
    let stopped = std::time::Instant::now();
    assert!(
        b.outbox(10).await.unwrap().is_empty(),
        "a's events are a's while its lease lasts"
    );

    let taken = loop {
        let taken = b.outbox(10).await.unwrap();
        if !taken.is_empty() {
            break taken;
        }
        assert!(stopped.elapsed() < Duration::from_secs(4), "no takeover");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let waited = stopped.elapsed();
    println!("taken over {waited:?} after a's last round (lease {LEASE:?})");
    assert!(
        opened.elapsed() >= LEASE * 9 / 10,
        "not before the lease ran out: {:?}",
        opened.elapsed()
    );
    assert_eq!(details(&taken), ["a0", "a1", "a2"], "all of them, in order");
    assert_eq!(
        taken.iter().map(|e| e.id).collect::<Vec<_>>(),
        held.iter().map(|e| e.id).collect::<Vec<_>>()
    );

    // `a` comes back: its late confirm forgets nothing it no longer holds,
    // and it does not publish them again; what it writes now is its own.
    a.outbox_done(&held.iter().map(|e| e.id).collect::<Vec<_>>())
        .await
        .unwrap();
    assert!(a.outbox(10).await.unwrap().is_empty());
    assert_eq!(details(&b.outbox(10).await.unwrap()), ["a0", "a1", "a2"]);
    a.record_event(&bare.clone().detail("a3")).await.unwrap();
    assert_eq!(details(&a.outbox(10).await.unwrap()), ["a3"]);
    assert_eq!(details(&b.outbox(10).await.unwrap()), ["a0", "a1", "a2"]);

    b.outbox_done(&taken.iter().map(|e| e.id).collect::<Vec<_>>())
        .await
        .unwrap();
    assert!(b.outbox(10).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_the_events_of_a_dead_instance_go_to_exactly_one_of_the_live_ones() {
    const LEASE: Duration = Duration::from_millis(300);
    let db = postgres_db().await;
    let dead = instance(&db, LEASE).await;
    let bare = Event::bare(EventName::Rejected, &Correlation::default());
    for i in 0..50 {
        dead.record_event(&bare.clone().detail(format!("d{i:02}")))
            .await
            .unwrap();
    }
    drop(dead);
    // One publisher per instance, as in the service: two calls of `outbox`
    // on one store at once get the same events, which are that instance's.
    let mut live = Vec::new();
    for _ in 0..4 {
        live.push(instance(&db, LEASE).await);
    }
    let total = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let answers = race(&live, live.len(), |_, store| {
        let total = total.clone();
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(4);
            let mut mine = Vec::new();
            // Every racer takes until the dead instance's events are all gone.
            while total.load(Ordering::SeqCst) < 50 && tokio::time::Instant::now() < deadline {
                let batch = store.outbox(100).await.unwrap();
                let ids: Vec<i64> = batch.iter().map(|e| e.id).collect();
                store.outbox_done(&ids).await.unwrap();
                total.fetch_add(batch.len(), Ordering::SeqCst);
                mine.extend(details(&batch));
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            mine
        }
    })
    .await;
    let all: Vec<&String> = answers.iter().flatten().collect();
    assert_eq!(all.len(), 50, "each event once: {answers:?}");
    let distinct: BTreeSet<&String> = all.iter().copied().collect();
    assert_eq!(distinct.len(), 50);
    let takers: Vec<&Vec<String>> = answers.iter().filter(|a| !a.is_empty()).collect();
    assert_eq!(takers.len(), 1, "one instance takes them all, in order");
    let expected: Vec<String> = (0..50).map(|i| format!("d{i:02}")).collect();
    assert_eq!(*takers[0], expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_an_invoice_s_events_wait_for_its_older_events_on_another_instance() {
    let db = postgres_db().await;
    let (a, b) = (db.store.clone(), db.another().await);
    let key = accepted(a.as_ref(), "INV-1", 1).await;
    b.record_event(&event(EventName::Duplicate, &key)).await.unwrap();
    let other = key_of("INV-2", 1);
    b.record_event(&event(EventName::Rejected, &other)).await.unwrap();
    let names = |entries: &[payrelay::store::OutboxEntry]| -> Vec<(String, EventName)> {
        entries
            .iter()
            .map(|e| (e.event().unwrap().invoice_id.unwrap_or_default(), e.head.event))
            .collect()
    };

    let rejected = ("INV-2".to_owned(), EventName::Rejected);
    assert_eq!(
        names(&b.outbox(10).await.unwrap()),
        std::slice::from_ref(&rejected),
        "INV-1's duplicate waits for its accepted, on the other instance"
    );
    let first = a.outbox(10).await.unwrap();
    assert_eq!(names(&first), [("INV-1".to_owned(), EventName::Accepted)]);
    assert_eq!(
        names(&b.outbox(10).await.unwrap()),
        std::slice::from_ref(&rejected),
        "taken is not yet confirmed"
    );
    a.outbox_done(&[first[0].id]).await.unwrap();
    assert_eq!(
        names(&b.outbox(10).await.unwrap()),
        [("INV-1".to_owned(), EventName::Duplicate), rejected],
        "and then it goes, oldest first"
    );
}

// ---------------------------------------------------------------------------
// Debtors: preferences and suppressions

const PHONE: &str = "+5215512345678";
const EMAIL: &str = "maria@example.com";

fn stop(channel: ChannelName, address: &str, biller: &str, reply: Reply) -> SuppressionChange {
    SuppressionChange {
        channel,
        address_hash: address_hash(channel, address),
        biller_id: biller.to_owned(),
        reply,
        reason: "the customer replied STOP by SMS".to_owned(),
        owner: None,
    }
}

/// An attempt on `channel` to `address` for `key`, carrying link `token`.
async fn sent_to(store: &dyn Store, key: &InvoiceKey, channel: ChannelName, address: &str, token: &str) {
    let link = NewPaylink {
        address_hash: Some(address_hash(channel, address)),
        ..paylink(token)
    };
    let started = store.start_attempt(key, channel, 1, &link, None).await.unwrap();
    assert!(matches!(started, AttemptStart::Started(_)), "{started:?}");
}

fn contacts() -> Vec<(ChannelName, String)> {
    vec![
        (ChannelName::Email, address_hash(ChannelName::Email, EMAIL)),
        (ChannelName::Sms, address_hash(ChannelName::Sms, PHONE)),
    ]
}

async fn preferences_round_trip_with_their_event(db: &TestDb) {
    let store = db.store.as_ref();
    let customer = invoice("INV-1", 1).customer_key();
    let none = store.debtor(ACME, &customer, &contacts()).await.unwrap();
    assert_eq!(none, Profile::default());
    let key = key_of("INV-1", 1);
    let changed = event(EventName::PreferencesChanged, &key).customer_id(Some("C-9981".into()));
    store
        .set_preferences(
            ACME,
            &customer,
            &[ChannelName::Sms, ChannelName::Email],
            &[ChannelName::Whatsapp],
            &changed,
        )
        .await
        .unwrap();
    let profile = store.debtor(ACME, &customer, &contacts()).await.unwrap();
    assert_eq!(profile.preferred, Some(vec![ChannelName::Sms, ChannelName::Email]));
    assert_eq!(profile.stopped, vec![ChannelName::Whatsapp]);
    assert!(profile.suppressed.is_empty());
    // Another biller's customer of the same key knows nothing of it.
    assert_eq!(
        store.debtor("other", &customer, &contacts()).await.unwrap(),
        Profile::default()
    );
    // A second choice replaces the first.
    store
        .set_preferences(ACME, &customer, &[ChannelName::Email], &[], &changed)
        .await
        .unwrap();
    let profile = store.debtor(ACME, &customer, &contacts()).await.unwrap();
    assert_eq!(profile.preferred, Some(vec![ChannelName::Email]));
    assert!(profile.stopped.is_empty());
    let queued: Vec<Event> = events(store)
        .await
        .into_iter()
        .filter(|e| e.event == EventName::PreferencesChanged)
        .collect();
    assert_eq!(queued.len(), 2);
    assert_eq!(queued[0].customer_id.as_deref(), Some("C-9981"));
}

async fn a_stop_and_a_start_change_once_and_tell_each_customer_once(db: &TestDb) {
    let store = db.store.as_ref();
    let first = accepted(store, "INV-1", 1).await;
    let second = accepted(store, "INV-2", 1).await;
    sent_to(store, &first, ChannelName::Sms, PHONE, "1").await;
    sent_to(store, &second, ChannelName::Sms, PHONE, "2").await;
    let customer = invoice("INV-1", 1).customer_key();
    // A STOP by SMS holds for every biller: its scope is not the biller's.
    let sms_stop = stop(ChannelName::Sms, "5215512345678", "*", Reply::Stop);
    assert!(store.suppress(&sms_stop).await.unwrap());
    assert!(
        !store.suppress(&sms_stop).await.unwrap(),
        "a second STOP changes nothing"
    );
    let told: Vec<Event> = events(store)
        .await
        .into_iter()
        .filter(|e| e.event == EventName::Suppressed)
        .collect();
    assert_eq!(told.len(), 1, "one customer, one event: {told:?}");
    let e = &told[0];
    assert_eq!(
        (
            e.biller_id.as_deref(),
            e.customer_id.as_deref(),
            e.invoice_id.as_deref(),
            e.channel
        ),
        (Some(ACME), Some("C-9981"), Some("INV-2"), Some(ChannelName::Sms))
    );
    let json = serde_json::to_string(e).unwrap();
    assert!(
        !json.contains("5512345678") && !json.contains(EMAIL) && !json.contains("María"),
        "{json}"
    );
    let profile = store.debtor(ACME, &customer, &contacts()).await.unwrap();
    assert_eq!(profile.suppressed, vec![ChannelName::Sms]);
    assert_eq!(
        store.debtor("other", &customer, &contacts()).await.unwrap().suppressed,
        vec![ChannelName::Sms]
    );

    let start = stop(ChannelName::Sms, PHONE, "*", Reply::Start);
    assert!(store.suppress(&start).await.unwrap());
    assert!(!store.suppress(&start).await.unwrap(), "a second START changes nothing");
    assert_eq!(count(store, EventName::Unsuppressed).await, 1);
    assert_eq!(count(store, EventName::Suppressed).await, 1);
    assert!(store
        .debtor(ACME, &customer, &contacts())
        .await
        .unwrap()
        .suppressed
        .is_empty());
}

async fn an_email_stop_holds_for_its_biller_only(db: &TestDb) {
    let store = db.store.as_ref();
    accepted(store, "INV-1", 1).await;
    let customer = invoice("INV-1", 1).customer_key();
    assert!(store
        .suppress(&stop(ChannelName::Email, "Maria@Example.com", "other", Reply::Stop))
        .await
        .unwrap());
    // Nobody at `other` has that address: nobody to tell, and acme still sends.
    assert_eq!(count(store, EventName::Suppressed).await, 0);
    assert!(store
        .debtor(ACME, &customer, &contacts())
        .await
        .unwrap()
        .suppressed
        .is_empty());
    // An unsubscribe link names the invoice, and so its customer: they are
    // told although no send remembers an email address.
    let through_link = SuppressionChange {
        owner: Some(Owner::of(&invoice("INV-1", 1))),
        ..stop(ChannelName::Email, EMAIL, ACME, Reply::Stop)
    };
    assert!(store.suppress(&through_link).await.unwrap());
    let told: Vec<Event> = events(store)
        .await
        .into_iter()
        .filter(|e| e.event == EventName::Suppressed)
        .collect();
    assert_eq!(told.len(), 1, "{told:?}");
    assert_eq!(
        (told[0].customer_id.as_deref(), told[0].invoice_id.as_deref()),
        (Some("C-9981"), Some("INV-1"))
    );
    assert_eq!(
        store.debtor(ACME, &customer, &contacts()).await.unwrap().suppressed,
        vec![ChannelName::Email]
    );
}

/// Only a send by SMS or WhatsApp remembers whose the address is (a reply
/// there names only the number): an accepted invoice or an email remembers
/// nothing, and a stop through an invoice's link tells its customer once
/// even when a send remembered them too.
async fn only_a_send_by_sms_or_whatsapp_remembers_the_address(db: &TestDb) {
    let store = db.store.as_ref();
    let key = accepted(store, "INV-1", 1).await;
    sent_to(store, &key, ChannelName::Email, EMAIL, "e").await;
    // Stops naming only the address find nobody to tell.
    assert!(store
        .suppress(&stop(ChannelName::Email, EMAIL, ACME, Reply::Stop))
        .await
        .unwrap());
    assert!(store
        .suppress(&stop(ChannelName::Sms, PHONE, "*", Reply::Stop))
        .await
        .unwrap());
    assert_eq!(
        count(store, EventName::Suppressed).await,
        0,
        "nobody was written to by SMS"
    );
    assert!(store
        .suppress(&stop(ChannelName::Sms, PHONE, "*", Reply::Start))
        .await
        .unwrap());

    sent_to(store, &key, ChannelName::Whatsapp, PHONE, "w").await;
    let through_refusal = SuppressionChange {
        owner: Some(Owner::of(&invoice("INV-1", 1))),
        ..stop(ChannelName::Whatsapp, PHONE, "*", Reply::Stop)
    };
    assert!(store.suppress(&through_refusal).await.unwrap());
    let told: Vec<Event> = events(store)
        .await
        .into_iter()
        .filter(|e| e.event == EventName::Suppressed)
        .collect();
    assert_eq!(told.len(), 1, "one customer, told once: {told:?}");
    assert_eq!(
        (
            told[0].biller_id.as_deref(),
            told[0].customer_id.as_deref(),
            told[0].channel
        ),
        (Some(ACME), Some("C-9981"), Some(ChannelName::Whatsapp))
    );
}

async fn no_attempt_is_recorded_to_a_suppressed_address(db: &TestDb) {
    let store = db.store.as_ref();
    let key = accepted(store, "INV-1", 1).await;
    assert!(store
        .suppress(&stop(ChannelName::Sms, PHONE, "*", Reply::Stop))
        .await
        .unwrap());
    let to = |channel: ChannelName, address: &str, token: &str| NewPaylink {
        address_hash: Some(address_hash(channel, address)),
        ..paylink(token)
    };
    let refused = store
        .start_attempt(&key, ChannelName::Sms, 1, &to(ChannelName::Sms, PHONE, "s"), None)
        .await
        .unwrap();
    assert_eq!(refused, AttemptStart::Suppressed);
    assert!(
        store.paylink("hash-s").await.unwrap().is_none(),
        "no pay link for a message not sent"
    );
    let history = store.history(ACME, "INV-1").await.unwrap().unwrap();
    let failed: Vec<_> = history.timeline.iter().filter(|e| e.what == "send_failed").collect();
    assert_eq!(failed.len(), 1, "{:?}", history.timeline);
    assert!(failed[0].detail.as_deref().unwrap_or_default().contains("suppressed"));
    // Another channel of the same invoice still goes.
    let email = store
        .start_attempt(&key, ChannelName::Email, 1, &to(ChannelName::Email, EMAIL, "e"), None)
        .await
        .unwrap();
    assert!(matches!(email, AttemptStart::Started(_)), "{email:?}");
    // A new invoice of the same customer whose first channel is the stopped
    // one is stored without its first attempt: the caller routes it again.
    let next = invoice("INV-2", 1);
    let (begun, attempt) = store
        .begin_with_attempt(
            &next,
            &correlation("INV-2"),
            &event(EventName::Accepted, &next.key),
            &[],
            "default",
            ChannelName::Sms,
            &to(ChannelName::Sms, PHONE, "n"),
        )
        .await
        .unwrap();
    assert_eq!((begun, attempt), (Begin::New, None));
    // Once it asks to start again, the first attempt is recorded with the invoice.
    assert!(store
        .suppress(&stop(ChannelName::Sms, PHONE, "*", Reply::Start))
        .await
        .unwrap());
    let third = invoice("INV-3", 1);
    let (_, attempt) = store
        .begin_with_attempt(
            &third,
            &correlation("INV-3"),
            &event(EventName::Accepted, &third.key),
            &[],
            "default",
            ChannelName::Sms,
            &to(ChannelName::Sms, PHONE, "t"),
        )
        .await
        .unwrap();
    assert!(attempt.is_some());
}

// Combined groups (`[billers.<id>] combine`)

/// An invoice of customer `customer_id` in `currency`.
fn invoice_of(invoice_id: &str, customer_id: &str, currency: &str) -> Invoice {
    let mut invoice = invoice(invoice_id, 1);
    invoice.customer.id = Some(customer_id.to_owned());
    invoice.amount.currency = currency.to_owned();
    invoice
}

fn join(window_ms: i64) -> CombineJoin {
    CombineJoin {
        new_group_id: format!("g-{}", payrelay::paylink::new_token()),
        window_ms,
    }
}

/// Stores a new invoice in its customer's group; panics unless it is new.
async fn combined(store: &dyn Store, invoice: &Invoice, window_ms: i64) -> GroupPlace {
    let key = invoice.key.clone();
    let (begun, place) = store
        .begin_combined(
            invoice,
            &correlation(&key.invoice_id),
            &event(EventName::Accepted, &key),
            &[],
            "default",
            &join(window_ms),
        )
        .await
        .unwrap();
    assert_eq!(begun, Begin::New, "{key}");
    place.expect("a new invoice waits in a group")
}

async fn invoices_of_one_customer_and_currency_wait_in_one_group_from_the_first(db: &TestDb) {
    let (clock, store) = on_manual_clock(db, 1_000_000).await;
    let store = store.as_ref();
    let first = combined(store, &invoice_of("INV-1", "C-1", "MXN"), 60_000).await;
    assert_eq!(
        first.due_ms, 1_060_000,
        "the window counts from the group's first invoice"
    );
    clock.set_ms(1_010_000);
    let second = combined(store, &invoice_of("INV-2", "C-1", "MXN"), 60_000).await;
    assert_eq!(second, first, "the same customer and currency join the open group");
    let other_customer = combined(store, &invoice_of("INV-3", "C-2", "MXN"), 60_000).await;
    let other_currency = combined(store, &invoice_of("INV-4", "C-1", "USD"), 60_000).await;
    assert_ne!(other_customer.group_id, first.group_id, "two customers never mix");
    assert_ne!(other_currency.group_id, first.group_id, "two currencies never combine");
    assert_ne!(other_customer.group_id, other_currency.group_id);
    assert_eq!(other_customer.due_ms, 1_070_000);

    // Each accepted event says until when its invoice waits.
    let accepted: Vec<Event> = events(store)
        .await
        .into_iter()
        .filter(|e| e.event == EventName::Accepted)
        .collect();
    assert_eq!(accepted.len(), 4);
    let detail = accepted[1].detail.as_deref().unwrap_or_default();
    assert!(detail.contains("to be combined"), "{detail}");
    assert!(detail.contains(&payrelay::events::rfc3339_ms(1_060_000)), "{detail}");

    // Waiting invoices are their group's: not taken over as abandoned.
    assert!(store.claim_stale(10_000_000, 1, 100).await.unwrap().is_empty());
    // A redelivered request of a waiting invoice finds its group.
    let invoice = invoice_of("INV-2", "C-1", "MXN");
    let (begun, place) = store
        .begin_combined(
            &invoice,
            &correlation("INV-2"),
            &event(EventName::Accepted, &invoice.key),
            &[],
            "default",
            &join(60_000),
        )
        .await
        .unwrap();
    assert!(matches!(begun, Begin::Resume { .. }), "{begun:?}");
    assert_eq!(place, Some(first.clone()));

    assert_eq!(store.next_group().await.unwrap(), Some(1_060_000));
    assert!(store.claim_due_groups(1_059_999, 60_000, 10).await.unwrap().is_empty());
    let due = store.claim_due_groups(1_060_000, 60_000, 10).await.unwrap();
    assert_eq!(
        due,
        [DueGroup {
            id: first.group_id.clone(),
            biller_id: ACME.into(),
            due_ms: 1_060_000,
            members: vec![key_of("INV-1", 1), key_of("INV-2", 1)],
        }]
    );
    assert_eq!(store.next_group().await.unwrap(), Some(1_070_000));
    let due = store.claim_due_groups(2_000_000, 60_000_000, 10).await.unwrap();
    let mut members: Vec<Vec<InvoiceKey>> = due.into_iter().map(|g| g.members).collect();
    members.sort_by_key(|m| m[0].invoice_id.clone());
    assert_eq!(members, [vec![key_of("INV-3", 1)], vec![key_of("INV-4", 1)]]);
}

async fn a_claimed_group_takes_no_new_invoice_and_is_taken_over_once_idle(db: &TestDb) {
    let (clock, store) = on_manual_clock(db, 1_000_000).await;
    let store = store.as_ref();
    let first = combined(store, &invoice_of("INV-1", "C-1", "MXN"), 1_000).await;
    let claimed = store.claim_due_groups(1_001_000, 60_000, 10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    clock.set_ms(1_002_000);
    let later = combined(store, &invoice_of("INV-2", "C-1", "MXN"), 1_000).await;
    assert_ne!(
        later.group_id, first.group_id,
        "a group being sent takes no new invoice"
    );
    assert_eq!(later.due_ms, 1_003_000);

    // Still claimed and not idle: nobody else takes it.
    let again = store.claim_due_groups(1_010_000, 60_000, 10).await.unwrap();
    assert_eq!(again.iter().map(|g| &g.id).collect::<Vec<_>>(), [&later.group_id]);
    // Its sender died: taken over once the claim is idle.
    let taken = store.claim_due_groups(1_070_000, 60_000, 10).await.unwrap();
    let ids: BTreeSet<&String> = taken.iter().map(|g| &g.id).collect();
    assert_eq!(ids, BTreeSet::from([&first.group_id, &later.group_id]));

    // Quiet hours put it back until then; done, it never comes again.
    store.hold_group(&first.group_id, 2_000_000).await.unwrap();
    store.finish_group(&later.group_id).await.unwrap();
    assert_eq!(store.next_group().await.unwrap(), Some(2_000_000));
    assert!(store.claim_due_groups(1_999_999, 0, 10).await.unwrap().is_empty());
    let held = store.claim_due_groups(2_000_000, 60_000, 10).await.unwrap();
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].id, first.group_id);
    assert_eq!(held[0].due_ms, 2_000_000);
    store.finish_group(&first.group_id).await.unwrap();
    assert!(store.claim_due_groups(i64::MAX / 2, 0, 10).await.unwrap().is_empty());
    assert_eq!(store.next_group().await.unwrap(), None);
    // Its group done, an invoice left unfinished (its sender died after
    // the group was marked done) is taken over like any other.
    let taken = store.claim_stale(10_000_000, 1, 100).await.unwrap();
    assert_eq!(taken, [key_of("INV-1", 1), key_of("INV-2", 1)]);
}

async fn each_due_group_is_claimed_once_by_one_of_two_stores_asking_together(db: &TestDb) {
    const N: usize = 30;
    let store = db.store.as_ref();
    let other = db.another().await;
    for i in 0..N {
        combined(store, &invoice_of(&format!("INV-{i}"), &format!("C-{i}"), "MXN"), 1).await;
    }
    let now = db.clock.now_ms() + 1_000;
    let (a, b) = tokio::join!(
        store.claim_due_groups(now, 60_000, 100),
        other.claim_due_groups(now, 60_000, 100)
    );
    let claimed: Vec<DueGroup> = a.unwrap().into_iter().chain(b.unwrap()).collect();
    let ids: BTreeSet<&String> = claimed.iter().map(|g| &g.id).collect();
    assert_eq!(claimed.len(), N, "every group, each once");
    assert_eq!(ids.len(), N);
    assert!(claimed.iter().all(|g| g.members.len() == 1));
}

async fn concurrent_first_requests_of_one_customer_make_one_group(db: &TestDb) {
    let stores = [db.store.clone(), db.another().await];
    let places = race(&stores, RACERS, |i, store| async move {
        let invoice = invoice_of(&format!("INV-{i}"), "C-1", "MXN");
        combined(store.as_ref(), &invoice, 60_000).await
    })
    .await;
    let groups: BTreeSet<&String> = places.iter().map(|p| &p.group_id).collect();
    assert_eq!(groups.len(), 1, "{places:?}");
    let due = db.store.claim_due_groups(i64::MAX / 2, 0, 10).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].members.len(), RACERS);
}

async fn a_combined_link_lists_its_invoices_as_they_stand_now(db: &TestDb) {
    let store = db.store.as_ref();
    let place = combined(store, &invoice_of("INV-1", "C-1", "MXN"), 1).await;
    combined(store, &invoice_of("INV-2", "C-1", "MXN"), 1).await;
    combined(store, &invoice_of("INV-3", "C-1", "MXN"), 1).await;
    let link = paylink("combined");
    // The message listed the first two (the third was paid before it went).
    let listed = [key_of("INV-2", 1), key_of("INV-1", 1)];
    for key in &listed {
        let own = NewPaylink {
            token_hash: payrelay::store::member_link_hash(&link.token_hash, &key.invoice_id),
            expires_at_ms: link.expires_at_ms,
            address_hash: None,
        };
        store
            .start_attempt(key, ChannelName::Email, 1, &own, None)
            .await
            .unwrap()
            .id()
            .expect("open");
    }
    store
        .add_combined_link(&place.group_id, ChannelName::Email, &link, &listed)
        .await
        .unwrap();
    assert!(
        store.paylink(&link.token_hash).await.unwrap().is_none(),
        "not a single invoice's link"
    );
    assert!(store.combined_link("hash-unknown").await.unwrap().is_none());

    let found = store.combined_link(&link.token_hash).await.unwrap().expect("found");
    assert_eq!(found.group_id, place.group_id);
    assert_eq!(found.channel, ChannelName::Email);
    assert_eq!(found.expires_at_ms, link.expires_at_ms);
    let keys: Vec<&InvoiceKey> = found.invoices.iter().map(|i| &i.key).collect();
    assert_eq!(keys, [&listed[0], &listed[1]], "the message's invoices, in its order");
    assert!(found.invoices.iter().all(|i| i.status == Status::Accepted));
    assert_eq!(found.invoices[0].invoice.key, listed[0]);
    assert_eq!(
        found.invoices[0].correlation.message_id,
        correlation("INV-2").message_id
    );

    store
        .close(ACME, "INV-1", Status::Paid, &event(EventName::Paid, &listed[1]))
        .await
        .unwrap();
    let found = store.combined_link(&link.token_hash).await.unwrap().expect("found");
    let statuses: Vec<Status> = found.invoices.iter().map(|i| i.status).collect();
    assert_eq!(statuses, [Status::Accepted, Status::Paid]);

    // A click on the combined link counts on each listed invoice's own link.
    let own = payrelay::store::member_link_hash(&link.token_hash, "INV-2");
    let clicks = store
        .record_click(&own, &event(EventName::Clicked, &listed[0]))
        .await
        .unwrap();
    assert_eq!(clicks, 1);
}

async fn a_provider_id_shared_by_a_combined_message_finds_every_attempt(db: &TestDb) {
    let store = db.store.as_ref();
    let a = sent(
        store,
        &accepted(store, "INV-1", 1).await,
        ChannelName::Email,
        "t1",
        "<combined@acme>",
    )
    .await;
    let b = sent(
        store,
        &accepted(store, "INV-2", 1).await,
        ChannelName::Email,
        "t2",
        "<combined@acme>",
    )
    .await;
    sent(
        store,
        &accepted(store, "INV-3", 1).await,
        ChannelName::Email,
        "t3",
        "<other@acme>",
    )
    .await;
    let found = store
        .attempts_by_provider_id(ChannelName::Email, "<combined@acme>")
        .await
        .unwrap();
    let found: Vec<(i64, &str)> = found
        .iter()
        .map(|r| (r.attempt_id, r.key.invoice_id.as_str()))
        .collect();
    assert_eq!(found, [(a, "INV-1"), (b, "INV-2")]);
    assert!(store
        .attempts_by_provider_id(ChannelName::Sms, "<combined@acme>")
        .await
        .unwrap()
        .is_empty());
}

/// The claim behind a combined reminder: one customer's planned reminders
/// of one day, at one biller, in one currency, of invoices whose first
/// request went out; each taken by one of two stores asking together, and
/// by nobody else (the scheduler, another combined reminder) until stale.
async fn a_customers_reminders_of_one_day_are_claimed_once_by_one_of_two_stores_asking_together(db: &TestDb) {
    const N: usize = 20;
    let store = db.store.as_ref();
    let other = db.another().await;
    let now = db.clock.now_ms();
    for i in 0..N {
        let key = with_steps(store, &format!("INV-{i}"), 1, &steps_at(now, false)).await;
        store.finish_invoice(&key, Status::Sent, &[]).await.unwrap();
    }
    // Its first request has not gone out yet: not a reminder to combine.
    with_steps(store, "WAITING", 1, &steps_at(now, false)).await;
    let day = CustomerDay {
        biller_id: ACME.to_owned(),
        customer: invoice("INV-0", 1).customer_key(),
        currency: "MXN".to_owned(),
        // Steps 2 and 3 (due at now + 2 s and 3 s) fall in it.
        from_ms: now + 1_500,
        to_ms: now + 3_500,
    };
    let usd = CustomerDay {
        currency: "USD".to_owned(),
        ..day.clone()
    };
    assert!(store.claim_customer_steps(&usd, now, 60_000).await.unwrap().is_empty());
    let someone_else = CustomerDay {
        customer: "acme:someone-else".to_owned(),
        ..day.clone()
    };
    assert!(store
        .claim_customer_steps(&someone_else, now, 60_000)
        .await
        .unwrap()
        .is_empty());

    let (a, b) = tokio::join!(
        store.claim_customer_steps(&day, now, 60_000),
        other.claim_customer_steps(&day, now, 60_000)
    );
    let claimed: Vec<DueStep> = a.unwrap().into_iter().chain(b.unwrap()).collect();
    let distinct: std::collections::HashSet<(InvoiceKey, u32)> =
        claimed.iter().map(|d| (d.key.clone(), d.seq)).collect();
    assert_eq!(claimed.len(), 2 * N, "steps 2 and 3 of every sent invoice, each once");
    assert_eq!(distinct.len(), 2 * N);
    assert!(claimed
        .iter()
        .all(|d| d.key.invoice_id != "WAITING" && (d.seq == 2 || d.seq == 3) && d.journey == "standard"));

    // Claimed: not taken again, neither by a combined reminder nor by the
    // scheduler, until the claim is stale.
    assert!(store.claim_customer_steps(&day, now, 60_000).await.unwrap().is_empty());
    let due = store.claim_due_steps(now + 3_000, 60_000, 1_000).await.unwrap();
    assert!(
        due.iter().filter(|d| d.key.invoice_id != "WAITING").all(|d| d.seq == 1),
        "{due:?}"
    );
    let again = store.claim_customer_steps(&day, now + 70_000, 60_000).await.unwrap();
    assert_eq!(again.len(), 2 * N, "taken over once stale");
}

/// The daily cap counts messages: one combined message (one provider id
/// on one channel) listing three invoices counts once.
async fn a_combined_message_counts_once_toward_the_daily_cap(db: &TestDb) {
    let store = db.store.as_ref();
    let now = db.clock.now_ms();
    let mut keys = Vec::new();
    for i in 0..3 {
        keys.push(accepted(store, &format!("INV-{i}"), 1).await);
    }
    for (i, key) in keys.iter().enumerate() {
        sent(store, key, ChannelName::Sms, &format!("tok-sms-{i}"), "SM-combined").await;
        sent(store, key, ChannelName::Email, &format!("tok-email-{i}"), "EM-combined").await;
    }
    let customer = invoice("INV-0", 1).customer_key();
    assert_eq!(store.messages_to_customer(&customer, now).await.unwrap(), 2);
    // A message on its own counts on its own.
    sent(store, &keys[0], ChannelName::Sms, "tok-alone", "SM-alone").await;
    assert_eq!(store.messages_to_customer(&customer, now).await.unwrap(), 3);
}

// ---------------------------------------------------------------------------
// Gauges (`/metrics`)

async fn the_gauges_count_the_outbox_backlog_held_invoices_and_planned_steps(db: &TestDb) {
    let (clock, store) = on_manual_clock(db, 1_000_000).await;
    let store = store.as_ref();
    assert_eq!(store.gauges().await.unwrap(), StoreGauges::default(), "nothing yet");

    // A first request held for quiet hours, with its accepted event unpublished.
    let held = accepted(store, "INV-1", 1).await;
    store.hold(&held, 2_000_000).await.unwrap();
    // Another with four reminders planned: two of them held, for quiet
    // hours and for the daily cap.
    let key = with_steps(store, "INV-2", 1, &steps_at(1_000_000, false)).await;
    let due = store.claim_due_steps(1_003_000, 60_000, 10).await.unwrap();
    assert_eq!(due.iter().map(|d| d.seq).collect::<Vec<_>>(), [1, 2, 3]);
    store
        .hold_step(&key, 1, 2_000_000, HeldStep::QuietHours, "quiet hours: held")
        .await
        .unwrap();
    store
        .hold_step(&key, 2, 90_000_000, HeldStep::Cap, "the daily cap")
        .await
        .unwrap();
    store.reschedule_step(&key, 3, 1_010_000, "later").await.unwrap();
    // Two invoices of one customer waiting to be combined.
    let group = combined(store, &invoice_of("INV-3", "C-1", "MXN"), 60_000).await;
    combined(store, &invoice_of("INV-4", "C-1", "MXN"), 60_000).await;
    assert_eq!(
        store.gauges().await.unwrap(),
        StoreGauges {
            outbox_backlog: 4,
            held_quiet_hours: 2,
            held_combining: 2,
            held_cap: 1,
            steps_planned: 4,
        }
    );

    // A step rescheduled for another reason is no longer held; a step that
    // went out is no longer planned.
    store
        .reschedule_step(&key, 2, 1_020_000, "after the previous message")
        .await
        .unwrap();
    assert!(store.finish_step(&key, 1, StepStatus::Sent, None, &[]).await.unwrap());
    // The group claimed is still combining; held for quiet hours, its
    // invoices wait for them instead; sent, for nothing.
    clock.set_ms(1_060_000);
    let claimed = store.claim_due_groups(1_060_000, 60_000, 10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    let gauges = store.gauges().await.unwrap();
    assert_eq!(
        (gauges.held_quiet_hours, gauges.held_combining, gauges.held_cap),
        (1, 2, 0)
    );
    assert_eq!(gauges.steps_planned, 3);
    store.hold_group(&group.group_id, 2_000_000).await.unwrap();
    let gauges = store.gauges().await.unwrap();
    assert_eq!((gauges.held_quiet_hours, gauges.held_combining), (3, 0));
    store.finish_group(&group.group_id).await.unwrap();
    let gauges = store.gauges().await.unwrap();
    assert_eq!((gauges.held_quiet_hours, gauges.held_combining), (1, 0));

    // The held invoice sent, and every event published: nothing is waiting
    // but the planned steps.
    store.finish_invoice(&held, Status::Sent, &[]).await.unwrap();
    drain(&[store]).await;
    assert_eq!(
        store.gauges().await.unwrap(),
        StoreGauges {
            steps_planned: 3,
            ..StoreGauges::default()
        }
    );
}

async fn the_console_finds_invoices_by_id_or_customer_and_lists_those_received_in_a_period(db: &TestDb) {
    let store = db.store.as_ref();
    accepted(store, "INV-1", 1).await;
    accepted(store, "INV-1", 2).await;
    accepted(store, "INV-2", 1).await;
    let customer = payrelay::invoice::customer_key_of_id(ACME, "C-9981");

    let by_id = store.find_invoices(ACME, "INV-1", "acme/id/nobody", 10).await.unwrap();
    assert_eq!(by_id.len(), 1, "one invoice, by its newest revision");
    assert_eq!(by_id[0].invoice.key, key_of("INV-1", 2));
    assert!(!by_id[0].erased);
    let by_customer = store.find_invoices(ACME, "", &customer, 10).await.unwrap();
    let mut found: Vec<String> = by_customer.iter().map(|f| f.invoice.key.to_string()).collect();
    found.sort();
    assert_eq!(found, ["acme/INV-1#2", "acme/INV-2#1"]);
    assert_eq!(store.find_invoices(ACME, "", &customer, 1).await.unwrap().len(), 1);
    assert!(store
        .find_invoices("globex", "INV-1", &customer, 10)
        .await
        .unwrap()
        .is_empty());

    let now = db.clock.now_ms();
    let all = store.invoices_received(ACME, 0, now + 60_000, 10).await.unwrap();
    let keys: Vec<String> = all.iter().map(|f| f.invoice.key.to_string()).collect();
    assert_eq!(
        keys,
        ["acme/INV-1#1", "acme/INV-1#2", "acme/INV-2#1"],
        "every revision, oldest first"
    );
    assert!(all.windows(2).all(|w| w[0].received_ms <= w[1].received_ms));
    assert_eq!(
        store.invoices_received(ACME, 0, now + 60_000, 2).await.unwrap().len(),
        2
    );
    assert!(store
        .invoices_received("globex", 0, now + 60_000, 10)
        .await
        .unwrap()
        .is_empty());
    assert!(store
        .invoices_received(ACME, now + 60_000, now + 120_000, 10)
        .await
        .unwrap()
        .is_empty());
}

// ---------------------------------------------------------------------------
// The funnel figures (docs/stats.md)

/// 2026-03-01T00:00:00Z.
const MARCH_1: i64 = 1_772_323_200_000;
const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;

/// Stores `invoice_id` at `revision` for `biller`, asking `amount`, as
/// routed by `routed_by`, at the store's clock.
async fn received(
    store: &dyn Store,
    biller: &str,
    invoice_id: &str,
    revision: i64,
    (amount, currency): (&str, &str),
    routed_by: &str,
) -> InvoiceKey {
    let mut invoice = invoice(invoice_id, revision);
    invoice.key.biller_id = biller.to_owned();
    invoice.amount = payrelay::domain::Amount::parse(amount, currency).unwrap();
    let key = invoice.key.clone();
    let begun = store
        .begin(
            &invoice,
            &correlation(invoice_id),
            &event(EventName::Accepted, &key),
            &[],
            routed_by,
        )
        .await
        .unwrap();
    assert_eq!(begun, Begin::New, "{key}");
    key
}

/// An attempt a provider accepted at the store's clock, for `step`.
async fn sent_for(store: &dyn Store, key: &InvoiceKey, channel: ChannelName, token: &str, step: Option<&str>) -> i64 {
    let id = store
        .start_attempt(key, channel, 1, &paylink(token), step)
        .await
        .unwrap()
        .id()
        .expect("the invoice is open");
    let outcome = AttemptOutcome::Sent {
        provider_message_id: Some(format!("p-{token}")),
    };
    store
        .finish_attempt(id, &outcome, &event(EventName::Sent, key))
        .await
        .unwrap();
    id
}

fn query(by: Option<payrelay::store::stats::GroupBy>) -> payrelay::store::stats::StatsQuery {
    payrelay::store::stats::StatsQuery {
        biller_id: ACME.to_owned(),
        from: time::macros::date!(2026 - 03 - 01),
        to: time::macros::date!(2026 - 03 - 02),
        by,
    }
}

/// A small known month: four invoices of acme received on 1 and 2 March,
/// one of them in two revisions, in two currencies, paid with and
/// without a click; one before the period, one after it, and one of
/// another biller, which do not count. (Link previews never reach the
/// store: the pay page counts them apart, see tests/stats_api.rs.)
async fn the_funnel_counts_each_invoice_once_per_stage_and_attributes_payments(db: &TestDb) {
    use payrelay::store::stats::GroupBy;

    let (clock, store) = on_manual_clock(db, MARCH_1 - DAY).await;
    let store = store.as_ref();
    // Before the period, and another biller's: neither counts.
    received(store, ACME, "OLD", 1, ("9.00", "MXN"), "default").await;
    clock.set_ms(MARCH_1 + 8 * HOUR);
    received(store, "beta", "INV-1", 1, ("9.00", "MXN"), "default").await;

    // INV-1: email sent at 09:01, delivered, opened by a person at 10:00,
    // paid at 12:01: three hours after its first message.
    clock.set_ms(MARCH_1 + 9 * HOUR);
    let one = received(store, ACME, "INV-1", 1, ("1234.50", "MXN"), "rule:mexican mobiles").await;
    clock.set_ms(MARCH_1 + 9 * HOUR + 60_000);
    let email = sent_for(store, &one, ChannelName::Email, "1e", None).await;
    store
        .record_reached(email, Reached::Delivered, &event(EventName::Delivered, &one))
        .await
        .unwrap();
    clock.set_ms(MARCH_1 + 10 * HOUR);
    store
        .record_click("hash-1e", &event(EventName::Clicked, &one))
        .await
        .unwrap();
    store
        .record_click("hash-1e", &event(EventName::Clicked, &one))
        .await
        .unwrap();

    // INV-2: revision 1 (100.00) by email at 10:01, revision 2 (200.00) by
    // SMS at 11:01; paid at 14:01 with no link opened: four hours after
    // its first message, attributed to the last one sent.
    clock.set_ms(MARCH_1 + 10 * HOUR);
    let two = received(store, ACME, "INV-2", 1, ("100.00", "MXN"), "default").await;
    clock.set_ms(MARCH_1 + 10 * HOUR + 60_000);
    sent_for(store, &two, ChannelName::Email, "2e", None).await;
    clock.set_ms(MARCH_1 + 11 * HOUR);
    let two_again = received(store, ACME, "INV-2", 2, ("200.00", "MXN"), "default").await;
    clock.set_ms(MARCH_1 + 11 * HOUR + 60_000);
    sent_for(store, &two_again, ChannelName::Sms, "2s", None).await;

    clock.set_ms(MARCH_1 + 12 * HOUR + 60_000);
    assert!(store
        .close(ACME, "INV-1", Status::Paid, &event(EventName::Paid, &one))
        .await
        .unwrap());
    clock.set_ms(MARCH_1 + 14 * HOUR + 60_000);
    assert!(store
        .close(ACME, "INV-2", Status::Paid, &event(EventName::Paid, &two_again))
        .await
        .unwrap());

    // INV-3 (2 March): the request by email, the "overdue" reminder by
    // SMS, whose link a person opened; not paid.
    clock.set_ms(MARCH_1 + DAY + 9 * HOUR);
    let three = received(store, ACME, "INV-3", 1, ("50.00", "EUR"), "rule:mexican mobiles").await;
    sent_for(store, &three, ChannelName::Email, "3e", None).await;
    clock.set_ms(MARCH_1 + DAY + 12 * HOUR);
    sent_for(store, &three, ChannelName::Sms, "3s", Some("overdue")).await;
    store
        .record_click("hash-3s", &event(EventName::Clicked, &three))
        .await
        .unwrap();

    // INV-4 (2 March): its only send failed.
    clock.set_ms(MARCH_1 + DAY + 10 * HOUR);
    let four = received(store, ACME, "INV-4", 1, ("70.00", "EUR"), "invoice_channels").await;
    let failed = started(store, &four, ChannelName::Email, 1, "4e").await;
    let outcome = AttemptOutcome::Failed {
        detail: "smtp 550".into(),
    };
    store
        .finish_attempt(failed, &outcome, &event(EventName::ChannelFailed, &four))
        .await
        .unwrap();

    // After the period: does not count.
    clock.set_ms(MARCH_1 + 2 * DAY);
    received(store, ACME, "LATE", 1, ("9.00", "MXN"), "default").await;

    let stats = store.stats(&query(None)).await.unwrap();
    let f = &stats.funnel;
    assert_eq!(
        (f.received, f.sent, f.delivered, f.opened, f.paid),
        (4, 3, 2, 2, 2),
        "received, sent, delivered, opened, paid"
    );
    assert_eq!(f.rates.sent_of_received, Some(0.75));
    assert_eq!(f.rates.delivered_of_sent, Some(2.0 / 3.0));
    assert_eq!(f.rates.opened_of_delivered, Some(1.0));
    assert_eq!(f.rates.paid_of_opened, Some(1.0));
    assert_eq!(f.rates.paid_of_received, Some(0.5));
    let amounts: Vec<_> = f
        .amounts
        .iter()
        .map(|a| {
            (
                a.currency.as_str(),
                a.requested.as_str(),
                a.paid.as_str(),
                a.requested_minor,
                a.paid_minor,
            )
        })
        .collect();
    assert_eq!(
        amounts,
        [
            ("EUR", "120.00", "0.00", 12_000, 0),
            ("MXN", "1434.50", "1434.50", 143_450, 143_450)
        ],
        "the latest revision's amount, once per invoice"
    );
    assert_eq!(f.median_ms_to_payment, Some(3 * HOUR + HOUR / 2), "between 3 h and 4 h");
    assert_eq!(stats.by, None);
    assert!(stats.groups.is_empty());
    let daily: Vec<_> = stats
        .daily
        .iter()
        .map(|d| (d.day.as_str(), d.received, d.sent, d.delivered, d.opened, d.paid))
        .collect();
    assert_eq!(daily, [("2026-03-01", 2, 2, 1, 1, 2), ("2026-03-02", 2, 1, 1, 1, 0)]);

    let split = |stats: payrelay::store::stats::Stats| -> Vec<(String, u64, u64, u64, u64)> {
        stats
            .groups
            .iter()
            .map(|g| {
                (
                    g.key.clone(),
                    g.funnel.received,
                    g.funnel.sent,
                    g.funnel.opened,
                    g.funnel.paid,
                )
            })
            .collect()
    };
    let by_channel = store.stats(&query(Some(GroupBy::Channel))).await.unwrap();
    assert_eq!(by_channel.funnel, stats.funnel, "a split changes no total");
    assert_eq!(
        split(by_channel),
        [("email".into(), 2, 1, 1, 1), ("sms".into(), 2, 2, 1, 1)],
        "INV-1 to the email opened before payment, INV-2 to the last SMS sent, INV-3 to its opened SMS, INV-4 to its failed email"
    );
    assert_eq!(
        split(store.stats(&query(Some(GroupBy::Rule))).await.unwrap()),
        [
            ("rule:mexican mobiles".into(), 2, 2, 2, 1),
            ("default".into(), 1, 1, 0, 1),
            ("invoice_channels".into(), 1, 0, 0, 0)
        ]
    );
    assert_eq!(
        split(store.stats(&query(Some(GroupBy::Step))).await.unwrap()),
        [("request".into(), 3, 2, 1, 2), ("overdue".into(), 1, 1, 1, 0)]
    );

    // Another biller's figures are its own; an empty period is all zeros.
    let beta = payrelay::store::stats::StatsQuery {
        biller_id: "beta".into(),
        ..query(None)
    };
    assert_eq!(store.stats(&beta).await.unwrap().funnel.received, 1);
    let empty = payrelay::store::stats::StatsQuery {
        from: time::macros::date!(2026 - 04 - 01),
        to: time::macros::date!(2026 - 04 - 01),
        ..query(Some(GroupBy::Channel))
    };
    let empty = store.stats(&empty).await.unwrap();
    assert_eq!(empty.funnel.received, 0);
    assert_eq!(empty.funnel.rates.sent_of_received, None);
    assert_eq!(empty.funnel.median_ms_to_payment, None);
    assert_eq!(empty.daily.len(), 1);
}
