//! `mt-autowithdraw` (SPEC §7). Not complete yet: this crate holds the judgement of analytics
//! windows ([`judge`]); the cycle, its persisted per-prefix state, the withdraw path and the
//! daemon arrive with the rest of the autowithdraw issue, and no binary ships until then.

pub mod judge;
