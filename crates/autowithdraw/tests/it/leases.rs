//! Two instances and the lease (SPEC §7.9), as a property over generated interleavings: the
//! lease rule itself (`mt_store::lease::transition`, the one `acquire_lease` applies), the
//! TTL (`autowithdraw::lease::lease_ttl`) and the PATCH budget after a renewal
//! (`autowithdraw::lease::patch_budget`) drive two model hosts through their cycles, with
//! arbitrary pauses between any two steps (a process stopped, a slow `pre_withdraw_command`),
//! a write lock that makes the renewal wait, a pause between the renewal's UPDATE and its
//! commit, and PATCHes that take any time up to their budget. The daemon's cycle deadline is
//! not relied on (a stopped process may run a step past it before its timer fires).
//!
//! Expiry is judged by the database's clock; the hosts' wall clocks are not an input of any
//! lease decision (so their offsets cannot matter), and each host measures the budget on its
//! monotonic clock, which runs at the database clock's rate while the process is paused (a
//! suspended *machine* stops `CLOCK_MONOTONIC`: that case is outside this model and is
//! written down in the crate's README).
//!
//! Invariants, at every PATCH that reaches Cloudflare:
//! - **a stale holder never PATCHes**: the sender is the lease's holder, with its token, and
//!   the lease has not expired by the database's clock;
//! - **never two PATCHes for one incident**: Cloudflare still advertises the prefix.

use std::time::Duration;

use autowithdraw::lease::{lease_ttl, patch_budget};
use mt_store::lease::{LeaseRow, transition};
use proptest::prelude::*;

/// What a model host does next.
#[derive(Debug, Clone)]
enum Phase {
    /// Between cycles: its next step tries to take the lease.
    Idle,
    /// Holds the lease (token), read Cloudflare at the cycle's start; its next step renews
    /// the lease in the intent's transaction.
    Acquired { token: i64, read_advertised: bool },
    /// The renewal committed: its next step is the PATCH reaching Cloudflare, if within the
    /// budget.
    Renewed { token: i64, deadline: i64 },
}

/// One step of one host, `gap` ms after the previous step of either host (a pause, a slow
/// phase, or the other host's work).
#[derive(Debug, Clone)]
struct Step {
    host: usize,
    gap: i64,
    /// How long the renewal's transaction waits for the write lock before its UPDATE.
    lock_wait: i64,
    /// A pause between the renewal's UPDATE and its commit (slow fsync, process stopped).
    commit_delay: i64,
}

#[derive(Debug, Clone)]
struct Run {
    interval: Duration,
    request_timeout: Duration,
    steps: Vec<Step>,
}

fn run() -> impl Strategy<Value = Run> {
    let step = (
        0usize..2,
        prop_oneof![
            6 => 0i64..5_000,
            3 => 5_000i64..120_000,
            2 => 120_000i64..700_000,
        ],
        prop_oneof![8 => Just(0i64), 2 => 0i64..30_000],
        prop_oneof![8 => Just(0i64), 2 => 0i64..400_000],
    )
        .prop_map(|(host, gap, lock_wait, commit_delay)| Step {
            host,
            gap,
            lock_wait,
            commit_delay,
        });
    (
        prop::sample::select(vec![10u64, 60, 120, 600]),
        prop::sample::select(vec![5u64, 10, 30]),
        prop::collection::vec(step, 4..80),
    )
        .prop_map(|(interval, timeout, steps)| Run {
            interval: Duration::from_secs(interval),
            request_timeout: Duration::from_secs(timeout),
            steps,
        })
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap()
}

#[derive(Debug, Default)]
struct Outcome {
    /// (host, database time) of every PATCH that reached Cloudflare.
    patches: Vec<(usize, i64)>,
    /// Steps a host found its lease taken over.
    fenced: usize,
    /// Takeovers (a new token).
    takeovers: usize,
}

/// Runs the steps; fails on a violated invariant.
fn simulate(r: &Run) -> Result<Outcome, TestCaseError> {
    let ttl = lease_ttl(r.interval);
    let ttl_ms = ms(ttl);
    let holders = ["host-a", "host-b"];
    let mut lease: Option<LeaseRow> = None;
    let mut advertised = true;
    let mut phases = [Phase::Idle, Phase::Idle];
    let mut now = 0i64; // the database's clock (and real time)
    let mut out = Outcome::default();
    for step in &r.steps {
        now += step.gap;
        let h = step.host;
        let held = |lease: &Option<LeaseRow>, token: i64| {
            lease
                .as_ref()
                .is_some_and(|l| l.holder == holders[h] && l.token == token)
        };
        phases[h] = match phases[h].clone() {
            Phase::Idle => match transition(lease.as_ref(), holders[h], now, ttl_ms) {
                None => Phase::Idle,
                Some(row) => {
                    if lease.as_ref().is_some_and(|l| l.token != row.token) {
                        out.takeovers += 1;
                    }
                    let token = row.token;
                    lease = Some(row);
                    Phase::Acquired {
                        token,
                        read_advertised: advertised,
                    }
                }
            },
            Phase::Acquired {
                token,
                read_advertised,
            } => {
                if !read_advertised {
                    Phase::Idle // nothing to withdraw this cycle
                } else {
                    // The intent's transaction: BEGIN (monotonic time taken before it), wait
                    // for the lock, check the fence and renew, commit (maybe paused first).
                    let asked = now;
                    now += step.lock_wait;
                    if held(&lease, token) {
                        if let Some(l) = lease.as_mut() {
                            l.expires_at_ms = now + ttl_ms;
                        }
                        now += step.commit_delay;
                        let since = Duration::from_millis(u64::try_from(now - asked).unwrap());
                        match patch_budget(ttl, since, r.request_timeout) {
                            Ok(budget) => Phase::Renewed {
                                token,
                                deadline: now + ms(budget),
                            },
                            Err(_) => Phase::Idle,
                        }
                    } else {
                        out.fenced += 1;
                        Phase::Idle
                    }
                }
            }
            Phase::Renewed { token, deadline } => {
                // The PATCH reaches Cloudflare now, unless its budget ran out first and the
                // request was dropped.
                if now <= deadline {
                    prop_assert!(
                        held(&lease, token)
                            && lease.as_ref().is_some_and(|l| now < l.expires_at_ms),
                        "a stale holder PATCHed: {} (token {token}) at {now}, lease {lease:?}",
                        holders[h]
                    );
                    prop_assert!(
                        advertised,
                        "a second PATCH for one incident, by {} at {now}: {:?}",
                        holders[h],
                        out.patches
                    );
                    advertised = false;
                    out.patches.push((h, now));
                }
                Phase::Idle
            }
        };
    }
    Ok(out)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(5_000))]

    #[test]
    fn two_instances_never_both_patch_and_a_stale_holder_never_patches(r in run()) {
        simulate(&r)?;
    }
}

/// The simulator is not vacuous: A stalls in its cycle past the lease, B takes over and
/// withdraws, A resumes and is fenced: one PATCH.
#[test]
fn a_stalled_holder_is_fenced_after_a_takeover() {
    let step = |host, gap| Step {
        host,
        gap,
        lock_wait: 0,
        commit_delay: 0,
    };
    let r = Run {
        interval: Duration::from_secs(60),
        request_timeout: Duration::from_secs(30),
        steps: vec![
            step(0, 0),       // A takes the lease, reads "advertised"
            step(1, 1_000),   // B: passive
            step(1, 300_000), // B: A's lease expired, B takes it
            step(1, 1_000),   // B renews in its intent
            step(1, 1_000),   // B's PATCH
            step(0, 1_000),   // A resumes: fenced
        ],
    };
    let out = simulate(&r).unwrap();
    assert_eq!(out.patches, [(1, 303_000)]);
    assert_eq!((out.fenced, out.takeovers), (1, 1));
}
