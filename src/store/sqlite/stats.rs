//! The funnel figures ([`Store::stats`](crate::store::Store::stats)) on
//! SQLite: read on a connection of their own, opened read-only for the
//! call, so a month of invoices being read never holds up the writer
//! thread (WAL mode lets one writer and any readers work at once).

use rusqlite::{params, Connection, OpenFlags};

use super::BUSY_TIMEOUT;
use crate::store::sql;
use crate::store::stats::{aggregate, AttemptFacts, Revision, Revisions, Stats, StatsQuery};
use crate::store::StoreError;

/// The attempts of the revisions `sql::STATS_INVOICES` reads, with their
/// clicks (kept on the attempt here).
const STATS_ATTEMPTS: &str = "SELECT a.invoice_id, a.id, a.channel, a.step, a.state, a.finished_ms,
           a.delivered_ms IS NOT NULL OR a.read_ms IS NOT NULL, CASE WHEN a.clicks > 0 THEN a.first_click_ms END
    FROM invoices i JOIN attempts a
      ON a.biller_id = i.biller_id AND a.invoice_id = i.invoice_id AND a.revision = i.revision
    WHERE i.biller_id = ?1 AND i.first_received_ms >= ?2 AND i.first_received_ms < ?3";

/// Reads the figures of `query` from the database file at `path`.
pub(super) fn stats(path: &str, query: &StatsQuery) -> Result<Stats, StoreError> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // 64 MB of page cache for this one read: a month of a busy biller's
    // invoices and attempts is read once, through their indexes.
    conn.execute_batch("PRAGMA cache_size = -65536")?;
    let (from_ms, to_ms) = query.range_ms();
    // One snapshot for both reads.
    let tx = conn.unchecked_transaction()?;
    let mut invoices = Revisions::default();
    {
        let mut stmt = tx.prepare(sql::STATS_INVOICES)?;
        let mut rows = stmt.query(params![query.biller_id, from_ms, to_ms])?;
        while let Some(row) = rows.next()? {
            invoices.add(Revision {
                invoice_id: row.get(0)?,
                revision: row.get(1)?,
                first_received_ms: row.get(2)?,
                routed_by: row.get(3)?,
                currency: row.get(4)?,
                amount_minor: row.get(5)?,
                paid_ms: row.get(6)?,
            });
        }
    }
    {
        let mut stmt = tx.prepare(STATS_ATTEMPTS)?;
        let mut rows = stmt.query(params![query.biller_id, from_ms, to_ms])?;
        while let Some(row) = rows.next()? {
            let invoice_id: String = row.get(0)?;
            if let Some(invoice) = invoices.get_mut(&invoice_id) {
                invoice.attempts.push(AttemptFacts {
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
    }
    tx.commit()?;
    Ok(aggregate(query, &invoices.into_facts()))
}
