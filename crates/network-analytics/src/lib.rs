//! `mt-network-analytics` (SPEC §8): every `interval`, dosd dropped-traffic events over
//! `lookback` (covering any gap since the last successful poll), enriched with ASN and country,
//! stored once each (the original suite's `event_hash`), one Telegram summary per poll with new
//! events; and an independent watchdog on autowithdraw's judgements.

pub mod geoip;
pub mod poll;
pub mod watchdog;

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{DateTime, Utc};
use mt_common::metrics::{Counter, Exposition};
use mt_common::service::{Attempt, Backoff, Beat, Every, FnJob, Job, Service};
use mt_notify::{Notifier, Sender, SenderOptions};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::poll::Poller;
use crate::watchdog::Watch;

/// Longest a poll may take (its queries and retries included); a slower one counts as failed.
/// Shorter than the 10-minute `WatchdogSec` of the unit, since the loop pings between polls.
const POLL_DEADLINE: Duration = Duration::from_secs(240);

/// First retry delay after a failed poll; doubles per failure, capped at `interval` (retrying
/// faster than that would spend the shared GraphQL budget).
const FIRST_RETRY: Duration = Duration::from_secs(30);

/// The daemon's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Polls attempted.
    pub polls: Counter,
    /// Polls that failed.
    pub failures: Counter,
    /// GraphQL queries made.
    pub queries: Counter,
    /// Rows fetched.
    pub fetched: Counter,
    /// Rows that were new.
    pub new_rows: Counter,
    /// Polls that could not fetch everything (budget or limit).
    pub incomplete: Counter,
    /// Catch-ups that reached past the data's history.
    pub gap_exceeded: Counter,
    /// GeoIP files reloaded and refused while running.
    pub geoip: std::sync::Arc<geoip::ReloadCounters>,
    last_success: Mutex<Option<DateTime<Utc>>>,
    autowithdraw_stale: Mutex<bool>,
}

impl Metrics {
    fn last_success(&self) -> Option<DateTime<Utc>> {
        *self
            .last_success
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Everything `run` needs besides the metrics listener.
#[derive(Debug)]
pub struct Daemon {
    /// Validated configuration.
    pub config: mt_common::Config,
    /// Poll machinery (store, client, enrichment, clock, options, counters).
    pub poller: Poller,
    /// Telegram sender timing.
    pub sender: SenderOptions,
}

#[derive(Clone)]
struct Http {
    poller: Poller,
    interval: Duration,
    started: DateTime<Utc>,
}

/// Polls until `shutdown` through the daemon harness ([`mt_common::service`]): the poll and
/// the autowithdraw watchdog as periodic jobs, the Telegram sender, a database probe and
/// `/metrics` + `/healthz` on `listener`.
pub async fn run(
    daemon: Daemon,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    use anyhow::Context as _;

    let Daemon {
        config,
        poller,
        sender,
    } = daemon;
    let interval = config.network_analytics.interval;
    let autowithdraw_interval = config.autowithdraw.interval;
    let sender = Sender::new(&config, poller.store.clone(), poller.clock.clone(), sender)
        .context("cannot start the Telegram sender")?;
    let addr = listener.local_addr()?;
    let http = Http {
        poller: poller.clone(),
        interval,
        started: poller.clock.now(),
    };
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .with_state(http);

    let mut service = Service::new("mt-network-analytics", shutdown, STOP_BOUND);
    sender.supervise(&mut service);
    service.serve_metrics(listener, app);
    poller.store.supervise_probe(&mut service);
    service.periodic(
        "poll",
        Every {
            interval,
            deadline: POLL_DEADLINE,
            // Retrying faster than `interval` would spend the shared GraphQL budget; the next
            // successful poll covers the gap (the end of the last one is kept).
            backoff: Some(Backoff {
                first: FIRST_RETRY,
                cap: interval,
            }),
            beat: Beat::AfterEveryAttempt,
        },
        PollJob(poller.clone()),
    );
    let notifier = Notifier::new(&config.telegram);
    let watched = poller.clone();
    service.periodic(
        "autowithdraw watchdog",
        Every {
            interval: autowithdraw_interval,
            deadline: WATCH_DEADLINE,
            backoff: None,
            beat: Beat::AfterEveryAttempt,
        },
        FnJob(move || {
            let (poller, notifier) = (watched.clone(), notifier.clone());
            async move {
                match watchdog::check(
                    &poller.store,
                    &notifier,
                    &poller.clock,
                    autowithdraw_interval,
                )
                .await
                {
                    Ok(watch) => {
                        *poller
                            .metrics
                            .autowithdraw_stale
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner) =
                            matches!(watch, Watch::Alerted | Watch::StillStale);
                        Attempt::Done
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "autowithdraw watchdog check failed");
                        Attempt::Failed
                    }
                }
            }
        }),
    );
    // SIGHUP reloads the GeoIP files (`systemctl reload`); without a handler it would kill
    // the daemon, so it is installed even when no database is configured.
    let hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(|e| tracing::warn!(error = %e, "cannot handle SIGHUP; GeoIP files are still checked periodically"))
        .ok();
    let (geoip, counters) = (poller.geoip.clone(), poller.metrics.geoip.clone());
    let check = config.network_analytics.geoip_check_interval;
    service.spawn("geoip reload", None, move |task| {
        geoip::keep_fresh(geoip, check, hangup, task.stop, counters)
    });
    let store = poller.store.clone();
    service.on_stop("close the database", async move { store.close().await });
    service
        .run(&format!(
            "polling every {}s; metrics on {addr}",
            interval.as_secs()
        ))
        .await
}

/// How long the tasks may take to stop: the sender's and the poll's
/// [`mt_common::shutdown::GRACE`] plus the metrics listener's drain, with a margin.
const STOP_BOUND: Duration = Duration::from_secs(5);

/// Longest a check of autowithdraw's judgements may take (two reads and maybe one write).
const WATCH_DEADLINE: Duration = Duration::from_secs(30);

/// The poll as the harness's periodic job.
struct PollJob(Poller);

impl Job for PollJob {
    async fn attempt(&mut self) -> Attempt {
        let poller = &self.0;
        poller.metrics.polls.inc();
        match poller.poll_once().await {
            Ok(_) => {
                *poller
                    .metrics
                    .last_success
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some(poller.clock.now());
                Attempt::Done
            }
            Err(e) => {
                poller.metrics.failures.inc();
                tracing::warn!(error = %e, "poll failed; the next one covers the gap");
                Attempt::Failed
            }
        }
    }

    fn abandoned(&mut self, deadline: Duration) {
        self.0.metrics.failures.inc();
        tracing::warn!(
            error = %poll::PollError::Deadline(deadline),
            "poll failed; the next one covers the gap"
        );
    }
}

async fn metrics(State(http): State<Http>) -> Response {
    let m = &http.poller.metrics;
    let age = m
        .last_success()
        .map(|t| (http.poller.clock.now() - t).num_seconds() as f64)
        .unwrap_or(-1.0);
    let stale = *m
        .autowithdraw_stale
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let mut page = Exposition::new();
    page.build_info("mt-network-analytics", mt_common::build_info!())
        .gauge_vec(
        "mt_analytics_dataset_usable",
        "1 when the analytics dataset's settings allow the events query, 0 when not (disabled, fields missing: nothing is fetched), -1 before the first reading.",
        "dataset",
        &[(
            http.poller.datasets.dataset().to_owned(),
            http.poller.datasets.usable_gauge(),
        )],
    )
    .counter(
        "mt_analytics_polls_total",
        "Polls attempted.",
        m.polls.get(),
    )
    .counter(
        "mt_analytics_poll_failures_total",
        "Polls that failed (retried with backoff).",
        m.failures.get(),
    )
    .counter(
        "mt_analytics_graphql_queries_total",
        "GraphQL queries made.",
        m.queries.get(),
    )
    .counter(
        "mt_analytics_rows_fetched_total",
        "Event rows fetched.",
        m.fetched.get(),
    )
    .counter(
        "mt_analytics_rows_new_total",
        "Event rows stored (new).",
        m.new_rows.get(),
    )
    .counter(
        "mt_analytics_incomplete_polls_total",
        "Polls that hit the row limit or query budget.",
        m.incomplete.get(),
    )
    .counter(
        "mt_analytics_gap_exceeded_total",
        "Catch-ups that reached past the data's history.",
        m.gap_exceeded.get(),
    )
    .counter(
        "mt_analytics_geoip_reloads_total",
        "GeoIP database files loaded anew while running (changed on disk, or SIGHUP).",
        m.geoip.reloads.get(),
    )
    .counter(
        "mt_analytics_geoip_refused_total",
        "New GeoIP file versions refused (unreadable, corrupt, missing); the previous data stayed in use.",
        m.geoip.refused.get(),
    )
    .gauge(
        "mt_analytics_last_success_age_seconds",
        "Seconds since the last successful poll (-1: none yet).",
        age,
    )
    .gauge(
        "mt_autowithdraw_judgements_stale",
        "1 while autowithdraw's judgements are stale with prefixes advertised.",
        if stale { 1.0 } else { 0.0 },
    );
    if let Ok(o) = http.poller.store.outbox_stats().await {
        mt_notify::outbox_metrics(&mut page, &o);
    }
    page.response()
}

async fn healthz(State(http): State<Http>) -> Response {
    let now = http.poller.clock.now();
    let limit = chrono::Duration::from_std(http.interval.saturating_mul(3))
        .unwrap_or(chrono::Duration::MAX);
    let last = http.poller.metrics.last_success();
    let polling = match last {
        Some(t) => now - t <= limit,
        None => now - http.started <= limit,
    };
    let database = http.poller.store.ping().await;
    let ok = polling && database.is_ok();
    let body = json!({
        "status": if ok { "ok" } else { "error" },
        "version": env!("CARGO_PKG_VERSION"),
        "database": database.map(|()| "ok".to_owned()).unwrap_or_else(|e| e.to_string()),
        "last_successful_poll": last.map(mt_common::timefmt::to_db),
    });
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}
