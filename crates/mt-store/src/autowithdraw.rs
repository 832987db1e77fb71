//! `autowithdraw_prefixes`: mt-autowithdraw's persisted per-prefix state.

use chrono::{DateTime, Utc};
use mt_common::timefmt::{from_db, to_db};

use crate::{Result, Store, WriteTx};

/// One prefix's autowithdraw state.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PrefixState {
    /// The prefix (canonical CIDR).
    pub prefix: String,
    /// Advertised, as last read from Cloudflare.
    pub advertised: bool,
    /// When the advertisement last changed (identifies the incident).
    pub advertised_modified_at: Option<DateTime<Utc>>,
    /// Advertisement locked.
    pub locked: bool,
    /// Start of the current gap-free calm stretch.
    pub calm_since: Option<DateTime<Utc>>,
    /// End of the last window judged attack.
    pub last_attack_end: Option<DateTime<Utc>>,
    /// Peak dropped packets/s of the incident.
    pub peak_pps: f64,
    /// Peak dropped Mbit/s of the incident.
    pub peak_mbps: f64,
    /// Mitigation systems seen in the incident, comma-separated.
    pub systems: String,
    /// Telemetry unknown since.
    pub unknown_since: Option<DateTime<Utc>>,
    /// The blind alert of this episode was sent.
    pub blind_alerted: bool,
    /// A withdrawal decided at this time and not yet confirmed.
    pub intent_at: Option<DateTime<Utc>>,
    /// Failed attempts in this incident.
    pub attempts: i64,
    /// Not before this time again.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// The `failed` history row of this incident.
    pub failure_history_id: Option<i64>,
    /// The dry-run message of this incident was sent.
    pub dry_run_notified: bool,
    /// When we last withdrew it (to verify Cloudflare carried it out).
    pub withdrawn_at: Option<DateTime<Utc>>,
    /// The "withdrawal not carried out" alert was sent.
    pub verify_alerted: bool,
    /// When the last "still advertised" reminder was sent.
    pub reminded_at: Option<DateTime<Utc>>,
    /// End of the last analytics window judged for this prefix (a window starting anywhere
    /// else breaks the calm stretch).
    pub judged_through: Option<DateTime<Utc>>,
}

/// `created_at`, `alert_type`, `target_ip`, `prefix` of a START row, as text.
type StartColumns = (
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

/// A START event, as autowithdraw reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartRow {
    /// When it was received (`created_at`).
    pub at: DateTime<Utc>,
    /// Its alert type.
    pub alert_type: Option<String>,
    /// Its target address.
    pub target_ip: Option<String>,
    /// The configured prefix it was mapped to, or the CIDR it named.
    pub prefix: Option<String>,
}

#[derive(sqlx::FromRow)]
struct Row {
    prefix: String,
    advertised: bool,
    advertised_modified_at: Option<String>,
    locked: bool,
    calm_since: Option<String>,
    last_attack_end: Option<String>,
    peak_pps: f64,
    peak_mbps: f64,
    systems: String,
    unknown_since: Option<String>,
    blind_alerted: bool,
    intent_at: Option<String>,
    attempts: i64,
    next_attempt_at: Option<String>,
    last_error: Option<String>,
    failure_history_id: Option<i64>,
    dry_run_notified: bool,
    withdrawn_at: Option<String>,
    verify_alerted: bool,
    reminded_at: Option<String>,
    judged_through: Option<String>,
}

fn time(s: Option<String>) -> Option<DateTime<Utc>> {
    s.as_deref().and_then(from_db)
}

impl From<Row> for PrefixState {
    fn from(r: Row) -> Self {
        Self {
            prefix: r.prefix,
            advertised: r.advertised,
            advertised_modified_at: time(r.advertised_modified_at),
            locked: r.locked,
            calm_since: time(r.calm_since),
            last_attack_end: time(r.last_attack_end),
            peak_pps: r.peak_pps,
            peak_mbps: r.peak_mbps,
            systems: r.systems,
            unknown_since: time(r.unknown_since),
            blind_alerted: r.blind_alerted,
            intent_at: time(r.intent_at),
            attempts: r.attempts,
            next_attempt_at: time(r.next_attempt_at),
            last_error: r.last_error,
            failure_history_id: r.failure_history_id,
            dry_run_notified: r.dry_run_notified,
            withdrawn_at: time(r.withdrawn_at),
            verify_alerted: r.verify_alerted,
            reminded_at: time(r.reminded_at),
            judged_through: time(r.judged_through),
        }
    }
}

impl WriteTx {
    /// Writes one prefix's whole state.
    pub async fn save_prefix_state(&mut self, s: &PrefixState, now: DateTime<Utc>) -> Result<()> {
        sqlx::query(
            "INSERT INTO autowithdraw_prefixes (prefix, advertised, advertised_modified_at, locked, \
             calm_since, last_attack_end, peak_pps, peak_mbps, systems, unknown_since, blind_alerted, \
             intent_at, attempts, next_attempt_at, last_error, failure_history_id, dry_run_notified, updated_at, \
             withdrawn_at, verify_alerted, reminded_at, judged_through) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22) \
             ON CONFLICT(prefix) DO UPDATE SET advertised = excluded.advertised, \
             advertised_modified_at = excluded.advertised_modified_at, locked = excluded.locked, \
             calm_since = excluded.calm_since, last_attack_end = excluded.last_attack_end, \
             peak_pps = excluded.peak_pps, peak_mbps = excluded.peak_mbps, systems = excluded.systems, \
             unknown_since = excluded.unknown_since, blind_alerted = excluded.blind_alerted, \
             intent_at = excluded.intent_at, attempts = excluded.attempts, \
             next_attempt_at = excluded.next_attempt_at, last_error = excluded.last_error, \
             failure_history_id = excluded.failure_history_id, \
             dry_run_notified = excluded.dry_run_notified, updated_at = excluded.updated_at, \
             withdrawn_at = excluded.withdrawn_at, verify_alerted = excluded.verify_alerted, \
             reminded_at = excluded.reminded_at, judged_through = excluded.judged_through",
        )
        .bind(&s.prefix)
        .bind(s.advertised)
        .bind(s.advertised_modified_at.map(to_db))
        .bind(s.locked)
        .bind(s.calm_since.map(to_db))
        .bind(s.last_attack_end.map(to_db))
        .bind(s.peak_pps)
        .bind(s.peak_mbps)
        .bind(&s.systems)
        .bind(s.unknown_since.map(to_db))
        .bind(s.blind_alerted)
        .bind(s.intent_at.map(to_db))
        .bind(s.attempts)
        .bind(s.next_attempt_at.map(to_db))
        .bind(&s.last_error)
        .bind(s.failure_history_id)
        .bind(s.dry_run_notified)
        .bind(to_db(now))
        .bind(s.withdrawn_at.map(to_db))
        .bind(s.verify_alerted)
        .bind(s.reminded_at.map(to_db))
        .bind(s.judged_through.map(to_db))
        .execute(self.conn())
        .await?;
        Ok(())
    }
}

impl Store {
    /// One prefix's state, if it was ever saved.
    pub async fn prefix_state(&self, prefix: &str) -> Result<Option<PrefixState>> {
        let row: Option<Row> = sqlx::query_as(
            "SELECT prefix, advertised, CAST(advertised_modified_at AS TEXT) AS advertised_modified_at, \
             locked, CAST(calm_since AS TEXT) AS calm_since, CAST(last_attack_end AS TEXT) AS last_attack_end, \
             peak_pps, peak_mbps, systems, CAST(unknown_since AS TEXT) AS unknown_since, blind_alerted, \
             CAST(intent_at AS TEXT) AS intent_at, attempts, CAST(next_attempt_at AS TEXT) AS next_attempt_at, \
             last_error, failure_history_id, dry_run_notified, CAST(withdrawn_at AS TEXT) AS withdrawn_at, \
             verify_alerted, CAST(reminded_at AS TEXT) AS reminded_at, \
             CAST(judged_through AS TEXT) AS judged_through FROM autowithdraw_prefixes WHERE prefix = ?1",
        )
        .bind(prefix)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.map(PrefixState::from))
    }

    /// START events received at or after `since`, newest first (at most 50,000): what
    /// autowithdraw needs to tell which STARTs count for which prefix (SPEC §7.3).
    pub async fn starts_since(&self, since: DateTime<Utc>) -> Result<Vec<StartRow>> {
        let rows: Vec<StartColumns> = sqlx::query_as(
            "SELECT CAST(created_at AS TEXT), CAST(alert_type AS TEXT), \
                 CAST(target_ip AS TEXT), CAST(prefix AS TEXT) FROM attack_events \
                 WHERE event_type = 'START' AND datetime(created_at) >= datetime(?1) \
                 ORDER BY id DESC LIMIT 50000",
        )
        .bind(to_db(since))
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(at, alert_type, target_ip, prefix)| {
                Some(StartRow {
                    at: at.as_deref().and_then(from_db)?,
                    alert_type,
                    target_ip,
                    prefix,
                })
            })
            .collect())
    }

    /// The newest START event of `prefix`, or of no prefix (a START that maps to no configured
    /// prefix concerns every prefix).
    pub async fn last_start_for(&self, prefix: &str) -> Result<Option<DateTime<Utc>>> {
        let at: Option<Option<String>> = sqlx::query_scalar(
            "SELECT CAST(MAX(created_at) AS TEXT) FROM attack_events \
             WHERE event_type = 'START' AND (prefix = ?1 OR prefix IS NULL)",
        )
        .bind(prefix)
        .fetch_optional(self.pool())
        .await?;
        Ok(at.flatten().as_deref().and_then(from_db))
    }

    /// The newest END event of `prefix` at or after `since`.
    pub async fn last_end_since(
        &self,
        prefix: &str,
        since: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>> {
        let at: Option<Option<String>> = sqlx::query_scalar(
            "SELECT CAST(MAX(created_at) AS TEXT) FROM attack_events \
             WHERE event_type = 'END' AND prefix = ?1 AND datetime(created_at) >= datetime(?2)",
        )
        .bind(prefix)
        .bind(to_db(since))
        .fetch_optional(self.pool())
        .await?;
        Ok(at.flatten().as_deref().and_then(from_db))
    }

    /// Whether an `ADVERTISE` (or `WITHDRAW`) event of `prefix` exists at or after `since`
    /// (so a change the receiver already logged is not logged twice).
    pub async fn has_event_since(
        &self,
        prefix: &str,
        event_type: &str,
        since: DateTime<Utc>,
    ) -> Result<bool> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM attack_events WHERE prefix = ?1 AND event_type = ?2 \
             AND datetime(created_at) >= datetime(?3)",
        )
        .bind(prefix)
        .bind(event_type)
        .bind(to_db(since))
        .fetch_one(self.pool())
        .await?;
        Ok(n > 0)
    }
}

impl Store {
    /// When mt-autowithdraw last saved `prefix`'s state (it reads Cloudflare every cycle).
    pub async fn prefix_state_saved_at(&self, prefix: &str) -> Result<Option<DateTime<Utc>>> {
        let at: Option<Option<String>> = sqlx::query_scalar(
            "SELECT CAST(updated_at AS TEXT) FROM autowithdraw_prefixes WHERE prefix = ?1",
        )
        .bind(prefix)
        .fetch_optional(self.pool())
        .await?;
        Ok(at.flatten().as_deref().and_then(from_db))
    }

    /// The newest `ADVERTISE`/`WITHDRAW` attack event of `prefix` (an auto-advertisement
    /// webhook, mtctl, the dashboard, autowithdraw): whether it advertised, and when.
    pub async fn last_advertisement_event(
        &self,
        prefix: &str,
    ) -> Result<Option<(bool, DateTime<Utc>)>> {
        let row: Option<(Option<String>, Option<String>)> = sqlx::query_as(
            "SELECT event_type, CAST(created_at AS TEXT) FROM attack_events \
             WHERE prefix = ?1 AND event_type IN ('ADVERTISE', 'WITHDRAW') \
             ORDER BY id DESC LIMIT 1",
        )
        .bind(prefix)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.and_then(|(kind, at)| {
            let at = at.as_deref().and_then(from_db)?;
            Some((kind.as_deref() == Some("ADVERTISE"), at))
        }))
    }
}
