//! check-config, migrate, notifications, prune, backup, hash-password, audit.

use std::path::Path;

use chrono::Utc;
use mt_common::config::{Config, ConfigError, SecretOrigin};
use mt_store::Store;

use crate::output::{json, rule};

pub fn check_config(config: &Config, path: &Path) -> anyhow::Result<()> {
    // The loader checks the hash's shape; the dashboard needs it to parse completely.
    for (i, u) in config.dashboard.users.iter().enumerate() {
        if !mt_control::password::is_valid_hash(&u.password_hash) {
            return Err(crate::Usage(format!(
                "{}: dashboard.users[{i}].password_hash: not a complete argon2 PHC string (make one with `mtctl hash-password`)",
                path.display()
            ))
            .into());
        }
    }
    println!("# {}: valid", path.display());
    print!("{}", config.to_toml());
    println!();
    println!("# secrets (values never shown)");
    let show = |name: &str, secret: Result<(secrecy::SecretString, SecretOrigin), ConfigError>| {
        match secret {
            Ok((_, origin)) => println!("#   {name}: set ({origin})"),
            Err(e) => println!("#   {name}: not available: {e}"),
        }
    };
    show("cloudflare api token", config.cloudflare_api_token());
    show("webhook secret", config.webhook_secret());
    show("telegram bot token", config.telegram_bot_token());
    Ok(())
}

pub fn migrate(store: &Store) -> anyhow::Result<()> {
    let schema = store.schema();
    if schema.applied.is_empty() && schema.added_columns.is_empty() {
        println!(
            "{}: schema version {}, up to date",
            store.path().display(),
            schema.version
        );
    } else {
        println!(
            "{}: migrated to schema version {} (applied {:?}, added columns {:?})",
            store.path().display(),
            schema.version,
            schema.applied,
            schema.added_columns
        );
    }
    Ok(())
}

pub async fn notifications(store: &Store, limit: u32, as_json: bool) -> anyhow::Result<()> {
    let stats = store.outbox_stats().await?;
    let queued = store.queued_notifications(limit).await?;
    let failed = store.failed_notifications(limit).await?;
    let paused = store.chat_pauses().await?;
    if as_json {
        return json(&serde_json::json!({
            "stats": stats, "queued": queued, "failed": failed, "paused_chats": paused,
        }));
    }
    println!("{}", rule('=', 78));
    println!("TELEGRAM OUTBOX");
    println!("{}", rule('=', 78));
    println!(
        "Queued: {} | Failing: {} | Oldest queued: {} | Sent: {} | Logged only: {} | Failed: {}",
        stats.queued,
        stats.failing,
        stats.oldest_queued_at.as_deref().unwrap_or("-"),
        stats.sent,
        stats.logged,
        stats.failed
    );
    for p in &paused {
        println!();
        println!(
            "⏸  chat {} paused until {} UTC ({} refusals since {}): {}",
            p.chat_id, p.paused_until, p.failures, p.paused_since, p.reason
        );
        if let Some(new) = &p.migrate_to_chat_id {
            println!(
                "   the group became a supergroup: set telegram.chat_id = \"{new}\" and restart"
            );
        }
    }
    let table = |title: &str, rows: &[mt_store::QueuedNotification], when: &str| {
        if rows.is_empty() {
            return;
        }
        println!();
        println!("{title}");
        println!(
            "{:<8} {:<20} {:<20} {:>8}  Last error",
            "Id", "Kind", when, "Attempts"
        );
        println!("{}", rule('-', 78));
        for m in rows {
            println!(
                "{:<8} {:<20} {:<20} {:>8}  {}",
                m.id,
                m.kind,
                if when == "Queued at" {
                    &m.created_at
                } else {
                    &m.next_attempt_at
                },
                m.attempts,
                m.last_error.as_deref().unwrap_or("-")
            );
        }
    };
    table("Queued (delivery order):", &queued, "Next attempt");
    table(
        "Failed (refused by Telegram for good, newest first):",
        &failed,
        "Queued at",
    );
    println!("{}", rule('=', 78));
    Ok(())
}

pub async fn prune(
    store: &Store,
    older_than: std::time::Duration,
    yes: bool,
) -> anyhow::Result<()> {
    let cutoff = Utc::now() - chrono::Duration::from_std(older_than)?;
    if !yes {
        let p = store.prunable(cutoff).await?;
        println!(
            "would delete {} webhook_events and {} network_analytics_events rows older than {} UTC \
             (withdrawal_history and attack_events are kept); re-run with --yes",
            p.webhook_events,
            p.network_analytics_events,
            mt_common::timefmt::to_db(cutoff)
        );
        return Ok(());
    }
    // Small transactions by id range, reporting progress at most once a second (stderr), so
    // webhooks and cycles keep their turn at the write lock on a large database.
    let mut last_report = std::time::Instant::now();
    let p = store
        .prune(cutoff, &mt_store::PruneOptions::default(), |at| {
            let finished = at.scanned_to_id >= at.last_id;
            if finished || last_report.elapsed() >= std::time::Duration::from_secs(1) {
                last_report = std::time::Instant::now();
                eprintln!(
                    "prune: {} ids up to {} of {} scanned; deleted so far: {} webhook_events, {} network_analytics_events",
                    at.table,
                    at.scanned_to_id,
                    at.last_id,
                    at.deleted.webhook_events,
                    at.deleted.network_analytics_events
                );
            }
        })
        .await?;
    println!(
        "deleted {} webhook_events and {} network_analytics_events rows older than {} UTC",
        p.webhook_events,
        p.network_analytics_events,
        mt_common::timefmt::to_db(cutoff)
    );
    Ok(())
}

pub async fn backup(store: &Store, path: &Path) -> anyhow::Result<()> {
    store.backup_to(path).await?;
    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or_default();
    println!(
        "backup written to {} ({size} bytes); consistent snapshot, safe to copy",
        path.display()
    );
    Ok(())
}

/// `mtctl hash-password`: prints the PHC string for `[[dashboard.users]] password_hash`.
pub fn hash_password() -> anyhow::Result<()> {
    use std::io::IsTerminal;
    let password = if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("Password: ")?;
        let again = rpassword::prompt_password("Again: ")?;
        if first != again {
            anyhow::bail!("the two passwords differ");
        }
        first
    } else {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        line.trim_end_matches(['\r', '\n']).to_owned()
    };
    let phc = mt_control::password::hash(&password).map_err(anyhow::Error::msg)?;
    println!("{phc}");
    Ok(())
}

/// `mtctl audit`.
pub async fn audit(store: &Store, limit: u32, as_json: bool) -> anyhow::Result<()> {
    let rows = store.audit_log(limit).await?;
    if as_json {
        return json(&rows);
    }
    println!(
        "{:<20} {:<12} {:<10} {:<9} {:<20} {:<7} Detail",
        "At (UTC)", "Who", "Via", "Action", "Prefix", "Outcome"
    );
    println!("{}", rule('-', 100));
    for r in &rows {
        println!(
            "{:<20} {:<12} {:<10} {:<9} {:<20} {:<7} {}",
            r.at,
            r.actor,
            r.via,
            r.action,
            r.prefix.as_deref().unwrap_or("-"),
            r.outcome,
            r.detail.as_deref().unwrap_or("")
        );
    }
    if rows.is_empty() {
        println!("(no manual actions recorded)");
    }
    Ok(())
}
