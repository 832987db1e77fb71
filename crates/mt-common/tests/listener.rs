//! The hardened listener over real loopback sockets: keep-alive connections idle longer than
//! `header_read_timeout` are closed, handlers see the peer, and shutdown is bounded by `drain`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure must panic

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use axum::routing::get;
use mt_common::listener::{Limits, OpenConnections, serve};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

async fn start(
    limits: Limits,
) -> (
    SocketAddr,
    OpenConnections,
    CancellationToken,
    tokio::task::JoinHandle<()>,
) {
    let app = Router::new()
        .route(
            "/peer",
            get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.ip().to_string() }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(60)).await;
                "late"
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let open = OpenConnections::default();
    let stop = CancellationToken::new();
    let task = tokio::spawn(serve(
        listener,
        app,
        limits,
        open.clone(),
        mt_common::service::Progress::new(),
        stop.clone(),
    ));
    (addr, open, stop, task)
}

fn limits() -> Limits {
    Limits {
        header_read_timeout: Duration::from_millis(500),
        max_connections: 4,
        drain: Duration::from_secs(1),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed_and_handlers_see_the_peer() {
    let (addr, open, stop, task) = start(limits()).await;
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    socket
        .write_all(b"GET /peer HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 1024];
    let n = socket.read(&mut buf).await.unwrap();
    let answer = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.ends_with("127.0.0.1"),
        "the peer reaches the handler: {answer}"
    );
    assert_eq!(open.get(), 1);
    // Kept alive, then idle: closed after the header-read timeout, not held for ever.
    let idle = Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(5), socket.read(&mut buf)).await;
    assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "{closed:?}");
    assert!(
        idle.elapsed() >= Duration::from_millis(400),
        "{:?}",
        idle.elapsed()
    );
    for _ in 0..100 {
        if open.get() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(open.get(), 0, "the gauge follows");
    stop.cancel();
    task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_is_bounded_by_the_drain_time() {
    let (addr, _open, stop, task) = start(limits()).await;
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    socket
        .write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let asked = Instant::now();
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("serve returns after the drain time, though a request is still running")
        .unwrap();
    println!(
        "shutdown with a 60 s request in flight took {:?} (drain 1 s)",
        asked.elapsed()
    );
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no longer accepting"
    );
}
