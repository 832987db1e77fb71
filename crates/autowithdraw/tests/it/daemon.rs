//! The daemon: its loop, /metrics and /healthz, the binary's exit codes and sd_notify.

use std::sync::Arc;
use std::time::Duration;

use autowithdraw::daemon::{Daemon, Metrics, run};
use mt_notify::SenderOptions;
use tokio_util::sync::CancellationToken;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_cycles_and_reports() {
    let w = World::new(
        vec![prefix("p24", "203.0.113.0/24", 1800)],
        vec![attack("203.0.113.10", -1800, 3600)],
        "[autowithdraw]\ninterval = \"1s\"\n",
    )
    .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let daemon = Daemon {
        engine: w.engine.clone(),
        sender: SenderOptions::default(),
        metrics: Arc::new(Metrics::default()),
    };
    let task = tokio::spawn(run(daemon, listener, shutdown.clone()));
    let http = reqwest::Client::new();
    let mut page = String::new();
    for _ in 0..300 {
        page = http
            .get(format!("http://{addr}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if page.contains("mt_autowithdraw_prefix_advertised{prefix=\"203.0.113.0/24\"} 1") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        page.contains("mt_autowithdraw_prefix_advertised{prefix=\"203.0.113.0/24\"} 1"),
        "{page}"
    );
    assert!(page.contains("mt_autowithdraw_passive 0"), "{page}");
    // Advertised by Cloudflare 30 min ago; reminders after the default 6 h (the alert rule
    // in ops/prometheus compares the two).
    assert!(
        page.contains(
            "mt_autowithdraw_prefix_advertised_seconds{prefix=\"203.0.113.0/24\"} 1800\n"
        ) && page.contains("mt_autowithdraw_advertised_reminder_seconds 21600\n"),
        "{page}"
    );
    assert!(
        page.contains("mt_build_info{daemon=\"mt-autowithdraw\""),
        "{page}"
    );
    assert!(
        page.contains("mt_autowithdraw_lease_acquired_total 1")
            && page.contains("mt_autowithdraw_lease_lost_total 0"),
        "{page}"
    );
    assert!(
        page.contains("mt_autowithdraw_judged_until_age_seconds 180"),
        "judged up to now - analytics_delay: {page}"
    );
    let health: serde_json::Value = http
        .get(format!("http://{addr}/healthz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok", "{health}");
    shutdown.cancel();
    task.await.unwrap().unwrap();
    // run() closed its pool; look with a fresh one.
    let store = w.second_instance().await.store;
    assert!(
        store
            .lease_holder(autowithdraw::cycle::LEASE_NAME)
            .await
            .unwrap()
            .is_none(),
        "lease released on shutdown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_needs_a_token_and_speaks_sd_notify() {
    use std::os::unix::net::UnixDatagram;
    use std::process::{Command, Stdio};

    let w = World::new(vec![prefix("p24", "203.0.113.0/24", 1800)], vec![], "").await;
    let dir = tempfile::tempdir().unwrap();
    let config = binary_config(&w, dir.path());
    let binary = env!("CARGO_BIN_EXE_mt-autowithdraw");
    let out = Command::new(binary)
        .arg("--config")
        .arg(&config)
        .env_remove("MT_CLOUDFLARE_API_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("MT_CLOUDFLARE_API_TOKEN"));

    let socket_path = dir.path().join("notify.sock");
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

/// SPEC §11: SIGTERM while Cloudflare's GraphQL answers 500 and the client is between retries.
/// Before: the cycle in progress ran on through its retries (and a new one could start)
/// before the daemon stopped. Now: it is abandoned after the 2 s grace and the daemon exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_failing_cycle_exits_promptly() {
    use std::process::{Command, Stdio};

    let w = World::new(vec![prefix("p24", "203.0.113.0/24", 1800)], vec![], "").await;
    w.sim.sim.inject(
        cf_sim::Endpoint::GraphQl,
        cf_sim::Fault::Status(500),
        10_000,
    );
    let dir = tempfile::tempdir().unwrap();
    let config = binary_config(&w, dir.path());
    let mut child = Command::new(env!("CARGO_BIN_EXE_mt-autowithdraw"))
        .arg("--config")
        .arg(&config)
        .env("MT_CLOUDFLARE_API_TOKEN", "cf-sim-token")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The cycle is in its GraphQL retries (the client waits 1, 3, 8 s between attempts).
    let mut waited = 0;
    while w.sim.sim.graphql_queries() < 2 {
        assert!(waited < 2000, "the cycle reached GraphQL");
        tokio::time::sleep(Duration::from_millis(10)).await;
        waited += 1;
    }
    let asked = std::time::Instant::now();
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    let took = asked.elapsed();
    println!("mt-autowithdraw exited {took:?} after SIGTERM, mid-cycle with GraphQL failing");
    assert_eq!(status.code(), Some(0));
    assert!(took < Duration::from_secs(5), "{took:?}");
}

/// A config for the real binary against `w`'s cf-sim, Telegram off, metrics on any port.
fn binary_config(w: &World, dir: &std::path::Path) -> std::path::PathBuf {
    let config = dir.join("config.toml");
    let text = format!(
        "[database]\npath = \"{}\"\n[cloudflare]\naccount_id = \"{}\"\napi_base_url = \"{}\"\ngraphql_url = \"{}\"\n[[prefixes]]\ncidr = \"203.0.113.0/24\"\nprefix_id = \"p24\"\nbgp_prefix_id = \"b-p24\"\n[telegram]\nenabled = false\n[autowithdraw]\nmetrics_listen = \"127.0.0.1:0\"\n",
        dir.join("mt.db").display(),
        cf_sim::Scenario::default().account_id,
        w.sim.api_base_url(),
        w.sim.graphql_url(),
    );
    std::fs::write(&config, text).unwrap();
    config
}
