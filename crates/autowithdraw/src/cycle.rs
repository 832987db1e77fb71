//! One autowithdraw cycle (SPEC §7): plain I/O around the pure decision in [`crate::core`].
//!
//! The phases, in order (each a method below):
//! 1. [`Engine::take_lease`]: only the lease holder acts.
//! 2. [`Engine::check_account`]: at start and hourly, the account's BGP prefixes against the
//!    config.
//! 3. [`Engine::read_advertisements`]: every configured prefix's BGP prefix from Cloudflare.
//! 4. [`Engine::judge_backlog`]: the analytics windows not judged yet (or declared lost),
//!    oldest first; nothing is persisted here.
//! 5. [`Engine::decide`]: [`core::decide`] per prefix; the judged time, the lost gaps, every
//!    prefix's state and what the decision records (outside changes, reconciled withdrawals,
//!    alerts, reminders) are committed in **one** transaction.
//! 6. [`Engine::requests`]: scheduled withdrawal requests (`pending_withdrawals`, SPEC §5).
//! 7. [`Engine::withdraw_confirmed`]: for every prefix whose gates all hold, the confirmation
//!    query and the re-reads ([`core::confirm`]), the intent committed, the PATCH, its outcome
//!    ([`core::after_patch`]) recorded.
//! 8. [`Engine::blind`] and [`Engine::publish`]: blind alerts and `prefix_calm_status`.
//!
//! Everything the cycle knows is persisted (`autowithdraw_prefixes`, `mt_state`), so a restart
//! continues where it stopped: the time missed during downtime is judged first, and a
//! withdrawal decided just before a crash is reconciled with Cloudflare's state instead of
//! being replayed blindly.

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
    ActionTaken, CalmUpdate, EventType, Fence, NewAttackEvent, NewWithdrawal, PrefixState, Store,
    TelemetryGap, WithdrawMethod, WithdrawStatus, WithdrawalWrite, WriteTx,
};

use crate::core::{
    self, Action, Confirmation, Evidence, Holds, Next, Observations, PatchOutcome, Reading,
    Recheck, Recorded, RequestNext, Rules, Span,
};
use crate::judge::{Thresholds, Verdict, Window, judge, judge_buckets};

/// The lease that lets one instance act; another stays passive until it expires.
pub const LEASE_NAME: &str = "autowithdraw";

/// How often the account's BGP prefixes are compared with the config (and at every start, and
/// after every change of the `[[prefixes]]` section).
const ACCOUNT_CHECK_EVERY: chrono::Duration = chrono::Duration::hours(1);
/// When the account was last compared with the config.
pub const ACCOUNT_CHECKED_KEY: &str = "autowithdraw.account_checked_at";
/// Which `[[prefixes]]` section (its digest) and which process the last successful account
/// check was for: `<sha256 hex> <holder>`.
pub const ACCOUNT_CHECKED_FOR_KEY: &str = "autowithdraw.account_checked_for";
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
/// Cloudflare allows every five minutes. No gate is looked at before catch-up is finished.
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

/// Longest a cycle may take (judging up to 12 windows, one PATCH); the daemon abandons a
/// slower one, which counts as failed. Abandoning is safe: the withdrawal intent is committed
/// before the PATCH and reconciled with Cloudflare's state by the next cycle.
pub const CYCLE_DEADLINE: Duration = Duration::from_secs(240);

/// Why a cycle failed as a whole (it is retried next interval; nothing was withdrawn).
#[derive(Debug, thiserror::Error)]
pub enum CycleError {
    /// The database failed.
    #[error(transparent)]
    Store(#[from] mt_store::Error),
}

impl CycleError {
    fn is_lease_lost(&self) -> bool {
        matches!(self, Self::Store(mt_store::Error::LeaseLost { .. }))
    }
}

/// What a cycle did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct CycleReport {
    /// Another instance holds the lease: this one did nothing.
    pub passive: bool,
    /// Another instance took the lease over during this cycle (this one was slower than its
    /// lease, or paused): it stopped at its next fenced write, without a PATCH after it.
    pub lease_lost: bool,
    /// The fencing token this instance acted under (`None`: passive).
    pub lease_token: Option<i64>,
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

/// One configured prefix during a cycle.
#[derive(Debug)]
struct Tracked<'c> {
    config: &'c PrefixConfig,
    state: PrefixState,
    first_sight: bool,
    reading: Reading,
    next: Next,
    /// The newest counting START for the prefix (SPEC §7.3).
    last_start: Option<DateTime<Utc>>,
    /// Pins, pause, account check, as the decision saw them.
    holds: Holds,
}

impl Tracked<'_> {
    fn cidr(&self) -> String {
        self.config.cidr.to_string()
    }
}

/// What judging the backlog produced (nothing is persisted by it).
#[derive(Debug, Default)]
struct Judged {
    evidence: BTreeMap<IpNet, Vec<Evidence>>,
    gaps: Vec<TelemetryGap>,
    judged_until: Option<DateTime<Utc>>,
    unknown: Option<String>,
    windows: usize,
}

/// A withdrawal of ours to record: the event, the history row (or the request it completes),
/// the message.
#[derive(Debug)]
struct WithdrawalRecord {
    row: NewWithdrawal,
    request: Option<i64>,
    message: Message,
}

/// A write the decision asks for, performed in the cycle's transaction.
#[derive(Debug)]
enum Write {
    Event(NewAttackEvent),
    Message(Message),
    Withdrawal(Box<WithdrawalRecord>),
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

    /// The decision's settings for one prefix.
    pub fn rules(&self, p: &PrefixConfig) -> Rules {
        let a = &self.config.autowithdraw;
        Rules {
            calm_period: span(a.calm_period),
            analytics_delay: span(a.analytics_delay),
            interval: span(a.interval),
            window: span(a.window),
            advertise_settle: span(a.advertise_settle),
            min_advertised: span(a.min_advertised),
            withdraw_verify_after: span(a.withdraw_verify_after),
            auto_withdraw: p.auto_withdraw,
            dry_run: a.dry_run,
        }
    }

    /// One cycle, as the sequence of phases the module documentation lists.
    pub async fn cycle(&self) -> Result<CycleReport, CycleError> {
        let now = self.clock.now();
        let mut report = CycleReport::default();
        let Some(fence) = self.take_lease().await? else {
            report.passive = true;
            return Ok(report);
        };
        report.lease_token = Some(fence.token);
        match self.act(&fence, now, &mut report).await {
            Ok(()) => Ok(report),
            Err(e) if e.is_lease_lost() => {
                tracing::warn!(holder = %self.holder, "another instance took the lease over during this cycle (it was slower than the lease, or paused); stopped without writing or PATCHing");
                report.lease_lost = true;
                Ok(report)
            }
            Err(e) => Err(e),
        }
    }

    /// The lease holder's phases; every write after judging is fenced by `fence`.
    async fn act(
        &self,
        fence: &Fence,
        now: DateTime<Utc>,
        report: &mut CycleReport,
    ) -> Result<(), CycleError> {
        let report = &mut *report;
        let mismatched = self.check_account(fence, now).await?;
        let mut prefixes = self.read_advertisements(fence, now).await?;
        let judged = self.judge_backlog(fence, now).await?;
        report.windows = judged.windows;
        report.unknown.clone_from(&judged.unknown);
        report.lost.clone_from(&judged.gaps);
        let judged_until = self
            .decide(fence, &mut prefixes, &judged, &mismatched, now, report)
            .await?;
        self.requests(fence, &mut prefixes, judged_until, now, report)
            .await?;
        self.withdraw_confirmed(fence, &mut prefixes, now, report)
            .await?;
        self.blind(fence, &mut prefixes, now).await?;
        self.publish(fence, &prefixes, judged_until, now).await?;
        Ok(())
    }

    /// Only the lease holder acts (SPEC §7.9): expiry judged by the database's clock, a TTL
    /// longer than the cycle deadline ([`lease_ttl`]); a standby takes over within the TTL and
    /// one interval of the holder stopping.
    async fn take_lease(&self) -> Result<Option<Fence>, CycleError> {
        Ok(self
            .store
            .acquire_lease(LEASE_NAME, &self.holder, self.lease_ttl())
            .await?)
    }

    /// This configuration's lease TTL.
    pub fn lease_ttl(&self) -> Duration {
        crate::lease::lease_ttl(self.config.autowithdraw.interval)
    }

    /// A write transaction that fails with [`mt_store::Error::LeaseLost`] unless this
    /// instance still holds the lease.
    async fn begin(&self, fence: &Fence) -> Result<WriteTx, CycleError> {
        let mut tx = self.store.begin().await?;
        tx.check_fence(fence).await?;
        Ok(tx)
    }

    /// Every configured prefix's saved state and Cloudflare's reading of it.
    async fn read_advertisements(
        &self,
        fence: &Fence,
        now: DateTime<Utc>,
    ) -> Result<Vec<Tracked<'_>>, CycleError> {
        let mut out = Vec::with_capacity(self.config.prefixes.len());
        for p in &self.config.prefixes {
            let cidr = p.cidr.to_string();
            let saved = self.store.prefix_state(&cidr).await?;
            let first_sight = saved.is_none();
            let state = saved.unwrap_or_else(|| PrefixState {
                prefix: cidr.clone(),
                ..PrefixState::default()
            });
            let reading = match self
                .client
                .get_bgp_prefix(&p.prefix_id, &p.bgp_prefix_id)
                .await
            {
                Ok(bgp) => reading_of(p, &bgp),
                Err(e) => {
                    if e.is_auth() {
                        tracing::error!(prefix = %cidr, error = %e, "Cloudflare refused the API token");
                        self.alert_auth(fence, &e, now).await?;
                    } else {
                        tracing::warn!(prefix = %cidr, error = %e, "cannot read the advertisement; not acting on this prefix");
                    }
                    Reading::Unavailable
                }
            };
            out.push(Tracked {
                config: p,
                state,
                first_sight,
                reading,
                next: Next::Idle,
                last_start: None,
                holds: Holds::default(),
            });
        }
        Ok(out)
    }

    /// Judges the time not judged yet, oldest first, at most [`MAX_WINDOWS_PER_CYCLE`]
    /// windows; time older than the dataset keeps is declared lost. Persists nothing.
    async fn judge_backlog(&self, fence: &Fence, now: DateTime<Utc>) -> Result<Judged, CycleError> {
        let a = &self.config.autowithdraw;
        let horizon = now - span(a.analytics_delay);
        let mut window = span(a.window);
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
        let mut out = Judged::default();
        let prefixes: Vec<IpNet> = self.config.prefixes.iter().map(|p| p.cidr).collect();
        let thresholds = Thresholds {
            attack_min_pps: a.attack_min_pps,
            attack_min_mbps: a.attack_min_mbps,
        };
        // The dataset's settings bound every query; a dataset that cannot answer leaves
        // everything unknown (never calm).
        self.refresh_settings(fence, now).await?;
        let limits = self.datasets.limits(a.window, QUERY_LIMIT);
        window = span(limits.max_window).min(window);
        let unusable = self.datasets.problems();
        if !unusable.is_empty() {
            out.unknown = Some(format!(
                "the {} dataset cannot be queried: {}",
                self.datasets.dataset(),
                unusable
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            ));
        }
        if let Some(oldest) = limits.oldest_queryable(now, a.interval)
            && oldest + window > horizon
            && out.unknown.is_none()
        {
            // Not even one window ending at the horizon can be queried: say so (unknown, so
            // the blind alert comes), rather than declaring everything lost forever in silence.
            out.unknown = Some(format!(
                "the {} dataset's notOlderThan ({}s) is too short to judge any window (analytics_delay + interval + window)",
                self.datasets.dataset(),
                limits.not_older_than.unwrap_or_default().as_secs()
            ));
        }
        // Time older than `notOlderThan` (less one interval for the query's trip) can no
        // longer be judged: declared lost, it breaks every calm stretch.
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
            for p in &prefixes {
                out.evidence
                    .entry(*p)
                    .or_default()
                    .push(Evidence::Lost(Span {
                        start: gap.start,
                        end: gap.end,
                    }));
            }
            judged_until = gap.end;
            out.gaps.push(gap);
        }
        while judged_until < horizon
            && out.windows < MAX_WINDOWS_PER_CYCLE
            && !prefixes.is_empty()
            && out.unknown.is_none()
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
            out.windows += 1;
            if let Some(Verdict::Unknown(reason)) = verdicts.values().next()
                && verdicts.values().all(|v| matches!(v, Verdict::Unknown(_)))
            {
                // Nothing could be judged: this window is retried next cycle.
                out.unknown = Some(reason.to_string());
                break;
            }
            for (prefix, verdict) in verdicts {
                if let Verdict::Unknown(reason) = &verdict {
                    tracing::warn!(prefix = %prefix, %reason, "window not judged for this prefix");
                }
                out.evidence
                    .entry(prefix)
                    .or_default()
                    .push(Evidence::Judged(Span { start, end }, verdict));
            }
            judged_until = end;
        }
        out.judged_until = Some(judged_until);
        Ok(out)
    }

    /// [`core::decide`] for every prefix, then one transaction: the judged time, the lost
    /// gaps, every prefix's state and what the decisions record. Returns the judged time.
    async fn decide(
        &self,
        fence: &Fence,
        prefixes: &mut [Tracked<'_>],
        judged: &Judged,
        mismatched: &BTreeMap<IpNet, String>,
        now: DateTime<Utc>,
        report: &mut CycleReport,
    ) -> Result<DateTime<Utc>, CycleError> {
        let judged_until = judged.judged_until.unwrap_or(now);
        let pins = self.store.active_pins(now).await?;
        let pause = self.store.active_pause(now).await?;
        // Every START that could move a calm clock: since the oldest stretch or evidence.
        let since = prefixes
            .iter()
            .filter_map(|t| t.state.calm_since)
            .chain(judged.evidence.values().flatten().map(|e| match e {
                Evidence::Judged(s, _) | Evidence::Lost(s) => s.start,
            }))
            .chain([judged_until - span(self.config.autowithdraw.calm_period)])
            .min()
            .unwrap_or(now);
        let starts = self.store.starts_since(since).await?;
        let mut writes = Vec::new();
        for t in prefixes.iter_mut() {
            let cidr = t.cidr();
            let rules = self.rules(t.config);
            let holds = Holds {
                pinned: pins
                    .iter()
                    .find(|h| h.prefix == cidr)
                    .map(|h| format!("{}: {}", h.by, h.reason)),
                paused: pause.as_ref().map(|h| format!("{}: {}", h.by, h.reason)),
                account_mismatch: mismatched.get(&t.config.cidr).cloned(),
            };
            t.last_start = core::last_counting_start(&starts, t.config.cidr);
            let advertised_after_withdrawal = match t.state.withdrawn_at {
                Some(w) => {
                    self.store
                        .has_event_since(&cidr, "ADVERTISE", w + chrono::Duration::seconds(1))
                        .await?
                }
                None => false,
            };
            let evidence = judged
                .evidence
                .get(&t.config.cidr)
                .map(Vec::as_slice)
                .unwrap_or_default();
            let obs = Observations {
                reading: &t.reading,
                first_sight: t.first_sight,
                evidence,
                judged_until,
                last_start: t.last_start,
                advertised_after_withdrawal,
                holds: &holds,
                telemetry_unknown: judged.unknown.is_some(),
            };
            let (mut state, actions, next) = core::decide(&t.state, &obs, now, &rules);
            for action in actions {
                match action {
                    Action::OutsideChange { advertised, at } => {
                        tracing::info!(prefix = %cidr, advertised, "advertisement changed on Cloudflare; new incident");
                        let (event_type, taken) = if advertised {
                            (EventType::Advertise, ActionTaken::AutoAdvertised)
                        } else {
                            (EventType::Withdraw, ActionTaken::WithdrawnManual)
                        };
                        let since = at.unwrap_or(now) - chrono::Duration::minutes(10);
                        if !self
                            .store
                            .has_event_since(&cidr, event_type.as_str(), since)
                            .await?
                        {
                            writes.push(Write::Event(NewAttackEvent {
                                prefix: Some(cidr.clone()),
                                raw_payload: Some(
                                    "{\"source\":\"mt-autowithdraw: change seen on Cloudflare\"}"
                                        .into(),
                                ),
                                ..NewAttackEvent::new(event_type, taken, at.unwrap_or(now))
                            }));
                        }
                    }
                    Action::Reconciled => {
                        tracing::warn!(prefix = %cidr, "a withdrawal from before a restart went through; recording it");
                        // It may have been a scheduled request's: that request is done too.
                        let request = self.request_of_incident(t.config, &t.state, now).await?;
                        let record = self
                            .withdrawal_record(t.config, &t.state, now, request.as_ref())
                            .await?;
                        writes.push(Write::Withdrawal(Box::new(record)));
                        report.withdrawn.push(cidr.clone());
                    }
                    Action::NotCarriedOut { withdrawn_at } => {
                        tracing::error!(prefix = %cidr, "Cloudflare still advertises a prefix withdrawn {} min ago", (now - withdrawn_at).num_minutes());
                        writes.push(Write::Message(Message::OperatorAlert(OperatorAlert {
                            title: "Withdrawal not carried out".into(),
                            prefix: Some(cidr.clone()),
                            details: format!(
                                "Cloudflare still reports it advertised {} min after the withdrawal at {} UTC",
                                (now - withdrawn_at).num_minutes(),
                                to_db(withdrawn_at)
                            ),
                            consequence: "traffic still goes through Cloudflare; check the prefix on the dashboard and withdraw it by hand if needed".into(),
                            at: now,
                        })));
                    }
                    Action::WouldWithdraw => {
                        writes.push(Write::Message(Message::WouldWithdraw(WouldWithdraw {
                            prefix: cidr.clone(),
                            calm_for: state
                                .calm_since
                                .and_then(|c| (judged_until - c).to_std().ok()),
                            at: now,
                        })));
                    }
                }
            }
            if let Next::Hold(why) = &next {
                if rules.dry_run && why.starts_with("dry run") {
                    report.would_withdraw.push(cidr.clone());
                } else {
                    report.held.push((cidr.clone(), why.clone()));
                }
                if let Some(message) = self.reminder(&cidr, &mut state, why, now) {
                    writes.push(Write::Message(message));
                }
            }
            t.state = state;
            t.next = next;
            t.holds = holds;
        }
        let mut tx = self.begin(fence).await?;
        tx.set_state(JUDGED_UNTIL_KEY, &to_db(judged_until), now)
            .await?;
        for gap in &judged.gaps {
            tx.insert_telemetry_gap(gap, now).await?;
        }
        for t in prefixes.iter() {
            tx.save_prefix_state(&t.state, now).await?;
        }
        for w in writes {
            self.write(&mut tx, w, now).await?;
        }
        tx.commit().await?;
        Ok(judged_until)
    }

    /// Performs one [`Write`] inside `tx`.
    async fn write(
        &self,
        tx: &mut WriteTx,
        w: Write,
        now: DateTime<Utc>,
    ) -> Result<(), CycleError> {
        match w {
            Write::Event(e) => {
                tx.insert_attack_event(&e).await?;
            }
            Write::Message(m) => {
                self.notifier.queue(tx, &m, now).await?;
            }
            Write::Withdrawal(r) => {
                tx.record_withdrawal(&WithdrawalWrite {
                    history: &r.row,
                    action: ActionTaken::WithdrawnAuto,
                    event_payload: None,
                    request: r.request,
                    at: now,
                })
                .await?;
                self.notifier.queue(tx, &r.message, now).await?;
                tracing::info!(prefix = %r.row.prefix, "prefix withdrawn");
            }
        }
        Ok(())
    }

    /// For every prefix whose gates all hold: the confirmation query and the re-reads, then
    /// the intent, the PATCH and its outcome.
    async fn withdraw_confirmed(
        &self,
        fence: &Fence,
        prefixes: &mut [Tracked<'_>],
        now: DateTime<Utc>,
        report: &mut CycleReport,
    ) -> Result<(), CycleError> {
        for t in prefixes.iter_mut() {
            let Next::Confirm(range) = t.next.clone() else {
                continue;
            };
            let cidr = t.cidr();
            let rules = self.rules(t.config);
            let confirmation = self.confirmation(t.config.cidr, range).await;
            // The command runs only when the confirmation found the range calm; the STARTs
            // and the judged time are re-read after it, immediately before the PATCH.
            let pre_withdraw = if confirmation == Confirmation::Calm {
                self.pre_withdraw(t.config).await.err()
            } else {
                None
            };
            let since = t.state.calm_since.unwrap_or(range.start);
            let starts = self.store.starts_since(since).await?;
            let last_start = core::last_counting_start(&starts, t.config.cidr);
            let judged_until = self.judged_until().await?;
            let recheck = Recheck {
                confirmation: &confirmation,
                last_start,
                judged_until,
                pre_withdraw,
            };
            let (state, verdict) = core::confirm(&t.state, &recheck, self.clock.now(), &rules);
            let with_intent = match verdict {
                Ok(()) => state,
                Err(why) => {
                    tracing::info!(prefix = %cidr, %why, "withdrawal held at the last check");
                    t.state = state;
                    report.held.push((cidr.clone(), why.clone()));
                    let reminder = self.reminder(&cidr, &mut t.state, &why, now);
                    let mut tx = self.begin(fence).await?;
                    tx.save_prefix_state(&t.state, now).await?;
                    if let Some(m) = reminder {
                        self.notifier.queue(&mut tx, &m, now).await?;
                    }
                    tx.commit().await?;
                    t.next = Next::Hold(why);
                    continue;
                }
            };
            self.patch(fence, t, with_intent, None, report).await?;
        }
        Ok(())
    }

    /// Intent, PATCH, outcome (SPEC §7.5) for an automatic withdrawal or a `request`.
    async fn patch(
        &self,
        fence: &Fence,
        t: &mut Tracked<'_>,
        with_intent: PrefixState,
        request: Option<&mt_store::PendingWithdrawal>,
        report: &mut CycleReport,
    ) -> Result<(), CycleError> {
        let cidr = t.cidr();
        let now = self.clock.now();
        // Intent first, in the transaction that renews the lease (SPEC §7.9): a crash after
        // the PATCH is then reconciled, never replayed blindly, and an instance whose lease
        // was taken over stops here.
        let ttl = self.lease_ttl();
        let asked = std::time::Instant::now();
        let mut tx = self.store.begin().await?;
        tx.renew_lease(fence, ttl).await?;
        tx.save_prefix_state(&with_intent, now).await?;
        tx.commit().await?;
        let before = with_intent;
        let budget = match crate::lease::patch_budget(
            ttl,
            asked.elapsed(),
            self.config.cloudflare.request_timeout,
        ) {
            Ok(budget) => budget,
            Err(why) => {
                // Nothing was sent: take the intent back (fenced), so a withdrawal by someone
                // else before the next reading is never recorded as ours.
                tracing::warn!(prefix = %cidr, %why, "withdrawal not sent");
                let mut without = before;
                without.intent_at = None;
                let mut tx = self.begin(fence).await?;
                tx.save_prefix_state(&without, now).await?;
                tx.commit().await?;
                t.state = without;
                report.held.push((cidr, why));
                return Ok(());
            }
        };
        let call = self
            .client
            .set_advertised(&t.config.prefix_id, &t.config.bgp_prefix_id, false);
        let result = tokio::time::timeout(budget, call).await;
        let now = self.clock.now();
        let outcome = match &result {
            Ok(Ok(bgp)) => PatchOutcome::Done {
                modified_at: bgp.advertised_modified_at().map(whole_seconds),
            },
            Ok(Err(e)) => PatchOutcome::Failed {
                error: e.to_string(),
                ambiguous: e.is_ambiguous(),
                retry_at: retry_at(e, &before, now),
            },
            Err(_) => PatchOutcome::Failed {
                error: format!(
                    "no answer within the lease's remaining {} s; it may have gone through (the next reading tells)",
                    budget.as_secs()
                ),
                ambiguous: true,
                retry_at: now + chrono::Duration::minutes(1),
            },
        };
        let (mut state, recorded) = core::after_patch(&before, &outcome, now);
        let mut tx = self.begin(fence).await?;
        match recorded {
            Recorded::Success => {
                let record = self
                    .withdrawal_record(t.config, &before, now, request)
                    .await?;
                self.write(&mut tx, Write::Withdrawal(Box::new(record)), now)
                    .await?;
                report.withdrawn.push(cidr.clone());
            }
            Recorded::FirstFailure | Recorded::Failure => {
                let error = state.last_error.clone().unwrap_or_default();
                let notes = format!("attempts: {}; last error: {error}", state.attempts);
                match state.failure_history_id {
                    Some(id) => {
                        tx.update_withdrawal(id, WithdrawStatus::Failed, Some(now), Some(&notes))
                            .await?;
                    }
                    None => {
                        let row = self
                            .history(t.config, &state, now, WithdrawStatus::Failed, notes)
                            .await?;
                        let id = tx.insert_withdrawal(&row).await?;
                        state.failure_history_id = Some(id);
                        let message = Message::WithdrawalFailure(WithdrawalFailure {
                            prefix: cidr.clone(),
                            kind: if request.is_some() {
                                WithdrawKind::Scheduled
                            } else {
                                WithdrawKind::Automatic
                            },
                            error: error.clone(),
                            attempts: u32::try_from(state.attempts).unwrap_or(u32::MAX),
                            next_attempt_at: state.next_attempt_at,
                            at: now,
                        });
                        self.notifier.queue(&mut tx, &message, now).await?;
                    }
                }
                if let Some(r) = request {
                    tx.note_pending_withdrawal(r.id, &error, state.next_attempt_at, true)
                        .await?;
                }
                tracing::warn!(prefix = %cidr, error = %error, attempts = state.attempts, "withdrawal failed; retrying later");
                report.failed.push((cidr.clone(), error));
            }
        }
        tx.save_prefix_state(&state, now).await?;
        tx.commit().await?;
        t.state = state;
        Ok(())
    }

    /// The confirmation query over `range` for one prefix (split to stay within the dataset's
    /// `maxDuration`), judged bucket by bucket.
    async fn confirmation(&self, prefix: IpNet, range: Span) -> Confirmation {
        let a = &self.config.autowithdraw;
        let problems = self.datasets.problems();
        if !problems.is_empty() {
            return Confirmation::Unknown(format!(
                "the {} dataset cannot be queried",
                self.datasets.dataset()
            ));
        }
        let limits = self.datasets.limits(a.window, QUERY_LIMIT);
        let chunk = span(limits.max_window).max(chrono::Duration::minutes(5));
        let thresholds = Thresholds {
            attack_min_pps: a.attack_min_pps,
            attack_min_mbps: a.attack_min_mbps,
        };
        // Time older than the dataset keeps cannot be asked again (it was judged when it could
        // be; what Cloudflare no longer has cannot arrive late either).
        let mut start = match limits.oldest_queryable(self.clock.now(), a.interval) {
            Some(oldest) => range.start.max(oldest),
            None => range.start,
        };
        if start >= range.end {
            return Confirmation::Unknown(
                "the confirmation range is older than the dataset keeps".into(),
            );
        }
        let mut unknown = None;
        let mut attack_until = None;
        while start < range.end {
            let end = (start + chunk).min(range.end);
            let data_until = self.clock.now();
            let outcome = self
                .client
                .dropped_traffic_buckets(&DroppedTrafficQuery {
                    start,
                    end,
                    data_until,
                    probe_start: limits.probe_start(start, data_until),
                    mitigation_systems: &a.mitigation_systems,
                    prefixes: &[prefix],
                    limit: limits.limit,
                })
                .await;
            match judge_buckets(
                &outcome,
                Window { start, end },
                prefix,
                thresholds,
                self.clock.now(),
            ) {
                Confirmation::Calm => {}
                Confirmation::Attack { until } => attack_until = Some(until),
                Confirmation::Unknown(why) => {
                    unknown.get_or_insert(why);
                }
            }
            start = end;
        }
        match (attack_until, unknown) {
            (Some(until), _) => Confirmation::Attack { until },
            (None, Some(why)) => Confirmation::Unknown(why),
            (None, None) => Confirmation::Calm,
        }
    }

    /// Reads the calm-tracking dataset's settings when due (at start and hourly); a dataset
    /// that became unusable is told once on Telegram, and again when it is usable.
    async fn refresh_settings(&self, fence: &Fence, now: DateTime<Utc>) -> Result<(), CycleError> {
        let Some(unusable) = self.datasets.refresh(&self.client, now).await else {
            return Ok(());
        };
        let message = OperatorAlert::dataset(
            self.datasets.dataset(),
            unusable.as_deref(),
            "no window is judged calm, so nothing is withdrawn automatically",
            now,
        );
        let mut tx = self.begin(fence).await?;
        self.notifier
            .queue(&mut tx, &Message::OperatorAlert(message), now)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Compares the account's BGP prefixes with the config, at start and hourly: a configured
    /// BGP prefix id that is missing or has another CIDR is never acted on; an advertised
    /// prefix missing from the config is alerted as unmanaged. Returns the mismatched prefixes.
    async fn check_account(
        &self,
        fence: &Fence,
        now: DateTime<Utc>,
    ) -> Result<BTreeMap<IpNet, String>, CycleError> {
        let set = |v: Option<String>| -> BTreeSet<String> {
            v.unwrap_or_default()
                .split(',')
                .filter(|x| !x.is_empty())
                .map(str::to_owned)
                .collect()
        };
        let known: BTreeSet<String> = set(self.store.state(MISMATCH_KEY).await?);
        let mismatch = |s: &BTreeSet<String>| {
            s.iter()
                .filter_map(|c| c.parse::<IpNet>().ok())
                .map(|net| {
                    (
                        net,
                        "config does not match the Cloudflare account (see the alert)".to_owned(),
                    )
                })
                .collect::<BTreeMap<_, _>>()
        };
        let digest = prefixes_digest(&self.config.prefixes);
        let checked_for = self.store.state(ACCOUNT_CHECKED_FOR_KEY).await?;
        let (checked_digest, checked_by) = checked_for
            .as_deref()
            .and_then(|v| v.split_once(' '))
            .unwrap_or_default();
        let checked_at = self
            .store
            .state(ACCOUNT_CHECKED_KEY)
            .await?
            .as_deref()
            .and_then(from_db);
        let stored = core::AccountChecked {
            digest: checked_digest,
            holder: checked_by,
            at: checked_at,
        };
        if core::account_step(&stored, &digest, &self.holder, now, ACCOUNT_CHECK_EVERY)
            == core::AccountStep::UseStored
        {
            return Ok(mismatch(&known));
        }
        let account = match self.client.list_account_bgp_prefixes().await {
            Ok(a) => a,
            Err(e) => {
                if e.is_auth() {
                    self.alert_auth(fence, &e, now).await?;
                }
                tracing::warn!(error = %e, "cannot compare the config with the account; retrying next cycle");
                if core::AccountStep::on_failure(&stored, &digest) == core::AccountFallback::Stored
                {
                    // The last result was for this very section: it still holds.
                    return Ok(mismatch(&known));
                }
                // The section changed since the last check: no configured id can be trusted
                // until the account confirms it (never the previous config's result).
                let why = format!(
                    "the [[prefixes]] section changed and the account check has not succeeded since ({e}); not acting until it does"
                );
                return Ok(self
                    .config
                    .prefixes
                    .iter()
                    .map(|p| (p.cidr, why.clone()))
                    .collect());
            }
        };
        let mut tx = self.begin(fence).await?;
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
        tx.set_state(
            ACCOUNT_CHECKED_FOR_KEY,
            &format!("{digest} {}", self.holder),
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(mismatch(&mismatched))
    }

    /// Cloudflare refused the token: alerted once per episode.
    async fn alert_auth(
        &self,
        fence: &Fence,
        e: &mt_cloudflare::Error,
        now: DateTime<Utc>,
    ) -> Result<(), CycleError> {
        if self.store.state(AUTH_FAILED_KEY).await?.is_some() {
            return Ok(());
        }
        let mut tx = self.begin(fence).await?;
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

    /// While a prefix stays advertised longer than `advertised_reminder`, the message saying
    /// why it is not withdrawn, every `advertised_reminder` (recorded in the state).
    fn reminder(
        &self,
        cidr: &str,
        s: &mut PrefixState,
        why: &str,
        now: DateTime<Utc>,
    ) -> Option<Message> {
        let every = span(self.config.autowithdraw.advertised_reminder);
        let since = s.advertised_modified_at?;
        if !s.advertised || now - since < every || s.reminded_at.is_some_and(|r| now - r < every) {
            return None;
        }
        s.reminded_at = Some(now);
        Some(Message::OperatorAlert(OperatorAlert {
            title: "Prefix still advertised".into(),
            prefix: Some(cidr.to_owned()),
            details: format!(
                "advertised for {} h {} min and not withdrawn: {why}",
                (now - since).num_hours(),
                (now - since).num_minutes() % 60
            ),
            consequence: "traffic keeps going through Cloudflare until this clears".into(),
            at: now,
        }))
    }

    /// Scheduled withdrawal requests (`pending_withdrawals`, SPEC §5): from `withdraw_after` on,
    /// performed when [`core::request_gates`] and, after `pre_withdraw_command` and fresh
    /// re-reads, [`core::confirm_request`] allow it; intent, PATCH and outcome as for an
    /// automatic withdrawal. A refused request stays pending with `last_error` saying why; one
    /// from an earlier advertisement is marked failed and told once.
    async fn requests(
        &self,
        fence: &Fence,
        prefixes: &mut [Tracked<'_>],
        judged_until: DateTime<Utc>,
        now: DateTime<Utc>,
        report: &mut CycleReport,
    ) -> Result<(), CycleError> {
        for request in self.store.due_pending_withdrawals(now).await? {
            let target = request
                .prefix
                .as_deref()
                .and_then(|c| c.trim().parse::<IpNet>().ok())
                .and_then(|net| prefixes.iter().position(|t| t.config.cidr == net.trunc()));
            let Some(i) = target else {
                self.refuse_request(fence, &request, "not a configured prefix")
                    .await?;
                continue;
            };
            let t = &mut prefixes[i];
            let cidr = t.cidr();
            let rules = self.rules(t.config);
            let req = core::Request {
                created_at: request.created_at.as_deref().and_then(from_db),
            };
            let obs = core::RequestObservations {
                reading: &t.reading,
                holds: &t.holds,
                judged_until,
                last_start: t.last_start,
            };
            match core::request_gates(&t.state, &req, &obs, now, &rules) {
                RequestNext::Perform => {}
                RequestNext::Refuse(why) => {
                    tracing::info!(prefix = %cidr, request = request.id, %why, "scheduled withdrawal not performed now");
                    self.refuse_request(fence, &request, &why).await?;
                    continue;
                }
                RequestNext::Stale(why) => {
                    tracing::warn!(prefix = %cidr, request = request.id, %why, "scheduled withdrawal from an earlier advertisement");
                    let mut tx = self.begin(fence).await?;
                    if tx.fail_pending_withdrawal(request.id, &why).await? {
                        let alert = OperatorAlert {
                            title: "Scheduled withdrawal not performed".into(),
                            prefix: Some(cidr.clone()),
                            details: format!("pending_withdrawals row {}: {why}", request.id),
                            consequence: if t.state.advertised {
                                "the prefix stays advertised until it is withdrawn automatically or by hand".into()
                            } else {
                                "nothing to withdraw now (the prefix is not advertised); delete the row so a later request can be inserted".into()
                            },
                            at: now,
                        };
                        self.notifier
                            .queue(&mut tx, &Message::OperatorAlert(alert), now)
                            .await?;
                    }
                    tx.commit().await?;
                    continue;
                }
            }
            // The command first; the STARTs and the judged time are re-read after it,
            // immediately before the PATCH.
            let pre_withdraw = self.pre_withdraw(t.config).await.err();
            let newest = t
                .state
                .judged_through
                .map_or(judged_until, |j| j.min(judged_until));
            let starts = self.store.starts_since(newest - rules.window).await?;
            let recheck = core::RequestRecheck {
                last_start: core::last_counting_start(&starts, t.config.cidr).max(t.last_start),
                judged_until: self.judged_until().await?,
                pre_withdraw,
            };
            match core::confirm_request(&t.state, &recheck, self.clock.now(), &rules) {
                (_, Err(why)) => {
                    tracing::info!(prefix = %cidr, request = request.id, %why, "scheduled withdrawal held at the last check");
                    self.refuse_request(fence, &request, &why).await?;
                }
                (with_intent, Ok(())) => {
                    self.patch(fence, t, with_intent, Some(&request), report)
                        .await?;
                    // One attempt per cycle: the automatic path does not follow it.
                    t.next = Next::Idle;
                }
            }
        }
        Ok(())
    }

    /// The pending request (if any) for the prefix that was due by `now` and made during the
    /// incident `s` describes, whatever its retry time (a request whose PATCH timed out has a
    /// retry time ahead, yet its PATCH may have gone through).
    async fn request_of_incident(
        &self,
        p: &PrefixConfig,
        s: &PrefixState,
        now: DateTime<Utc>,
    ) -> Result<Option<mt_store::PendingWithdrawal>, CycleError> {
        Ok(self
            .store
            .all_pending_withdrawals()
            .await?
            .into_iter()
            .find(|r| {
                let prefix = r
                    .prefix
                    .as_deref()
                    .and_then(|c| c.trim().parse::<IpNet>().ok());
                let created = r.created_at.as_deref().and_then(from_db);
                let due = r.withdraw_after.as_deref().and_then(from_db);
                r.status.as_deref().unwrap_or("pending") == "pending"
                    && prefix.is_some_and(|net| net.trunc() == p.cidr)
                    && due.is_some_and(|d| d <= now)
                    && created.is_some_and(|c| s.advertised_modified_at.is_none_or(|m| c >= m))
            }))
    }

    /// A request not performed now: it stays pending with why.
    async fn refuse_request(
        &self,
        fence: &Fence,
        request: &mt_store::PendingWithdrawal,
        why: &str,
    ) -> Result<(), CycleError> {
        let mut tx = self.begin(fence).await?;
        tx.note_pending_withdrawal(request.id, why, None, false)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The judged time as persisted (re-read before a PATCH).
    async fn judged_until(&self) -> Result<DateTime<Utc>, CycleError> {
        Ok(self
            .store
            .state(JUDGED_UNTIL_KEY)
            .await?
            .as_deref()
            .and_then(from_db)
            .unwrap_or(DateTime::<Utc>::MIN_UTC))
    }

    /// The rows of a withdrawal of ours that went through: `s` is the incident's state before
    /// it; `request` the `pending_withdrawals` row it performed, if any.
    async fn withdrawal_record(
        &self,
        p: &PrefixConfig,
        s: &PrefixState,
        now: DateTime<Utc>,
        request: Option<&mt_store::PendingWithdrawal>,
    ) -> Result<WithdrawalRecord, CycleError> {
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
        let message = Message::WithdrawalSuccess(WithdrawalSuccess {
            prefix: p.cidr.to_string(),
            kind: if request.is_some() {
                WithdrawKind::Scheduled
            } else {
                WithdrawKind::Automatic
            },
            withdrawn_at: now,
            calm_for: s.calm_since.and_then(|c| (now - c).to_std().ok()),
            advertised_for: row
                .protection_duration_seconds
                .and_then(|x| u64::try_from(x).ok())
                .map(Duration::from_secs),
            peak_pps: Some(s.peak_pps),
            peak_mbps: Some(s.peak_mbps),
            mitigation_systems: Some(s.systems.clone()).filter(|x| !x.is_empty()),
            operator: "mt-autowithdraw".into(),
        });
        Ok(WithdrawalRecord {
            row,
            request: request.map(|r| r.id),
            message,
        })
    }

    /// Telemetry unknown for longer than `calm_period`: told once per episode, and when it
    /// recovers.
    async fn blind(
        &self,
        fence: &Fence,
        prefixes: &mut [Tracked<'_>],
        now: DateTime<Utc>,
    ) -> Result<(), CycleError> {
        let calm_period = span(self.config.autowithdraw.calm_period);
        let blind: Vec<usize> = (0..prefixes.len())
            .filter(|i| {
                let s = &prefixes[*i].state;
                s.advertised
                    && !s.blind_alerted
                    && s.unknown_since.is_some_and(|u| now - u > calm_period)
            })
            .collect();
        let recovered: Vec<usize> = (0..prefixes.len())
            .filter(|i| {
                let s = &prefixes[*i].state;
                s.blind_alerted && s.unknown_since.is_none()
            })
            .collect();
        if blind.is_empty() && recovered.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin(fence).await?;
        if !blind.is_empty() {
            let since = blind
                .iter()
                .filter_map(|i| prefixes[*i].state.unknown_since)
                .min()
                .unwrap_or(now);
            let message = Message::TelemetryBlind(TelemetryBlind {
                prefixes: blind.iter().map(|i| prefixes[*i].cidr()).collect(),
                since,
                reason: "dropped-traffic analytics could not be judged (see mt-autowithdraw's log)"
                    .into(),
            });
            self.notifier.queue(&mut tx, &message, now).await?;
            for i in &blind {
                prefixes[*i].state.blind_alerted = true;
            }
        }
        if !recovered.is_empty() {
            let message = Message::TelemetryRecovered(TelemetryRecovered {
                prefixes: recovered.iter().map(|i| prefixes[*i].cidr()).collect(),
                blind_for: calm_period.to_std().unwrap_or_default(),
                at: now,
            });
            self.notifier.queue(&mut tx, &message, now).await?;
            for i in &recovered {
                prefixes[*i].state.blind_alerted = false;
            }
        }
        for t in prefixes.iter() {
            tx.save_prefix_state(&t.state, now).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Keeps `prefix_calm_status` current for its readers (SPEC §7.6).
    async fn publish(
        &self,
        fence: &Fence,
        prefixes: &[Tracked<'_>],
        judged_until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), CycleError> {
        let window = span(self.config.autowithdraw.window);
        let mut open_starts = Vec::with_capacity(prefixes.len());
        for t in prefixes {
            let s = &t.state;
            // A counting START of this incident without an END since.
            let open = match t.last_start {
                Some(at) if s.advertised_modified_at.is_none_or(|m| at >= m) => {
                    self.store.last_end_since(&t.cidr(), at).await?.is_none()
                }
                _ => false,
            };
            open_starts.push(open);
        }
        let mut tx = self.begin(fence).await?;
        for (t, open_start) in prefixes.iter().zip(open_starts) {
            let s = &t.state;
            let recent_attack = s.calm_since.is_none()
                && s.last_attack_end
                    .is_some_and(|e| e + window >= judged_until);
            tx.upsert_prefix_calm_status(&CalmUpdate {
                prefix: &t.cidr(),
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
        Ok(())
    }
}

/// Cloudflare's record of a prefix, as the decision reads it.
fn reading_of(p: &PrefixConfig, bgp: &BgpPrefix) -> Reading {
    Reading::Seen {
        advertised: bgp.advertised(),
        // Stored times have whole seconds; Cloudflare's have fractions. Compared unrounded,
        // every cycle would see a "change" and restart the calm clock forever.
        modified_at: bgp.advertised_modified_at().map(whole_seconds),
        locked: bgp.locked(),
        cidr_matches: bgp
            .cidr
            .as_deref()
            .and_then(|c| c.trim().parse::<IpNet>().ok())
            .is_some_and(|c| c.trunc() == p.cidr),
    }
}

/// When to try a failed withdrawal again: after Cloudflare's 15-minute hold, its
/// `Retry-After`, or the capped backoff.
fn retry_at(e: &mt_cloudflare::Error, s: &PrefixState, now: DateTime<Utc>) -> DateTime<Utc> {
    if e.is_prefix_hold() {
        return s
            .advertised_modified_at
            .map_or(now + chrono::Duration::minutes(1), |m| {
                (m + CHANGE_HOLD).max(now + chrono::Duration::minutes(1))
            });
    }
    if let Some(after) = e.retry_after() {
        return now + span(after);
    }
    let i = usize::try_from(s.attempts)
        .unwrap_or(0)
        .min(BACKOFF_SECS.len() - 1);
    now + chrono::Duration::seconds(BACKOFF_SECS[i])
}

/// A digest of the `[[prefixes]]` section's ids (order-independent): a change means the account
/// check must run again before any configured id is trusted.
fn prefixes_digest(prefixes: &[PrefixConfig]) -> String {
    use sha2::{Digest, Sha256};
    let mut lines: Vec<String> = prefixes
        .iter()
        .map(|p| format!("{}|{}|{}", p.cidr, p.prefix_id, p.bgp_prefix_id))
        .collect();
    lines.sort();
    hex::encode(Sha256::digest(lines.join("\n")))
}

/// `t` without its fraction of a second, as the database stores times.
fn whole_seconds(t: DateTime<Utc>) -> DateTime<Utc> {
    t.with_nanosecond(0).unwrap_or(t)
}
