-- What `/metrics` counts (`Store::gauges`, docs/operations.md), each over a
-- partial index so the counts stay cheap as the tables keep every invoice.
--
-- Why a planned step waits past its time: `quiet_hours` or `cap` (the
-- daily cap on a customer's messages); NULL when it does not, or for
-- another reason (its previous message, a channel failing for now).
ALTER TABLE steps ADD COLUMN held TEXT CHECK (held IN ('quiet_hours', 'cap'));
CREATE INDEX steps_held ON steps (held) WHERE status = 'planned' AND held IS NOT NULL;

-- The groups still waiting or being sent, by status, and their invoices.
CREATE INDEX combine_groups_waiting ON combine_groups (status, id) WHERE status <> 'done';
