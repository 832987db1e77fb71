//! The hardened HTTP listener of the receiver and the dashboard (SPEC §11).
//!
//! `axum::serve` runs hyper without a timer, so a client that sends half a request header holds
//! its socket for ever, and nothing caps the sockets: about 1,100 such clients exhaust the
//! default 1,024 descriptors. This listener serves HTTP/1 through hyper's own builder with a
//! timer, and:
//! - **header-read timeout**: a connection whose request header is not complete within
//!   `header_read_timeout` is closed; hyper starts that timer whenever the connection waits for
//!   a request, so it is also the **idle (keep-alive) timeout** between requests;
//! - **connection cap**: at most `max_connections` TCP connections are open at once; a permit
//!   is held for the connection's whole life, and further clients wait in the kernel's accept
//!   queue (no descriptor is spent on them);
//! - **bounded shutdown**: on `shutdown` it stops accepting, lets in-flight requests finish for
//!   at most `drain`, then closes what is left.
//!
//! Handlers see the peer as `axum::extract::ConnectInfo<SocketAddr>`, as with
//! `into_make_service_with_connect_info`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

use crate::service::Progress;

/// The listener's limits.
#[derive(Debug, Clone)]
pub struct Limits {
    /// A request header not complete within this time (also: a connection idle this long
    /// between requests) closes the connection.
    pub header_read_timeout: Duration,
    /// Open TCP connections at most.
    pub max_connections: usize,
    /// How long in-flight requests may finish after `shutdown`.
    pub drain: Duration,
}

impl Limits {
    /// The `/metrics` + `/healthz` listener of the daemons without public routes: a scraper
    /// and a probe or two.
    pub fn metrics() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            max_connections: 64,
            drain: Duration::from_secs(1),
        }
    }
}

/// Connections open now (for `/metrics`).
#[derive(Debug, Clone, Default)]
pub struct OpenConnections(Arc<AtomicUsize>);

impl OpenConnections {
    /// How many are open.
    pub fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

/// Decrements the gauge when the connection ends, however it ends.
struct Open(Arc<AtomicUsize>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How often the accept loop beats its [`Progress`] while it waits below the cap.
const BEAT_EVERY: Duration = Duration::from_secs(1);

/// Serves `app` on `listener` until `shutdown` (see the module documentation). `progress`
/// beats while the accept loop runs below the connection cap (the harness's watchdog rule:
/// a listener stuck at its cap longer than its bound stops the pings).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    open: OpenConnections,
    progress: Progress,
    shutdown: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    let mut connections = JoinSet::new();
    loop {
        // The permit first: beyond the cap, clients wait in the accept queue.
        let permit = tokio::select! {
            () = shutdown.cancelled() => break,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        progress.beat();
        let mut beat = tokio::time::interval(BEAT_EVERY);
        let accepted = loop {
            tokio::select! {
                () = shutdown.cancelled() => break None,
                accepted = listener.accept() => break Some(accepted),
                _ = beat.tick() => progress.beat(),
            }
        };
        let (stream, peer) = match accepted {
            None => break,
            Some(Ok(a)) => a,
            Some(Err(e)) => {
                // Out of descriptors, or a connection reset before accept: not fatal.
                tracing::warn!(error = %e, "cannot accept a connection; retrying");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        while connections.try_join_next().is_some() {}
        open.0.fetch_add(1, Ordering::Relaxed);
        let guard = Open(open.0.clone());
        let service = app
            .clone()
            .map_request(move |mut request: axum::http::Request<Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                request
            });
        let connection =
            builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
        let stop = shutdown.clone();
        connections.spawn(async move {
            let _permit = permit;
            let _open = guard;
            let mut connection = std::pin::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                () = stop.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = result
                && !e.is_timeout()
            {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    let drained = tokio::time::timeout(limits.drain, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            left = connections.len(),
            drain_secs = limits.drain.as_secs(),
            "requests still in flight after the drain time; closing them"
        );
        connections.abort_all();
    }
}
