//! What both stores keep of debtors (docs/debtors.md): which hashed
//! addresses belong to which customer of which biller (the number each
//! SMS or WhatsApp message went to, hashed, on its attempt), the channels a customer chose or stopped
//! (`preferences`), and the addresses that asked to stop (`suppressions`).
//!
//! The statements follow `sql`'s rule: `$1`, `$2`, ... introduced in order.

use crate::domain::debtor::{address_hash, suppression_scope, Reply};
use crate::domain::ChannelName;
use crate::events::{Correlation, Event, EventName};
use crate::invoice::Invoice;

/// The customer's hashed address on each channel an invoice has one for.
pub fn hashed_contacts(invoice: &Invoice) -> Vec<(ChannelName, String)> {
    ChannelName::ALL
        .into_iter()
        .filter_map(|channel| {
            let address = invoice.customer.contacts.address(channel)?;
            Some((channel, address_hash(channel, address)))
        })
        .collect()
}

/// A stop or a start for one address, from wherever it came.
#[derive(Debug, Clone)]
pub struct SuppressionChange {
    pub channel: ChannelName,
    /// See [`address_hash`].
    pub address_hash: String,
    /// The biller whose customer asked; for SMS and WhatsApp the stop holds
    /// for every biller anyway (see [`suppression_scope`]).
    pub biller_id: String,
    pub reply: Reply,
    /// How it came, in words, for the events' detail (no address in it).
    pub reason: String,
    /// The customer whose invoice it came through (an unsubscribe link, a
    /// provider's refusal of a send), told even when no send remembered
    /// the address. `None` for a reply that names only the address.
    pub owner: Option<Owner>,
}

/// A customer an address belongs to: who hears of its stop or start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub biller_id: String,
    /// [`Invoice::customer_key`].
    pub customer_key: String,
    pub customer_id: Option<String>,
    /// The latest invoice of theirs that went to the address.
    pub invoice_id: String,
}

impl Owner {
    pub fn of(invoice: &Invoice) -> Owner {
        Owner {
            biller_id: invoice.key.biller_id.clone(),
            customer_key: invoice.customer_key(),
            customer_id: invoice.customer.id.clone(),
            invoice_id: invoice.key.invoice_id.clone(),
        }
    }
}

impl SuppressionChange {
    pub fn scope(&self) -> &str {
        suppression_scope(self.channel, &self.biller_id)
    }

    /// Who is told: the change's own owner, then each customer the store
    /// remembered the address for (`remembered`, from [`OWNERS`]), once each.
    pub(super) fn told(&self, remembered: Vec<Owner>) -> Vec<Owner> {
        let mut told: Vec<Owner> = self.owner.iter().cloned().collect();
        for owner in remembered {
            if !told
                .iter()
                .any(|t| t.biller_id == owner.biller_id && t.customer_key == owner.customer_key)
            {
                told.push(owner);
            }
        }
        told
    }

    /// The event telling one biller that its customer asked.
    pub(super) fn event(&self, owner: Owner) -> Event {
        let (name, what) = match self.reply {
            Reply::Stop => (EventName::Suppressed, "no more messages are sent"),
            Reply::Start => (EventName::Unsuppressed, "messages may be sent again"),
        };
        let mut event = Event::bare(name, &Correlation::default())
            .customer_id(owner.customer_id)
            .detail(format!("{} on {}: {what}", self.reason, self.channel));
        event.biller_id = Some(owner.biller_id);
        event.invoice_id = Some(owner.invoice_id);
        event.channel = Some(self.channel);
        event
    }
}

/// Whether the first send as routed without the store may not be the
/// right one: the customer chose channels, or that address asked to stop.
pub(super) const ROUTES_OTHERWISE: &str =
    "SELECT EXISTS (SELECT 1 FROM preferences WHERE biller_id = $1 AND customer_key = $2)
         OR EXISTS (SELECT 1 FROM suppressions WHERE scope = $3 AND channel = $4 AND address_hash = $5)";

pub(super) const IS_SUPPRESSED: &str =
    "SELECT EXISTS (SELECT 1 FROM suppressions WHERE scope = $1 AND channel = $2 AND address_hash = $3)";

pub(super) const PREFERENCE: &str =
    "SELECT channels, stopped FROM preferences WHERE biller_id = $1 AND customer_key = $2";

pub(super) const UPSERT_PREFERENCE: &str =
    "INSERT INTO preferences (biller_id, customer_key, channels, stopped, updated_ms) VALUES ($1, $2, $3, $4, $5)
     ON CONFLICT (biller_id, customer_key)
     DO UPDATE SET channels = excluded.channels, stopped = excluded.stopped, updated_ms = excluded.updated_ms";

/// Changes nothing for an address already stopped: one event per stop.
pub(super) const INSERT_SUPPRESSION: &str =
    "INSERT INTO suppressions (scope, channel, address_hash, reason, since_ms) VALUES ($1, $2, $3, $4, $5)
     ON CONFLICT (scope, channel, address_hash) DO NOTHING";

pub(super) const DELETE_SUPPRESSION: &str =
    "DELETE FROM suppressions WHERE scope = $1 AND channel = $2 AND address_hash = $3";

/// The customers an address belongs to within a scope (`*`: every biller),
/// the latest written to first: who is told of a stop. Each message sent by
/// SMS or WhatsApp keeps the hash of its number (`attempts.address_hash`);
/// `debtor_contacts` holds what earlier versions remembered of every
/// invoice. The customer id is read back from the customer key,
/// `{biller}/id/{customer id}` ([`crate::invoice::customer_key_of_id`]).
pub(super) const OWNERS: &str =
    "SELECT i.biller_id, i.customer,
            CASE WHEN substr(i.customer, length(i.biller_id) + 2, 3) = 'id/' THEN substr(i.customer, length(i.biller_id) + 5) END,
            i.invoice_id, a.id
     FROM attempts a
     JOIN invoices i ON i.biller_id = a.biller_id AND i.invoice_id = a.invoice_id AND i.revision = a.revision
     WHERE a.channel = $1 AND a.address_hash = $2 AND ($3 = '*' OR a.biller_id = $3)
       AND i.customer IS NOT NULL AND i.erased_ms IS NULL
     UNION ALL
     SELECT biller_id, customer_key, customer_id, invoice_id, -1 FROM debtor_contacts
     WHERE channel = $1 AND address_hash = $2 AND ($3 = '*' OR biller_id = $3)
     ORDER BY 5 DESC";

#[cfg(test)]
mod tests {
    use rusqlite::Connection;

    use super::*;

    /// The look-ups every invoice and every send make go straight to a
    /// primary key in SQLite: none reads a table through.
    #[test]
    fn the_per_send_look_ups_read_primary_keys_only() {
        let conn = Connection::open_in_memory().unwrap();
        for step in super::super::sqlite::MIGRATIONS {
            conn.execute_batch(step).unwrap();
        }
        for (name, statement, params) in [
            ("ROUTES_OTHERWISE", ROUTES_OTHERWISE, 5),
            ("IS_SUPPRESSED", IS_SUPPRESSED, 3),
            ("PREFERENCE", PREFERENCE, 2),
            ("OWNERS", OWNERS, 3),
        ] {
            let mut plan = conn.prepare(&format!("EXPLAIN QUERY PLAN {statement}")).unwrap();
            let values: Vec<String> = (0..params).map(|i| format!("v{i}")).collect();
            let lines: Vec<String> = plan
                .query_map(rusqlite::params_from_iter(values.iter()), |r| r.get::<_, String>(3))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            assert!(
                lines.iter().all(|l| !l.starts_with("SCAN") || l == "SCAN CONSTANT ROW")
                    && lines.iter().any(|l| l.contains("PRIMARY KEY")),
                "{name}: {lines:?}"
            );
        }
    }

    /// The statements name their parameters `$1`, `$2`, ... in order of
    /// first use, which both databases read the same way (see `sql`).
    #[test]
    fn parameters_are_introduced_in_order() {
        for statement in [
            ROUTES_OTHERWISE,
            IS_SUPPRESSED,
            PREFERENCE,
            UPSERT_PREFERENCE,
            INSERT_SUPPRESSION,
            DELETE_SUPPRESSION,
            OWNERS,
        ] {
            let mut next = 1;
            let mut rest = statement;
            while let Some(at) = rest.find('$') {
                let digits: String = rest[at + 1..].chars().take_while(char::is_ascii_digit).collect();
                let n: usize = digits.parse().unwrap();
                assert!(n <= next, "${n} before ${next} in {statement}");
                if n == next {
                    next += 1;
                }
                rest = &rest[at + 1 + digits.len()..];
            }
        }
    }
}
