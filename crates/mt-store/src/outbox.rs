//! `notification_outbox`: Telegram messages queued durably with the event that caused them.

use chrono::{DateTime, Utc};
use mt_common::timefmt::to_db;
use serde::Serialize;

use crate::{Result, Store, WriteTx};

/// A message to queue. The text is already rendered for `parse_mode` and at most one Telegram
/// message long.
#[derive(Debug, Clone)]
pub struct NewNotification<'a> {
    /// Destination chat ("" when Telegram is disabled: the sender only logs it).
    pub chat_id: &'a str,
    /// Template kind, e.g. `attack_start` (for metrics and `mtctl status`).
    pub kind: &'a str,
    /// Lower is sent first: withdrawals and alerts before summaries.
    pub priority: i64,
    /// The text.
    pub text: &'a str,
    /// `MarkdownV2`, `HTML` or "" (plain).
    pub parse_mode: &'a str,
    /// When it was queued.
    pub created_at: DateTime<Utc>,
}

/// A queued message, as the sender sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct QueuedNotification {
    /// Row id (delivery order within a priority).
    pub id: i64,
    /// Destination chat.
    pub chat_id: String,
    /// Template kind.
    pub kind: String,
    /// Priority (lower first).
    pub priority: i64,
    /// The text.
    pub text: String,
    /// Parse mode.
    pub parse_mode: String,
    /// Queued at.
    pub created_at: String,
    /// Not to be attempted before this time (`YYYY-MM-DD HH:MM:SS`).
    pub next_attempt_at: String,
    /// Failed attempts so far.
    pub attempts: i64,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
}

/// A message with its delivery state, for the dashboard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct NotificationRecord {
    /// Row id.
    pub id: i64,
    /// Template kind.
    pub kind: String,
    /// `queued`, `sent` or `logged`.
    pub status: String,
    /// The text as sent (MarkdownV2 or plain).
    pub text: String,
    /// Queued at.
    pub created_at: String,
    /// Delivered at.
    pub sent_at: Option<String>,
    /// Failed attempts.
    pub attempts: i64,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// Next attempt (while queued).
    pub next_attempt_at: String,
}

/// Outbox depth, for metrics and `mtctl status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutboxStats {
    /// Messages waiting to be delivered.
    pub queued: i64,
    /// Of those, how many have failed at least once.
    pub failing: i64,
    /// Queue time of the oldest waiting message.
    pub oldest_queued_at: Option<String>,
    /// Delivered to Telegram.
    pub sent: i64,
    /// Written to the log only (Telegram disabled).
    pub logged: i64,
}

impl WriteTx {
    /// Queues a message inside the caller's transaction, so it commits (or not) with the event
    /// that caused it. Returns its id.
    pub async fn enqueue_notification(&mut self, n: &NewNotification<'_>) -> Result<i64> {
        let now = to_db(n.created_at);
        let id = sqlx::query_scalar(
            "INSERT INTO notification_outbox (chat_id, kind, priority, text, parse_mode, \
             created_at, next_attempt_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6) RETURNING id",
        )
        .bind(n.chat_id)
        .bind(n.kind)
        .bind(n.priority)
        .bind(n.text)
        .bind(n.parse_mode)
        .bind(&now)
        .fetch_one(self.conn())
        .await?;
        Ok(id)
    }
}

impl Store {
    /// The message to deliver next: the lowest priority, then the oldest. It is returned even
    /// when its `next_attempt_at` is still ahead (the sender waits for it rather than sending a
    /// later one first, which keeps per-chat order).
    pub async fn next_notification(&self) -> Result<Option<QueuedNotification>> {
        let row = sqlx::query_as(
            "SELECT id, chat_id, kind, priority, text, parse_mode, created_at, next_attempt_at, \
             attempts, last_error FROM notification_outbox WHERE status = 'queued' \
             ORDER BY priority, id LIMIT 1",
        )
        .fetch_optional(self.pool())
        .await?;
        Ok(row)
    }

    /// Marks a message delivered (`logged` instead of `sent` when Telegram is disabled).
    pub async fn mark_notification_delivered(
        &self,
        id: i64,
        at: DateTime<Utc>,
        to_log_only: bool,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE notification_outbox SET status = ?2, sent_at = ?3 WHERE id = ?1 AND status = 'queued'",
        )
        .bind(id)
        .bind(if to_log_only { "logged" } else { "sent" })
        .bind(to_db(at))
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Marks messages as written to the log (Telegram disabled), in one transaction.
    pub async fn mark_notifications_logged(&self, ids: &[i64], at: DateTime<Utc>) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let at = to_db(at);
        let mut tx = self.begin().await?;
        for id in ids {
            sqlx::query(
                "UPDATE notification_outbox SET status = 'logged', sent_at = ?2 \
                 WHERE id = ?1 AND status = 'queued'",
            )
            .bind(id)
            .bind(&at)
            .execute(tx.conn())
            .await?;
        }
        tx.commit().await
    }

    /// Records a failed attempt and when to try again. The message stays queued.
    pub async fn reschedule_notification(
        &self,
        id: i64,
        next_attempt_at: DateTime<Utc>,
        error: &str,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE notification_outbox SET attempts = attempts + 1, last_error = ?2, \
             next_attempt_at = ?3 WHERE id = ?1",
        )
        .bind(id)
        .bind(error)
        .bind(to_db(next_attempt_at))
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Outbox depth and delivery counts.
    pub async fn outbox_stats(&self) -> Result<OutboxStats> {
        let (queued, failing, oldest_queued_at, sent, logged) = sqlx::query_as(
            "SELECT \
             (SELECT COUNT(*) FROM notification_outbox WHERE status = 'queued'), \
             (SELECT COUNT(*) FROM notification_outbox WHERE status = 'queued' AND attempts > 0), \
             (SELECT MIN(created_at) FROM notification_outbox WHERE status = 'queued'), \
             (SELECT COUNT(*) FROM notification_outbox WHERE status = 'sent'), \
             (SELECT COUNT(*) FROM notification_outbox WHERE status = 'logged')",
        )
        .fetch_one(self.pool())
        .await?;
        Ok(OutboxStats {
            queued,
            failing,
            oldest_queued_at,
            sent,
            logged,
        })
    }

    /// Messages still waiting for delivery, in delivery order (for `mtctl notifications`).
    pub async fn queued_notifications(&self, limit: u32) -> Result<Vec<QueuedNotification>> {
        let rows = sqlx::query_as(
            "SELECT id, chat_id, kind, priority, text, parse_mode, created_at, next_attempt_at, \
             attempts, last_error FROM notification_outbox WHERE status = 'queued' \
             ORDER BY priority, id LIMIT ?1",
        )
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        Ok(rows)
    }

    /// The newest messages first, whatever their state.
    pub async fn recent_notifications(&self, limit: u32) -> Result<Vec<NotificationRecord>> {
        let rows = sqlx::query_as(
            "SELECT id, kind, status, text, created_at, sent_at, attempts, last_error, \
             next_attempt_at FROM notification_outbox ORDER BY id DESC LIMIT ?1",
        )
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        Ok(rows)
    }

    /// Every message ever queued, oldest first (for tests and `mtctl`).
    pub async fn notifications(&self, limit: u32) -> Result<Vec<QueuedNotification>> {
        let rows = sqlx::query_as(
            "SELECT id, chat_id, kind, priority, text, parse_mode, created_at, next_attempt_at, \
             attempts, last_error FROM notification_outbox ORDER BY id LIMIT ?1",
        )
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        Ok(rows)
    }
}
