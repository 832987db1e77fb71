//! The dashboard in a real browser: headless Chromium driven over WebDriver (chromedriver),
//! against the real `mt-dashboard` binary, a seeded database and cf-sim as Cloudflare.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs them); `MTTEST_CHROMIUM`
//! and `MTTEST_CHROMEDRIVER` point elsewhere. With `MTTEST_UPDATE_SCREENSHOTS=1` the prefixes-page
//! screenshot is also written to `docs/dashboard-prefixes.png` (the README's picture).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use fantoccini::{Client, ClientBuilder, Locator};
use mt_common::SystemClock;
use mt_store::{OpenOptions, Store};

/// Kills the child when dropped (also when an assertion fails).
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn tool(env: &str, default: &str) -> PathBuf {
    let path = std::env::var_os(env).map_or_else(|| PathBuf::from(default), PathBuf::from);
    assert!(
        path.exists(),
        "{} not found: install Debian's chromium and chromium-driver (`.ci/run` does: \
         apt-get install chromium chromium-driver) or set {env}",
        path.display()
    );
    path
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `url` until it answers 200 or `within` passes; `log` is shown if it never does.
async fn wait_ready(url: &str, within: Duration, what: &str, log: Option<&Path>) {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + within;
    loop {
        if let Ok(r) = http.get(url).send().await
            && r.status().is_success()
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not come up at {url}: {}",
            log.and_then(|l| std::fs::read_to_string(l).ok())
                .unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn text_of(c: &Client, css: &str) -> String {
    c.find(Locator::Css(css))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Waits until the element's text satisfies `ok` (pages reload and scripts tick).
async fn wait_text(c: &Client, css: &str, ok: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(e) = c.find(Locator::Css(css)).await
            && let Ok(t) = e.text().await
            && ok(&t)
        {
            return t;
        }
        assert!(Instant::now() < deadline, "{css}: text never matched");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Saves a PNG of the page under the test's target dir, and under `docs/` with
/// `MTTEST_UPDATE_SCREENSHOTS=1`.
async fn screenshot(c: &Client, name: &str) {
    let png = c.screenshot().await.unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    assert!(
        png.len() > 20_000,
        "a rendered page, not a blank: {} bytes",
        png.len()
    );
    std::fs::write(Path::new(env!("CARGO_TARGET_TMPDIR")).join(name), &png).unwrap();
    if std::env::var_os("MTTEST_UPDATE_SCREENSHOTS").is_some() {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs");
        std::fs::create_dir_all(&docs).unwrap();
        std::fs::write(docs.join(name), &png).unwrap();
    }
}

fn seconds(countdown: &str) -> i64 {
    // "in 12m 58s" / "in 58s"
    let mut total = 0;
    for part in countdown.trim_start_matches("in ").split(' ') {
        let (n, unit) = part.split_at(part.len() - 1);
        let n: i64 = n.parse().unwrap_or_else(|_| panic!("{countdown:?}"));
        total += match unit {
            "h" => n * 3600,
            "m" => n * 60,
            _ => n,
        };
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_logs_in_sees_the_attack_pins_it_and_withdraws_another_prefix() {
    let chromium = tool("MTTEST_CHROMIUM", "/usr/bin/chromium");
    let chromedriver = tool("MTTEST_CHROMEDRIVER", "/usr/bin/chromedriver");
    let dir = tempfile::tempdir().unwrap();

    // Cloudflare (fake), config, and a database seeded as the daemons would have left it.
    let sim = start_sim().await;
    let port = free_port();
    let (config_path, config) = write_config(
        dir.path(),
        &sim,
        format!("127.0.0.1:{port}").parse().unwrap(),
    );
    let store = Store::open(&OpenOptions::from_config(&config.database))
        .await
        .unwrap();
    seed(&config, &store, SystemClock::shared(), chrono::Utc::now()).await;
    store.close().await;

    // The real binary.
    let log = dir.path().join("mt-dashboard.log");
    let _dashboard = Guard(
        Command::new(env!("CARGO_BIN_EXE_mt-dashboard"))
            .arg("--config")
            .arg(&config_path)
            .envs(env())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let base = format!("http://127.0.0.1:{port}");
    let healthz = format!("{base}/healthz");
    wait_ready(
        &healthz,
        Duration::from_secs(30),
        "mt-dashboard",
        Some(&log),
    )
    .await;

    let driver_port = free_port();
    let _driver = Guard(
        Command::new(&chromedriver)
            .arg(format!("--port={driver_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let driver = format!("http://127.0.0.1:{driver_port}");
    wait_ready(
        &format!("{driver}/status"),
        Duration::from_secs(30),
        "chromedriver",
        None,
    )
    .await;

    let profile = dir.path().join("chromium-profile");
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": chromium,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--window-size=1500,900",
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    let c = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver)
        .await
        .expect("chromedriver session");

    // Run the steps in a task so the browser is closed even when an assertion fails.
    let sim = std::sync::Arc::new(sim);
    let steps = tokio::spawn({
        let (c, sim) = (c.clone(), sim.clone());
        async move { drive(&c, &base, &sim).await }
    })
    .await;
    let _ = c.close().await;
    if let Err(e) = steps {
        std::panic::resume_unwind(e.into_panic());
    }
}

async fn drive(c: &Client, base: &str, sim: &cf_sim::Running) {
    // Any page needs a login.
    c.goto(&format!("{base}/")).await.unwrap();
    assert!(c.current_url().await.unwrap().path() == "/login");
    c.find(Locator::Id("login-user"))
        .await
        .unwrap()
        .send_keys(OPERATOR.0)
        .await
        .unwrap();
    c.find(Locator::Id("login-password"))
        .await
        .unwrap()
        .send_keys(OPERATOR.1)
        .await
        .unwrap();
    c.find(Locator::Id("login-submit"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert_eq!(wait_text(c, "#user", |t| t == "alice").await, "alice");
    assert_eq!(c.current_url().await.unwrap().path(), "/");

    // The attacked prefix: under attack, held; the calm one counts down, ticking live.
    let attacked = format!("tr[data-prefix=\"{ATTACKED}\"]");
    let row = text_of(c, &attacked).await;
    assert!(row.contains("held: under attack"), "{row}");
    assert!(row.contains("pkts"), "{row}");
    let countdown = format!("tr[data-prefix=\"{CALM}\"] .countdown");
    let first = seconds(&text_of(c, &countdown).await);
    assert!(
        (700..=780).contains(&first),
        "about 13 minutes left: {first}"
    );
    let later = seconds(&wait_text(c, &countdown, |t| seconds(t) <= first - 2).await);
    assert!(
        later < first,
        "the countdown ticks in the browser: {first} → {later}"
    );

    // Pin the attacked prefix.
    c.find(Locator::Css(&format!(
        "{attacked} a[href^=\"/actions/pin\"]"
    )))
    .await
    .unwrap()
    .click()
    .await
    .unwrap();
    c.find(Locator::Id("pin-reason"))
        .await
        .unwrap()
        .send_keys("attack expected to resume tonight")
        .await
        .unwrap();
    c.find(Locator::Id("pin-duration"))
        .await
        .unwrap()
        .send_keys("6h")
        .await
        .unwrap();
    c.find(Locator::Id("pin-submit"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let flash = wait_text(c, "#flash", |t| t.contains("pinned until")).await;
    assert!(flash.starts_with(ATTACKED), "{flash}");
    let row = text_of(c, &attacked).await;
    assert!(
        row.contains("by alice: attack expected to resume tonight"),
        "{row}"
    );

    // The README's picture: the prefixes page with the attack, the pin and the countdown.
    screenshot(c, "dashboard-prefixes.png").await;

    // Withdraw the calm prefix: a confirmation page, then Cloudflare's PATCH.
    c.find(Locator::Css(&format!(
        "tr[data-prefix=\"{CALM}\"] a[href^=\"/actions/withdraw\"]"
    )))
    .await
    .unwrap()
    .click()
    .await
    .unwrap();
    let confirm = c.find(Locator::Id("confirm")).await.unwrap();
    assert_eq!(
        confirm.text().await.unwrap(),
        format!("Withdraw {CALM} now")
    );
    assert!(sim.sim.patches().is_empty(), "confirming is not acting");
    confirm.click().await.unwrap();
    let flash = wait_text(c, "#flash", |t| t.contains("withdrawn on Cloudflare")).await;
    assert!(flash.starts_with(CALM), "{flash}");
    assert!(!sim.sim.bgp("b-p23").unwrap().advertised);
    assert!(
        sim.sim.bgp("b-p24").unwrap().advertised,
        "the pinned one stays"
    );
    assert_eq!(sim.sim.patches().len(), 1);
    let row = text_of(c, &format!("tr[data-prefix=\"{CALM}\"]")).await;
    assert!(row.contains("Advertise"), "{row}");

    // The stored-XSS attempt is shown as text and never runs.
    c.goto(&format!("{base}/webhooks")).await.unwrap();
    let policies = c.find_all(Locator::Css("td.policy")).await.unwrap();
    let mut shown = Vec::new();
    for p in policies {
        shown.push(p.text().await.unwrap());
    }
    assert!(shown.iter().any(|t| t == XSS_POLICY), "{shown:?}");
    let title = c.execute("return document.title", vec![]).await.unwrap();
    assert_eq!(title, "Webhooks · Magic Transit");
    let images = c
        .execute(
            "return document.querySelectorAll('main img').length",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(images, 0, "the <img onerror> in the policy name is text");

    // The other views render in the browser too (pictures kept for the README).
    c.goto(&format!("{base}/attacks")).await.unwrap();
    let incidents = text_of(c, "table.incidents").await;
    assert!(incidents.contains("START → ADVERTISE"), "{incidents}");
    screenshot(c, "dashboard-attacks.png").await;
    c.goto(&format!("{base}/analytics?window=1h"))
        .await
        .unwrap();
    let bars = c
        .find_all(Locator::Css("svg.chart rect.bar"))
        .await
        .unwrap();
    assert_eq!(bars.len(), 13, "5-minute buckets over the hour");
    screenshot(c, "dashboard-analytics.png").await;

    // The history shows the withdrawal, by alice through the dashboard.
    c.goto(&format!("{base}/audit")).await.unwrap();
    let audit = text_of(c, "main table").await;
    assert!(
        audit.contains("withdraw") && audit.contains("dashboard"),
        "{audit}"
    );
}
