//! `mtctl`: the operator's CLI (SPEC §9).
//!
//! Exit codes: 0 ok, 1 the operation failed, 2 usage or configuration error (including a
//! missing `--yes` on a destructive command and an unknown prefix).

mod admin;
mod cloudflare;
mod control;
mod import;
mod output;
mod read;
mod telegram;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use mt_common::config::Config;
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
    /// Prefixes (advertised, under attack, calm countdown, holds), pending withdrawals, totals.
    Status {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Withdrawal history, newest first.
    History {
        /// Rows to show.
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Attack events (START, END, ADVERTISE, WITHDRAW), newest first.
    Events {
        /// Rows to show.
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Only this event type.
        #[arg(long = "type", value_name = "TYPE")]
        event_type: Option<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Database statistics (the original suite's get_stats() keys).
    Stats {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Webhooks received.
    Webhooks {
        #[command(subcommand)]
        command: WebhooksCommand,
    },
    /// Telegram outbox: delivery counts and the messages still waiting (with their last error).
    Notifications {
        /// Most waiting messages to list.
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Import archived webhooks (the original suite's logs/webhooks or ours); idempotent.
    ImportWebhooks {
        /// Directory of webhook_*.json files (default: webhook.archive_dir).
        dir: Option<PathBuf>,
        /// Import only this file (relative to DIR unless it contains a '/').
        #[arg(long)]
        file: Option<PathBuf>,
        /// Show what would be imported, write nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Advertise a configured prefix through Cloudflare (manual).
    Advertise {
        /// The prefix (CIDR).
        prefix: String,
    },
    /// Withdraw a configured prefix through Cloudflare (manual); needs --yes.
    Withdraw {
        /// The prefix (CIDR).
        prefix: String,
        /// Confirm: traffic returns to the origin unprotected.
        #[arg(long)]
        yes: bool,
    },
    /// Never withdraw this prefix automatically (until unpinned or the duration ends).
    Pin {
        /// The prefix (CIDR).
        prefix: String,
        /// Why (shown in status and on the dashboard).
        #[arg(long)]
        reason: String,
        /// For how long (e.g. 2h, 3days); default: until unpinned.
        #[arg(long = "for", value_name = "DURATION", value_parser = humantime::parse_duration)]
        duration: Option<std::time::Duration>,
    },
    /// Remove a pin.
    Unpin {
        /// The prefix (CIDR).
        prefix: String,
    },
    /// Pause every automatic withdrawal (until resumed or the duration ends).
    Pause {
        /// Why.
        #[arg(long)]
        reason: String,
        /// For how long; default: until resumed.
        #[arg(long = "for", value_name = "DURATION", value_parser = humantime::parse_duration)]
        duration: Option<std::time::Duration>,
    },
    /// End the pause.
    Resume,
    /// Delete webhook and analytics rows older than DURATION (history and attack events are
    /// kept); reports what it would delete without --yes.
    Prune {
        /// Age, e.g. 90days.
        #[arg(long, value_parser = humantime::parse_duration)]
        older_than: std::time::Duration,
        /// Delete.
        #[arg(long)]
        yes: bool,
    },
    /// Write a consistent copy of the database (safe while the daemons run).
    Backup {
        /// Target file (must not exist).
        path: PathBuf,
    },
    /// Open the database and apply pending migrations (adopts an original-suite database).
    Migrate,
    /// Validate the config and print the effective values (secrets are never printed).
    CheckConfig,
    /// Print the shell completion script for bash, zsh or fish (the Debian package installs
    /// them; elsewhere e.g. `mtctl completions bash > /etc/bash_completion.d/mtctl`). Needs no
    /// config.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Hash a dashboard password (argon2id) for `[[dashboard.users]] password_hash`: asks twice
    /// on a terminal, else reads one line from stdin. Needs no config.
    HashPassword,
    /// Check the Cloudflare account with the configured token (reads only), or list its
    /// prefixes for the config.
    Cloudflare {
        #[command(subcommand)]
        command: CloudflareCommand,
    },
    /// Telegram: check that notifications reach the configured chat.
    Telegram {
        #[command(subcommand)]
        command: TelegramCommand,
    },
    /// Manual actions (mtctl and dashboard) and dashboard logins, newest first.
    Audit {
        /// Rows to show.
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum CloudflareCommand {
    /// Run every REST read and GraphQL query the daemons use, once, over a small window
    /// (never a PATCH); one line per check; exit 1 if any failed. Run it before the first start.
    Check {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// The account's IP and BGP prefixes (ids, CIDRs, on-demand state, locked) and a ready
    /// `[[prefixes]]` block for the config.
    Prefixes {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum TelegramCommand {
    /// Queue one test message for telegram.chat_id and deliver it now, printing Telegram's
    /// exact answer when it refuses (wrong chat id, bot not in the group, group migrated and
    /// its new id). When a running daemon holds the sender lease, it delivers the message and
    /// this waits for the outcome. Exit 0 delivered, 1 not delivered.
    Test {
        /// How long to wait for a running daemon to deliver it (seconds).
        #[arg(long, default_value_t = 30)]
        wait: u64,
    },
}

#[derive(Debug, Subcommand)]
enum WebhooksCommand {
    /// The newest webhooks.
    Recent {
        /// How many.
        #[arg(default_value_t = 10)]
        count: u32,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Counts by type and state, completed attacks.
    Stats {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Every webhook of one alert id: START → END correlation with durations.
    Show {
        /// The alert (attack) id.
        alert_id: String,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

/// A usage or configuration problem: exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Usage(pub String);

fn main() -> ExitCode {
    mt_common::manpage::exit_if_requested::<Cli>();
    let cli = Cli::parse();
    mt_common::telemetry::init();
    if let Command::Completions { shell } = cli.command {
        clap_complete::generate(
            shell,
            &mut <Cli as clap::CommandFactory>::command(),
            "mtctl",
            &mut std::io::stdout(),
        );
        return ExitCode::SUCCESS;
    }
    if matches!(cli.command, Command::HashPassword) {
        return match admin::hash_password() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        };
    }
    let config_path = Config::resolve_path(cli.config.as_deref());
    let config = Config::load_or_exit(cli.config.as_deref());
    let result = match cli.command {
        Command::CheckConfig => admin::check_config(&config, &config_path),
        // Cloudflare only: no database is opened (it may run before the first start).
        Command::Cloudflare { command } => run_async(async {
            match command {
                CloudflareCommand::Check { json } => cloudflare::check(&config, json).await,
                CloudflareCommand::Prefixes { json } => cloudflare::prefixes(&config, json).await,
            }
        }),
        command => run_async(dispatch(command, config)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.downcast_ref::<Usage>().is_some() => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
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

/// Opens the database: migrating for the commands that write (SPEC §5 and §9: `backup`,
/// `prune` and `import-webhooks` are among them), never for reads, which also work for SOC
/// staff who may only read (read-only when they cannot write).
async fn open(config: &Config, command: &Command) -> anyhow::Result<Store> {
    let options = OpenOptions::from_config(&config.database);
    let reads_only = matches!(
        command,
        Command::Status { .. }
            | Command::History { .. }
            | Command::Events { .. }
            | Command::Stats { .. }
            | Command::Webhooks { .. }
            | Command::Notifications { .. }
            | Command::Audit { .. }
    );
    Ok(if reads_only {
        Store::open_for_reading(&options).await?
    } else {
        Store::open(&options).await?
    })
}

async fn dispatch(command: Command, config: Config) -> anyhow::Result<()> {
    let store = open(&config, &command).await?;
    let result = match command {
        Command::Status { json } => read::status(&config, &store, json).await,
        Command::History { limit, json } => read::history(&store, limit, json).await,
        Command::Events {
            limit,
            event_type,
            json,
        } => read::events(&store, limit, event_type, json).await,
        Command::Stats { json } => read::stats(&store, json).await,
        Command::Webhooks { command } => match command {
            WebhooksCommand::Recent { count, json } => {
                read::webhooks_recent(&store, count, json).await
            }
            WebhooksCommand::Stats { json } => read::webhooks_stats(&store, json).await,
            WebhooksCommand::Show { alert_id, json } => {
                read::webhooks_show(&store, &alert_id, json).await
            }
        },
        Command::Notifications { limit, json } => admin::notifications(&store, limit, json).await,
        Command::ImportWebhooks { dir, file, dry_run } => {
            import::run(&config, &store, dir, file, dry_run).await
        }
        Command::Advertise { prefix } => {
            control::set_advertised(&config, &store, &prefix, true).await
        }
        Command::Withdraw { prefix, yes } => {
            if !yes {
                control::require_configured(&config, &prefix)?;
                return Err(Usage(format!(
                    "this withdraws {prefix} from Cloudflare: its traffic goes back to the origin unprotected; re-run with --yes"
                ))
                .into());
            }
            control::set_advertised(&config, &store, &prefix, false).await
        }
        Command::Pin {
            prefix,
            reason,
            duration,
        } => control::pin(&config, &store, &prefix, &reason, duration).await,
        Command::Unpin { prefix } => control::unpin(&config, &store, &prefix).await,
        Command::Pause { reason, duration } => control::pause(&store, &reason, duration).await,
        Command::Resume => control::resume(&store).await,
        Command::Prune { older_than, yes } => admin::prune(&store, older_than, yes).await,
        Command::Backup { path } => admin::backup(&store, &path).await,
        Command::Migrate => admin::migrate(&store),
        Command::Audit { limit, json } => admin::audit(&store, limit, json).await,
        Command::Telegram {
            command: TelegramCommand::Test { wait },
        } => telegram::test(&config, &store, std::time::Duration::from_secs(wait)).await,
        Command::CheckConfig
        | Command::HashPassword
        | Command::Completions { .. }
        | Command::Cloudflare { .. } => Ok(()),
    };
    store.close().await;
    result
}
