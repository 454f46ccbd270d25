//! Erasure on PostgreSQL: the statements of [`crate::store::erase`], one
//! per table, in one transaction. Each erased row is updated only while
//! `erased_ms` is NULL, and PostgreSQL checks that again on the committed
//! row when two erasures meet, so each revision is erased (and counted)
//! once; retention sweeps of several instances lock their candidates with
//! `SKIP LOCKED`, so each takes its own.

use sqlx::{Postgres, Row, Transaction};

use super::PostgresStore;
use crate::domain::ChannelName;
use crate::events::Event;
use crate::store::erase::{self, Erasure, Personal, Revision};
use crate::store::{parse_channel, StoreError};

/// What [`erase_revisions`] did.
struct Erased {
    /// The revisions this call erased.
    now: Vec<usize>,
    messages: Vec<(ChannelName, String)>,
}

/// Every statement of an erasure, table by table, for `revisions`.
/// `personal` holds values known from elsewhere to scrub as well (none
/// yet: a table of contacts by customer would add its own here).
async fn erase_revisions(
    tx: &mut Transaction<'_, Postgres>,
    revisions: &[Revision],
    mut personal: Personal,
    now: i64,
) -> Result<Erased, StoreError> {
    let mut erased_now = Vec::new();
    // invoices
    for (i, r) in revisions.iter().enumerate().filter(|(_, r)| !r.erased) {
        let (json, values) = erase::erase_invoice_json(&r.json)?;
        let changed = sqlx::query(erase::ERASE_INVOICE)
            .bind(json)
            .bind(now)
            .bind(&r.biller_id)
            .bind(&r.invoice_id)
            .bind(r.revision)
            .execute(&mut **tx)
            .await?
            .rows_affected();
        if changed > 0 {
            personal.extend(values);
            erased_now.push(i);
        }
    }
    let mut messages = Vec::new();
    for r in revisions {
        // attempts
        let attempts: Vec<(i64, String, Option<String>, Option<String>)> = sqlx::query_as(erase::ATTEMPTS_OF_REVISION)
            .bind(&r.biller_id)
            .bind(&r.invoice_id)
            .bind(r.revision)
            .fetch_all(&mut **tx)
            .await?;
        for (id, channel, provider_id, detail) in attempts {
            if let Some(provider_id) = provider_id {
                messages.push((parse_channel(&channel)?, provider_id));
            }
            if let Some(detail) = detail {
                let scrubbed = personal.scrub(&detail);
                if scrubbed != detail {
                    sqlx::query(erase::SET_ATTEMPT_DETAIL)
                        .bind(scrubbed.as_ref())
                        .bind(id)
                        .execute(&mut **tx)
                        .await?;
                }
            }
        }
        sqlx::query(erase::FORGET_ADDRESSES_OF_REVISION)
            .bind(&r.biller_id)
            .bind(&r.invoice_id)
            .bind(r.revision)
            .execute(&mut **tx)
            .await?;
        // steps
        sqlx::query(erase::CANCEL_STEPS_OF_REVISION)
            .bind(now)
            .bind(erase::STEP_CANCELLED)
            .bind(&r.biller_id)
            .bind(&r.invoice_id)
            .bind(r.revision)
            .execute(&mut **tx)
            .await?;
        let details: Vec<(i64, String)> = sqlx::query_as(erase::STEP_DETAILS)
            .bind(&r.biller_id)
            .bind(&r.invoice_id)
            .bind(r.revision)
            .fetch_all(&mut **tx)
            .await?;
        for (seq, detail) in details {
            let scrubbed = personal.scrub(&detail);
            if scrubbed != detail {
                sqlx::query(erase::SET_STEP_DETAIL)
                    .bind(scrubbed.as_ref())
                    .bind(&r.biller_id)
                    .bind(&r.invoice_id)
                    .bind(r.revision)
                    .bind(seq)
                    .execute(&mut **tx)
                    .await?;
            }
        }
    }
    // outbox (every instance's events: an event another instance holds is
    // rewritten in place and stays with it)
    if !personal.is_empty() {
        let events: Vec<(i64, String)> = sqlx::query_as(erase::OUTBOX_EVENTS).fetch_all(&mut **tx).await?;
        for (id, json) in events {
            if let Some(scrubbed) = personal.scrub_event_json(&json)? {
                sqlx::query(erase::SET_OUTBOX_EVENT)
                    .bind(scrubbed)
                    .bind(id)
                    .execute(&mut **tx)
                    .await?;
            }
        }
    }
    Ok(Erased {
        now: erased_now,
        messages,
    })
}

impl PostgresStore {
    /// [`crate::store::Store::erase_customer`].
    pub(super) async fn erase_customer_now(
        &self,
        biller_id: &str,
        customer: &str,
        erased: &Event,
    ) -> Result<Erasure, StoreError> {
        let now = self.clock.now_ms();
        let mut tx = self.pool.begin().await?;
        let rows: Vec<(String, i64, String, bool)> = sqlx::query_as(erase::CUSTOMER_REVISIONS)
            .bind(biller_id)
            .bind(customer)
            .fetch_all(&mut *tx)
            .await?;
        let revisions: Vec<Revision> = rows
            .into_iter()
            .map(|(invoice_id, revision, json, erased)| Revision {
                biller_id: biller_id.to_owned(),
                invoice_id,
                revision,
                json,
                erased,
                customer: Some(customer.to_owned()),
            })
            .collect();
        let done = erase_revisions(&mut tx, &revisions, Personal::default(), now).await?;
        forget_debtors(&mut tx, &revisions).await?;
        let invoices_erased = erase::invoices_among(&revisions, &done.now);
        let event = erased
            .clone()
            .detail(erase::erased_detail(invoices_erased, erase::ON_REQUEST));
        self.insert_event(&mut *tx, &event).await?;
        tx.commit().await?;
        Ok(Erasure {
            invoices_erased,
            messages: done.messages,
            customers: 1,
        })
    }

    /// [`crate::store::Store::erase_expired`].
    pub(super) async fn erase_expired_now(&self, before_ms: i64, limit: u32) -> Result<Erasure, StoreError> {
        let now = self.clock.now_ms();
        let mut tx = self.pool.begin().await?;
        // `updated_ms` is set when an invoice is closed, superseded or
        // ends, so it bounds every case from below.
        let rows = sqlx::query(
            "SELECT i.biller_id, i.invoice_id, i.revision, i.invoice_json, i.customer FROM invoices i
             WHERE i.erased_ms IS NULL AND i.updated_ms <= $1 AND (
                   (i.status IN ('paid', 'cancelled')
                    AND EXISTS (SELECT 1 FROM closures c WHERE c.biller_id = i.biller_id
                                AND c.invoice_id = i.invoice_id AND c.closed_ms <= $1))
                OR i.status = 'superseded'
                OR (i.status IN ('sent', 'exhausted')
                    AND EXISTS (SELECT 1 FROM paylinks p WHERE p.biller_id = i.biller_id
                                AND p.invoice_id = i.invoice_id AND p.revision = i.revision)
                    AND NOT EXISTS (SELECT 1 FROM paylinks p WHERE p.biller_id = i.biller_id
                                    AND p.invoice_id = i.invoice_id AND p.revision = i.revision
                                    AND p.expires_ms > $1)
                    AND NOT EXISTS (SELECT 1 FROM steps s WHERE s.biller_id = i.biller_id
                                    AND s.invoice_id = i.invoice_id AND s.revision = i.revision
                                    AND s.status = 'planned')))
             LIMIT $2
             FOR UPDATE OF i SKIP LOCKED",
        )
        .bind(before_ms)
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await?;
        let revisions = rows
            .iter()
            .map(|row| {
                Ok(Revision {
                    biller_id: row.try_get(0)?,
                    invoice_id: row.try_get(1)?,
                    revision: row.try_get(2)?,
                    json: row.try_get(3)?,
                    erased: false,
                    customer: row.try_get(4)?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        let done = erase_revisions(&mut tx, &revisions, Personal::default(), now).await?;
        forget_debtors(&mut tx, &revisions).await?;
        let events = erase::retention_events(&revisions, &done.now);
        for event in &events {
            self.insert_event(&mut *tx, event).await?;
        }
        tx.commit().await?;
        Ok(Erasure {
            invoices_erased: erase::invoices_among(&revisions, &done.now),
            messages: done.messages,
            customers: events.len() as u32,
        })
    }
}

/// [`erase::FORGET_DEBTOR`] for each customer among `revisions`.
async fn forget_debtors(tx: &mut Transaction<'_, Postgres>, revisions: &[Revision]) -> Result<(), StoreError> {
    for (biller_id, customer) in erase::debtors_of(revisions) {
        for statement in erase::FORGET_DEBTOR {
            sqlx::query(statement)
                .bind(biller_id)
                .bind(customer)
                .execute(&mut **tx)
                .await?;
        }
    }
    Ok(())
}
