//! SPEC §6 webhook identities: the duplicate rule (`duplicate_of`) and the store that performs
//! it in SQL agree over generated deliveries, redeliveries and re-imports of legacy rows.

use chrono::{TimeZone, Utc};
use mt_store::{
    NewWebhookEvent, StoredIdentity, WebhookDedup, WebhookEvent, WebhookInsert, duplicate_of,
};
use proptest::prelude::*;

use crate::common::{TestDb, sqlite3};

const START: &str = "ALERT_STATE_EVENT_START";
const END: &str = "ALERT_STATE_EVENT_END";

/// A webhook as the receiver would build it: the dedup mode follows from its identity the way
/// `webhook-receiver`'s classifier derives it.
fn webhook(alert_id: Option<&str>, state: Option<&str>, payload: &str) -> NewWebhookEvent {
    let synthetic = alert_id.is_none_or(|id| id.starts_with("webhook-"));
    let dedup = if synthetic || state.is_none() {
        WebhookDedup::Body
    } else if let Some((bare, _)) = alert_id.and_then(|id| id.split_once('@')) {
        WebhookDedup::ObjectEvent {
            bare_id: bare.to_owned(),
        }
    } else {
        WebhookDedup::AlertAndState
    };
    NewWebhookEvent {
        received_at: Utc.with_ymd_and_hms(2026, 1, 19, 0, 15, 0).unwrap(),
        alert_type: Some("magic_tunnel_health_check_event".into()),
        event_state: state.map(str::to_owned),
        alert_id: Some(
            alert_id
                .unwrap_or("webhook-20260119001500000000")
                .to_owned(),
        ),
        policy_id: None,
        policy_name: None,
        target_ip: None,
        target_prefix: None,
        source_ip: None,
        action_taken: "imported".into(),
        payload: payload.into(),
        dedup,
    }
}

fn identity(row: &WebhookEvent) -> StoredIdentity<'_> {
    StoredIdentity {
        id: row.id,
        alert_id: row.alert_id.as_deref(),
        event_state: row.event_state.as_deref(),
        payload: row.payload.as_deref().unwrap_or_default(),
    }
}

#[tokio::test]
async fn two_different_id_less_bodies_of_one_second_are_both_kept() {
    let db = TestDb::new();
    let store = db.open().await;
    // Both fall back to the same `webhook-<second>` id on import (the archive's file name has
    // second precision). Before, the second was answered "duplicate" and lost.
    let a = webhook(None, Some(START), r#"{"text":"a"}"#);
    let b = webhook(None, Some(START), r#"{"text":"b"}"#);
    let WebhookInsert::Inserted(first) = store.log_webhook_event(&a).await.unwrap() else {
        panic!("a is new");
    };
    let WebhookInsert::Inserted(second) = store.log_webhook_event(&b).await.unwrap() else {
        panic!("b is a different body: never a duplicate");
    };
    assert_ne!(first, second);
    assert_eq!(
        store.log_webhook_event(&b).await.unwrap(),
        WebhookInsert::Duplicate(second),
        "the same body again is"
    );
    let ids: Vec<String> = store
        .webhook_events(10, None, None)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|r| r.alert_id)
        .collect();
    assert!(
        ids.contains(&"webhook-20260119001500000000".to_owned())
            && ids
                .iter()
                .any(|id| id.starts_with("webhook-20260119001500000000-")),
        "{ids:?}"
    );
}

#[tokio::test]
async fn a_reimported_tunnel_event_matches_the_original_suites_bare_id_row() {
    let db = TestDb::new();
    let store = db.open().await;
    // The original suite stored the first outage under the bare tunnel id and dropped the
    // second as a "duplicate".
    sqlite3(
        &db.path,
        "list",
        "INSERT INTO webhook_events (alert_id, event_state, payload) \
         VALUES ('tunnel-123', 'TUNNEL_STATUS_CHANGE', '{\"outage\":1}')",
    );
    let first = webhook(
        Some("tunnel-123@aaaa"),
        Some("TUNNEL_STATUS_CHANGE"),
        r#"{"outage":1}"#,
    );
    assert!(matches!(
        store.log_webhook_event(&first).await.unwrap(),
        WebhookInsert::Duplicate(_)
    ));
    let second = webhook(
        Some("tunnel-123@bbbb"),
        Some("TUNNEL_STATUS_CHANGE"),
        r#"{"outage":2}"#,
    );
    assert!(
        matches!(
            store.log_webhook_event(&second).await.unwrap(),
            WebhookInsert::Inserted(_)
        ),
        "the event the original suite dropped is added"
    );
}

/// One generated step.
#[derive(Debug, Clone)]
enum Step {
    /// A delivery (or an import of an archived body).
    Deliver(Option<&'static str>, Option<&'static str>, &'static str),
    /// The same body as the previous delivery, again.
    Redeliver,
}

fn step() -> impl Strategy<Value = Step> {
    let ids = prop::sample::select(vec![
        Some("a1"),
        Some("a2"),
        Some("t1@100"),
        Some("t1@200"),
        Some("t1"),
        None,
    ]);
    let states = prop::sample::select(vec![Some(START), Some(END), None]);
    let payloads = prop::sample::select(vec![r#"{"p":1}"#, r#"{"p":2}"#, r#"{"p":3}"#]);
    prop_oneof![
        4 => (ids, states, payloads).prop_map(|(i, s, p)| Step::Deliver(i, s, p)),
        1 => Just(Step::Redeliver),
    ]
}

/// Legacy rows as the original suite left them (no payload hash; bare tunnel ids).
fn legacy() -> impl Strategy<Value = Vec<(&'static str, Option<&'static str>, &'static str)>> {
    prop::collection::vec(
        (
            prop::sample::select(vec!["a1", "t1", "webhook-20260119001500000000"]),
            prop::sample::select(vec![Some(START), Some(END), None]),
            prop::sample::select(vec![r#"{"p":1}"#, r#"{"p":2}"#]),
        ),
        0..4,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Over generated histories: every delivery's outcome is what the pure rule says (a
    /// duplicate exactly when `duplicate_of` finds a stored row, or the seed's unique key is
    /// taken by a row with an id of its own); a redelivery is always a duplicate; two
    /// different bodies without an id never collide; nothing stored is ever altered.
    #[test]
    fn the_store_performs_the_pure_duplicate_rule(
        legacy in legacy(),
        steps in prop::collection::vec(step(), 1..24),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let db = TestDb::new();
            let store = db.open().await;
            let sql: String = legacy.iter().map(|(id, state, payload)| format!(
                "INSERT OR IGNORE INTO webhook_events (alert_id, event_state, payload) VALUES ('{id}', {}, '{payload}');\n",
                state.map_or("NULL".to_owned(), |s| format!("'{s}'")),
            )).collect();
            if !sql.is_empty() {
                sqlite3(&db.path, "list", &sql);
            }
            let mut last: Option<NewWebhookEvent> = None;
            for step in steps {
                let w = match (step, &last) {
                    (Step::Deliver(id, state, payload), _) => webhook(id, state, payload),
                    (Step::Redeliver, Some(previous)) => previous.clone(),
                    (Step::Redeliver, None) => continue,
                };
                let redelivery = last.as_ref().is_some_and(|l| l.payload == w.payload
                    && l.alert_id == w.alert_id && l.event_state == w.event_state);
                let before = store.webhook_events(1000, None, None).await.unwrap();
                let rule = duplicate_of(&w, before.iter().map(identity));
                let key_taken = before.iter().find(|r| w.dedup != WebhookDedup::Body
                    && r.event_state.is_some() && r.event_state == w.event_state
                    && r.alert_id == w.alert_id);
                let outcome = store.log_webhook_event(&w).await.unwrap();
                let after = store.webhook_events(1000, None, None).await.unwrap();
                match outcome {
                    WebhookInsert::Duplicate(id) => {
                        let row = before.iter().find(|r| r.id == id).expect("an existing row");
                        prop_assert!(
                            duplicate_of(&w, [identity(row)]) == Some(id)
                                || key_taken.is_some_and(|k| k.id == id),
                            "{w:?} called a duplicate of {row:?}"
                        );
                        prop_assert_eq!(&after, &before, "a duplicate changes nothing");
                    }
                    WebhookInsert::Inserted(id) => {
                        prop_assert!(rule.is_none() && key_taken.is_none(), "{w:?} missed {rule:?} {key_taken:?}");
                        prop_assert!(!redelivery, "a redelivery is never new");
                        prop_assert_eq!(after.len(), before.len() + 1);
                        prop_assert!(after.iter().any(|r| r.id == id && r.payload.as_deref() == Some(w.payload.as_str())));
                        for r in &before {
                            prop_assert!(after.contains(r), "stored rows are never altered");
                        }
                    }
                }
                if rule.is_none() && key_taken.is_none() {
                    prop_assert!(matches!(outcome, WebhookInsert::Inserted(_)), "{w:?} is new");
                }
                last = Some(w);
            }
            store.close().await;
            Ok(())
        })?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Over generated histories cut into generated batches: storing each batch with one
    /// `insert_webhook_events` gives every webhook the outcome, and leaves exactly the rows,
    /// that storing them one after another does (the receiver's group commit relies on it;
    /// duplicates inside one batch included).
    #[test]
    fn a_batch_stores_what_one_after_another_stores(
        legacy in legacy(),
        steps in prop::collection::vec(step(), 1..32),
        cuts in prop::collection::vec(1usize..8, 1..32),
    ) {
        let mut last: Option<NewWebhookEvent> = None;
        let mut webhooks = Vec::new();
        for step in steps {
            let w = match (step, &last) {
                (Step::Deliver(id, state, payload), _) => webhook(id, state, payload),
                (Step::Redeliver, Some(previous)) => previous.clone(),
                (Step::Redeliver, None) => continue,
            };
            last = Some(w.clone());
            webhooks.push(w);
        }
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let sql: String = legacy.iter().map(|(id, state, payload)| format!(
                "INSERT OR IGNORE INTO webhook_events (received_at, alert_id, event_state, payload) VALUES ('2026-01-01 00:00:00', '{id}', {}, '{payload}');\n",
                state.map_or("NULL".to_owned(), |s| format!("'{s}'")),
            )).collect();
            let (one, batched) = (TestDb::new(), TestDb::new());
            let (one_store, batched_store) = (one.open().await, batched.open().await);
            if !sql.is_empty() {
                sqlite3(&one.path, "list", &sql);
                sqlite3(&batched.path, "list", &sql);
            }
            let mut expected = Vec::new();
            for w in &webhooks {
                expected.push(one_store.log_webhook_event(w).await.unwrap());
            }
            let mut got = Vec::new();
            let mut rest = webhooks.as_slice();
            for cut in cuts.iter().cycle() {
                if rest.is_empty() {
                    break;
                }
                let (batch, tail) = rest.split_at((*cut).min(rest.len()));
                let mut tx = batched_store.begin().await.unwrap();
                got.extend(tx.insert_webhook_events(batch).await.unwrap());
                tx.commit().await.unwrap();
                rest = tail;
            }
            prop_assert_eq!(&got, &expected, "outcomes");
            prop_assert_eq!(
                batched_store.webhook_events(1000, None, None).await.unwrap(),
                one_store.webhook_events(1000, None, None).await.unwrap(),
                "stored rows"
            );
            one_store.close().await;
            batched_store.close().await;
            Ok(())
        })?;
    }
}
