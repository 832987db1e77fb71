//! The Must-show of the simulator issue: the client round-trips advertise/withdraw, hits the
//! 15-minute 429, and reads a scripted attack for an IPv4 /24, a /23 and an IPv6 /48.

use std::sync::Arc;
use std::time::Duration;

use cf_sim::{PrefixSpec, Running, Scenario, Sim, TrafficSpec};
use chrono::Duration as Span;
use ipnet::IpNet;
use mt_cloudflare::graphql::DroppedTrafficQuery;
use mt_cloudflare::{Client, ClientOptions, RetryPolicy};
use secrecy::SecretString;

pub fn scenario() -> Scenario {
    let prefix = |id: &str, bgp: &str, cidr: &str, advertised: bool, ago: i64| PrefixSpec {
        id: id.into(),
        bgp_id: bgp.into(),
        cidr: cidr.parse().unwrap(),
        description: String::new(),
        advertised,
        changed_secs_ago: ago,
        locked: false,
    };
    let ip = |s: &str| s.parse().unwrap();
    Scenario {
        prefixes: vec![
            prefix("p24", "b24", "203.0.113.0/24", true, 1200),
            prefix("p23", "b23", "198.51.100.0/23", false, 86_400),
            prefix("p48", "b48", "2001:db8:1000::/48", true, 60),
            PrefixSpec {
                locked: true,
                ..prefix("plk", "blk", "192.0.2.0/24", true, 86_400)
            },
        ],
        traffic: vec![
            TrafficSpec::attack(ip("203.0.113.10"), -1200, -600, 50_000.0, 400.0),
            TrafficSpec::attack(ip("198.51.101.7"), -1200, -600, 20_000.0, 100.0).by("flowtrackd"),
            TrafficSpec::attack(ip("2001:db8:1000:1::5"), -1200, -300, 5_000.0, 40.0),
            TrafficSpec::attack(ip("203.0.112.5"), -1200, 0, 9_000_000.0, 9_000.0),
            TrafficSpec::attack(ip("203.0.113.20"), -1200, 0, 777.0, 1.0).by("magic-firewall"),
        ],
        ..Scenario::default()
    }
}

pub async fn start(scenario: Scenario) -> Running {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    Sim::new(scenario).serve(listener).await.unwrap()
}

pub fn client(sim: &Running, token: &str) -> Client {
    let config = mt_common::config::CloudflareConfig {
        account_id: Scenario::default().account_id,
        api_base_url: sim.api_base_url(),
        graphql_url: sim.graphql_url(),
        ..Default::default()
    };
    let options = ClientOptions {
        retry: RetryPolicy {
            delays: vec![Duration::from_millis(10)],
            max_retry_after: Duration::from_secs(1),
        },
        sleeper: Arc::new(|d| Box::pin(tokio::time::sleep(d))),
        ..ClientOptions::default()
    };
    Client::new(&config, &SecretString::from(token.to_owned()), options).unwrap()
}

#[tokio::test]
async fn advertise_and_withdraw_round_trip_with_the_15_minute_rules() {
    let sim = start(scenario()).await;
    let cf = client(&sim, "cf-sim-token");

    let listed = cf.list_account_bgp_prefixes().await.unwrap();
    let cidrs: Vec<_> = listed.iter().filter_map(|p| p.bgp.cidr.clone()).collect();
    assert_eq!(
        cidrs,
        [
            "203.0.113.0/24",
            "198.51.100.0/23",
            "2001:db8:1000::/48",
            "192.0.2.0/24"
        ]
    );

    // Advertised 20 minutes ago: the withdrawal goes through.
    let withdrawn = cf.set_advertised("p24", "b24", false).await.unwrap();
    assert!(!withdrawn.advertised());
    assert!(!cf.get_bgp_prefix("p24", "b24").await.unwrap().advertised());
    // Re-advertising at once is refused for 15 minutes: 429 / 1002.
    let err = cf.set_advertised("p24", "b24", true).await.unwrap_err();
    assert!(err.is_prefix_hold(), "{err}");
    assert!(
        err.to_string()
            .contains("withdrawn less than 15 minutes ago")
    );
    // Advertised a minute ago: a withdrawal is refused too.
    let err = cf.set_advertised("p48", "b48", false).await.unwrap_err();
    assert!(
        err.is_prefix_hold() && err.to_string().contains("advertised less than 15 minutes"),
        "{err}"
    );
    // Withdrawn long ago: advertising works, and its time is recorded.
    let advertised = cf.set_advertised("p23", "b23", true).await.unwrap();
    assert!(advertised.advertised());
    let age = chrono::Utc::now() - advertised.advertised_modified_at().unwrap();
    assert!(age < Span::seconds(5), "{age}");
    // Locked.
    let err = cf.set_advertised("plk", "blk", false).await.unwrap_err();
    assert_eq!((err.status(), err.codes()), (Some(400), vec![1000]));

    let statuses: Vec<_> = sim
        .sim
        .patches()
        .iter()
        .map(|p| (p.bgp_id.clone(), p.status))
        .collect();
    assert_eq!(
        statuses,
        [
            ("b24".into(), 200),
            ("b24".into(), 429),
            ("b48".into(), 429),
            ("b23".into(), 200),
            ("blk".into(), 400)
        ]
    );

    let err = client(&sim, "wrong").list_prefixes().await.unwrap_err();
    assert!(err.is_auth(), "{err}");
}

#[tokio::test]
async fn a_scripted_attack_is_read_per_prefix_for_v4_24_v4_23_and_v6_48() {
    let sim = start(scenario()).await;
    let cf = client(&sim, "cf-sim-token");
    let start = sim.sim.start();
    let prefixes: Vec<IpNet> = ["203.0.113.0/24", "198.51.100.0/23", "2001:db8:1000::/48"]
        .iter()
        .map(|p| p.parse().unwrap())
        .collect();
    let systems = vec!["dosd".to_owned(), "flowtrackd".to_owned()];
    let get = |t: &mt_cloudflare::graphql::DroppedTraffic, p: &str| {
        t.per_prefix[&p.parse::<IpNet>().unwrap()].packets
    };

    // During the attack: eight full one-minute buckets (the end is exclusive).
    let during = DroppedTrafficQuery {
        start: start - Span::seconds(1140),
        end: start - Span::seconds(660),
        data_until: chrono::Utc::now(),
        probe_start: start - Span::seconds(1140),
        mitigation_systems: &systems,
        prefixes: &prefixes,
        limit: 1000,
    };
    let t = cf.dropped_traffic(&during).await.unwrap();
    assert_eq!(
        get(&t, "203.0.113.0/24"),
        50_000.0 * 60.0 * 8.0,
        "neighbour and magic-firewall drops excluded"
    );
    assert_eq!(
        get(&t, "198.51.100.0/23"),
        20_000.0 * 60.0 * 8.0,
        "a /24 inside the /23"
    );
    assert_eq!(get(&t, "2001:db8:1000::/48"), 5_000.0 * 60.0 * 8.0);
    assert!(!t.truncated);
    // Pipeline lag (60 s): the newest bucket is at most now - 60 s, and the one before start
    // is always delivered by now.
    let latest = t.latest_minute.unwrap();
    assert!(latest >= start - Span::seconds(60), "{latest}");
    assert!(latest <= chrono::Utc::now() - Span::seconds(60), "{latest}");
    assert!(t.served_at.is_some());

    // After the IPv4 attacks: calm there, the IPv6 one runs until -300 s.
    let after = DroppedTrafficQuery {
        start: start - Span::seconds(540),
        end: start - Span::seconds(240),
        ..during.clone()
    };
    let t = cf.dropped_traffic(&after).await.unwrap();
    assert_eq!(get(&t, "203.0.113.0/24"), 0.0);
    assert_eq!(get(&t, "198.51.100.0/23"), 0.0);
    assert_eq!(get(&t, "2001:db8:1000::/48"), 5_000.0 * 60.0 * 4.0);

    // A limit smaller than the rows is visible as truncation.
    let small = DroppedTrafficQuery {
        limit: 2,
        ..during.clone()
    };
    assert!(cf.dropped_traffic(&small).await.unwrap().truncated);
}

#[tokio::test]
async fn dosd_events_come_with_every_dimension() {
    let mut scenario = scenario();
    scenario.traffic.push(
        TrafficSpec::attack("203.0.113.99".parse().unwrap(), -600, -300, 1000.0, 8.0).sources(50),
    );
    let sim = start(scenario).await;
    let cf = client(&sim, "cf-sim-token");
    let start = sim.sim.start();
    let events = cf
        .dosd_events(
            start - Span::seconds(601),
            start - Span::seconds(299),
            10_000,
        )
        .await
        .unwrap();
    let ours: Vec<_> = events
        .events
        .iter()
        .filter(|e| e.dimensions["ipDestinationAddress"] == "203.0.113.99")
        .collect();
    assert_eq!(ours.len(), 5 * 50, "five buckets of fifty sources");
    let e = &ours[0];
    for dim in [
        "datetime",
        "attackId",
        "attackVector",
        "ipSourceAddress",
        "sourceAsn",
        "sourceAsnName",
        "sourceCountry",
        "destinationPort",
        "coloCode",
        "coloCity",
    ] {
        assert!(!e.dimensions[dim].is_null(), "{dim}");
    }
    let truncated = cf
        .dosd_events(start - Span::seconds(601), start - Span::seconds(299), 100)
        .await
        .unwrap();
    assert!(truncated.truncated);
    assert_eq!(truncated.events.len(), 100);
}

#[tokio::test]
async fn the_most_recent_buckets_are_partial() {
    let mut scenario = scenario();
    scenario.traffic = vec![TrafficSpec::attack(
        "203.0.113.50".parse().unwrap(),
        -600,
        600,
        1_000.0,
        8.0,
    )];
    let sim = start(scenario).await;
    let cf = client(&sim, "cf-sim-token");
    let start = sim.sim.start();
    let prefixes: Vec<IpNet> = vec!["203.0.113.0/24".parse().unwrap()];
    let systems = vec!["dosd".to_owned()];
    let q = DroppedTrafficQuery {
        start: start - Span::seconds(240),
        end: start,
        data_until: chrono::Utc::now(),
        probe_start: start - Span::seconds(240),
        mitigation_systems: &systems,
        prefixes: &prefixes,
        limit: 1000,
    };
    let packets = cf.dropped_traffic(&q).await.unwrap().per_prefix[&prefixes[0]].packets;
    // Four delivered one-minute buckets (lag 60 s); those within the last three minutes count
    // half, so the total is less than four full minutes but at least three.
    let full_minute = 1_000.0 * 60.0;
    assert!(packets < 4.0 * full_minute, "{packets}");
    assert!(packets >= 3.0 * full_minute, "{packets}");
}

#[tokio::test]
async fn an_injected_clock_drives_the_timeline_and_the_15_minute_rule() {
    let clock = mt_common::ManualClock::new(chrono::Utc::now());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sim = Sim::with_clock(scenario(), clock.shared())
        .serve(listener)
        .await
        .unwrap();
    let cf = client(&sim, "cf-sim-token");
    let start = sim.sim.start();

    // An attack starting ten minutes into the timeline is not visible until the clock gets
    // there (plus the pipeline lag).
    sim.sim.add_traffic(TrafficSpec::attack(
        "203.0.113.77".parse().unwrap(),
        600,
        1200,
        2_000.0,
        16.0,
    ));
    let prefixes: Vec<IpNet> = vec!["203.0.113.0/24".parse().unwrap()];
    let systems = vec!["dosd".to_owned()];
    let window = |now: chrono::DateTime<chrono::Utc>| DroppedTrafficQuery {
        start: start + Span::seconds(600),
        end: start + Span::seconds(840),
        data_until: now,
        probe_start: start + Span::seconds(600),
        mitigation_systems: &systems,
        prefixes: &prefixes,
        limit: 1000,
    };
    let early = cf.dropped_traffic(&window(sim.sim.now())).await.unwrap();
    assert_eq!(early.per_prefix[&prefixes[0]].packets, 0.0);
    clock.advance(Span::seconds(1200));
    let later = cf.dropped_traffic(&window(sim.sim.now())).await.unwrap();
    assert_eq!(
        later.per_prefix[&prefixes[0]].packets,
        2_000.0 * 60.0 * 4.0,
        "four full buckets in [600, 840) s"
    );

    // The 15-minute rule follows the clock too.
    cf.set_advertised("p24", "b24", false).await.unwrap();
    assert!(
        cf.set_advertised("p24", "b24", true)
            .await
            .unwrap_err()
            .is_prefix_hold()
    );
    clock.advance(Span::minutes(15));
    assert!(
        cf.set_advertised("p24", "b24", true)
            .await
            .unwrap()
            .advertised()
    );
}
