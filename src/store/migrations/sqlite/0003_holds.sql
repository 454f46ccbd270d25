-- Quiet-hour holds: an invoice waiting for its customer's window to open.
ALTER TABLE invoices ADD COLUMN held_until_ms INTEGER;
CREATE INDEX invoices_held ON invoices (held_until_ms) WHERE held_until_ms IS NOT NULL;
