//! `serve`: the accept loop for a standalone server.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use crate::conn::Conn;
use crate::service::BayeuxService;
use crate::tls::{Acceptor, Io};
use bayeux_core::ConnectionQuota;
use hyper::body::Incoming;

/// Serves `service` on `listener` (HTTP/1.1 and HTTP/2, WebSocket upgrades) until `shutdown`
/// completes; then stops accepting, lets in-flight requests finish (held connects are answered
/// by the service's [`crate::ShutdownHandle`], which the caller fires) and returns after at most
/// `grace`.
///
/// `service` is any hyper service; use [`BayeuxService`] alone or a router that wraps it. The
/// connection limit, header timeout and write deadline come from the Bayeux service's
/// configuration. Every connection counts against `max_connections` (and in the `connections`
/// gauge) until its socket is closed, WebSockets included; a write the client does not take
/// within [`crate::TransportConfig::write_deadline`] drops the connection.
pub async fn serve<S, F>(
    listener: TcpListener,
    bayeux: BayeuxService,
    service: S,
    shutdown: F,
    grace: Duration,
) -> std::io::Result<()>
where
    S: hyper::service::Service<
            hyper::Request<hyper::body::Incoming>,
            Response = hyper::Response<crate::Body>,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    F: Future<Output = ()>,
{
    serve_on(listener, None, bayeux, service, shutdown, grace).await
}

/// As [`serve`], over TLS (cargo feature `tls`): every accepted connection first completes a
/// TLS handshake (within the header read timeout) with `tls`'s current certificate, offering
/// ALPN `h2` and `http/1.1`.
#[cfg(feature = "tls")]
pub async fn serve_tls<S, F>(
    listener: TcpListener,
    tls: crate::TlsConfig,
    bayeux: BayeuxService,
    service: S,
    shutdown: F,
    grace: Duration,
) -> std::io::Result<()>
where
    S: hyper::service::Service<
            hyper::Request<hyper::body::Incoming>,
            Response = hyper::Response<crate::Body>,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    F: Future<Output = ()>,
{
    serve_on(listener, Some(tls), bayeux, service, shutdown, grace).await
}

async fn serve_on<S, F>(
    listener: TcpListener,
    tls: Option<Acceptor>,
    bayeux: BayeuxService,
    service: S,
    shutdown: F,
    grace: Duration,
) -> std::io::Result<()>
where
    S: hyper::service::Service<
            hyper::Request<hyper::body::Incoming>,
            Response = hyper::Response<crate::Body>,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    F: Future<Output = ()>,
{
    let cfg = &bayeux.shared.config;
    let limit = Arc::new(Semaphore::new(cfg.max_connections));
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(cfg.header_read_timeout)
        .keep_alive(true);
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    let first_byte_timeout = cfg.header_read_timeout;
    // Tells connections still waiting for their first byte that serving has stopped.
    let (closing_tx, closing_rx) = watch::channel(false);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, _peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            bayeux
                .metrics()
                .connections_refused
                .fetch_add(1, Ordering::Relaxed);
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        // From here the connection is counted and holds its slot for as long as the socket
        // lives, through a WebSocket upgrade too (see `Conn`).
        let conn = Conn::new(stream, permit, bayeux.shared.clone());
        let watcher = graceful.watcher();
        let builder = builder.clone();
        // Every request of this connection carries its session quota: one socket can hold at
        // most `max_sessions_per_connection` live sessions, whatever it sends.
        let quota = ConnectionQuota::new(cfg.max_sessions_per_connection);
        let service = service.clone();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(quota.clone());
            service.call(req)
        });
        let mut closing = closing_rx.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            // hyper's header read timeout starts only once the HTTP version is known, after the
            // first bytes: a client that connects and sends nothing would keep its slot forever.
            let mut probe = [0u8; 1];
            let readable = tokio::select! {
                r = tokio::time::timeout(first_byte_timeout, conn.stream().peek(&mut probe)) => {
                    matches!(r, Ok(Ok(n)) if n > 0)
                }
                _ = closing.wait_for(|c| *c) => false,
            };
            if readable {
                let Some(io) = Io::accept(conn, tls.as_ref(), first_byte_timeout).await else {
                    return;
                };
                let conn = builder
                    .serve_connection_with_upgrades(TokioIo::new(io), service)
                    .into_owned();
                if let Err(e) = watcher.watch(conn).await {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
            }
        });
    }
    drop(listener);
    let _ = closing_tx.send(true);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(grace) => {
            tracing::warn!("graceful shutdown timed out");
        }
    }
    Ok(())
}
