-- mt-autowithdraw's per-prefix state machine (SPEC §7), persisted so nothing resets on a
-- restart. prefix_calm_status stays the view for existing readers; this is the working state.
CREATE TABLE IF NOT EXISTS autowithdraw_prefixes (
    prefix TEXT PRIMARY KEY,
    -- As last read from Cloudflare; advertised_modified_at identifies the incident.
    advertised INTEGER NOT NULL DEFAULT 0,
    advertised_modified_at DATETIME,
    locked INTEGER NOT NULL DEFAULT 0,
    -- Start of the current gap-free stretch of time judged calm (NULL: none).
    calm_since DATETIME,
    last_attack_end DATETIME,
    peak_pps REAL NOT NULL DEFAULT 0,
    peak_mbps REAL NOT NULL DEFAULT 0,
    systems TEXT NOT NULL DEFAULT '',
    -- Telemetry that could not be judged since (NULL: judged), and whether the blind alert went.
    unknown_since DATETIME,
    blind_alerted INTEGER NOT NULL DEFAULT 0,
    -- A withdrawal decided and not yet confirmed (crash recovery reads Cloudflare's state).
    intent_at DATETIME,
    -- Failures of this incident.
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at DATETIME,
    last_error TEXT,
    failure_history_id INTEGER,
    dry_run_notified INTEGER NOT NULL DEFAULT 0,
    updated_at DATETIME NOT NULL
);
