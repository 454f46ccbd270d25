-- Debtors (docs/debtors.md). Which contact addresses belong to which
-- customer of which biller: an inbound STOP names an address, and each
-- biller hears which of its customers asked. Addresses are kept only as
-- the SHA-256 of their normal form (src/domain/debtor.rs), never in clear.
-- Written with each invoice; `invoice_id` is the latest invoice seen.
CREATE TABLE debtor_contacts (
    channel      TEXT    NOT NULL,
    address_hash TEXT    NOT NULL,
    biller_id    TEXT    NOT NULL,
    customer_key TEXT    NOT NULL,
    customer_id  TEXT,
    invoice_id   TEXT    NOT NULL,
    seen_ms      INTEGER NOT NULL,
    PRIMARY KEY (channel, address_hash, biller_id, customer_key)
) WITHOUT ROWID;

-- The channels a customer chose on a pay page, in order, and the ones they
-- stopped (comma-separated channel names).
CREATE TABLE preferences (
    biller_id    TEXT    NOT NULL,
    customer_key TEXT    NOT NULL,
    channels     TEXT    NOT NULL,
    stopped      TEXT    NOT NULL,
    updated_ms   INTEGER NOT NULL,
    PRIMARY KEY (biller_id, customer_key)
) WITHOUT ROWID;

-- Addresses that asked to stop: never sent to until they ask to start.
-- `scope` is `*` for SMS and WhatsApp numbers (one sending number serves
-- every biller), the biller's id for email.
CREATE TABLE suppressions (
    scope        TEXT    NOT NULL,
    channel      TEXT    NOT NULL,
    address_hash TEXT    NOT NULL,
    reason       TEXT    NOT NULL,
    since_ms     INTEGER NOT NULL,
    PRIMARY KEY (scope, channel, address_hash)
) WITHOUT ROWID;
