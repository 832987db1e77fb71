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
             (SELECT COUNT(*) FROM webhook_events WHERE datetime(received_at) < datetime(?1) AND archived_at IS NOT NULL), \
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

    /// Deletes webhook and analytics rows older than `cutoff` in small batches: each batch is
    /// one short `BEGIN IMMEDIATE` transaction over a range of at most `options.batch` row ids
    /// (the primary key, so no full scan holds the write lock), followed by a pause that lets
    /// other writers (webhooks, cycles) in. Rows inserted after the prune started are not
    /// looked at. `progress` is called after every batch.
    pub async fn prune(
        &self,
        cutoff: DateTime<Utc>,
        options: &PruneOptions,
        mut progress: impl FnMut(&PruneProgress),
    ) -> Result<Prunable> {
        let cutoff = to_db(cutoff);
        let mut done = Prunable {
            webhook_events: 0,
            network_analytics_events: 0,
        };
        for table in [
            PrunedTable::WebhookEvents,
            PrunedTable::NetworkAnalyticsEvents,
        ] {
            let (first, last): (Option<i64>, Option<i64>) = sqlx::query_as(table.id_range())
                .fetch_one(self.pool())
                .await?;
            let (Some(first), Some(last)) = (first, last) else {
                continue;
            };
            let batch = i64::from(options.batch.max(1));
            let mut from = first;
            while from <= last {
                let to = from.saturating_add(batch).min(last.saturating_add(1));
                let mut tx = self.begin().await?;
                let deleted = sqlx::query(table.delete())
                    .bind(from)
                    .bind(to)
                    .bind(&cutoff)
                    .execute(tx.conn())
                    .await?
                    .rows_affected();
                tx.commit().await?;
                let deleted = i64::try_from(deleted).unwrap_or(i64::MAX);
                match table {
                    PrunedTable::WebhookEvents => done.webhook_events += deleted,
                    PrunedTable::NetworkAnalyticsEvents => done.network_analytics_events += deleted,
                }
                progress(&PruneProgress {
                    table: table.name(),
                    scanned_to_id: to - 1,
                    last_id: last,
                    deleted: done,
                });
                from = to;
                if from <= last && !options.pause.is_zero() {
                    tokio::time::sleep(options.pause).await;
                }
            }
        }
        Ok(done)
    }
}

/// How [`Store::prune`] paces itself.
#[derive(Debug, Clone)]
pub struct PruneOptions {
    /// Row ids per transaction.
    pub batch: u32,
    /// Pause between transactions.
    pub pause: std::time::Duration,
}

impl Default for PruneOptions {
    fn default() -> Self {
        Self {
            batch: 2_000,
            pause: std::time::Duration::from_millis(20),
        }
    }
}

/// Where a prune is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PruneProgress {
    /// The table being pruned.
    pub table: &'static str,
    /// Ids up to this one are done.
    pub scanned_to_id: i64,
    /// The table's last id when the prune started.
    pub last_id: i64,
    /// Rows deleted so far (both tables).
    pub deleted: Prunable,
}

#[derive(Debug, Clone, Copy)]
enum PrunedTable {
    WebhookEvents,
    NetworkAnalyticsEvents,
}

impl PrunedTable {
    fn name(self) -> &'static str {
        match self {
            Self::WebhookEvents => "webhook_events",
            Self::NetworkAnalyticsEvents => "network_analytics_events",
        }
    }

    fn id_range(self) -> &'static str {
        match self {
            Self::WebhookEvents => "SELECT MIN(id), MAX(id) FROM webhook_events",
            Self::NetworkAnalyticsEvents => "SELECT MIN(id), MAX(id) FROM network_analytics_events",
        }
    }

    /// Deletes the old rows among ids `[?1, ?2)`. Rows whose time cannot be read are kept.
    fn delete(self) -> &'static str {
        match self {
            Self::WebhookEvents => {
                // A row whose archive copy is not written yet is kept (SPEC §6).
                "DELETE FROM webhook_events WHERE id >= ?1 AND id < ?2 \
                 AND datetime(received_at) < datetime(?3) AND archived_at IS NOT NULL"
            }
            Self::NetworkAnalyticsEvents => {
                "DELETE FROM network_analytics_events WHERE id >= ?1 AND id < ?2 \
                 AND datetime(event_datetime) < datetime(?3)"
            }
        }
    }
}
