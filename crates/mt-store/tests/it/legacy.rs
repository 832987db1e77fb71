//! Adopting a database created by the original Python suite (SPEC §5).

use std::path::Path;

use mt_store::{Error, NewAnalyticsEvent, OpenOptions, Store, event_hash};
use serde_json::json;

use crate::common::{TestDb, fixture, sqlite3};

const LEGACY_TABLES: &[&str] = &[
    "pending_withdrawals",
    "withdrawal_history",
    "attack_events",
    "webhook_events",
    "network_analytics_events",
];

/// Rows in every legacy table, including the quirks the original suite left behind: a legacy
/// `withdraw_method`, text in an INTEGER column, ISO `…Z` times, defaulted `notified_at`.
const LEGACY_ROWS: &str = r#"
INSERT INTO pending_withdrawals (prefix, attack_id, withdraw_after, status, retry_count)
  VALUES ('185.54.82.0/24', 'cf-atk-789', '2026-01-19 00:15:00', 'pending', 0);
INSERT INTO pending_withdrawals (prefix, withdraw_after, status, retry_count, last_error)
  VALUES ('185.54.83.0/24', '2026-01-19T00:20:00Z', 'failed', 5, 'API Error: rate limit exceeded');
INSERT INTO withdrawal_history (prefix, attack_id, advertised_at, attack_ended_at, withdrawn_at,
  attack_duration_seconds, protection_duration_seconds, withdraw_method, status, notes)
  VALUES ('185.54.82.0/24', 'cf-atk-1', '2026-01-18 22:59:00', '2026-01-18 23:05:00',
          '2026-01-18 23:15:00', 360, 960, 'autowithdraw_daemon', 'success', 'legacy method'),
         ('185.54.80.0/24', NULL, NULL, NULL, '2026-01-19 00:30:15', NULL, 5, 'immediate', 'success', NULL),
         ('185.54.81.0/24', 'cf-atk-2', NULL, NULL, '2026-01-19 00:31:00', NULL, NULL, 'auto_scheduled', 'failed', 'rate limit exceeded');
INSERT INTO attack_events (event_type, alert_type, attack_id, prefix, target_ip, target_port,
  packets_per_second, megabits_per_second, action_taken, raw_payload, created_at)
  VALUES ('START', 'advanced_ddos_attack_l4_alert', 'cf-atk-1', '185.54.82.0/24', '185.54.82.10', '',
          '12345', '99.5', 'mitigating', '{"alert_type":"advanced_ddos_attack_l4_alert"}', '2026-01-18 22:59:00'),
         ('END', 'advanced_ddos_attack_l4_alert', 'cf-atk-1', '185.54.82.0/24', '185.54.82.10', 443,
          NULL, NULL, 'notified_autowithdraw_handles', NULL, '2026-01-18 23:05:00'),
         ('WITHDRAW', NULL, 'cf-atk-1', '185.54.82.0/24', NULL, NULL, NULL, NULL, 'withdrawn_auto', NULL, '2026-01-18 23:15:00');
INSERT INTO webhook_events (received_at, alert_type, event_state, alert_id, policy_id, target_ip,
  target_prefix, source_ip, action_taken, payload)
  VALUES ('2026-01-18 22:59:00', 'advanced_ddos_attack_l4_alert', 'ALERT_STATE_EVENT_START', 'cf-atk-1',
          'pol-1', '185.54.82.10', '185.54.82.0/24', '198.51.100.7', 'received', '{"a":1}'),
         ('2026-01-18 23:05:00', 'advanced_ddos_attack_l4_alert', 'ALERT_STATE_EVENT_END', 'cf-atk-1',
          'pol-1', '185.54.82.10', '185.54.82.0/24', '198.51.100.7', 'imported', '{"a":2}'),
         ('2026-01-18 23:06:00', 'incident_alert', NULL, 'inc-77', NULL, NULL, NULL, NULL, 'received', '{"b":1}');
INSERT INTO network_analytics_events (event_hash, attack_id, event_datetime, attack_vector, source_ip,
  source_port, destination_ip, destination_port, protocol, packets, bits, outcome, raw_data)
  VALUES ('b57a959bb7e12ff033854770a90cbe3a', 'k9z3t-xx1g6wwhgqngq523mp0nr', '2026-01-19T22:51:50Z',
          'SYN Flood', '103.118.76.198', 4242, '185.54.82.4', 0, 'TCP', 1000, 8000000, 'drop', '{}');
"#;

fn make_legacy_db(path: &Path) {
    let schema = std::fs::read_to_string(fixture("legacy_schema.sql")).expect("legacy schema");
    sqlite3(path, "list", &schema);
    sqlite3(path, "list", LEGACY_ROWS);
    assert_eq!(
        sqlite3(path, "list", "PRAGMA journal_mode").trim(),
        "delete"
    );
}

fn columns(path: &Path, table: &str) -> Vec<String> {
    sqlite3(
        path,
        "list",
        &format!("SELECT name FROM pragma_table_info('{table}')"),
    )
    .lines()
    .map(str::to_owned)
    .collect()
}

/// Every legacy row of every legacy table, values quoted with their storage class.
fn dump(path: &Path, legacy_columns: &[(String, Vec<String>)]) -> String {
    legacy_columns
        .iter()
        .map(|(table, cols)| {
            let body = sqlite3(
                path,
                "quote",
                &format!("SELECT {} FROM {table} ORDER BY id", cols.join(", ")),
            );
            format!("== {table}\n{body}")
        })
        .collect()
}

fn indexes(path: &Path) -> Vec<String> {
    sqlite3(
        path,
        "list",
        "SELECT name FROM sqlite_master WHERE type = 'index' AND name NOT LIKE 'sqlite_%' ORDER BY name",
    )
    .lines()
    .map(str::to_owned)
    .collect()
}

#[tokio::test]
async fn legacy_database_is_adopted_in_place_without_touching_a_row() {
    let db = TestDb::new();
    make_legacy_db(&db.path);
    let legacy_columns: Vec<(String, Vec<String>)> = LEGACY_TABLES
        .iter()
        .map(|t| (t.to_string(), columns(&db.path, t)))
        .collect();
    let before = dump(&db.path, &legacy_columns);
    assert!(before.contains("'autowithdraw_daemon'"), "{before}");

    let store = db.open().await;
    assert_eq!(store.schema().applied, (1..=14).collect::<Vec<i64>>());
    assert_eq!(
        store.schema().added_columns,
        vec![
            "network_analytics_events.source_asn",
            "network_analytics_events.source_asn_name",
            "network_analytics_events.source_country",
        ]
    );
    assert_eq!(
        dump(&db.path, &legacy_columns),
        before,
        "a legacy row changed"
    );

    // New columns and tables exist; both index families coexist.
    let na = columns(&db.path, "network_analytics_events");
    for c in ["source_asn", "source_asn_name", "source_country"] {
        assert!(na.contains(&c.to_string()), "{c} missing: {na:?}");
    }
    assert!(columns(&db.path, "webhook_events").contains(&"payload_sha256".to_string()));
    // The original suite archived its own webhooks: none waits for our archive writer.
    assert_eq!(store.archive_backlog().await.unwrap().rows, 0);
    assert!(!columns(&db.path, "prefix_calm_status").is_empty());
    let idx = indexes(&db.path);
    for name in [
        "idx_analytics_attack_id",
        "idx_analytics_datetime",
        "idx_network_analytics_hash",
        "idx_network_analytics_datetime",
        "idx_network_analytics_attack_id",
        "idx_pending_unique",
        "idx_calm_prefix",
    ] {
        assert!(idx.contains(&name.to_string()), "{name} missing: {idx:?}");
    }
    assert_eq!(
        sqlite3(&db.path, "list", "PRAGMA journal_mode").trim(),
        "wal"
    );

    // Legacy rows are read as they are, quirks included.
    let history = store.withdrawal_history(10).await.expect("history");
    assert_eq!(history.len(), 3);
    assert_eq!(
        history[2].withdraw_method.as_deref(),
        Some("autowithdraw_daemon")
    );
    let events = store
        .attack_events(10, Some("START"))
        .await
        .expect("events");
    assert_eq!(events.len(), 1);
    assert_eq!(
        events[0].target_port, None,
        "'' in an INTEGER column reads as absent"
    );
    assert_eq!(events[0].packets_per_second.as_deref(), Some("12345"));

    // An event the original suite stored deduplicates against the same event fetched again.
    let dims = json!({
        "datetime": "2026-01-19T22:51:50Z",
        "attackId": "k9z3t-xx1g6wwhgqngq523mp0nr",
        "ipSourceAddress": "103.118.76.198",
        "ipDestinationAddress": "185.54.82.4",
        "destinationPort": 0
    });
    let again = NewAnalyticsEvent {
        event_hash: event_hash(&dims),
        ..Default::default()
    };
    assert!(
        store
            .save_analytics_events(&[again])
            .await
            .expect("insert")
            .is_empty()
    );
    store.close().await;

    // Opening again is a no-op.
    let schema_rows = sqlite3(&db.path, "quote", "SELECT * FROM mt_schema_migrations");
    let store = db.open().await;
    assert!(store.schema().applied.is_empty());
    assert!(store.schema().added_columns.is_empty());
    assert_eq!(dump(&db.path, &legacy_columns), before);
    assert_eq!(
        sqlite3(&db.path, "quote", "SELECT * FROM mt_schema_migrations"),
        schema_rows
    );
}

#[tokio::test]
async fn hand_patched_legacy_database_with_some_new_columns_is_completed() {
    let db = TestDb::new();
    make_legacy_db(&db.path);
    sqlite3(
        &db.path,
        "list",
        "ALTER TABLE network_analytics_events ADD COLUMN source_asn INTEGER;
         CREATE TABLE prefix_calm_status (id INTEGER PRIMARY KEY AUTOINCREMENT, prefix TEXT UNIQUE NOT NULL,
           advertised BOOLEAN DEFAULT 0, under_attack BOOLEAN DEFAULT 0, calm_since DATETIME,
           last_attack_packets INTEGER DEFAULT 0, last_attack_mbps REAL DEFAULT 0,
           mitigation_systems TEXT, updated_at DATETIME DEFAULT CURRENT_TIMESTAMP);
         INSERT INTO prefix_calm_status (prefix, advertised, under_attack) VALUES ('185.54.82.0/24', 1, 0);",
    );
    let store = db.open().await;
    assert_eq!(
        store.schema().added_columns,
        vec![
            "network_analytics_events.source_asn_name",
            "network_analytics_events.source_country",
        ]
    );
    let calm = store.prefix_calm_statuses().await.expect("calm");
    assert_eq!(calm.len(), 1);
    assert!(calm[0].advertised);
}

#[tokio::test]
async fn database_newer_than_the_binary_is_refused_and_left_alone() {
    let db = TestDb::new();
    db.open().await.close().await;
    sqlite3(
        &db.path,
        "list",
        "INSERT INTO mt_schema_migrations (version, description, checksum) VALUES (9999, 'from the future', 'x')",
    );
    let before = sqlite3(
        &db.path,
        "quote",
        "SELECT * FROM mt_schema_migrations ORDER BY version",
    );
    let err = Store::open(&OpenOptions::new(&db.path))
        .await
        .expect_err("must refuse");
    assert!(
        matches!(err, Error::SchemaTooNew { found: 9999, .. }),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(
        message.contains("9999") && message.contains("newer than this binary"),
        "{message}"
    );
    assert_eq!(
        sqlite3(
            &db.path,
            "quote",
            "SELECT * FROM mt_schema_migrations ORDER BY version"
        ),
        before
    );
}

#[tokio::test]
async fn an_edited_migration_is_detected() {
    let db = TestDb::new();
    db.open().await.close().await;
    sqlite3(
        &db.path,
        "list",
        "UPDATE mt_schema_migrations SET checksum = 'edited' WHERE version = 1",
    );
    let err = Store::open(&OpenOptions::new(&db.path))
        .await
        .expect_err("must refuse");
    assert!(
        matches!(err, Error::ChecksumMismatch { version: 1, .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_file_that_is_not_a_database_is_a_clear_error() {
    let db = TestDb::new();
    std::fs::write(
        &db.path,
        b"this is not sqlite, just some text that is long enough to matter....",
    )
    .expect("write");
    let err = Store::open(&OpenOptions::new(&db.path))
        .await
        .expect_err("must fail");
    let message = err.to_string();
    assert!(message.contains("not a database"), "{message}");
}

#[tokio::test]
async fn a_read_open_never_creates_migrates_or_touches_the_database() {
    let db = TestDb::new();
    // No file: said so, and none is created.
    let err = Store::open_for_reading(&OpenOptions::new(&db.path))
        .await
        .unwrap_err();
    assert!(matches!(err, mt_store::Error::Missing(_)), "{err}");
    assert!(!db.path.exists());

    // An older schema (the original suite's): refused with who may upgrade it, unchanged.
    make_legacy_db(&db.path);
    let legacy_columns: Vec<(String, Vec<String>)> = LEGACY_TABLES
        .iter()
        .map(|t| (t.to_string(), columns(&db.path, t)))
        .collect();
    let before = dump(&db.path, &legacy_columns);
    let err = Store::open_for_reading(&OpenOptions::new(&db.path))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, mt_store::Error::SchemaTooOld { found: 0, .. }),
        "{text}"
    );
    assert!(
        text.contains("mtctl migrate") && text.contains("daemons"),
        "{text}"
    );
    assert_eq!(dump(&db.path, &legacy_columns), before);
    assert_eq!(
        sqlite3(
            &db.path,
            "list",
            "SELECT COUNT(*) FROM sqlite_master WHERE name = 'mt_schema_migrations';"
        )
        .trim(),
        "0",
        "no migration table created"
    );
    assert_eq!(
        sqlite3(&db.path, "list", "PRAGMA journal_mode;").trim(),
        "delete",
        "the journal mode is left alone"
    );

    // Once migrated (by a daemon or mtctl migrate), reads open it as it is.
    db.open().await.close().await;
    let store = Store::open_for_reading(&OpenOptions::new(&db.path))
        .await
        .unwrap();
    assert!(store.schema().applied.is_empty());
    assert_eq!(store.schema().version, mt_store::embedded_schema_version());
    let withdrawals = store
        .stats(chrono::Utc::now())
        .await
        .unwrap()
        .total_withdrawals;
    assert!(withdrawals > 0, "the legacy rows are read: {withdrawals}");
}
