//! `mt-autowithdraw` (SPEC §7). Not complete yet: this crate holds the judgement of analytics
//! windows ([`judge`]) and the cycle ([`cycle`]: advertisement truth, catch-up judgement, calm
//! clock, gates, withdraw path with a recorded intent). Config-vs-account validation, reminders,
//! post-withdraw verification, `pending_withdrawals` requests, the lease and the daemon arrive
//! with the rest of the autowithdraw issue; no binary ships until then.

pub mod cycle;
pub mod judge;
