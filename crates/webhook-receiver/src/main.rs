//! `mt-webhook-receiver`: parse CLI → tracing → config → secret → database → bind → serve.
//!
//! Exit codes: 0 after a clean shutdown, 1 on a runtime failure, 2 on a configuration error.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use mt_common::SystemClock;
use mt_common::config::Config;
use mt_notify::SenderOptions;
use mt_store::{OpenOptions, Store};
use webhook_receiver::{Daemon, run};

/// Receives Cloudflare alert webhooks (SPEC §6).
#[derive(Debug, Parser)]
#[command(name = "mt-webhook-receiver", version, about)]
struct Cli {
    /// Config file (default: $MT_CONFIG, else /etc/magic-transit/config.toml).
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
}

fn main() -> ExitCode {
    mt_common::manpage::exit_if_requested::<Cli>();
    let cli = Cli::parse();
    mt_common::telemetry::init();
    let config = Config::load_or_exit(cli.config.as_deref());
    let secret = match config.webhook_secret() {
        Ok((secret, origin)) => {
            tracing::info!(%origin, "webhook secret loaded");
            Some(secret)
        }
        Err(e) if config.webhook.allow_unauthenticated => {
            tracing::warn!(reason = %e, "UNAUTHENTICATED MODE: webhooks are accepted without cf-webhook-auth");
            None
        }
        Err(e) => {
            eprintln!(
                "error: {e} (webhooks must be authenticated; set webhook.allow_unauthenticated = true only for a lab)"
            );
            return ExitCode::from(2);
        }
    };
    mt_common::runtime::run(serve(config, secret))
}

async fn serve(config: Config, secret: Option<secrecy::SecretString>) -> anyhow::Result<()> {
    let shutdown = mt_common::shutdown::install().context("cannot install signal handlers")?;
    let store = Store::open(&OpenOptions::from_config(&config.database))
        .await
        .context("cannot open the database")?;
    let listener = tokio::net::TcpListener::bind(config.webhook.listen)
        .await
        .with_context(|| format!("cannot listen on webhook.listen {}", config.webhook.listen))?;
    let daemon = Daemon {
        config,
        store,
        clock: SystemClock::shared(),
        secret,
        sender: SenderOptions::default(),
    };
    run(daemon, listener, shutdown).await
}
