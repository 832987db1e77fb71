//! A scripted fake Telegram (wiremock over loopback) and a real SQLite outbox.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{TimeZone, Utc};
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

#[derive(Default)]
struct State {
    script: VecDeque<Reply>,
    delivered: Vec<Value>,
    requests: usize,
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
                ResponseTemplate::new(200).set_body_json(json!({
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
        backoff_base: Duration::from_secs(2),
        backoff_cap: Duration::from_secs(300),
        retry_after_cap: Duration::from_secs(3600),
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
        let store = Store::open(&OpenOptions::from_config(&config.database))
            .await
            .unwrap();
        let clock = ManualClock::new(Utc.with_ymd_and_hms(2026, 1, 19, 0, 0, 0).unwrap());
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
        Store::open(&OpenOptions::from_config(&self.config.database))
            .await
            .unwrap()
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
        for n in range {
            let mut tx = self.store.begin().await.unwrap();
            self.notifier
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

pub trait ClockExt {
    fn now_utc(&self) -> chrono::DateTime<Utc>;
}

impl ClockExt for ManualClock {
    fn now_utc(&self) -> chrono::DateTime<Utc> {
        mt_common::Clock::now(self)
    }
}
