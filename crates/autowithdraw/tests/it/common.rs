use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use autowithdraw::cycle::{CycleReport, Engine};
use cf_sim::{PrefixSpec, Running, Scenario, Sim, TrafficSpec};
use chrono::{DateTime, Utc};
use mt_cloudflare::{Client, ClientOptions, RetryPolicy};
use mt_common::ManualClock;
use mt_common::config::Config;
use mt_notify::Notifier;
use mt_store::{OpenOptions, Store};
use secrecy::SecretString;

pub struct World {
    pub _dir: tempfile::TempDir,
    pub sim: Running,
    pub clock: ManualClock,
    pub engine: Engine,
    pub store: Store,
}

pub fn prefix(id: &str, cidr: &str, advertised_ago_secs: i64) -> PrefixSpec {
    PrefixSpec {
        id: id.into(),
        bgp_id: format!("b-{id}"),
        cidr: cidr.parse().unwrap(),
        description: String::new(),
        advertised: true,
        changed_secs_ago: advertised_ago_secs,
        locked: false,
    }
}

pub fn attack(ip: &str, from: i64, to: i64) -> TrafficSpec {
    TrafficSpec::attack(ip.parse().unwrap(), from, to, 50_000.0, 400.0)
}

impl World {
    /// The usual world: 203.0.113.0/24 advertised 30 minutes ago, attacked until 10 minutes
    /// after the start.
    pub async fn attacked_p24() -> Self {
        Self::new(
            vec![prefix("p24", "203.0.113.0/24", 1800)],
            vec![attack("203.0.113.10", -1800, 600)],
            "",
        )
        .await
    }

    /// `extra` is appended to the config (e.g. `dry_run = true` under [autowithdraw]).
    pub async fn new(prefixes: Vec<PrefixSpec>, traffic: Vec<TrafficSpec>, extra: &str) -> Self {
        let clock = ManualClock::new(Utc::now());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let sim = Sim::with_clock(
            Scenario {
                prefixes: prefixes.clone(),
                traffic,
                ..Scenario::default()
            },
            clock.shared(),
        )
        .serve(listener)
        .await
        .unwrap();
        // The engine starts at the simulator's (bucket-aligned) start.
        clock.set(sim.sim.start());
        let dir = tempfile::tempdir().unwrap();
        let mut text = format!(
            "[database]\npath = \"{}\"\n[cloudflare]\naccount_id = \"{}\"\napi_base_url = \"{}\"\ngraphql_url = \"{}\"\n[telegram]\nchat_id = \"-100\"\napi_url = \"{}\"\n",
            dir.path().join("mt.db").display(),
            Scenario::default().account_id,
            sim.api_base_url(),
            sim.graphql_url(),
            sim.url(),
        );
        for p in &prefixes {
            text.push_str(&format!(
                "[[prefixes]]\ncidr = \"{}\"\nprefix_id = \"{}\"\nbgp_prefix_id = \"{}\"\n",
                p.cidr, p.id, p.bgp_id
            ));
        }
        text.push_str(extra);
        let config = Config::from_toml_str(
            &text,
            Path::new("t.toml"),
            vec![("MT_TELEGRAM_BOT_TOKEN".into(), "123456:cf-sim".into())],
        )
        .unwrap();
        // The engine's clock is the database's as well (it judges lease expiry, SPEC §7.9).
        let store = Store::open(&OpenOptions {
            database_clock: Some(clock.shared()),
            ..OpenOptions::from_config(&config.database)
        })
        .await
        .unwrap();
        let options = ClientOptions {
            retry: RetryPolicy {
                delays: vec![Duration::from_millis(1); 3],
                max_retry_after: Duration::from_secs(1),
            },
            clock: clock.shared(),
            ..ClientOptions::default()
        };
        let client = Client::new(
            &config.cloudflare,
            &SecretString::from("cf-sim-token".to_owned()),
            options,
        )
        .unwrap();
        let engine = Engine {
            notifier: Notifier::new(&config.telegram),
            config: Arc::new(config),
            store: store.clone(),
            client,
            clock: clock.shared(),
            holder: Engine::new_holder(),
            datasets: mt_cloudflare::graphql::DatasetWatch::calm(),
        };
        Self {
            _dir: dir,
            sim,
            clock,
            engine,
            store,
        }
    }

    pub fn now(&self) -> DateTime<Utc> {
        mt_common::Clock::now(&self.clock)
    }

    /// Seconds since the simulator's start.
    pub fn t(&self) -> i64 {
        (self.now() - self.sim.sim.start()).num_seconds()
    }

    /// Runs one cycle, then moves the clock a minute.
    pub async fn step(&self) -> CycleReport {
        let report = self.engine.cycle().await.unwrap();
        self.clock.advance(chrono::Duration::seconds(60));
        report
    }

    /// Cycles until `bgp_id` is withdrawn or `limit_secs` pass; returns the time (seconds since
    /// start) of the cycle that withdrew it.
    pub async fn run_until_withdrawn(&self, bgp_id: &str, limit_secs: i64) -> Option<i64> {
        while self.t() <= limit_secs {
            let t = self.t();
            self.step().await;
            if !self.sim.sim.bgp(bgp_id).unwrap().advertised {
                return Some(t);
            }
        }
        None
    }

    /// A second instance on the same database file and Cloudflare.
    pub async fn second_instance(&self) -> Engine {
        let store = Store::open(&OpenOptions {
            database_clock: Some(self.clock.shared()),
            ..OpenOptions::from_config(&self.engine.config.database)
        })
        .await
        .unwrap();
        Engine {
            store,
            holder: format!("{}-b", Engine::new_holder()),
            datasets: mt_cloudflare::graphql::DatasetWatch::calm(),
            ..self.engine.clone()
        }
    }

    pub async fn kinds(&self) -> Vec<String> {
        self.store
            .notifications(1000)
            .await
            .unwrap()
            .into_iter()
            .map(|n| n.kind)
            .collect()
    }
}
