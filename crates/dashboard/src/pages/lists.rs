//! The list pages: webhooks, withdrawals, notifications and the audit log.

use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use mt_control::duration;
use mt_store::{AuditEntry, WebhookEvent};

use super::{LIST_LIMIT, Layout, PAYLOAD_CHARS, dash, failed, render};
use crate::state::{AppState, Authed};

#[derive(Debug)]
struct WebhookRow {
    received_at: Option<String>,
    alert_type: Option<String>,
    event_state: Option<String>,
    policy_name: Option<String>,
    target_ip: Option<String>,
    target_prefix: Option<String>,
    alert_id: Option<String>,
    action_taken: Option<String>,
    payload: String,
}

impl From<WebhookEvent> for WebhookRow {
    fn from(w: WebhookEvent) -> Self {
        let payload = w.payload.unwrap_or_default();
        let payload = match serde_json::from_str::<serde_json::Value>(&payload) {
            Ok(v) => serde_json::to_string_pretty(&v).unwrap_or(payload),
            Err(_) => payload,
        };
        let mut shown: String = payload.chars().take(PAYLOAD_CHARS).collect();
        if shown.len() < payload.len() {
            shown.push_str("\n… (truncated; the full payload is in /api/webhooks)");
        }
        Self {
            received_at: w.received_at,
            alert_type: w.alert_type,
            event_state: w.event_state,
            policy_name: w.policy_name,
            target_ip: w.target_ip,
            target_prefix: w.target_prefix,
            alert_id: w.alert_id,
            action_taken: w.action_taken,
            payload: shown,
        }
    }
}

#[derive(Template)]
#[template(path = "webhooks.html")]
struct WebhooksPage {
    layout: Layout,
    rows: Vec<WebhookRow>,
    limit: u32,
}

/// `GET /webhooks`.
pub async fn webhooks(State(state): State<AppState>, authed: Authed) -> Response {
    match state.store.webhook_events(LIST_LIMIT, None, None).await {
        Ok(rows) => render(
            StatusCode::OK,
            &WebhooksPage {
                layout: Layout::new(&state, &authed, "/webhooks", 0),
                rows: rows.into_iter().map(WebhookRow::from).collect(),
                limit: LIST_LIMIT,
            },
        ),
        Err(e) => failed(&state, &authed, e.into()),
    }
}

#[derive(Debug)]
struct WithdrawalRow {
    withdrawn_at: String,
    prefix: String,
    method: String,
    status: String,
    status_class: &'static str,
    advertised_at: String,
    attack_ended_at: String,
    protected: String,
    attack_id: String,
    policy_name: String,
    notes: String,
}

#[derive(Template)]
#[template(path = "withdrawals.html")]
struct WithdrawalsPage {
    layout: Layout,
    rows: Vec<WithdrawalRow>,
}

/// `GET /withdrawals`.
pub async fn withdrawals(State(state): State<AppState>, authed: Authed) -> Response {
    let rows = match state.store.withdrawal_history(LIST_LIMIT).await {
        Ok(r) => r,
        Err(e) => return failed(&state, &authed, e.into()),
    };
    let rows = rows
        .into_iter()
        .map(|w| WithdrawalRow {
            withdrawn_at: dash(w.withdrawn_at.as_deref()),
            prefix: dash(w.prefix.as_deref()),
            method: dash(w.withdraw_method.as_deref()),
            status_class: match w.status.as_deref() {
                Some("success") => "good",
                Some("failed") => "bad",
                _ => "",
            },
            status: dash(w.status.as_deref()),
            advertised_at: dash(w.advertised_at.as_deref()),
            attack_ended_at: dash(w.attack_ended_at.as_deref()),
            protected: w.protection_duration_seconds.map_or("-".into(), duration),
            attack_id: dash(w.attack_id.as_deref()),
            policy_name: dash(w.policy_name.as_deref()),
            notes: w.notes.unwrap_or_default(),
        })
        .collect();
    render(
        StatusCode::OK,
        &WithdrawalsPage {
            layout: Layout::new(&state, &authed, "/withdrawals", 0),
            rows,
        },
    )
}

#[derive(Template)]
#[template(path = "notifications.html")]
struct NotificationsPage {
    layout: Layout,
    stats: mt_store::OutboxStats,
    queued: Vec<mt_store::QueuedNotification>,
    failed: Vec<mt_store::QueuedNotification>,
    paused: Vec<mt_store::ChatPause>,
    recent: Vec<mt_store::NotificationRecord>,
}

/// `GET /notifications`.
pub async fn notifications(State(state): State<AppState>, authed: Authed) -> Response {
    let read = async {
        Ok::<_, mt_store::Error>((
            state.store.outbox_stats().await?,
            state.store.queued_notifications(LIST_LIMIT).await?,
            state.store.failed_notifications(LIST_LIMIT).await?,
            state.store.chat_pauses().await?,
            state.store.recent_notifications(50).await?,
        ))
    };
    match read.await {
        Ok((stats, queued, failed, paused, recent)) => render(
            StatusCode::OK,
            &NotificationsPage {
                layout: Layout::new(&state, &authed, "/notifications", 0),
                stats,
                queued,
                failed,
                paused,
                recent,
            },
        ),
        Err(e) => failed(&state, &authed, e.into()),
    }
}

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage {
    layout: Layout,
    rows: Vec<AuditEntry>,
}

/// `GET /audit`.
pub async fn audit(State(state): State<AppState>, authed: Authed) -> Response {
    match state.store.audit_log(LIST_LIMIT).await {
        Ok(rows) => render(
            StatusCode::OK,
            &AuditPage {
                layout: Layout::new(&state, &authed, "/audit", 0),
                rows,
            },
        ),
        Err(e) => failed(&state, &authed, e.into()),
    }
}
