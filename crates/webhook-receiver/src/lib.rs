//! `mt-webhook-receiver` (SPEC §6): receives Cloudflare alert webhooks and never loses one.
//!
//! A webhook is answered 2xx only after its row (with the raw body), derived rows and queued
//! Telegram message are committed in one transaction. The archive copy is written from the
//! database moments later ([`archive::ArchiveWriter`]); Telegram delivery happens later too, in
//! the outbox sender this daemon also runs (one sender across all daemons).

pub mod archive;
pub mod error;
pub mod ingest;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use mt_common::SharedClock;
use mt_common::config::Config;
use mt_common::metrics::{Counter, CounterVec, Exposition, Histogram, LATENCY_BUCKETS};
use mt_common::service::Service;
use mt_notify::{Notifier, Sender, SenderOptions};
use mt_store::Store;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::archive::{Archive, ArchiveWriter};
use crate::error::AppError;
use crate::ingest::{Outcome, Writer, ingest};
use mt_alerts::KNOWN_TYPES;

/// The header Cloudflare puts the shared secret in.
pub const AUTH_HEADER: &str = "cf-webhook-auth";

/// Shared by every request.
#[derive(Clone)]
pub struct AppState {
    config: Arc<Config>,
    store: Store,
    clock: SharedClock,
    archiver: ArchiveWriter,
    writer: Writer,
    /// SHA-256 of the secret; `None` only in explicitly allowed unauthenticated mode.
    secret_digest: Option<[u8; 32]>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("store", &self.store)
            .field("authenticated", &self.secret_digest.is_some())
            .finish_non_exhaustive()
    }
}

/// The receiver's counters.
#[derive(Debug)]
pub struct Metrics {
    /// Accepted webhooks by alert type (known types, else `other`; `test` for Save and Test).
    pub accepted: CounterVec,
    /// Duplicate deliveries.
    pub duplicate: Counter,
    /// Rejected requests by reason.
    pub rejected: CounterVec,
    /// Time to process an accepted or duplicate webhook.
    pub latency: Histogram,
    /// TCP connections open now (capped by `webhook.max_connections`).
    pub open_connections: mt_common::listener::OpenConnections,
    /// Transactions of the group-commit writer.
    pub batches: Counter,
    /// Webhooks those transactions held (with `batches`: the mean batch size).
    pub batched: Counter,
    /// Time each of those transactions took, `BEGIN` to commit (its sum's rate is how busy the
    /// writer is: near 1, webhooks queue for the disk).
    pub batch_time: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            accepted: CounterVec::default(),
            duplicate: Counter::default(),
            rejected: CounterVec::default(),
            latency: Histogram::new(LATENCY_BUCKETS),
            open_connections: mt_common::listener::OpenConnections::default(),
            batches: Counter::default(),
            batched: Counter::default(),
            batch_time: Histogram::new(LATENCY_BUCKETS),
        }
    }
}

impl AppState {
    /// Builds the state and starts the ingest writer task. `secret` is `None` only when
    /// `webhook.allow_unauthenticated` is set (the caller checks that). Opens the archive
    /// directory (it must be writable); its writer runs in [`run`] (tests drive it through
    /// [`AppState::archive_pending`]).
    pub async fn new(
        config: Config,
        store: Store,
        clock: SharedClock,
        secret: Option<&SecretString>,
    ) -> Result<Self, std::io::Error> {
        let archive = Arc::new(Archive::open(&config.webhook.archive_dir)?);
        let archiver = ArchiveWriter::new(store.clone(), archive, clock.clone());
        let notifier = Notifier::new(&config.telegram);
        let metrics = Arc::new(Metrics::default());
        Ok(Self {
            writer: Writer::spawn(store.clone(), notifier, archiver.clone(), metrics.clone())?,
            archiver,
            config: Arc::new(config),
            store,
            clock,
            secret_digest: secret.map(|s| Sha256::digest(s.expose_secret().as_bytes()).into()),
            metrics,
        })
    }

    /// The archive writer (the daemon runs it as the task "archive writer").
    pub fn archive_writer(&self) -> ArchiveWriter {
        self.archiver.clone()
    }

    /// Writes the archive copies of every stored webhook that has none yet (what the archive
    /// writer task does continuously); returns how many files were written.
    pub async fn archive_pending(&self) -> anyhow::Result<u64> {
        self.archiver
            .drain(
                &CancellationToken::new(),
                &mt_common::service::Progress::new(),
            )
            .await
    }

    /// The counters (for tests and benchmarks).
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }
}

/// The HTTP routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route(
            &state.config.webhook.path,
            post(webhook).fallback(method_not_allowed),
        )
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .fallback(any(not_found))
        .with_state(state)
}

impl AppState {
    /// Counts and answers a failed request.
    fn fail(&self, error: AppError) -> Response {
        if let Some(reason) = error.reason() {
            self.metrics.rejected.inc(reason);
        }
        error.into_response()
    }

    fn reject(&self, reason: &'static str, status: StatusCode, message: &str) -> Response {
        self.fail(AppError::refused(reason, status, message))
    }

    fn authorised(&self, headers: &HeaderMap) -> bool {
        let Some(expected) = &self.secret_digest else {
            return true;
        };
        let Some(given) = headers.get(AUTH_HEADER) else {
            return false;
        };
        // Digests have a fixed length, so the comparison leaks neither content nor length.
        let given: [u8; 32] = Sha256::digest(given.as_bytes()).into();
        given.ct_eq(expected).into()
    }

    /// The sender (SPEC §6): the TCP peer, or, when the peer is a trusted proxy, the
    /// right-most `X-Forwarded-For` hop that is not one (the left-most is whatever the client
    /// wrote).
    fn source_ip(&self, peer: Option<SocketAddr>, headers: &HeaderMap) -> Option<String> {
        let forwarded = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok());
        Some(
            mt_common::forwarded::client_ip(
                &self.config.webhook.trusted_proxies,
                peer?.ip(),
                forwarded,
            )
            .to_string(),
        )
    }
}

async fn webhook(State(state): State<AppState>, request: Request) -> Response {
    let started = Instant::now();
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let (parts, body) = request.into_parts();
    if !state.authorised(&parts.headers) {
        return state.reject(
            "unauthorized",
            StatusCode::UNAUTHORIZED,
            "missing or wrong cf-webhook-auth",
        );
    }
    let limit = state.config.webhook.max_body_bytes;
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return state.reject("too_large", StatusCode::PAYLOAD_TOO_LARGE, "body too large");
    }
    let bytes = match read_body(body, limit, state.config.webhook.request_timeout).await {
        Ok(bytes) => bytes,
        Err(BodyError::TooLarge) => {
            return state.reject("too_large", StatusCode::PAYLOAD_TOO_LARGE, "body too large");
        }
        Err(BodyError::Timeout) => {
            return state.reject(
                "timeout",
                StatusCode::REQUEST_TIMEOUT,
                "body not received in time",
            );
        }
        Err(BodyError::Read) => {
            return state.reject(
                "read_error",
                StatusCode::BAD_REQUEST,
                "body could not be read",
            );
        }
    };
    let Ok(raw) = std::str::from_utf8(&bytes) else {
        return state.reject(
            "bad_json",
            StatusCode::BAD_REQUEST,
            "body is not UTF-8 JSON",
        );
    };
    if let Err(problem) = mt_alerts::check_shape(raw.as_bytes()) {
        return state.reject(
            "bad_json",
            StatusCode::BAD_REQUEST,
            &format!("refused JSON: {problem}"),
        );
    }
    let parsed: Value = match serde_json::from_str(raw) {
        Ok(v) => v,
        Err(e) => {
            let message = format!("invalid JSON: {e}");
            return state.reject("bad_json", StatusCode::BAD_REQUEST, &message);
        }
    };
    let Value::Object(object) = parsed else {
        return state.reject(
            "not_object",
            StatusCode::BAD_REQUEST,
            "body is not a JSON object",
        );
    };
    let source_ip = state.source_ip(peer, &parts.headers);

    let result = ingest(&state, raw, &object, source_ip).await;
    state.metrics.latency.observe(started.elapsed());
    match result {
        Ok((Outcome::Accepted(id), c)) => {
            let label = match c.alert_type.as_deref() {
                None => "test",
                Some(t) if KNOWN_TYPES.contains(&t) => t,
                Some(_) => "other",
            };
            state.metrics.accepted.inc(label);
            tracing::info!(id, alert_type = c.alert_type.as_deref().unwrap_or("-"), alert_id = %c.alert_id, prefix = c.prefix.as_deref().unwrap_or("-"), "webhook accepted");
            (
                StatusCode::OK,
                axum::Json(json!({ "status": "accepted", "id": id })),
            )
                .into_response()
        }
        Ok((Outcome::Duplicate(id), c)) => {
            state.metrics.duplicate.inc();
            tracing::info!(id, alert_id = %c.alert_id, "duplicate webhook ignored");
            (
                StatusCode::OK,
                axum::Json(json!({ "status": "duplicate", "id": id })),
            )
                .into_response()
        }
        Err(e) => state.fail(AppError::NotStored(e)),
    }
}

enum BodyError {
    TooLarge,
    Timeout,
    Read,
}

async fn read_body(body: Body, limit: usize, timeout: Duration) -> Result<Bytes, BodyError> {
    let collect = Limited::new(body, limit).collect();
    match tokio::time::timeout(timeout, collect).await {
        Err(_) => Err(BodyError::Timeout),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => Err(BodyError::TooLarge),
        Ok(Err(_)) => Err(BodyError::Read),
    }
}

async fn method_not_allowed(State(state): State<AppState>) -> Response {
    state.reject("method", StatusCode::METHOD_NOT_ALLOWED, "use POST")
}

async fn not_found() -> Response {
    AppError::NotFound.into_response()
}

async fn healthz(State(state): State<AppState>) -> Response {
    let version = env!("CARGO_PKG_VERSION");
    let checked = async {
        state.store.ping().await?;
        state.store.archive_backlog().await
    };
    match checked.await {
        Ok(backlog) => {
            let behind = backlog
                .oldest
                .map(|t| (state.clock.now() - t).num_seconds().max(0))
                .unwrap_or(0);
            let archive_ok = behind <= archive::HEALTHY_BACKLOG_AGE.as_secs() as i64;
            (
                if archive_ok {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                },
                axum::Json(json!({
                    "status": if archive_ok { "ok" } else { "degraded" },
                    "version": version,
                    "database": "ok",
                    "archive": if archive_ok { "ok".to_owned() } else { format!("{} webhooks wait for their archive copy, the oldest for {behind} s", backlog.rows) },
                })),
            )
                .into_response()
        }
        // The endpoint is public: the error text (paths, SQLite messages) goes to the log only.
        Err(e) => {
            tracing::error!(error = %e, "healthz: the database does not answer");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(json!({ "status": "error", "version": version, "database": "error" })),
            )
                .into_response()
        }
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    let m = &state.metrics;
    let mut page = Exposition::new();
    page.build_info("mt-webhook-receiver", mt_common::build_info!())
        .counter_vec(
            "mt_webhooks_accepted_total",
            "Webhooks stored, by alert type.",
            "alert_type",
            &m.accepted,
        )
        .counter(
            "mt_webhooks_duplicate_total",
            "Duplicate deliveries answered without side effects.",
            m.duplicate.get(),
        )
        .counter_vec(
            "mt_webhooks_rejected_total",
            "Requests refused or not stored, by reason.",
            "reason",
            &m.rejected,
        )
        .histogram(
            "mt_webhook_duration_seconds",
            "Time to store a webhook (parse, transaction; the archive copy comes later).",
            &m.latency,
        )
        .counter(
            "mt_webhook_batches_total",
            "Transactions of the group-commit writer (one WAL fsync each).",
            m.batches.get(),
        )
        .counter(
            "mt_webhook_batched_total",
            "Webhooks written by those transactions (divided by the batches: the mean batch size).",
            m.batched.get(),
        )
        .histogram(
            "mt_webhook_batch_duration_seconds",
            "Time of each group-commit transaction, BEGIN to durable commit (rate of the sum: how busy the writer is).",
            &m.batch_time,
        )
        .gauge(
            "mt_webhook_open_connections",
            "TCP connections open now (at most webhook.max_connections).",
            m.open_connections.get() as f64,
        );
    match state.store.archive_backlog().await {
        Ok(b) => {
            let age = b
                .oldest
                .map(|t| (state.clock.now() - t).num_seconds().max(0) as f64)
                .unwrap_or(0.0);
            page.gauge(
                "mt_webhook_archive_backlog",
                "Stored webhooks whose archive copy is not written yet.",
                b.rows as f64,
            )
            .gauge(
                "mt_webhook_archive_backlog_age_seconds",
                "Seconds the oldest of them has waited (0: none).",
                age,
            );
        }
        Err(e) => tracing::warn!(error = %e, "archive backlog unavailable"),
    }
    match state.store.outbox_stats().await {
        Ok(o) => mt_notify::outbox_metrics(&mut page, &o),
        Err(e) => tracing::warn!(error = %e, "outbox stats unavailable"),
    }
    page.response()
}

/// Everything `run` needs besides the listener.
#[derive(Debug)]
pub struct Daemon {
    /// Validated configuration.
    pub config: Config,
    /// The open database.
    pub store: Store,
    /// Source of "now".
    pub clock: SharedClock,
    /// The webhook secret (`None`: unauthenticated mode, explicitly allowed).
    pub secret: Option<SecretString>,
    /// Telegram sender timing.
    pub sender: SenderOptions,
}

/// Serves webhooks on `listener` and runs the Telegram sender until `shutdown`, through the
/// daemon harness ([`mt_common::service`]); in-flight requests get [`DRAIN`] to finish. Fails
/// if the archive is unusable or the sender cannot start.
pub async fn run(
    daemon: Daemon,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    use anyhow::Context as _;

    let Daemon {
        config,
        store,
        clock,
        secret,
        sender,
    } = daemon;
    let sender = Sender::new(&config, store.clone(), clock.clone(), sender)
        .context("cannot start the Telegram sender")?;
    let state = AppState::new(config, store.clone(), clock, secret.as_ref())
        .await
        .context("cannot prepare webhook.archive_dir (it must be a writable directory)")?;
    let addr = listener.local_addr()?;
    let limits = mt_common::listener::Limits {
        header_read_timeout: state.config.webhook.header_read_timeout,
        max_connections: state.config.webhook.max_connections,
        drain: DRAIN,
    };
    let open = state.metrics().open_connections.clone();
    let archiver = state.archive_writer();
    let app = router(state);

    let mut service = Service::new("mt-webhook-receiver", shutdown, STOP_BOUND);
    sender.supervise(&mut service);
    service.http("webhook listener", listener, app, limits, open);
    service.spawn(
        "archive writer",
        Some(archive::PROGRESS_BOUND),
        move |task| archiver.run(task),
    );
    store.supervise_probe(&mut service);
    service.on_stop("close the database", async move { store.close().await });
    service.run(&format!("accepting webhooks on {addr}")).await
}

/// How long in-flight requests may finish after SIGTERM (an unacknowledged webhook is
/// redelivered by Cloudflare; an acknowledged one is already committed).
pub const DRAIN: std::time::Duration = std::time::Duration::from_secs(5);

/// How long the tasks may take to stop: the drain, with a margin.
const STOP_BOUND: Duration = Duration::from_secs(7);
