//! Handler tests over real HTTP on loopback: every page and API, sessions, role enforcement,
//! CSRF rejection, login limiting, escaping, and actions through the mtctl code path against
//! cf-sim. "Now" comes from a manual clock.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;

use chrono::{Duration, Utc};
use common::*;
use mt_common::{Clock, ManualClock};
use mt_store::{OpenOptions, Store};
use reqwest::StatusCode;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use serde_json::Value;

struct Env {
    _dir: tempfile::TempDir,
    base: String,
    http: reqwest::Client,
    clock: ManualClock,
    store: Store,
    sim: cf_sim::Running,
    shutdown: tokio_util::sync::CancellationToken,
}

/// A logged-in browser: its cookie and the CSRF token of its session.
struct Login {
    cookie: String,
    csrf: String,
}

fn hidden_csrf(html: &str) -> String {
    let at = html
        .find("name=\"csrf\" value=\"")
        .unwrap_or_else(|| panic!("no csrf field in {html}"));
    let rest = &html[at + "name=\"csrf\" value=\"".len()..];
    rest[..rest.find('"').unwrap()].to_owned()
}

fn set_cookie(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with(&format!("{name}=")))
        .map(str::to_owned)
}

fn cookie_value(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().to_owned()
}

impl Env {
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let sim = start_sim().await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let (_, config) = write_config(dir.path(), &sim, addr);
        let now = Utc::now();
        let clock = ManualClock::new(now);
        let store = Store::open(&OpenOptions::from_config(&config.database))
            .await
            .unwrap();
        seed(&config, &store, clock.shared(), now).await;
        let state = dashboard::AppState::new(config, store.clone(), clock.shared()).unwrap();
        let shutdown = tokio_util::sync::CancellationToken::new();
        tokio::spawn(dashboard::run(state, listener, shutdown.clone()));
        Self {
            _dir: dir,
            base: format!("http://{addr}"),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            clock,
            store,
            sim,
            shutdown,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn get(&self, path: &str, login: Option<&Login>) -> reqwest::Response {
        let mut request = self.http.get(self.url(path));
        if let Some(l) = login {
            request = request.header(COOKIE, &l.cookie);
        }
        request.send().await.unwrap()
    }

    async fn page(&self, path: &str, login: &Login) -> String {
        let response = self.get(path, Some(login)).await;
        assert_eq!(response.status(), StatusCode::OK, "GET {path}");
        response.text().await.unwrap()
    }

    async fn api(&self, path: &str, login: &Login) -> Value {
        let response = self.get(path, Some(login)).await;
        assert_eq!(response.status(), StatusCode::OK, "GET {path}");
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/json")
        );
        response.json().await.unwrap()
    }

    async fn post(
        &self,
        path: &str,
        login: Option<&Login>,
        form: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut request = self.http.post(self.url(path)).form(form);
        if let Some(l) = login {
            request = request.header(COOKIE, &l.cookie);
        }
        request.send().await.unwrap()
    }

    /// GET /login then POST it, as a browser does; returns the response of the POST.
    async fn try_login(&self, user: &str, password: &str) -> reqwest::Response {
        let form = self.get("/login", None).await;
        assert_eq!(form.status(), StatusCode::OK);
        let cookie = cookie_value(&set_cookie(&form, "mt_login").unwrap());
        let csrf = hidden_csrf(&form.text().await.unwrap());
        self.http
            .post(self.url("/login"))
            .header(COOKIE, cookie)
            .form(&[
                ("csrf", csrf.as_str()),
                ("user", user),
                ("password", password),
            ])
            .send()
            .await
            .unwrap()
    }

    async fn login(&self, (user, password): (&str, &str)) -> Login {
        let response = self.try_login(user, password).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "login {user}");
        assert_eq!(response.headers()[LOCATION], "/");
        let cookie = cookie_value(&set_cookie(&response, "mt_session").unwrap());
        let mut login = Login {
            cookie,
            csrf: String::new(),
        };
        login.csrf = hidden_csrf(&self.page("/", &login).await);
        login
    }

    async fn audit(&self) -> Vec<(String, String, String, String)> {
        self.store
            .audit_log(100)
            .await
            .unwrap()
            .into_iter()
            .map(|a| (a.actor, a.action, a.prefix.unwrap_or_default(), a.outcome))
            .collect()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

const PAGES: [&str; 7] = [
    "/",
    "/attacks",
    "/analytics",
    "/webhooks",
    "/withdrawals",
    "/notifications",
    "/audit",
];
const APIS: [&str; 7] = [
    "/api/prefixes",
    "/api/attacks",
    "/api/analytics",
    "/api/webhooks",
    "/api/withdrawals",
    "/api/notifications",
    "/api/audit",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_served_without_a_session_and_every_response_is_hardened() {
    let env = Env::new().await;
    for path in PAGES
        .iter()
        .chain(["/actions/pin?prefix=203.0.113.0/24"].iter())
    {
        let r = env.get(path, None).await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "{path}");
        assert_eq!(r.headers()[LOCATION], "/login", "{path}");
    }
    for path in APIS {
        let r = env.get(path, None).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{path}");
        let body: Value = r.json().await.unwrap();
        assert!(body["error"].as_str().unwrap().contains("log in"));
    }
    // A forged session cookie is no session.
    let forged = Login {
        cookie: format!("mt_session={}", "0".repeat(64)),
        csrf: String::new(),
    };
    assert_eq!(
        env.get("/", Some(&forged)).await.status(),
        StatusCode::SEE_OTHER
    );
    // Actions without a session change nothing.
    let r = env
        .post(
            "/actions/withdraw",
            None,
            &[("prefix", CALM), ("csrf", "x")],
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(env.sim.sim.patches().is_empty());

    let r = env.get("/login", None).await;
    let h = r.headers();
    let csp = h["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'none'") && csp.contains("script-src 'self'"));
    assert!(!csp.contains("unsafe-inline"));
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["x-frame-options"], "DENY");
    assert_eq!(h["cache-control"], "no-store");
    assert_eq!(env.get("/healthz", None).await.status(), StatusCode::OK);
    let js = env.get("/static/app.js", None).await;
    assert_eq!(js.status(), StatusCode::OK);
    // The countdown script reads the data-due attributes the page carries.
    assert!(js.text().await.unwrap().contains("dataset.due"));
    assert_eq!(
        env.get("/no-such-page", None).await.status(),
        StatusCode::NOT_FOUND
    );
    // Oversized bodies are refused before anything reads them.
    let big = "x".repeat(dashboard::MAX_BODY_BYTES + 1);
    let r = env
        .http
        .post(env.url("/login"))
        .form(&[("user", big.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_sets_a_strict_cookie_and_refuses_forgery_wrong_passwords_and_guessing() {
    let env = Env::new().await;
    // The login form's token must match its cookie (a cross-site login is refused).
    let r = env
        .http
        .post(env.url("/login"))
        .form(&[
            ("csrf", "abc"),
            ("user", OPERATOR.0),
            ("password", OPERATOR.1),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(set_cookie(&r, "mt_session").is_none());

    let ok = env.try_login(OPERATOR.0, OPERATOR.1).await;
    assert_eq!(ok.status(), StatusCode::SEE_OTHER);
    let cookie = set_cookie(&ok, "mt_session").unwrap();
    for attribute in ["HttpOnly", "SameSite=Strict", "Secure", "Path=/"] {
        assert!(cookie.contains(attribute), "{attribute} missing: {cookie}");
    }

    // Wrong password: 401, the same message as an unknown user, audited for a real user.
    let wrong = env.try_login(OPERATOR.0, "not-the-password").await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert!(
        wrong
            .text()
            .await
            .unwrap()
            .contains("Wrong user name or password")
    );
    let unknown = env.try_login("mallory", "whatever-password").await;
    assert_eq!(unknown.status(), StatusCode::UNAUTHORIZED);

    // login_max_failures = 3, per user name and per client address: this is the third
    // failure from 127.0.0.1, so even the right password is refused for login_lockout
    // (15 min on the manual clock). (Per-user locking alone: auth's unit tests.)
    assert_eq!(
        env.try_login(OPERATOR.0, "again-wrong").await.status(),
        StatusCode::UNAUTHORIZED
    );
    let locked = env.try_login(OPERATOR.0, OPERATOR.1).await;
    assert_eq!(locked.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: i64 = locked.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=900).contains(&retry), "{retry}");
    assert!(set_cookie(&locked, "mt_session").is_none());
    env.clock.advance(Duration::seconds(901));
    env.login(OPERATOR).await;

    // Failed logins are audited in the background: poll (up to 20 s on a loaded machine).
    let mut audit = Vec::new();
    let mut counts = (0, 0);
    for _ in 0..1000 {
        audit = env.audit().await;
        let count = |outcome: &str| {
            audit
                .iter()
                .filter(|a| a.0 == "alice" && a.1 == "login" && a.3 == outcome)
                .count()
        };
        counts = (count("failed"), count("ok"));
        if counts == (2, 2) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(counts, (2, 2), "{audit:?}");
    assert!(!audit.iter().any(|a| a.0 == "mallory"));

    // /metrics (no login, like /healthz) counts the logins by outcome and names the build.
    let metrics = env.get("/metrics", None).await;
    assert_eq!(metrics.status(), StatusCode::OK);
    let page = metrics.text().await.unwrap();
    for line in [
        "mt_dashboard_logins_total{outcome=\"ok\"} 2\n",
        "mt_dashboard_logins_total{outcome=\"failed\"} 3\n",
        "mt_dashboard_logins_total{outcome=\"locked\"} 1\n",
        "mt_notifications_queued ",
    ] {
        assert!(page.contains(line), "{line} missing:\n{page}");
    }
    let build = page
        .lines()
        .find(|l| l.starts_with("mt_build_info{"))
        .unwrap_or_else(|| panic!("no mt_build_info:\n{page}"));
    assert!(
        build.starts_with(&format!(
            "mt_build_info{{daemon=\"mt-dashboard\",version=\"{}\",commit=\"",
            env!("CARGO_PKG_VERSION")
        )) && build.ends_with("\"} 1"),
        "{build}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_and_api_shows_the_seeded_data_to_a_viewer() {
    let env = Env::new().await;
    let viewer = env.login(VIEWER).await;

    let prefixes = env.page("/", &viewer).await;
    for needle in [
        ATTACKED,
        CALM,
        FRESH,
        "Hosting customers",
        "held: under attack",
    ] {
        assert!(prefixes.contains(needle), "{needle} missing");
    }
    // The calm prefix counts down: calm 5 of 15 minutes + the 3-minute analytics delay.
    // (The seed's "now" is the dashboard's manual clock; stored times are whole seconds.)
    let due = env.clock.now() - Duration::minutes(5) + Duration::minutes(18);
    let at = prefixes.find("data-due=\"").unwrap() + "data-due=\"".len();
    let due_attr: i64 = prefixes[at..at + 10].parse().unwrap();
    assert!((due_attr - due.timestamp()).abs() <= 1, "{due_attr}");
    assert!(
        prefixes.contains(">in 12m 59s<") || prefixes.contains(">in 13m 0s<"),
        "server-side countdown text"
    );
    // Dropped traffic of the last window, summed for the attacked prefix only.
    assert!(prefixes.contains("21,000 pkts"), "dropped traffic");
    // Viewers see no action controls.
    assert!(!prefixes.contains("/actions/"));

    let status = env.api("/api/prefixes", &viewer).await;
    let p = &status["prefixes"][0];
    assert_eq!(p["prefix"], ATTACKED);
    assert_eq!(p["under_attack"], true);
    assert_eq!(p["dropped_packets"], 21_000);
    assert_eq!(status["prefixes"][1]["blocked_by"], Value::Null);

    let attacks = env.page("/attacks", &viewer).await;
    assert!(attacks.contains("under attack") && attacks.contains("UDP Flood"));
    assert!(attacks.contains("START → ADVERTISE"), "lifecycle");
    let api = env.api("/api/attacks", &viewer).await;
    let incident = &api["incidents"][0];
    assert_eq!(incident["prefix"], ATTACKED);
    assert_eq!(incident["state"], "under attack");
    assert_eq!(incident["peak_pps"], 250_000.0);
    assert_eq!(incident["vectors"][0], "UDP Flood");
    // Filters: another prefix has no events; a bad time is a 400 with the reason.
    let other = env
        .api(&format!("/api/attacks?prefix={CALM}"), &viewer)
        .await;
    assert_eq!(other["incidents"].as_array().unwrap().len(), 0);
    // A date alone as the end means that whole day; an end before the start is refused.
    let today = env.clock.now().format("%Y-%m-%d").to_string();
    let day = env
        .api(
            &format!("/api/attacks?since={today}&until={today}"),
            &viewer,
        )
        .await;
    assert_eq!(day["incidents"].as_array().unwrap().len(), 1, "{day}");
    assert!(day["until"].as_str().unwrap().ends_with("23:59:59"));
    let backwards = env
        .get(
            &format!("/api/attacks?since={today}&until=2000-01-01"),
            Some(&viewer),
        )
        .await;
    assert_eq!(backwards.status(), StatusCode::BAD_REQUEST);
    let bad = env.get("/api/attacks?since=yesterday", Some(&viewer)).await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    assert!(bad.text().await.unwrap().contains("YYYY-MM-DD"));
    let unknown = env.get("/attacks?prefix=192.0.2.0/24", Some(&viewer)).await;
    assert_eq!(unknown.status(), StatusCode::BAD_REQUEST);

    for window in ["1h", "24h", "7d"] {
        let page = env
            .page(&format!("/analytics?window={window}"), &viewer)
            .await;
        assert!(page.contains("<svg class=\"chart\""), "{window}: chart");
        assert!(page.contains("EXAMPLE-AS-0") && page.contains("203.0.113.10"));
        let api = env
            .api(&format!("/api/analytics?window={window}"), &viewer)
            .await;
        assert_eq!(api["total_packets"], 21_000, "{window}");
        let ranks = api["rankings"].as_array().unwrap();
        assert_eq!(ranks.len(), 4);
        assert_eq!(ranks[0]["rows"][0]["key"], "SYN Flood");
        assert_eq!(ranks[0]["rows"][0]["packets"], 2_000 + 4_000 + 6_000);
        assert_eq!(ranks[0]["rows"][1]["packets"], 1_000 + 3_000 + 5_000);
        assert_eq!(ranks[3]["rows"].as_array().unwrap().len(), 3, "countries");
    }
    assert_eq!(
        env.get("/api/analytics?window=2h", Some(&viewer))
            .await
            .status(),
        StatusCode::BAD_REQUEST
    );

    let webhooks = env.api("/api/webhooks", &viewer).await;
    assert_eq!(webhooks.as_array().unwrap().len(), 2);
    assert!(
        env.page("/webhooks", &viewer)
            .await
            .contains("fbm_auto_advertisement")
    );

    assert_eq!(
        env.api("/api/withdrawals", &viewer).await,
        Value::Array(vec![])
    );
    assert!(
        env.page("/withdrawals", &viewer)
            .await
            .contains("No withdrawals yet")
    );
    let notifications = env.api("/api/notifications", &viewer).await;
    assert!(!notifications["recent"].as_array().unwrap().is_empty());
    assert!(env.page("/notifications", &viewer).await.contains("Recent"));
    // A refused message and a paused chat are shown with Telegram's words.
    // (The seeding receiver's sender has stopped: nothing else touches the outbox now.)
    let mut tx = env.store.begin().await.unwrap();
    let refused = tx
        .enqueue_notification(&mt_store::NewNotification {
            chat_id: "-100123",
            kind: "generic_alert",
            priority: 5,
            text: "a text Telegram refuses",
            parse_mode: "",
            created_at: chrono::Utc::now(),
        })
        .await
        .unwrap();
    tx.commit().await.unwrap();
    // What a sender writes, under the sender lease.
    let fence = env
        .store
        .acquire_lease(
            mt_notify::LEASE_NAME,
            "test-sender",
            std::time::Duration::from_secs(60),
        )
        .await
        .unwrap()
        .unwrap();
    env.store
        .fail_notification(&fence, refused, "Bad Request: message is too long")
        .await
        .unwrap();
    let now = chrono::Utc::now();
    env.store
        .pause_chat(
            &fence,
            "-100123",
            "Forbidden: bot was kicked from the supergroup chat",
            now,
            None,
            now,
        )
        .await
        .unwrap();
    let notifications = env.api("/api/notifications", &viewer).await;
    assert_eq!(notifications["failed"][0]["id"], refused);
    assert_eq!(notifications["paused_chats"][0]["chat_id"], "-100123");
    let page = env.page("/notifications", &viewer).await;
    assert!(
        page.contains("Refused by Telegram")
            && page.contains("message is too long")
            && page.contains("bot was kicked"),
        "{page}"
    );
    let audit = env.api("/api/audit", &viewer).await;
    assert_eq!(audit[0]["actor"], "victor");
    assert_eq!(audit[0]["action"], "login");
    assert!(env.page("/audit", &viewer).await.contains("victor"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_in_a_webhook_policy_name_renders_as_text() {
    let env = Env::new().await;
    let viewer = env.login(VIEWER).await;
    for path in ["/webhooks", "/attacks"] {
        let html = env.page(path, &viewer).await;
        assert!(
            html.contains("&#60;script&#62;document.title=")
                || html.contains("&lt;script&gt;document.title="),
            "{path}: the policy name is shown, escaped"
        );
        assert!(
            !html.contains("<script>document.title"),
            "{path}: raw script"
        );
        assert!(!html.contains("<img src=x"), "{path}: raw img");
        // The only script element is our own file.
        assert_eq!(html.matches("<script").count(), 1, "{path}");
    }
    // The API returns the stored text as JSON data, unchanged.
    let api = env.api("/api/webhooks", &viewer).await;
    assert!(
        api.as_array()
            .unwrap()
            .iter()
            .any(|w| w["policy_name"] == XSS_POLICY)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_cannot_act_and_every_form_needs_the_session_csrf_token() {
    let env = Env::new().await;
    let viewer = env.login(VIEWER).await;
    let operator = env.login(OPERATOR).await;

    // A viewer is refused the confirmation pages and the actions, even with a valid token.
    let r = env
        .get(&format!("/actions/withdraw?prefix={CALM}"), Some(&viewer))
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    for (action, extra) in [
        ("withdraw", ("reason", "")),
        ("advertise", ("reason", "")),
        ("pin", ("reason", "viewer tries")),
        ("unpin", ("reason", "")),
        ("pause", ("reason", "viewer tries")),
    ] {
        let r = env
            .post(
                &format!("/actions/{action}"),
                Some(&viewer),
                &[("csrf", viewer.csrf.as_str()), ("prefix", CALM), extra],
            )
            .await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "viewer {action}");
        assert!(r.text().await.unwrap().contains("Operators only"));
    }

    // An operator without, with a wrong, or with another session's token is refused too.
    for token in ["", "0123", viewer.csrf.as_str()] {
        let r = env
            .post(
                "/actions/withdraw",
                Some(&operator),
                &[("csrf", token), ("prefix", CALM)],
            )
            .await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "token {token:?}");
        assert!(r.text().await.unwrap().contains("Form rejected"));
    }
    // The right token from another site (Sec-Fetch-Site) is refused.
    let r = env
        .http
        .post(env.url("/actions/pin"))
        .header(COOKIE, &operator.cookie)
        .header("sec-fetch-site", "cross-site")
        .form(&[
            ("csrf", operator.csrf.as_str()),
            ("prefix", CALM),
            ("reason", "forged"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // Logout needs the token as well.
    let r = env
        .post("/logout", Some(&operator), &[("csrf", "nope")])
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);

    // Nothing changed anywhere.
    assert!(env.sim.sim.patches().is_empty());
    assert!(env.store.active_pins(Utc::now()).await.unwrap().is_empty());
    // The refused attempts are audited as denied (written in the background; polled for up
    // to 20 s on a loaded machine).
    let mut denied = 0;
    for _ in 0..1000 {
        let audit = env.audit().await;
        assert!(
            audit.iter().all(|a| a.1 == "login" || a.3 == "denied"),
            "{audit:?}"
        );
        denied = audit.iter().filter(|a| a.3 == "denied").count();
        if denied == 9 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(
        denied, 9,
        "5 viewer attempts, 3 bad tokens, 1 cross-site post"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_pin_withdraw_and_advertise_through_the_mtctl_code_path() {
    let env = Env::new().await;
    let op = env.login(OPERATOR).await;
    let prefixes = env.page("/", &op).await;
    assert!(prefixes.contains(&format!("/actions/withdraw?prefix={CALM}")));

    // Pin: a form, then the pin with who/why/until, shown on the page and in the API.
    let form = env
        .page(&format!("/actions/pin?prefix={ATTACKED}"), &op)
        .await;
    assert!(form.contains("name=\"reason\""));
    let bad = env
        .post(
            "/actions/pin",
            Some(&op),
            &[
                ("csrf", op.csrf.as_str()),
                ("prefix", ATTACKED),
                ("reason", "x"),
                ("duration", "soon"),
            ],
        )
        .await;
    assert_eq!(bad.status(), StatusCode::SEE_OTHER);
    assert!(env.page("/", &op).await.contains("(e.g. 2h, 3days)"));
    env.post(
        "/actions/pin",
        Some(&op),
        &[
            ("csrf", op.csrf.as_str()),
            ("prefix", ATTACKED),
            ("reason", "x"),
            ("duration", "0s"),
        ],
    )
    .await;
    assert!(env.page("/", &op).await.contains("would end at once"));
    assert!(env.store.active_pins(Utc::now()).await.unwrap().is_empty());
    let r = env
        .post(
            "/actions/pin",
            Some(&op),
            &[
                ("csrf", op.csrf.as_str()),
                ("prefix", ATTACKED),
                ("reason", "attack expected to resume"),
                ("duration", "2h"),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let page = env.page("/", &op).await;
    assert!(page.contains("pinned until"), "flash");
    assert!(page.contains("by alice: attack expected to resume"));
    let status = env.api("/api/prefixes", &op).await;
    assert_eq!(status["prefixes"][0]["pinned"]["by"], "alice");
    assert!(status["prefixes"][0]["pinned"]["until"].is_string());

    // Withdraw: a confirmation page, then Cloudflare's PATCH and mtctl's rows.
    let confirm = env
        .page(&format!("/actions/withdraw?prefix={CALM}"), &op)
        .await;
    assert!(confirm.contains(&format!("Withdraw {CALM} now")));
    assert!(confirm.contains("unprotected"));
    assert!(env.sim.sim.patches().is_empty(), "confirming is not acting");
    let r = env
        .post(
            "/actions/withdraw",
            Some(&op),
            &[("csrf", op.csrf.as_str()), ("prefix", CALM)],
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(!env.sim.sim.bgp("b-p23").unwrap().advertised);
    assert_eq!(env.sim.sim.patches().len(), 1);
    assert!(env.page("/", &op).await.contains("withdrawn on Cloudflare"));
    // Shown withdrawn at once, though autowithdraw's last reading still says advertised.
    let status = env.api("/api/prefixes", &op).await;
    assert_eq!(status["prefixes"][1]["prefix"], CALM);
    assert_eq!(status["prefixes"][1]["advertised"], false);
    assert_eq!(status["prefixes"][1]["seconds_to_withdrawal"], Value::Null);
    let history = env.store.withdrawal_history(5).await.unwrap();
    assert_eq!(history[0].prefix.as_deref(), Some(CALM));
    assert_eq!(history[0].withdraw_method.as_deref(), Some("manual"));
    assert_eq!(history[0].status.as_deref(), Some("success"));
    assert_eq!(
        history[0].notes.as_deref(),
        Some("manual withdrawal by alice (dashboard)")
    );
    let events = env.store.attack_events(1, Some("WITHDRAW")).await.unwrap();
    assert_eq!(events[0].action_taken.as_deref(), Some("withdrawn_manual"));
    assert!(
        events[0]
            .raw_payload
            .as_deref()
            .unwrap()
            .contains("dashboard")
    );
    let queued = env.store.recent_notifications(1).await.unwrap();
    assert_eq!(queued[0].kind, "withdrawal_success");
    assert!(
        env.page("/withdrawals", &op)
            .await
            .contains("manual withdrawal by alice")
    );

    // Cloudflare's 15-minute hold: refused, explained, recorded as a failed withdrawal.
    let r = env
        .post(
            "/actions/withdraw",
            Some(&op),
            &[("csrf", op.csrf.as_str()), ("prefix", FRESH)],
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let page = env.page("/", &op).await;
    assert!(page.contains("allowed from"), "the refusal is explained");
    assert!(env.sim.sim.bgp("b-p48").unwrap().advertised);
    let history = env.store.withdrawal_history(1).await.unwrap();
    assert_eq!(
        (history[0].prefix.as_deref(), history[0].status.as_deref()),
        (Some(FRESH), Some("failed"))
    );

    // Unpin, and an unknown prefix changes nothing.
    let r = env
        .post(
            "/actions/unpin",
            Some(&op),
            &[("csrf", op.csrf.as_str()), ("prefix", ATTACKED)],
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(env.store.active_pins(Utc::now()).await.unwrap().is_empty());
    env.post(
        "/actions/advertise",
        Some(&op),
        &[("csrf", op.csrf.as_str()), ("prefix", "192.0.2.0/24")],
    )
    .await;
    assert!(env.page("/", &op).await.contains("not a configured prefix"));

    // The global brake: pause every automatic withdrawal, then resume.
    assert!(
        env.page("/actions/pause", &op)
            .await
            .contains("name=\"reason\"")
    );
    let r = env
        .post(
            "/actions/pause",
            Some(&op),
            &[
                ("csrf", op.csrf.as_str()),
                ("reason", "change window"),
                ("duration", "1h"),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let page = env.page("/", &op).await;
    assert!(page.contains("PAUSED by alice") && page.contains("id=\"resume\""));
    let status = env.api("/api/prefixes", &op).await;
    assert_eq!(status["paused"]["reason"], "change window");
    assert_eq!(
        status["prefixes"][1]["blocked_by"],
        Value::Null,
        "withdrawn: nothing to hold"
    );
    env.post("/actions/resume", Some(&op), &[("csrf", op.csrf.as_str())])
        .await;
    assert!(env.api("/api/prefixes", &op).await["paused"].is_null());

    let audit: Vec<_> = env
        .audit()
        .await
        .into_iter()
        .filter(|a| a.1 != "login")
        .map(|a| format!("{} {} {} {}", a.0, a.1, a.2, a.3))
        .collect();
    assert_eq!(
        audit,
        [
            "alice resume  ok".to_owned(),
            "alice pause  ok".to_owned(),
            format!("alice unpin {ATTACKED} ok"),
            format!("alice withdraw {FRESH} failed"),
            format!("alice withdraw {CALM} ok"),
            format!("alice pin {ATTACKED} ok"),
        ]
    );
    let via: Vec<String> = env
        .store
        .audit_log(10)
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.via)
        .collect();
    assert!(via.iter().all(|v| v == "dashboard"));

    // Logout ends the session server-side: the old cookie no longer works.
    let r = env
        .post("/logout", Some(&op), &[("csrf", op.csrf.as_str())])
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()[LOCATION], "/login");
    assert_eq!(
        env.get("/", Some(&op)).await.status(),
        StatusCode::SEE_OTHER
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_end_after_their_ttl() {
    let env = Env::new().await;
    let op = env.login(OPERATOR).await;
    env.clock.advance(Duration::hours(11));
    assert_eq!(env.get("/", Some(&op)).await.status(), StatusCode::OK);
    env.clock.advance(Duration::hours(1));
    assert_eq!(
        env.get("/", Some(&op)).await.status(),
        StatusCode::SEE_OTHER
    );
    assert_eq!(
        env.get("/api/prefixes", Some(&op)).await.status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_newest_of_autowithdraw_s_reading_and_a_logged_advertisement_wins() {
    let env = Env::new().await;
    let viewer = env.login(VIEWER).await;
    let advertised = |status: &Value| status["prefixes"][0]["advertised"].clone();
    let save = |advertised: bool, at| {
        let store = env.store.clone();
        async move {
            let mut tx = store.begin().await.unwrap();
            tx.save_prefix_state(
                &mt_store::PrefixState {
                    prefix: ATTACKED.into(),
                    advertised,
                    ..Default::default()
                },
                at,
            )
            .await
            .unwrap();
            tx.commit().await.unwrap();
        }
    };
    let now = env.clock.now();
    // autowithdraw read Cloudflare a minute before the auto-advertisement webhook came in.
    save(false, now - Duration::minutes(1)).await;
    assert_eq!(advertised(&env.api("/api/prefixes", &viewer).await), true);
    // Its next reading is newer than the webhook: it is authoritative again.
    save(false, now + Duration::minutes(1)).await;
    assert_eq!(advertised(&env.api("/api/prefixes", &viewer).await), false);
}
