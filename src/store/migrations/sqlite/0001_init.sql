-- Invoices by idempotency key. `invoice_json` is the validated invoice.
CREATE TABLE invoices (
    biller_id      TEXT    NOT NULL,
    invoice_id     TEXT    NOT NULL,
    revision       INTEGER NOT NULL,
    status         TEXT    NOT NULL,
    invoice_json   TEXT    NOT NULL,
    correlation_id TEXT,
    message_id     TEXT,
    received_ms    INTEGER NOT NULL,
    updated_ms     INTEGER NOT NULL,
    PRIMARY KEY (biller_id, invoice_id, revision)
);

-- Paid or cancelled invoices, also when no request for them was seen yet.
CREATE TABLE closures (
    biller_id  TEXT    NOT NULL,
    invoice_id TEXT    NOT NULL,
    status     TEXT    NOT NULL,
    closed_ms  INTEGER NOT NULL,
    PRIMARY KEY (biller_id, invoice_id)
);

-- One row per send on one channel; `state` is sending, sent or failed.
CREATE TABLE attempts (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    biller_id           TEXT    NOT NULL,
    invoice_id          TEXT    NOT NULL,
    revision            INTEGER NOT NULL,
    channel             TEXT    NOT NULL,
    attempt             INTEGER NOT NULL,
    state               TEXT    NOT NULL,
    provider_message_id TEXT,
    detail              TEXT,
    started_ms          INTEGER NOT NULL,
    finished_ms         INTEGER
);
CREATE INDEX attempts_by_invoice ON attempts (biller_id, invoice_id, revision);

-- Pay links by the SHA-256 of their token; the token itself is not stored.
CREATE TABLE paylinks (
    token_hash     TEXT    PRIMARY KEY,
    attempt_id     INTEGER NOT NULL REFERENCES attempts (id),
    biller_id      TEXT    NOT NULL,
    invoice_id     TEXT    NOT NULL,
    revision       INTEGER NOT NULL,
    channel        TEXT    NOT NULL,
    created_ms     INTEGER NOT NULL,
    expires_ms     INTEGER NOT NULL,
    clicks         INTEGER NOT NULL DEFAULT 0,
    first_click_ms INTEGER
);

-- Events waiting for the broker's confirm, in the order they happened.
CREATE TABLE outbox (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    event_json TEXT    NOT NULL
);
