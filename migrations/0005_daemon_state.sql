-- Small per-daemon state that must survive restarts (e.g. the end of the last successful
-- analytics poll, so the next poll covers any gap; an alert episode already announced).
CREATE TABLE IF NOT EXISTS mt_state (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    updated_at DATETIME NOT NULL
);
