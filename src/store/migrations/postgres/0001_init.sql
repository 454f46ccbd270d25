-- The PostgreSQL schema: the same tables as SQLite's three migrations, in
-- their final shape. Times are milliseconds since the Unix epoch (BIGINT);
-- `invoice_json` and `event_json` are serde_json text, byte for byte what
-- SQLite stores, so both stores read back the same values.

-- Invoices by idempotency key. `invoice_json` is the validated invoice.
CREATE TABLE invoices (
    biller_id      TEXT   NOT NULL,
    invoice_id     TEXT   NOT NULL,
    revision       BIGINT NOT NULL,
    status         TEXT   NOT NULL
        CHECK (status IN ('accepted', 'sent', 'exhausted', 'paid', 'cancelled', 'superseded')),
    invoice_json   TEXT   NOT NULL,
    correlation_id TEXT,
    message_id     TEXT,
    received_ms    BIGINT NOT NULL,
    updated_ms     BIGINT NOT NULL,
    -- Quiet-hour holds: set while the invoice waits for its customer's window.
    held_until_ms  BIGINT,
    PRIMARY KEY (biller_id, invoice_id, revision)
);
CREATE INDEX invoices_held ON invoices (held_until_ms) WHERE held_until_ms IS NOT NULL;

-- Paid or cancelled invoices, also when no request for them was seen yet.
CREATE TABLE closures (
    biller_id  TEXT   NOT NULL,
    invoice_id TEXT   NOT NULL,
    status     TEXT   NOT NULL CHECK (status IN ('paid', 'cancelled')),
    closed_ms  BIGINT NOT NULL,
    PRIMARY KEY (biller_id, invoice_id)
);

-- One row per send on one channel; `state` is sending, sent or failed.
CREATE TABLE attempts (
    id                  BIGSERIAL PRIMARY KEY,
    biller_id           TEXT   NOT NULL,
    invoice_id          TEXT   NOT NULL,
    revision            BIGINT NOT NULL,
    channel             TEXT   NOT NULL,
    attempt             BIGINT NOT NULL,
    state               TEXT   NOT NULL CHECK (state IN ('sending', 'sent', 'failed')),
    provider_message_id TEXT,
    detail              TEXT,
    started_ms          BIGINT NOT NULL,
    finished_ms         BIGINT,
    -- Delivery reports from provider webhooks, each recorded once.
    delivered_ms        BIGINT,
    read_ms             BIGINT
);
CREATE INDEX attempts_by_invoice ON attempts (biller_id, invoice_id, revision);
CREATE INDEX attempts_by_provider_id ON attempts (channel, provider_message_id);

-- Pay links by the SHA-256 of their token; the token itself is not stored.
CREATE TABLE paylinks (
    token_hash     TEXT   PRIMARY KEY,
    attempt_id     BIGINT NOT NULL REFERENCES attempts (id),
    biller_id      TEXT   NOT NULL,
    invoice_id     TEXT   NOT NULL,
    revision       BIGINT NOT NULL,
    channel        TEXT   NOT NULL,
    created_ms     BIGINT NOT NULL,
    expires_ms     BIGINT NOT NULL,
    clicks         BIGINT NOT NULL DEFAULT 0,
    first_click_ms BIGINT
);
-- `close` and `history` look pay links up by invoice.
CREATE INDEX paylinks_by_invoice ON paylinks (biller_id, invoice_id);

-- Events waiting for the broker's confirm, in the order they were written.
CREATE TABLE outbox (
    id         BIGSERIAL PRIMARY KEY,
    event_json TEXT NOT NULL
);
