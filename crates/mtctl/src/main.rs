//! `mtctl`: the operator's CLI (SPEC §9).
//!
//! Exit codes: 0 ok, 1 the operation failed, 2 usage or configuration error.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use mt_common::config::{Config, ConfigError, SecretOrigin};
use mt_store::{OpenOptions, Store};

/// Operate the Magic Transit on-demand suite.
#[derive(Debug, Parser)]
#[command(name = "mtctl", version, about)]
struct Cli {
    /// Config file (default: $MT_CONFIG, else /etc/magic-transit/config.toml).
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate the config and print the effective values (secrets are never printed).
    CheckConfig,
    /// Open the database and apply pending migrations (adopts an original-suite database).
    Migrate,
    /// Telegram outbox: delivery counts and the messages still waiting (with their last error).
    Notifications {
        /// Most waiting messages to list.
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    mt_common::telemetry::init();
    let config = Config::load_or_exit(cli.config.as_deref());
    let result = match cli.command {
        Command::CheckConfig => {
            check_config(&config, &Config::resolve_path(cli.config.as_deref()));
            Ok(())
        }
        Command::Migrate => run_async(migrate(&config)),
        Command::Notifications { limit, json } => run_async(notifications(&config, limit, json)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run_async(f: impl Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(f)
}

fn check_config(config: &Config, path: &std::path::Path) {
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
}

async fn notifications(config: &Config, limit: u32, json: bool) -> anyhow::Result<()> {
    let store = Store::open(&OpenOptions::from_config(&config.database)).await?;
    let stats = store.outbox_stats().await?;
    let queued = store.queued_notifications(limit).await?;
    store.close().await;
    if json {
        let out = serde_json::json!({ "stats": stats, "queued": queued });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!("{}", "=".repeat(78));
    println!("TELEGRAM OUTBOX");
    println!("{}", "=".repeat(78));
    println!(
        "Queued: {} | Failing: {} | Oldest queued: {} | Sent: {} | Logged only: {}",
        stats.queued,
        stats.failing,
        stats.oldest_queued_at.as_deref().unwrap_or("-"),
        stats.sent,
        stats.logged
    );
    if !queued.is_empty() {
        println!();
        println!(
            "{:<8} {:<20} {:<20} {:>8}  Last error",
            "Id", "Kind", "Next attempt", "Attempts"
        );
        println!("{}", "-".repeat(78));
        for m in &queued {
            println!(
                "{:<8} {:<20} {:<20} {:>8}  {}",
                m.id,
                m.kind,
                m.next_attempt_at,
                m.attempts,
                m.last_error.as_deref().unwrap_or("-")
            );
        }
    }
    println!("{}", "=".repeat(78));
    Ok(())
}

async fn migrate(config: &Config) -> anyhow::Result<()> {
    let store = Store::open(&OpenOptions::from_config(&config.database)).await?;
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
    store.close().await;
    Ok(())
}
