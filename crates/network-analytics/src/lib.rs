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
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{DateTime, Utc};
use mt_common::metrics::{Counter, Exposition};
use mt_notify::{Notifier, Sender, SenderOptions};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::time::Instant;
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

/// Polls until `shutdown`, serving `/metrics` and `/healthz` on `listener` and running the
/// Telegram sender.
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
    let sender_stop = CancellationToken::new();
    let mut sender_task = tokio::spawn(sender.run(sender_stop.clone()));

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
    let server = tokio::spawn(
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.clone().cancelled_owned())
            .into_future(),
    );

    mt_common::systemd::ready(&format!(
        "polling every {}s; metrics on {addr}",
        interval.as_secs()
    ));
    tracing::info!(%addr, "metrics listening");
    let ping_every = mt_common::systemd::watchdog_interval().unwrap_or(Duration::from_secs(3600));
    let notifier = Notifier::new(&config.telegram);
    let (mut next_poll, mut next_watch) = (Instant::now(), Instant::now());
    let mut failures = 0u32;
    let result = loop {
        let wake = next_poll.min(next_watch).min(Instant::now() + ping_every);
        tokio::select! {
            () = shutdown.cancelled() => break Ok(()),
            joined = &mut sender_task => break Err(anyhow::anyhow!("the Telegram sender stopped unexpectedly: {joined:?}")),
            () = tokio::time::sleep_until(wake) => {}
        }
        // The loop itself is alive (a failing Cloudflare is reported by /healthz, not by a
        // restart).
        mt_common::systemd::watchdog();
        if Instant::now() >= next_watch {
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
                        matches!(watch, Watch::Alerted | Watch::StillStale)
                }
                Err(e) => tracing::warn!(error = %e, "autowithdraw watchdog check failed"),
            }
            next_watch = Instant::now() + autowithdraw_interval;
        }
        if Instant::now() >= next_poll {
            poller.metrics.polls.inc();
            let polled = tokio::select! {
                polled = tokio::time::timeout(POLL_DEADLINE, poller.poll_once()) => polled
                    .unwrap_or_else(|_| Err(poll::PollError::Deadline(POLL_DEADLINE))),
                () = mt_common::shutdown::grace_elapsed(&shutdown, mt_common::shutdown::GRACE) => {
                    // Safe: the end of the last successful poll is kept, so the next start
                    // covers this one's window.
                    tracing::warn!(grace_secs = mt_common::shutdown::GRACE.as_secs(), "shutdown: the poll in progress was abandoned");
                    break Ok(());
                }
            };
            match polled {
                Ok(_) => {
                    failures = 0;
                    *poller
                        .metrics
                        .last_success
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner) = Some(poller.clock.now());
                    next_poll = Instant::now() + interval;
                }
                Err(e) => {
                    failures += 1;
                    poller.metrics.failures.inc();
                    let delay = FIRST_RETRY
                        .saturating_mul(2u32.saturating_pow(failures - 1))
                        .min(interval);
                    tracing::warn!(error = %e, failures, retry_in_secs = delay.as_secs(), "poll failed; the next one covers the gap");
                    next_poll = Instant::now() + delay;
                }
            }
        }
    };
    mt_common::systemd::stopping();
    sender_stop.cancel();
    let _ = server.await;
    if !sender_task.is_finished() {
        let _ = sender_task.await;
    }
    poller.store.close().await;
    result
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
    page.gauge_vec(
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
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        page.finish(),
    )
        .into_response()
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
