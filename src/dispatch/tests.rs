//! The dispatcher's outcomes, one by one, on a manual clock, stub channels
//! and a real SQLite store in a temporary folder.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use governor::Quota;
use tokio::sync::Notify;

use super::retry::{Backoff, RetryPolicy};
use super::{Dispatcher, Disposition, Incoming};
use crate::channels::{
    BreakerPolicy, Channel, ChannelMessage, DeliveryStatus, Prepared, Receipt, Registry, Request, SendError,
    StatusReport,
};
use crate::config::Config;
use crate::domain::clock::{Clock, ManualClock};
use crate::domain::ChannelName;
use crate::domain::InvoiceKey;
use crate::domain::Status;
use crate::events::{Correlation, Event, EventName};
use crate::metrics::Metrics;
use crate::render::{RenderError, Templates};
use crate::store::sqlite::SqliteStore;
use crate::store::{AttemptState, Store};

/// 2026-11-20T12:00:00Z: a Friday noon, outside any quiet hours.
const NOON: i64 = 1_795_176_000_000;
const HOUR: i64 = 3_600_000;

/// What a stub channel answers to one send.
enum Reply {
    Accept,
    Fail(SendError),
    /// The customer pays the invoice while the provider refuses the message.
    PaidMeanwhile(SendError),
}

/// A channel that answers from a script (then accepts everything) and
/// counts its sends.
struct Stub {
    name: ChannelName,
    replies: Mutex<VecDeque<Reply>>,
    sends: Arc<AtomicU32>,
    store: Arc<dyn Store>,
    /// The pay-link tokens of the messages it prepared, in order.
    tokens: Arc<Mutex<Vec<String>>>,
}

#[derive(Debug)]
struct Text(String);

impl ChannelMessage for Text {
    fn parts(&self) -> Vec<(&'static str, Cow<'_, str>)> {
        vec![("text", Cow::Borrowed(self.0.as_str()))]
    }
}

#[async_trait]
impl Channel for Stub {
    fn name(&self) -> ChannelName {
        self.name
    }

    fn prepare(&self, request: &Request<'_>, _: &Templates) -> Result<Prepared, RenderError> {
        self.tokens.lock().unwrap().push(request.token.to_owned());
        Ok(Prepared::new(
            self.name,
            request.to,
            Text(format!("pay at {}", request.token)),
        ))
    }

    async fn send(&self, _: &Prepared) -> Result<Receipt, SendError> {
        let n = self.sends.fetch_add(1, Ordering::SeqCst) + 1;
        let reply = self.replies.lock().unwrap().pop_front().unwrap_or(Reply::Accept);
        match reply {
            Reply::Accept => Ok(Receipt {
                provider_message_id: Some(format!("{}-{n}", self.name)),
            }),
            Reply::Fail(e) => Err(e),
            Reply::PaidMeanwhile(e) => {
                let paid = Event::paid("acme", "INV-1", &Correlation::default());
                self.store.close("acme", "INV-1", Status::Paid, &paid).await.unwrap();
                Err(e)
            }
        }
    }
}

fn permanent() -> SendError {
    SendError::Permanent {
        code: Some("21211".into()),
        reason: "invalid number".into(),
    }
}

fn transient() -> SendError {
    SendError::Transient {
        code: None,
        reason: "503".into(),
        retry_after: None,
    }
}

fn misconfigured() -> SendError {
    SendError::Misconfigured {
        code: Some("20003".into()),
        reason: "bad credentials".into(),
    }
}

/// A dispatcher over stub SMS and email channels, routing by `routing`
/// (the body of `[routing]`).
struct World {
    dispatcher: Arc<Dispatcher>,
    store: Arc<SqliteStore>,
    clock: Arc<ManualClock>,
    sms: Arc<AtomicU32>,
    email: Arc<AtomicU32>,
    /// The SMS messages' pay-link tokens, in order.
    sms_tokens: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

/// The test config: `routing` is the body of `[routing]`, `biller` is
/// added to `[billers.acme]`.
fn config_with(routing: &str, biller: &str, dir: &std::path::Path) -> Config {
    let toml = format!(
        r#"
[broker]
url = "amqp://guest:guest@127.0.0.1:5672/%2f"

[store]
url = "sqlite://payrelay.db"

[http]
listen = "127.0.0.1:0"
public_base_url = "https://pay.example"
admin_token = "admin-token-for-tests"

[billers.acme]
name = "ACME Energy"
checkout_url = "https://pay.example/c?inv={{invoice_id}}&t={{token}}"
default_locale = "es-MX"
webhook_secret = "webhook-secret-for-tests"
{biller}

[channels.email]
transport = "smtp"
smtp_url = "smtp://127.0.0.1:2525"
from = "ACME Billing <billing@acme.example>"

[channels.sms]
provider = "twilio"
base_url = "http://127.0.0.1:9"
account_sid = "ACtest"
auth_token = "twilio-token-for-tests"
from = "+15005550006"

[routing]
respect_preferences = false
{routing}
"#
    );
    Config::from_toml(&toml, dir, &|_| None).unwrap_or_else(|problems| panic!("{problems:#?}"))
}

impl World {
    async fn new(routing: &str, sms: Vec<Reply>, email: Vec<Reply>) -> World {
        World::with_biller(routing, "", sms, email).await
    }

    /// [`World::new`] with `biller` added to `[billers.acme]`.
    async fn with_biller(routing: &str, biller: &str, sms: Vec<Reply>, email: Vec<Reply>) -> World {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::at_ms(NOON));
        let path = dir.path().join("payrelay.db");
        let store = Arc::new(SqliteStore::open(path.to_str().unwrap(), clock.clone()).await.unwrap());
        let mut registry = Registry::empty(BreakerPolicy {
            failures: 5,
            pause: Duration::from_millis(150),
        });
        let mut stub = |name, replies: Vec<Reply>| {
            let sends = Arc::new(AtomicU32::new(0));
            let tokens = Arc::new(Mutex::new(Vec::new()));
            let channel = Stub {
                name,
                replies: Mutex::new(replies.into()),
                sends: sends.clone(),
                store: store.clone(),
                tokens: tokens.clone(),
            };
            registry.insert(Box::new(channel), Quota::per_second(NonZeroU32::new(1000).unwrap()));
            (sends, tokens)
        };
        let (sms, sms_tokens) = stub(ChannelName::Sms, sms);
        let (email, _) = stub(ChannelName::Email, email);
        let dispatcher = Dispatcher::new(
            Arc::new(config_with(routing, biller, dir.path())),
            store.clone(),
            Arc::new(registry),
            Arc::new(Templates::load(None).unwrap()),
            Arc::new(Metrics::new()),
            Arc::new(Notify::new()),
            clock.clone(),
        )
        .with_retry_policy(RetryPolicy {
            send_backoff: Backoff::new(Duration::from_millis(1), Duration::from_millis(2)),
            ..RetryPolicy::STANDARD
        });
        World {
            dispatcher: Arc::new(dispatcher),
            store,
            clock,
            sms,
            email,
            sms_tokens,
            _dir: dir,
        }
    }

    async fn receive(&self, invoice_id: &str, revision: i64) -> Disposition {
        self.receive_for(invoice_id, revision, None, "MXN", "1234.50").await
    }

    /// A request of customer `customer_id` (none: the contacts stand for
    /// the customer) for `amount` in `currency`.
    async fn receive_for(
        &self,
        invoice_id: &str,
        revision: i64,
        customer_id: Option<&str>,
        currency: &str,
        amount: &str,
    ) -> Disposition {
        self.receive_full(invoice_id, revision, customer_id, currency, amount, "2026-12-01")
            .await
    }

    /// [`World::receive_for`] of revision 1, due on `due_date`.
    async fn receive_due(
        &self,
        invoice_id: &str,
        customer_id: Option<&str>,
        currency: &str,
        amount: &str,
        due_date: &str,
    ) -> Disposition {
        self.receive_full(invoice_id, 1, customer_id, currency, amount, due_date)
            .await
    }

    async fn receive_full(
        &self,
        invoice_id: &str,
        revision: i64,
        customer_id: Option<&str>,
        currency: &str,
        amount: &str,
        due_date: &str,
    ) -> Disposition {
        let mut body = serde_json::json!({
            "kind": "payment_request",
            "invoice_id": invoice_id,
            "biller_id": "acme",
            "revision": revision,
            "amount": "1234.50",
            "currency": "MXN",
            "due_date": "2026-12-01",
            "customer": {
                "name": "María López",
                "email": "maria@example.com",
                "phone": "+5215512345678",
                "locale": "es-MX",
                "timezone": "UTC"
            },
            "metadata": {"erp_doc": "4711"}
        });
        body["currency"] = currency.into();
        body["amount"] = amount.into();
        body["due_date"] = due_date.into();
        if let Some(id) = customer_id {
            body["customer"]["id"] = id.into();
        }
        let incoming = Incoming {
            body: serde_json::to_vec(&body).unwrap(),
            correlation: Correlation {
                correlation_id: Some(format!("corr-{invoice_id}")),
                message_id: None,
            },
            redelivered: false,
            user_id: None,
        };
        self.dispatcher.handle(incoming).await
    }

    async fn status(&self, invoice_id: &str) -> Status {
        self.store.invoice(&key(invoice_id)).await.unwrap().unwrap().status
    }

    /// The attempts recorded for the invoice: channel and how each ended.
    async fn attempts(&self, invoice_id: &str) -> Vec<(ChannelName, AttemptState)> {
        let stored = self.store.invoice(&key(invoice_id)).await.unwrap().unwrap();
        stored.attempts.iter().map(|a| (a.channel, a.state)).collect()
    }

    /// The events queued for billers about the invoice, in order.
    async fn events(&self, invoice_id: &str) -> Vec<Event> {
        let entries = self.store.outbox(1000).await.unwrap();
        entries
            .iter()
            .map(|e| serde_json::from_str::<Event>(&e.json).unwrap())
            .filter(|e| e.invoice_id.as_deref() == Some(invoice_id))
            .collect()
    }

    async fn event_names(&self, invoice_id: &str) -> Vec<EventName> {
        self.events(invoice_id).await.iter().map(|e| e.event).collect()
    }
}

fn key(invoice_id: &str) -> InvoiceKey {
    InvoiceKey {
        biller_id: "acme".into(),
        invoice_id: invoice_id.into(),
        revision: 1,
    }
}

const SMS_THEN_EMAIL: &str = r#"default = ["sms", "email"]"#;

#[tokio::test]
async fn an_invoice_is_sent_on_its_first_channel() {
    let world = World::new(SMS_THEN_EMAIL, vec![], vec![]).await;
    assert_eq!(world.receive("INV-1", 1).await, Disposition::Ack);

    assert_eq!(world.status("INV-1").await, Status::Sent);
    assert_eq!(world.attempts("INV-1").await, [(ChannelName::Sms, AttemptState::Sent)]);
    let events = world.events("INV-1").await;
    assert_eq!(
        events.iter().map(|e| e.event).collect::<Vec<_>>(),
        [EventName::Accepted, EventName::Sent]
    );
    let sent = &events[1];
    assert_eq!(sent.channel, Some(ChannelName::Sms));
    assert_eq!(sent.attempt, Some(1));
    assert_eq!(sent.provider_message_id.as_deref(), Some("sms-1"));
    assert_eq!(sent.correlation_id.as_deref(), Some("corr-INV-1"));
    assert_eq!(sent.metadata, Some(serde_json::json!({"erp_doc": "4711"})));
    assert_eq!(world.email.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_permanent_failure_falls_back_to_the_next_channel() {
    let world = World::new(SMS_THEN_EMAIL, vec![Reply::Fail(permanent())], vec![]).await;
    world.receive("INV-1", 1).await;

    assert_eq!(world.status("INV-1").await, Status::Sent);
    assert_eq!(
        world.attempts("INV-1").await,
        [
            (ChannelName::Sms, AttemptState::Failed),
            (ChannelName::Email, AttemptState::Sent)
        ]
    );
    let events = world.events("INV-1").await;
    assert_eq!(
        events.iter().map(|e| e.event).collect::<Vec<_>>(),
        [EventName::Accepted, EventName::ChannelFailed, EventName::Sent]
    );
    assert!(events[1].detail.as_deref().unwrap().contains("invalid number"));
    assert_eq!(events[2].channel, Some(ChannelName::Email));
}

#[tokio::test]
async fn an_invoice_every_channel_refuses_is_exhausted() {
    let world = World::new(
        SMS_THEN_EMAIL,
        vec![Reply::Fail(permanent())],
        vec![Reply::Fail(permanent())],
    )
    .await;
    world.receive("INV-1", 1).await;

    assert_eq!(world.status("INV-1").await, Status::Exhausted);
    assert_eq!(
        world.event_names("INV-1").await,
        [
            EventName::Accepted,
            EventName::ChannelFailed,
            EventName::ChannelFailed,
            EventName::Exhausted
        ]
    );
    let exhausted = world.events("INV-1").await.pop().unwrap();
    assert_eq!(
        exhausted.detail.as_deref(),
        Some("every routed channel failed: sms, email")
    );
}

#[tokio::test]
async fn a_transient_failure_is_tried_again_on_the_same_channel() {
    let world = World::new(SMS_THEN_EMAIL, vec![Reply::Fail(transient())], vec![]).await;
    world.receive("INV-1", 1).await;

    assert_eq!(world.status("INV-1").await, Status::Sent);
    assert_eq!(world.sms.load(Ordering::SeqCst), 2);
    assert_eq!(world.email.load(Ordering::SeqCst), 0);
    let sent = world.events("INV-1").await.pop().unwrap();
    assert_eq!((sent.event, sent.attempt), (EventName::Sent, Some(2)));
}

#[tokio::test]
async fn the_transient_failure_warning_says_why_without_the_recipient() {
    let (_guard, logged) = crate::logging::capture("warn");
    // Twice at most: a test on another thread may have registered the
    // warning's callsite, with no subscriber of its own, while this one
    // was being set up, and tracing then skips it here. Once the callsite
    // is registered, asking every callsite again settles it.
    for _ in 0..2 {
        let failure = SendError::Transient {
            code: Some("30001".into()),
            reason: "queue overflow for +5215512345678".into(),
            retry_after: None,
        };
        let world = World::new(SMS_THEN_EMAIL, vec![Reply::Fail(failure)], vec![]).await;
        world.receive("INV-1", 1).await;
        if logged().contains("transient failure; trying again") {
            break;
        }
        tracing::callsite::rebuild_interest_cache();
    }

    let out = logged();
    let line = out
        .lines()
        .find(|l| l.contains("transient failure; trying again"))
        .unwrap_or_else(|| panic!("no transient warning in:\n{out}"));
    assert!(line.contains("queue overflow for +***8"), "{line}");
    assert!(!out.contains("5215512345678"), "{out}");
}

#[tokio::test]
async fn transient_failures_give_up_on_a_channel_after_its_tries() {
    let failures = (0..3).map(|_| Reply::Fail(transient())).collect();
    let world = World::new(SMS_THEN_EMAIL, failures, vec![]).await;
    world.receive("INV-1", 1).await;

    assert_eq!(world.sms.load(Ordering::SeqCst), 3);
    let events = world.events("INV-1").await;
    assert_eq!(
        (events[1].event, events[1].attempt),
        (EventName::ChannelFailed, Some(3))
    );
    assert_eq!(events[2].channel, Some(ChannelName::Email));
}

#[tokio::test]
async fn a_paused_channel_is_skipped_when_another_can_take_over() {
    let world = World::new(SMS_THEN_EMAIL, vec![Reply::Fail(misconfigured())], vec![]).await;
    world.receive("INV-1", 1).await;
    // The misconfigured answer paused SMS; the next invoice does not wait for it.
    world.receive("INV-2", 1).await;

    assert_eq!(world.sms.load(Ordering::SeqCst), 1);
    assert_eq!(world.status("INV-2").await, Status::Sent);
    let events = world.events("INV-2").await;
    assert_eq!(
        events.iter().map(|e| e.event).collect::<Vec<_>>(),
        [EventName::Accepted, EventName::ChannelFailed, EventName::Sent]
    );
    assert!(
        events[1].detail.as_deref().unwrap().contains("paused"),
        "{:?}",
        events[1]
    );
    assert_eq!(events[2].channel, Some(ChannelName::Email));
}

#[tokio::test]
async fn a_paused_channel_is_waited_for_when_it_is_the_last() {
    let world = World::new(r#"default = ["sms"]"#, vec![Reply::Fail(misconfigured())], vec![]).await;
    world.receive("INV-1", 1).await;
    assert_eq!(world.status("INV-1").await, Status::Exhausted);

    let started = std::time::Instant::now();
    world.receive("INV-2", 1).await;

    assert!(
        started.elapsed() >= Duration::from_millis(100),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(world.sms.load(Ordering::SeqCst), 2);
    assert_eq!(world.status("INV-2").await, Status::Sent);
    assert_eq!(world.event_names("INV-2").await, [EventName::Accepted, EventName::Sent]);
}

#[tokio::test]
async fn an_invoice_paid_before_its_next_send_sends_nothing_more() {
    let world = World::new(SMS_THEN_EMAIL, vec![Reply::PaidMeanwhile(permanent())], vec![]).await;
    world.receive("INV-1", 1).await;

    assert_eq!(world.status("INV-1").await, Status::Paid);
    assert_eq!(world.email.load(Ordering::SeqCst), 0);
    assert_eq!(
        world.attempts("INV-1").await,
        [(ChannelName::Sms, AttemptState::Failed)]
    );
    assert_eq!(
        world.event_names("INV-1").await,
        [EventName::Accepted, EventName::Paid, EventName::ChannelFailed]
    );
}

#[tokio::test]
async fn quiet_hours_hold_an_invoice_until_the_window_opens_then_it_is_sent() {
    let routing = "default = [\"sms\"]\nquiet_hours = \"21:00-08:00\"";
    let world = World::new(routing, vec![], vec![]).await;
    let late_evening = NOON + 11 * HOUR;
    let next_morning = NOON + 20 * HOUR;
    world.clock.set_ms(late_evening);
    world.receive("INV-1", 1).await;

    assert_eq!(world.status("INV-1").await, Status::Accepted);
    assert_eq!(world.sms.load(Ordering::SeqCst), 0);
    assert_eq!(world.store.next_hold().await.unwrap(), Some(next_morning));
    assert!(world
        .store
        .due_holds(world.clock.now_ms(), 10)
        .await
        .unwrap()
        .is_empty());

    world.clock.set_ms(next_morning);
    let due = world.store.due_holds(world.clock.now_ms(), 10).await.unwrap();
    assert_eq!(due, [key("INV-1")]);
    world.dispatcher.resume(&due[0]).await.unwrap();

    assert_eq!(world.status("INV-1").await, Status::Sent);
    assert_eq!(world.sms.load(Ordering::SeqCst), 1);
    assert_eq!(world.event_names("INV-1").await, [EventName::Accepted, EventName::Sent]);
}

#[tokio::test]
async fn a_second_copy_of_a_handled_request_is_a_duplicate() {
    let world = World::new(SMS_THEN_EMAIL, vec![], vec![]).await;
    world.receive("INV-1", 1).await;
    assert_eq!(world.receive("INV-1", 1).await, Disposition::Ack);

    assert_eq!(world.sms.load(Ordering::SeqCst), 1);
    let duplicate = world.events("INV-1").await.pop().unwrap();
    assert_eq!(duplicate.event, EventName::Duplicate);
    assert_eq!(duplicate.detail.as_deref(), Some("already handled (status sent)"));
}

#[tokio::test]
async fn an_older_revision_than_one_already_known_is_rejected_as_stale() {
    let world = World::new(SMS_THEN_EMAIL, vec![], vec![]).await;
    world.receive("INV-1", 2).await;
    assert_eq!(world.receive("INV-1", 1).await, Disposition::Ack);

    assert_eq!(world.sms.load(Ordering::SeqCst), 1);
    let stale = world.events("INV-1").await.pop().unwrap();
    assert_eq!((stale.event, stale.revision), (EventName::Rejected, Some(1)));
    assert_eq!(
        stale.detail.as_deref(),
        Some("stale revision: revision 2 is already known")
    );
}

#[tokio::test]
async fn a_message_that_is_not_an_invoice_is_dead_lettered_with_its_reason() {
    let world = World::new(SMS_THEN_EMAIL, vec![], vec![]).await;
    let incoming = Incoming {
        body: b"not json".to_vec(),
        correlation: Correlation::default(),
        redelivered: false,
        user_id: None,
    };
    let Disposition::DeadLetter { reason, event } = world.dispatcher.handle(incoming).await else {
        panic!("not dead-lettered");
    };
    assert_eq!(event.event, EventName::Rejected);
    assert_eq!(event.detail.as_deref(), Some(reason.as_str()));
    assert_eq!(event.biller_id, None);
}

#[tokio::test]
async fn an_oversized_message_is_refused_on_its_length_as_its_body_would_be() {
    use crate::invoice::MAX_BODY_BYTES;
    let world = World::new(SMS_THEN_EMAIL, vec![], vec![]).await;
    let correlation = Correlation {
        correlation_id: Some("corr-big".into()),
        message_id: None,
    };
    assert_eq!(world.dispatcher.refuse_oversized(MAX_BODY_BYTES, &correlation), None);
    let Some(Disposition::DeadLetter { reason, event }) =
        world.dispatcher.refuse_oversized(10 * 1024 * 1024, &correlation)
    else {
        panic!("a 10 MB message is refused on its length");
    };
    let incoming = Incoming {
        body: vec![b' '; 10 * 1024 * 1024],
        correlation: correlation.clone(),
        redelivered: false,
        user_id: None,
    };
    let Disposition::DeadLetter {
        reason: read,
        event: read_event,
    } = world.dispatcher.handle(incoming).await
    else {
        panic!("not dead-lettered");
    };
    assert_eq!(reason, read);
    assert_eq!(reason, "message body is 10485760 bytes, more than the 65536 allowed");
    assert_eq!(event.event, EventName::Rejected);
    assert_eq!(event.detail, read_event.detail);
    assert_eq!(event.correlation_id.as_deref(), Some("corr-big"));
    assert_eq!(world.sms.load(Ordering::SeqCst) + world.email.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_held_invoice_paid_before_its_window_opens_is_not_sent() {
    let routing = "default = [\"sms\"]\nquiet_hours = \"21:00-08:00\"";
    let world = World::new(routing, vec![], vec![]).await;
    world.clock.set_ms(NOON + 11 * HOUR);
    world.receive("INV-1", 1).await;
    let paid = world
        .dispatcher
        .close_invoice("acme", "INV-1", Status::Paid, &Correlation::default())
        .await
        .unwrap();
    assert!(paid);

    world.clock.set_ms(NOON + 20 * HOUR);
    world.dispatcher.resume(&key("INV-1")).await.unwrap();

    assert_eq!(world.sms.load(Ordering::SeqCst), 0);
    assert_eq!(world.status("INV-1").await, Status::Paid);
    assert_eq!(world.event_names("INV-1").await, [EventName::Accepted, EventName::Paid]);
}

#[tokio::test]
async fn a_delivery_failure_reported_later_moves_the_invoice_to_its_next_channel() {
    let world = World::new(SMS_THEN_EMAIL, vec![], vec![]).await;
    world.receive("INV-1", 1).await;
    let report = StatusReport {
        provider_message_id: "sms-1".into(),
        status: DeliveryStatus::Failed {
            code: Some("30003".into()),
            reason: "unreachable handset".into(),
        },
    };
    world.dispatcher.handle_report(ChannelName::Sms, report).await.unwrap();

    // The next channel is tried in the background.
    for _ in 0..200 {
        if world.email.load(Ordering::SeqCst) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(world.email.load(Ordering::SeqCst), 1);
    let events = world.events("INV-1").await;
    let failed = &events[2];
    assert_eq!(
        (failed.event, failed.channel),
        (EventName::ChannelFailed, Some(ChannelName::Sms))
    );
    assert_eq!(failed.provider_message_id.as_deref(), Some("sms-1"));
    assert_eq!(
        failed.detail.as_deref(),
        Some("the provider could not deliver the message (code 30003): unreachable handset")
    );
}

#[tokio::test]
async fn a_delivery_report_becomes_one_event() {
    let world = World::new(SMS_THEN_EMAIL, vec![], vec![]).await;
    world.receive("INV-1", 1).await;
    for _ in 0..2 {
        let report = StatusReport {
            provider_message_id: "sms-1".into(),
            status: DeliveryStatus::Delivered,
        };
        world.dispatcher.handle_report(ChannelName::Sms, report).await.unwrap();
    }

    let delivered = world.events("INV-1").await.pop().unwrap();
    assert_eq!(
        world.event_names("INV-1").await,
        [EventName::Accepted, EventName::Sent, EventName::Delivered]
    );
    assert_eq!(delivered.provider_message_id.as_deref(), Some("sms-1"));
    assert_eq!(
        (delivered.channel, delivered.attempt),
        (Some(ChannelName::Sms), Some(1))
    );
}

#[test]
fn an_invoice_is_taken_over_only_after_its_handler_could_have_bumped_it() {
    // The longest a send goes without touching its invoice: every retry
    // waits the longest Retry-After, and every channel pause is waited out.
    let policy = RetryPolicy::STANDARD;
    let longest_send =
        policy.max_retry_after * (policy.tries_per_channel - 1) + policy.max_pause_wait * policy.pauses_waited;
    assert!(longest_send < super::CLAIM_IDLE, "{longest_send:?}");
}

// ---------------------------------------------------------------------------
// Journeys: weeks of reminders on the manual clock

const DAY: i64 = 24 * HOUR;
/// 2026-12-01T10:00:00Z: the test invoice's due day at the journey's send_at
/// (its customer's time zone is UTC).
const DUE_DAY_10: i64 = NOON + 11 * DAY - 2 * HOUR;

/// SMS first, and a ladder by the due date: 3 days before, on the day, 3
/// days after.
const LADDER: &str = r#"default = ["sms", "email"]
journey = "ladder"

[journeys.ladder]
send_at = "10:00"
steps = [
  { name = "upcoming", due = "-3d", channels = ["email"] },
  { name = "due", due = "0d" },
  { name = "overdue", due = "+3d", channels = ["email", "sms"], strategy = "all" },
]"#;

impl World {
    /// Sets the clock and sends every step due then, as the scheduler would.
    async fn at(&self, ms: i64) -> usize {
        self.clock.set_ms(ms);
        let due = self
            .store
            .claim_due_steps(ms, super::CLAIM_IDLE.as_millis() as i64, 100)
            .await
            .unwrap();
        let n = due.len();
        self.dispatcher.run_steps(due).await.unwrap();
        n
    }

    /// (event, channel, step) of the invoice's events after `accepted`.
    async fn journey(&self, invoice_id: &str) -> Vec<(EventName, Option<ChannelName>, Option<String>)> {
        let events = self.events(invoice_id).await;
        events
            .into_iter()
            .filter(|e| e.event != EventName::Accepted)
            .map(|e| (e.event, e.channel, e.step))
            .collect()
    }

    async fn step_statuses(&self, invoice_id: &str) -> Vec<(String, crate::store::StepStatus)> {
        let steps = self.store.steps("acme", invoice_id).await.unwrap();
        steps.into_iter().map(|s| (s.name, s.status)).collect()
    }
}

fn sent(channel: ChannelName, step: Option<&str>) -> (EventName, Option<ChannelName>, Option<String>) {
    (EventName::Sent, Some(channel), step.map(str::to_owned))
}

#[tokio::test]
async fn a_journey_sends_each_step_at_its_local_time_then_reports_itself_completed() {
    use crate::store::StepStatus::{Planned, Sent};
    let world = World::new(LADDER, vec![], vec![]).await;
    world.receive("INV-1", 1).await;
    assert_eq!(world.journey("INV-1").await, [sent(ChannelName::Sms, None)]);
    assert_eq!(world.store.next_step().await.unwrap(), Some(DUE_DAY_10 - 3 * DAY));

    assert_eq!(world.at(DUE_DAY_10 - 3 * DAY - 1).await, 0, "not a millisecond early");
    assert_eq!(world.at(DUE_DAY_10 - 3 * DAY).await, 1);
    assert_eq!(world.at(DUE_DAY_10).await, 1);
    assert_eq!(
        world.step_statuses("INV-1").await,
        [
            ("upcoming".into(), Sent),
            ("due".into(), Sent),
            ("overdue".into(), Planned)
        ]
    );
    assert_eq!(world.at(DUE_DAY_10 + 3 * DAY).await, 1);
    assert_eq!(
        world.journey("INV-1").await,
        [
            sent(ChannelName::Sms, None),
            sent(ChannelName::Email, Some("upcoming")),
            // No channels of its own: the route's, SMS first.
            sent(ChannelName::Sms, Some("due")),
            // `all`: both.
            sent(ChannelName::Email, Some("overdue")),
            sent(ChannelName::Sms, Some("overdue")),
            (EventName::JourneyCompleted, None, Some("overdue".into())),
        ]
    );
    assert_eq!(world.status("INV-1").await, Status::Sent);
    assert_eq!(world.store.next_step().await.unwrap(), None);
    assert_eq!(world.at(DUE_DAY_10 + 30 * DAY).await, 0, "nothing more, ever");
}

#[tokio::test]
async fn a_payment_between_two_steps_stops_the_rest() {
    use crate::store::StepStatus::{Cancelled, Sent};
    let world = World::new(LADDER, vec![], vec![]).await;
    world.receive("INV-1", 1).await;
    world.at(DUE_DAY_10 - 3 * DAY).await;
    world
        .dispatcher
        .close_invoice("acme", "INV-1", Status::Paid, &Correlation::default())
        .await
        .unwrap();
    assert_eq!(world.at(DUE_DAY_10).await, 0);
    assert_eq!(world.at(DUE_DAY_10 + 3 * DAY).await, 0);
    assert_eq!(
        world.step_statuses("INV-1").await,
        [
            ("upcoming".into(), Sent),
            ("due".into(), Cancelled),
            ("overdue".into(), Cancelled)
        ]
    );
    let names: Vec<EventName> = world.journey("INV-1").await.into_iter().map(|e| e.0).collect();
    assert_eq!(
        names,
        [EventName::Sent, EventName::Sent, EventName::Paid],
        "no journey_completed"
    );
}

/// Paid in a way the store's cancellation did not see (the step was
/// already claimed): the check right before the send still stops it.
#[tokio::test]
async fn a_step_claimed_before_the_payment_sends_nothing() {
    let world = World::new(LADDER, vec![], vec![]).await;
    world.receive("INV-1", 1).await;
    world.clock.set_ms(DUE_DAY_10 - 3 * DAY);
    let due = world
        .store
        .claim_due_steps(world.clock.now_ms(), 60_000, 10)
        .await
        .unwrap();
    world
        .dispatcher
        .close_invoice("acme", "INV-1", Status::Paid, &Correlation::default())
        .await
        .unwrap();
    world.dispatcher.run_step(&due[0]).await.unwrap();
    assert_eq!(world.email.load(Ordering::SeqCst), 0);
    let steps = world.store.steps("acme", "INV-1").await.unwrap();
    assert_eq!(steps[0].status, crate::store::StepStatus::Cancelled);
}

#[tokio::test]
async fn a_new_revision_replaces_the_ladder_with_its_own() {
    let world = World::new(LADDER, vec![], vec![]).await;
    world.receive("INV-1", 1).await;
    world.at(DUE_DAY_10 - 3 * DAY).await;
    world.receive("INV-1", 2).await;
    world.at(DUE_DAY_10).await;
    let steps = world.store.steps("acme", "INV-1").await.unwrap();
    let shape: Vec<(i64, &str, crate::store::StepStatus)> =
        steps.iter().map(|s| (s.revision, s.name.as_str(), s.status)).collect();
    use crate::store::StepStatus::{Cancelled, Planned, Sent, Skipped};
    assert_eq!(
        shape,
        [
            (1, "upcoming", Sent),
            (1, "due", Cancelled),
            (1, "overdue", Cancelled),
            // Revision 2 arrived after its -3d time: skipped, the rest its own.
            (2, "upcoming", Skipped),
            (2, "due", Sent),
            (2, "overdue", Planned),
        ]
    );
    let due_step = world.events("INV-1").await;
    let last = due_step.last().unwrap();
    assert_eq!(
        (last.event, last.revision, last.step.as_deref()),
        (EventName::Sent, Some(2), Some("due"))
    );
}

#[tokio::test]
async fn an_invoice_that_arrives_late_skips_the_steps_already_past() {
    let world = World::new(LADDER, vec![], vec![]).await;
    world.clock.set_ms(DUE_DAY_10 + HOUR);
    world.receive("INV-1", 1).await;
    let steps = world.store.steps("acme", "INV-1").await.unwrap();
    use crate::store::StepStatus::{Planned, Skipped};
    assert_eq!(
        steps.iter().map(|s| s.status).collect::<Vec<_>>(),
        [Skipped, Skipped, Planned]
    );
    assert_eq!(steps[0].detail.as_deref(), Some(crate::journey::PAST_AT_INTAKE));
}

/// Down for a week: of the steps that came due meanwhile only the latest
/// goes out, not three reminders at once.
#[tokio::test]
async fn after_an_outage_only_the_latest_due_step_goes_out() {
    let world = World::new(LADDER, vec![], vec![]).await;
    world.receive("INV-1", 1).await;
    world.at(DUE_DAY_10 + 3 * DAY + HOUR).await;
    let steps: Vec<_> = world.step_statuses("INV-1").await.into_iter().map(|s| s.1).collect();
    use crate::store::StepStatus::{Sent, Skipped};
    assert_eq!(steps, [Skipped, Skipped, Sent]);
    let names: Vec<Option<String>> = world.journey("INV-1").await.into_iter().map(|e| e.2).collect();
    assert_eq!(
        names,
        [
            None,
            Some("overdue".into()),
            Some("overdue".into()),
            Some("overdue".into())
        ]
    );
}

#[tokio::test]
async fn quiet_hours_hold_a_step_until_the_window_opens() {
    let routing = r#"default = ["sms"]
quiet_hours = "21:00-08:00"
journey = "late"

[journeys.late]
send_at = "22:00"
steps = [{ name = "due", due = "0d" }]"#;
    let world = World::new(routing, vec![], vec![]).await;
    world.receive("INV-1", 1).await;
    let due_day_22 = DUE_DAY_10 + 12 * HOUR;
    assert_eq!(world.at(due_day_22).await, 1);
    assert_eq!(
        world.sms.load(Ordering::SeqCst),
        1,
        "only the first request: the step waits"
    );
    let next_morning = due_day_22 + 10 * HOUR;
    assert_eq!(world.store.next_step().await.unwrap(), Some(next_morning));
    assert_eq!(world.at(next_morning - 1).await, 0);
    assert_eq!(world.at(next_morning).await, 1);
    assert_eq!(world.sms.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_step_placed_after_the_previous_message_counts_from_when_it_went_out() {
    let routing = r#"default = ["sms"]
quiet_hours = "21:00-08:00"
journey = "nudges"

[journeys.nudges]
steps = [{ name = "nudge", after = "2h" }, { name = "again", after = "1d" }]"#;
    let world = World::new(routing, vec![], vec![]).await;
    // Received at 20:00: the first request goes out now, the nudge at 22:00
    // is held by quiet hours until 08:00, and "again" counts from then.
    world.clock.set_ms(NOON + 8 * HOUR);
    world.receive("INV-1", 1).await;
    assert_eq!(world.at(NOON + 10 * HOUR).await, 1);
    assert_eq!(world.sms.load(Ordering::SeqCst), 1);
    let eight = NOON + 20 * HOUR;
    assert_eq!(world.at(eight).await, 1);
    assert_eq!(world.sms.load(Ordering::SeqCst), 2);
    // Planned at intake for 22:00 + 1 day; the nudge went out at 08:00.
    assert_eq!(
        world.at(NOON + 10 * HOUR + DAY).await,
        1,
        "claimed, found early, put back"
    );
    assert_eq!(world.sms.load(Ordering::SeqCst), 2);
    assert_eq!(world.store.next_step().await.unwrap(), Some(eight + DAY));
    assert_eq!(world.at(eight + DAY).await, 1);
    assert_eq!(world.sms.load(Ordering::SeqCst), 3);
}

const ESCALATING: &str = r#"default = ["sms", "email"]
journey = "chase"

[journeys.chase]
escalate_after = "24h"
steps = [{ name = "nudge", due = "+5d", channels = ["sms", "email"] }]"#;

impl World {
    /// A person opens the pay link of the `n`th SMS message.
    async fn open_sms_link(&self, n: usize) {
        let token = self.sms_tokens.lock().unwrap()[n].clone();
        let hash = crate::paylink::token_hash(&token);
        let record = self.store.paylink(&hash).await.unwrap().expect("the link exists");
        let clicked = Event::clicked(&record.key, &record.correlation, record.channel);
        self.store.record_click(&hash, &clicked).await.unwrap();
    }
}

#[tokio::test]
async fn a_request_nobody_opened_in_time_goes_out_on_the_next_channel() {
    let world = World::new(ESCALATING, vec![], vec![]).await;
    world.receive("INV-1", 1).await;
    assert_eq!(world.at(NOON + 24 * HOUR - 1).await, 0);
    assert_eq!(world.at(NOON + 24 * HOUR).await, 1);
    let journey = world.journey("INV-1").await;
    assert_eq!(
        journey,
        [
            sent(ChannelName::Sms, None),
            (EventName::Escalated, Some(ChannelName::Email), None),
            sent(ChannelName::Email, None),
        ]
    );
    let escalated = &world.events("INV-1").await[2];
    assert_eq!(
        escalated.detail.as_deref(),
        Some("the sms payment request was not opened within 1day; sending it by email")
    );
    // Email was the last channel: nothing further to escalate to.
    let steps = world.store.steps("acme", "INV-1").await.unwrap();
    assert_eq!(
        (steps[0].name.as_str(), steps[0].status),
        ("request", crate::store::StepStatus::Sent)
    );
}

#[tokio::test]
async fn a_request_a_person_opened_is_not_escalated() {
    let world = World::new(ESCALATING, vec![], vec![]).await;
    world.receive("INV-1", 1).await;
    world.clock.set_ms(NOON + HOUR);
    world.open_sms_link(0).await;
    assert_eq!(world.at(NOON + 24 * HOUR).await, 1);
    assert_eq!(world.email.load(Ordering::SeqCst), 0, "opened: no escalation");
    let names: Vec<EventName> = world.journey("INV-1").await.into_iter().map(|e| e.0).collect();
    assert_eq!(names, [EventName::Sent, EventName::Clicked]);
}

#[tokio::test]
async fn a_reminder_nobody_opened_escalates_with_its_step_and_then_the_journey_completes() {
    let world = World::new(ESCALATING, vec![], vec![]).await;
    world.receive("INV-1", 1).await;
    world.clock.set_ms(NOON + HOUR);
    world.open_sms_link(0).await;
    world.at(NOON + 24 * HOUR).await;
    let nudge = NOON + 10 * DAY - 2 * HOUR; // 2026-11-30T10:00Z: +5d from 2026-11-25? no: due 12-01 + 5d
    let _ = nudge;
    let nudge = DUE_DAY_10 + 5 * DAY;
    assert_eq!(world.at(nudge).await, 1);
    assert_eq!(world.sms.load(Ordering::SeqCst), 2);
    assert_eq!(world.at(nudge + 24 * HOUR).await, 1);
    let journey = world.journey("INV-1").await;
    let nudge_step = Some("nudge".to_owned());
    assert_eq!(
        journey[2..],
        [
            (EventName::Sent, Some(ChannelName::Sms), nudge_step.clone()),
            (EventName::Escalated, Some(ChannelName::Email), nudge_step.clone()),
            (EventName::Sent, Some(ChannelName::Email), nudge_step.clone()),
            (EventName::JourneyCompleted, None, nudge_step),
        ]
    );
}

#[tokio::test]
async fn the_daily_cap_delays_reminders_to_the_next_day_and_never_first_requests() {
    let routing = r#"default = ["sms"]
max_messages_per_customer_per_day = 1
journey = "one"

[journeys.one]
send_at = "10:00"
steps = [{ name = "upcoming", due = "-3d" }]"#;
    let world = World::new(routing, vec![], vec![]).await;
    // Three invoices of one customer on one day: every first request goes.
    for invoice in ["INV-1", "INV-2", "INV-3"] {
        world.receive(invoice, 1).await;
    }
    assert_eq!(world.sms.load(Ordering::SeqCst), 3, "first requests are never delayed");

    // Their reminders all fall due at 10:00 on 11-28: one a day goes.
    let day = DUE_DAY_10 - 3 * DAY;
    assert_eq!(world.at(day).await, 3);
    assert_eq!(world.sms.load(Ordering::SeqCst), 4);
    assert_eq!(world.store.next_step().await.unwrap(), Some(day + DAY));
    let waiting = world.store.steps("acme", "INV-2").await.unwrap();
    assert!(
        waiting[0].detail.as_deref().is_some_and(|d| d.contains("daily cap")),
        "{waiting:?}"
    );
    assert_eq!(world.at(day + DAY).await, 2);
    assert_eq!(world.sms.load(Ordering::SeqCst), 5);
    assert_eq!(world.at(day + 2 * DAY).await, 1);
    assert_eq!(world.sms.load(Ordering::SeqCst), 6, "waiting, never dropped");
    let sent: usize = {
        let mut n = 0;
        for invoice in ["INV-1", "INV-2", "INV-3"] {
            n += world.journey(invoice).await.iter().filter(|e| e.2.is_some()).count();
        }
        n
    };
    assert_eq!(sent, 3 + 3, "each reminder sent once, each completing its journey");
}

const ONE_SMS_STEP: &str = r#"default = ["sms"]
retry_for = "10m"
journey = "one"

[journeys.one]
send_at = "10:00"
steps = [{ name = "upcoming", due = "-3d" }]"#;

fn transient_failures(n: usize) -> Vec<Reply> {
    (0..n).map(|_| Reply::Fail(transient())).collect()
}

#[tokio::test]
async fn a_steps_last_channel_failing_for_now_is_tried_again_later_then_sent() {
    let tries = RetryPolicy::STANDARD.tries_per_channel as usize;
    // The first request goes; the step's first two runs fail every try.
    let mut replies = vec![Reply::Accept];
    replies.extend(transient_failures(2 * tries));
    let world = World::new(ONE_SMS_STEP, replies, vec![]).await;
    world.receive("INV-1", 1).await;
    let day = DUE_DAY_10 - 3 * DAY;
    assert_eq!(world.at(day).await, 1);
    assert_eq!(
        world.store.next_step().await.unwrap(),
        Some(day + 60_000),
        "a minute later"
    );
    assert_eq!(world.at(day + 60_000).await, 1);
    assert_eq!(
        world.store.next_step().await.unwrap(),
        Some(day + 3 * 60_000),
        "then two"
    );
    assert_eq!(world.at(day + 3 * 60_000).await, 1);
    let names: Vec<EventName> = world.journey("INV-1").await.into_iter().map(|e| e.0).collect();
    assert_eq!(
        names,
        [EventName::Sent, EventName::Sent, EventName::JourneyCompleted],
        "no channel_failed for failures tried again"
    );
    let attempts: Vec<AttemptState> = world.attempts("INV-1").await.into_iter().map(|a| a.1).collect();
    assert_eq!(
        attempts,
        [
            AttemptState::Sent,
            AttemptState::Retrying,
            AttemptState::Retrying,
            AttemptState::Sent
        ]
    );
    let sent = world.events("INV-1").await;
    assert_eq!(
        sent.iter()
            .filter(|e| e.detail.as_deref().is_some_and(|d| d.contains("twice")))
            .count(),
        0
    );
}

#[tokio::test]
async fn a_step_whose_channel_keeps_failing_gives_up_after_retry_for() {
    let tries = RetryPolicy::STANDARD.tries_per_channel as usize;
    let mut replies = vec![Reply::Accept];
    replies.extend(transient_failures(100 * tries));
    let world = World::new(ONE_SMS_STEP, replies, vec![]).await;
    world.receive("INV-1", 1).await;
    let mut at = DUE_DAY_10 - 3 * DAY;
    let mut runs = 0;
    while world.at(at).await == 1 {
        runs += 1;
        match world.store.next_step().await.unwrap() {
            Some(next) => at = next,
            None => break,
        }
    }
    // Runs at 0, 1, 3, 7 and 15 minutes after the first failure: the one
    // at 15 is past the 10 minutes of retry_for, and its failure is final.
    assert_eq!(runs, 5, "tried again at growing pauses until retry_for ran out");
    let names: Vec<EventName> = world.journey("INV-1").await.into_iter().map(|e| e.0).collect();
    assert_eq!(
        names,
        [
            EventName::Sent,
            EventName::ChannelFailed,
            EventName::Exhausted,
            EventName::JourneyCompleted
        ]
    );
    let steps = world.store.steps("acme", "INV-1").await.unwrap();
    assert_eq!(steps[0].status, crate::store::StepStatus::Failed);
}

#[tokio::test]
async fn the_accepted_event_names_the_journey_and_its_reminders() {
    let world = World::new(LADDER, vec![], vec![]).await;
    world.clock.set_ms(DUE_DAY_10 - 3 * DAY + HOUR);
    world.receive("INV-1", 1).await;
    let accepted = &world.events("INV-1").await[0];
    assert_eq!(
        accepted.detail.as_deref(),
        Some("routed by default: sms, email (fallback); journey ladder: 2 reminder(s) planned, 1 skipped (their time had passed)")
    );
}

/// Steps go in order: one placed after a step that quiet hours hold waits
/// for it, counts from it, and the journey completes once.
#[tokio::test]
async fn a_step_waits_for_the_held_step_before_it_and_counts_from_it() {
    let routing = r#"default = ["email"]
quiet_hours = "21:00-08:00"
journey = "two"

[journeys.two]
steps = [{ name = "one", after = "1h", channels = ["sms"] }, { name = "two", after = "1h", channels = ["email"] }]"#;
    let world = World::new(routing, vec![], vec![]).await;
    let evening = NOON + 8 * HOUR + HOUR / 2; // 20:30
    world.clock.set_ms(evening);
    world.receive("INV-1", 1).await;
    assert_eq!(world.at(evening + HOUR).await, 1, "one: held until 08:00");
    assert_eq!(world.at(evening + 2 * HOUR).await, 1, "two: waits for one");
    assert_eq!(world.email.load(Ordering::SeqCst), 1, "only the first request so far");
    let eight = NOON + 20 * HOUR;
    let mut at = world.store.next_step().await.unwrap().unwrap();
    assert!(at >= eight, "nothing before the window opens");
    while world.at(at).await > 0 {
        match world.store.next_step().await.unwrap() {
            Some(next) => at = next,
            None => break,
        }
    }
    let journey = world.journey("INV-1").await;
    assert_eq!(
        journey,
        [
            sent(ChannelName::Email, None),
            sent(ChannelName::Sms, Some("one")),
            sent(ChannelName::Email, Some("two")),
            (EventName::JourneyCompleted, None, Some("two".into())),
        ]
    );
    let attempts = world.store.invoice(&key("INV-1")).await.unwrap().unwrap().attempts;
    let one = attempts[1].finished_ms.unwrap();
    let two = attempts[2].finished_ms.unwrap();
    assert_eq!(one, eight, "one goes when the window opens");
    assert!(two >= one + HOUR, "two counts its hour from one: {}", two - one);
}

#[tokio::test]
async fn a_reminders_delivery_report_names_its_step() {
    let world = World::new(LADDER, vec![], vec![]).await;
    world.receive("INV-1", 1).await;
    world.at(DUE_DAY_10).await;
    // The request was sms-1; the due-day reminder went by SMS too.
    let report = StatusReport {
        provider_message_id: "sms-2".into(),
        status: DeliveryStatus::Delivered,
    };
    world.dispatcher.handle_report(ChannelName::Sms, report).await.unwrap();
    let delivered = world.events("INV-1").await.pop().unwrap();
    assert_eq!(delivered.event, EventName::Delivered);
    assert_eq!(delivered.step.as_deref(), Some("due"));
}

// ---------------------------------------------------------------------------
// One message per debtor (`combine`)

const COMBINE: &str = r#"combine = "10m""#;
const SMS_AND_EMAIL: &str = r#"default = ["sms", "email"]
default_strategy = "all""#;
const MINUTE: i64 = 60_000;

impl World {
    /// Sends the groups due now, as the scheduler does; how many it claimed.
    async fn send_due_groups(&self) -> usize {
        let groups = self
            .store
            .claim_due_groups(self.clock.now_ms(), super::CLAIM_IDLE.as_millis() as i64, 100)
            .await
            .unwrap();
        for group in &groups {
            self.dispatcher.send_group(group).await.unwrap();
        }
        groups.len()
    }
}

#[tokio::test]
async fn invoices_of_one_customer_within_the_window_go_out_as_one_message_per_channel() {
    let world = World::with_biller(SMS_AND_EMAIL, COMBINE, vec![], vec![]).await;
    for i in 1..=5 {
        world.clock.set_ms(NOON + (i - 1) * MINUTE);
        assert_eq!(world.receive(&format!("INV-{i}"), 1).await, Disposition::Ack);
    }
    // Acked and stored; nothing sent while the window is open.
    assert_eq!(world.sms.load(Ordering::SeqCst) + world.email.load(Ordering::SeqCst), 0);
    assert_eq!(world.status("INV-1").await, Status::Accepted);
    let accepted = &world.events("INV-5").await[0];
    assert_eq!(accepted.event, EventName::Accepted);
    let detail = accepted.detail.as_deref().unwrap_or_default();
    assert!(
        detail.contains(&format!(
            "waits until {} to be combined",
            crate::events::rfc3339_ms(NOON + 10 * MINUTE)
        )),
        "the window counts from the group's first invoice: {detail}"
    );
    // Paid while it waits: it leaves the list.
    world
        .dispatcher
        .close_invoice("acme", "INV-3", Status::Paid, &Correlation::default())
        .await
        .unwrap();
    assert_eq!(world.send_due_groups().await, 0, "the window is still open");

    world.clock.set_ms(NOON + 10 * MINUTE);
    assert_eq!(world.send_due_groups().await, 1);
    assert_eq!(
        world.sms.load(Ordering::SeqCst),
        1,
        "one SMS for the four open invoices"
    );
    assert_eq!(world.email.load(Ordering::SeqCst), 1, "one email");
    for id in ["INV-1", "INV-2", "INV-4", "INV-5"] {
        assert_eq!(world.status(id).await, Status::Sent, "{id}");
        let sent: Vec<(Option<ChannelName>, Option<String>)> = world
            .events(id)
            .await
            .into_iter()
            .filter(|e| e.event == EventName::Sent)
            .map(|e| (e.channel, e.provider_message_id))
            .collect();
        assert_eq!(
            sent,
            [
                (Some(ChannelName::Sms), Some("sms-1".to_owned())),
                (Some(ChannelName::Email), Some("email-1".to_owned()))
            ],
            "{id} has its own sent events, with the message's provider id"
        );
    }
    assert_eq!(world.status("INV-3").await, Status::Paid);
    assert!(!world.event_names("INV-3").await.contains(&EventName::Sent));

    // The one link lists the four; the group is done.
    let token = world.sms_tokens.lock().unwrap()[0].clone();
    let link = world
        .store
        .combined_link(&crate::paylink::token_hash(&token))
        .await
        .unwrap()
        .expect("the combined link is stored");
    let listed: Vec<&str> = link.invoices.iter().map(|i| i.key.invoice_id.as_str()).collect();
    assert_eq!(listed, ["INV-1", "INV-2", "INV-4", "INV-5"]);
    world.clock.set_ms(NOON + 60 * MINUTE);
    assert_eq!(world.send_due_groups().await, 0);
    assert_eq!(world.sms.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn an_invoice_alone_when_the_window_closes_goes_out_as_an_ordinary_request() {
    let world = World::with_biller(SMS_THEN_EMAIL, COMBINE, vec![], vec![]).await;
    assert_eq!(world.receive("INV-1", 1).await, Disposition::Ack);
    world.clock.set_ms(NOON + 10 * MINUTE);
    assert_eq!(world.send_due_groups().await, 1);
    assert_eq!(world.status("INV-1").await, Status::Sent);
    assert_eq!(world.attempts("INV-1").await, [(ChannelName::Sms, AttemptState::Sent)]);
    let token = world.sms_tokens.lock().unwrap()[0].clone();
    let hash = crate::paylink::token_hash(&token);
    assert!(
        world.store.paylink(&hash).await.unwrap().is_some(),
        "its own single link"
    );
    assert!(world.store.combined_link(&hash).await.unwrap().is_none());
}

#[tokio::test]
async fn two_customers_never_mix_and_two_currencies_never_combine() {
    let world = World::with_biller(SMS_THEN_EMAIL, COMBINE, vec![], vec![]).await;
    let requests = [
        ("A-1", "C-A", "MXN"),
        ("A-2", "C-A", "MXN"),
        ("B-1", "C-B", "MXN"),
        ("B-2", "C-B", "MXN"),
        ("U-1", "C-A", "USD"),
        ("U-2", "C-A", "USD"),
    ];
    for (id, customer, currency) in requests {
        let answer = world.receive_for(id, 1, Some(customer), currency, "10.00").await;
        assert_eq!(answer, Disposition::Ack);
    }
    world.clock.set_ms(NOON + 10 * MINUTE);
    assert_eq!(world.send_due_groups().await, 3);
    assert_eq!(
        world.sms.load(Ordering::SeqCst),
        3,
        "one message per customer and currency"
    );
    let tokens = world.sms_tokens.lock().unwrap().clone();
    let mut groups = Vec::new();
    for token in tokens {
        let link = world
            .store
            .combined_link(&crate::paylink::token_hash(&token))
            .await
            .unwrap()
            .expect("combined");
        let mut ids: Vec<String> = link.invoices.iter().map(|i| i.key.invoice_id.clone()).collect();
        ids.sort();
        groups.push(ids.join(","));
    }
    groups.sort();
    assert_eq!(groups, ["A-1,A-2", "B-1,B-2", "U-1,U-2"]);
}

#[tokio::test]
async fn with_combine_off_an_invoice_goes_out_at_once() {
    let world = World::new(SMS_THEN_EMAIL, vec![], vec![]).await;
    assert!(!world.dispatcher.combines());
    world.receive("INV-1", 1).await;
    world.receive("INV-2", 1).await;
    assert_eq!(world.sms.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_combined_message_every_channel_refuses_exhausts_each_invoice() {
    let world = World::with_biller(
        SMS_THEN_EMAIL,
        COMBINE,
        vec![Reply::Fail(permanent())],
        vec![Reply::Fail(permanent())],
    )
    .await;
    world.receive("INV-1", 1).await;
    world.receive("INV-2", 1).await;
    world.clock.set_ms(NOON + 10 * MINUTE);
    world.send_due_groups().await;
    assert_eq!(
        (world.sms.load(Ordering::SeqCst), world.email.load(Ordering::SeqCst)),
        (1, 1)
    );
    for id in ["INV-1", "INV-2"] {
        assert_eq!(world.status(id).await, Status::Exhausted, "{id}");
        assert_eq!(
            world.event_names(id).await,
            [
                EventName::Accepted,
                EventName::ChannelFailed,
                EventName::ChannelFailed,
                EventName::Exhausted
            ],
            "{id}"
        );
    }
}

#[tokio::test]
async fn a_delivery_report_of_a_combined_message_reaches_every_invoice_in_it() {
    let world = World::with_biller(SMS_THEN_EMAIL, COMBINE, vec![], vec![]).await;
    world.receive("INV-1", 1).await;
    world.receive("INV-2", 1).await;
    world.clock.set_ms(NOON + 10 * MINUTE);
    world.send_due_groups().await;
    let report = StatusReport {
        provider_message_id: "sms-1".into(),
        status: DeliveryStatus::Delivered,
    };
    world.dispatcher.handle_report(ChannelName::Sms, report).await.unwrap();
    for id in ["INV-1", "INV-2"] {
        assert_eq!(
            world.event_names(id).await,
            [EventName::Accepted, EventName::Sent, EventName::Delivered],
            "{id}"
        );
    }
}

#[tokio::test]
async fn quiet_hours_hold_a_combined_message_until_the_window_opens() {
    let routing = "default = [\"sms\"]\nquiet_hours = \"21:00-08:00\"";
    let world = World::with_biller(routing, COMBINE, vec![], vec![]).await;
    let late_evening = NOON + 11 * HOUR;
    let next_morning = NOON + 20 * HOUR;
    world.clock.set_ms(late_evening);
    world.receive("INV-1", 1).await;
    world.receive("INV-2", 1).await;
    world.clock.set_ms(late_evening + 10 * MINUTE);
    assert_eq!(world.send_due_groups().await, 1);
    assert_eq!(world.sms.load(Ordering::SeqCst), 0, "held by quiet hours");
    assert_eq!(world.store.next_group().await.unwrap(), Some(next_morning));
    // A third invoice now opens a group of its own: the held one is closed.
    world.receive("INV-3", 1).await;
    // Alone when its window closes: an ordinary request, held as one.
    world.clock.set_ms(next_morning - 1);
    assert_eq!(world.send_due_groups().await, 1);
    assert_eq!(world.sms.load(Ordering::SeqCst), 0);
    assert_eq!(world.store.next_hold().await.unwrap(), Some(next_morning));

    world.clock.set_ms(next_morning);
    assert_eq!(world.send_due_groups().await, 1, "the held pair");
    let held = world.store.claim_due_holds(next_morning, 10).await.unwrap();
    assert_eq!(held, [key("INV-3")]);
    world.dispatcher.resume(&held[0]).await.unwrap();
    assert_eq!(
        world.sms.load(Ordering::SeqCst),
        2,
        "the held pair, and the third alone"
    );
    for id in ["INV-1", "INV-2", "INV-3"] {
        assert_eq!(world.status(id).await, Status::Sent, "{id}");
    }
    let sent_with = |events: Vec<Event>| {
        events
            .into_iter()
            .find(|e| e.event == EventName::Sent)
            .and_then(|e| e.provider_message_id)
    };
    assert_eq!(
        sent_with(world.events("INV-1").await),
        sent_with(world.events("INV-2").await)
    );
    assert_ne!(
        sent_with(world.events("INV-1").await),
        sent_with(world.events("INV-3").await)
    );
}

#[tokio::test]
async fn a_combined_message_refused_on_one_channel_falls_back_to_the_next_for_all() {
    let world = World::with_biller(SMS_THEN_EMAIL, COMBINE, vec![Reply::Fail(permanent())], vec![]).await;
    world.receive("INV-1", 1).await;
    world.receive("INV-2", 1).await;
    world.clock.set_ms(NOON + 10 * MINUTE);
    world.send_due_groups().await;
    assert_eq!(
        (world.sms.load(Ordering::SeqCst), world.email.load(Ordering::SeqCst)),
        (1, 1)
    );
    for id in ["INV-1", "INV-2"] {
        assert_eq!(world.status(id).await, Status::Sent, "{id}");
        assert_eq!(
            world.attempts(id).await,
            [
                (ChannelName::Sms, AttemptState::Failed),
                (ChannelName::Email, AttemptState::Sent)
            ],
            "{id}"
        );
    }
}

#[tokio::test]
async fn a_redelivered_request_of_a_waiting_invoice_is_acked_and_sent_once_with_its_group() {
    let world = World::with_biller(SMS_THEN_EMAIL, COMBINE, vec![], vec![]).await;
    world.receive("INV-1", 1).await;
    world.receive("INV-2", 1).await;
    assert_eq!(
        world.receive("INV-2", 1).await,
        Disposition::Ack,
        "a redelivery while it waits"
    );
    world.clock.set_ms(NOON + 10 * MINUTE);
    assert_eq!(world.send_due_groups().await, 1);
    assert_eq!(world.sms.load(Ordering::SeqCst), 1);
    assert_eq!(world.receive("INV-2", 1).await, Disposition::Ack);
    assert_eq!(world.sms.load(Ordering::SeqCst), 1, "a later copy is a duplicate");
    assert_eq!(
        world.event_names("INV-2").await,
        [EventName::Accepted, EventName::Sent, EventName::Duplicate]
    );
}

// ---------------------------------------------------------------------------
// Reminders of one customer due the same day go together

/// One SMS reminder three days before the due date, at 10:00.
const ONE_REMINDER: &str = r#"default = ["sms"]
journey = "one"

[journeys.one]
send_at = "10:00"
steps = [{ name = "upcoming", due = "-3d" }]"#;

impl World {
    /// Receives the requests (id, customer, currency, due date) and sends
    /// their first requests (combined where they can be).
    async fn first_requests(&self, requests: &[(&str, &str, &str, &str)]) {
        for (id, customer, currency, due) in requests {
            let answer = self.receive_due(id, Some(customer), currency, "10.00", due).await;
            assert_eq!(answer, Disposition::Ack, "{id}");
        }
        self.clock.set_ms(NOON + 10 * MINUTE);
        self.send_due_groups().await;
        for (id, ..) in requests {
            assert_eq!(self.status(id).await, Status::Sent, "{id}");
        }
    }

    /// The invoices the combined link of the `n`th SMS lists; `None`: an
    /// ordinary link.
    async fn sms_lists(&self, n: usize) -> Option<Vec<String>> {
        let token = self.sms_tokens.lock().unwrap()[n].clone();
        let link = self
            .store
            .combined_link(&crate::paylink::token_hash(&token))
            .await
            .unwrap()?;
        Some(link.invoices.iter().map(|i| i.key.invoice_id.clone()).collect())
    }

    /// The invoice's `invoice.sent` events of step `step`: provider id each.
    async fn sent_of_step(&self, invoice_id: &str, step: &str) -> Vec<Option<String>> {
        self.events(invoice_id)
            .await
            .into_iter()
            .filter(|e| e.event == EventName::Sent && e.step.as_deref() == Some(step))
            .map(|e| e.provider_message_id)
            .collect()
    }
}

#[tokio::test]
async fn reminders_of_one_customer_due_the_same_day_go_out_as_one_message() {
    use crate::store::StepStatus::{Cancelled, Sent};
    let world = World::with_biller(ONE_REMINDER, COMBINE, vec![], vec![]).await;
    world
        .first_requests(&[
            ("A-1", "C-A", "MXN", "2026-12-01"),
            ("A-2", "C-A", "MXN", "2026-12-01"),
            ("A-3", "C-A", "MXN", "2026-12-01"),
            ("A-4", "C-A", "MXN", "2026-12-01"),
        ])
        .await;
    assert_eq!(world.sms.load(Ordering::SeqCst), 1, "one combined first request");
    // Paid before the reminders: it leaves them.
    world
        .dispatcher
        .close_invoice("acme", "A-4", Status::Paid, &Correlation::default())
        .await
        .unwrap();

    assert_eq!(world.at(DUE_DAY_10 - 3 * DAY).await, 3);
    assert_eq!(
        world.sms.load(Ordering::SeqCst),
        2,
        "one reminder for the three open invoices"
    );
    assert_eq!(
        world.sms_lists(1).await.expect("a combined link"),
        ["A-1", "A-2", "A-3"]
    );
    for id in ["A-1", "A-2", "A-3"] {
        assert_eq!(
            world.sent_of_step(id, "upcoming").await,
            [Some("sms-2".to_owned())],
            "{id} has its own sent event of its step, with the message's provider id"
        );
        assert_eq!(world.step_statuses(id).await, [("upcoming".into(), Sent)], "{id}");
        assert!(
            world.event_names(id).await.contains(&EventName::JourneyCompleted),
            "{id} completes its own journey"
        );
        let steps = world.store.steps("acme", id).await.unwrap();
        assert!(
            steps[0].detail.as_deref().is_some_and(|d| d.contains("combined")),
            "{steps:?}"
        );
    }
    assert_eq!(world.step_statuses("A-4").await, [("upcoming".into(), Cancelled)]);
    // One message counts once toward the daily cap.
    let customer = world
        .store
        .invoice(&key("A-1"))
        .await
        .unwrap()
        .unwrap()
        .invoice
        .customer_key();
    assert_eq!(
        world
            .store
            .messages_to_customer(&customer, DUE_DAY_10 - 3 * DAY - HOUR)
            .await
            .unwrap(),
        1
    );
    assert_eq!(world.at(DUE_DAY_10 + 30 * DAY).await, 0, "nothing more");
}

#[tokio::test]
async fn reminders_of_two_customers_or_two_currencies_never_mix() {
    let world = World::with_biller(ONE_REMINDER, COMBINE, vec![], vec![]).await;
    world
        .first_requests(&[
            ("A-1", "C-A", "MXN", "2026-12-01"),
            ("A-2", "C-A", "MXN", "2026-12-01"),
            ("B-1", "C-B", "MXN", "2026-12-01"),
            ("B-2", "C-B", "MXN", "2026-12-01"),
            ("U-1", "C-A", "USD", "2026-12-01"),
        ])
        .await;
    let before = world.sms.load(Ordering::SeqCst);
    assert_eq!(world.at(DUE_DAY_10 - 3 * DAY).await, 5);
    assert_eq!(
        world.sms.load(Ordering::SeqCst) - before,
        3,
        "one per customer and currency"
    );
    let mut lists = Vec::new();
    for n in before as usize..before as usize + 3 {
        lists.push(world.sms_lists(n).await.map(|l| l.join(",")));
    }
    lists.sort();
    assert_eq!(
        lists,
        [None, Some("A-1,A-2".to_owned()), Some("B-1,B-2".to_owned())],
        "U-1, alone in its currency, goes as an ordinary reminder"
    );
    assert_eq!(world.sent_of_step("U-1", "upcoming").await.len(), 1);
}

#[tokio::test]
async fn reminders_due_on_different_days_are_not_combined() {
    let world = World::with_biller(ONE_REMINDER, COMBINE, vec![], vec![]).await;
    world
        .first_requests(&[("A-1", "C-A", "MXN", "2026-12-01"), ("A-2", "C-A", "MXN", "2026-12-02")])
        .await;
    let before = world.sms.load(Ordering::SeqCst) as usize;
    assert_eq!(world.at(DUE_DAY_10 - 3 * DAY).await, 1);
    assert_eq!(world.sms.load(Ordering::SeqCst) as usize, before + 1);
    assert_eq!(world.sms_lists(before).await, None, "A-1 alone, an ordinary reminder");
    assert!(
        world.sent_of_step("A-2", "upcoming").await.is_empty(),
        "A-2's is tomorrow"
    );
    assert_eq!(world.at(DUE_DAY_10 - 2 * DAY).await, 1);
    assert_eq!(world.sms.load(Ordering::SeqCst) as usize, before + 2);
    assert_eq!(world.sent_of_step("A-2", "upcoming").await.len(), 1);
}

#[tokio::test]
async fn a_combined_reminder_refused_on_one_channel_falls_back_to_the_next_for_all() {
    let routing = r#"default = ["sms", "email"]
journey = "one"

[journeys.one]
send_at = "10:00"
steps = [{ name = "upcoming", due = "-3d" }]"#;
    // The first requests' SMS goes; the reminder's is refused.
    let replies = vec![Reply::Accept, Reply::Fail(permanent())];
    let world = World::with_biller(routing, COMBINE, replies, vec![]).await;
    world
        .first_requests(&[("A-1", "C-A", "MXN", "2026-12-01"), ("A-2", "C-A", "MXN", "2026-12-01")])
        .await;
    assert_eq!(world.at(DUE_DAY_10 - 3 * DAY).await, 2);
    assert_eq!(world.sms.load(Ordering::SeqCst), 2);
    assert_eq!(world.email.load(Ordering::SeqCst), 1, "one email for both");
    for id in ["A-1", "A-2"] {
        let journey = world.journey(id).await;
        let reminder: Vec<_> = journey.iter().filter(|e| e.2.is_some()).cloned().collect();
        assert_eq!(
            reminder,
            [
                (
                    EventName::ChannelFailed,
                    Some(ChannelName::Sms),
                    Some("upcoming".to_owned())
                ),
                sent(ChannelName::Email, Some("upcoming")),
                (EventName::JourneyCompleted, None, Some("upcoming".to_owned())),
            ],
            "{id}"
        );
    }
}

#[tokio::test]
async fn quiet_hours_hold_a_combined_reminder_until_the_window_opens() {
    use crate::store::StepStatus::{Planned, Sent};
    let routing = r#"default = ["sms"]
quiet_hours = "21:00-08:00"
journey = "late"

[journeys.late]
send_at = "22:00"
steps = [{ name = "due", due = "0d" }]"#;
    let world = World::with_biller(routing, COMBINE, vec![], vec![]).await;
    world
        .first_requests(&[("A-1", "C-A", "MXN", "2026-12-01"), ("A-2", "C-A", "MXN", "2026-12-01")])
        .await;
    let due_day_22 = DUE_DAY_10 + 12 * HOUR;
    assert_eq!(world.at(due_day_22).await, 2);
    assert_eq!(world.sms.load(Ordering::SeqCst), 1, "only the first request: both wait");
    for id in ["A-1", "A-2"] {
        assert_eq!(world.step_statuses(id).await, [("due".into(), Planned)], "{id}");
    }
    let next_morning = due_day_22 + 10 * HOUR;
    assert_eq!(world.store.next_step().await.unwrap(), Some(next_morning));
    assert_eq!(world.at(next_morning).await, 2);
    assert_eq!(world.sms.load(Ordering::SeqCst), 2, "then one message for both");
    assert_eq!(world.sms_lists(1).await.expect("combined"), ["A-1", "A-2"]);
    for id in ["A-1", "A-2"] {
        assert_eq!(world.step_statuses(id).await, [("due".into(), Sent)], "{id}");
    }
}

#[tokio::test]
async fn a_combined_reminder_skips_a_channel_whose_address_asked_to_stop() {
    let routing = r#"default = ["sms", "email"]
journey = "one"

[journeys.one]
send_at = "10:00"
steps = [{ name = "upcoming", due = "-3d" }]"#;
    let world = World::with_biller(routing, COMBINE, vec![], vec![]).await;
    world
        .first_requests(&[("A-1", "C-A", "MXN", "2026-12-01"), ("A-2", "C-A", "MXN", "2026-12-01")])
        .await;
    assert_eq!(world.sms.load(Ordering::SeqCst), 1);
    let stored = world.store.invoice(&key("A-1")).await.unwrap().unwrap();
    let stopped = world
        .dispatcher
        .suppress_invoice_address(
            &stored.invoice,
            ChannelName::Sms,
            crate::domain::debtor::Reply::Stop,
            "STOP by SMS",
        )
        .await
        .unwrap();
    assert!(stopped);
    assert_eq!(world.at(DUE_DAY_10 - 3 * DAY).await, 2);
    assert_eq!(world.sms.load(Ordering::SeqCst), 1, "no SMS to the stopped number");
    assert_eq!(world.email.load(Ordering::SeqCst), 1, "one email for both");
    for id in ["A-1", "A-2"] {
        assert_eq!(
            world.sent_of_step(id, "upcoming").await,
            [Some("email-1".to_owned())],
            "{id}"
        );
    }
}

#[tokio::test]
async fn a_reminder_due_later_the_same_day_goes_now_with_the_earliest() {
    let world = World::with_biller(ONE_REMINDER, COMBINE, vec![], vec![]).await;
    // One customer; A-2's contact lives two hours behind: its 10:00 is
    // 12:00 UTC, later on the same day as A-1's.
    for (id, timezone) in [("A-1", "UTC"), ("A-2", "Etc/GMT+2")] {
        let body = serde_json::json!({
            "kind": "payment_request",
            "invoice_id": id,
            "biller_id": "acme",
            "revision": 1,
            "amount": "10.00",
            "currency": "MXN",
            "due_date": "2026-12-01",
            "customer": {
                "id": "C-A",
                "name": "María López",
                "email": "maria@example.com",
                "phone": "+5215512345678",
                "locale": "es-MX",
                "timezone": timezone
            }
        });
        let incoming = Incoming {
            body: serde_json::to_vec(&body).unwrap(),
            correlation: Correlation::default(),
            redelivered: false,
            user_id: None,
        };
        assert_eq!(world.dispatcher.handle(incoming).await, Disposition::Ack);
    }
    world.clock.set_ms(NOON + 10 * MINUTE);
    world.send_due_groups().await;
    assert_eq!(world.sms.load(Ordering::SeqCst), 1);
    let a2 = world.store.steps("acme", "A-2").await.unwrap();
    assert_eq!(a2[0].due_ms, DUE_DAY_10 - 3 * DAY + 2 * HOUR);

    assert_eq!(world.at(DUE_DAY_10 - 3 * DAY).await, 1, "only A-1's is due");
    assert_eq!(world.sms.load(Ordering::SeqCst), 2, "one message");
    assert_eq!(world.sms_lists(1).await.expect("combined"), ["A-1", "A-2"]);
    assert_eq!(world.sent_of_step("A-2", "upcoming").await, [Some("sms-2".to_owned())]);
    assert_eq!(world.at(DUE_DAY_10 - 3 * DAY + 2 * HOUR).await, 0, "A-2's went already");
    assert_eq!(world.sms.load(Ordering::SeqCst), 2);
}
