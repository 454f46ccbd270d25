-- Journey steps: the reminders planned for an invoice when it is accepted
-- (docs/journeys.md), one row each, kept after they are done so the status
-- API can list them. `due_ms` is when the step goes out: fixed at intake for
-- a step placed by the due date; for one placed `after_ms` after the
-- previous message it is an estimate, checked against that message when it
-- comes due. `claimed_ms` is set by the instance sending it, so of several
-- instances only one does; a claim left that long (CLAIM_IDLE) is taken over.
CREATE TABLE steps (
    biller_id  TEXT    NOT NULL,
    invoice_id TEXT    NOT NULL,
    revision   INTEGER NOT NULL,
    seq        INTEGER NOT NULL,
    journey    TEXT    NOT NULL,
    name       TEXT    NOT NULL,
    status     TEXT    NOT NULL CHECK (status IN ('planned', 'sent', 'failed', 'skipped', 'cancelled')),
    due_ms     INTEGER NOT NULL,
    after_ms   INTEGER,
    claimed_ms INTEGER,
    done_ms    INTEGER,
    detail     TEXT,
    PRIMARY KEY (biller_id, invoice_id, revision, seq)
);
-- What the scheduler looks for every second: planned steps by due time.
CREATE INDEX steps_due ON steps (due_ms) WHERE status = 'planned';

-- The journey step a send belongs to; NULL for the first request. An
-- attempt's `state` may now also be `retrying`: a transient failure its
-- journey step tries again later.
ALTER TABLE attempts ADD COLUMN step TEXT;

-- Who each invoice is for (`Invoice::customer_key`: the biller and the
-- customer's id, else a hash of the first contact), so the daily cap on
-- reminders counts one customer's messages across all their invoices.
-- NULL for invoices stored before.
ALTER TABLE invoices ADD COLUMN customer TEXT;
CREATE INDEX invoices_by_customer ON invoices (customer) WHERE customer IS NOT NULL;
