//! `mt_state`: small named values a daemon keeps across restarts.

use chrono::{DateTime, Utc};
use mt_common::timefmt::to_db;

use crate::{Result, Store, WriteTx};

impl WriteTx {
    /// Sets `key` to `value`.
    pub async fn set_state(&mut self, key: &str, value: &str, now: DateTime<Utc>) -> Result<()> {
        sqlx::query(
            "INSERT INTO mt_state (key, value, updated_at) VALUES (?1, ?2, ?3) \
             ON CONFLICT(key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
        )
        .bind(key)
        .bind(value)
        .bind(to_db(now))
        .execute(self.conn())
        .await?;
        Ok(())
    }

    /// Removes `key`.
    pub async fn clear_state(&mut self, key: &str) -> Result<()> {
        sqlx::query("DELETE FROM mt_state WHERE key = ?1")
            .bind(key)
            .execute(self.conn())
            .await?;
        Ok(())
    }
}

impl Store {
    /// The value of `key`, if set.
    pub async fn state(&self, key: &str) -> Result<Option<String>> {
        let value = sqlx::query_scalar("SELECT value FROM mt_state WHERE key = ?1")
            .bind(key)
            .fetch_optional(self.pool())
            .await?;
        Ok(value)
    }

    /// Sets `key` to `value` in its own transaction.
    pub async fn set_state(&self, key: &str, value: &str, now: DateTime<Utc>) -> Result<()> {
        let mut tx = self.begin().await?;
        tx.set_state(key, value, now).await?;
        tx.commit().await
    }

    /// Removes `key` in its own transaction.
    pub async fn clear_state(&self, key: &str) -> Result<()> {
        let mut tx = self.begin().await?;
        tx.clear_state(key).await?;
        tx.commit().await
    }
}
