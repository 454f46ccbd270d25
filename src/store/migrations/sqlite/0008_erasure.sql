-- Erasure and retention (docs/erasure.md): when an invoice revision's
-- personal data was erased, on request (`DELETE /v1/customers/...`) or by
-- `[store] personal_data_ttl`. Its row stays for the biller's books (amount,
-- dates, status, attempts and their outcomes) without the customer's name
-- or contacts; its pay links answer 410 and nothing more is sent for it.
ALTER TABLE invoices ADD COLUMN erased_ms INTEGER;
