-- Durable Telegram outbox (SPEC §10). A message is queued in the same transaction as the event
-- that caused it and delivered later by one sender (see mt_leases), in (priority, id) order.
-- Rows are never deleted by delivery: status moves queued -> sent (or logged when Telegram is
-- disabled), so the history of what the SOC was told stays queryable.
CREATE TABLE IF NOT EXISTS notification_outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    chat_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    priority INTEGER NOT NULL,
    text TEXT NOT NULL,
    parse_mode TEXT NOT NULL,
    created_at DATETIME NOT NULL,
    next_attempt_at DATETIME NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    status TEXT NOT NULL DEFAULT 'queued',
    sent_at DATETIME
);
CREATE INDEX IF NOT EXISTS idx_outbox_queue ON notification_outbox(status, priority, id);

-- Named leases: which process instance may act (the Telegram sender, the autowithdraw cycle).
-- expires_at_ms is Unix milliseconds so short leases work at sub-second precision.
CREATE TABLE IF NOT EXISTS mt_leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    acquired_at DATETIME NOT NULL,
    expires_at_ms INTEGER NOT NULL
);
