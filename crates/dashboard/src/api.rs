//! `GET /api/...`: the JSON of each view (same session as the pages; see the README).
//!
//! | Path | Returns |
//! |---|---|
//! | `/api/prefixes` | `mtctl status --json`: per-prefix status, pause, pending withdrawals, stats |
//! | `/api/attacks?prefix=&since=&until=` | incidents (START → ADVERTISE → END → WITHDRAW) |
//! | `/api/analytics?window=1h\|24h\|7d` | dropped-traffic series and top vectors/targets/ASNs/countries |
//! | `/api/webhooks?limit=` | newest webhooks with payloads |
//! | `/api/withdrawals?limit=` | newest `withdrawal_history` rows |
//! | `/api/notifications` | outbox counts, waiting/failing, refused and recent messages, paused chats |
//! | `/api/audit?limit=` | newest audit rows |

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::error::AppError;
use crate::pages::{AttackFilter, LIST_LIMIT, WindowQuery, attack_range, window};
use crate::state::{AppState, Authed};
use crate::views;

/// A JSON error body `{"error": "…"}`.
pub fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

fn reply<T: Serialize>(result: mt_store::Result<T>) -> Response {
    match result {
        Ok(v) => Json(v).into_response(),
        Err(e) => AppError::from(e).into_response(),
    }
}

/// `?limit=` (1 ..= 1000, default 200).
#[derive(Debug, Default, Deserialize)]
pub struct Limit {
    #[serde(default)]
    limit: Option<u32>,
}

impl Limit {
    fn get(&self) -> u32 {
        self.limit.unwrap_or(LIST_LIMIT).clamp(1, 1000)
    }
}

/// `GET /api/prefixes`.
pub async fn prefixes(State(state): State<AppState>, _: Authed) -> Response {
    reply(mt_control::status(&state.config, &state.store, state.clock.now()).await)
}

/// `GET /api/attacks`.
pub async fn attacks(
    State(state): State<AppState>,
    _: Authed,
    Query(f): Query<AttackFilter>,
) -> Response {
    match attack_range(&state, &f) {
        Ok((prefix, since, until)) => {
            reply(views::attacks(&state.store, prefix, since, until, state.clock.now()).await)
        }
        Err(e) => AppError::BadRequest(e).into_response(),
    }
}

/// `GET /api/analytics`.
pub async fn analytics(
    State(state): State<AppState>,
    _: Authed,
    Query(q): Query<WindowQuery>,
) -> Response {
    match window(&q) {
        Ok(w) => reply(views::analytics(&state.store, w, state.clock.now()).await),
        Err(e) => AppError::BadRequest(e).into_response(),
    }
}

/// `GET /api/webhooks`.
pub async fn webhooks(
    State(state): State<AppState>,
    _: Authed,
    Query(l): Query<Limit>,
) -> Response {
    reply(state.store.webhook_events(l.get(), None, None).await)
}

/// `GET /api/withdrawals`.
pub async fn withdrawals(
    State(state): State<AppState>,
    _: Authed,
    Query(l): Query<Limit>,
) -> Response {
    reply(state.store.withdrawal_history(l.get()).await)
}

/// The notifications view.
#[derive(Debug, Serialize)]
struct Notifications {
    stats: mt_store::OutboxStats,
    waiting: Vec<mt_store::QueuedNotification>,
    failed: Vec<mt_store::QueuedNotification>,
    paused_chats: Vec<mt_store::ChatPause>,
    recent: Vec<mt_store::NotificationRecord>,
}

/// `GET /api/notifications`.
pub async fn notifications(State(state): State<AppState>, _: Authed) -> Response {
    let read = async {
        Ok(Notifications {
            stats: state.store.outbox_stats().await?,
            waiting: state.store.queued_notifications(LIST_LIMIT).await?,
            failed: state.store.failed_notifications(LIST_LIMIT).await?,
            paused_chats: state.store.chat_pauses().await?,
            recent: state.store.recent_notifications(50).await?,
        })
    };
    reply(read.await)
}

/// `GET /api/audit`.
pub async fn audit(State(state): State<AppState>, _: Authed, Query(l): Query<Limit>) -> Response {
    reply(state.store.audit_log(l.get()).await)
}
