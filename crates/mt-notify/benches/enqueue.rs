//! How long queuing a Telegram message adds to an event's transaction (SPEC §10: a webhook or
//! a withdrawal is never delayed by Telegram). Runs against a real SQLite file with the
//! production settings (WAL, synchronous = FULL).
//!
//! `cargo bench -p mt-notify --bench enqueue`
#![allow(clippy::expect_used, clippy::unwrap_used)] // a benchmark aborts on any failure

use std::time::{Duration, Instant};

use chrono::Utc;
use mt_notify::templates::{AttackAlert, PrefixState};
use mt_notify::{Message, Notifier};
use mt_store::{ActionTaken, EventType, NewAttackEvent, OpenOptions, Store};

const ROUNDS: usize = 2000;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn report(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    println!(
        "{name:<44} n={:<5} p50={:>9.1?} p99={:>9.1?} max={:>9.1?}",
        samples.len(),
        percentile(&samples, 0.50),
        percentile(&samples, 0.99),
        samples[samples.len() - 1]
    );
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let store = Store::open(&OpenOptions::new(dir.path().join("bench.db"))).await?;
    let config = mt_common::config::TelegramConfig {
        chat_id: "-1001234567890".into(),
        ..Default::default()
    };
    let notifier = Notifier::new(&config);
    let message = Message::AttackStart(AttackAlert {
        alert_type: Some("advanced_ddos_attack_l4_alert".into()),
        attack_id: Some("k9z3t-xx1g6wwhgqngq523mp0nr".into()),
        prefix: Some("203.0.113.0/24".into()),
        target_ip: Some("203.0.113.10".into()),
        target_port: Some(443),
        attack_vector: Some("SYN Flood".into()),
        packets_per_second: Some("1250000".into()),
        at: Utc::now(),
        prefix_state: PrefixState::Advertised,
        ..Default::default()
    });

    let mut render_and_insert = Vec::with_capacity(ROUNDS);
    let mut event_only_tx = Vec::with_capacity(ROUNDS);
    let mut event_with_message_tx = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let event = NewAttackEvent::new(EventType::Start, ActionTaken::Mitigating, Utc::now());

        let start = Instant::now();
        let mut tx = store.begin().await?;
        tx.insert_attack_event(&event).await?;
        tx.commit().await?;
        event_only_tx.push(start.elapsed());

        let start = Instant::now();
        let mut tx = store.begin().await?;
        tx.insert_attack_event(&event).await?;
        let queued = Instant::now();
        notifier.queue(&mut tx, &message, Utc::now()).await?;
        render_and_insert.push(queued.elapsed());
        tx.commit().await?;
        event_with_message_tx.push(start.elapsed());
    }
    report("queue() inside an open transaction", render_and_insert);
    report(
        "event transaction, no message (commit incl.)",
        event_only_tx,
    );
    report("event transaction + queued message", event_with_message_tx);
    Ok(())
}
