//! Judging one analytics window (SPEC §7.2): per configured prefix, **attack**, **calm** or
//! **unknown**. When in doubt the answer is unknown, never calm: an unknown window does not
//! count toward the calm period and is judged again later.
//!
//! Unknown when the query failed, was rate-limited, carried GraphQL errors, hit its row limit,
//! came back with rows that could not be attributed or with a number that does not parse (never
//! read as 0), when the account's data does not reach the window's end (pipeline lag), or when
//! the local clock and Cloudflare's `Date` differ by more than [`MAX_CLOCK_SKEW`] (or
//! Cloudflare's time is unknown).
//!
//! Rates are averages over the window's length: `sum.packets / seconds` and
//! `sum.bits / seconds / 1e6` (the original suite compared a five-minute *sum* with a per-second
//! threshold). The calm-tracking dataset is sampled, and Cloudflare documents that the `sum`
//! fields of sampled nodes are already estimates scaled up from the sample
//! (analytics/graphql-api/sampling), so they are used as given, never multiplied again.
//!
//! Invariants (checked by the property tests at the bottom, which name them):
//! 1. **Calm only on clean evidence**: a prefix's window is calm only if the query succeeded,
//!    was not truncated, had no unattributable row, reached the window's end, came from a clock
//!    within [`MAX_CLOCK_SKEW`], the prefix had no malformed row, and both average rates are
//!    below their thresholds.
//! 2. **Clean evidence is judged**: with all of the above clean, a prefix is attack exactly
//!    when one rate reaches its threshold, calm otherwise (never unknown).
//! 3. **More drops never calm a window**: adding dropped packets or bits to a prefix never
//!    turns its verdict from attack or unknown into calm.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use ipnet::IpNet;
use mt_cloudflare::graphql::{CONFIRM_BUCKET, DroppedBuckets, DroppedTraffic};

use crate::core::Confirmation;

/// Largest accepted difference between the local clock and Cloudflare's `Date`.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(30);

/// When a window counts as an attack.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// Average dropped packets per second.
    pub attack_min_pps: f64,
    /// Average dropped megabits per second.
    pub attack_min_mbps: f64,
}

/// Why a window could not be judged.
#[derive(Debug, Clone, PartialEq)]
pub enum Unknown {
    /// The request failed (network, 5xx, 4xx, malformed answer).
    QueryFailed(String),
    /// Cloudflare rate-limited the request (HTTP 429 or the GraphQL budget).
    RateLimited(String),
    /// The answer hit its row limit: totals may be too small.
    Truncated,
    /// Rows whose destination could not be parsed (they might be ours).
    Unattributed(usize),
    /// The account's data does not reach the window's end yet.
    DataLag {
        /// Start of the newest bucket with any data.
        latest: Option<DateTime<Utc>>,
    },
    /// The local clock and Cloudflare's differ too much to trust the window boundaries.
    ClockSkew {
        /// Local time of the answer.
        local: DateTime<Utc>,
        /// Cloudflare's `Date`, if it sent one.
        cloudflare: Option<DateTime<Utc>>,
    },
    /// The window has no length.
    EmptyWindow,
    /// Rows attributed to the prefix had a missing or malformed `sum`.
    Malformed(usize),
}

impl fmt::Display for Unknown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::QueryFailed(e) => write!(f, "analytics query failed: {e}"),
            Self::RateLimited(e) => write!(f, "rate limited by Cloudflare: {e}"),
            Self::Truncated => f.write_str("analytics result hit its row limit"),
            Self::Unattributed(n) => write!(f, "{n} analytics rows could not be attributed"),
            Self::DataLag { latest: Some(t) } => write!(f, "analytics data only reaches {t}"),
            Self::DataLag { latest: None } => f.write_str("no analytics data for the window"),
            Self::ClockSkew {
                local,
                cloudflare: Some(c),
            } => {
                write!(f, "clock skew: local {local}, Cloudflare {c}")
            }
            Self::ClockSkew {
                cloudflare: None, ..
            } => f.write_str("Cloudflare sent no Date header"),
            Self::EmptyWindow => f.write_str("empty window"),
            Self::Malformed(n) => write!(f, "{n} analytics rows had a malformed sum"),
        }
    }
}

/// The judgement of one prefix over one window.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Dropped traffic at or above a threshold.
    Attack {
        /// Average dropped packets per second.
        pps: f64,
        /// Average dropped Mbit/s.
        mbps: f64,
        /// Mitigation systems that dropped traffic.
        systems: BTreeSet<String>,
    },
    /// Dropped traffic below both thresholds.
    Calm {
        /// Average dropped packets per second.
        pps: f64,
        /// Average dropped Mbit/s.
        mbps: f64,
    },
    /// Could not be judged.
    Unknown(Unknown),
}

impl Verdict {
    /// Whether this window may count toward the calm period.
    pub fn is_calm(&self) -> bool {
        matches!(self, Self::Calm { .. })
    }
}

/// The window judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Start.
    pub start: DateTime<Utc>,
    /// End.
    pub end: DateTime<Utc>,
}

/// Judges every prefix of `prefixes` over `window` from the query's outcome. `local_now` is the
/// local time when the answer arrived; `bucket` the dataset's bucket width (one minute).
pub fn judge(
    outcome: &Result<DroppedTraffic, mt_cloudflare::Error>,
    window: Window,
    prefixes: &[IpNet],
    thresholds: Thresholds,
    local_now: DateTime<Utc>,
    bucket: Duration,
) -> BTreeMap<IpNet, Verdict> {
    let all = |u: Unknown| {
        prefixes
            .iter()
            .map(|p| (*p, Verdict::Unknown(u.clone())))
            .collect()
    };
    let traffic = match outcome {
        Ok(t) => t,
        Err(e) if e.is_rate_limited() => return all(Unknown::RateLimited(e.to_string())),
        Err(e) => return all(Unknown::QueryFailed(e.to_string())),
    };
    let skew = chrono::Duration::from_std(MAX_CLOCK_SKEW).unwrap_or_default();
    match traffic.served_at {
        Some(c) if (local_now - c).abs() <= skew => {}
        cloudflare => {
            return all(Unknown::ClockSkew {
                local: local_now,
                cloudflare,
            });
        }
    }
    if traffic.truncated {
        return all(Unknown::Truncated);
    }
    if traffic.unparsed_rows > 0 {
        return all(Unknown::Unattributed(traffic.unparsed_rows));
    }
    let bucket = chrono::Duration::from_std(bucket).unwrap_or(chrono::Duration::seconds(60));
    if traffic
        .latest_minute
        .is_none_or(|m| m + bucket < window.end)
    {
        return all(Unknown::DataLag {
            latest: traffic.latest_minute,
        });
    }
    let seconds = (window.end - window.start).num_milliseconds() as f64 / 1000.0;
    if seconds <= 0.0 {
        return all(Unknown::EmptyWindow);
    }
    prefixes
        .iter()
        .map(|prefix| {
            let drops = traffic.per_prefix.get(prefix).cloned().unwrap_or_default();
            if drops.malformed_rows > 0 {
                return (
                    *prefix,
                    Verdict::Unknown(Unknown::Malformed(drops.malformed_rows)),
                );
            }
            let pps = drops.packets / seconds;
            let mbps = drops.bits / seconds / 1e6;
            let verdict = if pps >= thresholds.attack_min_pps || mbps >= thresholds.attack_min_mbps
            {
                Verdict::Attack {
                    pps,
                    mbps,
                    systems: drops.systems,
                }
            } else {
                Verdict::Calm { pps, mbps }
            };
            (*prefix, verdict)
        })
        .collect()
}

/// Judges the confirmation query's answer for one prefix over `range` (SPEC §7.4): every
/// five-minute bucket of the range (the first and last cut to the range) must be calm. Any
/// attack bucket gives [`Confirmation::Attack`] with the end of the last one (the stretch
/// restarts after it); otherwise any bucket that cannot be judged gives
/// [`Confirmation::Unknown`]; otherwise [`Confirmation::Calm`].
pub fn judge_buckets(
    outcome: &Result<DroppedBuckets, mt_cloudflare::Error>,
    range: Window,
    prefix: IpNet,
    thresholds: Thresholds,
    local_now: DateTime<Utc>,
) -> Confirmation {
    let answer = match outcome {
        Ok(a) => a,
        Err(e) => return Confirmation::Unknown(format!("confirmation query failed: {e}")),
    };
    let width = chrono::Duration::from_std(CONFIRM_BUCKET).unwrap_or(chrono::Duration::minutes(5));
    let secs = width.num_seconds().max(1);
    let floor = |t: DateTime<Utc>| {
        DateTime::from_timestamp(t.timestamp() - t.timestamp().rem_euclid(secs), 0).unwrap_or(t)
    };
    let mut attack_until = None;
    let mut unknown = None;
    let mut bucket = floor(range.start);
    while bucket < range.end {
        let window = Window {
            start: bucket.max(range.start),
            end: (bucket + width).min(range.end),
        };
        let traffic = answer.bucket(bucket, &[prefix]);
        let verdicts = judge(
            &Ok(traffic),
            window,
            &[prefix],
            thresholds,
            local_now,
            BUCKET_WIDTH,
        );
        match verdicts.get(&prefix) {
            Some(Verdict::Calm { .. }) => {}
            Some(Verdict::Attack { .. }) => attack_until = Some(window.end),
            Some(Verdict::Unknown(u)) => {
                unknown.get_or_insert_with(|| u.to_string());
            }
            None => {
                unknown.get_or_insert_with(|| "no verdict".to_owned());
            }
        }
        bucket += width;
    }
    match (attack_until, unknown) {
        (Some(until), _) => Confirmation::Attack { until },
        (None, Some(why)) => Confirmation::Unknown(why),
        (None, None) => Confirmation::Calm,
    }
}

/// The calm dataset's bucket width (one minute), for the data-lag check.
const BUCKET_WIDTH: Duration = Duration::from_secs(60);

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use chrono::TimeZone;
    use mt_cloudflare::graphql::PrefixDrops;

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 19, 0, 0, 0).unwrap()
    }

    fn window() -> Window {
        Window {
            start: t0(),
            end: t0() + chrono::Duration::minutes(5),
        }
    }

    fn prefixes() -> Vec<IpNet> {
        vec![
            "203.0.113.0/24".parse().unwrap(),
            "2001:db8:1000::/48".parse().unwrap(),
        ]
    }

    const T: Thresholds = Thresholds {
        attack_min_pps: 1000.0,
        attack_min_mbps: 10.0,
    };

    /// An answer for the window: `packets` and `bits` dropped towards the first prefix.
    fn answer(packets: f64, bits: f64) -> DroppedTraffic {
        let mut per_prefix: BTreeMap<IpNet, PrefixDrops> = prefixes()
            .into_iter()
            .map(|p| (p, PrefixDrops::default()))
            .collect();
        per_prefix.insert(
            prefixes()[0],
            PrefixDrops {
                packets,
                bits,
                systems: ["dosd".to_owned()].into(),
                malformed_rows: 0,
            },
        );
        DroppedTraffic {
            per_prefix,
            rows: 1,
            truncated: false,
            unparsed_rows: 0,
            latest_minute: Some(window().end - chrono::Duration::minutes(1)),
            served_at: Some(window().end + chrono::Duration::minutes(3)),
        }
    }

    fn verdicts(outcome: Result<DroppedTraffic, mt_cloudflare::Error>) -> Vec<Verdict> {
        let now = window().end + chrono::Duration::minutes(3);
        judge(
            &outcome,
            window(),
            &prefixes(),
            T,
            now,
            Duration::from_secs(60),
        )
        .into_values()
        .collect()
    }

    #[test]
    fn rates_are_averages_over_the_window_not_sums() {
        // 299,999 packets in five minutes is 999.99 pps: calm. 300,000 is 1000 pps: attack.
        assert!(matches!(
            verdicts(Ok(answer(299_999.0, 0.0)))[0],
            Verdict::Calm { .. }
        ));
        assert!(matches!(
            verdicts(Ok(answer(300_000.0, 0.0)))[0],
            Verdict::Attack { .. }
        ));
        // 10 Mbit/s over 300 s is 3e9 bits.
        assert!(matches!(
            verdicts(Ok(answer(0.0, 2.999e9)))[0],
            Verdict::Calm { .. }
        ));
        assert!(matches!(
            verdicts(Ok(answer(0.0, 3.0e9)))[0],
            Verdict::Attack { .. }
        ));
        // The other prefix saw nothing.
        assert!(matches!(
            verdicts(Ok(answer(300_000.0, 0.0)))[1],
            Verdict::Calm { .. }
        ));
    }

    #[test]
    fn sums_are_cloudflares_estimates_used_as_given() {
        // Cloudflare's sums are already scaled up from the sample: 299,999 estimated packets in
        // five minutes is calm whatever the sample interval was; nothing multiplies it again.
        assert!(verdicts(Ok(answer(299_999.0, 0.0)))[0].is_calm());
        match &verdicts(Ok(answer(600_000.0, 0.0)))[0] {
            Verdict::Attack { pps, .. } => assert_eq!(*pps, 2000.0),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_malformed_sum_is_unknown_for_its_prefix_only() {
        let mut a = answer(0.0, 0.0);
        a.per_prefix.get_mut(&prefixes()[0]).unwrap().malformed_rows = 1;
        let v = verdicts(Ok(a));
        assert_eq!(v[0], Verdict::Unknown(Unknown::Malformed(1)));
        assert!(v[1].is_calm(), "the other prefix had no malformed row");
    }

    #[test]
    fn doubt_is_unknown_never_calm() {
        let calm = answer(0.0, 0.0);
        /// An outcome and a test of the unknown it must produce.
        type Case = (
            Result<DroppedTraffic, mt_cloudflare::Error>,
            fn(&Unknown) -> bool,
        );
        let cases: Vec<Case> = vec![
            (Err(mt_cloudflare::Error::Timeout), |u| {
                matches!(u, Unknown::QueryFailed(_))
            }),
            (
                Err(mt_cloudflare::Error::Api {
                    status: 429,
                    errors: vec![],
                    retry_after: None,
                }),
                |u| matches!(u, Unknown::RateLimited(_)),
            ),
            (
                Err(mt_cloudflare::Error::GraphQl {
                    errors: vec![mt_cloudflare::ApiMessage {
                        code: None,
                        message: "rate limiter budget depleted".into(),
                    }],
                }),
                |u| matches!(u, Unknown::RateLimited(_)),
            ),
            (
                Err(mt_cloudflare::Error::Decode("no account".into())),
                |u| matches!(u, Unknown::QueryFailed(_)),
            ),
            (
                Ok(DroppedTraffic {
                    truncated: true,
                    ..calm.clone()
                }),
                |u| *u == Unknown::Truncated,
            ),
            (
                Ok(DroppedTraffic {
                    unparsed_rows: 2,
                    ..calm.clone()
                }),
                |u| *u == Unknown::Unattributed(2),
            ),
            (
                Ok(DroppedTraffic {
                    latest_minute: Some(window().end - chrono::Duration::minutes(2)),
                    ..calm.clone()
                }),
                |u| matches!(u, Unknown::DataLag { .. }),
            ),
            (
                Ok(DroppedTraffic {
                    latest_minute: None,
                    ..calm.clone()
                }),
                |u| matches!(u, Unknown::DataLag { latest: None }),
            ),
            (
                Ok(DroppedTraffic {
                    served_at: Some(
                        window().end + chrono::Duration::minutes(3) + chrono::Duration::seconds(31),
                    ),
                    ..calm.clone()
                }),
                |u| matches!(u, Unknown::ClockSkew { .. }),
            ),
            (
                Ok(DroppedTraffic {
                    served_at: None,
                    ..calm.clone()
                }),
                |u| {
                    matches!(
                        u,
                        Unknown::ClockSkew {
                            cloudflare: None,
                            ..
                        }
                    )
                },
            ),
        ];
        for (outcome, expected) in cases {
            for verdict in verdicts(outcome.clone()) {
                match &verdict {
                    Verdict::Unknown(u) if expected(u) => {}
                    other => panic!("{outcome:?} judged {other:?}"),
                }
            }
        }
        // A skew just inside the limit is fine.
        let ok = DroppedTraffic {
            served_at: Some(
                window().end + chrono::Duration::minutes(3) - chrono::Duration::seconds(30),
            ),
            ..calm
        };
        assert!(verdicts(Ok(ok)).iter().all(Verdict::is_calm));
    }

    #[test]
    fn an_empty_window_is_not_calm() {
        let now = window().end;
        let empty = Window {
            start: now,
            end: now,
        };
        let mut a = answer(0.0, 0.0);
        a.latest_minute = Some(now);
        a.served_at = Some(now);
        let v = judge(&Ok(a), empty, &prefixes(), T, now, Duration::from_secs(60));
        assert!(
            v.values()
                .all(|v| matches!(v, Verdict::Unknown(Unknown::EmptyWindow)))
        );
    }

    mod properties {
        //! Property tests of invariants 1–3 (module docs) over generated answers.
        use super::*;
        use proptest::prelude::*;

        #[derive(Debug, Clone)]
        struct Case {
            outcome: Result<DroppedTraffic, mt_cloudflare::Error>,
            window: Window,
            thresholds: Thresholds,
            local_now: DateTime<Utc>,
        }

        fn error() -> impl Strategy<Value = mt_cloudflare::Error> {
            prop_oneof![
                Just(mt_cloudflare::Error::Timeout),
                Just(mt_cloudflare::Error::Api {
                    status: 429,
                    errors: vec![],
                    retry_after: None
                }),
                Just(mt_cloudflare::Error::GraphQl {
                    errors: vec![mt_cloudflare::ApiMessage {
                        code: None,
                        message: "rate limiter budget depleted".into()
                    }]
                }),
                Just(mt_cloudflare::Error::Decode("no account".into())),
            ]
        }

        fn drops() -> impl Strategy<Value = PrefixDrops> {
            (
                prop_oneof![Just(0.0), 0.0..1e4f64, 0.0..1e9f64],
                prop_oneof![Just(0.0), 0.0..1e8f64, 0.0..1e13f64],
                prop_oneof![8 => Just(0usize), 1 => 1..3usize],
            )
                .prop_map(|(packets, bits, malformed_rows)| PrefixDrops {
                    packets,
                    bits,
                    systems: ["dosd".to_owned()].into(),
                    malformed_rows,
                })
        }

        fn case() -> impl Strategy<Value = Case> {
            let t0 = t0();
            (
                60i64..3600,
                1.0..1e6f64,
                0.1..1e4f64,
                proptest::collection::vec(drops(), 3),
                prop_oneof![9 => Just(false), 1 => Just(true)],
                prop_oneof![9 => Just(0usize), 1 => 1..3usize],
                prop_oneof![1 => Just(None), 9 => (-300i64..300).prop_map(Some)],
                prop_oneof![1 => Just(None), 9 => (-60i64..60).prop_map(Some)],
                prop_oneof![9 => Just(None), 1 => error().prop_map(Some)],
            )
                .prop_map(
                    move |(len, pps, mbps, drops, truncated, unparsed, latest, skew, err)| {
                        let window = Window {
                            start: t0,
                            end: t0 + chrono::Duration::seconds(len),
                        };
                        let local_now = window.end + chrono::Duration::minutes(3);
                        let per_prefix = prefixes3().into_iter().zip(drops).collect();
                        let traffic = DroppedTraffic {
                            per_prefix,
                            rows: 3,
                            truncated,
                            unparsed_rows: unparsed,
                            latest_minute: latest
                                .map(|o| window.end + chrono::Duration::seconds(o)),
                            served_at: skew.map(|s| local_now + chrono::Duration::seconds(s)),
                        };
                        Case {
                            outcome: err.map_or(Ok(traffic), Err),
                            window,
                            thresholds: Thresholds {
                                attack_min_pps: pps,
                                attack_min_mbps: mbps,
                            },
                            local_now,
                        }
                    },
                )
        }

        fn prefixes3() -> Vec<IpNet> {
            vec![
                "203.0.113.0/24".parse().unwrap(),
                "198.51.100.0/23".parse().unwrap(),
                "2001:db8:1000::/48".parse().unwrap(),
            ]
        }

        fn run(c: &Case) -> BTreeMap<IpNet, Verdict> {
            judge(
                &c.outcome,
                c.window,
                &prefixes3(),
                c.thresholds,
                c.local_now,
                Duration::from_secs(60),
            )
        }

        /// The clean-evidence conditions of invariant 1 that hold for the whole answer.
        fn answer_clean(c: &Case) -> bool {
            let Ok(t) = &c.outcome else { return false };
            let skew = chrono::Duration::from_std(MAX_CLOCK_SKEW).unwrap();
            !t.truncated
                && t.unparsed_rows == 0
                && t.latest_minute
                    .is_some_and(|m| m + chrono::Duration::seconds(60) >= c.window.end)
                && t.served_at.is_some_and(|s| (c.local_now - s).abs() <= skew)
        }

        fn rates(c: &Case, d: &PrefixDrops) -> (f64, f64) {
            let secs = (c.window.end - c.window.start).num_milliseconds() as f64 / 1000.0;
            (d.packets / secs, d.bits / secs / 1e6)
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(4000))]

            /// Invariants 1 and 2.
            #[test]
            fn calm_exactly_on_clean_evidence_below_both_thresholds(c in case()) {
                let verdicts = run(&c);
                prop_assert_eq!(verdicts.len(), 3);
                for (prefix, verdict) in &verdicts {
                    let clean = answer_clean(&c)
                        && c.outcome.as_ref().is_ok_and(|t| t.per_prefix[prefix].malformed_rows == 0);
                    if !clean {
                        prop_assert!(matches!(verdict, Verdict::Unknown(_)), "{prefix}: {verdict:?} on unclean evidence");
                        continue;
                    }
                    let d = &c.outcome.as_ref().unwrap().per_prefix[prefix];
                    let (pps, mbps) = rates(&c, d);
                    let attack = pps >= c.thresholds.attack_min_pps || mbps >= c.thresholds.attack_min_mbps;
                    if attack {
                        prop_assert!(matches!(verdict, Verdict::Attack { .. }), "{prefix}: {verdict:?} at {pps} pps / {mbps} Mbps");
                    } else {
                        prop_assert!(verdict.is_calm(), "{prefix}: {verdict:?} at {pps} pps / {mbps} Mbps");
                    }
                }
            }

            /// Invariant 3.
            #[test]
            fn more_drops_never_calm_a_window(
                c in case(),
                which in 0usize..3,
                more_packets in 0.0..1e9f64,
                more_bits in 0.0..1e13f64,
            ) {
                let before = run(&c);
                let mut more = c.clone();
                let prefix = prefixes3()[which];
                if let Ok(t) = &mut more.outcome {
                    let d = t.per_prefix.get_mut(&prefix).unwrap();
                    d.packets += more_packets;
                    d.bits += more_bits;
                }
                let after = run(&more);
                if !before[&prefix].is_calm() {
                    prop_assert!(!after[&prefix].is_calm(), "{:?} became {:?}", before[&prefix], after[&prefix]);
                }
            }
        }
    }
}
