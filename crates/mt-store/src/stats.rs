//! `get_stats()`: the totals the seed's `--status` footer and stats query show.

use chrono::{DateTime, Utc};
use mt_common::timefmt::to_db;
use serde::Serialize;

use crate::{Result, Store};

/// Database statistics. Field names are the seed's `get_stats()` keys: `pending_withdrawals`
/// (its documented key), then the figures of its `--status` footer ("Pending | Total
/// Withdrawals | Success | Events Today") and stats query (`total_events`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Scheduled requests still pending.
    pub pending_withdrawals: i64,
    /// Rows in `withdrawal_history`.
    pub total_withdrawals: i64,
    /// History rows with status `success`.
    pub successful_withdrawals: i64,
    /// History rows with status `failed`.
    pub failed_withdrawals: i64,
    /// Rows in `attack_events`.
    pub total_events: i64,
    /// `attack_events` created on `now`'s UTC date.
    pub events_today: i64,
    /// Rows in `webhook_events`.
    pub total_webhooks: i64,
    /// Rows in `network_analytics_events`.
    pub total_analytics_events: i64,
}

impl Store {
    /// Counts for `mtctl stats` and the status footer; "today" is `now`'s UTC date.
    pub async fn stats(&self, now: DateTime<Utc>) -> Result<Stats> {
        let (
            pending_withdrawals,
            total_withdrawals,
            successful_withdrawals,
            failed_withdrawals,
            total_events,
            events_today,
            total_webhooks,
            total_analytics_events,
        ) = sqlx::query_as(
            "SELECT \
             (SELECT COUNT(*) FROM pending_withdrawals WHERE COALESCE(status, 'pending') = 'pending'), \
             (SELECT COUNT(*) FROM withdrawal_history), \
             (SELECT COUNT(*) FROM withdrawal_history WHERE status = 'success'), \
             (SELECT COUNT(*) FROM withdrawal_history WHERE status = 'failed'), \
             (SELECT COUNT(*) FROM attack_events), \
             (SELECT COUNT(*) FROM attack_events WHERE date(created_at) = date(?1)), \
             (SELECT COUNT(*) FROM webhook_events), \
             (SELECT COUNT(*) FROM network_analytics_events)",
        )
        .bind(to_db(now))
        .fetch_one(self.pool())
        .await?;
        Ok(Stats {
            pending_withdrawals,
            total_withdrawals,
            successful_withdrawals,
            failed_withdrawals,
            total_events,
            events_today,
            total_webhooks,
            total_analytics_events,
        })
    }
}
