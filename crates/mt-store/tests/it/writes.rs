//! `Writes` + `WriteTx::commit_with`: the receiver's effects go with the COMMIT in one query of
//! several statements. What they leave must be what the same rows, each through its own
//! statement, leave: this checks that every statement's placeholders get their own values
//! (sqlx binds the anonymous `?` of a multi-statement query one statement after another).

use chrono::{Duration, TimeZone, Utc};
use mt_store::{ActionTaken, EventType, NewAttackEvent, NewNotification, PrefixMark, Writes};
use proptest::prelude::*;

use crate::common::{TestDb, sqlite3};

const PREFIXES: [&str; 3] = ["192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24"];

const DUMP: &str = "SELECT * FROM attack_events ORDER BY id; \
                    SELECT * FROM prefix_calm_status ORDER BY prefix; \
                    SELECT * FROM notification_outbox ORDER BY id;";

/// Text as webhooks bring it: absent, empty, quotes, non-ASCII.
fn text() -> impl Strategy<Value = Option<String>> {
    prop::option::of(prop::sample::select(vec![
        "",
        "x",
        "it's",
        "\"q\"",
        "Zürich ✓",
        "a;b",
        "?",
        "--",
        "DROP TABLE t",
    ]))
    .prop_map(|s| s.map(str::to_owned))
}

fn attack_event() -> impl Strategy<Value = NewAttackEvent> {
    (
        (any::<bool>(), text(), text(), text(), text()),
        (text(), prop::option::of(0..65536i64), text(), text()),
        (0..4000i64, any::<bool>()),
    )
        .prop_map(
            |(
                (start, alert, attack, policy, prefix),
                (target, port, vector, payload),
                (s, mit),
            )| {
                let at = Utc.with_ymd_and_hms(2026, 12, 5, 0, 0, 0).unwrap() + Duration::seconds(s);
                let mut e = NewAttackEvent::new(
                    if start {
                        EventType::Start
                    } else {
                        EventType::End
                    },
                    if mit {
                        ActionTaken::Mitigating
                    } else {
                        ActionTaken::Notified
                    },
                    at,
                );
                e.alert_type = alert;
                e.attack_id = attack;
                e.policy_id = policy.clone();
                e.policy_name = policy;
                e.prefix = prefix;
                e.target_ip = target;
                e.target_port = port;
                e.attack_vector = vector.clone();
                e.protocol = vector;
                e.packets_per_second = Some("12".into());
                e.raw_payload = payload;
                e
            },
        )
}

type Notification = (String, String, i64, String, i64);

fn notification() -> impl Strategy<Value = Notification> {
    (
        prop::sample::select(vec!["", "-100123"]),
        prop::sample::select(vec!["attack_start", "webhook_other"]),
        0..3i64,
        text(),
        0..4000i64,
    )
        .prop_map(|(chat, kind, priority, text, s)| {
            (
                chat.into(),
                kind.into(),
                priority,
                text.unwrap_or_default(),
                s,
            )
        })
}

/// Stores the rows both ways and returns the two dumps (each-statement, with-the-commit).
async fn both_ways(
    events: &[NewAttackEvent],
    marks: &[(usize, bool, i64)],
    notes: &[Notification],
) -> (String, String) {
    let base = Utc.with_ymd_and_hms(2026, 12, 5, 0, 0, 0).unwrap();
    let marks: Vec<_> = marks
        .iter()
        .map(|(p, attack, s)| {
            let mark = if *attack {
                PrefixMark::UnderAttack
            } else {
                PrefixMark::Advertised
            };
            (PREFIXES[*p], mark, base + Duration::seconds(*s))
        })
        .collect();
    let notes: Vec<_> = notes
        .iter()
        .map(|(chat, kind, priority, text, s)| NewNotification {
            chat_id: chat,
            kind,
            priority: *priority,
            text,
            parse_mode: "MarkdownV2",
            created_at: base + Duration::seconds(*s),
        })
        .collect();
    let (reference, batched) = (TestDb::new(), TestDb::new());

    let store = reference.open().await;
    let mut tx = store.begin().await.unwrap();
    for e in events {
        tx.insert_attack_event(e).await.unwrap();
    }
    for (prefix, mark, at) in &marks {
        match mark {
            PrefixMark::UnderAttack => tx.mark_prefix_under_attack(prefix, *at).await.unwrap(),
            PrefixMark::Advertised => tx.mark_prefix_advertised(prefix, *at).await.unwrap(),
        }
    }
    for n in &notes {
        tx.enqueue_notification(n).await.unwrap();
    }
    tx.commit().await.unwrap();
    store.close().await;

    let store = batched.open().await;
    let tx = store.begin().await.unwrap();
    let mut writes = Writes::new();
    writes
        .attack_events(events)
        .prefix_marks(&marks)
        .notifications(&notes);
    tx.commit_with(writes).await.unwrap();
    store.close().await;

    (
        sqlite3(&reference.path, "quote", DUMP),
        sqlite3(&batched.path, "quote", DUMP),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn writes_with_the_commit_leave_what_one_statement_each_leaves(
        events in prop::collection::vec(attack_event(), 0..8),
        marks in prop::collection::vec((0..3usize, any::<bool>(), 0..4000i64), 0..8),
        notes in prop::collection::vec(notification(), 0..8),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let (reference, batched) = rt.block_on(both_ways(&events, &marks, &notes));
        prop_assert_eq!(batched, reference);
    }
}

/// Past each table's rows per statement (250 attack events, 500 marks and messages), so one
/// query holds several statements of each table, with thousands of values.
#[tokio::test]
async fn writes_past_one_statement_per_table_leave_the_same_rows() {
    let events: Vec<_> = (0..520)
        .map(|i| {
            let mut e = NewAttackEvent::new(
                EventType::Start,
                ActionTaken::Mitigating,
                Utc.with_ymd_and_hms(2026, 12, 5, 0, 0, 0).unwrap() + Duration::seconds(i),
            );
            e.attack_id = Some(format!("attack-{i}"));
            e.prefix = Some(PREFIXES[i as usize % 3].into());
            e
        })
        .collect();
    let marks: Vec<_> = (0..1100).map(|i| (i % 3, i % 2 == 0, i as i64)).collect();
    let notes: Vec<_> = (0..1010)
        .map(|i| {
            (
                "-1".into(),
                "attack_start".into(),
                i % 3,
                format!("message {i}"),
                i,
            )
        })
        .collect();
    let (reference, batched) = both_ways(&events, &marks, &notes).await;
    assert_eq!(reference.lines().count(), 520 + 3 + 1010);
    assert_eq!(batched, reference);
}
