//! `mt-network-analytics`: parse CLI → tracing → config → secrets → database → bind → poll.
//!
//! Exit codes: 0 after a clean shutdown, 1 on a runtime failure, 2 on a configuration error.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser;
use mt_cloudflare::{Client, RetryPolicy};
use mt_common::SystemClock;
use mt_common::config::Config;
use mt_notify::{Notifier, SenderOptions};
use mt_store::{OpenOptions, Store};
use network_analytics::geoip::GeoIp;
use network_analytics::poll::{PollOptions, Poller};
use network_analytics::{Daemon, Metrics, run};

/// Polls Cloudflare's dropped-traffic events (SPEC §8).
#[derive(Debug, Parser)]
#[command(name = "mt-network-analytics", version, about)]
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
    let na = &config.network_analytics;
    let geoip = match GeoIp::open(&na.geoip_asn_db, &na.geoip_country_db) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let client = match Client::from_config(&config, RetryPolicy::default()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    mt_common::runtime::run(serve(config, client, geoip))
}

async fn serve(config: Config, client: Client, geoip: GeoIp) -> anyhow::Result<()> {
    let shutdown = mt_common::shutdown::install().context("cannot install signal handlers")?;
    let store = Store::open(&OpenOptions::from_config(&config.database))
        .await
        .context("cannot open the database")?;
    let listen = config.network_analytics.metrics_listen;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on network_analytics.metrics_listen {listen}"))?;
    let poller = Poller {
        datasets: mt_cloudflare::graphql::DatasetWatch::events(),
        store,
        client,
        notifier: Notifier::new(&config.telegram),
        geoip: Arc::new(geoip),
        clock: SystemClock::shared(),
        options: PollOptions::new(config.network_analytics.lookback),
        metrics: Arc::new(Metrics::default()),
    };
    run(
        Daemon {
            config,
            poller,
            sender: SenderOptions::default(),
        },
        listener,
        shutdown,
    )
    .await
}
