//! Every `sqlite3` query of the seed doc runs unchanged against a database populated through
//! mt-store and returns what the doc says it means (SPEC §5).

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, SubsecRound, Utc};
use mt_common::timefmt::to_db;
use mt_store::{
    ActionTaken, EventType, NewAnalyticsEvent, NewAttackEvent, NewPendingWithdrawal,
    NewWebhookEvent, NewWithdrawal, Store, WebhookDedup, WithdrawMethod, WithdrawStatus,
};
use serde::Deserialize;

use crate::common::{TestDb, fixture, sqlite3};

#[derive(Deserialize)]
struct Queries {
    query: Vec<Query>,
}

#[derive(Deserialize)]
struct Query {
    name: String,
    sql: String,
}

fn load_queries() -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(fixture("seed_queries.toml")).expect("queries");
    let q: Queries = toml::from_str(&text).expect("valid toml");
    q.query.into_iter().map(|q| (q.name, q.sql)).collect()
}

fn webhook(at: DateTime<Utc>, alert_id: &str, state: &str) -> NewWebhookEvent {
    NewWebhookEvent {
        received_at: at,
        alert_type: Some("advanced_ddos_attack_l4_alert".into()),
        event_state: Some(state.into()),
        alert_id: Some(alert_id.into()),
        policy_id: None,
        policy_name: None,
        target_ip: Some("185.54.82.10".into()),
        target_prefix: Some("185.54.82.0/24".into()),
        source_ip: Some("198.51.100.7".into()),
        action_taken: "received".into(),
        payload: format!("{{\"alert_id\":\"{alert_id}\",\"state\":\"{state}\"}}"),
        dedup: WebhookDedup::AlertAndState,
    }
}

fn attack(kind: EventType, action: ActionTaken, prefix: &str, at: DateTime<Utc>) -> NewAttackEvent {
    NewAttackEvent {
        prefix: Some(prefix.into()),
        attack_id: Some("cf-attack-12345".into()),
        ..NewAttackEvent::new(kind, action, at)
    }
}

fn withdrawal(
    prefix: &str,
    at: DateTime<Utc>,
    method: WithdrawMethod,
    status: WithdrawStatus,
    notes: Option<&str>,
) -> NewWithdrawal {
    NewWithdrawal {
        prefix: prefix.into(),
        attack_id: None,
        policy_id: None,
        policy_name: None,
        target_ip: None,
        attack_type: None,
        advertised_at: Some(at - Duration::minutes(20)),
        attack_ended_at: Some(at - Duration::minutes(16)),
        withdrawn_at: Some(at),
        attack_duration_seconds: Some(240),
        protection_duration_seconds: Some(1200),
        method,
        status,
        notes: notes.map(str::to_owned),
        created_at: at,
    }
}

fn pending(
    prefix: &str,
    attack_id: &str,
    after: DateTime<Utc>,
    now: DateTime<Utc>,
) -> NewPendingWithdrawal {
    NewPendingWithdrawal {
        prefix: prefix.into(),
        attack_id: Some(attack_id.into()),
        policy_id: None,
        policy_name: None,
        target_ip: None,
        attack_type: None,
        advertised_at: Some(now),
        withdraw_after: after,
        attack_ended_at: None,
        created_at: now,
    }
}

fn analytics(
    hash: &str,
    vector: &str,
    src: &str,
    packets: i64,
    at: DateTime<Utc>,
) -> NewAnalyticsEvent {
    NewAnalyticsEvent {
        event_hash: hash.into(),
        attack_id: Some("k9z3t".into()),
        event_datetime: Some(at),
        attack_vector: Some(vector.into()),
        source_ip: Some(src.into()),
        destination_ip: Some("185.54.82.4".into()),
        destination_port: Some(443),
        packets: Some(packets),
        bits: Some(packets * 800),
        outcome: Some("drop".into()),
        ..Default::default()
    }
}

/// Today's rows at `now`, older rows three days back.
async fn populate(store: &Store, now: DateTime<Utc>) {
    let old = now - Duration::days(3);
    for w in [
        webhook(old, "cf-attack-12345", "ALERT_STATE_EVENT_START"),
        webhook(
            old + Duration::minutes(30),
            "cf-attack-12345",
            "ALERT_STATE_EVENT_END",
        ),
        webhook(old, "cf-attack-open", "ALERT_STATE_EVENT_START"),
    ] {
        store.log_webhook_event(&w).await.expect("webhook");
    }
    store
        .log_attack_event(&attack(
            EventType::Start,
            ActionTaken::Notified,
            "185.54.83.0/24",
            old,
        ))
        .await
        .expect("event");
    for (kind, action) in [
        (EventType::Start, ActionTaken::Mitigating),
        (EventType::End, ActionTaken::NotifiedAutowithdrawHandles),
        (EventType::Withdraw, ActionTaken::WithdrawnAuto),
    ] {
        store
            .log_attack_event(&attack(kind, action, "185.54.82.0/24", now))
            .await
            .expect("event");
    }
    for w in [
        withdrawal(
            "185.54.83.0/24",
            old,
            WithdrawMethod::Manual,
            WithdrawStatus::Success,
            None,
        ),
        withdrawal(
            "185.54.82.0/24",
            now,
            WithdrawMethod::AutoScheduled,
            WithdrawStatus::Success,
            Some("peak 1.2 Mpps"),
        ),
        withdrawal(
            "185.54.84.0/24",
            now,
            WithdrawMethod::AutoScheduled,
            WithdrawStatus::Failed,
            Some("rate limited"),
        ),
    ] {
        store.record_withdrawal(&w).await.expect("history");
    }
    store
        .add_pending_withdrawal(&pending(
            "185.54.85.0/24",
            "cf-atk-789",
            now + Duration::minutes(14),
            now,
        ))
        .await
        .expect("pending")
        .expect("new");
    let failing = store
        .add_pending_withdrawal(&pending("185.54.86.0/24", "cf-atk-790", now, now))
        .await
        .expect("pending")
        .expect("new");
    for _ in 0..5 {
        let mut tx = store.begin().await.expect("tx");
        tx.note_pending_withdrawal(failing, "API Error: rate limit exceeded", None, true)
            .await
            .expect("note");
        tx.commit().await.expect("commit");
    }
    let ids = store
        .save_analytics_events(&[
            analytics("h1", "SYN Flood", "192.0.2.1", 500, now),
            analytics("h2", "SYN Flood", "192.0.2.2", 300, now),
            analytics("h3", "UDP Flood", "192.0.2.1", 100, now),
        ])
        .await
        .expect("analytics");
    let mut tx = store.begin().await.expect("tx");
    tx.mark_analytics_notified(&ids[..2], now)
        .await
        .expect("notified");
    tx.commit().await.expect("commit");
}

#[tokio::test]
async fn every_seed_query_works_and_means_what_the_doc_says() {
    let db = TestDb::new();
    let store = db.open().await;
    let now = Utc::now().trunc_subsecs(0);
    let old = now - Duration::days(3);
    populate(&store, now).await;

    let queries = load_queries();
    let mut checked = Vec::new();
    let mut run = |name: &str| {
        checked.push(name.to_owned());
        let sql = queries
            .get(name)
            .unwrap_or_else(|| panic!("no query {name}"));
        let sql = sql.replace("attack-id-here", "cf-attack-12345");
        sqlite3(&db.path, "list", &sql)
    };
    let (n, o) = (to_db(now), to_db(old));
    let o30 = to_db(old + Duration::minutes(30));

    assert_eq!(
        run("correlate_start_end"),
        format!("{o}|ALERT_STATE_EVENT_START|received\n{o30}|ALERT_STATE_EVENT_END|received\n")
    );
    assert_eq!(run("completed_attacks"), "1\n");
    assert_eq!(
        run("view_pending"),
        format!(
            "185.54.85.0/24|{}|pending\n",
            to_db(now + Duration::minutes(14))
        )
    );
    assert_eq!(
        run("recent_attack_events"),
        format!(
            "WITHDRAW|185.54.82.0/24|withdrawn_auto|{n}\nEND|185.54.82.0/24|notified_autowithdraw_handles|{n}\n\
             START|185.54.82.0/24|mitigating|{n}\nSTART|185.54.83.0/24|notified|{o}\n"
        )
    );
    assert_eq!(
        run("withdrawal_history"),
        format!(
            "185.54.84.0/24|{n}|auto_scheduled|failed\n185.54.82.0/24|{n}|auto_scheduled|success\n\
             185.54.83.0/24|{o}|manual|success\n"
        )
    );
    assert_eq!(run("count_events_today"), "3\n");
    assert_eq!(run("statistics"), "1|3|4\n");
    assert_eq!(run("quick_count_pending"), "1\n");
    assert_eq!(
        run("failed_withdrawals"),
        "185.54.86.0/24|API Error: rate limit exceeded|5\n"
    );
    assert_eq!(
        run("failed_in_history"),
        format!("185.54.84.0/24|{n}|rate limited\n")
    );
    assert_eq!(run("events_by_type_today"), "END|1\nSTART|1\nWITHDRAW|1\n");
    assert_eq!(run("withdrawals_today"), "2|auto_scheduled\n");
    assert_eq!(
        run("recent_analytics_events"),
        format!(
            "{n}|UDP Flood|192.0.2.1|443|100\n{n}|SYN Flood|192.0.2.2|443|300\n{n}|SYN Flood|192.0.2.1|443|500\n"
        )
    );
    assert_eq!(
        run("analytics_by_vector"),
        "SYN Flood|2|800\nUDP Flood|1|100\n"
    );
    assert_eq!(run("analytics_today"), "2\n");
    assert_eq!(run("top_source_ips"), "192.0.2.1|2|600\n192.0.2.2|1|300\n");
    let check = run("check_withdraw_after");
    assert!(check.starts_with("185.54.85.0/24|"), "{check}");

    // The manual operations work and our code honours them.
    assert_eq!(run("manual_add_pending"), "");
    let due_now = store
        .due_pending_withdrawals(Utc::now())
        .await
        .expect("due");
    assert!(
        due_now
            .iter()
            .all(|p| p.prefix.as_deref() != Some("185.54.82.0/24"))
    );
    let due_later = store
        .due_pending_withdrawals(Utc::now() + Duration::minutes(2))
        .await
        .expect("due");
    assert!(
        due_later
            .iter()
            .any(|p| p.prefix.as_deref() == Some("185.54.82.0/24"))
    );
    assert!(
        due_later
            .iter()
            .all(|p| p.prefix.as_deref() != Some("185.54.86.0/24")),
        "a failed request is not retried until reset"
    );
    assert_eq!(run("reset_failed"), "");
    let due_reset = store
        .due_pending_withdrawals(now + Duration::minutes(2))
        .await
        .expect("due");
    assert!(
        due_reset
            .iter()
            .any(|p| p.prefix.as_deref() == Some("185.54.86.0/24"))
    );
    assert_eq!(run("manual_remove_pending"), "");
    assert_eq!(run("quick_count_pending"), "2\n");

    let mut all: Vec<_> = queries.keys().cloned().collect();
    all.sort();
    checked.sort();
    checked.dedup();
    assert_eq!(checked, all, "every seed query is checked");
}
