//! Manual control: advertise/withdraw through Cloudflare, pins, the pause. The work is done by
//! `mt-control` (shared with the dashboard); this module prints the outcome.

use mt_common::clock::SystemClock;
use mt_common::config::Config;
use mt_common::timefmt::to_db;
use mt_control::{Actor, AdvertiseOutcome, ControlError, Via};
use mt_store::Store;

use crate::Usage;
use crate::output::operator;

fn actor() -> Actor {
    Actor {
        name: operator(),
        via: Via::Mtctl,
    }
}

/// Maps a refused request or missing configuration to exit code 2, a failure to exit code 1.
fn cli_error(e: ControlError) -> anyhow::Error {
    match e {
        ControlError::Invalid(m) | ControlError::NotConfigured(m) => Usage(m).into(),
        other => other.into(),
    }
}

/// The configured prefix `cidr` names, or a usage error listing the configured ones.
pub fn require_configured(config: &Config, cidr: &str) -> anyhow::Result<()> {
    mt_control::require_configured(config, cidr).map_err(cli_error)?;
    Ok(())
}

/// `mtctl advertise` / `mtctl withdraw --yes`.
pub async fn set_advertised(
    config: &Config,
    store: &Store,
    cidr: &str,
    advertise: bool,
) -> anyhow::Result<()> {
    let cidr = mt_control::require_configured(config, cidr)
        .map_err(cli_error)?
        .cidr
        .to_string();
    let outcome = mt_control::set_advertised(
        config,
        store,
        &SystemClock,
        &mt_control::Cloudflare::from_config(config, mt_cloudflare::RetryPolicy::default()),
        &cidr,
        advertise,
        &actor(),
    )
    .await
    .map_err(cli_error)?;
    match outcome {
        AdvertiseOutcome::Unchanged => println!(
            "{cidr} is already {} on Cloudflare; nothing to do",
            if advertise { "advertised" } else { "withdrawn" }
        ),
        AdvertiseOutcome::Changed { at } => println!(
            "{cidr} {} on Cloudflare at {} UTC (takes effect in {}); logged and notified",
            if advertise { "advertised" } else { "withdrawn" },
            to_db(at),
            if advertise {
                "2-7 minutes"
            } else {
                "about 15 minutes"
            }
        ),
    }
    Ok(())
}

pub async fn pin(
    config: &Config,
    store: &Store,
    cidr: &str,
    reason: &str,
    duration: Option<std::time::Duration>,
) -> anyhow::Result<()> {
    let who = actor();
    let until = mt_control::pin(config, store, &SystemClock, cidr, reason, duration, &who)
        .await
        .map_err(cli_error)?;
    let prefix = mt_control::require_configured(config, cidr)
        .map_err(cli_error)?
        .cidr;
    println!(
        "{prefix} pinned by {} until {}: it will not be withdrawn automatically",
        who.name,
        until.map(to_db).unwrap_or_else(|| "unpinned".into())
    );
    Ok(())
}

pub async fn unpin(config: &Config, store: &Store, cidr: &str) -> anyhow::Result<()> {
    let existed = mt_control::unpin(config, store, &SystemClock, cidr, &actor())
        .await
        .map_err(cli_error)?;
    let prefix = mt_control::require_configured(config, cidr)
        .map_err(cli_error)?
        .cidr;
    if existed {
        println!("{prefix} unpinned");
    } else {
        println!("{prefix} was not pinned");
    }
    Ok(())
}

pub async fn pause(
    store: &Store,
    reason: &str,
    duration: Option<std::time::Duration>,
) -> anyhow::Result<()> {
    let who = actor();
    let until = mt_control::pause(store, &SystemClock, reason, duration, &who)
        .await
        .map_err(cli_error)?;
    println!(
        "automatic withdrawals paused by {} until {}",
        who.name,
        until.map(to_db).unwrap_or_else(|| "resumed".into())
    );
    Ok(())
}

pub async fn resume(store: &Store) -> anyhow::Result<()> {
    let existed = mt_control::resume(store, &SystemClock, &actor())
        .await
        .map_err(cli_error)?;
    println!(
        "{}",
        if existed {
            "automatic withdrawals resumed"
        } else {
            "automatic withdrawals were not paused"
        }
    );
    Ok(())
}
