//! `prefix_calm_status`: autowithdraw's per-prefix view, read by dashboards and `mtctl`.

use chrono::{DateTime, Utc};
use mt_common::timefmt::to_db;
use serde::Serialize;

use crate::{Result, Store, WriteTx, Writes};

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

/// A prefix's advertisement as the webhook receiver's messages describe it, read inside its
/// write transaction (see [`WriteTx::advertisements`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advertisement {
    /// Whether `prefix_calm_status` has a row for the prefix.
    pub known: bool,
    /// Advertised, as autowithdraw (or a webhook) last recorded it.
    pub advertised: bool,
    /// When it was last withdrawn (its newest `WITHDRAW` event), if ever.
    pub last_withdrawal: Option<DateTime<Utc>>,
}

#[derive(sqlx::FromRow)]
struct AdvertisementRow {
    prefix: String,
    known: bool,
    #[sqlx(try_from = "crate::loose::LooseBool")]
    advertised: bool,
    #[sqlx(try_from = "crate::loose::LooseText")]
    last_withdrawal: Option<String>,
}

impl WriteTx {
    /// The advertisement of each of `prefixes`, in one statement: what
    /// [`Store::prefix_calm_status`] and [`Store::last_withdrawal_at`] return, but read in
    /// this transaction, so a batch of webhooks sees the state it writes over.
    pub async fn advertisements(
        &mut self,
        prefixes: &[&str],
    ) -> Result<std::collections::HashMap<String, Advertisement>> {
        if prefixes.is_empty() {
            return Ok(std::collections::HashMap::new());
        }
        let list =
            serde_json::to_string(prefixes).map_err(|e| crate::Error::Invalid(e.to_string()))?;
        let rows: Vec<AdvertisementRow> = sqlx::query_as(
            "SELECT p.value AS prefix, c.prefix IS NOT NULL AS known, c.advertised AS advertised, \
             (SELECT CAST(created_at AS TEXT) FROM attack_events \
              WHERE prefix = p.value AND event_type = 'WITHDRAW' ORDER BY id DESC LIMIT 1) \
              AS last_withdrawal \
             FROM (SELECT DISTINCT value FROM json_each(?1)) p \
             LEFT JOIN prefix_calm_status c ON c.prefix = p.value",
        )
        .bind(list)
        .fetch_all(self.conn())
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| {
                (
                    r.prefix,
                    Advertisement {
                        known: r.known,
                        advertised: r.advertised,
                        last_withdrawal: r
                            .last_withdrawal
                            .as_deref()
                            .and_then(mt_common::timefmt::from_db),
                    },
                )
            })
            .collect())
    }
}

/// What a webhook says of a prefix (see [`WriteTx::mark_prefixes`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrefixMark {
    /// A START webhook: under attack, calm clock cleared.
    UnderAttack,
    /// An auto-advertisement webhook: advertised by Cloudflare.
    Advertised,
}

/// Marks per multi-row upsert: 4 bound values each.
const MARK_BATCH_ROWS: usize = 500;

impl WriteTx {
    /// A START webhook for `prefix`: marks it under attack and clears its calm clock. Does not
    /// touch `updated_at`, which is autowithdraw's judgement time (watched by the analytics
    /// daemon); a new row gets `at` as its first `updated_at`.
    pub async fn mark_prefix_under_attack(
        &mut self,
        prefix: &str,
        at: DateTime<Utc>,
    ) -> Result<()> {
        self.mark_prefixes(&[(prefix, PrefixMark::UnderAttack, at)])
            .await
    }

    /// An auto-advertisement webhook reported `prefix` advertised. Same `updated_at` rule as
    /// [`WriteTx::mark_prefix_under_attack`].
    pub async fn mark_prefix_advertised(&mut self, prefix: &str, at: DateTime<Utc>) -> Result<()> {
        self.mark_prefixes(&[(prefix, PrefixMark::Advertised, at)])
            .await
    }

    /// Applies marks in order, in one statement per 500 (the receiver's group commit). Each
    /// only sets its own flag (and an under-attack mark clears `calm_since`), so the result
    /// is the one of applying them one after another; a new row's `updated_at` is the first
    /// mark's time.
    pub async fn mark_prefixes(
        &mut self,
        marks: &[(&str, PrefixMark, DateTime<Utc>)],
    ) -> Result<()> {
        for chunk in marks.chunks(MARK_BATCH_ROWS) {
            let mut writes = Writes::new();
            prefix_marks_statement(&mut writes, chunk);
            let (sql, args) = writes.finish(None)?;
            sqlx::query_with(sql, args).execute(self.conn()).await?;
        }
        Ok(())
    }
}

impl Writes {
    /// Queues [`WriteTx::mark_prefixes`].
    pub fn prefix_marks(&mut self, marks: &[(&str, PrefixMark, DateTime<Utc>)]) -> &mut Self {
        for chunk in marks.chunks(MARK_BATCH_ROWS) {
            prefix_marks_statement(self, chunk);
        }
        self
    }
}

/// The one upsert of marks (see [`WriteTx::mark_prefixes`]).
fn prefix_marks_statement(writes: &mut Writes, marks: &[(&str, PrefixMark, DateTime<Utc>)]) {
    writes.rows(
        "INSERT INTO prefix_calm_status (prefix, advertised, under_attack, calm_since, \
         updated_at) VALUES ",
        "(?,?,?,NULL,?)",
        marks.len(),
        " ON CONFLICT(prefix) DO UPDATE SET \
         advertised = CASE WHEN excluded.advertised = 1 THEN 1 ELSE advertised END, \
         under_attack = CASE WHEN excluded.under_attack = 1 THEN 1 ELSE under_attack END, \
         calm_since = CASE WHEN excluded.under_attack = 1 THEN NULL ELSE calm_since END",
    );
    for (prefix, mark, at) in marks {
        let under_attack = *mark == PrefixMark::UnderAttack;
        writes
            .bind(*prefix)
            .bind(i64::from(!under_attack))
            .bind(i64::from(under_attack))
            .bind(to_db(*at));
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
