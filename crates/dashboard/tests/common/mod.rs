//! Shared by the handler tests and the browser test: a fake Cloudflare (cf-sim) on loopback, a
//! config with two users, and a database seeded through the real webhook receiver plus the
//! store's own writers (what autowithdraw and network-analytics would have written).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use cf_sim::{PrefixSpec, Running, Scenario, Sim};
use chrono::{DateTime, Duration, Utc};
use mt_common::SharedClock;
use mt_common::config::Config;
use mt_store::{CalmUpdate, NewAnalyticsEvent, PrefixState, Store, event_hash};

pub const OPERATOR: (&str, &str) = ("alice", "alice-operator-password");
pub const VIEWER: (&str, &str) = ("victor", "victor-viewer-password");
pub const WEBHOOK_SECRET: &str = "test-webhook-secret";
pub const CF_TOKEN: &str = "cf-sim-token";

/// Under attack, advertised (cf-sim: changed 20 minutes ago).
pub const ATTACKED: &str = "203.0.113.0/24";
/// Advertised for a day, calm for 5 minutes: counting down to automatic withdrawal.
pub const CALM: &str = "198.51.100.0/23";
/// Advertised a minute ago: Cloudflare refuses a withdrawal (15-minute hold).
pub const FRESH: &str = "2001:db8:1000::/48";

/// The stored-XSS attempt: a policy name that would run script if rendered raw.
pub const XSS_POLICY: &str =
    "<script>document.title='pwned'</script><img src=x onerror=\"document.title='pwned'\">";

pub async fn start_sim() -> Running {
    let prefix = |id: &str, cidr: &str, ago: i64| PrefixSpec {
        id: id.into(),
        bgp_id: format!("b-{id}"),
        cidr: cidr.parse().unwrap(),
        description: String::new(),
        advertised: true,
        changed_secs_ago: ago,
        locked: false,
    };
    let scenario = Scenario {
        prefixes: vec![
            prefix("p24", ATTACKED, 1200),
            prefix("p23", CALM, 86_400),
            prefix("p48", FRESH, 60),
        ],
        ..Scenario::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    Sim::new(scenario).serve(listener).await.unwrap()
}

/// The config file text; `listen` is the dashboard's address.
pub fn config_text(dir: &Path, sim: &Running, listen: SocketAddr) -> String {
    let hash = |pw: &str| mt_control::password::hash(pw).unwrap();
    let mut text = format!(
        r#"[database]
path = "{db}"
[cloudflare]
account_id = "{account}"
api_base_url = "{api}"
graphql_url = "{gql}"
[webhook]
listen = "127.0.0.1:0"
archive_dir = "{archive}"
[telegram]
enabled = false
chat_id = "-100"
[network_analytics]
lookback = "15m"
[dashboard]
listen = "{listen}"
login_max_failures = 3
[[dashboard.users]]
name = "{op}"
password_hash = "{op_hash}"
role = "operator"
[[dashboard.users]]
name = "{viewer}"
password_hash = "{viewer_hash}"
role = "viewer"
"#,
        db = dir.join("mt.db").display(),
        account = Scenario::default().account_id,
        api = sim.api_base_url(),
        gql = sim.graphql_url(),
        archive = dir.join("webhooks").display(),
        op = OPERATOR.0,
        op_hash = hash(OPERATOR.1),
        viewer = VIEWER.0,
        viewer_hash = hash(VIEWER.1),
    );
    for (id, cidr, desc) in [
        ("p24", ATTACKED, "Hosting customers"),
        ("p23", CALM, "Access network"),
        ("p48", FRESH, "IPv6 core"),
    ] {
        text.push_str(&format!(
            "[[prefixes]]\ncidr = \"{cidr}\"\nprefix_id = \"{id}\"\nbgp_prefix_id = \"b-{id}\"\ndescription = \"{desc}\"\n"
        ));
    }
    text
}

pub fn env() -> Vec<(String, String)> {
    vec![
        ("MT_CLOUDFLARE_API_TOKEN".into(), CF_TOKEN.into()),
        ("MT_WEBHOOK_SECRET".into(), WEBHOOK_SECRET.into()),
    ]
}

pub fn write_config(dir: &Path, sim: &Running, listen: SocketAddr) -> (PathBuf, Config) {
    let path = dir.join("config.toml");
    let text = config_text(dir, sim, listen);
    std::fs::write(&path, &text).unwrap();
    let config = Config::from_toml_str(&text, &path, env()).unwrap();
    (path, config)
}

/// Seeds the database the way the daemons would: webhooks through the real receiver (one with
/// the XSS policy name), autowithdraw's judgement, network analytics rows.
pub async fn seed(config: &Config, store: &Store, clock: SharedClock, now: DateTime<Utc>) {
    // 1. Webhooks through mt-webhook-receiver's own code, over loopback.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    // Its own pool: the receiver closes its store when it stops.
    let receiver_store = Store::open(&mt_store::OpenOptions::from_config(&config.database))
        .await
        .unwrap();
    let daemon = webhook_receiver::Daemon {
        config: config.clone(),
        store: receiver_store,
        clock,
        secret: Some(WEBHOOK_SECRET.to_owned().into()),
        sender: mt_notify::SenderOptions::default(),
    };
    let receiver = tokio::spawn(webhook_receiver::run(daemon, listener, shutdown.clone()));
    let http = reqwest::Client::new();
    let url = format!("http://{addr}{}", config.webhook.path);
    let target: IpAddr = "203.0.113.10".parse().unwrap();
    let mut start = cf_sim::webhook::attack_start("attack-xss-1", target, 250_000, 2_000);
    start["policy_name"] = XSS_POLICY.into();
    start["name"] = XSS_POLICY.into();
    for body in [
        start,
        cf_sim::webhook::auto_advertisement(&[(ATTACKED, "advertised")]),
    ] {
        let (status, answer) = cf_sim::webhook::emit(&http, &url, WEBHOOK_SECRET, &body)
            .await
            .unwrap();
        assert_eq!(status, 200, "{answer}");
    }
    shutdown.cancel();
    receiver.await.unwrap().unwrap();

    // 2. What mt-autowithdraw would have judged.
    let mut tx = store.begin().await.unwrap();
    tx.upsert_prefix_calm_status(&CalmUpdate {
        prefix: ATTACKED,
        advertised: true,
        under_attack: true,
        calm_since: None,
        last_attack_packets: 250_000,
        last_attack_mbps: 2_000.0,
        mitigation_systems: "dosd",
        updated_at: now - Duration::seconds(40),
    })
    .await
    .unwrap();
    tx.upsert_prefix_calm_status(&CalmUpdate {
        prefix: CALM,
        advertised: true,
        under_attack: false,
        calm_since: Some(now - Duration::minutes(5)),
        last_attack_packets: 0,
        last_attack_mbps: 0.0,
        mitigation_systems: "",
        updated_at: now - Duration::seconds(30),
    })
    .await
    .unwrap();
    tx.save_prefix_state(
        &PrefixState {
            prefix: CALM.into(),
            advertised: true,
            advertised_modified_at: Some(now - Duration::days(1)),
            calm_since: Some(now - Duration::minutes(5)),
            ..PrefixState::default()
        },
        now,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();

    // 3. What mt-network-analytics would have stored: drops towards the attacked prefix.
    let events: Vec<NewAnalyticsEvent> = (0..6)
        .map(|i| {
            let at = now - Duration::minutes(2 + i);
            let dims = serde_json::json!({
                "datetime": at.to_rfc3339(),
                "attackId": "attack-xss-1",
                "ipSourceAddress": format!("192.0.2.{}", 10 + i),
                "ipDestinationAddress": "203.0.113.10",
                "destinationPort": 53,
            });
            NewAnalyticsEvent {
                event_hash: event_hash(&dims),
                attack_id: Some("attack-xss-1".into()),
                event_datetime: Some(at),
                attack_vector: Some(if i % 2 == 0 { "UDP Flood" } else { "SYN Flood" }.into()),
                source_ip: Some(format!("192.0.2.{}", 10 + i)),
                source_asn: Some(64_500 + i % 3),
                source_asn_name: Some(format!("EXAMPLE-AS-{}", i % 3)),
                source_country: Some(["NL", "US", "BR"][(i % 3) as usize].into()),
                destination_ip: Some("203.0.113.10".into()),
                destination_port: Some(53),
                packets: Some(1_000 * (i + 1)),
                bits: Some(8_000_000 * (i + 1)),
                ..NewAnalyticsEvent::default()
            }
        })
        .collect();
    store.save_analytics_events(&events).await.unwrap();
}
