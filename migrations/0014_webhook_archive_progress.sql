-- The raw-JSON copy in `webhook.archive_dir` is written from the database by the receiver's
-- archive writer (SPEC §6), after the acknowledgement. `archived_at` is NULL until the file is
-- written and fsync'd; the writer resumes from the NULL rows after a crash, and `mtctl prune`
-- never deletes one.
ALTER TABLE webhook_events ADD COLUMN archived_at TEXT;
-- Rows stored before this migration were archived before they were acknowledged (this suite)
-- or came from an archive (the original suite, `mtctl import-webhooks`).
UPDATE webhook_events SET archived_at = COALESCE(received_at, strftime('%Y-%m-%d %H:%M:%S', 'now'));
CREATE INDEX IF NOT EXISTS idx_webhook_events_unarchived ON webhook_events (id) WHERE archived_at IS NULL;
