//! The embedded store: one SQLite file in WAL mode, owned by one thread.
//!
//! All calls go through [`writer::Writer`], which runs them on the thread
//! that owns the connection and commits concurrent calls together (see its
//! module doc). Within this process that thread serialises every call, so
//! the decisions that must happen once (a key seen as new, a close, a
//! fallback) cannot race; other processes on the same file are kept out by
//! `BEGIN IMMEDIATE`, which takes SQLite's one write lock first.

mod checkpoint;
mod erase;
mod stats;
mod writer;

use crate::domain::Status;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, Row};

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
use crate::domain::debtor::{join_channels, remembers_address, split_channels, Profile, Reply};
use crate::domain::ChannelName;
use crate::domain::InvoiceKey;
use crate::events::{Correlation, Event};
use crate::invoice::Invoice;
use writer::Writer;

/// The schema, one step per file; `PRAGMA user_version` counts the steps applied.
pub(super) const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/sqlite/0001_init.sql"),
    include_str!("../migrations/sqlite/0002_delivery.sql"),
    include_str!("../migrations/sqlite/0003_holds.sql"),
    include_str!("../migrations/sqlite/0004_unfinished.sql"),
    include_str!("../migrations/sqlite/0005_paylinks_on_attempts.sql"),
    include_str!("../migrations/sqlite/0006_journey_steps.sql"),
    include_str!("../migrations/sqlite/0007_debtors.sql"),
    include_str!("../migrations/sqlite/0008_erasure.sql"),
    include_str!("../migrations/sqlite/0009_combine.sql"),
    include_str!("../migrations/sqlite/0010_gauges.sql"),
    include_str!("../migrations/sqlite/0011_stats.sql"),
    include_str!("../migrations/sqlite/0012_attempt_addresses.sql"),
];

/// How long a call waits for another process's write lock on the file.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

pub struct SqliteStore {
    writer: Writer,
    /// The database file, which [`Store::stats`] reads on a connection of its own.
    path: String,
    _checkpoints: checkpoint::Checkpointer,
    /// Stamps every row; read by the caller, so a job that runs twice (see
    /// [`writer`]) writes the same time both times.
    clock: Arc<dyn Clock>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at a `sqlite://PATH` URL and
    /// brings its schema up to date. Rows are stamped with `clock`'s time.
    pub async fn open(url: &str, clock: Arc<dyn Clock>) -> Result<SqliteStore, StoreError> {
        let path = url.strip_prefix("sqlite://").unwrap_or(url);
        let path = path.split_once('?').map_or(path, |(p, _)| p).to_owned();
        Self::open_path(path, checkpoint::INTERVAL, clock).await
    }

    /// [`SqliteStore::open`] on a file path, checkpointing every `interval`.
    async fn open_path(path: String, interval: Duration, clock: Arc<dyn Clock>) -> Result<SqliteStore, StoreError> {
        let file = path.clone();
        let opened = tokio::task::spawn_blocking(move || {
            let conn = open_connection(&path)?;
            let checkpoints = checkpoint::Checkpointer::start(&path, BUSY_TIMEOUT, interval)?;
            Ok::<_, StoreError>((conn, checkpoints))
        });
        let (conn, checkpoints) = opened
            .await
            .map_err(|e| StoreError::Unavailable(format!("opening the SQLite file failed: {e}")))??;
        Ok(SqliteStore {
            writer: Writer::start(conn)?,
            path: file,
            _checkpoints: checkpoints,
            clock,
        })
    }
}

/// Creates `dir` and any missing parents, readable by this user only: the
/// database holds customers' contact details.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Creates an empty database file readable by this user only, unless it
/// exists (its mode is then the operator's). SQLite gives the WAL and
/// shared-memory files the database file's mode.
fn create_private_file(path: &str) -> std::io::Result<()> {
    if path == ":memory:" || path.starts_with("file:") {
        return Ok(());
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path).map(drop)
}

fn open_connection(path: &str) -> Result<Connection, StoreError> {
    if path.is_empty() {
        return Err(StoreError::Url(
            "sqlite:// needs a file path, e.g. sqlite://var/payrelay.db".into(),
        ));
    }
    if let Some(dir) = Path::new(path).parent() {
        if !dir.as_os_str().is_empty() {
            create_private_dir(dir)
                .map_err(|e| StoreError::Corrupt(format!("cannot create the folder {}: {e}", dir.display())))?;
        }
    }
    create_private_file(path)
        .map_err(|e| StoreError::Corrupt(format!("cannot create the database file {path}: {e}")))?;
    let mut conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Corrupt(format!(
            "SQLite refused WAL mode (journal_mode is {mode}); is the file on a network share?"
        )));
    }
    // NORMAL in WAL mode survives a process crash; only power loss can
    // undo the last transactions.
    conn.execute_batch("PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;")?;
    // 16 MB of page cache (the default is 2 MB): the indexes of a busy day
    // stay in memory instead of being read back from the file.
    // No checkpoints in commits: a thread of their own runs them (see
    // `checkpoint`). After a checkpoint the WAL file is cut back to 64 MB.
    conn.execute_batch(
        "PRAGMA cache_size = -16384; PRAGMA temp_store = MEMORY; PRAGMA wal_autocheckpoint = 0; PRAGMA journal_size_limit = 67108864;",
    )?;
    conn.set_prepared_statement_cache_capacity(64);
    migrate(&mut conn)?;
    Ok(conn)
}

/// Applies the schema steps the file has not seen, each in its own
/// transaction. Files made by earlier versions, whose steps sqlx recorded
/// in `_sqlx_migrations`, keep the steps they have.
fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mut version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version == 0 {
        let from_sqlx: bool = tx.query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations')",
            [],
            |r| r.get(0),
        )?;
        if from_sqlx {
            version = tx.query_row("SELECT COUNT(*) FROM _sqlx_migrations WHERE success", [], |r| r.get(0))?;
        }
    }
    let known = MIGRATIONS.len() as i64;
    if version > known {
        return Err(StoreError::Corrupt(format!(
            "the database has schema version {version}, newer than this payrelay knows ({known}); upgrade payrelay"
        )));
    }
    for step in &MIGRATIONS[version as usize..] {
        tx.execute_batch(step)?;
    }
    tx.execute_batch(&format!("PRAGMA user_version = {known}"))?;
    tx.commit()?;
    Ok(())
}

/// Queues an event, serialized by the caller: off the writer thread, and
/// once even when the job runs twice.
fn insert_event(conn: &Connection, event_json: &str) -> Result<(), StoreError> {
    conn.prepare_cached("INSERT INTO outbox (event_json) VALUES (?1)")?
        .execute([event_json])?;
    Ok(())
}

/// The rows of `FIND_INVOICES` or `INVOICES_RECEIVED`.
fn found_invoices(
    conn: &Connection,
    statement: &str,
    params: &[&dyn rusqlite::ToSql],
) -> Result<Vec<FoundInvoice>, StoreError> {
    let rows = conn
        .prepare_cached(statement)?
        .query_map(params, |row| {
            Ok((
                row.get::<_, String>(2)?,
                row.get::<_, i64>(3)?,
                row.get::<_, String>(4)?,
                row.get::<_, Option<i64>>(5)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    rows.into_iter()
        .map(|(status, received_ms, json, erased_ms)| {
            Ok(FoundInvoice {
                status: Status::parse(&status)?,
                received_ms,
                invoice: parse_invoice(&json)?,
                erased: erased_ms.is_some(),
            })
        })
        .collect()
}

fn attempts_of(conn: &Connection, key: &InvoiceKey) -> Result<Vec<AttemptRecord>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT channel, attempt, state, step, finished_ms, clicks > 0 FROM attempts
         WHERE biller_id = ?1 AND invoice_id = ?2 AND revision = ?3 ORDER BY id",
    )?;
    let rows = stmt.query_map(params![key.biller_id, key.invoice_id, key.revision], |row| {
        Ok((
            row.get::<_, String>(0)?,
            row.get::<_, i64>(1)?,
            row.get::<_, String>(2)?,
            row.get::<_, Option<String>>(3)?,
            row.get::<_, Option<i64>>(4)?,
            row.get::<_, bool>(5)?,
        ))
    })?;
    let mut attempts = Vec::new();
    for row in rows {
        let (channel, attempt, state, step, finished_ms, opened) = row?;
        attempts.push(AttemptRecord {
            channel: parse_channel(&channel)?,
            attempt: attempt_number(attempt)?,
            state: parse_state(&state),
            step,
            finished_ms,
            opened,
        });
    }
    Ok(attempts)
}

fn attempt_number(n: i64) -> Result<u32, StoreError> {
    u32::try_from(n).map_err(|_| StoreError::Corrupt(format!("attempt number {n} is out of range")))
}

fn key_of(row: &Row<'_>, first: usize) -> rusqlite::Result<InvoiceKey> {
    Ok(InvoiceKey {
        biller_id: row.get(first)?,
        invoice_id: row.get(first + 1)?,
        revision: row.get(first + 2)?,
    })
}

/// An invoice as `begin` stores it, serialized before it goes to the
/// writer thread (a string moves there; a cloned invoice was dozens of
/// allocations, freed on another thread).
struct NewInvoice {
    key: InvoiceKey,
    customer: String,
    json: String,
    correlation: Correlation,
    accepted: String,
    steps: Vec<PlannedStep>,
    routed_by: String,
    currency: String,
    amount_minor: i64,
}

impl NewInvoice {
    fn new(
        invoice: &Invoice,
        correlation: &Correlation,
        accepted: &Event,
        steps: &[PlannedStep],
        routed_by: &str,
    ) -> Result<NewInvoice, StoreError> {
        Ok(NewInvoice {
            key: invoice.key.clone(),
            customer: invoice.customer_key(),
            json: serde_json::to_string(invoice).map_err(|e| StoreError::Corrupt(e.to_string()))?,
            correlation: correlation.clone(),
            accepted: event_json(accepted)?,
            steps: steps.to_vec(),
            routed_by: routed_by.to_owned(),
            currency: invoice.amount.currency.clone(),
            amount_minor: invoice.amount.minor,
        })
    }
}

fn insert_steps(conn: &Connection, key: &InvoiceKey, steps: &[PlannedStep], now: i64) -> Result<(), StoreError> {
    for step in steps {
        let status = match step.skipped {
            Some(_) => StepStatus::Skipped,
            None => StepStatus::Planned,
        };
        conn.prepare_cached(sql::INSERT_STEP)?.execute(params![
            key.biller_id,
            key.invoice_id,
            key.revision,
            step.seq,
            step.journey,
            step.name,
            status.as_str(),
            step.due_ms,
            step.after_ms,
            step.skipped.as_ref().map(|_| now),
            step.skipped
        ])?;
    }
    Ok(())
}

fn cancel_steps(
    conn: &Connection,
    biller_id: &str,
    invoice_id: &str,
    below_revision: i64,
    why: &str,
    now: i64,
) -> Result<(), StoreError> {
    conn.prepare_cached(sql::CANCEL_STEPS)?
        .execute(params![now, why, biller_id, invoice_id, below_revision])?;
    Ok(())
}

/// The `begin` decision, on the writer thread.
fn begin(conn: &Connection, invoice: &NewInvoice, now: i64) -> Result<Begin, StoreError> {
    let begun = begin_unannounced(conn, invoice, now)?;
    if begun == Begin::New {
        insert_event(conn, &invoice.accepted)?;
    }
    Ok(begun)
}

/// `begin` for a biller that combines (see [`Store::begin_combined`]).
fn begin_combined(
    conn: &Connection,
    invoice: &NewInvoice,
    currency: &str,
    accepted: &Event,
    join: &CombineJoin,
    now: i64,
) -> Result<(Begin, Option<GroupPlace>), StoreError> {
    let key = &invoice.key;
    let begun = begin_unannounced(conn, invoice, now)?;
    match begun {
        Begin::New => {
            let (group_id, due_ms): (String, i64) = conn.prepare_cached(sql::JOIN_GROUP)?.query_row(
                params![
                    join.new_group_id,
                    key.biller_id,
                    invoice.customer,
                    currency,
                    now + join.window_ms,
                    now
                ],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            conn.prepare_cached(sql::SET_GROUP)?.execute(params![
                group_id,
                key.biller_id,
                key.invoice_id,
                key.revision
            ])?;
            insert_event(conn, &event_json(&waiting_event(accepted, due_ms))?)?;
            Ok((begun, Some(GroupPlace { group_id, due_ms })))
        }
        Begin::Resume { .. } => {
            let place = conn
                .prepare_cached(sql::GROUP_OF)?
                .query_row(params![key.biller_id, key.invoice_id, key.revision], |r| {
                    Ok(GroupPlace {
                        group_id: r.get(0)?,
                        due_ms: r.get(1)?,
                    })
                })
                .optional()?;
            Ok((begun, place))
        }
        other => Ok((other, None)),
    }
}

/// The `begin` decision with the invoice and its steps stored when new,
/// but not yet its `accepted` event.
fn begin_unannounced(conn: &Connection, invoice: &NewInvoice, now: i64) -> Result<Begin, StoreError> {
    let (key, correlation) = (&invoice.key, &invoice.correlation);
    let (closed, latest): (Option<String>, Option<i64>) = conn
        .prepare_cached(sql::CLOSED_AND_LATEST)?
        .query_row(params![key.biller_id, key.invoice_id], |r| Ok((r.get(0)?, r.get(1)?)))?;
    if let Some(status) = closed {
        return Ok(Begin::Closed {
            status: Status::parse(&status)?,
        });
    }
    if let Some(latest) = latest {
        if latest > key.revision {
            return Ok(Begin::Stale { latest });
        }
        if latest == key.revision {
            let status: String = conn
                .prepare_cached(sql::REVISION_STATUS)?
                .query_row(params![key.biller_id, key.invoice_id, key.revision], |r| r.get(0))?;
            let status = Status::parse(&status)?;
            if status != Status::Accepted {
                return Ok(Begin::Duplicate { status });
            }
            return Ok(Begin::Resume {
                attempts: attempts_of(conn, key)?,
            });
        }
        conn.prepare_cached(sql::SUPERSEDE_OLDER)?.execute(params![
            now,
            key.biller_id,
            key.invoice_id,
            key.revision
        ])?;
        cancel_steps(conn, &key.biller_id, &key.invoice_id, key.revision, REPLACED, now)?;
    }
    conn.prepare_cached(sql::INSERT_INVOICE)?.execute(params![
        key.biller_id,
        key.invoice_id,
        key.revision,
        invoice.json,
        correlation.correlation_id,
        correlation.message_id,
        now,
        invoice.customer,
        invoice.routed_by,
        invoice.currency,
        invoice.amount_minor
    ])?;
    insert_steps(conn, key, &invoice.steps, now)?;
    Ok(Begin::New)
}

fn start_attempt(
    conn: &Connection,
    key: &InvoiceKey,
    channel: ChannelName,
    attempt: u32,
    paylink: &NewPaylink,
    step: Option<&str>,
    now: i64,
) -> Result<AttemptStart, StoreError> {
    let open = conn.prepare_cached(sql::TOUCH_OPEN_INVOICE)?.execute(params![
        now,
        key.biller_id,
        key.invoice_id,
        key.revision
    ])?;
    if open == 0 {
        return Ok(AttemptStart::Closed);
    }
    if let Some(step) = step {
        conn.prepare_cached(sql::TOUCH_STEP)?.execute(params![
            now,
            key.biller_id,
            key.invoice_id,
            key.revision,
            step
        ])?;
    }
    if let Some(hash) = &paylink.address_hash {
        let scope = crate::domain::debtor::suppression_scope(channel, &key.biller_id);
        let suppressed: bool = conn
            .prepare_cached(debtors::IS_SUPPRESSED)?
            .query_row(params![scope, channel.as_str(), hash], |r| r.get(0))?;
        if suppressed {
            conn.prepare_cached(
                "INSERT INTO attempts (biller_id, invoice_id, revision, channel, attempt, state, started_ms,
                                       finished_ms, detail, step)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'failed', ?6, ?6, ?7, ?8)",
            )?
            .execute(params![
                key.biller_id,
                key.invoice_id,
                key.revision,
                channel.as_str(),
                attempt,
                now,
                super::SUPPRESSED_DETAIL,
                step
            ])?;
            return Ok(AttemptStart::Suppressed);
        }
    }
    insert_attempt(conn, key, channel, attempt, paylink, step, now).map(AttemptStart::Started)
}

/// [`Store::debtor`], on the writer thread.
fn debtor(
    conn: &Connection,
    biller_id: &str,
    customer_key: &str,
    addresses: &[(ChannelName, String)],
) -> Result<Profile, StoreError> {
    let preference: Option<(String, String)> = conn
        .prepare_cached(debtors::PREFERENCE)?
        .query_row(params![biller_id, customer_key], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let mut profile = Profile::default();
    if let Some((channels, stopped)) = preference {
        profile.preferred = Some(split_channels(&channels));
        profile.stopped = split_channels(&stopped);
    }
    for (channel, hash) in addresses {
        let scope = crate::domain::debtor::suppression_scope(*channel, biller_id);
        let suppressed: bool = conn
            .prepare_cached(debtors::IS_SUPPRESSED)?
            .query_row(params![scope, channel.as_str(), hash], |r| r.get(0))?;
        if suppressed {
            profile.suppressed.push(*channel);
        }
    }
    Ok(profile)
}

/// [`Store::suppress`], on the writer thread: the change and one event per
/// customer the address belongs to.
fn suppress(conn: &Connection, change: &SuppressionChange, now: i64) -> Result<bool, StoreError> {
    let scope = change.scope();
    let changed = match change.reply {
        Reply::Stop => conn.prepare_cached(debtors::INSERT_SUPPRESSION)?.execute(params![
            scope,
            change.channel.as_str(),
            change.address_hash,
            change.reason,
            now
        ])?,
        Reply::Start => conn.prepare_cached(debtors::DELETE_SUPPRESSION)?.execute(params![
            scope,
            change.channel.as_str(),
            change.address_hash
        ])?,
    };
    if changed == 0 {
        return Ok(false);
    }
    let remembered = conn
        .prepare_cached(debtors::OWNERS)?
        .query_map(params![change.channel.as_str(), change.address_hash, scope], |r| {
            Ok(Owner {
                biller_id: r.get(0)?,
                customer_key: r.get(1)?,
                customer_id: r.get(2)?,
                invoice_id: r.get(3)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    for owner in change.told(remembered) {
        insert_event(conn, &event_json(&change.event(owner))?)?;
    }
    Ok(true)
}

/// Records an attempt and its pay link, without [`start_attempt`]'s check:
/// for an invoice just inserted in the same transaction.
fn insert_attempt(
    conn: &Connection,
    key: &InvoiceKey,
    channel: ChannelName,
    attempt: u32,
    paylink: &NewPaylink,
    step: Option<&str>,
    now: i64,
) -> Result<i64, StoreError> {
    // The number an SMS or WhatsApp message goes to is kept, hashed: an
    // inbound STOP names only the number (see `debtors::OWNERS`).
    let address_hash = paylink.address_hash.as_deref().filter(|_| remembers_address(channel));
    // The new row's id from the connection rather than `RETURNING`, which
    // makes SQLite collect the inserted row into a result set first.
    conn.prepare_cached(
        "INSERT INTO attempts (biller_id, invoice_id, revision, channel, attempt, state, started_ms,
                               token_hash, expires_ms, step, address_hash)
         VALUES (?1, ?2, ?3, ?4, ?5, 'sending', ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![
        key.biller_id,
        key.invoice_id,
        key.revision,
        channel.as_str(),
        attempt,
        now,
        paylink.token_hash,
        paylink.expires_at_ms,
        step,
        address_hash
    ])?;
    Ok(conn.last_insert_rowid())
}

fn finish_attempt(
    conn: &Connection,
    attempt_id: i64,
    outcome: &AttemptOutcome,
    event_json: &str,
    now: i64,
) -> Result<(), StoreError> {
    let (state, provider_id, detail) = outcome.columns();
    conn.prepare_cached(sql::FINISH_ATTEMPT)?
        .execute(params![state, provider_id, detail, now, attempt_id])?;
    insert_event(conn, event_json)
}

fn finish_invoice(
    conn: &Connection,
    key: &InvoiceKey,
    status: Status,
    events: &[String],
    now: i64,
) -> Result<(), StoreError> {
    conn.prepare_cached(sql::FINISH_INVOICE)?.execute(params![
        status.as_str(),
        now,
        key.biller_id,
        key.invoice_id,
        key.revision
    ])?;
    for event in events {
        insert_event(conn, event)?;
    }
    Ok(())
}

/// The `close` decision, on the writer thread.
fn close(
    conn: &Connection,
    biller_id: &str,
    invoice_id: &str,
    status: Status,
    event: &Event,
    now: i64,
) -> Result<bool, StoreError> {
    let inserted =
        conn.prepare_cached(sql::INSERT_CLOSURE)?
            .execute(params![biller_id, invoice_id, status.as_str(), now])?;
    if inserted == 0 {
        return Ok(false);
    }
    conn.prepare_cached(sql::CLOSE_REVISIONS)?
        .execute(params![status.as_str(), now, biller_id, invoice_id])?;
    cancel_steps(conn, biller_id, invoice_id, i64::MAX, status.as_str(), now)?;
    // Name the latest revision, and the channel whose pay link the
    // customer opened last: the message that earned the payment.
    let latest: Option<(i64, String)> = conn
        .prepare_cached(sql::LATEST_REVISION)?
        .query_row(params![biller_id, invoice_id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let clicked: Option<String> = conn
        .prepare_cached(
            "SELECT channel FROM attempts WHERE biller_id = ?1 AND invoice_id = ?2 AND clicks > 0
             ORDER BY first_click_ms DESC, id DESC LIMIT 1",
        )?
        .query_row(params![biller_id, invoice_id], |r| r.get(0))
        .optional()?;
    let event = closing_event(
        event,
        status,
        latest.as_ref().map(|(revision, json)| (*revision, json.as_str())),
        clicked.as_deref(),
    )?;
    insert_event(conn, &event_json(&event)?)?;
    Ok(true)
}

/// The rows [`Store::history`] assembles, on the writer thread.
fn history(conn: &Connection, biller_id: &str, invoice_id: &str, now: i64) -> Result<Option<History>, StoreError> {
    let revisions = conn
        .prepare_cached(sql::HISTORY_REVISIONS)?
        .query_map(params![biller_id, invoice_id], |row| {
            Ok(RevisionRow {
                revision: row.get(0)?,
                status: row.get(1)?,
                received_ms: row.get(2)?,
                held_until_ms: row.get(3)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let attempts = conn
        .prepare_cached(sql::HISTORY_ATTEMPTS)?
        .query_map(params![biller_id, invoice_id], |row| {
            Ok(AttemptRow {
                revision: row.get(0)?,
                channel: row.get(1)?,
                state: row.get(2)?,
                detail: row.get(3)?,
                started_ms: row.get(4)?,
                finished_ms: row.get(5)?,
                delivered_ms: row.get(6)?,
                read_ms: row.get(7)?,
                provider_message_id: row.get(8)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let clicks = conn
        .prepare_cached(
            "SELECT revision, channel, first_click_ms, clicks FROM attempts
             WHERE biller_id = ?1 AND invoice_id = ?2 AND clicks > 0",
        )?
        .query_map(params![biller_id, invoice_id], |row| {
            Ok(ClickRow {
                revision: row.get(0)?,
                channel: row.get(1)?,
                first_click_ms: row.get(2)?,
                clicks: row.get(3)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let closure: Option<(String, i64)> = conn
        .prepare_cached(sql::CLOSURE)?
        .query_row(params![biller_id, invoice_id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
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

#[async_trait]
impl Store for SqliteStore {
    async fn begin(
        &self,
        invoice: &Invoice,
        correlation: &Correlation,
        accepted: &Event,
        steps: &[PlannedStep],
        routed_by: &str,
    ) -> Result<Begin, StoreError> {
        let (invoice, now) = (
            NewInvoice::new(invoice, correlation, accepted, steps, routed_by)?,
            self.clock.now_ms(),
        );
        self.writer.call(move |conn| begin(conn, &invoice, now)).await
    }

    async fn start_attempt(
        &self,
        key: &InvoiceKey,
        channel: ChannelName,
        attempt: u32,
        paylink: &NewPaylink,
        step: Option<&str>,
    ) -> Result<AttemptStart, StoreError> {
        let (key, paylink, now) = (key.clone(), paylink.clone(), self.clock.now_ms());
        let step = step.map(str::to_owned);
        self.writer
            .call(move |conn| start_attempt(conn, &key, channel, attempt, &paylink, step.as_deref(), now))
            .await
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
        let invoice = NewInvoice::new(invoice, correlation, accepted, steps, routed_by)?;
        let paylink = paylink.clone();
        let now = self.clock.now_ms();
        self.writer
            .call(move |conn| {
                let begun = begin(conn, &invoice, now)?;
                if begun != Begin::New {
                    return Ok((begun, None));
                }
                // A preference or a stop may route it elsewhere: the
                // caller reads them and routes again.
                let scope = crate::domain::debtor::suppression_scope(channel, &invoice.key.biller_id);
                let otherwise: bool = conn.prepare_cached(debtors::ROUTES_OTHERWISE)?.query_row(
                    params![
                        invoice.key.biller_id,
                        invoice.customer,
                        scope,
                        channel.as_str(),
                        paylink.address_hash.as_deref().unwrap_or_default()
                    ],
                    |r| r.get(0),
                )?;
                if otherwise {
                    return Ok((begun, None));
                }
                // Just inserted, open, and touched now: no other check needed.
                let attempt = insert_attempt(conn, &invoice.key, channel, 1, &paylink, None, now)?;
                Ok((begun, Some(attempt)))
            })
            .await
    }

    async fn retry_attempt_later(&self, attempt_id: i64, detail: &str) -> Result<(), StoreError> {
        let (detail, now) = (detail.to_owned(), self.clock.now_ms());
        self.writer
            .call(move |conn| {
                conn.prepare_cached(sql::RETRY_ATTEMPT)?
                    .execute(params![detail, now, attempt_id])?;
                Ok(())
            })
            .await
    }

    async fn finish_attempt(&self, attempt_id: i64, outcome: &AttemptOutcome, event: &Event) -> Result<(), StoreError> {
        let (outcome, event, now) = (outcome.clone(), event_json(event)?, self.clock.now_ms());
        self.writer
            .call(move |conn| finish_attempt(conn, attempt_id, &outcome, &event, now))
            .await
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
        let (event, key, now) = (event_json(event)?, key.clone(), self.clock.now_ms());
        self.writer
            .call(move |conn| {
                finish_attempt(conn, attempt_id, &outcome, &event, now)?;
                finish_invoice(conn, &key, Status::Sent, &[], now)
            })
            .await
    }

    async fn finish_invoice(&self, key: &InvoiceKey, status: Status, events: &[Event]) -> Result<(), StoreError> {
        let key = key.clone();
        let events = events.iter().map(event_json).collect::<Result<Vec<_>, _>>()?;
        let now = self.clock.now_ms();
        self.writer
            .call(move |conn| finish_invoice(conn, &key, status, &events, now))
            .await
    }

    async fn close(
        &self,
        biller_id: &str,
        invoice_id: &str,
        status: Status,
        event: &Event,
    ) -> Result<bool, StoreError> {
        let (biller_id, invoice_id, event) = (biller_id.to_owned(), invoice_id.to_owned(), event.clone());
        let now = self.clock.now_ms();
        self.writer
            .call(move |conn| close(conn, &biller_id, &invoice_id, status, &event, now))
            .await
    }

    async fn record_event(&self, event: &Event) -> Result<(), StoreError> {
        let event = event_json(event)?;
        self.writer.call(move |conn| insert_event(conn, &event)).await
    }

    async fn paylink(&self, token_hash: &str) -> Result<Option<PaylinkRecord>, StoreError> {
        let token_hash = token_hash.to_owned();
        self.writer
            .call(move |conn| {
                // The link's revision, and the highest revision above it if
                // any (one row of NULLs when there is none).
                let row = conn
                    .prepare_cached(
                        "SELECT a.biller_id, a.invoice_id, a.revision, a.channel, a.expires_ms, i.status,
                                i.invoice_json, i.correlation_id, i.message_id, n.status, n.invoice_json,
                                i.erased_ms IS NOT NULL
                         FROM attempts a JOIN invoices i
                           ON i.biller_id = a.biller_id AND i.invoice_id = a.invoice_id AND i.revision = a.revision
                         LEFT JOIN invoices n
                           ON n.biller_id = a.biller_id AND n.invoice_id = a.invoice_id AND n.revision > a.revision
                         WHERE a.token_hash = ?1
                         ORDER BY n.revision DESC LIMIT 1",
                    )?
                    .query_row([&token_hash], |row| {
                        Ok((
                            key_of(row, 0)?,
                            row.get::<_, String>(3)?,
                            row.get::<_, i64>(4)?,
                            row.get::<_, String>(5)?,
                            row.get::<_, String>(6)?,
                            Correlation {
                                correlation_id: row.get(7)?,
                                message_id: row.get(8)?,
                            },
                            row.get::<_, Option<String>>(9)?.zip(row.get::<_, Option<String>>(10)?),
                            row.get::<_, bool>(11)?,
                        ))
                    })
                    .optional()?;
                let Some((key, channel, expires_at_ms, status, invoice, correlation, newest, erased)) = row else {
                    return Ok(None);
                };
                Ok(Some(PaylinkRecord {
                    key,
                    channel: parse_channel(&channel)?,
                    expires_at_ms,
                    status: Status::parse(&status)?,
                    invoice: parse_invoice(&invoice)?,
                    correlation,
                    newest: newest_revision(newest)?,
                    erased,
                }))
            })
            .await
    }

    async fn record_click(&self, token_hash: &str, event: &Event) -> Result<i64, StoreError> {
        let (token_hash, event, now) = (token_hash.to_owned(), event_json(event)?, self.clock.now_ms());
        self.writer
            .call(move |conn| {
                let clicks: i64 = conn
                    .prepare_cached(
                        "UPDATE attempts SET clicks = clicks + 1, first_click_ms = COALESCE(first_click_ms, ?1)
                         WHERE token_hash = ?2 RETURNING clicks",
                    )?
                    .query_row(params![now, token_hash], |r| r.get(0))?;
                if clicks == 1 {
                    insert_event(conn, &event)?;
                }
                Ok(clicks)
            })
            .await
    }

    async fn outbox(&self, limit: u32) -> Result<Vec<OutboxEntry>, StoreError> {
        self.writer
            .call(move |conn| {
                let mut stmt = conn.prepare_cached("SELECT id, event_json FROM outbox ORDER BY id LIMIT ?1")?;
                let rows = stmt.query_map([limit], |row| Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?)))?;
                let mut entries = Vec::new();
                for row in rows {
                    let (id, json) = row?;
                    entries.push(OutboxEntry::new(id, json)?);
                }
                Ok(entries)
            })
            .await
    }

    async fn outbox_done(&self, ids: &[i64]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        // Published events are mostly runs of consecutive ids: one delete
        // a run instead of one an event.
        let mut ids = ids.to_vec();
        ids.sort_unstable();
        let mut runs: Vec<(i64, i64)> = Vec::new();
        for id in ids {
            match runs.last_mut() {
                Some((_, last)) if id <= last.saturating_add(1) => *last = id,
                _ => runs.push((id, id)),
            }
        }
        self.writer
            .call(move |conn| {
                let mut stmt = conn.prepare_cached("DELETE FROM outbox WHERE id BETWEEN ?1 AND ?2")?;
                for (first, last) in &runs {
                    stmt.execute([first, last])?;
                }
                Ok(())
            })
            .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.writer
            .call(|conn| {
                conn.prepare_cached(sql::PING)?.query_row([], |_| Ok(()))?;
                Ok(())
            })
            .await
    }

    async fn gauges(&self) -> Result<StoreGauges, StoreError> {
        self.writer
            .call(|conn| {
                let counts = conn.prepare_cached(sql::GAUGES)?.query_row([], |r| {
                    Ok([
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                        r.get(6)?,
                    ])
                })?;
                Ok(store_gauges(counts))
            })
            .await
    }

    async fn invoice(&self, key: &InvoiceKey) -> Result<Option<StoredInvoice>, StoreError> {
        let key = key.clone();
        self.writer
            .call(move |conn| {
                let row = conn
                    .prepare_cached(sql::INVOICE)?
                    .query_row(params![key.biller_id, key.invoice_id, key.revision], |row| {
                        Ok((
                            row.get::<_, String>(0)?,
                            row.get::<_, String>(1)?,
                            Correlation {
                                correlation_id: row.get(2)?,
                                message_id: row.get(3)?,
                            },
                        ))
                    })
                    .optional()?;
                let Some((status, invoice, correlation)) = row else {
                    return Ok(None);
                };
                Ok(Some(StoredInvoice {
                    status: Status::parse(&status)?,
                    invoice: parse_invoice(&invoice)?,
                    correlation,
                    attempts: attempts_of(conn, &key)?,
                }))
            })
            .await
    }

    async fn attempt_by_provider_id(
        &self,
        channel: ChannelName,
        provider_message_id: &str,
    ) -> Result<Option<AttemptRef>, StoreError> {
        let provider_message_id = provider_message_id.to_owned();
        self.writer
            .call(move |conn| {
                let row = conn
                    .prepare_cached(sql::ATTEMPT_BY_PROVIDER_ID)?
                    .query_row(params![channel.as_str(), provider_message_id], |row| {
                        Ok((
                            row.get::<_, i64>(0)?,
                            key_of(row, 1)?,
                            row.get::<_, i64>(4)?,
                            row.get::<_, String>(5)?,
                            Correlation {
                                correlation_id: row.get(6)?,
                                message_id: row.get(7)?,
                            },
                            row.get::<_, String>(8)?,
                            row.get::<_, Option<String>>(9)?,
                        ))
                    })
                    .optional()?;
                let Some((attempt_id, key, attempt, state, correlation, invoice, step)) = row else {
                    return Ok(None);
                };
                Ok(Some(AttemptRef {
                    attempt_id,
                    key,
                    channel,
                    attempt: attempt_number(attempt)?,
                    state: parse_state(&state),
                    correlation,
                    metadata: parse_invoice(&invoice)?.metadata,
                    step,
                }))
            })
            .await
    }

    async fn attempts_by_provider_id(
        &self,
        channel: ChannelName,
        provider_message_id: &str,
    ) -> Result<Vec<AttemptRef>, StoreError> {
        let provider_message_id = provider_message_id.to_owned();
        self.writer
            .call(move |conn| {
                let rows = conn
                    .prepare_cached(sql::ATTEMPTS_BY_PROVIDER_ID)?
                    .query_map(params![channel.as_str(), provider_message_id], |row| {
                        Ok((
                            row.get::<_, i64>(0)?,
                            key_of(row, 1)?,
                            row.get::<_, i64>(4)?,
                            row.get::<_, String>(5)?,
                            Correlation {
                                correlation_id: row.get(6)?,
                                message_id: row.get(7)?,
                            },
                            row.get::<_, String>(8)?,
                            row.get::<_, Option<String>>(9)?,
                        ))
                    })?
                    .collect::<Result<Vec<_>, _>>()?;
                rows.into_iter()
                    .map(|(attempt_id, key, attempt, state, correlation, invoice, step)| {
                        Ok(AttemptRef {
                            attempt_id,
                            key,
                            channel,
                            attempt: attempt_number(attempt)?,
                            state: parse_state(&state),
                            correlation,
                            metadata: parse_invoice(&invoice)?.metadata,
                            step,
                        })
                    })
                    .collect()
            })
            .await
    }

    async fn record_reached(&self, attempt_id: i64, reached: Reached, event: &Event) -> Result<bool, StoreError> {
        let statement = match reached {
            Reached::Delivered => sql::DELIVERED,
            Reached::Read => sql::READ,
        };
        let (event, now) = (event_json(event)?, self.clock.now_ms());
        self.writer
            .call(move |conn| {
                let changed = conn.prepare_cached(statement)?.execute(params![now, attempt_id])?;
                if changed == 1 {
                    insert_event(conn, &event)?;
                }
                Ok(changed == 1)
            })
            .await
    }

    async fn history(&self, biller_id: &str, invoice_id: &str) -> Result<Option<History>, StoreError> {
        let (biller_id, invoice_id, now) = (biller_id.to_owned(), invoice_id.to_owned(), self.clock.now_ms());
        self.writer
            .call(move |conn| history(conn, &biller_id, &invoice_id, now))
            .await
    }

    async fn find_invoices(
        &self,
        biller_id: &str,
        invoice_id: &str,
        customer: &str,
        limit: u32,
    ) -> Result<Vec<FoundInvoice>, StoreError> {
        let (biller_id, invoice_id, customer) = (biller_id.to_owned(), invoice_id.to_owned(), customer.to_owned());
        self.writer
            .call(move |conn| {
                found_invoices(
                    conn,
                    sql::FIND_INVOICES,
                    params![biller_id, invoice_id, customer, limit],
                )
            })
            .await
    }

    async fn invoices_received(
        &self,
        biller_id: &str,
        from_ms: i64,
        to_ms: i64,
        limit: u32,
    ) -> Result<Vec<FoundInvoice>, StoreError> {
        let biller_id = biller_id.to_owned();
        self.writer
            .call(move |conn| found_invoices(conn, sql::INVOICES_RECEIVED, params![biller_id, from_ms, to_ms, limit]))
            .await
    }

    async fn hold(&self, key: &InvoiceKey, until_ms: i64) -> Result<(), StoreError> {
        let (key, now) = (key.clone(), self.clock.now_ms());
        self.writer
            .call(move |conn| {
                conn.prepare_cached(sql::HOLD)?.execute(params![
                    until_ms,
                    now,
                    key.biller_id,
                    key.invoice_id,
                    key.revision
                ])?;
                Ok(())
            })
            .await
    }

    async fn due_holds(&self, now_ms: i64, limit: u32) -> Result<Vec<InvoiceKey>, StoreError> {
        self.writer
            .call(move |conn| {
                let keys = conn
                    .prepare_cached(sql::DUE_HOLDS)?
                    .query_map(params![now_ms, limit], |row| key_of(row, 0))?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(keys)
            })
            .await
    }

    async fn claim_due_holds(&self, now_ms: i64, limit: u32) -> Result<Vec<InvoiceKey>, StoreError> {
        self.writer
            .call(move |conn| {
                let keys = conn
                    .prepare_cached(sql::CLAIM_DUE_HOLDS)?
                    .query_map(params![now_ms, limit], |row| key_of(row, 0))?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(keys)
            })
            .await
    }

    async fn next_hold(&self) -> Result<Option<i64>, StoreError> {
        self.writer
            .call(|conn| Ok(conn.prepare_cached(sql::NEXT_HOLD)?.query_row([], |r| r.get(0))?))
            .await
    }

    async fn claim(&self, key: &InvoiceKey, now_ms: i64, idle_ms: i64) -> Result<bool, StoreError> {
        let key = key.clone();
        self.writer
            .call(move |conn| {
                let claimed = conn.prepare_cached(sql::CLAIM)?.execute(params![
                    now_ms,
                    key.biller_id,
                    key.invoice_id,
                    key.revision,
                    now_ms - idle_ms
                ])?;
                Ok(claimed == 1)
            })
            .await
    }

    async fn claim_stale(&self, now_ms: i64, idle_ms: i64, limit: u32) -> Result<Vec<InvoiceKey>, StoreError> {
        self.writer
            .call(move |conn| {
                let keys = conn
                    .prepare_cached(sql::CLAIM_STALE)?
                    .query_map(params![now_ms, now_ms - idle_ms, limit], |row| key_of(row, 0))?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(keys)
            })
            .await
    }

    async fn claim_due_steps(&self, now_ms: i64, idle_ms: i64, limit: u32) -> Result<Vec<DueStep>, StoreError> {
        self.writer
            .call(move |conn| {
                let rows = conn
                    .prepare_cached(sql::CLAIM_DUE_STEPS)?
                    .query_map(params![now_ms, now_ms - idle_ms, limit], |row| {
                        Ok((
                            key_of(row, 0)?,
                            row.get::<_, i64>(3)?,
                            row.get::<_, String>(4)?,
                            row.get::<_, String>(5)?,
                            row.get::<_, i64>(6)?,
                        ))
                    })?
                    .collect::<Result<Vec<_>, _>>()?;
                rows.into_iter()
                    .map(|(key, seq, journey, name, due_ms)| {
                        Ok(DueStep {
                            key,
                            seq: attempt_number(seq)?,
                            journey,
                            name,
                            due_ms,
                        })
                    })
                    .collect()
            })
            .await
    }

    async fn reschedule_step(&self, key: &InvoiceKey, seq: u32, due_ms: i64, detail: &str) -> Result<(), StoreError> {
        let (key, detail) = (key.clone(), detail.to_owned());
        self.writer
            .call(move |conn| {
                conn.prepare_cached(sql::RESCHEDULE_STEP)?.execute(params![
                    due_ms,
                    detail,
                    key.biller_id,
                    key.invoice_id,
                    key.revision,
                    seq
                ])?;
                Ok(())
            })
            .await
    }

    async fn hold_step(
        &self,
        key: &InvoiceKey,
        seq: u32,
        until_ms: i64,
        held: HeldStep,
        detail: &str,
    ) -> Result<(), StoreError> {
        let (key, detail) = (key.clone(), detail.to_owned());
        self.writer
            .call(move |conn| {
                conn.prepare_cached(sql::HOLD_STEP)?.execute(params![
                    until_ms,
                    held.as_str(),
                    detail,
                    key.biller_id,
                    key.invoice_id,
                    key.revision,
                    seq
                ])?;
                Ok(())
            })
            .await
    }

    async fn finish_step(
        &self,
        key: &InvoiceKey,
        seq: u32,
        status: StepStatus,
        detail: Option<&str>,
        events: &[Event],
    ) -> Result<bool, StoreError> {
        let (key, detail, now) = (key.clone(), detail.map(str::to_owned), self.clock.now_ms());
        let events = events.iter().map(event_json).collect::<Result<Vec<_>, _>>()?;
        self.writer
            .call(move |conn| {
                let changed = conn.prepare_cached(sql::FINISH_STEP)?.execute(params![
                    status.as_str(),
                    now,
                    detail,
                    key.biller_id,
                    key.invoice_id,
                    key.revision,
                    seq
                ])?;
                if changed == 1 {
                    for event in &events {
                        insert_event(conn, event)?;
                    }
                }
                Ok(changed == 1)
            })
            .await
    }

    async fn steps(&self, biller_id: &str, invoice_id: &str) -> Result<Vec<StepRecord>, StoreError> {
        let (biller_id, invoice_id) = (biller_id.to_owned(), invoice_id.to_owned());
        self.writer
            .call(move |conn| {
                let rows = conn
                    .prepare_cached(sql::STEPS_OF)?
                    .query_map(params![biller_id, invoice_id], |row| {
                        Ok((
                            row.get::<_, i64>(0)?,
                            row.get::<_, i64>(1)?,
                            row.get::<_, String>(2)?,
                            row.get::<_, String>(3)?,
                            row.get::<_, String>(4)?,
                            row.get::<_, i64>(5)?,
                            row.get::<_, Option<i64>>(6)?,
                            row.get::<_, Option<String>>(7)?,
                            row.get::<_, Option<i64>>(8)?,
                        ))
                    })?
                    .collect::<Result<Vec<_>, _>>()?;
                rows.into_iter()
                    .map(
                        |(revision, seq, journey, name, status, due_ms, done_ms, detail, after_ms)| {
                            step_record(revision, seq, journey, name, &status, due_ms, done_ms, detail, after_ms)
                        },
                    )
                    .collect()
            })
            .await
    }

    async fn next_step(&self) -> Result<Option<i64>, StoreError> {
        self.writer
            .call(|conn| Ok(conn.prepare_cached(sql::NEXT_STEP)?.query_row([], |r| r.get(0))?))
            .await
    }

    async fn messages_to_customer(&self, customer: &str, since_ms: i64) -> Result<u32, StoreError> {
        let customer = customer.to_owned();
        self.writer
            .call(move |conn| {
                let n: i64 = conn
                    .prepare_cached(sql::MESSAGES_TO_CUSTOMER)?
                    .query_row(params![customer, since_ms], |r| r.get(0))?;
                Ok(u32::try_from(n).unwrap_or(u32::MAX))
            })
            .await
    }

    async fn erase_customer(&self, biller_id: &str, customer: &str, erased: &Event) -> Result<Erasure, StoreError> {
        let (biller_id, customer, erased, now) = (
            biller_id.to_owned(),
            customer.to_owned(),
            erased.clone(),
            self.clock.now_ms(),
        );
        self.writer
            .call(move |conn| erase::erase_customer(conn, &biller_id, &customer, &erased, now))
            .await
    }

    async fn erase_expired(&self, before_ms: i64, limit: u32) -> Result<Erasure, StoreError> {
        let now = self.clock.now_ms();
        self.writer
            .call(move |conn| erase::erase_expired(conn, before_ms, limit, now))
            .await
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
        let new = NewInvoice::new(invoice, correlation, accepted, steps, routed_by)?;
        let (currency, accepted, join) = (invoice.amount.currency.clone(), accepted.clone(), join.clone());
        let now = self.clock.now_ms();
        self.writer
            .call(move |conn| begin_combined(conn, &new, &currency, &accepted, &join, now))
            .await
    }

    async fn claim_due_groups(&self, now_ms: i64, idle_ms: i64, limit: u32) -> Result<Vec<DueGroup>, StoreError> {
        self.writer
            .call(move |conn| {
                let claimed = conn
                    .prepare_cached(sql::CLAIM_DUE_GROUPS)?
                    .query_map(params![now_ms, now_ms - idle_ms, limit], |r| {
                        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?))
                    })?
                    .collect::<Result<Vec<_>, _>>()?;
                let mut groups = Vec::with_capacity(claimed.len());
                for (id, biller_id, due_ms) in claimed {
                    let members = conn
                        .prepare_cached(sql::GROUP_MEMBERS)?
                        .query_map([&id], |row| key_of(row, 0))?
                        .collect::<Result<Vec<_>, _>>()?;
                    groups.push(DueGroup {
                        id,
                        biller_id,
                        due_ms,
                        members,
                    });
                }
                groups.sort_by_key(|g| g.due_ms);
                Ok(groups)
            })
            .await
    }

    async fn hold_group(&self, group_id: &str, until_ms: i64) -> Result<(), StoreError> {
        let group_id = group_id.to_owned();
        self.writer
            .call(move |conn| {
                conn.prepare_cached(sql::HOLD_GROUP)?
                    .execute(params![until_ms, group_id])?;
                Ok(())
            })
            .await
    }

    async fn finish_group(&self, group_id: &str) -> Result<(), StoreError> {
        let group_id = group_id.to_owned();
        self.writer
            .call(move |conn| {
                conn.prepare_cached(sql::FINISH_GROUP)?.execute([&group_id])?;
                Ok(())
            })
            .await
    }

    async fn next_group(&self) -> Result<Option<i64>, StoreError> {
        self.writer
            .call(|conn| Ok(conn.prepare_cached(sql::NEXT_GROUP)?.query_row([], |r| r.get(0))?))
            .await
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
        let (group_id, paylink, now) = (group_id.to_owned(), paylink.clone(), self.clock.now_ms());
        self.writer
            .call(move |conn| {
                conn.prepare_cached(sql::INSERT_COMBINED_LINK)?.execute(params![
                    paylink.token_hash,
                    group_id,
                    channel.as_str(),
                    paylink.expires_at_ms,
                    listed,
                    now
                ])?;
                Ok(())
            })
            .await
    }

    async fn claim_customer_steps(
        &self,
        day: &CustomerDay,
        now_ms: i64,
        idle_ms: i64,
    ) -> Result<Vec<DueStep>, StoreError> {
        let day = day.clone();
        self.writer
            .call(move |conn| {
                let rows = conn
                    .prepare_cached(sql::CLAIM_CUSTOMER_STEPS)?
                    .query_map(
                        params![
                            now_ms,
                            now_ms - idle_ms,
                            day.biller_id,
                            day.customer,
                            day.currency,
                            day.from_ms,
                            day.to_ms
                        ],
                        |row| {
                            Ok((
                                key_of(row, 0)?,
                                row.get::<_, i64>(3)?,
                                row.get::<_, String>(4)?,
                                row.get::<_, String>(5)?,
                                row.get::<_, i64>(6)?,
                            ))
                        },
                    )?
                    .collect::<Result<Vec<_>, _>>()?;
                let mut steps = rows
                    .into_iter()
                    .map(|(key, seq, journey, name, due_ms)| {
                        Ok(DueStep {
                            key,
                            seq: attempt_number(seq)?,
                            journey,
                            name,
                            due_ms,
                        })
                    })
                    .collect::<Result<Vec<_>, StoreError>>()?;
                steps.sort_by(|a, b| (a.due_ms, &a.key.invoice_id, a.seq).cmp(&(b.due_ms, &b.key.invoice_id, b.seq)));
                Ok(steps)
            })
            .await
    }

    async fn stats(&self, query: &StatsQuery) -> Result<Stats, StoreError> {
        let (path, query) = (self.path.clone(), query.clone());
        tokio::task::spawn_blocking(move || stats::stats(&path, &query))
            .await
            .map_err(|e| StoreError::Unavailable(format!("the figures' reader stopped: {e}")))?
    }

    async fn add_reminder_group(&self, group_id: &str, day: &CustomerDay) -> Result<(), StoreError> {
        let (group_id, day, now) = (group_id.to_owned(), day.clone(), self.clock.now_ms());
        self.writer
            .call(move |conn| {
                conn.prepare_cached(sql::INSERT_REMINDER_GROUP)?.execute(params![
                    group_id,
                    day.biller_id,
                    day.customer,
                    day.currency,
                    now
                ])?;
                Ok(())
            })
            .await
    }

    async fn combined_link(&self, token_hash: &str) -> Result<Option<CombinedLinkRecord>, StoreError> {
        let token_hash = token_hash.to_owned();
        self.writer
            .call(move |conn| {
                let link = conn
                    .prepare_cached(sql::COMBINED_LINK)?
                    .query_row([&token_hash], |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, i64>(2)?,
                            r.get::<_, String>(3)?,
                        ))
                    })
                    .optional()?;
                let Some((group_id, channel, expires_at_ms, listed)) = link else {
                    return Ok(None);
                };
                let rows = conn
                    .prepare_cached(sql::GROUP_INVOICES)?
                    .query_map([&group_id], |r| {
                        Ok((
                            key_of(r, 0)?,
                            r.get::<_, String>(3)?,
                            r.get::<_, String>(4)?,
                            Correlation {
                                correlation_id: r.get(5)?,
                                message_id: r.get(6)?,
                            },
                        ))
                    })?
                    .collect::<Result<Vec<_>, _>>()?;
                let mut invoices = Vec::new();
                for (invoice_id, revision) in parse_listed(&listed)? {
                    let found = rows
                        .iter()
                        .find(|(k, ..)| k.invoice_id == invoice_id && k.revision == revision);
                    if let Some((key, status, json, correlation)) = found {
                        invoices.push(LinkedInvoice {
                            key: key.clone(),
                            status: Status::parse(status)?,
                            invoice: parse_invoice(json)?,
                            correlation: correlation.clone(),
                        });
                    }
                }
                Ok(Some(CombinedLinkRecord {
                    group_id,
                    channel: parse_channel(&channel)?,
                    expires_at_ms,
                    invoices,
                }))
            })
            .await
    }

    async fn fail_after_send(&self, attempt_id: i64, detail: &str, event: &Event) -> Result<bool, StoreError> {
        let (detail, event, now) = (detail.to_owned(), event_json(event)?, self.clock.now_ms());
        self.writer
            .call(move |conn| {
                let changed = conn
                    .prepare_cached(sql::FAIL_SENT_ATTEMPT)?
                    .execute(params![detail, now, attempt_id])?;
                if changed == 1 {
                    conn.prepare_cached(sql::REOPEN_INVOICE_OF_ATTEMPT)?
                        .execute(params![now, attempt_id])?;
                    insert_event(conn, &event)?;
                }
                Ok(changed == 1)
            })
            .await
    }

    async fn debtor(
        &self,
        biller_id: &str,
        customer_key: &str,
        addresses: &[(ChannelName, String)],
    ) -> Result<Profile, StoreError> {
        let (biller_id, customer_key, addresses) = (biller_id.to_owned(), customer_key.to_owned(), addresses.to_vec());
        self.writer
            .call(move |conn| debtor(conn, &biller_id, &customer_key, &addresses))
            .await
    }

    async fn set_preferences(
        &self,
        biller_id: &str,
        customer_key: &str,
        channels: &[ChannelName],
        stopped: &[ChannelName],
        event: &Event,
    ) -> Result<(), StoreError> {
        let (biller_id, customer_key) = (biller_id.to_owned(), customer_key.to_owned());
        let (channels, stopped) = (join_channels(channels), join_channels(stopped));
        let (event, now) = (event_json(event)?, self.clock.now_ms());
        self.writer
            .call(move |conn| {
                conn.prepare_cached(debtors::UPSERT_PREFERENCE)?.execute(params![
                    biller_id,
                    customer_key,
                    channels,
                    stopped,
                    now
                ])?;
                insert_event(conn, &event)
            })
            .await
    }

    async fn suppress(&self, change: &SuppressionChange) -> Result<bool, StoreError> {
        let (change, now) = (change.clone(), self.clock.now_ms());
        self.writer.call(move |conn| suppress(conn, &change, now)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::clock::SystemClock;
    use crate::invoice::Message;

    fn sample_invoice() -> Invoice {
        let body = serde_json::json!({
            "kind": "payment_request",
            "invoice_id": "INV-1",
            "biller_id": "acme",
            "revision": 1,
            "amount": "1234.50",
            "currency": "MXN",
            "due_date": "2026-12-01",
            "customer": {"id": "C-1", "name": "María López", "email": "maria@example.com", "locale": "es-MX"}
        });
        match crate::invoice::parse(body.to_string().as_bytes(), |_| true) {
            Ok(Message::PaymentRequest(invoice)) => *invoice,
            other => panic!("the sample invoice parses: {other:?}"),
        }
    }

    /// A file made before pay links moved onto their attempts keeps every
    /// link: it still resolves, with its expiry, and its clicks still show
    /// in the history and name the channel a payment is credited to.
    #[tokio::test]
    async fn links_made_before_they_moved_onto_attempts_still_resolve_with_their_clicks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("payrelay.db");
        let invoice_json = serde_json::to_string(&sample_invoice()).unwrap();
        {
            let conn = Connection::open(&path).unwrap();
            for step in &MIGRATIONS[..4] {
                conn.execute_batch(step).unwrap();
            }
            conn.execute_batch("PRAGMA user_version = 4").unwrap();
            conn.execute(
                "INSERT INTO invoices (biller_id, invoice_id, revision, status, invoice_json, received_ms, updated_ms)
                 VALUES ('acme', 'INV-1', 1, 'sent', ?1, 1000, 2000)",
                [&invoice_json],
            )
            .unwrap();
            conn.execute_batch(
                "INSERT INTO attempts (id, biller_id, invoice_id, revision, channel, attempt, state, started_ms)
                 VALUES (7, 'acme', 'INV-1', 1, 'email', 1, 'sent', 1500),
                        (8, 'acme', 'INV-1', 1, 'sms', 1, 'sent', 1600);
                 INSERT INTO paylinks (token_hash, attempt_id, biller_id, invoice_id, revision, channel,
                                       created_ms, expires_ms, clicks, first_click_ms)
                 VALUES ('hash-email', 7, 'acme', 'INV-1', 1, 'email', 1500, 99000, 0, NULL),
                        ('hash-sms', 8, 'acme', 'INV-1', 1, 'sms', 1600, 98000, 2, 5000);",
            )
            .unwrap();
        }
        let store = SqliteStore::open(&format!("sqlite://{}", path.display()), Arc::new(SystemClock))
            .await
            .unwrap();
        let sms = store.paylink("hash-sms").await.unwrap().expect("the sms link resolves");
        assert_eq!((sms.channel, sms.expires_at_ms), (ChannelName::Sms, 98000));
        assert_eq!(sms.key.invoice_id, "INV-1");
        let email = store
            .paylink("hash-email")
            .await
            .unwrap()
            .expect("the email link resolves");
        assert_eq!((email.channel, email.expires_at_ms), (ChannelName::Email, 99000));
        let history = store.history("acme", "INV-1").await.unwrap().expect("history");
        let clicked: Vec<_> = history.timeline.iter().filter(|e| e.what == "clicked").collect();
        assert_eq!(clicked.len(), 1, "one clicked link: {:?}", history.timeline);
        assert_eq!((clicked[0].at_ms, clicked[0].channel), (5000, Some(ChannelName::Sms)));
        // The next click counts on from the migrated count.
        let event = Event::bare(crate::events::EventName::Clicked, &Correlation::default());
        assert_eq!(store.record_click("hash-sms", &event).await.unwrap(), 3);
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn the_database_and_the_folders_made_for_it_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("var/db/payrelay.db");
        let store = SqliteStore::open(&format!("sqlite://{}", path.display()), Arc::new(SystemClock))
            .await
            .unwrap();
        let event = Event::bare(crate::events::EventName::Rejected, &Correlation::default());
        store.record_event(&event).await.unwrap();
        let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&tmp.path().join("var/db/payrelay.db-wal")), 0o600);
        assert_eq!(mode(&tmp.path().join("var/db")), 0o700);
        assert_eq!(mode(&tmp.path().join("var")), 0o700);
    }

    /// Without checkpoints every new page stays in the `-wal` file and the
    /// database file keeps its size; the checkpoint thread copies them over.
    #[tokio::test]
    async fn the_checkpoint_thread_copies_the_wal_into_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("payrelay.db");
        let store = SqliteStore::open_path(
            path.display().to_string(),
            Duration::from_millis(50),
            Arc::new(SystemClock),
        )
        .await
        .unwrap();
        let before = std::fs::metadata(&path).unwrap().len();
        let detail = "x".repeat(2000);
        let event = Event::bare(crate::events::EventName::Rejected, &Correlation::default()).detail(detail);
        for _ in 0..200 {
            store.record_event(&event).await.unwrap();
        }
        let grown = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let size = std::fs::metadata(&path).unwrap().len();
                if size > before + 200 * 2000 {
                    return size;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        assert!(
            grown.is_ok(),
            "the database file stayed at {before} bytes: nothing was checkpointed"
        );
    }
}
