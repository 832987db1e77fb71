-- Time mt-autowithdraw can no longer judge (older than the dataset's `notOlderThan`, SPEC §7.2):
-- declared lost, `judged_until` moves past it, and it breaks every calm stretch that would
-- span it. Kept for the operator (`sqlite3 … "SELECT * FROM telemetry_gaps"`).
CREATE TABLE IF NOT EXISTS telemetry_gaps (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    gap_start TEXT NOT NULL,
    gap_end TEXT NOT NULL,
    reason TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS idx_telemetry_gaps_end ON telemetry_gaps (gap_end);
