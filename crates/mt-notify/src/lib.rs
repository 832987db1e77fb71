//! Telegram notifications (SPEC §10) through a durable outbox.
//!
//! - [`templates`]: one pure function per message kind, rendering a typed event to MarkdownV2
//!   with every interpolated value escaped ([`markdown`]).
//! - [`Notifier::queue`]: renders, splits over-long text at line boundaries and queues the parts
//!   **inside the caller's transaction**, so an event and its message commit together and the
//!   caller never waits for Telegram.
//! - [`Sender`]: the background task any daemon may run; a database lease picks one sender at a
//!   time, so per-chat order and pacing hold across daemons. Telegram being down, slow or
//!   rate-limiting delays messages but never loses them.

pub mod markdown;
pub mod outbox;
mod queue;
mod sender;
pub mod templates;

pub use queue::{Notifier, split_message, utf16_len};
pub use sender::{LEASE_NAME, Sender, SenderError, SenderOptions, TestDelivery};
pub use templates::Message;

/// Telegram's limit on one message, in UTF-16 code units (see [`split_message`]).
pub const MAX_MESSAGE_CHARS: usize = 4096;

/// The outbox's series on a daemon's `/metrics` page (every daemon shows the same, read from
/// the database, whichever daemon runs the sender).
pub fn outbox_metrics(page: &mut mt_common::metrics::Exposition, o: &mt_store::OutboxStats) {
    page.gauge(
        "mt_notifications_queued",
        "Telegram messages waiting.",
        o.queued as f64,
    )
    .gauge(
        "mt_notifications_failing",
        "Waiting Telegram messages that failed at least once.",
        o.failing as f64,
    )
    .counter(
        "mt_notifications_failed_total",
        "Telegram messages refused for good and marked failed (mtctl notifications lists them).",
        u64::try_from(o.failed).unwrap_or(0),
    )
    .gauge(
        "mt_notifications_paused_chats",
        "Chats whose delivery is paused because Telegram refused the chat (bot kicked, chat not found, group migrated).",
        o.paused_chats as f64,
    );
}
