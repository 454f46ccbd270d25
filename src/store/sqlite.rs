//! The embedded store: one SQLite file in WAL mode.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, Sqlite, SqlitePool, Transaction};

use super::{
    build_history, closing_event, event_json, now_ms, parse_channel, parse_event, parse_invoice, parse_state,
    AttemptOutcome, AttemptRecord, AttemptRef, AttemptRow, Begin, ClickRow, History, NewPaylink, OutboxEntry,
    PaylinkRecord, Reached, RevisionRow, Status, Store, StoreError, StoredInvoice,
};
use crate::channels::ChannelName;
use crate::events::{Correlation, Event};
use crate::invoice::{Invoice, InvoiceKey};

pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at a `sqlite://PATH` URL and
    /// brings its schema up to date.
    pub async fn open(url: &str) -> Result<SqliteStore, StoreError> {
        let path = url.strip_prefix("sqlite://").unwrap_or(url);
        if let Some(dir) = Path::new(path).parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir)
                    .map_err(|e| StoreError::Corrupt(format!("cannot create the folder {}: {e}", dir.display())))?;
            }
        }
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // NORMAL in WAL mode survives a process crash; only power loss can
            // undo the last transactions.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        // One connection: SQLite has one writer anyway, and several
        // connections waiting for its lock sleep in its busy handler, which
        // costs far more than queueing for the one connection here. A local
        // file needs no liveness check on every acquire either.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .test_before_acquire(false)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await?;
        sqlx::migrate!("src/store/migrations/sqlite").run(&pool).await?;
        Ok(SqliteStore { pool })
    }

    async fn insert_event(tx: &mut Transaction<'_, Sqlite>, event: &Event) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO outbox (event_json) VALUES (?)")
            .bind(event_json(event)?)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }
}

async fn attempts_of<'e, E: sqlx::Executor<'e, Database = Sqlite>>(
    executor: E,
    key: &InvoiceKey,
) -> Result<Vec<AttemptRecord>, StoreError> {
    let rows = sqlx::query(
        "SELECT channel, attempt, state FROM attempts
         WHERE biller_id = ? AND invoice_id = ? AND revision = ? ORDER BY id",
    )
    .bind(&key.biller_id)
    .bind(&key.invoice_id)
    .bind(key.revision)
    .fetch_all(executor)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(AttemptRecord {
                channel: parse_channel(row.get::<&str, _>(0))?,
                attempt: row.get::<i64, _>(1) as u32,
                state: parse_state(row.get::<&str, _>(2)),
            })
        })
        .collect()
}

#[async_trait]
impl Store for SqliteStore {
    async fn begin(&self, invoice: &Invoice, correlation: &Correlation, accepted: &Event) -> Result<Begin, StoreError> {
        let key = &invoice.key;
        // BEGIN IMMEDIATE takes the write lock first, so two handlers of the
        // same key cannot both see it as new.
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        if let Some(row) = sqlx::query("SELECT status FROM closures WHERE biller_id = ? AND invoice_id = ?")
            .bind(&key.biller_id)
            .bind(&key.invoice_id)
            .fetch_optional(&mut *tx)
            .await?
        {
            return Ok(Begin::Closed {
                status: Status::parse(row.get::<&str, _>(0))?,
            });
        }
        let latest: Option<i64> =
            sqlx::query_scalar("SELECT MAX(revision) FROM invoices WHERE biller_id = ? AND invoice_id = ?")
                .bind(&key.biller_id)
                .bind(&key.invoice_id)
                .fetch_one(&mut *tx)
                .await?;
        if let Some(latest) = latest {
            if latest > key.revision {
                return Ok(Begin::Stale { latest });
            }
            if latest == key.revision {
                let status: String = sqlx::query_scalar(
                    "SELECT status FROM invoices WHERE biller_id = ? AND invoice_id = ? AND revision = ?",
                )
                .bind(&key.biller_id)
                .bind(&key.invoice_id)
                .bind(key.revision)
                .fetch_one(&mut *tx)
                .await?;
                let status = Status::parse(&status)?;
                if status != Status::Accepted {
                    return Ok(Begin::Duplicate { status });
                }
                let attempts = attempts_of(&mut *tx, key).await?;
                return Ok(Begin::Resume { attempts });
            }
        }
        let now = now_ms();
        let json = serde_json::to_string(invoice).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        sqlx::query(
            "UPDATE invoices SET status = 'superseded', updated_ms = ?
             WHERE biller_id = ? AND invoice_id = ? AND revision < ?",
        )
        .bind(now)
        .bind(&key.biller_id)
        .bind(&key.invoice_id)
        .bind(key.revision)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO invoices (biller_id, invoice_id, revision, status, invoice_json, correlation_id, message_id,
                                   received_ms, updated_ms)
             VALUES (?, ?, ?, 'accepted', ?, ?, ?, ?, ?)",
        )
        .bind(&key.biller_id)
        .bind(&key.invoice_id)
        .bind(key.revision)
        .bind(json)
        .bind(&correlation.correlation_id)
        .bind(&correlation.message_id)
        .bind(now)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        Self::insert_event(&mut tx, accepted).await?;
        tx.commit().await?;
        Ok(Begin::New)
    }

    async fn start_attempt(
        &self,
        key: &InvoiceKey,
        channel: ChannelName,
        attempt: u32,
        paylink: &NewPaylink,
    ) -> Result<i64, StoreError> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO attempts (biller_id, invoice_id, revision, channel, attempt, state, started_ms)
             VALUES (?, ?, ?, ?, ?, 'sending', ?) RETURNING id",
        )
        .bind(&key.biller_id)
        .bind(&key.invoice_id)
        .bind(key.revision)
        .bind(channel.as_str())
        .bind(attempt as i64)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO paylinks (token_hash, attempt_id, biller_id, invoice_id, revision, channel, created_ms, expires_ms)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
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
        // A heartbeat: an invoice being sent is not idle (see `claim`).
        sqlx::query("UPDATE invoices SET updated_ms = ? WHERE biller_id = ? AND invoice_id = ? AND revision = ?")
            .bind(now)
            .bind(&key.biller_id)
            .bind(&key.invoice_id)
            .bind(key.revision)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(id)
    }

    async fn finish_attempt(&self, attempt_id: i64, outcome: &AttemptOutcome, event: &Event) -> Result<(), StoreError> {
        let (state, provider_id, detail) = match outcome {
            AttemptOutcome::Sent { provider_message_id } => ("sent", provider_message_id.clone(), None),
            AttemptOutcome::Failed { detail } => ("failed", None, Some(detail.clone())),
        };
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE attempts SET state = ?, provider_message_id = ?, detail = ?, finished_ms = ? WHERE id = ?")
            .bind(state)
            .bind(provider_id)
            .bind(detail)
            .bind(now_ms())
            .bind(attempt_id)
            .execute(&mut *tx)
            .await?;
        Self::insert_event(&mut tx, event).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn finish_invoice(&self, key: &InvoiceKey, status: Status, events: &[Event]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE invoices SET status = ?, updated_ms = ?, held_until_ms = NULL
             WHERE biller_id = ? AND invoice_id = ? AND revision = ? AND status = 'accepted'",
        )
        .bind(status.as_str())
        .bind(now_ms())
        .bind(&key.biller_id)
        .bind(&key.invoice_id)
        .bind(key.revision)
        .execute(&mut *tx)
        .await?;
        for event in events {
            Self::insert_event(&mut tx, event).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn status(&self, key: &InvoiceKey) -> Result<Option<Status>, StoreError> {
        let status: Option<String> =
            sqlx::query_scalar("SELECT status FROM invoices WHERE biller_id = ? AND invoice_id = ? AND revision = ?")
                .bind(&key.biller_id)
                .bind(&key.invoice_id)
                .bind(key.revision)
                .fetch_optional(&self.pool)
                .await?;
        status.as_deref().map(Status::parse).transpose()
    }

    async fn close(
        &self,
        biller_id: &str,
        invoice_id: &str,
        status: Status,
        event: &Event,
    ) -> Result<bool, StoreError> {
        let now = now_ms();
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let inserted = sqlx::query(
            "INSERT INTO closures (biller_id, invoice_id, status, closed_ms) VALUES (?, ?, ?, ?)
             ON CONFLICT (biller_id, invoice_id) DO NOTHING",
        )
        .bind(biller_id)
        .bind(invoice_id)
        .bind(status.as_str())
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            return Ok(false);
        }
        sqlx::query(
            "UPDATE invoices SET status = ?, updated_ms = ?, held_until_ms = NULL
             WHERE biller_id = ? AND invoice_id = ? AND status NOT IN ('superseded')",
        )
        .bind(status.as_str())
        .bind(now)
        .bind(biller_id)
        .bind(invoice_id)
        .execute(&mut *tx)
        .await?;
        // Name the latest revision, and the channel whose pay link the
        // customer opened last: the message that earned the payment.
        let latest: Option<(i64, String)> = sqlx::query_as(
            "SELECT revision, invoice_json FROM invoices WHERE biller_id = ? AND invoice_id = ?
             ORDER BY revision DESC LIMIT 1",
        )
        .bind(biller_id)
        .bind(invoice_id)
        .fetch_optional(&mut *tx)
        .await?;
        let clicked: Option<String> = sqlx::query_scalar(
            "SELECT channel FROM paylinks WHERE biller_id = ? AND invoice_id = ? AND clicks > 0
             ORDER BY first_click_ms DESC, attempt_id DESC LIMIT 1",
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
        Self::insert_event(&mut tx, &event).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn record_event(&self, event: &Event) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        Self::insert_event(&mut tx, event).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn paylink(&self, token_hash: &str) -> Result<Option<PaylinkRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT p.biller_id, p.invoice_id, p.revision, p.channel, p.expires_ms, i.status, i.invoice_json,
                    i.correlation_id, i.message_id
             FROM paylinks p JOIN invoices i
               ON i.biller_id = p.biller_id AND i.invoice_id = p.invoice_id AND i.revision = p.revision
             WHERE p.token_hash = ?",
        )
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let invoice = parse_invoice(row.get::<&str, _>(6))?;
        Ok(Some(PaylinkRecord {
            key: InvoiceKey {
                biller_id: row.get(0),
                invoice_id: row.get(1),
                revision: row.get(2),
            },
            channel: parse_channel(row.get::<&str, _>(3))?,
            expires_at_ms: row.get(4),
            status: Status::parse(row.get::<&str, _>(5))?,
            invoice,
            correlation: Correlation {
                correlation_id: row.get(7),
                message_id: row.get(8),
            },
        }))
    }

    async fn record_click(&self, token_hash: &str, event: &Event) -> Result<i64, StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let clicks: i64 = sqlx::query_scalar(
            "UPDATE paylinks SET clicks = clicks + 1, first_click_ms = COALESCE(first_click_ms, ?)
             WHERE token_hash = ? RETURNING clicks",
        )
        .bind(now_ms())
        .bind(token_hash)
        .fetch_one(&mut *tx)
        .await?;
        if clicks == 1 {
            Self::insert_event(&mut tx, event).await?;
        }
        tx.commit().await?;
        Ok(clicks)
    }

    async fn outbox(&self, limit: u32) -> Result<Vec<OutboxEntry>, StoreError> {
        let rows = sqlx::query("SELECT id, event_json FROM outbox ORDER BY id LIMIT ?")
            .bind(limit as i64)
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter()
            .map(|row| {
                Ok(OutboxEntry {
                    id: row.get(0),
                    event: parse_event(row.get::<&str, _>(1))?,
                })
            })
            .collect()
    }

    async fn outbox_done(&self, ids: &[i64]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        for chunk in ids.chunks(500) {
            let placeholders = vec!["?"; chunk.len()].join(",");
            let sql = format!("DELETE FROM outbox WHERE id IN ({placeholders})");
            let mut q = sqlx::query(&sql);
            for id in chunk {
                q = q.bind(id);
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn invoice(&self, key: &InvoiceKey) -> Result<Option<StoredInvoice>, StoreError> {
        let row = sqlx::query(
            "SELECT status, invoice_json, correlation_id, message_id FROM invoices
             WHERE biller_id = ? AND invoice_id = ? AND revision = ?",
        )
        .bind(&key.biller_id)
        .bind(&key.invoice_id)
        .bind(key.revision)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(StoredInvoice {
            status: Status::parse(row.get::<&str, _>(0))?,
            invoice: parse_invoice(row.get::<&str, _>(1))?,
            correlation: Correlation {
                correlation_id: row.get(2),
                message_id: row.get(3),
            },
            attempts: attempts_of(&self.pool, key).await?,
        }))
    }

    async fn attempt_by_provider_id(
        &self,
        channel: ChannelName,
        provider_message_id: &str,
    ) -> Result<Option<AttemptRef>, StoreError> {
        let row = sqlx::query(
            "SELECT a.id, a.biller_id, a.invoice_id, a.revision, a.attempt, a.state,
                    i.correlation_id, i.message_id, i.invoice_json
             FROM attempts a JOIN invoices i
               ON i.biller_id = a.biller_id AND i.invoice_id = a.invoice_id AND i.revision = a.revision
             WHERE a.channel = ? AND a.provider_message_id = ?
             ORDER BY a.id LIMIT 1",
        )
        .bind(channel.as_str())
        .bind(provider_message_id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let invoice = parse_invoice(row.get::<&str, _>(8))?;
        Ok(Some(AttemptRef {
            attempt_id: row.get(0),
            key: InvoiceKey {
                biller_id: row.get(1),
                invoice_id: row.get(2),
                revision: row.get(3),
            },
            channel,
            attempt: row.get::<i64, _>(4) as u32,
            state: parse_state(row.get::<&str, _>(5)),
            correlation: Correlation {
                correlation_id: row.get(6),
                message_id: row.get(7),
            },
            metadata: invoice.metadata,
        }))
    }

    async fn record_reached(&self, attempt_id: i64, reached: Reached, event: &Event) -> Result<bool, StoreError> {
        let sql = match reached {
            Reached::Delivered => "UPDATE attempts SET delivered_ms = ? WHERE id = ? AND delivered_ms IS NULL",
            Reached::Read => "UPDATE attempts SET read_ms = ? WHERE id = ? AND read_ms IS NULL",
        };
        let mut tx = self.pool.begin().await?;
        let changed = sqlx::query(sql)
            .bind(now_ms())
            .bind(attempt_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if changed == 1 {
            Self::insert_event(&mut tx, event).await?;
        }
        tx.commit().await?;
        Ok(changed == 1)
    }

    async fn history(&self, biller_id: &str, invoice_id: &str) -> Result<Option<History>, StoreError> {
        let revisions: Vec<RevisionRow> = sqlx::query(
            "SELECT revision, status, received_ms, held_until_ms FROM invoices
             WHERE biller_id = ? AND invoice_id = ? ORDER BY revision",
        )
        .bind(biller_id)
        .bind(invoice_id)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|row| RevisionRow {
            revision: row.get(0),
            status: row.get(1),
            received_ms: row.get(2),
            held_until_ms: row.get(3),
        })
        .collect();
        if revisions.is_empty() {
            return Ok(None);
        }
        let attempts: Vec<AttemptRow> = sqlx::query(
            "SELECT revision, channel, state, detail, started_ms, finished_ms, delivered_ms, read_ms,
                    provider_message_id
             FROM attempts WHERE biller_id = ? AND invoice_id = ? ORDER BY id",
        )
        .bind(biller_id)
        .bind(invoice_id)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|row| AttemptRow {
            revision: row.get(0),
            channel: row.get(1),
            state: row.get(2),
            detail: row.get(3),
            started_ms: row.get(4),
            finished_ms: row.get(5),
            delivered_ms: row.get(6),
            read_ms: row.get(7),
            provider_message_id: row.get(8),
        })
        .collect();
        let clicks: Vec<ClickRow> = sqlx::query(
            "SELECT revision, channel, first_click_ms, clicks FROM paylinks
             WHERE biller_id = ? AND invoice_id = ? AND clicks > 0",
        )
        .bind(biller_id)
        .bind(invoice_id)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|row| ClickRow {
            revision: row.get(0),
            channel: row.get(1),
            first_click_ms: row.get(2),
            clicks: row.get(3),
        })
        .collect();
        let closure: Option<(String, i64)> =
            sqlx::query_as("SELECT status, closed_ms FROM closures WHERE biller_id = ? AND invoice_id = ?")
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
        )
    }

    async fn hold(&self, key: &InvoiceKey, until_ms: i64) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE invoices SET held_until_ms = ?, updated_ms = ?
             WHERE biller_id = ? AND invoice_id = ? AND revision = ? AND status = 'accepted'",
        )
        .bind(until_ms)
        .bind(now_ms())
        .bind(&key.biller_id)
        .bind(&key.invoice_id)
        .bind(key.revision)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn due_holds(&self, now_ms: i64, limit: u32) -> Result<Vec<InvoiceKey>, StoreError> {
        let rows = sqlx::query(
            "SELECT biller_id, invoice_id, revision FROM invoices
             WHERE held_until_ms IS NOT NULL AND held_until_ms <= ? AND status = 'accepted'
             ORDER BY held_until_ms LIMIT ?",
        )
        .bind(now_ms)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|row| InvoiceKey {
                biller_id: row.get(0),
                invoice_id: row.get(1),
                revision: row.get(2),
            })
            .collect())
    }

    async fn next_hold(&self) -> Result<Option<i64>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT MIN(held_until_ms) FROM invoices WHERE held_until_ms IS NOT NULL AND status = 'accepted'",
        )
        .fetch_one(&self.pool)
        .await?)
    }

    async fn claim(&self, key: &InvoiceKey, now_ms: i64, idle_ms: i64) -> Result<bool, StoreError> {
        let claimed = sqlx::query("UPDATE invoices SET updated_ms = ? WHERE biller_id = ? AND invoice_id = ? AND revision = ? AND status = 'accepted' AND updated_ms <= ?")
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
        let rows = sqlx::query("UPDATE invoices SET updated_ms = ? WHERE status = 'accepted' AND held_until_ms IS NULL AND updated_ms <= ? AND (biller_id, invoice_id, revision) IN (SELECT biller_id, invoice_id, revision FROM invoices WHERE status = 'accepted' AND held_until_ms IS NULL AND updated_ms <= ? ORDER BY updated_ms LIMIT ?) RETURNING biller_id, invoice_id, revision")
        .bind(now_ms)
        .bind(now_ms - idle_ms)
        .bind(now_ms - idle_ms)
        .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        let mut keys = Vec::with_capacity(rows.len());
        for row in rows {
            keys.push(InvoiceKey {
                biller_id: row.try_get(0)?,
                invoice_id: row.try_get(1)?,
                revision: row.try_get(2)?,
            });
        }
        Ok(keys)
    }

    async fn fail_after_send(&self, attempt_id: i64, detail: &str, event: &Event) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let changed = sqlx::query(
            "UPDATE attempts SET state = 'failed', detail = ?, finished_ms = ? WHERE id = ? AND state = 'sent'",
        )
        .bind(detail)
        .bind(now_ms())
        .bind(attempt_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if changed == 1 {
            sqlx::query(
                "UPDATE invoices SET status = 'accepted', updated_ms = ?
                 WHERE status IN ('sent', 'exhausted') AND (biller_id, invoice_id, revision) =
                       (SELECT biller_id, invoice_id, revision FROM attempts WHERE id = ?)",
            )
            .bind(now_ms())
            .bind(attempt_id)
            .execute(&mut *tx)
            .await?;
            Self::insert_event(&mut tx, event).await?;
        }
        tx.commit().await?;
        Ok(changed == 1)
    }
}
