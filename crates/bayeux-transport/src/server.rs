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
use crate::h1::{self, Prefixed};
use crate::service::BayeuxService;
use crate::tls::{Acceptor, Io};
use crate::ws;
use bayeux_core::ConnectionQuota;
use hyper::body::Incoming;

/// A host's hyper service, as [`serve`] takes it: what it answers for everything that is not
/// served by the Bayeux service itself.
pub trait HostService:
    hyper::service::Service<
        hyper::Request<Incoming>,
        Response = hyper::Response<crate::Body>,
        Error = std::convert::Infallible,
        Future: Send + 'static,
    > + Clone
    + Send
    + Sync
    + 'static
{
}

impl<S> HostService for S where
    S: hyper::service::Service<
            hyper::Request<Incoming>,
            Response = hyper::Response<crate::Body>,
            Error = std::convert::Infallible,
            Future: Send + 'static,
        > + Clone
        + Send
        + Sync
        + 'static
{
}

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
///
/// HTTP/1.1 requests to the Bayeux service's mount points (long-polling, callback-polling,
/// their preflights and WebSocket upgrades) are parsed by this crate's own lean connection loop
/// and go to the Bayeux service directly, not through `service`: a held long poll then keeps no
/// HTTP buffer. The first request of a connection that is anything else (another path, another
/// upgrade, or HTTP/2) hands the connection to hyper and `service` for the rest of its life.
pub async fn serve<S, F>(
    listener: TcpListener,
    bayeux: BayeuxService,
    service: S,
    shutdown: F,
    grace: Duration,
) -> std::io::Result<()>
where
    S: HostService,
    F: Future<Output = ()>,
{
    serve_on(listener, None, bayeux, service, shutdown, grace).await
}

/// As [`serve`], over TLS (cargo feature `tls`): every accepted connection first completes a
/// TLS handshake (within the header read timeout) with `tls`'s current certificate, offering
/// ALPN `h2` and `http/1.1`. TLS connections are served by hyper and `service` throughout (the
/// lean HTTP/1.1 loop reads cleartext sockets only); browsers speak HTTP/2 there.
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
    S: HostService,
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
    S: HostService,
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
    let handshake_timeout = cfg.header_read_timeout;
    // Every connection task holds a clone: serving is over when all are dropped.
    let (tracker, mut all_closed) = tokio::sync::mpsc::channel::<()>(1);
    // Tells connections still waiting for their first byte that serving has stopped.
    let (closing_tx, closing_rx) = watch::channel(false);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
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
        let hyper_quota = quota.clone();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(hyper_quota.clone());
            service.call(req)
        });
        let closing = closing_rx.clone();
        let tracker = tracker.clone();
        let bayeux = bayeux.clone();
        let tls = tls.clone();
        // In the connection's `tracing` span, which its WebSocket's task keeps too.
        crate::trace::spawn_in(crate::trace::connection(peer), async move {
            let mut conn = conn;
            // TLS (feature `tls`): the handshake, then hyper for the whole connection (ALPN
            // picks HTTP/2 or HTTP/1.1); the lean loop below reads cleartext sockets only.
            // Boxed, like every step here: the task of a cleartext connection does not carry
            // the handshake's state.
            if tls.is_some() {
                Box::pin(async move {
                    let mut closing = closing;
                    let accepted = tokio::select! {
                        io = Io::accept(conn, tls.as_ref(), handshake_timeout) => io,
                        _ = closing.wait_for(|c| *c) => None,
                    };
                    if let Some(io) = accepted {
                        serve_hyper(&builder, io, service, watcher).await;
                    }
                    drop(tracker);
                })
                .await;
                return;
            }
            // Requests to the Bayeux mount points are served by the lean HTTP/1.1 loop, which
            // also switches them to WebSocket; the first one that is not (another path, another
            // upgrade, HTTP/2) hands the connection to hyper with the bytes already read.
            let params = h1::Params {
                bayeux: &bayeux,
                quota: &quota,
                closing,
                watch_eof: true,
            };
            // Each boxed: a connection's task keeps only the loop it is in.
            match Box::pin(h1::run(&mut conn, params)).await {
                h1::Outcome::Closed => {}
                h1::Outcome::WebSocket(ctx, read) => {
                    // A task of its own, which keeps only the socket: this one, with what it
                    // needed for HTTP, ends here.
                    let shared = bayeux.shared.clone();
                    // Shared with the session's publishers, who write deliveries to it
                    // themselves while the socket's task is idle.
                    let (conn, stream) = conn.into_shared();
                    let direct = ws::Direct::new(stream, shared.clone());
                    crate::trace::spawn_in(tracing::Span::current(), async move {
                        ws::run_on(&shared, conn, read, ctx, Some(direct)).await;
                        drop(tracker);
                    });
                    return;
                }
                h1::Outcome::HandOff(prefix) => {
                    serve_hyper(&builder, Prefixed::new(prefix, conn), service, watcher).await;
                }
            }
            drop(tracker);
        });
    }
    drop(listener);
    let _ = closing_tx.send(true);
    drop(tracker);
    tokio::select! {
        _ = async {
            graceful.shutdown().await;
            let _ = all_closed.recv().await;
        } => {}
        _ = tokio::time::sleep(grace) => {
            tracing::warn!("graceful shutdown timed out");
        }
    }
    Ok(())
}

/// Serves a connection with hyper (HTTP/1.1 or HTTP/2, upgrades included) until it ends or
/// graceful shutdown closes it. Boxed: the connection's task keeps only a pointer for it.
async fn serve_hyper<IO, S>(
    builder: &Builder<TokioExecutor>,
    io: IO,
    service: S,
    watcher: hyper_util::server::graceful::Watcher,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<hyper::Request<Incoming>, Response = hyper::Response<crate::Body>>
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let conn = builder
        .serve_connection_with_upgrades(TokioIo::new(io), service)
        .into_owned();
    if let Err(e) = Box::pin(watcher.watch(conn)).await {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}
