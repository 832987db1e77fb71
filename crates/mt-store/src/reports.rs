//! Read-only aggregates for the dashboard: attack events in a time range and dropped-traffic
//! rankings over `network_analytics_events`.
//!
//! Stored times are `YYYY-MM-DD HH:MM:SS` (ours) or `YYYY-MM-DDTHH:MM:SS…Z` (legacy analytics
//! rows). Both sort as text within their own form, and `' ' < 'T'`, so a lower bound is two
//! text comparisons: `>= 'YYYY-MM-DD HH:MM:SS'` for every row (which the `event_datetime` index
//! serves), and additionally `>= 'YYYY-MM-DDTHH:MM:SS'` for the legacy form, whose same-day rows
//! would otherwise all pass the first. No per-row date parsing.

use chrono::{DateTime, Utc};
use mt_common::timefmt::to_db;
use serde::Serialize;

use crate::{AttackEvent, Result, Store};

/// What to rank dropped traffic by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Dimension {
    /// Attack vector.
    Vector,
    /// Destination IP (the attacked host).
    Target,
    /// Source ASN.
    SourceAsn,
    /// Source country.
    SourceCountry,
}

impl Dimension {
    /// Every dimension, in display order.
    pub const ALL: [Dimension; 4] = [
        Dimension::Vector,
        Dimension::Target,
        Dimension::SourceAsn,
        Dimension::SourceCountry,
    ];

    /// Display title.
    pub fn title(self) -> &'static str {
        match self {
            Dimension::Vector => "Attack vectors",
            Dimension::Target => "Targets",
            Dimension::SourceAsn => "Source ASNs",
            Dimension::SourceCountry => "Source countries",
        }
    }

    // Static SQL per dimension: the statement text never contains caller input.
    fn query(self) -> &'static str {
        macro_rules! top {
            ($key:literal, $label:literal) => {
                concat!(
                    "SELECT CAST(",
                    $key,
                    " AS TEXT) AS key, MAX(",
                    $label,
                    ") AS label, ",
                    "COALESCE(SUM(packets), 0) AS packets, COALESCE(SUM(bits), 0) AS bits, ",
                    "COUNT(*) AS events FROM network_analytics_events ",
                    "WHERE event_datetime >= ?1 AND (substr(event_datetime, 11, 1) <> 'T' OR event_datetime >= ?2) ",
                    "AND ",
                    $key,
                    " IS NOT NULL AND CAST(",
                    $key,
                    " AS TEXT) <> '' ",
                    "GROUP BY ",
                    $key,
                    " ORDER BY packets DESC, bits DESC, key LIMIT ?3"
                )
            };
        }
        match self {
            Dimension::Vector => top!("attack_vector", "NULL"),
            Dimension::Target => top!("destination_ip", "NULL"),
            Dimension::SourceAsn => top!("source_asn", "source_asn_name"),
            Dimension::SourceCountry => top!("source_country", "NULL"),
        }
    }
}

/// One ranked value.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct TopRow {
    /// The value (vector, IP, ASN number, country code).
    pub key: String,
    /// A readable name where there is one (the ASN's organisation).
    pub label: Option<String>,
    /// Dropped packets (sum of the sampled counts).
    pub packets: i64,
    /// Dropped bits.
    pub bits: i64,
    /// Stored rows counted.
    pub events: i64,
}

/// Dropped traffic in one time bucket.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct SeriesPoint {
    /// Bucket start, Unix seconds (UTC).
    pub bucket: i64,
    /// Dropped packets.
    pub packets: i64,
    /// Dropped bits.
    pub bits: i64,
}

/// Dropped traffic to one destination.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct DestinationTotal {
    /// Destination IP as stored.
    pub destination_ip: String,
    /// Dropped packets.
    pub packets: i64,
    /// Dropped bits.
    pub bits: i64,
}

/// The lower bound in our form (`?1`) and in the legacy ISO form (`?2`).
fn bounds(since: DateTime<Utc>) -> (String, String) {
    (to_db(since), since.format("%Y-%m-%dT%H:%M:%S").to_string())
}

impl Store {
    /// Attack events created in `[since, until]` (either open), optionally of one prefix,
    /// oldest first, at most `limit` (the newest `limit` when there are more).
    pub async fn attack_events_between(
        &self,
        since: Option<DateTime<Utc>>,
        until: Option<DateTime<Utc>>,
        prefix: Option<&str>,
        limit: u32,
    ) -> Result<Vec<AttackEvent>> {
        let mut rows: Vec<AttackEvent> = sqlx::query_as(
            "SELECT id, event_type, alert_type, attack_id, policy_id, policy_name, prefix, \
             target_ip, target_port, protocol, attack_vector, packets_per_second, \
             megabits_per_second, severity, action_taken, raw_payload, created_at \
             FROM attack_events \
             WHERE (?1 IS NULL OR (created_at >= ?1 AND (substr(created_at, 11, 1) <> 'T' OR created_at >= ?2))) \
             AND (?3 IS NULL OR (CASE WHEN substr(created_at, 11, 1) = 'T' THEN created_at <= ?4 \
                                 ELSE created_at <= ?3 END)) \
             AND (?5 IS NULL OR prefix = ?5) ORDER BY id DESC LIMIT ?6",
        )
        .bind(since.map(|t| bounds(t).0))
        .bind(since.map(|t| bounds(t).1))
        .bind(until.map(to_db))
        // Legacy `…T10:00:00.5Z` is still within 10:00:00: '~' sorts after every digit, '.', 'Z'.
        .bind(until.map(|t| format!("{}~", bounds(t).1)))
        .bind(prefix)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.reverse();
        Ok(rows)
    }

    /// The `limit` largest values of `dimension` by dropped packets since `since`.
    pub async fn analytics_top(
        &self,
        dimension: Dimension,
        since: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<TopRow>> {
        let (ours, legacy) = bounds(since);
        let rows = sqlx::query_as(dimension.query())
            .bind(ours)
            .bind(legacy)
            .bind(limit)
            .fetch_all(self.pool())
            .await?;
        Ok(rows)
    }

    /// Dropped traffic since `since` in buckets of `bucket_seconds`, oldest first; empty
    /// buckets are absent.
    pub async fn analytics_series(
        &self,
        since: DateTime<Utc>,
        bucket_seconds: i64,
    ) -> Result<Vec<SeriesPoint>> {
        let rows = sqlx::query_as(
            "SELECT (CAST(strftime('%s', event_datetime) AS INTEGER) / ?3) * ?3 AS bucket, \
             COALESCE(SUM(packets), 0) AS packets, COALESCE(SUM(bits), 0) AS bits \
             FROM network_analytics_events \
             WHERE event_datetime >= ?1 AND (substr(event_datetime, 11, 1) <> 'T' OR event_datetime >= ?2) \
             AND strftime('%s', event_datetime) IS NOT NULL \
             GROUP BY bucket ORDER BY bucket",
        )
        .bind(bounds(since).0)
        .bind(bounds(since).1)
        .bind(bucket_seconds.max(1))
        .fetch_all(self.pool())
        .await?;
        Ok(rows)
    }

    /// Dropped traffic per destination IP since `since` (the dashboard sums it per prefix).
    pub async fn dropped_by_destination(
        &self,
        since: DateTime<Utc>,
    ) -> Result<Vec<DestinationTotal>> {
        let rows = sqlx::query_as(
            "SELECT destination_ip, COALESCE(SUM(packets), 0) AS packets, \
             COALESCE(SUM(bits), 0) AS bits FROM network_analytics_events \
             WHERE event_datetime >= ?1 AND (substr(event_datetime, 11, 1) <> 'T' OR event_datetime >= ?2) \
             AND destination_ip IS NOT NULL GROUP BY destination_ip",
        )
        .bind(bounds(since).0)
        .bind(bounds(since).1)
        .fetch_all(self.pool())
        .await?;
        Ok(rows)
    }
}
