-- Per-prefix lookups of attack_events (the last WITHDRAW or START of a prefix) are made for
-- every webhook and every autowithdraw cycle; without this index each one scans the table.
CREATE INDEX IF NOT EXISTS idx_events_prefix_type ON attack_events(prefix, event_type, id);
