//! The Prefixes page: every configured prefix with its state, calm time, pins and pending
//! withdrawals.

use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use mt_common::timefmt::from_db;
use mt_control::{PrefixStatus, duration};
use mt_store::{Hold, PendingWithdrawal};

use super::{Layout, PREFIXES_REFRESH_SECS, failed, render};
use crate::state::{AppState, Authed};
use crate::views::{bits, count};

/// A pin as shown.
#[derive(Debug)]
pub(super) struct PinView {
    pub(super) by: String,
    pub(super) reason: String,
    pub(super) since: String,
    pub(super) until: Option<String>,
}

/// One row of the Prefixes page, formatted.
#[derive(Debug)]
pub(super) struct PrefixRow {
    pub(super) prefix: String,
    pub(super) description: String,
    pub(super) advertised: &'static str,
    pub(super) advertised_class: &'static str,
    pub(super) attack: &'static str,
    pub(super) attack_class: &'static str,
    pub(super) locked: &'static str,
    pub(super) calm_since: String,
    pub(super) withdrawal: String,
    pub(super) due_epoch: Option<i64>,
    pub(super) held: Option<String>,
    pub(super) pin: Option<PinView>,
    pub(super) judged: String,
    pub(super) dropped: String,
    pub(super) can_withdraw: bool,
    pub(super) can_advertise: bool,
}

fn yes_no(v: Option<bool>) -> (&'static str, &'static str) {
    match v {
        Some(true) => ("yes", "yes"),
        Some(false) => ("no", "no"),
        None => ("?", "unknown"),
    }
}

pub(super) fn prefix_row(p: &PrefixStatus) -> PrefixRow {
    let (advertised, advertised_class) = yes_no(p.advertised);
    let (attack, attack_class) = yes_no(p.under_attack);
    let held = p.blocked_by.clone().filter(|_| p.advertised == Some(true));
    let due_epoch = match (&held, p.seconds_to_withdrawal) {
        (None, Some(_)) => p
            .withdraw_due_at
            .as_deref()
            .and_then(from_db)
            .map(|t| t.timestamp()),
        _ => None,
    };
    let withdrawal = match (&held, p.seconds_to_withdrawal) {
        (Some(_), _) => "held".to_owned(),
        (None, Some(0)) => "due now".to_owned(),
        (None, Some(s)) => format!("in {}", duration(s)),
        _ => "-".to_owned(),
    };
    PrefixRow {
        prefix: p.prefix.clone(),
        description: p.description.clone(),
        advertised,
        advertised_class,
        attack,
        attack_class,
        locked: yes_no(p.locked).0,
        calm_since: p.calm_since.clone().unwrap_or_else(|| "-".into()),
        withdrawal,
        due_epoch,
        held,
        pin: p.pinned.as_ref().map(|h: &Hold| PinView {
            by: h.by.clone(),
            reason: h.reason.clone(),
            since: h.since.clone(),
            until: h.until.clone(),
        }),
        judged: p
            .last_judgement_age_seconds
            .map(|s| format!("{} ago", duration(s)))
            .unwrap_or_else(|| "never".into()),
        dropped: format!(
            "{} pkts · {}",
            count(p.dropped_packets),
            bits(p.dropped_bits)
        ),
        can_withdraw: p.advertised != Some(false),
        can_advertise: p.advertised != Some(true),
    }
}

#[derive(Template)]
#[template(path = "prefixes.html")]
struct PrefixesPage {
    layout: Layout,
    rows: Vec<PrefixRow>,
    paused: Option<Hold>,
    dropped_window: String,
    pending: Vec<PendingWithdrawal>,
    notifications_queued: i64,
    notifications_failing: i64,
}

/// `GET /`.
pub async fn prefixes(State(state): State<AppState>, authed: Authed) -> Response {
    let now = state.clock.now();
    let status = match mt_control::status(&state.config, &state.store, now).await {
        Ok(s) => s,
        Err(e) => return failed(&state, &authed, e.into()),
    };
    render(
        StatusCode::OK,
        &PrefixesPage {
            layout: Layout::new(&state, &authed, "/", PREFIXES_REFRESH_SECS),
            rows: status.prefixes.iter().map(prefix_row).collect(),
            paused: status.paused,
            dropped_window: humantime::format_duration(std::time::Duration::from_secs(
                status.dropped_window_seconds.max(0).unsigned_abs(),
            ))
            .to_string(),
            pending: status.pending_withdrawals,
            notifications_queued: status.notifications_queued,
            notifications_failing: status.notifications_failing,
        },
    )
}
