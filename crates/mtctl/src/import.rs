//! `import-webhooks`: the original suite's `logs/webhooks/webhook_*.json` archive, or ours.
//! Alert ids are derived exactly as the receiver derives them, so a re-import deduplicates
//! against what is already stored; running it twice imports nothing the second time.

use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use mt_alerts::classify;
use mt_common::config::Config;
use mt_store::{Store, WebhookInsert};
use serde_json::Value;

/// Reception time of an archived webhook: from its file name (`webhook_YYYYMMDD_HHMMSS…`),
/// else its `ts`, else the file's modification time.
fn received_at(path: &Path, body: &serde_json::Map<String, Value>) -> DateTime<Utc> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let stamp: String = name
        .trim_start_matches("webhook_")
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '_')
        .collect();
    let parsed = [("%Y%m%d_%H%M%S", 15), ("%Y%m%d%H%M%S", 14)]
        .iter()
        .find_map(|(fmt, len)| {
            stamp
                .get(..*len)
                .and_then(|s| NaiveDateTime::parse_from_str(s, fmt).ok())
        })
        .or_else(|| {
            stamp
                .get(..8)
                .and_then(|s| NaiveDate::parse_from_str(s, "%Y%m%d").ok())
                .and_then(|d| d.and_hms_opt(0, 0, 0))
        })
        .map(|t| t.and_utc());
    parsed
        .or_else(|| {
            body.get("ts")
                .and_then(Value::as_i64)
                .and_then(|ts| DateTime::from_timestamp(ts, 0))
        })
        .or_else(|| {
            std::fs::metadata(path)
                .and_then(|m| m.modified())
                .ok()
                .map(DateTime::<Utc>::from)
        })
        .unwrap_or_else(Utc::now)
}

enum Outcome {
    Imported(String),
    Duplicate,
}

async fn import_one(
    config: &Config,
    store: &Store,
    path: &Path,
    dry_run: bool,
) -> anyhow::Result<Outcome> {
    let text = std::fs::read_to_string(path)?;
    mt_alerts::check_shape(text.as_bytes())
        .map_err(|problem| anyhow::anyhow!("refused JSON: {problem}"))?;
    let value: Value =
        serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("invalid JSON: {e}"))?;
    let Value::Object(body) = value else {
        anyhow::bail!("not a JSON object");
    };
    let at = received_at(path, &body);
    let c = classify(&body, config, at);
    let mut tx = store.begin().await?;
    let outcome = tx
        .insert_webhook_event(&c.webhook_event(at, None, "imported", text))
        .await?;
    if let WebhookInsert::Inserted(id) = outcome {
        // Its body already sits in an archive file (the one read): the receiver's archive
        // writer must not write a second copy under the new id.
        tx.mark_webhooks_archived(&[id], at).await?;
    }
    if dry_run {
        tx.rollback().await?;
    } else {
        tx.commit().await?;
    }
    Ok(match outcome {
        WebhookInsert::Inserted(_) => Outcome::Imported(format!(
            "{}, alert {}",
            c.alert_type.as_deref().unwrap_or("test"),
            c.alert_id
        )),
        WebhookInsert::Duplicate(_) => Outcome::Duplicate,
    })
}

pub async fn run(
    config: &Config,
    store: &Store,
    dir: Option<PathBuf>,
    file: Option<PathBuf>,
    dry_run: bool,
) -> anyhow::Result<()> {
    let dir = dir.unwrap_or_else(|| config.webhook.archive_dir.clone());
    let files: Vec<PathBuf> = match file {
        Some(f) if f.components().count() > 1 => vec![f],
        Some(f) => vec![dir.join(f)],
        None => {
            let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", dir.display()))?
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("webhook_") && n.ends_with(".json"))
                })
                .collect();
            files.sort();
            files
        }
    };
    println!(
        "{} {} file(s) from {}{}",
        if dry_run { "Checking" } else { "Importing" },
        files.len(),
        dir.display(),
        if dry_run {
            " (dry run: nothing is written)"
        } else {
            ""
        }
    );
    let (mut imported, mut duplicates, mut errors) = (0, 0, 0);
    for path in &files {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("?");
        match import_one(config, store, path, dry_run).await {
            Ok(Outcome::Imported(what)) => {
                imported += 1;
                println!(
                    "  ✅ {} {name} ({what})",
                    if dry_run { "would import" } else { "imported" }
                );
            }
            Ok(Outcome::Duplicate) => {
                duplicates += 1;
                println!("  ⏭️  duplicate {name}");
            }
            Err(e) => {
                errors += 1;
                println!("  ❌ error {name}: {e:#}");
            }
        }
    }
    println!("Imported: {imported} | Duplicates: {duplicates} | Errors: {errors}");
    if errors > 0 {
        anyhow::bail!("{errors} file(s) could not be imported");
    }
    Ok(())
}
