//! `mt-webhook-receiver` (SPEC §6). Filled by the webhook-receiver issue; no binary ships until then.
