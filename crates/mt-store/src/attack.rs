//! `attack_events`: the START / END / ADVERTISE / WITHDRAW log.

use chrono::{DateTime, Utc};
use mt_common::timefmt::to_db;
use serde::Serialize;

use crate::{ActionTaken, EventType, Result, Store, WriteTx, Writes};

/// A new `attack_events` row.
#[derive(Debug, Clone)]
pub struct NewAttackEvent {
    /// START, END, ADVERTISE or WITHDRAW.
    pub event_type: EventType,
    /// Cloudflare alert type.
    pub alert_type: Option<String>,
    /// Cloudflare attack id (the correlation key).
    pub attack_id: Option<String>,
    /// Cloudflare policy id.
    pub policy_id: Option<String>,
    /// Policy name.
    pub policy_name: Option<String>,
    /// The configured prefix concerned (canonical CIDR).
    pub prefix: Option<String>,
    /// Target IP address.
    pub target_ip: Option<String>,
    /// Target port.
    pub target_port: Option<i64>,
    /// Protocol (TCP/UDP…).
    pub protocol: Option<String>,
    /// Attack vector description.
    pub attack_vector: Option<String>,
    /// Packets per second at event time (text, as the seed stores it).
    pub packets_per_second: Option<String>,
    /// Megabits per second at event time (text, as the seed stores it).
    pub megabits_per_second: Option<String>,
    /// Alert severity.
    pub severity: Option<String>,
    /// What the system did.
    pub action_taken: ActionTaken,
    /// The full JSON payload.
    pub raw_payload: Option<String>,
    /// Event time.
    pub created_at: DateTime<Utc>,
}

impl NewAttackEvent {
    /// An event with only its type, action and time set.
    pub fn new(
        event_type: EventType,
        action_taken: ActionTaken,
        created_at: DateTime<Utc>,
    ) -> Self {
        Self {
            event_type,
            alert_type: None,
            attack_id: None,
            policy_id: None,
            policy_name: None,
            prefix: None,
            target_ip: None,
            target_port: None,
            protocol: None,
            attack_vector: None,
            packets_per_second: None,
            megabits_per_second: None,
            severity: None,
            action_taken,
            raw_payload: None,
            created_at,
        }
    }
}

/// A stored `attack_events` row, as it is (legacy values included).
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct AttackEvent {
    /// Row id.
    pub id: i64,
    /// Event type.
    #[sqlx(try_from = "crate::loose::LooseText")]
    pub event_type: Option<String>,
    /// Alert type.
    #[sqlx(try_from = "crate::loose::LooseText")]
    pub alert_type: Option<String>,
    /// Attack id.
    #[sqlx(try_from = "crate::loose::LooseText")]
    pub attack_id: Option<String>,
    /// Policy id.
    #[sqlx(try_from = "crate::loose::LooseText")]
    pub policy_id: Option<String>,
    /// Policy name.
    #[sqlx(try_from = "crate::loose::LooseText")]
    pub policy_name: Option<String>,
    /// Prefix.
    #[sqlx(try_from = "crate::loose::LooseText")]
    pub prefix: Option<String>,
    /// Target IP.
    #[sqlx(try_from = "crate::loose::LooseText")]
    pub target_ip: Option<String>,
    /// Target port.
    #[sqlx(try_from = "crate::loose::LooseInt")]
    pub target_port: Option<i64>,
    /// Protocol.
    #[sqlx(try_from = "crate::loose::LooseText")]
    pub protocol: Option<String>,
    /// Attack vector.
    #[sqlx(try_from = "crate::loose::LooseText")]
    pub attack_vector: Option<String>,
    /// PPS at event time.
    #[sqlx(try_from = "crate::loose::LooseText")]
    pub packets_per_second: Option<String>,
    /// Mbps at event time.
    #[sqlx(try_from = "crate::loose::LooseText")]
    pub megabits_per_second: Option<String>,
    /// Severity.
    #[sqlx(try_from = "crate::loose::LooseText")]
    pub severity: Option<String>,
    /// Action taken.
    #[sqlx(try_from = "crate::loose::LooseText")]
    pub action_taken: Option<String>,
    /// Raw payload.
    #[sqlx(try_from = "crate::loose::LooseText")]
    pub raw_payload: Option<String>,
    /// Event time (`YYYY-MM-DD HH:MM:SS`, or a legacy form).
    #[sqlx(try_from = "crate::loose::LooseText")]
    pub created_at: Option<String>,
}

/// `SELECT … FROM attack_events` followed by `$rest`, as one static string.
macro_rules! select_attack_events {
    ($rest:literal) => {
        concat!(
            "SELECT id, event_type, alert_type, attack_id, policy_id, policy_name, prefix, \
             target_ip, target_port, protocol, attack_vector, packets_per_second, \
             megabits_per_second, severity, action_taken, raw_payload, created_at \
             FROM attack_events",
            $rest
        )
    };
}

/// Rows per multi-row `attack_events` INSERT: 16 bound values each, far below SQLite's 32,766.
const ATTACK_BATCH_ROWS: usize = 250;

impl WriteTx {
    /// Appends an `attack_events` row; returns its id.
    pub async fn insert_attack_event(&mut self, e: &NewAttackEvent) -> Result<i64> {
        self.insert_attack_events(std::slice::from_ref(e))
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| crate::Error::Invalid("INSERT INTO attack_events returned no id".into()))
    }

    /// Appends `attack_events` rows in order, in one statement per 250 rows (the receiver's
    /// group commit stores a whole batch so); returns their ids in the same order.
    pub async fn insert_attack_events(&mut self, events: &[NewAttackEvent]) -> Result<Vec<i64>> {
        self.insert_returning_ids(events, ATTACK_BATCH_ROWS, attack_events_statement)
            .await
    }
}

impl Writes {
    /// Queues [`WriteTx::insert_attack_events`], its ids unread.
    pub fn attack_events(&mut self, events: &[NewAttackEvent]) -> &mut Self {
        for chunk in events.chunks(ATTACK_BATCH_ROWS) {
            attack_events_statement(self, chunk, "");
        }
        self
    }
}

/// The one `attack_events` INSERT: `events` in VALUES order, then `tail`.
fn attack_events_statement(writes: &mut Writes, events: &[NewAttackEvent], tail: &str) {
    writes.rows(
        "INSERT INTO attack_events (event_type, alert_type, attack_id, policy_id, policy_name, \
         prefix, target_ip, target_port, protocol, attack_vector, packets_per_second, \
         megabits_per_second, severity, action_taken, raw_payload, created_at) VALUES ",
        "(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        events.len(),
        tail,
    );
    for e in events {
        writes
            .bind(e.event_type.as_str())
            .bind(&e.alert_type)
            .bind(&e.attack_id)
            .bind(&e.policy_id)
            .bind(&e.policy_name)
            .bind(&e.prefix)
            .bind(&e.target_ip)
            .bind(e.target_port)
            .bind(&e.protocol)
            .bind(&e.attack_vector)
            .bind(&e.packets_per_second)
            .bind(&e.megabits_per_second)
            .bind(&e.severity)
            .bind(e.action_taken.as_str())
            .bind(&e.raw_payload)
            .bind(to_db(e.created_at));
    }
}

impl Store {
    /// Appends an `attack_events` row in its own transaction (the seed's `log_attack_event`).
    pub async fn log_attack_event(&self, e: &NewAttackEvent) -> Result<i64> {
        let mut tx = self.begin().await?;
        let id = tx.insert_attack_event(e).await?;
        tx.commit().await?;
        Ok(id)
    }

    /// The newest events first, optionally of one `event_type` (the seed's `get_attack_events`).
    pub async fn attack_events(
        &self,
        limit: u32,
        event_type: Option<&str>,
    ) -> Result<Vec<AttackEvent>> {
        let rows = sqlx::query_as(select_attack_events!(
            " WHERE (?1 IS NULL OR event_type = ?1) ORDER BY id DESC LIMIT ?2"
        ))
        .bind(event_type)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        Ok(rows)
    }

    /// The newest attack alert (`START` or `END` with an attack id) of `prefix` at or after
    /// `since`: what a withdrawal of that prefix is the end of.
    pub async fn last_attack_alert_since(
        &self,
        prefix: &str,
        since: DateTime<Utc>,
    ) -> Result<Option<AttackEvent>> {
        let row = sqlx::query_as(select_attack_events!(
            " WHERE prefix = ?1 AND event_type IN ('START', 'END') AND attack_id IS NOT NULL \
             AND attack_id <> '' AND datetime(created_at) >= datetime(?2) ORDER BY id DESC LIMIT 1"
        ))
        .bind(prefix)
        .bind(to_db(since))
        .fetch_optional(self.pool())
        .await?;
        Ok(row)
    }

    /// Every event of one attack, oldest first (START → END → WITHDRAW correlation).
    pub async fn attack_events_for(&self, attack_id: &str) -> Result<Vec<AttackEvent>> {
        let rows = sqlx::query_as(select_attack_events!(" WHERE attack_id = ?1 ORDER BY id"))
            .bind(attack_id)
            .fetch_all(self.pool())
            .await?;
        Ok(rows)
    }
}
