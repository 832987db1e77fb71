-- Duplicate detection for webhooks that carry no alert id or no event state (the unique
-- constraint (alert_id, event_state) does not fire on NULLs): the same body delivered twice is
-- recognised by the SHA-256 of its payload. Legacy rows keep NULL here and are compared by
-- payload text instead.
ALTER TABLE webhook_events ADD COLUMN payload_sha256 TEXT;
CREATE INDEX IF NOT EXISTS idx_webhook_payload_sha256 ON webhook_events(payload_sha256);
