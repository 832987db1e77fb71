//! autowithdraw scenarios: the real cycle against cf-sim over loopback, both on one injected
//! clock, a real SQLite file. Each test moves the clock a minute per cycle.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure must panic

mod account;
mod common;
mod daemon;
mod leases;
mod paths;
mod properties;
mod requests;
mod scenarios;
