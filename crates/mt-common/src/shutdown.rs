//! One shutdown signal for the whole process (SIGINT or SIGTERM), fanned out through a
//! [`CancellationToken`] that is passed explicitly to every task.

use tokio_util::sync::CancellationToken;

/// Returns a token cancelled on the first SIGINT or SIGTERM. A second signal exits at once with
/// status 130, so an operator is never stuck behind a hung shutdown.
pub fn install() -> std::io::Result<CancellationToken> {
    use tokio::signal::unix::{SignalKind, signal};

    let token = CancellationToken::new();
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let cancel = token.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!(signal = "SIGTERM", "shutdown requested"),
            _ = int.recv() => tracing::info!(signal = "SIGINT", "shutdown requested"),
        }
        cancel.cancel();
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
        tracing::warn!("second signal received, exiting immediately");
        std::process::exit(130);
    });
    Ok(token)
}

/// How long a step in progress (a Telegram send, an autowithdraw cycle, an analytics poll) may
/// still run after the shutdown signal before it is abandoned (SPEC §11: SIGTERM exits within
/// a few seconds even while a dependency is slow or failing).
pub const GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Completes `grace` after `token` is cancelled: race a step against it to let the step finish
/// if it can, and abandon it otherwise.
pub async fn grace_elapsed(token: &CancellationToken, grace: std::time::Duration) {
    token.cancelled().await;
    tokio::time::sleep(grace).await;
}
