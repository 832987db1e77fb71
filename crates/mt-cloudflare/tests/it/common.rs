use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mt_cloudflare::{Client, ClientOptions, RetryPolicy};
use secrecy::SecretString;
use serde_json::Value;
use wiremock::MockServer;

pub const TOKEN: &str = "cf-token-abc123";
pub const ACCOUNT: &str = "4f3a9c2e81d64b7a9e0c5d1f2a3b4c5d";

pub fn fixture(name: &str) -> Value {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name),
    )
    .unwrap();
    serde_json::from_str(&text).unwrap()
}

pub struct Cf {
    pub server: MockServer,
    pub client: Client,
    pub sleeps: Arc<Mutex<Vec<Duration>>>,
}

impl Cf {
    pub async fn start() -> Self {
        Self::with_timeout(Duration::from_secs(5)).await
    }

    pub async fn with_timeout(request_timeout: Duration) -> Self {
        let server = MockServer::start().await;
        let (client, sleeps) = client_for(&server.uri(), request_timeout);
        Self {
            server,
            client,
            sleeps,
        }
    }

    pub fn sleeps(&self) -> Vec<Duration> {
        self.sleeps.lock().unwrap().clone()
    }

    pub fn path(&self, rest: &str) -> String {
        format!("/client/v4/accounts/{ACCOUNT}/addressing/prefixes{rest}")
    }
}

pub fn client_for(base: &str, request_timeout: Duration) -> (Client, Arc<Mutex<Vec<Duration>>>) {
    let config = mt_common::config::CloudflareConfig {
        account_id: ACCOUNT.into(),
        api_base_url: format!("{base}/client/v4"),
        graphql_url: format!("{base}/client/v4/graphql"),
        ..Default::default()
    };
    let sleeps: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let recorded = sleeps.clone();
    let options = ClientOptions {
        request_timeout,
        connect_timeout: Duration::from_secs(2),
        retry: RetryPolicy {
            delays: vec![
                Duration::from_secs(1),
                Duration::from_secs(3),
                Duration::from_secs(8),
            ],
            max_retry_after: Duration::from_secs(30),
        },
        sleeper: Arc::new(move |d| {
            recorded.lock().unwrap().push(d);
            Box::pin(async {})
        }),
        ..ClientOptions::default()
    };
    let client = Client::new(&config, &SecretString::from(TOKEN.to_owned()), options).unwrap();
    (client, sleeps)
}
