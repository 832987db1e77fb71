//! Several daemons writing one file: no "database is locked", no lost row.

use chrono::Utc;
use mt_store::{
    ActionTaken, EventType, NewAnalyticsEvent, NewAttackEvent, NewWebhookEvent, OpenOptions, Store,
    WebhookDedup, WebhookInsert,
};

use crate::common::{TestDb, sqlite3};

const WRITERS: usize = 4;
/// Single-row transactions per writer: the worst case for lock contention.
const SINGLE_WRITES: usize = 1000;
/// Rows per writer inserted as one batch transaction (the analytics daemon's pattern).
const BATCH_ROWS: usize = 1500;

async fn writer(store: Store, w: usize) -> anyhow::Result<()> {
    for i in 0..SINGLE_WRITES {
        if i % 2 == 0 {
            let e = NewAttackEvent {
                attack_id: Some(format!("w{w}-{i}")),
                ..NewAttackEvent::new(EventType::Start, ActionTaken::Mitigating, Utc::now())
            };
            store.log_attack_event(&e).await?;
        } else {
            let outcome = store
                .log_webhook_event(&NewWebhookEvent {
                    received_at: Utc::now(),
                    alert_type: Some("dos_attack_l4".into()),
                    event_state: Some("ALERT_STATE_EVENT_START".into()),
                    alert_id: Some(format!("w{w}-{i}")),
                    policy_id: None,
                    policy_name: None,
                    target_ip: None,
                    target_prefix: None,
                    source_ip: None,
                    action_taken: "received".into(),
                    payload: format!("{{\"w\":{w},\"i\":{i}}}"),
                    dedup: WebhookDedup::AlertAndState,
                })
                .await?;
            anyhow::ensure!(matches!(outcome, WebhookInsert::Inserted(_)), "{outcome:?}");
        }
    }
    let batch: Vec<_> = (0..BATCH_ROWS)
        .map(|i| NewAnalyticsEvent {
            event_hash: format!("w{w}-{i}"),
            ..Default::default()
        })
        .collect();
    let ids = store.save_analytics_events(&batch).await?;
    anyhow::ensure!(
        ids.len() == BATCH_ROWS,
        "{} of {BATCH_ROWS} inserted",
        ids.len()
    );
    store.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_daemons_write_concurrently_without_lock_errors_or_lost_rows() {
    let db = TestDb::new();
    // Each "daemon" opens (and migrates) the fresh file at the same moment.
    let opens = (0..WRITERS).map(|_| {
        let path = db.path.clone();
        tokio::spawn(async move { Store::open(&OpenOptions::new(path)).await })
    });
    let mut stores = Vec::new();
    for open in opens {
        stores.push(
            open.await
                .expect("join")
                .expect("concurrent open migrates once"),
        );
    }
    let applied: usize = stores.iter().map(|s| s.schema().applied.len()).sum();
    assert_eq!(
        applied as i64,
        mt_store::embedded_schema_version(),
        "migrations applied exactly once across all openers"
    );

    let tasks: Vec<_> = stores
        .into_iter()
        .enumerate()
        .map(|(w, s)| tokio::spawn(writer(s, w)))
        .collect();
    for t in tasks {
        t.await
            .expect("join")
            .expect("writer finished without error");
    }

    let count = |table: &str| -> usize {
        sqlite3(&db.path, "list", &format!("SELECT COUNT(*) FROM {table}"))
            .trim()
            .parse()
            .expect("count")
    };
    assert_eq!(count("attack_events"), WRITERS * SINGLE_WRITES / 2);
    assert_eq!(count("webhook_events"), WRITERS * SINGLE_WRITES / 2);
    assert_eq!(count("network_analytics_events"), WRITERS * BATCH_ROWS);
    assert_eq!(
        sqlite3(&db.path, "list", "PRAGMA integrity_check").trim(),
        "ok"
    );
}

#[tokio::test]
async fn a_lock_held_past_busy_timeout_is_a_clear_transient_error() {
    let db = TestDb::new();
    let holder = db.open().await;
    let mut options = OpenOptions::new(&db.path);
    options.busy_timeout = std::time::Duration::from_millis(200);
    let waiter = Store::open(&options).await.expect("open");

    let tx = holder.begin().await.expect("hold the write lock");
    let err = waiter
        .log_attack_event(&NewAttackEvent::new(
            EventType::Start,
            ActionTaken::Mitigating,
            Utc::now(),
        ))
        .await
        .expect_err("the lock is held");
    assert!(err.is_transient(), "{err:?}");
    assert!(err.to_string().contains("database is busy"), "{err}");
    tx.rollback().await.expect("release");
    waiter
        .log_attack_event(&NewAttackEvent::new(
            EventType::Start,
            ActionTaken::Mitigating,
            Utc::now(),
        ))
        .await
        .expect("works once the lock is released");
}
