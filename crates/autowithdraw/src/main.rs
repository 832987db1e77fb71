//! `mt-autowithdraw`: parse CLI → tracing → config → token → database → bind → cycle.
//!
//! Exit codes: 0 after a clean shutdown, 1 on a runtime failure, 2 on a configuration error.

use mt_cloudflare::graphql::DatasetWatch;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use autowithdraw::cycle::Engine;
use autowithdraw::daemon::{Daemon, Metrics, run};
use clap::Parser;
use mt_cloudflare::{Client, RetryPolicy};
use mt_common::SystemClock;
use mt_common::config::Config;
use mt_notify::{Notifier, SenderOptions};
use mt_store::{OpenOptions, Store};

/// Withdraws prefixes once calm long enough, never during an attack (SPEC §7).
#[derive(Debug, Parser)]
#[command(name = "mt-autowithdraw", version, about)]
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
    let client = match Client::from_config(&config, RetryPolicy::default()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    mt_common::runtime::run(serve(config, client))
}

async fn serve(config: Config, client: Client) -> anyhow::Result<()> {
    let shutdown = mt_common::shutdown::install().context("cannot install signal handlers")?;
    let store = Store::open(&OpenOptions::from_config(&config.database))
        .await
        .context("cannot open the database")?;
    let listen = config.autowithdraw.metrics_listen;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on autowithdraw.metrics_listen {listen}"))?;
    let engine = Engine {
        notifier: Notifier::new(&config.telegram),
        config: Arc::new(config),
        store,
        client,
        clock: SystemClock::shared(),
        holder: Engine::new_holder(),
        datasets: DatasetWatch::calm(),
    };
    run(
        Daemon {
            engine,
            sender: SenderOptions::default(),
            metrics: Arc::new(Metrics::default()),
        },
        listener,
        shutdown,
    )
    .await
}
