//! The real `mtctl` binary: exit codes, one-line config errors, migrating a legacy database.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure must panic

use std::path::Path;
use std::process::{Command, Output};

fn mtctl(config: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mtctl"));
    cmd.arg("--config")
        .arg(config)
        .args(args)
        .env_remove("RUST_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run mtctl")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn check_config_prints_the_effective_config_without_secrets() {
    let dir = tempfile::tempdir().expect("tmp");
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        "[telegram]\nchat_id = \"-100\"\norg_name = \"GOLINE SOC\"\n",
    )
    .expect("write");
    let out = mtctl(
        &config,
        &["check-config"],
        &[
            ("MT_TELEGRAM_BOT_TOKEN", "123:tok-9f8e7d6c"),
            ("MT_AUTOWITHDRAW__DRY_RUN", "true"),
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("org_name = \"GOLINE SOC\""), "{stdout}");
    assert!(
        stdout.contains("dry_run = true"),
        "env override shown: {stdout}"
    );
    assert!(
        stdout.contains("telegram bot token: set (env MT_TELEGRAM_BOT_TOKEN)"),
        "{stdout}"
    );
    assert!(!stdout.contains("tok-9f8e7d6c") && !text(&out.stderr).contains("tok-9f8e7d6c"));
}

#[test]
fn a_config_error_is_one_line_naming_the_key_with_exit_code_2() {
    let dir = tempfile::tempdir().expect("tmp");
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "[autowithdraw]\ncalm_perod = \"15m\"\n").expect("write");
    let out = mtctl(&config, &["check-config"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("calm_perod"), "{stderr}");

    let missing = mtctl(&dir.path().join("nope.toml"), &["migrate"], &[]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(text(&missing.stderr).contains("nope.toml"));

    let usage = mtctl(&config, &["no-such-command"], &[]);
    assert_eq!(usage.status.code(), Some(2));

    // A dashboard hash with the right prefix but no salt/hash would stop mt-dashboard at start:
    // check-config (the units' ExecStartPre) refuses it, naming the key.
    std::fs::write(
        &config,
        "[telegram]\nenabled = false\n[[dashboard.users]]\nname = \"alice\"\nrole = \"viewer\"\npassword_hash = \"$argon2id$v=19$m=19456,t=2,p=1\"\n",
    )
    .expect("write");
    let out = mtctl(&config, &["check-config"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("dashboard.users[0].password_hash"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "nothing printed as valid");
}

#[test]
fn migrate_adopts_a_legacy_database_then_is_a_no_op() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = dir.path().join("magic_transit.db");
    let schema =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../mt-store/tests/fixtures/legacy_schema.sql");
    let status = Command::new("sqlite3")
        .arg(&db)
        .arg(format!(".read {}", schema.display()))
        .status()
        .expect("sqlite3");
    assert!(status.success());
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[database]\npath = \"{}\"\n[telegram]\nenabled = false\n",
            db.display()
        ),
    )
    .expect("write");

    // Read commands never migrate: they say who may, and leave the file alone.
    for read in [
        &["status"][..],
        &["stats"],
        &["history"],
        &["webhooks", "recent"],
    ] {
        let out = mtctl(&config, read, &[]);
        assert_eq!(out.status.code(), Some(1), "{read:?}");
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains("older than this binary") && stderr.contains("mtctl migrate"),
            "{read:?}: {stderr}"
        );
    }
    let tables = Command::new("sqlite3")
        .arg(&db)
        .arg("SELECT COUNT(*) FROM sqlite_master WHERE name = 'mt_schema_migrations'")
        .output()
        .expect("sqlite3");
    assert_eq!(text(&tables.stdout).trim(), "0", "not migrated by a read");
    let missing = dir.path().join("other.toml");
    std::fs::write(
        &missing,
        format!(
            "[database]\npath = \"{}\"\n[telegram]\nenabled = false\n",
            dir.path().join("nothing-here.db").display()
        ),
    )
    .expect("write");
    let out = mtctl(&missing, &["status"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no database at"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        !dir.path().join("nothing-here.db").exists(),
        "a read creates nothing"
    );

    let first = mtctl(&config, &["migrate"], &[]);
    assert!(first.status.success(), "{}", text(&first.stderr));
    let stdout = text(&first.stdout);
    assert!(stdout.contains("migrated to schema version"), "{stdout}");
    assert!(
        stdout.contains("network_analytics_events.source_country"),
        "{stdout}"
    );

    let second = mtctl(&config, &["migrate"], &[]);
    assert!(second.status.success());
    assert!(text(&second.stdout).contains("up to date"));
    let status = mtctl(&config, &["status"], &[]);
    assert!(status.status.success(), "{}", text(&status.stderr));
}

#[test]
fn an_unusable_database_fails_with_exit_code_1() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = dir.path().join("garbage.db");
    std::fs::write(&db, vec![b'x'; 4096]).expect("write");
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[database]\npath = \"{}\"\n[telegram]\nenabled = false\n",
            db.display()
        ),
    )
    .expect("write");
    let out = mtctl(&config, &["migrate"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("not a database"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn notifications_shows_waiting_messages_with_their_last_error() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = dir.path().join("mt.db");
    let config_path = dir.path().join("config.toml");
    std::fs::write(
        &config_path,
        format!(
            "[database]\npath = \"{}\"\n[telegram]\nchat_id = \"-100\"\n",
            db.display()
        ),
    )
    .expect("write");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let config =
            mt_common::config::Config::load_with_env(&config_path, Vec::new()).expect("config");
        let store = mt_store::Store::open(&mt_store::OpenOptions::from_config(&config.database))
            .await
            .expect("open");
        let notifier = mt_notify::Notifier::new(&config.telegram);
        let now = chrono::Utc::now();
        let mut tx = store.begin().await.expect("tx");
        let message = mt_notify::Message::Generic(mt_notify::templates::GenericAlert {
            at: now,
            ..Default::default()
        });
        let ids = notifier.queue(&mut tx, &message, now).await.expect("queue");
        tx.commit().await.expect("commit");
        // What a sender writes, under the sender lease.
        let fence = store
            .acquire_lease(
                mt_notify::LEASE_NAME,
                "test-sender",
                std::time::Duration::from_secs(60),
            )
            .await
            .expect("lease")
            .expect("free");
        store
            .reschedule_notification(
                &fence,
                ids[0],
                now,
                "429 flood control: retry after 17s",
                false,
            )
            .await
            .expect("reschedule");
        let mut tx = store.begin().await.expect("tx");
        let refused = notifier.queue(&mut tx, &message, now).await.expect("queue");
        tx.commit().await.expect("commit");
        store
            .fail_notification(&fence, refused[0], "Bad Request: message is too long")
            .await
            .expect("fail");
        store
            .pause_chat(
                &fence,
                "-1001",
                "chat migrated to a supergroup",
                now,
                Some(-1_009_876),
                now,
            )
            .await
            .expect("pause");
        store.close().await;
    });

    let out = mtctl(&config_path, &["notifications"], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("Queued: 1 | Failing: 1"), "{stdout}");
    assert!(
        stdout.contains("generic_alert") && stdout.contains("retry after 17s"),
        "{stdout}"
    );
    assert!(stdout.contains("Failed: 1"), "{stdout}");
    assert!(
        stdout.contains("message is too long"),
        "a failed message is listed with its error: {stdout}"
    );
    assert!(
        stdout.contains("chat -1001 paused") && stdout.contains("telegram.chat_id = \"-1009876\""),
        "{stdout}"
    );

    let out = mtctl(&config_path, &["notifications", "--json"], &[]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(json["stats"]["queued"], 1);
    assert_eq!(json["queued"][0]["attempts"], 1);
    assert_eq!(
        json["failed"][0]["last_error"],
        "Bad Request: message is too long"
    );
    assert_eq!(json["paused_chats"][0]["migrate_to_chat_id"], "-1009876");
    assert_eq!(json["queued"][0]["kind"], "generic_alert");
}

mod commands {
    //! Every command against a real database file (and cf-sim for advertise/withdraw).

    use std::path::{Path, PathBuf};
    use std::process::Output;

    use cf_sim::{PrefixSpec, Running, Scenario, Sim};
    use chrono::{Duration, Utc};
    use mt_store::{
        ActionTaken, EventType, NewAttackEvent, NewWebhookEvent, NewWithdrawal, OpenOptions, Store,
        WebhookDedup, WithdrawMethod, WithdrawStatus,
    };
    use serde_json::Value;

    use super::{mtctl, text};

    struct Env {
        dir: tempfile::TempDir,
        config: PathBuf,
        rt: tokio::runtime::Runtime,
        sim: Running,
    }

    impl Env {
        fn new() -> Self {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            let prefix = |id: &str, cidr: &str, advertised: bool, ago: i64| PrefixSpec {
                id: id.into(),
                bgp_id: format!("b-{id}"),
                cidr: cidr.parse().unwrap(),
                description: String::new(),
                advertised,
                changed_secs_ago: ago,
                locked: false,
            };
            let scenario = Scenario {
                prefixes: vec![
                    prefix("p24", "203.0.113.0/24", true, 1200),
                    prefix("p23", "198.51.100.0/23", false, 86_400),
                    prefix("p48", "2001:db8:1000::/48", true, 60),
                ],
                ..Scenario::default()
            };
            let sim = rt.block_on(async {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                Sim::new(scenario).serve(listener).await.unwrap()
            });
            let dir = tempfile::tempdir().unwrap();
            let config = dir.path().join("config.toml");
            let mut text = format!(
                "[database]\npath = \"{}\"\n[cloudflare]\naccount_id = \"{}\"\napi_base_url = \"{}\"\ngraphql_url = \"{}\"\n[webhook]\narchive_dir = \"{}\"\n[telegram]\nchat_id = \"-100\"\n[autowithdraw]\ncalm_period = \"15m\"\n",
                dir.path().join("mt.db").display(),
                Scenario::default().account_id,
                sim.api_base_url(),
                sim.graphql_url(),
                dir.path().join("webhooks").display(),
            );
            for (id, cidr) in [
                ("p24", "203.0.113.0/24"),
                ("p23", "198.51.100.0/23"),
                ("p48", "2001:db8:1000::/48"),
            ] {
                text.push_str(&format!("[[prefixes]]\ncidr = \"{cidr}\"\nprefix_id = \"{id}\"\nbgp_prefix_id = \"b-{id}\"\n"));
            }
            std::fs::write(&config, text).unwrap();
            Self {
                dir,
                config,
                rt,
                sim,
            }
        }

        fn run(&self, args: &[&str]) -> Output {
            mtctl(
                &self.config,
                args,
                &[
                    ("MT_CLOUDFLARE_API_TOKEN", "cf-sim-token"),
                    ("USER", "alice"),
                ],
            )
        }

        fn json(&self, args: &[&str]) -> Value {
            let out = self.run(args);
            assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
            serde_json::from_slice(&out.stdout)
                .unwrap_or_else(|e| panic!("{args:?}: {e}: {}", text(&out.stdout)))
        }

        fn store(&self) -> Store {
            self.rt
                .block_on(Store::open(&OpenOptions::new(
                    self.dir.path().join("mt.db"),
                )))
                .unwrap()
        }
    }

    fn seed(store: &Store, rt: &tokio::runtime::Runtime) {
        rt.block_on(async {
            let now = Utc::now();
            let w = |alert: &str, state: &str, at| NewWebhookEvent {
                received_at: at,
                alert_type: Some("dos_attack_l4".into()),
                event_state: Some(state.into()),
                alert_id: Some(alert.into()),
                policy_id: None,
                policy_name: None,
                target_ip: Some("203.0.113.10".into()),
                target_prefix: Some("203.0.113.0/24".into()),
                source_ip: None,
                action_taken: "received".into(),
                payload: format!("{{\"{alert}\":\"{state}\"}}"),
                dedup: WebhookDedup::AlertAndState,
            };
            store
                .log_webhook_event(&w(
                    "atk-1",
                    "ALERT_STATE_EVENT_START",
                    now - Duration::minutes(30),
                ))
                .await
                .unwrap();
            store
                .log_webhook_event(&w(
                    "atk-1",
                    "ALERT_STATE_EVENT_END",
                    now - Duration::minutes(12),
                ))
                .await
                .unwrap();
            store
                .log_webhook_event(&w(
                    "old",
                    "ALERT_STATE_EVENT_START",
                    now - Duration::days(400),
                ))
                .await
                .unwrap();
            for (t, a) in [
                (EventType::Start, ActionTaken::Mitigating),
                (EventType::End, ActionTaken::NotifiedAutowithdrawHandles),
            ] {
                store
                    .log_attack_event(&NewAttackEvent {
                        prefix: Some("203.0.113.0/24".into()),
                        attack_id: Some("atk-1".into()),
                        ..NewAttackEvent::new(t, a, now)
                    })
                    .await
                    .unwrap();
            }
            store
                .record_withdrawal(&NewWithdrawal {
                    prefix: "203.0.113.0/24".into(),
                    attack_id: Some("atk-1".into()),
                    policy_id: None,
                    policy_name: None,
                    target_ip: None,
                    attack_type: None,
                    advertised_at: Some(now - Duration::minutes(40)),
                    attack_ended_at: Some(now - Duration::minutes(12)),
                    withdrawn_at: Some(now),
                    attack_duration_seconds: Some(1680),
                    protection_duration_seconds: Some(1125),
                    method: WithdrawMethod::AutoScheduled,
                    status: WithdrawStatus::Success,
                    notes: None,
                    created_at: now,
                })
                .await
                .unwrap();
        });
    }

    #[test]
    fn read_commands_print_the_seed_layouts_and_parseable_json() {
        let env = Env::new();
        let store = env.store();
        seed(&store, &env.rt);

        let history = text(&env.run(&["history"]).stdout);
        assert!(
            history.contains("WITHDRAWAL HISTORY")
                && history.contains("auto_schedu")
                && history.contains("18m 45s")
                && history.contains("✅ success"),
            "{history}"
        );
        let rows = env.json(&["history", "--json", "--limit", "5"]);
        assert_eq!(rows[0]["withdraw_method"], "auto_scheduled");
        assert_eq!(rows[0]["protection_duration_seconds"], 1125);

        let events = env.json(&["events", "--type", "start", "--json"]);
        assert_eq!(events.as_array().unwrap().len(), 1);
        assert_eq!(events[0]["action_taken"], "mitigating");

        let stats = env.json(&["stats", "--json"]);
        assert_eq!(
            (
                stats["total_withdrawals"].as_i64(),
                stats["total_events"].as_i64(),
                stats["total_webhooks"].as_i64()
            ),
            (Some(1), Some(2), Some(3))
        );

        let recent = env.json(&["webhooks", "recent", "2", "--json"]);
        assert_eq!(recent.as_array().unwrap().len(), 2);
        let wstats = env.json(&["webhooks", "stats", "--json"]);
        assert_eq!(wstats["completed_attacks"], 1);
        let show = env.json(&["webhooks", "show", "atk-1", "--json"]);
        assert_eq!(show["duration_seconds"], 18 * 60);
        let shown = text(&env.run(&["webhooks", "show", "atk-1"]).stdout);
        assert!(
            shown.contains("├──") && shown.contains("└──") && shown.contains("18m 0s"),
            "{shown}"
        );
        assert_eq!(
            env.run(&["webhooks", "show", "nope"]).status.code(),
            Some(1)
        );

        let status = text(&env.run(&["status"]).stdout);
        assert!(
            status.contains("PENDING WITHDRAWALS")
                && status.contains("Pending: 0 | Total Withdrawals: 1 | Success: 1"),
            "{status}"
        );
        // Every column a row prints has its header, in order.
        let header = status
            .lines()
            .find(|l| l.starts_with("Prefix ") && l.contains("Judged"))
            .expect("the prefix table header");
        let columns: Vec<&str> = header
            .split("  ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .collect();
        assert_eq!(
            columns,
            [
                "Prefix",
                "Adv.",
                "Attack",
                "Locked",
                "Calm Since",
                "Withdrawal",
                "Judged"
            ],
            "{status}"
        );
    }

    #[test]
    fn pins_and_the_pause_are_recorded_with_who_why_and_until_and_shown() {
        let env = Env::new();
        env.rt
            .block_on(
                env.store()
                    .update_prefix_calm_status(&mt_store::CalmUpdate {
                        prefix: "203.0.113.0/24",
                        advertised: true,
                        under_attack: false,
                        calm_since: Some(Utc::now() - Duration::minutes(5)),
                        last_attack_packets: 0,
                        last_attack_mbps: 0.0,
                        mitigation_systems: "",
                        updated_at: Utc::now(),
                    }),
            )
            .unwrap();
        let status = env.json(&["status", "--json"]);
        let p = &status["prefixes"][0];
        assert_eq!(p["prefix"], "203.0.113.0/24");
        let left = p["seconds_to_withdrawal"].as_i64().unwrap();
        assert!(
            (770..=780).contains(&left),
            "calm 5 of 15 minutes, judged 3 minutes late: {left}"
        );
        assert!(p["blocked_by"].is_null());

        assert!(
            env.run(&[
                "pin",
                "203.0.113.7/24",
                "--reason",
                "customer maintenance",
                "--for",
                "2h"
            ])
            .status
            .success()
        );
        let status = env.json(&["status", "--json"]);
        let p = &status["prefixes"][0];
        assert_eq!(p["pinned"]["by"], "alice");
        assert_eq!(p["pinned"]["reason"], "customer maintenance");
        assert!(p["pinned"]["until"].is_string());
        assert_eq!(p["blocked_by"], "pinned by alice: customer maintenance");
        assert!(env.run(&["unpin", "203.0.113.0/24"]).status.success());
        assert!(env.json(&["status", "--json"])["prefixes"][0]["pinned"].is_null());

        assert!(
            env.run(&["pause", "--reason", "change window"])
                .status
                .success()
        );
        let status = env.json(&["status", "--json"]);
        assert_eq!(status["paused"]["by"], "alice");
        assert!(status["paused"]["until"].is_null());
        assert_eq!(
            status["prefixes"][0]["blocked_by"],
            "paused by alice: change window"
        );
        assert!(text(&env.run(&["status"]).stdout).contains("PAUSED by alice"));
        assert!(env.run(&["resume"]).status.success());
        assert!(env.json(&["status", "--json"])["paused"].is_null());

        // autowithdraw's state says the /23 is advertised but locked on Cloudflare.
        let store = env.store();
        env.rt.block_on(async {
            let mut tx = store.begin().await.unwrap();
            let state = mt_store::PrefixState {
                prefix: "198.51.100.0/23".into(),
                advertised: true,
                locked: true,
                advertised_modified_at: Some(Utc::now() - Duration::hours(1)),
                ..Default::default()
            };
            tx.save_prefix_state(&state, Utc::now()).await.unwrap();
            tx.commit().await.unwrap();
        });
        let status = env.json(&["status", "--json"]);
        assert_eq!(status["prefixes"][1]["locked"], true);
        assert_eq!(status["prefixes"][1]["blocked_by"], "locked on Cloudflare");
        assert!(text(&env.run(&["status"]).stdout).contains("locked on Cloudflare"));

        let unknown = env.run(&["pin", "192.0.2.0/24", "--reason", "x"]);
        assert_eq!(unknown.status.code(), Some(2));
        assert!(text(&unknown.stderr).contains("not a configured prefix"));

        let actions: Vec<String> = env
            .json(&["audit", "--json"])
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                format!(
                    "{} {}",
                    r["action"].as_str().unwrap(),
                    r["outcome"].as_str().unwrap()
                )
            })
            .collect();
        assert_eq!(actions, ["resume ok", "pause ok", "unpin ok", "pin ok"]);
    }

    /// Cloudflare carries out the withdrawal but every answer is lost (502 after the change,
    /// on the first PATCH and on each retry). Before: audited `noop` ("changed meanwhile"),
    /// with no WITHDRAW event, history row or message. Now: a re-read shows the prefix
    /// withdrawn, so it is recorded as done, with a note saying how it was confirmed.
    #[test]
    fn a_withdrawal_whose_answer_was_lost_is_recorded_as_done() {
        let env = Env::new();
        env.sim.sim.lose_patch_answers(4);
        let out = env.run(&["withdraw", "203.0.113.0/24", "--yes"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(!env.sim.sim.bgp("b-p24").unwrap().advertised);
        assert!(
            env.sim.sim.patches().iter().all(|p| p.status == 502),
            "every answer was lost: {:?}",
            env.sim.sim.patches()
        );
        let store = env.store();
        let (events, history, outbox, audit) = env.rt.block_on(async {
            (
                store.attack_events(10, None).await.unwrap(),
                store.withdrawal_history(10).await.unwrap(),
                store.notifications(10).await.unwrap(),
                store.audit_log(10).await.unwrap(),
            )
        });
        assert_eq!(
            (
                events[0].event_type.as_deref(),
                events[0].action_taken.as_deref()
            ),
            (Some("WITHDRAW"), Some("withdrawn_manual"))
        );
        assert_eq!(history[0].status.as_deref(), Some("success"));
        let notes = history[0].notes.as_deref().unwrap();
        assert!(
            notes.contains("answer was lost") && notes.contains("re-read"),
            "{notes}"
        );
        assert_eq!(outbox[0].kind, "withdrawal_success");
        assert_eq!(audit[0].outcome, "ok");
        assert!(
            audit[0]
                .detail
                .as_deref()
                .unwrap_or_default()
                .contains("answer was lost"),
            "{:?}",
            audit[0]
        );
    }

    #[test]
    fn manual_withdraw_and_advertise_go_through_cloudflare_and_are_logged() {
        let env = Env::new();
        let no = env.run(&["withdraw", "203.0.113.0/24"]);
        assert_eq!(no.status.code(), Some(2), "destructive: needs --yes");
        assert!(text(&no.stderr).contains("--yes"));
        assert!(env.sim.sim.patches().is_empty());

        let out = env.run(&["withdraw", "203.0.113.0/24", "--yes"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(!env.sim.sim.bgp("b-p24").unwrap().advertised);
        let store = env.store();
        let (events, history, outbox) = env.rt.block_on(async {
            (
                store.attack_events(10, None).await.unwrap(),
                store.withdrawal_history(10).await.unwrap(),
                store.notifications(10).await.unwrap(),
            )
        });
        assert_eq!(
            (
                events[0].event_type.as_deref(),
                events[0].action_taken.as_deref()
            ),
            (Some("WITHDRAW"), Some("withdrawn_manual"))
        );
        assert_eq!(
            (
                history[0].withdraw_method.as_deref(),
                history[0].status.as_deref()
            ),
            (Some("manual"), Some("success"))
        );
        assert!(history[0].notes.as_deref().unwrap().contains("alice"));
        assert_eq!(outbox[0].kind, "withdrawal_success");

        // Re-advertising at once: Cloudflare's 15-minute refusal, explained with the time.
        let refused = env.run(&["advertise", "203.0.113.0/24"]);
        assert_eq!(refused.status.code(), Some(1));
        let message = text(&refused.stderr);
        assert!(
            message.contains("within 15 minutes") && message.contains("allowed from"),
            "{message}"
        );

        // Advertised a minute ago: the withdrawal is refused and recorded as failed.
        let refused = env.run(&["withdraw", "2001:db8:1000::/48", "--yes"]);
        assert_eq!(refused.status.code(), Some(1));
        assert!(text(&refused.stderr).contains("allowed from"));
        let history = env.rt.block_on(store.withdrawal_history(10)).unwrap();
        assert_eq!(
            (history[0].prefix.as_deref(), history[0].status.as_deref()),
            (Some("2001:db8:1000::/48"), Some("failed"))
        );

        let out = env.run(&["advertise", "198.51.100.0/23"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(env.sim.sim.bgp("b-p23").unwrap().advertised);
        let events = env
            .rt
            .block_on(store.attack_events(1, Some("ADVERTISE")))
            .unwrap();
        assert_eq!(events[0].action_taken.as_deref(), Some("advertised_manual"));

        let unknown = env.run(&["advertise", "192.0.2.0/24"]);
        assert_eq!(unknown.status.code(), Some(2));

        // Every attempt is audited with who, through what and how it ended (newest first);
        // the unknown prefix never reached the action, so it is not.
        let audit = env.json(&["audit", "--json"]);
        let rows: Vec<(String, String, String, String)> = audit
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["action"].as_str().unwrap().to_owned(),
                    r["prefix"].as_str().unwrap_or("").to_owned(),
                    r["outcome"].as_str().unwrap().to_owned(),
                    format!(
                        "{}/{}",
                        r["actor"].as_str().unwrap(),
                        r["via"].as_str().unwrap()
                    ),
                )
            })
            .collect();
        let alice = || "alice/mtctl".to_owned();
        assert_eq!(
            rows,
            vec![
                (
                    "advertise".into(),
                    "198.51.100.0/23".into(),
                    "ok".into(),
                    alice()
                ),
                (
                    "withdraw".into(),
                    "2001:db8:1000::/48".into(),
                    "failed".into(),
                    alice()
                ),
                (
                    "advertise".into(),
                    "203.0.113.0/24".into(),
                    "failed".into(),
                    alice()
                ),
                (
                    "withdraw".into(),
                    "203.0.113.0/24".into(),
                    "ok".into(),
                    alice()
                ),
            ]
        );
        assert!(text(&env.run(&["audit"]).stdout).contains("2001:db8:1000::/48"));
    }

    fn write_fixtures(dir: &Path) {
        std::fs::create_dir_all(dir).unwrap();
        let fixtures =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../webhook-receiver/tests/fixtures");
        let mut n = 0;
        for sub in ["cloudflare", "original-suite"] {
            let mut names: Vec<_> = std::fs::read_dir(fixtures.join(sub))
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            names.sort();
            for path in names {
                n += 1;
                std::fs::copy(
                    &path,
                    dir.join(format!("webhook_20260119_0000{:02}_{n}.json", n % 60)),
                )
                .unwrap();
            }
        }
    }

    #[test]
    fn import_webhooks_is_idempotent_and_reports_errors() {
        let env = Env::new();
        let archive = env.dir.path().join("old-suite-logs");
        write_fixtures(&archive);
        let dir = archive.to_str().unwrap();

        let dry = env.run(&["import-webhooks", dir, "--dry-run"]);
        assert!(dry.status.success(), "{}", text(&dry.stderr));
        assert!(
            text(&dry.stdout).contains("Imported: 23 | Duplicates: 0 | Errors: 0"),
            "{}",
            text(&dry.stdout)
        );
        assert_eq!(
            env.json(&["stats", "--json"])["total_webhooks"],
            0,
            "a dry run writes nothing"
        );

        let first = env.run(&["import-webhooks", dir]);
        assert!(first.status.success(), "{}", text(&first.stderr));
        assert!(
            text(&first.stdout).contains("Imported: 23 | Duplicates: 0 | Errors: 0"),
            "{}",
            text(&first.stdout)
        );
        let second = env.run(&["import-webhooks", dir]);
        assert!(second.status.success());
        assert!(
            text(&second.stdout).contains("Imported: 0 | Duplicates: 23 | Errors: 0"),
            "{}",
            text(&second.stdout)
        );
        let recent = env.json(&["webhooks", "recent", "1", "--json"]);
        assert_eq!(recent[0]["action_taken"], "imported");
        assert_eq!(
            recent[0]["received_at"].as_str().unwrap().get(..10),
            Some("2026-01-19"),
            "time from the file name"
        );

        std::fs::write(
            archive.join("webhook_20260120_000000_bad.json"),
            "{not json",
        )
        .unwrap();
        let bad = env.run(&["import-webhooks", dir]);
        assert_eq!(bad.status.code(), Some(1));
        let out = text(&bad.stdout);
        assert!(
            out.contains("❌ error webhook_20260120_000000_bad.json: invalid JSON")
                && out.contains("Errors: 1"),
            "{out}"
        );

        let single = env.run(&[
            "import-webhooks",
            dir,
            "--file",
            "webhook_20260119_000001_1.json",
        ]);
        assert!(
            text(&single.stdout).contains("Duplicates: 1"),
            "{}",
            text(&single.stdout)
        );
    }

    #[test]
    fn prune_reports_then_deletes_only_webhook_and_analytics_rows() {
        let env = Env::new();
        let store = env.store();
        seed(&store, &env.rt);
        // Rows whose archive copy is not written yet are never pruned (SPEC §6).
        let dry = env.run(&["prune", "--older-than", "90days"]);
        assert!(
            text(&dry.stdout).contains("would delete 0 webhook_events"),
            "{}",
            text(&dry.stdout)
        );
        // The receiver's archive writer has copied them.
        let archived = std::process::Command::new("sqlite3")
            .arg(env.dir.path().join("mt.db"))
            .arg("UPDATE webhook_events SET archived_at = received_at")
            .status()
            .unwrap();
        assert!(archived.success());
        let dry = env.run(&["prune", "--older-than", "90days"]);
        assert!(dry.status.success());
        assert!(
            text(&dry.stdout)
                .contains("would delete 1 webhook_events and 0 network_analytics_events"),
            "{}",
            text(&dry.stdout)
        );
        assert_eq!(env.json(&["stats", "--json"])["total_webhooks"], 3);
        let done = env.run(&["prune", "--older-than", "90days", "--yes"]);
        assert!(
            text(&done.stdout).contains("deleted 1 webhook_events"),
            "{}",
            text(&done.stdout)
        );
        let stats = env.json(&["stats", "--json"]);
        assert_eq!(
            (
                stats["total_webhooks"].as_i64(),
                stats["total_events"].as_i64(),
                stats["total_withdrawals"].as_i64()
            ),
            (Some(2), Some(2), Some(1))
        );
    }

    #[test]
    fn backup_writes_a_consistent_copy_and_never_overwrites() {
        let env = Env::new();
        seed(&env.store(), &env.rt);
        let target = env.dir.path().join("backup.db");
        let out = env.run(&["backup", target.to_str().unwrap()]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let check = std::process::Command::new("sqlite3")
            .arg(&target)
            .arg("PRAGMA integrity_check; SELECT COUNT(*) FROM withdrawal_history;")
            .output()
            .unwrap();
        assert_eq!(text(&check.stdout), "ok\n1\n");
        assert_eq!(
            env.run(&["backup", target.to_str().unwrap()]).status.code(),
            Some(1)
        );
    }

    #[test]
    fn cloudflare_check_runs_every_read_and_query_and_never_patches() {
        let env = Env::new();
        let out = env.run(&["cloudflare", "check"]);
        let stdout = text(&out.stdout);
        assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
        for line in [
            "ok          REST list IP prefixes: 3 prefixes",
            "ok          REST list BGP prefixes: 3 BGP prefixes",
            "ok          REST read 203.0.113.0/24 (BGP prefix b-p24): advertised",
            "ok          REST read 198.51.100.0/23 (BGP prefix b-p23): withdrawn",
            "ok          GraphQL settings of magicTransitNetworkAnalyticsAdaptiveGroups: enabled; maxDuration 604800s, maxPageSize 10000",
            "ok          GraphQL settings of dosdNetworkAnalyticsAdaptiveGroups: enabled",
            "ok          GraphQL calm query (magicTransitNetworkAnalyticsAdaptiveGroups):",
            "ok          GraphQL events query (dosdNetworkAnalyticsAdaptiveGroups):",
            "unverified  REST withdraw (PATCH on_demand.advertised): cannot be proven without a change: needs IP Prefixes: BGP On Demand Write",
        ] {
            assert!(stdout.contains(line), "{line}\n---\n{stdout}");
        }
        assert!(
            env.sim.sim.patches().is_empty(),
            "a check never changes anything"
        );
        // Settings, calm and events: three GraphQL queries, all valid (cf-sim refuses others).
        assert_eq!(env.sim.sim.graphql_queries(), 3);
        let json = env.json(&["cloudflare", "check", "--json"]);
        let statuses: Vec<&str> = json
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["status"].as_str().unwrap())
            .collect();
        assert_eq!(statuses.iter().filter(|s| **s == "failed").count(), 0);
        assert_eq!(statuses.last(), Some(&"unverified"));
    }

    #[test]
    fn cloudflare_check_names_a_refused_token_and_a_disabled_dataset() {
        let env = Env::new();
        let refused = mtctl(
            &env.config,
            &["cloudflare", "check"],
            &[("MT_CLOUDFLARE_API_TOKEN", "wrong-token")],
        );
        assert_eq!(refused.status.code(), Some(1));
        let stdout = text(&refused.stdout);
        assert!(
            stdout.contains("FAILED      REST list IP prefixes: Cloudflare API HTTP 401"),
            "{stdout}"
        );
        assert!(
            stdout.contains("the API token is invalid, expired or revoked"),
            "{stdout}"
        );
        assert!(text(&refused.stderr).contains("checks failed"));

        env.sim.sim.set_dataset_settings(
            "magicTransitNetworkAnalyticsAdaptiveGroups",
            cf_sim::scenario::DatasetSettings {
                enabled: false,
                ..Default::default()
            },
        );
        let out = env.run(&["cloudflare", "check"]);
        assert_eq!(out.status.code(), Some(1));
        let stdout = text(&out.stdout);
        assert!(
            stdout.contains("FAILED      GraphQL settings of magicTransitNetworkAnalyticsAdaptiveGroups: the dataset is not enabled for this account"),
            "{stdout}"
        );
        assert!(
            stdout.contains("nothing would ever be judged calm"),
            "{stdout}"
        );
        assert!(
            stdout.contains("FAILED      GraphQL calm query"),
            "{stdout}"
        );
        assert!(
            stdout.contains("ok          GraphQL events query"),
            "{stdout}"
        );
    }

    #[test]
    fn cloudflare_check_catches_a_configured_id_of_another_prefix() {
        let env = Env::new();
        let config = std::fs::read_to_string(&env.config).unwrap();
        std::fs::write(
            &env.config,
            config.replace("cidr = \"198.51.100.0/23\"", "cidr = \"198.51.102.0/23\""),
        )
        .unwrap();
        let out = env.run(&["cloudflare", "check"]);
        assert_eq!(out.status.code(), Some(1));
        let stdout = text(&out.stdout);
        assert!(
            stdout.contains("FAILED      REST read 198.51.102.0/23 (BGP prefix b-p23): Cloudflare says this BGP prefix is 198.51.100.0/23"),
            "{stdout}"
        );
    }

    #[test]
    fn cloudflare_prefixes_lists_the_account_and_prints_a_config_block() {
        let env = Env::new();
        let out = env.run(&["cloudflare", "prefixes"]);
        let stdout = text(&out.stdout);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(stdout.contains("203.0.113.0/24       p24"), "{stdout}");
        assert!(stdout.contains("ADV"), "{stdout}");
        assert!(stdout.contains("(configured)"), "{stdout}");
        let block = stdout
            .split("# Ready for the config (review auto_withdraw and the description):")
            .nth(1)
            .unwrap();
        // The printed blocks are a valid config for the same account.
        let config =
            format!("[telegram]\nenabled = false\n[cloudflare]\naccount_id = \"x\"\n{block}");
        let path = env.dir.path().join("generated.toml");
        std::fs::write(&path, config).unwrap();
        let check = mtctl(&path, &["check-config"], &[]);
        assert!(check.status.success(), "{}\n{block}", text(&check.stderr));
        assert!(text(&check.stdout).contains("2001:db8:1000::/48"));
        let json = env.json(&["cloudflare", "prefixes", "--json"]);
        let rows = json.as_array().unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0]["bgp_prefix_id"], "b-p24");
        assert_eq!(rows[0]["advertised"], true);
    }
}

#[test]
fn completions_and_the_man_page_need_no_config() {
    let nowhere = Path::new("/nonexistent/config.toml");
    for shell in ["bash", "zsh", "fish"] {
        let out = mtctl(nowhere, &["completions", shell], &[]);
        assert!(out.status.success(), "{shell}: {}", text(&out.stderr));
        assert!(
            text(&out.stdout).contains("cloudflare"),
            "{shell}: subcommands listed"
        );
    }
    let dir = tempfile::tempdir().expect("tmp");
    let man = Command::new(env!("CARGO_BIN_EXE_mtctl"))
        .arg("--print-man-pages")
        .arg(dir.path())
        .output()
        .expect("run mtctl");
    assert!(man.status.success(), "{}", text(&man.stderr));
    let page = std::fs::read_to_string(dir.path().join("mtctl.1")).expect("mtctl.1");
    assert!(
        page.starts_with(".ie"),
        "roff: {}",
        &page[..page.len().min(80)]
    );
    assert!(
        page.contains("mtctl\\-status(1)"),
        "the subcommands are referred to"
    );
    // ... and each page it refers to exists.
    for sub in [
        "mtctl-status.1",
        "mtctl-cloudflare-check.1",
        "mtctl-webhooks-recent.1",
    ] {
        assert!(dir.path().join(sub).exists(), "{sub}");
    }
}

#[test]
fn hash_password_prints_an_argon2id_hash_without_a_config() {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let hash = |input: &str| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_mtctl"))
            .arg("hash-password")
            .env("MT_CONFIG", "/nonexistent/config.toml")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let out = hash("a long enough passphrase\n");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let phc = text(&out.stdout).trim().to_owned();
    assert!(phc.starts_with("$argon2id$v=19$"), "{phc}");
    assert!(mt_control::password::verify(
        "a long enough passphrase",
        &phc
    ));
    let short = hash("short\n");
    assert_eq!(short.status.code(), Some(2));
    assert!(text(&short.stderr).contains("at least 12 characters"));
}

/// `mtctl telegram test` against the Telegram fake, which knows one chat the bot is in, one
/// group that became a supergroup and one chat the bot was kicked from: one message delivered
/// to the right chat; for each wrong one, Telegram's exact answer and what to do; nothing is
/// left queued to be sent later by surprise; a running sender's lease is respected.
#[test]
fn telegram_test_delivers_one_message_or_prints_telegrams_exact_refusal() {
    use cf_sim::{Scenario, Sim};

    const GOOD: &str = "-1001234567890";
    let rt = tokio::runtime::Runtime::new().unwrap();
    let scenario = Scenario {
        telegram_chats: vec![GOOD.into()],
        telegram_migrated: vec![("-4000001".into(), -1_009_999_000_111)],
        telegram_kicked: vec!["-1005555".into()],
        ..Scenario::default()
    };
    let telegram_token = scenario.telegram_token.clone();
    let sim = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Sim::new(scenario).serve(listener).await.unwrap()
    });
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("mt.db");
    let run = |chat: &str, extra: &[&str]| {
        let config = dir.path().join("config.toml");
        std::fs::write(
            &config,
            format!(
                "[database]\npath = \"{}\"\n[telegram]\nenabled = true\napi_url = \"{}\"\nchat_id = \"{chat}\"\n",
                db.display(),
                sim.url()
            ),
        )
        .unwrap();
        let mut args = vec!["telegram", "test"];
        args.extend_from_slice(extra);
        mtctl(
            &config,
            &args,
            &[
                ("MT_TELEGRAM_BOT_TOKEN", telegram_token.as_str()),
                ("USER", "alice"),
            ],
        )
    };
    let statuses = || {
        let out = Command::new("sqlite3")
            .arg(&db)
            .arg("SELECT status || ' ' || chat_id FROM notification_outbox ORDER BY id")
            .output()
            .unwrap();
        text(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };

    let ok = run(GOOD, &[]);
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok.stderr));
    assert!(
        text(&ok.stdout).contains("delivered"),
        "{}",
        text(&ok.stdout)
    );
    let sent = sim.sim.telegram_messages();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].chat_id, GOOD);
    assert!(sent[0].text.contains("TEST MESSAGE") && sent[0].text.contains("alice"));
    assert_eq!(sent[0].parse_mode.as_deref(), Some("MarkdownV2"));

    for (chat, telegram_said, advice) in [
        (
            "-1009876",
            "Bad Request: chat not found",
            "telegram.chat_id is wrong",
        ),
        (
            "-4000001",
            "telegram.chat_id = \"-1009999000111\"",
            "new id",
        ),
        (
            "-1005555",
            "Forbidden: bot was kicked from the supergroup chat",
            "add the bot to the group",
        ),
    ] {
        let out = run(chat, &[]);
        let stderr = text(&out.stderr);
        println!("mtctl telegram test, chat_id = {chat}:\n{stderr}");
        assert_eq!(out.status.code(), Some(1), "{chat}: {stderr}");
        assert!(
            stderr.contains(telegram_said) && stderr.contains(advice) && stderr.contains(chat),
            "{chat}: {stderr}"
        );
    }
    assert_eq!(
        sim.sim.telegram_messages().len(),
        1,
        "refused: nothing sent"
    );
    assert_eq!(
        statuses(),
        vec![
            format!("sent {GOOD}"),
            "failed -1009876".into(),
            "failed -4000001".into(),
            "failed -1005555".into()
        ],
        "no test message stays queued"
    );

    // A running daemon holds the sender lease: mtctl leaves the message to it and waits.
    rt.block_on(async {
        let store = mt_store::Store::open(&mt_store::OpenOptions::new(&db))
            .await
            .unwrap();
        store
            .acquire_lease(
                mt_notify::LEASE_NAME,
                "pid42-daemon",
                std::time::Duration::from_secs(600),
            )
            .await
            .unwrap()
            .unwrap();
        store.close().await;
    });
    let waited = run(GOOD, &["--wait", "1"]);
    let (stdout, stderr) = (text(&waited.stdout), text(&waited.stderr));
    assert_eq!(waited.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stdout.contains("pid42-daemon"), "{stdout}");
    assert!(stderr.contains("not delivered within 1s"), "{stderr}");
    assert_eq!(
        sim.sim.telegram_messages().len(),
        1,
        "the lease was respected"
    );

    // Telegram disabled: a clear error, nothing queued.
    let config = dir.path().join("disabled.toml");
    std::fs::write(
        &config,
        format!(
            "[database]\npath = \"{}\"\n[telegram]\nenabled = false\nchat_id = \"{GOOD}\"\n",
            db.display()
        ),
    )
    .unwrap();
    let off = mtctl(&config, &["telegram", "test"], &[]);
    assert_eq!(off.status.code(), Some(1));
    assert!(text(&off.stderr).contains("telegram.enabled is false"));
    assert_eq!(statuses().len(), 5);
}
