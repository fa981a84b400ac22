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

/// Writes up to this size are joined on the stack and sent with one `send(2)`.
#[cfg(target_os = "linux")]
const SMALL_SEND: usize = 1024;

/// Writes `bufs` to `stream` without waiting, as `TcpStream::try_write_vectored`. On Linux, one
/// slice is sent as it is, and a small write of several slices (a WebSocket frame's head and
/// payload) is joined in a stack buffer, each with one `send(2)`: the kernel takes one plain
/// buffer through the socket layer directly, with less work than a `writev(2)`, and a
/// notification server makes one such write per delivery (`sendfloor`-style measurement: 2.7 vs 2.9 µs per 69-byte write).
pub(crate) fn try_send_vectored(stream: &TcpStream, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
    #[cfg(target_os = "linux")]
    {
        let send = |buf: &[u8]| {
            stream.try_io(tokio::io::Interest::WRITABLE, || {
                socket2::SockRef::from(stream).send_with_flags(buf, libc::MSG_NOSIGNAL)
            })
        };
        if let [one] = bufs {
            return send(one);
        }
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if total <= SMALL_SEND {
            let mut joined = [0u8; SMALL_SEND];
            let mut n = 0;
            for b in bufs {
                joined[n..n + b.len()].copy_from_slice(b);
                n += b.len();
            }
            return send(&joined[..n]);
        }
    }
    stream.try_write_vectored(bufs)
}

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
            match try_send_vectored(&self.0, &[io::IoSlice::new(buf)]) {
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
            match try_send_vectored(&self.0, bufs) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// Writes of one slice, small writes of several (joined) and large ones (vectored) reach the
    /// peer whole and in order, up to the point where the socket is full; nothing after a
    /// refused or partial write is sent.
    #[tokio::test]
    async fn sends_are_whole_and_in_order_until_the_socket_is_full() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let (mut client, server) = (client.unwrap(), accepted.unwrap().0);
        let mut sent = Vec::new();
        let mut i = 0u32;
        // The peer does not read: the kernel's buffers fill up within a few MB.
        loop {
            let head = format!("<{i}:");
            let body = if i % 7 == 3 {
                vec![b'L'; 3000] // over SMALL_SEND: the vectored path
            } else {
                format!("{i}-").repeat(1 + (i as usize % 40)).into_bytes()
            };
            tokio::time::timeout(Duration::from_secs(5), server.writable())
                .await
                .expect("writable")
                .unwrap();
            let bufs = [io::IoSlice::new(head.as_bytes()), io::IoSlice::new(&body)];
            // Every fifth write gives one slice (sent as it is), the others two.
            let all = [head.as_bytes(), &body].concat();
            let one = [io::IoSlice::new(&all)];
            let bufs: &[io::IoSlice<'_>] = if i % 5 == 2 { &one } else { &bufs };
            match try_send_vectored(&server, bufs) {
                Ok(n) => {
                    sent.extend_from_slice(&all[..n]);
                    if n < all.len() {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // Nothing was written; the socket is full if the kernel says so twice.
                    if tokio::time::timeout(Duration::from_millis(200), server.writable())
                        .await
                        .is_err()
                    {
                        break;
                    }
                    continue;
                }
                Err(e) => panic!("{e}"),
            }
            i += 1;
            assert!(i < 1_000_000, "the socket never filled up");
        }
        drop(server);
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut got))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.len(), sent.len());
        assert!(got == sent, "the bytes differ");
        assert!(i > 100, "{i} writes only");
    }
}
