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

/// An accepted TCP connection, counted until it is dropped. `S` is the socket: the stream
/// itself, or [`SharedTcp`] once a WebSocket shares it with its direct writer.
pub(crate) struct Conn<S = TcpStream> {
    stream: S,
    write_deadline: Duration,
    /// Armed when a write first stays pending, dropped as soon as one completes: writes
    /// the kernel takes at once (nearly all of them) cost no timer and no allocation.
    timer: Option<Pin<Box<Sleep>>>,
    _counted: Counted,
}

/// The connection's slot of `max_connections` and its place in the `connections` gauge.
struct Counted {
    shared: Arc<Shared>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.shared
            .metrics
            .connections
            .fetch_sub(1, Ordering::Relaxed);
    }
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
            _counted: Counted {
                shared,
                _permit: permit,
            },
        }
    }

    /// The same connection with its socket shared: the returned stream is for writes that
    /// never wait (a WebSocket's direct writer), the connection keeps reading and writing as
    /// before.
    pub(crate) fn into_shared(self) -> (Conn<SharedTcp>, Arc<TcpStream>) {
        let stream = Arc::new(self.stream);
        let conn = Conn {
            stream: SharedTcp(stream.clone()),
            write_deadline: self.write_deadline,
            timer: self.timer,
            _counted: self._counted,
        };
        (conn, stream)
    }
}

impl<S> Conn<S> {
    /// Passes a completed write through and disarms the timer; fails a write that has been
    /// pending for longer than the deadline with `TimedOut`, which makes hyper (or the
    /// WebSocket task) drop the connection.
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

/// The most [`SharedTcp`] reads at once.
const READ_CHUNK: usize = 4096;

/// A TCP stream shared with a writer on other threads (all of `TcpStream`'s non-waiting
/// operations take `&self`); reads, writes and shutdown as the stream's own.
pub(crate) struct SharedTcp(Arc<TcpStream>);

impl AsyncRead for SharedTcp {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            ready!(self.0.poll_read_ready(cx))?;
            // Safe code must initialize what it reads into: at most one chunk per read, so
            // that a large spare capacity is not zeroed on every call.
            let n = buf.remaining().min(READ_CHUNK);
            let unfilled = buf.initialize_unfilled_to(n);
            match self.0.try_read(unfilled) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for SharedTcp {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.0.poll_write_ready(cx))?;
            match self.0.try_write(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                r => return Poll::Ready(r),
            }
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.0.poll_write_ready(cx))?;
            match self.0.try_write_vectored(bufs) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                r => return Poll::Ready(r),
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(socket2::SockRef::from(&*self.0).shutdown(std::net::Shutdown::Write))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Conn<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Conn<S> {
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
