//! mt-network-analytics against cf-sim over loopback, a real SQLite file, MaxMind's test
//! databases.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure must panic

mod common;
mod daemon;
mod geoip;
mod poll;
mod watchdog;
