//! GraphQL: calm-tracking attribution and dosd events.

use chrono::{TimeZone, Utc};
use ipnet::IpNet;
use mt_cloudflare::Error;
use mt_cloudflare::graphql::DroppedTrafficQuery;
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::common::*;

fn row(subnet: &str, system: &str, packets: u64, bits: u64) -> Value {
    json!({"dimensions": {"ipDestinationSubnet": subnet, "mitigationSystem": system},
           "sum": {"packets": packets, "bits": bits}})
}

fn answer(drops: Vec<Value>, latest: Option<&str>) -> Value {
    let latest: Vec<Value> = latest
        .map(|m| json!({"dimensions": {"datetimeMinute": m}}))
        .into_iter()
        .collect();
    json!({"data": {"viewer": {"accounts": [{"drops": drops, "latest": latest}]}}, "errors": null})
}

fn prefixes() -> Vec<IpNet> {
    [
        "203.0.113.0/24",
        "198.51.100.0/23",
        "2001:db8:1000::/48",
        "192.0.2.128/25",
    ]
    .iter()
    .map(|p| p.parse().unwrap())
    .collect()
}

/// A window of `minutes` from `start`, data wanted up to twice that far.
fn query<'a>(
    start: chrono::DateTime<Utc>,
    prefixes: &'a [IpNet],
    systems: &'a [String],
    minutes: i64,
    limit: u32,
) -> DroppedTrafficQuery<'a> {
    DroppedTrafficQuery {
        start,
        end: start + chrono::Duration::minutes(minutes),
        data_until: start + chrono::Duration::minutes(2 * minutes),
        probe_start: start,
        mitigation_systems: systems,
        prefixes,
        limit,
    }
}

fn systems() -> Vec<String> {
    vec!["dosd".into(), "flowtrackd".into()]
}

#[tokio::test]
async fn drops_are_attributed_by_real_cidr_containment() {
    let cf = Cf::start().await;
    let drops = vec![
        row("203.0.113.0/24", "dosd", 1000, 8_000_000),
        row("203.0.112.0/24", "dosd", 99_999, 1), // neighbour: never counts
        row("203.0.113.0/24", "magic-firewall", 50_000, 1), // not a configured system
        row("198.51.100.0/24", "flowtrackd", 10, 80), // inside the /23
        row("198.51.101.0/24", "dosd", 20, 160),  // inside the /23
        row("2001:db8:1000:5::/64", "flowtrackd", 7, 70), // IPv6 inside the /48
        row("2001:db8:1001::/64", "dosd", 5, 5),  // IPv6 neighbour
        row("192.0.2.0/24", "dosd", 3, 30),       // wider than the /25: counts (in doubt)
        row("not-a-subnet", "dosd", 1, 1),
    ];
    Mock::given(method("POST"))
        .and(path("/client/v4/graphql"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("date", "Mon, 19 Jan 2026 00:10:01 GMT")
                .set_body_json(answer(drops, Some("2026-01-19T00:09:00Z"))),
        )
        .expect(1)
        .mount(&cf.server)
        .await;
    let start = Utc.with_ymd_and_hms(2026, 1, 19, 0, 0, 0).unwrap();
    let (p, s) = (prefixes(), systems());
    let q = query(start, &p, &s, 5, 1000);
    let t = cf.client.dropped_traffic(&q).await.unwrap();

    let get = |p: &str| t.per_prefix[&p.parse::<IpNet>().unwrap()].clone();
    assert_eq!(get("203.0.113.0/24").packets, 1000.0);
    assert_eq!(get("203.0.113.0/24").bits, 8_000_000.0);
    assert_eq!(
        get("203.0.113.0/24").systems.iter().collect::<Vec<_>>(),
        vec!["dosd"]
    );
    assert_eq!(get("198.51.100.0/23").packets, 30.0);
    assert_eq!(get("198.51.100.0/23").systems.len(), 2);
    assert_eq!(get("2001:db8:1000::/48").packets, 7.0);
    assert_eq!(get("192.0.2.128/25").packets, 3.0);
    assert_eq!((t.rows, t.truncated, t.unparsed_rows), (9, false, 1));
    assert_eq!(
        t.latest_minute,
        Some(Utc.with_ymd_and_hms(2026, 1, 19, 0, 9, 0).unwrap())
    );
    assert_eq!(
        t.served_at,
        Some(Utc.with_ymd_and_hms(2026, 1, 19, 0, 10, 1).unwrap())
    );

    let sent: Value =
        serde_json::from_slice(&cf.server.received_requests().await.unwrap()[0].body).unwrap();
    let query = sent["query"].as_str().unwrap();
    for name in [
        "magicTransitNetworkAnalyticsAdaptiveGroups",
        "ipDestinationSubnet",
        "mitigationSystem",
        "datetime_geq",
        "datetime_leq",
        "outcome: \"drop\"",
        "sum_packets_DESC",
    ] {
        assert!(query.contains(name), "{name}");
    }
    // Neither the filter whose documented and schema values disagree nor a field the node
    // does not have.
    for absent in ["direction", "avg", "sampleInterval", "mitigationSystem:"] {
        assert!(!query.contains(absent), "{absent}");
    }
    assert_eq!(sent["variables"]["accountTag"], ACCOUNT);
    assert_eq!(sent["variables"]["start"], "2026-01-19T00:00:00Z");
    assert_eq!(sent["variables"]["end"], "2026-01-19T00:05:00Z");
    assert_eq!(sent["variables"]["until"], "2026-01-19T00:10:00Z");
    assert_eq!(sent["variables"]["probeStart"], "2026-01-19T00:00:00Z");
}

#[tokio::test]
async fn rows_without_a_system_count_and_malformed_sums_are_not_zero() {
    let cf = Cf::start().await;
    let drops = vec![
        // No mitigationSystem at all, and an empty one: both count (when in doubt, attack).
        json!({"dimensions": {"ipDestinationSubnet": "203.0.113.0/24"}, "sum": {"packets": 100, "bits": 800}}),
        row("203.0.113.0/24", "", 10, 80),
        // Numbers as strings are Cloudflare's too.
        json!({"dimensions": {"ipDestinationSubnet": "203.0.113.0/24", "mitigationSystem": "dosd"}, "sum": {"packets": "5", "bits": "40"}}),
        // A missing or unparsable sum is not 0: the prefix's totals are unknown.
        json!({"dimensions": {"ipDestinationSubnet": "198.51.100.0/24", "mitigationSystem": "dosd"}, "sum": {"packets": "many", "bits": 1}}),
        json!({"dimensions": {"ipDestinationSubnet": "198.51.101.0/24", "mitigationSystem": "dosd"}}),
    ];
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(answer(drops, Some("2026-01-19T00:09:00Z"))),
        )
        .mount(&cf.server)
        .await;
    let start = Utc.with_ymd_and_hms(2026, 1, 19, 0, 0, 0).unwrap();
    let (p, s) = (prefixes(), systems());
    let q = query(start, &p, &s, 5, 1000);
    let t = cf.client.dropped_traffic(&q).await.unwrap();
    let get = |p: &str| t.per_prefix[&p.parse::<IpNet>().unwrap()].clone();
    assert_eq!(get("203.0.113.0/24").packets, 115.0);
    assert_eq!(get("203.0.113.0/24").bits, 920.0);
    assert_eq!(get("203.0.113.0/24").malformed_rows, 0);
    assert!(
        get("203.0.113.0/24")
            .systems
            .contains(mt_cloudflare::graphql::NO_SYSTEM)
    );
    assert_eq!(get("198.51.100.0/23").malformed_rows, 2);
}

#[tokio::test]
async fn a_result_at_the_row_limit_is_reported_truncated() {
    let cf = Cf::start().await;
    let drops = vec![
        row("203.0.113.0/24", "dosd", 1, 1),
        row("203.0.113.0/24", "flowtrackd", 1, 1),
    ];
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(answer(drops, None)))
        .mount(&cf.server)
        .await;
    let start = Utc.with_ymd_and_hms(2026, 1, 19, 0, 0, 0).unwrap();
    let (p, s) = (prefixes(), systems());
    let q = query(start, &p, &s, 0, 2);
    let t = cf.client.dropped_traffic(&q).await.unwrap();
    assert!(t.truncated);
    assert_eq!(t.latest_minute, None, "no data at all");
}

#[tokio::test]
async fn a_200_carrying_errors_is_an_error_and_marks_the_budget_spent() {
    let cf = Cf::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(fixture("graphql_error_429.json")))
        .expect(1)
        .mount(&cf.server)
        .await;
    let start = Utc.with_ymd_and_hms(2026, 1, 19, 0, 0, 0).unwrap();
    let (p, s) = (prefixes(), systems());
    let q = query(start, &p, &s, 0, 10);
    let err = cf.client.dropped_traffic(&q).await.unwrap_err();
    assert!(matches!(err, Error::GraphQl { .. }), "{err:?}");
    assert!(err.is_rate_limited());
    assert!(err.to_string().contains("rate limiter budget depleted"));
    let held = cf.client.graphql_held_for().unwrap();
    assert!(
        held > std::time::Duration::from_secs(290),
        "{held:?}: Cloudflare's five-minute window"
    );
    // No burst of retries: the next query is not even sent while the hold lasts.
    let again = cf.client.dropped_traffic(&q).await.unwrap_err();
    assert!(matches!(again, Error::BudgetHold { .. }), "{again:?}");
    assert!(again.is_rate_limited());
    assert!(cf.sleeps().is_empty(), "no retry was slept for");
}

#[tokio::test]
async fn a_graphql_429_is_not_retried_and_holds_every_query() {
    let cf = Cf::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(429).set_body_json(
            json!({"errors": [{"message": "rate limiter budget depleted"}], "data": null}),
        ))
        .expect(1)
        .mount(&cf.server)
        .await;
    let start = Utc.with_ymd_and_hms(2026, 1, 19, 0, 0, 0).unwrap();
    let err = cf.client.dosd_events(start, start, 10).await.unwrap_err();
    assert_eq!(err.status(), Some(429));
    assert!(cf.sleeps().is_empty(), "a budget 429 is not retried");
    for _ in 0..3 {
        let held = cf.client.dosd_events(start, start, 10).await.unwrap_err();
        assert!(matches!(held, Error::BudgetHold { .. }), "{held:?}");
    }
    assert!(cf.client.graphql_held_for().unwrap() > std::time::Duration::from_secs(290));
    // The REST side is not held by GraphQL's budget.
    assert!(cf.client.rate_limited_for().is_none());
}

#[tokio::test]
async fn a_malformed_answer_is_an_error() {
    let cf = Cf::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"data": {"viewer": {"accounts": []}}})),
        )
        .mount(&cf.server)
        .await;
    let start = Utc.with_ymd_and_hms(2026, 1, 19, 0, 0, 0).unwrap();
    let (p, s) = (prefixes(), systems());
    let q = query(start, &p, &s, 0, 10);
    assert!(matches!(
        cf.client.dropped_traffic(&q).await.unwrap_err(),
        Error::Decode(_)
    ));
}

#[tokio::test]
async fn dosd_events_keep_every_dimension() {
    let cf = Cf::start().await;
    let mut fixture = fixture("graphql_network_analytics_response.json");
    let rows =
        fixture["data"]["viewer"]["accounts"][0]["dosdNetworkAnalyticsAdaptiveGroups"].take();
    let body = json!({"data": {"viewer": {"accounts": [{"events": rows}]}}, "errors": null});
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(body))
        .expect(2)
        .mount(&cf.server)
        .await;
    let start = Utc.with_ymd_and_hms(2025, 3, 14, 9, 25, 0).unwrap();
    let events = cf
        .client
        .dosd_events(start, start + chrono::Duration::minutes(5), 1000)
        .await
        .unwrap();
    assert_eq!(events.events.len(), 5);
    assert!(!events.truncated);
    assert_eq!(events.events[0].packets, 61_830_000);
    assert_eq!(events.events[0].bits, 494_640_000_000);
    assert_eq!(
        events.events[0].dimensions["attackId"],
        "8f14e45fceea4e1a9b2c3d4e5f6a7b8c"
    );
    assert_eq!(events.events[3].dimensions["tcpFlagsString"], "SYN");
    let truncated = cf.client.dosd_events(start, start, 5).await.unwrap();
    assert!(truncated.truncated);

    let sent: Value =
        serde_json::from_slice(&cf.server.received_requests().await.unwrap()[0].body).unwrap();
    let query = sent["query"].as_str().unwrap();
    for name in [
        "dosdNetworkAnalyticsAdaptiveGroups",
        "datetime_gt",
        "datetime_lt",
        "datetime_DESC",
        "ipSourceAddress",
        "sourceAsnName",
        "sourceCountry",
        "coloCity",
        "verdict",
    ] {
        assert!(query.contains(name), "{name}");
    }
}
