//! The socket `serve` hands to hyper: it owns the connection's slot of `max_connections` and
//! its place in the `connections` gauge, and it bounds every write by the write deadline.
//!
//! hyper moves the socket into its `Upgraded` object when a WebSocket upgrade completes, so
//! the slot and the gauge follow the WebSocket until it is dropped, by construction: the end
//! of hyper's connection future is not the end of the socket.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Sleep;

use crate::shared::Shared;

/// An accepted TCP connection, counted until it is dropped.
pub(crate) struct Conn {
    stream: TcpStream,
    write_deadline: Duration,
    /// Armed when a write first stays pending, dropped as soon as one completes: writes
    /// the kernel takes at once (nearly all of them) cost no timer and no allocation.
    timer: Option<Pin<Box<Sleep>>>,
    shared: Arc<Shared>,
    _permit: OwnedSemaphorePermit,
}

impl Conn {
    /// Counts `stream` in the `connections` gauge until the returned value is dropped.
    pub(crate) fn new(
        stream: TcpStream,
        permit: OwnedSemaphorePermit,
        shared: Arc<Shared>,
    ) -> Self {
        shared.metrics.connections.fetch_add(1, Ordering::Relaxed);
        Conn {
            stream,
            write_deadline: shared.config.write_deadline(),
            timer: None,
            shared,
            _permit: permit,
        }
    }

    /// Passes a completed write through and disarms the timer; fails a write that has been
    /// pending for longer than the deadline with `TimedOut`, which makes hyper (or tungstenite,
    /// after an upgrade) drop the connection.
    fn bound<T>(&mut self, r: Poll<io::Result<T>>, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        match r {
            Poll::Ready(r) => {
                self.timer = None;
                Poll::Ready(r)
            }
            Poll::Pending => {
                let deadline = self.write_deadline;
                let timer = self
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(deadline)));
                ready!(timer.as_mut().poll(cx));
                self.timer = None;
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the client did not take a write within the write deadline",
                )))
            }
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.shared
            .metrics
            .connections
            .fetch_sub(1, Ordering::Relaxed);
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let r = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.bound(r, cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let r = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        this.bound(r, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    // A TCP stream's flush is a no-op that is always ready: it cannot wait, and it must not
    // disarm the timer of a write that is still pending.
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
