//! HTML pages and the operator's actions.

use std::net::SocketAddr;

use askama::Template;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::{StatusCode, Uri};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use mt_common::timefmt::{from_db, to_db};
use mt_control::{Actor, AdvertiseOutcome, ControlError, PrefixStatus, Via, duration};
use mt_store::{AuditEntry, Hold, PendingWithdrawal, WebhookEvent};
use serde::Deserialize;

use crate::auth::{Flash, LOGIN_COOKIE, LoginRefused, cookies, random_token, tokens_match};
use crate::views::{self, AnalyticsView, Window, bits, count};
use crate::{AppState, Authed, cross_site};

/// Rows shown by the list pages.
pub const LIST_LIMIT: u32 = 200;
/// Characters of a webhook payload shown inline.
const PAYLOAD_CHARS: usize = 4_000;
/// Seconds between automatic reloads of the Prefixes page.
const PREFIXES_REFRESH_SECS: u32 = 15;

/// A navigation entry.
#[derive(Debug)]
pub struct NavItem {
    href: &'static str,
    label: &'static str,
    active: bool,
}

/// What every page's frame needs.
#[derive(Debug)]
pub struct Layout {
    user: String,
    role: &'static str,
    csrf: String,
    is_operator: bool,
    now: String,
    now_epoch: i64,
    refresh: u32,
    flash: Option<Flash>,
    nav: Vec<NavItem>,
}

const NAV: [(&str, &str); 7] = [
    ("/", "Prefixes"),
    ("/attacks", "Attacks"),
    ("/analytics", "Analytics"),
    ("/webhooks", "Webhooks"),
    ("/withdrawals", "Withdrawals"),
    ("/notifications", "Notifications"),
    ("/audit", "Audit"),
];

impl Layout {
    fn new(state: &AppState, authed: &Authed, active: &str, refresh: u32) -> Self {
        let now = state.clock.now();
        Self {
            user: authed.session.user.clone(),
            role: authed.session.role_name(),
            csrf: authed.session.csrf.clone(),
            is_operator: authed.session.is_operator(),
            now: to_db(now),
            now_epoch: now.timestamp(),
            refresh,
            flash: state.auth.take_flash(&authed.token),
            nav: NAV
                .iter()
                .map(|(href, label)| NavItem {
                    href,
                    label,
                    active: *href == active,
                })
                .collect(),
        }
    }
}

fn render(status: StatusCode, t: &impl Template) -> Response {
    match t.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "template rendering failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "page rendering failed").into_response()
        }
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    layout: Layout,
    title: String,
    message: String,
}

fn error_page(
    state: &AppState,
    authed: &Authed,
    status: StatusCode,
    title: &str,
    message: impl Into<String>,
) -> Response {
    render(
        status,
        &ErrorPage {
            layout: Layout::new(state, authed, "", 0),
            title: title.to_owned(),
            message: message.into(),
        },
    )
}

fn db_error(state: &AppState, authed: &Authed, e: &mt_store::Error) -> Response {
    tracing::error!(error = %e, "database read failed");
    error_page(
        state,
        authed,
        StatusCode::SERVICE_UNAVAILABLE,
        "Database unavailable",
        format!("The database could not be read: {e}. Nothing was changed; reload to retry."),
    )
}

/// 404 for every unknown path.
pub async fn not_found(uri: Uri) -> Response {
    (
        StatusCode::NOT_FOUND,
        format!("{} is not a page of the dashboard\n", uri.path()),
    )
        .into_response()
}

// ---------------------------------------------------------------------------------------------
// Login

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    csrf: String,
    error: Option<String>,
    user: String,
    no_users: bool,
}

fn login_page(state: &AppState, status: StatusCode, error: Option<String>, user: &str) -> Response {
    let token = random_token();
    let mut response = render(
        status,
        &LoginPage {
            csrf: token.clone(),
            error,
            user: user.to_owned(),
            no_users: !state.auth.has_users(),
        },
    );
    if let Ok(v) = HeaderValue::from_str(&state.auth.login_cookie(&token)) {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
    response
}

/// `GET /login`.
pub async fn login_form(State(state): State<AppState>, authed: Option<Authed>) -> Response {
    if authed.is_some() {
        return Redirect::to("/").into_response();
    }
    login_page(&state, StatusCode::OK, None, "")
}

/// The login form.
#[derive(Debug, Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    user: String,
    #[serde(default)]
    password: String,
}

/// `POST /login`.
pub async fn login(
    State(state): State<AppState>,
    connect: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let form_token_matches = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|h| cookies(h, LOGIN_COOKIE))
        .any(|t| tokens_match(t, &form.csrf));
    if cross_site(&headers) || !form_token_matches {
        return login_page(
            &state,
            StatusCode::FORBIDDEN,
            Some("The login form expired or did not come from this site; try again.".into()),
            "",
        );
    }
    let client = client_address(
        &state.config.dashboard.trusted_proxies,
        connect.map(|Extension(ConnectInfo(addr))| addr.ip()),
        &headers,
    );
    let name = form.user.trim().to_owned();
    let now = state.clock.now();
    match state.auth.login(&name, &form.password, &client, now).await {
        Ok((token, session)) => {
            tracing::info!(user = ?session.user, %client, "login");
            audit_login(&state, &session.user, "login", "ok", &client).await;
            let mut response = Redirect::to("/").into_response();
            for c in [
                state.auth.session_cookie(&token),
                state.auth.clear_login_cookie(),
            ] {
                if let Ok(v) = HeaderValue::from_str(&c) {
                    response.headers_mut().append(header::SET_COOKIE, v);
                }
            }
            response
        }
        Err(LoginRefused::Locked(secs)) => {
            tracing::warn!(user = %logged_user(&state, &name), %client, "login refused: too many failures");
            let mut response = login_page(
                &state,
                StatusCode::TOO_MANY_REQUESTS,
                Some(format!(
                    "Too many failed logins; try again in {}.",
                    duration(secs)
                )),
                &name,
            );
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, v);
            }
            response
        }
        Err(LoginRefused::Denied) => {
            tracing::warn!(user = %logged_user(&state, &name), %client, "login failed");
            if state.auth.is_user(&name) {
                // Not awaited: the answer must not take longer for a real user name.
                let (state, name, client) = (state.clone(), name.clone(), client.clone());
                tokio::spawn(async move {
                    audit_login(&state, &name, "login", "failed", &client).await;
                });
            }
            login_page(
                &state,
                StatusCode::UNAUTHORIZED,
                Some("Wrong user name or password.".into()),
                &name,
            )
        }
    }
}

/// The client's address for rate limiting and the audit: the TCP peer, or, when the peer is a
/// trusted proxy, the nearest `X-Forwarded-For` hop that is not one (the leftmost entries are
/// whatever the client sent). IPv6 clients count per /64, what one host usually has.
pub fn client_address(
    trusted: &[ipnet::IpNet],
    peer: Option<std::net::IpAddr>,
    headers: &HeaderMap,
) -> String {
    let Some(peer) = peer else {
        return "unknown".into();
    };
    let forwarded = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok());
    match mt_common::forwarded::client_ip(trusted, peer, forwarded) {
        std::net::IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => ipnet::Ipv6Net::new(v6, 64)
            .map(|n| n.trunc().to_string())
            .unwrap_or_else(|_| v6.to_string()),
        std::net::IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map_or_else(String::new, |v4| v4.to_string()),
        v4 => v4.to_string(),
    }
}

/// How a typed user name appears in the log: a configured user's name quoted and escaped (a
/// newline cannot forge a journal line); anything else not at all — it may be a password typed
/// into the user field.
fn logged_user(state: &AppState, name: &str) -> String {
    if state.auth.is_user(name) {
        format!("{name:?}")
    } else {
        "unknown user".to_owned()
    }
}

async fn audit_login(state: &AppState, user: &str, action: &str, outcome: &str, client: &str) {
    let detail = format!("from {client}");
    let who = Actor {
        name: user.to_owned(),
        via: Via::Dashboard,
    };
    let entry = who.audit(state.clock.now(), action, None, Some(&detail), outcome);
    if let Err(e) = state.store.audit(&entry).await {
        tracing::error!(error = %e, user, action, "could not audit");
    }
}

/// A form carrying only the CSRF token (and maybe a prefix, reason, duration).
#[derive(Debug, Default, Deserialize)]
pub struct ActionForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    prefix: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    duration: String,
}

/// `POST /logout`.
pub async fn logout(
    State(state): State<AppState>,
    authed: Authed,
    headers: HeaderMap,
    Form(form): Form<ActionForm>,
) -> Response {
    if cross_site(&headers) || !tokens_match(&authed.session.csrf, &form.csrf) {
        return csrf_rejected(&state, &authed);
    }
    state.auth.logout(&authed.token);
    audit_login(&state, &authed.session.user, "logout", "ok", "-").await;
    let mut response = Redirect::to("/login").into_response();
    if let Ok(v) = HeaderValue::from_str(&state.auth.clear_session_cookie()) {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
    response
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

fn csrf_rejected(state: &AppState, authed: &Authed) -> Response {
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

// ---------------------------------------------------------------------------------------------
// Prefixes

/// A pin as shown.
#[derive(Debug)]
struct PinView {
    by: String,
    reason: String,
    since: String,
    until: Option<String>,
}

/// One row of the Prefixes page, formatted.
#[derive(Debug)]
struct PrefixRow {
    prefix: String,
    description: String,
    advertised: &'static str,
    advertised_class: &'static str,
    attack: &'static str,
    attack_class: &'static str,
    locked: &'static str,
    calm_since: String,
    withdrawal: String,
    due_epoch: Option<i64>,
    held: Option<String>,
    pin: Option<PinView>,
    judged: String,
    dropped: String,
    can_withdraw: bool,
    can_advertise: bool,
}

fn yes_no(v: Option<bool>) -> (&'static str, &'static str) {
    match v {
        Some(true) => ("yes", "yes"),
        Some(false) => ("no", "no"),
        None => ("?", "unknown"),
    }
}

fn prefix_row(p: &PrefixStatus) -> PrefixRow {
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
        Err(e) => return db_error(&state, &authed, &e),
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

// ---------------------------------------------------------------------------------------------
// Actions

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
            mt_control::set_advertised(config, store, clock, prefix, advertise, &actor)
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

// ---------------------------------------------------------------------------------------------
// Attacks

/// Filters of the Attacks page and API.
#[derive(Debug, Default, Deserialize)]
pub struct AttackFilter {
    #[serde(default)]
    pub(crate) prefix: String,
    #[serde(default)]
    pub(crate) since: String,
    #[serde(default)]
    pub(crate) until: String,
}

/// `YYYY-MM-DD`, `YYYY-MM-DD HH:MM`, `YYYY-MM-DDTHH:MM` or with seconds; UTC.
pub fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    for f in [
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, f) {
            return Some(t.and_utc());
        }
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
}

/// A validated Attacks filter: prefix, from, to.
pub(crate) type AttackRange = (Option<String>, DateTime<Utc>, Option<DateTime<Utc>>);

/// The filter's prefix, range; or what is wrong with it.
pub(crate) fn attack_range(state: &AppState, f: &AttackFilter) -> Result<AttackRange, String> {
    let now = state.clock.now();
    let prefix = match f.prefix.trim() {
        "" => None,
        p => Some(
            mt_control::require_configured(&state.config, p)
                .map_err(|e| e.to_string())?
                .cidr
                .to_string(),
        ),
    };
    let since = match f.since.trim() {
        "" => now - chrono::Duration::days(7),
        s => parse_time(s).ok_or_else(|| format!("from: {s:?} is not YYYY-MM-DD[ HH:MM]"))?,
    };
    let until = match f.until.trim() {
        "" => None,
        // A date alone means the whole day.
        s if s.len() == 10 => Some(
            parse_time(s).ok_or_else(|| format!("to: {s:?} is not YYYY-MM-DD[ HH:MM]"))?
                + chrono::Duration::days(1)
                - chrono::Duration::seconds(1),
        ),
        s => Some(parse_time(s).ok_or_else(|| format!("to: {s:?} is not YYYY-MM-DD[ HH:MM]"))?),
    };
    if until.is_some_and(|u| u < since) {
        return Err("the range ends before it starts (to is earlier than from)".into());
    }
    Ok((prefix, since, until))
}

/// One incident, formatted.
#[derive(Debug)]
struct IncidentRow {
    prefix: String,
    state: &'static str,
    state_class: &'static str,
    started: String,
    advertised: String,
    ended: String,
    withdrawn: String,
    attack_for: String,
    protected_for: String,
    peak: String,
    vectors: String,
    policies: String,
    lifecycle: String,
    steps: Vec<views::Step>,
}

fn dash(v: Option<&str>) -> String {
    v.unwrap_or("-").to_owned()
}

fn incident_row(i: &views::Incident) -> IncidentRow {
    let peak = match (i.peak_pps, i.peak_mbps) {
        (None, None) => "-".to_owned(),
        (pps, mbps) => format!(
            "{} pps · {} Mbps",
            pps.map_or("-".into(), |v| count(v.round() as i64)),
            mbps.map_or("-".into(), |v| format!("{v:.1}"))
        ),
    };
    IncidentRow {
        prefix: dash(i.prefix.as_deref()),
        state: i.state,
        state_class: match i.state {
            "under attack" => "bad",
            "withdrawn" => "good",
            _ => "",
        },
        started: dash(i.started_at.as_deref()),
        advertised: dash(i.advertised_at.as_deref()),
        ended: dash(i.ended_at.as_deref()),
        withdrawn: dash(i.withdrawn_at.as_deref()),
        attack_for: i.attack_seconds.map_or("-".into(), duration),
        protected_for: i.protected_seconds.map_or("-".into(), duration),
        peak,
        vectors: if i.vectors.is_empty() {
            "-".into()
        } else {
            i.vectors.join(", ")
        },
        policies: if i.policy_names.is_empty() {
            "-".into()
        } else {
            i.policy_names.join(", ")
        },
        lifecycle: {
            let mut kinds: Vec<&str> = Vec::new();
            for s in &i.steps {
                if kinds.last() != Some(&s.event_type.as_str()) {
                    kinds.push(&s.event_type);
                }
            }
            kinds.join(" → ")
        },
        steps: i.steps.clone(),
    }
}

#[derive(Template)]
#[template(path = "attacks.html")]
struct AttacksPage {
    layout: Layout,
    view: views::AttacksView,
    rows: Vec<IncidentRow>,
    prefixes: Vec<String>,
    since_input: String,
    until_input: String,
}

/// `GET /attacks?prefix=&since=&until=`.
pub async fn attacks(
    State(state): State<AppState>,
    authed: Authed,
    Query(f): Query<AttackFilter>,
) -> Response {
    let (prefix, since, until) = match attack_range(&state, &f) {
        Ok(r) => r,
        Err(e) => return error_page(&state, &authed, StatusCode::BAD_REQUEST, "Bad filter", e),
    };
    let view = match views::attacks(&state.store, prefix, since, until, state.clock.now()).await {
        Ok(v) => v,
        Err(e) => return db_error(&state, &authed, &e),
    };
    render(
        StatusCode::OK,
        &AttacksPage {
            layout: Layout::new(&state, &authed, "/attacks", 0),
            rows: view.incidents.iter().map(incident_row).collect(),
            prefixes: state
                .config
                .prefixes
                .iter()
                .map(|p| p.cidr.to_string())
                .collect(),
            since_input: since.format("%Y-%m-%d %H:%M").to_string(),
            until_input: until
                .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
                .unwrap_or_default(),
            view,
        },
    )
}

// ---------------------------------------------------------------------------------------------
// Analytics

/// `?window=`.
#[derive(Debug, Default, Deserialize)]
pub struct WindowQuery {
    #[serde(default)]
    pub(crate) window: String,
}

/// The window asked for (default 24 h), or an error.
pub(crate) fn window(q: &WindowQuery) -> Result<Window, String> {
    match q.window.trim() {
        "" => Ok(Window::Day),
        w => Window::parse(w).ok_or_else(|| format!("window {w:?}: use 1h, 24h or 7d")),
    }
}

#[derive(Debug)]
struct Bar {
    x: f64,
    y: f64,
    w: f64,
    h: f64,
    label: String,
}

#[derive(Debug)]
struct Chart {
    width: u32,
    height: u32,
    base: u32,
    bucket: String,
    bars: Vec<Bar>,
    max_label: String,
    first_label: String,
    last_label: String,
}

fn chart(view: &AnalyticsView) -> Chart {
    let (width, height, base) = (900u32, 180u32, 160u32);
    let max = view
        .series
        .iter()
        .map(|p| p.packets)
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let n = view.series.len().max(1) as f64;
    let slot = f64::from(width) / n;
    let label = |t: i64| {
        DateTime::from_timestamp(t, 0)
            .map(|t| t.format("%m-%d %H:%M").to_string())
            .unwrap_or_default()
    };
    let bars = view
        .series
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let h = (p.packets as f64 / max) * f64::from(base - 16);
            Bar {
                x: (i as f64 * slot + 1.0).round(),
                y: (f64::from(base) - h).round(),
                w: (slot - 2.0).max(1.0).round(),
                h: h.round(),
                label: format!(
                    "{} UTC: {} packets, {}",
                    label(p.bucket),
                    count(p.packets),
                    bits(p.bits)
                ),
            }
        })
        .collect();
    Chart {
        width,
        height,
        base,
        bucket: humantime::format_duration(std::time::Duration::from_secs(
            view.bucket_seconds.max(0).unsigned_abs(),
        ))
        .to_string(),
        bars,
        max_label: format!("{} packets", count(max as i64)),
        first_label: view
            .series
            .first()
            .map(|p| label(p.bucket))
            .unwrap_or_default(),
        last_label: view
            .series
            .last()
            .map(|p| label(p.bucket))
            .unwrap_or_default(),
    }
}

#[derive(Debug)]
struct RankRow {
    key: String,
    label: Option<String>,
    packets: String,
    bits: String,
    bar: u32,
}

#[derive(Debug)]
struct RankingView {
    title: &'static str,
    key_title: &'static str,
    rows: Vec<RankRow>,
}

#[derive(Template)]
#[template(path = "analytics.html")]
struct AnalyticsPage {
    layout: Layout,
    view: AnalyticsView,
    windows: Vec<(&'static str, bool)>,
    chart: Chart,
    rankings: Vec<RankingView>,
    total_packets: String,
    total_bits: String,
}

/// `GET /analytics?window=1h|24h|7d`.
pub async fn analytics(
    State(state): State<AppState>,
    authed: Authed,
    Query(q): Query<WindowQuery>,
) -> Response {
    let w = match window(&q) {
        Ok(w) => w,
        Err(e) => return error_page(&state, &authed, StatusCode::BAD_REQUEST, "Bad window", e),
    };
    let view = match views::analytics(&state.store, w, state.clock.now()).await {
        Ok(v) => v,
        Err(e) => return db_error(&state, &authed, &e),
    };
    let rankings = view
        .rankings
        .iter()
        .map(|r| {
            let top = r.rows.first().map_or(1, |x| x.packets.max(1)) as f64;
            RankingView {
                title: r.title,
                key_title: match r.dimension {
                    mt_store::Dimension::Vector => "Vector",
                    mt_store::Dimension::Target => "Destination IP",
                    mt_store::Dimension::SourceAsn => "ASN",
                    mt_store::Dimension::SourceCountry => "Country",
                },
                rows: r
                    .rows
                    .iter()
                    .map(|x| RankRow {
                        key: x.key.clone(),
                        label: x.label.clone(),
                        packets: count(x.packets),
                        bits: bits(x.bits),
                        bar: ((x.packets.max(0) as f64 / top) * 120.0).round() as u32,
                    })
                    .collect(),
            }
        })
        .collect();
    render(
        StatusCode::OK,
        &AnalyticsPage {
            layout: Layout::new(&state, &authed, "/analytics", 0),
            windows: Window::ALL.iter().map(|x| (x.name(), *x == w)).collect(),
            chart: chart(&view),
            rankings,
            total_packets: count(view.total_packets),
            total_bits: bits(view.total_bits),
            view,
        },
    )
}

// ---------------------------------------------------------------------------------------------
// Lists

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
        Err(e) => db_error(&state, &authed, &e),
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
        Err(e) => return db_error(&state, &authed, &e),
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
        Err(e) => db_error(&state, &authed, &e),
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
        Err(e) => db_error(&state, &authed, &e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xff(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_str(v).unwrap_or(HeaderValue::from_static("")),
        );
        h
    }

    #[test]
    fn client_address_believes_only_trusted_proxies() {
        let proxy: Vec<ipnet::IpNet> =
            vec!["127.0.0.1/32".parse().unwrap_or_else(|_| unreachable!())];
        let local = Some("127.0.0.1".parse().unwrap_or_else(|_| unreachable!()));
        let remote = Some("192.0.2.7".parse().unwrap_or_else(|_| unreachable!()));
        // Through the trusted proxy: the nearest untrusted hop, not what the client wrote first.
        assert_eq!(
            client_address(&proxy, local, &xff("6.6.6.6, 198.51.100.9")),
            "198.51.100.9"
        );
        // Not through it: the header is ignored.
        assert_eq!(
            client_address(&proxy, remote, &xff("198.51.100.9")),
            "192.0.2.7"
        );
        assert_eq!(
            client_address(&[], local, &xff("198.51.100.9")),
            "127.0.0.1"
        );
        // IPv6 clients count per /64.
        assert_eq!(
            client_address(&proxy, local, &xff("2001:db8:1:2:aaaa::1")),
            "2001:db8:1:2::/64"
        );
        assert_eq!(client_address(&proxy, None, &HeaderMap::new()), "unknown");
    }

    #[test]
    fn times_parse_in_every_accepted_form() {
        for s in [
            "2026-11-20",
            "2026-11-20 10:00",
            "2026-11-20T10:00",
            "2026-11-20 10:00:00",
        ] {
            assert!(parse_time(s).is_some(), "{s}");
        }
        assert!(parse_time("yesterday").is_none());
    }
}
