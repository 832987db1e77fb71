//! One autowithdraw cycle (SPEC §7): read the advertisement truth, judge the analytics windows
//! not judged yet, keep the calm clock, check every gate, withdraw with a recorded intent.
//!
//! Everything the cycle knows is persisted (`autowithdraw_prefixes`, `mt_state`), so a restart
//! continues where it stopped: the time missed during downtime is judged first, a calm stretch
//! is not reset, and a withdrawal decided just before a crash is reconciled with Cloudflare's
//! state instead of being replayed blindly.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Timelike, Utc};
use ipnet::IpNet;
use mt_cloudflare::Client;
use mt_cloudflare::graphql::{DatasetWatch, DroppedTrafficQuery};
use mt_cloudflare::rest::BgpPrefix;
use mt_common::SharedClock;
use mt_common::config::{Config, PrefixConfig};
use mt_common::timefmt::{from_db, to_db};
use mt_notify::templates::{
    OperatorAlert, TelemetryBlind, TelemetryRecovered, WithdrawKind, WithdrawalFailure,
    WithdrawalSuccess, WouldWithdraw,
};
use mt_notify::{Message, Notifier};
use mt_store::{
    ActionTaken, CalmUpdate, EventType, NewAttackEvent, NewWithdrawal, PrefixState, Store,
    TelemetryGap, WithdrawMethod, WithdrawStatus,
};

use crate::judge::{Thresholds, Verdict, Window, judge};

/// The lease that lets one instance act; another stays passive until it expires.
pub const LEASE_NAME: &str = "autowithdraw";

/// How often the account's BGP prefixes are compared with the config (and at start).
const ACCOUNT_CHECK_EVERY: chrono::Duration = chrono::Duration::hours(1);
/// When the account was last compared with the config.
pub const ACCOUNT_CHECKED_KEY: &str = "autowithdraw.account_checked_at";
/// Configured prefixes that do not match the account (comma-separated): never acted on.
pub const MISMATCH_KEY: &str = "autowithdraw.config_mismatch";
/// Advertised prefixes missing from the config, already alerted (comma-separated).
pub const UNMANAGED_KEY: &str = "autowithdraw.unmanaged";
/// Set while Cloudflare refuses the API token (alerted once per episode).
pub const AUTH_FAILED_KEY: &str = "autowithdraw.auth_failed";

/// Where the end of the judged time is kept.
pub const JUDGED_UNTIL_KEY: &str = "autowithdraw.judged_until";
/// Windows judged per cycle at most: after downtime, catch-up proceeds at this many windows a
/// cycle (an hour of five-minute windows per minute), about 12 of the ~300 GraphQL queries
/// Cloudflare allows every five minutes.
pub const MAX_WINDOWS_PER_CYCLE: usize = 12;
/// Cloudflare refuses a change of advertisement this soon after the last one.
const CHANGE_HOLD: chrono::Duration = chrono::Duration::minutes(15);
/// Retry delays after a failed withdrawal (the last one repeats).
const BACKOFF_SECS: [i64; 5] = [60, 120, 300, 600, 1800];
/// Row limit of the calm-tracking query (lowered to the dataset's `maxPageSize` when smaller).
const QUERY_LIMIT: u32 = 10_000;
/// Analytics bucket width.
const BUCKET: Duration = Duration::from_secs(60);
/// Longest `pre_withdraw_command` run.
const PRE_WITHDRAW_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a cycle failed as a whole (it is retried next interval; nothing was withdrawn).
#[derive(Debug, thiserror::Error)]
pub enum CycleError {
    /// The database failed.
    #[error(transparent)]
    Store(#[from] mt_store::Error),
}

/// What a cycle did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct CycleReport {
    /// Another instance holds the lease: this one did nothing.
    pub passive: bool,
    /// Windows judged.
    pub windows: usize,
    /// Why judging stopped early, if it did.
    pub unknown: Option<String>,
    /// Prefixes withdrawn.
    pub withdrawn: Vec<String>,
    /// Prefixes that would have been withdrawn (dry run).
    pub would_withdraw: Vec<String>,
    /// Advertised prefixes held back, with why.
    pub held: Vec<(String, String)>,
    /// Withdrawals that failed, with the error.
    pub failed: Vec<(String, String)>,
    /// Time declared lost this cycle (older than the dataset's `notOlderThan`): never judged,
    /// it breaks every calm stretch.
    pub lost: Vec<TelemetryGap>,
}

/// The cycle's dependencies.
#[derive(Debug, Clone)]
pub struct Engine {
    /// Validated configuration.
    pub config: Arc<Config>,
    /// The database.
    pub store: Store,
    /// Cloudflare.
    pub client: Client,
    /// Source of "now".
    pub clock: SharedClock,
    /// Telegram messages.
    pub notifier: Notifier,
    /// This instance's lease holder id.
    pub holder: String,
    /// The calm-tracking dataset's settings (read at start and hourly).
    pub datasets: DatasetWatch,
}

fn span(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// Resets what belongs to one incident (a new advertisement or withdrawal).
fn new_incident(s: &mut PrefixState) {
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

impl Engine {
    /// A unique lease holder id for this process.
    pub fn new_holder() -> String {
        format!(
            "pid{}-{:x}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default()
        )
    }

    /// One cycle. Only the lease holder acts; the lease lasts three intervals, so a second
    /// instance takes over within three cycles of the first one stopping.
    pub async fn cycle(&self) -> Result<CycleReport, CycleError> {
        let now = self.clock.now();
        let mut report = CycleReport::default();
        let ttl = self.config.autowithdraw.interval.saturating_mul(3);
        if !self
            .store
            .acquire_lease(LEASE_NAME, &self.holder, ttl, now)
            .await?
        {
            report.passive = true;
            return Ok(report);
        }
        let mut states: BTreeMap<IpNet, (PrefixState, bool)> = BTreeMap::new();

        // 1. Advertisement truth, and reconciliation of an intent left by a crash.
        for p in &self.config.prefixes {
            let cidr = p.cidr.to_string();
            let saved = self.store.prefix_state(&cidr).await?;
            let first_sight = saved.is_none();
            let mut s = saved.unwrap_or_else(|| PrefixState {
                prefix: cidr.clone(),
                ..PrefixState::default()
            });
            let truth = match self
                .client
                .get_bgp_prefix(&p.prefix_id, &p.bgp_prefix_id)
                .await
            {
                Ok(bgp) => {
                    self.observe(p, &mut s, &bgp, first_sight, now).await?;
                    true
                }
                Err(e) => {
                    if e.is_auth() {
                        tracing::error!(prefix = %cidr, error = %e, "Cloudflare refused the API token");
                        self.alert_auth(&e, now).await?;
                    } else {
                        tracing::warn!(prefix = %cidr, error = %e, "cannot read the advertisement; not acting on this prefix");
                    }
                    false
                }
            };
            states.insert(p.cidr, (s, truth));
        }

        // 2. Judge the time not judged yet, oldest first.
        let a = &self.config.autowithdraw;
        let horizon = now - span(a.analytics_delay);
        let window = span(a.window);
        let mut judged_until = match self
            .store
            .state(JUDGED_UNTIL_KEY)
            .await?
            .as_deref()
            .and_then(from_db)
        {
            Some(t) => t,
            None => horizon - window,
        };
        let prefixes: Vec<IpNet> = self.config.prefixes.iter().map(|p| p.cidr).collect();
        let thresholds = Thresholds {
            attack_min_pps: a.attack_min_pps,
            attack_min_mbps: a.attack_min_mbps,
        };
        // The dataset's settings bound every query; a dataset that cannot answer leaves
        // everything unknown (never calm).
        self.refresh_settings(now).await?;
        let limits = self.datasets.limits(a.window, QUERY_LIMIT);
        let window = span(limits.max_window).min(window);
        let unusable = self.datasets.problems();
        if !unusable.is_empty() {
            report.unknown = Some(format!(
                "the {} dataset cannot be queried: {}",
                self.datasets.dataset(),
                unusable
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            ));
        }
        // Time older than `notOlderThan` (less one interval for the query's trip) can no
        // longer be judged: declared lost, it breaks every calm stretch, and judging resumes
        // after it. The gap, `judged_until` and the broken stretches are saved together.
        if let Some(oldest) = limits.oldest_queryable(now, a.interval)
            && oldest + window > horizon
            && report.unknown.is_none()
        {
            // Not even one window ending at the horizon can be queried: say so (unknown, so
            // the blind alert comes), rather than declaring everything lost forever in silence.
            report.unknown = Some(format!(
                "the {} dataset's notOlderThan ({}s) is too short to judge any window (analytics_delay + interval + window)",
                self.datasets.dataset(),
                limits.not_older_than.unwrap_or_default().as_secs()
            ));
        }
        if let Some(oldest) = limits.oldest_queryable(now, a.interval)
            && judged_until < oldest.min(horizon)
        {
            let gap = TelemetryGap {
                start: judged_until,
                end: oldest.min(horizon),
                reason: format!(
                    "older than the {} dataset's notOlderThan ({}s)",
                    self.datasets.dataset(),
                    limits.not_older_than.unwrap_or_default().as_secs()
                ),
            };
            tracing::warn!(start = %gap.start, end = %gap.end, "analytics too old to judge; declared lost, calm stretches restart after it");
            let mut tx = self.store.begin().await?;
            for (s, _) in states.values_mut() {
                s.calm_since = None;
                tx.save_prefix_state(s, now).await?;
            }
            tx.insert_telemetry_gap(&gap, now).await?;
            tx.set_state(JUDGED_UNTIL_KEY, &to_db(gap.end), now).await?;
            tx.commit().await?;
            judged_until = gap.end;
            report.lost.push(gap);
        }
        while judged_until < horizon
            && report.windows < MAX_WINDOWS_PER_CYCLE
            && !prefixes.is_empty()
            && report.unknown.is_none()
        {
            let start = judged_until;
            let end = (start + window).min(horizon);
            let data_until = self.clock.now();
            let outcome = self
                .client
                .dropped_traffic(&DroppedTrafficQuery {
                    start,
                    end,
                    data_until,
                    probe_start: limits.probe_start(start, data_until),
                    mitigation_systems: &a.mitigation_systems,
                    prefixes: &prefixes,
                    limit: limits.limit,
                })
                .await;
            let verdicts = judge(
                &outcome,
                Window { start, end },
                &prefixes,
                thresholds,
                self.clock.now(),
                BUCKET,
            );
            report.windows += 1;
            if let Some(Verdict::Unknown(reason)) = verdicts.values().next()
                && verdicts.values().all(|v| matches!(v, Verdict::Unknown(_)))
            {
                // Nothing could be judged: this window is retried next cycle.
                report.unknown = Some(reason.to_string());
                break;
            }
            for (prefix, verdict) in verdicts {
                let Some((s, _)) = states.get_mut(&prefix) else {
                    continue;
                };
                let settled = s
                    .advertised_modified_at
                    .map(|m| m + span(a.advertise_settle));
                match verdict {
                    Verdict::Attack { pps, mbps, systems } => {
                        s.calm_since = None;
                        s.last_attack_end = Some(end);
                        s.peak_pps = s.peak_pps.max(pps);
                        s.peak_mbps = s.peak_mbps.max(mbps);
                        for system in systems {
                            if !s.systems.split(',').any(|x| x == system) {
                                if !s.systems.is_empty() {
                                    s.systems.push(',');
                                }
                                s.systems.push_str(&system);
                            }
                        }
                        s.unknown_since = None;
                    }
                    Verdict::Calm { .. } => {
                        if s.calm_since.is_none() {
                            // Time before the advertisement settled never counts as calm.
                            let from = settled.map_or(start, |t| t.max(start));
                            if from < end {
                                s.calm_since = Some(from);
                            }
                        }
                        s.unknown_since = None;
                    }
                    Verdict::Unknown(reason) => {
                        // This prefix's share of the window is not judged: its stretch breaks.
                        tracing::warn!(prefix = %prefix, %reason, "window not judged for this prefix");
                        s.calm_since = None;
                        s.unknown_since.get_or_insert(start);
                    }
                }
            }
            judged_until = end;
        }
        if report.unknown.is_some() {
            for (s, _) in states.values_mut().filter(|(s, _)| s.advertised) {
                s.unknown_since.get_or_insert(judged_until);
            }
        }
        let mut tx = self.store.begin().await?;
        tx.set_state(JUDGED_UNTIL_KEY, &to_db(judged_until), now)
            .await?;
        tx.commit().await?;

        // 3. A START webhook at T: no time before T counts as calm.
        for (prefix, (s, _)) in states.iter_mut() {
            if let Some(t) = self.store.last_start_for(&prefix.to_string()).await?
                && s.calm_since.is_some_and(|c| c < t)
            {
                s.calm_since = Some(t);
            }
        }

        // 4. Gates, then the withdrawal.
        let mismatched = self.check_account(now).await?;
        let pinned = self.store.active_pins(now).await?;
        let paused = self.store.active_pause(now).await?;
        self.requests(
            &mut states,
            &mismatched,
            &pinned,
            paused.as_ref(),
            judged_until,
            now,
            &mut report,
        )
        .await?;
        for p in &self.config.prefixes {
            let Some((s, truth)) = states.get_mut(&p.cidr) else {
                continue;
            };
            if !s.advertised {
                continue;
            }
            let hold = if mismatched.contains(&p.cidr) {
                Some("config does not match the Cloudflare account (see the alert)".to_owned())
            } else {
                self.hold_reason(p, s, *truth, &pinned, paused.as_ref(), judged_until, now)
            };
            let hold = match hold {
                Some(h) => Some(h),
                None => self.pre_withdraw(p).await.err(),
            };
            if let Some(why) = hold {
                self.remind(p, s, &why, now).await?;
                report.held.push((p.cidr.to_string(), why));
                continue;
            }
            if a.dry_run {
                report.would_withdraw.push(p.cidr.to_string());
                if !s.dry_run_notified {
                    let mut tx = self.store.begin().await?;
                    let message = Message::WouldWithdraw(WouldWithdraw {
                        prefix: p.cidr.to_string(),
                        calm_for: s.calm_since.and_then(|c| (judged_until - c).to_std().ok()),
                        at: now,
                    });
                    self.notifier.queue(&mut tx, &message, now).await?;
                    s.dry_run_notified = true;
                    tx.save_prefix_state(s, now).await?;
                    tx.commit().await?;
                }
                continue;
            }
            self.withdraw(p, s, now, &mut report).await?;
        }

        // 5. Blind telemetry: told once per episode, and when it recovers.
        self.blind(&mut states, now).await?;

        // 6. Persist, and keep prefix_calm_status current for its readers.
        let mut tx = self.store.begin().await?;
        for (prefix, (s, _)) in &states {
            tx.save_prefix_state(s, now).await?;
            let cidr = prefix.to_string();
            let recent_attack = s.calm_since.is_none()
                && s.last_attack_end
                    .is_some_and(|e| e + window >= judged_until);
            // A START webhook of this incident without an END since.
            let open_start = match self.store.last_start_for(&cidr).await? {
                Some(t) if s.advertised_modified_at.is_none_or(|m| t >= m) => {
                    self.store.last_end_since(&cidr, t).await?.is_none()
                }
                _ => false,
            };
            tx.upsert_prefix_calm_status(&CalmUpdate {
                prefix: &cidr,
                advertised: s.advertised,
                under_attack: recent_attack || open_start,
                calm_since: s.calm_since,
                last_attack_packets: s.peak_pps.round() as i64,
                last_attack_mbps: s.peak_mbps,
                mitigation_systems: &s.systems,
                updated_at: now,
            })
            .await?;
        }
        tx.commit().await?;
        Ok(report)
    }

    /// Reads the calm-tracking dataset's settings when due (at start and hourly); a dataset
    /// that became unusable is told once on Telegram, and again when it is usable.
    async fn refresh_settings(&self, now: DateTime<Utc>) -> Result<(), CycleError> {
        let Some(unusable) = self.datasets.refresh(&self.client, now).await else {
            return Ok(());
        };
        let message = OperatorAlert::dataset(
            self.datasets.dataset(),
            unusable.as_deref(),
            "no window is judged calm, so nothing is withdrawn automatically",
            now,
        );
        let mut tx = self.store.begin().await?;
        self.notifier
            .queue(&mut tx, &Message::OperatorAlert(message), now)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// While a prefix stays advertised longer than `advertised_reminder`, says why it is not
    /// withdrawn, every `advertised_reminder`.
    async fn remind(
        &self,
        p: &PrefixConfig,
        s: &mut PrefixState,
        why: &str,
        now: DateTime<Utc>,
    ) -> Result<(), CycleError> {
        let every = span(self.config.autowithdraw.advertised_reminder);
        let Some(since) = s.advertised_modified_at else {
            return Ok(());
        };
        if now - since < every || s.reminded_at.is_some_and(|r| now - r < every) {
            return Ok(());
        }
        let mut tx = self.store.begin().await?;
        let message = Message::OperatorAlert(OperatorAlert {
            title: "Prefix still advertised".into(),
            prefix: Some(p.cidr.to_string()),
            details: format!(
                "advertised for {} h {} min and not withdrawn: {why}",
                (now - since).num_hours(),
                (now - since).num_minutes() % 60
            ),
            consequence: "traffic keeps going through Cloudflare until this clears".into(),
            at: now,
        });
        self.notifier.queue(&mut tx, &message, now).await?;
        tx.commit().await?;
        s.reminded_at = Some(now);
        Ok(())
    }

    /// Scheduled withdrawal requests (`pending_withdrawals`, SPEC §5): from `withdraw_after` on,
    /// performed when every gate but the calm period holds; moved to the history when done; a
    /// refused one stays, with `last_error` saying why.
    #[allow(clippy::too_many_arguments)]
    async fn requests(
        &self,
        states: &mut BTreeMap<IpNet, (PrefixState, bool)>,
        mismatched: &BTreeSet<IpNet>,
        pinned: &[mt_store::Hold],
        paused: Option<&mt_store::Hold>,
        judged_until: DateTime<Utc>,
        now: DateTime<Utc>,
        report: &mut CycleReport,
    ) -> Result<(), CycleError> {
        let window = span(self.config.autowithdraw.window);
        for request in self.store.due_pending_withdrawals(now).await? {
            let configured = request
                .prefix
                .as_deref()
                .and_then(|c| c.trim().parse::<IpNet>().ok())
                .and_then(|net| self.config.prefixes.iter().find(|p| p.cidr == net.trunc()));
            let refusal = match configured {
                None => Some("not a configured prefix".to_owned()),
                Some(p) => match states.get(&p.cidr) {
                    None => Some("not a configured prefix".to_owned()),
                    Some((s, truth)) => {
                        let under_attack = s.calm_since.is_none()
                            && s.last_attack_end
                                .is_some_and(|e| e + window >= judged_until);
                        let cidr = p.cidr.to_string();
                        if !truth {
                            Some("advertisement state unknown (Cloudflare API error)".to_owned())
                        } else if !s.advertised {
                            Some("not advertised: nothing to withdraw".to_owned())
                        } else if mismatched.contains(&p.cidr) {
                            Some("config does not match the Cloudflare account".to_owned())
                        } else if s.locked {
                            Some("locked on Cloudflare".to_owned())
                        } else if let Some(pin) = pinned.iter().find(|h| h.prefix == cidr) {
                            Some(format!("pinned by {}: {}", pin.by, pin.reason))
                        } else if let Some(pause) = paused {
                            Some(format!("paused by {}: {}", pause.by, pause.reason))
                        } else if under_attack {
                            Some("under attack in the current judgement".to_owned())
                        } else if s.unknown_since.is_some() {
                            Some(
                                "telemetry unknown: cannot tell whether it is under attack"
                                    .to_owned(),
                            )
                        } else if s
                            .advertised_modified_at
                            .is_none_or(|m| now - m < span(self.config.autowithdraw.min_advertised))
                        {
                            Some("advertised for less than min_advertised".to_owned())
                        } else if self.config.autowithdraw.dry_run {
                            Some("dry run: would withdraw now".to_owned())
                        } else {
                            None
                        }
                    }
                },
            };
            if let Some(reason) = refusal {
                let mut tx = self.store.begin().await?;
                tx.note_pending_withdrawal(request.id, &reason, None, false)
                    .await?;
                tx.commit().await?;
                continue;
            }
            let Some(p) = configured else { continue };
            let Some((s, _)) = states.get_mut(&p.cidr) else {
                continue;
            };
            match self
                .client
                .set_advertised(&p.prefix_id, &p.bgp_prefix_id, false)
                .await
            {
                Ok(bgp) => {
                    self.record_withdrawn(p, s, &bgp, now, Some(&request))
                        .await?;
                    report.withdrawn.push(p.cidr.to_string());
                }
                Err(e) => {
                    let attempts = request.retry_count.unwrap_or(0) + 1;
                    let i = usize::try_from(attempts - 1)
                        .unwrap_or(0)
                        .min(BACKOFF_SECS.len() - 1);
                    let next = now + chrono::Duration::seconds(BACKOFF_SECS[i]);
                    let mut tx = self.store.begin().await?;
                    tx.note_pending_withdrawal(request.id, &e.to_string(), Some(next), true)
                        .await?;
                    tx.commit().await?;
                    report.failed.push((p.cidr.to_string(), e.to_string()));
                }
            }
        }
        Ok(())
    }

    /// Compares the account's BGP prefixes with the config, at start and hourly: a configured
    /// BGP prefix id that is missing or has another CIDR is never acted on; an advertised
    /// prefix missing from the config is alerted as unmanaged. Returns the mismatched prefixes.
    async fn check_account(&self, now: DateTime<Utc>) -> Result<BTreeSet<IpNet>, CycleError> {
        let set = |v: Option<String>| -> BTreeSet<String> {
            v.unwrap_or_default()
                .split(',')
                .filter(|x| !x.is_empty())
                .map(str::to_owned)
                .collect()
        };
        let known: BTreeSet<String> = set(self.store.state(MISMATCH_KEY).await?);
        let as_nets = |s: &BTreeSet<String>| {
            s.iter()
                .filter_map(|c| c.parse::<IpNet>().ok())
                .collect::<BTreeSet<_>>()
        };
        let checked = self
            .store
            .state(ACCOUNT_CHECKED_KEY)
            .await?
            .as_deref()
            .and_then(from_db);
        if checked.is_some_and(|t| now - t < ACCOUNT_CHECK_EVERY) {
            return Ok(as_nets(&known));
        }
        let account = match self.client.list_account_bgp_prefixes().await {
            Ok(a) => a,
            Err(e) => {
                if e.is_auth() {
                    self.alert_auth(&e, now).await?;
                }
                tracing::warn!(error = %e, "cannot compare the config with the account; retrying next cycle");
                return Ok(as_nets(&known));
            }
        };
        let mut tx = self.store.begin().await?;
        if self.store.state(AUTH_FAILED_KEY).await?.is_some() {
            tx.clear_state(AUTH_FAILED_KEY).await?;
        }
        let mut mismatched = BTreeSet::new();
        for p in &self.config.prefixes {
            let found = account
                .iter()
                .find(|a| a.prefix_id == p.prefix_id && a.bgp.id == p.bgp_prefix_id);
            let problem = match found {
                None => Some(format!(
                    "BGP prefix {} of IP prefix {} is not in the account",
                    p.bgp_prefix_id, p.prefix_id
                )),
                Some(a) => match a.bgp.cidr.as_deref().and_then(|c| c.parse::<IpNet>().ok()) {
                    Some(c) if c.trunc() == p.cidr => None,
                    other => Some(format!(
                        "BGP prefix {} is {} on Cloudflare, not {}",
                        p.bgp_prefix_id,
                        other.map_or("of unknown CIDR".to_owned(), |c| c.to_string()),
                        p.cidr
                    )),
                },
            };
            if let Some(details) = problem {
                mismatched.insert(p.cidr.to_string());
                if !known.contains(&p.cidr.to_string()) {
                    tracing::error!(prefix = %p.cidr, %details, "config does not match the account; never acting on this prefix");
                    let message = Message::OperatorAlert(OperatorAlert {
                        title: "Config does not match the Cloudflare account".into(),
                        prefix: Some(p.cidr.to_string()),
                        details,
                        consequence:
                            "mt-autowithdraw will not act on this prefix until the config is fixed"
                                .into(),
                        at: now,
                    });
                    self.notifier.queue(&mut tx, &message, now).await?;
                }
            }
        }
        let configured: BTreeSet<&str> = self
            .config
            .prefixes
            .iter()
            .map(|p| p.bgp_prefix_id.as_str())
            .collect();
        let unmanaged: BTreeSet<String> = account
            .iter()
            .filter(|a| a.bgp.advertised() && !configured.contains(a.bgp.id.as_str()))
            .map(|a| a.bgp.cidr.clone().unwrap_or_else(|| a.bgp.id.clone()))
            .collect();
        let alerted = set(self.store.state(UNMANAGED_KEY).await?);
        for cidr in unmanaged.difference(&alerted) {
            tracing::warn!(prefix = %cidr, "an advertised prefix is not in the config");
            let message = Message::OperatorAlert(OperatorAlert {
                title: "Advertised prefix not managed".into(),
                prefix: Some(cidr.clone()),
                details: "Cloudflare advertises this prefix, but it is not in the config".into(),
                consequence: "it will not be withdrawn automatically; add it to [[prefixes]] or withdraw it by hand".into(),
                at: now,
            });
            self.notifier.queue(&mut tx, &message, now).await?;
        }
        let join = |s: &BTreeSet<String>| s.iter().cloned().collect::<Vec<_>>().join(",");
        tx.set_state(MISMATCH_KEY, &join(&mismatched), now).await?;
        tx.set_state(UNMANAGED_KEY, &join(&unmanaged), now).await?;
        tx.set_state(ACCOUNT_CHECKED_KEY, &to_db(now), now).await?;
        tx.commit().await?;
        Ok(as_nets(&mismatched))
    }

    /// Cloudflare refused the token: alerted once per episode.
    async fn alert_auth(
        &self,
        e: &mt_cloudflare::Error,
        now: DateTime<Utc>,
    ) -> Result<(), CycleError> {
        if self.store.state(AUTH_FAILED_KEY).await?.is_some() {
            return Ok(());
        }
        let mut tx = self.store.begin().await?;
        let message = Message::OperatorAlert(OperatorAlert {
            title: "Cloudflare refused the API token".into(),
            prefix: None,
            details: e.to_string(),
            consequence: "nothing can be read or withdrawn until the token is fixed".into(),
            at: now,
        });
        self.notifier.queue(&mut tx, &message, now).await?;
        tx.set_state(AUTH_FAILED_KEY, &to_db(now), now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Applies what Cloudflare says of a prefix to its state.
    async fn observe(
        &self,
        p: &PrefixConfig,
        s: &mut PrefixState,
        bgp: &BgpPrefix,
        first_sight: bool,
        now: DateTime<Utc>,
    ) -> Result<(), CycleError> {
        let advertised = bgp.advertised();
        // Stored times have whole seconds; Cloudflare's have fractions. Compared unrounded,
        // every cycle would see a "change" and restart the calm clock forever.
        let modified = bgp.advertised_modified_at().map(whole_seconds);
        if let Some(intent) = s.intent_at {
            if !advertised && modified.is_some_and(|m| m >= intent - chrono::Duration::minutes(1)) {
                tracing::warn!(prefix = %p.cidr, "a withdrawal from before a restart went through; recording it");
                self.record_success(p, s, bgp, now).await?;
                return Ok(());
            }
            s.intent_at = None;
        }
        if let Some(withdrawn) = s.withdrawn_at
            && advertised
            && modified.is_none_or(|m| m <= withdrawn)
        {
            // Still advertised, with no change newer than our withdrawal: Cloudflare has not
            // carried it out (yet). Not a new incident.
            let verify_after = span(self.config.autowithdraw.withdraw_verify_after);
            if !s.verify_alerted && now - withdrawn >= verify_after {
                let mut tx = self.store.begin().await?;
                let message = Message::OperatorAlert(OperatorAlert {
                    title: "Withdrawal not carried out".into(),
                    prefix: Some(p.cidr.to_string()),
                    details: format!(
                        "Cloudflare still reports it advertised {} min after the withdrawal at {} UTC",
                        (now - withdrawn).num_minutes(),
                        to_db(withdrawn)
                    ),
                    consequence: "traffic still goes through Cloudflare; check the prefix on the dashboard and withdraw it by hand if needed".into(),
                    at: now,
                });
                self.notifier.queue(&mut tx, &message, now).await?;
                tx.commit().await?;
                s.verify_alerted = true;
                tracing::error!(prefix = %p.cidr, "Cloudflare still advertises a prefix withdrawn {} min ago", (now - withdrawn).num_minutes());
            }
            s.advertised = true;
            s.locked = bgp.locked();
            return Ok(());
        }
        if !first_sight && modified != s.advertised_modified_at {
            // A change we did not make (auto-advertisement, dashboard, another tool).
            let (event_type, action) = if advertised {
                (EventType::Advertise, ActionTaken::AutoAdvertised)
            } else {
                (EventType::Withdraw, ActionTaken::WithdrawnManual)
            };
            let since = modified.unwrap_or(now) - chrono::Duration::minutes(10);
            if !self
                .store
                .has_event_since(&p.cidr.to_string(), event_type.as_str(), since)
                .await?
            {
                let mut tx = self.store.begin().await?;
                tx.insert_attack_event(&NewAttackEvent {
                    prefix: Some(p.cidr.to_string()),
                    raw_payload: Some(
                        "{\"source\":\"mt-autowithdraw: change seen on Cloudflare\"}".into(),
                    ),
                    ..NewAttackEvent::new(event_type, action, modified.unwrap_or(now))
                })
                .await?;
                tx.commit().await?;
            }
            tracing::info!(prefix = %p.cidr, advertised, "advertisement changed on Cloudflare; new incident");
        }
        if first_sight || modified != s.advertised_modified_at {
            new_incident(s);
        }
        s.advertised = advertised;
        s.advertised_modified_at = modified;
        s.locked = bgp.locked();
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn hold_reason(
        &self,
        p: &PrefixConfig,
        s: &PrefixState,
        truth: bool,
        pinned: &[mt_store::Hold],
        paused: Option<&mt_store::Hold>,
        judged_until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Option<String> {
        let a = &self.config.autowithdraw;
        let cidr = p.cidr.to_string();
        if !truth {
            return Some("advertisement state unknown (Cloudflare API error)".into());
        }
        if s.locked {
            return Some("locked on Cloudflare".into());
        }
        if !p.auto_withdraw {
            return Some("auto_withdraw = false".into());
        }
        if let Some(pin) = pinned.iter().find(|h| h.prefix == cidr) {
            return Some(format!("pinned by {}: {}", pin.by, pin.reason));
        }
        if let Some(pause) = paused {
            return Some(format!("paused by {}: {}", pause.by, pause.reason));
        }
        let Some(calm_since) = s.calm_since else {
            return Some("not calm".into());
        };
        let calm_for = judged_until - calm_since;
        if calm_for < span(a.calm_period) {
            return Some(format!(
                "calm for {}s of {}s",
                calm_for.num_seconds().max(0),
                a.calm_period.as_secs()
            ));
        }
        match s.advertised_modified_at {
            Some(m) if now - m >= span(a.min_advertised) => {}
            _ => return Some("advertised for less than min_advertised".into()),
        }
        if let Some(next) = s.next_attempt_at
            && next > now
        {
            return Some(format!("next attempt at {}", to_db(next)));
        }
        None
    }

    /// Runs `pre_withdraw_command` with the CIDR; anything but exit 0 holds the withdrawal.
    async fn pre_withdraw(&self, p: &PrefixConfig) -> Result<(), String> {
        let command = self.config.autowithdraw.pre_withdraw_command.trim();
        if command.is_empty() {
            return Ok(());
        }
        let run = tokio::process::Command::new(command)
            .arg(p.cidr.to_string())
            .kill_on_drop(true)
            .output();
        match tokio::time::timeout(PRE_WITHDRAW_TIMEOUT, run).await {
            Ok(Ok(out)) if out.status.success() => Ok(()),
            Ok(Ok(out)) => Err(format!(
                "pre_withdraw_command exited {}: {}",
                out.status
                    .code()
                    .map_or("by a signal".to_owned(), |c| c.to_string()),
                String::from_utf8_lossy(&out.stderr).trim()
            )),
            Ok(Err(e)) => Err(format!("pre_withdraw_command could not run: {e}")),
            Err(_) => Err(format!(
                "pre_withdraw_command did not finish within {}s",
                PRE_WITHDRAW_TIMEOUT.as_secs()
            )),
        }
    }

    async fn withdraw(
        &self,
        p: &PrefixConfig,
        s: &mut PrefixState,
        now: DateTime<Utc>,
        report: &mut CycleReport,
    ) -> Result<(), CycleError> {
        // Intent first: a crash after the PATCH is then reconciled, never replayed blindly.
        s.intent_at = Some(now);
        let mut tx = self.store.begin().await?;
        tx.save_prefix_state(s, now).await?;
        tx.commit().await?;
        match self
            .client
            .set_advertised(&p.prefix_id, &p.bgp_prefix_id, false)
            .await
        {
            Ok(bgp) => {
                self.record_success(p, s, &bgp, now).await?;
                report.withdrawn.push(p.cidr.to_string());
            }
            Err(e) => {
                // A timeout (or a broken connection) leaves the outcome unknown: Cloudflare may
                // have applied it. The intent stays, so the next cycle reconciles it with
                // Cloudflare's state (recording our withdrawal) instead of mistaking it for a
                // change someone else made. A definite refusal clears it.
                if !matches!(
                    e,
                    mt_cloudflare::Error::Timeout | mt_cloudflare::Error::Transport(_)
                ) {
                    s.intent_at = None;
                }
                s.attempts += 1;
                let next = if e.is_prefix_hold() {
                    s.advertised_modified_at
                        .map_or(now + chrono::Duration::minutes(1), |m| {
                            (m + CHANGE_HOLD).max(now + chrono::Duration::minutes(1))
                        })
                } else if let Some(after) = e.retry_after() {
                    now + span(after)
                } else {
                    let i = usize::try_from(s.attempts - 1)
                        .unwrap_or(0)
                        .min(BACKOFF_SECS.len() - 1);
                    now + chrono::Duration::seconds(BACKOFF_SECS[i])
                };
                s.next_attempt_at = Some(next);
                s.last_error = Some(e.to_string());
                let notes = format!("attempts: {}; last error: {e}", s.attempts);
                let mut tx = self.store.begin().await?;
                match s.failure_history_id {
                    Some(id) => {
                        tx.update_withdrawal(id, WithdrawStatus::Failed, Some(now), Some(&notes))
                            .await?;
                    }
                    None => {
                        let id = tx
                            .insert_withdrawal(
                                &self
                                    .history(p, s, now, WithdrawStatus::Failed, notes.clone())
                                    .await?,
                            )
                            .await?;
                        s.failure_history_id = Some(id);
                        let message = Message::WithdrawalFailure(WithdrawalFailure {
                            prefix: p.cidr.to_string(),
                            kind: WithdrawKind::Automatic,
                            error: e.to_string(),
                            attempts: u32::try_from(s.attempts).unwrap_or(u32::MAX),
                            next_attempt_at: Some(next),
                            at: now,
                        });
                        self.notifier.queue(&mut tx, &message, now).await?;
                    }
                }
                tx.save_prefix_state(s, now).await?;
                tx.commit().await?;
                tracing::warn!(prefix = %p.cidr, error = %e, attempts = s.attempts, "withdrawal failed; retrying later");
                report.failed.push((p.cidr.to_string(), e.to_string()));
            }
        }
        Ok(())
    }

    /// A `withdrawal_history` row for this incident.
    async fn history(
        &self,
        p: &PrefixConfig,
        s: &PrefixState,
        now: DateTime<Utc>,
        status: WithdrawStatus,
        notes: String,
    ) -> Result<NewWithdrawal, CycleError> {
        let advertised_at = s.advertised_modified_at;
        let end_webhook = match advertised_at {
            Some(a) => self.store.last_end_since(&p.cidr.to_string(), a).await?,
            None => None,
        };
        let attack_ended_at = end_webhook.or(s.last_attack_end);
        // The attack this incident answered: its alert arrives around the advertisement
        // (usually just before it), so look from one change-hold earlier.
        let alert = match advertised_at {
            Some(a) => {
                self.store
                    .last_attack_alert_since(&p.cidr.to_string(), a - CHANGE_HOLD)
                    .await?
            }
            None => None,
        };
        let alert = alert.as_ref();
        Ok(NewWithdrawal {
            prefix: p.cidr.to_string(),
            attack_id: alert.and_then(|e| e.attack_id.clone()),
            policy_id: alert.and_then(|e| e.policy_id.clone()),
            policy_name: alert.and_then(|e| e.policy_name.clone()),
            target_ip: alert.and_then(|e| e.target_ip.clone()),
            attack_type: alert.and_then(|e| e.alert_type.clone()),
            advertised_at,
            attack_ended_at,
            withdrawn_at: Some(now),
            attack_duration_seconds: advertised_at
                .zip(attack_ended_at)
                .map(|(a, e)| (e - a).num_seconds().max(0)),
            protection_duration_seconds: advertised_at.map(|a| (now - a).num_seconds()),
            method: WithdrawMethod::AutoScheduled,
            status,
            notes: Some(notes),
            created_at: now,
        })
    }

    async fn record_success(
        &self,
        p: &PrefixConfig,
        s: &mut PrefixState,
        bgp: &BgpPrefix,
        now: DateTime<Utc>,
    ) -> Result<(), CycleError> {
        self.record_withdrawn(p, s, bgp, now, None).await
    }

    /// Records a withdrawal that went through; `request` is the `pending_withdrawals` row it
    /// performed, if any (moved to the history).
    async fn record_withdrawn(
        &self,
        p: &PrefixConfig,
        s: &mut PrefixState,
        bgp: &BgpPrefix,
        now: DateTime<Utc>,
        request: Option<&mt_store::PendingWithdrawal>,
    ) -> Result<(), CycleError> {
        let notes = format!(
            "peak dropped {:.0} pps / {:.1} Mbit/s; mitigation: {}",
            s.peak_pps,
            s.peak_mbps,
            if s.systems.is_empty() {
                "-"
            } else {
                &s.systems
            }
        );
        let mut row = self
            .history(p, s, now, WithdrawStatus::Success, notes)
            .await?;
        if let Some(r) = request {
            // What the request says of its attack wins over what the incident suggests.
            let pick = |ours: &mut Option<String>, theirs: &Option<String>| {
                if let Some(v) = theirs.as_ref().filter(|v| !v.is_empty()) {
                    *ours = Some(v.clone());
                }
            };
            pick(&mut row.attack_id, &r.attack_id);
            pick(&mut row.policy_id, &r.policy_id);
            pick(&mut row.policy_name, &r.policy_name);
            pick(&mut row.target_ip, &r.target_ip);
            pick(&mut row.attack_type, &r.attack_type);
        }
        let calm_for = s.calm_since.and_then(|c| (now - c).to_std().ok());
        let mut tx = self.store.begin().await?;
        tx.insert_attack_event(&NewAttackEvent {
            prefix: Some(p.cidr.to_string()),
            ..NewAttackEvent::new(EventType::Withdraw, ActionTaken::WithdrawnAuto, now)
        })
        .await?;
        match request {
            Some(r) => {
                tx.complete_pending_withdrawal(r.id, &row).await?;
            }
            None => {
                tx.insert_withdrawal(&row).await?;
            }
        }
        let message = Message::WithdrawalSuccess(WithdrawalSuccess {
            prefix: p.cidr.to_string(),
            kind: if request.is_some() {
                WithdrawKind::Scheduled
            } else {
                WithdrawKind::Automatic
            },
            withdrawn_at: now,
            calm_for,
            advertised_for: row
                .protection_duration_seconds
                .and_then(|x| u64::try_from(x).ok())
                .map(Duration::from_secs),
            peak_pps: Some(s.peak_pps),
            peak_mbps: Some(s.peak_mbps),
            mitigation_systems: Some(s.systems.clone()).filter(|x| !x.is_empty()),
            operator: "mt-autowithdraw".into(),
        });
        self.notifier.queue(&mut tx, &message, now).await?;
        new_incident(s);
        s.advertised = false;
        s.advertised_modified_at = bgp
            .advertised_modified_at()
            .map(whole_seconds)
            .or(Some(now));
        s.withdrawn_at = Some(now);
        s.verify_alerted = false;
        tx.save_prefix_state(s, now).await?;
        tx.commit().await?;
        tracing::info!(prefix = %p.cidr, "prefix withdrawn");
        Ok(())
    }

    async fn blind(
        &self,
        states: &mut BTreeMap<IpNet, (PrefixState, bool)>,
        now: DateTime<Utc>,
    ) -> Result<(), CycleError> {
        let calm_period = span(self.config.autowithdraw.calm_period);
        let blind: Vec<IpNet> = states
            .iter()
            .filter(|(_, (s, _))| {
                s.advertised
                    && !s.blind_alerted
                    && s.unknown_since.is_some_and(|u| now - u > calm_period)
            })
            .map(|(p, _)| *p)
            .collect();
        let recovered: Vec<IpNet> = states
            .iter()
            .filter(|(_, (s, _))| s.blind_alerted && s.unknown_since.is_none())
            .map(|(p, _)| *p)
            .collect();
        if blind.is_empty() && recovered.is_empty() {
            return Ok(());
        }
        let mut tx = self.store.begin().await?;
        if !blind.is_empty() {
            let since = blind
                .iter()
                .filter_map(|p| states[p].0.unknown_since)
                .min()
                .unwrap_or(now);
            let message = Message::TelemetryBlind(TelemetryBlind {
                prefixes: blind.iter().map(ToString::to_string).collect(),
                since,
                reason: "dropped-traffic analytics could not be judged (see mt-autowithdraw's log)"
                    .into(),
            });
            self.notifier.queue(&mut tx, &message, now).await?;
            for p in &blind {
                if let Some((s, _)) = states.get_mut(p) {
                    s.blind_alerted = true;
                }
            }
        }
        if !recovered.is_empty() {
            let message = Message::TelemetryRecovered(TelemetryRecovered {
                prefixes: recovered.iter().map(ToString::to_string).collect(),
                blind_for: calm_period.to_std().unwrap_or_default(),
                at: now,
            });
            self.notifier.queue(&mut tx, &message, now).await?;
            for p in &recovered {
                if let Some((s, _)) = states.get_mut(p) {
                    s.blind_alerted = false;
                }
            }
        }
        tx.commit().await?;
        Ok(())
    }
}

/// `t` without its fraction of a second, as the database stores times.
fn whole_seconds(t: DateTime<Utc>) -> DateTime<Utc> {
    t.with_nanosecond(0).unwrap_or(t)
}
