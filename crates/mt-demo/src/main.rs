//! `mt-demo`: the README's first command. On loopback, with no Cloudflare account, it starts
//! cf-sim (Cloudflare REST + GraphQL + Telegram, in this process) and the four **real daemon
//! binaries** (the dashboard included, with a one-time demo login) with a generated config,
//! then plays one attack lifecycle at accelerated time:
//! webhook START → auto-advertisement → dropped traffic → attack END → calm → automatic
//! withdrawal. It prints a timeline as it happens, the Telegram messages the fake received,
//! `mtctl status` and `mtctl history`, and leaves the database in `--dir` for `sqlite3`.
//!
//! Accelerated time means short durations in the generated config (calm period 20 s instead
//! of 15 min, 2-second analytics buckets); the daemons run their production code on the wall
//! clock. Exit codes: 0 the prefix was withdrawn, 1 the lifecycle did not complete, 2 usage.

use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use cf_sim::{PrefixSpec, Scenario, Sim, TrafficSpec, webhook};
use clap::Parser;
use tokio::process::{Child, Command};

const CIDR: &str = "203.0.113.0/24";
const TARGET: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 10));
const PREFIX_ID: &str = "2af39739cc4e3b5910c918468bb89828";
const BGP_ID: &str = "7009ba364c7a5760798ceb430e603b74";
const WEBHOOK_SECRET: &str = "demo-webhook-secret";
const CHAT_ID: &str = "-1001234567890";
/// How long the simulated attack lasts.
const ATTACK: Duration = Duration::from_secs(30);
/// calm_period + analytics_delay + 2 × interval + (window − interval) of the demo's config.
const LIVENESS_BOUND_SECS: u64 = 20 + 4 + 2 * 2 + (10 - 2);
const DAEMONS: [&str; 4] = [
    "mt-webhook-receiver",
    "mt-network-analytics",
    "mt-autowithdraw",
    "mt-dashboard",
];
/// The dashboard user the demo creates (an operator; its password is new every run).
const DASHBOARD_USER: &str = "demo";

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Plays one Magic Transit attack lifecycle against cf-sim"
)]
struct Cli {
    /// Where the config, database, webhook archive and daemon logs go. Files a previous demo
    /// left there are replaced; nothing else in the directory is touched.
    #[arg(long, default_value = "demo")]
    dir: PathBuf,
    /// Where the daemon binaries and mtctl are (default: next to this binary).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Stop and restart every daemon once while the lifecycle runs (SIGTERM, then start).
    #[arg(long)]
    restart_daemons: bool,
    /// Give up (exit 1) when the prefix is not withdrawn within this many seconds.
    #[arg(long, default_value_t = 150)]
    timeout_secs: u64,
    /// After the lifecycle, keep cf-sim and the daemons running (browse the dashboard) until
    /// Ctrl-C.
    #[arg(long)]
    keep_running: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    mt_common::runtime::run(run(cli))
}

/// A line of the timeline, stamped with the seconds since the demo started.
struct Timeline(Instant);

impl Timeline {
    fn say(&self, what: impl std::fmt::Display) {
        println!("[{:>6.1}s] {what}", self.0.elapsed().as_secs_f64());
    }
}

async fn run(cli: Cli) -> Result<()> {
    let bin_dir = match cli.bin_dir.clone() {
        Some(d) => d,
        None => std::env::current_exe()?
            .parent()
            .context("the demo binary has no directory")?
            .to_path_buf(),
    };
    for name in DAEMONS.iter().chain(&["mtctl"]) {
        if !bin_dir.join(name).is_file() {
            bail!(
                "{} not found; build every binary first: cargo build --workspace --bins",
                bin_dir.join(name).display()
            );
        }
    }
    let dir = prepare(&cli.dir)?;
    let t = Timeline(Instant::now());

    let sim = cf_sim::Sim::new(scenario()?);
    let running = sim
        .clone()
        .serve(tokio::net::TcpListener::bind("127.0.0.1:0").await?)
        .await?;
    t.say(format_args!(
        "cf-sim (fake Cloudflare API, GraphQL analytics and Telegram) on {}",
        running.url()
    ));
    let receiver_port = free_port()?;
    let dashboard_port = free_port()?;
    let password = {
        let mut buf = [0u8; 12];
        getrandom::fill(&mut buf).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
        hex::encode(buf)
    };
    let hash = mt_control::password::hash(&password).map_err(anyhow::Error::msg)?;
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        config_text(&dir, &running, receiver_port, dashboard_port, &hash),
    )?;
    t.say(format_args!("config written to {}", config.display()));

    let mut daemons = Daemons::new(bin_dir.clone(), dir.clone(), config.clone());
    mtctl(&bin_dir, &config, &["migrate"]).await?;
    for name in DAEMONS {
        daemons.start(name)?;
    }
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let base = format!("http://127.0.0.1:{receiver_port}");
    let dashboard = Dashboard {
        base: format!("http://127.0.0.1:{dashboard_port}"),
        password,
    };
    wait_healthy(&http, &base, &mut daemons).await?;
    wait_healthy(&http, &dashboard.base, &mut daemons).await?;
    t.say(format_args!(
        "daemons running: {} (logs in {})",
        DAEMONS.join(", "),
        dir.join("logs").display()
    ));
    t.say(format_args!(
        "dashboard: {}/ (user {DASHBOARD_USER}, password {}){}",
        dashboard.base,
        dashboard.password,
        if cli.keep_running {
            ""
        } else {
            "; add --keep-running to browse it after the demo"
        }
    ));

    let store =
        mt_store::Store::open(&mt_store::OpenOptions::new(dir.join("magic_transit.db"))).await?;
    let endpoints = Endpoints {
        receiver: base,
        dashboard,
    };
    let result = lifecycle(&t, &sim, &http, &endpoints, &mut daemons, &store, &cli).await;
    let dashboard = endpoints.dashboard;
    let mut messages = sim.telegram_messages().into_iter().peekable();
    let patches = sim.patches();
    if !cli.keep_running {
        daemons.stop_all().await;
    }

    println!("\n=== Telegram messages received by the fake ===");
    if messages.peek().is_none() {
        println!("(none)");
    }
    for (i, m) in messages.enumerate() {
        println!("--- message {} (chat {}) ---", i + 1, m.chat_id);
        println!("{}", unescape_markdown(&m.text));
    }
    println!("\n=== Cloudflare API changes made by the suite ===");
    if patches.is_empty() {
        println!("(none)");
    }
    for c in &patches {
        println!(
            "{}  PATCH bgp/prefixes/{}  advertised={}  -> HTTP {}",
            c.at.format("%H:%M:%S"),
            c.bgp_id,
            c.advertised,
            c.status
        );
    }
    println!("\n=== mtctl status ===");
    print!("{}", mtctl(&bin_dir, &config, &["status"]).await?);
    println!("\n=== mtctl history ===");
    print!("{}", mtctl(&bin_dir, &config, &["history"]).await?);
    result?;
    println!(
        "\nDone. The database is {db}; try:\n  sqlite3 -header -column {db} \
         \"SELECT id, event_type, alert_type, prefix, action_taken, attack_id, created_at FROM attack_events ORDER BY id;\"\n  \
         sqlite3 -header -column {db} \"SELECT * FROM withdrawal_history;\"\n  \
         {mtctl} --config {config} events",
        db = dir.join("magic_transit.db").display(),
        mtctl = bin_dir.join("mtctl").display(),
        config = config.display(),
    );
    if cli.keep_running {
        println!(
            "\nStill running: the dashboard is {}/ (user {DASHBOARD_USER}, password {}). Ctrl-C stops everything.",
            dashboard.base, dashboard.password
        );
        tokio::signal::ctrl_c().await?;
        daemons.stop_all().await;
    }
    store.close().await;
    running.stop().await;
    Ok(())
}

/// Where the demo talks to the daemons.
struct Endpoints {
    /// mt-webhook-receiver's base URL.
    receiver: String,
    dashboard: Dashboard,
}

/// The dashboard started by the demo, and the demo user's password.
struct Dashboard {
    base: String,
    password: String,
}

impl Dashboard {
    /// Logs in as the demo user (the login form's token and cookie, as a browser does) and
    /// reads `/api/prefixes`.
    async fn prefixes(&self) -> Result<serde_json::Value> {
        // The login answers 303 with the session cookie: read it, do not follow.
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()?;
        let form = http.get(format!("{}/login", self.base)).send().await?;
        let cookie = set_cookie(&form, "mt_login").context("no login cookie")?;
        let html = form.text().await?;
        let csrf = html
            .split("name=\"csrf\" value=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .context("no token in the login form")?
            .to_owned();
        let login = http
            .post(format!("{}/login", self.base))
            .header("cookie", cookie)
            .form(&[
                ("csrf", csrf.as_str()),
                ("user", DASHBOARD_USER),
                ("password", self.password.as_str()),
            ])
            .send()
            .await?;
        let session = set_cookie(&login, "mt_session")
            .with_context(|| format!("dashboard login refused ({})", login.status()))?;
        let status = http
            .get(format!("{}/api/prefixes", self.base))
            .header("cookie", session)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        Ok(status)
    }
}

/// `name=value` of the `Set-Cookie` header naming `name`.
fn set_cookie(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with(&format!("{name}=")))
        .and_then(|c| c.split(';').next())
        .map(str::to_owned)
}

/// The lifecycle itself; returns once Cloudflare (the fake) reports the prefix withdrawn.
async fn lifecycle(
    t: &Timeline,
    sim: &Sim,
    http: &reqwest::Client,
    endpoints: &Endpoints,
    daemons: &mut Daemons,
    store: &mt_store::Store,
    cli: &Cli,
) -> Result<()> {
    let (base, dashboard) = (endpoints.receiver.as_str(), &endpoints.dashboard);
    let url = format!("{base}/webhook");
    let from = (sim.now() - sim.start()).num_seconds();
    let attack_secs = i64::try_from(ATTACK.as_secs())?;
    sim.add_traffic(
        TrafficSpec::attack(TARGET, from, from + attack_secs, 250_000.0, 2_000.0).sources(3),
    );
    t.say(format_args!(
        "ATTACK begins: 250 kpps / 2 Gbit/s UDP flood on {TARGET}:53 for {}s",
        ATTACK.as_secs()
    ));
    let answer = emit(
        http,
        &url,
        &webhook::attack_start("demo-1", TARGET, 250_000, 2_000),
    )
    .await?;
    t.say(format_args!(
        "webhook START delivered to mt-webhook-receiver: {answer}"
    ));
    tokio::time::sleep(Duration::from_secs(1)).await;
    sim.auto_advertise(BGP_ID);
    let answer = emit(
        http,
        &url,
        &webhook::auto_advertisement(&[(CIDR, "advertised")]),
    )
    .await?;
    t.say(format_args!(
        "Cloudflare auto-advertises {CIDR}; webhook fbm_auto_advertisement delivered: {answer}"
    ));
    let status = dashboard.prefixes().await?;
    let p = &status["prefixes"][0];
    t.say(format_args!(
        "dashboard (logged in as {DASHBOARD_USER}): {} advertised={} under_attack={}",
        p["prefix"].as_str().unwrap_or("?"),
        p["advertised"],
        p["under_attack"]
    ));

    let started = Instant::now();
    let deadline = started + Duration::from_secs(cli.timeout_secs);
    let mut ended = false;
    let mut restarted = !cli.restart_daemons;
    let mut seen_messages = 0;
    let mut last_progress = Instant::now();
    loop {
        daemons.check()?;
        let now = Instant::now();
        if !ended && now >= started + ATTACK {
            let answer = emit(
                http,
                &url,
                &webhook::attack_end("demo-1", TARGET, 250_000, 2_000),
            )
            .await?;
            t.say(format_args!(
                "ATTACK ends; webhook END delivered: {answer}. Now waiting for the calm period (20s)"
            ));
            ended = true;
        }
        if !restarted && now >= started + ATTACK / 2 {
            for name in DAEMONS {
                daemons.restart(name).await?;
                t.say(format_args!("restarted {name} (SIGTERM, then start)"));
            }
            wait_healthy(http, base, daemons).await?;
            restarted = true;
        }
        let messages = sim.telegram_messages();
        for m in messages.iter().skip(seen_messages) {
            t.say(format_args!("Telegram: {}", headline(&m.text)));
        }
        seen_messages = messages.len();
        let advertised = sim.bgp(BGP_ID).is_some_and(|b| b.advertised);
        if ended && !advertised {
            t.say(format_args!(
                "Cloudflare reports {CIDR} WITHDRAWN by mt-autowithdraw"
            ));
            // The liveness bound of mt-autowithdraw's decision core (invariant 5): the end of
            // the last attack window + calm_period + analytics_delay + 2 × interval, plus the
            // window's width beyond the interval (windows here are 10 s, cycles 2 s).
            let delay = now.duration_since(started + ATTACK).as_secs_f64();
            t.say(format_args!(
                "withdrawn {delay:.1}s after the attack ended (liveness bound {LIVENESS_BOUND_SECS}s: \
                 calm_period 20s + analytics_delay 4s + 2 × interval 2s + window 10s − interval 2s)"
            ));
            // Let the withdrawal's Telegram message go out before stopping.
            let wait = Instant::now() + Duration::from_secs(10);
            while Instant::now() < wait
                && !sim
                    .telegram_messages()
                    .iter()
                    .any(|m| headline(&m.text).contains("WITHDRAWAL"))
            {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            for m in sim.telegram_messages().iter().skip(messages.len()) {
                t.say(format_args!("Telegram: {}", headline(&m.text)));
            }
            return Ok(());
        }
        if now >= deadline {
            bail!(
                "{CIDR} still advertised after {}s; see the logs in {}",
                cli.timeout_secs,
                daemons.dir.join("logs").display()
            );
        }
        if now - last_progress >= Duration::from_secs(5) {
            last_progress = now;
            let stats = store.stats(chrono::Utc::now()).await?;
            let phase = if ended {
                "calm, waiting for the withdrawal"
            } else {
                "attack in progress"
            };
            t.say(format_args!(
                "... {phase}: {} webhooks, {} attack events, {} dropped-traffic events logged",
                stats.total_webhooks, stats.total_events, stats.total_analytics_events
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The simulated account: one prefix, not advertised, with accelerated analytics.
fn scenario() -> Result<Scenario> {
    Ok(Scenario {
        hold: Duration::from_secs(10),
        bucket: Duration::from_secs(2),
        lag: Duration::from_secs(2),
        partial: Duration::ZERO,
        prefixes: vec![PrefixSpec {
            id: PREFIX_ID.into(),
            bgp_id: BGP_ID.into(),
            cidr: CIDR.parse()?,
            description: "Demo customers".into(),
            advertised: false,
            changed_secs_ago: 86_400,
            locked: false,
        }],
        ..Scenario::default()
    })
}

/// The generated config: production keys, accelerated durations.
fn config_text(
    dir: &Path,
    sim: &cf_sim::Running,
    receiver_port: u16,
    dashboard_port: u16,
    password_hash: &str,
) -> String {
    let s = Scenario::default();
    format!(
        r#"# Generated by mt-demo: every daemon on loopback against cf-sim, durations accelerated.
[database]
path = "{db}"

[cloudflare]
account_id = "{account}"
api_base_url = "{api}"
graphql_url = "{gql}"
request_timeout = "5s"

[[prefixes]]
cidr = "{CIDR}"
prefix_id = "{PREFIX_ID}"
bgp_prefix_id = "{BGP_ID}"
description = "Demo customers"

[webhook]
listen = "127.0.0.1:{receiver_port}"
archive_dir = "{archive}"

[autowithdraw]
interval = "2s"
calm_period = "20s"
min_advertised = "20s"
window = "10s"
analytics_delay = "4s"
advertise_settle = "4s"
withdraw_verify_after = "60s"
metrics_listen = "127.0.0.1:0"

[network_analytics]
interval = "5s"
lookback = "20s"
metrics_listen = "127.0.0.1:0"

[telegram]
api_url = "{telegram}"
chat_id = "{CHAT_ID}"
org_name = "Demo SOC"

[dashboard]
listen = "127.0.0.1:{dashboard_port}"

[[dashboard.users]]
name = "{DASHBOARD_USER}"
password_hash = "{password_hash}"
role = "operator"
"#,
        db = toml_path(&dir.join("magic_transit.db")),
        account = s.account_id,
        api = sim.api_base_url(),
        gql = sim.graphql_url(),
        archive = toml_path(&dir.join("webhooks")),
        telegram = sim.url(),
    )
}

fn toml_path(p: &Path) -> String {
    p.display()
        .to_string()
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
}

/// Marks a directory the demo owns: only such a directory (or an empty one) is cleaned.
const MARKER: &str = ".mt-demo";

/// Creates `dir` and removes what a previous demo left there; returns it absolute. A
/// non-empty directory without the demo's marker is refused: `--dir /var/lib/magic-transit`
/// typed by mistake must not delete a production database.
fn prepare(dir: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir = std::fs::canonicalize(dir)?;
    let empty = std::fs::read_dir(&dir)?.next().is_none();
    if !empty && !dir.join(MARKER).is_file() {
        bail!(
            "{} is not empty and was not made by mt-demo (no {MARKER} file); \
             choose a new or empty directory with --dir",
            dir.display()
        );
    }
    std::fs::write(
        dir.join(MARKER),
        "made by mt-demo; its files here are replaced by the next run\n",
    )?;
    for f in [
        "magic_transit.db",
        "magic_transit.db-wal",
        "magic_transit.db-shm",
        "config.toml",
    ] {
        match std::fs::remove_file(dir.join(f)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("removing {}", dir.join(f).display()));
            }
            _ => {}
        }
    }
    for d in ["webhooks", "logs"] {
        match std::fs::remove_dir_all(dir.join(d)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("removing {}", dir.join(d).display()));
            }
            _ => {}
        }
    }
    std::fs::create_dir_all(dir.join("logs"))?;
    Ok(dir)
}

/// A loopback port nobody listens on right now (the receiver binds it a moment later).
fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The daemons, as child processes with their logs in `dir/logs`.
struct Daemons {
    bin_dir: PathBuf,
    dir: PathBuf,
    config: PathBuf,
    children: Vec<(&'static str, Child)>,
}

impl Daemons {
    fn new(bin_dir: PathBuf, dir: PathBuf, config: PathBuf) -> Self {
        Self {
            bin_dir,
            dir,
            config,
            children: Vec::new(),
        }
    }

    fn start(&mut self, name: &'static str) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("logs").join(format!("{name}.log")))?;
        let child = Command::new(self.bin_dir.join(name))
            .arg("--config")
            .arg(&self.config)
            .env("MT_WEBHOOK_SECRET", WEBHOOK_SECRET)
            .env("MT_CLOUDFLARE_API_TOKEN", Scenario::default().token)
            .env("MT_TELEGRAM_BOT_TOKEN", Scenario::default().telegram_token)
            .env("RUST_LOG", "info")
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        self.children.push((name, child));
        Ok(())
    }

    /// Fails when a daemon has exited.
    fn check(&mut self) -> Result<()> {
        for (name, child) in &mut self.children {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "{name} exited ({status}); see {}",
                    self.dir.join("logs").join(format!("{name}.log")).display()
                );
            }
        }
        Ok(())
    }

    async fn stop(child: &mut Child) {
        if let Some(pid) = child.id() {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await;
        }
        if tokio::time::timeout(Duration::from_secs(15), child.wait())
            .await
            .is_err()
        {
            let _ = child.kill().await;
        }
    }

    async fn restart(&mut self, name: &'static str) -> Result<()> {
        if let Some(i) = self.children.iter().position(|(n, _)| *n == name) {
            let (_, mut child) = self.children.remove(i);
            Self::stop(&mut child).await;
        }
        self.start(name)
    }

    async fn stop_all(&mut self) {
        for (_, child) in &mut self.children {
            Self::stop(child).await;
        }
        self.children.clear();
    }
}

/// Waits until `base/healthz` answers 200 (the receiver or the dashboard).
async fn wait_healthy(http: &reqwest::Client, base: &str, daemons: &mut Daemons) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        daemons.check()?;
        if let Ok(r) = http.get(format!("{base}/healthz")).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("{base}/healthz did not answer within 30s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// POSTs a webhook; returns what the receiver answered (`200 {"status":"stored",…}`).
async fn emit(http: &reqwest::Client, url: &str, body: &serde_json::Value) -> Result<String> {
    let (status, answer) = webhook::emit(http, url, WEBHOOK_SECRET, body).await?;
    if !(200..300).contains(&status) {
        bail!("the receiver answered {status}: {answer}");
    }
    Ok(format!("{status} {answer}"))
}

async fn mtctl(bin_dir: &Path, config: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new(bin_dir.join("mtctl"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env("MT_CLOUDFLARE_API_TOKEN", Scenario::default().token)
        .env("MT_TELEGRAM_BOT_TOKEN", Scenario::default().telegram_token)
        .env("MT_WEBHOOK_SECRET", WEBHOOK_SECRET)
        .output()
        .await
        .context("running mtctl")?;
    if !out.status.success() {
        bail!(
            "mtctl {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The line that says what a message is about (the first one is the common banner).
fn headline(text: &str) -> String {
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next().unwrap_or_default();
    unescape_markdown(lines.next().unwrap_or(first))
}

/// Telegram MarkdownV2 as a reader sees it: escapes and emphasis markers removed.
fn unescape_markdown(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.extend(chars.next()),
            '*' | '_' | '`' => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::unescape_markdown;

    #[test]
    fn the_headline_skips_the_banner() {
        assert_eq!(
            super::headline("🛡️ *BANNER*\n\n✅ *DDoS ATTACK ENDED*\n📋 Alert"),
            "✅ DDoS ATTACK ENDED"
        );
        assert_eq!(super::headline("only"), "only");
    }

    #[test]
    fn markdown_is_unescaped_for_the_terminal() {
        assert_eq!(
            unescape_markdown(r"*Prefix withdrawn* 203\.0\.113\.0/24 \(calm 20s\)"),
            "Prefix withdrawn 203.0.113.0/24 (calm 20s)"
        );
    }
}
