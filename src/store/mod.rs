//! The durable state: invoices, send attempts, pay links and the event outbox.
//!
//! Everything that decides whether an invoice was handled lives here, so a
//! redelivered message can never become a second send: the idempotency key
//! (biller, invoice, revision) is the primary key of `invoices`. Each state
//! change is written together with the events that report it (the outbox).
//! [`Store`] is the seam for other databases: [`sqlite::SqliteStore`] is the
//! embedded default, [`postgres::PostgresStore`] lets several payrelay
//! instances share one database (and its outbox: each event is published by
//! one of them). [`open`] picks one by `[store] url`.
//!
//! Both run the same store test suite (`tests/store_suite.rs`). The
//! statements they share are written once, in `sql`; what else they share
//! (parsing rows, the paid event, the timeline) lives here.
//!
//! A store reads no clock of its own: every time it writes comes from the
//! [`Clock`] it was opened with, the service's, so a test that moves that
//! clock moves every stamp, and with them when an invoice counts as idle.
//! (PostgreSQL's outbox leases are the exception: they are set and
//! compared on the database's clock, the one clock every instance shares.)

mod debtors;
pub mod erase;
pub mod postgres;
#[cfg(test)]
mod query_plans;
mod sql;
pub mod sqlite;
pub mod stats;

use std::sync::Arc;

use async_trait::async_trait;

use crate::domain::clock::Clock;
use crate::domain::debtor::Profile;
use crate::domain::ChannelName;
use crate::domain::InvoiceKey;
use crate::domain::Status;
use crate::events::{Correlation, Event, EventName};
use crate::invoice::Invoice;
pub use crate::journey::PlannedStep;
pub use crate::metrics::StoreGauges;
pub use debtors::{hashed_contacts, Owner, SuppressionChange};
pub use erase::Erasure;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the store is unavailable or failed: {0}; the message will be redelivered")]
    Database(#[from] sqlx::Error),
    #[error("the SQLite store failed: {0}; the message will be redelivered")]
    Sqlite(#[from] rusqlite::Error),
    /// The store could not take or finish a call (its thread stopped, or a
    /// group commit failed); the call may be tried again.
    #[error("the store is unavailable: {0}; the message will be redelivered")]
    Unavailable(String),
    #[error("cannot prepare the store: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// The URL names no store payrelay has. Says why, never the URL itself:
    /// it may carry a password.
    #[error("unusable store URL: {0}")]
    Url(String),
}

/// Opens the store a `[store] url` names: `sqlite://PATH`, or
/// `postgres://` / `postgresql://` (libpq URL syntax), and brings its schema
/// up to date. The store stamps what it writes with `clock`'s time.
pub async fn open(url: &str, clock: Arc<dyn Clock>) -> Result<Arc<dyn Store>, StoreError> {
    match url.split_once("://").map(|(scheme, _)| scheme) {
        Some("sqlite") => Ok(Arc::new(sqlite::SqliteStore::open(url, clock).await?)),
        Some("postgres" | "postgresql") => Ok(Arc::new(postgres::PostgresStore::open(url, clock).await?)),
        _ => Err(StoreError::Url(
            "must start with sqlite://, postgres:// or postgresql://".into(),
        )),
    }
}

/// What the store knew when a payment request arrived.
#[derive(Debug, Clone, PartialEq)]
pub enum Begin {
    /// First time: stored with status accepted, the accepted event queued.
    New,
    /// Stored before and not finished (a crash or a redelivery mid-way):
    /// the attempts already recorded, to resume after them.
    Resume { attempts: Vec<AttemptRecord> },
    /// The same key was handled before.
    Duplicate { status: Status },
    /// A higher revision is known.
    Stale { latest: i64 },
    /// The invoice was paid or cancelled before this request arrived.
    Closed { status: Status },
}

/// One send on one channel, as recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptRecord {
    pub channel: ChannelName,
    pub attempt: u32,
    pub state: AttemptState,
    /// The journey step it was sent for; `None` for the first request.
    pub step: Option<String>,
    /// When it ended, if it did.
    pub finished_ms: Option<i64>,
    /// A person opened its pay link (previews do not count): no reason to
    /// escalate it to the next channel.
    pub opened: bool,
}

/// A planned step whose time has come, claimed by this instance.
#[derive(Debug, Clone, PartialEq)]
pub struct DueStep {
    pub key: InvoiceKey,
    pub seq: u32,
    pub journey: String,
    pub name: String,
    pub due_ms: i64,
}

/// Why a planned step waits past its time ([`Store::hold_step`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeldStep {
    /// The customer's quiet hours.
    QuietHours,
    /// The customer had the day's cap of messages
    /// (`[routing] max_messages_per_customer_per_day`).
    Cap,
}

impl HeldStep {
    /// As stored in `steps.held`.
    pub fn as_str(self) -> &'static str {
        match self {
            HeldStep::QuietHours => "quiet_hours",
            HeldStep::Cap => "cap",
        }
    }
}

/// [`StoreGauges`] from the row of `sql::GAUGES`.
fn store_gauges(counts: [i64; 7]) -> StoreGauges {
    let [outbox, held_invoices, held_groups, combining, steps_quiet, steps_cap, planned] = counts;
    StoreGauges {
        outbox_backlog: outbox,
        held_quiet_hours: held_invoices + held_groups + steps_quiet,
        held_combining: combining,
        held_cap: steps_cap,
        steps_planned: planned,
    }
}

/// Where a journey step stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepStatus {
    Planned,
    Sent,
    /// Every channel of the step failed.
    Failed,
    /// Not sent, for a reason in its detail (its time had passed at intake,
    /// the journey changed).
    Skipped,
    /// The invoice was paid, cancelled or replaced first.
    Cancelled,
}

impl StepStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Planned => "planned",
            StepStatus::Sent => "sent",
            StepStatus::Failed => "failed",
            StepStatus::Skipped => "skipped",
            StepStatus::Cancelled => "cancelled",
        }
    }

    fn parse(s: &str) -> Result<StepStatus, StoreError> {
        Ok(match s {
            "planned" => StepStatus::Planned,
            "sent" => StepStatus::Sent,
            "failed" => StepStatus::Failed,
            "skipped" => StepStatus::Skipped,
            "cancelled" => StepStatus::Cancelled,
            other => return Err(StoreError::Corrupt(format!("unknown step status {other}"))),
        })
    }
}

/// One journey step as stored, for the status API and the dispatcher.
#[derive(Debug, Clone, PartialEq)]
pub struct StepRecord {
    pub revision: i64,
    pub seq: u32,
    pub journey: String,
    pub name: String,
    pub status: StepStatus,
    /// When it goes, went, or would have gone.
    pub due_ms: i64,
    pub done_ms: Option<i64>,
    pub detail: Option<String>,
    /// Placed this long after the previous message: `due_ms` is only an
    /// estimate until that message went out.
    pub after_ms: Option<i64>,
}

/// Why the steps of an invoice's revisions below a new one stop.
const REPLACED: &str = "replaced by a newer revision, which has its own journey";

/// [`StepRecord`] from a `STEPS_OF` row's values.
#[allow(clippy::too_many_arguments)]
fn step_record(
    revision: i64,
    seq: i64,
    journey: String,
    name: String,
    status: &str,
    due_ms: i64,
    done_ms: Option<i64>,
    detail: Option<String>,
    after_ms: Option<i64>,
) -> Result<StepRecord, StoreError> {
    Ok(StepRecord {
        revision,
        seq: u32::try_from(seq).map_err(|_| StoreError::Corrupt(format!("step number {seq} is out of range")))?,
        journey,
        name,
        status: StepStatus::parse(status)?,
        due_ms,
        done_ms,
        detail,
        after_ms,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptState {
    /// Started and not finished: the process stopped during the send.
    Sending,
    Sent,
    Failed,
    /// Failed for now (a transient error): its journey step tries the
    /// channel again later, within `[routing] retry_for`.
    Retrying,
}

/// A stored invoice with what is needed to go on sending it.
#[derive(Debug, Clone)]
pub struct StoredInvoice {
    pub invoice: Invoice,
    pub status: Status,
    pub correlation: Correlation,
    pub attempts: Vec<AttemptRecord>,
}

/// The attempt a provider's status report is about.
#[derive(Debug, Clone)]
pub struct AttemptRef {
    pub attempt_id: i64,
    pub key: InvoiceKey,
    pub channel: ChannelName,
    pub attempt: u32,
    pub state: AttemptState,
    pub correlation: Correlation,
    pub metadata: Option<serde_json::Value>,
    /// The journey step it was sent for; `None` for the first request.
    pub step: Option<String>,
}

/// Delivery reports that are recorded once per attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reached {
    Delivered,
    Read,
}

/// What the admin API shows about an invoice.
#[derive(Debug, Clone)]
pub struct History {
    /// The latest revision's key; its revision is 0 when none was received.
    pub key: InvoiceKey,
    /// False when the invoice was closed before any payment request for it
    /// arrived: the timeline then holds only the closure.
    pub received: bool,
    /// Status of the latest revision.
    pub status: Status,
    /// Set while the invoice waits for quiet hours to end.
    pub held_until_ms: Option<i64>,
    /// Oldest first.
    pub timeline: Vec<TimelineEntry>,
}

/// One thing that happened to an invoice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimelineEntry {
    pub at_ms: i64,
    pub revision: Option<i64>,
    /// `received`, `send_started`, `sent`, `send_failed`, `delivered`, `read`,
    /// `clicked`, `held`, `paid`, `cancelled`.
    pub what: &'static str,
    pub channel: Option<ChannelName>,
    pub detail: Option<String>,
}

/// An invoice revision the console found (its search lists the newest
/// revision of each invoice).
#[derive(Debug, Clone)]
pub struct FoundInvoice {
    pub invoice: Invoice,
    pub status: Status,
    pub received_ms: i64,
    /// Its customer's personal data was erased: the invoice holds none.
    pub erased: bool,
}

/// A pay link with what the pay page needs.
#[derive(Debug, Clone)]
pub struct PaylinkRecord {
    pub key: InvoiceKey,
    pub channel: ChannelName,
    pub expires_at_ms: i64,
    pub status: Status,
    pub invoice: Invoice,
    pub correlation: Correlation,
    /// The invoice's newest revision, when it is higher than the link's:
    /// an older message's link leads to what the biller asks for now.
    pub newest: Option<NewestRevision>,
    /// The customer's personal data was erased from the link's revision:
    /// the link answers 410 (see [`Store::erase_customer`]).
    pub erased: bool,
}

/// The newest revision of a pay link's invoice (its key is `invoice.key`).
#[derive(Debug, Clone)]
pub struct NewestRevision {
    pub status: Status,
    pub invoice: Invoice,
}

/// A new pay link, written with the attempt that carries it.
#[derive(Debug, Clone)]
pub struct NewPaylink {
    pub token_hash: String,
    pub expires_at_ms: i64,
    /// The hash of the address the message goes to
    /// ([`crate::domain::debtor::address_hash`]): the store refuses to
    /// record a send to an address that asked to stop. `None` when the
    /// invoice has none on the channel (its send fails anyway).
    pub address_hash: Option<String>,
}

/// What [`Store::start_attempt`] recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptStart {
    /// The attempt's id: send now.
    Started(i64),
    /// Nothing recorded: the invoice was paid, cancelled or superseded meanwhile.
    Closed,
    /// The address asked to stop: recorded as a failed attempt whose detail
    /// says so, without a pay link; the next channel is tried.
    Suppressed,
}

impl AttemptStart {
    /// The attempt's id when it started.
    pub fn id(self) -> Option<i64> {
        match self {
            AttemptStart::Started(id) => Some(id),
            AttemptStart::Closed | AttemptStart::Suppressed => None,
        }
    }
}

/// The detail of an attempt refused because its address asked to stop.
pub const SUPPRESSED_DETAIL: &str = "suppressed: this address asked to receive no more messages";

/// How one attempt ended.
#[derive(Debug, Clone)]
pub enum AttemptOutcome {
    Sent { provider_message_id: Option<String> },
    Failed { detail: String },
}

impl AttemptOutcome {
    /// The `attempts` columns it sets: `state`, `provider_message_id`, `detail`.
    fn columns(&self) -> (&'static str, Option<&str>, Option<&str>) {
        match self {
            AttemptOutcome::Sent { provider_message_id } => ("sent", provider_message_id.as_deref(), None),
            AttemptOutcome::Failed { detail } => ("failed", None, Some(detail.as_str())),
        }
    }
}

/// An event waiting in the outbox.
#[derive(Debug, Clone)]
pub struct OutboxEntry {
    pub id: i64,
    /// What publishing needs of the event.
    pub head: EventHead,
    /// The event as stored, which is what gets published: serializing the
    /// parsed event again would cost as much as parsing it.
    pub json: String,
}

/// A stored status that is not one of [`Status`]'s: the data is corrupt.
impl From<crate::domain::UnknownStatus> for StoreError {
    fn from(e: crate::domain::UnknownStatus) -> Self {
        StoreError::Corrupt(e.to_string())
    }
}

impl OutboxEntry {
    /// An entry read back from the outbox. Only the head is parsed: the
    /// whole event carries a copy of the invoice's metadata, which
    /// publishing does not need.
    pub fn new(id: i64, json: String) -> Result<OutboxEntry, StoreError> {
        let head = serde_json::from_str(&json).map_err(|e| StoreError::Corrupt(format!("outbox event {id}: {e}")))?;
        Ok(OutboxEntry { id, head, json })
    }

    /// The whole event, parsed from what was stored.
    pub fn event(&self) -> Result<Event, StoreError> {
        parse_event(&self.json)
    }
}

/// What publishing an outbox event needs of it: its id, name and biller
/// (the routing key), time, and the ids its AMQP correlation id comes from.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct EventHead {
    /// Empty for an event stored before events had ids.
    #[serde(default)]
    pub event_id: String,
    pub event: EventName,
    pub biller_id: Option<String>,
    pub at: String,
    pub correlation_id: Option<String>,
    pub message_id: Option<String>,
}

impl EventHead {
    /// See [`Correlation::amqp_id`].
    pub fn amqp_id(&self) -> Option<&str> {
        self.correlation_id.as_deref().or(self.message_id.as_deref())
    }
}

/// How a first request joins the customer's combined group
/// (`[billers.<id>] combine`).
#[derive(Debug, Clone)]
pub struct CombineJoin {
    /// The id a new group gets, when no group of the customer and currency
    /// is open: made by the caller, so the store needs no randomness.
    pub new_group_id: String,
    /// How long a new group waits for more invoices, from now.
    pub window_ms: i64,
}

/// The group a stored invoice waits in, and when it closes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupPlace {
    pub group_id: String,
    pub due_ms: i64,
}

/// A combined group whose window closed (or whose quiet hours ended),
/// claimed by this instance to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueGroup {
    pub id: String,
    pub biller_id: String,
    pub due_ms: i64,
    /// Every invoice that joined it, in the order they arrived, whatever
    /// their status now: the sender keeps the open ones.
    pub members: Vec<InvoiceKey>,
}

/// One customer's reminders of one local day, at one biller in one
/// currency: what a combined reminder lists (`[billers.<id>] combine`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomerDay {
    pub biller_id: String,
    /// Their [`Invoice::customer_key`].
    pub customer: String,
    pub currency: String,
    /// The start of the customer's day, and of the next one.
    pub from_ms: i64,
    pub to_ms: i64,
}

/// A combined message's pay link with what its page needs.
#[derive(Debug, Clone)]
pub struct CombinedLinkRecord {
    pub group_id: String,
    pub channel: ChannelName,
    pub expires_at_ms: i64,
    /// The invoices the message listed, in its order, as they stand now.
    pub invoices: Vec<LinkedInvoice>,
}

/// One invoice a combined link lists.
#[derive(Debug, Clone)]
pub struct LinkedInvoice {
    pub key: InvoiceKey,
    pub status: Status,
    pub invoice: Invoice,
    pub correlation: Correlation,
}

/// The pay link each listed invoice's own attempt carries for a combined
/// link: derived from it, so a click on the combined link counts on every
/// listed invoice, and no token hashes to it, so it opens nothing itself.
pub fn member_link_hash(token_hash: &str, invoice_id: &str) -> String {
    format!("{token_hash}:{invoice_id}")
}

/// The `accepted` event of an invoice that waits to be combined: says until when.
fn waiting_event(accepted: &Event, due_ms: i64) -> Event {
    let mut event = accepted.clone();
    let waits = format!(
        "waits until {} to be combined with the customer's other open invoices in one message",
        crate::events::rfc3339_ms(due_ms)
    );
    event.detail = Some(match event.detail.take() {
        Some(d) => format!("{d}; {waits}"),
        None => waits,
    });
    event
}

/// `listed` of a combined link, as stored: `[[invoice_id, revision], ...]`.
fn parse_listed(json: &str) -> Result<Vec<(String, i64)>, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError::Corrupt(format!("combined link list: {e}")))
}

#[async_trait]
pub trait Store: Send + Sync {
    /// Checks the key and, when new, stores the invoice, `accepted` and its
    /// journey's `steps` in one transaction (a newer revision cancels the
    /// older ones' planned steps). `routed_by` ([`stats::routed_by`]) is
    /// kept with it for the funnel's split by rule.
    async fn begin(
        &self,
        invoice: &Invoice,
        correlation: &Correlation,
        accepted: &Event,
        steps: &[PlannedStep],
        routed_by: &str,
    ) -> Result<Begin, StoreError>;

    /// Records that a send is starting, with the pay link the message
    /// carries, and returns the attempt's id; `None` (nothing recorded) when
    /// the invoice was paid, cancelled or superseded meanwhile. This is the
    /// check right before each send, in the same transaction as the record.
    /// `step` names the journey step it is sent for (`None`: the first
    /// request), whose claim it renews. The same transaction refuses an
    /// address that asked to stop ([`AttemptStart::Suppressed`]): every
    /// send passes here, so no path can bypass a suppression.
    async fn start_attempt(
        &self,
        key: &InvoiceKey,
        channel: ChannelName,
        attempt: u32,
        paylink: &NewPaylink,
        step: Option<&str>,
    ) -> Result<AttemptStart, StoreError>;

    /// `begin`, and when the invoice is new, `start_attempt` for its first
    /// send: the attempt's id comes with [`Begin::New`]. Stores that can
    /// (SQLite) do both in one transaction, which saves a round trip per
    /// invoice; the default runs them one after the other, which is as safe
    /// (a crash in between leaves an accepted invoice with no attempt, which
    /// is resumed like any other). No attempt either when the customer has
    /// a stored preference or the channel's address asked to stop: the
    /// caller then routes again with [`Store::debtor`].
    #[allow(clippy::too_many_arguments)]
    async fn begin_with_attempt(
        &self,
        invoice: &Invoice,
        correlation: &Correlation,
        accepted: &Event,
        steps: &[PlannedStep],
        routed_by: &str,
        channel: ChannelName,
        paylink: &NewPaylink,
    ) -> Result<(Begin, Option<i64>), StoreError> {
        let begun = self.begin(invoice, correlation, accepted, steps, routed_by).await?;
        if begun != Begin::New {
            return Ok((begun, None));
        }
        let address = paylink.address_hash.clone().unwrap_or_default();
        let profile = self
            .debtor(&invoice.key.biller_id, &invoice.customer_key(), &[(channel, address)])
            .await;
        if !profile.is_ok_and(|p| p.is_empty()) {
            return Ok((begun, None));
        }
        // The invoice is stored and the caller owns it now, so a failure to
        // record the attempt must not hide that: it answers New without an
        // attempt, and the caller records one the ordinary way (where a
        // store that is still failing fails it again).
        let attempt = match self.start_attempt(&invoice.key, channel, 1, paylink, None).await {
            Ok(AttemptStart::Started(id)) => Some(id),
            _ => None,
        };
        Ok((begun, attempt))
    }

    /// Records a transient failure that a journey step tries again later
    /// (no event: the channel has not given up).
    async fn retry_attempt_later(&self, attempt_id: i64, detail: &str) -> Result<(), StoreError>;

    /// Records how an attempt ended, with its event.
    async fn finish_attempt(&self, attempt_id: i64, outcome: &AttemptOutcome, event: &Event) -> Result<(), StoreError>;

    /// Records a send that ends its invoice (the common case: the first
    /// channel took the message) as `finish_attempt` and then
    /// `finish_invoice(key, Sent, [])` would, in one transaction.
    async fn finish_sent(
        &self,
        attempt_id: i64,
        provider_message_id: Option<&str>,
        event: &Event,
        key: &InvoiceKey,
    ) -> Result<(), StoreError>;

    /// Sets the invoice's final status with its events, unless it was closed meanwhile.
    async fn finish_invoice(&self, key: &InvoiceKey, status: Status, events: &[Event]) -> Result<(), StoreError>;

    /// Closes every revision of an invoice (paid or cancelled) and queues the
    /// event, once: returns false if it was already closed the same way.
    async fn close(&self, biller_id: &str, invoice_id: &str, status: Status, event: &Event)
        -> Result<bool, StoreError>;

    /// Queues an event that reports no state change (rejected, duplicate).
    async fn record_event(&self, event: &Event) -> Result<(), StoreError>;

    /// Finds a pay link by its token's hash, with its invoice's newest
    /// revision when that is a higher one, in one read.
    async fn paylink(&self, token_hash: &str) -> Result<Option<PaylinkRecord>, StoreError>;

    /// Counts a click; the first one also queues `event`. Returns the count.
    async fn record_click(&self, token_hash: &str, event: &Event) -> Result<i64, StoreError>;

    /// The oldest events not yet confirmed by the broker that this store is
    /// to publish, oldest first. Reading changes no event: the same ones come
    /// again until [`Store::outbox_done`]. SQLite serves one process and
    /// returns them all. PostgreSQL returns only this instance's own events,
    /// holding back any whose invoice has an older event under another
    /// instance; each call also renews this instance's lease on its events
    /// and takes over those of instances whose lease ran out (see
    /// [`postgres`]). So call it regularly: it is the publisher's heartbeat.
    async fn outbox(&self, limit: u32) -> Result<Vec<OutboxEntry>, StoreError>;

    /// Forgets events the broker confirmed, among those this store still
    /// holds: an event another instance took over meanwhile stays with it.
    async fn outbox_done(&self, ids: &[i64]) -> Result<(), StoreError>;

    /// Whether the store answers, for `/readyz`.
    async fn ping(&self) -> Result<(), StoreError>;

    /// What operators watch, for `/metrics`: the outbox backlog (every
    /// instance's), invoices held by reason, planned steps. Each a COUNT
    /// over a partial index, so it stays cheap as the tables grow.
    async fn gauges(&self) -> Result<StoreGauges, StoreError>;

    /// Called once the service has stopped: hands this instance's events
    /// that are still unpublished (its publisher could not reach the broker
    /// at the end) to the other instances now, instead of when its lease
    /// runs out. Nothing to do where one process serves the store.
    async fn release_outbox(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// An invoice with its attempts, to resume sending it.
    async fn invoice(&self, key: &InvoiceKey) -> Result<Option<StoredInvoice>, StoreError>;

    /// Finds the attempt a provider message id belongs to.
    async fn attempt_by_provider_id(
        &self,
        channel: ChannelName,
        provider_message_id: &str,
    ) -> Result<Option<AttemptRef>, StoreError>;

    /// Every attempt a provider message id belongs to: the one of a single
    /// request, or one per invoice a combined message listed, so its
    /// delivery reports reach each of them. A store that has no combined
    /// messages answers [`Store::attempt_by_provider_id`]'s.
    async fn attempts_by_provider_id(
        &self,
        channel: ChannelName,
        provider_message_id: &str,
    ) -> Result<Vec<AttemptRef>, StoreError> {
        Ok(self
            .attempt_by_provider_id(channel, provider_message_id)
            .await?
            .into_iter()
            .collect())
    }

    /// Records that a sent message was delivered or read, with its event,
    /// once: returns false for a repeated report.
    async fn record_reached(&self, attempt_id: i64, reached: Reached, event: &Event) -> Result<bool, StoreError>;

    /// The latest revision's status and the whole timeline of an invoice.
    async fn history(&self, biller_id: &str, invoice_id: &str) -> Result<Option<History>, StoreError>;

    /// The console's invoice search: `biller_id`'s invoices whose id is
    /// `invoice_id` or whose customer is `customer` (an
    /// [`Invoice::customer_key`]), each by its newest revision, most
    /// recently received first, at most `limit`.
    async fn find_invoices(
        &self,
        biller_id: &str,
        invoice_id: &str,
        customer: &str,
        limit: u32,
    ) -> Result<Vec<FoundInvoice>, StoreError>;

    /// `biller_id`'s payment requests received from `from_ms` until before
    /// `to_ms`, every revision, oldest first, at most `limit`: what the
    /// console's rules dry run routes again. Erased ones are left out:
    /// without their contacts they would route nowhere.
    async fn invoices_received(
        &self,
        biller_id: &str,
        from_ms: i64,
        to_ms: i64,
        limit: u32,
    ) -> Result<Vec<FoundInvoice>, StoreError>;

    /// Holds an invoice until `until_ms` (quiet hours). The hold is durable:
    /// [`Store::due_holds`] finds it again after a restart.
    async fn hold(&self, key: &InvoiceKey, until_ms: i64) -> Result<(), StoreError>;

    /// Held invoices whose time has come, oldest first. They stay held until
    /// they are sent or held again, so a crash cannot lose one.
    async fn due_holds(&self, now_ms: i64, limit: u32) -> Result<Vec<InvoiceKey>, StoreError>;

    /// Takes up to `limit` due holds for this instance to send, oldest
    /// first: each one's hold ends and its clock is set to `now_ms`, as for
    /// an invoice being handled, in one statement, so when several
    /// instances ask at once each hold goes to one of them. If this one
    /// dies before sending, [`Store::claim_stale`] takes the invoice over.
    async fn claim_due_holds(&self, now_ms: i64, limit: u32) -> Result<Vec<InvoiceKey>, StoreError>;

    /// When the next hold ends, so the scheduler can sleep until then.
    async fn next_hold(&self) -> Result<Option<i64>, StoreError>;

    /// Takes over an unfinished invoice: true (and its clock reset) if it is
    /// still `accepted` and nobody touched it for `idle_ms`. Handling bumps
    /// that clock at each send, so a live handler elsewhere keeps its claim;
    /// `idle_ms = 0` takes it unconditionally.
    async fn claim(&self, key: &InvoiceKey, now_ms: i64, idle_ms: i64) -> Result<bool, StoreError>;

    /// Claims up to `limit` unfinished, unheld invoices idle for `idle_ms`:
    /// the ones whose handler died without its message coming back.
    async fn claim_stale(&self, now_ms: i64, idle_ms: i64, limit: u32) -> Result<Vec<InvoiceKey>, StoreError>;

    /// Takes up to `limit` planned steps due by `now_ms` for this instance
    /// to send, earliest first, in one statement, so that of several
    /// instances asking at once each step goes to one of them. A step
    /// claimed more than `idle_ms` ago and still planned (its instance
    /// died) is taken again.
    async fn claim_due_steps(&self, now_ms: i64, idle_ms: i64, limit: u32) -> Result<Vec<DueStep>, StoreError>;

    /// Puts a claimed step back, due at `due_ms` (a previous message sent
    /// later than planned, a channel failing for now), with why; no longer
    /// held (quiet hours and the daily cap hold it: [`Store::hold_step`]).
    async fn reschedule_step(&self, key: &InvoiceKey, seq: u32, due_ms: i64, detail: &str) -> Result<(), StoreError>;

    /// Puts a claimed step back until `until_ms` because of `held` (quiet
    /// hours, the daily cap), with why: as [`Store::reschedule_step`], and
    /// counted as held by [`Store::gauges`] until it is rescheduled or done.
    async fn hold_step(
        &self,
        key: &InvoiceKey,
        seq: u32,
        until_ms: i64,
        held: HeldStep,
        detail: &str,
    ) -> Result<(), StoreError>;

    /// Ends a planned step (sent, failed, skipped or cancelled) with its
    /// events, once: false if it was no longer planned.
    async fn finish_step(
        &self,
        key: &InvoiceKey,
        seq: u32,
        status: StepStatus,
        detail: Option<&str>,
        events: &[Event],
    ) -> Result<bool, StoreError>;

    /// Every step of every revision of an invoice, in order.
    async fn steps(&self, biller_id: &str, invoice_id: &str) -> Result<Vec<StepRecord>, StoreError>;

    /// When the next planned step is due, so the scheduler can sleep until then.
    async fn next_step(&self) -> Result<Option<i64>, StoreError>;

    /// How many messages went (or are going) to the customer with this
    /// [`Invoice::customer_key`] since `since_ms`, across all their invoices.
    async fn messages_to_customer(&self, customer: &str, since_ms: i64) -> Result<u32, StoreError>;

    /// Erases the personal data of every invoice of one customer at one
    /// biller (`customer` is their [`Invoice::customer_key`]) and queues
    /// `erased` (a `customer.erased` event; its detail is set here, with the
    /// count) in the same transaction: see [`erase`] for what goes and what
    /// stays. Idempotent: invoices erased before count no more, but their
    /// messages are listed again so their copies can be removed.
    async fn erase_customer(&self, biller_id: &str, customer: &str, erased: &Event) -> Result<Erasure, StoreError>;

    /// Retention: erases, as [`Store::erase_customer`] does, up to `limit`
    /// invoice revisions closed (paid, cancelled or superseded) at or before
    /// `before_ms`, or finished (sent or exhausted, no step planned) with
    /// every pay link expired by then; one `customer.erased` per customer.
    /// Of several instances sweeping at once each revision goes to one.
    async fn erase_expired(&self, before_ms: i64, limit: u32) -> Result<Erasure, StoreError>;

    /// Turns a sent attempt into a failed one after the provider reported a
    /// delivery failure, reopening its invoice for the next channel. True
    /// only for the first such report, so a fallback happens exactly once.
    async fn fail_after_send(&self, attempt_id: i64, detail: &str, event: &Event) -> Result<bool, StoreError>;

    /// What changes where a customer's messages go: their stored
    /// preference at the biller (by [`Invoice::customer_key`]) and which of
    /// `addresses` (channel, [`crate::domain::debtor::address_hash`])
    /// asked to stop.
    async fn debtor(
        &self,
        biller_id: &str,
        customer_key: &str,
        addresses: &[(ChannelName, String)],
    ) -> Result<Profile, StoreError>;

    /// Stores a customer's channel choice at a biller, with its
    /// `customer.preferences_changed` event, in one transaction.
    async fn set_preferences(
        &self,
        biller_id: &str,
        customer_key: &str,
        channels: &[ChannelName],
        stopped: &[ChannelName],
        event: &Event,
    ) -> Result<(), StoreError>;

    /// Stops (or restarts) messages to an address, and queues
    /// `customer.suppressed` (`customer.unsuppressed`) for each customer
    /// of each biller in its scope the address belongs to, in one
    /// transaction. False, and no event, when nothing changed (a second
    /// STOP, a START for an address never stopped).
    async fn suppress(&self, change: &SuppressionChange) -> Result<bool, StoreError>;
    /// `begin` for a biller that combines: a new invoice is stored in the
    /// open group of its customer and currency (a new one, closing
    /// `window_ms` from now, when none is open) in the same transaction,
    /// and its `accepted` event says until when it waits. A resumed invoice
    /// answers the group it waits in, unless that group is done.
    async fn begin_combined(
        &self,
        invoice: &Invoice,
        correlation: &Correlation,
        accepted: &Event,
        steps: &[PlannedStep],
        routed_by: &str,
        join: &CombineJoin,
    ) -> Result<(Begin, Option<GroupPlace>), StoreError>;

    /// Takes up to `limit` groups whose window closed (or whose quiet hours
    /// ended) for this instance to send, earliest first, in one statement:
    /// of several instances asking at once each group goes to one. A group
    /// claimed more than `idle_ms` ago and not done (its instance died) is
    /// taken again. A claimed group takes no new invoices.
    async fn claim_due_groups(&self, now_ms: i64, idle_ms: i64, limit: u32) -> Result<Vec<DueGroup>, StoreError>;

    /// Puts a claimed group back until `until_ms` (quiet hours).
    async fn hold_group(&self, group_id: &str, until_ms: i64) -> Result<(), StoreError>;

    /// Marks a group sent (or left with nothing to send).
    async fn finish_group(&self, group_id: &str) -> Result<(), StoreError>;

    /// When the next group closes, so the scheduler can sleep until then.
    async fn next_group(&self) -> Result<Option<i64>, StoreError>;

    /// Stores a combined message's pay link with the invoices it lists.
    async fn add_combined_link(
        &self,
        group_id: &str,
        channel: ChannelName,
        paylink: &NewPaylink,
        listed: &[InvoiceKey],
    ) -> Result<(), StoreError>;

    /// Finds a combined message's pay link by its token's hash, with the
    /// invoices it lists as they stand now.
    async fn combined_link(&self, token_hash: &str) -> Result<Option<CombinedLinkRecord>, StoreError>;

    /// Takes the planned reminders of `day` that no instance holds (none,
    /// or a claim older than `idle_ms`) for this instance, in one
    /// statement: only of invoices whose first request went out and that
    /// are still open. Of several instances asking at once, each step goes
    /// to one.
    async fn claim_customer_steps(
        &self,
        day: &CustomerDay,
        now_ms: i64,
        idle_ms: i64,
    ) -> Result<Vec<DueStep>, StoreError>;

    /// Stores the group a combined reminder's pay link belongs to (done
    /// from the start: there is nothing for a scheduler to claim).
    async fn add_reminder_group(&self, group_id: &str, day: &CustomerDay) -> Result<(), StoreError>;

    /// The funnel figures of one biller's invoices received in a period
    /// (`GET /v1/stats`; the definitions are [`stats`]'s). A read only:
    /// it never holds up the writes of invoices being sent.
    async fn stats(&self, query: &stats::StatsQuery) -> Result<stats::Stats, StoreError>;
}

fn parse_channel(s: &str) -> Result<ChannelName, StoreError> {
    s.parse().map_err(StoreError::Corrupt)
}

fn parse_state(s: &str) -> AttemptState {
    match s {
        "sent" => AttemptState::Sent,
        "failed" => AttemptState::Failed,
        "retrying" => AttemptState::Retrying,
        _ => AttemptState::Sending,
    }
}

fn parse_invoice(json: &str) -> Result<Invoice, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// [`PaylinkRecord::newest`] from the newer revision's `status` and
/// `invoice_json`, as both stores read them.
fn newest_revision(row: Option<(String, String)>) -> Result<Option<NewestRevision>, StoreError> {
    row.map(|(status, invoice)| {
        Ok(NewestRevision {
            status: Status::parse(&status)?,
            invoice: parse_invoice(&invoice)?,
        })
    })
    .transpose()
}

fn event_json(event: &Event) -> Result<String, StoreError> {
    serde_json::to_string(event).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn parse_event(json: &str) -> Result<Event, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// The event [`Store::close`] queues: it names the latest revision and its
/// metadata, and for a payment the channel whose pay link the customer
/// opened last, the message that earned the payment.
///
/// `latest` is the latest revision with its `invoice_json`; `clicked` the
/// channel of the pay link whose first click came last.
/// Why a closure names no revision: the biller closed the invoice before
/// its payment request arrived. The closure stays, so a request that comes
/// later is refused rather than sent.
const EARLY_CLOSE: &str =
    "closed before its payment request arrived; a request for this invoice that arrives later is not sent";

fn closing_event(
    event: &Event,
    status: Status,
    latest: Option<(i64, &str)>,
    clicked: Option<&str>,
) -> Result<Event, StoreError> {
    let mut event = event.clone();
    match latest {
        Some((revision, invoice_json)) => {
            event.revision = Some(revision);
            if event.metadata.is_none() {
                event.metadata = parse_invoice(invoice_json)?.metadata;
            }
        }
        None => event.detail = Some(EARLY_CLOSE.to_owned()),
    }
    if let (Status::Paid, Some(channel)) = (status, clicked) {
        event.channel = Some(parse_channel(channel)?);
        let detail = format!("the customer last opened the pay link from the {channel} message");
        event.detail = Some(match event.detail.take() {
            Some(d) => format!("{d}; {detail}"),
            None => detail,
        });
    }
    Ok(event)
}

/// One revision of an invoice, as [`Store::history`] reads it.
struct RevisionRow {
    revision: i64,
    status: String,
    received_ms: i64,
    held_until_ms: Option<i64>,
}

/// One attempt, as [`Store::history`] reads it.
struct AttemptRow {
    revision: i64,
    channel: String,
    state: String,
    detail: Option<String>,
    started_ms: i64,
    finished_ms: Option<i64>,
    delivered_ms: Option<i64>,
    read_ms: Option<i64>,
    provider_message_id: Option<String>,
}

/// A pay link that was opened, as [`Store::history`] reads it.
struct ClickRow {
    revision: i64,
    channel: String,
    first_click_ms: Option<i64>,
    clicks: i64,
}

/// Builds [`History`] from its rows, the same way for every database.
/// `revisions` is oldest first; `closure` is (status, closed_ms); a hold
/// shows at `now`. None when neither a revision nor a closure is known.
fn build_history(
    biller_id: &str,
    invoice_id: &str,
    revisions: &[RevisionRow],
    attempts: &[AttemptRow],
    clicks: &[ClickRow],
    closure: Option<(&str, i64)>,
    now: i64,
) -> Result<Option<History>, StoreError> {
    let latest = revisions.last();
    if latest.is_none() && closure.is_none() {
        return Ok(None);
    }
    let key = InvoiceKey {
        biller_id: biller_id.to_owned(),
        invoice_id: invoice_id.to_owned(),
        revision: latest.map_or(0, |l| l.revision),
    };
    let mut status = match latest {
        Some(l) => Status::parse(&l.status)?,
        None => Status::Accepted,
    };
    let held_until_ms = latest.and_then(|l| l.held_until_ms);
    let mut timeline = Vec::new();
    let entry = |at_ms: i64, revision: Option<i64>, what, channel, detail| TimelineEntry {
        at_ms,
        revision,
        what,
        channel,
        detail,
    };
    for row in revisions {
        timeline.push(entry(row.received_ms, Some(row.revision), "received", None, None));
    }
    if let Some(until) = held_until_ms {
        timeline.push(entry(
            now,
            Some(key.revision),
            "held",
            None,
            Some(format!("quiet hours: held until {}", crate::events::rfc3339_ms(until))),
        ));
    }
    for row in attempts {
        let revision = Some(row.revision);
        let channel = Some(parse_channel(&row.channel)?);
        timeline.push(entry(row.started_ms, revision, "send_started", channel, None));
        if let Some(finished) = row.finished_ms {
            let (what, detail) = match parse_state(&row.state) {
                AttemptState::Failed | AttemptState::Retrying => ("send_failed", row.detail.clone()),
                _ => (
                    "sent",
                    row.provider_message_id.as_ref().map(|id| format!("provider id {id}")),
                ),
            };
            timeline.push(entry(finished, revision, what, channel, detail));
        }
        if let Some(at) = row.delivered_ms {
            timeline.push(entry(at, revision, "delivered", channel, None));
        }
        if let Some(at) = row.read_ms {
            timeline.push(entry(at, revision, "read", channel, None));
        }
    }
    for row in clicks {
        timeline.push(entry(
            row.first_click_ms.unwrap_or_default(),
            Some(row.revision),
            "clicked",
            Some(parse_channel(&row.channel)?),
            Some(format!("pay link opened {} time(s)", row.clicks)),
        ));
    }
    if let Some((closed, closed_ms)) = closure {
        let closed = Status::parse(closed)?;
        status = closed;
        let what = if closed == Status::Paid { "paid" } else { "cancelled" };
        let detail = latest.is_none().then(|| EARLY_CLOSE.to_owned());
        timeline.push(entry(closed_ms, None, what, None, detail));
    }
    timeline.sort_by_key(|e| e.at_ms);
    Ok(Some(History {
        key,
        received: latest.is_some(),
        status,
        held_until_ms,
        timeline,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The head read from a stored event names its routing key and its
    /// AMQP correlation id as the whole event would; the whole event is
    /// still there for whoever needs it.
    #[test]
    fn an_outbox_entry_reads_the_head_of_the_stored_event() {
        let key = InvoiceKey {
            biller_id: "acme".into(),
            invoice_id: "INV-1".into(),
            revision: 2,
        };
        let by_message = Correlation {
            correlation_id: None,
            message_id: Some("msg-1".into()),
        };
        let event = Event::about(EventName::Sent, &key, &by_message)
            .metadata(Some(serde_json::json!({"erp_doc": "d-1", "nested": {"a": [1, 2]}})));
        let entry = OutboxEntry::new(7, event_json(&event).unwrap()).unwrap();
        assert_eq!(entry.head.event, EventName::Sent);
        assert_eq!(entry.head.event_id, event.event_id);
        assert_eq!(entry.head.biller_id.as_deref(), Some("acme"));
        assert_eq!(entry.head.at, event.at);
        assert_eq!(entry.head.amqp_id(), Some("msg-1"));
        assert_eq!(entry.event().unwrap(), event);

        let both = Correlation {
            correlation_id: Some("corr-1".into()),
            message_id: Some("msg-1".into()),
        };
        let event = Event::about(EventName::Accepted, &key, &both);
        let entry = OutboxEntry::new(8, event_json(&event).unwrap()).unwrap();
        assert_eq!(entry.head.amqp_id(), both.amqp_id());
    }

    #[test]
    fn a_stored_event_that_is_not_an_event_is_reported_as_corrupt() {
        for json in ["{", r#"{"event": "invoice.nonsense"}"#, r#"{"detail": "no name"}"#] {
            match OutboxEntry::new(9, json.into()) {
                Err(StoreError::Corrupt(why)) => assert!(why.contains("outbox event 9"), "{why}"),
                other => panic!("{json} gave {other:?}"),
            }
        }
    }
}
