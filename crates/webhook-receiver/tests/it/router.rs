//! Every fixture and every rejection through the router.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use mt_store::AttackEvent;
use serde_json::{Value, json};

use crate::common::*;

/// (fixture, attack_events rows as (event_type, action_taken, prefix), message kind)
type Expectation = (
    &'static str,
    &'static [(&'static str, &'static str, Option<&'static str>)],
    &'static str,
);

const FIXTURES: &[Expectation] = &[
    (
        "cloudflare/webhook_advanced_ddos_attack_l4_alert_start.json",
        &[("START", "mitigating", Some("203.0.113.0/24"))],
        "attack_start",
    ),
    (
        "cloudflare/webhook_advanced_ddos_attack_l4_alert_end.json",
        &[(
            "END",
            "notified_autowithdraw_handles",
            Some("203.0.113.0/24"),
        )],
        "attack_end",
    ),
    (
        "cloudflare/webhook_advanced_ddos_attack_l7_alert_start.json",
        &[("START", "mitigating", None)],
        "attack_start",
    ),
    (
        "cloudflare/webhook_dos_attack_l4_start.json",
        &[("START", "mitigating", Some("198.51.100.0/24"))],
        "attack_start",
    ),
    (
        "cloudflare/webhook_dos_attack_l4_end.json",
        &[(
            "END",
            "notified_autowithdraw_handles",
            Some("198.51.100.0/24"),
        )],
        "attack_end",
    ),
    (
        "cloudflare/webhook_fbm_auto_advertisement.json",
        &[
            ("ADVERTISE", "auto_advertised", Some("203.0.113.0/24")),
            ("ADVERTISE", "auto_advertised", Some("198.51.100.0/24")),
        ],
        "auto_advertisement",
    ),
    (
        "cloudflare/webhook_fbm_dosd_attack_start.json",
        &[("START", "notified", Some("198.51.100.0/24"))],
        "attack_start",
    ),
    (
        "cloudflare/webhook_fbm_dosd_attack_end.json",
        &[(
            "END",
            "notified_autowithdraw_handles",
            Some("198.51.100.0/24"),
        )],
        "attack_end",
    ),
    (
        "cloudflare/webhook_fbm_volumetric_attack_start.json",
        &[("START", "notified", Some("203.0.113.0/24"))],
        "attack_start",
    ),
    (
        "cloudflare/webhook_fbm_volumetric_attack_end.json",
        &[(
            "END",
            "notified_autowithdraw_handles",
            Some("203.0.113.0/24"),
        )],
        "attack_end",
    ),
    (
        "cloudflare/webhook_magic_tunnel_health_check_event_start.json",
        &[],
        "tunnel_health",
    ),
    (
        "cloudflare/webhook_magic_tunnel_health_check_event_end.json",
        &[],
        "tunnel_health",
    ),
    (
        "cloudflare/webhook_test_save_and_test.json",
        &[],
        "generic_alert",
    ),
    (
        "original-suite/webhook_advanced_ddos_attack_l4_alert_start.json",
        &[("START", "mitigating", Some("185.54.82.0/24"))],
        "attack_start",
    ),
    (
        "original-suite/webhook_bgp_hijack_notification.json",
        &[],
        "generic_alert",
    ),
    (
        "original-suite/webhook_dos_attack_l4_no_event.json",
        &[("START", "mitigating", None)],
        "attack_start",
    ),
    (
        "original-suite/webhook_dos_attack_l7_no_event.json",
        &[("START", "mitigating", None)],
        "attack_start",
    ),
    (
        "original-suite/webhook_fbm_auto_advertisement.json",
        &[("ADVERTISE", "auto_advertised", Some("185.54.82.0/24"))],
        "auto_advertisement",
    ),
    (
        "original-suite/webhook_fbm_dosd_attack_no_event.json",
        &[("START", "notified", Some("185.54.82.0/24"))],
        "attack_start",
    ),
    (
        "original-suite/webhook_fbm_volumetric_attack_no_event.json",
        &[("START", "notified", None)],
        "attack_start",
    ),
    (
        "original-suite/webhook_health_check_status_notification.json",
        &[],
        "generic_alert",
    ),
    (
        "original-suite/webhook_incident_alert.json",
        &[],
        "generic_alert",
    ),
    (
        "original-suite/webhook_magic_tunnel_health_check_event_down.json",
        &[],
        "tunnel_health",
    ),
];

fn rows(events: &[AttackEvent]) -> Vec<(String, String, Option<String>)> {
    let mut rows: Vec<_> = events
        .iter()
        .map(|e| {
            (
                e.event_type.clone().unwrap(),
                e.action_taken.clone().unwrap(),
                e.prefix.clone(),
            )
        })
        .collect();
    rows.sort();
    rows
}

#[tokio::test]
async fn every_fixture_is_stored_classified_archived_and_notified_once() {
    assert_eq!(
        FIXTURES.len(),
        23,
        "every webhook fixture of both directories"
    );
    for (file, expected_rows, kind) in FIXTURES {
        let app = TestApp::new().await;
        let body = fixture(file);
        let (status, response) = app.post(&body).await;
        assert_eq!(status, StatusCode::OK, "{file}: {response}");
        assert_eq!(response["status"], "accepted", "{file}");
        let id = response["id"].as_i64().unwrap();

        let mut expected: Vec<_> = expected_rows
            .iter()
            .map(|(t, a, p)| (t.to_string(), a.to_string(), p.map(str::to_owned)))
            .collect();
        expected.sort();
        let events = app.store.attack_events(100, None).await.unwrap();
        assert_eq!(rows(&events), expected, "{file}");
        for e in &events {
            assert_eq!(
                e.raw_payload.as_deref(),
                Some(body.as_str()),
                "{file}: raw payload kept"
            );
            assert_eq!(e.created_at.as_deref(), Some("2026-01-19 00:15:00"));
        }

        let webhooks = app.store.webhook_events(10, None, None).await.unwrap();
        assert_eq!(webhooks.len(), 1, "{file}");
        assert_eq!(webhooks[0].id, id);
        assert_eq!(webhooks[0].payload.as_deref(), Some(body.as_str()));
        assert_eq!(webhooks[0].source_ip.as_deref(), Some("192.0.2.10"));
        assert_eq!(webhooks[0].action_taken.as_deref(), Some("received"));

        let queued = app.store.notifications(10).await.unwrap();
        assert_eq!(queued.len(), 1, "{file}: one message");
        assert_eq!(queued[0].kind, *kind, "{file}");
        assert_eq!(
            app.archived().await,
            vec![format!("webhook_20260119_001500_{id}.json")],
            "{file}"
        );
        let archived =
            std::fs::read_to_string(app.archive_dir().join(&app.archived().await[0])).unwrap();
        assert_eq!(archived, body, "{file}: archive holds the raw body");

        // The same delivery again changes nothing and sends nothing.
        let (status, response) = app.post(&body).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(response, json!({"status": "duplicate", "id": id}), "{file}");
        assert_eq!(
            rows(&app.store.attack_events(100, None).await.unwrap()),
            expected
        );
        assert_eq!(
            app.store
                .webhook_events(10, None, None)
                .await
                .unwrap()
                .len(),
            1
        );
        assert_eq!(app.store.notifications(10).await.unwrap().len(), 1);
        assert_eq!(app.archived().await.len(), 1);
        assert_eq!(app.state.metrics().duplicate.get(), 1);
    }
}

#[tokio::test]
async fn the_derived_columns_follow_the_seed() {
    let app = TestApp::new().await;
    app.post(&fixture(
        "cloudflare/webhook_advanced_ddos_attack_l4_alert_start.json",
    ))
    .await;
    let w = &app.store.webhook_events(1, None, None).await.unwrap()[0];
    assert_eq!(
        w.alert_type.as_deref(),
        Some("advanced_ddos_attack_l4_alert")
    );
    assert_eq!(w.event_state.as_deref(), Some("ALERT_STATE_EVENT_START"));
    assert_eq!(
        w.alert_id.as_deref(),
        Some("8f14e45fceea4e1a9b2c3d4e5f6a7b8c")
    );
    assert_eq!(
        w.policy_id.as_deref(),
        Some("9b8e7d6c5a4f43e2b1c0d9e8f7a6b5c4")
    );
    assert_eq!(w.target_ip.as_deref(), Some("203.0.113.10"));
    assert_eq!(w.target_prefix.as_deref(), Some("203.0.113.0/24"));
    let e = &app.store.attack_events(1, None).await.unwrap()[0];
    assert_eq!(
        e.attack_id.as_deref(),
        Some("8f14e45fceea4e1a9b2c3d4e5f6a7b8c")
    );
    assert_eq!(e.target_port, Some(53));
    assert_eq!(e.protocol.as_deref(), Some("UDP"));
    assert_eq!(e.attack_vector.as_deref(), Some("UDP Flood"));
    assert_eq!(e.packets_per_second.as_deref(), Some("1840000"));
    assert_eq!(e.megabits_per_second.as_deref(), Some("14250"));
    let calm = app.store.prefix_calm_statuses().await.unwrap();
    assert_eq!(calm.len(), 1);
    assert!(calm[0].under_attack && calm[0].calm_since.is_none());

    // The END correlates by alert id.
    app.post(&fixture(
        "cloudflare/webhook_advanced_ddos_attack_l4_alert_end.json",
    ))
    .await;
    let correlated = app
        .store
        .webhook_events_for_alert("8f14e45fceea4e1a9b2c3d4e5f6a7b8c")
        .await
        .unwrap();
    assert_eq!(correlated.len(), 2);
    assert_eq!(
        app.store
            .webhook_stats(app_now())
            .await
            .unwrap()
            .completed_attacks,
        1
    );
}

fn app_now() -> chrono::DateTime<chrono::Utc> {
    chrono::TimeZone::with_ymd_and_hms(&chrono::Utc, 2026, 1, 19, 1, 0, 0).unwrap()
}

#[tokio::test]
async fn auto_advertisement_marks_prefixes_advertised() {
    let app = TestApp::new().await;
    app.post(&fixture("cloudflare/webhook_fbm_auto_advertisement.json"))
        .await;
    let calm = app.store.prefix_calm_statuses().await.unwrap();
    let advertised: Vec<_> = calm
        .iter()
        .filter(|c| c.advertised)
        .filter_map(|c| c.prefix.clone())
        .collect();
    assert_eq!(advertised, vec!["198.51.100.0/24", "203.0.113.0/24"]);
}

#[tokio::test]
async fn a_start_on_a_withdrawn_prefix_says_so() {
    let app = TestApp::new().await;
    // autowithdraw withdrew 203.0.113.0/24 five minutes ago.
    let mut tx = app.store.begin().await.unwrap();
    tx.upsert_prefix_calm_status(&mt_store::CalmUpdate {
        prefix: "203.0.113.0/24",
        advertised: false,
        under_attack: false,
        calm_since: None,
        last_attack_packets: 0,
        last_attack_mbps: 0.0,
        mitigation_systems: "",
        updated_at: app.clock.now_utc(),
    })
    .await
    .unwrap();
    let withdrawn_at = app.clock.now_utc() - chrono::Duration::minutes(5);
    tx.insert_attack_event(&mt_store::NewAttackEvent {
        prefix: Some("203.0.113.0/24".into()),
        ..mt_store::NewAttackEvent::new(
            mt_store::EventType::Withdraw,
            mt_store::ActionTaken::WithdrawnAuto,
            withdrawn_at,
        )
    })
    .await
    .unwrap();
    tx.commit().await.unwrap();

    app.post(&fixture(
        "cloudflare/webhook_advanced_ddos_attack_l4_alert_start.json",
    ))
    .await;
    let text = &app.store.notifications(10).await.unwrap()[0].text;
    assert!(text.contains("Prefix is WITHDRAWN"), "{text}");
    assert!(
        text.contains("Re\\-advertisement allowed from:* 2026\\-01\\-19 00:25:00 UTC"),
        "{text}"
    );
}

trait Now {
    fn now_utc(&self) -> chrono::DateTime<chrono::Utc>;
}
impl Now for mt_common::ManualClock {
    fn now_utc(&self) -> chrono::DateTime<chrono::Utc> {
        mt_common::Clock::now(self)
    }
}

#[tokio::test]
async fn rejections_are_clear_and_store_nothing() {
    let app = TestApp::new().await;
    let body = fixture("cloudflare/webhook_dos_attack_l4_start.json");
    let cases: Vec<(Request<Body>, StatusCode, &str)> = vec![
        (
            post(&body).body(Body::from(body.clone())).unwrap(),
            StatusCode::UNAUTHORIZED,
            "cf-webhook-auth",
        ),
        (
            post(&body)
                .header("cf-webhook-auth", "wrong")
                .body(Body::from(body.clone()))
                .unwrap(),
            StatusCode::UNAUTHORIZED,
            "cf-webhook-auth",
        ),
        (
            post(&body)
                .header("cf-webhook-auth", format!("{SECRET}x"))
                .body(Body::from(body.clone()))
                .unwrap(),
            StatusCode::UNAUTHORIZED,
            "cf-webhook-auth",
        ),
        (
            post("")
                .header("cf-webhook-auth", SECRET)
                .body(Body::from("[1,2,3]"))
                .unwrap(),
            StatusCode::BAD_REQUEST,
            "not a JSON object",
        ),
        (
            post("")
                .header("cf-webhook-auth", SECRET)
                .body(Body::from("\"text\""))
                .unwrap(),
            StatusCode::BAD_REQUEST,
            "not a JSON object",
        ),
        (
            post("")
                .header("cf-webhook-auth", SECRET)
                .body(Body::from("{\"a\":"))
                .unwrap(),
            StatusCode::BAD_REQUEST,
            "invalid JSON",
        ),
        (
            post("")
                .header("cf-webhook-auth", SECRET)
                .body(Body::from(""))
                .unwrap(),
            StatusCode::BAD_REQUEST,
            "invalid JSON",
        ),
        (
            post("")
                .header("cf-webhook-auth", SECRET)
                .body(Body::from(vec![0xff, 0xfe, b'{']))
                .unwrap(),
            StatusCode::BAD_REQUEST,
            "UTF-8",
        ),
        // No content-length header: the body is cut off while it is read.
        (
            post("")
                .header("cf-webhook-auth", SECRET)
                .body(Body::from("x".repeat(5000)))
                .unwrap(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "too large",
        ),
        // Declared too large: refused before reading.
        (
            post("")
                .header("cf-webhook-auth", SECRET)
                .header("content-length", "5000")
                .body(Body::from("x".repeat(5000)))
                .unwrap(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "too large",
        ),
        (
            Request::builder()
                .method("GET")
                .uri("/webhook")
                .body(Body::empty())
                .unwrap(),
            StatusCode::METHOD_NOT_ALLOWED,
            "POST",
        ),
        (
            Request::builder()
                .method("PUT")
                .uri("/webhook")
                .header("cf-webhook-auth", SECRET)
                .body(Body::from(body.clone()))
                .unwrap(),
            StatusCode::METHOD_NOT_ALLOWED,
            "POST",
        ),
        (
            Request::builder()
                .method("POST")
                .uri("/other")
                .body(Body::from(body.clone()))
                .unwrap(),
            StatusCode::NOT_FOUND,
            "not found",
        ),
    ];
    for (request, status, needle) in cases {
        let (got, response) = app.send(request).await;
        assert_eq!(got, status, "{response}");
        let message = response["error"].as_str().unwrap_or_default();
        assert!(
            message.contains(needle),
            "{message:?} should mention {needle:?}"
        );
        assert!(!message.contains('\n'));
    }
    assert!(
        app.store
            .webhook_events(10, None, None)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(app.store.notifications(10).await.unwrap().is_empty());
    assert!(app.archived().await.is_empty(), "nothing archived");
    let m = app.state.metrics();
    assert_eq!(m.rejected.get("unauthorized"), 3);
    assert_eq!(m.rejected.get("too_large"), 2);
    assert_eq!(m.rejected.get("method"), 2);
}

/// SPEC §6: behind trusted proxies the source is the right-most hop that is not a proxy.
/// Before: the left-most, which the client writes itself ("6.6.6.6" here).
#[tokio::test]
async fn trusted_proxies_supply_the_source_ip() {
    let app = TestApp::with(|_| {}, "trusted_proxies = [\"192.0.2.0/24\"]", Some(SECRET)).await;
    let body = fixture("cloudflare/webhook_dos_attack_l4_start.json");
    let request = post(&body)
        .header("cf-webhook-auth", SECRET)
        .header("x-forwarded-for", "6.6.6.6, 203.0.113.99, 192.0.2.10")
        .body(Body::from(body.clone()))
        .unwrap();
    assert_eq!(app.send(request).await.0, StatusCode::OK);
    let w = &app.store.webhook_events(1, None, None).await.unwrap()[0];
    assert_eq!(w.source_ip.as_deref(), Some("203.0.113.99"));

    // An untrusted peer's X-Forwarded-For is ignored.
    let app = TestApp::new().await;
    let request = post(&body)
        .header("cf-webhook-auth", SECRET)
        .header("x-forwarded-for", "203.0.113.99")
        .body(Body::from(body))
        .unwrap();
    assert_eq!(app.send(request).await.0, StatusCode::OK);
    let w = &app.store.webhook_events(1, None, None).await.unwrap()[0];
    assert_eq!(w.source_ip.as_deref(), Some("192.0.2.10"));
}

#[tokio::test]
async fn unauthenticated_mode_accepts_without_the_header() {
    let app = TestApp::with(|_| {}, "allow_unauthenticated = true", None).await;
    let body = fixture("cloudflare/webhook_test_save_and_test.json");
    let (status, response) = app
        .send(post(&body).body(Body::from(body.clone())).unwrap())
        .await;
    assert_eq!(status, StatusCode::OK, "{response}");
}

#[tokio::test]
async fn a_locked_database_answers_503_and_keeps_nothing_so_the_retry_succeeds() {
    let app = TestApp::with(
        |o| o.busy_timeout = std::time::Duration::from_millis(100),
        "",
        Some(SECRET),
    )
    .await;
    let other = mt_store::Store::open(&mt_store::OpenOptions::new(app.dir.path().join("mt.db")))
        .await
        .unwrap();
    let lock = other.begin().await.unwrap();
    let body = fixture("cloudflare/webhook_dos_attack_l4_start.json");
    let (status, response) = app.post(&body).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{response}");
    assert!(
        app.archived().await.is_empty(),
        "no archive copy of an unacknowledged webhook"
    );
    assert_eq!(app.state.metrics().rejected.get("database"), 1);
    lock.rollback().await.unwrap();

    let (status, response) = app.post(&body).await;
    assert_eq!(
        (status, response["status"].as_str()),
        (StatusCode::OK, Some("accepted"))
    );
    assert_eq!(app.archived().await.len(), 1);
}

#[tokio::test]
async fn healthz_and_metrics() {
    let app = TestApp::new().await;
    app.post(&fixture("cloudflare/webhook_dos_attack_l4_start.json"))
        .await;
    app.post(&fixture("cloudflare/webhook_dos_attack_l4_start.json"))
        .await;
    app.post(&fixture("original-suite/webhook_incident_alert.json"))
        .await;
    let (status, health) = app
        .send(
            Request::builder()
                .uri("/healthz")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(health["database"], "ok");
    assert_eq!(health["version"], env!("CARGO_PKG_VERSION"));

    let (status, page) = app
        .send(
            Request::builder()
                .uri("/metrics")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let page = page.as_str().unwrap().to_owned();
    for line in [
        "mt_webhooks_accepted_total{alert_type=\"dos_attack_l4\"} 1",
        "mt_webhooks_accepted_total{alert_type=\"other\"} 1",
        "mt_webhooks_duplicate_total 1",
        "mt_webhook_duration_seconds_count 3",
        "mt_notifications_queued 2",
        "mt_notifications_failed_total 0",
        "mt_notifications_paused_chats 0",
    ] {
        assert!(page.contains(line), "missing {line:?} in\n{page}");
    }

    // The database gone: 503 and "error", never the database's own text (the endpoint is
    // public; the text goes to the log).
    app.store.close().await;
    let (status, health) = app
        .send(
            Request::builder()
                .uri("/healthz")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(health["database"], "error", "{health}");
}

/// Distinct START bodies for the archive tests.
fn start_body(n: usize) -> String {
    json!({"alert_type": "dos_attack_l4", "alert_event": "ALERT_STATE_EVENT_START",
           "data": {"attack_id": format!("archive-{n:05}"), "target_ip": "203.0.113.1"}})
    .to_string()
}

fn inode(path: &std::path::Path) -> u64 {
    std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(path).unwrap())
}

/// SPEC §6: the archive copy is written from the database after the acknowledgement. A writer
/// stopped mid-backlog (a crash, a restart) resumes from the rows not archived yet, writes each
/// missing file once, and never rewrites one that exists (here: the files of the batches done
/// before the stop, and one renamed just before a crash whose progress was never recorded).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_archive_writer_catches_up_after_being_stopped_mid_backlog() {
    let app = TestApp::new().await;
    // Three full batches and some: the writer is stopped after its first or second.
    let total = 3 * webhook_receiver::archive::BATCH as usize + 100;
    for n in 0..total {
        let (status, _) = app.post(&start_body(n)).await;
        assert_eq!(status, StatusCode::OK);
    }
    assert!(
        app.archive_files().is_empty(),
        "acknowledged before any archive copy"
    );
    assert_eq!(
        app.store.archive_backlog().await.unwrap().rows,
        total as i64
    );

    // Stop the writer as soon as its first batch is recorded.
    let stop = tokio_util::sync::CancellationToken::new();
    let writer = {
        let (state, stop) = (app.state.clone(), stop.clone());
        tokio::spawn(async move {
            let task = mt_common::service::Task {
                stop,
                progress: mt_common::service::Progress::new(),
            };
            state.archive_writer().run(task).await
        })
    };
    while app.store.archive_backlog().await.unwrap().rows == total as i64 {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    stop.cancel();
    writer.await.unwrap().unwrap();
    let left = app.store.archive_backlog().await.unwrap().rows as usize;
    let before: Vec<String> = app.archive_files();
    assert!(left > 0 && left < total, "stopped mid-backlog: {left} left");
    assert_eq!(before.len(), total - left, "a file for each recorded row");
    let inodes: Vec<u64> = before
        .iter()
        .map(|f| inode(&app.archive_dir().join(f)))
        .collect();

    // A crash after a rename, before its batch was recorded: the file exists, its row is not
    // archived. And a temporary file the crash left half-written.
    let pending = app.store.unarchived_webhooks(1).await.unwrap().remove(0);
    let renamed = format!("webhook_20260119_001500_{}.json", pending.id);
    std::fs::write(
        app.archive_dir().join(&renamed),
        pending.payload.as_deref().unwrap(),
    )
    .unwrap();
    let renamed_inode = inode(&app.archive_dir().join(&renamed));
    std::fs::write(app.archive_dir().join(".incoming/4242-0.json"), b"{\"half").unwrap();

    // Restart: a new receiver state on the same database and archive.
    let config = mt_common::config::Config::from_toml_str(
        &config_text(app.dir.path(), ""),
        std::path::Path::new("t.toml"),
        Vec::new(),
    )
    .unwrap();
    let restarted =
        webhook_receiver::AppState::new(config, app.store.clone(), app.clock.shared(), None)
            .await
            .unwrap();
    assert!(
        std::fs::read_dir(app.archive_dir().join(".incoming"))
            .unwrap()
            .next()
            .is_none(),
        "the half-written temporary file is removed at start"
    );
    let written = restarted.archive_pending().await.unwrap();
    assert_eq!(written as usize, left - 1, "each missing file written once");
    assert_eq!(app.store.archive_backlog().await.unwrap().rows, 0);
    let after = app.archive_files();
    assert_eq!(after.len(), total, "exactly one file per stored webhook");
    for (file, ino) in before.iter().zip(&inodes) {
        assert_eq!(
            inode(&app.archive_dir().join(file)),
            *ino,
            "{file} rewritten"
        );
    }
    assert_eq!(inode(&app.archive_dir().join(&renamed)), renamed_inode);
    for row in app.store.webhook_events(10_000, None, None).await.unwrap() {
        let name = format!("webhook_20260119_001500_{}.json", row.id);
        assert_eq!(
            std::fs::read_to_string(app.archive_dir().join(&name)).unwrap(),
            row.payload.unwrap(),
            "{name} holds the raw body"
        );
    }
}

/// `/healthz` degrades while a webhook waits more than a minute for its archive copy, and
/// `/metrics` shows the backlog.
#[tokio::test]
async fn a_stuck_archive_shows_in_healthz_and_metrics() {
    let app = TestApp::new().await;
    app.post(&start_body(1)).await;
    let get = |uri: &'static str| Request::builder().uri(uri).body(Body::empty()).unwrap();
    let (status, health) = app.send(get("/healthz")).await;
    assert_eq!(status, StatusCode::OK, "{health}");
    app.clock.advance(chrono::Duration::seconds(61));
    let (status, health) = app.send(get("/healthz")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{health}");
    assert_eq!(health["status"], "degraded");
    assert_eq!(
        health["archive"],
        "1 webhooks wait for their archive copy, the oldest for 61 s"
    );
    let (_, page) = app.send(get("/metrics")).await;
    let page = page.as_str().unwrap().to_owned();
    assert!(page.contains("mt_webhook_archive_backlog 1\n"), "{page}");
    assert!(
        page.contains("mt_webhook_archive_backlog_age_seconds 61\n"),
        "{page}"
    );

    assert_eq!(app.archived().await.len(), 1);
    let (status, health) = app.send(get("/healthz")).await;
    assert_eq!(status, StatusCode::OK, "{health}");
    let (_, page) = app.send(get("/metrics")).await;
    assert!(
        page.as_str()
            .unwrap()
            .contains("mt_webhook_archive_backlog 0\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrent_burst_is_stored_once_each_in_batches() {
    let app = TestApp::new().await;
    let tasks: Vec<_> = (0..200)
        .map(|n| {
            let app = app.app.clone();
            tokio::spawn(async move {
                let body = json!({"alert_type": "dos_attack_l4", "alert_event": "ALERT_STATE_EVENT_START",
                                  "data": {"attack_id": format!("a{}", n % 150), "target_ip": "203.0.113.1"}})
                .to_string();
                let request = post(&body).header("cf-webhook-auth", SECRET).body(Body::from(body)).unwrap();
                let response = tower::ServiceExt::oneshot(app, request).await.unwrap();
                assert_eq!(response.status(), StatusCode::OK);
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(
        app.store
            .webhook_events(1000, None, None)
            .await
            .unwrap()
            .len(),
        150
    );
    assert_eq!(
        app.store.attack_events(1000, None).await.unwrap().len(),
        150
    );
    assert_eq!(app.store.notifications(1000).await.unwrap().len(), 150);
    assert_eq!(app.archived().await.len(), 150);
    assert_eq!(app.state.metrics().duplicate.get(), 50);
}

/// A request body that never delivers its bytes (a stalled client).
struct Stalled;

impl axum::body::HttpBody for Stalled {
    type Data = axum::body::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        std::task::Poll::Pending
    }
}

#[tokio::test]
async fn a_stalled_body_times_out_with_408() {
    let app = TestApp::with(|_| {}, "request_timeout = \"200ms\"", Some(SECRET)).await;
    let request = post("")
        .header("cf-webhook-auth", SECRET)
        .body(Body::new(Stalled))
        .unwrap();
    let (status, response) = app.send(request).await;
    assert_eq!(status, StatusCode::REQUEST_TIMEOUT, "{response}");
    assert_eq!(app.state.metrics().rejected.get("timeout"), 1);
    assert!(
        app.store
            .webhook_events(10, None, None)
            .await
            .unwrap()
            .is_empty()
    );
}

/// SPEC §6: a tunnel's `tunnel_id` names the tunnel, not the event. Before, its second
/// outage (and the original suite's id-less recovery shape) was answered "duplicate" and never
/// stored or sent. Now each state change is its own event (`<tunnel_id>@<ts>`), and only a
/// redelivery of the same body is a duplicate.
#[tokio::test]
async fn two_outages_of_one_tunnel_are_two_events_and_a_redelivery_is_a_duplicate() {
    let app = TestApp::new().await;
    let start: Value = serde_json::from_str(&fixture(
        "cloudflare/webhook_magic_tunnel_health_check_event_start.json",
    ))
    .unwrap();
    let end: Value = serde_json::from_str(&fixture(
        "cloudflare/webhook_magic_tunnel_health_check_event_end.json",
    ))
    .unwrap();
    let mut second_start = start.clone();
    second_start["ts"] = json!(start["ts"].as_i64().unwrap() + 3600);
    second_start["data"]["timestamp"] = json!("2025-03-14T15:05:00Z");

    let mut ids = Vec::new();
    for body in [&start, &end, &second_start] {
        let (status, response) = app.post(&body.to_string()).await;
        assert_eq!(
            (status, response["status"].as_str()),
            (StatusCode::OK, Some("accepted")),
            "{response}"
        );
        ids.push(response["id"].as_i64().unwrap());
    }
    let (status, response) = app.post(&second_start.to_string()).await;
    assert_eq!(
        (status, response["status"].as_str()),
        (StatusCode::OK, Some("duplicate"))
    );

    let tunnel = start["data"]["tunnel_id"].as_str().unwrap();
    let rows = app.store.webhook_events(10, None, None).await.unwrap();
    let mut alert_ids: Vec<String> = rows.iter().filter_map(|r| r.alert_id.clone()).collect();
    alert_ids.sort();
    let mut expected = vec![
        format!("{tunnel}@{}", start["ts"]),
        format!("{tunnel}@{}", end["ts"]),
        format!("{tunnel}@{}", second_start["ts"]),
    ];
    expected.sort();
    assert_eq!(alert_ids, expected, "three events stored");
    let sent = app.store.notifications(50).await.unwrap();
    assert_eq!(
        sent.iter().filter(|n| n.kind == "tunnel_health").count(),
        3,
        "two outages and one recovery, each told once"
    );

    // The original suite's shape has no `ts`: the body's hash tells its events apart.
    let down: Value = serde_json::from_str(&fixture(
        "original-suite/webhook_magic_tunnel_health_check_event_down.json",
    ))
    .unwrap();
    let mut up = down.clone();
    up["data"]["new_status"] = json!("MAGIC_TUNNEL_STATUS_UP");
    up["data"]["previous_status"] = json!("MAGIC_TUNNEL_STATUS_DOWN");
    for (body, outcome) in [(&down, "accepted"), (&up, "accepted"), (&down, "duplicate")] {
        let (status, response) = app.post(&body.to_string()).await;
        assert_eq!(
            (status, response["status"].as_str()),
            (StatusCode::OK, Some(outcome)),
            "{body}"
        );
    }
}

/// A 1 MiB auto-advertisement listing ~28k entries (configured prefixes repeated, sub-prefixes,
/// foreign CIDRs and text that is no CIDR). Before: one `attack_events` row per advertised
/// entry, each with the full body (≈27 GiB in one transaction at the production body limit).
/// Now: at most one row per configured prefix, the body stored once, the rest named in the
/// message (ten, then "… and N more").
#[tokio::test]
async fn a_huge_auto_advertisement_writes_bounded_rows_and_bytes() {
    let app = TestApp::with(|_| {}, "max_body_bytes = 2_000_000", Some(SECRET)).await;
    let mut entries = vec![
        json!({"prefix": "203.0.113.0/24", "status": "Advertised"}),
        json!({"prefix": "198.51.100.0/24", "status": "Delayed"}),
        json!({"prefix": "198.51.100.128/25", "status": "Already Advertised"}),
    ];
    let (mut i, mut bytes, mut ignored) = (0u32, 0usize, 0usize);
    while bytes < 1_040_000 {
        let entry = match i % 4 {
            0 => json!({"prefix": "203.0.113.0/24", "status": "Advertised"}),
            1 => {
                json!({"prefix": format!("10.{}.{}.0/24", i / 256 % 256, i % 256), "status": "Advertised"})
            }
            2 => json!({"prefix": format!("not-a-cidr-{i}"), "status": "Advertised"}),
            _ => json!({"prefix": "185.54.82.0/24", "status": "Advertised"}),
        };
        ignored += usize::from(matches!(i % 4, 1 | 2));
        bytes += entry.to_string().len() + 1;
        entries.push(entry);
        i += 1;
    }
    let total = entries.len();
    let body = json!({
        "alert_type": "fbm_auto_advertisement",
        "alert_event": "ALERT_STATE_EVENT_START",
        "alert_correlation_id": "huge-1",
        "data": {"prefixes": entries},
        "ts": 1741944330
    })
    .to_string();
    let (status, response) = app.post(&body).await;
    assert_eq!(status, StatusCode::OK, "{response}");

    let events = app.store.attack_events(100_000, None).await.unwrap();
    let mut prefixes: Vec<String> = events.iter().filter_map(|e| e.prefix.clone()).collect();
    prefixes.sort();
    assert_eq!(
        prefixes,
        ["185.54.82.0/24", "198.51.100.0/24", "203.0.113.0/24"],
        "one row per configured prefix, advertised status winning"
    );
    let row_bytes: usize = events
        .iter()
        .map(|e| e.raw_payload.as_deref().map_or(0, str::len))
        .sum();
    let webhook = &app.store.webhook_events(1, None, None).await.unwrap()[0];
    assert_eq!(webhook.payload.as_deref().map(str::len), Some(body.len()));
    println!(
        "1 MiB auto-advertisement: {total} entries, body {} bytes -> {} attack_events rows, \
         {row_bytes} bytes of raw_payload in them (the body is stored once in webhook_events)",
        body.len(),
        events.len()
    );
    assert!(row_bytes < 1024, "{row_bytes} bytes of raw_payload");
    let stub: Value = serde_json::from_str(events[0].raw_payload.as_deref().unwrap()).unwrap();
    assert_eq!(stub["webhook_events_id"], webhook.id);

    let message = &app.store.notifications(10).await.unwrap()[0].text;
    assert!(message.len() < 4096, "{} bytes", message.len());
    assert!(message.contains("`not-a-cidr-2`"), "{message}");
    assert!(
        message.contains(&format!("and {} more", ignored - 10)),
        "{ignored} ignored: {message}"
    );
}

/// Deeply nested or huge-number bodies are refused with 400 before any work.
#[tokio::test]
async fn deeply_nested_and_huge_number_bodies_are_refused_before_any_work() {
    let app = TestApp::with(|_| {}, "max_body_bytes = 2_000_000", Some(SECRET)).await;
    let nested = format!(
        "{{\"alert_type\":\"x\",\"data\":{}1{}}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let huge_number = format!(
        "{{\"alert_type\":\"x\",\"data\":{{\"pps\":{}}}}}",
        "9".repeat(500_000)
    );
    for (body, what) in [
        (nested, "nesting deeper than 32"),
        (huge_number, "a number longer than 40"),
    ] {
        let (status, response) = app.post(&body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{response}");
        assert!(
            response["error"].as_str().unwrap().contains(what),
            "{response}"
        );
    }
    // Depth and numbers of real alerts pass; strings may contain anything.
    let fine = json!({"alert_type": "x", "text": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[ 99999999999999999999999999999999999999999999999",
                      "data": {"a": {"b": {"c": [1, 2.5e10, -3]}}}});
    let (status, response) = app.post(&fine.to_string()).await;
    assert_eq!(status, StatusCode::OK, "{response}");
    assert_eq!(
        app.store
            .webhook_events(10, None, None)
            .await
            .unwrap()
            .len(),
        1
    );
}
