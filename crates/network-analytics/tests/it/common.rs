use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cf_sim::{Running, Scenario, Sim, TrafficSpec};
use mt_cloudflare::{Client, ClientOptions, RetryPolicy};
use mt_common::SystemClock;
use mt_common::config::Config;
use mt_notify::Notifier;
use mt_store::{OpenOptions, Store};
use network_analytics::Metrics;
use network_analytics::geoip::GeoIp;
use network_analytics::poll::{PollOptions, Poller};
use secrecy::SecretString;

pub fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

/// An attack of `sources` distinct sources per one-minute bucket on 203.0.113.10, over
/// `buckets` buckets ending a minute before the simulator's start (so all are delivered).
pub fn attack(sources: u32, buckets: i64) -> TrafficSpec {
    TrafficSpec::attack(
        "203.0.113.10".parse().unwrap(),
        -60 * (buckets + 1),
        -60,
        250_000.0,
        2_000.0,
    )
    .sources(sources)
}

pub struct Harness {
    pub dir: tempfile::TempDir,
    pub sim: Running,
    pub config: Config,
    pub poller: Poller,
}

impl Harness {
    pub async fn new(traffic: Vec<TrafficSpec>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let sim = Sim::new(Scenario {
            traffic,
            ..Scenario::default()
        })
        .serve(listener)
        .await
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "[database]\npath = \"{}\"\n[cloudflare]\naccount_id = \"{}\"\napi_base_url = \"{}\"\ngraphql_url = \"{}\"\n[telegram]\nchat_id = \"-100\"\napi_url = \"{}\"\n[network_analytics]\ninterval = \"1s\"\nlookback = \"15m\"\nmetrics_listen = \"127.0.0.1:0\"\n[autowithdraw]\ninterval = \"1s\"\n",
            dir.path().join("mt.db").display(),
            Scenario::default().account_id,
            sim.api_base_url(),
            sim.graphql_url(),
            sim.url(),
        );
        let config = Config::from_toml_str(
            &text,
            Path::new("t.toml"),
            vec![("MT_TELEGRAM_BOT_TOKEN".into(), "123456:cf-sim".into())],
        )
        .unwrap();
        let store = Store::open(&OpenOptions::from_config(&config.database))
            .await
            .unwrap();
        let options = ClientOptions {
            retry: RetryPolicy {
                delays: vec![Duration::from_millis(10)],
                max_retry_after: Duration::from_secs(1),
            },
            ..ClientOptions::default()
        };
        let client = Client::new(
            &config.cloudflare,
            &SecretString::from("cf-sim-token".to_owned()),
            options,
        )
        .unwrap();
        let poller = Poller {
            datasets: mt_cloudflare::graphql::DatasetWatch::events(),
            store,
            client,
            notifier: Notifier::new(&config.telegram),
            geoip: Arc::new(GeoIp::default()),
            clock: SystemClock::shared(),
            options: PollOptions::new(Duration::from_secs(15 * 60)),
            metrics: Arc::new(Metrics::default()),
        };
        Self {
            dir,
            sim,
            config,
            poller,
        }
    }

    /// Reads the dataset settings now (as the first poll would), so injected faults reach
    /// the events query.
    pub async fn read_settings(&self) {
        let reading = self.poller.client.dataset_settings().await;
        assert!(reading.is_ok(), "{reading:?}");
        self.poller
            .datasets
            .record(mt_common::Clock::now(&*self.poller.clock), &reading);
    }

    pub fn db(&self) -> PathBuf {
        self.dir.path().join("mt.db")
    }

    pub fn sqlite(&self, sql: &str) -> String {
        let out = std::process::Command::new("sqlite3")
            .arg(self.db())
            .arg(sql)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }
}
