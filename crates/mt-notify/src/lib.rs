//! Telegram delivery through a durable outbox (SPEC §10). Filled by the mt-notify issue.
