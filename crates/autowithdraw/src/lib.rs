//! `mt-autowithdraw` (SPEC §7): withdraws a prefix once its dropped traffic has been judged
//! calm long enough, and never during an attack. When in doubt it does not withdraw, and says so.
//!
//! - [`judge`]: one analytics window → attack, calm or unknown per prefix.
//! - [`core`]: the decision, pure: the incident rule, the calm clock, every gate, the
//!   confirmation's verdict, the PATCH's outcome. Its invariants, and the tests that check
//!   them, are in the crate's README.
//! - [`cycle`]: the engine, plain I/O around [`core`]: advertisement truth, catch-up
//!   judgement, one transaction per decision, the withdraw path with a recorded intent,
//!   scheduled requests, the config-vs-account check, blind alerts.
//! - [`lease`]: the lease rules (SPEC §7.9), pure: the TTL and the PATCH's time budget after
//!   a renewal; only one instance acts, and a stale one never PATCHes.
//! - [`daemon`]: the loop, `/metrics`, `/healthz`, sd_notify and the Telegram sender.
//!
//! Also: a reminder while a prefix stays advertised longer than `advertised_reminder` (saying
//! why it is not withdrawn), and an alert when Cloudflare still advertises a prefix
//! `withdraw_verify_after` after our withdrawal.

pub mod core;
pub mod cycle;
pub mod daemon;
pub mod judge;
pub mod lease;
