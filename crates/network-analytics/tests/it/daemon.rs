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

#[test]
fn the_binary_needs_a_cloudflare_token_and_speaks_sd_notify() {
    use std::os::unix::net::UnixDatagram;
    use std::process::{Command, Stdio};

    let rt = tokio::runtime::Runtime::new().unwrap();
    let h = rt.block_on(Harness::new(vec![]));
    let config = binary_config(&h);
    let binary = env!("CARGO_BIN_EXE_mt-network-analytics");

    let out = Command::new(binary)
        .arg("--config")
        .arg(&config)
        .env_remove("MT_CLOUDFLARE_API_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("MT_CLOUDFLARE_API_TOKEN") && stderr.contains("cloudflare.api_token_file"),
        "{stderr}"
    );

    let socket_path = h.dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut child = Command::new(binary)
        .arg("--config")
        .arg(&config)
        .env("MT_CLOUDFLARE_API_TOKEN", "cf-sim-token")
        .env("NOTIFY_SOCKET", &socket_path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 512];
    let mut next = || {
        let n = socket.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    while !next().contains("READY=1") {}
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    while !next().contains("STOPPING=1") {}
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

/// SPEC §11: SIGTERM while Cloudflare's GraphQL answers 500 and the poll is between retries.
/// Before: the poll ran on through its retries before the daemon stopped. Now: it is abandoned
/// after the 2 s grace (the next start covers its window) and the daemon exits 0.
#[test]
fn sigterm_during_a_failing_poll_exits_promptly() {
    use std::process::{Command, Stdio};

    let rt = tokio::runtime::Runtime::new().unwrap();
    let h = rt.block_on(Harness::new(vec![]));
    h.sim.sim.inject(
        cf_sim::Endpoint::GraphQl,
        cf_sim::Fault::Status(500),
        10_000,
    );
    let config = binary_config(&h);
    let mut child = Command::new(env!("CARGO_BIN_EXE_mt-network-analytics"))
        .arg("--config")
        .arg(&config)
        .env("MT_CLOUDFLARE_API_TOKEN", "cf-sim-token")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut waited = 0;
    while h.sim.sim.graphql_queries() < 2 {
        assert!(waited < 2000, "the poll reached GraphQL");
        std::thread::sleep(Duration::from_millis(10));
        waited += 1;
    }
    let asked = std::time::Instant::now();
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    let took = asked.elapsed();
    println!("mt-network-analytics exited {took:?} after SIGTERM, mid-poll with GraphQL failing");
    assert_eq!(status.code(), Some(0));
    assert!(took < Duration::from_secs(5), "{took:?}");
}

/// A config for the real binary against `h`'s cf-sim, Telegram off, metrics on any port.
fn binary_config(h: &Harness) -> std::path::PathBuf {
    let config = h.dir.path().join("config.toml");
    let text = format!(
        "[database]\npath = \"{}\"\n[cloudflare]\naccount_id = \"{}\"\napi_base_url = \"{}\"\ngraphql_url = \"{}\"\n[telegram]\nenabled = false\n[network_analytics]\nmetrics_listen = \"127.0.0.1:0\"\n",
        h.db().display(),
        cf_sim::Scenario::default().account_id,
        h.sim.api_base_url(),
        h.sim.graphql_url(),
    );
    std::fs::write(&config, text).unwrap();
    config
}
