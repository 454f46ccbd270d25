-- One message per debtor (`[billers.<id>] combine`): a first request waits
-- in a group with the same customer's other invoices of the same currency
-- until the group's window closes (`due_ms`, counted from its first
-- invoice), then one message per channel lists them all.
-- `status`: `open` takes new invoices; `sending` is claimed by the instance
-- sending it (`claimed_ms`; a claim left that long, CLAIM_IDLE, is taken
-- over); `held` waits for quiet hours to end at `due_ms`; `done` is sent.
-- At most one open group per customer and currency: a new invoice joins it
-- in one statement (an upsert on that index).
CREATE TABLE combine_groups (
    id         TEXT    PRIMARY KEY,
    biller_id  TEXT    NOT NULL,
    customer   TEXT    NOT NULL,
    currency   TEXT    NOT NULL,
    status     TEXT    NOT NULL CHECK (status IN ('open', 'sending', 'held', 'done')),
    due_ms     INTEGER NOT NULL,
    claimed_ms INTEGER,
    created_ms INTEGER NOT NULL
);
CREATE UNIQUE INDEX combine_groups_open ON combine_groups (biller_id, customer, currency) WHERE status = 'open';
CREATE INDEX combine_groups_due ON combine_groups (due_ms) WHERE status <> 'done';

-- The group an invoice waits in (or was sent with); NULL when it was sent
-- on its own.
ALTER TABLE invoices ADD COLUMN combine_group TEXT;
CREATE INDEX invoices_by_group ON invoices (combine_group) WHERE combine_group IS NOT NULL;

-- The one pay link of a combined message: its page lists the group's open
-- invoices. Each invoice's own attempt carries a link of its own derived
-- from this one (`<token_hash>:<invoice_id>`), which no token hashes to, so
-- it only counts that invoice's clicks.
CREATE TABLE combined_links (
    token_hash TEXT    PRIMARY KEY,
    group_id   TEXT    NOT NULL REFERENCES combine_groups (id),
    channel    TEXT    NOT NULL,
    expires_ms INTEGER NOT NULL,
    -- The invoices the message listed: [[invoice_id, revision], ...].
    listed     TEXT    NOT NULL,
    created_ms INTEGER NOT NULL
);
