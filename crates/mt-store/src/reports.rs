//! Read-only aggregates for the dashboard: attack events in a time range and dropped-traffic
//! rankings over `network_analytics_events`.
//!
//! Stored times are `YYYY-MM-DD HH:MM:SS` (ours) or `…T…Z` (legacy analytics rows), so ranges are
//! compared through SQLite's `datetime()`, which reads both. A plain text comparison on the date
//! prefix comes first so the `event_datetime` index still narrows the scan.

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
                    "WHERE event_datetime >= ?1 AND datetime(event_datetime) >= datetime(?2) ",
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

/// The text lower bound on the date that lets the index narrow a `datetime()` comparison.
fn day_floor(since: DateTime<Utc>) -> String {
    since.format("%Y-%m-%d").to_string()
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
             FROM attack_events WHERE (?1 IS NULL OR datetime(created_at) >= datetime(?1)) \
             AND (?2 IS NULL OR datetime(created_at) <= datetime(?2)) \
             AND (?3 IS NULL OR prefix = ?3) ORDER BY id DESC LIMIT ?4",
        )
        .bind(since.map(to_db))
        .bind(until.map(to_db))
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
        let rows = sqlx::query_as(dimension.query())
            .bind(day_floor(since))
            .bind(to_db(since))
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
             WHERE event_datetime >= ?1 AND datetime(event_datetime) >= datetime(?2) \
             AND strftime('%s', event_datetime) IS NOT NULL \
             GROUP BY bucket ORDER BY bucket",
        )
        .bind(day_floor(since))
        .bind(to_db(since))
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
             WHERE event_datetime >= ?1 AND datetime(event_datetime) >= datetime(?2) \
             AND destination_ip IS NOT NULL GROUP BY destination_ip",
        )
        .bind(day_floor(since))
        .bind(to_db(since))
        .fetch_all(self.pool())
        .await?;
        Ok(rows)
    }
}
