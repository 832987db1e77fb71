//! `audit_log`: who did what by hand (mtctl, the dashboard), and how it ended.

use chrono::{DateTime, Utc};
use mt_common::timefmt::to_db;
use serde::Serialize;

use crate::{Result, Store, WriteTx};

/// An audit row to write.
#[derive(Debug, Clone)]
pub struct NewAudit<'a> {
    /// When.
    pub at: DateTime<Utc>,
    /// Who: the dashboard user, or `$SUDO_USER`/`$USER` for mtctl.
    pub actor: &'a str,
    /// Through what: `mtctl` or `dashboard`.
    pub via: &'a str,
    /// `advertise`, `withdraw`, `pin`, `unpin`, `pause`, `resume`, `login`, `logout`.
    pub action: &'a str,
    /// The prefix acted on, if any.
    pub prefix: Option<&'a str>,
    /// Free text: the reason, the error, the hold's end.
    pub detail: Option<&'a str>,
    /// `ok`, `noop` (nothing to change) or `failed`.
    pub outcome: &'a str,
}

/// A stored audit row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct AuditEntry {
    /// Row id.
    pub id: i64,
    /// When (`YYYY-MM-DD HH:MM:SS` UTC).
    pub at: String,
    /// Who.
    pub actor: String,
    /// Through what.
    pub via: String,
    /// What.
    pub action: String,
    /// On which prefix.
    pub prefix: Option<String>,
    /// Details.
    pub detail: Option<String>,
    /// How it ended.
    pub outcome: String,
}

impl WriteTx {
    /// Appends an audit row in this transaction.
    pub async fn insert_audit(&mut self, a: &NewAudit<'_>) -> Result<i64> {
        let done = sqlx::query(
            "INSERT INTO audit_log (at, actor, via, action, prefix, detail, outcome) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )
        .bind(to_db(a.at))
        .bind(a.actor)
        .bind(a.via)
        .bind(a.action)
        .bind(a.prefix)
        .bind(a.detail)
        .bind(a.outcome)
        .execute(self.conn())
        .await?;
        Ok(done.last_insert_rowid())
    }
}

impl Store {
    /// Appends an audit row in its own transaction.
    pub async fn audit(&self, a: &NewAudit<'_>) -> Result<i64> {
        let mut tx = self.begin().await?;
        let id = tx.insert_audit(a).await?;
        tx.commit().await?;
        Ok(id)
    }

    /// The newest audit rows first.
    pub async fn audit_log(&self, limit: u32) -> Result<Vec<AuditEntry>> {
        let rows = sqlx::query_as(
            "SELECT id, at, actor, via, action, prefix, detail, outcome FROM audit_log \
             ORDER BY id DESC LIMIT ?1",
        )
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        Ok(rows)
    }
}
