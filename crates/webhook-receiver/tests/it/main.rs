//! mt-webhook-receiver tests: the router with `oneshot` over a real SQLite file and archive,
//! and the real binary over loopback HTTP (concurrency, kill -9, restart).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure must panic

mod batch;
mod binary;
mod common;
mod router;
