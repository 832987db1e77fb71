//! Manual control of the suite and the per-prefix status, shared by `mtctl` and `mt-dashboard`
//! so both take the same code path and leave the same rows: the `attack_events` /
//! `withdrawal_history` rows, the Telegram message and an `audit_log` row naming the person and
//! the tool.

mod actions;
pub mod password;
mod status;

pub use actions::{
    Actor, AdvertiseOutcome, Cloudflare, ControlError, Via, pause, pin, require_configured, resume,
    set_advertised, unpin,
};
pub use status::{PrefixStatus, Status, prefix_statuses, status};

/// `18m 45s`, `2h 5m`, `45s` (the seed's duration style).
pub fn duration(secs: i64) -> String {
    let s = secs.max(0);
    match (s / 3600, (s % 3600) / 60, s % 60) {
        (0, 0, sec) => format!("{sec}s"),
        (0, m, sec) => format!("{m}m {sec}s"),
        (h, m, _) => format!("{h}h {m}m"),
    }
}
