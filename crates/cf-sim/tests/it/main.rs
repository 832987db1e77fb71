//! cf-sim: the real mt-cloudflare client against the simulator over loopback.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure must panic

mod client;
mod schema;
mod simulator;
