//! What every handler shares: the application state, the session extractor and the
//! cross-site check.

use std::sync::Arc;

use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use axum::http::header;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use mt_common::clock::SharedClock;
use mt_common::config::Config;
use mt_common::metrics::CounterVec;
use mt_store::Store;

use crate::api;
use crate::auth::{Auth, SESSION_COOKIE, Session, cookies};

/// Shared by every handler.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The suite's config.
    pub config: Arc<Config>,
    /// The database.
    pub store: Store,
    /// Source of "now".
    pub clock: SharedClock,
    /// Users and sessions.
    pub auth: Arc<Auth>,
    /// The one Cloudflare client of the process (not rebuilt per click).
    pub cloudflare: mt_control::Cloudflare,
    /// What `/metrics` counts.
    pub metrics: Arc<Metrics>,
}

/// The dashboard's counters (`/metrics`).
#[derive(Debug, Default)]
pub struct Metrics {
    /// Login attempts by outcome: `ok`, `failed`, `locked`.
    pub logins: CounterVec,
    /// Actions (withdraw, advertise, pin, …) by outcome: `ok`, `failed`, `denied`.
    pub actions: CounterVec,
}

impl AppState {
    /// From the config; fails if a user's password hash is malformed.
    pub fn new(config: Config, store: Store, clock: SharedClock) -> Result<Self, String> {
        let auth = Auth::new(&config.dashboard)?;
        Ok(Self::with_auth(config, store, clock, auth))
    }

    /// With users already checked (the binary checks them before opening the database).
    pub fn with_auth(config: Config, store: Store, clock: SharedClock, auth: Auth) -> Self {
        Self {
            cloudflare: mt_control::Cloudflare::from_config(
                &config,
                mt_cloudflare::RetryPolicy::default(),
            ),
            config: Arc::new(config),
            store,
            clock,
            auth: Arc::new(auth),
            metrics: Arc::default(),
        }
    }
}

/// A request with a live session.
#[derive(Debug, Clone)]
pub struct Authed {
    /// The session token (from the cookie).
    pub token: String,
    /// The session.
    pub session: Session,
}

impl FromRequestParts<AppState> for Authed {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let now = state.clock.now();
        let found = parts
            .headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|h| cookies(h, SESSION_COOKIE))
            .find_map(|t| state.auth.session(t, now).map(|s| (t.to_owned(), s)));
        match found {
            Some((token, session)) => Ok(Self { token, session }),
            None if parts.uri.path().starts_with("/api/") => Err(api::error(
                StatusCode::UNAUTHORIZED,
                "log in first (POST /login, then send the mt_session cookie)",
            )),
            None => Err(Redirect::to("/login").into_response()),
        }
    }
}

impl OptionalFromRequestParts<AppState> for Authed {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(
            <Authed as FromRequestParts<AppState>>::from_request_parts(parts, state)
                .await
                .ok(),
        )
    }
}

/// Whether the browser says the request comes from another site (`Sec-Fetch-Site`).
pub fn cross_site(headers: &HeaderMap) -> bool {
    headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("cross-site"))
}
