-- Baseline: the original suite's six tables, unique constraints and indexes (seed doc v2.3.0).
-- IF NOT EXISTS everywhere: on a database created by the original Python suite this only adds
-- what is missing (prefix_calm_status, the seed's idx_network_analytics_* and idx_calm_prefix
-- indexes) and leaves every existing row untouched.

CREATE TABLE IF NOT EXISTS pending_withdrawals (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    prefix TEXT NOT NULL,
    attack_id TEXT,
    policy_id TEXT,
    policy_name TEXT,
    target_ip TEXT,
    attack_type TEXT,
    advertised_at DATETIME,
    withdraw_after DATETIME NOT NULL,
    attack_ended_at DATETIME,
    created_at DATETIME DEFAULT CURRENT_TIMESTAMP,
    status TEXT DEFAULT 'pending',
    retry_count INTEGER DEFAULT 0,
    max_retries INTEGER DEFAULT 5,
    next_retry_at DATETIME,
    last_error TEXT
);
-- An expression index: the unique key is (prefix, attack_id) with NULL attack ids equal.
CREATE UNIQUE INDEX IF NOT EXISTS idx_pending_unique ON pending_withdrawals(prefix, COALESCE(attack_id, ''));
CREATE INDEX IF NOT EXISTS idx_pending_status ON pending_withdrawals(status);
CREATE INDEX IF NOT EXISTS idx_pending_withdraw_after ON pending_withdrawals(withdraw_after);

CREATE TABLE IF NOT EXISTS withdrawal_history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    prefix TEXT NOT NULL,
    attack_id TEXT,
    policy_id TEXT,
    policy_name TEXT,
    target_ip TEXT,
    attack_type TEXT,
    advertised_at DATETIME,
    attack_ended_at DATETIME,
    withdrawn_at DATETIME,
    attack_duration_seconds INTEGER,
    protection_duration_seconds INTEGER,
    withdraw_method TEXT,
    status TEXT,
    notes TEXT,
    created_at DATETIME DEFAULT CURRENT_TIMESTAMP
);
CREATE INDEX IF NOT EXISTS idx_history_prefix ON withdrawal_history(prefix);

CREATE TABLE IF NOT EXISTS attack_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    event_type TEXT NOT NULL,
    alert_type TEXT,
    attack_id TEXT,
    policy_id TEXT,
    policy_name TEXT,
    prefix TEXT,
    target_ip TEXT,
    target_port INTEGER,
    protocol TEXT,
    attack_vector TEXT,
    packets_per_second TEXT,
    megabits_per_second TEXT,
    severity TEXT,
    action_taken TEXT,
    raw_payload TEXT,
    created_at DATETIME DEFAULT CURRENT_TIMESTAMP
);
CREATE INDEX IF NOT EXISTS idx_events_attack_id ON attack_events(attack_id);

CREATE TABLE IF NOT EXISTS webhook_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at DATETIME DEFAULT CURRENT_TIMESTAMP,
    alert_type TEXT,
    event_state TEXT,
    alert_id TEXT,
    policy_id TEXT,
    policy_name TEXT,
    target_ip TEXT,
    target_prefix TEXT,
    source_ip TEXT,
    processed INTEGER DEFAULT 1,
    action_taken TEXT,
    payload JSON,
    UNIQUE(alert_id, event_state)
);
CREATE INDEX IF NOT EXISTS idx_webhook_alert_type ON webhook_events(alert_type);
CREATE INDEX IF NOT EXISTS idx_webhook_received_at ON webhook_events(received_at);
CREATE INDEX IF NOT EXISTS idx_webhook_target_ip ON webhook_events(target_ip);

-- A fresh database gets the source_* columns here; a legacy one gets them from the guarded step
-- in mt-store (migrate.rs), which runs before this file.
CREATE TABLE IF NOT EXISTS network_analytics_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    event_hash TEXT UNIQUE NOT NULL,
    attack_id TEXT,
    event_datetime DATETIME,
    attack_vector TEXT,
    rule_name TEXT,
    rule_id TEXT,
    source_ip TEXT,
    source_port INTEGER,
    source_asn INTEGER,
    source_asn_name TEXT,
    source_country TEXT,
    destination_ip TEXT,
    destination_port INTEGER,
    protocol TEXT,
    tcp_flags TEXT,
    colo_code TEXT,
    colo_country TEXT,
    packets INTEGER,
    bits INTEGER,
    outcome TEXT,
    mitigation_reason TEXT,
    notified_at DATETIME DEFAULT CURRENT_TIMESTAMP,
    raw_data JSON
);
CREATE INDEX IF NOT EXISTS idx_network_analytics_hash ON network_analytics_events(event_hash);
CREATE INDEX IF NOT EXISTS idx_network_analytics_datetime ON network_analytics_events(event_datetime);
CREATE INDEX IF NOT EXISTS idx_network_analytics_attack_id ON network_analytics_events(attack_id);

CREATE TABLE IF NOT EXISTS prefix_calm_status (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    prefix TEXT UNIQUE NOT NULL,
    advertised BOOLEAN DEFAULT 0,
    under_attack BOOLEAN DEFAULT 0,
    calm_since DATETIME,
    last_attack_packets INTEGER DEFAULT 0,
    last_attack_mbps REAL DEFAULT 0,
    mitigation_systems TEXT,
    updated_at DATETIME DEFAULT CURRENT_TIMESTAMP
);
CREATE INDEX IF NOT EXISTS idx_calm_prefix ON prefix_calm_status(prefix);
