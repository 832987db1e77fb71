//! Polls against cf-sim: splitting, idempotence, failures, gaps, legacy rows.

use cf_sim::{Endpoint, Fault};
use chrono::Utc;
use mt_cloudflare::graphql::DosdEvent;
use mt_common::timefmt::to_db;
use network_analytics::poll::LAST_END_KEY;
use serde::Deserialize;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_five_thousand_events_in_one_window_are_stored_once_each() {
    let h = Harness::new(vec![attack(2_500, 10)]).await;
    let report = h.poller.poll_once().await.unwrap();
    assert_eq!(report.fetched, 25_000);
    assert_eq!(report.new, 25_000);
    assert!(report.complete);
    assert!(
        report.queries >= 3,
        "the 10,000-row limit forced the window to be split: {report:?}"
    );
    assert!(report.queries <= h.poller.options.max_queries);
    assert_eq!(
        h.sqlite("SELECT COUNT(*) FROM network_analytics_events"),
        "25000"
    );
    assert_eq!(
        h.sqlite("SELECT COUNT(DISTINCT event_hash) FROM network_analytics_events"),
        "25000"
    );
    assert_eq!(
        h.sqlite("SELECT COUNT(*) FROM network_analytics_events WHERE notified_at IS NULL"),
        "0",
        "notified_at set with the summary"
    );
    let queued = h.poller.store.notifications(10).await.unwrap();
    assert_eq!(
        queued.len(),
        1,
        "one summary per poll, never one message per row"
    );
    assert_eq!(queued[0].kind, "analytics_summary");
    assert!(queued[0].text.contains("25000"), "{}", queued[0].text);
    // Columns mapped as the seed documents, Cloudflare's own source values kept without GeoIP.
    let row = h.sqlite("SELECT attack_vector, destination_ip, destination_port, protocol, colo_code, outcome, source_asn, source_asn_name, source_country FROM network_analytics_events LIMIT 1");
    let cols: Vec<_> = row.split('|').collect();
    assert_eq!(
        cols[..6],
        ["UDP Flood", "203.0.113.10", "53", "UDP", cols[4], "drop"]
    );
    assert!(
        cols[6].starts_with("645") && cols[7].starts_with("SIM-NET-") && cols[8].len() == 2,
        "{row}"
    );

    // The same window again: nothing new, nothing sent.
    let again = h.poller.poll_once().await.unwrap();
    assert_eq!((again.fetched, again.new), (25_000, 0));
    assert_eq!(h.poller.store.notifications(10).await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_failed_poll_followed_by_success_loses_nothing() {
    let h = Harness::new(vec![attack(100, 5)]).await;
    h.read_settings().await;
    h.sim.sim.inject(Endpoint::GraphQl, Fault::Html(502), 2);
    let err = h.poller.poll_once().await.unwrap_err();
    assert!(err.to_string().contains("502"), "{err}");
    assert_eq!(
        h.sqlite("SELECT COUNT(*) FROM network_analytics_events"),
        "0"
    );
    assert!(h.poller.store.state(LAST_END_KEY).await.unwrap().is_none());
    let report = h.poller.poll_once().await.unwrap();
    assert_eq!(report.new, 500);
    assert_eq!(h.poller.store.notifications(10).await.unwrap().len(), 1);
}

#[tokio::test]
async fn the_next_poll_covers_the_gap_since_the_last_success() {
    // Events 40 to 30 minutes ago: outside the 15-minute lookback.
    let old =
        cf_sim::TrafficSpec::attack("203.0.113.11".parse().unwrap(), -2400, -1800, 1000.0, 8.0)
            .sources(10);
    let h = Harness::new(vec![old]).await;
    let last = h.sim.sim.start() - chrono::Duration::minutes(41);
    h.poller
        .store
        .set_state(LAST_END_KEY, &to_db(last), Utc::now())
        .await
        .unwrap();
    let report = h.poller.poll_once().await.unwrap();
    assert_eq!(report.from, last);
    assert_eq!(report.new, 100, "10 one-minute buckets of 10 sources");
    let end = h.poller.store.state(LAST_END_KEY).await.unwrap().unwrap();
    assert_eq!(end, to_db(report.to));
}

#[tokio::test]
async fn a_query_budget_too_small_for_the_window_is_incomplete_and_polled_again() {
    let mut h = Harness::new(vec![attack(2_500, 10)]).await;
    h.poller.options.max_queries = 1;
    let report = h.poller.poll_once().await.unwrap();
    assert!(!report.complete);
    assert_eq!(report.queries, 1);
    assert_eq!(h.poller.metrics.incomplete.get(), 1);
    assert!(
        h.poller.store.state(LAST_END_KEY).await.unwrap().is_none(),
        "the window stays due"
    );
}

#[tokio::test]
async fn events_stored_by_the_original_suite_deduplicate() {
    let h = Harness::new(vec![attack(20, 2)]).await;
    // The original suite already stored one of the events (with its own hash recipe).
    let start = h.sim.sim.start();
    let fetched = h
        .poller
        .client
        .dosd_events(start - chrono::Duration::minutes(15), Utc::now(), 1000)
        .await
        .unwrap();
    let first = h.poller.to_row(&fetched.events[0]);
    h.sqlite(&format!(
        "INSERT INTO network_analytics_events (event_hash, attack_id, event_datetime, notified_at) VALUES ('{}', 'legacy', '2026-01-19T22:51:50Z', '2026-01-19 22:52:00')",
        first.event_hash
    ));
    let report = h.poller.poll_once().await.unwrap();
    assert_eq!((report.fetched, report.new), (40, 39));
    assert_eq!(
        h.sqlite("SELECT COUNT(*) FROM network_analytics_events"),
        "40"
    );
}

#[derive(Deserialize)]
struct Vector {
    dimensions_subset: serde_json::Map<String, serde_json::Value>,
    event_hash: String,
}

#[tokio::test]
async fn rows_are_hashed_with_the_original_recipe() {
    let h = Harness::new(vec![]).await;
    let vectors: Vec<Vector> = serde_json::from_str(
        &std::fs::read_to_string(fixture("network_analytics_event_hash_test_vectors.json"))
            .unwrap(),
    )
    .unwrap();
    for v in vectors {
        let row = h.poller.to_row(&DosdEvent {
            dimensions: v.dimensions_subset.clone(),
            packets: 1,
            bits: 8,
        });
        assert_eq!(row.event_hash, v.event_hash);
    }
}

#[tokio::test]
async fn a_disabled_dataset_sends_no_query_and_is_alerted_once() {
    let h = Harness::new(vec![attack(3, 5)]).await;
    h.sim.sim.set_dataset_settings(
        mt_cloudflare::graphql::EVENTS_DATASET,
        cf_sim::scenario::DatasetSettings {
            enabled: false,
            ..Default::default()
        },
    );
    for _ in 0..3 {
        let err = h.poller.poll_once().await.unwrap_err();
        assert!(err.to_string().contains("not enabled"), "{err}");
    }
    assert_eq!(h.sim.sim.graphql_queries(), 1, "only the settings read");
    assert_eq!(h.poller.datasets.usable_gauge(), 0.0);
    let kinds: Vec<String> = h
        .poller
        .store
        .notifications(100)
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.kind)
        .collect();
    assert_eq!(kinds, vec!["operator_alert".to_owned()]);
}

#[tokio::test]
async fn queries_stay_within_the_datasets_max_duration_and_page_size() {
    let h = Harness::new(vec![attack(3, 10)]).await;
    h.sim.sim.set_dataset_settings(
        mt_cloudflare::graphql::EVENTS_DATASET,
        cf_sim::scenario::DatasetSettings {
            max_duration: std::time::Duration::from_secs(240),
            max_page_size: 500,
            ..Default::default()
        },
    );
    // cf-sim refuses any query wider than 240 s or with a limit over 500: the poll of the
    // 15-minute lookback succeeds only by staying within both.
    let report = h.poller.poll_once().await.unwrap();
    assert!(report.complete, "{report:?}");
    assert!(
        report.queries >= 4,
        "15 minutes in 4-minute chunks: {report:?}"
    );
    assert_eq!(report.new, 30, "ten buckets of three sources");
    assert_eq!(h.poller.datasets.usable_gauge(), 1.0);
}
