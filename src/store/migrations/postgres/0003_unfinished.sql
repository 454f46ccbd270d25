-- Unfinished, unheld invoices by when they were last touched: what the
-- scheduler's `claim_stale` looks for every second. Without it that look
-- read the whole table each time, holding up every other store call.
CREATE INDEX invoices_unfinished ON invoices (updated_ms) WHERE status = 'accepted' AND held_until_ms IS NULL;
