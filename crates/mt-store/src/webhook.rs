//! `webhook_events`: every webhook received, with duplicate detection.

use std::collections::{HashMap, VecDeque};

use chrono::{DateTime, Utc};
use mt_common::timefmt::{from_db, to_db};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::{Result, Store, WriteTx, Writes};

/// How a webhook is recognised as already stored (SPEC §6). The rule itself is
/// [`duplicate_of`]; `insert_webhook_event` performs it in SQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookDedup {
    /// By `(alert_id, event_state)`, the seed's unique constraint.
    AlertAndState,
    /// A tunnel or health-check event, whose `alert_id` is `<object id>@<ts>`: by
    /// `(alert_id, event_state)`, and also a duplicate of a row the original suite stored under
    /// the bare object id with the same event state and an identical payload (a re-import of
    /// its archive).
    ObjectEvent {
        /// The tunnel or health-check id without `@…`.
        bare_id: String,
    },
    /// By the exact body: for webhooks whose alert id (`alert_id` is then the `webhook-<time>`
    /// fallback) or event state is absent. Two different bodies never collide: a fallback id
    /// already taken by another body gets the body's hash appended.
    Body,
}

/// What the duplicate rule reads of a stored row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredIdentity<'a> {
    /// Row id.
    pub id: i64,
    /// Its `alert_id`.
    pub alert_id: Option<&'a str>,
    /// Its `event_state`.
    pub event_state: Option<&'a str>,
    /// Its raw body.
    pub payload: &'a str,
}

/// The duplicate rule of SPEC §6, as a pure function: the stored row `new` duplicates, if
/// any (the first in `stored` order).
pub fn duplicate_of<'a>(
    new: &NewWebhookEvent,
    stored: impl IntoIterator<Item = StoredIdentity<'a>>,
) -> Option<i64> {
    let same_key = |s: &StoredIdentity<'_>, id: &str| {
        s.alert_id == Some(id)
            && s.event_state.is_some()
            && s.event_state == new.event_state.as_deref()
    };
    stored.into_iter().find_map(|s| {
        let hit = match &new.dedup {
            WebhookDedup::Body => s.payload == new.payload,
            WebhookDedup::AlertAndState => {
                new.alert_id.as_deref().is_some_and(|id| same_key(&s, id))
            }
            WebhookDedup::ObjectEvent { bare_id } => {
                new.alert_id.as_deref().is_some_and(|id| same_key(&s, id))
                    || (s.alert_id == Some(bare_id.as_str())
                        && s.event_state == new.event_state.as_deref()
                        && s.payload == new.payload)
            }
        };
        hit.then_some(s.id)
    })
}

/// The `alert_id` a [`WebhookDedup::Body`] webhook is stored under when its own is taken by a
/// different body (the `webhook-<time>` fallback of two bodies of the same second).
pub fn disambiguated_alert_id(alert_id: &str, payload: &str) -> String {
    format!("{alert_id}-{}", &payload_sha256(payload)[..12])
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

/// Webhooks per multi-row INSERT: 12 bound values each.
const KEYED_BATCH_ROWS: usize = 500;

/// Lowercase hex SHA-256 of a payload.
fn payload_sha256(payload: &str) -> String {
    hex::encode(Sha256::digest(payload.as_bytes()))
}

impl WriteTx {
    /// Stores a webhook unless it is already stored (see [`WebhookDedup`]). A duplicate writes
    /// nothing, so the caller must skip every side effect too.
    pub async fn insert_webhook_event(&mut self, w: &NewWebhookEvent) -> Result<WebhookInsert> {
        let sha = payload_sha256(&w.payload);
        let found: Option<i64> = match &w.dedup {
            // Rows we stored carry the hash (indexed); legacy rows are compared by text.
            WebhookDedup::Body => {
                sqlx::query_scalar(
                    "SELECT id FROM webhook_events WHERE payload_sha256 = ?1 AND payload = ?2 \
                     UNION ALL \
                     SELECT id FROM webhook_events WHERE payload_sha256 IS NULL AND payload = ?2 \
                     LIMIT 1",
                )
                .bind(&sha)
                .bind(&w.payload)
                .fetch_optional(self.conn())
                .await?
            }
            WebhookDedup::ObjectEvent { bare_id } => {
                sqlx::query_scalar(
                    "SELECT id FROM webhook_events WHERE alert_id = ?1 AND event_state IS ?2 \
                     AND payload = ?3 LIMIT 1",
                )
                .bind(bare_id)
                .bind(&w.event_state)
                .bind(&w.payload)
                .fetch_optional(self.conn())
                .await?
            }
            WebhookDedup::AlertAndState => None,
        };
        if let Some(id) = found {
            return Ok(WebhookInsert::Duplicate(id));
        }
        if let Some(id) = self.insert_row(w, w.alert_id.as_deref(), &sha).await? {
            return Ok(WebhookInsert::Inserted(id));
        }
        // The seed's unique (alert_id, event_state) fired.
        if w.dedup == WebhookDedup::Body
            && let Some(alert_id) = &w.alert_id
        {
            // A different body under the same fallback id: keep both.
            let unique = disambiguated_alert_id(alert_id, &w.payload);
            if let Some(id) = self.insert_row(w, Some(&unique), &sha).await? {
                return Ok(WebhookInsert::Inserted(id));
            }
        }
        Ok(WebhookInsert::Duplicate(self.holder_of_key(w).await?))
    }

    /// Stores webhooks in order, each with the outcome [`WriteTx::insert_webhook_event`] would
    /// give it one after another (a later one may be a duplicate of an earlier one of the same
    /// slice), in fewer statements: each run of [`WebhookDedup::AlertAndState`] webhooks, which
    /// the seed's unique `(alert_id, event_state)` alone deduplicates, is one multi-row INSERT.
    /// The receiver's group commit stores its batches so.
    pub async fn insert_webhook_events(
        &mut self,
        rows: &[NewWebhookEvent],
    ) -> Result<Vec<WebhookInsert>> {
        let mut out = Vec::with_capacity(rows.len());
        let mut rest = rows;
        while let Some(first) = rest.first() {
            let keyed = rest
                .iter()
                .take(KEYED_BATCH_ROWS)
                .take_while(|w| w.dedup == WebhookDedup::AlertAndState)
                .count();
            if keyed == 0 {
                out.push(self.insert_webhook_event(first).await?);
                rest = &rest[1..];
            } else {
                let (run, tail) = rest.split_at(keyed);
                out.extend(self.insert_keyed(run).await?);
                rest = tail;
            }
        }
        Ok(out)
    }

    /// One multi-row INSERT of [`WebhookDedup::AlertAndState`] webhooks. The unique
    /// `(alert_id, event_state)` turns a conflicting row into a no-op, as for one row: a row
    /// not returned is a duplicate of the row holding its key, whether stored before or
    /// earlier in `rows`.
    async fn insert_keyed(&mut self, rows: &[NewWebhookEvent]) -> Result<Vec<WebhookInsert>> {
        let shas: Vec<String> = rows.iter().map(|w| payload_sha256(&w.payload)).collect();
        let keyed: Vec<_> = rows
            .iter()
            .zip(&shas)
            .map(|(w, sha)| (w, w.alert_id.as_deref(), sha.as_str()))
            .collect();
        let mut writes = Writes::new();
        webhook_events_statement(
            &mut writes,
            &keyed,
            " ON CONFLICT DO NOTHING RETURNING id, alert_id, event_state",
        );
        let (sql, args) = writes.finish(None)?;
        let query = sqlx::query_as_with::<_, (i64, Option<String>, Option<String>), _>(sql, args);
        let mut returned = query.fetch_all(self.conn()).await?;
        // RETURNING's order is unspecified; the rows take increasing ids in VALUES order.
        returned.sort_unstable_by_key(|(id, _, _)| *id);
        let mut fresh: HashMap<(Option<String>, Option<String>), VecDeque<i64>> = HashMap::new();
        for (id, alert_id, event_state) in returned {
            fresh
                .entry((alert_id, event_state))
                .or_default()
                .push_back(id);
        }
        let mut holder: HashMap<(Option<String>, Option<String>), i64> = HashMap::new();
        let mut out = Vec::with_capacity(rows.len());
        for w in rows {
            let key = (w.alert_id.clone(), w.event_state.clone());
            if let Some(id) = fresh.get_mut(&key).and_then(VecDeque::pop_front) {
                holder.entry(key).or_insert(id);
                out.push(WebhookInsert::Inserted(id));
            } else if let Some(id) = holder.get(&key) {
                out.push(WebhookInsert::Duplicate(*id));
            } else {
                let id = self.holder_of_key(w).await?;
                holder.insert(key, id);
                out.push(WebhookInsert::Duplicate(id));
            }
        }
        Ok(out)
    }

    /// The stored row holding `w`'s `(alert_id, event_state)`, which refused `w`.
    async fn holder_of_key(&mut self, w: &NewWebhookEvent) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "SELECT id FROM webhook_events WHERE alert_id = ?1 AND event_state = ?2",
        )
        .bind(&w.alert_id)
        .bind(&w.event_state)
        .fetch_one(self.conn())
        .await?)
    }

    /// Inserts the row under `alert_id`; `None` when a uniqueness constraint refused it.
    async fn insert_row(
        &mut self,
        w: &NewWebhookEvent,
        alert_id: Option<&str>,
        sha: &str,
    ) -> Result<Option<i64>> {
        let mut writes = Writes::new();
        webhook_events_statement(
            &mut writes,
            &[(w, alert_id, sha)],
            " ON CONFLICT DO NOTHING RETURNING id",
        );
        let (sql, args) = writes.finish(None)?;
        let inserted = sqlx::query_scalar_with(sql, args)
            .fetch_optional(self.conn())
            .await?;
        Ok(inserted)
    }
}

/// The one `webhook_events` INSERT: each webhook under the alert id and payload hash given
/// with it, then `tail`. With no conflict target, any uniqueness constraint (the seed's
/// `(alert_id, event_state)`) turns a row into a no-op.
fn webhook_events_statement(
    writes: &mut Writes,
    rows: &[(&NewWebhookEvent, Option<&str>, &str)],
    tail: &str,
) {
    writes.rows(
        "INSERT INTO webhook_events (received_at, alert_type, event_state, alert_id, policy_id, \
         policy_name, target_ip, target_prefix, source_ip, processed, action_taken, payload, \
         payload_sha256) VALUES ",
        "(?,?,?,?,?,?,?,?,?,1,?,?,?)",
        rows.len(),
        tail,
    );
    for (w, alert_id, sha) in rows {
        writes
            .bind(to_db(w.received_at))
            .bind(&w.alert_type)
            .bind(&w.event_state)
            .bind(*alert_id)
            .bind(&w.policy_id)
            .bind(&w.policy_name)
            .bind(&w.target_ip)
            .bind(&w.target_prefix)
            .bind(&w.source_ip)
            .bind(&w.action_taken)
            .bind(&w.payload)
            .bind(*sha);
    }
}

/// A stored webhook whose archive copy is not written yet.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Unarchived {
    /// `webhook_events.id`.
    pub id: i64,
    /// Reception time as stored (names the file).
    #[sqlx(try_from = "crate::loose::LooseText")]
    pub received_at: Option<String>,
    /// The raw body.
    #[sqlx(try_from = "crate::loose::LooseText")]
    pub payload: Option<String>,
}

/// How far the archive writer is behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ArchiveBacklog {
    /// Rows not archived yet.
    pub rows: i64,
    /// Reception time of the oldest of them.
    pub oldest: Option<DateTime<Utc>>,
}

impl WriteTx {
    /// Records that webhooks `ids` have their archive file written and fsync'd (the writer's
    /// progress, one statement per batch).
    pub async fn mark_webhooks_archived(&mut self, ids: &[i64], at: DateTime<Utc>) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let list = serde_json::to_string(ids).map_err(|e| crate::Error::Invalid(e.to_string()))?;
        sqlx::query(
            "UPDATE webhook_events SET archived_at = ?1 \
             WHERE id IN (SELECT value FROM json_each(?2)) AND archived_at IS NULL",
        )
        .bind(to_db(at))
        .bind(list)
        .execute(self.conn())
        .await?;
        Ok(())
    }
}

impl Store {
    /// The oldest `limit` webhooks whose archive copy is not written yet, by id.
    pub async fn unarchived_webhooks(&self, limit: u32) -> Result<Vec<Unarchived>> {
        let rows = sqlx::query_as(
            "SELECT id, received_at, payload FROM webhook_events \
             WHERE archived_at IS NULL ORDER BY id LIMIT ?1",
        )
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        Ok(rows)
    }

    /// How many webhooks wait for their archive copy, and since when.
    pub async fn archive_backlog(&self) -> Result<ArchiveBacklog> {
        let (rows, oldest): (i64, Option<String>) = sqlx::query_as(
            "SELECT COUNT(*), (SELECT received_at FROM webhook_events \
                               WHERE archived_at IS NULL ORDER BY id LIMIT 1) \
             FROM webhook_events WHERE archived_at IS NULL",
        )
        .fetch_one(self.pool())
        .await?;
        Ok(ArchiveBacklog {
            rows,
            oldest: oldest.as_deref().and_then(from_db),
        })
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
