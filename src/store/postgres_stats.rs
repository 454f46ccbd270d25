//! The funnel figures ([`Store::stats`](crate::store::Store::stats)) on
//! PostgreSQL: three reads in one read-only snapshot (a click recorded
//! between them cannot count for an attempt the second did not see).
//! Pay links, and so clicks, are a table of their own here.

use std::collections::HashMap;

use futures_util::TryStreamExt;
use sqlx::Row;

use super::PostgresStore;
use crate::store::sql;
use crate::store::stats::{aggregate, AttemptFacts, Revision, Revisions, Stats, StatsQuery};
use crate::store::StoreError;

/// The attempts of the revisions `sql::STATS_INVOICES` reads.
const STATS_ATTEMPTS: &str = "SELECT a.invoice_id, a.id, a.channel, a.step, a.state, a.finished_ms,
           a.delivered_ms IS NOT NULL OR a.read_ms IS NOT NULL
    FROM invoices i JOIN attempts a
      ON a.biller_id = i.biller_id AND a.invoice_id = i.invoice_id AND a.revision = i.revision
    WHERE i.biller_id = $1 AND i.first_received_ms >= $2 AND i.first_received_ms < $3";

/// The pay links of those revisions that a person opened.
const STATS_CLICKS: &str = "SELECT p.attempt_id, p.first_click_ms
    FROM invoices i JOIN paylinks p
      ON p.biller_id = i.biller_id AND p.invoice_id = i.invoice_id AND p.revision = i.revision
    WHERE i.biller_id = $1 AND i.first_received_ms >= $2 AND i.first_received_ms < $3 AND p.clicks > 0";

impl PostgresStore {
    pub(super) async fn read_stats(&self, query: &StatsQuery) -> Result<Stats, StoreError> {
        let (from_ms, to_ms) = query.range_ms();
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await?;
        let mut invoices = Revisions::default();
        {
            let mut rows = sqlx::query(sql::STATS_INVOICES)
                .bind(&query.biller_id)
                .bind(from_ms)
                .bind(to_ms)
                .fetch(&mut *tx);
            while let Some(row) = rows.try_next().await? {
                invoices.add(Revision {
                    invoice_id: row.try_get(0)?,
                    revision: row.try_get(1)?,
                    first_received_ms: row.try_get(2)?,
                    routed_by: row.try_get(3)?,
                    currency: row.try_get(4)?,
                    amount_minor: row.try_get(5)?,
                    paid_ms: row.try_get(6)?,
                });
            }
        }
        // Attempt id: its invoice, and its place among that one's attempts.
        let mut attempts: HashMap<i64, (String, usize)> = HashMap::new();
        {
            let mut rows = sqlx::query(STATS_ATTEMPTS)
                .bind(&query.biller_id)
                .bind(from_ms)
                .bind(to_ms)
                .fetch(&mut *tx);
            while let Some(row) = rows.try_next().await? {
                let invoice_id: String = row.try_get(0)?;
                let id: i64 = row.try_get(1)?;
                let Some(invoice) = invoices.get_mut(&invoice_id) else {
                    continue;
                };
                invoice.attempts.push(AttemptFacts {
                    id,
                    channel: row.try_get(2)?,
                    step: row.try_get(3)?,
                    state: row.try_get(4)?,
                    finished_ms: row.try_get(5)?,
                    reached: row.try_get(6)?,
                    first_click_ms: None,
                });
                attempts.insert(id, (invoice_id, invoice.attempts.len() - 1));
            }
        }
        {
            let mut rows = sqlx::query(STATS_CLICKS)
                .bind(&query.biller_id)
                .bind(from_ms)
                .bind(to_ms)
                .fetch(&mut *tx);
            while let Some(row) = rows.try_next().await? {
                let attempt_id: i64 = row.try_get(0)?;
                let Some((invoice_id, at)) = attempts.get(&attempt_id) else {
                    continue;
                };
                if let Some(attempt) = invoices.get_mut(invoice_id).and_then(|i| i.attempts.get_mut(*at)) {
                    attempt.first_click_ms = row.try_get(1)?;
                }
            }
        }
        tx.commit().await?;
        Ok(aggregate(query, &invoices.into_facts()))
    }
}
