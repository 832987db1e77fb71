//! `mt-dashboard`: the SOC's web view and manual controls (issue #10).
//!
//! Server-rendered HTML (askama: compile-time checked, HTML-escaped templates) plus one small
//! script that ticks countdowns. It reads only the database; its actions go through
//! `mt-control`, the code `mtctl` uses, so they leave the same rows and audit entries.
//!
//! Safety by construction: every page needs a session; only operators act; every form carries
//! the session's CSRF token; cookies are `HttpOnly; SameSite=Strict` (and `Secure`); a strict
//! Content-Security-Policy allows no inline script or style; bodies are bounded; logins are
//! rate limited per user name and per client address.

pub mod api;
pub mod auth;
pub mod error;
pub mod pages;
pub mod state;
pub mod views;

pub use state::{AppState, Authed, cross_site};

use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::http::header::{self, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use mt_common::metrics::Exposition;
use mt_common::service::Service;
use tokio_util::sync::CancellationToken;

/// Largest request body accepted (forms are tiny).
pub const MAX_BODY_BYTES: usize = 16 * 1024;
/// Longest a request may take (a manual withdrawal waits for Cloudflare, retries included).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// Every response carries these.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

async fn security_headers(request: Request, next: Next) -> Response {
    let is_static = request.uri().path().starts_with("/static/");
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("same-origin"),
    );
    if !is_static {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

async fn healthz(State(state): State<AppState>) -> Response {
    match state.store.ping().await {
        Ok(()) => (StatusCode::OK, "ok\n").into_response(),
        Err(e) => {
            // The detail goes to the log: /healthz answers without a login.
            tracing::warn!(error = %e, "health check: database unavailable");
            (StatusCode::SERVICE_UNAVAILABLE, "database unavailable\n").into_response()
        }
    }
}

/// `/metrics` (no login, like `/healthz`; the proxy examples in `ops/` keep it off the
/// Internet): logins, actions, the outbox, and which build answers.
async fn metrics(State(state): State<AppState>) -> Response {
    let m = &state.metrics;
    let mut page = Exposition::new();
    page.build_info("mt-dashboard", mt_common::build_info!())
        .counter_vec(
            "mt_dashboard_logins_total",
            "Login attempts by outcome (ok, failed, locked: refused after too many failures).",
            "outcome",
            &m.logins,
        )
        .counter_vec(
            "mt_dashboard_actions_total",
            "Operator actions (withdraw, advertise, pin, pause, …) by outcome (ok, failed, denied).",
            "outcome",
            &m.actions,
        );
    if let Ok(o) = state.store.outbox_stats().await {
        mt_notify::outbox_metrics(&mut page, &o);
    }
    page.response()
}

fn static_file(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        body,
    )
        .into_response()
}

/// Every route.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(pages::prefixes))
        .route("/login", get(pages::login_form).post(pages::login))
        .route("/logout", post(pages::logout))
        .route(
            "/actions/{action}",
            get(pages::action_form).post(pages::action),
        )
        .route("/attacks", get(pages::attacks))
        .route("/analytics", get(pages::analytics))
        .route("/webhooks", get(pages::webhooks))
        .route("/withdrawals", get(pages::withdrawals))
        .route("/notifications", get(pages::notifications))
        .route("/audit", get(pages::audit))
        .route("/api/prefixes", get(api::prefixes))
        .route("/api/attacks", get(api::attacks))
        .route("/api/analytics", get(api::analytics))
        .route("/api/webhooks", get(api::webhooks))
        .route("/api/withdrawals", get(api::withdrawals))
        .route("/api/notifications", get(api::notifications))
        .route("/api/audit", get(api::audit))
        .route(
            "/static/app.css",
            get(|| async {
                static_file("text/css; charset=utf-8", include_str!("../static/app.css"))
            }),
        )
        .route(
            "/static/app.js",
            get(|| async {
                static_file(
                    "text/javascript; charset=utf-8",
                    include_str!("../static/app.js"),
                )
            }),
        )
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .fallback(pages::not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(
            MAX_BODY_BYTES,
        ))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            REQUEST_TIMEOUT,
        ))
        .layer(axum::middleware::from_fn(security_headers))
        .with_state(state)
}

/// Serves on `listener` until `shutdown` through the daemon harness ([`mt_common::service`])
/// and its hardened listener (header-read and idle timeouts, a connection cap); in-flight
/// requests get [`DRAIN`] to finish.
pub async fn run(
    state: AppState,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    let store = state.store.clone();
    let limits = mt_common::listener::Limits {
        header_read_timeout: state.config.dashboard.header_read_timeout,
        max_connections: state.config.dashboard.max_connections,
        drain: DRAIN,
    };
    let app = router(state);
    let mut service = Service::new("mt-dashboard", shutdown, STOP_BOUND);
    service.http(
        "dashboard listener",
        listener,
        app,
        limits,
        mt_common::listener::OpenConnections::default(),
    );
    store.supervise_probe(&mut service);
    service.on_stop("close the database", async move { store.close().await });
    service.run(&format!("dashboard on http://{addr}")).await
}

/// How long in-flight requests may finish after SIGTERM.
pub const DRAIN: Duration = Duration::from_secs(5);

/// How long the tasks may take to stop: the drain, with a margin.
const STOP_BOUND: Duration = Duration::from_secs(7);
