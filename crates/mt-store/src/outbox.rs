//! `notification_outbox`: Telegram messages queued durably with the event that caused them.

use chrono::{DateTime, Utc};
use mt_common::timefmt::to_db;
use serde::Serialize;

use crate::{Fence, Result, Store, WriteTx, Writes};

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
    /// Of those, how many Telegram refused for good (the message is failed at a bound).
    pub refusals: i64,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
}

/// What choosing the next message needs of a queued one.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct QueueHead {
    /// Row id.
    pub id: i64,
    /// Destination chat.
    pub chat_id: String,
    /// Priority (lower first).
    pub priority: i64,
    /// Not to be attempted before this time.
    pub next_attempt_at: String,
}

/// A chat Telegram refused (SPEC §10): its delivery is paused, its queue kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct ChatPause {
    /// The chat.
    pub chat_id: String,
    /// Telegram's answer.
    pub reason: String,
    /// Consecutive refusals.
    pub failures: i64,
    /// First refusal of this run.
    pub paused_since: String,
    /// Next attempt to this chat.
    pub paused_until: String,
    /// The supergroup's id, when the group was migrated.
    pub migrate_to_chat_id: Option<String>,
}

/// A message with its delivery state, for the dashboard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct NotificationRecord {
    /// Row id.
    pub id: i64,
    /// Template kind.
    pub kind: String,
    /// `queued`, `sent`, `logged` or `failed`.
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
    /// Refused by Telegram for good (never delivered).
    pub failed: i64,
    /// Chats whose delivery is paused by a chat-level refusal.
    pub paused_chats: i64,
}

/// Messages per multi-row outbox INSERT: 7 bound values each.
const OUTBOX_BATCH_ROWS: usize = 500;

impl WriteTx {
    /// Queues a message inside the caller's transaction, so it commits (or not) with the event
    /// that caused it. Returns its id.
    pub async fn enqueue_notification(&mut self, n: &NewNotification<'_>) -> Result<i64> {
        self.enqueue_notifications(std::slice::from_ref(n))
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| {
                crate::Error::Invalid("INSERT INTO notification_outbox returned no id".into())
            })
    }

    /// Queues messages in order (the sender delivers a chat's messages by priority, then id),
    /// in one statement per 500; returns their ids in the same order.
    pub async fn enqueue_notifications(&mut self, ns: &[NewNotification<'_>]) -> Result<Vec<i64>> {
        self.insert_returning_ids(ns, OUTBOX_BATCH_ROWS, notifications_statement)
            .await
    }
}

impl Writes {
    /// Queues [`WriteTx::enqueue_notifications`], its ids unread.
    pub fn notifications(&mut self, ns: &[NewNotification<'_>]) -> &mut Self {
        for chunk in ns.chunks(OUTBOX_BATCH_ROWS) {
            notifications_statement(self, chunk, "");
        }
        self
    }
}

/// The one outbox INSERT: `ns` in VALUES order, then `tail`.
fn notifications_statement(writes: &mut Writes, ns: &[NewNotification<'_>], tail: &str) {
    writes.rows(
        "INSERT INTO notification_outbox (chat_id, kind, priority, text, parse_mode, \
         created_at, next_attempt_at) VALUES ",
        "(?,?,?,?,?,?,?)",
        ns.len(),
        tail,
    );
    for n in ns {
        let at = to_db(n.created_at);
        writes
            .bind(n.chat_id)
            .bind(n.kind)
            .bind(n.priority)
            .bind(n.text)
            .bind(n.parse_mode)
            .bind(at.clone())
            .bind(at);
    }
}

impl Store {
    /// The first (priority, id) queued message of each chat: what the sender chooses from.
    pub async fn queue_heads(&self) -> Result<Vec<QueueHead>> {
        let rows = sqlx::query_as(
            "SELECT id, chat_id, priority, next_attempt_at FROM ( \
               SELECT id, chat_id, priority, next_attempt_at, \
                 ROW_NUMBER() OVER (PARTITION BY chat_id ORDER BY priority, id) AS place \
               FROM notification_outbox WHERE status = 'queued') \
             WHERE place = 1 ORDER BY priority, id",
        )
        .fetch_all(self.pool())
        .await?;
        Ok(rows)
    }

    /// A message's status (`queued`, `sent`, `failed`, `logged`) and last error, by id.
    pub async fn notification_status(&self, id: i64) -> Result<Option<(String, Option<String>)>> {
        Ok(
            sqlx::query_as("SELECT status, last_error FROM notification_outbox WHERE id = ?1")
                .bind(id)
                .fetch_optional(self.pool())
                .await?,
        )
    }

    /// A queued message by id (`None` once it left the queue).
    pub async fn queued_notification(&self, id: i64) -> Result<Option<QueuedNotification>> {
        let row = sqlx::query_as(
            "SELECT id, chat_id, kind, priority, text, parse_mode, created_at, next_attempt_at, \
             attempts, refusals, last_error FROM notification_outbox \
             WHERE id = ?1 AND status = 'queued'",
        )
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        Ok(row)
    }

    /// The first queued message in global delivery order (for tests and status pages).
    pub async fn next_notification(&self) -> Result<Option<QueuedNotification>> {
        Ok(self.queued_notifications(1).await?.into_iter().next())
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

    /// Marks messages as written to the log (Telegram disabled), in one transaction. Fenced.
    pub async fn mark_notifications_logged(
        &self,
        fence: &Fence,
        ids: &[i64],
        at: DateTime<Utc>,
    ) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let ids = serde_json::to_string(ids).map_err(|e| crate::Error::Invalid(e.to_string()))?;
        let mut tx = self.begin().await?;
        tx.check_fence(fence).await?;
        // One statement, not one per message: this transaction holds the process's write slot,
        // and the receiver's group commit waits for it (issue #22).
        sqlx::query(
            "UPDATE notification_outbox SET status = 'logged', sent_at = ?2 \
             WHERE id IN (SELECT value FROM json_each(?1)) AND status = 'queued'",
        )
        .bind(ids)
        .bind(to_db(at))
        .execute(tx.conn())
        .await?;
        tx.commit().await
    }

    /// Records a failed attempt and when to try again. The message stays queued; `refused`
    /// counts a permanent refusal. Fenced: only the sender lease's holder writes it.
    pub async fn reschedule_notification(
        &self,
        fence: &Fence,
        id: i64,
        next_attempt_at: DateTime<Utc>,
        error: &str,
        refused: bool,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        tx.check_fence(fence).await?;
        sqlx::query(
            "UPDATE notification_outbox SET attempts = attempts + 1, \
             refusals = refusals + ?4, last_error = ?2, next_attempt_at = ?3 \
             WHERE id = ?1 AND status = 'queued'",
        )
        .bind(id)
        .bind(error)
        .bind(to_db(next_attempt_at))
        .bind(i64::from(refused))
        .execute(tx.conn())
        .await?;
        tx.commit().await
    }

    /// Marks a message Telegram refused for good as `failed` (it leaves the queue). Fenced.
    pub async fn fail_notification(&self, fence: &Fence, id: i64, error: &str) -> Result<()> {
        let mut tx = self.begin().await?;
        tx.check_fence(fence).await?;
        sqlx::query(
            "UPDATE notification_outbox SET status = 'failed', attempts = attempts + 1, \
             refusals = refusals + 1, last_error = ?2 WHERE id = ?1 AND status = 'queued'",
        )
        .bind(id)
        .bind(error)
        .execute(tx.conn())
        .await?;
        tx.commit().await
    }

    /// Pauses delivery to `chat_id` until `until` after a chat-level refusal (one more
    /// consecutive failure). Fenced.
    pub async fn pause_chat(
        &self,
        fence: &Fence,
        chat_id: &str,
        reason: &str,
        until: DateTime<Utc>,
        migrate_to: Option<i64>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        tx.check_fence(fence).await?;
        sqlx::query(
            "INSERT INTO notification_chat_pauses (chat_id, reason, failures, paused_since, \
             paused_until, migrate_to_chat_id) VALUES (?1, ?2, 1, ?3, ?4, ?5) \
             ON CONFLICT(chat_id) DO UPDATE SET reason = excluded.reason, \
             failures = failures + 1, paused_until = excluded.paused_until, \
             migrate_to_chat_id = excluded.migrate_to_chat_id",
        )
        .bind(chat_id)
        .bind(reason)
        .bind(to_db(now))
        .bind(to_db(until))
        .bind(migrate_to.map(|id| id.to_string()))
        .execute(tx.conn())
        .await?;
        tx.commit().await
    }

    /// Every paused chat.
    pub async fn chat_pauses(&self) -> Result<Vec<ChatPause>> {
        let rows = sqlx::query_as(
            "SELECT chat_id, reason, failures, paused_since, paused_until, migrate_to_chat_id \
             FROM notification_chat_pauses ORDER BY chat_id",
        )
        .fetch_all(self.pool())
        .await?;
        Ok(rows)
    }

    /// Marks a message delivered and lifts its chat's pause, in one transaction. Fenced: a
    /// sender whose lease was taken over cannot record (SPEC §10: the new holder may repeat
    /// that one message).
    pub async fn record_delivery(
        &self,
        fence: &Fence,
        id: i64,
        chat_id: &str,
        at: DateTime<Utc>,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        tx.check_fence(fence).await?;
        sqlx::query(
            "UPDATE notification_outbox SET status = 'sent', sent_at = ?2 \
             WHERE id = ?1 AND status = 'queued'",
        )
        .bind(id)
        .bind(to_db(at))
        .execute(tx.conn())
        .await?;
        sqlx::query("DELETE FROM notification_chat_pauses WHERE chat_id = ?1")
            .bind(chat_id)
            .execute(tx.conn())
            .await?;
        tx.commit().await
    }

    /// Messages Telegram refused for good, newest first (for `mtctl notifications`).
    pub async fn failed_notifications(&self, limit: u32) -> Result<Vec<QueuedNotification>> {
        let rows = sqlx::query_as(
            "SELECT id, chat_id, kind, priority, text, parse_mode, created_at, next_attempt_at, \
             attempts, refusals, last_error FROM notification_outbox WHERE status = 'failed' \
             ORDER BY id DESC LIMIT ?1",
        )
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        Ok(rows)
    }

    /// Outbox depth and delivery counts.
    pub async fn outbox_stats(&self) -> Result<OutboxStats> {
        let (queued, failing, oldest_queued_at, sent, logged, failed, paused_chats) =
            sqlx::query_as(
                "SELECT \
             (SELECT COUNT(*) FROM notification_outbox WHERE status = 'queued'), \
             (SELECT COUNT(*) FROM notification_outbox WHERE status = 'queued' AND attempts > 0), \
             (SELECT MIN(created_at) FROM notification_outbox WHERE status = 'queued'), \
             (SELECT COUNT(*) FROM notification_outbox WHERE status = 'sent'), \
             (SELECT COUNT(*) FROM notification_outbox WHERE status = 'logged'), \
             (SELECT COUNT(*) FROM notification_outbox WHERE status = 'failed'), \
             (SELECT COUNT(*) FROM notification_chat_pauses)",
            )
            .fetch_one(self.pool())
            .await?;
        Ok(OutboxStats {
            queued,
            failing,
            oldest_queued_at,
            sent,
            logged,
            failed,
            paused_chats,
        })
    }

    /// Messages still waiting for delivery, in delivery order (for `mtctl notifications`).
    pub async fn queued_notifications(&self, limit: u32) -> Result<Vec<QueuedNotification>> {
        let rows = sqlx::query_as(
            "SELECT id, chat_id, kind, priority, text, parse_mode, created_at, next_attempt_at, \
             attempts, refusals, last_error FROM notification_outbox WHERE status = 'queued' \
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
             attempts, refusals, last_error FROM notification_outbox ORDER BY id LIMIT ?1",
        )
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        Ok(rows)
    }
}
