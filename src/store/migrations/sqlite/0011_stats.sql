-- The funnel figures (`GET /v1/stats`, docs/stats.md). What routed each
-- invoice revision (`rule:<name>`, `default` or `invoice_channels`; NULL
-- for revisions stored before) and its amount, in columns of their own so
-- the figures need not parse every invoice's JSON; the amounts of earlier
-- revisions are copied from it once, here.
ALTER TABLE invoices ADD COLUMN routed_by TEXT;
ALTER TABLE invoices ADD COLUMN currency TEXT;
ALTER TABLE invoices ADD COLUMN amount_minor INTEGER;
UPDATE invoices SET currency = json_extract(invoice_json, '$.amount.currency'),
                    amount_minor = json_extract(invoice_json, '$.amount.minor');
-- A biller's invoices by when they arrived: a period's figures read only
-- that period's rows.
CREATE INDEX invoices_by_received ON invoices (biller_id, received_ms);
