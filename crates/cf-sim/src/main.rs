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
    /// Cloudflare's GraphQL schema: generate or check the project's pruned SDL.
    GraphqlSchema {
        #[command(subcommand)]
        command: SchemaCommand,
    },
}

#[derive(Debug, Subcommand)]
enum SchemaCommand {
    /// Print the pruned SDL generated from Cloudflare's full introspected schema.
    Prune {
        /// The full schema (shared/fixtures/cloudflare/graphql/schema.graphql).
        full: PathBuf,
    },
    /// Check that PRUNED is a faithful subset of FULL (exit 1 naming every difference).
    Check {
        /// The full schema.
        full: PathBuf,
        /// The pruned SDL (crates/mt-cloudflare/graphql/cloudflare-pruned.graphql).
        pruned: PathBuf,
    },
}

fn read(path: &PathBuf) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

fn schema(command: SchemaCommand) -> anyhow::Result<std::process::ExitCode> {
    match command {
        SchemaCommand::Prune { full } => {
            let sdl = cf_sim::schema::prune(&read(&full)?).map_err(anyhow::Error::msg)?;
            print!("{sdl}");
            Ok(std::process::ExitCode::SUCCESS)
        }
        SchemaCommand::Check { full, pruned } => {
            let (full_text, pruned_text) = (read(&full)?, read(&pruned)?);
            let problems = cf_sim::schema::check_subset(&full_text, &pruned_text)
                .map_err(anyhow::Error::msg)?;
            let sha = cf_sim::schema::sha256_hex(&full_text);
            if cf_sim::schema::recorded_sha256(&pruned_text) != Some(sha.as_str()) {
                println!(
                    "note: {} was generated from another version of the full schema (sha256 {sha} now); regenerate it with `cf-sim graphql-schema prune`",
                    pruned.display()
                );
            }
            for p in &problems {
                println!("error: {p}");
            }
            if problems.is_empty() {
                println!(
                    "ok: {} is a faithful subset of {}",
                    pruned.display(),
                    full.display()
                );
                Ok(std::process::ExitCode::SUCCESS)
            } else {
                Ok(std::process::ExitCode::FAILURE)
            }
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<std::process::ExitCode> {
    mt_common::telemetry::init();
    let (listen, scenario) = match Cli::parse().command {
        Command::Serve { listen, scenario } => (listen, scenario),
        Command::GraphqlSchema { command } => return schema(command),
    };
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
    Ok(std::process::ExitCode::SUCCESS)
}
