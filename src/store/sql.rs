//! The statements both stores run, each written once.
//!
//! Both databases read `$1`, `$2`, ... as the parameters in the order they
//! are bound: PostgreSQL by their number, SQLite as parameters *named* `$1`,
//! `$2`, ..., which it numbers in the order their names first appear. So
//! every statement here introduces `$1`, `$2`, ... in that order (a number
//! may come again later); the tests below hold every statement to it.
//!
//! What the databases do differently stays with each store: the outbox and
//! its owners, pay links (their own table in PostgreSQL, columns of the
//! attempt in SQLite, so an attempt's clicks are read differently), new
//! attempts' ids, and locks and leases.

/// Declares the statements, and for the tests the list of them all.
macro_rules! statements {
    ($($(#[$doc:meta])* $name:ident = $sql:expr;)*) => {
        $($(#[$doc])* pub(super) const $name: &str = $sql;)*

        #[cfg(test)]
        const ALL: &[(&str, &str)] = &[$((stringify!($name), $name)),*];
    };
}

statements! {
    /// The `begin` decision's first look: the invoice's closure, and its
    /// latest revision, in one round trip.
    CLOSED_AND_LATEST = "SELECT (SELECT status FROM closures WHERE biller_id = $1 AND invoice_id = $2),
                                (SELECT MAX(revision) FROM invoices WHERE biller_id = $1 AND invoice_id = $2)";

    REVISION_STATUS = "SELECT status FROM invoices WHERE biller_id = $1 AND invoice_id = $2 AND revision = $3";

    SUPERSEDE_OLDER = "UPDATE invoices SET status = 'superseded', updated_ms = $1
                       WHERE biller_id = $2 AND invoice_id = $3 AND revision < $4";

    /// `received_ms` and `updated_ms` are both `$7`. The routing decision,
    /// the amount and when the invoice's first revision came (this one's
    /// time when it is the first) are kept in columns of their own for the
    /// funnel figures (`stats`), which would otherwise parse every
    /// invoice's JSON and look up every invoice's first revision.
    INSERT_INVOICE = "INSERT INTO invoices (biller_id, invoice_id, revision, status, invoice_json, correlation_id,
                                            message_id, received_ms, updated_ms, customer, routed_by, currency,
                                            amount_minor, first_received_ms)
                      VALUES ($1, $2, $3, 'accepted', $4, $5, $6, $7, $7, $8, $9, $10, $11,
                              COALESCE((SELECT MIN(f.received_ms) FROM invoices f
                                        WHERE f.biller_id = $1 AND f.invoice_id = $2), $7))";

    /// The check right before a send, and a heartbeat (see `claim`): matches
    /// nothing once the invoice is paid, cancelled or superseded, or its
    /// customer's personal data was erased.
    TOUCH_OPEN_INVOICE = "UPDATE invoices SET updated_ms = $1
                          WHERE biller_id = $2 AND invoice_id = $3 AND revision = $4
                            AND status NOT IN ('paid', 'cancelled', 'superseded') AND erased_ms IS NULL";

    /// `$1` to `$3` come from `AttemptOutcome::columns`.
    FINISH_ATTEMPT = "UPDATE attempts SET state = $1, provider_message_id = $2, detail = $3, finished_ms = $4
                      WHERE id = $5";

    /// Only from `accepted`: a close or a supersede that came first stays.
    FINISH_INVOICE = "UPDATE invoices SET status = $1, updated_ms = $2, held_until_ms = NULL
                      WHERE biller_id = $3 AND invoice_id = $4 AND revision = $5 AND status = 'accepted'";

    /// Changes nothing when the invoice was closed before: one close wins.
    INSERT_CLOSURE = "INSERT INTO closures (biller_id, invoice_id, status, closed_ms) VALUES ($1, $2, $3, $4)
                      ON CONFLICT (biller_id, invoice_id) DO NOTHING";

    CLOSE_REVISIONS = "UPDATE invoices SET status = $1, updated_ms = $2, held_until_ms = NULL
                       WHERE biller_id = $3 AND invoice_id = $4 AND status NOT IN ('superseded')";

    LATEST_REVISION = "SELECT revision, invoice_json FROM invoices WHERE biller_id = $1 AND invoice_id = $2
                       ORDER BY revision DESC LIMIT 1";

    INVOICE = "SELECT status, invoice_json, correlation_id, message_id FROM invoices
               WHERE biller_id = $1 AND invoice_id = $2 AND revision = $3";

    /// Provider ids are unique per channel in practice; should one repeat,
    /// the first attempt that carried it answers.
    ATTEMPT_BY_PROVIDER_ID = "SELECT a.id, a.biller_id, a.invoice_id, a.revision, a.attempt, a.state,
                                     i.correlation_id, i.message_id, i.invoice_json, a.step
                              FROM attempts a JOIN invoices i
                                ON i.biller_id = a.biller_id AND i.invoice_id = a.invoice_id
                                   AND i.revision = a.revision
                              WHERE a.channel = $1 AND a.provider_message_id = $2
                              ORDER BY a.id LIMIT 1";

    /// Every attempt a provider id belongs to: one, or each invoice a
    /// combined message listed.
    ATTEMPTS_BY_PROVIDER_ID = "SELECT a.id, a.biller_id, a.invoice_id, a.revision, a.attempt, a.state,
                                      i.correlation_id, i.message_id, i.invoice_json, a.step
                               FROM attempts a JOIN invoices i
                                 ON i.biller_id = a.biller_id AND i.invoice_id = a.invoice_id
                                    AND i.revision = a.revision
                               WHERE a.channel = $1 AND a.provider_message_id = $2
                               ORDER BY a.id LIMIT 1000";

    /// Matches only the first report: a repeat finds the column set.
    DELIVERED = "UPDATE attempts SET delivered_ms = $1 WHERE id = $2 AND delivered_ms IS NULL";
    READ = "UPDATE attempts SET read_ms = $1 WHERE id = $2 AND read_ms IS NULL";

    HISTORY_REVISIONS = "SELECT revision, status, received_ms, held_until_ms FROM invoices
                         WHERE biller_id = $1 AND invoice_id = $2 ORDER BY revision";

    HISTORY_ATTEMPTS = "SELECT revision, channel, state, detail, started_ms, finished_ms, delivered_ms, read_ms,
                               provider_message_id
                        FROM attempts WHERE biller_id = $1 AND invoice_id = $2 ORDER BY id";

    CLOSURE = "SELECT status, closed_ms FROM closures WHERE biller_id = $1 AND invoice_id = $2";

    /// Only an accepted invoice can be held.
    HOLD = "UPDATE invoices SET held_until_ms = $1, updated_ms = $2
            WHERE biller_id = $3 AND invoice_id = $4 AND revision = $5 AND status = 'accepted'";

    DUE_HOLDS = "SELECT biller_id, invoice_id, revision FROM invoices
                 WHERE held_until_ms IS NOT NULL AND held_until_ms <= $1 AND status = 'accepted'
                 ORDER BY held_until_ms LIMIT $2";

    /// The outer conditions are checked again on each row it would update,
    /// so a hold another instance claimed meanwhile is left alone.
    CLAIM_DUE_HOLDS = "UPDATE invoices SET held_until_ms = NULL, updated_ms = $1
                       WHERE status = 'accepted' AND held_until_ms IS NOT NULL AND held_until_ms <= $1
                         AND (biller_id, invoice_id, revision) IN (
                             SELECT biller_id, invoice_id, revision FROM invoices
                             WHERE held_until_ms IS NOT NULL AND held_until_ms <= $1 AND status = 'accepted'
                             ORDER BY held_until_ms LIMIT $2)
                       RETURNING biller_id, invoice_id, revision";

    NEXT_HOLD = "SELECT MIN(held_until_ms) FROM invoices WHERE held_until_ms IS NOT NULL AND status = 'accepted'";

    /// `$5` is the latest `updated_ms` that counts as idle.
    CLAIM = "UPDATE invoices SET updated_ms = $1
             WHERE biller_id = $2 AND invoice_id = $3 AND revision = $4 AND status = 'accepted'
               AND updated_ms <= $5";

    /// `$2` is the latest `updated_ms` that counts as idle. The outer
    /// conditions are checked again on each row it would update, so an
    /// invoice claimed or finished meanwhile is left alone.
    /// An invoice in a combined group that is not done is its group's to
    /// send (`CLAIM_DUE_GROUPS` takes over a group left unfinished); once
    /// the group is done, it is taken over like any other.
    CLAIM_STALE = "UPDATE invoices SET updated_ms = $1
                   WHERE status = 'accepted' AND held_until_ms IS NULL AND updated_ms <= $2
                     AND (invoices.combine_group IS NULL OR NOT EXISTS (
                         SELECT 1 FROM combine_groups g WHERE g.id = invoices.combine_group AND g.status <> 'done'))
                     AND (biller_id, invoice_id, revision) IN (
                         SELECT biller_id, invoice_id, revision FROM invoices
                         WHERE status = 'accepted' AND held_until_ms IS NULL AND updated_ms <= $2
                           AND (invoices.combine_group IS NULL OR NOT EXISTS (
                               SELECT 1 FROM combine_groups g
                               WHERE g.id = invoices.combine_group AND g.status <> 'done'))
                         ORDER BY updated_ms LIMIT $3)
                   RETURNING biller_id, invoice_id, revision";

    /// A transient failure a journey step tries again later: not final, so
    /// no `channel_failed` yet.
    RETRY_ATTEMPT = "UPDATE attempts SET state = 'retrying', detail = $1, finished_ms = $2 WHERE id = $3";

    /// Matches only while the attempt is `sent`: one report fails it.
    FAIL_SENT_ATTEMPT = "UPDATE attempts SET state = 'failed', detail = $1, finished_ms = $2
                         WHERE id = $3 AND state = 'sent'";

    /// The attempt's invoice, open again for the next channel unless it was
    /// closed or superseded meanwhile. Only for the first request: a
    /// reminder that failed later is reported, and the next step follows.
    REOPEN_INVOICE_OF_ATTEMPT = "UPDATE invoices SET status = 'accepted', updated_ms = $1
                                 WHERE status IN ('sent', 'exhausted') AND (biller_id, invoice_id, revision) =
                                       (SELECT biller_id, invoice_id, revision FROM attempts
                                        WHERE id = $2 AND step IS NULL)";

    /// A planned step, or one skipped at intake (its time had passed).
    INSERT_STEP = "INSERT INTO steps (biller_id, invoice_id, revision, seq, journey, name, status, due_ms, after_ms,
                                      done_ms, detail)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
                   ON CONFLICT (biller_id, invoice_id, revision, seq) DO NOTHING";

    /// An older revision's steps when a newer one arrives, or every
    /// revision's when the invoice is closed (`$5`: the revision below which).
    CANCEL_STEPS = "UPDATE steps SET status = 'cancelled', done_ms = $1, detail = $2, claimed_ms = NULL
                    WHERE biller_id = $3 AND invoice_id = $4 AND revision < $5 AND status = 'planned'";

    /// `$2` is the latest claim that counts as abandoned. The outer
    /// conditions are checked again on each row it would update, so a step
    /// another instance claimed meanwhile is left alone.
    CLAIM_DUE_STEPS = "UPDATE steps SET claimed_ms = $1
                       WHERE status = 'planned' AND due_ms <= $1 AND (claimed_ms IS NULL OR claimed_ms <= $2)
                         AND (biller_id, invoice_id, revision, seq) IN (
                             SELECT biller_id, invoice_id, revision, seq FROM steps
                             WHERE status = 'planned' AND due_ms <= $1 AND (claimed_ms IS NULL OR claimed_ms <= $2)
                             ORDER BY due_ms LIMIT $3)
                       RETURNING biller_id, invoice_id, revision, seq, journey, name, due_ms";

    /// A claimed step that must wait (its previous message, a channel
    /// failing for now): due again later, and free for any instance then.
    RESCHEDULE_STEP = "UPDATE steps SET due_ms = $1, detail = $2, claimed_ms = NULL, held = NULL
                       WHERE biller_id = $3 AND invoice_id = $4 AND revision = $5 AND seq = $6
                         AND status = 'planned'";

    /// `RESCHEDULE_STEP` for quiet hours or the daily cap: `held` says which.
    HOLD_STEP = "UPDATE steps SET due_ms = $1, held = $2, detail = $3, claimed_ms = NULL
                 WHERE biller_id = $4 AND invoice_id = $5 AND revision = $6 AND seq = $7
                   AND status = 'planned'";

    /// Keeps a claim alive while its sends take long (retries, pauses).
    TOUCH_STEP = "UPDATE steps SET claimed_ms = $1
                  WHERE biller_id = $2 AND invoice_id = $3 AND revision = $4 AND name = $5 AND status = 'planned'";

    /// Matches only a planned step: done once.
    FINISH_STEP = "UPDATE steps SET status = $1, done_ms = $2, detail = $3, claimed_ms = NULL
                   WHERE biller_id = $4 AND invoice_id = $5 AND revision = $6 AND seq = $7 AND status = 'planned'";

    STEPS_OF = "SELECT revision, seq, journey, name, status, due_ms, done_ms, detail, after_ms FROM steps
                WHERE biller_id = $1 AND invoice_id = $2 ORDER BY revision, seq";

    NEXT_STEP = "SELECT MIN(due_ms) FROM steps WHERE status = 'planned'";

    /// The console's search: the newest revision of each of a biller's
    /// invoices with that id or of that customer.
    FIND_INVOICES = "SELECT invoice_id, revision, status, received_ms, invoice_json, erased_ms FROM invoices i
                     WHERE biller_id = $1 AND (invoice_id = $2 OR customer = $3)
                       AND revision = (SELECT MAX(revision) FROM invoices j
                                       WHERE j.biller_id = i.biller_id AND j.invoice_id = i.invoice_id)
                     ORDER BY received_ms DESC, invoice_id LIMIT $4";

    /// The rules dry run's invoices, through `invoices_by_received`.
    INVOICES_RECEIVED = "SELECT invoice_id, revision, status, received_ms, invoice_json, erased_ms FROM invoices
                         WHERE biller_id = $1 AND received_ms >= $2 AND received_ms < $3 AND erased_ms IS NULL
                         ORDER BY received_ms, invoice_id, revision LIMIT $4";

    /// Messages started for one customer since `$2`, sent or being sent,
    /// across all their invoices (the daily cap).
    /// One combined message (the same provider message on one channel)
    /// counts once, however many invoices it listed.
    MESSAGES_TO_CUSTOMER = "SELECT COUNT(DISTINCT COALESCE(a.channel || ':' || a.provider_message_id, CAST(a.id AS TEXT)))
                            FROM invoices i JOIN attempts a
                              ON a.biller_id = i.biller_id AND a.invoice_id = i.invoice_id
                                 AND a.revision = i.revision
                            WHERE i.customer = $1 AND a.started_ms >= $2 AND a.state IN ('sent', 'sending')";

    /// A first request joins the open group of its customer and currency,
    /// or opens one (`$1` its id, closing at `$5`): one statement, so two
    /// invoices arriving together end up in one group, and a group being
    /// claimed meanwhile (no longer open) is not joined.
    JOIN_GROUP = "INSERT INTO combine_groups (id, biller_id, customer, currency, status, due_ms, created_ms)
                  VALUES ($1, $2, $3, $4, 'open', $5, $6)
                  ON CONFLICT (biller_id, customer, currency) WHERE status = 'open'
                  DO UPDATE SET created_ms = combine_groups.created_ms
                  RETURNING id, due_ms";

    SET_GROUP = "UPDATE invoices SET combine_group = $1
                 WHERE biller_id = $2 AND invoice_id = $3 AND revision = $4";

    /// The group an invoice waits in, unless it is done.
    GROUP_OF = "SELECT g.id, g.due_ms FROM invoices i JOIN combine_groups g ON g.id = i.combine_group
                WHERE i.biller_id = $1 AND i.invoice_id = $2 AND i.revision = $3 AND g.status <> 'done'";

    /// `$2` is the latest claim that counts as abandoned. The outer
    /// conditions are checked again on each row it would update, so a group
    /// another instance claimed meanwhile is left alone.
    CLAIM_DUE_GROUPS = "UPDATE combine_groups SET status = 'sending', claimed_ms = $1
                        WHERE due_ms <= $1 AND (status IN ('open', 'held') OR (status = 'sending' AND claimed_ms <= $2))
                          AND id IN (
                              SELECT id FROM combine_groups
                              WHERE due_ms <= $1
                                AND (status IN ('open', 'held') OR (status = 'sending' AND claimed_ms <= $2))
                              ORDER BY due_ms LIMIT $3)
                        RETURNING id, biller_id, due_ms";

    GROUP_MEMBERS = "SELECT biller_id, invoice_id, revision FROM invoices WHERE combine_group = $1
                     ORDER BY received_ms, invoice_id, revision";

    HOLD_GROUP = "UPDATE combine_groups SET status = 'held', due_ms = $1, claimed_ms = NULL
                  WHERE id = $2 AND status = 'sending'";

    FINISH_GROUP = "UPDATE combine_groups SET status = 'done', claimed_ms = NULL WHERE id = $1";

    NEXT_GROUP = "SELECT MIN(due_ms) FROM combine_groups WHERE status IN ('open', 'held')";

    INSERT_COMBINED_LINK = "INSERT INTO combined_links (token_hash, group_id, channel, expires_ms, listed, created_ms)
                            VALUES ($1, $2, $3, $4, $5, $6)";

    COMBINED_LINK = "SELECT group_id, channel, expires_ms, listed FROM combined_links WHERE token_hash = $1";

    /// The invoices of the group's customer at its biller; the caller keeps
    /// those the link listed. By customer, not by `combine_group`, so that
    /// a combined reminder's link (its invoices were sent on their own or
    /// in other groups) lists them too.
    GROUP_INVOICES = "SELECT i.biller_id, i.invoice_id, i.revision, i.status, i.invoice_json, i.correlation_id,
                             i.message_id
                      FROM combine_groups g JOIN invoices i ON i.biller_id = g.biller_id AND i.customer = g.customer
                      WHERE g.id = $1";

    /// The group a combined reminder's pay link belongs to: done from the
    /// start, so no scheduler ever claims it; it only anchors the link.
    INSERT_REMINDER_GROUP = "INSERT INTO combine_groups (id, biller_id, customer, currency, status, due_ms, created_ms)
                             VALUES ($1, $2, $3, $4, 'done', $5, $5)";

    /// One customer's other reminders (`seq > 0`) at one biller in one
    /// currency due in [`$6`, `$7`) (their local day), of invoices whose
    /// first request went out and that are still open, that no instance
    /// holds (`$2`: the latest claim that counts as abandoned): taken in
    /// one statement, so of several instances each step goes to one.
    /// SQLite's JSON operators; PostgreSQL has its own copy of this
    /// statement (its text column needs a cast to `jsonb`).
    CLAIM_CUSTOMER_STEPS = "UPDATE steps SET claimed_ms = $1
                            WHERE status = 'planned' AND seq > 0 AND (claimed_ms IS NULL OR claimed_ms <= $2)
                              AND (biller_id, invoice_id, revision, seq) IN (
                                  SELECT s.biller_id, s.invoice_id, s.revision, s.seq
                                  FROM invoices i JOIN steps s ON s.biller_id = i.biller_id
                                       AND s.invoice_id = i.invoice_id AND s.revision = i.revision
                                  WHERE i.biller_id = $3 AND i.customer = $4 AND i.status IN ('sent', 'exhausted')
                                    AND i.erased_ms IS NULL AND i.invoice_json -> 'amount' ->> 'currency' = $5
                                    AND s.status = 'planned' AND s.seq > 0 AND s.due_ms >= $6 AND s.due_ms < $7
                                    AND (s.claimed_ms IS NULL OR s.claimed_ms <= $2))
                            RETURNING biller_id, invoice_id, revision, seq, journey, name, due_ms";

    /// The invoices of a period for the funnel figures (`stats`): every
    /// revision of each invoice whose first revision was received in
    /// [`$2`, `$3`), read from the index `invoices_by_first_received`
    /// alone, with when the invoice was paid.
    STATS_INVOICES = "SELECT i.invoice_id, i.revision, i.first_received_ms, i.routed_by, i.currency, i.amount_minor,
                             CASE WHEN c.status = 'paid' THEN c.closed_ms END
                      FROM invoices i
                      LEFT JOIN closures c ON c.biller_id = i.biller_id AND c.invoice_id = i.invoice_id
                      WHERE i.biller_id = $1 AND i.first_received_ms >= $2 AND i.first_received_ms < $3";

    PING = "SELECT 1";

    /// `Store::gauges` in one round trip, each count over a partial index:
    /// the outbox (small unless the broker is away), held invoices
    /// (`invoices_held`), held combine groups' and waiting groups' invoices
    /// (`combine_groups_waiting`, then `invoices_by_group`; `<> 'done'` is
    /// the index's own condition, spelt out so SQLite sees it applies), held steps
    /// (`steps_held`), planned steps (`steps_due`). See `store_gauges`.
    GAUGES = "SELECT (SELECT COUNT(*) FROM outbox),
                     (SELECT COUNT(*) FROM invoices WHERE held_until_ms IS NOT NULL AND status = 'accepted'),
                     (SELECT COUNT(*) FROM combine_groups g JOIN invoices i ON i.combine_group = g.id
                      WHERE g.status <> 'done' AND g.status = 'held' AND i.status = 'accepted'),
                     (SELECT COUNT(*) FROM combine_groups g JOIN invoices i ON i.combine_group = g.id
                      WHERE g.status <> 'done' AND g.status IN ('open', 'sending') AND i.status = 'accepted'),
                     (SELECT COUNT(*) FROM steps WHERE status = 'planned' AND held = 'quiet_hours'),
                     (SELECT COUNT(*) FROM steps WHERE status = 'planned' AND held = 'cap'),
                     (SELECT COUNT(*) FROM steps WHERE status = 'planned')";
}

#[cfg(test)]
mod tests {
    use rusqlite::Connection;

    use super::ALL;

    /// The `$N` of each statement, in the order they first appear.
    fn first_appearances(sql: &str) -> Vec<usize> {
        let mut seen = Vec::new();
        let mut rest = sql;
        while let Some(at) = rest.find('$') {
            rest = &rest[at + 1..];
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            let n: usize = rest[..digits].parse().expect("a number after $");
            if !seen.contains(&n) {
                seen.push(n);
            }
        }
        seen
    }

    /// The rule PostgreSQL and SQLite agree on: `$1`, `$2`, ... first appear
    /// in order, none left out.
    #[test]
    fn every_statement_numbers_its_parameters_in_order() {
        for (name, sql) in ALL {
            let seen = first_appearances(sql);
            let expected: Vec<usize> = (1..=seen.len()).collect();
            assert_eq!(seen, expected, "{name}: parameters first appear out of order");
        }
    }

    /// SQLite prepares every statement on the real schema and binds each
    /// `$N` at position N (what positional binding relies on).
    #[test]
    fn sqlite_binds_each_dollar_parameter_at_its_number() {
        let conn = Connection::open_in_memory().unwrap();
        for step in crate::store::sqlite::MIGRATIONS {
            conn.execute_batch(step).unwrap();
        }
        for (name, sql) in ALL {
            let stmt = conn
                .prepare(sql)
                .unwrap_or_else(|e| panic!("{name} does not prepare on SQLite: {e}"));
            let count = stmt.parameter_count();
            assert_eq!(count, first_appearances(sql).len(), "{name}");
            for n in 1..=count {
                assert_eq!(stmt.parameter_name(n), Some(format!("${n}").as_str()), "{name}");
            }
        }
    }
}
