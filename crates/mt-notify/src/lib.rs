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
mod queue;
mod sender;
pub mod templates;

pub use queue::{Notifier, split_message};
pub use sender::{LEASE_NAME, Sender, SenderError, SenderOptions};
pub use templates::Message;

/// Telegram's limit on one message, in characters.
pub const MAX_MESSAGE_CHARS: usize = 4096;
