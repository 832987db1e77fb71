//! Named leases in the database: one process instance at a time may act under a name (the
//! Telegram sender, the autowithdraw cycle). A lease is taken or renewed in a `BEGIN IMMEDIATE`
//! transaction, so two processes can never both believe they hold it.

use std::time::Duration;

use chrono::{DateTime, Utc};
use mt_common::timefmt::to_db;

use crate::{Result, Store};

impl Store {
    /// Takes or renews the lease `name` for `holder` until `now + ttl`. Returns `false` (and
    /// changes nothing) while another holder's lease has not expired.
    pub async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let now_ms = now.timestamp_millis();
        let expires = now_ms.saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX));
        let mut tx = self.begin().await?;
        let current: Option<(String, i64)> =
            sqlx::query_as("SELECT holder, expires_at_ms FROM mt_leases WHERE name = ?1")
                .bind(name)
                .fetch_optional(tx.conn())
                .await?;
        let acquired = match current {
            Some((h, until)) if h != holder && until > now_ms => false,
            Some((h, _)) if h == holder => {
                sqlx::query("UPDATE mt_leases SET expires_at_ms = ?2 WHERE name = ?1")
                    .bind(name)
                    .bind(expires)
                    .execute(tx.conn())
                    .await?;
                true
            }
            _ => {
                sqlx::query(
                    "INSERT INTO mt_leases (name, holder, acquired_at, expires_at_ms) \
                     VALUES (?1, ?2, ?3, ?4) ON CONFLICT(name) DO UPDATE SET \
                     holder = excluded.holder, acquired_at = excluded.acquired_at, \
                     expires_at_ms = excluded.expires_at_ms",
                )
                .bind(name)
                .bind(holder)
                .bind(to_db(now))
                .bind(expires)
                .execute(tx.conn())
                .await?;
                true
            }
        };
        tx.commit().await?;
        Ok(acquired)
    }

    /// Gives the lease up (on shutdown) so another instance can take over at once.
    pub async fn release_lease(&self, name: &str, holder: &str) -> Result<()> {
        sqlx::query("DELETE FROM mt_leases WHERE name = ?1 AND holder = ?2")
            .bind(name)
            .bind(holder)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// The current holder of `name` and when its lease expires, if anyone holds it.
    pub async fn lease_holder(&self, name: &str) -> Result<Option<(String, DateTime<Utc>)>> {
        let row: Option<(String, i64)> =
            sqlx::query_as("SELECT holder, expires_at_ms FROM mt_leases WHERE name = ?1")
                .bind(name)
                .fetch_optional(self.pool())
                .await?;
        Ok(row.and_then(|(h, ms)| DateTime::from_timestamp_millis(ms).map(|t| (h, t))))
    }
}
