//! mt-cloudflare against wiremock over loopback, with the fixtures' exact bodies. Retry delays
//! are recorded by an injected sleeper instead of being slept.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure must panic

mod common;
mod graphql;
mod rest;
mod schema;
