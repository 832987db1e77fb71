//! The independent watchdog (SPEC §8): autowithdraw writes `prefix_calm_status.updated_at`
//! every cycle; when the newest is older than three of its intervals while a prefix is
//! advertised, nothing is being withdrawn, and the SOC is told (once per episode; the episode
//! survives restarts in `mt_state`), then told again when it recovers.

use std::time::Duration;

use mt_common::SharedClock;
use mt_common::timefmt::{from_db, to_db};
use mt_notify::templates::{AutowithdrawRecovered, AutowithdrawStale};
use mt_notify::{Message, Notifier};
use mt_store::Store;

/// Where an announced episode is remembered.
pub const STALE_KEY: &str = "network_analytics.autowithdraw_stale_since";

/// What the check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watch {
    /// Judgements are fresh, or nothing is advertised.
    Fine,
    /// Stale; the alert was sent now.
    Alerted,
    /// Stale; already announced.
    StillStale,
    /// Fresh again; the recovery was sent now.
    Recovered,
}

/// Checks autowithdraw's judgements; `interval` is `[autowithdraw] interval`.
pub async fn check(
    store: &Store,
    notifier: &Notifier,
    clock: &SharedClock,
    interval: Duration,
) -> mt_store::Result<Watch> {
    let now = clock.now();
    let rows = store.prefix_calm_statuses().await?;
    let advertised: Vec<String> = rows
        .iter()
        .filter(|r| r.advertised)
        .filter_map(|r| r.prefix.clone())
        .collect();
    let newest = rows
        .iter()
        .filter_map(|r| r.updated_at.as_deref().and_then(from_db))
        .max();
    let threshold = interval.saturating_mul(3);
    let limit = chrono::Duration::from_std(threshold).unwrap_or(chrono::Duration::MAX);
    let stale = !advertised.is_empty() && newest.is_none_or(|t| now - t > limit);
    let announced = store.state(STALE_KEY).await?.as_deref().and_then(from_db);
    match (stale, announced) {
        (true, None) => {
            let mut tx = store.begin().await?;
            let message = Message::AutowithdrawStale(AutowithdrawStale {
                last_judgement: newest,
                advertised,
                threshold,
                at: now,
            });
            notifier.queue(&mut tx, &message, now).await?;
            tx.set_state(STALE_KEY, &to_db(now), now).await?;
            tx.commit().await?;
            tracing::error!(last_judgement = ?newest, "autowithdraw is not judging while prefixes are advertised");
            Ok(Watch::Alerted)
        }
        (true, Some(_)) => Ok(Watch::StillStale),
        (false, Some(since)) => {
            let mut tx = store.begin().await?;
            let message = Message::AutowithdrawRecovered(AutowithdrawRecovered {
                stale_for: (now - since).to_std().unwrap_or_default(),
                at: now,
            });
            notifier.queue(&mut tx, &message, now).await?;
            tx.clear_state(STALE_KEY).await?;
            tx.commit().await?;
            tracing::info!("autowithdraw is judging again");
            Ok(Watch::Recovered)
        }
        (false, None) => Ok(Watch::Fine),
    }
}
