//! Erasure on SQLite: the statements of [`crate::store::erase`], one per
//! table, on the writer thread in one transaction.

use rusqlite::{params, Connection};

use super::insert_event;
use crate::domain::ChannelName;
use crate::events::Event;
use crate::store::erase::{self, Erasure, Personal, Revision};
use crate::store::{event_json, parse_channel, StoreError};

/// What [`erase_revisions`] did.
struct Erased {
    /// The revisions this call erased.
    now: Vec<usize>,
    messages: Vec<(ChannelName, String)>,
}

/// Every statement of an erasure, table by table, for `revisions`.
/// `personal` holds values known from elsewhere to scrub as well (none
/// yet: a table of contacts by customer would add its own here).
fn erase_revisions(
    conn: &Connection,
    revisions: &[Revision],
    mut personal: Personal,
    now: i64,
) -> Result<Erased, StoreError> {
    let mut erased_now = Vec::new();
    // invoices
    for (i, r) in revisions.iter().enumerate().filter(|(_, r)| !r.erased) {
        let (json, values) = erase::erase_invoice_json(&r.json)?;
        let changed = conn.prepare_cached(erase::ERASE_INVOICE)?.execute(params![
            json,
            now,
            r.biller_id,
            r.invoice_id,
            r.revision
        ])?;
        if changed > 0 {
            personal.extend(values);
            erased_now.push(i);
        }
    }
    let mut messages = Vec::new();
    for r in revisions {
        let ids = params![r.biller_id, r.invoice_id, r.revision];
        // attempts
        let attempts = conn
            .prepare_cached(erase::ATTEMPTS_OF_REVISION)?
            .query_map(ids, |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, Option<String>>(2)?,
                    row.get::<_, Option<String>>(3)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        for (id, channel, provider_id, detail) in attempts {
            if let Some(provider_id) = provider_id {
                messages.push((parse_channel(&channel)?, provider_id));
            }
            if let Some(detail) = detail {
                let scrubbed = personal.scrub(&detail);
                if scrubbed != detail {
                    conn.prepare_cached(erase::SET_ATTEMPT_DETAIL)?
                        .execute(params![scrubbed, id])?;
                }
            }
        }
        conn.prepare_cached(erase::FORGET_ADDRESSES_OF_REVISION)?.execute(ids)?;
        // steps
        conn.prepare_cached(erase::CANCEL_STEPS_OF_REVISION)?.execute(params![
            now,
            erase::STEP_CANCELLED,
            r.biller_id,
            r.invoice_id,
            r.revision
        ])?;
        let details = conn
            .prepare_cached(erase::STEP_DETAILS)?
            .query_map(ids, |row| Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        for (seq, detail) in details {
            let scrubbed = personal.scrub(&detail);
            if scrubbed != detail {
                conn.prepare_cached(erase::SET_STEP_DETAIL)?.execute(params![
                    scrubbed,
                    r.biller_id,
                    r.invoice_id,
                    r.revision,
                    seq
                ])?;
            }
        }
    }
    // outbox
    if !personal.is_empty() {
        let events = conn
            .prepare_cached(erase::OUTBOX_EVENTS)?
            .query_map([], |row| Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        for (id, json) in events {
            if let Some(scrubbed) = personal.scrub_event_json(&json)? {
                conn.prepare_cached(erase::SET_OUTBOX_EVENT)?
                    .execute(params![scrubbed, id])?;
            }
        }
    }
    Ok(Erased {
        now: erased_now,
        messages,
    })
}

/// [`crate::store::Store::erase_customer`] on the writer thread.
pub(super) fn erase_customer(
    conn: &Connection,
    biller_id: &str,
    customer: &str,
    erased: &Event,
    now: i64,
) -> Result<Erasure, StoreError> {
    let revisions = conn
        .prepare_cached(erase::CUSTOMER_REVISIONS)?
        .query_map(params![biller_id, customer], |row| {
            Ok(Revision {
                biller_id: biller_id.to_owned(),
                invoice_id: row.get(0)?,
                revision: row.get(1)?,
                json: row.get(2)?,
                erased: row.get(3)?,
                customer: Some(customer.to_owned()),
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let done = erase_revisions(conn, &revisions, Personal::default(), now)?;
    forget_debtors(conn, &revisions)?;
    let invoices_erased = erase::invoices_among(&revisions, &done.now);
    let event = erased
        .clone()
        .detail(erase::erased_detail(invoices_erased, erase::ON_REQUEST));
    insert_event(conn, &event_json(&event)?)?;
    Ok(Erasure {
        invoices_erased,
        messages: done.messages,
        customers: 1,
    })
}

/// [`crate::store::Store::erase_expired`] on the writer thread.
pub(super) fn erase_expired(conn: &Connection, before_ms: i64, limit: u32, now: i64) -> Result<Erasure, StoreError> {
    // `updated_ms` is set when an invoice is closed, superseded or ends, so
    // it bounds every case from below.
    let revisions = conn
        .prepare_cached(
            "SELECT i.biller_id, i.invoice_id, i.revision, i.invoice_json, i.customer FROM invoices i
             WHERE i.erased_ms IS NULL AND i.updated_ms <= ?1 AND (
                   (i.status IN ('paid', 'cancelled')
                    AND EXISTS (SELECT 1 FROM closures c WHERE c.biller_id = i.biller_id
                                AND c.invoice_id = i.invoice_id AND c.closed_ms <= ?1))
                OR i.status = 'superseded'
                OR (i.status IN ('sent', 'exhausted')
                    AND EXISTS (SELECT 1 FROM attempts a WHERE a.biller_id = i.biller_id
                                AND a.invoice_id = i.invoice_id AND a.revision = i.revision
                                AND a.token_hash IS NOT NULL)
                    AND NOT EXISTS (SELECT 1 FROM attempts a WHERE a.biller_id = i.biller_id
                                    AND a.invoice_id = i.invoice_id AND a.revision = i.revision
                                    AND a.token_hash IS NOT NULL AND (a.expires_ms IS NULL OR a.expires_ms > ?1))
                    AND NOT EXISTS (SELECT 1 FROM steps s WHERE s.biller_id = i.biller_id
                                    AND s.invoice_id = i.invoice_id AND s.revision = i.revision
                                    AND s.status = 'planned')))
             LIMIT ?2",
        )?
        .query_map(params![before_ms, limit], |row| {
            Ok(Revision {
                biller_id: row.get(0)?,
                invoice_id: row.get(1)?,
                revision: row.get(2)?,
                json: row.get(3)?,
                erased: false,
                customer: row.get(4)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let done = erase_revisions(conn, &revisions, Personal::default(), now)?;
    forget_debtors(conn, &revisions)?;
    let events = erase::retention_events(&revisions, &done.now);
    for event in &events {
        insert_event(conn, &event_json(event)?)?;
    }
    Ok(Erasure {
        invoices_erased: erase::invoices_among(&revisions, &done.now),
        messages: done.messages,
        customers: events.len() as u32,
    })
}

/// [`erase::FORGET_DEBTOR`] for each customer among `revisions`.
fn forget_debtors(conn: &Connection, revisions: &[Revision]) -> Result<(), StoreError> {
    for (biller_id, customer) in erase::debtors_of(revisions) {
        for statement in erase::FORGET_DEBTOR {
            conn.prepare_cached(statement)?.execute(params![biller_id, customer])?;
        }
    }
    Ok(())
}
