//! `cf-sim`: an HTTP server that behaves like the parts of Cloudflare and Telegram the suite
//! uses, for tests and the demo. Dev tool, not shipped.
//!
//! - REST: IP prefixes, BGP prefixes and their on-demand state, with the 15-minute rules as the
//!   original suite documents them (a withdrawal within `hold` of an advertisement and a
//!   re-advertisement within `hold` of a withdrawal are refused with 429 / code 1002), locked
//!   prefixes (400 / code 1000), and the API token (401).
//! - GraphQL: every request is validated against Cloudflare's published schema (the project's
//!   pruned SDL, [`schema`]) and refused as Cloudflare refuses it (`data: null`, `errors[]`
//!   with the message and path). `magicTransitNetworkAnalyticsAdaptiveGroups` and
//!   `dosdNetworkAnalyticsAdaptiveGroups` are answered from a traffic timeline with the
//!   dataset's real semantics (sums are scaled-up estimates, `sampleInterval` a dimension,
//!   `ipDestinationSubnet` a /24 or /64), honouring the time window, filters, `limit`,
//!   `orderBy` and pipeline lag, and enforcing each dataset's `settings` (also served):
//!   a valid filter or ordering it does not simulate is refused, never ignored.
//! - Telegram: `sendMessage` recorded, with 429 `retry_after` injection.
//! - Faults per endpoint: status codes, 429 with `Retry-After`, slow answers, 200 with
//!   `errors`, HTML bodies.
//!
//! Times in the timeline are offsets from the simulator's start, so a test or the demo plays a
//! whole lifecycle in seconds by giving the daemons short durations (no clock tricks in them).

mod analytics;
pub mod gql;
pub mod scenario;
pub mod schema;
pub mod webhook;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State as AxState};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, SecondsFormat, Utc};
use ipnet::IpNet;
use mt_common::{SharedClock, SystemClock};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use scenario::{PrefixSpec, Scenario, TrafficSpec};

/// The simulated endpoints, for fault injection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `/client/v4/accounts/…`
    Rest,
    /// `/client/v4/graphql`
    GraphQl,
    /// `/bot…/sendMessage`
    Telegram,
}

/// A fault applied to the next request of an endpoint.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// This HTTP status with a JSON error envelope.
    Status(u16),
    /// 429, with `Retry-After` (REST) or `retry_after` (Telegram) when given.
    RateLimited(Option<u64>),
    /// Answer normally, after this delay.
    Slow(Duration),
    /// GraphQL: HTTP 200 carrying `errors` with this message.
    GraphQlError(String),
    /// An HTML error page with this status.
    Html(u16),
}

/// A recorded PATCH of a BGP prefix.
#[derive(Debug, Clone, PartialEq)]
pub struct PatchCall {
    /// BGP prefix id.
    pub bgp_id: String,
    /// Requested state.
    pub advertised: bool,
    /// HTTP status answered.
    pub status: u16,
    /// When.
    pub at: DateTime<Utc>,
}

/// A recorded Telegram message.
#[derive(Debug, Clone, PartialEq)]
pub struct SentMessage {
    /// `chat_id`.
    pub chat_id: String,
    /// `text`.
    pub text: String,
    /// `parse_mode`, if any.
    pub parse_mode: Option<String>,
}

/// One BGP prefix's on-demand state.
#[derive(Debug, Clone, PartialEq)]
pub struct BgpState {
    /// BGP prefix id.
    pub id: String,
    /// Advertised.
    pub advertised: bool,
    /// Last change.
    pub modified_at: DateTime<Utc>,
    /// Locked.
    pub locked: bool,
}

#[derive(Debug, Clone)]
struct SimPrefix {
    id: String,
    cidr: IpNet,
    description: String,
    bgp: BgpState,
}

/// The simulator's state.
#[derive(Debug)]
pub struct State {
    clock: SharedClock,
    scenario: Scenario,
    start: DateTime<Utc>,
    prefixes: Vec<SimPrefix>,
    traffic: Vec<TrafficSpec>,
    faults: HashMap<Endpoint, VecDeque<Fault>>,
    patches: Vec<PatchCall>,
    telegram: Vec<SentMessage>,
    graphql_queries: usize,
    ignore_patches: bool,
    /// PATCHes still to carry out whose answer is then lost (a 502 page instead).
    lose_patch_answers: usize,
}

/// Handle to a simulator (cheap to clone; every clone sees the same state).
#[derive(Debug, Clone)]
pub struct Sim {
    state: Arc<Mutex<State>>,
}

/// A simulator serving on a socket.
#[derive(Debug)]
pub struct Running {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its state.
    pub sim: Sim,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// `http://addr`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The REST base URL to put in `cloudflare.api_base_url`.
    pub fn api_base_url(&self) -> String {
        format!("{}/client/v4", self.url())
    }

    /// The URL to put in `cloudflare.graphql_url`.
    pub fn graphql_url(&self) -> String {
        format!("{}/client/v4/graphql", self.url())
    }

    /// Stops serving.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

impl Sim {
    /// A simulator on the system clock whose timeline starts now, floored to a multiple of
    /// the bucket width (like Cloudflare's minute buckets, aligned to the wall clock).
    pub fn new(scenario: Scenario) -> Self {
        Self::with_clock(scenario, SystemClock::shared())
    }

    /// A simulator whose "now" is `clock`: with a [`mt_common::ManualClock`] shared with the
    /// code under test, scenario tests move both through minutes of timeline without sleeping
    /// (the 15-minute rules, pipeline lag and partial buckets all follow the clock).
    pub fn with_clock(scenario: Scenario, clock: SharedClock) -> Self {
        let width = i64::try_from(scenario.bucket.as_millis())
            .unwrap_or(60_000)
            .max(1000);
        let now = clock.now().timestamp_millis();
        let start = DateTime::from_timestamp_millis(now - now.rem_euclid(width))
            .unwrap_or_else(|| clock.now());
        let prefixes = scenario
            .prefixes
            .iter()
            .map(|p| SimPrefix {
                id: p.id.clone(),
                cidr: p.cidr.trunc(),
                description: p.description.clone(),
                bgp: BgpState {
                    id: p.bgp_id.clone(),
                    advertised: p.advertised,
                    modified_at: start - chrono::Duration::seconds(p.changed_secs_ago),
                    locked: p.locked,
                },
            })
            .collect();
        Self {
            state: Arc::new(Mutex::new(State {
                clock,
                traffic: scenario.traffic.clone(),
                scenario,
                start,
                prefixes,
                faults: HashMap::new(),
                patches: Vec::new(),
                telegram: Vec::new(),
                graphql_queries: 0,
                ignore_patches: false,
                lose_patch_answers: 0,
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Serves on `listener` until [`Running::stop`].
    pub async fn serve(self, listener: TcpListener) -> std::io::Result<Running> {
        let addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        let app = router(self.clone());
        let shutdown = stop.clone();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await;
        });
        Ok(Running {
            addr,
            sim: self,
            stop,
            task,
        })
    }

    /// The start of the timeline.
    pub fn start(&self) -> DateTime<Utc> {
        self.lock().start
    }

    /// Adds traffic to the timeline.
    pub fn add_traffic(&self, spec: TrafficSpec) {
        self.lock().traffic.push(spec);
    }

    /// Applies `fault` to the next `times` requests of `endpoint`.
    pub fn inject(&self, endpoint: Endpoint, fault: Fault, times: usize) {
        let mut state = self.lock();
        let queue = state.faults.entry(endpoint).or_default();
        queue.extend(std::iter::repeat_n(fault, times));
    }

    /// Drops every fault still waiting for `endpoint` (the outage ends).
    pub fn clear_faults(&self, endpoint: Endpoint) {
        self.lock().faults.remove(&endpoint);
    }

    /// The simulator's "now".
    pub fn now(&self) -> DateTime<Utc> {
        self.lock().clock.now()
    }

    /// Cloudflare advertises a prefix by itself (auto-advertisement), whatever the hold.
    pub fn auto_advertise(&self, bgp_id: &str) -> bool {
        let mut state = self.lock();
        let now = state.clock.now();
        match state.prefixes.iter_mut().find(|p| p.bgp.id == bgp_id) {
            Some(p) => {
                if !p.bgp.advertised {
                    p.bgp.advertised = true;
                    p.bgp.modified_at = now;
                }
                true
            }
            None => false,
        }
    }

    /// Carries out the next `n` PATCHes but answers each with a 502 HTML page, as when the
    /// answer is lost between Cloudflare's API and the client after the change was made.
    pub fn lose_patch_answers(&self, n: usize) {
        self.lock().lose_patch_answers = n;
    }

    /// Accept PATCHes without carrying them out (the answer shows the requested state, the
    /// prefix keeps its old one): a withdrawal Cloudflare "registered" but never performed.
    pub fn ignore_patches(&self, ignore: bool) {
        self.lock().ignore_patches = ignore;
    }

    /// Changes the CIDR Cloudflare reports for a BGP prefix (someone re-created it, or the
    /// config points at the wrong id).
    pub fn set_cidr(&self, bgp_id: &str, cidr: IpNet) {
        if let Some(p) = self.lock().prefixes.iter_mut().find(|p| p.bgp.id == bgp_id) {
            p.cidr = cidr;
        }
    }

    /// Locks or unlocks a prefix's advertisement.
    pub fn set_locked(&self, bgp_id: &str, locked: bool) {
        if let Some(p) = self.lock().prefixes.iter_mut().find(|p| p.bgp.id == bgp_id) {
            p.bgp.locked = locked;
        }
    }

    /// One BGP prefix's state.
    pub fn bgp(&self, bgp_id: &str) -> Option<BgpState> {
        self.lock()
            .prefixes
            .iter()
            .find(|p| p.bgp.id == bgp_id)
            .map(|p| p.bgp.clone())
    }

    /// Every PATCH received.
    pub fn patches(&self) -> Vec<PatchCall> {
        self.lock().patches.clone()
    }

    /// Changes a dataset's `settings` (and what the simulator enforces) from now on.
    pub fn set_dataset_settings(&self, dataset: &str, settings: scenario::DatasetSettings) {
        self.lock()
            .scenario
            .settings
            .insert(dataset.to_owned(), settings);
    }

    /// Every Telegram message accepted.
    pub fn telegram_messages(&self) -> Vec<SentMessage> {
        self.lock().telegram.clone()
    }

    /// GraphQL requests received.
    pub fn graphql_queries(&self) -> usize {
        self.lock().graphql_queries
    }

    fn take_fault(&self, endpoint: Endpoint) -> Option<Fault> {
        self.lock()
            .faults
            .get_mut(&endpoint)
            .and_then(VecDeque::pop_front)
    }
}

fn router(sim: Sim) -> Router {
    Router::new()
        .route(
            "/client/v4/accounts/{account}/addressing/prefixes",
            get(list_prefixes),
        )
        .route(
            "/client/v4/accounts/{account}/addressing/prefixes/{prefix}/bgp/prefixes",
            get(list_bgp),
        )
        .route(
            "/client/v4/accounts/{account}/addressing/prefixes/{prefix}/bgp/prefixes/{bgp}",
            get(get_bgp).patch(patch_bgp),
        )
        .route("/client/v4/graphql", post(graphql))
        .route("/{bot}/{method}", post(telegram))
        .layer(axum::middleware::map_response_with_state(
            sim.clone(),
            date_header,
        ))
        .with_state(sim)
}

/// `Date` from the simulator's clock, as Cloudflare's own (clients compare it with theirs).
async fn date_header(AxState(sim): AxState<Sim>, mut response: Response) -> Response {
    let date = sim.now().format("%a, %d %b %Y %H:%M:%S GMT").to_string();
    if let Ok(value) = date.parse() {
        response
            .headers_mut()
            .insert(axum::http::header::DATE, value);
    }
    response
}

fn envelope_error(status: u16, code: i64, message: &str) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        axum::Json(json!({"success": false, "errors": [{"code": code, "message": message}], "messages": [], "result": null})),
    )
        .into_response()
}

fn ok(result: Value) -> Response {
    axum::Json(json!({"success": true, "errors": [], "messages": [], "result": result}))
        .into_response()
}

/// Applies an injected fault; `Some` is the answer to send instead of the normal one.
async fn fault(sim: &Sim, endpoint: Endpoint) -> Option<Response> {
    match sim.take_fault(endpoint)? {
        Fault::Slow(d) => {
            tokio::time::sleep(d).await;
            None
        }
        Fault::Status(s) => Some(envelope_error(s, 10_000 + i64::from(s), "injected failure")),
        Fault::RateLimited(after) if endpoint == Endpoint::Telegram => {
            let after = after.unwrap_or(5);
            Some(
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    axum::Json(json!({"ok": false, "error_code": 429, "description": format!("Too Many Requests: retry after {after}"), "parameters": {"retry_after": after}})),
                )
                    .into_response(),
            )
        }
        Fault::RateLimited(after) => {
            let mut response = envelope_error(
                429,
                971,
                "Please wait and consider throttling your request speed",
            );
            if let Some(after) = after
                && let Ok(v) = after.to_string().parse()
            {
                response.headers_mut().insert("retry-after", v);
            }
            Some(response)
        }
        Fault::GraphQlError(message) => Some(
            axum::Json(json!({"data": null, "errors": [{"message": message}]})).into_response(),
        ),
        Fault::Html(s) => Some(
            (
                StatusCode::from_u16(s).unwrap_or(StatusCode::BAD_GATEWAY),
                [("content-type", "text/html")],
                format!("<html><body><h1>{s}</h1>cloudflare</body></html>"),
            )
                .into_response(),
        ),
    }
}

fn authorised(sim: &Sim, headers: &HeaderMap) -> bool {
    let expected = format!("Bearer {}", sim.lock().scenario.token);
    headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(expected.as_str())
}

/// Token and account checks plus fault injection, shared by the REST handlers.
async fn guard(sim: &Sim, headers: &HeaderMap, account: &str) -> Option<Response> {
    if let Some(r) = fault(sim, Endpoint::Rest).await {
        return Some(r);
    }
    if !authorised(sim, headers) {
        return Some(envelope_error(401, 10_000, "Authentication error"));
    }
    if sim.lock().scenario.account_id != account {
        return Some(envelope_error(
            403,
            10_001,
            "Authorization error: not a member of this account",
        ));
    }
    None
}

fn prefix_json(p: &SimPrefix) -> Value {
    json!({
        "id": p.id, "cidr": p.cidr.to_string(), "description": p.description,
        "advertised": p.bgp.advertised, "advertised_modified_at": time(p.bgp.modified_at),
        "on_demand_enabled": true, "on_demand_locked": p.bgp.locked, "approved": "V",
    })
}

fn bgp_json(p: &SimPrefix) -> Value {
    json!({
        "id": p.bgp.id, "cidr": p.cidr.to_string(), "asn": 64496, "auto_advertise_withdraw": false,
        "on_demand": {
            "advertised": p.bgp.advertised,
            "advertised_modified_at": time(p.bgp.modified_at),
            "on_demand_enabled": true,
            "on_demand_locked": p.bgp.locked,
        }
    })
}

async fn list_prefixes(
    AxState(sim): AxState<Sim>,
    Path(account): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = guard(&sim, &headers, &account).await {
        return r;
    }
    ok(Value::Array(
        sim.lock().prefixes.iter().map(prefix_json).collect(),
    ))
}

async fn list_bgp(
    AxState(sim): AxState<Sim>,
    Path((account, prefix)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = guard(&sim, &headers, &account).await {
        return r;
    }
    let state = sim.lock();
    match state.prefixes.iter().find(|p| p.id == prefix) {
        Some(p) => ok(json!([bgp_json(p)])),
        None => envelope_error(404, 1000, "prefix not found"),
    }
}

async fn get_bgp(
    AxState(sim): AxState<Sim>,
    Path((account, prefix, bgp)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = guard(&sim, &headers, &account).await {
        return r;
    }
    let state = sim.lock();
    match state
        .prefixes
        .iter()
        .find(|p| p.id == prefix && p.bgp.id == bgp)
    {
        Some(p) => ok(bgp_json(p)),
        None => envelope_error(404, 1000, "BGP prefix not found"),
    }
}

async fn patch_bgp(
    AxState(sim): AxState<Sim>,
    Path((account, prefix, bgp)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: String,
) -> Response {
    if let Some(r) = guard(&sim, &headers, &account).await {
        return r;
    }
    let Some(wanted) = serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|v| v.pointer("/on_demand/advertised").and_then(Value::as_bool))
    else {
        return envelope_error(400, 1001, "expected {\"on_demand\":{\"advertised\":bool}}");
    };
    let mut state = sim.lock();
    let now = state.clock.now();
    let hold = chrono::Duration::from_std(state.scenario.hold).unwrap_or_default();
    let ignore_patches = state.ignore_patches;
    let Some(p) = state
        .prefixes
        .iter_mut()
        .find(|p| p.id == prefix && p.bgp.id == bgp)
    else {
        return envelope_error(404, 1000, "BGP prefix not found");
    };
    let response = if p.bgp.locked {
        envelope_error(400, 1000, "prefix advertisement status is locked")
    } else if p.bgp.advertised == wanted {
        ok(bgp_json(p))
    } else if now - p.bgp.modified_at < hold {
        let message = if wanted {
            "Prefix was withdrawn less than 15 minutes ago"
        } else {
            "Prefix was advertised less than 15 minutes ago"
        };
        envelope_error(429, 1002, message)
    } else if ignore_patches {
        let mut answered = p.clone();
        answered.bgp.advertised = wanted;
        answered.bgp.modified_at = now;
        ok(bgp_json(&answered))
    } else {
        p.bgp.advertised = wanted;
        p.bgp.modified_at = now;
        ok(bgp_json(p))
    };
    let response = if state.lose_patch_answers > 0 {
        state.lose_patch_answers -= 1;
        (
            StatusCode::BAD_GATEWAY,
            [("content-type", "text/html")],
            "<html><body><h1>502 Bad Gateway</h1>cloudflare</body></html>",
        )
            .into_response()
    } else {
        response
    };
    let status = response.status().as_u16();
    state.patches.push(PatchCall {
        bgp_id: bgp,
        advertised: wanted,
        status,
        at: now,
    });
    response
}

async fn graphql(AxState(sim): AxState<Sim>, headers: HeaderMap, body: String) -> Response {
    sim.lock().graphql_queries += 1;
    if let Some(r) = fault(&sim, Endpoint::GraphQl).await {
        return r;
    }
    if !authorised(&sim, &headers) {
        return envelope_error(401, 10_000, "Authentication error");
    }
    let now = sim.now();
    let error = |errors: Vec<(String, Vec<String>)>| {
        let errors: Vec<Value> = errors
            .into_iter()
            .map(|(message, path)| {
                json!({"message": message, "path": path, "extensions": {"timestamp": time(now)}})
            })
            .collect();
        axum::Json(json!({"data": null, "errors": errors})).into_response()
    };
    let Ok(request) = serde_json::from_str::<Value>(&body) else {
        return error(vec![(
            "error parsing request body: not JSON".into(),
            vec![],
        )]);
    };
    let query = request
        .get("query")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let variables = request
        .get("variables")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    // What Cloudflare's schema refuses, cf-sim refuses: same document, same verdict.
    let invalid = schema::validate(query, &variables);
    if !invalid.is_empty() {
        return error(invalid.into_iter().map(|e| (e.message, e.path)).collect());
    }
    let fields = match gql::parse(query, &variables) {
        Ok(f) => f,
        Err(e) => {
            return error(vec![(
                format!("cf-sim cannot execute this query: {e}"),
                vec![],
            )]);
        }
    };
    let answer = {
        let state = sim.lock();
        analytics::execute(&state, &fields, state.clock.now())
    };
    match answer {
        Ok(data) => axum::Json(json!({"data": data, "errors": null})).into_response(),
        Err(e) => error(vec![(e.message, e.path)]),
    }
}

/// What Telegram's `sendMessage` refuses, with its status, `error_code` and `description`
/// (Bot API: "1-4096 characters after entities parsing"; parse modes `MarkdownV2`, `HTML`,
/// `Markdown`; chat ids are integers or `@channelusername`), and the chats `scenario` says the
/// bot is not in.
fn telegram_refusal(
    scenario: &Scenario,
    chat_id: &str,
    text: &str,
    request: &Value,
) -> Option<Response> {
    let refuse = |status: StatusCode, description: &str, parameters: Option<Value>| {
        let mut body =
            json!({"ok": false, "error_code": status.as_u16(), "description": description});
        if let Some(p) = parameters {
            body["parameters"] = p;
        }
        Some((status, axum::Json(body)).into_response())
    };
    let well_formed = chat_id.parse::<i64>().is_ok()
        || (chat_id.len() > 1
            && chat_id.starts_with('@')
            && chat_id[1..]
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_'));
    if chat_id.is_empty() {
        return refuse(
            StatusCode::BAD_REQUEST,
            "Bad Request: chat_id is empty",
            None,
        );
    }
    if let Some((_, to)) = scenario
        .telegram_migrated
        .iter()
        .find(|(from, _)| from == chat_id)
    {
        return refuse(
            StatusCode::BAD_REQUEST,
            "Bad Request: group chat was upgraded to a supergroup chat",
            Some(json!({"migrate_to_chat_id": to})),
        );
    }
    if scenario.telegram_kicked.iter().any(|c| c == chat_id) {
        return refuse(
            StatusCode::FORBIDDEN,
            "Forbidden: bot was kicked from the supergroup chat",
            None,
        );
    }
    if !well_formed
        || (!scenario.telegram_chats.is_empty()
            && !scenario.telegram_chats.iter().any(|c| c == chat_id))
    {
        return refuse(StatusCode::BAD_REQUEST, "Bad Request: chat not found", None);
    }
    match request.get("parse_mode").and_then(Value::as_str) {
        None | Some("MarkdownV2" | "HTML" | "Markdown") => {}
        Some(other) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                &format!("Bad Request: unsupported parse_mode \"{other}\""),
                None,
            );
        }
    }
    if text.trim().is_empty() {
        return refuse(
            StatusCode::BAD_REQUEST,
            "Bad Request: message text is empty",
            None,
        );
    }
    if text.encode_utf16().count() > 4096 {
        return refuse(
            StatusCode::BAD_REQUEST,
            "Bad Request: message is too long",
            None,
        );
    }
    None
}

async fn telegram(
    AxState(sim): AxState<Sim>,
    Path((bot, method)): Path<(String, String)>,
    body: String,
) -> Response {
    let token = sim.lock().scenario.telegram_token.clone();
    if bot != format!("bot{token}") {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"ok": false, "error_code": 401, "description": "Unauthorized"})),
        )
            .into_response();
    }
    if !method.eq_ignore_ascii_case("sendMessage") {
        return (StatusCode::NOT_FOUND, axum::Json(json!({"ok": false, "error_code": 404, "description": "Not Found: method not found"}))).into_response();
    }
    if let Some(r) = fault(&sim, Endpoint::Telegram).await {
        return r;
    }
    let request: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let chat_id = match &request["chat_id"] {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    let text = request["text"].as_str().unwrap_or_default().to_owned();
    if let Some(refusal) = telegram_refusal(&sim.lock().scenario, &chat_id, &text, &request) {
        return refusal;
    }
    let mut state = sim.lock();
    state.telegram.push(SentMessage {
        chat_id: chat_id.clone(),
        text: text.clone(),
        parse_mode: request["parse_mode"].as_str().map(str::to_owned),
    });
    let id = state.telegram.len();
    let date = state.clock.now().timestamp();
    let chat = chat_id
        .parse::<i64>()
        .map(Value::from)
        .unwrap_or(Value::String(chat_id));
    axum::Json(json!({
        "ok": true,
        "result": {"message_id": id, "date": date, "chat": {"id": chat, "type": "supergroup", "title": "SOC"}, "text": text}
    }))
    .into_response()
}
