//! The group commit stores a batch in one multi-row statement per table; over generated
//! deliveries (redeliveries and duplicates inside one batch included), cut into generated
//! batches, it must leave exactly the rows and give exactly the answers that storing each
//! webhook on its own does.

use std::path::Path;
use std::process::Command;

use chrono::{Duration, TimeZone, Utc};
use mt_common::config::Config;
use mt_notify::Notifier;
use mt_store::{OpenOptions, Store};
use proptest::prelude::*;
use serde_json::{Map, Value};
use webhook_receiver::ingest::{Parsed, store_batch};

use crate::common::{config_text, fixture};

/// A webhook body: a generated L4 alert (a few attack ids, START or END, two targets), or one
/// of the fixtures (auto-advertisement, tunnel health, "Save and Test", bodies without an
/// event state, which are deduplicated by their text).
fn body() -> impl Strategy<Value = String> {
    let l4 = (
        prop::sample::select(vec!["a1", "a2", "a3"]),
        prop::sample::select(vec!["ALERT_STATE_EVENT_START", "ALERT_STATE_EVENT_END"]),
        prop::sample::select(vec!["203.0.113.10", "198.51.100.7"]),
    )
        .prop_map(|(id, state, target)| {
            format!(
                r#"{{"alert_type":"advanced_ddos_attack_l4_alert","alert_event":"{state}","name":"t","policy_name":"p","data":{{"attack_id":"{id}","target_ip":"{target}","target_port":53,"protocol":"UDP","attack_vector":"UDP Flood","packets_per_second":1840000,"megabits_per_second":14250}}}}"#
            )
        });
    let fixtures = prop::sample::select(vec![
        "cloudflare/webhook_fbm_auto_advertisement.json",
        "cloudflare/webhook_magic_tunnel_health_check_event_start.json",
        "cloudflare/webhook_magic_tunnel_health_check_event_end.json",
        "cloudflare/webhook_test_save_and_test.json",
        "cloudflare/webhook_fbm_dosd_attack_start.json",
        "original-suite/webhook_dos_attack_l4_no_event.json",
        "original-suite/webhook_incident_alert.json",
    ])
    .prop_map(fixture);
    prop_oneof![3 => l4, 2 => fixtures]
}

/// Every row the batch writes, as `sqlite3` prints it, table by table in id order.
fn dump(db: &Path) -> String {
    let sql = "SELECT * FROM webhook_events ORDER BY id; \
               SELECT * FROM attack_events ORDER BY id; \
               SELECT * FROM prefix_calm_status ORDER BY prefix; \
               SELECT id, chat_id, kind, priority, text, parse_mode, created_at, status \
               FROM notification_outbox ORDER BY id;";
    let out = Command::new("sqlite3")
        .args(["-batch", "-bail", "-cmd", ".mode quote"])
        .arg(db)
        .arg(sql)
        .output()
        .expect("sqlite3 CLI is installed (apt-get install sqlite3)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

async fn open(dir: &Path) -> (Config, Store) {
    let config =
        Config::from_toml_str(&config_text(dir, ""), Path::new("t.toml"), Vec::new()).unwrap();
    let store = Store::open(&OpenOptions::from_config(&config.database))
        .await
        .unwrap();
    (config, store)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn a_batch_stores_what_one_webhook_at_a_time_stores(
        bodies in prop::collection::vec(body(), 1..40),
        cuts in prop::collection::vec(1usize..12, 1..40),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let (one_dir, batched_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
            let (config, one) = open(one_dir.path()).await;
            let (_, batched) = open(batched_dir.path()).await;
            let notifier = Notifier::new(&config.telegram);
            let start = Utc.with_ymd_and_hms(2026, 12, 5, 0, 0, 0).unwrap();
            let parsed: Vec<Parsed> = bodies
                .iter()
                .enumerate()
                .map(|(i, raw)| {
                    let received_at = start + Duration::milliseconds(250 * i as i64);
                    let object: Map<String, Value> = serde_json::from_str(raw).unwrap();
                    Parsed {
                        classified: mt_alerts::classify(&object, &config, received_at),
                        raw: raw.clone(),
                        source_ip: Some("192.0.2.10".into()),
                        received_at,
                    }
                })
                .collect();
            let mut expected = Vec::new();
            for p in &parsed {
                expected.extend(store_batch(std::slice::from_ref(p), &one, &notifier).await.unwrap());
            }
            let mut got = Vec::new();
            let mut rest = parsed.as_slice();
            for cut in cuts.iter().cycle() {
                if rest.is_empty() {
                    break;
                }
                let (batch, tail) = rest.split_at((*cut).min(rest.len()));
                got.extend(store_batch(batch, &batched, &notifier).await.unwrap());
                rest = tail;
            }
            one.close().await;
            batched.close().await;
            prop_assert_eq!(got, expected, "answers");
            let (a, b) = (dump(&one_dir.path().join("mt.db")), dump(&batched_dir.path().join("mt.db")));
            prop_assert!(a.lines().count() > parsed.len().min(1), "rows were written: {}", a);
            prop_assert_eq!(b, a, "rows");
            Ok(())
        })?;
    }
}
