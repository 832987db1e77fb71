//! `mt-dashboard`: parse CLI → tracing → config → users → database → bind → serve.
//!
//! Exit codes: 0 after a clean shutdown, 1 on a runtime failure, 2 on a configuration error.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use dashboard::AppState;
use dashboard::auth::Auth;
use mt_common::SystemClock;
use mt_common::config::Config;
use mt_store::{OpenOptions, Store};

/// The SOC's web view and manual controls (issue #10).
#[derive(Debug, Parser)]
#[command(name = "mt-dashboard", version, about)]
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
    let auth = match Auth::new(&config.dashboard) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if !auth.has_users() {
        tracing::warn!(
            "no [[dashboard.users]] configured: nobody can log in (make a hash with `mtctl hash-password`)"
        );
    }
    mt_common::runtime::run(serve(config, auth))
}

async fn serve(config: Config, auth: Auth) -> anyhow::Result<()> {
    let shutdown = mt_common::shutdown::install().context("cannot install signal handlers")?;
    let store = Store::open(&OpenOptions::from_config(&config.database))
        .await
        .context("cannot open the database")?;
    let listen = config.dashboard.listen;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on dashboard.listen {listen}"))?;
    let state = AppState::with_auth(config, store, SystemClock::shared(), auth);
    dashboard::run(state, listener, shutdown).await
}
