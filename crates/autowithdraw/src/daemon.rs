//! The daemon around the cycle: one cycle every `interval` (only the lease holder acts),
//! `/metrics` and `/healthz` on `metrics_listen`, and the Telegram sender, wired by the daemon
//! harness ([`mt_common::service`]).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{DateTime, Utc};
use mt_common::metrics::{Counter, Exposition};
use mt_common::service::{Attempt, Beat, Every, Job, Service};
use mt_notify::{Sender, SenderOptions};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::cycle::Engine;

// The cycle deadline (`cycle::CYCLE_DEADLINE`, 240 s) is shorter than the unit's 10-minute
// `WatchdogSec` and than the lease (`lease::lease_ttl`); the cycle job's progress bound is
// interval + deadline + 30 s.
use crate::cycle::CYCLE_DEADLINE;

/// The daemon's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Cycles run.
    pub cycles: Counter,
    /// Cycles that failed or timed out.
    pub failures: Counter,
    /// Cycles that stopped judging early (telemetry unknown).
    pub unknown: Counter,
    /// Prefixes withdrawn.
    pub withdrawals: Counter,
    /// Withdrawal attempts that failed.
    pub withdraw_failures: Counter,
    /// Times this instance became the lease holder (a new fencing token).
    pub lease_acquired: Counter,
    /// Cycles that found the lease taken over mid-cycle (slower than the lease, or paused).
    pub lease_lost: Counter,
    last_success: Mutex<Option<DateTime<Utc>>>,
    passive: Mutex<bool>,
    lease_token: Mutex<Option<i64>>,
}

/// Everything `run` needs besides the metrics listener.
#[derive(Debug)]
pub struct Daemon {
    /// The cycle.
    pub engine: Engine,
    /// Telegram sender timing.
    pub sender: SenderOptions,
    /// Counters.
    pub metrics: Arc<Metrics>,
}

#[derive(Clone)]
struct Http {
    engine: Engine,
    metrics: Arc<Metrics>,
    started: DateTime<Utc>,
}

/// Runs cycles until `shutdown` through the daemon harness ([`mt_common::service`]): the
/// cycle as a periodic job, the Telegram sender, a database probe and `/metrics` + `/healthz`
/// on `listener`; the lease is released and the database closed on the way out.
pub async fn run(
    daemon: Daemon,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    use anyhow::Context as _;

    let Daemon {
        engine,
        sender,
        metrics,
    } = daemon;
    let interval = engine.config.autowithdraw.interval;
    let sender = Sender::new(
        &engine.config,
        engine.store.clone(),
        engine.clock.clone(),
        sender,
    )
    .context("cannot start the Telegram sender")?;
    let addr = listener.local_addr()?;
    let http = Http {
        engine: engine.clone(),
        metrics: metrics.clone(),
        started: engine.clock.now(),
    };
    let app = Router::new()
        .route("/metrics", get(metrics_page))
        .route("/healthz", get(healthz))
        .with_state(http);

    let mut service = Service::new("mt-autowithdraw", shutdown, STOP_BOUND);
    sender.supervise(&mut service);
    service.serve_metrics(listener, app);
    engine.store.supervise_probe(&mut service);
    service.periodic(
        "cycle",
        Every {
            interval,
            deadline: CYCLE_DEADLINE,
            // A failed cycle is retried at the next tick: the cycle itself retries Cloudflare.
            backoff: None,
            beat: Beat::AfterEveryAttempt,
        },
        CycleJob {
            engine: engine.clone(),
            metrics,
        },
    );
    let store = engine.store.clone();
    let holder = engine.holder.clone();
    service.on_stop("release the autowithdraw lease", async move {
        // A PATCH's intent is committed before it is sent and reconciled with Cloudflare's
        // reading at the next start; unfinished transactions roll back.
        if let Err(e) = store.release_lease(crate::cycle::LEASE_NAME, &holder).await {
            tracing::warn!(error = %e, "cannot release the lease; it expires by itself");
        }
        store.close().await;
    });
    service
        .run(&format!(
            "judging every {}s{}; metrics on {addr}",
            interval.as_secs(),
            if engine.config.autowithdraw.dry_run {
                " (DRY RUN)"
            } else {
                ""
            }
        ))
        .await
}

/// How long the tasks may take to stop: the sender's and the cycle's [`mt_common::shutdown::GRACE`]
/// plus the metrics listener's drain, with a margin (well inside the unit's `TimeoutStopSec`).
const STOP_BOUND: Duration = Duration::from_secs(5);

/// The cycle as the harness's periodic job: one cycle per tick (only the lease holder acts),
/// its report turned into metrics and logs.
struct CycleJob {
    engine: Engine,
    metrics: Arc<Metrics>,
}

impl Job for CycleJob {
    async fn attempt(&mut self) -> Attempt {
        let (engine, metrics) = (&self.engine, &self.metrics);
        metrics.cycles.inc();
        match engine.cycle().await {
            Ok(report) => {
                *metrics
                    .last_success
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some(engine.clock.now());
                *metrics
                    .passive
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = report.passive;
                {
                    let mut token = metrics
                        .lease_token
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner);
                    if report.lease_token.is_some() && report.lease_token != *token {
                        metrics.lease_acquired.inc();
                        tracing::info!(token = report.lease_token, "this instance holds the lease");
                    }
                    if report.lease_token.is_some() || report.passive {
                        *token = report.lease_token;
                    }
                }
                if report.lease_lost {
                    metrics.lease_lost.inc();
                }
                metrics.withdrawals.add(report.withdrawn.len() as u64);
                metrics.withdraw_failures.add(report.failed.len() as u64);
                if let Some(reason) = &report.unknown {
                    metrics.unknown.inc();
                    tracing::warn!(%reason, "telemetry not judged this cycle");
                }
                for (prefix, why) in &report.held {
                    tracing::debug!(%prefix, %why, "held");
                }
                Attempt::Done
            }
            Err(e) => {
                metrics.failures.inc();
                tracing::error!(error = %e, "cycle failed; nothing withdrawn");
                Attempt::Failed
            }
        }
    }

    fn abandoned(&mut self, _deadline: Duration) {
        self.metrics.failures.inc();
    }
}

async fn metrics_page(State(http): State<Http>) -> Response {
    let m = &http.metrics;
    let now = http.engine.clock.now();
    let age = m
        .last_success
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .map(|t| (now - t).num_seconds() as f64)
        .unwrap_or(-1.0);
    let passive = *m.passive.lock().unwrap_or_else(PoisonError::into_inner);
    let (mut advertised, mut advertised_for, mut calm) = (Vec::new(), Vec::new(), Vec::new());
    for p in &http.engine.config.prefixes {
        let cidr = p.cidr.to_string();
        if let Ok(Some(s)) = http.engine.store.prefix_state(&cidr).await {
            advertised.push((cidr.clone(), if s.advertised { 1.0 } else { 0.0 }));
            advertised_for.push((
                cidr.clone(),
                s.advertised_modified_at
                    .filter(|_| s.advertised)
                    .map(|t| (now - t).num_seconds().max(0) as f64)
                    .unwrap_or(0.0),
            ));
            calm.push((
                cidr,
                s.calm_since
                    .map(|c| (now - c).num_seconds().max(0) as f64)
                    .unwrap_or(0.0),
            ));
        }
    }
    let judged_age = match http
        .engine
        .store
        .state(crate::cycle::JUDGED_UNTIL_KEY)
        .await
    {
        Ok(Some(t)) => mt_common::timefmt::from_db(&t)
            .map(|t| (now - t).num_seconds() as f64)
            .unwrap_or(-1.0),
        _ => -1.0,
    };
    let mut page = Exposition::new();
    page.build_info("mt-autowithdraw", mt_common::build_info!())
        .gauge(
        "mt_autowithdraw_judged_until_age_seconds",
        "Seconds between now and the end of the analytics judged so far (includes analytics_delay; -1: none yet).",
        judged_age,
    )
    .counter(
        "mt_autowithdraw_cycles_total",
        "Cycles run.",
        m.cycles.get(),
    )
    .counter(
        "mt_autowithdraw_cycle_failures_total",
        "Cycles that failed or timed out.",
        m.failures.get(),
    )
    .counter(
        "mt_autowithdraw_unknown_total",
        "Cycles whose telemetry could not be judged (API errors, rate limits, lag).",
        m.unknown.get(),
    )
    .counter(
        "mt_autowithdraw_withdrawals_total",
        "Prefixes withdrawn.",
        m.withdrawals.get(),
    )
    .counter(
        "mt_autowithdraw_withdraw_failures_total",
        "Withdrawal attempts that failed.",
        m.withdraw_failures.get(),
    )
    .gauge(
        "mt_autowithdraw_last_success_age_seconds",
        "Seconds since the last successful cycle (-1: none yet).",
        age,
    )
    .gauge(
        "mt_autowithdraw_passive",
        "1 while another instance holds the lease.",
        if passive { 1.0 } else { 0.0 },
    )
    .counter(
        "mt_autowithdraw_lease_acquired_total",
        "Times this instance became the lease holder (a new fencing token); rising on several instances means the lease flaps.",
        m.lease_acquired.get(),
    )
    .counter(
        "mt_autowithdraw_lease_lost_total",
        "Cycles that found the lease taken over by another instance mid-cycle (this one was slower than the lease, or paused); they stopped without writing or PATCHing.",
        m.lease_lost.get(),
    )
    .gauge_vec(
        "mt_autowithdraw_prefix_advertised",
        "1 when Cloudflare advertises the prefix.",
        "prefix",
        &advertised,
    )
    .gauge_vec(
        "mt_autowithdraw_prefix_advertised_seconds",
        "Seconds since Cloudflare began advertising the prefix (0 while withdrawn); compare with mt_autowithdraw_advertised_reminder_seconds.",
        "prefix",
        &advertised_for,
    )
    .gauge(
        "mt_autowithdraw_advertised_reminder_seconds",
        "The configured advertised_reminder: a prefix advertised longer than this gets a Telegram reminder.",
        http.engine.config.autowithdraw.advertised_reminder.as_secs_f64(),
    )
    .gauge_vec(
        "mt_autowithdraw_prefix_calm_seconds",
        "Seconds of judged calm in the current stretch.",
        "prefix",
        &calm,
    )
    .gauge_vec(
        "mt_autowithdraw_dataset_usable",
        "1 when the analytics dataset's settings allow the calm query, 0 when not (disabled, fields missing: nothing is judged calm), -1 before the first reading.",
        "dataset",
        &[(
            http.engine.datasets.dataset().to_owned(),
            http.engine.datasets.usable_gauge(),
        )],
    );
    if let Ok(o) = http.engine.store.outbox_stats().await {
        mt_notify::outbox_metrics(&mut page, &o);
    }
    page.response()
}

async fn healthz(State(http): State<Http>) -> Response {
    let now = http.engine.clock.now();
    let limit =
        chrono::Duration::from_std(http.engine.config.autowithdraw.interval.saturating_mul(3))
            .unwrap_or(chrono::Duration::MAX);
    let last = *http
        .metrics
        .last_success
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let cycling = match last {
        Some(t) => now - t <= limit,
        None => now - http.started <= limit,
    };
    let database = http.engine.store.ping().await;
    let ok = cycling && database.is_ok();
    let body = json!({
        "status": if ok { "ok" } else { "error" },
        "version": env!("CARGO_PKG_VERSION"),
        "database": database.map(|()| "ok".to_owned()).unwrap_or_else(|e| e.to_string()),
        "last_successful_cycle": last.map(mt_common::timefmt::to_db),
        "dry_run": http.engine.config.autowithdraw.dry_run,
    });
    (
        if ok {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        },
        axum::Json(body),
    )
        .into_response()
}
