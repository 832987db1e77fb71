//! `cf-sim serve --scenario FILE`: the simulator as a process (for the demo and manual tests).

use std::path::PathBuf;

use anyhow::Context as _;
use cf_sim::{Scenario, Sim};
use clap::{Parser, Subcommand};

/// A simulator of the Cloudflare and Telegram APIs the suite uses.
#[derive(Debug, Parser)]
#[command(name = "cf-sim", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve until SIGINT/SIGTERM; prints the listening address first.
    Serve {
        /// Address to listen on (port 0: any free port).
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: std::net::SocketAddr,
        /// Scenario (TOML): account, prefixes, traffic timeline.
        #[arg(long)]
        scenario: Option<PathBuf>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    mt_common::telemetry::init();
    let Command::Serve { listen, scenario } = Cli::parse().command;
    let scenario: Scenario = match scenario {
        Some(path) => {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?
        }
        None => Scenario::default(),
    };
    let shutdown = mt_common::shutdown::install()?;
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let running = Sim::new(scenario).serve(listener).await?;
    println!("cf-sim listening on {}", running.url());
    shutdown.cancelled().await;
    running.stop().await;
    Ok(())
}
