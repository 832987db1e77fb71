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
        store
            .reschedule_notification(ids[0], now, "429 flood control: retry after 17s")
            .await
            .expect("reschedule");
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

    let out = mtctl(&config_path, &["notifications", "--json"], &[]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(json["stats"]["queued"], 1);
    assert_eq!(json["queued"][0]["attempts"], 1);
    assert_eq!(json["queued"][0]["kind"], "generic_alert");
}
