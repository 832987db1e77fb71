//! Property tests of the decision core (`autowithdraw::core`) over generated timelines: the
//! invariants of the core's module documentation, checked at every PATCH (and at the end of
//! each run for liveness).
//!
//! A run is one advertised prefix over minutes to days. The driver does what the engine does
//! — judge the backlog window by window (at most 12 a cycle, a window that cannot be judged is
//! retried, time older than the dataset keeps is declared lost), call `decide`, run the
//! confirmation over the range it asks, call `confirm`, PATCH, call `after_patch` — against a
//! model world: attacks (steady, bursts, resuming), rows that arrive late, analytics outages,
//! counting STARTs, pins, pauses, locks, the prefix removed from the config and added back,
//! daemon downtime, crashes between the intent and the outcome, and Cloudflare answering ok,
//! 429 (hold), 5xx, timing out after carrying it out, or answering ok without carrying it out.
//! Scheduled requests (`pending_withdrawals`) are inserted at generated minutes — fresh, legacy
//! (no `created_at`), or left over from an earlier incident once the prefix is re-advertised —
//! and go through `request_gates`, `pre_withdraw_command` (refusing in generated spans) and
//! `confirm_request` before the automatic path, as in the engine.

use chrono::{DateTime, Duration, TimeZone, Utc};
use proptest::prelude::*;

use autowithdraw::core::{
    self, Confirmation, Evidence, Holds, Next, Observations, PatchOutcome, Reading, Recheck,
    Request, RequestNext, RequestObservations, RequestRecheck, Rules, Span,
};
use autowithdraw::judge::Verdict;
use mt_store::PrefixState;

const WINDOW: i64 = 5;
const MAX_WINDOWS: usize = 12;

fn at(minute: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 19, 0, 0, 0).unwrap() + Duration::minutes(minute)
}

fn minute_of(t: DateTime<Utc>) -> i64 {
    (t - at(0)).num_minutes()
}

/// How Cloudflare answers one PATCH.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// 200, carried out.
    Ok,
    /// 429 with code 1002 (the 15-minute hold): not carried out.
    Hold,
    /// 5xx: not carried out (ambiguous for the client).
    ServerError,
    /// Times out after carrying it out.
    TimeoutApplied,
    /// 200 but never carried out.
    NotCarriedOut,
}

#[derive(Debug, Clone)]
struct Timeline {
    /// Run length in minutes.
    minutes: i64,
    calm_period: i64,
    delay: i64,
    interval: i64,
    settle: i64,
    min_advertised: i64,
    /// Advertised this many minutes before the run starts.
    advertised_ago: i64,
    /// Attack minutes `[from, to)` and how late their rows arrive (minutes after the minute).
    attacks: Vec<(i64, i64, i64)>,
    /// Cycles (by minute range) whose analytics queries fail.
    outages: Vec<(i64, i64)>,
    /// START webhooks, by the minute they are received, and what they name.
    starts: Vec<(i64, StartKind)>,
    pins: Vec<(i64, i64)>,
    pauses: Vec<(i64, i64)>,
    locks: Vec<(i64, i64)>,
    /// The prefix is out of the config.
    removed: Vec<(i64, i64)>,
    /// The daemon is down (no cycle).
    down: Vec<(i64, i64)>,
    /// The dataset keeps this many minutes (None: forever).
    not_older_than: Option<i64>,
    /// Cloudflare's answers, in order (then Ok).
    answers: Vec<Answer>,
    /// PATCH numbers after which the daemon crashes before recording the outcome.
    crash_after: Vec<usize>,
    /// Re-advertised this many minutes after our withdrawal took effect.
    readvertise_after: Option<i64>,
    /// Scheduled requests: inserted at minute, due that many minutes later, legacy (no
    /// `created_at`).
    requests: Vec<(i64, i64, bool)>,
    /// Minutes in which `pre_withdraw_command` refuses.
    pre_fails: Vec<(i64, i64)>,
}

impl Timeline {
    fn clean(&self) -> bool {
        self.attacks.iter().all(|a| a.2 == 0)
            && self.outages.is_empty()
            && self.pins.is_empty()
            && self.pauses.is_empty()
            && self.locks.is_empty()
            && self.removed.is_empty()
            && self.down.is_empty()
            && self.not_older_than.is_none()
            && self.answers.iter().all(|a| *a == Answer::Ok)
            && self.crash_after.is_empty()
            && self.pre_fails.is_empty()
    }

    fn attack_visible(&self, minute: i64, now: i64) -> bool {
        self.attacks
            .iter()
            .any(|(from, to, late)| (*from..*to).contains(&minute) && minute + 1 + late <= now)
    }
}

fn within(spans: &[(i64, i64)], m: i64) -> bool {
    spans.iter().any(|(a, b)| (*a..*b).contains(&m))
}

fn spans(max_start: i64, max_len: i64, n: usize) -> impl Strategy<Value = Vec<(i64, i64)>> {
    prop::collection::vec(
        (0..max_start.max(1), 1..max_len.max(2)).prop_map(|(a, l)| (a, a + l)),
        0..=n,
    )
}

fn timeline() -> impl Strategy<Value = Timeline> {
    // 35 % of runs span one to two days.
    let minutes = prop_oneof![13 => 60i64..720, 7 => 1440i64..2880];
    (
        minutes,
        prop::sample::select(vec![10i64, 15, 30]),
        prop::sample::select(vec![3i64, 5]),
        prop::sample::select(vec![1i64, 5]),
        prop::sample::select(vec![0i64, 5]),
        prop::sample::select(vec![0i64, 20, 60]),
        0i64..90,
        any::<u64>(),
    )
        .prop_flat_map(
            |(minutes, calm_period, delay, interval, settle, min_advertised, ago, seed)| {
                let attacks = prop::collection::vec(
                    (
                        -40i64..minutes,
                        1i64..90,
                        prop_oneof![4 => Just(0i64), 1 => 1i64..40],
                    )
                        .prop_map(|(a, l, late)| (a, a + l, late)),
                    0..5,
                );
                let answers = prop::collection::vec(
                    prop_oneof![
                        6 => Just(Answer::Ok),
                        1 => Just(Answer::Hold),
                        1 => Just(Answer::ServerError),
                        1 => Just(Answer::TimeoutApplied),
                        1 => Just(Answer::NotCarriedOut),
                    ],
                    0..4,
                );
                let faulty = seed % 3 != 0;
                // Every fifth faulty run: analytics fail from the middle of a pin to long after
                // it ends (a hold that ends while the evidence is stale).
                let stale_hold = faulty && seed % 5 == 1;
                (
                    Just((
                        minutes,
                        calm_period,
                        delay,
                        interval,
                        settle,
                        min_advertised,
                        ago,
                    )),
                    attacks,
                    if faulty {
                        spans(minutes, 120, 3).boxed()
                    } else {
                        Just(vec![]).boxed()
                    },
                    (
                        prop::collection::vec((0..minutes, start_kind()), 0..4),
                        prop::collection::vec(
                            (0..minutes, 0i64..60, prop::bool::weighted(0.15)),
                            0..3,
                        ),
                        if faulty {
                            spans(minutes, 60, 1).boxed()
                        } else {
                            Just(vec![]).boxed()
                        },
                    ),
                    (
                        if faulty {
                            spans(minutes, 90, 2).boxed()
                        } else {
                            Just(vec![]).boxed()
                        },
                        if faulty {
                            spans(minutes, 90, 1).boxed()
                        } else {
                            Just(vec![]).boxed()
                        },
                        if faulty {
                            spans(minutes, 60, 1).boxed()
                        } else {
                            Just(vec![]).boxed()
                        },
                    ),
                    if faulty {
                        spans(minutes, 120, 1).boxed()
                    } else {
                        Just(vec![]).boxed()
                    },
                    if faulty {
                        spans(minutes, 240, 2).boxed()
                    } else {
                        Just(vec![]).boxed()
                    },
                    if faulty {
                        prop::option::of(60i64..240).boxed()
                    } else {
                        Just(None).boxed()
                    },
                    if faulty {
                        answers.boxed()
                    } else {
                        Just(vec![]).boxed()
                    },
                    if faulty {
                        prop::collection::vec(0usize..4, 0..2).boxed()
                    } else {
                        Just(vec![]).boxed()
                    },
                    prop::option::of(5i64..300),
                    Just(stale_hold),
                )
            },
        )
        .prop_map(
            |(
                (minutes, calm_period, delay, interval, settle, min_advertised, ago),
                mut attacks,
                outages,
                (starts, requests, pre_fails),
                (pins, pauses, locks),
                removed,
                down,
                not_older_than,
                answers,
                crash_after,
                readvertise_after,
                stale_hold,
            )| {
                let mut outages = outages;
                let mut pins = pins;
                if stale_hold {
                    let (a, b) = pins.first().copied().unwrap_or((5, 40));
                    pins.push((a, b));
                    outages.push(((a + b) / 2, b + 90));
                }
                // The advertisement answered an attack: one just before it.
                attacks.push((-ago - 10, -ago + 1, 0));
                Timeline {
                    minutes,
                    calm_period,
                    delay,
                    interval,
                    settle,
                    min_advertised,
                    advertised_ago: ago,
                    attacks,
                    outages,
                    starts,
                    pins,
                    pauses,
                    locks,
                    removed,
                    down,
                    not_older_than,
                    answers,
                    crash_after,
                    readvertise_after,
                    requests,
                    pre_fails,
                }
            },
        )
}

/// The prefix every run is about, and what a START may name.
const PREFIX: &str = "198.51.100.0/23";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StartKind {
    /// L3/4, target inside the prefix.
    Inside,
    /// Network Flow, stored under a more specific /24 of the prefix, target inside it.
    Covered,
    /// No usable target (counts for every prefix).
    NoTarget,
    /// L7: names a hostname.
    L7,
    /// Target outside every configured prefix.
    Outside,
}

impl StartKind {
    /// Whether it counts for the prefix (SPEC §7.3), independently of the code under test.
    fn counts(self) -> bool {
        matches!(self, Self::Inside | Self::Covered | Self::NoTarget)
    }

    fn row(self, minute: i64) -> mt_store::StartRow {
        let (alert, target, prefix) = match self {
            Self::Inside => ("dos_attack_l4", Some("198.51.100.9"), Some(PREFIX)),
            Self::Covered => (
                "fbm_volumetric_attack",
                Some("198.51.101.7"),
                Some("198.51.101.0/24"),
            ),
            Self::NoTarget => ("fbm_dosd_attack", None, None),
            Self::L7 => ("advanced_ddos_attack_l7_alert", None, None),
            Self::Outside => ("dos_attack_l4", Some("192.0.2.1"), None),
        };
        mt_store::StartRow {
            at: at(minute),
            alert_type: Some(alert.into()),
            target_ip: target.map(str::to_owned),
            prefix: prefix.map(str::to_owned),
        }
    }
}

fn start_kind() -> impl Strategy<Value = StartKind> {
    prop::sample::select(vec![
        StartKind::Inside,
        StartKind::Covered,
        StartKind::NoTarget,
        StartKind::L7,
        StartKind::Outside,
    ])
}

/// What Cloudflare holds.
#[derive(Debug, Clone)]
struct Cloudflare {
    advertised: bool,
    modified: i64,
}

/// One PATCH, as observed by the checker.
#[derive(Debug, Clone)]
struct Patch {
    minute: i64,
    incident: i64,
    successful: bool,
}

#[derive(Debug, Default)]
struct Outcome {
    patches: Vec<Patch>,
    /// Why the last cycle held (for failure messages).
    last_hold: Option<String>,
}

/// Runs a timeline, checking invariants 1–4 at every PATCH. Returns the PATCHes.
fn run(tl: &Timeline) -> Result<Outcome, TestCaseError> {
    let rules = Rules {
        calm_period: Duration::minutes(tl.calm_period),
        analytics_delay: Duration::minutes(tl.delay),
        interval: Duration::minutes(tl.interval),
        window: Duration::minutes(WINDOW),
        advertise_settle: Duration::minutes(tl.settle),
        min_advertised: Duration::minutes(tl.min_advertised),
        withdraw_verify_after: Duration::minutes(10),
        auto_withdraw: true,
        dry_run: false,
    };
    let mut cf = Cloudflare {
        advertised: true,
        modified: -tl.advertised_ago,
    };
    // What the database holds: the prefix's state (None before the first save) and the
    // judged time.
    let mut persisted: Option<PrefixState> = None;
    let mut judged_until = -tl.delay - WINDOW;
    // The latest judgement of every minute for this prefix: true = calm.
    let mut judged: std::collections::BTreeMap<i64, bool> = Default::default();
    let mut out = Outcome::default();
    let mut answers = tl.answers.iter().copied();
    let mut withdrawn_at: Option<i64> = None;
    // Each request's row: still pending, failed for good, or performed (deleted).
    let mut rows = vec![RowStatus::Pending; tl.requests.len()];
    // The start of the newest judged (or lost) window.
    let mut newest_window_start = judged_until;
    let mut now = 0;
    while now < tl.minutes {
        // Cloudflare re-advertises after an attack (a new incident).
        if let (Some(w), Some(after)) = (withdrawn_at, tl.readvertise_after)
            && !cf.advertised
            && now >= w + after
        {
            cf = Cloudflare {
                advertised: true,
                modified: now,
            };
            withdrawn_at = None;
        }
        if within(&tl.down, now) {
            now += tl.interval;
            continue;
        }
        // Judge the backlog (all prefixes: the global judged time moves even while this prefix
        // is out of the config).
        let horizon = now - tl.delay;
        let outage = within(&tl.outages, now);
        let mut evidence = Vec::new();
        if let Some(keep) = tl.not_older_than {
            let oldest = now - keep + tl.interval;
            if judged_until < oldest.min(horizon) {
                let end = oldest.min(horizon);
                evidence.push(Evidence::Lost(Span {
                    start: at(judged_until),
                    end: at(end),
                }));
                for m in judged_until..end {
                    judged.insert(m, false);
                }
                newest_window_start = judged_until;
                judged_until = end;
            }
        }
        let mut windows = 0;
        while judged_until < horizon && windows < MAX_WINDOWS && !outage {
            let (start, end) = (judged_until, (judged_until + WINDOW).min(horizon));
            let attack = (start..end).any(|m| tl.attack_visible(m, now));
            let verdict = if attack {
                Verdict::Attack {
                    pps: 1e6,
                    mbps: 1e3,
                    systems: ["dosd".to_owned()].into(),
                }
            } else {
                Verdict::Calm {
                    pps: 0.0,
                    mbps: 0.0,
                }
            };
            evidence.push(Evidence::Judged(
                Span {
                    start: at(start),
                    end: at(end),
                },
                verdict,
            ));
            for m in start..end {
                judged.insert(m, !attack);
            }
            newest_window_start = start;
            judged_until = end;
            windows += 1;
        }
        if within(&tl.removed, now) {
            // Out of the config: nothing is decided or saved for it.
            for e in &evidence {
                let span = match e {
                    Evidence::Judged(s, _) | Evidence::Lost(s) => *s,
                };
                for m in minute_of(span.start)..minute_of(span.end) {
                    judged.remove(&m);
                }
            }
            now += tl.interval;
            continue;
        }
        let first_sight = persisted.is_none();
        let state = persisted.clone().unwrap_or_else(|| PrefixState {
            prefix: PREFIX.into(),
            ..PrefixState::default()
        });
        let reading = Reading::Seen {
            advertised: cf.advertised,
            modified_at: Some(at(cf.modified)),
            locked: within(&tl.locks, now),
            cidr_matches: true,
        };
        let holds = Holds {
            pinned: within(&tl.pins, now).then(|| "alice: maintenance".into()),
            paused: within(&tl.pauses, now).then(|| "bob: change window".into()),
            account_mismatch: None,
        };
        // The STARTs received so far, as the engine reads them, through the code under test.
        let received: Vec<mt_store::StartRow> = tl
            .starts
            .iter()
            .filter(|(m, _)| *m <= now)
            .map(|(m, kind)| kind.row(*m))
            .collect();
        let last_start = core::last_counting_start(&received, PREFIX.parse().unwrap());
        let obs = Observations {
            reading: &reading,
            first_sight,
            evidence: &evidence,
            judged_until: at(judged_until),
            last_start,
            advertised_after_withdrawal: false,
            holds: &holds,
            telemetry_unknown: outage,
        };
        let (state, _actions, next) = core::decide(&state, &obs, at(now), &rules);
        persisted = Some(state.clone());
        if let Next::Hold(why) = &next {
            out.last_hold = Some(why.clone());
        }
        // Due requests, before the automatic path (as the engine orders them).
        let mut requested = false;
        for (i, &(insert, due_after, legacy)) in tl.requests.iter().enumerate() {
            if rows[i] != RowStatus::Pending || now < insert + due_after {
                continue;
            }
            let request = Request {
                created_at: (!legacy).then(|| at(insert)),
            };
            let robs = RequestObservations {
                reading: &reading,
                holds: &holds,
                judged_until: at(judged_until),
                last_start,
            };
            match core::request_gates(&state, &request, &robs, at(now), &rules) {
                RequestNext::Refuse(_) => continue,
                RequestNext::Stale(why) => {
                    // Only a row the model also calls stale (legacy, or made before the
                    // current advertisement or our withdrawal) is failed.
                    prop_assert!(
                        legacy
                            || insert < cf.modified
                            || state.advertised_modified_at.is_some_and(|m| at(insert) < m),
                        "a current request failed as stale at {}: {}",
                        now,
                        why
                    );
                    rows[i] = RowStatus::Failed;
                    continue;
                }
                RequestNext::Perform => {}
            }
            let recheck = RequestRecheck {
                last_start,
                judged_until: at(judged_until),
                pre_withdraw: within(&tl.pre_fails, now)
                    .then(|| "pre_withdraw_command exited 3".to_owned()),
            };
            let (with_intent, verdict) = core::confirm_request(&state, &recheck, at(now), &rules);
            if verdict.is_err() {
                continue;
            }
            persisted = Some(with_intent.clone());
            check_request_patch(
                tl,
                &rules,
                &AtPatch {
                    now,
                    judged_until,
                    judged: &judged,
                    holds: &holds,
                    out: &out,
                    incident: cf.modified,
                },
                insert,
                legacy,
                newest_window_start,
                outage,
            )?;
            let (recorded, done) = send_patch(
                tl,
                &mut answers,
                &mut cf,
                &mut withdrawn_at,
                &mut out,
                &with_intent,
                now,
            );
            if let Some(state) = recorded {
                persisted = Some(state);
            }
            if done {
                rows[i] = RowStatus::Done;
            }
            requested = true;
            break;
        }
        if requested {
            now += tl.interval;
            continue;
        }
        if let Next::Confirm(range) = next {
            // The confirmation: every minute of the range, as visible now.
            let confirmation = if outage {
                Confirmation::Unknown("analytics down".into())
            } else {
                match (minute_of(range.start)..minute_of(range.end))
                    .filter(|m| tl.attack_visible(*m, now))
                    .max()
                {
                    Some(m) => Confirmation::Attack { until: at(m + 1) },
                    None => Confirmation::Calm,
                }
            };
            let recheck = Recheck {
                confirmation: &confirmation,
                last_start,
                judged_until: at(judged_until),
                pre_withdraw: None,
            };
            let (state, verdict) = core::confirm(&state, &recheck, at(now), &rules);
            persisted = Some(state.clone());
            if verdict.is_ok() {
                check_patch(
                    tl,
                    &rules,
                    &AtPatch {
                        now,
                        judged_until,
                        judged: &judged,
                        holds: &holds,
                        out: &out,
                        incident: cf.modified,
                    },
                )?;
                let (recorded, _) = send_patch(
                    tl,
                    &mut answers,
                    &mut cf,
                    &mut withdrawn_at,
                    &mut out,
                    &state,
                    now,
                );
                if let Some(state) = recorded {
                    persisted = Some(state);
                }
            }
        }
        now += tl.interval;
    }
    Ok(out)
}

/// A request's row in the model database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RowStatus {
    Pending,
    Failed,
    Done,
}

/// One PATCH against the model Cloudflare, then `after_patch`. Returns the state to persist
/// (`None`: the daemon crashed before recording the outcome) and whether the outcome was
/// recorded as done.
fn send_patch(
    tl: &Timeline,
    answers: &mut impl Iterator<Item = Answer>,
    cf: &mut Cloudflare,
    withdrawn_at: &mut Option<i64>,
    out: &mut Outcome,
    state: &PrefixState,
    now: i64,
) -> (Option<PrefixState>, bool) {
    let answer = answers.next().unwrap_or(Answer::Ok);
    let crashed = tl.crash_after.contains(&out.patches.len());
    // Successful: carried out, or answered 2xx and recorded. A 2xx lost in a
    // crash before it was recorded is indistinguishable, after the restart, from
    // a PATCH never sent: a retry then re-checks every gate (SPEC §7.4).
    let successful = matches!(answer, Answer::Ok | Answer::TimeoutApplied)
        || (answer == Answer::NotCarriedOut && !crashed);
    out.patches.push(Patch {
        minute: now,
        incident: cf.modified,
        successful,
    });
    if matches!(answer, Answer::Ok | Answer::TimeoutApplied) {
        *cf = Cloudflare {
            advertised: false,
            modified: now,
        };
        *withdrawn_at = Some(now);
    }
    if !crashed {
        let outcome = match answer {
            Answer::Ok | Answer::NotCarriedOut => PatchOutcome::Done {
                modified_at: Some(at(now)),
            },
            Answer::Hold => PatchOutcome::Failed {
                error: "429 1002".into(),
                ambiguous: false,
                retry_at: at(now + 15),
            },
            Answer::ServerError | Answer::TimeoutApplied => PatchOutcome::Failed {
                error: "timed out".into(),
                ambiguous: true,
                retry_at: at(now + 1),
            },
        };
        let done = matches!(outcome, PatchOutcome::Done { .. });
        let (state, _) = core::after_patch(state, &outcome, at(now));
        return (Some(state), done);
    }
    (None, false)
}

/// What the checker knows when a PATCH is about to be sent.
struct AtPatch<'a> {
    now: i64,
    judged_until: i64,
    judged: &'a std::collections::BTreeMap<i64, bool>,
    holds: &'a Holds,
    out: &'a Outcome,
    incident: i64,
}

/// Invariants 1–4 at a PATCH.
fn check_patch(tl: &Timeline, rules: &Rules, at_patch: &AtPatch<'_>) -> Result<(), TestCaseError> {
    let AtPatch {
        now,
        judged_until,
        judged,
        ..
    } = *at_patch;
    let (from, to) = (now - tl.delay - tl.calm_period, now - tl.delay);
    // 1. Every minute of the range calm: no attack visible now, and every judged minute of it
    //    judged calm (never unknown, lost or unjudged).
    for m in from..to {
        prop_assert!(
            !tl.attack_visible(m, now),
            "invariant 1: PATCH at {now} over an attack at minute {m}"
        );
        if m < judged_until {
            prop_assert_eq!(
                judged.get(&m).copied(),
                Some(true),
                "invariant 1: PATCH at {} with minute {} not judged calm",
                now,
                m
            );
        }
    }
    // 2. No counting START within calm_period.
    prop_assert!(
        !tl.starts
            .iter()
            .any(|(s, kind)| kind.counts() && *s <= now && *s > now - tl.calm_period),
        "invariant 2: PATCH at {now} within calm_period of a START"
    );
    holds_and_once(tl, rules, at_patch, "PATCH")
}

/// Invariants 3 and 4, shared by automatic and requested PATCHes (`what` names which).
fn holds_and_once(
    tl: &Timeline,
    rules: &Rules,
    at_patch: &AtPatch<'_>,
    what: &str,
) -> Result<(), TestCaseError> {
    let AtPatch {
        now,
        judged_until,
        holds,
        out,
        incident,
        ..
    } = *at_patch;
    // 3. No hold, current telemetry, min_advertised.
    prop_assert!(
        holds.pinned.is_none() && holds.paused.is_none() && !within(&tl.locks, now),
        "invariant 3: {what} at {now} while held"
    );
    prop_assert!(
        judged_until >= now - tl.delay - tl.interval,
        "invariant 3: {what} at {now} on stale evidence (judged until {judged_until})"
    );
    prop_assert!(now - incident >= rules.min_advertised.num_minutes());
    // 4. At most one successful PATCH per incident (automatic and requested together): none
    //    after a successful one.
    prop_assert!(
        !out.patches
            .iter()
            .any(|p| p.incident == incident && p.successful),
        "invariant 4: {what} at {now} after a successful one in incident {incident}: {:?}",
        out.patches
    );
    Ok(())
}

/// Invariant 7 (and 3, 4) at a request's PATCH, judged on the model, not on the core's state.
#[allow(clippy::too_many_arguments)] // the checker's view of one PATCH
fn check_request_patch(
    tl: &Timeline,
    rules: &Rules,
    at_patch: &AtPatch<'_>,
    inserted: i64,
    legacy: bool,
    newest_window_start: i64,
    outage: bool,
) -> Result<(), TestCaseError> {
    let AtPatch {
        now,
        judged_until,
        judged,
        incident,
        ..
    } = *at_patch;
    // 7. Made during this advertisement.
    prop_assert!(
        !legacy && inserted >= incident,
        "invariant 7: request made at {inserted} (legacy: {legacy}) performed at {now} in incident {incident}"
    );
    // 7. The newest judged window calm for the prefix, every minute of it.
    prop_assert!(
        !outage,
        "invariant 7: request performed at {now} while the analytics fail"
    );
    prop_assert!(newest_window_start < judged_until);
    for m in newest_window_start..judged_until {
        prop_assert_eq!(
            judged.get(&m).copied(),
            Some(true),
            "invariant 7: request performed at {} with minute {} of the newest window not judged calm",
            now,
            m
        );
    }
    // 7. No counting START since that window began (an END does not unblock).
    prop_assert!(
        !tl.starts
            .iter()
            .any(|(s, kind)| kind.counts() && *s <= now && *s >= newest_window_start),
        "invariant 7: request performed at {now} after a START since the newest window ({newest_window_start}) began"
    );
    prop_assert!(
        !within(&tl.pre_fails, now),
        "invariant 7: request performed at {now} while pre_withdraw_command refuses"
    );
    holds_and_once(tl, rules, at_patch, "a request's PATCH")
}

/// Invariant 5's bound for a clean timeline (`None`: the run ends before it).
fn liveness_bound(tl: &Timeline) -> i64 {
    let last_attack_end = tl.attacks.iter().map(|a| a.1).max().unwrap_or(i64::MIN);
    // The end of the judged window holding the attack's last minute.
    let grid = -tl.delay - WINDOW;
    let window_end = grid + (last_attack_end - grid + WINDOW - 1).div_euclid(WINDOW) * WINDOW;
    let last_start = tl
        .starts
        .iter()
        .filter(|(_, kind)| kind.counts())
        .map(|(m, _)| *m)
        .max()
        .unwrap_or(i64::MIN);
    let settled = -tl.advertised_ago + tl.settle;
    // (and the daemon judges from its first cycle on: nothing before is judged calm).
    let calm_from = window_end.max(last_start).max(settled).max(grid);
    // Windows wider than the interval add their width.
    let extra = (WINDOW - tl.interval).max(0);
    (calm_from + tl.calm_period + tl.delay + 2 * tl.interval + extra)
        .max(-tl.advertised_ago + tl.min_advertised + tl.interval)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(10_000))]

    /// Invariants 1–4 over generated timelines; invariant 5 on the clean ones.
    #[test]
    fn no_premature_or_double_withdrawal_and_clean_runs_withdraw_in_time(tl in timeline()) {
        let out = run(&tl)?;
        if tl.clean() {
            let bound = liveness_bound(&tl);
            let first = out.patches.first().map(|p| p.minute);
            if bound < tl.minutes {
                prop_assert!(
                    first.is_some_and(|m| m <= bound.max(0)),
                    "invariant 5: no PATCH by minute {} (first: {:?}; last hold: {:?})",
                    bound, first, out.last_hold
                );
            }
            if let Some(m) = first {
                prop_assert!(m >= -tl.advertised_ago + tl.min_advertised);
            }
        }
    }
}

fn time_opt() -> impl Strategy<Value = Option<DateTime<Utc>>> {
    prop::option::of((-100_000i64..100_000).prop_map(|s| at(0) + Duration::seconds(s)))
}

fn prefix_state() -> impl Strategy<Value = PrefixState> {
    (
        (
            any::<bool>(),
            time_opt(),
            any::<bool>(),
            time_opt(),
            time_opt(),
        ),
        (
            0u32..1_000_000,
            0u32..100_000,
            "[a-z,()]{0,20}",
            time_opt(),
            any::<bool>(),
        ),
        (
            time_opt(),
            0i64..10,
            time_opt(),
            prop::option::of("[ -~]{0,40}"),
            prop::option::of(1i64..1000),
        ),
        (
            any::<bool>(),
            time_opt(),
            any::<bool>(),
            time_opt(),
            time_opt(),
        ),
    )
        .prop_map(|(a, b, c, d)| PrefixState {
            prefix: "198.51.100.0/23".into(),
            advertised: a.0,
            advertised_modified_at: a.1,
            locked: a.2,
            calm_since: a.3,
            last_attack_end: a.4,
            peak_pps: f64::from(b.0),
            peak_mbps: f64::from(b.1) / 8.0,
            systems: b.2,
            unknown_since: b.3,
            blind_alerted: b.4,
            intent_at: c.0,
            attempts: c.1,
            next_attempt_at: c.2,
            last_error: c.3,
            failure_history_id: c.4,
            dry_run_notified: d.0,
            withdrawn_at: d.1,
            verify_alerted: d.2,
            reminded_at: d.3,
            judged_through: d.4,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Invariant 6: every state, saved to a real SQLite file and loaded again, is the same
    /// state, so a restart decides exactly what the running daemon would have.
    #[test]
    fn every_persisted_state_reloads_to_the_same_decision(state in prefix_state(), minute in 0i64..2000) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let loaded = rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let store = mt_store::Store::open(&mt_store::OpenOptions::new(dir.path().join("mt.db")))
                .await
                .unwrap();
            let mut tx = store.begin().await.unwrap();
            tx.save_prefix_state(&state, at(minute)).await.unwrap();
            tx.commit().await.unwrap();
            let loaded = store.prefix_state(&state.prefix).await.unwrap();
            store.close().await;
            loaded
        });
        prop_assert_eq!(loaded.as_ref(), Some(&state));
        let rules = Rules {
            calm_period: Duration::minutes(15),
            analytics_delay: Duration::minutes(3),
            interval: Duration::minutes(1),
            window: Duration::minutes(WINDOW),
            advertise_settle: Duration::minutes(5),
            min_advertised: Duration::minutes(20),
            withdraw_verify_after: Duration::minutes(10),
            auto_withdraw: true,
            dry_run: false,
        };
        let reading = Reading::Seen {
            advertised: true,
            modified_at: state.advertised_modified_at,
            locked: false,
            cidr_matches: true,
        };
        let holds = Holds::default();
        let obs = Observations {
            reading: &reading,
            first_sight: false,
            evidence: &[],
            judged_until: at(minute - 3),
            last_start: None,
            advertised_after_withdrawal: false,
            holds: &holds,
            telemetry_unknown: false,
        };
        let loaded = loaded.unwrap();
        prop_assert_eq!(
            core::decide(&loaded, &obs, at(minute), &rules),
            core::decide(&state, &obs, at(minute), &rules)
        );
    }
}
