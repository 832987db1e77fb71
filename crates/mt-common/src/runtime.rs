//! The end of every binary's `main`: run the async part on a multi-threaded runtime and turn
//! its outcome into the exit status (0 ok, 1 failed; configuration errors, exit 2, are decided
//! before this point).

use std::future::Future;
use std::process::ExitCode;

/// Runs `main` to completion. An error is logged (stderr, one line) with its whole chain of
/// causes, and the process exits 1; so does a runtime that cannot start.
pub fn run(main: impl Future<Output = anyhow::Result<()>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    ExitCode::from(exit_status(&runtime.block_on(main)))
}

/// The exit status for the async part's outcome: 0, or 1 after logging the error once with its
/// whole chain of causes (the log goes to stderr, so it is not printed a second time).
pub fn exit_status(result: &anyhow::Result<()>) -> u8 {
    match result {
        Ok(()) => 0,
        Err(e) => {
            if !tracing::dispatcher::has_been_set() {
                // A tool without a log subscriber (mt-demo): the error is its only output.
                eprintln!("error: {e:#}");
            } else if !e.is::<crate::service::Reported>() {
                tracing::error!(error = %format!("{e:#}"), "stopped");
            }
            1
        }
    }
}
