//! The funnel figures ([`Store::stats`](crate::store::Store::stats)) on
//! SQLite: read on a connection of their own, opened read-only for the
//! call, so a month of invoices being read never holds up the writer
//! thread (WAL mode lets one writer and any readers work at once).

use std::collections::HashMap;

use rusqlite::{params, Connection, OpenFlags};

use super::BUSY_TIMEOUT;
use crate::store::sql;
use crate::store::stats::{aggregate, AttemptFacts, InvoiceFacts, Stats, StatsQuery};
use crate::store::StoreError;

/// The attempts of the invoices `sql::STATS_INVOICES` reads, with their
/// clicks (kept on the attempt here).
const STATS_ATTEMPTS: &str = "SELECT a.invoice_id, a.id, a.channel, a.step, a.state, a.finished_ms,
           a.delivered_ms IS NOT NULL OR a.read_ms IS NOT NULL, CASE WHEN a.clicks > 0 THEN a.first_click_ms END
    FROM invoices i JOIN attempts a ON a.biller_id = i.biller_id AND a.invoice_id = i.invoice_id
    WHERE i.biller_id = ?1 AND i.received_ms >= ?2 AND i.received_ms < ?3
      AND NOT EXISTS (SELECT 1 FROM invoices o WHERE o.biller_id = i.biller_id
                      AND o.invoice_id = i.invoice_id AND o.revision < i.revision)";

/// Reads the figures of `query` from the database file at `path`.
pub(super) fn stats(path: &str, query: &StatsQuery) -> Result<Stats, StoreError> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // 64 MB of page cache for this one read: a month of a busy biller's
    // invoices and attempts is read once, through their indexes.
    conn.execute_batch("PRAGMA cache_size = -65536")?;
    let invoices = facts(&conn, query)?;
    Ok(aggregate(query, &invoices))
}

fn facts(conn: &Connection, query: &StatsQuery) -> Result<Vec<InvoiceFacts>, StoreError> {
    let (from_ms, to_ms) = query.range_ms();
    let tx = conn.unchecked_transaction()?;
    let mut invoices = Vec::new();
    let mut index = HashMap::new();
    {
        let mut stmt = tx.prepare(sql::STATS_INVOICES)?;
        let mut rows = stmt.query(params![query.biller_id, from_ms, to_ms])?;
        while let Some(row) = rows.next()? {
            let invoice_id: String = row.get(0)?;
            index.insert(invoice_id.clone(), invoices.len());
            invoices.push(InvoiceFacts {
                invoice_id,
                received_ms: row.get(1)?,
                routed_by: row.get(2)?,
                currency: row.get::<_, Option<String>>(3)?.unwrap_or_default(),
                amount_minor: row.get::<_, Option<i64>>(4)?.unwrap_or_default(),
                paid_ms: row.get(5)?,
                attempts: Vec::new(),
            });
        }
    }
    {
        let mut stmt = tx.prepare(STATS_ATTEMPTS)?;
        let mut rows = stmt.query(params![query.biller_id, from_ms, to_ms])?;
        while let Some(row) = rows.next()? {
            let invoice_id: String = row.get(0)?;
            let Some(&at) = index.get(&invoice_id) else {
                continue;
            };
            invoices[at].attempts.push(AttemptFacts {
                id: row.get(1)?,
                channel: row.get(2)?,
                step: row.get(3)?,
                state: row.get(4)?,
                finished_ms: row.get(5)?,
                reached: row.get(6)?,
                first_click_ms: row.get(7)?,
            });
        }
    }
    tx.commit()?;
    Ok(invoices)
}
