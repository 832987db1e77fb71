//! What a dashboard page costs on a busy database: 200,000 dropped-traffic rows spread over
//! 7 days (about what a week with a few large attacks leaves), 5,000 attack events, three
//! prefixes. Times the views (database part) and whole pages over HTTP on loopback, with the
//! production SQLite settings on a real file.
//!
//! `cargo bench -p dashboard --bench views`
#![allow(clippy::expect_used, clippy::unwrap_used)] // a benchmark aborts on any failure

use std::time::{Duration, Instant};

use chrono::Utc;
use dashboard::views::{self, Window};
use mt_common::config::Config;
use mt_common::{ManualClock, SharedClock};
use mt_store::{
    ActionTaken, EventType, NewAnalyticsEvent, NewAttackEvent, OpenOptions, Store, event_hash,
};

const ROWS: i64 = 200_000;
const EVENTS: i64 = 5_000;
const RUNS: usize = 9;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

async fn time<F, Fut>(mut f: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    f().await; // warm the page cache
    let mut runs = Vec::new();
    for _ in 0..RUNS {
        let t = Instant::now();
        f().await;
        runs.push(t.elapsed());
    }
    median(runs)
}

fn cookie(r: &reqwest::Response) -> String {
    r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bench.db");
    let hash = mt_control::password::hash("bench password long").unwrap();
    let text = format!(
        "[database]\npath = \"{}\"\n[cloudflare]\naccount_id = \"bench\"\n[telegram]\nenabled = false\n[dashboard]\nsecure_cookies = false\n\
         [[dashboard.users]]\nname = \"bench\"\npassword_hash = \"{hash}\"\nrole = \"viewer\"\n\
         [[prefixes]]\ncidr = \"203.0.113.0/24\"\nprefix_id = \"a\"\nbgp_prefix_id = \"b\"\n\
         [[prefixes]]\ncidr = \"198.51.100.0/23\"\nprefix_id = \"c\"\nbgp_prefix_id = \"d\"\n\
         [[prefixes]]\ncidr = \"2001:db8::/48\"\nprefix_id = \"e\"\nbgp_prefix_id = \"f\"\n",
        db.display()
    );
    let config = Config::from_toml_str(&text, &dir.path().join("c.toml"), Vec::new()).unwrap();
    let store = Store::open(&OpenOptions::new(&db)).await.unwrap();
    let now = Utc::now();

    let t = Instant::now();
    let span = 7 * 24 * 3600;
    let vectors = ["UDP Flood", "SYN Flood", "ACK Flood", "DNS Amplification"];
    let countries = ["NL", "US", "BR", "CN", "DE", "RU"];
    let rows: Vec<NewAnalyticsEvent> = (0..ROWS)
        .map(|i| {
            let at = now - chrono::Duration::seconds(span * i / ROWS);
            let dims = serde_json::json!({
                "datetime": at.to_rfc3339(), "attackId": "a", "ipSourceAddress": i.to_string()
            });
            NewAnalyticsEvent {
                event_hash: event_hash(&dims),
                attack_id: Some(format!("attack-{}", i / 20_000)),
                event_datetime: Some(at),
                attack_vector: Some(vectors[(i % 4) as usize].into()),
                source_ip: Some(format!("198.18.{}.{}", (i / 256) % 256, i % 256)),
                source_asn: Some(64_500 + i % 300),
                source_asn_name: Some(format!("AS-{}", i % 300)),
                source_country: Some(countries[(i % 6) as usize].into()),
                destination_ip: Some(format!("203.0.113.{}", i % 50)),
                destination_port: Some(53),
                packets: Some(1_000 + i % 977),
                bits: Some(8_000_000 + i % 977),
                ..NewAnalyticsEvent::default()
            }
        })
        .collect();
    for chunk in rows.chunks(10_000) {
        store.save_analytics_events(chunk).await.unwrap();
    }
    let mut tx = store.begin().await.unwrap();
    let kinds = [
        EventType::Start,
        EventType::Advertise,
        EventType::End,
        EventType::Withdraw,
    ];
    for i in 0..EVENTS {
        let at = now - chrono::Duration::seconds(span * (EVENTS - i) / EVENTS);
        tx.insert_attack_event(&NewAttackEvent {
            prefix: Some("203.0.113.0/24".into()),
            attack_id: Some(format!("attack-{}", i / 4)),
            attack_vector: Some("UDP Flood".into()),
            ..NewAttackEvent::new(kinds[(i % 4) as usize], ActionTaken::Notified, at)
        })
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
    println!(
        "seeded {ROWS} analytics rows and {EVENTS} attack events in {:.1?}",
        t.elapsed()
    );

    println!("| view (median of {RUNS}) | time |");
    println!("|---|---|");
    let d = time(|| async {
        mt_control::status(&config, &store, now).await.unwrap();
    })
    .await;
    println!("| prefixes status (3 prefixes, dropped traffic over 15 min) | {d:.1?} |");
    for w in Window::ALL {
        let d = time(|| async {
            views::analytics(&store, w, now).await.unwrap();
        })
        .await;
        println!("| analytics {} (series + 4 rankings) | {d:.1?} |", w.name());
    }
    let d = time(|| async {
        views::attacks(&store, None, now - chrono::Duration::days(7), None, now)
            .await
            .unwrap();
    })
    .await;
    println!("| attacks, 7 days ({EVENTS} events into incidents) | {d:.1?} |");

    // Whole pages over HTTP (login once; the session cookie is reused).
    let clock = ManualClock::new(now);
    let shared: SharedClock = clock.shared();
    let state = dashboard::AppState::new(config.clone(), store.clone(), shared).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = tokio_util::sync::CancellationToken::new();
    tokio::spawn(dashboard::run(state, listener, shutdown.clone()));
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let form = http.get(format!("{base}/login")).send().await.unwrap();
    let login_cookie = cookie(&form);
    let html = form.text().await.unwrap();
    let at = html.find("name=\"csrf\" value=\"").unwrap() + 19;
    let csrf = html[at..at + 64].to_owned();
    let t = Instant::now();
    let r = http
        .post(format!("{base}/login"))
        .header("cookie", login_cookie)
        .form(&[
            ("csrf", csrf.as_str()),
            ("user", "bench"),
            ("password", "bench password long"),
        ])
        .send()
        .await
        .unwrap();
    let login = t.elapsed();
    let session = cookie(&r);
    for path in [
        "/",
        "/analytics?window=7d",
        "/attacks",
        "/webhooks",
        "/api/prefixes",
    ] {
        let d = time(|| async {
            let r = http
                .get(format!("{base}{path}"))
                .header("cookie", &session)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{path}");
            r.bytes().await.unwrap();
        })
        .await;
        println!("| GET {path} (whole response over loopback) | {d:.1?} |");
    }
    println!("| POST /login (argon2id check, one run) | {login:.1?} |");
    shutdown.cancel();
}
