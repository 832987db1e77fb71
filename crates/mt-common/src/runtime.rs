//! The end of every binary's `main`: run the async part on a multi-threaded runtime and turn
//! its outcome into the exit status (0 ok, 1 failed; configuration errors, exit 2, are decided
//! before this point).

use std::future::Future;
use std::process::ExitCode;

/// Runs `main` to completion. An error is logged and printed to stderr with its whole chain
/// of causes, and the process exits 1; so does a runtime that cannot start.
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
    match runtime.block_on(main) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "stopped");
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
