//! End to end: the demo binary drives the four real daemon binaries (built next to it by
//! `cargo test --workspace`) through one attack lifecycle against cf-sim over loopback, with
//! every daemon restarted mid-run; the database is then read with the `sqlite3` CLI, as an
//! operator would, through the seed's tables.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure must panic

use std::path::Path;
use std::process::Command;

fn sql(db: &Path, query: &str) -> Vec<String> {
    let out = Command::new("sqlite3")
        .arg("-separator")
        .arg("|")
        .arg(db)
        .arg(query)
        .output()
        .expect("the sqlite3 CLI");
    assert!(
        out.status.success(),
        "{query}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// One HTTP/1.0 GET on loopback; the body when the answer is 200.
fn http_get(addr: &str, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
        .ok()?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).ok()?;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.0 200").then(|| body.to_owned())
}

/// Every daemon's `/metrics` page, found through the "listening addr=…" lines of its log
/// (after the restarts, the last start's listeners answer).
fn scrape_every_daemon(dir: &Path) -> Vec<(String, String)> {
    let mut pages = Vec::new();
    for daemon in [
        "mt-webhook-receiver",
        "mt-network-analytics",
        "mt-autowithdraw",
        "mt-dashboard",
    ] {
        let log = std::fs::read_to_string(dir.join("logs").join(format!("{daemon}.log")))
            .unwrap_or_default();
        let page = log
            .lines()
            .rev()
            .filter(|l| l.contains(" listening "))
            .filter_map(|l| l.split("addr=").nth(1)?.split_whitespace().next())
            .find_map(|addr| http_get(addr, "/metrics"));
        pages.push((daemon.to_owned(), page.unwrap_or_default()));
    }
    pages
}

/// Runs `mt-demo --restart-daemons --keep-running`; once it says it is still running, checks
/// that the dashboard it names answers `/healthz` and scrapes every daemon's `/metrics`, then
/// sends SIGINT as Ctrl-C would. Returns the output, whether the dashboard answered, and the
/// scrapes.
fn run_demo_keeping_it_running(dir: &Path) -> (std::process::Output, bool, Vec<(String, String)>) {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::process::Stdio;

    let mut child = Command::new(env!("CARGO_BIN_EXE_mt-demo"))
        .arg("--dir")
        .arg(dir)
        .arg("--restart-daemons")
        .arg("--keep-running")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr_pipe = child.stderr.take().unwrap();
    let stderr = std::thread::spawn(move || {
        let mut buf = Vec::new();
        stderr_pipe.read_to_end(&mut buf).unwrap();
        buf
    });
    let mut stdout = Vec::new();
    let mut answered = false;
    let mut scrapes = Vec::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if let Some(rest) = line.strip_prefix("Still running: the dashboard is http://") {
            let addr = rest.split('/').next().unwrap().to_owned();
            let mut s = std::net::TcpStream::connect(&addr).unwrap();
            s.write_all(b"GET /healthz HTTP/1.0\r\n\r\n").unwrap();
            let mut answer = String::new();
            s.read_to_string(&mut answer).unwrap();
            answered = answer.starts_with("HTTP/1.0 200");
            scrapes = scrape_every_daemon(dir);
            let sent = Command::new("kill")
                .arg("-INT")
                .arg(child.id().to_string())
                .status()
                .unwrap();
            assert!(sent.success());
        }
        stdout.extend_from_slice(line.as_bytes());
        stdout.push(b'\n');
    }
    let status = child.wait().unwrap();
    let output = std::process::Output {
        status,
        stdout,
        stderr: stderr.join().unwrap(),
    };
    (output, answered, scrapes)
}

#[test]
fn an_attack_is_logged_notified_and_withdrawn_once_calm_across_daemon_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let (out, kept_running, scrapes) = run_demo_keeping_it_running(dir.path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let logs = |name: &str| {
        std::fs::read_to_string(dir.path().join("logs").join(format!("{name}.log")))
            .unwrap_or_default()
    };
    assert!(
        out.status.success(),
        "demo failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}\n--- autowithdraw log\n{}",
        logs("mt-autowithdraw")
    );

    // With --keep-running everything stayed up after the lifecycle until Ctrl-C (SIGINT).
    assert!(
        kept_running,
        "the dashboard answered after the demo: {stdout}"
    );

    // The timeline: every daemon restarted once, the story told on Telegram in order.
    assert_eq!(stdout.matches("] restarted mt-").count(), 4, "{stdout}");
    // The dashboard, logged into with the demo's generated password, saw the attack.
    assert!(
        stdout.contains(
            "dashboard (logged in as demo): 203.0.113.0/24 advertised=true under_attack=true"
        ),
        "{stdout}"
    );
    assert!(logs("mt-dashboard").contains("login user=\"demo\""));
    let mut rest = stdout.as_ref();
    for step in [
        "Telegram: 🚨 DDoS ATTACK DETECTED",
        "Telegram: 📢 PREFIX AUTO-ADVERTISEMENT",
        "Telegram: 📊 NETWORK ANALYTICS",
        "ATTACK ends",
        "Telegram: ✅ DDoS ATTACK ENDED",
        "Telegram: 🔚 BGP WITHDRAWAL",
        "=== mtctl history ===",
    ] {
        let at = rest
            .find(step)
            .unwrap_or_else(|| panic!("{step:?} missing or out of order in\n{stdout}"));
        rest = &rest[at + step.len()..];
    }
    // Liveness (mt-autowithdraw's invariant 5): withdrawn within the bound after the attack,
    // measured by the demo in real time. The bound is checked with 10 s for a loaded machine
    // (real daemons, real sleeps), and never before calm_period + analytics_delay less the
    // demo's 2 s analytics buckets.
    let line = stdout
        .lines()
        .find(|l| l.contains("s after the attack ended (liveness bound"))
        .unwrap_or_else(|| panic!("no liveness line in\n{stdout}"));
    let measured: f64 = line
        .split("withdrawn ")
        .nth(1)
        .and_then(|r| r.split('s').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    let bound: f64 = line
        .split("liveness bound ")
        .nth(1)
        .and_then(|r| r.split('s').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    println!("liveness: withdrawn {measured:.1}s after the attack ended; bound {bound}s");
    assert!(
        measured <= bound + 10.0 && measured >= 20.0 + 4.0 - 4.0,
        "{line}"
    );
    // Cloudflare saw exactly one change from the suite: the withdrawal.
    let patches: Vec<&str> = stdout.lines().filter(|l| l.contains("PATCH ")).collect();
    assert_eq!(patches.len(), 1, "{stdout}");
    assert!(
        patches[0].contains("advertised=false") && patches[0].ends_with("HTTP 200"),
        "{}",
        patches[0]
    );

    let db = dir.path().join("magic_transit.db");
    // The queries the demo suggests at the end work on the database it leaves.
    let hints: Vec<&str> = stdout
        .lines()
        .filter(|l| l.trim_start().starts_with("sqlite3 "))
        .filter_map(|l| Some(&l[l.find('"')? + 1..l.rfind('"')?]))
        .collect();
    assert_eq!(hints.len(), 2, "{stdout}");
    for query in hints {
        assert!(!sql(&db, query).is_empty(), "{query}");
    }
    assert_eq!(
        sql(
            &db,
            "SELECT event_type, COALESCE(alert_type, ''), prefix, action_taken, COALESCE(attack_id, '') \
             FROM attack_events ORDER BY id"
        )
        .iter()
        .map(|r| {
            // The auto-advertisement's correlation id is generated; keep its shape only.
            let mut fields: Vec<&str> = r.split('|').collect();
            if fields[0] == "ADVERTISE" {
                fields[4] = if fields[4].starts_with("adv-") { "adv-*" } else { fields[4] };
            }
            fields.join("|")
        })
        .collect::<Vec<_>>(),
        [
            "START|advanced_ddos_attack_l4_alert|203.0.113.0/24|mitigating|demo-1",
            "ADVERTISE|fbm_auto_advertisement|203.0.113.0/24|auto_advertised|adv-*",
            "END|advanced_ddos_attack_l4_alert|203.0.113.0/24|notified_autowithdraw_handles|demo-1",
            "WITHDRAW||203.0.113.0/24|withdrawn_auto|",
        ]
    );
    assert_eq!(
        sql(
            &db,
            "SELECT alert_type, COUNT(*) FROM webhook_events GROUP BY alert_type ORDER BY 1"
        ),
        [
            "advanced_ddos_attack_l4_alert|2",
            "fbm_auto_advertisement|1"
        ]
    );
    // One withdrawal, automatic, naming its attack, after the attack and a calm period.
    let history = sql(
        &db,
        "SELECT prefix, attack_id, target_ip, attack_type, withdraw_method, status, \
         (julianday(withdrawn_at) - julianday(attack_ended_at)) * 86400 >= 20, \
         (julianday(withdrawn_at) - julianday(advertised_at)) * 86400 >= 20 \
         FROM withdrawal_history",
    );
    assert_eq!(
        history,
        [
            "203.0.113.0/24|demo-1|203.0.113.10|advanced_ddos_attack_l4_alert|auto_scheduled|success|1|1"
        ]
    );
    assert_eq!(sql(&db, "SELECT COUNT(*) FROM pending_withdrawals"), ["0"]);
    assert_eq!(
        sql(
            &db,
            "SELECT prefix, advertised, under_attack FROM prefix_calm_status"
        ),
        ["203.0.113.0/24|0|0"]
    );
    // Dropped traffic logged once per bucket and source despite the analytics restart.
    let analytics = sql(
        &db,
        "SELECT COUNT(*) > 5, COUNT(*) = COUNT(DISTINCT event_hash), \
         COUNT(DISTINCT attack_id), MIN(destination_ip), SUM(packets) > 0 \
         FROM network_analytics_events",
    );
    assert_eq!(analytics, ["1|1|1|203.0.113.10|1"]);
    // Every queued Telegram message was delivered, none twice.
    assert_eq!(
        sql(
            &db,
            "SELECT kind, COUNT(*) FROM notification_outbox WHERE kind <> 'analytics_summary' \
             GROUP BY kind ORDER BY kind"
        ),
        [
            "attack_end|1",
            "attack_start|1",
            "auto_advertisement|1",
            "withdrawal_success|1"
        ]
    );
    assert_eq!(
        sql(
            &db,
            "SELECT COUNT(*) FROM notification_outbox WHERE status <> 'sent'"
        ),
        ["0"]
    );
    // The archive holds every accepted webhook.
    let archived = std::fs::read_dir(dir.path().join("webhooks"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "json")
        })
        .count();
    assert_eq!(archived, 3);

    // The operations content (ops/) uses no metric name the running daemons do not export.
    every_metric_in_the_rules_and_dashboard_is_exported(&scrapes);
}

/// `# TYPE` names (a histogram adds `_bucket`, `_sum`, `_count`) and sample names of every
/// page: a labelled family is listed even before its first sample.
fn exported_names(scrapes: &[(String, String)]) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    for (daemon, page) in scrapes {
        assert!(
            page.contains("mt_build_info{daemon=\""),
            "{daemon}: no /metrics scraped (or no mt_build_info):\n{page}"
        );
        for line in page.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut parts = rest.split_whitespace();
                let (name, kind) = (parts.next().unwrap(), parts.next().unwrap_or(""));
                names.insert(name.to_owned());
                if kind == "histogram" {
                    for suffix in ["_bucket", "_sum", "_count"] {
                        names.insert(format!("{name}{suffix}"));
                    }
                }
            } else if !line.starts_with('#') && !line.is_empty() {
                let end = line.find(['{', ' ']).unwrap_or(line.len());
                names.insert(line[..end].to_owned());
            }
        }
    }
    names
}

/// Prometheus's own series and the names PromQL and Grafana give meaning to.
const NOT_EXPORTED_BY_US: &[&str] = &["up", "ALERTS", "ALERTS_FOR_STATE"];

/// The metric names a PromQL expression selects: identifiers that are not functions or
/// aggregations (followed by `(`), keywords, label names (inside `{…}` or a `by (…)` list),
/// strings, durations (inside `[…]`), numbers or Grafana variables (`$…`).
fn promql_metric_names(expr: &str) -> Vec<String> {
    // Besides LABEL_LISTS, which may also stand without their list (`group_left metric`).
    const KEYWORDS: &[&str] = &[
        "bool",
        "and",
        "or",
        "unless",
        "offset",
        "inf",
        "nan",
        "Inf",
        "NaN",
        // Aggregations, which may be followed by `by (…)` before their parenthesis.
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
        "limitk",
        "limit_ratio",
    ];
    const LABEL_LISTS: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    let chars: Vec<char> = expr.chars().collect();
    let mut names = Vec::new();
    let mut i = 0;
    let skip_to = |from: usize, close: char| {
        let mut j = from + 1;
        while j < chars.len() && chars[j] != close {
            if chars[j] == '\\' {
                j += 1;
            }
            j += 1;
        }
        j + 1
    };
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' | '\'' | '`' => i = skip_to(i, c),
            '{' => i = skip_to(i, '}'),
            '[' => i = skip_to(i, ']'),
            '#' => i = skip_to(i, '\n'),
            '$' => {
                i += 1;
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
            }
            c if c.is_ascii_digit() || c == '.' => {
                // Numbers and durations (5m, 1e3, 0.5) are not identifiers.
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
                {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let mut next = i;
                while next < chars.len() && chars[next].is_whitespace() {
                    next += 1;
                }
                let call = chars.get(next) == Some(&'(');
                if LABEL_LISTS.contains(&word.as_str()) && call {
                    i = skip_to(next, ')');
                } else if !call
                    && !KEYWORDS.contains(&word.as_str())
                    && !LABEL_LISTS.contains(&word.as_str())
                {
                    names.push(word);
                }
            }
            _ => i += 1,
        }
    }
    names
}

#[test]
fn the_promql_name_extractor_finds_metrics_and_nothing_else() {
    assert_eq!(
        promql_metric_names(
            "max by (prefix) (mt_a_seconds{prefix=~\"$prefix\", job=\"x\"} > on(instance, job) group_left mt_b) \
             and absent(up{job=\"y\"}) or sum without (le) (rate(mt_c_bucket[$__rate_interval])) * 1e3 \
             unless histogram_quantile(0.99, mt_d offset 5m) > bool 2 # comment mt_not\n"
        ),
        ["mt_a_seconds", "mt_b", "up", "mt_c_bucket", "mt_d"]
    );
}

/// Every metric name used by ops/prometheus (rules and the rules' unit-test series) and
/// ops/grafana (panel queries, template variables) must appear in the daemons' real scrape.
fn every_metric_in_the_rules_and_dashboard_is_exported(scrapes: &[(String, String)]) {
    use yaml_rust2::YamlLoader;

    let exported = exported_names(scrapes);
    let ops = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../ops");
    let mut used: Vec<(String, String)> = Vec::new();
    let mut add = |origin: &str, expr: &str| {
        for name in promql_metric_names(expr) {
            used.push((origin.to_owned(), name));
        }
    };
    let yaml = |file: &str| {
        let text = std::fs::read_to_string(ops.join(file)).unwrap();
        YamlLoader::load_from_str(&text)
            .unwrap_or_else(|e| panic!("{file}: {e}"))
            .remove(0)
    };
    let rules = yaml("prometheus/alerts.yml");
    for group in rules["groups"].as_vec().unwrap() {
        for rule in group["rules"].as_vec().unwrap() {
            let name = rule["alert"].as_str().or(rule["record"].as_str()).unwrap();
            add(
                &format!("alerts.yml {name}"),
                rule["expr"].as_str().unwrap(),
            );
        }
    }
    let tests = yaml("prometheus/alerts_test.yml");
    for test in tests["tests"].as_vec().unwrap() {
        for series in test["input_series"].as_vec().into_iter().flatten() {
            add("alerts_test.yml series", series["series"].as_str().unwrap());
        }
        for e in test["promql_expr_test"].as_vec().into_iter().flatten() {
            add(
                "alerts_test.yml promql_expr_test",
                e["expr"].as_str().unwrap(),
            );
        }
    }
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(ops.join("grafana/magic-transit.json")).unwrap(),
    )
    .unwrap();
    let mut panels: Vec<&serde_json::Value> =
        dashboard["panels"].as_array().unwrap().iter().collect();
    while let Some(panel) = panels.pop() {
        panels.extend(panel["panels"].as_array().into_iter().flatten());
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                add(&format!("grafana panel {:?}", panel["title"]), expr);
            }
        }
    }
    for variable in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let query = match &variable["query"] {
            serde_json::Value::String(q) => q.clone(),
            q => q["query"].as_str().unwrap_or_default().to_owned(),
        };
        // label_values(metric, label): the metric only.
        if let Some(args) = query.strip_prefix("label_values(") {
            add(
                "grafana variable",
                args.split(',').next().unwrap_or_default(),
            );
        } else if variable["type"] == "query" {
            add("grafana variable", &query);
        }
    }
    assert!(used.len() > 50, "the extractor found too little: {used:?}");
    let invented: Vec<&(String, String)> = used
        .iter()
        .filter(|(_, name)| {
            !exported.contains(name) && !NOT_EXPORTED_BY_US.contains(&name.as_str())
        })
        .collect();
    assert!(
        invented.is_empty(),
        "metric names used in ops/ that no daemon exports: {invented:?}\nexported: {exported:?}"
    );
    let distinct: std::collections::BTreeSet<&String> = used.iter().map(|(_, n)| n).collect();
    println!(
        "ops/: {} metric references ({} distinct names), every one in the daemons' /metrics",
        used.len(),
        distinct.len()
    );
}

#[test]
fn a_missing_daemon_binary_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mt-demo"))
        .arg("--dir")
        .arg(dir.path().join("demo"))
        .arg("--bin-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("mt-webhook-receiver not found")
            && stderr.contains("cargo build --workspace --bins"),
        "{stderr}"
    );
    assert!(
        !dir.path().join("demo").exists(),
        "nothing is created before the check"
    );
}

#[test]
fn a_directory_the_demo_did_not_make_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("magic_transit.db");
    std::fs::write(&db, b"production data").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mt-demo"))
        .arg("--dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("was not made by mt-demo"), "{stderr}");
    assert_eq!(std::fs::read(&db).unwrap(), b"production data");
}
