//! mt-store integration tests: real SQLite files, the real `sqlite3` CLI for the seed's queries.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure must panic

mod api;
mod common;
mod concurrency;
mod dedup;
mod legacy;
mod marks;
mod reports;
mod seed_queries;
mod writes;
