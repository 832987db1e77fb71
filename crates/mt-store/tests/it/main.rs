//! mt-store integration tests: real SQLite files, the real `sqlite3` CLI for the seed's queries.

mod api;
mod common;
mod concurrency;
mod legacy;
mod seed_queries;
