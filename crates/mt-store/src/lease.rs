//! Named leases in the database: one process instance at a time may act under a name (the
//! Telegram sender, the autowithdraw cycle). SPEC §7.9:
//! - a lease is taken or renewed in a `BEGIN IMMEDIATE` transaction, so two processes can never
//!   both believe they took it;
//! - expiry is judged by the **database's** clock ([`WriteTx::database_now_ms`]), not by each
//!   host's;
//! - every change of holder increments a **fencing token**; a write that must only happen
//!   under the lease checks its [`Fence`] in its own transaction ([`WriteTx::check_fence`],
//!   [`WriteTx::renew_lease`]), so an instance whose lease was taken over while it was slow
//!   or paused can no longer write.
//!
//! The rule itself is the pure [`transition`], which the property tests drive.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::{Error, Result, Store, WriteTx};

/// A lease as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRow {
    /// Who holds it.
    pub holder: String,
    /// Incremented on every change of holder.
    pub token: i64,
    /// Expiry by the database's clock, Unix ms (0: released).
    pub expires_at_ms: i64,
}

/// Proof of holding a lease, presented to fenced writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    /// The lease's name.
    pub name: String,
    /// This process's holder id.
    pub holder: String,
    /// The token this holder was granted.
    pub token: i64,
}

/// The lease after `holder` asks for it at `now_ms` (database clock) for `ttl_ms`; `None`:
/// refused, another holder's lease has not expired. The same holder keeps its token (nobody
/// acted in between, or the token would have changed); a new holder gets the next token.
pub fn transition(
    current: Option<&LeaseRow>,
    holder: &str,
    now_ms: i64,
    ttl_ms: i64,
) -> Option<LeaseRow> {
    let expires_at_ms = now_ms.saturating_add(ttl_ms);
    match current {
        Some(c) if c.holder == holder => Some(LeaseRow {
            expires_at_ms,
            ..c.clone()
        }),
        Some(c) if c.expires_at_ms > now_ms => None,
        other => Some(LeaseRow {
            holder: holder.to_owned(),
            token: other.map_or(1, |c| c.token.saturating_add(1)),
            expires_at_ms,
        }),
    }
}

fn millis(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX)
}

impl Store {
    /// Takes or renews the lease `name` for `holder` for `ttl` (by the database's clock).
    /// Returns its fence, or `None` (changing nothing) while another holder's lease has not
    /// expired.
    pub async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<Fence>> {
        let mut tx = self.begin().await?;
        let granted = tx.acquire_lease(name, holder, ttl).await?;
        tx.commit().await?;
        Ok(granted)
    }

    /// Gives the lease up (on shutdown) so another instance can take over at once. The row
    /// stays (expired), so the fencing token never goes back.
    pub async fn release_lease(&self, name: &str, holder: &str) -> Result<()> {
        sqlx::query("UPDATE mt_leases SET expires_at_ms = 0 WHERE name = ?1 AND holder = ?2")
            .bind(name)
            .bind(holder)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// The current holder of `name` and when its lease expires (database clock), unless it was
    /// released.
    pub async fn lease_holder(&self, name: &str) -> Result<Option<(String, DateTime<Utc>)>> {
        let row: Option<(String, i64)> = sqlx::query_as(
            "SELECT holder, expires_at_ms FROM mt_leases WHERE name = ?1 AND expires_at_ms > 0",
        )
        .bind(name)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.and_then(|(h, ms)| DateTime::from_timestamp_millis(ms).map(|t| (h, t))))
    }
}

impl WriteTx {
    async fn lease_row(&mut self, name: &str) -> Result<Option<LeaseRow>> {
        let row: Option<(String, i64, i64)> =
            sqlx::query_as("SELECT holder, token, expires_at_ms FROM mt_leases WHERE name = ?1")
                .bind(name)
                .fetch_optional(self.conn())
                .await?;
        Ok(row.map(|(holder, token, expires_at_ms)| LeaseRow {
            holder,
            token,
            expires_at_ms,
        }))
    }

    /// [`Store::acquire_lease`] inside this transaction.
    pub async fn acquire_lease(
        &mut self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<Fence>> {
        let now_ms = self.database_now_ms().await?;
        let current = self.lease_row(name).await?;
        let Some(next) = transition(current.as_ref(), holder, now_ms, millis(ttl)) else {
            return Ok(None);
        };
        let acquired_at = DateTime::from_timestamp_millis(now_ms).unwrap_or_default();
        sqlx::query(
            "INSERT INTO mt_leases (name, holder, acquired_at, expires_at_ms, token) \
             VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT(name) DO UPDATE SET \
             holder = excluded.holder, expires_at_ms = excluded.expires_at_ms, \
             token = excluded.token, \
             acquired_at = CASE WHEN mt_leases.token = excluded.token THEN mt_leases.acquired_at \
                           ELSE excluded.acquired_at END",
        )
        .bind(name)
        .bind(&next.holder)
        .bind(mt_common::timefmt::to_db(acquired_at))
        .bind(next.expires_at_ms)
        .bind(next.token)
        .execute(self.conn())
        .await?;
        Ok(Some(Fence {
            name: name.to_owned(),
            holder: next.holder,
            token: next.token,
        }))
    }

    /// Fails with [`Error::LeaseLost`] unless `fence` is still the lease's holder and token.
    /// Call it in every transaction whose writes must only happen under the lease; the
    /// transaction's write lock keeps it true until the commit.
    pub async fn check_fence(&mut self, fence: &Fence) -> Result<()> {
        match self.lease_row(&fence.name).await? {
            Some(row) if row.holder == fence.holder && row.token == fence.token => Ok(()),
            _ => Err(Error::LeaseLost {
                name: fence.name.clone(),
            }),
        }
    }

    /// Renews the lease of `fence` for `ttl` from the database's clock, or fails with
    /// [`Error::LeaseLost`] when another instance took it over.
    pub async fn renew_lease(&mut self, fence: &Fence, ttl: Duration) -> Result<()> {
        self.check_fence(fence).await?;
        let now_ms = self.database_now_ms().await?;
        sqlx::query("UPDATE mt_leases SET expires_at_ms = ?2 WHERE name = ?1")
            .bind(&fence.name)
            .bind(now_ms.saturating_add(millis(ttl)))
            .execute(self.conn())
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(holder: &str, token: i64, expires_at_ms: i64) -> LeaseRow {
        LeaseRow {
            holder: holder.into(),
            token,
            expires_at_ms,
        }
    }

    #[test]
    fn the_token_changes_exactly_when_the_holder_does() {
        assert_eq!(transition(None, "a", 0, 10), Some(row("a", 1, 10)));
        let a = row("a", 1, 10);
        assert_eq!(transition(Some(&a), "b", 9, 10), None, "not expired");
        assert_eq!(transition(Some(&a), "a", 9, 10), Some(row("a", 1, 19)));
        assert_eq!(
            transition(Some(&a), "a", 50, 10),
            Some(row("a", 1, 60)),
            "re-taking its own expired lease: nobody acted in between"
        );
        assert_eq!(transition(Some(&a), "b", 10, 10), Some(row("b", 2, 20)));
        let released = row("b", 2, 0);
        assert_eq!(
            transition(Some(&released), "a", 5, 10),
            Some(row("a", 3, 15))
        );
    }
}
