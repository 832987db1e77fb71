//! mt-notify integration tests: templates checked by a strict MarkdownV2 validator, delivery
//! against a fake Telegram over loopback HTTP, real SQLite outbox.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure must panic

mod common;
mod delivery;
mod faults;
mod markdown_v2;
mod templates;
