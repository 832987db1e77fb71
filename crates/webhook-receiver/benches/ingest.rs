//! Webhook ingestion measured against its ceiling, in one run (issue #22).
//!
//! `cargo bench -p webhook-receiver --bench ingest`
//!
//! - **Receiver**: the real `mt-webhook-receiver` binary (release build, its own process) over
//!   loopback HTTP, authenticated, each webhook distinct (a `webhook_events` row, an
//!   `attack_events` row, a calm mark and a queued message per webhook; the archive writer
//!   copies them to `archive_dir` in the background), SQLite WAL with `synchronous = FULL`.
//!   - closed loop at 16 and 64 connections for 8 s: requests/s, p50, p99, and the mean batch
//!     size of the group-commit writer (from its `/metrics`);
//!   - open loop at a fixed 500 and 2,000 requests/s for 10 s: each request is sent at its
//!     scheduled time whatever the others are doing, and its latency counts from that time (a
//!     stall counts against every request it delays).
//! - **Ceiling**: the same rows stored directly through `mt-store` (the receiver's own
//!   `store_batch`, no HTTP), in transactions of the batch size the receiver used at 16
//!   connections (its writer does not linger: a batch is what waits), same durability; the
//!   median of three runs of 20,000 rows, as the disk's fsync time drifts.
//!
//! The load generator (reqwest) shares the 2 cores with the receiver. `BENCH_RECEIVER_BIN=path`
//! runs the same load against another build of the receiver (the "before" of BENCHMARKS.md).
#![allow(clippy::expect_used, clippy::unwrap_used)] // a benchmark aborts on any failure

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use mt_common::config::Config;
use mt_notify::Notifier;
use mt_store::{OpenOptions, Store};
use serde_json::{Map, Value};
use webhook_receiver::ingest::{Parsed, store_batch};

const SECRET: &str = "bench-secret";

fn body(n: usize) -> String {
    format!(
        r#"{{"alert_type":"advanced_ddos_attack_l4_alert","alert_event":"ALERT_STATE_EVENT_START","name":"bench","policy_name":"bench","data":{{"attack_id":"bench-{n}","target_ip":"203.0.113.10","target_port":53,"protocol":"UDP","attack_vector":"UDP Flood","packets_per_second":1840000,"megabits_per_second":14250}}}}"#
    )
}

fn config_text(dir: &std::path::Path, db: &str) -> String {
    format!(
        "[database]\npath = \"{}\"\n[cloudflare]\naccount_id = \"a\"\n[[prefixes]]\ncidr = \"203.0.113.0/24\"\nprefix_id = \"p\"\nbgp_prefix_id = \"b\"\n[webhook]\nlisten = \"127.0.0.1:0\"\narchive_dir = \"{}\"\n[telegram]\nenabled = false\n",
        dir.join(db).display(),
        dir.join("webhooks").display()
    )
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

async fn send(client: &reqwest::Client, url: &str, n: usize) {
    let response = client
        .post(url)
        .header("cf-webhook-auth", SECRET)
        .body(body(n))
        .send()
        .await
        .expect("request");
    assert!(response.status().is_success(), "{}", response.status());
}

/// `(batches, webhooks, seconds in transactions)` of the receiver's group-commit writer so
/// far.
async fn batches(client: &reqwest::Client, addr: SocketAddr) -> (u64, u64, f64) {
    let page = client
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let value = |name: &str| {
        page.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (
        value("mt_webhook_batches_total") as u64,
        value("mt_webhook_batched_total") as u64,
        value("mt_webhook_batch_duration_seconds_sum"),
    )
}

struct Closed {
    rate: f64,
    p50: Duration,
    p99: Duration,
    mean_batch: f64,
    /// Share of the run the writer spent in transactions.
    writer_busy: f64,
}

/// `connections` clients, one connection each, sending back to back for `run`.
async fn closed_loop(
    addr: SocketAddr,
    connections: usize,
    run: Duration,
    next: &Arc<AtomicUsize>,
) -> Closed {
    let url = format!("http://{addr}/webhook");
    let probe = reqwest::Client::new();
    let before = batches(&probe, addr).await;
    let start = Instant::now();
    let deadline = start + run;
    let workers: Vec<_> = (0..connections)
        .map(|_| {
            let (url, next) = (url.clone(), next.clone());
            tokio::spawn(async move {
                let client = reqwest::Client::builder()
                    .pool_max_idle_per_host(1)
                    .build()
                    .unwrap();
                let mut latencies = Vec::new();
                while Instant::now() < deadline {
                    let sent = Instant::now();
                    send(&client, &url, next.fetch_add(1, Ordering::Relaxed)).await;
                    latencies.push(sent.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for w in workers {
        latencies.extend(w.await.unwrap());
    }
    let elapsed = start.elapsed();
    let after = batches(&probe, addr).await;
    latencies.sort();
    Closed {
        rate: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50: percentile(&latencies, 0.5),
        p99: percentile(&latencies, 0.99),
        mean_batch: (after.1 - before.1) as f64 / (after.0 - before.0).max(1) as f64,
        writer_busy: (after.2 - before.2) / elapsed.as_secs_f64(),
    }
}

/// Open loop: request `i` is sent at `start + i / rate`; latency from that time.
async fn fixed_rate(
    addr: SocketAddr,
    rate: u32,
    seconds: u32,
    next: &Arc<AtomicUsize>,
) -> (Duration, Duration, Duration) {
    let url = format!("http://{addr}/webhook");
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()
        .unwrap();
    // Warm the pool so the first second does not open connections on the clock.
    for _ in 0..16 {
        send(&client, &url, next.fetch_add(1, Ordering::Relaxed)).await;
    }
    let start = tokio::time::Instant::now() + Duration::from_millis(50);
    let total = rate * seconds;
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        let at = start + Duration::from_secs(1) * i / rate;
        tokio::time::sleep_until(at).await;
        let (client, url, n) = (
            client.clone(),
            url.clone(),
            next.fetch_add(1, Ordering::Relaxed),
        );
        tasks.push(tokio::spawn(async move {
            send(&client, &url, n).await;
            at.elapsed()
        }));
    }
    let mut latencies = Vec::with_capacity(tasks.len());
    for t in tasks {
        latencies.push(t.await.unwrap());
    }
    latencies.sort();
    (
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies[latencies.len() - 1],
    )
}

/// The same rows through `store_batch` directly, `batch` per transaction.
async fn ceiling(dir: &std::path::Path, rows: usize, batch: usize, db: &str) -> f64 {
    let config = Config::from_toml_str(
        &config_text(dir, db),
        std::path::Path::new("bench.toml"),
        Vec::new(),
    )
    .unwrap();
    let store = Store::open(&OpenOptions::from_config(&config.database))
        .await
        .unwrap();
    let notifier = Notifier::new(&config.telegram);
    let now = Utc::now();
    let parsed: Vec<Parsed> = (0..rows)
        .map(|n| {
            let raw = body(10_000_000 + n);
            let object: Map<String, Value> = serde_json::from_str(&raw).unwrap();
            Parsed {
                classified: mt_alerts::classify(&object, &config, now),
                raw,
                source_ip: Some("127.0.0.1".into()),
                received_at: now,
            }
        })
        .collect();
    let start = Instant::now();
    for chunk in parsed.chunks(batch.max(1)) {
        store_batch(chunk, &store, &notifier).await.unwrap();
    }
    let rate = rows as f64 / start.elapsed().as_secs_f64();
    store.close().await;
    rate
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, config_text(dir.path(), "mt.db")).unwrap();
    // `BENCH_RECEIVER_BIN`: another build of the receiver (an older commit) on the same load.
    let binary = std::env::var_os("BENCH_RECEIVER_BIN")
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_mt-webhook-receiver").into());
    let mut child = Command::new(binary)
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "warn,webhook_receiver=info,mt_common=info")
        .env("MT_WEBHOOK_SECRET", SECRET)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr: SocketAddr = loop {
        let line = lines.next().expect("the receiver starts").unwrap();
        if let Some(rest) = line.split("listening addr=").nth(1) {
            break rest.split_whitespace().next().unwrap().parse().unwrap();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let next = Arc::new(AtomicUsize::new(0));
    closed_loop(addr, 16, Duration::from_secs(1), &next).await; // warm-up

    let c16 = closed_loop(addr, 16, Duration::from_secs(8), &next).await;
    let c64 = closed_loop(addr, 64, Duration::from_secs(8), &next).await;
    let f500 = fixed_rate(addr, 500, 10, &next).await;
    let f2000 = fixed_rate(addr, 2_000, 10, &next).await;
    // The receiver stops first, so its archive writer's disk writes do not disturb the
    // ceiling.
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(0));
    let batch = c16.mean_batch.round() as usize;
    // The disk's fsync time drifts by tens of percent from one minute to the next on this
    // machine: the ceiling is the median of three runs, and their range is printed.
    let mut runs = Vec::new();
    for run in 0..3 {
        runs.push(ceiling(dir.path(), 20_000, batch, &format!("ceiling16-{run}.db")).await);
    }
    runs.sort_by(f64::total_cmp);
    let ceiling16 = runs[1];
    let mut sweep = Vec::new();
    for b in [1, 16, 64] {
        sweep.push((
            b,
            ceiling(dir.path(), 10_000, b, &format!("sweep{b}.db")).await,
        ));
    }

    println!("| measurement | result |");
    println!("|---|---|");
    println!(
        "| ceiling: mt-store `store_batch`, batches of {batch} (the receiver's mean at 16 connections: {:.1}) | {ceiling16:.0} rows/s (median of 3: {:.0}–{:.0}) |",
        c16.mean_batch, runs[0], runs[2]
    );
    for (b, rate) in &sweep {
        println!("| (ceiling at batches of {b}) | {rate:.0} rows/s |");
    }
    for (name, c) in [("16", &c16), ("64", &c64)] {
        println!(
            "| receiver, {name} connections (mean batch {:.1}, writer busy {:.0} %) | {:.0} req/s ({:.0} % of the ceiling), p50 {}, p99 {} |",
            c.mean_batch,
            100.0 * c.writer_busy,
            c.rate,
            100.0 * c.rate / ceiling16,
            ms(c.p50),
            ms(c.p99)
        );
    }
    for (rate, (p50, p99, max)) in [(500, f500), (2_000, f2000)] {
        println!(
            "| receiver, fixed {rate} req/s for 10 s | p50 {}, p99 {}, max {} |",
            ms(p50),
            ms(p99),
            ms(max)
        );
    }
}
