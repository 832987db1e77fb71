//! Test application: a router over a temporary database and archive.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use chrono::{TimeZone, Utc};
use http_body_util::BodyExt;
use mt_common::ManualClock;
use mt_common::config::Config;
use mt_store::{OpenOptions, Store};
use secrecy::SecretString;
use serde_json::Value;
use tower::ServiceExt;
use webhook_receiver::{AppState, router};

pub const SECRET: &str = "correct horse battery staple";

pub fn fixture(rel: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(rel),
    )
    .unwrap_or_else(|e| panic!("{rel}: {e}"))
}

pub fn config_text(dir: &Path, extra_webhook: &str) -> String {
    format!(
        r#"
[database]
path = "{db}"
[cloudflare]
account_id = "acc"
[[prefixes]]
cidr = "203.0.113.0/24"
prefix_id = "p1"
bgp_prefix_id = "b1"
[[prefixes]]
cidr = "198.51.100.0/24"
prefix_id = "p2"
bgp_prefix_id = "b2"
[[prefixes]]
cidr = "185.54.82.0/24"
prefix_id = "p3"
bgp_prefix_id = "b3"
[[prefixes]]
cidr = "2001:db8:1000::/48"
prefix_id = "p4"
bgp_prefix_id = "b4"
[webhook]
archive_dir = "{archive}"
{max_body}
{extra_webhook}
[telegram]
chat_id = "-100123"
"#,
        db = dir.join("mt.db").display(),
        max_body = if extra_webhook.contains("max_body_bytes") {
            ""
        } else {
            "max_body_bytes = 4096"
        },
        archive = dir.join("webhooks").display(),
    )
}

pub struct TestApp {
    pub dir: tempfile::TempDir,
    pub store: Store,
    pub clock: ManualClock,
    pub app: Router,
    pub state: AppState,
}

impl TestApp {
    pub async fn new() -> Self {
        Self::with(|_| {}, "", Some(SECRET)).await
    }

    pub async fn with(
        tweak: impl FnOnce(&mut mt_store::OpenOptions),
        extra_webhook: &str,
        secret: Option<&str>,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::from_toml_str(
            &config_text(dir.path(), extra_webhook),
            Path::new("t.toml"),
            Vec::new(),
        )
        .unwrap();
        let mut options = OpenOptions::from_config(&config.database);
        tweak(&mut options);
        let store = Store::open(&options).await.unwrap();
        let clock = ManualClock::new(Utc.with_ymd_and_hms(2026, 1, 19, 0, 15, 0).unwrap());
        let secret = secret.map(|s| SecretString::from(s.to_owned()));
        let state = AppState::new(config, store.clone(), clock.shared(), secret.as_ref())
            .await
            .unwrap();
        Self {
            app: router(state.clone()),
            dir,
            store,
            clock,
            state,
        }
    }

    pub fn archive_dir(&self) -> PathBuf {
        self.dir.path().join("webhooks")
    }

    /// Runs the archive writer until the backlog is empty (the daemon runs it as a task), then
    /// lists the archive.
    pub async fn archived(&self) -> Vec<String> {
        self.state.archive_pending().await.unwrap();
        self.archive_files()
    }

    /// The archive's files, without running the writer.
    pub fn archive_files(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.archive_dir())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().unwrap().is_file())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    pub async fn send(&self, request: Request<Body>) -> (StatusCode, Value) {
        let response = self.app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
        (status, body)
    }

    pub async fn post(&self, body: &str) -> (StatusCode, Value) {
        self.send(
            post(body)
                .header("cf-webhook-auth", SECRET)
                .body(Body::from(body.to_owned()))
                .unwrap(),
        )
        .await
    }
}

pub fn post(_body: &str) -> axum::http::request::Builder {
    Request::builder()
        .method("POST")
        .uri("/webhook")
        .header("content-type", "application/json")
        .extension(ConnectInfo(SocketAddr::from(([192, 0, 2, 10], 40000))))
}
