//! Operator holds: per-prefix pins and the global pause of automatic withdrawals (SPEC §9).
//! A hold with an `until` in the past no longer applies.

use chrono::{DateTime, Utc};
use mt_common::timefmt::to_db;
use serde::Serialize;

use crate::{Result, Store, WriteTx};

/// A pin or the pause.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Hold {
    /// The pinned prefix (empty for the pause).
    pub prefix: String,
    /// Who (`$SUDO_USER`/`$USER`, or the dashboard user).
    pub by: String,
    /// Why.
    pub reason: String,
    /// Since when.
    pub since: String,
    /// Until when (`None`: until removed).
    pub until: Option<String>,
}

impl WriteTx {
    /// Pins `prefix` (replacing an earlier pin).
    pub async fn pin_prefix(
        &mut self,
        prefix: &str,
        by: &str,
        reason: &str,
        now: DateTime<Utc>,
        until: Option<DateTime<Utc>>,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO prefix_pins (prefix, pinned_by, reason, pinned_at, until) VALUES (?1, ?2, ?3, ?4, ?5) \
             ON CONFLICT(prefix) DO UPDATE SET pinned_by = excluded.pinned_by, reason = excluded.reason, \
             pinned_at = excluded.pinned_at, until = excluded.until",
        )
        .bind(prefix)
        .bind(by)
        .bind(reason)
        .bind(to_db(now))
        .bind(until.map(to_db))
        .execute(self.conn())
        .await?;
        Ok(())
    }

    /// Removes a pin; returns whether there was one.
    pub async fn unpin_prefix(&mut self, prefix: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM prefix_pins WHERE prefix = ?1")
            .bind(prefix)
            .execute(self.conn())
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Pauses automatic withdrawals (replacing an earlier pause).
    pub async fn pause_withdrawals(
        &mut self,
        by: &str,
        reason: &str,
        now: DateTime<Utc>,
        until: Option<DateTime<Utc>>,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO withdraw_pause (id, paused_by, reason, paused_at, until) VALUES (1, ?1, ?2, ?3, ?4) \
             ON CONFLICT(id) DO UPDATE SET paused_by = excluded.paused_by, reason = excluded.reason, \
             paused_at = excluded.paused_at, until = excluded.until",
        )
        .bind(by)
        .bind(reason)
        .bind(to_db(now))
        .bind(until.map(to_db))
        .execute(self.conn())
        .await?;
        Ok(())
    }

    /// Ends the pause; returns whether there was one.
    pub async fn resume_withdrawals(&mut self) -> Result<bool> {
        let done = sqlx::query("DELETE FROM withdraw_pause")
            .execute(self.conn())
            .await?;
        Ok(done.rows_affected() > 0)
    }
}

impl Store {
    /// Pins in force at `now`.
    pub async fn active_pins(&self, now: DateTime<Utc>) -> Result<Vec<Hold>> {
        let rows = sqlx::query_as(
            "SELECT prefix, pinned_by AS by, reason, CAST(pinned_at AS TEXT) AS since, CAST(until AS TEXT) AS until \
             FROM prefix_pins WHERE until IS NULL OR datetime(until) > datetime(?1) ORDER BY prefix",
        )
        .bind(to_db(now))
        .fetch_all(self.pool())
        .await?;
        Ok(rows)
    }

    /// The pause, if in force at `now`.
    pub async fn active_pause(&self, now: DateTime<Utc>) -> Result<Option<Hold>> {
        let row = sqlx::query_as(
            "SELECT '' AS prefix, paused_by AS by, reason, CAST(paused_at AS TEXT) AS since, CAST(until AS TEXT) AS until \
             FROM withdraw_pause WHERE until IS NULL OR datetime(until) > datetime(?1)",
        )
        .bind(to_db(now))
        .fetch_optional(self.pool())
        .await?;
        Ok(row)
    }
}
