//! The built `mt-webhook-receiver` binary over loopback HTTP.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::{SECRET, config_text};

struct Receiver {
    child: Child,
    addr: SocketAddr,
}

impl Receiver {
    fn start(dir: &Path, secret: Option<&str>) -> Result<Self, String> {
        Self::start_with(dir, secret, "")
    }

    /// With extra `[database]` keys.
    fn start_with(dir: &Path, secret: Option<&str>, database: &str) -> Result<Self, String> {
        Self::start_full(dir, secret, database, "")
    }

    /// With extra `[database]` and `[webhook]` keys.
    fn start_full(
        dir: &Path,
        secret: Option<&str>,
        database: &str,
        webhook: &str,
    ) -> Result<Self, String> {
        let config = dir.join("config.toml");
        let text = config_text(dir, &format!("listen = \"127.0.0.1:0\"\n{webhook}"))
            .replace("[database]\n", &format!("[database]\n{database}\n"));
        std::fs::write(&config, text).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mt-webhook-receiver"));
        cmd.arg("--config")
            .arg(&config)
            .env("RUST_LOG", "info")
            .env("MT_TELEGRAM_BOT_TOKEN", "1:x");
        cmd.env_remove("MT_WEBHOOK_SECRET");
        if let Some(s) = secret {
            cmd.env("MT_WEBHOOK_SECRET", s);
        }
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let mut lines = BufReader::new(stderr).lines();
        let mut seen = String::new();
        while let Some(Ok(line)) = lines.next() {
            seen.push_str(&line);
            seen.push('\n');
            if let Some(rest) = line.split("listening addr=").nth(1) {
                let addr = rest.split_whitespace().next().unwrap().parse().unwrap();
                // Keep draining stderr so the daemon never blocks on a full pipe.
                std::thread::spawn(move || for _ in lines {});
                return Ok(Self { child, addr });
            }
        }
        let status = child.wait().unwrap();
        Err(format!("exited with code {:?}:\n{seen}", status.code()))
    }

    fn url(&self) -> String {
        format!("http://{}/webhook", self.addr)
    }
}

fn webhook(n: usize) -> String {
    json!({
        "alert_type": "dos_attack_l4",
        "alert_event": "ALERT_STATE_EVENT_START",
        "name": "burst",
        "data": {"attack_id": format!("attack-{n:04}"), "target_ip": "203.0.113.10", "packets_per_second": n}
    })
    .to_string()
}

async fn deliver(client: &reqwest::Client, url: &str, n: usize) -> Option<(String, i64)> {
    let response = client
        .post(url)
        .header("cf-webhook-auth", SECRET)
        .body(webhook(n))
        .send()
        .await
        .ok()?;
    if !response.status().is_success() {
        return None;
    }
    let body: Value = response.json().await.ok()?;
    Some((body["status"].as_str()?.to_owned(), body["id"].as_i64()?))
}

fn db_rows(dir: &Path) -> Vec<(i64, String, String)> {
    let out = Command::new("sqlite3")
        .arg(dir.join("mt.db"))
        .arg("SELECT id, alert_id, payload FROM webhook_events ORDER BY id")
        .output()
        .unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let mut parts = l.splitn(3, '|');
            (
                parts.next().unwrap().parse().unwrap(),
                parts.next().unwrap().to_owned(),
                parts.next().unwrap().to_owned(),
            )
        })
        .collect()
}

fn archive(dir: &Path) -> Vec<(i64, String)> {
    std::fs::read_dir(dir.join("webhooks"))
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let id = name
                .trim_end_matches(".json")
                .rsplit('_')
                .next()
                .unwrap()
                .parse()
                .unwrap();
            (id, std::fs::read_to_string(e.path()).unwrap())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_acknowledged_webhook_survives_kill_9_and_none_is_duplicated() {
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();

    // Burst 1: 100 concurrent deliveries, all acknowledged.
    let mut receiver = Receiver::start(dir.path(), Some(SECRET)).unwrap();
    let url = receiver.url();
    let burst1: Vec<_> = (0..100)
        .map(|n| {
            let (client, url) = (client.clone(), url.clone());
            tokio::spawn(async move { deliver(&client, &url, n).await })
        })
        .collect();
    for task in burst1 {
        let (status, _) = task.await.unwrap().expect("burst 1 acknowledged");
        assert_eq!(status, "accepted");
    }

    // Burst 2: 300 concurrent deliveries, SIGKILL sent by the delivery that sees the 40th
    // acknowledgement (at once, however loaded the machine is, so the kill lands mid-burst).
    let acked = Arc::new(AtomicUsize::new(0));
    let pid = receiver.child.id().to_string();
    let burst2: Vec<_> = (100..400)
        .map(|n| {
            let (client, url, acked, pid) =
                (client.clone(), url.clone(), acked.clone(), pid.clone());
            tokio::spawn(async move {
                let result = deliver(&client, &url, n).await;
                if result.is_some() && acked.fetch_add(1, Ordering::SeqCst) + 1 == 40 {
                    let killed = std::process::Command::new("kill")
                        .args(["-KILL", &pid])
                        .status()
                        .expect("run kill");
                    assert!(killed.success(), "SIGKILL sent");
                }
                (n, result)
            })
        })
        .collect();
    let mut acknowledged = Vec::new();
    for task in burst2 {
        if let (n, Some((_, id))) = task.await.unwrap() {
            acknowledged.push((n, id));
        }
    }
    receiver.child.wait().unwrap();
    assert!(acknowledged.len() >= 40);
    println!(
        "burst 2: {} of 300 acknowledged before SIGKILL",
        acknowledged.len()
    );
    assert!(
        acknowledged.len() < 300,
        "the kill interrupted the burst ({} acked)",
        acknowledged.len()
    );

    // Every acknowledged webhook is in the database at once (read before any restart).
    let rows = db_rows(dir.path());
    for (n, id) in &acknowledged {
        let row = rows
            .iter()
            .find(|r| r.0 == *id)
            .unwrap_or_else(|| panic!("acknowledged webhook {n} (id {id}) lost"));
        assert_eq!(row.1, format!("attack-{n:04}"));
    }

    // Restart on the same database and archive: the archive writer catches up.
    let receiver = Receiver::start(dir.path(), Some(SECRET)).unwrap();
    let mut waited = Duration::ZERO;
    while archive(dir.path()).len() < rows.len() {
        assert!(
            waited < Duration::from_secs(30),
            "the archive did not catch up"
        );
        std::thread::sleep(Duration::from_millis(20));
        waited += Duration::from_millis(20);
    }
    let files = archive(dir.path());
    for (n, id) in &acknowledged {
        let file = files
            .iter()
            .find(|f| f.0 == *id)
            .unwrap_or_else(|| panic!("acknowledged webhook {id} not archived"));
        assert_eq!(file.1, webhook(*n));
    }
    let mut ids: Vec<_> = rows.iter().map(|r| r.1.clone()).collect();
    ids.dedup();
    assert_eq!(ids.len(), rows.len(), "no webhook stored twice");
    assert_eq!(
        files.len(),
        rows.len(),
        "exactly one archive file per stored webhook"
    );
    assert!(
        std::fs::read_dir(dir.path().join("webhooks/.incoming"))
            .unwrap()
            .next()
            .is_none(),
        "staged leftovers removed"
    );

    // Cloudflare retries everything of burst 2: the unstored ones are accepted, the rest are
    // duplicates, and in the end each of the 400 is stored exactly once.
    let url = receiver.url();
    for n in 100..400 {
        let (status, _) = deliver(&client, &url, n).await.expect("retry acknowledged");
        let was_acked = acknowledged.iter().any(|(m, _)| *m == n);
        if was_acked {
            assert_eq!(status, "duplicate", "webhook {n}");
        }
    }
    let rows = db_rows(dir.path());
    assert_eq!(rows.len(), 400);
    let mut waited = Duration::ZERO;
    while archive(dir.path()).len() < 400 {
        assert!(
            waited < Duration::from_secs(30),
            "the archive did not catch up"
        );
        std::thread::sleep(Duration::from_millis(20));
        waited += Duration::from_millis(20);
    }
    stop(receiver);
    assert_eq!(archive(dir.path()).len(), 400, "none written twice");
}

fn stop(mut receiver: Receiver) {
    let pid = receiver.child.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    let status = receiver.child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "SIGTERM shuts down cleanly");
}

#[test]
fn refuses_to_start_without_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    let err = Receiver::start(dir.path(), None)
        .err()
        .expect("must not start");
    assert!(err.contains("exited with code Some(2)"), "{err}");
    assert!(
        err.contains("MT_WEBHOOK_SECRET") && err.contains("allow_unauthenticated"),
        "{err}"
    );
}

#[test]
fn speaks_sd_notify_ready_watchdog_and_stopping() {
    use std::os::unix::net::UnixDatagram;

    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, config_text(dir.path(), "listen = \"127.0.0.1:0\"")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_mt-webhook-receiver"))
        .arg("--config")
        .arg(&config)
        .env("MT_WEBHOOK_SECRET", SECRET)
        .env("MT_TELEGRAM_BOT_TOKEN", "1:x")
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "400000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    let mut received = Vec::new();
    let mut buf = [0u8; 512];
    let mut next = |received: &mut Vec<String>| {
        let n = socket
            .recv(&mut buf)
            .expect("a notification before the timeout");
        let message = String::from_utf8_lossy(&buf[..n]).into_owned();
        received.push(message.clone());
        message
    };
    while !next(&mut received).contains("READY=1") {}
    // Watchdog pings follow, each after a successful self health check.
    while !next(&mut received).contains("WATCHDOG=1") {}
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    while !next(&mut received).contains("STOPPING=1") {}
    assert_eq!(child.wait().unwrap().code(), Some(0));
    let ready = received.iter().find(|m| m.contains("READY=1")).unwrap();
    assert!(
        ready.contains("STATUS=accepting webhooks on 127.0.0.1:"),
        "{ready}"
    );
}

fn prune_options() -> mt_store::PruneOptions {
    match std::env::var("PRUNE_TEST_BATCH") {
        // A way to show the test failing with one huge transaction, as before.
        Ok(batch) => mt_store::PruneOptions {
            batch: batch.parse().unwrap(),
            ..Default::default()
        },
        Err(_) => mt_store::PruneOptions::default(),
    }
}

/// `mtctl prune` on a database of 1.2 M old rows while webhooks arrive: the prune works in
/// short id-range transactions, so no webhook waits past `busy_timeout` and none gets a 503.
/// (Before, one transaction with a full scan held the write lock for the whole delete.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pruning_a_million_rows_while_webhooks_arrive_never_answers_503() {
    let dir = tempfile::tempdir().unwrap();
    // The schema first, then 1,000,000 old (long archived) webhooks and 200,000 old analytics
    // rows.
    let config: mt_common::config::Config = mt_common::config::Config::from_toml_str(
        &config_text(dir.path(), ""),
        Path::new("t.toml"),
        Vec::new(),
    )
    .unwrap();
    let options = mt_store::OpenOptions::from_config(&config.database);
    mt_store::Store::open(&options).await.unwrap().close().await;
    let started = std::time::Instant::now();
    let fill = "BEGIN;
        WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n LIMIT 1000000)
        INSERT INTO webhook_events (received_at, alert_id, event_state, payload, payload_sha256, archived_at)
        SELECT '2020-01-01 00:00:00', 'old-' || x, 'ALERT_STATE_EVENT_START', '{}', 'h' || x,
               '2020-01-01 00:00:00' FROM n;
        WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n LIMIT 200000)
        INSERT INTO network_analytics_events (event_hash, event_datetime)
        SELECT 'old-' || x, '2020-01-01T00:00:00Z' FROM n;
        COMMIT;";
    let out = Command::new("sqlite3")
        .arg(dir.path().join("mt.db"))
        .arg(fill)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!("filled 1.2 M rows in {:.1?}", started.elapsed());

    // One second of busy_timeout instead of ten: a single transaction over these 1.2 M small
    // rows holds the write lock about 3 s here (a production database with real payloads,
    // far longer), so it would fail; each batch of the prune holds it for milliseconds.
    let mut receiver =
        Receiver::start_with(dir.path(), Some(SECRET), "busy_timeout = \"1s\"").unwrap();
    let url = receiver.url();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();

    // The prune, as `mtctl prune --older-than 30d --yes` runs it (same function, own pool).
    let store = mt_store::Store::open(&options).await.unwrap();
    let batches = Arc::new(AtomicUsize::new(0));
    let counted = batches.clone();
    let started = std::time::Instant::now();
    let prune = tokio::spawn(async move {
        let cutoff = chrono::Utc::now() - chrono::Duration::days(30);
        store
            .prune(cutoff, &prune_options(), |_| {
                counted.fetch_add(1, Ordering::SeqCst);
            })
            .await
    });

    // Webhooks keep arriving (two senders) until the prune is done.
    let mut statuses = Vec::new();
    let mut n = 10_000;
    while !prune.is_finished() {
        let pair = [n, n + 1].map(|k| {
            let (client, url) = (client.clone(), url.clone());
            tokio::spawn(async move {
                client
                    .post(&url)
                    .header("cf-webhook-auth", SECRET)
                    .body(webhook(k))
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0)
            })
        });
        for task in pair {
            statuses.push(task.await.unwrap());
        }
        n += 2;
    }
    let pruned = prune.await.unwrap().unwrap();
    let elapsed = started.elapsed();
    println!(
        "pruned {} webhook_events + {} network_analytics_events in {} batches, {elapsed:.1?}; \
         {} webhooks delivered meanwhile",
        pruned.webhook_events,
        pruned.network_analytics_events,
        batches.load(Ordering::SeqCst),
        statuses.len()
    );
    assert_eq!(
        (pruned.webhook_events, pruned.network_analytics_events),
        (1_000_000, 200_000)
    );
    assert!(statuses.len() >= 10, "webhooks arrived during the prune");
    let refused: Vec<_> = statuses.iter().filter(|s| **s != 200).collect();
    assert!(refused.is_empty(), "answers other than 200: {refused:?}");
    assert_eq!(
        db_rows(dir.path()).len(),
        statuses.len(),
        "only the new webhooks remain"
    );
    receiver.child.kill().unwrap();
    receiver.child.wait().unwrap();
}

/// SPEC §11, the hardened listener: twice the connection cap of sockets that send half a
/// request header and stall. Before: each held its socket for ever (about 1,100 of them exhaust
/// the default descriptors and the receiver answers nothing). Now: each is closed after
/// `header_read_timeout`, no more than `max_connections` are open at once, and a real webhook
/// queued behind all of them is answered within 2 × `header_read_timeout` + 2 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_headers_cannot_starve_the_receiver() {
    use tokio::io::AsyncWriteExt as _;

    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start_full(
        dir.path(),
        Some(SECRET),
        "",
        "header_read_timeout = \"1s\"\nmax_connections = 8",
    )
    .unwrap();
    let mut stalled = Vec::new();
    for _ in 0..16 {
        let mut socket = tokio::net::TcpStream::connect(receiver.addr).await.unwrap();
        socket
            .write_all(b"POST /webhook HTTP/1.1\r\nHost: receiver\r\ncf-webhook-au")
            .await
            .unwrap();
        stalled.push(socket);
    }
    let client = reqwest::Client::new();
    let started = std::time::Instant::now();
    let answered = deliver(&client, &receiver.url(), 1).await;
    let waited = started.elapsed();
    println!("a real webhook behind 16 stalled sockets (cap 8, 1 s): answered after {waited:?}");
    assert_eq!(
        answered.map(|(status, _)| status).as_deref(),
        Some("accepted")
    );
    assert!(
        waited <= Duration::from_secs(4),
        "within 2 × header_read_timeout + 2 s: {waited:?}"
    );
    // Served only once stalled connections were closed: the cap held.
    assert!(
        waited >= Duration::from_millis(900),
        "the cap of 8 held the ninth connection back: {waited:?}"
    );
    // And every stalled socket was (or is about to be) closed by the receiver.
    use tokio::io::AsyncReadExt as _;
    for (i, socket) in stalled.iter_mut().enumerate() {
        let mut buf = [0u8; 512];
        let closed = tokio::time::timeout(Duration::from_secs(4), async {
            loop {
                match socket.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {} // an error response before the close
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "stalled socket {i} still open");
    }
}

/// Runs the receiver with stderr on a pipe, `$JOURNAL_STREAM` naming that pipe (as systemd
/// does for the journal) or another file, posts one unauthenticated webhook, stops it, and
/// returns every stderr line.
fn lines_under_journal(journal_stream_matches: bool) -> Vec<String> {
    use std::io::{Read as _, Write as _};
    use std::os::unix::fs::MetadataExt as _;

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, config_text(dir.path(), "listen = \"127.0.0.1:0\"")).unwrap();
    let (reader, writer) = std::io::pipe().unwrap();
    let pipe = std::fs::File::from(std::os::fd::OwnedFd::from(writer.try_clone().unwrap()))
        .metadata()
        .unwrap();
    let ino = if journal_stream_matches {
        pipe.ino()
    } else {
        pipe.ino() + 1
    };
    let mut child = Command::new(env!("CARGO_BIN_EXE_mt-webhook-receiver"))
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "info")
        .env("MT_WEBHOOK_SECRET", SECRET)
        .env("MT_TELEGRAM_BOT_TOKEN", "1:x")
        .env("JOURNAL_STREAM", format!("{}:{ino}", pipe.dev()))
        .stdout(Stdio::null())
        .stderr(writer)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(reader).lines();
    let mut seen = Vec::new();
    let addr: SocketAddr = loop {
        let line = lines
            .next()
            .expect("the receiver logs before it exits")
            .unwrap();
        seen.push(line.clone());
        if let Some(rest) = line.split("listening addr=").nth(1) {
            break rest.split_whitespace().next().unwrap().parse().unwrap();
        }
    };
    let mut socket = std::net::TcpStream::connect(addr).unwrap();
    socket
        .write_all(b"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
        .unwrap();
    let mut answer = String::new();
    socket.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(0));
    seen.extend(lines.map(Result::unwrap));
    seen
}

#[test]
fn under_journald_every_line_carries_its_syslog_priority() {
    let lines = lines_under_journal(true);
    let find = |needle: &str| {
        lines
            .iter()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line with {needle:?}: {lines:#?}"))
    };
    assert!(find("listening addr=").starts_with("<6>"), "{lines:#?}");
    assert!(find("webhook rejected").starts_with("<4>"), "{lines:#?}");
    assert!(find("shutdown requested").starts_with("<6>"), "{lines:#?}");
    // `journalctl -p warning` keeps the <0>..<4> lines: here only the refusal.
    let warnings: Vec<&String> = lines
        .iter()
        .filter(|l| matches!(l.get(..3), Some("<0>" | "<1>" | "<2>" | "<3>" | "<4>")))
        .collect();
    assert_eq!(warnings.len(), 1, "{lines:#?}");
    assert!(
        lines.iter().all(|l| l.starts_with('<')),
        "every line has a priority: {lines:#?}"
    );
}

#[test]
fn a_stderr_that_is_not_the_journal_gets_plain_lines() {
    let lines = lines_under_journal(false);
    assert!(
        lines.iter().any(|l| l.contains("webhook rejected")),
        "{lines:#?}"
    );
    assert!(lines.iter().all(|l| !l.starts_with('<')), "{lines:#?}");
}

/// SPEC §11: SIGTERM exits 0 within a few seconds while Telegram hangs mid-send (a server that
/// accepts the request and never answers).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_telegram_hangs_mid_send_exits_promptly() {
    let telegram = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let telegram_addr = telegram.local_addr().unwrap();
    let (asked_tx, asked_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in telegram.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut buf = [0u8; 4096];
            if let Ok(n) = std::io::Read::read(&mut stream, &mut buf) {
                let _ = asked_tx.send(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
            held.push(stream); // never answered
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        config_text(dir.path(), "listen = \"127.0.0.1:0\"")
            + &format!("api_url = \"http://{telegram_addr}\"\n"),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_mt-webhook-receiver"))
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "info")
        .env("MT_WEBHOOK_SECRET", SECRET)
        .env("MT_TELEGRAM_BOT_TOKEN", "1:x")
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
    let client = reqwest::Client::new();
    let url = format!("http://{addr}/webhook");
    assert!(deliver(&client, &url, 1).await.is_some());
    let request = tokio::task::spawn_blocking(move || {
        asked_rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the sender calls Telegram")
    })
    .await
    .unwrap();
    assert!(request.contains("/SendMessage"), "{request}");
    let asked = std::time::Instant::now();
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    let took = asked.elapsed();
    println!("mt-webhook-receiver exited {took:?} after SIGTERM with Telegram hanging mid-send");
    assert_eq!(status.code(), Some(0));
    assert!(took < Duration::from_secs(5), "{took:?}");
}
