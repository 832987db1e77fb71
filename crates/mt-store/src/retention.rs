//! Retention (`mtctl prune`): webhook and analytics rows older than a cutoff. Withdrawal
//! history and attack events are the audit trail and are never pruned.

use chrono::{DateTime, Utc};
use mt_common::timefmt::to_db;
use serde::Serialize;

use crate::{Result, Store};

/// Rows older than a cutoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Prunable {
    /// `webhook_events` rows.
    pub webhook_events: i64,
    /// `network_analytics_events` rows.
    pub network_analytics_events: i64,
}

impl Store {
    /// Counts what [`Store::prune`] would delete. Rows whose time cannot be read are kept.
    pub async fn prunable(&self, cutoff: DateTime<Utc>) -> Result<Prunable> {
        let cutoff = to_db(cutoff);
        let (webhook_events, network_analytics_events) = sqlx::query_as(
            "SELECT \
             (SELECT COUNT(*) FROM webhook_events WHERE datetime(received_at) < datetime(?1)), \
             (SELECT COUNT(*) FROM network_analytics_events WHERE datetime(event_datetime) < datetime(?1))",
        )
        .bind(&cutoff)
        .fetch_one(self.pool())
        .await?;
        Ok(Prunable {
            webhook_events,
            network_analytics_events,
        })
    }

    /// Deletes webhook and analytics rows older than `cutoff`, in one transaction.
    pub async fn prune(&self, cutoff: DateTime<Utc>) -> Result<Prunable> {
        let cutoff = to_db(cutoff);
        let mut tx = self.begin().await?;
        let webhooks =
            sqlx::query("DELETE FROM webhook_events WHERE datetime(received_at) < datetime(?1)")
                .bind(&cutoff)
                .execute(tx.conn())
                .await?;
        let analytics = sqlx::query(
            "DELETE FROM network_analytics_events WHERE datetime(event_datetime) < datetime(?1)",
        )
        .bind(&cutoff)
        .execute(tx.conn())
        .await?;
        tx.commit().await?;
        Ok(Prunable {
            webhook_events: i64::try_from(webhooks.rows_affected()).unwrap_or(i64::MAX),
            network_analytics_events: i64::try_from(analytics.rows_affected()).unwrap_or(i64::MAX),
        })
    }
}
