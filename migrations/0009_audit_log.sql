-- Every manual action (mtctl or the dashboard) and every dashboard login/logout, with who did
-- it, through what, and how it ended. Written in the same transaction as the action's own rows
-- where the action writes any; a failed action is audited too. Never pruned by `mtctl prune`.
CREATE TABLE IF NOT EXISTS audit_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at DATETIME NOT NULL,
    actor TEXT NOT NULL,
    via TEXT NOT NULL,
    action TEXT NOT NULL,
    prefix TEXT,
    detail TEXT,
    outcome TEXT NOT NULL
);

CREATE INDEX IF NOT EXISTS idx_audit_log_at ON audit_log(at);
