//! A 10,000-row poll: from the GraphQL answer to committed rows (hash, enrichment, one
//! transaction with insert-or-ignore and the summary), on a real SQLite file with the
//! production settings. cf-sim serves the events over loopback.
//!
//! `cargo bench -p network-analytics --bench poll`
#![allow(clippy::expect_used, clippy::unwrap_used)] // a benchmark aborts on any failure

use std::sync::Arc;
use std::time::{Duration, Instant};

use cf_sim::{Scenario, Sim, TrafficSpec};
use mt_cloudflare::{Client, ClientOptions};
use mt_common::SystemClock;
use mt_common::config::TelegramConfig;
use mt_notify::Notifier;
use mt_store::{OpenOptions, Store};
use network_analytics::Metrics;
use network_analytics::geoip::GeoIp;
use network_analytics::poll::{PollOptions, Poller};
use secrecy::SecretString;

const RUNS: usize = 5;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // 1,999 sources x 5 one-minute buckets = 9,995 rows: one query under the 10,000 limit.
    let traffic = vec![
        TrafficSpec::attack(
            "203.0.113.10".parse().unwrap(),
            -360,
            -60,
            250_000.0,
            2_000.0,
        )
        .sources(1_999),
    ];
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sim = Sim::new(Scenario {
        traffic,
        ..Scenario::default()
    })
    .serve(listener)
    .await
    .unwrap();
    let config = mt_common::config::CloudflareConfig {
        account_id: Scenario::default().account_id,
        api_base_url: sim.api_base_url(),
        graphql_url: sim.graphql_url(),
        ..Default::default()
    };
    let client = Client::new(
        &config,
        &SecretString::from("cf-sim-token".to_owned()),
        ClientOptions::default(),
    )
    .unwrap();

    let (mut fetch, mut poll, mut map) = (Vec::new(), Vec::new(), Vec::new());
    let mut rows = 0;
    for _ in 0..RUNS {
        let start = sim.sim.start();
        let t = Instant::now();
        let answer = client
            .dosd_events(
                start - chrono::Duration::minutes(15),
                chrono::Utc::now(),
                10_000,
            )
            .await
            .unwrap();
        fetch.push(t.elapsed());
        rows = answer.events.len();

        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&OpenOptions::new(dir.path().join("bench.db")))
            .await
            .unwrap();
        let poller = Poller {
            datasets: mt_cloudflare::graphql::DatasetWatch::events(),
            store,
            client: client.clone(),
            notifier: Notifier::new(&TelegramConfig {
                chat_id: "-100".into(),
                ..Default::default()
            }),
            geoip: Arc::new(GeoIp::default()),
            clock: SystemClock::shared(),
            options: PollOptions::new(Duration::from_secs(15 * 60)),
            metrics: Arc::new(Metrics::default()),
        };
        let t = Instant::now();
        let mapped: Vec<_> = answer.events.iter().map(|e| poller.to_row(e)).collect();
        map.push(t.elapsed());
        drop(mapped);
        let t = Instant::now();
        let report = poller.poll_once().await.unwrap();
        poll.push(t.elapsed());
        assert_eq!(report.new, rows);
    }
    fetch.sort();
    poll.sort();
    map.sort();
    println!("hash + enrichment + mapping alone: {:.2?}", map[RUNS / 2]);
    let (f, p) = (fetch[RUNS / 2], poll[RUNS / 2]);
    let store_part = p.saturating_sub(f);
    println!("rows per poll: {rows} (median of {RUNS} runs)");
    println!("fetch (cf-sim over loopback, JSON decode): {f:.2?}");
    println!("whole poll (fetch + hash, map, one transaction, summary): {p:.2?}");
    println!(
        "answer -> committed rows: {store_part:.2?} = {:.0} events/s",
        rows as f64 / store_part.as_secs_f64()
    );
}
