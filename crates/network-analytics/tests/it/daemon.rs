//! The daemon loop: polls, serves /metrics and /healthz, delivers the summary to Telegram.

use std::time::Duration;

use mt_notify::SenderOptions;
use network_analytics::{Daemon, run};
use tokio_util::sync::CancellationToken;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_polls_reports_and_notifies() {
    let h = Harness::new(vec![attack(10, 3)]).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let sender = SenderOptions {
        min_interval: Duration::ZERO,
        poll_interval: Duration::from_millis(20),
        ..SenderOptions::default()
    };
    let daemon = Daemon {
        config: h.config.clone(),
        poller: h.poller.clone(),
        sender,
    };
    let task = tokio::spawn(run(daemon, listener, shutdown.clone()));

    let http = reqwest::Client::new();
    let mut page = String::new();
    for _ in 0..500 {
        page = http
            .get(format!("http://{addr}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if page.contains("mt_analytics_rows_new_total 30")
            && !h.sim.sim.telegram_messages().is_empty()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(page.contains("mt_analytics_rows_new_total 30"), "{page}");
    assert!(page.contains("mt_analytics_polls_total"), "{page}");
    let health: serde_json::Value = http
        .get(format!("http://{addr}/healthz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok", "{health}");
    let messages = h.sim.sim.telegram_messages();
    assert_eq!(messages.len(), 1, "one summary");
    assert!(messages[0].text.contains("NETWORK ANALYTICS"));

    shutdown.cancel();
    task.await.unwrap().unwrap();
}
