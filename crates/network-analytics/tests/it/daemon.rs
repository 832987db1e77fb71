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

/// GeoIP files replaced while the real binary runs: a new file is noticed on its own (every
/// `geoip_check_interval`), a corrupt one is refused with the reason and the old data kept, and
/// SIGHUP (`systemctl reload`) forces a reload without stopping the daemon.
#[test]
fn the_binary_reloads_geoip_files_when_they_change_and_on_sighup() {
    use std::process::{Command, Stdio};

    let rt = tokio::runtime::Runtime::new().unwrap();
    let h = rt.block_on(Harness::new(vec![]));
    let asn_path = h.dir.path().join("GeoLite2-ASN.mmdb");
    std::fs::copy(fixture("geoip/GeoLite2-Country-Test.mmdb"), &asn_path).unwrap();
    let config = binary_config(&h);
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "geoip_asn_db = \"{}\"\ngeoip_check_interval = \"200ms\"\n",
        asn_path.display()
    ));
    std::fs::write(&config, text).unwrap();
    let log_path = h.dir.path().join("analytics.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_mt-network-analytics"))
        .arg("--config")
        .arg(&config)
        .env("MT_CLOUDFLARE_API_TOKEN", "cf-sim-token")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let wait_for = |what: &str, times: usize| {
        for _ in 0..2000 {
            if log().matches(what).count() >= times {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("{what:?} ×{times} not logged:\n{}", log());
    };
    wait_for("listening", 1);
    let replace = |bytes: &[u8]| {
        let tmp = asn_path.with_extension("tmp");
        std::fs::write(&tmp, bytes).unwrap();
        std::fs::rename(&tmp, &asn_path).unwrap();
    };
    let asn = std::fs::read(fixture("geoip/GeoLite2-ASN-Test.mmdb")).unwrap();
    replace(&asn);
    wait_for("GeoIP database reloaded", 1);
    replace(&asn[..asn.len() / 2]);
    wait_for(
        "GeoIP database not reloaded; the previous data stays in use",
        1,
    );
    let refused = log()
        .lines()
        .find(|l| l.contains("not reloaded"))
        .unwrap()
        .to_owned();
    assert!(
        refused.contains("network_analytics.geoip_asn_db")
            && refused.contains(asn_path.to_str().unwrap()),
        "{refused}"
    );
    // Unchanged since: not tried again. SIGHUP tries again (and does not stop the daemon).
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(log().matches("not reloaded").count(), 1, "{}", log());
    let pid = child.id().to_string();
    let kill = |signal: &str| Command::new("kill").args([signal, &pid]).status().unwrap();
    assert!(kill("-HUP").success());
    wait_for("reloading the GeoIP databases", 1);
    wait_for("not reloaded", 2);
    assert!(child.try_wait().unwrap().is_none(), "SIGHUP stopped it");

    let addr = log()
        .lines()
        .find_map(|l| {
            l.split("addr=")
                .nth(1)
                .map(|a| a.split_whitespace().next().unwrap().to_owned())
        })
        .expect("the listening address is logged");
    let page = rt.block_on(async {
        reqwest::get(format!("http://{addr}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    assert!(
        page.contains("mt_analytics_geoip_reloads_total 1\n"),
        "{page}"
    );
    assert!(
        page.contains("mt_analytics_geoip_refused_total 2\n"),
        "{page}"
    );
    assert!(kill("-TERM").success());
    assert_eq!(child.wait().unwrap().code(), Some(0), "{}", log());
}
