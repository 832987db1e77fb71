//! `mt-autowithdraw` (SPEC §7). Filled by the autowithdraw issue; no binary ships until then.
