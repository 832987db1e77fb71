//! The typed API: duplicates, scheduled withdrawals, calm status, stats, backup.

use std::time::Duration as StdDuration;

use chrono::{Duration, TimeZone, Utc};
use mt_store::{
    ActionTaken, CalmUpdate, EventType, NewAttackEvent, NewPendingWithdrawal, NewWebhookEvent,
    NewWithdrawal, Store, WebhookDedup, WebhookInsert, WithdrawMethod, WithdrawStatus, event_hash,
};
use serde::Deserialize;

use crate::common::{TestDb, fixture, sqlite3};

fn webhook(
    alert_id: Option<&str>,
    state: Option<&str>,
    payload: &str,
    dedup: WebhookDedup,
) -> NewWebhookEvent {
    NewWebhookEvent {
        received_at: Utc.with_ymd_and_hms(2026, 1, 19, 0, 15, 0).unwrap(),
        alert_type: None,
        event_state: state.map(str::to_owned),
        alert_id: alert_id.map(str::to_owned),
        policy_id: None,
        policy_name: None,
        target_ip: None,
        target_prefix: None,
        source_ip: None,
        action_taken: "received".into(),
        payload: payload.into(),
        dedup,
    }
}

#[tokio::test]
async fn webhook_duplicates_are_detected_by_alert_and_state() {
    let db = TestDb::new();
    let store = db.open().await;
    let start = webhook(
        Some("a1"),
        Some("ALERT_STATE_EVENT_START"),
        "{\"x\":1}",
        WebhookDedup::AlertAndState,
    );
    let WebhookInsert::Inserted(id) = store.log_webhook_event(&start).await.expect("insert") else {
        panic!("first delivery must insert");
    };
    // Same alert and state, even with a different body (Cloudflare's retry may re-render it).
    let again = webhook(
        Some("a1"),
        Some("ALERT_STATE_EVENT_START"),
        "{\"x\":2}",
        WebhookDedup::AlertAndState,
    );
    assert_eq!(
        store.log_webhook_event(&again).await.expect("dup"),
        WebhookInsert::Duplicate(id)
    );
    let end = webhook(
        Some("a1"),
        Some("ALERT_STATE_EVENT_END"),
        "{\"x\":3}",
        WebhookDedup::AlertAndState,
    );
    assert!(matches!(
        store.log_webhook_event(&end).await.expect("end"),
        WebhookInsert::Inserted(_)
    ));
    let rows = store.webhook_events_for_alert("a1").await.expect("rows");
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].payload.as_deref(), Some("{\"x\":1}"));
}

#[tokio::test]
async fn webhooks_without_state_are_deduplicated_by_body() {
    let db = TestDb::new();
    let store = db.open().await;
    let body = "{\"text\":\"Hello World! This is a test message\"}";
    let first = webhook(
        Some("webhook-20260119001500000000"),
        None,
        body,
        WebhookDedup::Body,
    );
    let WebhookInsert::Inserted(id) = store.log_webhook_event(&first).await.expect("insert") else {
        panic!("first delivery must insert");
    };
    let second = webhook(
        Some("webhook-20260119001501000000"),
        None,
        body,
        WebhookDedup::Body,
    );
    assert_eq!(
        store.log_webhook_event(&second).await.expect("dup"),
        WebhookInsert::Duplicate(id)
    );
    let other = webhook(
        Some("webhook-20260119001502000000"),
        None,
        "{\"text\":\"other\"}",
        WebhookDedup::Body,
    );
    assert!(matches!(
        store.log_webhook_event(&other).await.expect("other"),
        WebhookInsert::Inserted(_)
    ));

    // A legacy row (no payload hash) with the same body is recognised too.
    sqlite3(
        &db.path,
        "list",
        "INSERT INTO webhook_events (alert_id, event_state, payload) VALUES ('inc-1', NULL, '{\"legacy\":true}')",
    );
    let legacy = webhook(Some("inc-1"), None, "{\"legacy\":true}", WebhookDedup::Body);
    assert!(matches!(
        store.log_webhook_event(&legacy).await.expect("legacy"),
        WebhookInsert::Duplicate(_)
    ));

    let stats = store
        .webhook_stats(Utc.with_ymd_and_hms(2026, 1, 19, 1, 0, 0).unwrap())
        .await
        .expect("stats");
    assert_eq!(stats.total, 3);
    assert_eq!(
        stats.last_24h, 2,
        "the legacy row was received today, after the `now` passed in"
    );
    assert_eq!(stats.by_state, vec![(None, 3)]);
}

#[tokio::test]
async fn a_rolled_back_transaction_leaves_nothing() {
    let db = TestDb::new();
    let store = db.open().await;
    let mut tx = store.begin().await.expect("tx");
    tx.insert_attack_event(&NewAttackEvent::new(
        EventType::Start,
        ActionTaken::Mitigating,
        Utc::now(),
    ))
    .await
    .expect("insert");
    drop(tx);
    assert!(
        store
            .attack_events(10, None)
            .await
            .expect("read")
            .is_empty()
    );
}

#[tokio::test]
async fn scheduled_withdrawal_moves_to_history_once() {
    let db = TestDb::new();
    let store = db.open().await;
    let now = Utc.with_ymd_and_hms(2026, 1, 19, 0, 0, 0).unwrap();
    let request = NewPendingWithdrawal {
        prefix: "185.54.82.0/24".into(),
        attack_id: None,
        policy_id: None,
        policy_name: None,
        target_ip: None,
        attack_type: None,
        advertised_at: Some(now),
        withdraw_after: now + Duration::minutes(15),
        attack_ended_at: None,
        created_at: now,
    };
    let id = store
        .add_pending_withdrawal(&request)
        .await
        .expect("add")
        .expect("new");
    assert_eq!(
        store.add_pending_withdrawal(&request).await.expect("add"),
        None,
        "(prefix, NULL) is unique too"
    );
    assert!(
        store
            .due_pending_withdrawals(now)
            .await
            .expect("due")
            .is_empty()
    );

    let mut tx = store.begin().await.expect("tx");
    assert!(
        tx.note_pending_withdrawal(id, "prefix under attack", None, false)
            .await
            .expect("note")
    );
    tx.commit().await.expect("commit");
    let due = store
        .due_pending_withdrawals(now + Duration::minutes(15))
        .await
        .expect("due");
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].last_error.as_deref(), Some("prefix under attack"));
    assert_eq!(due[0].retry_count, Some(0), "a refusal is not an attempt");

    let record = NewWithdrawal {
        prefix: "185.54.82.0/24".into(),
        attack_id: None,
        policy_id: None,
        policy_name: None,
        target_ip: None,
        attack_type: None,
        advertised_at: Some(now),
        attack_ended_at: None,
        withdrawn_at: Some(now + Duration::minutes(16)),
        attack_duration_seconds: None,
        protection_duration_seconds: Some(960),
        method: WithdrawMethod::AutoScheduled,
        status: WithdrawStatus::Success,
        notes: None,
        created_at: now + Duration::minutes(16),
    };
    let mut tx = store.begin().await.expect("tx");
    assert!(
        tx.complete_pending_withdrawal(id, &record)
            .await
            .expect("complete")
            .is_some()
    );
    tx.commit().await.expect("commit");
    let mut tx = store.begin().await.expect("tx");
    assert_eq!(
        tx.complete_pending_withdrawal(id, &record)
            .await
            .expect("again"),
        None
    );
    tx.commit().await.expect("commit");

    assert!(
        store
            .all_pending_withdrawals()
            .await
            .expect("all")
            .is_empty()
    );
    let history = store.withdrawal_history(10).await.expect("history");
    assert_eq!(history.len(), 1);
    assert_eq!(
        history[0].withdraw_method.as_deref(),
        Some("auto_scheduled")
    );
    assert_eq!(
        history[0].withdrawn_at.as_deref(),
        Some("2026-01-19 00:16:00")
    );
    let stats = store.stats(now).await.expect("stats");
    assert_eq!(
        (
            stats.pending_withdrawals,
            stats.total_withdrawals,
            stats.successful_withdrawals
        ),
        (0, 1, 1)
    );
}

#[tokio::test]
async fn calm_status_upsert_replaces_every_column() {
    let db = TestDb::new();
    let store = db.open().await;
    let t = Utc.with_ymd_and_hms(2026, 1, 19, 0, 0, 0).unwrap();
    let mut update = CalmUpdate {
        prefix: "2a02:4460:1::/48",
        advertised: true,
        under_attack: true,
        calm_since: None,
        last_attack_packets: 123_456,
        last_attack_mbps: 987.5,
        mitigation_systems: "dosd,flowtrackd",
        updated_at: t,
    };
    store
        .update_prefix_calm_status(&update)
        .await
        .expect("insert");
    update.under_attack = false;
    update.calm_since = Some(t + Duration::minutes(5));
    update.updated_at = t + Duration::minutes(6);
    store
        .update_prefix_calm_status(&update)
        .await
        .expect("update");
    let rows = store.prefix_calm_statuses().await.expect("read");
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert!(row.advertised && !row.under_attack);
    assert_eq!(row.calm_since.as_deref(), Some("2026-01-19 00:05:00"));
    assert_eq!(row.updated_at.as_deref(), Some("2026-01-19 00:06:00"));
    assert_eq!(row.last_attack_mbps, Some(987.5));
    // The dashboard's query shape still works.
    assert_eq!(
        sqlite3(
            &db.path,
            "list",
            "SELECT prefix, advertised, under_attack FROM prefix_calm_status"
        ),
        "2a02:4460:1::/48|1|0\n"
    );
}

#[derive(Deserialize)]
struct Vector {
    dimensions_subset: serde_json::Value,
    event_hash: String,
}

#[test]
fn event_hash_matches_the_original_suite_test_vectors() {
    let text = std::fs::read_to_string(fixture("network_analytics_event_hash_test_vectors.json"))
        .expect("vectors");
    let vectors: Vec<Vector> = serde_json::from_str(&text).expect("json");
    assert!(vectors.len() >= 3);
    for v in vectors {
        assert_eq!(
            event_hash(&v.dimensions_subset),
            v.event_hash,
            "{}",
            v.dimensions_subset
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_while_a_writer_inserts_is_consistent_and_complete() {
    let db = TestDb::new();
    let store = db.open().await;
    for _ in 0..200 {
        store
            .log_attack_event(&NewAttackEvent::new(
                EventType::Start,
                ActionTaken::Mitigating,
                Utc::now(),
            ))
            .await
            .expect("seed rows");
    }
    let writer_store = Store::open(&mt_store::OpenOptions::new(&db.path))
        .await
        .expect("second pool");
    let stop = tokio_util_stop();
    let writer = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut n = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                writer_store
                    .log_attack_event(&NewAttackEvent::new(
                        EventType::End,
                        ActionTaken::Processing,
                        Utc::now(),
                    ))
                    .await
                    .expect("concurrent write");
                n += 1;
            }
            n
        })
    };
    tokio::time::sleep(StdDuration::from_millis(50)).await;
    let committed_before: i64 = sqlite3(&db.path, "list", "SELECT MAX(id) FROM attack_events")
        .trim()
        .parse()
        .expect("max");
    let target = db.dir.path().join("backup.db");
    store.backup_to(&target).await.expect("backup");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let written = writer.await.expect("writer");
    assert!(written > 0, "the writer really ran during the backup");

    assert_eq!(
        sqlite3(&target, "list", "PRAGMA integrity_check").trim(),
        "ok"
    );
    let in_backup: i64 = sqlite3(
        &target,
        "list",
        "SELECT COUNT(*) FROM attack_events WHERE id <= (SELECT MAX(id) FROM attack_events)",
    )
    .trim()
    .parse()
    .expect("count");
    let missing: i64 = sqlite3(
        &target,
        "list",
        &format!(
            "SELECT {committed_before} - COUNT(*) FROM attack_events WHERE id <= {committed_before}"
        ),
    )
    .trim()
    .parse()
    .expect("missing");
    assert_eq!(
        missing, 0,
        "every row committed before the backup started is in it"
    );
    assert!(in_backup >= committed_before);
    let err = store
        .backup_to(&target)
        .await
        .expect_err("never overwrites");
    assert!(err.to_string().contains("already exists"), "{err}");
}

fn tokio_util_stop() -> std::sync::Arc<std::sync::atomic::AtomicBool> {
    std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false))
}

/// Two processes on one database whose clock (SPEC §7.9: the database's, not the hosts')
/// is a manual clock.
async fn two_on_one_clock(db: &TestDb) -> (Store, Store, mt_common::ManualClock) {
    let clock = mt_common::ManualClock::new(Utc.with_ymd_and_hms(2026, 1, 19, 0, 0, 0).unwrap());
    let open = || async {
        Store::open(&mt_store::OpenOptions {
            database_clock: Some(clock.shared()),
            ..mt_store::OpenOptions::new(&db.path)
        })
        .await
        .unwrap()
    };
    (open().await, open().await, clock)
}

#[tokio::test]
async fn a_lease_has_one_holder_until_it_expires_or_is_released() {
    let db = TestDb::new();
    let (a, b, clock) = two_on_one_clock(&db).await;
    let ttl = StdDuration::from_secs(30);
    let first = a.acquire_lease("sender", "a", ttl).await.unwrap().unwrap();
    clock.advance(Duration::seconds(29));
    assert_eq!(b.acquire_lease("sender", "b", ttl).await.unwrap(), None);
    assert_eq!(
        a.acquire_lease("sender", "a", ttl).await.unwrap(),
        Some(first.clone()),
        "renewal keeps the token"
    );
    clock.advance(Duration::seconds(29));
    assert_eq!(
        b.acquire_lease("sender", "b", ttl).await.unwrap(),
        None,
        "renewed until 59s"
    );
    clock.advance(Duration::seconds(2));
    let second = b
        .acquire_lease("sender", "b", ttl)
        .await
        .unwrap()
        .expect("expired: taken over");
    assert_eq!(second.token, first.token + 1, "a new holder, a new token");
    clock.advance(Duration::seconds(1));
    assert_eq!(a.acquire_lease("sender", "a", ttl).await.unwrap(), None);
    assert!(
        a.acquire_lease("other", "a", ttl).await.unwrap().is_some(),
        "leases are independent by name"
    );
    a.release_lease("sender", "a").await.unwrap();
    assert_eq!(
        b.lease_holder("sender")
            .await
            .unwrap()
            .map(|(h, _)| h)
            .as_deref(),
        Some("b"),
        "only the holder can release"
    );
    b.release_lease("sender", "b").await.unwrap();
    assert!(b.lease_holder("sender").await.unwrap().is_none());
    let third = a
        .acquire_lease("sender", "a", ttl)
        .await
        .unwrap()
        .expect("released: free at once");
    assert_eq!(third.token, second.token + 1, "the token never goes back");
}

/// An instance paused past its lease (SPEC §7.9): the other takes over, and every fenced
/// write of the stale one is refused, in the transaction that would have written.
#[tokio::test]
async fn a_holder_whose_lease_was_taken_over_cannot_write_under_it() {
    let db = TestDb::new();
    let (a, b, clock) = two_on_one_clock(&db).await;
    let ttl = StdDuration::from_secs(300);
    let stale = a
        .acquire_lease("autowithdraw", "a", ttl)
        .await
        .unwrap()
        .unwrap();
    let mut tx = a.begin().await.unwrap();
    tx.check_fence(&stale).await.unwrap();
    tx.renew_lease(&stale, ttl).await.unwrap();
    tx.commit().await.unwrap();
    // Paused for longer than the lease.
    clock.advance(Duration::seconds(301));
    let fresh = b
        .acquire_lease("autowithdraw", "b", ttl)
        .await
        .unwrap()
        .unwrap();
    let mut tx = a.begin().await.unwrap();
    let err = tx.check_fence(&stale).await.unwrap_err();
    assert!(matches!(err, mt_store::Error::LeaseLost { .. }), "{err}");
    assert!(err.to_string().contains("another instance"), "{err}");
    assert!(matches!(
        tx.renew_lease(&stale, ttl).await.unwrap_err(),
        mt_store::Error::LeaseLost { .. }
    ));
    drop(tx);
    let mut tx = b.begin().await.unwrap();
    tx.renew_lease(&fresh, ttl).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        b.lease_holder("autowithdraw")
            .await
            .unwrap()
            .map(|(h, _)| h)
            .as_deref(),
        Some("b")
    );
}

/// Without a test clock, the database's own clock judges expiry (real time here).
#[tokio::test]
async fn the_database_clock_judges_expiry() {
    let db = TestDb::new();
    let a = db.open().await;
    let b = db.open().await;
    let short = StdDuration::from_millis(300);
    let before = Utc::now();
    assert!(a.acquire_lease("x", "a", short).await.unwrap().is_some());
    let after = Utc::now();
    let (_, until) = a.lease_holder("x").await.unwrap().unwrap();
    let ttl = Duration::milliseconds(300);
    let slack = Duration::milliseconds(5);
    assert!(
        before + ttl - slack <= until && until <= after + ttl + slack,
        "expiry {until} judged by the clock SQLite reads ({before} .. {after} + 300 ms)"
    );
    // Wait (in real time, a third of a second) until the database says it expired.
    let mut taken = None;
    for _ in 0..200 {
        taken = b.acquire_lease("x", "b", short).await.unwrap();
        if taken.is_some() {
            break;
        }
        tokio::time::sleep(StdDuration::from_millis(20)).await;
    }
    assert_eq!(taken.map(|f| f.token), Some(2));
}

/// SPEC §6: the archive writer's progress is `archived_at`; the backlog is what it has left,
/// oldest first; pruning never deletes a row whose archive copy is not written yet.
#[tokio::test]
async fn unarchived_webhooks_are_the_backlog_and_are_never_pruned() {
    let db = TestDb::new();
    let store = db.open().await;
    let mut ids = Vec::new();
    for n in 0..3 {
        let WebhookInsert::Inserted(id) = store
            .log_webhook_event(&webhook(
                Some(&format!("a{n}")),
                Some("ALERT_STATE_EVENT_START"),
                &format!("{{\"n\":{n}}}"),
                WebhookDedup::AlertAndState,
            ))
            .await
            .unwrap()
        else {
            panic!("inserted");
        };
        ids.push(id);
    }
    let backlog = store.archive_backlog().await.unwrap();
    assert_eq!(backlog.rows, 3);
    assert_eq!(
        backlog.oldest,
        Some(Utc.with_ymd_and_hms(2026, 1, 19, 0, 15, 0).unwrap())
    );
    let pending = store.unarchived_webhooks(2).await.unwrap();
    assert_eq!(pending.iter().map(|p| p.id).collect::<Vec<_>>(), ids[..2]);
    assert_eq!(pending[0].payload.as_deref(), Some("{\"n\":0}"));

    let now = Utc.with_ymd_and_hms(2026, 6, 1, 0, 0, 0).unwrap();
    let mut tx = store.begin().await.unwrap();
    tx.mark_webhooks_archived(&ids[..2], now).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(store.archive_backlog().await.unwrap().rows, 1);

    let options = mt_store::PruneOptions::default();
    let pruned = store.prune(now, &options, |_| {}).await.unwrap();
    assert_eq!(pruned.webhook_events, 2, "only the archived rows");
    let left = store.webhook_events(10, None, None).await.unwrap();
    assert_eq!(left.iter().map(|w| w.id).collect::<Vec<_>>(), vec![ids[2]]);

    let mut tx = store.begin().await.unwrap();
    tx.mark_webhooks_archived(&ids[2..], now).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        store
            .prune(now, &options, |_| {})
            .await
            .unwrap()
            .webhook_events,
        1
    );
}
