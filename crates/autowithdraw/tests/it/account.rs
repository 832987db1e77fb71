//! The account check's rule (`core::account_step`, `AccountStep::on_failure`) over generated
//! histories of cycles, restarts, `[[prefixes]]` changes and failing account lists.

use chrono::{DateTime, Duration, TimeZone, Utc};
use proptest::prelude::*;

use autowithdraw::core::{AccountChecked, AccountFallback, AccountStep, account_step};

#[derive(Debug, Clone)]
struct Cycle {
    /// Minutes since the previous cycle.
    gap: i64,
    /// The daemon restarted before this cycle (a new holder).
    restart: bool,
    /// The `[[prefixes]]` section this cycle runs with (one of three).
    config: usize,
    /// The account list answers.
    list_ok: bool,
}

fn cycle() -> impl Strategy<Value = Cycle> {
    (
        prop_oneof![8 => 1i64..5, 2 => 5i64..120],
        prop::bool::weighted(0.1),
        prop_oneof![8 => Just(0usize), 1 => Just(1), 1 => Just(2)],
        prop::bool::weighted(0.8),
    )
        .prop_map(|(gap, restart, config, list_ok)| Cycle {
            gap,
            restart,
            config,
            list_ok,
        })
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 19, 0, 0, 0).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    /// Checked at the first cycle of every process; a stored result is used only for the very
    /// section and process it checked, within the hour; a failed list after a config change
    /// never falls back to another section's result.
    #[test]
    fn the_account_is_checked_at_start_after_changes_and_hourly(
        cycles in prop::collection::vec(cycle(), 1..200),
    ) {
        let digests = ["digest-a", "digest-b", "digest-c"];
        let every = Duration::hours(1);
        let mut stored: Option<(usize, usize, DateTime<Utc>)> = None; // (config, holder, at)
        let (mut now, mut holder, mut previous_config) = (t0(), 0usize, None);
        let holders: Vec<String> = (0..=cycles.len()).map(|i| format!("holder-{i}")).collect();
        for (i, c) in cycles.iter().enumerate() {
            now += Duration::minutes(c.gap);
            let first_of_process = i == 0 || c.restart;
            if c.restart {
                holder += 1;
            }
            let view = AccountChecked {
                digest: stored.map_or("", |s| digests[s.0]),
                holder: stored.map_or("", |s| holders[s.1].as_str()),
                at: stored.map(|s| s.2),
            };
            let step = account_step(&view, digests[c.config], &holders[holder], now, every);
            if first_of_process {
                prop_assert_eq!(step, AccountStep::List, "cycle {}: a new process", i);
            }
            if previous_config != Some(c.config) && step == AccountStep::UseStored {
                // A change back to a section this process checked within the hour reuses
                // that section's own result; any other change lists.
                prop_assert!(
                    stored.is_some_and(|s| s.0 == c.config && s.1 == holder),
                    "cycle {}: a config change reused another section's result",
                    i
                );
            }
            if step == AccountStep::UseStored {
                prop_assert!(
                    stored.is_some_and(|s| s.0 == c.config && s.1 == holder && now - s.2 < every),
                    "cycle {}: a stored result used for another section, process or hour",
                    i
                );
            }
            if let Some((_, _, at)) = stored
                && now - at >= every
            {
                prop_assert_eq!(step, AccountStep::List, "cycle {}: an hour passed", i);
            }
            if step == AccountStep::List {
                if c.list_ok {
                    stored = Some((c.config, holder, now));
                } else {
                    let fallback = AccountStep::on_failure(&view, digests[c.config]);
                    let same_section = stored.is_some_and(|s| s.0 == c.config);
                    prop_assert_eq!(
                        fallback == AccountFallback::Stored,
                        same_section,
                        "cycle {}: the stored result is used only for its own section",
                        i
                    );
                }
            }
            previous_config = Some(c.config);
        }
    }
}
