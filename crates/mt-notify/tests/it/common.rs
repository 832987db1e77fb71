//! A scripted fake Telegram (wiremock over loopback) and a real SQLite outbox.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{Duration as Span, TimeZone, Utc};
use mt_common::ManualClock;
use mt_common::config::Config;
use mt_notify::templates::GenericAlert;
use mt_notify::{Message, Notifier, Sender, SenderOptions};
use mt_store::{OpenOptions, Store};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

pub const TOKEN: &str = "123456:TEST-token";
pub const CHAT: &str = "-1001234567890";

/// How the fake answers one request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// 429 flood control with `retry_after`.
    RetryAfter(u32),
    /// A body teloxide cannot parse but that says `ok: true` (the seed's fixture).
    OkUnparseable,
}

/// What the fake refuses for good, as the real Bot API answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refuse {
    /// 400 "message is too long" for texts containing this marker.
    TooLong(String),
    /// 403 "bot was kicked from the supergroup chat" for this chat.
    Kicked(String),
    /// 400 "chat not found" for this chat.
    ChatNotFound(String),
    /// 400 "group chat was upgraded to a supergroup chat" with `migrate_to_chat_id`.
    Migrated(String, i64),
}

#[derive(Default)]
struct State {
    script: VecDeque<Reply>,
    delivered: Vec<Value>,
    requests: usize,
    refuse: Vec<Refuse>,
    /// After the next success: tell the test, then wait for its go-ahead before answering.
    hold_after_accept: Option<(std::sync::mpsc::Sender<()>, std::sync::mpsc::Receiver<()>)>,
    /// Successful answers are sent this much later (without blocking other requests).
    answer_delay: Duration,
}

fn telegram_error(code: u16, description: &str, parameters: Option<Value>) -> ResponseTemplate {
    let mut body = json!({"ok": false, "error_code": code, "description": description});
    if let Some(p) = parameters {
        body["parameters"] = p;
    }
    ResponseTemplate::new(code).set_body_json(body)
}

/// The fake Telegram Bot API: answers `sendMessage` from a script, then successfully.
#[derive(Clone)]
pub struct FakeTelegram {
    pub server: Arc<MockServer>,
    state: Arc<Mutex<State>>,
    outage: Arc<AtomicBool>,
    refuse_markdown: Arc<AtomicBool>,
}

struct Responder(FakeTelegram);

impl Respond for Responder {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let fake = &self.0;
        let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
        let mut state = fake.state.lock().unwrap();
        state.requests += 1;
        if fake.outage.load(Ordering::SeqCst) {
            return hang();
        }
        if fake.refuse_markdown.load(Ordering::SeqCst) && body.get("parse_mode").is_some() {
            return ResponseTemplate::new(400).set_body_json(json!({
                "ok": false, "error_code": 400,
                "description": "Bad Request: can't parse entities: Character '.' is reserved and must be escaped with the preceding '\\'"
            }));
        }
        let chat = match &body["chat_id"] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let text = body["text"].as_str().unwrap_or_default();
        for refusal in &state.refuse {
            match refusal {
                Refuse::TooLong(marker) if text.contains(marker.as_str()) => {
                    return telegram_error(400, "Bad Request: message is too long", None);
                }
                Refuse::Kicked(c) if *c == chat => {
                    return telegram_error(
                        403,
                        "Forbidden: bot was kicked from the supergroup chat",
                        None,
                    );
                }
                Refuse::ChatNotFound(c) if *c == chat => {
                    return telegram_error(400, "Bad Request: chat not found", None);
                }
                Refuse::Migrated(c, to) if *c == chat => {
                    return telegram_error(
                        400,
                        "Bad Request: group chat was upgraded to a supergroup chat",
                        Some(json!({"migrate_to_chat_id": to})),
                    );
                }
                _ => {}
            }
        }
        match state.script.pop_front() {
            Some(Reply::RetryAfter(n)) => ResponseTemplate::new(429).set_body_json(json!({
                "ok": false, "error_code": 429,
                "description": format!("Too Many Requests: retry after {n}"),
                "parameters": {"retry_after": n}
            })),
            Some(Reply::OkUnparseable) => {
                state.delivered.push(body);
                let fixture =
                    include_str!("../fixtures/telegram_sendmessage_success_response.json");
                ResponseTemplate::new(200).set_body_raw(fixture, "application/json")
            }
            None => {
                let text = body.get("text").cloned().unwrap_or(Value::Null);
                state.delivered.push(body);
                if let Some((accepted, go)) = state.hold_after_accept.take() {
                    drop(state);
                    let _ = accepted.send(());
                    let _ = go.recv_timeout(Duration::from_secs(20));
                    state = fake.state.lock().unwrap();
                }
                ResponseTemplate::new(200).set_delay(state.answer_delay).set_body_json(json!({
                    "ok": true,
                    "result": {
                        "message_id": state.delivered.len(),
                        "date": 1_737_456_000,
                        "chat": {"id": -1_001_234_567_890_i64, "type": "supergroup", "title": "SOC"},
                        "text": text
                    }
                }))
            }
        }
    }
}

fn hang() -> ResponseTemplate {
    ResponseTemplate::new(200).set_delay(Duration::from_secs(3))
}

impl FakeTelegram {
    pub async fn start() -> Self {
        let fake = Self {
            server: Arc::new(MockServer::start().await),
            state: Arc::default(),
            outage: Arc::default(),
            refuse_markdown: Arc::default(),
        };
        Mock::given(method("POST"))
            .and(path(format!("/bot{TOKEN}/SendMessage")))
            .respond_with(Responder(fake.clone()))
            .mount(&fake.server)
            .await;
        fake
    }

    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.state.lock().unwrap().script.extend(replies);
    }

    /// Refuses for good, from now on, what `refusal` names.
    pub fn refuse(&self, refusal: Refuse) {
        self.state.lock().unwrap().refuse.push(refusal);
    }

    /// Stops refusing.
    pub fn accept_all(&self) {
        self.state.lock().unwrap().refuse.clear();
    }

    /// After the next accepted message (already counted as delivered), the fake signals on the
    /// returned receiver and answers only when the returned sender is used (or after 20 s).
    pub fn hold_after_next_accept(
        &self,
    ) -> (std::sync::mpsc::Receiver<()>, std::sync::mpsc::Sender<()>) {
        let (accepted_tx, accepted_rx) = std::sync::mpsc::channel();
        let (go_tx, go_rx) = std::sync::mpsc::channel();
        self.state.lock().unwrap().hold_after_accept = Some((accepted_tx, go_rx));
        (accepted_rx, go_tx)
    }

    /// Answers every later accepted message `delay` late (a slow network, a paused process).
    pub fn set_answer_delay(&self, delay: Duration) {
        self.state.lock().unwrap().answer_delay = delay;
    }

    pub fn set_outage(&self, on: bool) {
        self.outage.store(on, Ordering::SeqCst);
    }

    pub fn refuse_markdown(&self, on: bool) {
        self.refuse_markdown.store(on, Ordering::SeqCst);
    }

    /// Bodies of the requests answered with success, in arrival order.
    pub fn delivered(&self) -> Vec<Value> {
        self.state.lock().unwrap().delivered.clone()
    }

    pub fn delivered_texts(&self) -> Vec<String> {
        self.delivered()
            .iter()
            .map(|b| b["text"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    pub fn requests(&self) -> usize {
        self.state.lock().unwrap().requests
    }
}

pub fn config(db: &Path, telegram_url: &str, enabled: bool) -> Config {
    let text = format!(
        "[database]\npath = \"{}\"\n[telegram]\nenabled = {enabled}\napi_url = \"{telegram_url}\"\nchat_id = \"{CHAT}\"\norg_name = \"TEST SOC\"\n",
        db.display()
    );
    Config::from_toml_str(
        &text,
        Path::new("test.toml"),
        vec![("MT_TELEGRAM_BOT_TOKEN".to_owned(), TOKEN.to_owned())],
    )
    .expect("valid config")
}

/// Real-time knobs shortened; logical time (backoff, retry_after, leases) follows the
/// injected clock.
pub fn fast_options() -> SenderOptions {
    SenderOptions {
        min_interval: Duration::ZERO,
        group_per_minute: 10_000,
        poll_interval: Duration::from_millis(10),
        lease_ttl: Duration::from_secs(30),
        request_timeout: Duration::from_millis(400),
        policy: mt_notify::outbox::Policy::default(),
    }
}

pub struct Harness {
    pub _dir: tempfile::TempDir,
    pub config: Config,
    pub store: Store,
    pub clock: ManualClock,
    pub telegram: FakeTelegram,
    pub notifier: Notifier,
}

impl Harness {
    pub async fn new(enabled: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let telegram = FakeTelegram::start().await;
        let config = config(&dir.path().join("mt.db"), &telegram.server.uri(), enabled);
        let clock = ManualClock::new(Utc.with_ymd_and_hms(2026, 1, 19, 0, 0, 0).unwrap());
        // The test clock is the database's as well: it judges lease expiry (SPEC §7.9).
        let store = Store::open(&OpenOptions {
            database_clock: Some(clock.shared()),
            ..OpenOptions::from_config(&config.database)
        })
        .await
        .unwrap();
        let notifier = Notifier::new(&config.telegram);
        Self {
            _dir: dir,
            config,
            store,
            clock,
            telegram,
            notifier,
        }
    }

    /// A second connection pool on the same file, as another daemon would have.
    pub async fn other_daemon_store(&self) -> Store {
        Store::open(&self.store_options()).await.unwrap()
    }

    /// How every process of the test opens the database (on the test's database clock).
    pub fn store_options(&self) -> OpenOptions {
        OpenOptions {
            database_clock: Some(self.clock.shared()),
            ..OpenOptions::from_config(&self.config.database)
        }
    }

    pub fn message(n: usize) -> Message {
        Message::Generic(GenericAlert {
            name: Some(format!("message {n:03}")),
            at: Utc.with_ymd_and_hms(2026, 1, 19, 0, 0, 0).unwrap(),
            ..Default::default()
        })
    }

    /// Queues messages `range` in one transaction each, as event handlers do.
    pub async fn enqueue(&self, range: std::ops::Range<usize>) {
        self.enqueue_to(&self.notifier, range).await;
    }

    /// Queues messages `range` for another chat (as a daemon configured for it would).
    pub async fn enqueue_for_chat(&self, chat: &str, range: std::ops::Range<usize>) {
        let mut telegram = self.config.telegram.clone();
        telegram.chat_id = chat.to_owned();
        self.enqueue_to(&Notifier::new(&telegram), range).await;
    }

    async fn enqueue_to(&self, notifier: &Notifier, range: std::ops::Range<usize>) {
        for n in range {
            let mut tx = self.store.begin().await.unwrap();
            notifier
                .queue(&mut tx, &Self::message(n), self.clock.now_utc())
                .await
                .unwrap();
            tx.commit().await.unwrap();
        }
    }

    pub fn sender(&self, store: Store) -> Sender {
        Sender::new(&self.config, store, self.clock.shared(), fast_options()).unwrap()
    }

    pub fn spawn(&self, sender: Sender) -> (tokio::task::JoinHandle<()>, CancellationToken) {
        let token = CancellationToken::new();
        (tokio::spawn(sender.run(token.clone())), token)
    }

    pub async fn queued(&self) -> i64 {
        self.store.outbox_stats().await.unwrap().queued
    }
}

/// The `message NNN` name inside a delivered text.
pub fn message_name(text: &str) -> String {
    let start = text.find("message ").expect("a test message");
    text[start..start + 11].to_owned()
}

/// Polls `condition` every 10 ms for up to 20 s (generous for a loaded 2-core machine); the
/// condition, not the duration, is what the test checks.
pub async fn eventually<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    for _ in 0..2000 {
        if condition().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// Advances logical time by `step` before each poll until `condition` holds.
pub async fn advancing_until<F, Fut>(h: &Harness, what: &str, step: Span, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    eventually(what, || {
        h.clock.advance(step);
        condition()
    })
    .await;
}

pub trait ClockExt {
    fn now_utc(&self) -> chrono::DateTime<Utc>;
}

impl ClockExt for ManualClock {
    fn now_utc(&self) -> chrono::DateTime<Utc> {
        mt_common::Clock::now(self)
    }
}
