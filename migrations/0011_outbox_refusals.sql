-- Telegram refusals (SPEC §10). A message Telegram refuses for good (a 400 other than entity
-- parsing, or too long) is retried a bounded number of times, counted in `refusals`, then
-- marked status = 'failed' with its last_error; it never blocks the messages behind it.
ALTER TABLE notification_outbox ADD COLUMN refusals INTEGER NOT NULL DEFAULT 0;

-- Chat-level refusals (bot kicked or blocked, chat not found, group migrated to a supergroup)
-- fail no message: delivery to that chat pauses until `paused_until` (capped backoff, doubled
-- per consecutive refusal in `failures`) and its queue is kept. A delivery to the chat deletes
-- the row. `migrate_to_chat_id` is the new id Telegram gave for a migrated group.
CREATE TABLE IF NOT EXISTS notification_chat_pauses (
    chat_id TEXT PRIMARY KEY,
    reason TEXT NOT NULL,
    failures INTEGER NOT NULL,
    paused_since TEXT NOT NULL,
    paused_until TEXT NOT NULL,
    migrate_to_chat_id TEXT
);
