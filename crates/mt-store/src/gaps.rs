//! `telemetry_gaps`: time that can no longer be judged (SPEC §7.2), kept as a gap that breaks
//! the calm stretch.

use chrono::{DateTime, Utc};
use mt_common::timefmt::{from_db, to_db};
use sqlx::Row as _;

use crate::{Result, Store, WriteTx};

/// A range of time declared lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelemetryGap {
    /// Start (inclusive).
    pub start: DateTime<Utc>,
    /// End (exclusive).
    pub end: DateTime<Utc>,
    /// Why it could not be judged.
    pub reason: String,
}

impl WriteTx {
    /// Records a lost range.
    pub async fn insert_telemetry_gap(
        &mut self,
        gap: &TelemetryGap,
        now: DateTime<Utc>,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO telemetry_gaps (gap_start, gap_end, reason, created_at) VALUES (?1, ?2, ?3, ?4)",
        )
        .bind(to_db(gap.start))
        .bind(to_db(gap.end))
        .bind(&gap.reason)
        .bind(to_db(now))
        .execute(self.conn())
        .await?;
        Ok(())
    }
}

impl Store {
    /// The newest lost ranges, newest first.
    pub async fn telemetry_gaps(&self, limit: u32) -> Result<Vec<TelemetryGap>> {
        let rows = sqlx::query(
            "SELECT gap_start, gap_end, reason FROM telemetry_gaps ORDER BY gap_end DESC, id DESC LIMIT ?1",
        )
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                Some(TelemetryGap {
                    start: from_db(r.try_get::<String, _>(0).ok()?.as_str())?,
                    end: from_db(r.try_get::<String, _>(1).ok()?.as_str())?,
                    reason: r.try_get(2).ok()?,
                })
            })
            .collect())
    }
}
