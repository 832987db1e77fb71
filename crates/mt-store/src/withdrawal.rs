//! `withdrawal_history` (the permanent record) and `pending_withdrawals` (the seed's deprecated
//! queue, which SPEC §5 keeps as "scheduled withdrawal requests").

use chrono::{DateTime, Utc};
use mt_common::timefmt::to_db;
use serde::Serialize;

use crate::{Result, Store, WithdrawMethod, WithdrawStatus, WriteTx};

/// A new `withdrawal_history` row.
#[derive(Debug, Clone)]
pub struct NewWithdrawal {
    /// The prefix (canonical CIDR).
    pub prefix: String,
    /// Cloudflare attack id, when one is known.
    pub attack_id: Option<String>,
    /// Cloudflare policy id.
    pub policy_id: Option<String>,
    /// Policy name.
    pub policy_name: Option<String>,
    /// Target IP.
    pub target_ip: Option<String>,
    /// Alert type.
    pub attack_type: Option<String>,
    /// When the prefix was advertised.
    pub advertised_at: Option<DateTime<Utc>>,
    /// When the attack ended.
    pub attack_ended_at: Option<DateTime<Utc>>,
    /// When the prefix was withdrawn (the attempt time for a failure).
    pub withdrawn_at: Option<DateTime<Utc>>,
    /// Advertisement → attack end.
    pub attack_duration_seconds: Option<i64>,
    /// Advertisement → withdrawal.
    pub protection_duration_seconds: Option<i64>,
    /// How it was withdrawn.
    pub method: WithdrawMethod,
    /// Whether it worked.
    pub status: WithdrawStatus,
    /// Free text: peak stats, errors, attempt counts.
    pub notes: Option<String>,
    /// Row creation time.
    pub created_at: DateTime<Utc>,
}

/// A stored `withdrawal_history` row, as it is (legacy methods such as `autowithdraw_daemon`
/// included).
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct Withdrawal {
    /// Row id.
    pub id: i64,
    /// Prefix.
    #[sqlx(try_from = "crate::loose::LooseText")]
    pub prefix: Option<String>,
    /// Attack id.
    #[sqlx(try_from = "crate::loose::LooseText")]
    pub attack_id: Option<String>,
    /// Policy id.
    #[sqlx(try_from = "crate::loose::LooseText")]
    pub policy_id: Option<String>,
    /// Policy name.
    #[sqlx(try_from = "crate::loose::LooseText")]
    pub policy_name: Option<String>,
    /// Target IP.
    #[sqlx(try_from = "crate::loose::LooseText")]
    pub target_ip: Option<String>,
    /// Alert type.
    #[sqlx(try_from = "crate::loose::LooseText")]
    pub attack_type: Option<String>,
    /// Advertisement time.
    #[sqlx(try_from = "crate::loose::LooseText")]
    pub advertised_at: Option<String>,
    /// Attack end time.
    #[sqlx(try_from = "crate::loose::LooseText")]
    pub attack_ended_at: Option<String>,
    /// Withdrawal time.
    #[sqlx(try_from = "crate::loose::LooseText")]
    pub withdrawn_at: Option<String>,
    /// Advertisement → attack end.
    #[sqlx(try_from = "crate::loose::LooseInt")]
    pub attack_duration_seconds: Option<i64>,
    /// Advertisement → withdrawal.
    #[sqlx(try_from = "crate::loose::LooseInt")]
    pub protection_duration_seconds: Option<i64>,
    /// Method.
    #[sqlx(try_from = "crate::loose::LooseText")]
    pub withdraw_method: Option<String>,
    /// Status.
    #[sqlx(try_from = "crate::loose::LooseText")]
    pub status: Option<String>,
    /// Notes.
    #[sqlx(try_from = "crate::loose::LooseText")]
    pub notes: Option<String>,
    /// Creation time.
    #[sqlx(try_from = "crate::loose::LooseText")]
    pub created_at: Option<String>,
}

/// A new `pending_withdrawals` row: a scheduled withdrawal request.
#[derive(Debug, Clone)]
pub struct NewPendingWithdrawal {
    /// The prefix (canonical CIDR).
    pub prefix: String,
    /// Attack id; with the prefix, the unique key.
    pub attack_id: Option<String>,
    /// Policy id.
    pub policy_id: Option<String>,
    /// Policy name.
    pub policy_name: Option<String>,
    /// Target IP.
    pub target_ip: Option<String>,
    /// Alert type.
    pub attack_type: Option<String>,
    /// When the prefix was advertised.
    pub advertised_at: Option<DateTime<Utc>>,
    /// Earliest withdrawal time.
    pub withdraw_after: DateTime<Utc>,
    /// When the attack ended.
    pub attack_ended_at: Option<DateTime<Utc>>,
    /// Row creation time.
    pub created_at: DateTime<Utc>,
}

/// A stored `pending_withdrawals` row, as it is.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct PendingWithdrawal {
    /// Row id.
    pub id: i64,
    /// Prefix.
    #[sqlx(try_from = "crate::loose::LooseText")]
    pub prefix: Option<String>,
    /// Attack id.
    #[sqlx(try_from = "crate::loose::LooseText")]
    pub attack_id: Option<String>,
    /// Policy id.
    #[sqlx(try_from = "crate::loose::LooseText")]
    pub policy_id: Option<String>,
    /// Policy name.
    #[sqlx(try_from = "crate::loose::LooseText")]
    pub policy_name: Option<String>,
    /// Target IP.
    #[sqlx(try_from = "crate::loose::LooseText")]
    pub target_ip: Option<String>,
    /// Alert type.
    #[sqlx(try_from = "crate::loose::LooseText")]
    pub attack_type: Option<String>,
    /// Advertisement time.
    #[sqlx(try_from = "crate::loose::LooseText")]
    pub advertised_at: Option<String>,
    /// Earliest withdrawal time.
    #[sqlx(try_from = "crate::loose::LooseText")]
    pub withdraw_after: Option<String>,
    /// Attack end time.
    #[sqlx(try_from = "crate::loose::LooseText")]
    pub attack_ended_at: Option<String>,
    /// Creation time.
    #[sqlx(try_from = "crate::loose::LooseText")]
    pub created_at: Option<String>,
    /// `pending`, `withdrawn`, `failed` (or a legacy value).
    #[sqlx(try_from = "crate::loose::LooseText")]
    pub status: Option<String>,
    /// Failed attempts.
    #[sqlx(try_from = "crate::loose::LooseInt")]
    pub retry_count: Option<i64>,
    /// Next attempt time, after a failure.
    #[sqlx(try_from = "crate::loose::LooseText")]
    pub next_retry_at: Option<String>,
    /// Why the last attempt failed or was refused.
    #[sqlx(try_from = "crate::loose::LooseText")]
    pub last_error: Option<String>,
}

macro_rules! select_history {
    ($rest:literal) => {
        concat!(
            "SELECT id, prefix, attack_id, policy_id, policy_name, target_ip, attack_type, \
             advertised_at, attack_ended_at, withdrawn_at, attack_duration_seconds, \
             protection_duration_seconds, withdraw_method, status, notes, created_at \
             FROM withdrawal_history",
            $rest
        )
    };
}

macro_rules! select_pending {
    ($rest:literal) => {
        concat!(
            "SELECT id, prefix, attack_id, policy_id, policy_name, target_ip, attack_type, \
             advertised_at, withdraw_after, attack_ended_at, created_at, status, retry_count, \
             next_retry_at, last_error FROM pending_withdrawals",
            $rest
        )
    };
}

impl WriteTx {
    /// Appends a `withdrawal_history` row; returns its id.
    pub async fn insert_withdrawal(&mut self, w: &NewWithdrawal) -> Result<i64> {
        let id = sqlx::query_scalar(
            "INSERT INTO withdrawal_history (prefix, attack_id, policy_id, policy_name, target_ip, \
             attack_type, advertised_at, attack_ended_at, withdrawn_at, attack_duration_seconds, \
             protection_duration_seconds, withdraw_method, status, notes, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15) \
             RETURNING id",
        )
        .bind(&w.prefix)
        .bind(&w.attack_id)
        .bind(&w.policy_id)
        .bind(&w.policy_name)
        .bind(&w.target_ip)
        .bind(&w.attack_type)
        .bind(w.advertised_at.map(to_db))
        .bind(w.attack_ended_at.map(to_db))
        .bind(w.withdrawn_at.map(to_db))
        .bind(w.attack_duration_seconds)
        .bind(w.protection_duration_seconds)
        .bind(w.method.as_str())
        .bind(w.status.as_str())
        .bind(&w.notes)
        .bind(to_db(w.created_at))
        .fetch_one(self.conn())
        .await?;
        Ok(id)
    }

    /// Rewrites the status, time and notes of a history row (e.g. a `failed` row that keeps the
    /// attempt count of one incident). Returns whether the row exists.
    pub async fn update_withdrawal(
        &mut self,
        id: i64,
        status: WithdrawStatus,
        withdrawn_at: Option<DateTime<Utc>>,
        notes: Option<&str>,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE withdrawal_history SET status = ?2, withdrawn_at = COALESCE(?3, withdrawn_at), \
             notes = ?4 WHERE id = ?1",
        )
        .bind(id)
        .bind(status.as_str())
        .bind(withdrawn_at.map(to_db))
        .bind(notes)
        .execute(self.conn())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Queues a scheduled withdrawal. Returns `None` when `(prefix, attack_id)` is already queued
    /// (`idx_pending_unique` is an expression index, so no `ON CONFLICT(prefix, attack_id)`).
    pub async fn insert_pending_withdrawal(
        &mut self,
        p: &NewPendingWithdrawal,
    ) -> Result<Option<i64>> {
        let id = sqlx::query_scalar(
            "INSERT INTO pending_withdrawals (prefix, attack_id, policy_id, policy_name, target_ip, \
             attack_type, advertised_at, withdraw_after, attack_ended_at, created_at, status) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 'pending') \
             ON CONFLICT DO NOTHING RETURNING id",
        )
        .bind(&p.prefix)
        .bind(&p.attack_id)
        .bind(&p.policy_id)
        .bind(&p.policy_name)
        .bind(&p.target_ip)
        .bind(&p.attack_type)
        .bind(p.advertised_at.map(to_db))
        .bind(to_db(p.withdraw_after))
        .bind(p.attack_ended_at.map(to_db))
        .bind(to_db(p.created_at))
        .fetch_optional(self.conn())
        .await?;
        Ok(id)
    }

    /// Records a withdrawal that took place, the one way every path does (autowithdraw's
    /// automatic and scheduled withdrawals, mtctl's and the dashboard's manual ones): the
    /// `WITHDRAW` event, the `withdrawal_history` row (completing the `pending_withdrawals`
    /// request it performed, if any — and still written if that request is gone), and
    /// `prefix_calm_status` marked withdrawn. The caller queues its message in the same
    /// transaction. Returns the history row id.
    pub async fn record_withdrawal(&mut self, w: &WithdrawalWrite<'_>) -> Result<i64> {
        self.insert_attack_event(&crate::NewAttackEvent {
            prefix: Some(w.history.prefix.clone()),
            raw_payload: w.event_payload.clone(),
            ..crate::NewAttackEvent::new(crate::EventType::Withdraw, w.action, w.at)
        })
        .await?;
        let id = match w.request {
            Some(request) => match self.complete_pending_withdrawal(request, w.history).await? {
                Some(id) => id,
                None => self.insert_withdrawal(w.history).await?,
            },
            None => self.insert_withdrawal(w.history).await?,
        };
        self.mark_prefix_withdrawn(&w.history.prefix, w.at).await?;
        Ok(id)
    }

    /// Completes a scheduled request: records `withdrawal` in the history and deletes the
    /// request, atomically. Returns the history row id, or `None` if the request no longer
    /// exists (someone else completed or removed it; nothing is written then).
    pub async fn complete_pending_withdrawal(
        &mut self,
        pending_id: i64,
        withdrawal: &NewWithdrawal,
    ) -> Result<Option<i64>> {
        let deleted = sqlx::query("DELETE FROM pending_withdrawals WHERE id = ?1")
            .bind(pending_id)
            .execute(self.conn())
            .await?;
        if deleted.rows_affected() == 0 {
            return Ok(None);
        }
        self.insert_withdrawal(withdrawal).await.map(Some)
    }

    /// Records why a request was not performed (refused by a safety gate, or failed). A refusal
    /// leaves the request pending. A failure (`counts_as_attempt`) increments `retry_count`;
    /// when that reaches `max_retries` (default 5) the request becomes `failed` and is no longer
    /// attempted until an operator resets it (the seed's "Reset failed status to retry" query).
    pub async fn note_pending_withdrawal(
        &mut self,
        pending_id: i64,
        reason: &str,
        next_retry_at: Option<DateTime<Utc>>,
        counts_as_attempt: bool,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE pending_withdrawals SET last_error = ?2, next_retry_at = ?3, \
             status = CASE WHEN ?4 = 1 AND COALESCE(retry_count, 0) + 1 >= COALESCE(max_retries, 5) \
                           THEN 'failed' ELSE status END, \
             retry_count = COALESCE(retry_count, 0) + ?4 WHERE id = ?1",
        )
        .bind(pending_id)
        .bind(reason)
        .bind(next_retry_at.map(to_db))
        .bind(i64::from(counts_as_attempt))
        .execute(self.conn())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Marks a still-pending request `failed` for good (SPEC §5: a request from an earlier
    /// advertisement). Returns false when it was no longer pending (already failed, performed
    /// or deleted), so the operator is told once.
    pub async fn fail_pending_withdrawal(&mut self, pending_id: i64, reason: &str) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE pending_withdrawals SET status = 'failed', last_error = ?2 \
             WHERE id = ?1 AND COALESCE(status, 'pending') = 'pending'",
        )
        .bind(pending_id)
        .bind(reason)
        .execute(self.conn())
        .await?;
        Ok(done.rows_affected() == 1)
    }
}

impl Store {
    /// Appends a `withdrawal_history` row in its own transaction.
    pub async fn record_withdrawal(&self, w: &NewWithdrawal) -> Result<i64> {
        let mut tx = self.begin().await?;
        let id = tx.insert_withdrawal(w).await?;
        tx.commit().await?;
        Ok(id)
    }

    /// The newest withdrawals first (the seed's `get_attack_history`).
    pub async fn withdrawal_history(&self, limit: u32) -> Result<Vec<Withdrawal>> {
        let rows = sqlx::query_as(select_history!(" ORDER BY id DESC LIMIT ?1"))
            .bind(limit)
            .fetch_all(self.pool())
            .await?;
        Ok(rows)
    }

    /// Queues a scheduled withdrawal in its own transaction (the seed's
    /// `add_pending_withdrawal`); `None` if already queued.
    pub async fn add_pending_withdrawal(&self, p: &NewPendingWithdrawal) -> Result<Option<i64>> {
        let mut tx = self.begin().await?;
        let id = tx.insert_pending_withdrawal(p).await?;
        tx.commit().await?;
        Ok(id)
    }

    /// Pending requests whose `withdraw_after` has come (the seed's `get_pending_withdrawals`).
    /// Times are compared through `datetime()`, so hand-inserted rows in any SQLite time form
    /// (`datetime('now', '+1 minute')`, ISO with `T`/`Z`) are honoured; a NULL status, as a
    /// hand-written row may have, counts as pending.
    pub async fn due_pending_withdrawals(
        &self,
        now: DateTime<Utc>,
    ) -> Result<Vec<PendingWithdrawal>> {
        let rows = sqlx::query_as(select_pending!(
            " WHERE COALESCE(status, 'pending') = 'pending' \
              AND datetime(withdraw_after) <= datetime(?1) \
              AND (next_retry_at IS NULL OR datetime(next_retry_at) <= datetime(?1)) \
              ORDER BY datetime(withdraw_after), id"
        ))
        .bind(to_db(now))
        .fetch_all(self.pool())
        .await?;
        Ok(rows)
    }

    /// Every row of `pending_withdrawals`, whatever its status or time (the seed's
    /// `get_all_pending`).
    pub async fn all_pending_withdrawals(&self) -> Result<Vec<PendingWithdrawal>> {
        let rows = sqlx::query_as(select_pending!(" ORDER BY withdraw_after, id"))
            .fetch_all(self.pool())
            .await?;
        Ok(rows)
    }
}

/// A withdrawal to record with [`WriteTx::record_withdrawal`].
#[derive(Debug, Clone)]
pub struct WithdrawalWrite<'a> {
    /// The `withdrawal_history` row (status `success`).
    pub history: &'a NewWithdrawal,
    /// `withdrawn_auto` or `withdrawn_manual`.
    pub action: crate::ActionTaken,
    /// The event's `raw_payload` (who did it, through what).
    pub event_payload: Option<String>,
    /// The `pending_withdrawals` request it performed.
    pub request: Option<i64>,
    /// When.
    pub at: DateTime<Utc>,
}
