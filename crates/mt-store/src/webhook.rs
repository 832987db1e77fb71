//! `webhook_events`: every webhook received, with duplicate detection.

use chrono::{DateTime, Utc};
use mt_common::timefmt::to_db;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::{Result, Store, WriteTx};

/// How a webhook is recognised as already stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookDedup {
    /// By `(alert_id, event_state)`, the seed's unique constraint.
    AlertAndState,
    /// By the exact body: for webhooks whose alert id or event state is absent (SPEC §6).
    Body,
}

/// A new `webhook_events` row.
#[derive(Debug, Clone)]
pub struct NewWebhookEvent {
    /// When it was received.
    pub received_at: DateTime<Utc>,
    /// Cloudflare alert type (absent for "Save and Test").
    pub alert_type: Option<String>,
    /// `ALERT_STATE_EVENT_START`, `…_END`, … or absent.
    pub event_state: Option<String>,
    /// Correlation id (SPEC §6 derivation).
    pub alert_id: Option<String>,
    /// Cloudflare policy id.
    pub policy_id: Option<String>,
    /// Policy name.
    pub policy_name: Option<String>,
    /// Target IP address.
    pub target_ip: Option<String>,
    /// The configured prefix the target maps to.
    pub target_prefix: Option<String>,
    /// Sender IP.
    pub source_ip: Option<String>,
    /// `received`, `imported`, …
    pub action_taken: String,
    /// The raw body.
    pub payload: String,
    /// How duplicates are recognised.
    pub dedup: WebhookDedup,
}

/// Outcome of storing a webhook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookInsert {
    /// Stored as a new row with this id.
    Inserted(i64),
    /// Already stored, as this row; nothing was written.
    Duplicate(i64),
}

/// A stored `webhook_events` row, as it is.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct WebhookEvent {
    /// Row id.
    pub id: i64,
    /// Reception time.
    #[sqlx(try_from = "crate::loose::LooseText")]
    pub received_at: Option<String>,
    /// Alert type.
    #[sqlx(try_from = "crate::loose::LooseText")]
    pub alert_type: Option<String>,
    /// Event state.
    #[sqlx(try_from = "crate::loose::LooseText")]
    pub event_state: Option<String>,
    /// Correlation id.
    #[sqlx(try_from = "crate::loose::LooseText")]
    pub alert_id: Option<String>,
    /// Policy id.
    #[sqlx(try_from = "crate::loose::LooseText")]
    pub policy_id: Option<String>,
    /// Policy name.
    #[sqlx(try_from = "crate::loose::LooseText")]
    pub policy_name: Option<String>,
    /// Target IP.
    #[sqlx(try_from = "crate::loose::LooseText")]
    pub target_ip: Option<String>,
    /// Target prefix.
    #[sqlx(try_from = "crate::loose::LooseText")]
    pub target_prefix: Option<String>,
    /// Sender IP.
    #[sqlx(try_from = "crate::loose::LooseText")]
    pub source_ip: Option<String>,
    /// 1 = processed.
    #[sqlx(try_from = "crate::loose::LooseInt")]
    pub processed: Option<i64>,
    /// Action taken.
    #[sqlx(try_from = "crate::loose::LooseText")]
    pub action_taken: Option<String>,
    /// Raw payload.
    #[sqlx(try_from = "crate::loose::LooseText")]
    pub payload: Option<String>,
}

/// Webhook statistics (the seed's `get_webhook_stats`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WebhookStats {
    /// All rows.
    pub total: i64,
    /// Rows received in the 24 hours up to `now`.
    pub last_24h: i64,
    /// `(alert_type, count)`, most frequent first; `None` for webhooks without a type.
    pub by_type: Vec<(Option<String>, i64)>,
    /// `(event_state, count)`, most frequent first.
    pub by_state: Vec<(Option<String>, i64)>,
    /// Alert ids with both a START and an END webhook (the seed's query).
    pub completed_attacks: i64,
}

macro_rules! select_webhook_events {
    ($rest:literal) => {
        concat!(
            "SELECT id, received_at, alert_type, event_state, alert_id, policy_id, policy_name, \
             target_ip, target_prefix, source_ip, processed, action_taken, payload \
             FROM webhook_events",
            $rest
        )
    };
}

/// Lowercase hex SHA-256 of a payload.
fn payload_sha256(payload: &str) -> String {
    hex::encode(Sha256::digest(payload.as_bytes()))
}

impl WriteTx {
    /// Stores a webhook unless it is already stored (see [`WebhookDedup`]). A duplicate writes
    /// nothing, so the caller must skip every side effect too.
    pub async fn insert_webhook_event(&mut self, w: &NewWebhookEvent) -> Result<WebhookInsert> {
        let sha = payload_sha256(&w.payload);
        if w.dedup == WebhookDedup::Body {
            let existing: Option<i64> = sqlx::query_scalar(
                "SELECT id FROM webhook_events WHERE payload_sha256 = ?1 \
                 UNION ALL \
                 SELECT id FROM webhook_events WHERE payload_sha256 IS NULL \
                   AND (alert_id IS NULL OR event_state IS NULL) AND payload = ?2 \
                 LIMIT 1",
            )
            .bind(&sha)
            .bind(&w.payload)
            .fetch_optional(self.conn())
            .await?;
            if let Some(id) = existing {
                return Ok(WebhookInsert::Duplicate(id));
            }
        }
        // No conflict target: any uniqueness constraint (the seed's (alert_id, event_state))
        // turns the insert into a no-op.
        let inserted: Option<i64> = sqlx::query_scalar(
            "INSERT INTO webhook_events (received_at, alert_type, event_state, alert_id, policy_id, \
             policy_name, target_ip, target_prefix, source_ip, processed, action_taken, payload, \
             payload_sha256) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 1, ?10, ?11, ?12) \
             ON CONFLICT DO NOTHING RETURNING id",
        )
        .bind(to_db(w.received_at))
        .bind(&w.alert_type)
        .bind(&w.event_state)
        .bind(&w.alert_id)
        .bind(&w.policy_id)
        .bind(&w.policy_name)
        .bind(&w.target_ip)
        .bind(&w.target_prefix)
        .bind(&w.source_ip)
        .bind(&w.action_taken)
        .bind(&w.payload)
        .bind(&sha)
        .fetch_optional(self.conn())
        .await?;
        if let Some(id) = inserted {
            return Ok(WebhookInsert::Inserted(id));
        }
        let id: i64 = sqlx::query_scalar(
            "SELECT id FROM webhook_events WHERE alert_id = ?1 AND event_state = ?2",
        )
        .bind(&w.alert_id)
        .bind(&w.event_state)
        .fetch_one(self.conn())
        .await?;
        Ok(WebhookInsert::Duplicate(id))
    }
}

impl Store {
    /// Stores one webhook in its own transaction (the seed's `log_webhook_event`).
    pub async fn log_webhook_event(&self, w: &NewWebhookEvent) -> Result<WebhookInsert> {
        let mut tx = self.begin().await?;
        let outcome = tx.insert_webhook_event(w).await?;
        tx.commit().await?;
        Ok(outcome)
    }

    /// The newest webhooks first, optionally of one alert type and received at or after
    /// `since` (the seed's `get_webhook_events(limit, alert_type, days)`).
    pub async fn webhook_events(
        &self,
        limit: u32,
        alert_type: Option<&str>,
        since: Option<DateTime<Utc>>,
    ) -> Result<Vec<WebhookEvent>> {
        let rows = sqlx::query_as(select_webhook_events!(
            " WHERE (?1 IS NULL OR alert_type = ?1) \
              AND (?2 IS NULL OR datetime(received_at) >= datetime(?2)) \
              ORDER BY received_at DESC, id DESC LIMIT ?3"
        ))
        .bind(alert_type)
        .bind(since.map(to_db))
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        Ok(rows)
    }

    /// One webhook by id.
    pub async fn webhook_event(&self, id: i64) -> Result<Option<WebhookEvent>> {
        let row = sqlx::query_as(select_webhook_events!(" WHERE id = ?1"))
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        Ok(row)
    }

    /// The newest `limit` webhooks' ids, reception times and payloads (archive repair).
    pub async fn recent_webhook_payloads(&self, limit: u32) -> Result<Vec<WebhookEvent>> {
        let rows = sqlx::query_as(select_webhook_events!(" ORDER BY id DESC LIMIT ?1"))
            .bind(limit)
            .fetch_all(self.pool())
            .await?;
        Ok(rows)
    }

    /// Every webhook of one alert id, oldest first (the seed's `get_webhook_by_alert_id`).
    pub async fn webhook_events_for_alert(&self, alert_id: &str) -> Result<Vec<WebhookEvent>> {
        let rows = sqlx::query_as(select_webhook_events!(
            " WHERE alert_id = ?1 ORDER BY received_at, id"
        ))
        .bind(alert_id)
        .fetch_all(self.pool())
        .await?;
        Ok(rows)
    }

    /// Counts by type and state, the last 24 hours, and completed attacks.
    pub async fn webhook_stats(&self, now: DateTime<Utc>) -> Result<WebhookStats> {
        let pool = self.pool();
        let total = sqlx::query_scalar("SELECT COUNT(*) FROM webhook_events")
            .fetch_one(pool)
            .await?;
        let last_24h = sqlx::query_scalar(
            "SELECT COUNT(*) FROM webhook_events \
             WHERE datetime(received_at) > datetime(?1) AND datetime(received_at) <= datetime(?2)",
        )
        .bind(to_db(now - chrono::Duration::hours(24)))
        .bind(to_db(now))
        .fetch_one(pool)
        .await?;
        let by_type = sqlx::query_as(
            "SELECT CAST(alert_type AS TEXT), COUNT(*) AS n FROM webhook_events \
             GROUP BY alert_type ORDER BY n DESC, alert_type",
        )
        .fetch_all(pool)
        .await?;
        let by_state = sqlx::query_as(
            "SELECT CAST(event_state AS TEXT), COUNT(*) AS n FROM webhook_events \
             GROUP BY event_state ORDER BY n DESC, event_state",
        )
        .fetch_all(pool)
        .await?;
        let completed_attacks = sqlx::query_scalar(
            "SELECT COUNT(DISTINCT w1.alert_id) FROM webhook_events w1 \
             WHERE w1.event_state = 'ALERT_STATE_EVENT_START' \
             AND EXISTS (SELECT 1 FROM webhook_events w2 \
                         WHERE w2.alert_id = w1.alert_id \
                         AND w2.event_state = 'ALERT_STATE_EVENT_END')",
        )
        .fetch_one(pool)
        .await?;
        Ok(WebhookStats {
            total,
            last_24h,
            by_type,
            by_state,
            completed_attacks,
        })
    }
}
