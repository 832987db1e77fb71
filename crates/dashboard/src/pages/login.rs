//! Login and logout: the form, the password check with its lockout, the login audit.

use std::net::SocketAddr;

use askama::Template;
use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use mt_control::{Actor, Via, duration};
use serde::Deserialize;

use super::actions::{ActionForm, csrf_rejected};
use super::render;
use crate::auth::{LOGIN_COOKIE, LoginRefused, cookies, random_token, tokens_match};
use crate::state::{AppState, Authed, cross_site};

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
            state.metrics.logins.inc("ok");
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
            state.metrics.logins.inc("locked");
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
            state.metrics.logins.inc("failed");
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
}
