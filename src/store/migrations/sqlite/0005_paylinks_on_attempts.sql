-- A pay link is kept on the attempt that sent it (one link per attempt)
-- rather than in a table of its own: one row and one B-tree fewer for every
-- send on the single writer thread, and an invoice's clicks are found
-- through `attempts_by_invoice`. (`paylinks` had no index by invoice, so
-- every payment confirmation and every history read scanned all the links
-- ever sent.) The token itself is still not stored, only its hash.
ALTER TABLE attempts ADD COLUMN token_hash TEXT;
ALTER TABLE attempts ADD COLUMN expires_ms INTEGER;
ALTER TABLE attempts ADD COLUMN clicks INTEGER NOT NULL DEFAULT 0;
ALTER TABLE attempts ADD COLUMN first_click_ms INTEGER;
UPDATE attempts
   SET token_hash = p.token_hash, expires_ms = p.expires_ms, clicks = p.clicks, first_click_ms = p.first_click_ms
  FROM paylinks p
 WHERE p.attempt_id = attempts.id;
CREATE UNIQUE INDEX attempts_by_token ON attempts (token_hash);
DROP TABLE paylinks;
