//! The funnel figures ([`Store::stats`](crate::store::Store::stats)) on
//! PostgreSQL: three reads in one read-only snapshot (a click recorded
//! between them cannot count for an attempt the second did not see).
//! Pay links, and so clicks, are a table of their own here, read by their
//! invoices.

use std::collections::HashMap;

use futures_util::TryStreamExt;
use sqlx::Row;

use super::PostgresStore;
use crate::store::sql;
use crate::store::stats::{aggregate, AttemptFacts, InvoiceFacts, Stats, StatsQuery};
use crate::store::StoreError;

/// The attempts of the invoices `sql::STATS_INVOICES` reads.
const STATS_ATTEMPTS: &str = "SELECT a.invoice_id, a.id, a.channel, a.step, a.state, a.finished_ms,
           a.delivered_ms IS NOT NULL OR a.read_ms IS NOT NULL
    FROM invoices i JOIN attempts a ON a.biller_id = i.biller_id AND a.invoice_id = i.invoice_id
    WHERE i.biller_id = $1 AND i.received_ms >= $2 AND i.received_ms < $3
      AND NOT EXISTS (SELECT 1 FROM invoices o WHERE o.biller_id = i.biller_id
                      AND o.invoice_id = i.invoice_id AND o.revision < i.revision)";

/// The pay links of those invoices that a person opened.
const STATS_CLICKS: &str = "SELECT p.attempt_id, p.first_click_ms
    FROM invoices i JOIN paylinks p ON p.biller_id = i.biller_id AND p.invoice_id = i.invoice_id
    WHERE i.biller_id = $1 AND i.received_ms >= $2 AND i.received_ms < $3
      AND NOT EXISTS (SELECT 1 FROM invoices o WHERE o.biller_id = i.biller_id
                      AND o.invoice_id = i.invoice_id AND o.revision < i.revision)
      AND p.clicks > 0";

impl PostgresStore {
    pub(super) async fn read_stats(&self, query: &StatsQuery) -> Result<Stats, StoreError> {
        let (from_ms, to_ms) = query.range_ms();
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await?;
        let mut invoices = Vec::new();
        let mut index = HashMap::new();
        {
            let mut rows = sqlx::query(sql::STATS_INVOICES)
                .bind(&query.biller_id)
                .bind(from_ms)
                .bind(to_ms)
                .fetch(&mut *tx);
            while let Some(row) = rows.try_next().await? {
                let invoice_id: String = row.try_get(0)?;
                index.insert(invoice_id.clone(), invoices.len());
                invoices.push(InvoiceFacts {
                    invoice_id,
                    received_ms: row.try_get(1)?,
                    routed_by: row.try_get(2)?,
                    currency: row.try_get::<Option<String>, _>(3)?.unwrap_or_default(),
                    amount_minor: row.try_get::<Option<i64>, _>(4)?.unwrap_or_default(),
                    paid_ms: row.try_get(5)?,
                    attempts: Vec::new(),
                });
            }
        }
        // Attempt id: where its facts are.
        let mut attempts = HashMap::new();
        {
            let mut rows = sqlx::query(STATS_ATTEMPTS)
                .bind(&query.biller_id)
                .bind(from_ms)
                .bind(to_ms)
                .fetch(&mut *tx);
            while let Some(row) = rows.try_next().await? {
                let invoice_id: String = row.try_get(0)?;
                let Some(&at) = index.get(&invoice_id) else {
                    continue;
                };
                let id: i64 = row.try_get(1)?;
                attempts.insert(id, (at, invoices[at].attempts.len()));
                invoices[at].attempts.push(AttemptFacts {
                    id,
                    channel: row.try_get(2)?,
                    step: row.try_get(3)?,
                    state: row.try_get(4)?,
                    finished_ms: row.try_get(5)?,
                    reached: row.try_get(6)?,
                    first_click_ms: None,
                });
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
                if let Some(&(invoice, attempt)) = attempts.get(&attempt_id) {
                    invoices[invoice].attempts[attempt].first_click_ms = row.try_get(1)?;
                }
            }
        }
        tx.commit().await?;
        Ok(aggregate(query, &invoices))
    }
}
