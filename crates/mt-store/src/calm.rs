//! `prefix_calm_status`: autowithdraw's per-prefix view, read by dashboards and `mtctl`.

use chrono::{DateTime, Utc};
use mt_common::timefmt::to_db;
use serde::Serialize;

use crate::{Result, Store, WriteTx};

/// One prefix's calm status.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct PrefixCalmStatus {
    /// The prefix (canonical CIDR).
    #[sqlx(try_from = "crate::loose::LooseText")]
    pub prefix: Option<String>,
    /// Advertised by Cloudflare.
    #[sqlx(try_from = "crate::loose::LooseBool")]
    pub advertised: bool,
    /// Under attack.
    #[sqlx(try_from = "crate::loose::LooseBool")]
    pub under_attack: bool,
    /// Start of the current calm stretch (`YYYY-MM-DD HH:MM:SS`).
    #[sqlx(try_from = "crate::loose::LooseText")]
    pub calm_since: Option<String>,
    /// Dropped packets during the last attack.
    #[sqlx(try_from = "crate::loose::LooseInt")]
    pub last_attack_packets: Option<i64>,
    /// Dropped Mbps during the last attack.
    #[sqlx(try_from = "crate::loose::LooseReal")]
    pub last_attack_mbps: Option<f64>,
    /// Comma-separated mitigation systems.
    #[sqlx(try_from = "crate::loose::LooseText")]
    pub mitigation_systems: Option<String>,
    /// Last judgement time.
    #[sqlx(try_from = "crate::loose::LooseText")]
    pub updated_at: Option<String>,
}

/// What autowithdraw writes for a prefix each cycle.
#[derive(Debug, Clone, PartialEq)]
pub struct CalmUpdate<'a> {
    /// The prefix (canonical CIDR).
    pub prefix: &'a str,
    /// Advertised by Cloudflare.
    pub advertised: bool,
    /// Under attack.
    pub under_attack: bool,
    /// Start of the current calm stretch.
    pub calm_since: Option<DateTime<Utc>>,
    /// Dropped packets during the last attack.
    pub last_attack_packets: i64,
    /// Dropped Mbps during the last attack.
    pub last_attack_mbps: f64,
    /// Mitigation systems seen, comma-separated.
    pub mitigation_systems: &'a str,
    /// Judgement time.
    pub updated_at: DateTime<Utc>,
}

impl WriteTx {
    /// Inserts or replaces every column of one prefix's row.
    pub async fn upsert_prefix_calm_status(&mut self, u: &CalmUpdate<'_>) -> Result<()> {
        sqlx::query(
            "INSERT INTO prefix_calm_status (prefix, advertised, under_attack, calm_since, \
             last_attack_packets, last_attack_mbps, mitigation_systems, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
             ON CONFLICT(prefix) DO UPDATE SET advertised = excluded.advertised, \
             under_attack = excluded.under_attack, calm_since = excluded.calm_since, \
             last_attack_packets = excluded.last_attack_packets, \
             last_attack_mbps = excluded.last_attack_mbps, \
             mitigation_systems = excluded.mitigation_systems, updated_at = excluded.updated_at",
        )
        .bind(u.prefix)
        .bind(u.advertised)
        .bind(u.under_attack)
        .bind(u.calm_since.map(to_db))
        .bind(u.last_attack_packets)
        .bind(u.last_attack_mbps)
        .bind(u.mitigation_systems)
        .bind(to_db(u.updated_at))
        .execute(self.conn())
        .await?;
        Ok(())
    }
}

impl WriteTx {
    /// A START webhook for `prefix`: marks it under attack and clears its calm clock. Does not
    /// touch `updated_at`, which is autowithdraw's judgement time (watched by the analytics
    /// daemon); a new row gets `at` as its first `updated_at`.
    pub async fn mark_prefix_under_attack(
        &mut self,
        prefix: &str,
        at: DateTime<Utc>,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO prefix_calm_status (prefix, advertised, under_attack, calm_since, updated_at) \
             VALUES (?1, 0, 1, NULL, ?2) \
             ON CONFLICT(prefix) DO UPDATE SET under_attack = 1, calm_since = NULL",
        )
        .bind(prefix)
        .bind(to_db(at))
        .execute(self.conn())
        .await?;
        Ok(())
    }

    /// An auto-advertisement webhook reported `prefix` advertised. Same `updated_at` rule as
    /// [`WriteTx::mark_prefix_under_attack`].
    pub async fn mark_prefix_advertised(&mut self, prefix: &str, at: DateTime<Utc>) -> Result<()> {
        sqlx::query(
            "INSERT INTO prefix_calm_status (prefix, advertised, under_attack, calm_since, updated_at) \
             VALUES (?1, 1, 0, NULL, ?2) \
             ON CONFLICT(prefix) DO UPDATE SET advertised = 1",
        )
        .bind(prefix)
        .bind(to_db(at))
        .execute(self.conn())
        .await?;
        Ok(())
    }
}

impl WriteTx {
    /// A manual withdrawal: marks `prefix` withdrawn (not touching `updated_at`, as
    /// [`WriteTx::mark_prefix_under_attack`]).
    pub async fn mark_prefix_withdrawn(&mut self, prefix: &str, at: DateTime<Utc>) -> Result<()> {
        sqlx::query(
            "INSERT INTO prefix_calm_status (prefix, advertised, under_attack, calm_since, updated_at) \
             VALUES (?1, 0, 0, NULL, ?2) \
             ON CONFLICT(prefix) DO UPDATE SET advertised = 0",
        )
        .bind(prefix)
        .bind(to_db(at))
        .execute(self.conn())
        .await?;
        Ok(())
    }
}

impl Store {
    /// Upserts one prefix's row in its own transaction (`update_prefix_calm_status()`).
    pub async fn update_prefix_calm_status(&self, u: &CalmUpdate<'_>) -> Result<()> {
        let mut tx = self.begin().await?;
        tx.upsert_prefix_calm_status(u).await?;
        tx.commit().await
    }

    /// One prefix's row.
    pub async fn prefix_calm_status(&self, prefix: &str) -> Result<Option<PrefixCalmStatus>> {
        let row = sqlx::query_as(
            "SELECT prefix, advertised, under_attack, calm_since, last_attack_packets, \
             last_attack_mbps, mitigation_systems, updated_at FROM prefix_calm_status WHERE prefix = ?1",
        )
        .bind(prefix)
        .fetch_optional(self.pool())
        .await?;
        Ok(row)
    }

    /// When `prefix` was last withdrawn, from the `WITHDRAW` events (any method).
    pub async fn last_withdrawal_at(&self, prefix: &str) -> Result<Option<DateTime<Utc>>> {
        let at: Option<Option<String>> = sqlx::query_scalar(
            "SELECT CAST(created_at AS TEXT) FROM attack_events \
             WHERE prefix = ?1 AND event_type = 'WITHDRAW' ORDER BY id DESC LIMIT 1",
        )
        .bind(prefix)
        .fetch_optional(self.pool())
        .await?;
        Ok(at
            .flatten()
            .as_deref()
            .and_then(mt_common::timefmt::from_db))
    }

    /// Every prefix's row, by prefix (`get_prefix_calm_status()`).
    pub async fn prefix_calm_statuses(&self) -> Result<Vec<PrefixCalmStatus>> {
        let rows = sqlx::query_as(
            "SELECT prefix, advertised, under_attack, calm_since, last_attack_packets, \
             last_attack_mbps, mitigation_systems, updated_at FROM prefix_calm_status ORDER BY prefix",
        )
        .fetch_all(self.pool())
        .await?;
        Ok(rows)
    }
}
