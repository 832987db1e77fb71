//! The withdrawal decision, as pure functions of a prefix's state and what one cycle observed
//! (SPEC §7.2–§7.5). No I/O, no clock, no async: the engine (`cycle.rs`) gathers the
//! observations, calls these functions, persists the state and the actions in one transaction
//! and performs the actions. The property tests in `tests/it/properties.rs` drive them through
//! generated timelines.
//!
//! One prefix goes through three steps a cycle:
//! 1. [`decide`]: Cloudflare's reading (the incident rule, reconciling an intent left by a
//!    crash, the check that our withdrawal was carried out), the evidence judged this cycle
//!    (the calm clock), the STARTs, then every gate. Its [`Next`] is a hold with the reason,
//!    or [`Next::Confirm`] with the range the confirmation query must find calm.
//! 2. [`confirm`]: immediately before the PATCH, the confirmation's result, the STARTs and the
//!    judged time re-read, and `pre_withdraw_command`'s result. `Ok` means PATCH now; the state
//!    it returns carries the intent, which the engine commits before sending.
//! 3. [`after_patch`]: the PATCH's outcome.
//!
//! A scheduled request (`pending_withdrawals`, SPEC §5) that is due goes through
//! [`request_gates`] after [`decide`] (every gate but the calm period and `auto_withdraw`,
//! plus "not under attack" and "made during this advertisement"), then [`confirm_request`]
//! immediately before the PATCH, then the same [`after_patch`].
//!
//! Invariants (the property tests name them):
//! 1. **Calm evidence only.** No PATCH unless every minute of `[t − analytics_delay −
//!    calm_period, t − analytics_delay]` was judged calm for the prefix: no attack, unknown,
//!    lost or unjudged time, the confirmation included.
//! 2. **STARTs hold.** No PATCH within `calm_period` after a counting START for the prefix was
//!    received (whatever the analytics say), nor when one arrived since the stretch began.
//! 3. **Holds and stale evidence.** No PATCH while pinned, paused, locked, `auto_withdraw =
//!    false`, with a CIDR that does not match, or before `min_advertised`; and never on
//!    evidence older than the telemetry-current bound (`judged_until ≥ now − analytics_delay −
//!    interval`), so a hold that ends never releases a withdrawal on old calm.
//! 4. **One withdrawal per incident.** At most one successful automatic PATCH per incident
//!    (advertisement); an intent left by a crash is reconciled with Cloudflare's reading, never
//!    replayed; a withdrawal Cloudflare did not carry out is alerted, not PATCHed again.
//! 5. **Liveness.** With clean telemetry, no holds and an honest Cloudflare, the PATCH comes by
//!    `max(last attack window end, last counting START, advertised_modified_at +
//!    advertise_settle) + calm_period + analytics_delay + 2 × interval` (plus the window width
//!    when windows are wider than the interval), and not before `min_advertised`.
//! 6. **Reload.** The state is exactly what is persisted (times in whole seconds): a state
//!    reloaded after a restart leads to the same decisions.
//! 7. **Requests.** A request is never performed while the newest judged window for the
//!    prefix is not calm (attack, unknown, lost), when a counting START was received since
//!    that window began (an END does not unblock), or when it was made before the current
//!    advertisement (or has no `created_at`); it shares invariants 3 and 4 with the automatic
//!    path.

use chrono::{DateTime, Duration, Utc};
use ipnet::IpNet;
use mt_store::{PrefixState, StartRow};

use crate::judge::Verdict;

/// The settings the decision reads (from `[autowithdraw]` and the prefix's table).
#[derive(Debug, Clone, PartialEq)]
pub struct Rules {
    /// Calm needed before a withdrawal.
    pub calm_period: Duration,
    /// How long Cloudflare's analytics take to be complete.
    pub analytics_delay: Duration,
    /// Cycle interval.
    pub interval: Duration,
    /// The configured analytics window (the widest a judged window can be).
    pub window: Duration,
    /// Time after an advertisement that never counts as calm.
    pub advertise_settle: Duration,
    /// Shortest advertisement before a withdrawal.
    pub min_advertised: Duration,
    /// When an unexecuted withdrawal is alerted.
    pub withdraw_verify_after: Duration,
    /// The prefix's `auto_withdraw`.
    pub auto_withdraw: bool,
    /// Decide and tell, never PATCH.
    pub dry_run: bool,
}

/// How far an advertised reading may be dated after our PATCH and still be the same
/// advertisement (clocks and Cloudflare's own bookkeeping).
pub const SAME_CHANGE_SLACK: Duration = Duration::seconds(30);

/// Cloudflare's record of the prefix this cycle.
#[derive(Debug, Clone, PartialEq)]
pub enum Reading {
    /// Not read (API error): nothing is decided for the prefix.
    Unavailable,
    /// Read.
    Seen {
        /// `on_demand.advertised`.
        advertised: bool,
        /// `advertised_modified_at`, in whole seconds.
        modified_at: Option<DateTime<Utc>>,
        /// `on_demand_locked`.
        locked: bool,
        /// The BGP prefix's CIDR equals the configured one (read this cycle).
        cidr_matches: bool,
    },
}

/// A span of analytics time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// Start (inclusive).
    pub start: DateTime<Utc>,
    /// End (exclusive).
    pub end: DateTime<Utc>,
}

/// What one cycle learnt of a span of time for the prefix.
#[derive(Debug, Clone, PartialEq)]
pub enum Evidence {
    /// A window judged (attack, calm or unknown for this prefix).
    Judged(Span, Verdict),
    /// Time declared lost (older than the dataset keeps): it breaks the stretch.
    Lost(Span),
}

/// Holds that come from outside the prefix's state.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Holds {
    /// Pinned, with who and why.
    pub pinned: Option<String>,
    /// Global pause, with who and why.
    pub paused: Option<String>,
    /// The account check found the configured ids wrong, or could not confirm them since the
    /// config changed: why.
    pub account_mismatch: Option<String>,
}

/// What one cycle observed for one prefix.
#[derive(Debug, Clone, PartialEq)]
pub struct Observations<'a> {
    /// Cloudflare's record.
    pub reading: &'a Reading,
    /// No state was saved for the prefix before.
    pub first_sight: bool,
    /// Evidence judged this cycle, oldest first.
    pub evidence: &'a [Evidence],
    /// The end of the judged time after this cycle (all prefixes).
    pub judged_until: DateTime<Utc>,
    /// When the newest counting START for the prefix (SPEC §7.3, see [`start_counts`]) was
    /// received, if any.
    pub last_start: Option<DateTime<Utc>>,
    /// An ADVERTISE webhook for the prefix was received after our last withdrawal.
    pub advertised_after_withdrawal: bool,
    /// Pins, pause, account check.
    pub holds: &'a Holds,
    /// The judgement stopped this cycle on a window nobody could judge (it is retried).
    pub telemetry_unknown: bool,
}

/// What the engine must record besides the state.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Cloudflare changed the advertisement and we did not: log it as an ADVERTISE / WITHDRAW
    /// event (unless the receiver already did) — a new incident began.
    OutsideChange {
        /// The new state.
        advertised: bool,
        /// When Cloudflare says it changed.
        at: Option<DateTime<Utc>>,
    },
    /// A withdrawal whose intent was left by a crash went through: record it as ours.
    Reconciled,
    /// Cloudflare still reports the prefix advertised `withdraw_verify_after` after our
    /// withdrawal: alert once, leave it to the operator.
    NotCarriedOut {
        /// When we withdrew it.
        withdrawn_at: DateTime<Utc>,
    },
    /// Dry run: say once per incident that it would be withdrawn now.
    WouldWithdraw,
}

/// What happens next for the prefix this cycle.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    /// Not advertised: nothing to do.
    Idle,
    /// Held back, with why (for the log, the reminder and the report).
    Hold(String),
    /// Every gate holds: run the confirmation query over `range`, then call [`confirm`].
    Confirm(Span),
}

/// Resets what belongs to one incident (a new advertisement or withdrawal).
pub fn new_incident(s: &mut PrefixState) {
    s.calm_since = None;
    s.last_attack_end = None;
    s.peak_pps = 0.0;
    s.peak_mbps = 0.0;
    s.systems.clear();
    s.intent_at = None;
    s.attempts = 0;
    s.next_attempt_at = None;
    s.last_error = None;
    s.failure_history_id = None;
    s.dry_run_notified = false;
    s.reminded_at = None;
}

/// Whether our withdrawal of this incident is still waiting for Cloudflare to carry it out
/// (advertised, and no advertisement newer than the withdrawal).
pub fn awaiting_withdrawal(s: &PrefixState) -> bool {
    s.advertised
        && s.withdrawn_at.is_some_and(|w| {
            s.advertised_modified_at
                .is_none_or(|m| m <= w + SAME_CHANGE_SLACK)
        })
}

/// Step 1: Cloudflare's reading, the evidence, the STARTs, then every gate.
pub fn decide(
    state: &PrefixState,
    obs: &Observations<'_>,
    now: DateTime<Utc>,
    rules: &Rules,
) -> (PrefixState, Vec<Action>, Next) {
    let mut s = state.clone();
    let mut actions = Vec::new();
    let reconciled = observe(&mut s, obs, now, rules, &mut actions);
    for e in obs.evidence {
        apply_evidence(&mut s, e, rules);
    }
    apply_start(&mut s, obs.last_start);
    if obs.telemetry_unknown && s.advertised {
        s.unknown_since.get_or_insert(obs.judged_until);
    }
    if reconciled {
        return (s, actions, Next::Idle);
    }
    let next = gates(&s, obs, now, rules);
    let next = match next {
        Next::Confirm(_) if rules.dry_run => {
            if !s.dry_run_notified {
                s.dry_run_notified = true;
                actions.push(Action::WouldWithdraw);
            }
            Next::Hold("dry run: would withdraw now".into())
        }
        other => other,
    };
    (s, actions, next)
}

/// Applies Cloudflare's reading. Returns true when an intent left by a crash turned out to
/// have gone through (recorded as our withdrawal: nothing else is decided this cycle).
fn observe(
    s: &mut PrefixState,
    obs: &Observations<'_>,
    now: DateTime<Utc>,
    rules: &Rules,
    actions: &mut Vec<Action>,
) -> bool {
    let Reading::Seen {
        advertised,
        modified_at,
        locked,
        ..
    } = obs.reading
    else {
        return false;
    };
    let (advertised, modified_at, locked) = (*advertised, *modified_at, *locked);
    if let Some(intent) = s.intent_at {
        if !advertised && modified_at.is_some_and(|m| m >= intent - Duration::minutes(1)) {
            actions.push(Action::Reconciled);
            withdrawn(s, modified_at, intent);
            return true;
        }
        s.intent_at = None;
    }
    if let Some(withdrawn_at) = s.withdrawn_at
        && advertised
        && modified_at.is_none_or(|m| m <= withdrawn_at + SAME_CHANGE_SLACK)
        && !obs.advertised_after_withdrawal
    {
        // Our withdrawal, not carried out (yet): the same incident, never a second PATCH.
        if !s.verify_alerted && now - withdrawn_at >= rules.withdraw_verify_after {
            s.verify_alerted = true;
            actions.push(Action::NotCarriedOut { withdrawn_at });
        }
        s.advertised = true;
        s.locked = locked;
        return false;
    }
    if let Some(withdrawn_at) = s.withdrawn_at
        && !advertised
        && s.advertised
        && modified_at.is_some_and(|m| m >= withdrawn_at - Duration::minutes(1))
    {
        // Our withdrawal, carried out late: still ours, never an outside WITHDRAW.
        s.advertised = false;
        s.advertised_modified_at = modified_at;
        s.locked = locked;
        return false;
    }
    let changed = modified_at != s.advertised_modified_at
        || (advertised && obs.advertised_after_withdrawal && s.withdrawn_at.is_some());
    if !obs.first_sight && changed {
        actions.push(Action::OutsideChange {
            advertised,
            at: modified_at,
        });
    }
    if obs.first_sight || changed {
        new_incident(s);
        if advertised {
            s.withdrawn_at = None;
            s.verify_alerted = false;
        }
    }
    s.advertised = advertised;
    s.advertised_modified_at = modified_at;
    s.locked = locked;
    false
}

/// The state after a withdrawal of ours went through (at `at`; Cloudflare's time when known).
fn withdrawn(s: &mut PrefixState, modified_at: Option<DateTime<Utc>>, at: DateTime<Utc>) {
    new_incident(s);
    s.advertised = false;
    s.advertised_modified_at = modified_at.or(Some(at));
    s.withdrawn_at = Some(at);
    s.verify_alerted = false;
}

/// The calm clock over one piece of evidence.
fn apply_evidence(s: &mut PrefixState, e: &Evidence, rules: &Rules) {
    let span = match e {
        Evidence::Judged(span, _) | Evidence::Lost(span) => *span,
    };
    // Time nobody judged for this prefix (it was out of the config, or skipped) breaks the
    // stretch.
    if s.judged_through != Some(span.start) {
        s.calm_since = None;
    }
    match e {
        Evidence::Lost(_) => s.calm_since = None,
        Evidence::Judged(_, Verdict::Attack { pps, mbps, systems }) => {
            s.calm_since = None;
            s.last_attack_end = Some(span.end);
            s.peak_pps = s.peak_pps.max(*pps);
            s.peak_mbps = s.peak_mbps.max(*mbps);
            for system in systems {
                if !s.systems.split(',').any(|x| x == system) {
                    if !s.systems.is_empty() {
                        s.systems.push(',');
                    }
                    s.systems.push_str(system);
                }
            }
            s.unknown_since = None;
        }
        Evidence::Judged(_, Verdict::Calm { .. }) => {
            if s.calm_since.is_none() {
                // Time before the advertisement settled never counts as calm.
                let settled = s.advertised_modified_at.map(|m| m + rules.advertise_settle);
                let from = settled.map_or(span.start, |t| t.max(span.start));
                if from < span.end {
                    s.calm_since = Some(from);
                }
            }
            s.unknown_since = None;
        }
        Evidence::Judged(_, Verdict::Unknown(_)) => {
            s.calm_since = None;
            s.unknown_since.get_or_insert(span.start);
        }
    }
    s.judged_through = Some(span.end);
}

/// A counting START received at `t`: no time before `t` counts as calm.
fn apply_start(s: &mut PrefixState, last_start: Option<DateTime<Utc>>) {
    if let (Some(t), Some(c)) = (last_start, s.calm_since)
        && c < t
    {
        s.calm_since = Some(t);
    }
}

/// The gates automatic withdrawals and requests share (SPEC §7.4), in order; `auto` adds
/// `auto_withdraw`. `Err` is the hold ([`Next::Idle`] when not advertised).
fn shared_gates(
    s: &PrefixState,
    reading: &Reading,
    holds: &Holds,
    judged_until: DateTime<Utc>,
    now: DateTime<Utc>,
    rules: &Rules,
    auto: bool,
) -> Result<(), Next> {
    let Reading::Seen { cidr_matches, .. } = reading else {
        return Err(Next::Hold(
            "advertisement state unknown (Cloudflare API error)".into(),
        ));
    };
    if !s.advertised {
        return Err(Next::Idle);
    }
    if awaiting_withdrawal(s) {
        return Err(Next::Hold(format!(
            "withdrawn at {} UTC; Cloudflare still reports it advertised (no second withdrawal in one incident)",
            mt_common::timefmt::to_db(s.withdrawn_at.unwrap_or(now))
        )));
    }
    if let Some(why) = &holds.account_mismatch {
        return Err(Next::Hold(format!("account check: {why}")));
    }
    if !cidr_matches {
        return Err(Next::Hold(
            "the BGP prefix's CIDR on Cloudflare differs from the config".into(),
        ));
    }
    if s.locked {
        return Err(Next::Hold("locked on Cloudflare".into()));
    }
    if auto && !rules.auto_withdraw {
        return Err(Next::Hold("auto_withdraw = false".into()));
    }
    if let Some(pin) = &holds.pinned {
        return Err(Next::Hold(format!("pinned by {pin}")));
    }
    if let Some(pause) = &holds.paused {
        return Err(Next::Hold(format!("paused by {pause}")));
    }
    if let Some(why) = stale(judged_until, now, rules) {
        return Err(Next::Hold(why));
    }
    Ok(())
}

/// The gates that come after the calm period (both paths): `min_advertised`, the backoff
/// after a failed attempt.
fn late_gates(s: &PrefixState, now: DateTime<Utc>, rules: &Rules) -> Result<(), String> {
    match s.advertised_modified_at {
        Some(m) if now - m >= rules.min_advertised => {}
        _ => return Err("advertised for less than min_advertised".into()),
    }
    if let Some(next) = s.next_attempt_at
        && next > now
    {
        return Err(format!(
            "next attempt at {} UTC",
            mt_common::timefmt::to_db(next)
        ));
    }
    Ok(())
}

/// Every gate of SPEC §7.4 that can be checked before the confirmation.
fn gates(s: &PrefixState, obs: &Observations<'_>, now: DateTime<Utc>, rules: &Rules) -> Next {
    if let Err(next) = shared_gates(
        s,
        obs.reading,
        obs.holds,
        obs.judged_until,
        now,
        rules,
        true,
    ) {
        return next;
    }
    let Some(calm_since) = s.calm_since else {
        return Next::Hold("not calm".into());
    };
    let calm_for = obs.judged_until - calm_since;
    if calm_for < rules.calm_period {
        return Next::Hold(format!(
            "calm for {}s of {}s",
            calm_for.num_seconds().max(0),
            rules.calm_period.num_seconds()
        ));
    }
    if let Err(why) = late_gates(s, now, rules) {
        return Next::Hold(why);
    }
    Next::Confirm(confirmation_range(calm_since, now, rules))
}

/// A scheduled withdrawal request (`pending_withdrawals`, SPEC §5) that is due.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// Its `created_at` (`None` when empty or unreadable: a legacy row).
    pub created_at: Option<DateTime<Utc>>,
}

/// What a request is judged against this cycle (as [`decide`] saw it).
#[derive(Debug, Clone, PartialEq)]
pub struct RequestObservations<'a> {
    /// Cloudflare's record.
    pub reading: &'a Reading,
    /// Pins, pause, account check.
    pub holds: &'a Holds,
    /// The end of the judged time.
    pub judged_until: DateTime<Utc>,
    /// The newest counting START for the prefix.
    pub last_start: Option<DateTime<Utc>>,
}

/// What becomes of a due request this cycle.
#[derive(Debug, Clone, PartialEq)]
pub enum RequestNext {
    /// Not now: it stays pending, with why.
    Refuse(String),
    /// Made before the current advertisement (or without `created_at`): never performed; it
    /// is marked failed, with why, and the operator is told once.
    Stale(String),
    /// Every gate holds: run `pre_withdraw_command`, re-read, then [`confirm_request`].
    Perform,
}

/// The gates of a due request (SPEC §5): every gate of §7.4 but the calm period, its
/// confirmation and `auto_withdraw`; made during the current advertisement; not under attack.
pub fn request_gates(
    s: &PrefixState,
    request: &Request,
    obs: &RequestObservations<'_>,
    now: DateTime<Utc>,
    rules: &Rules,
) -> RequestNext {
    if let Reading::Seen { .. } = obs.reading
        && let Some(why) = stale_request(s, request)
    {
        return RequestNext::Stale(why);
    }
    match shared_gates(
        s,
        obs.reading,
        obs.holds,
        obs.judged_until,
        now,
        rules,
        false,
    ) {
        Ok(()) => {}
        Err(Next::Hold(why)) => return RequestNext::Refuse(why),
        Err(_) => return RequestNext::Refuse("not advertised: nothing to withdraw".into()),
    }
    if let Some(why) = request_attack(s, obs.last_start, rules) {
        return RequestNext::Refuse(why);
    }
    if let Err(why) = late_gates(s, now, rules) {
        return RequestNext::Refuse(why);
    }
    if rules.dry_run {
        return RequestNext::Refuse("dry run: would withdraw now".into());
    }
    RequestNext::Perform
}

/// A request belongs to the advertisement it was made during (SPEC §5).
fn stale_request(s: &PrefixState, request: &Request) -> Option<String> {
    let Some(created) = request.created_at else {
        return Some(
            "created_at is empty (a legacy row): it cannot be matched to an advertisement, so it is never performed; delete it and insert a new one".into(),
        );
    };
    let changed = s.advertised_modified_at?;
    (created < changed).then(|| {
        format!(
            "made at {} UTC, before the prefix was {} at {} UTC: it belonged to an earlier advertisement and is never performed; delete it and insert a new one",
            mt_common::timefmt::to_db(created),
            if s.advertised { "advertised" } else { "withdrawn" },
            mt_common::timefmt::to_db(changed)
        )
    })
}

/// "Under attack" for a request: the newest judged window for the prefix is not calm, or a
/// counting START was received since it began. The window's start is taken as `judged_through
/// − window` (windows are never wider), so a START is never missed.
fn request_attack(
    s: &PrefixState,
    last_start: Option<DateTime<Utc>>,
    rules: &Rules,
) -> Option<String> {
    let Some(through) = s.judged_through else {
        return Some("no window judged for it yet".into());
    };
    if s.unknown_since.is_some() {
        return Some("telemetry unknown: cannot tell whether it is under attack".into());
    }
    if s.last_attack_end.is_some_and(|e| e >= through) {
        return Some("under attack in the current judgement".into());
    }
    if s.calm_since.is_none() {
        return Some(
            "the newest judged window is not calm evidence (lost time, or the advertisement has not settled)"
                .into(),
        );
    }
    if let Some(t) = last_start
        && t >= through - rules.window
    {
        return Some(format!(
            "a START webhook was received at {} UTC, since the newest judged window began",
            mt_common::timefmt::to_db(t)
        ));
    }
    None
}

/// What is re-read immediately before a request's PATCH.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestRecheck {
    /// The newest counting START, re-read now.
    pub last_start: Option<DateTime<Utc>>,
    /// The judged time, re-read now.
    pub judged_until: DateTime<Utc>,
    /// `pre_withdraw_command`'s refusal, if it refused.
    pub pre_withdraw: Option<String>,
}

/// The last checks before a request's PATCH: `Ok` to PATCH now (the state then carries the
/// intent: commit it before sending), or `Err` with why not.
pub fn confirm_request(
    state: &PrefixState,
    recheck: &RequestRecheck,
    now: DateTime<Utc>,
    rules: &Rules,
) -> (PrefixState, Result<(), String>) {
    let mut s = state.clone();
    let verdict = match request_attack(&s, recheck.last_start, rules)
        .or_else(|| stale(recheck.judged_until, now, rules))
        .or_else(|| recheck.pre_withdraw.clone())
    {
        Some(why) => Err(why),
        None => Ok(()),
    };
    if verdict.is_ok() {
        s.intent_at = Some(now);
    }
    (s, verdict)
}

/// Telemetry current (SPEC §7.4): no unjudged backlog.
fn stale(judged_until: DateTime<Utc>, now: DateTime<Utc>, rules: &Rules) -> Option<String> {
    let bound = now - rules.analytics_delay - rules.interval;
    (judged_until < bound).then(|| {
        format!(
            "telemetry behind: judged until {} UTC, needs {} UTC (catch-up or analytics failing)",
            mt_common::timefmt::to_db(judged_until),
            mt_common::timefmt::to_db(bound)
        )
    })
}

/// What the confirmation query must find calm: `[max(calm_since, now − analytics_delay −
/// calm_period − interval), now − analytics_delay]`.
pub fn confirmation_range(calm_since: DateTime<Utc>, now: DateTime<Utc>, rules: &Rules) -> Span {
    let end = now - rules.analytics_delay;
    Span {
        start: calm_since.max(end - rules.calm_period - rules.interval),
        end,
    }
}

/// The confirmation query's answer for the prefix.
#[derive(Debug, Clone, PartialEq)]
pub enum Confirmation {
    /// Every bucket of the range calm.
    Calm,
    /// A bucket judged attack (rows that arrived late): the stretch restarts after it.
    Attack {
        /// End of the last bucket judged attack.
        until: DateTime<Utc>,
    },
    /// Could not be judged.
    Unknown(String),
}

/// What is re-read immediately before the PATCH.
#[derive(Debug, Clone, PartialEq)]
pub struct Recheck<'a> {
    /// The confirmation query's answer.
    pub confirmation: &'a Confirmation,
    /// The newest counting START, re-read now.
    pub last_start: Option<DateTime<Utc>>,
    /// The judged time, re-read now.
    pub judged_until: DateTime<Utc>,
    /// `pre_withdraw_command`'s refusal, if it refused (not run on a dry run or an earlier
    /// refusal).
    pub pre_withdraw: Option<String>,
}

/// Step 2: the last checks before the PATCH. Returns the new state and `Ok` to PATCH now (the
/// state then carries the intent: commit it before sending) or `Err` with why not (a late
/// attack restarts the stretch).
pub fn confirm(
    state: &PrefixState,
    recheck: &Recheck<'_>,
    now: DateTime<Utc>,
    rules: &Rules,
) -> (PrefixState, Result<(), String>) {
    let mut s = state.clone();
    let verdict = last_checks(&mut s, recheck, now, rules);
    if verdict.is_ok() {
        s.intent_at = Some(now);
    }
    (s, verdict)
}

fn last_checks(
    s: &mut PrefixState,
    recheck: &Recheck<'_>,
    now: DateTime<Utc>,
    rules: &Rules,
) -> Result<(), String> {
    match recheck.confirmation {
        Confirmation::Calm => {}
        Confirmation::Attack { until } => {
            s.calm_since = None;
            s.last_attack_end = Some(*until);
            return Err(
                "the confirmation found attack traffic that arrived late; the calm stretch restarts"
                    .into(),
            );
        }
        Confirmation::Unknown(why) => {
            return Err(format!("confirmation query could not be judged: {why}"));
        }
    }
    if let (Some(t), Some(c)) = (recheck.last_start, s.calm_since)
        && t > c
    {
        apply_start(s, Some(t));
        return Err("a START webhook arrived since the calm stretch began".into());
    }
    if let Some(why) = stale(recheck.judged_until, now, rules) {
        return Err(why);
    }
    if let Some(why) = &recheck.pre_withdraw {
        return Err(why.clone());
    }
    Ok(())
}

/// The PATCH's outcome.
#[derive(Debug, Clone, PartialEq)]
pub enum PatchOutcome {
    /// 2xx.
    Done {
        /// Cloudflare's `advertised_modified_at` in the answer.
        modified_at: Option<DateTime<Utc>>,
    },
    /// Not done (or not known to be done).
    Failed {
        /// The error.
        error: String,
        /// The answer was lost (timeout, reset, 5xx): Cloudflare may have carried it out, so
        /// the intent stays for the next reading to reconcile.
        ambiguous: bool,
        /// Not before this time again.
        retry_at: DateTime<Utc>,
    },
}

/// What the engine must record after the PATCH.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// Success: event, history, message.
    Success,
    /// The incident's first failure: a `failed` history row and a message.
    FirstFailure,
    /// A later failure: the incident's `failed` row is updated.
    Failure,
}

/// Step 3: the state after the PATCH and what to record.
pub fn after_patch(
    state: &PrefixState,
    outcome: &PatchOutcome,
    now: DateTime<Utc>,
) -> (PrefixState, Recorded) {
    let mut s = state.clone();
    match outcome {
        PatchOutcome::Done { modified_at } => {
            withdrawn(&mut s, *modified_at, now);
            (s, Recorded::Success)
        }
        PatchOutcome::Failed {
            error,
            ambiguous,
            retry_at,
        } => {
            if !ambiguous {
                s.intent_at = None;
            }
            s.attempts += 1;
            s.next_attempt_at = Some(*retry_at);
            s.last_error = Some(error.clone());
            let first = s.failure_history_id.is_none();
            (
                s,
                if first {
                    Recorded::FirstFailure
                } else {
                    Recorded::Failure
                },
            )
        }
    }
}

/// The last successful account check, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountChecked<'a> {
    /// Digest of the `[[prefixes]]` section it checked.
    pub digest: &'a str,
    /// The process (lease holder) that ran it.
    pub holder: &'a str,
    /// When.
    pub at: Option<DateTime<Utc>>,
}

/// What the account check does this cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountStep {
    /// The stored result is this process's, for this section, and recent: use it.
    UseStored,
    /// List the account. If that fails, [`AccountStep::on_failure`] says what holds.
    List,
}

/// What holds when the account list fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountFallback {
    /// The stored result was for this very section: it still holds.
    Stored,
    /// The section changed since: no configured id is trusted, every prefix is held.
    HoldAll,
}

/// The account check's rule: at every start (another holder), after every change of the
/// `[[prefixes]]` section (another digest), and once `every` has passed.
pub fn account_step(
    stored: &AccountChecked<'_>,
    digest: &str,
    holder: &str,
    now: DateTime<Utc>,
    every: Duration,
) -> AccountStep {
    if stored.digest == digest
        && stored.holder == holder
        && stored.at.is_some_and(|t| now - t < every)
    {
        AccountStep::UseStored
    } else {
        AccountStep::List
    }
}

impl AccountStep {
    /// What holds when listing failed: the stored result only if it was for `digest`.
    pub fn on_failure(stored: &AccountChecked<'_>, digest: &str) -> AccountFallback {
        if stored.digest == digest {
            AccountFallback::Stored
        } else {
            AccountFallback::HoldAll
        }
    }
}

/// Whether a START counts for `prefix` (SPEC §7.3): L7 STARTs never count (they name a
/// hostname, not our prefixes); a START whose target address parses counts for every
/// configured prefix containing it (a /24 inside a /23 counts for both) and for none when it
/// lies outside them; one whose prefix names a CIDR counts for every prefix overlapping it;
/// one with no usable target counts for every prefix (when in doubt, hold).
pub fn start_counts(start: &StartRow, prefix: IpNet) -> bool {
    if start
        .alert_type
        .as_deref()
        .is_some_and(|t| t.to_ascii_lowercase().contains("l7"))
    {
        return false;
    }
    if let Some(ip) = start
        .target_ip
        .as_deref()
        .and_then(|t| t.trim().parse::<std::net::IpAddr>().ok())
    {
        return prefix.contains(&ip);
    }
    if let Some(net) = start
        .prefix
        .as_deref()
        .and_then(|p| p.trim().parse::<IpNet>().ok())
    {
        return prefix.contains(&net) || net.contains(&prefix);
    }
    true
}

/// The newest START of `starts` that counts for `prefix`.
pub fn last_counting_start(starts: &[StartRow], prefix: IpNet) -> Option<DateTime<Utc>> {
    starts
        .iter()
        .filter(|s| start_counts(s, prefix))
        .map(|s| s.at)
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start(alert: &str, target: Option<&str>, prefix: Option<&str>) -> StartRow {
        StartRow {
            at: chrono::DateTime::UNIX_EPOCH,
            alert_type: Some(alert.into()),
            target_ip: target.map(str::to_owned),
            prefix: prefix.map(str::to_owned),
        }
    }

    #[test]
    fn which_starts_count_for_which_prefix() {
        let p23: IpNet = "198.51.100.0/23".parse().unwrap();
        let p24: IpNet = "198.51.100.0/24".parse().unwrap();
        let inside = start(
            "dos_attack_l4",
            Some("198.51.100.7"),
            Some("198.51.100.0/24"),
        );
        assert!(
            start_counts(&inside, p23) && start_counts(&inside, p24),
            "both the /24 and the covering /23"
        );
        let l7 = start("advanced_ddos_attack_l7_alert", None, None);
        assert!(!start_counts(&l7, p23), "an L7 START names a hostname");
        let outside = start("dos_attack_l4", Some("192.0.2.1"), None);
        assert!(!start_counts(&outside, p23), "outside every prefix: none");
        let blind = start("fbm_volumetric_attack", None, None);
        assert!(
            start_counts(&blind, p23) && start_counts(&blind, p24),
            "no target: every prefix"
        );
        let named = start(
            "fbm_dosd_attack",
            Some("not an ip"),
            Some("198.51.101.0/24"),
        );
        assert!(start_counts(&named, p23) && !start_counts(&named, p24));
    }
}
