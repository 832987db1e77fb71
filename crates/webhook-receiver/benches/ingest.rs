//! Authenticated webhook ingestion over loopback HTTP with the production durability settings
//! (SQLite WAL + synchronous=FULL, archive file fsync'd, directory fsync'd), on whatever
//! machine runs it. Client and server share the machine (and, here, the process).
//!
//! `cargo bench -p webhook-receiver --bench ingest`
//!
//! 1. Sustained: 10,000 distinct webhooks with 64 concurrent clients: requests/s, p50, p99.
//! 2. Fixed rate: 500 requests/s for 10 s (open loop: each request is sent on schedule,
//!    whatever the previous ones are doing): p50, p99, max.
#![allow(clippy::expect_used, clippy::unwrap_used)] // a benchmark aborts on any failure

use std::sync::Arc;
use std::time::{Duration, Instant};

use mt_common::SystemClock;
use mt_common::config::Config;
use mt_notify::SenderOptions;
use mt_store::{OpenOptions, Store};
use secrecy::SecretString;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use webhook_receiver::{Daemon, run};

const SECRET: &str = "bench-secret";

fn body(n: usize) -> String {
    format!(
        r#"{{"alert_type":"advanced_ddos_attack_l4_alert","alert_event":"ALERT_STATE_EVENT_START","name":"bench","policy_name":"bench","data":{{"attack_id":"bench-{n}","target_ip":"203.0.113.10","target_port":53,"protocol":"UDP","attack_vector":"UDP Flood","packets_per_second":1840000,"megabits_per_second":14250}}}}"#
    )
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn send(client: &reqwest::Client, url: &str, n: usize) -> Duration {
    let start = Instant::now();
    let response = client
        .post(url)
        .header("cf-webhook-auth", SECRET)
        .body(body(n))
        .send()
        .await
        .expect("request");
    assert!(response.status().is_success(), "{}", response.status());
    start.elapsed()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let text = format!(
        "[database]\npath = \"{}\"\n[cloudflare]\naccount_id = \"a\"\n[[prefixes]]\ncidr = \"203.0.113.0/24\"\nprefix_id = \"p\"\nbgp_prefix_id = \"b\"\n[webhook]\narchive_dir = \"{}\"\n[telegram]\nenabled = false\n",
        dir.path().join("mt.db").display(),
        dir.path().join("webhooks").display()
    );
    let config = Config::from_toml_str(&text, std::path::Path::new("bench.toml"), Vec::new())?;
    let store = Store::open(&OpenOptions::from_config(&config.database)).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/webhook", listener.local_addr()?);
    let shutdown = CancellationToken::new();
    let daemon = Daemon {
        config,
        store,
        clock: SystemClock::shared(),
        secret: Some(SecretString::from(SECRET.to_owned())),
        sender: SenderOptions::default(),
    };
    let server = tokio::spawn(run(daemon, listener, shutdown.clone()));
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(128)
        .build()?;
    for n in 0..200 {
        send(&client, &url, 1_000_000 + n).await; // warm-up
    }

    // 1. Sustained throughput.
    let total = 10_000;
    let permits = Arc::new(Semaphore::new(64));
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(total);
    for n in 0..total {
        let permit = permits.clone().acquire_owned().await?;
        let (client, url) = (client.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let d = send(&client, &url, n).await;
            drop(permit);
            d
        }));
    }
    let mut latencies = Vec::with_capacity(total);
    for t in tasks {
        latencies.push(t.await?);
    }
    let elapsed = start.elapsed();
    latencies.sort();
    println!(
        "sustained: {total} webhooks, 64 concurrent: {:.0} req/s, p50 {:.2?}, p99 {:.2?}",
        total as f64 / elapsed.as_secs_f64(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99)
    );

    // 2. Fixed rate, open loop.
    let rate = 500;
    let seconds = 10;
    let mut ticker = tokio::time::interval(Duration::from_secs(1) / rate);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = Vec::new();
    for n in 0..(rate as usize * seconds) {
        ticker.tick().await;
        let (client, url) = (client.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            send(&client, &url, 100_000 + n).await
        }));
    }
    let mut latencies = Vec::with_capacity(tasks.len());
    for t in tasks {
        latencies.push(t.await?);
    }
    latencies.sort();
    println!(
        "fixed rate: {rate} req/s for {seconds} s: p50 {:.2?}, p99 {:.2?}, max {:.2?}",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies[latencies.len() - 1]
    );
    shutdown.cancel();
    server.await??;
    Ok(())
}
