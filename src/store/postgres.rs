//! The shared store: PostgreSQL, for several payrelay instances on one database.
//!
//! The same tables and the same answers as [`super::sqlite::SqliteStore`].
//! SQLite makes every writer wait for the one before it (`BEGIN IMMEDIATE`);
//! here writers run side by side at READ COMMITTED, so each decision that
//! must happen once is made under a lock:
//!
//! - `begin` and `close` take a transaction-scoped advisory lock on the
//!   invoice (biller, invoice id; every revision), so two instances cannot
//!   both see a key as new, a lower revision cannot slip in after a higher
//!   one, and no revision can be accepted after its invoice was closed.
//! - `close` also inserts its closure with `ON CONFLICT DO NOTHING`: one wins.
//! - `fail_after_send`, `record_reached` and `record_click` are one
//!   conditional `UPDATE` of one row. PostgreSQL makes a second writer of
//!   that row wait, then checks its `WHERE` again on the committed row, so
//!   only the first report matches (and only the first click counts 1).
//! - `finish_invoice`, `hold` and the reopening in `fail_after_send` update
//!   the invoice only from the statuses they expect, checked the same way, so
//!   none of them overrides a close or a supersede that committed first.
//!
//! The outbox is shared too, and each event is published by one instance:
//!
//! - Every store handle (every instance) is an *owner* with a random id made
//!   at [`PostgresStore::open`], and owns the events it writes. [`Store::outbox`]
//!   returns only the caller's own events, so two publishers never send the
//!   same one, and one instance's events go out in the order it wrote them.
//! - An owner holds one lease for all its events (`outbox_owners`), on the
//!   database's clock: taken at open, renewed by [`Store::outbox`] calls (at
//!   most every tenth of the lease; the event publisher calls at least every
//!   250 ms) and lasting [`OUTBOX_LEASE`] (30 s). When an instance dies, or
//!   its publisher stops, its lease runs out (a clean stop ends it at once:
//!   [`Store::release_outbox`]) and the next publisher round of a live
//!   instance takes all its events over at once, in one statement
//!   that locks the dead owner's row (`FOR UPDATE SKIP LOCKED`), so exactly
//!   one instance gets them. The lease ends at most 30 s after the owner's
//!   last round, so takeover comes at most 30 s plus one round of the taker
//!   (250 ms when it is idle) after an instance stopped. Events without an
//!   owner (written before leases existed, or by an older payrelay during a
//!   rolling upgrade) are taken over at once.
//! - An event is held back while an older event of the same invoice is still
//!   in the outbox under another owner, so one invoice's events keep their
//!   order even when instances wrote them (a duplicate on one instance, the
//!   accepted event on the other; a delivery report through the other's
//!   webhook).
//! - [`Store::outbox_done`] deletes only events the caller still owns.
//!
//! At-least-once stays: an instance that stalls longer than its lease
//! (or dies with confirms in flight) may see its events taken over and
//! published again by another instance.

#[path = "postgres_erase.rs"]
mod erase;
#[path = "postgres_stats.rs"]
mod stats;

use crate::domain::Status;
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{Executor, PgPool, Postgres, Row, Transaction};
use tracing::{info, warn};

use super::debtors::{self, Owner, SuppressionChange};
use super::stats::{Stats, StatsQuery};
use super::{
    build_history, closing_event, event_json, newest_revision, parse_channel, parse_invoice, parse_listed, parse_state,
    sql, step_record, store_gauges, waiting_event, AttemptOutcome, AttemptRecord, AttemptRef, AttemptRow, AttemptStart,
    Begin, ClickRow, CombineJoin, CombinedLinkRecord, CustomerDay, DueGroup, DueStep, Erasure, FoundInvoice,
    GroupPlace, HeldStep, History, LinkedInvoice, NewPaylink, OutboxEntry, PaylinkRecord, PlannedStep, Reached,
    RevisionRow, StepRecord, StepStatus, Store, StoreError, StoreGauges, StoredInvoice, REPLACED,
};
use crate::domain::clock::Clock;
use crate::domain::debtor::{join_channels, remembers_address, split_channels, suppression_scope, Profile, Reply};
use crate::domain::ChannelName;
use crate::domain::InvoiceKey;
use crate::events::{Correlation, Event};
use crate::invoice::Invoice;

/// `sql::CLAIM_CUSTOMER_STEPS` for PostgreSQL, whose `invoice_json` is a
/// text column: the JSON operators need it cast to `jsonb`.
const CLAIM_CUSTOMER_STEPS: &str = "UPDATE steps SET claimed_ms = $1
    WHERE status = 'planned' AND seq > 0 AND (claimed_ms IS NULL OR claimed_ms <= $2)
      AND (biller_id, invoice_id, revision, seq) IN (
          SELECT s.biller_id, s.invoice_id, s.revision, s.seq
          FROM invoices i JOIN steps s ON s.biller_id = i.biller_id
               AND s.invoice_id = i.invoice_id AND s.revision = i.revision
          WHERE i.biller_id = $3 AND i.customer = $4 AND i.status IN ('sent', 'exhausted')
            AND i.erased_ms IS NULL AND (i.invoice_json::jsonb) -> 'amount' ->> 'currency' = $5
            AND s.status = 'planned' AND s.seq > 0 AND s.due_ms >= $6 AND s.due_ms < $7
            AND (s.claimed_ms IS NULL OR s.claimed_ms <= $2))
    RETURNING biller_id, invoice_id, revision, seq, journey, name, due_ms";

/// Connections per instance. Each handler holds one only for a transaction.
const MAX_CONNECTIONS: u32 = 10;

/// Seeds the hash behind the invoice locks, so they do not share numbers with
/// advisory locks other software takes in the same database.
const LOCK_SEED: i64 = 0x7061_7972_656c_6179; // "payrelay"

/// How long an instance's hold on its outbox events lasts after its last
/// renewal: how long events wait after their instance died before another
/// publishes them. Well above a publisher round (a batch of 500 and its
/// confirms), so a live instance never loses its events.
pub const OUTBOX_LEASE: Duration = Duration::from_secs(30);

/// An owner whose lease ended this long ago and who holds no events is
/// forgotten when a store opens (each start of an instance adds one).
const FORGET_OWNERS_AFTER_MS: i64 = 24 * 60 * 60 * 1000;

/// The database's clock in milliseconds since the Unix epoch. Leases are set
/// and compared on this one clock, never on the instances' own.
macro_rules! db_now_ms {
    () => {
        "(EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT"
    };
}

pub struct PostgresStore {
    pool: PgPool,
    /// This instance's name in the outbox: it owns the events it writes.
    owner: String,
    /// How long the owner's lease lasts after each renewal.
    lease: Duration,
    /// When the lease was last renewed, on this process's clock: renewals
    /// come at most every tenth of the lease, and a longer gap is reported.
    renewed: Mutex<Option<Instant>>,
    /// Stamps every row but the leases.
    clock: Arc<dyn Clock>,
}

impl PostgresStore {
    /// Connects to a `postgres://` or `postgresql://` URL (libpq syntax:
    /// user, password, host, port, database, `sslmode` and friends) and brings
    /// the schema up to date. Instances starting together are safe: the
    /// migrator holds a database-wide lock while it works. Rows are stamped
    /// with `clock`'s time.
    pub async fn open(url: &str, clock: Arc<dyn Clock>) -> Result<PostgresStore, StoreError> {
        PostgresStore::open_with_lease(url, OUTBOX_LEASE, clock).await
    }

    /// [`PostgresStore::open`] with another outbox lease than
    /// [`OUTBOX_LEASE`]; tests use a short one to see a takeover quickly.
    pub async fn open_with_lease(
        url: &str,
        lease: Duration,
        clock: Arc<dyn Clock>,
    ) -> Result<PostgresStore, StoreError> {
        let options = PgConnectOptions::from_str(url)?.application_name("payrelay");
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await?;
        sqlx::migrate!("src/store/migrations/postgres").run(&pool).await?;
        sqlx::query(concat!(
            "DELETE FROM outbox_owners o WHERE lease_until_ms < ",
            db_now_ms!(),
            " - $1 AND NOT EXISTS (SELECT 1 FROM outbox WHERE outbox.owner = o.owner)"
        ))
        .bind(FORGET_OWNERS_AFTER_MS)
        .execute(&pool)
        .await?;
        let store = PostgresStore {
            pool,
            owner: format!("{}-{}", std::process::id(), &crate::domain::ids::random_id()[..12]),
            lease,
            renewed: Mutex::new(None),
            clock,
        };
        // Registered before it writes anything, so its events always have
        // an owner row whose lease can run out.
        store.renew_lease().await?;
        Ok(store)
    }

    /// How an attempt ended, with its event, inside `tx`.
    async fn end_attempt(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        attempt_id: i64,
        outcome: &AttemptOutcome,
        event: &Event,
    ) -> Result<(), StoreError> {
        let (state, provider_id, detail) = outcome.columns();
        sqlx::query(sql::FINISH_ATTEMPT)
            .bind(state)
            .bind(provider_id)
            .bind(detail)
            .bind(self.clock.now_ms())
            .bind(attempt_id)
            .execute(&mut **tx)
            .await?;
        self.insert_event(&mut **tx, event).await
    }

    /// An invoice's final status, unless it was closed meanwhile, with its
    /// events, inside `tx`.
    async fn end_invoice(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        key: &InvoiceKey,
        status: Status,
        events: &[Event],
    ) -> Result<(), StoreError> {
        sqlx::query(sql::FINISH_INVOICE)
            .bind(status.as_str())
            .bind(self.clock.now_ms())
            .bind(&key.biller_id)
            .bind(&key.invoice_id)
            .bind(key.revision)
            .execute(&mut **tx)
            .await?;
        for event in events {
            self.insert_event(&mut **tx, event).await?;
        }
        Ok(())
    }

    /// Queues an event, owned by this instance.
    async fn insert_event<'e, E: Executor<'e, Database = Postgres>>(
        &self,
        executor: E,
        event: &Event,
    ) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO outbox (event_json, owner, biller_id, invoice_id) VALUES ($1, $2, $3, $4)")
            .bind(event_json(event)?)
            .bind(&self.owner)
            .bind(&event.biller_id)
            .bind(&event.invoice_id)
            .execute(executor)
            .await?;
        Ok(())
    }

    /// [`Store::start_attempt`]; with `first_for` (the customer's key),
    /// the first attempt of a new invoice, which is recorded only when the
    /// customer has no stored choice and the address did not ask to stop
    /// (one statement checks both): `None` otherwise, nothing recorded.
    async fn record_attempt(
        &self,
        key: &InvoiceKey,
        channel: ChannelName,
        attempt: u32,
        paylink: &NewPaylink,
        step: Option<&str>,
        first_for: Option<&str>,
    ) -> Result<Option<AttemptStart>, StoreError> {
        let now = self.clock.now_ms();
        let mut tx = self.pool.begin().await?;
        // The row stays locked until commit, so a close waits for this
        // attempt to be recorded.
        let open = sqlx::query(sql::TOUCH_OPEN_INVOICE)
            .bind(now)
            .bind(&key.biller_id)
            .bind(&key.invoice_id)
            .bind(key.revision)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if open == 0 {
            return Ok(Some(AttemptStart::Closed));
        }
        if let Some(step) = step {
            sqlx::query(sql::TOUCH_STEP)
                .bind(now)
                .bind(&key.biller_id)
                .bind(&key.invoice_id)
                .bind(key.revision)
                .bind(step)
                .execute(&mut *tx)
                .await?;
        }
        if let Some(customer_key) = first_for {
            let otherwise: bool = sqlx::query_scalar(debtors::ROUTES_OTHERWISE)
                .bind(&key.biller_id)
                .bind(customer_key)
                .bind(suppression_scope(channel, &key.biller_id))
                .bind(channel.as_str())
                .bind(paylink.address_hash.as_deref().unwrap_or_default())
                .fetch_one(&mut *tx)
                .await?;
            if otherwise {
                tx.rollback().await?;
                return Ok(None);
            }
        } else if let Some(hash) = &paylink.address_hash {
            let suppressed: bool = sqlx::query_scalar(debtors::IS_SUPPRESSED)
                .bind(suppression_scope(channel, &key.biller_id))
                .bind(channel.as_str())
                .bind(hash)
                .fetch_one(&mut *tx)
                .await?;
            if suppressed {
                sqlx::query(
                    "INSERT INTO attempts (biller_id, invoice_id, revision, channel, attempt, state, started_ms,
                                           finished_ms, detail, step)
                     VALUES ($1, $2, $3, $4, $5, 'failed', $6, $6, $7, $8)",
                )
                .bind(&key.biller_id)
                .bind(&key.invoice_id)
                .bind(key.revision)
                .bind(channel.as_str())
                .bind(i64::from(attempt))
                .bind(now)
                .bind(super::SUPPRESSED_DETAIL)
                .bind(step)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                return Ok(Some(AttemptStart::Suppressed));
            }
        }
        // The number an SMS or WhatsApp message goes to is kept, hashed:
        // an inbound STOP names only the number (see `debtors::OWNERS`).
        let address_hash = paylink.address_hash.as_deref().filter(|_| remembers_address(channel));
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO attempts (biller_id, invoice_id, revision, channel, attempt, state, started_ms, step,
                                   address_hash)
             VALUES ($1, $2, $3, $4, $5, 'sending', $6, $7, $8) RETURNING id",
        )
        .bind(&key.biller_id)
        .bind(&key.invoice_id)
        .bind(key.revision)
        .bind(channel.as_str())
        .bind(i64::from(attempt))
        .bind(now)
        .bind(step)
        .bind(address_hash)
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO paylinks (token_hash, attempt_id, biller_id, invoice_id, revision, channel, created_ms, expires_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&paylink.token_hash)
        .bind(id)
        .bind(&key.biller_id)
        .bind(&key.invoice_id)
        .bind(key.revision)
        .bind(channel.as_str())
        .bind(now)
        .bind(paylink.expires_at_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(AttemptStart::Started(id)))
    }

    fn lease_ms(&self) -> i64 {
        i64::try_from(self.lease.as_millis()).unwrap_or(i64::MAX / 2).max(1)
    }

    /// Extends this instance's lease to a whole lease from now (registering
    /// it if it was forgotten), unless it was extended less than a tenth of a
    /// lease ago.
    async fn renew_lease(&self) -> Result<(), StoreError> {
        let last = *self.renewed.lock().unwrap_or_else(PoisonError::into_inner);
        if last.is_some_and(|at| at.elapsed() < self.lease / 10) {
            return Ok(());
        }
        let now = Instant::now();
        sqlx::query(concat!(
            "INSERT INTO outbox_owners (owner, lease_until_ms) VALUES ($1, ",
            db_now_ms!(),
            " + $2) ON CONFLICT (owner) DO UPDATE SET lease_until_ms = EXCLUDED.lease_until_ms"
        ))
        .bind(&self.owner)
        .bind(self.lease_ms())
        .execute(&self.pool)
        .await?;
        if let Some(at) = last.filter(|at| now.duration_since(*at) >= self.lease) {
            warn!(
                owner = %self.owner,
                lapsed_after = ?now.duration_since(at),
                "this instance's outbox lease ran out; another instance may have taken its events over \
                 and publish again those that were in flight"
            );
        }
        *self.renewed.lock().unwrap_or_else(PoisonError::into_inner) = Some(now);
        Ok(())
    }

    /// Takes over the events of every owner whose lease ran out, and those
    /// of no owner. Locking the dead owner's row makes one instance take all
    /// its events; a concurrent taker skips it, and the conditions on each
    /// event are checked again on the row it would update, so no event
    /// changes hands twice.
    async fn take_over(&self) -> Result<(), StoreError> {
        let (from_dead, unowned, dead): (i64, i64, Option<String>) = sqlx::query_as(concat!(
            "WITH dead AS (
                 SELECT owner FROM outbox_owners o
                 WHERE lease_until_ms < ",
            db_now_ms!(),
            " AND owner <> $1 AND EXISTS (SELECT 1 FROM outbox WHERE outbox.owner = o.owner)
                 FOR UPDATE SKIP LOCKED),
             from_dead AS (
                 UPDATE outbox SET owner = $1 WHERE owner IN (SELECT owner FROM dead) RETURNING 1),
             unowned AS (
                 UPDATE outbox SET owner = $1 WHERE owner IS NULL RETURNING 1)
             SELECT (SELECT count(*) FROM from_dead), (SELECT count(*) FROM unowned),
                    (SELECT string_agg(owner, ', ') FROM dead)"
        ))
        .bind(&self.owner)
        .fetch_one(&self.pool)
        .await?;
        if from_dead > 0 {
            warn!(
                owner = %self.owner,
                events = from_dead,
                from = dead.as_deref().unwrap_or_default(),
                "took over the outbox events of instances whose lease ran out"
            );
        }
        if unowned > 0 {
            info!(owner = %self.owner, events = unowned, "took over outbox events that had no owner");
        }
        Ok(())
    }

    /// Waits for, then holds until the transaction ends, the lock on one
    /// invoice: every revision of it, whether or not a row exists yet. The
    /// length prefix keeps ("ab", "c") and ("a", "bc") apart; two invoices
    /// whose hashes collide only wait for each other.
    async fn lock_invoice(
        tx: &mut Transaction<'_, Postgres>,
        biller_id: &str,
        invoice_id: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended(length($1) || ':' || $1 || $2, $3))")
            .bind(biller_id)
            .bind(invoice_id)
            .bind(LOCK_SEED)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }
}

impl PostgresStore {
    /// `begin`, and with `join` [`Store::begin_combined`], in one transaction.
    async fn begin_in(
        &self,
        invoice: &Invoice,
        correlation: &Correlation,
        accepted: &Event,
        steps: &[PlannedStep],
        routed_by: &str,
        join: Option<&CombineJoin>,
    ) -> Result<(Begin, Option<GroupPlace>), StoreError> {
        let key = &invoice.key;
        let mut tx = self.pool.begin().await?;
        // Every begin and close of this invoice, in any instance, waits here
        // for the one before it to commit: what follows reads settled rows.
        Self::lock_invoice(&mut tx, &key.biller_id, &key.invoice_id).await?;
        let (closed, latest): (Option<String>, Option<i64>) = sqlx::query_as(sql::CLOSED_AND_LATEST)
            .bind(&key.biller_id)
            .bind(&key.invoice_id)
            .fetch_one(&mut *tx)
            .await?;
        if let Some(status) = closed {
            tx.rollback().await?;
            return Ok((
                Begin::Closed {
                    status: Status::parse(&status)?,
                },
                None,
            ));
        }
        if let Some(latest) = latest {
            if latest > key.revision {
                tx.rollback().await?;
                return Ok((Begin::Stale { latest }, None));
            }
            if latest == key.revision {
                let status: String = sqlx::query_scalar(sql::REVISION_STATUS)
                    .bind(&key.biller_id)
                    .bind(&key.invoice_id)
                    .bind(key.revision)
                    .fetch_one(&mut *tx)
                    .await?;
                let status = Status::parse(&status)?;
                let answer = if status == Status::Accepted {
                    let place = match join {
                        Some(_) => sqlx::query(sql::GROUP_OF)
                            .bind(&key.biller_id)
                            .bind(&key.invoice_id)
                            .bind(key.revision)
                            .fetch_optional(&mut *tx)
                            .await?
                            .map(|row| -> Result<GroupPlace, StoreError> {
                                Ok(GroupPlace {
                                    group_id: row.try_get(0)?,
                                    due_ms: row.try_get(1)?,
                                })
                            })
                            .transpose()?,
                        None => None,
                    };
                    let attempts = attempts_of(&mut *tx, key).await?;
                    (Begin::Resume { attempts }, place)
                } else {
                    (Begin::Duplicate { status }, None)
                };
                tx.rollback().await?;
                return Ok(answer);
            }
        }
        let now = self.clock.now_ms();
        let json = serde_json::to_string(invoice).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        sqlx::query(sql::SUPERSEDE_OLDER)
            .bind(now)
            .bind(&key.biller_id)
            .bind(&key.invoice_id)
            .bind(key.revision)
            .execute(&mut *tx)
            .await?;
        cancel_steps(&mut tx, &key.biller_id, &key.invoice_id, key.revision, REPLACED, now).await?;
        sqlx::query(sql::INSERT_INVOICE)
            .bind(&key.biller_id)
            .bind(&key.invoice_id)
            .bind(key.revision)
            .bind(json)
            .bind(&correlation.correlation_id)
            .bind(&correlation.message_id)
            .bind(now)
            .bind(invoice.customer_key())
            .bind(routed_by)
            .bind(&invoice.amount.currency)
            .bind(invoice.amount.minor)
            .execute(&mut *tx)
            .await?;
        let place = match join {
            None => {
                self.insert_event(&mut *tx, accepted).await?;
                None
            }
            Some(join) => {
                let row = sqlx::query(sql::JOIN_GROUP)
                    .bind(&join.new_group_id)
                    .bind(&key.biller_id)
                    .bind(invoice.customer_key())
                    .bind(&invoice.amount.currency)
                    .bind(now + join.window_ms)
                    .bind(now)
                    .fetch_one(&mut *tx)
                    .await?;
                let place = GroupPlace {
                    group_id: row.try_get(0)?,
                    due_ms: row.try_get(1)?,
                };
                sqlx::query(sql::SET_GROUP)
                    .bind(&place.group_id)
                    .bind(&key.biller_id)
                    .bind(&key.invoice_id)
                    .bind(key.revision)
                    .execute(&mut *tx)
                    .await?;
                self.insert_event(&mut *tx, &waiting_event(accepted, place.due_ms))
                    .await?;
                Some(place)
            }
        };
        insert_steps(&mut tx, key, steps, now).await?;
        tx.commit().await?;
        Ok((Begin::New, place))
    }
}

fn key_of(row: &PgRow, first: usize) -> Result<InvoiceKey, StoreError> {
    Ok(InvoiceKey {
        biller_id: row.try_get(first)?,
        invoice_id: row.try_get(first + 1)?,
        revision: row.try_get(first + 2)?,
    })
}

fn attempt_number(n: i64) -> Result<u32, StoreError> {
    u32::try_from(n).map_err(|_| StoreError::Corrupt(format!("attempt number {n} is out of range")))
}

/// A row of `FIND_INVOICES` or `INVOICES_RECEIVED`.
fn found_invoice(row: &PgRow) -> Result<FoundInvoice, StoreError> {
    Ok(FoundInvoice {
        status: Status::parse(row.try_get(2)?)?,
        received_ms: row.try_get(3)?,
        invoice: parse_invoice(row.try_get(4)?)?,
        erased: row.try_get::<Option<i64>, _>(5)?.is_some(),
    })
}

async fn attempts_of<'e, E: sqlx::Executor<'e, Database = Postgres>>(
    executor: E,
    key: &InvoiceKey,
) -> Result<Vec<AttemptRecord>, StoreError> {
    let rows = sqlx::query(
        "SELECT a.channel, a.attempt, a.state, a.step, a.finished_ms, COALESCE(p.clicks, 0) > 0
         FROM attempts a LEFT JOIN paylinks p ON p.attempt_id = a.id
         WHERE a.biller_id = $1 AND a.invoice_id = $2 AND a.revision = $3 ORDER BY a.id",
    )
    .bind(&key.biller_id)
    .bind(&key.invoice_id)
    .bind(key.revision)
    .fetch_all(executor)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(AttemptRecord {
                channel: parse_channel(row.try_get(0)?)?,
                attempt: attempt_number(row.try_get(1)?)?,
                state: parse_state(row.try_get(2)?),
                step: row.try_get(3)?,
                finished_ms: row.try_get(4)?,
                opened: row.try_get(5)?,
            })
        })
        .collect()
}

async fn insert_steps(
    tx: &mut sqlx::Transaction<'_, Postgres>,
    key: &InvoiceKey,
    steps: &[PlannedStep],
    now: i64,
) -> Result<(), StoreError> {
    for step in steps {
        let status = match step.skipped {
            Some(_) => StepStatus::Skipped,
            None => StepStatus::Planned,
        };
        sqlx::query(sql::INSERT_STEP)
            .bind(&key.biller_id)
            .bind(&key.invoice_id)
            .bind(key.revision)
            .bind(i64::from(step.seq))
            .bind(&step.journey)
            .bind(&step.name)
            .bind(status.as_str())
            .bind(step.due_ms)
            .bind(step.after_ms)
            .bind(step.skipped.as_ref().map(|_| now))
            .bind(&step.skipped)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

async fn cancel_steps(
    tx: &mut sqlx::Transaction<'_, Postgres>,
    biller_id: &str,
    invoice_id: &str,
    below_revision: i64,
    why: &str,
    now: i64,
) -> Result<(), StoreError> {
    sqlx::query(sql::CANCEL_STEPS)
        .bind(now)
        .bind(why)
        .bind(biller_id)
        .bind(invoice_id)
        .bind(below_revision)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

#[async_trait]
impl Store for PostgresStore {
    async fn begin(
        &self,
        invoice: &Invoice,
        correlation: &Correlation,
        accepted: &Event,
        steps: &[PlannedStep],
        routed_by: &str,
    ) -> Result<Begin, StoreError> {
        Ok(self
            .begin_in(invoice, correlation, accepted, steps, routed_by, None)
            .await?
            .0)
    }

    async fn start_attempt(
        &self,
        key: &InvoiceKey,
        channel: ChannelName,
        attempt: u32,
        paylink: &NewPaylink,
        step: Option<&str>,
    ) -> Result<AttemptStart, StoreError> {
        let started = self.record_attempt(key, channel, attempt, paylink, step, None).await?;
        // Without `first_for` the answer is always there.
        Ok(started.unwrap_or(AttemptStart::Closed))
    }

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
        // As the trait's default, with the preference and the stop read by
        // one statement in the attempt's own transaction (as every later
        // send reads the stop). A failure here leaves an accepted invoice,
        // resumed the ordinary way.
        let customer_key = invoice.customer_key();
        let attempt = match self
            .record_attempt(&invoice.key, channel, 1, paylink, None, Some(&customer_key))
            .await
        {
            Ok(Some(AttemptStart::Started(id))) => Some(id),
            _ => None,
        };
        Ok((begun, attempt))
    }

    async fn retry_attempt_later(&self, attempt_id: i64, detail: &str) -> Result<(), StoreError> {
        sqlx::query(sql::RETRY_ATTEMPT)
            .bind(detail)
            .bind(self.clock.now_ms())
            .bind(attempt_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn finish_attempt(&self, attempt_id: i64, outcome: &AttemptOutcome, event: &Event) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        self.end_attempt(&mut tx, attempt_id, outcome, event).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn finish_sent(
        &self,
        attempt_id: i64,
        provider_message_id: Option<&str>,
        event: &Event,
        key: &InvoiceKey,
    ) -> Result<(), StoreError> {
        let outcome = AttemptOutcome::Sent {
            provider_message_id: provider_message_id.map(str::to_owned),
        };
        let mut tx = self.pool.begin().await?;
        self.end_attempt(&mut tx, attempt_id, &outcome, event).await?;
        self.end_invoice(&mut tx, key, Status::Sent, &[]).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn finish_invoice(&self, key: &InvoiceKey, status: Status, events: &[Event]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        self.end_invoice(&mut tx, key, status, events).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn close(
        &self,
        biller_id: &str,
        invoice_id: &str,
        status: Status,
        event: &Event,
    ) -> Result<bool, StoreError> {
        let now = self.clock.now_ms();
        let mut tx = self.pool.begin().await?;
        // The same lock as `begin`: no revision is accepted between the
        // closure and the status change below.
        Self::lock_invoice(&mut tx, biller_id, invoice_id).await?;
        let inserted = sqlx::query(sql::INSERT_CLOSURE)
            .bind(biller_id)
            .bind(invoice_id)
            .bind(status.as_str())
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if inserted == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        sqlx::query(sql::CLOSE_REVISIONS)
            .bind(status.as_str())
            .bind(now)
            .bind(biller_id)
            .bind(invoice_id)
            .execute(&mut *tx)
            .await?;
        cancel_steps(&mut tx, biller_id, invoice_id, i64::MAX, status.as_str(), now).await?;
        let latest: Option<(i64, String)> = sqlx::query_as(sql::LATEST_REVISION)
            .bind(biller_id)
            .bind(invoice_id)
            .fetch_optional(&mut *tx)
            .await?;
        let clicked: Option<String> = sqlx::query_scalar(
            "SELECT channel FROM paylinks WHERE biller_id = $1 AND invoice_id = $2 AND clicks > 0
             ORDER BY first_click_ms DESC NULLS LAST, attempt_id DESC LIMIT 1",
        )
        .bind(biller_id)
        .bind(invoice_id)
        .fetch_optional(&mut *tx)
        .await?;
        let event = closing_event(
            event,
            status,
            latest.as_ref().map(|(revision, json)| (*revision, json.as_str())),
            clicked.as_deref(),
        )?;
        self.insert_event(&mut *tx, &event).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn record_event(&self, event: &Event) -> Result<(), StoreError> {
        self.insert_event(&self.pool, event).await
    }

    async fn paylink(&self, token_hash: &str) -> Result<Option<PaylinkRecord>, StoreError> {
        // The link's revision, and the highest revision above it if any
        // (one row of NULLs when there is none).
        let row = sqlx::query(
            "SELECT p.biller_id, p.invoice_id, p.revision, p.channel, p.expires_ms, i.status, i.invoice_json,
                    i.correlation_id, i.message_id, n.status, n.invoice_json, i.erased_ms IS NOT NULL
             FROM paylinks p JOIN invoices i
               ON i.biller_id = p.biller_id AND i.invoice_id = p.invoice_id AND i.revision = p.revision
             LEFT JOIN invoices n
               ON n.biller_id = p.biller_id AND n.invoice_id = p.invoice_id AND n.revision > p.revision
             WHERE p.token_hash = $1
             ORDER BY n.revision DESC NULLS LAST LIMIT 1",
        )
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let newest: Option<(String, String)> = row.try_get::<Option<String>, _>(9)?.zip(row.try_get(10)?);
        Ok(Some(PaylinkRecord {
            key: key_of(&row, 0)?,
            channel: parse_channel(row.try_get(3)?)?,
            expires_at_ms: row.try_get(4)?,
            status: Status::parse(row.try_get(5)?)?,
            invoice: parse_invoice(row.try_get(6)?)?,
            correlation: Correlation {
                correlation_id: row.try_get(7)?,
                message_id: row.try_get(8)?,
            },
            newest: newest_revision(newest)?,
            erased: row.try_get(11)?,
        }))
    }

    async fn record_click(&self, token_hash: &str, event: &Event) -> Result<i64, StoreError> {
        let mut tx = self.pool.begin().await?;
        // The row lock orders concurrent clicks: each sees its own count.
        let clicks: i64 = sqlx::query_scalar(
            "UPDATE paylinks SET clicks = clicks + 1, first_click_ms = COALESCE(first_click_ms, $1)
             WHERE token_hash = $2 RETURNING clicks",
        )
        .bind(self.clock.now_ms())
        .bind(token_hash)
        .fetch_one(&mut *tx)
        .await?;
        if clicks == 1 {
            self.insert_event(&mut *tx, event).await?;
        }
        tx.commit().await?;
        Ok(clicks)
    }

    async fn outbox(&self, limit: u32) -> Result<Vec<OutboxEntry>, StoreError> {
        self.renew_lease().await?;
        self.take_over().await?;
        // Only this owner's events, and of those none that has an older
        // event of the same invoice under another owner: that one goes first.
        let rows = sqlx::query(
            "SELECT o.id, o.event_json FROM outbox o
             WHERE o.owner = $1
               AND NOT EXISTS (
                   SELECT 1 FROM outbox p
                   WHERE p.biller_id = o.biller_id AND p.invoice_id = o.invoice_id
                     AND p.id < o.id AND p.owner IS DISTINCT FROM $1)
             ORDER BY o.id LIMIT $2",
        )
        .bind(&self.owner)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| OutboxEntry::new(row.try_get(0)?, row.try_get(1)?))
            .collect()
    }

    async fn outbox_done(&self, ids: &[i64]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        // An event taken over meanwhile is no longer ours to forget: its new
        // owner publishes it again (at-least-once).
        sqlx::query("DELETE FROM outbox WHERE id = ANY($1) AND owner = $2")
            .bind(ids)
            .bind(&self.owner)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query(sql::PING).execute(&self.pool).await?;
        Ok(())
    }

    async fn gauges(&self) -> Result<StoreGauges, StoreError> {
        let row: (i64, i64, i64, i64, i64, i64, i64) = sqlx::query_as(sql::GAUGES).fetch_one(&self.pool).await?;
        let (a, b, c, d, e, f, g) = row;
        Ok(store_gauges([a, b, c, d, e, f, g]))
    }

    /// Ends this instance's lease now, so the next round of another
    /// instance takes its events over. Should this handle publish again, its
    /// next round takes a new lease (`renew_lease` no longer skips).
    async fn release_outbox(&self) -> Result<(), StoreError> {
        sqlx::query("UPDATE outbox_owners SET lease_until_ms = 0 WHERE owner = $1")
            .bind(&self.owner)
            .execute(&self.pool)
            .await?;
        *self.renewed.lock().unwrap_or_else(PoisonError::into_inner) = None;
        Ok(())
    }

    async fn invoice(&self, key: &InvoiceKey) -> Result<Option<StoredInvoice>, StoreError> {
        let row = sqlx::query(sql::INVOICE)
            .bind(&key.biller_id)
            .bind(&key.invoice_id)
            .bind(key.revision)
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(StoredInvoice {
            status: Status::parse(row.try_get(0)?)?,
            invoice: parse_invoice(row.try_get(1)?)?,
            correlation: Correlation {
                correlation_id: row.try_get(2)?,
                message_id: row.try_get(3)?,
            },
            attempts: attempts_of(&self.pool, key).await?,
        }))
    }

    async fn attempt_by_provider_id(
        &self,
        channel: ChannelName,
        provider_message_id: &str,
    ) -> Result<Option<AttemptRef>, StoreError> {
        let row = sqlx::query(sql::ATTEMPT_BY_PROVIDER_ID)
            .bind(channel.as_str())
            .bind(provider_message_id)
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(AttemptRef {
            attempt_id: row.try_get(0)?,
            key: key_of(&row, 1)?,
            channel,
            attempt: attempt_number(row.try_get(4)?)?,
            state: parse_state(row.try_get(5)?),
            correlation: Correlation {
                correlation_id: row.try_get(6)?,
                message_id: row.try_get(7)?,
            },
            metadata: parse_invoice(row.try_get(8)?)?.metadata,
            step: row.try_get(9)?,
        }))
    }

    async fn attempts_by_provider_id(
        &self,
        channel: ChannelName,
        provider_message_id: &str,
    ) -> Result<Vec<AttemptRef>, StoreError> {
        let rows = sqlx::query(sql::ATTEMPTS_BY_PROVIDER_ID)
            .bind(channel.as_str())
            .bind(provider_message_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                Ok(AttemptRef {
                    attempt_id: row.try_get(0)?,
                    key: key_of(row, 1)?,
                    channel,
                    attempt: attempt_number(row.try_get(4)?)?,
                    state: parse_state(row.try_get(5)?),
                    correlation: Correlation {
                        correlation_id: row.try_get(6)?,
                        message_id: row.try_get(7)?,
                    },
                    metadata: parse_invoice(row.try_get(8)?)?.metadata,
                    step: row.try_get(9)?,
                })
            })
            .collect()
    }

    async fn record_reached(&self, attempt_id: i64, reached: Reached, event: &Event) -> Result<bool, StoreError> {
        let statement = match reached {
            Reached::Delivered => sql::DELIVERED,
            Reached::Read => sql::READ,
        };
        let mut tx = self.pool.begin().await?;
        // A second report waits for the first's row lock, then finds the
        // column set and changes nothing.
        let changed = sqlx::query(statement)
            .bind(self.clock.now_ms())
            .bind(attempt_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if changed == 1 {
            self.insert_event(&mut *tx, event).await?;
        }
        tx.commit().await?;
        Ok(changed == 1)
    }

    async fn history(&self, biller_id: &str, invoice_id: &str) -> Result<Option<History>, StoreError> {
        let now = self.clock.now_ms();
        let revisions = sqlx::query(sql::HISTORY_REVISIONS)
            .bind(biller_id)
            .bind(invoice_id)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|row| {
                Ok(RevisionRow {
                    revision: row.try_get(0)?,
                    status: row.try_get(1)?,
                    received_ms: row.try_get(2)?,
                    held_until_ms: row.try_get(3)?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let attempts = sqlx::query(sql::HISTORY_ATTEMPTS)
            .bind(biller_id)
            .bind(invoice_id)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|row| {
                Ok(AttemptRow {
                    revision: row.try_get(0)?,
                    channel: row.try_get(1)?,
                    state: row.try_get(2)?,
                    detail: row.try_get(3)?,
                    started_ms: row.try_get(4)?,
                    finished_ms: row.try_get(5)?,
                    delivered_ms: row.try_get(6)?,
                    read_ms: row.try_get(7)?,
                    provider_message_id: row.try_get(8)?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let clicks = sqlx::query(
            "SELECT revision, channel, first_click_ms, clicks FROM paylinks
             WHERE biller_id = $1 AND invoice_id = $2 AND clicks > 0",
        )
        .bind(biller_id)
        .bind(invoice_id)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|row| {
            Ok(ClickRow {
                revision: row.try_get(0)?,
                channel: row.try_get(1)?,
                first_click_ms: row.try_get(2)?,
                clicks: row.try_get(3)?,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
        let closure: Option<(String, i64)> = sqlx::query_as(sql::CLOSURE)
            .bind(biller_id)
            .bind(invoice_id)
            .fetch_optional(&self.pool)
            .await?;
        build_history(
            biller_id,
            invoice_id,
            &revisions,
            &attempts,
            &clicks,
            closure.as_ref().map(|(status, at)| (status.as_str(), *at)),
            now,
        )
    }

    async fn find_invoices(
        &self,
        biller_id: &str,
        invoice_id: &str,
        customer: &str,
        limit: u32,
    ) -> Result<Vec<FoundInvoice>, StoreError> {
        let rows = sqlx::query(sql::FIND_INVOICES)
            .bind(biller_id)
            .bind(invoice_id)
            .bind(customer)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(found_invoice).collect()
    }

    async fn invoices_received(
        &self,
        biller_id: &str,
        from_ms: i64,
        to_ms: i64,
        limit: u32,
    ) -> Result<Vec<FoundInvoice>, StoreError> {
        let rows = sqlx::query(sql::INVOICES_RECEIVED)
            .bind(biller_id)
            .bind(from_ms)
            .bind(to_ms)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(found_invoice).collect()
    }

    async fn hold(&self, key: &InvoiceKey, until_ms: i64) -> Result<(), StoreError> {
        sqlx::query(sql::HOLD)
            .bind(until_ms)
            .bind(self.clock.now_ms())
            .bind(&key.biller_id)
            .bind(&key.invoice_id)
            .bind(key.revision)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn due_holds(&self, now_ms: i64, limit: u32) -> Result<Vec<InvoiceKey>, StoreError> {
        let rows = sqlx::query(sql::DUE_HOLDS)
            .bind(now_ms)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|row| key_of(row, 0)).collect()
    }

    async fn claim_due_holds(&self, now_ms: i64, limit: u32) -> Result<Vec<InvoiceKey>, StoreError> {
        let rows = sqlx::query(sql::CLAIM_DUE_HOLDS)
            .bind(now_ms)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|row| key_of(row, 0)).collect()
    }

    async fn claim_due_steps(&self, now_ms: i64, idle_ms: i64, limit: u32) -> Result<Vec<DueStep>, StoreError> {
        let rows = sqlx::query(sql::CLAIM_DUE_STEPS)
            .bind(now_ms)
            .bind(now_ms - idle_ms)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                Ok(DueStep {
                    key: key_of(row, 0)?,
                    seq: attempt_number(row.try_get(3)?)?,
                    journey: row.try_get(4)?,
                    name: row.try_get(5)?,
                    due_ms: row.try_get(6)?,
                })
            })
            .collect()
    }

    async fn reschedule_step(&self, key: &InvoiceKey, seq: u32, due_ms: i64, detail: &str) -> Result<(), StoreError> {
        sqlx::query(sql::RESCHEDULE_STEP)
            .bind(due_ms)
            .bind(detail)
            .bind(&key.biller_id)
            .bind(&key.invoice_id)
            .bind(key.revision)
            .bind(i64::from(seq))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn hold_step(
        &self,
        key: &InvoiceKey,
        seq: u32,
        until_ms: i64,
        held: HeldStep,
        detail: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(sql::HOLD_STEP)
            .bind(until_ms)
            .bind(held.as_str())
            .bind(detail)
            .bind(&key.biller_id)
            .bind(&key.invoice_id)
            .bind(key.revision)
            .bind(i64::from(seq))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn finish_step(
        &self,
        key: &InvoiceKey,
        seq: u32,
        status: StepStatus,
        detail: Option<&str>,
        events: &[Event],
    ) -> Result<bool, StoreError> {
        let now = self.clock.now_ms();
        let mut tx = self.pool.begin().await?;
        let changed = sqlx::query(sql::FINISH_STEP)
            .bind(status.as_str())
            .bind(now)
            .bind(detail)
            .bind(&key.biller_id)
            .bind(&key.invoice_id)
            .bind(key.revision)
            .bind(i64::from(seq))
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if changed == 1 {
            for event in events {
                self.insert_event(&mut *tx, event).await?;
            }
        }
        tx.commit().await?;
        Ok(changed == 1)
    }

    async fn steps(&self, biller_id: &str, invoice_id: &str) -> Result<Vec<StepRecord>, StoreError> {
        let rows = sqlx::query(sql::STEPS_OF)
            .bind(biller_id)
            .bind(invoice_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                step_record(
                    row.try_get(0)?,
                    row.try_get(1)?,
                    row.try_get(2)?,
                    row.try_get(3)?,
                    row.try_get(4)?,
                    row.try_get(5)?,
                    row.try_get(6)?,
                    row.try_get(7)?,
                    row.try_get(8)?,
                )
            })
            .collect()
    }

    async fn next_step(&self) -> Result<Option<i64>, StoreError> {
        Ok(sqlx::query_scalar(sql::NEXT_STEP).fetch_one(&self.pool).await?)
    }

    async fn messages_to_customer(&self, customer: &str, since_ms: i64) -> Result<u32, StoreError> {
        let n: i64 = sqlx::query_scalar(sql::MESSAGES_TO_CUSTOMER)
            .bind(customer)
            .bind(since_ms)
            .fetch_one(&self.pool)
            .await?;
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    }

    async fn next_hold(&self) -> Result<Option<i64>, StoreError> {
        Ok(sqlx::query_scalar(sql::NEXT_HOLD).fetch_one(&self.pool).await?)
    }

    async fn claim(&self, key: &InvoiceKey, now_ms: i64, idle_ms: i64) -> Result<bool, StoreError> {
        let claimed = sqlx::query(sql::CLAIM)
            .bind(now_ms)
            .bind(&key.biller_id)
            .bind(&key.invoice_id)
            .bind(key.revision)
            .bind(now_ms - idle_ms)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(claimed == 1)
    }

    async fn claim_stale(&self, now_ms: i64, idle_ms: i64, limit: u32) -> Result<Vec<InvoiceKey>, StoreError> {
        let rows = sqlx::query(sql::CLAIM_STALE)
            .bind(now_ms)
            .bind(now_ms - idle_ms)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|row| key_of(row, 0)).collect()
    }

    async fn erase_customer(&self, biller_id: &str, customer: &str, erased: &Event) -> Result<Erasure, StoreError> {
        self.erase_customer_now(biller_id, customer, erased).await
    }

    async fn erase_expired(&self, before_ms: i64, limit: u32) -> Result<Erasure, StoreError> {
        self.erase_expired_now(before_ms, limit).await
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
        self.begin_in(invoice, correlation, accepted, steps, routed_by, Some(join))
            .await
    }

    async fn claim_due_groups(&self, now_ms: i64, idle_ms: i64, limit: u32) -> Result<Vec<DueGroup>, StoreError> {
        // The claim commits on its own: an invoice joining the group
        // meanwhile waited for the group's row, and is either in it (its
        // membership committed before the claim) or in a new group.
        let rows = sqlx::query(sql::CLAIM_DUE_GROUPS)
            .bind(now_ms)
            .bind(now_ms - idle_ms)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        let mut groups = Vec::with_capacity(rows.len());
        for row in rows {
            let id: String = row.try_get(0)?;
            let members = sqlx::query(sql::GROUP_MEMBERS)
                .bind(&id)
                .fetch_all(&self.pool)
                .await?
                .iter()
                .map(|row| key_of(row, 0))
                .collect::<Result<Vec<_>, _>>()?;
            groups.push(DueGroup {
                id,
                biller_id: row.try_get(1)?,
                due_ms: row.try_get(2)?,
                members,
            });
        }
        groups.sort_by_key(|g| g.due_ms);
        Ok(groups)
    }

    async fn hold_group(&self, group_id: &str, until_ms: i64) -> Result<(), StoreError> {
        sqlx::query(sql::HOLD_GROUP)
            .bind(until_ms)
            .bind(group_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn finish_group(&self, group_id: &str) -> Result<(), StoreError> {
        sqlx::query(sql::FINISH_GROUP)
            .bind(group_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn next_group(&self) -> Result<Option<i64>, StoreError> {
        Ok(sqlx::query_scalar(sql::NEXT_GROUP).fetch_one(&self.pool).await?)
    }

    async fn add_combined_link(
        &self,
        group_id: &str,
        channel: ChannelName,
        paylink: &NewPaylink,
        listed: &[InvoiceKey],
    ) -> Result<(), StoreError> {
        let listed: Vec<(&str, i64)> = listed.iter().map(|k| (k.invoice_id.as_str(), k.revision)).collect();
        let listed = serde_json::to_string(&listed).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        sqlx::query(sql::INSERT_COMBINED_LINK)
            .bind(&paylink.token_hash)
            .bind(group_id)
            .bind(channel.as_str())
            .bind(paylink.expires_at_ms)
            .bind(listed)
            .bind(self.clock.now_ms())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn claim_customer_steps(
        &self,
        day: &CustomerDay,
        now_ms: i64,
        idle_ms: i64,
    ) -> Result<Vec<DueStep>, StoreError> {
        let rows = sqlx::query(CLAIM_CUSTOMER_STEPS)
            .bind(now_ms)
            .bind(now_ms - idle_ms)
            .bind(&day.biller_id)
            .bind(&day.customer)
            .bind(&day.currency)
            .bind(day.from_ms)
            .bind(day.to_ms)
            .fetch_all(&self.pool)
            .await?;
        let mut steps = rows
            .iter()
            .map(|row| {
                Ok(DueStep {
                    key: key_of(row, 0)?,
                    seq: attempt_number(row.try_get(3)?)?,
                    journey: row.try_get(4)?,
                    name: row.try_get(5)?,
                    due_ms: row.try_get(6)?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        steps.sort_by(|a, b| (a.due_ms, &a.key.invoice_id, a.seq).cmp(&(b.due_ms, &b.key.invoice_id, b.seq)));
        Ok(steps)
    }

    async fn stats(&self, query: &StatsQuery) -> Result<Stats, StoreError> {
        self.read_stats(query).await
    }

    async fn add_reminder_group(&self, group_id: &str, day: &CustomerDay) -> Result<(), StoreError> {
        sqlx::query(sql::INSERT_REMINDER_GROUP)
            .bind(group_id)
            .bind(&day.biller_id)
            .bind(&day.customer)
            .bind(&day.currency)
            .bind(self.clock.now_ms())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn combined_link(&self, token_hash: &str) -> Result<Option<CombinedLinkRecord>, StoreError> {
        let Some(link) = sqlx::query(sql::COMBINED_LINK)
            .bind(token_hash)
            .fetch_optional(&self.pool)
            .await?
        else {
            return Ok(None);
        };
        let group_id: String = link.try_get(0)?;
        let channel: String = link.try_get(1)?;
        let listed: String = link.try_get(3)?;
        let rows = sqlx::query(sql::GROUP_INVOICES)
            .bind(&group_id)
            .fetch_all(&self.pool)
            .await?;
        let mut invoices = Vec::new();
        for (invoice_id, revision) in parse_listed(&listed)? {
            for row in &rows {
                let key = key_of(row, 0)?;
                if key.invoice_id != invoice_id || key.revision != revision {
                    continue;
                }
                let status: String = row.try_get(3)?;
                let json: String = row.try_get(4)?;
                invoices.push(LinkedInvoice {
                    key,
                    status: Status::parse(&status)?,
                    invoice: parse_invoice(&json)?,
                    correlation: Correlation {
                        correlation_id: row.try_get(5)?,
                        message_id: row.try_get(6)?,
                    },
                });
            }
        }
        Ok(Some(CombinedLinkRecord {
            group_id,
            channel: parse_channel(&channel)?,
            expires_at_ms: link.try_get(2)?,
            invoices,
        }))
    }

    async fn fail_after_send(&self, attempt_id: i64, detail: &str, event: &Event) -> Result<bool, StoreError> {
        let now = self.clock.now_ms();
        let mut tx = self.pool.begin().await?;
        // Only one report finds the attempt still `sent`: a concurrent one
        // waits for this row lock and then matches nothing.
        let failed = sqlx::query(sql::FAIL_SENT_ATTEMPT)
            .bind(detail)
            .bind(now)
            .bind(attempt_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if failed == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        sqlx::query(sql::REOPEN_INVOICE_OF_ATTEMPT)
            .bind(now)
            .bind(attempt_id)
            .execute(&mut *tx)
            .await?;
        self.insert_event(&mut *tx, event).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn debtor(
        &self,
        biller_id: &str,
        customer_key: &str,
        addresses: &[(ChannelName, String)],
    ) -> Result<Profile, StoreError> {
        let preference: Option<(String, String)> = sqlx::query_as(debtors::PREFERENCE)
            .bind(biller_id)
            .bind(customer_key)
            .fetch_optional(&self.pool)
            .await?;
        let mut profile = Profile::default();
        if let Some((channels, stopped)) = preference {
            profile.preferred = Some(split_channels(&channels));
            profile.stopped = split_channels(&stopped);
        }
        for (channel, hash) in addresses {
            let suppressed: bool = sqlx::query_scalar(debtors::IS_SUPPRESSED)
                .bind(suppression_scope(*channel, biller_id))
                .bind(channel.as_str())
                .bind(hash)
                .fetch_one(&self.pool)
                .await?;
            if suppressed {
                profile.suppressed.push(*channel);
            }
        }
        Ok(profile)
    }

    async fn set_preferences(
        &self,
        biller_id: &str,
        customer_key: &str,
        channels: &[ChannelName],
        stopped: &[ChannelName],
        event: &Event,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(debtors::UPSERT_PREFERENCE)
            .bind(biller_id)
            .bind(customer_key)
            .bind(join_channels(channels))
            .bind(join_channels(stopped))
            .bind(self.clock.now_ms())
            .execute(&mut *tx)
            .await?;
        self.insert_event(&mut *tx, event).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn suppress(&self, change: &SuppressionChange) -> Result<bool, StoreError> {
        let scope = change.scope();
        let mut tx = self.pool.begin().await?;
        let changed = match change.reply {
            Reply::Stop => sqlx::query(debtors::INSERT_SUPPRESSION)
                .bind(scope)
                .bind(change.channel.as_str())
                .bind(&change.address_hash)
                .bind(&change.reason)
                .bind(self.clock.now_ms())
                .execute(&mut *tx)
                .await?
                .rows_affected(),
            Reply::Start => sqlx::query(debtors::DELETE_SUPPRESSION)
                .bind(scope)
                .bind(change.channel.as_str())
                .bind(&change.address_hash)
                .execute(&mut *tx)
                .await?
                .rows_affected(),
        };
        if changed == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        let remembered: Vec<(String, String, Option<String>, String, i64)> = sqlx::query_as(debtors::OWNERS)
            .bind(change.channel.as_str())
            .bind(&change.address_hash)
            .bind(scope)
            .fetch_all(&mut *tx)
            .await?;
        let remembered = remembered
            .into_iter()
            .map(|(biller_id, customer_key, customer_id, invoice_id, _)| Owner {
                biller_id,
                customer_key,
                customer_id,
                invoice_id,
            })
            .collect();
        for owner in change.told(remembered) {
            self.insert_event(&mut *tx, &change.event(owner)).await?;
        }
        tx.commit().await?;
        Ok(true)
    }
}
