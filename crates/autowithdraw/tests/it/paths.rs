//! The premature-withdrawal and double-PATCH paths a review found, each end to end through the
//! engine, cf-sim over loopback and a real SQLite file. Every test here withdrew (or
//! PATCHed twice) before the decision core.

use std::sync::Arc;

use autowithdraw::cycle::{Engine, JUDGED_UNTIL_KEY};
use cf_sim::{Endpoint, Fault};
use mt_store::{ActionTaken, EventType, NewAttackEvent};

use crate::common::*;

/// calm_period 15 min + analytics_delay 3 min.
const CALM_AND_DELAY: i64 = 15 * 60 + 3 * 60;

fn start_event(
    prefix: Option<&str>,
    target: Option<&str>,
    alert: &str,
    at: chrono::DateTime<chrono::Utc>,
) -> NewAttackEvent {
    NewAttackEvent {
        prefix: prefix.map(str::to_owned),
        alert_type: Some(alert.into()),
        target_ip: target.map(str::to_owned),
        ..NewAttackEvent::new(EventType::Start, ActionTaken::Mitigating, at)
    }
}

async fn judged_until(w: &World) -> Option<String> {
    w.store.state(JUDGED_UNTIL_KEY).await.unwrap()
}

/// Calm for the full period while pinned; then the analytics fail; then the pin expires.
/// Before: the gate measured `judged_until − calm_since` and withdrew on calm evidence many
/// minutes old. Now: no withdrawal until the telemetry is current again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pin_that_ends_while_analytics_fail_never_releases_old_calm() {
    let w = World::attacked_p24().await;
    let pin_until = w.now() + chrono::Duration::seconds(600 + CALM_AND_DELAY + 600);
    let mut tx = w.store.begin().await.unwrap();
    tx.pin_prefix(
        "203.0.113.0/24",
        "alice",
        "maintenance",
        w.now(),
        Some(pin_until),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    while w.t() < 600 + CALM_AND_DELAY + 300 {
        assert!(w.step().await.withdrawn.is_empty(), "pinned");
    }
    // Analytics fail from now on (every query answered 500) ...
    w.sim
        .sim
        .inject(Endpoint::GraphQl, Fault::Status(500), 10_000);
    // ... and the pin expires five minutes later; thirty minutes pass.
    for _ in 0..35 {
        let report = w.step().await;
        assert!(
            report.withdrawn.is_empty(),
            "withdrew on stale calm: {report:?}"
        );
    }
    assert!(w.sim.sim.patches().is_empty());
    let held = w.step().await.held;
    assert!(
        held.iter().any(|(_, why)| why.contains("telemetry behind")),
        "{held:?}"
    );
    // Analytics back: the backlog is judged, then it is withdrawn.
    w.sim.sim.clear_faults(Endpoint::GraphQl);
    let at = w
        .run_until_withdrawn("b-p24", 4 * 3600)
        .await
        .expect("withdrawn");
    println!("withdrawn at t={at}s, after the analytics came back");
}

/// Two hours of downtime in the middle of a calm stretch, and the attack resumed during it.
/// Before: the first cycle after the restart judged one hour (12 windows) of old calm and
/// withdrew, although the second hour held an attack. Now: no gate is looked at before the
/// catch-up is finished, and the stretch restarts after the attack.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_downtime_catch_up_finishes_before_any_gate() {
    let w = World::new(
        vec![prefix("p24", "203.0.113.0/24", 1800)],
        vec![
            attack("203.0.113.10", -1800, 600),
            // During the downtime, in its second hour.
            attack("203.0.113.10", 1200 + 4800, 1200 + 5400),
        ],
        "",
    )
    .await;
    while w.t() < 1200 {
        assert!(w.step().await.withdrawn.is_empty());
    }
    w.clock.advance(chrono::Duration::seconds(7200));
    let first = w.step().await;
    assert!(first.withdrawn.is_empty(), "{first:?}");
    assert!(
        first
            .held
            .iter()
            .any(|(_, why)| why.contains("telemetry behind")),
        "{first:?}"
    );
    let at = w
        .run_until_withdrawn("b-p24", 6 * 3600)
        .await
        .expect("withdrawn");
    assert!(
        at >= 1200 + 5400 + CALM_AND_DELAY - 60,
        "a full calm period after the resumed attack: {at}"
    );
}

/// The judged time and the prefix states commit together. Before, `judged_until` was
/// committed first: a failure between the two writes kept the advanced judged time but lost
/// the attack window's reset of `calm_since`. Here the states' write fails (a trigger aborts
/// it, as a full disk would): the judged time must not move either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_state_write_keeps_the_judged_time_back() {
    let w = World::attacked_p24().await;
    for _ in 0..5 {
        w.step().await;
    }
    let before = judged_until(&w).await;
    let db = w.engine.config.database.path.clone();
    let out = std::process::Command::new("sqlite3")
        .arg(&db)
        .arg(
            "CREATE TRIGGER fail_update BEFORE UPDATE ON autowithdraw_prefixes \
             BEGIN SELECT RAISE(ABORT, 'disk full'); END;",
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        w.engine.cycle().await.is_err(),
        "the cycle fails as a whole"
    );
    assert_eq!(
        judged_until(&w).await,
        before,
        "the judged time did not move alone"
    );
    let out = std::process::Command::new("sqlite3")
        .arg(&db)
        .arg("DROP TRIGGER fail_update;")
        .output()
        .unwrap();
    assert!(out.status.success());
    w.clock.advance(chrono::Duration::seconds(60));
    assert!(w.engine.cycle().await.is_ok());
    assert_ne!(judged_until(&w).await, before);
}

/// Rows that arrive after their window was judged calm. Before: never looked at again, and
/// the prefix was withdrawn on time although Cloudflare's data then showed an attack inside
/// the calm period. Now: the confirmation query immediately before the PATCH catches them
/// and the stretch restarts after them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_rows_are_caught_by_the_confirmation() {
    let w = World::attacked_p24().await;
    while w.t() < 600 + CALM_AND_DELAY - 60 {
        assert!(w.step().await.withdrawn.is_empty());
    }
    // Minutes 20–21 were judged calm long ago; their rows arrive only now.
    w.sim.sim.add_traffic(attack("203.0.113.10", 1200, 1260));
    w.step().await;
    // The cycle that would have withdrawn it.
    assert_eq!(w.t(), 600 + CALM_AND_DELAY);
    let report = w.step().await;
    assert!(report.withdrawn.is_empty(), "{report:?}");
    assert!(
        report
            .held
            .iter()
            .any(|(_, why)| why.contains("arrived late")),
        "{report:?}"
    );
    let at = w
        .run_until_withdrawn("b-p24", 4 * 3600)
        .await
        .expect("withdrawn");
    assert!(
        at >= 1260 + 15 * 60,
        "a full calm period after the late attack: {at}"
    );
}

/// A prefix removed from the config for half an hour (an attack hit it meanwhile) and added
/// back. Before: it kept its old `calm_since` across the time nobody judged it and was
/// withdrawn at once. Now: the time not judged for it breaks the stretch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefix_removed_and_added_back_does_not_keep_its_old_calm() {
    let w = World::new(
        vec![
            prefix("p24", "203.0.113.0/24", 1800),
            prefix("p48", "2001:db8:1000::/48", 1800),
        ],
        vec![
            attack("203.0.113.10", -1800, 600),
            attack("2001:db8:1000::1", -1800, 100_000),
            // While p24 is out of the config.
            attack("203.0.113.10", 1500, 1800),
        ],
        "",
    )
    .await;
    while w.t() < 1200 {
        w.step().await;
    }
    let mut config = (*w.engine.config).clone();
    config.prefixes.retain(|p| p.prefix_id != "p24");
    let without = Engine {
        config: Arc::new(config),
        ..w.engine.clone()
    };
    while w.t() < 2400 {
        without.cycle().await.unwrap();
        w.clock.advance(chrono::Duration::seconds(60));
    }
    let back = w.step().await;
    assert!(back.withdrawn.is_empty(), "{back:?}");
    let at = w
        .run_until_withdrawn("b-p24", 4 * 3600)
        .await
        .expect("withdrawn");
    // The stretch restarts at the first window judged for it again: the one starting at the
    // judged time of the re-adding cycle (2400 − 60 − analytics_delay).
    assert_eq!(
        at,
        2400 - 60 - 180 + CALM_AND_DELAY,
        "the stretch restarted after re-adding"
    );
}

/// A START whose row names a /24 inside the configured /23 (the original suite stored
/// `data.prefix` as given; an alert may name the more specific prefix). Before: only STARTs
/// stored under the /23 itself (or under no prefix) reset it, so the /23 was withdrawn during
/// the attack. Now: a START counts for every configured prefix containing its target.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_under_a_more_specific_prefix_resets_the_covering_one() {
    let w = World::new(
        vec![prefix("p23", "198.51.100.0/23", 1800)],
        vec![attack("198.51.100.10", -1800, 600)],
        "",
    )
    .await;
    while w.t() < 600 + CALM_AND_DELAY - 120 {
        w.step().await;
    }
    w.store
        .log_attack_event(&start_event(
            Some("198.51.101.0/24"),
            Some("198.51.101.7"),
            "dos_attack_l4",
            w.now(),
        ))
        .await
        .unwrap();
    let at = w
        .run_until_withdrawn("b-p23", 4 * 3600)
        .await
        .expect("withdrawn");
    assert_eq!(
        at,
        600 + CALM_AND_DELAY - 120 + CALM_AND_DELAY,
        "a full calm period after the START, judged after the delay"
    );
}

/// An L7 START (it names a hostname) and an L3/4 START whose target lies outside every
/// configured prefix. Before: both were stored without a prefix and reset every prefix's calm
/// clock. Now: neither counts, and the prefix is withdrawn on time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l7_and_outside_starts_reset_no_calm_clock() {
    let w = World::attacked_p24().await;
    while w.t() < 600 + 600 {
        w.step().await;
    }
    for event in [
        start_event(None, None, "advanced_ddos_attack_l7_alert", w.now()),
        start_event(None, Some("192.0.2.77"), "dos_attack_l4", w.now()),
    ] {
        w.store.log_attack_event(&event).await.unwrap();
    }
    let at = w
        .run_until_withdrawn("b-p24", 3600)
        .await
        .expect("withdrawn");
    assert_eq!(at, 600 + CALM_AND_DELAY, "on time");
}

/// A START that arrives while `pre_withdraw_command` runs, just before the PATCH. Before: the
/// START check ran minutes earlier in the cycle, and the PATCH went out. Now: the STARTs are
/// re-read immediately before the PATCH.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_received_just_before_the_patch_stops_it() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("pre-withdraw.sh");
    // The engine's clock is the simulator's; the START is dated inside the calm stretch.
    let w0 = World::attacked_p24().await;
    let start_at =
        mt_common::timefmt::to_db(w0.now() + chrono::Duration::seconds(600 + CALM_AND_DELAY - 30));
    let db = w0.engine.config.database.path.clone();
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nsqlite3 '{}' \"INSERT INTO attack_events (event_type, prefix, target_ip, alert_type, action_taken, created_at) \
             VALUES ('START', '$1', '203.0.113.10', 'dos_attack_l4', 'mitigating', '{start_at}')\"\n",
            db.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut config = (*w0.engine.config).clone();
    config.autowithdraw.pre_withdraw_command = script.display().to_string();
    let engine = Engine {
        config: Arc::new(config),
        ..w0.engine.clone()
    };
    let mut withdrawn_at = None;
    while w0.t() <= 600 + CALM_AND_DELAY + 3600 {
        let t = w0.t();
        let report = engine.cycle().await.unwrap();
        w0.clock.advance(chrono::Duration::seconds(60));
        if !report.withdrawn.is_empty() {
            withdrawn_at = Some(t);
            break;
        }
        if t == 600 + CALM_AND_DELAY {
            assert!(
                report.held.iter().any(|(_, why)| why.contains("START")),
                "{report:?}"
            );
        }
    }
    let at = withdrawn_at.expect("withdrawn after a new calm period");
    assert!(at >= 600 + CALM_AND_DELAY - 30 + CALM_AND_DELAY, "{at}");
}

/// A withdrawal Cloudflare answers 200 but never carries out. Before: calm built up again and
/// a second PATCH (second success row, second message) followed. Now: one PATCH per incident;
/// the operator is alerted instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_withdrawal_not_carried_out_is_never_patched_twice() {
    let w = World::attacked_p24().await;
    w.sim.sim.ignore_patches(true);
    while w.t() <= 600 + CALM_AND_DELAY + 2 * 3600 {
        w.step().await;
    }
    assert_eq!(w.sim.sim.patches().len(), 1, "{:?}", w.sim.sim.patches());
    let history = w.store.withdrawal_history(10).await.unwrap();
    assert_eq!(history.len(), 1);
    let successes = w
        .kinds()
        .await
        .iter()
        .filter(|k| *k == "withdrawal_success")
        .count();
    assert_eq!(successes, 1);
}

/// Cloudflare reports another CIDR for the configured BGP prefix id (between two hourly
/// account checks). Before: only the hourly check compared CIDRs, and the wrong prefix was
/// withdrawn. Now: the CIDR read every cycle must match.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cidr_that_no_longer_matches_is_never_acted_on() {
    let w = World::attacked_p24().await;
    for _ in 0..5 {
        w.step().await;
    }
    w.sim.sim.set_cidr("b-p24", "192.0.2.0/24".parse().unwrap());
    // Within the hour: the CIDR read this cycle holds it (the account check has not rerun).
    for _ in 0..45 {
        let report = w.step().await;
        assert!(report.withdrawn.is_empty(), "{report:?}");
        assert!(
            report.held.iter().any(|(_, why)| why.contains("CIDR")),
            "{report:?}"
        );
    }
    assert!(w.sim.sim.patches().is_empty());
}

/// Two instances, and a cycle slower than the lease: A's `pre_withdraw_command` hangs past
/// the lease's TTL, B takes the lease over (by the database's clock) and withdraws; then A's
/// command returns. Before: nothing fenced A, which PATCHed a second time. Now: A's intent
/// transaction finds the lease taken over and A stops without a PATCH (SPEC §7.9).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cycle_slower_than_the_lease_never_patches_after_a_takeover() {
    let dir = tempfile::tempdir().unwrap();
    let (started, go) = (dir.path().join("started"), dir.path().join("go"));
    let script = dir.path().join("pre-withdraw.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\ntouch '{}'\nwhile [ ! -f '{}' ]; do sleep 0.05; done\n",
            started.display(),
            go.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let w = World::attacked_p24().await;
    while w.t() < 600 + CALM_AND_DELAY {
        assert!(w.step().await.withdrawn.is_empty());
    }
    // Instance A (the lease holder so far), now with the hanging command.
    let mut config = (*w.engine.config).clone();
    config.autowithdraw.pre_withdraw_command = script.display().to_string();
    let a = Engine {
        config: Arc::new(config),
        ..w.engine.clone()
    };
    let slow = tokio::spawn(async move { a.cycle().await });
    let mut waited = 0;
    while !started.exists() {
        assert!(waited < 2000, "A reached its pre_withdraw_command");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        waited += 1;
    }
    // A hangs past its lease; B takes over and withdraws.
    w.clock.advance(
        chrono::Duration::from_std(w.engine.lease_ttl()).unwrap() + chrono::Duration::seconds(1),
    );
    let b = w.second_instance().await;
    let rb = b.cycle().await.unwrap();
    assert!(!rb.passive, "the lease expired by the database's clock");
    assert_eq!(rb.withdrawn, ["203.0.113.0/24"]);
    // A's command returns.
    std::fs::write(&go, "").unwrap();
    let ra = slow.await.unwrap().unwrap();
    assert_eq!(w.sim.sim.patches().len(), 1, "{:?}", w.sim.sim.patches());
    assert!(ra.lease_lost && ra.withdrawn.is_empty(), "{ra:?}");
    assert_eq!(w.store.withdrawal_history(10).await.unwrap().len(), 1);
}

/// The engine restarted (the old process gave its lease up) with a changed `[[prefixes]]`
/// section.
async fn restarted(w: &World, change: impl FnOnce(&mut mt_common::config::Config)) -> Engine {
    w.store
        .release_lease(autowithdraw::cycle::LEASE_NAME, &w.engine.holder)
        .await
        .unwrap();
    let mut config = (*w.engine.config).clone();
    change(&mut config);
    Engine {
        config: Arc::new(config),
        holder: format!("{}-restarted", Engine::new_holder()),
        ..w.engine.clone()
    }
}

/// The "config does not match the account" alerts sent so far.
async fn mismatch_alerts(w: &World) -> Vec<String> {
    w.store
        .notifications(100)
        .await
        .unwrap()
        .into_iter()
        .filter(|n| n.kind == "operator_alert" && n.text.contains("CONFIG DOES NOT MATCH"))
        .map(|n| n.text)
        .collect()
}

/// The operator fixes a wrong `bgp_prefix_id` and restarts within the hour. Before: the
/// account check's time was stored, so the restart skipped it and the stale "does not match"
/// held the prefix until the hourly check. Now: every start checks again, and the prefix is
/// withdrawn on schedule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fixed_config_is_checked_at_the_restart_not_an_hour_later() {
    let w = World::attacked_p24().await;
    let mut config = (*w.engine.config).clone();
    config.prefixes[0].bgp_prefix_id = "b-typo".into();
    let wrong = Engine {
        config: Arc::new(config),
        ..w.engine.clone()
    };
    while w.t() < 300 {
        let report = wrong.cycle().await.unwrap();
        w.clock.advance(chrono::Duration::seconds(60));
        assert!(report.withdrawn.is_empty());
    }
    assert_eq!(
        mismatch_alerts(&w).await.len(),
        1,
        "the mismatch is alerted"
    );
    let fixed = restarted(&w, |_| {}).await;
    let mut withdrawn_at = None;
    while w.t() <= 3600 {
        let t = w.t();
        let report = fixed.cycle().await.unwrap();
        w.clock.advance(chrono::Duration::seconds(60));
        if !report.withdrawn.is_empty() {
            withdrawn_at = Some(t);
            break;
        }
    }
    assert_eq!(withdrawn_at, Some(600 + CALM_AND_DELAY), "on schedule");
}

/// Two prefixes' `bgp_prefix_id`s swapped in the config, then a restart within the hour.
/// Before: the restart skipped the account check for up to an hour, so nobody was told. Now:
/// the first cycle after the restart alerts both, and neither is ever acted on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swapped_bgp_prefix_ids_after_a_restart_are_alerted_at_once() {
    let w = World::new(
        vec![
            prefix("p24", "203.0.113.0/24", 1800),
            prefix("p51", "198.51.100.0/24", 1800),
        ],
        vec![],
        "",
    )
    .await;
    for _ in 0..3 {
        w.step().await;
    }
    assert!(mismatch_alerts(&w).await.is_empty());
    let swapped = restarted(&w, |c| {
        c.prefixes[0].bgp_prefix_id = "b-p51".into();
        c.prefixes[1].bgp_prefix_id = "b-p24".into();
    })
    .await;
    let first = swapped.cycle().await.unwrap();
    let alerts = mismatch_alerts(&w).await;
    assert_eq!(alerts.len(), 2, "{alerts:#?}");
    assert!(
        alerts.iter().any(|a| a.contains("`203.0.113.0/24`"))
            && alerts.iter().any(|a| a.contains("`198.51.100.0/24`")),
        "{alerts:#?}"
    );
    assert_eq!(first.held.len(), 2, "{first:?}");
    for _ in 0..40 {
        w.clock.advance(chrono::Duration::seconds(60));
        swapped.cycle().await.unwrap();
    }
    assert!(w.sim.sim.patches().is_empty(), "never acted on");
    assert_eq!(mismatch_alerts(&w).await.len(), 2, "not repeated");
}

/// The `[[prefixes]]` section changes and the account list then fails. Before: a restart
/// within the hour skipped the check, and a failed list fell back to the last result, which
/// was the previous config's: ids nobody had confirmed were acted on. Now: every prefix is held,
/// saying why, until the account check of the new section succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_config_change_an_unconfirmed_account_holds_every_prefix() {
    let w = World::new(
        vec![
            prefix("p24", "203.0.113.0/24", 1800),
            prefix("p51", "198.51.100.0/24", 1800),
        ],
        vec![attack("203.0.113.10", -1800, 600)],
        "",
    )
    .await;
    let mut config = (*w.engine.config).clone();
    config.prefixes.truncate(1);
    let one = Engine {
        config: Arc::new(config),
        ..w.engine.clone()
    };
    one.cycle().await.unwrap();
    w.clock.advance(chrono::Duration::seconds(60));
    // Both prefixes configured now (w.engine's config); the restart's account list fails
    // (every attempt of the client's retries answered 500) until minute 40.
    let both = restarted(&w, |_| {}).await;
    let mut withdrawn_at = None;
    let mut held_why = Vec::new();
    while w.t() <= 3600 {
        let t = w.t();
        if t < 2400 {
            w.sim.sim.inject(Endpoint::Rest, Fault::Status(500), 4);
        }
        let report = both.cycle().await.unwrap();
        w.clock.advance(chrono::Duration::seconds(60));
        if t == 600 + CALM_AND_DELAY {
            held_why = report.held.clone();
        }
        if report.withdrawn.iter().any(|p| p == "203.0.113.0/24") {
            withdrawn_at = Some(t);
            break;
        }
    }
    assert!(
        held_why
            .iter()
            .any(|(p, why)| p == "203.0.113.0/24" && why.contains("has not succeeded since")),
        "{held_why:?}"
    );
    let at = withdrawn_at.expect("withdrawn once the account confirmed the new section");
    assert!((2400..=2400 + 120).contains(&at), "{at}");
}
