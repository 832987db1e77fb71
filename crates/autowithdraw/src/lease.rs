//! The lease rules of SPEC §7.9 as pure functions (the engine in `cycle.rs` applies them; the
//! property tests drive them with two instances, pauses and clock offsets).
//!
//! - The lease outlives the longest cycle: [`lease_ttl`] is longer than
//!   [`CYCLE_DEADLINE`](crate::cycle::CYCLE_DEADLINE).
//! - Expiry is judged by the database's clock, and every change of holder gets a new fencing
//!   token (`mt_store::lease`); the intent and outcome writes check it.
//! - The PATCH is sent only after a renewal committed in the intent's transaction, and only
//!   while [`patch_budget`] says enough of the TTL is left by the local monotonic clock
//!   (measured from before the renewal began, so the renewal's own time counts against it);
//!   the PATCH is abandoned when the budget runs out, [`PATCH_MARGIN`] before the lease could
//!   expire. So a PATCH never reaches Cloudflare after another instance could have taken over.

use std::time::Duration;

use crate::cycle::CYCLE_DEADLINE;

/// Kept between the end of a PATCH's budget and the lease's expiry.
pub const PATCH_MARGIN: Duration = Duration::from_secs(10);

/// The autowithdraw lease's TTL: three intervals, and at least a minute longer than the cycle
/// deadline.
pub fn lease_ttl(interval: Duration) -> Duration {
    interval
        .saturating_mul(3)
        .max(CYCLE_DEADLINE + Duration::from_secs(60))
}

/// How long the PATCH may take, given the lease's `ttl` and the monotonic time elapsed since
/// just before the renewal began: what is left minus [`PATCH_MARGIN`], when at least
/// `request_timeout` of it remains; otherwise why not to PATCH.
pub fn patch_budget(
    ttl: Duration,
    since_renewal: Duration,
    request_timeout: Duration,
) -> Result<Duration, String> {
    let left = ttl.saturating_sub(since_renewal);
    if left < request_timeout + PATCH_MARGIN {
        return Err(format!(
            "the lease renewal took {} s: {} s of the lease left, less than request_timeout + {} s; not PATCHing this cycle",
            since_renewal.as_secs(),
            left.as_secs(),
            PATCH_MARGIN.as_secs()
        ));
    }
    Ok(left - PATCH_MARGIN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lease_outlives_the_cycle_deadline() {
        assert_eq!(lease_ttl(Duration::from_secs(60)), Duration::from_secs(300));
        assert_eq!(
            lease_ttl(Duration::from_secs(600)),
            Duration::from_secs(1800)
        );
        for secs in [1, 10, 60, 80, 100, 3600] {
            assert!(lease_ttl(Duration::from_secs(secs)) > CYCLE_DEADLINE);
        }
    }

    #[test]
    fn no_patch_without_request_timeout_and_margin_left() {
        let ttl = Duration::from_secs(300);
        let timeout = Duration::from_secs(30);
        assert_eq!(
            patch_budget(ttl, Duration::from_millis(5), timeout),
            Ok(Duration::from_millis(289_995))
        );
        assert_eq!(
            patch_budget(ttl, Duration::from_secs(260), timeout),
            Ok(Duration::from_secs(30))
        );
        let refused = patch_budget(ttl, Duration::from_secs(261), timeout).unwrap_err();
        assert!(refused.contains("not PATCHing"), "{refused}");
        assert!(patch_budget(ttl, Duration::from_secs(400), timeout).is_err());
    }
}
