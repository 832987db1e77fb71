//! The operator's actions (withdraw, advertise, pin, pause): the confirmation forms, the CSRF
//! and role checks, and the call into `mt_control`.

use askama::Template;
use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::header::HeaderMap;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Redirect, Response};
use mt_common::timefmt::to_db;
use mt_control::{Actor, AdvertiseOutcome, ControlError, Via};
use serde::Deserialize;

use super::prefixes::prefix_row;
use super::{Layout, error_page, not_found, render};
use crate::auth::{Flash, tokens_match};
use crate::state::{AppState, Authed, cross_site};

#[derive(Template)]
#[template(path = "confirm.html")]
struct ConfirmPage {
    layout: Layout,
    action: &'static str,
    verb: &'static str,
    prefix: String,
    warning: &'static str,
    facts: Vec<String>,
}

#[derive(Template)]
#[template(path = "pause.html")]
struct PausePage {
    layout: Layout,
}

#[derive(Template)]
#[template(path = "pin.html")]
struct PinPage {
    layout: Layout,
    prefix: String,
}

/// `?prefix=` of the action forms.
/// A form carrying only the CSRF token (and maybe a prefix, reason, duration).
#[derive(Debug, Default, Deserialize)]
pub struct ActionForm {
    #[serde(default)]
    pub(super) csrf: String,
    #[serde(default)]
    prefix: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    duration: String,
}

#[derive(Debug, Deserialize)]
pub struct PrefixQuery {
    #[serde(default)]
    prefix: String,
}

/// `GET /actions/{withdraw|advertise|pin}?prefix=…`: the confirmation step.
pub async fn action_form(
    State(state): State<AppState>,
    authed: Authed,
    Path(action): Path<String>,
    Query(q): Query<PrefixQuery>,
) -> Response {
    if !authed.session.is_operator() {
        return operators_only(&state, &authed);
    }
    if action == "pause" {
        return render(
            StatusCode::OK,
            &PausePage {
                layout: Layout::new(&state, &authed, "/", 0),
            },
        );
    }
    let prefix = match mt_control::require_configured(&state.config, &q.prefix) {
        Ok(p) => p.cidr.to_string(),
        Err(e) => {
            return error_page(
                &state,
                &authed,
                StatusCode::BAD_REQUEST,
                "Unknown prefix",
                e.to_string(),
            );
        }
    };
    if action == "pin" {
        return render(
            StatusCode::OK,
            &PinPage {
                layout: Layout::new(&state, &authed, "/", 0),
                prefix,
            },
        );
    }
    let (action, verb, warning) = match action.as_str() {
        "withdraw" => (
            "withdraw",
            "Withdraw",
            "Withdrawing sends this prefix's traffic straight to the origin again, unprotected. If the attack is still running, the origin takes it. Cloudflare applies the change in about 15 minutes and refuses another change for 15 minutes.",
        ),
        "advertise" => (
            "advertise",
            "Advertise",
            "Advertising routes this prefix's traffic through Cloudflare's scrubbing (takes effect in 2-7 minutes). Cloudflare refuses another change for 15 minutes.",
        ),
        _ => return not_found(Uri::from_static("/actions")).await,
    };
    let now = state.clock.now();
    let mut facts = Vec::new();
    match mt_control::prefix_statuses(&state.config, &state.store, now).await {
        Ok((rows, _)) => {
            if let Some(p) = rows.iter().find(|p| p.prefix == prefix) {
                let row = prefix_row(p);
                facts.push(format!(
                    "Advertised: {} · under attack: {} · locked: {}",
                    row.advertised, row.attack, row.locked
                ));
                facts.push(format!("Calm since: {}", row.calm_since));
                facts.push(format!("Automatic withdrawal: {}", row.withdrawal));
                facts.push(format!("Dropped recently: {}", row.dropped));
                if let Some(pin) = &row.pin {
                    facts.push(format!("Pinned by {}: {}", pin.by, pin.reason));
                }
            }
        }
        Err(e) => facts.push(format!("Status unavailable: {e}")),
    }
    render(
        StatusCode::OK,
        &ConfirmPage {
            layout: Layout::new(&state, &authed, "/", 0),
            action,
            verb,
            prefix,
            warning,
            facts,
        },
    )
}

/// `POST /actions/{withdraw|advertise|pin|unpin}`: operators only, CSRF token required.
pub async fn action(
    State(state): State<AppState>,
    authed: Authed,
    Path(action): Path<String>,
    headers: HeaderMap,
    Form(form): Form<ActionForm>,
) -> Response {
    if cross_site(&headers) || !tokens_match(&authed.session.csrf, &form.csrf) {
        audit_denied(
            &state,
            &authed,
            &action,
            &form.prefix,
            "missing, wrong or cross-site CSRF token",
        );
        state.metrics.actions.inc("denied");
        return csrf_rejected(&state, &authed);
    }
    if !authed.session.is_operator() {
        audit_denied(
            &state,
            &authed,
            &action,
            &form.prefix,
            "viewers may not act",
        );
        state.metrics.actions.inc("denied");
        return operators_only(&state, &authed);
    }
    if !matches!(
        action.as_str(),
        "withdraw" | "advertise" | "pin" | "unpin" | "pause" | "resume"
    ) {
        return not_found(Uri::from_static("/actions")).await;
    }
    // The action runs in its own task: a closed tab or a proxy timeout must not cancel it
    // between Cloudflare's answer and the rows that record it.
    let task = tokio::spawn(perform(
        state.clone(),
        authed.session.user.clone(),
        action,
        form,
    ));
    let flash = match task.await {
        Ok(flash) => flash,
        Err(e) => Flash {
            ok: false,
            text: format!("the action failed unexpectedly: {e}"),
        },
    };
    state
        .metrics
        .actions
        .inc(if flash.ok { "ok" } else { "failed" });
    state.auth.set_flash(&authed.token, flash);
    Redirect::to("/").into_response()
}

/// An optional humantime duration from a form (empty: none).
fn parse_duration(text: &str) -> Result<Option<std::time::Duration>, ControlError> {
    match text.trim() {
        "" => Ok(None),
        d => humantime::parse_duration(d)
            .map(Some)
            .map_err(|e| ControlError::Invalid(format!("duration {d:?}: {e} (e.g. 2h, 3days)"))),
    }
}

async fn perform(state: AppState, user: String, action: String, form: ActionForm) -> Flash {
    let actor = Actor {
        name: user,
        via: Via::Dashboard,
    };
    let config = &state.config;
    let store = &state.store;
    let clock = state.clock.as_ref();
    let prefix = form.prefix.trim();
    let result: Result<String, ControlError> = match action.as_str() {
        "withdraw" | "advertise" => {
            let advertise = action == "advertise";
            mt_control::set_advertised(
                config,
                store,
                clock,
                &state.cloudflare,
                prefix,
                advertise,
                &actor,
            )
                .await
                .map(|outcome| match outcome {
                    AdvertiseOutcome::Unchanged => format!(
                        "{prefix} was already {} on Cloudflare; nothing changed.",
                        if advertise { "advertised" } else { "withdrawn" }
                    ),
                    AdvertiseOutcome::Changed { at } => format!(
                        "{prefix} {} on Cloudflare at {} UTC (takes effect in {}); logged and notified.",
                        if advertise { "advertised" } else { "withdrawn" },
                        to_db(at),
                        if advertise { "2-7 minutes" } else { "about 15 minutes" }
                    ),
                })
        }
        "pause" => match parse_duration(&form.duration) {
            Ok(d) => mt_control::pause(store, clock, &form.reason, d, &actor)
                .await
                .map(|until| {
                    format!(
                        "Automatic withdrawals paused until {}: no prefix will be withdrawn automatically.",
                        until.map(to_db).unwrap_or_else(|| "resumed".into())
                    )
                }),
            Err(e) => Err(e),
        },
        "resume" => mt_control::resume(store, clock, &actor).await.map(|existed| {
            if existed {
                "Automatic withdrawals resumed.".to_owned()
            } else {
                "Automatic withdrawals were not paused.".to_owned()
            }
        }),
        "pin" => {
            let duration = parse_duration(&form.duration);
            match duration {
                Ok(d) => mt_control::pin(config, store, clock, prefix, &form.reason, d, &actor)
                    .await
                    .map(|until| {
                        format!(
                            "{prefix} pinned until {}: it will not be withdrawn automatically.",
                            until.map(to_db).unwrap_or_else(|| "unpinned".into())
                        )
                    }),
                Err(e) => Err(e),
            }
        }
        "unpin" => mt_control::unpin(config, store, clock, prefix, &actor)
            .await
            .map(|existed| {
                if existed {
                    format!("{prefix} unpinned.")
                } else {
                    format!("{prefix} was not pinned.")
                }
            }),
        other => Err(ControlError::Invalid(format!("unknown action {other:?}"))),
    };
    match result {
        Ok(text) => {
            tracing::info!(user = %actor.name, action, prefix, "action done");
            Flash { ok: true, text }
        }
        Err(e) => {
            tracing::warn!(user = %actor.name, action, prefix, error = %e, "action failed");
            Flash {
                ok: false,
                text: format!("{action} {prefix}: {e}"),
            }
        }
    }
}

/// Audits a refused action attempt (outcome `denied`) without delaying the answer.
fn audit_denied(state: &AppState, authed: &Authed, action: &str, prefix: &str, why: &str) {
    let (state, user) = (state.clone(), authed.session.user.clone());
    let (action, prefix, why) = (action.to_owned(), prefix.trim().to_owned(), why.to_owned());
    tokio::spawn(async move {
        let who = Actor {
            name: user,
            via: Via::Dashboard,
        };
        let prefix = (!prefix.is_empty()).then_some(prefix.as_str());
        let entry = who.audit(state.clock.now(), &action, prefix, Some(&why), "denied");
        if let Err(e) = state.store.audit(&entry).await {
            tracing::error!(error = %e, "could not audit a refused action");
        }
    });
}

pub(super) fn csrf_rejected(state: &AppState, authed: &Authed) -> Response {
    tracing::warn!(user = %authed.session.user, "form rejected: missing or wrong CSRF token");
    error_page(
        state,
        authed,
        StatusCode::FORBIDDEN,
        "Form rejected",
        "This form is missing its security token or comes from another page. Nothing was changed; reload the page and try again.",
    )
}

fn operators_only(state: &AppState, authed: &Authed) -> Response {
    error_page(
        state,
        authed,
        StatusCode::FORBIDDEN,
        "Operators only",
        format!(
            "{} is a viewer: only operators may pin, unpin, advertise or withdraw. Nothing was changed.",
            authed.session.user
        ),
    )
}
