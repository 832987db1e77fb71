-- Operator holds on automatic withdrawal (SPEC §9): a pinned prefix is never withdrawn
-- automatically; while the global pause is active no prefix is. Both record who, why and until
-- when (NULL: until removed). mt-autowithdraw obeys them; mtctl and the dashboard set them.
CREATE TABLE IF NOT EXISTS prefix_pins (
    prefix TEXT PRIMARY KEY,
    pinned_by TEXT NOT NULL,
    reason TEXT NOT NULL,
    pinned_at DATETIME NOT NULL,
    until DATETIME
);

CREATE TABLE IF NOT EXISTS withdraw_pause (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    paused_by TEXT NOT NULL,
    reason TEXT NOT NULL,
    paused_at DATETIME NOT NULL,
    until DATETIME
);
