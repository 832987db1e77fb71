//! Scheduled withdrawal requests (`pending_withdrawals`, SPEC §5), inserted the seed's way
//! through the real `sqlite3` CLI, against the real cycle, cf-sim and a real SQLite file. Each
//! test failed on the code before the requests went through the decision core: the request
//! was performed at once.

use std::sync::Arc;

use autowithdraw::cycle::Engine;
use mt_common::config::Config;
use mt_store::{ActionTaken, EventType, NewAttackEvent};

use crate::common::*;

/// The seed's hand-insert, exactly as its guide prints it.
const SEED_INSERT: &str = "INSERT INTO pending_withdrawals (prefix, withdraw_after, status) \
     VALUES ('203.0.113.0/24', datetime('now','+1 minute'), 'pending')";

/// A calm world (203.0.113.0/24 advertised 30 minutes ago, no attack traffic) whose prefix is
/// not withdrawn automatically: only a request withdraws it.
async fn calm_world(change: impl FnOnce(&mut Config)) -> (World, Engine) {
    let w = World::new(vec![prefix("p24", "203.0.113.0/24", 1800)], vec![], "").await;
    let mut config = (*w.engine.config).clone();
    config.prefixes[0].auto_withdraw = false;
    change(&mut config);
    let engine = Engine {
        config: Arc::new(config),
        ..w.engine.clone()
    };
    (w, engine)
}

fn sqlite(w: &World, sql: &str) {
    let out = std::process::Command::new("sqlite3")
        .arg(&w.engine.config.database.path)
        .arg(sql)
        .output()
        .expect("run sqlite3");
    assert!(
        out.status.success(),
        "sqlite3 {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One cycle of `engine`, then a minute; returns whether it withdrew.
async fn step(w: &World, engine: &Engine) -> bool {
    let report = engine.cycle().await.unwrap();
    w.clock.advance(chrono::Duration::seconds(60));
    !report.withdrawn.is_empty()
}

async fn only_request(w: &World) -> mt_store::PendingWithdrawal {
    let rows = w.store.all_pending_withdrawals().await.unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    rows.into_iter().next().unwrap()
}

async fn performed_as_scheduled(w: &World) {
    assert!(
        w.store.all_pending_withdrawals().await.unwrap().is_empty(),
        "the performed request is moved to the history"
    );
    let history = w.store.withdrawal_history(10).await.unwrap();
    assert_eq!(history.len(), 1, "{history:?}");
    assert_eq!(
        (
            history[0].withdraw_method.as_deref(),
            history[0].status.as_deref()
        ),
        (Some("auto_scheduled"), Some("success"))
    );
    assert_eq!(w.sim.sim.patches().len(), 1);
}

/// A START arrives, then the seed's request comes due, then an END. Before: the request was
/// performed at once (only the judged traffic was looked at). Now: no PATCH until a judged
/// window that began after the START is calm; the END does not unblock it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_waits_for_a_window_judged_after_the_start() {
    let (w, engine) = calm_world(|_| {}).await;
    while w.t() < 600 {
        assert!(!step(&w, &engine).await);
    }
    let start_t = w.t();
    w.store
        .log_attack_event(&NewAttackEvent {
            prefix: Some("203.0.113.0/24".into()),
            target_ip: Some("203.0.113.10".into()),
            alert_type: Some("dos_attack_l4".into()),
            ..NewAttackEvent::new(EventType::Start, ActionTaken::Mitigating, w.now())
        })
        .await
        .unwrap();
    sqlite(&w, SEED_INSERT);
    let mut performed_at = None;
    let mut said_start = false;
    while w.t() < start_t + 1800 {
        let t = w.t();
        if t == start_t + 120 {
            w.store
                .log_attack_event(&NewAttackEvent {
                    prefix: Some("203.0.113.0/24".into()),
                    ..NewAttackEvent::new(EventType::End, ActionTaken::Mitigating, w.now())
                })
                .await
                .unwrap();
        }
        if step(&w, &engine).await {
            performed_at = Some(t);
            break;
        }
        if let Some(error) = w
            .store
            .all_pending_withdrawals()
            .await
            .unwrap()
            .first()
            .and_then(|r| r.last_error.clone())
        {
            said_start |= error.contains("START");
        }
    }
    let at = performed_at.expect("performed once a window after the START was judged calm");
    // The newest judged window must begin after the START: it ends 5 min (the window) later
    // and is judged analytics_delay (3 min) after that.
    let earliest = start_t + 300 + 180;
    assert!(
        (earliest..=earliest + 300).contains(&at),
        "performed at {at}, START at {start_t}"
    );
    assert!(said_start, "the refusal named the START");
    performed_as_scheduled(&w).await;
}

/// A legacy row without `created_at` and a row made during an earlier advertisement. Before:
/// one of them was performed. Now: neither is; both are marked failed with why, the operator
/// is told once per row, and a new request (inserted the seed's way) is performed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_and_legacy_requests_are_failed_once_and_never_performed() {
    let (w, engine) = calm_world(|_| {}).await;
    while w.t() < 600 {
        assert!(!step(&w, &engine).await);
    }
    let before_advertisement =
        mt_common::timefmt::to_db(w.sim.sim.start() - chrono::Duration::hours(2));
    sqlite(
        &w,
        &format!(
            "INSERT INTO pending_withdrawals (prefix, attack_id, withdraw_after, status, created_at) \
             VALUES ('203.0.113.0/24', 'legacy', datetime('now','-1 hour'), 'pending', NULL); \
             INSERT INTO pending_withdrawals (prefix, attack_id, withdraw_after, status, created_at) \
             VALUES ('203.0.113.0/24', 'earlier', datetime('now','-1 hour'), 'pending', '{before_advertisement}');"
        ),
    );
    for _ in 0..10 {
        assert!(
            !step(&w, &engine).await,
            "a stale request is never performed"
        );
    }
    assert!(w.sim.sim.patches().is_empty());
    let rows = w.store.all_pending_withdrawals().await.unwrap();
    assert_eq!(rows.len(), 2);
    for row in &rows {
        assert_eq!(row.status.as_deref(), Some("failed"), "{row:?}");
        let error = row.last_error.as_deref().unwrap_or_default();
        assert!(error.contains("delete it and insert a new one"), "{error}");
    }
    assert!(
        rows.iter()
            .any(|r| r.last_error.as_deref().unwrap().contains("legacy row"))
    );
    assert!(rows.iter().any(|r| {
        r.last_error
            .as_deref()
            .unwrap()
            .contains("earlier advertisement")
    }));
    let alerts = w
        .kinds()
        .await
        .iter()
        .filter(|k| *k == "operator_alert")
        .count();
    assert_eq!(alerts, 2, "told once per row, not every cycle");

    // What the message asks for: delete them, insert a new one.
    sqlite(&w, "DELETE FROM pending_withdrawals");
    sqlite(&w, SEED_INSERT);
    let mut performed = false;
    for _ in 0..15 {
        if step(&w, &engine).await {
            performed = true;
            break;
        }
    }
    assert!(performed, "{:?}", only_request(&w).await);
    performed_as_scheduled(&w).await;
}

/// `pre_withdraw_command` refuses. Before: requests never ran it and the PATCH went out. Now:
/// the request stays pending with the command's refusal, and is performed once it succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_runs_pre_withdraw_command_and_waits_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("pre-withdraw.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\necho \"router $1 not ready\" >&2\nexit 3\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (w, engine) = calm_world(|c| {
        c.autowithdraw.pre_withdraw_command = script.display().to_string();
    })
    .await;
    while w.t() < 600 {
        assert!(!step(&w, &engine).await);
    }
    sqlite(&w, SEED_INSERT);
    for _ in 0..10 {
        assert!(!step(&w, &engine).await, "the command refused");
    }
    assert!(w.sim.sim.patches().is_empty());
    let row = only_request(&w).await;
    assert_eq!(row.status.as_deref(), Some("pending"), "{row:?}");
    let error = row.last_error.unwrap_or_default();
    assert!(
        error.contains("pre_withdraw_command exited 3")
            && error.contains("router 203.0.113.0/24 not ready"),
        "{error}"
    );

    std::fs::write(&script, "#!/bin/sh\nexit 0\n").unwrap();
    let mut performed = false;
    for _ in 0..5 {
        if step(&w, &engine).await {
            performed = true;
            break;
        }
    }
    assert!(performed);
    performed_as_scheduled(&w).await;
}

/// A request's PATCH timed out (its row got a retry time an hour ahead) and the daemon died
/// before the next reading, though Cloudflare had carried the PATCH out. The restarted instance
/// reconciles the intent with Cloudflare's reading (no second PATCH), and the request is done:
/// removed, and in the history as `auto_scheduled`. It is never failed later as a request
/// "from an earlier advertisement".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_whose_outcome_was_lost_in_a_crash_is_reconciled_as_done() {
    let (w, engine) = calm_world(|_| {}).await;
    while w.t() < 600 {
        assert!(!step(&w, &engine).await);
    }
    sqlite(&w, SEED_INSERT);
    sqlite(
        &w,
        "UPDATE pending_withdrawals SET retry_count = 1, next_retry_at = datetime('now','+1 hour'), \
         last_error = 'timed out'",
    );
    // What the crashed process left: the intent committed, the PATCH carried out.
    let mut state = w
        .store
        .prefix_state("203.0.113.0/24")
        .await
        .unwrap()
        .unwrap();
    state.intent_at = Some(w.now());
    let mut tx = w.store.begin().await.unwrap();
    tx.save_prefix_state(&state, w.now()).await.unwrap();
    tx.commit().await.unwrap();
    engine
        .client
        .set_advertised("p24", "b-p24", false)
        .await
        .unwrap();
    w.store
        .release_lease(autowithdraw::cycle::LEASE_NAME, &engine.holder)
        .await
        .unwrap();
    let restarted = Engine {
        holder: format!("{}-restarted", Engine::new_holder()),
        ..engine.clone()
    };
    w.clock.advance(chrono::Duration::minutes(2));
    let report = restarted.cycle().await.unwrap();
    assert_eq!(report.withdrawn, ["203.0.113.0/24"]);
    performed_as_scheduled(&w).await;
    for _ in 0..5 {
        w.clock.advance(chrono::Duration::minutes(1));
        restarted.cycle().await.unwrap();
    }
    assert!(
        !w.kinds().await.iter().any(|k| k == "operator_alert"),
        "never failed as stale"
    );
}
