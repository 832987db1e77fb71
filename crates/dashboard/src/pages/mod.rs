//! HTML pages and the operator's actions, one module per page; this module holds the frame
//! every page shares (layout, navigation, rendering, the error page).

use askama::Template;
use axum::http::{StatusCode, Uri};
use axum::response::{Html, IntoResponse, Response};
use mt_common::timefmt::to_db;

use crate::auth::Flash;
use crate::error::AppError;
use crate::state::{AppState, Authed};

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

/// A failed request as a page in the frame: the cause is logged, the page names no internals.
fn failed(state: &AppState, authed: &Authed, e: AppError) -> Response {
    e.log();
    error_page(state, authed, e.status(), e.title(), e.public_message())
}

pub(super) fn dash(v: Option<&str>) -> String {
    v.unwrap_or("-").to_owned()
}

/// 404 for every unknown path.
pub async fn not_found(uri: Uri) -> Response {
    (
        StatusCode::NOT_FOUND,
        format!("{} is not a page of the dashboard\n", uri.path()),
    )
        .into_response()
}

mod actions;
mod analytics;
mod attacks;
mod lists;
mod login;
mod prefixes;

pub use actions::{ActionForm, action, action_form};
pub(crate) use analytics::window;
pub use analytics::{WindowQuery, analytics};
pub(crate) use attacks::attack_range;
pub use attacks::{AttackFilter, attacks, parse_time};
pub use lists::{audit, notifications, webhooks, withdrawals};
pub use login::{LoginForm, client_address, login, login_form, logout};
pub use prefixes::prefixes;
