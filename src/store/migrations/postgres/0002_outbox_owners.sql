-- Several instances share one outbox: each event belongs to one instance,
-- its owner, and only the owner publishes it (see `PostgresStore::outbox`).
--
-- An instance owns the events it writes. It holds one lease for all of them
-- in `outbox_owners` and renews it while its publisher runs; when a lease
-- runs out, the next publisher round of a live instance takes every event of
-- that owner over at once.

-- One row per instance (a random id made when the store is opened).
-- `lease_until_ms` is read on the database's clock, so instances on hosts
-- whose clocks disagree still agree on when a lease ends.
CREATE TABLE outbox_owners (
    owner          TEXT   PRIMARY KEY,
    lease_until_ms BIGINT NOT NULL
);

-- `owner` is NULL for events written before this migration, or by an older
-- payrelay during a rolling upgrade: any instance takes them over.
-- `biller_id` and `invoice_id` (from the event) keep one invoice's events in
-- order when different instances wrote them.
ALTER TABLE outbox
    ADD COLUMN owner      TEXT,
    ADD COLUMN biller_id  TEXT,
    ADD COLUMN invoice_id TEXT;

-- A publisher's own events, oldest first; the owners whose lease ran out.
CREATE INDEX outbox_by_owner ON outbox (owner, id);
CREATE INDEX outbox_unowned ON outbox (id) WHERE owner IS NULL;
-- The older events of the same invoice that another instance still holds.
CREATE INDEX outbox_by_invoice ON outbox (biller_id, invoice_id, id) WHERE invoice_id IS NOT NULL;
