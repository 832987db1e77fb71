//! The dashboard's aggregates: ranges over both stored time forms (ours and the legacy ISO
//! `…Z`), rankings, buckets, and the audit log.

use chrono::{DateTime, Duration, TimeZone, Utc};
use mt_store::{Dimension, NewAudit};

use crate::common::{TestDb, sqlite3};

fn at(h: u32, m: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 20, h, m, 0)
        .single()
        .unwrap()
}

#[tokio::test]
async fn rankings_and_series_read_both_time_forms_and_respect_the_window() {
    let db = TestDb::new();
    let store = db.open().await;
    // Rows as the original suite (ISO with Z) and as we store them; one outside the window
    // on the same day (a plain text comparison would count the ISO form: 'T' > ' ').
    sqlite3(
        &db.path,
        "list",
        "INSERT INTO network_analytics_events (event_hash, event_datetime, attack_vector, source_asn, \
         source_asn_name, source_country, destination_ip, packets, bits) VALUES \
         ('h1', '2026-11-20T10:05:00Z', 'UDP Flood', 64500, 'AS-A', 'NL', '203.0.113.10', 100, 800), \
         ('h2', '2026-11-20 10:20:00', 'UDP Flood', 64501, 'AS-B', 'US', '203.0.113.11', 50, 400), \
         ('h3', '2026-11-20 10:40:00', 'SYN Flood', 64500, 'AS-A', 'NL', '203.0.113.10', 70, 560), \
         ('h4', '2026-11-20T08:59:00Z', 'ACK Flood', 64502, 'AS-C', 'BR', '203.0.113.12', 999, 9), \
         ('h5', '2026-11-19 10:30:00', 'ACK Flood', 64502, 'AS-C', 'BR', '203.0.113.12', 999, 9);",
    );
    let since = at(9, 0);
    let vectors = store
        .analytics_top(Dimension::Vector, since, 10)
        .await
        .unwrap();
    let got: Vec<(&str, i64)> = vectors
        .iter()
        .map(|r| (r.key.as_str(), r.packets))
        .collect();
    assert_eq!(got, [("UDP Flood", 150), ("SYN Flood", 70)]);
    let asns = store
        .analytics_top(Dimension::SourceAsn, since, 10)
        .await
        .unwrap();
    assert_eq!(
        (
            asns[0].key.as_str(),
            asns[0].label.as_deref(),
            asns[0].packets,
            asns[0].events
        ),
        ("64500", Some("AS-A"), 170, 2)
    );
    let countries = store
        .analytics_top(Dimension::SourceCountry, since, 1)
        .await
        .unwrap();
    assert_eq!(countries.len(), 1, "limit");
    let targets = store
        .analytics_top(Dimension::Target, since, 10)
        .await
        .unwrap();
    assert_eq!(targets[0].key, "203.0.113.10");

    let series = store.analytics_series(since, 1800).await.unwrap();
    let got: Vec<(i64, i64)> = series.iter().map(|p| (p.bucket, p.packets)).collect();
    assert_eq!(
        got,
        [(at(10, 0).timestamp(), 150), (at(10, 30).timestamp(), 70)]
    );

    let dropped = store.dropped_by_destination(at(10, 10)).await.unwrap();
    let mut got: Vec<(String, i64)> = dropped
        .into_iter()
        .map(|d| (d.destination_ip, d.packets))
        .collect();
    got.sort();
    assert_eq!(
        got,
        [("203.0.113.10".into(), 70), ("203.0.113.11".into(), 50)]
    );

    let events = store
        .attack_events_between(Some(at(0, 0)), None, Some("203.0.113.0/24"), 10)
        .await
        .unwrap();
    assert!(events.is_empty());

    // Attack events in a range, both forms, bounds inclusive to the second.
    sqlite3(
        &db.path,
        "list",
        "INSERT INTO attack_events (event_type, prefix, created_at) VALUES \
         ('START', '203.0.113.0/24', '2026-11-20T09:59:59Z'), \
         ('END', '203.0.113.0/24', '2026-11-20T10:00:00.5Z'), \
         ('START', '203.0.113.0/24', '2026-11-20 10:30:00'), \
         ('END', '203.0.113.0/24', '2026-11-20 11:00:00'), \
         ('START', '203.0.113.0/24', '2026-11-20T11:00:01Z');",
    );
    let events = store
        .attack_events_between(Some(at(10, 0)), Some(at(11, 0)), None, 10)
        .await
        .unwrap();
    let got: Vec<&str> = events
        .iter()
        .map(|e| e.created_at.as_deref().unwrap())
        .collect();
    assert_eq!(
        got,
        [
            "2026-11-20T10:00:00.5Z",
            "2026-11-20 10:30:00",
            "2026-11-20 11:00:00"
        ]
    );
}

#[tokio::test]
async fn the_audit_log_keeps_every_action_newest_first() {
    let db = TestDb::new();
    let store = db.open().await;
    for (i, action) in ["pin", "withdraw"].into_iter().enumerate() {
        store
            .audit(&NewAudit {
                at: at(10, 0) + Duration::minutes(i as i64),
                actor: "alice",
                via: "dashboard",
                action,
                prefix: Some("203.0.113.0/24"),
                detail: None,
                outcome: "ok",
            })
            .await
            .unwrap();
    }
    let rows = store.audit_log(10).await.unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(
        (rows[0].action.as_str(), rows[0].at.as_str()),
        ("withdraw", "2026-11-20 10:01:00")
    );
    // An operator can read it with sqlite3 as any other table.
    let out = sqlite3(
        &db.path,
        "list",
        "SELECT actor, via, action FROM audit_log ORDER BY id;",
    );
    assert_eq!(out, "alice|dashboard|pin\nalice|dashboard|withdraw\n");
}
