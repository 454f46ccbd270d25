-- The funnel figures (`GET /v1/stats`, docs/stats.md). What routed each
-- invoice revision (`rule:<name>`, `default` or `invoice_channels`; NULL
-- for revisions stored before), its amount, and when the invoice's first
-- revision was received (the day the invoice counts on), in columns of
-- their own so the figures need not parse every invoice's JSON or look up
-- every invoice's first revision; copied here once for earlier revisions.
ALTER TABLE invoices ADD COLUMN routed_by TEXT;
ALTER TABLE invoices ADD COLUMN currency TEXT;
ALTER TABLE invoices ADD COLUMN amount_minor INTEGER;
ALTER TABLE invoices ADD COLUMN first_received_ms INTEGER;
UPDATE invoices SET currency = json_extract(invoice_json, '$.amount.currency'),
                    amount_minor = json_extract(invoice_json, '$.amount.minor'),
                    first_received_ms = (SELECT MIN(o.received_ms) FROM invoices o
                                         WHERE o.biller_id = invoices.biller_id AND o.invoice_id = invoices.invoice_id);
-- A biller's invoices by the day they count on, with everything the
-- figures read of them: a period's figures read only that period's index
-- entries, never the rows with their JSON.
CREATE INDEX invoices_by_first_received
    ON invoices (biller_id, first_received_ms, invoice_id, revision, routed_by, currency, amount_minor);
