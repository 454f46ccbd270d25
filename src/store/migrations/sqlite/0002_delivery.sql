-- Delivery reports from provider webhooks, and the lookup they need.
ALTER TABLE attempts ADD COLUMN delivered_ms INTEGER;
ALTER TABLE attempts ADD COLUMN read_ms INTEGER;
CREATE INDEX attempts_by_provider_id ON attempts (channel, provider_message_id);
