-- Whose number an inbound STOP is about (docs/debtors.md): each message
-- sent by SMS or WhatsApp keeps the hash of the number it went to, so a
-- reply naming only the number finds the customers written to there.
-- It replaces writing `debtor_contacts`, which stays for the rows written
-- before, and is read together with it.
ALTER TABLE attempts ADD COLUMN address_hash TEXT;
CREATE INDEX attempts_by_address ON attempts (address_hash) WHERE address_hash IS NOT NULL;
