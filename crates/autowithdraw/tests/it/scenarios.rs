//! The autowithdraw issue's scenarios.

use cf_sim::{Endpoint, Fault};
use mt_store::{ActionTaken, EventType, NewAttackEvent};

use crate::common::*;

/// calm_period 15 min + analytics_delay 3 min after the last attack minute.
const CALM_AND_DELAY: i64 = 15 * 60 + 3 * 60;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attack_then_calm_is_withdrawn_at_the_right_time_never_before() {
    // Advertised 30 minutes ago; attack until 10 minutes after start.
    let w = World::new(
        vec![prefix("p24", "203.0.113.0/24", 1800)],
        vec![attack("203.0.113.10", -1800, 600)],
        "",
    )
    .await;
    let at = w
        .run_until_withdrawn("b-p24", 3600)
        .await
        .expect("withdrawn");
    assert_eq!(
        at,
        600 + CALM_AND_DELAY,
        "the first cycle at or after attack end + calm_period + analytics_delay"
    );

    let history = w.store.withdrawal_history(10).await.unwrap();
    assert_eq!(history.len(), 1);
    let h = &history[0];
    assert_eq!(
        (h.withdraw_method.as_deref(), h.status.as_deref()),
        (Some("auto_scheduled"), Some("success"))
    );
    assert!(
        h.notes.as_deref().unwrap().contains("50000 pps")
            && h.notes.as_deref().unwrap().contains("dosd"),
        "{:?}",
        h.notes
    );
    assert_eq!(h.protection_duration_seconds, Some(1800 + at));
    assert_eq!(
        h.attack_duration_seconds,
        Some(1800 + 600),
        "to the end of the last attack window"
    );
    let withdraw = w.store.attack_events(10, Some("WITHDRAW")).await.unwrap();
    assert_eq!(withdraw[0].action_taken.as_deref(), Some("withdrawn_auto"));
    assert!(w.kinds().await.contains(&"withdrawal_success".to_owned()));
    assert_eq!(w.sim.sim.patches().len(), 1, "exactly one PATCH");
    let calm = w.store.prefix_calm_statuses().await.unwrap();
    assert!(!calm[0].advertised);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intermittent_bursts_hold_until_a_full_calm_period_after_the_last() {
    // Two-minute bursts every ten minutes for an hour.
    let bursts = (0..6)
        .map(|i| attack("203.0.113.10", i * 600, i * 600 + 120))
        .collect();
    let w = World::new(vec![prefix("p24", "203.0.113.0/24", 1800)], bursts, "").await;
    let at = w
        .run_until_withdrawn("b-p24", 7200)
        .await
        .expect("withdrawn");
    assert_eq!(at, 3120 + CALM_AND_DELAY);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_analytics_never_read_as_calm_and_raise_the_blind_alert() {
    let w = World::new(
        vec![prefix("p24", "203.0.113.0/24", 1800)],
        vec![attack("203.0.113.10", -1800, 600)],
        "",
    )
    .await;
    // Up to the attack's end: fine. Then 30 minutes of GraphQL failures of every kind.
    while w.t() < 600 {
        w.step().await;
    }
    // (fault, how many requests one cycle's call makes: retried ones are tried four times;
    // budget errors are not retried and hold every query, see the next test)
    let faults = [(Fault::Status(502), 4), (Fault::Html(503), 4)];
    for i in 0..30 {
        let (fault, count) = faults[i % faults.len()].clone();
        let before = w.sim.sim.graphql_queries();
        w.sim.sim.inject(Endpoint::GraphQl, fault, count);
        let report = w.step().await;
        assert!(
            report.withdrawn.is_empty() && report.unknown.is_some(),
            "{report:?}"
        );
        assert_eq!(
            w.sim.sim.graphql_queries() - before,
            count,
            "every injected fault was consumed"
        );
    }
    assert!(
        w.sim.sim.bgp("b-p24").unwrap().advertised,
        "never withdrawn while blind"
    );
    assert!(w.sim.sim.patches().is_empty());
    let kinds = w.kinds().await;
    assert_eq!(
        kinds.iter().filter(|k| *k == "telemetry_blind").count(),
        1,
        "once per episode: {kinds:?}"
    );
    // Telemetry returns: the missed half hour is judged (it was calm), then withdrawn.
    let at = w.run_until_withdrawn("b-p24", 4 * 3600).await;
    assert!(at.is_some());
    assert!(w.kinds().await.contains(&"telemetry_recovered".to_owned()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graphql_budget_error_backs_off_five_minutes_without_a_burst() {
    for fault in [
        Fault::RateLimited(None),
        Fault::GraphQlError("rate limiter budget depleted, try again after 5 minutes".into()),
    ] {
        let w = World::new(
            vec![prefix("p24", "203.0.113.0/24", 1800)],
            vec![attack("203.0.113.10", -1800, 600)],
            "",
        )
        .await;
        while w.t() < 600 {
            w.step().await;
        }
        let before = w.sim.sim.graphql_queries();
        w.sim.sim.inject(Endpoint::GraphQl, fault.clone(), 1);
        // The budget error, then nothing sent for Cloudflare's five-minute window.
        for _ in 0..5 {
            let report = w.step().await;
            assert!(report.unknown.is_some(), "{fault:?}: {report:?}");
            assert!(report.withdrawn.is_empty());
        }
        assert_eq!(
            w.sim.sim.graphql_queries() - before,
            1,
            "{fault:?}: one query, no retry burst, none during the hold"
        );
        // After the window, judging resumes.
        let report = w.step().await;
        assert!(report.windows > 0, "{report:?}");
        assert!(w.sim.sim.graphql_queries() - before > 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_patch_is_retried_with_one_failure_message_and_one_success() {
    let w = World::new(
        vec![prefix("p24", "203.0.113.0/24", 1800)],
        vec![attack("203.0.113.10", -1800, 600)],
        "",
    )
    .await;
    while w.t() < 600 + CALM_AND_DELAY {
        w.step().await;
    }
    // The withdrawal cycle: GET ok, then the PATCH fails on every try.
    w.sim
        .sim
        .inject(Endpoint::Rest, Fault::Slow(std::time::Duration::ZERO), 1);
    w.sim.sim.inject(Endpoint::Rest, Fault::Status(503), 4);
    let report = w.step().await;
    assert_eq!(report.failed.len(), 1, "{report:?}");
    // Backoff: the next cycles hold, then it goes through.
    let at = w
        .run_until_withdrawn("b-p24", 600 + CALM_AND_DELAY + 600)
        .await
        .expect("withdrawn after backoff");
    assert!(at >= 600 + CALM_AND_DELAY + 60);
    let history = w.store.withdrawal_history(10).await.unwrap();
    let statuses: Vec<_> = history.iter().map(|h| h.status.clone().unwrap()).collect();
    assert_eq!(
        statuses,
        ["success", "failed"],
        "one failed row for the incident, one success"
    );
    assert!(history[1].notes.as_deref().unwrap().contains("attempts: 1"));
    let kinds = w.kinds().await;
    assert_eq!(
        kinds.iter().filter(|k| *k == "withdrawal_failure").count(),
        1
    );
    assert_eq!(
        kinds.iter().filter(|k| *k == "withdrawal_success").count(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_locked_manual_only_and_dry_run_prefixes_are_never_withdrawn() {
    let mut locked = prefix("plk", "192.0.2.0/24", 1800);
    locked.locked = true;
    let prefixes = vec![
        prefix("ppin", "203.0.113.0/24", 1800),
        locked,
        prefix("pman", "198.51.100.0/24", 1800),
    ];
    let extra = "";
    let w = World::new(prefixes.clone(), vec![], extra).await;
    // auto_withdraw = false for pman: rewrite the config.
    let mut config = (*w.engine.config).clone();
    config.prefixes[2].auto_withdraw = false;
    let engine = autowithdraw::cycle::Engine {
        config: std::sync::Arc::new(config),
        ..w.engine.clone()
    };
    let mut tx = w.store.begin().await.unwrap();
    tx.pin_prefix(
        "203.0.113.0/24",
        "alice",
        "customer maintenance",
        w.now(),
        None,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    for _ in 0..40 {
        let report = engine.cycle().await.unwrap();
        w.clock.advance(chrono::Duration::seconds(60));
        assert!(report.withdrawn.is_empty());
        if w.t() > 30 * 60 {
            let held: Vec<_> = report
                .held
                .iter()
                .map(|(p, why)| format!("{p}: {why}"))
                .collect();
            assert!(
                held.iter().any(|h| h.contains("pinned by alice")),
                "{held:?}"
            );
            assert!(held.iter().any(|h| h.contains("locked")), "{held:?}");
            assert!(
                held.iter().any(|h| h.contains("auto_withdraw = false")),
                "{held:?}"
            );
        }
    }
    assert!(w.sim.sim.patches().is_empty());

    let dry = World::new(
        vec![prefix("p24", "203.0.113.0/24", 1800)],
        vec![],
        "[autowithdraw]\ndry_run = true\n",
    )
    .await;
    for _ in 0..30 {
        dry.step().await;
    }
    assert!(
        dry.sim.sim.patches().is_empty(),
        "dry run never calls PATCH"
    );
    let kinds = dry.kinds().await;
    assert_eq!(
        kinds.iter().filter(|k| *k == "would_withdraw").count(),
        1,
        "{kinds:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attribution_is_by_cidr_v4_24_v4_23_v6_48_and_neighbours_never_count() {
    let prefixes = vec![
        prefix("p24", "203.0.113.0/24", 1800),
        prefix("p23", "198.51.100.0/23", 1800),
        prefix("p48", "2001:db8:1000::/48", 1800),
    ];
    let traffic = vec![
        attack("203.0.112.77", -1800, 7200), // neighbour of the /24: must not hold it
        attack("198.51.101.9", -1800, 600),  // inside the /23
        attack("2001:db8:1000:5::1", -1800, 1200), // inside the /48
        attack("2001:db8:1001::1", -1800, 7200), // neighbour of the /48
    ];
    let w = World::new(prefixes, traffic, "").await;
    let mut withdrawn_at = std::collections::BTreeMap::new();
    while w.t() <= 1200 + CALM_AND_DELAY {
        let t = w.t();
        for p in w.step().await.withdrawn {
            withdrawn_at.insert(p, t);
        }
    }
    // The /24 had no attack of its own: judged calm from the first window (which starts
    // 480 s before the start), so a full calm period is reached at t = 600 s. The neighbour's
    // attack, which lasts two hours, never held it.
    assert_eq!(
        withdrawn_at.get("203.0.113.0/24"),
        Some(&600),
        "{withdrawn_at:?}"
    );
    assert_eq!(
        withdrawn_at.get("198.51.100.0/23"),
        Some(&(600 + CALM_AND_DELAY))
    );
    assert_eq!(
        withdrawn_at.get("2001:db8:1000::/48"),
        Some(&(1200 + CALM_AND_DELAY))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_webhook_restarts_the_calm_clock_whenever_it_arrives() {
    let w = World::new(
        vec![prefix("p24", "203.0.113.0/24", 1800)],
        vec![attack("203.0.113.10", -1800, 600)],
        "",
    )
    .await;
    while w.t() < 600 + 10 * 60 {
        w.step().await;
    }
    // Ten minutes into the calm period the receiver logs a START (analytics show nothing yet).
    let start_at = w.now();
    let alert = |attack_id: &str, at| NewAttackEvent {
        prefix: Some("203.0.113.0/24".into()),
        alert_type: Some("advanced_ddos_attack_l4_alert".into()),
        attack_id: Some(attack_id.into()),
        policy_id: Some("pol-1".into()),
        policy_name: Some("MT on-demand".into()),
        target_ip: Some("203.0.113.10".into()),
        ..NewAttackEvent::new(EventType::Start, ActionTaken::Mitigating, at)
    };
    // An attack of an earlier incident, long before this advertisement: not this one's.
    w.store
        .log_attack_event(&alert("old-attack", w.now() - chrono::Duration::hours(3)))
        .await
        .unwrap();
    w.store
        .log_attack_event(&alert("attack-42", start_at))
        .await
        .unwrap();
    w.step().await;
    let calm = w.store.prefix_calm_statuses().await.unwrap();
    assert!(
        calm[0].under_attack,
        "a START without an END shows as under attack"
    );
    let at = w
        .run_until_withdrawn("b-p24", 7200)
        .await
        .expect("withdrawn");
    assert_eq!(
        at,
        600 + 10 * 60 + 15 * 60 + 3 * 60,
        "a full calm period after the START, judged after the delay"
    );
    // The history row names the attack the incident answered, as the seed's rows do.
    let h = &w.store.withdrawal_history(1).await.unwrap()[0];
    assert_eq!(
        (
            h.attack_id.as_deref(),
            h.policy_id.as_deref(),
            h.policy_name.as_deref(),
            h.target_ip.as_deref(),
            h.attack_type.as_deref()
        ),
        (
            Some("attack-42"),
            Some("pol-1"),
            Some("MT on-demand"),
            Some("203.0.113.10"),
            Some("advanced_ddos_attack_l4_alert")
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_freshly_advertised_prefix_waits_for_the_settle_time_and_min_advertised() {
    // Advertised a minute ago; its attack's drops are not visible yet (nothing in analytics).
    let w = World::new(vec![prefix("p24", "203.0.113.0/24", 60)], vec![], "").await;
    let at = w
        .run_until_withdrawn("b-p24", 7200)
        .await
        .expect("withdrawn eventually");
    // Calm counts only from advertised_modified_at + 7 min settle; +15 min calm; +3 min delay.
    assert_eq!(at, -60 + 7 * 60 + 15 * 60 + 3 * 60);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_make_exactly_one_patch_and_the_second_takes_over() {
    let w = World::new(
        vec![prefix("p24", "203.0.113.0/24", 1800)],
        vec![attack("203.0.113.10", -1800, 600)],
        "",
    )
    .await;
    let b = w.second_instance().await;
    let mut withdrawn = 0;
    while w.t() <= 600 + CALM_AND_DELAY + 120 {
        let (ra, rb) = (w.engine.cycle().await.unwrap(), b.cycle().await.unwrap());
        assert!(
            ra.passive != rb.passive,
            "exactly one instance acts per cycle"
        );
        withdrawn += ra.withdrawn.len() + rb.withdrawn.len();
        w.clock.advance(chrono::Duration::seconds(60));
    }
    assert_eq!(withdrawn, 1);
    assert_eq!(w.sim.sim.patches().len(), 1, "exactly one PATCH");
    // The active instance stops: the other one takes over once the lease (5 min: longer than
    // the 4-minute cycle deadline, SPEC §7.9) expires, within the TTL and one interval.
    let mut took_over = None;
    for i in 0..8 {
        if !b.cycle().await.unwrap().passive {
            took_over = Some(i);
            break;
        }
        w.clock.advance(chrono::Duration::seconds(60));
    }
    assert!(took_over.is_some_and(|i| i <= 5), "{took_over:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_judges_the_missed_time_first_and_keeps_the_schedule() {
    let w = World::new(
        vec![prefix("p24", "203.0.113.0/24", 1800)],
        vec![attack("203.0.113.10", -1800, 600)],
        "",
    )
    .await;
    while w.t() < 600 + 8 * 60 {
        w.step().await;
    }
    // Down for ten minutes, then a new process (new pool, new holder) on the same database.
    w.clock.advance(chrono::Duration::minutes(10));
    let restarted = w.second_instance().await;
    let mut at = None;
    for _ in 0..20 {
        // The old instance's lease has expired after three intervals of downtime.
        let t = w.t();
        if !restarted.cycle().await.unwrap().withdrawn.is_empty() {
            at = Some(t);
            break;
        }
        w.clock.advance(chrono::Duration::seconds(60));
    }
    assert_eq!(
        at,
        Some(600 + CALM_AND_DELAY),
        "calm during the downtime was judged: the original schedule holds"
    );

    // An attack during a downtime is caught by the catch-up and delays the withdrawal.
    let w = World::new(
        vec![prefix("p24", "203.0.113.0/24", 1800)],
        vec![
            attack("203.0.113.10", -1800, 600),
            attack("203.0.113.10", 900, 1020),
        ],
        "",
    )
    .await;
    while w.t() < 840 {
        w.step().await;
    }
    w.clock.advance(chrono::Duration::minutes(10));
    let restarted = w.second_instance().await;
    let mut at = None;
    for _ in 0..40 {
        let t = w.t();
        if !restarted.cycle().await.unwrap().withdrawn.is_empty() {
            at = Some(t);
            break;
        }
        w.clock.advance(chrono::Duration::seconds(60));
    }
    // Catch-up judges whole windows (5 min): the window holding the burst's end is an attack
    // window, so calm restarts at its end. Never before the burst's end + calm + delay, and at
    // most one window later.
    let at = at.expect("withdrawn after the catch-up");
    assert!(
        at >= 1020 + CALM_AND_DELAY,
        "the burst during the downtime restarted the calm clock: {at}"
    );
    assert!(at <= 1020 + CALM_AND_DELAY + 300, "{at}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_re_advertisement_is_a_new_incident_without_a_stale_calm_clock() {
    let w = World::new(
        vec![prefix("p24", "203.0.113.0/24", 1800)],
        vec![attack("203.0.113.10", -1800, 600)],
        "",
    )
    .await;
    let first = w
        .run_until_withdrawn("b-p24", 3600)
        .await
        .expect("withdrawn");
    // Cloudflare auto-advertises it again ten minutes later (a new attack, drops not yet seen).
    while w.t() < first + 600 {
        w.step().await;
    }
    let readvertised = w.t();
    assert!(w.sim.sim.auto_advertise("b-p24"));
    let second = w
        .run_until_withdrawn("b-p24", readvertised + 7200)
        .await
        .expect("withdrawn again");
    // Not before min_advertised, the settle time and a full calm period from the settle.
    assert_eq!(second, readvertised + 7 * 60 + 15 * 60 + 3 * 60);
    let advertise = w.store.attack_events(10, Some("ADVERTISE")).await.unwrap();
    assert_eq!(
        advertise.len(),
        1,
        "the change we did not make is logged once"
    );
    assert_eq!(
        advertise[0].action_taken.as_deref(),
        Some("auto_advertised")
    );
    assert_eq!(w.store.withdrawal_history(10).await.unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_pre_withdraw_command_blocks_the_withdrawal_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("announce-from-origin");
    std::fs::write(
        &script,
        "#!/bin/sh\necho \"origin session down for $1\" >&2\nexit 3\n",
    )
    .unwrap();
    std::process::Command::new("chmod")
        .arg("+x")
        .arg(&script)
        .status()
        .unwrap();
    let extra = format!(
        "[autowithdraw]\npre_withdraw_command = \"{}\"\n",
        script.display()
    );
    let w = World::new(
        vec![prefix("p24", "203.0.113.0/24", 1800)],
        vec![attack("203.0.113.10", -1800, 600)],
        &extra,
    )
    .await;
    let mut last = Default::default();
    while w.t() <= 600 + CALM_AND_DELAY + 120 {
        last = w.step().await;
    }
    assert!(w.sim.sim.patches().is_empty());
    let autowithdraw::cycle::CycleReport { held, .. } = last;
    assert!(
        held.iter()
            .any(|(_, why)| why.contains("pre_withdraw_command exited 3")
                && why.contains("origin session down for 203.0.113.0/24")),
        "{held:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_that_does_not_match_the_account_is_never_acted_on_and_alerted_once() {
    // Cloudflare's BGP prefix b-p24 is 198.51.100.0/24; the config says 203.0.113.0/24.
    // Another prefix is advertised on the account but missing from the config.
    let mut wrong = prefix("p24", "198.51.100.0/24", 1800);
    wrong.bgp_id = "b-p24".into();
    let w = World::new(vec![wrong, prefix("pun", "192.0.2.0/24", 1800)], vec![], "").await;
    let mut config = (*w.engine.config).clone();
    config.prefixes.truncate(1);
    config.prefixes[0].cidr = "203.0.113.0/24".parse().unwrap();
    let engine = autowithdraw::cycle::Engine {
        config: std::sync::Arc::new(config),
        ..w.engine.clone()
    };
    let mut last = Default::default();
    for _ in 0..40 {
        last = engine.cycle().await.unwrap();
        w.clock.advance(chrono::Duration::seconds(60));
    }
    assert!(w.sim.sim.patches().is_empty(), "never acted on");
    let autowithdraw::cycle::CycleReport { held, .. } = last;
    assert!(
        held.iter()
            .any(|(p, why)| p == "203.0.113.0/24" && why.contains("does not match")),
        "{held:?}"
    );
    let alerts: Vec<String> = w
        .store
        .notifications(100)
        .await
        .unwrap()
        .into_iter()
        .filter(|n| n.kind == "operator_alert")
        .map(|n| n.text)
        .collect();
    assert_eq!(
        alerts.len(),
        2,
        "one mismatch and one unmanaged alert, not repeated: {alerts:#?}"
    );
    assert!(
        alerts
            .iter()
            .any(|t| t.contains("CONFIG DOES NOT MATCH") && t.contains("198\\.51\\.100\\.0/24"))
    );
    assert!(
        alerts
            .iter()
            .any(|t| t.contains("ADVERTISED PREFIX NOT MANAGED") && t.contains("`192.0.2.0/24`"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_is_alerted_once_and_nothing_is_done() {
    let w = World::new(
        vec![prefix("p24", "203.0.113.0/24", 1800)],
        vec![attack("203.0.113.10", -1800, 0)],
        "",
    )
    .await;
    let config = w.engine.config.clone();
    let bad = mt_cloudflare::Client::new(
        &config.cloudflare,
        &secrecy::SecretString::from("wrong-token".to_owned()),
        mt_cloudflare::ClientOptions::default(),
    )
    .unwrap();
    let engine = autowithdraw::cycle::Engine {
        client: bad,
        ..w.engine.clone()
    };
    for _ in 0..30 {
        let report = engine.cycle().await.unwrap();
        assert!(report.withdrawn.is_empty());
        w.clock.advance(chrono::Duration::seconds(60));
    }
    assert!(w.sim.sim.patches().is_empty());
    let kinds = w.kinds().await;
    assert_eq!(
        kinds.iter().filter(|k| *k == "operator_alert").count(),
        1,
        "{kinds:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_inserted_pending_withdrawal_is_performed_when_not_under_attack() {
    // Auto-withdraw is off for this prefix: only the operator's request withdraws it.
    let w = World::new(
        vec![prefix("p24", "203.0.113.0/24", 1800)],
        vec![attack("203.0.113.10", -1800, 600)],
        "",
    )
    .await;
    let mut config = (*w.engine.config).clone();
    config.prefixes[0].auto_withdraw = false;
    let engine = autowithdraw::cycle::Engine {
        config: std::sync::Arc::new(config),
        ..w.engine.clone()
    };
    // The seed's manual insert, due two minutes from now (the attack is still on).
    let db = w.engine.config.database.path.clone();
    let inserted = std::process::Command::new("sqlite3")
        .arg(&db)
        .arg(format!(
            "INSERT INTO pending_withdrawals (prefix, attack_id, withdraw_after, status) VALUES ('203.0.113.0/24', 'manual-7', '{}', 'pending')",
            mt_common::timefmt::to_db(w.now() + chrono::Duration::minutes(2))
        ))
        .status()
        .unwrap();
    assert!(inserted.success());
    let mut performed_at = None;
    for _ in 0..30 {
        let t = w.t();
        let report = engine.cycle().await.unwrap();
        w.clock.advance(chrono::Duration::seconds(60));
        if !report.withdrawn.is_empty() {
            performed_at = Some(t);
            break;
        }
        if t == 300 {
            let pending = w.store.all_pending_withdrawals().await.unwrap();
            assert_eq!(
                pending[0].last_error.as_deref(),
                Some("under attack in the current judgement"),
                "refused, and says why"
            );
        }
    }
    // The attack ends at 600 s; its last window is judged at 600 + 180 + 60: then, no calm
    // period needed, the request is performed.
    let at = performed_at.expect("performed");
    assert!((600 + 180..=600 + 180 + 300).contains(&at), "{at}");
    assert!(
        w.store.all_pending_withdrawals().await.unwrap().is_empty(),
        "moved to the history"
    );
    let history = w.store.withdrawal_history(10).await.unwrap();
    assert_eq!(
        (
            history[0].withdraw_method.as_deref(),
            history[0].status.as_deref()
        ),
        (Some("auto_scheduled"), Some("success"))
    );
    assert_eq!(
        history[0].attack_id.as_deref(),
        Some("manual-7"),
        "the request's attack id is kept in the history"
    );
    assert_eq!(w.sim.sim.patches().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_advertisement_is_reminded_with_the_reason() {
    let w = World::new(
        vec![prefix("p24", "203.0.113.0/24", 1800)],
        vec![],
        "[autowithdraw]\nadvertised_reminder = \"40m\"\n",
    )
    .await;
    let mut tx = w.store.begin().await.unwrap();
    tx.pin_prefix(
        "203.0.113.0/24",
        "alice",
        "customer maintenance",
        w.now(),
        None,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    while w.t() < 3600 {
        w.step().await;
    }
    let reminders: Vec<String> = w
        .store
        .notifications(100)
        .await
        .unwrap()
        .into_iter()
        .filter(|n| n.kind == "operator_alert")
        .map(|n| n.text)
        .collect();
    // Advertised since -30 min: reminders at +10 min and +50 min.
    assert_eq!(reminders.len(), 2, "{reminders:#?}");
    assert!(
        reminders[0].contains("PREFIX STILL ADVERTISED")
            && reminders[0].contains("pinned by alice"),
        "{}",
        reminders[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_withdrawal_cloudflare_does_not_carry_out_is_alerted_once() {
    let w = World::new(
        vec![prefix("p24", "203.0.113.0/24", 1800)],
        vec![attack("203.0.113.10", -1800, 600)],
        "",
    )
    .await;
    w.sim.sim.ignore_patches(true);
    while w.t() <= 600 + CALM_AND_DELAY {
        w.step().await;
    }
    assert_eq!(
        w.store.withdrawal_history(10).await.unwrap().len(),
        1,
        "the PATCH was answered 200"
    );
    assert!(
        w.sim.sim.bgp("b-p24").unwrap().advertised,
        "but not carried out"
    );
    for _ in 0..25 {
        w.step().await;
    }
    let alerts: Vec<String> = w
        .store
        .notifications(100)
        .await
        .unwrap()
        .into_iter()
        .filter(|n| n.kind == "operator_alert")
        .map(|n| n.text)
        .collect();
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    assert!(alerts[0].contains("WITHDRAWAL NOT CARRIED OUT"));
    assert!(
        w.store
            .attack_events(10, Some("ADVERTISE"))
            .await
            .unwrap()
            .is_empty(),
        "not mistaken for a new advertisement"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_withdrawal_interrupted_by_a_crash_is_reconciled_not_replayed() {
    let w = World::new(
        vec![prefix("p24", "203.0.113.0/24", 1800)],
        vec![attack("203.0.113.10", -1800, 600)],
        "",
    )
    .await;
    for _ in 0..5 {
        w.step().await;
    }
    // The process recorded its intent and the PATCH went through, then it died before recording.
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
    w.engine
        .client
        .set_advertised("p24", "b-p24", false)
        .await
        .unwrap();
    let restarted = w.second_instance().await;
    // Restarted after the dead process's lease (5 min) expired.
    w.clock.advance(chrono::Duration::minutes(6));
    assert!(!restarted.cycle().await.unwrap().passive);
    assert_eq!(w.sim.sim.patches().len(), 1, "not replayed");
    let history = w.store.withdrawal_history(10).await.unwrap();
    assert_eq!(
        history.len(),
        1,
        "the withdrawal that went through is recorded"
    );
    assert_eq!(
        w.store
            .attack_events(10, Some("WITHDRAW"))
            .await
            .unwrap()
            .len(),
        1
    );

    // An intent whose PATCH never happened is dropped; the gates decide again (not calm yet).
    let w = World::new(
        vec![prefix("p24", "203.0.113.0/24", 1800)],
        vec![attack("203.0.113.10", -1800, 600)],
        "",
    )
    .await;
    w.step().await;
    let mut state = w
        .store
        .prefix_state("203.0.113.0/24")
        .await
        .unwrap()
        .unwrap();
    state.intent_at = Some(w.now() - chrono::Duration::hours(2));
    let mut tx = w.store.begin().await.unwrap();
    tx.save_prefix_state(&state, w.now()).await.unwrap();
    tx.commit().await.unwrap();
    w.step().await;
    assert!(
        w.sim.sim.patches().is_empty(),
        "an intent is never replayed"
    );
    assert!(
        w.store
            .prefix_state("203.0.113.0/24")
            .await
            .unwrap()
            .unwrap()
            .intent_at
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_patch_waits_for_retry_after() {
    let w = World::new(
        vec![prefix("p24", "203.0.113.0/24", 1800)],
        vec![attack("203.0.113.10", -1800, 600)],
        "",
    )
    .await;
    while w.t() < 600 + CALM_AND_DELAY {
        w.step().await;
    }
    // GET answers; the PATCH gets 429 with Retry-After: 600 (longer than the client waits).
    w.sim
        .sim
        .inject(Endpoint::Rest, Fault::Slow(std::time::Duration::ZERO), 1);
    w.sim
        .sim
        .inject(Endpoint::Rest, Fault::RateLimited(Some(600)), 1);
    let report = w.step().await;
    assert_eq!(report.failed.len(), 1, "{report:?}");
    let at = w
        .run_until_withdrawn("b-p24", 600 + CALM_AND_DELAY + 1200)
        .await
        .expect("withdrawn later");
    assert!(
        at >= 600 + CALM_AND_DELAY + 600,
        "not before Retry-After: {at}"
    );
    let kinds = w.kinds().await;
    assert_eq!(
        kinds.iter().filter(|k| *k == "withdrawal_failure").count(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clock_skew_over_30_seconds_is_unknown_not_calm() {
    let w = World::new(vec![prefix("p24", "203.0.113.0/24", 1800)], vec![], "").await;
    // This host's clock runs a minute ahead of Cloudflare's.
    let skewed = mt_common::ManualClock::new(w.now() + chrono::Duration::seconds(60));
    let engine = autowithdraw::cycle::Engine {
        clock: skewed.shared(),
        ..w.engine.clone()
    };
    for _ in 0..40 {
        let report = engine.cycle().await.unwrap();
        assert!(report.withdrawn.is_empty());
        assert!(
            report
                .unknown
                .as_deref()
                .is_some_and(|u| u.contains("clock skew")),
            "{report:?}"
        );
        w.clock.advance(chrono::Duration::seconds(60));
        skewed.advance(chrono::Duration::seconds(60));
    }
    assert!(w.sim.sim.patches().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_patch_is_retried_later_and_recorded_once() {
    let w = World::new(
        vec![prefix("p24", "203.0.113.0/24", 1800)],
        vec![attack("203.0.113.10", -1800, 600)],
        "",
    )
    .await;
    // A client that gives up after 300 ms, retried three times.
    let options = mt_cloudflare::ClientOptions {
        request_timeout: std::time::Duration::from_millis(300),
        retry: mt_cloudflare::RetryPolicy {
            delays: vec![std::time::Duration::from_millis(1); 3],
            max_retry_after: std::time::Duration::from_secs(1),
        },
        ..mt_cloudflare::ClientOptions::default()
    };
    let client = mt_cloudflare::Client::new(
        &w.engine.config.cloudflare,
        &secrecy::SecretString::from("cf-sim-token".to_owned()),
        options,
    )
    .unwrap();
    let engine = autowithdraw::cycle::Engine {
        client,
        ..w.engine.clone()
    };
    while w.t() < 600 + CALM_AND_DELAY {
        engine.cycle().await.unwrap();
        w.clock.advance(chrono::Duration::seconds(60));
    }
    // GET answers; the PATCH hangs past the timeout on every try. A hanging request still
    // reaches the simulator after the delay: the engine cannot know, so it must not record a
    // success; the next cycle sees the real state.
    w.sim
        .sim
        .inject(Endpoint::Rest, Fault::Slow(std::time::Duration::ZERO), 1);
    w.sim.sim.inject(
        Endpoint::Rest,
        Fault::Slow(std::time::Duration::from_secs(2)),
        4,
    );
    let report = engine.cycle().await.unwrap();
    assert_eq!(report.failed.len(), 1, "{report:?}");
    assert!(report.failed[0].1.contains("timed out"), "{report:?}");
    assert!(
        w.store
            .withdrawal_history(10)
            .await
            .unwrap()
            .iter()
            .all(|h| h.status.as_deref() == Some("failed"))
    );
    // Let the abandoned requests land, then keep cycling: whichever way Cloudflare ended up,
    // the withdrawal is recorded exactly once.
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    for _ in 0..10 {
        w.clock.advance(chrono::Duration::seconds(60));
        engine.cycle().await.unwrap();
    }
    assert!(!w.sim.sim.bgp("b-p24").unwrap().advertised);
    let history = w.store.withdrawal_history(10).await.unwrap();
    let successes = history
        .iter()
        .filter(|h| h.status.as_deref() == Some("success"))
        .count();
    assert_eq!(successes, 1, "our withdrawal, recorded once: {history:?}");
    let events = w.store.attack_events(10, Some("WITHDRAW")).await.unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(
        events[0].action_taken.as_deref(),
        Some("withdrawn_auto"),
        "not mistaken for someone else's"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_advertisement_at_a_fractional_second_is_one_change_not_one_per_cycle() {
    // Cloudflare's advertised_modified_at has sub-second digits; the database keeps whole
    // seconds. Seen as a new change every cycle, the calm clock would never run.
    let withdrawn_long_ago = cf_sim::PrefixSpec {
        advertised: false,
        ..prefix("p24", "203.0.113.0/24", 86_400)
    };
    let w = World::new(vec![withdrawn_long_ago], vec![], "").await;
    w.step().await;
    // Cloudflare advertises it at t = 60.437 s.
    w.clock.advance(chrono::Duration::milliseconds(437));
    let advertised_at = w.t();
    assert!(w.sim.sim.auto_advertise("b-p24"));
    let withdrawn = w
        .run_until_withdrawn("b-p24", advertised_at + 7200)
        .await
        .expect("withdrawn once calm");
    // Settle (7 min) + a full calm period (15 min) + analytics delay (3 min), give or take
    // the cycle the fraction falls into.
    let after = withdrawn - advertised_at;
    assert!(
        (25 * 60..=26 * 60).contains(&after),
        "withdrawn {after}s after the advertisement"
    );
    let advertise = w.store.attack_events(10, Some("ADVERTISE")).await.unwrap();
    assert_eq!(advertise.len(), 1, "one change logged, not one per cycle");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_dataset_is_unknown_alerted_once_and_never_withdraws() {
    let w = World::new(
        vec![prefix("p24", "203.0.113.0/24", 1800)],
        vec![attack("203.0.113.10", -1800, -1200)],
        "",
    )
    .await;
    let disabled = cf_sim::scenario::DatasetSettings {
        enabled: false,
        ..Default::default()
    };
    w.sim
        .sim
        .set_dataset_settings(mt_cloudflare::graphql::CALM_DATASET, disabled);
    // Calm all along, long advertised: without the dataset it is still never withdrawn.
    for _ in 0..45 {
        let report = w.step().await;
        let unknown = report.unknown.clone().unwrap_or_default();
        assert!(unknown.contains("not enabled"), "{report:?}");
        assert_eq!(report.windows, 0, "no query is sent to a disabled dataset");
        assert!(report.withdrawn.is_empty());
    }
    assert!(w.sim.sim.patches().is_empty());
    let alerts = |kinds: &[String]| kinds.iter().filter(|k| *k == "operator_alert").count();
    assert_eq!(
        alerts(&w.kinds().await),
        1,
        "one alert: {:?}",
        w.kinds().await
    );
    assert!(w.kinds().await.contains(&"telemetry_blind".to_owned()));

    // The account gets the dataset back: seen at the hourly re-read, said once, then withdrawn
    // after a full calm period judged from then on.
    w.sim.sim.set_dataset_settings(
        mt_cloudflare::graphql::CALM_DATASET,
        cf_sim::scenario::DatasetSettings::default(),
    );
    let at = w
        .run_until_withdrawn("b-p24", 4 * 3600)
        .await
        .expect("withdrawn");
    assert!(at >= 3600, "not before the re-read: {at}");
    assert_eq!(alerts(&w.kinds().await), 2, "and one 'usable again'");
    assert_eq!(w.sim.sim.patches().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_older_than_not_older_than_is_declared_lost_and_breaks_the_stretch() {
    let w = World::new(
        vec![prefix("p24", "203.0.113.0/24", 1800)],
        vec![attack("203.0.113.10", -1800, 600)],
        "",
    )
    .await;
    w.sim.sim.set_dataset_settings(
        mt_cloudflare::graphql::CALM_DATASET,
        cf_sim::scenario::DatasetSettings {
            not_older_than: std::time::Duration::from_secs(900),
            ..Default::default()
        },
    );
    while w.t() < 900 {
        assert!(w.step().await.lost.is_empty());
    }
    let judged_before = w
        .store
        .state(autowithdraw::cycle::JUDGED_UNTIL_KEY)
        .await
        .unwrap()
        .and_then(|t| mt_common::timefmt::from_db(&t))
        .unwrap();
    // An hour of downtime: most of it can no longer be queried.
    w.clock.advance(chrono::Duration::seconds(3600));
    let now = w.now();
    let report = w.step().await;
    assert_eq!(report.lost.len(), 1, "{report:?}");
    let gap = &report.lost[0];
    assert_eq!(gap.start, judged_before);
    // notOlderThan less one interval, so the query is still allowed when it arrives.
    assert_eq!(gap.end, now - chrono::Duration::seconds(900 - 60));
    assert!(
        report.withdrawn.is_empty(),
        "the calm before the gap does not count"
    );
    assert_eq!(w.store.telemetry_gaps(10).await.unwrap(), vec![gap.clone()]);
    let state = w
        .store
        .prefix_state("203.0.113.0/24")
        .await
        .unwrap()
        .unwrap();
    assert!(
        state.calm_since.is_some_and(|c| c >= gap.end),
        "the stretch restarts after the gap: {:?}",
        state.calm_since
    );
    let at = w
        .run_until_withdrawn("b-p24", 4 * 3600)
        .await
        .expect("withdrawn");
    let gap_end = (gap.end - w.sim.sim.start()).num_seconds();
    assert!(at >= gap_end + CALM_AND_DELAY, "{at} vs gap end {gap_end}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_not_older_than_too_short_to_judge_anything_is_unknown_and_alerted() {
    let w = World::new(
        vec![prefix("p24", "203.0.113.0/24", 1800)],
        vec![attack("203.0.113.10", -1800, -1200)],
        "",
    )
    .await;
    // 300 s back is less than analytics_delay (180 s) + interval (60 s) + window (300 s).
    w.sim.sim.set_dataset_settings(
        mt_cloudflare::graphql::CALM_DATASET,
        cf_sim::scenario::DatasetSettings {
            not_older_than: std::time::Duration::from_secs(300),
            ..Default::default()
        },
    );
    for _ in 0..30 {
        let report = w.step().await;
        let unknown = report.unknown.clone().unwrap_or_default();
        assert!(unknown.contains("too short"), "{report:?}");
        assert!(report.withdrawn.is_empty());
    }
    assert!(w.sim.sim.patches().is_empty());
    assert!(
        w.kinds().await.contains(&"telemetry_blind".to_owned()),
        "said, not silent"
    );
}
