//! Shared glue for the Magic Transit on-demand daemons and `mtctl`.
//!
//! Everything here is deliberately small: the configuration model of SPEC §3, the injectable
//! clock of SPEC §4, tracing initialisation and the SIGINT/SIGTERM shutdown token. Nothing in
//! this crate touches the database or the network.

pub mod clock;
pub mod config;
pub mod forwarded;
pub mod listener;
pub mod manpage;
pub mod metrics;
pub mod runtime;
pub mod service;
pub mod shutdown;
pub mod systemd;
pub mod telemetry;
pub mod timefmt;

pub use clock::{Clock, ManualClock, SharedClock, SystemClock};
pub use config::{Config, ConfigError};
