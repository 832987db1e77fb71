//! The Magic Transit database (SPEC §4–§5): the only crate that writes SQL.
//!
//! One [`Store`] over a SQLite pool in WAL mode, shared by every daemon through the same file.
//! Opening a store applies the embedded migrations (adopting a database created by the original
//! Python suite in place) and refuses a database whose schema is newer than this binary.
//!
//! Writes go through [`WriteTx`], a `BEGIN IMMEDIATE` transaction on the process's one write
//! connection (kept out of the pool, which serves reads), so a webhook, its derived rows and
//! its queued notification commit together or not at all; [`Writes`] sends statements whose
//! results nobody reads with the `COMMIT`, in one round trip. Every statement is
//! parameterised; every stored time is UTC `YYYY-MM-DD HH:MM:SS` text (SPEC §4).

mod analytics;
mod attack;
mod audit;
mod autowithdraw;
mod calm;
mod error;
mod gaps;
mod holds;
pub mod lease;
mod loose;
mod migrate;
mod outbox;
mod reports;
mod retention;
mod state;
mod stats;
mod store;
mod vocab;
mod webhook;
mod withdrawal;
mod writes;

pub use analytics::{AnalyticsEvent, NewAnalyticsEvent, event_hash};
pub use attack::{AttackEvent, NewAttackEvent};
pub use audit::{AuditEntry, NewAudit};
pub use autowithdraw::{PrefixState, StartRow};
pub use calm::{Advertisement, CalmUpdate, PrefixCalmStatus, PrefixMark};
pub use error::{Error, Result};
pub use gaps::TelemetryGap;
pub use holds::Hold;
pub use lease::Fence;
pub use migrate::{SchemaStatus, embedded_schema_version};
pub use outbox::{
    ChatPause, NewNotification, NotificationRecord, OutboxStats, QueueHead, QueuedNotification,
};
pub use reports::{DestinationTotal, Dimension, SeriesPoint, TopRow};
pub use retention::{Prunable, PruneOptions, PruneProgress};
pub use stats::Stats;
pub use store::{OpenOptions, Store, WriteTx};
pub use vocab::{ActionTaken, EventType, WithdrawMethod, WithdrawStatus};
pub use webhook::{
    ArchiveBacklog, NewWebhookEvent, StoredIdentity, Unarchived, WebhookDedup, WebhookEvent,
    WebhookInsert, WebhookStats, disambiguated_alert_id, duplicate_of,
};
pub use withdrawal::{
    NewPendingWithdrawal, NewWithdrawal, PendingWithdrawal, Withdrawal, WithdrawalWrite,
};
pub use writes::Writes;
