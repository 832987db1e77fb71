-- Follow-ups of a withdrawal and of a long advertisement: when we withdrew (to verify
-- Cloudflare carried it out), whether the verification alert went, and the last reminder.
ALTER TABLE autowithdraw_prefixes ADD COLUMN withdrawn_at DATETIME;
ALTER TABLE autowithdraw_prefixes ADD COLUMN verify_alerted INTEGER NOT NULL DEFAULT 0;
ALTER TABLE autowithdraw_prefixes ADD COLUMN reminded_at DATETIME;
