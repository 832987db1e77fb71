-- Fencing tokens for the named leases (SPEC §7.9). Every change of holder increments the
-- token; a fenced write (autowithdraw's intent and outcome, the Telegram sender's records)
-- checks that its holder and token are still the lease's, so an instance whose lease was taken
-- over while it was slow or paused can no longer write. A released lease keeps its row
-- (expires_at_ms = 0) so the token never goes back.
ALTER TABLE mt_leases ADD COLUMN token INTEGER NOT NULL DEFAULT 0;
