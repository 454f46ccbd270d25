//! Faults injected into the store of a running service, on the real
//! broker: a handler that keeps crashing is dead-lettered with its reason
//! after a bounded number of deliveries; a store that answers every call
//! with an error holds invoices (not ready, nothing acked, nothing
//! dead-lettered) until it answers again; single store calls that fail at
//! chosen points. The same outage on real databases (an SQLite file locked
//! by another process, a PostgreSQL server out of reach), where calls hang
//! until the store's own timeouts, is `tests/store_outage.rs`.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use common::{invoice, Options, TestEnv, WAIT};
use payrelay::domain::debtor::Profile;
use payrelay::domain::ChannelName;
use payrelay::domain::InvoiceKey;
use payrelay::domain::Status;
use payrelay::events::{Correlation, Event};
use payrelay::invoice::Invoice;
use payrelay::store::stats::{Stats, StatsQuery};
use payrelay::store::{
    AttemptOutcome, AttemptRef, AttemptStart, Begin, CombineJoin, CombinedLinkRecord, CustomerDay, DueGroup, DueStep,
    Erasure, FoundInvoice, GroupPlace, HeldStep, History, NewPaylink, OutboxEntry, PaylinkRecord, PlannedStep, Reached,
    StepRecord, StepStatus, Store, StoreError, StoreGauges, StoredInvoice, SuppressionChange,
};

/// The real store, with a crash for one invoice, an on/off outage, and
/// single calls that fail.
struct Faulty {
    inner: Arc<dyn Store>,
    crash_on: &'static str,
    down: Arc<AtomicBool>,
    fail_next: Arc<FailNext>,
}

/// How many of the next calls of each kind fail (after doing nothing).
#[derive(Default)]
struct FailNext {
    start_attempt: AtomicU32,
    finish_sent: AtomicU32,
    outbox_done: AtomicU32,
}

fn unavailable() -> StoreError {
    StoreError::Database(sqlx::Error::PoolTimedOut)
}

/// Whether this call is one of those that fail, counting it.
fn fails(next: &AtomicU32) -> bool {
    next.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

impl Faulty {
    fn check(&self) -> Result<(), StoreError> {
        if self.down.load(Ordering::SeqCst) {
            Err(unavailable())
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl Store for Faulty {
    async fn begin(
        &self,
        invoice: &Invoice,
        correlation: &Correlation,
        accepted: &Event,
        steps: &[PlannedStep],
        routed_by: &str,
    ) -> Result<Begin, StoreError> {
        if invoice.key.invoice_id == self.crash_on {
            panic!("injected crash while storing {}", self.crash_on);
        }
        self.check()?;
        self.inner.begin(invoice, correlation, accepted, steps, routed_by).await
    }
    async fn start_attempt(
        &self,
        key: &InvoiceKey,
        channel: ChannelName,
        attempt: u32,
        paylink: &NewPaylink,
        step: Option<&str>,
    ) -> Result<AttemptStart, StoreError> {
        self.check()?;
        if fails(&self.fail_next.start_attempt) {
            return Err(unavailable());
        }
        self.inner.start_attempt(key, channel, attempt, paylink, step).await
    }
    async fn finish_sent(
        &self,
        id: i64,
        provider_message_id: Option<&str>,
        event: &Event,
        key: &InvoiceKey,
    ) -> Result<(), StoreError> {
        self.check()?;
        if fails(&self.fail_next.finish_sent) {
            return Err(unavailable());
        }
        self.inner.finish_sent(id, provider_message_id, event, key).await
    }
    async fn retry_attempt_later(&self, id: i64, detail: &str) -> Result<(), StoreError> {
        self.check()?;
        self.inner.retry_attempt_later(id, detail).await
    }
    async fn finish_attempt(&self, id: i64, outcome: &AttemptOutcome, event: &Event) -> Result<(), StoreError> {
        self.check()?;
        self.inner.finish_attempt(id, outcome, event).await
    }
    async fn finish_invoice(&self, key: &InvoiceKey, status: Status, events: &[Event]) -> Result<(), StoreError> {
        self.check()?;
        self.inner.finish_invoice(key, status, events).await
    }
    async fn close(&self, b: &str, i: &str, status: Status, event: &Event) -> Result<bool, StoreError> {
        self.check()?;
        self.inner.close(b, i, status, event).await
    }
    async fn record_event(&self, event: &Event) -> Result<(), StoreError> {
        self.check()?;
        self.inner.record_event(event).await
    }
    async fn paylink(&self, token_hash: &str) -> Result<Option<PaylinkRecord>, StoreError> {
        self.check()?;
        self.inner.paylink(token_hash).await
    }
    async fn record_click(&self, token_hash: &str, event: &Event) -> Result<i64, StoreError> {
        self.check()?;
        self.inner.record_click(token_hash, event).await
    }
    async fn outbox(&self, limit: u32) -> Result<Vec<OutboxEntry>, StoreError> {
        self.check()?;
        self.inner.outbox(limit).await
    }
    async fn outbox_done(&self, ids: &[i64]) -> Result<(), StoreError> {
        self.check()?;
        if fails(&self.fail_next.outbox_done) {
            return Err(unavailable());
        }
        self.inner.outbox_done(ids).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.check()?;
        self.inner.ping().await
    }
    async fn gauges(&self) -> Result<StoreGauges, StoreError> {
        self.check()?;
        self.inner.gauges().await
    }
    async fn invoice(&self, key: &InvoiceKey) -> Result<Option<StoredInvoice>, StoreError> {
        self.check()?;
        self.inner.invoice(key).await
    }
    async fn attempt_by_provider_id(&self, channel: ChannelName, id: &str) -> Result<Option<AttemptRef>, StoreError> {
        self.check()?;
        self.inner.attempt_by_provider_id(channel, id).await
    }
    async fn record_reached(&self, id: i64, reached: Reached, event: &Event) -> Result<bool, StoreError> {
        self.check()?;
        self.inner.record_reached(id, reached, event).await
    }
    async fn history(&self, b: &str, i: &str) -> Result<Option<History>, StoreError> {
        self.check()?;
        self.inner.history(b, i).await
    }
    async fn find_invoices(&self, b: &str, i: &str, c: &str, limit: u32) -> Result<Vec<FoundInvoice>, StoreError> {
        self.check()?;
        self.inner.find_invoices(b, i, c, limit).await
    }
    async fn invoices_received(
        &self,
        b: &str,
        from_ms: i64,
        to_ms: i64,
        limit: u32,
    ) -> Result<Vec<FoundInvoice>, StoreError> {
        self.check()?;
        self.inner.invoices_received(b, from_ms, to_ms, limit).await
    }
    async fn hold(&self, key: &InvoiceKey, until_ms: i64) -> Result<(), StoreError> {
        self.check()?;
        self.inner.hold(key, until_ms).await
    }
    async fn due_holds(&self, now_ms: i64, limit: u32) -> Result<Vec<InvoiceKey>, StoreError> {
        self.check()?;
        self.inner.due_holds(now_ms, limit).await
    }
    async fn claim_due_holds(&self, now_ms: i64, limit: u32) -> Result<Vec<InvoiceKey>, StoreError> {
        self.check()?;
        self.inner.claim_due_holds(now_ms, limit).await
    }
    async fn next_hold(&self) -> Result<Option<i64>, StoreError> {
        self.check()?;
        self.inner.next_hold().await
    }
    async fn claim(&self, key: &InvoiceKey, now_ms: i64, idle_ms: i64) -> Result<bool, StoreError> {
        self.check()?;
        self.inner.claim(key, now_ms, idle_ms).await
    }
    async fn claim_stale(&self, now_ms: i64, idle_ms: i64, limit: u32) -> Result<Vec<InvoiceKey>, StoreError> {
        self.check()?;
        self.inner.claim_stale(now_ms, idle_ms, limit).await
    }
    async fn fail_after_send(&self, id: i64, detail: &str, event: &Event) -> Result<bool, StoreError> {
        self.check()?;
        self.inner.fail_after_send(id, detail, event).await
    }
    async fn debtor(
        &self,
        biller_id: &str,
        customer_key: &str,
        addresses: &[(ChannelName, String)],
    ) -> Result<Profile, StoreError> {
        self.check()?;
        self.inner.debtor(biller_id, customer_key, addresses).await
    }
    async fn set_preferences(
        &self,
        biller_id: &str,
        customer_key: &str,
        channels: &[ChannelName],
        stopped: &[ChannelName],
        event: &Event,
    ) -> Result<(), StoreError> {
        self.check()?;
        self.inner
            .set_preferences(biller_id, customer_key, channels, stopped, event)
            .await
    }
    async fn suppress(&self, change: &SuppressionChange) -> Result<bool, StoreError> {
        self.check()?;
        self.inner.suppress(change).await
    }
    async fn claim_due_steps(&self, now_ms: i64, idle_ms: i64, limit: u32) -> Result<Vec<DueStep>, StoreError> {
        self.check()?;
        self.inner.claim_due_steps(now_ms, idle_ms, limit).await
    }
    async fn reschedule_step(&self, key: &InvoiceKey, seq: u32, due_ms: i64, detail: &str) -> Result<(), StoreError> {
        self.check()?;
        self.inner.reschedule_step(key, seq, due_ms, detail).await
    }
    async fn hold_step(
        &self,
        key: &InvoiceKey,
        seq: u32,
        until_ms: i64,
        held: HeldStep,
        detail: &str,
    ) -> Result<(), StoreError> {
        self.check()?;
        self.inner.hold_step(key, seq, until_ms, held, detail).await
    }
    async fn finish_step(
        &self,
        key: &InvoiceKey,
        seq: u32,
        status: StepStatus,
        detail: Option<&str>,
        events: &[Event],
    ) -> Result<bool, StoreError> {
        self.check()?;
        self.inner.finish_step(key, seq, status, detail, events).await
    }
    async fn steps(&self, b: &str, i: &str) -> Result<Vec<StepRecord>, StoreError> {
        self.check()?;
        self.inner.steps(b, i).await
    }
    async fn next_step(&self) -> Result<Option<i64>, StoreError> {
        self.check()?;
        self.inner.next_step().await
    }
    async fn messages_to_customer(&self, customer: &str, since_ms: i64) -> Result<u32, StoreError> {
        self.check()?;
        self.inner.messages_to_customer(customer, since_ms).await
    }
    async fn erase_customer(&self, biller_id: &str, customer: &str, erased: &Event) -> Result<Erasure, StoreError> {
        self.check()?;
        self.inner.erase_customer(biller_id, customer, erased).await
    }
    async fn erase_expired(&self, before_ms: i64, limit: u32) -> Result<Erasure, StoreError> {
        self.check()?;
        self.inner.erase_expired(before_ms, limit).await
    }
    async fn begin_combined(
        &self,
        invoice: &Invoice,
        correlation: &Correlation,
        accepted: &Event,
        steps: &[PlannedStep],
        routed_by: &str,
        join: &CombineJoin,
    ) -> Result<(Begin, Option<GroupPlace>), StoreError> {
        self.check()?;
        self.inner
            .begin_combined(invoice, correlation, accepted, steps, routed_by, join)
            .await
    }
    async fn claim_due_groups(&self, now_ms: i64, idle_ms: i64, limit: u32) -> Result<Vec<DueGroup>, StoreError> {
        self.check()?;
        self.inner.claim_due_groups(now_ms, idle_ms, limit).await
    }
    async fn hold_group(&self, group_id: &str, until_ms: i64) -> Result<(), StoreError> {
        self.check()?;
        self.inner.hold_group(group_id, until_ms).await
    }
    async fn finish_group(&self, group_id: &str) -> Result<(), StoreError> {
        self.check()?;
        self.inner.finish_group(group_id).await
    }
    async fn next_group(&self) -> Result<Option<i64>, StoreError> {
        self.check()?;
        self.inner.next_group().await
    }
    async fn add_combined_link(
        &self,
        group_id: &str,
        channel: ChannelName,
        paylink: &NewPaylink,
        listed: &[InvoiceKey],
    ) -> Result<(), StoreError> {
        self.check()?;
        self.inner.add_combined_link(group_id, channel, paylink, listed).await
    }
    async fn combined_link(&self, token_hash: &str) -> Result<Option<CombinedLinkRecord>, StoreError> {
        self.check()?;
        self.inner.combined_link(token_hash).await
    }
    async fn claim_customer_steps(
        &self,
        day: &CustomerDay,
        now_ms: i64,
        idle_ms: i64,
    ) -> Result<Vec<DueStep>, StoreError> {
        self.check()?;
        self.inner.claim_customer_steps(day, now_ms, idle_ms).await
    }
    async fn stats(&self, query: &StatsQuery) -> Result<Stats, StoreError> {
        self.check()?;
        self.inner.stats(query).await
    }
    async fn add_reminder_group(&self, group_id: &str, day: &CustomerDay) -> Result<(), StoreError> {
        self.check()?;
        self.inner.add_reminder_group(group_id, day).await
    }
}

fn faulty(down: &Arc<AtomicBool>, delivery_limit: u32) -> Options {
    failing(down, &Arc::new(FailNext::default()), delivery_limit)
}

fn failing(down: &Arc<AtomicBool>, fail_next: &Arc<FailNext>, delivery_limit: u32) -> Options {
    let (down, fail_next) = (down.clone(), fail_next.clone());
    Options {
        delivery_limit,
        wrap_store: Some(Box::new(move |inner| {
            Arc::new(Faulty {
                inner,
                crash_on: "INV-POISON",
                down: down.clone(),
                fail_next: fail_next.clone(),
            })
        })),
        ..Options::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_whose_handler_keeps_crashing_is_dead_lettered_with_its_reason_and_blocks_nothing() {
    let env = TestEnv::start_with(faulty(&Arc::new(AtomicBool::new(false)), 3)).await;
    env.publish(&[
        invoice("INV-POISON", "poison@example.com"),
        invoice("INV-FINE", "fine@example.com"),
    ])
    .await;
    let emails = env.smtp.wait_for(1, WAIT).await;
    assert_eq!(emails[0].recipients, ["fine@example.com"], "the queue was not blocked");

    let dead = env.dead_letters(1).await;
    let (reason, body) = &dead[0];
    assert!(body.windows(10).any(|w| w == b"INV-POISON"));
    assert!(
        reason.contains("failed to handle this message 3 times") && reason.contains("injected crash"),
        "{reason}"
    );
    let rejected = env.wait_for("invoice.rejected", 1).await;
    assert!(rejected[0]["detail"].as_str().unwrap().contains("3 times"));
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_outage_holds_invoices_unacked_and_they_go_out_once_when_it_ends() {
    let down = Arc::new(AtomicBool::new(false));
    let env = TestEnv::start_with(faulty(&down, 2)).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while env.get("/readyz").await.status() != 200 {
        assert!(tokio::time::Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    down.store(true, Ordering::SeqCst);
    assert_eq!(
        env.get("/readyz").await.status(),
        503,
        "not ready while the store is away"
    );
    let invoices: Vec<_> = (0..5)
        .map(|i| invoice(&format!("INV-OUT-{i}"), &format!("o{i}@example.com")))
        .collect();
    env.publish(&invoices).await;
    // Longer than two requeues would take: a delivery limit of 2 must not be spent by the outage.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        env.smtp.received().is_empty(),
        "nothing is sent while nothing can be recorded"
    );

    down.store(false, Ordering::SeqCst);
    env.smtp.wait_for(5, WAIT).await;
    env.wait_for("invoice.sent", 5).await;
    assert_eq!(env.smtp.received().len(), 5, "each once");
    assert_eq!(
        common::messages_in_queue(&env.config.broker.dead_letter_queue()).await,
        0,
        "nothing was dead-lettered by the outage"
    );
    assert!(env.events_named("invoice.rejected").is_empty());
    env.finish().await;
}

/// How often each (event, invoice) was published.
fn publications(env: &TestEnv) -> std::collections::BTreeMap<(String, String), usize> {
    let mut out = std::collections::BTreeMap::new();
    for event in env.events() {
        let key = (
            event["event"].as_str().unwrap_or_default().to_owned(),
            event["invoice_id"].as_str().unwrap_or_default().to_owned(),
        );
        *out.entry(key).or_default() += 1;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_failure_after_events_were_confirmed_publishes_them_once_and_keeps_the_broker_connection() {
    let fail_next = Arc::new(FailNext::default());
    // The publisher cannot forget its first confirmed events three times over.
    fail_next.outbox_done.store(3, Ordering::SeqCst);
    let env = TestEnv::start_with(failing(&Arc::new(AtomicBool::new(false)), &fail_next, 10)).await;
    env.publish(&[invoice("INV-CONF-1", "c1@example.com")]).await;
    env.wait_for("invoice.sent", 1).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while fail_next.outbox_done.load(Ordering::SeqCst) > 0 {
        assert!(tokio::time::Instant::now() < deadline, "the publisher stopped trying");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A second invoice goes through the same publisher: it was not replaced.
    env.publish(&[invoice("INV-CONF-2", "c2@example.com")]).await;
    env.wait_for("invoice.sent", 2).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    for ((name, id), n) in publications(&env) {
        assert_eq!(n, 1, "{name} for {id} was published {n} times");
    }
    assert_eq!(env.smtp.received().len(), 2);
    env.finish().await;
}

/// A store call that fails after the invoice was accepted: the consumer
/// keeps the delivery and the dispatcher handles it again.
async fn one_store_call_fails(fail: impl FnOnce(&FailNext)) {
    let fail_next = Arc::new(FailNext::default());
    fail(&fail_next);
    let env = TestEnv::start_with(failing(&Arc::new(AtomicBool::new(false)), &fail_next, 2)).await;
    env.publish(&[invoice("INV-ONE", "one@example.com")]).await;
    env.wait_for("invoice.sent", 1).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(env.smtp.received().len(), 1, "sent once");
    assert!(
        env.events_named("invoice.duplicate").is_empty(),
        "its own retry is no duplicate"
    );
    for ((name, id), n) in publications(&env) {
        assert_eq!(n, 1, "{name} for {id} was published {n} times");
    }
    env.finish().await;
}

// The consumer retries the same delivery (`redelivered` false) and the
// dispatcher finds the invoice it began itself (`Begin::Resume`): it must
// take it back at once, not ack it as a duplicate "being handled by another
// instance" (which left it unsent until the scheduler reclaimed it 5
// minutes later).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invoice_whose_store_failed_after_it_was_accepted_is_sent_once_when_retried() {
    one_store_call_fails(|f| f.start_attempt.store(1, Ordering::SeqCst)).await;
}

// The email went out, recording it failed: the record is tried again, and
// the email is not sent a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_whose_record_failed_is_recorded_and_not_sent_again() {
    one_store_call_fails(|f| f.finish_sent.store(1, Ordering::SeqCst)).await;
}

/// A store that answers pings but refuses writes (a full disk) is not ready,
/// and is again once it takes the retried invoice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_reports_a_store_that_refuses_writes_until_it_takes_one_again() {
    let fail_next = Arc::new(FailNext::default());
    let env = TestEnv::start_with(failing(&Arc::new(AtomicBool::new(false)), &fail_next, 2)).await;
    let ready = |want: u16, what: &'static str| {
        let env = &env;
        async move {
            let deadline = tokio::time::Instant::now() + WAIT;
            while env.get("/readyz").await.status() != want {
                assert!(tokio::time::Instant::now() < deadline, "{what}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    ready(200, "never ready").await;
    fail_next.start_attempt.store(4, Ordering::SeqCst);
    env.publish(&[invoice("INV-FULL-DISK", "full@example.com")]).await;
    ready(503, "ready while the store refused writes").await;
    let body = env.get("/readyz").await.text().await.unwrap();
    assert!(body.contains("store: failing"), "{body}");
    env.wait_for("invoice.sent", 1).await;
    ready(200, "not ready again after the store took the retried invoice").await;
    assert_eq!(env.smtp.received().len(), 1, "sent once");
    env.finish().await;
}
