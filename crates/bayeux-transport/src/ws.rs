//! The WebSocket transport: each text frame is a JSON array of Bayeux messages, both ways.
//! Replies are written at once; deliveries as they are queued (all waiting ones in one frame),
//! except for sessions using the ack extension, whose deliveries travel in connect replies.
//!
//! One frame is written at a time, as one branch of the socket's `select!` with its own deadline
//! ([`TransportConfig::write_deadline`]). While it waits, the hold deadline and shutdown are
//! still serviced and the ping timer keeps running, with the write deadline standing in for the
//! keep-alive check; but no frame is read and no message taken from the session queue (which is
//! bounded), so a client that stops reading costs nothing more. Past the deadline the socket is
//! closed and its held connect released.
//!
//! Frames are read and written with [`crate::wsframe`]: a text frame goes out as its header and
//! the message bytes shared with every other subscriber (one vectored write, no copy), and a
//! socket keeps no read buffer while it waits (it reads into a small inline array, and takes
//! in more only when the client has more to say).
//!
//! permessage-deflate ([`crate::deflate`]) is negotiated in [`accept`] and changes only how a
//! text frame's payload is made ([`text_frame`]) and how the parser takes compressed messages
//! ([`FrameParser::inflating`]): the socket itself keeps no compression state.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker, ready};
use std::time::{Duration, Instant};

use std::sync::Arc;

use bayeux_core::{
    DirectOutcome, DirectWrite, Framed, Hold, RequestContext, Session, Wake, decode_batch,
    join_array,
};
use bytes::{Bytes, BytesMut};
use futures_util::FutureExt;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Sleep;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use crate::deflate;
use crate::http1::header_has_token;
use crate::shared::{Body, Shared, stopped};
use crate::wsframe::{self, FrameError, FrameParser, Incoming};

/// What a socket reads at once while it waits for a client (kept inline: an idle socket has no
/// read buffer on the heap).
const WAIT_READ: usize = 64;
/// How much a socket reads at once when the client has more to say.
const READ_CHUNK: usize = 4096;
/// Most bytes a socket takes in before handling what it has read.
const MAX_READ_AHEAD: usize = 64 * 1024;

/// Whether a request asks for a WebSocket (`Connection: upgrade`, `Upgrade: websocket`).
pub(crate) fn is_upgrade_request<B>(req: &http::Request<B>) -> bool {
    let h = req.headers();
    header_has_token(h, header::CONNECTION, "upgrade")
        && header_has_token(h, header::UPGRADE, "websocket")
}

/// The `101 Switching Protocols` answer to a WebSocket handshake with these headers, and
/// whether it accepted the client's permessage-deflate offer (only when `deflate` is allowed:
/// [`crate::TransportConfig::ws_permessage_deflate`]).
pub(crate) fn accept(
    headers: &HeaderMap,
    deflate: bool,
) -> Result<(Response<Body>, bool), &'static str> {
    let key = headers
        .get("sec-websocket-key")
        .ok_or("missing Sec-WebSocket-Key")?;
    if headers.get("sec-websocket-version").map(|v| v.as_bytes()) != Some(b"13") {
        return Err("Sec-WebSocket-Version must be 13");
    }
    let accept = HeaderValue::from_str(&derive_accept_key(key.as_bytes()))
        .map_err(|_| "invalid Sec-WebSocket-Key")?;
    let mut r = Response::new(Body::default());
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert("sec-websocket-accept", accept);
    let answer = if deflate {
        deflate::negotiate(
            headers
                .get_all(header::SEC_WEBSOCKET_EXTENSIONS)
                .iter()
                .map(|v| v.as_bytes()),
        )
    } else {
        None
    };
    if let Some(a) = answer {
        h.insert(
            header::SEC_WEBSOCKET_EXTENSIONS,
            HeaderValue::from_static(a),
        );
    }
    Ok((r, answer.is_some()))
}

/// The text frame of the messages in `out`: compressed (RSV1 set) on a socket that negotiated
/// permessage-deflate, unless too small or incompressible. A single message is compressed once
/// for all the sockets it goes to (the compressed bytes are kept with it).
fn text_frame(out: &[Framed], deflate: bool) -> OutFrame {
    let compressed = match out {
        _ if !deflate => None,
        [one] => one.compressed_with(deflate::compress),
        _ => deflate::compress(&join_array(out)),
    };
    match compressed {
        Some(z) => {
            let mut f = OutFrame::new(wsframe::TEXT, z);
            f.head[0] |= wsframe::RSV1;
            f
        }
        None => OutFrame::new(wsframe::TEXT, join_array(out)),
    }
}

enum Event {
    Messages,
    HoldWake,
    SessionClosed,
}

/// A frame being written: its header, the shared payload, and how much is out.
struct OutFrame {
    head: [u8; 10],
    head_len: u8,
    payload: Bytes,
    pos: usize,
}

impl OutFrame {
    fn new(opcode: u8, payload: Bytes) -> OutFrame {
        let (head, n) = wsframe::header(opcode, payload.len());
        OutFrame {
            head,
            head_len: n as u8,
            payload,
            pos: 0,
        }
    }

    fn close(code: u16, reason: &str) -> OutFrame {
        OutFrame::new(wsframe::CLOSE, wsframe::close_payload(code, reason))
    }

    /// What is left to write while the header is not wholly out: the rest of the header and
    /// the whole payload, for one vectored write.
    fn head_and_payload(&self) -> [io::IoSlice<'_>; 2] {
        [
            io::IoSlice::new(&self.head[self.pos..usize::from(self.head_len)]),
            io::IoSlice::new(&self.payload),
        ]
    }
}

/// What the socket is writing.
enum Op {
    Idle,
    /// A frame, header and payload, written with one vectored write when the kernel takes it.
    Write(OutFrame),
    /// Written; flushing (a no-op on TCP, needed by TLS streams).
    Flush,
}

/// The socket's one write in progress and its deadline.
struct Writer<'a> {
    op: Op,
    /// Armed when the write first has to wait, dropped when it completes: a write the kernel
    /// takes at once (nearly all of them) costs no timer and no allocation.
    timer: Option<Pin<Box<Sleep>>>,
    deadline: Duration,
    /// When the oldest message of the frame being written was queued, if known: observed in
    /// `queued_to_written` when the write completes.
    since: Option<Instant>,
    queued_to_written: &'a crate::metrics::Histogram,
}

/// How a write ended.
enum Written {
    /// Done without waiting.
    AtOnce,
    /// Done after waiting for the client to take data: proof that it is alive.
    AfterWaiting,
    /// The socket failed.
    Failed(io::Error),
    /// The client did not take it within the deadline.
    TimedOut,
}

impl Written {
    /// Whether the socket carries on; a write that waited is the client's sign of life.
    fn ok(self, last_activity: &mut Instant) -> bool {
        match self {
            Written::AtOnce => true,
            Written::AfterWaiting => {
                *last_activity = Instant::now();
                true
            }
            Written::Failed(e) => {
                tracing::debug!(error = %e, "websocket write error");
                false
            }
            Written::TimedOut => {
                tracing::debug!("websocket write timed out: closing the socket");
                false
            }
        }
    }
}

/// A WebSocket's socket as its session's publishers see it ([`DirectWrite`]): while the
/// socket's task is idle, a publisher writes a delivery's frame itself, without waiting and
/// without waking the task (which saves a task wake-up, often a thread's, per delivery). A
/// frame the kernel takes only in part is finished by the task, under the write deadline.
pub(crate) struct Direct {
    stream: Arc<TcpStream>,
    shared: Arc<Shared>,
    /// The rest of a frame that was only partly written, for the task to finish first.
    rest: std::sync::Mutex<Option<OutFrame>>,
    has_rest: AtomicBool,
    /// Whether the socket negotiated permessage-deflate (set by its task before any publisher
    /// can see it): frames are then compressed as the task's are ([`text_frame`]).
    deflate: AtomicBool,
    /// The socket's task, woken when a frame is left for it to finish.
    task: std::sync::Mutex<Option<Waker>>,
}

impl Direct {
    pub(crate) fn new(stream: Arc<TcpStream>, shared: Arc<Shared>) -> Arc<Direct> {
        Arc::new(Direct {
            stream,
            shared,
            rest: std::sync::Mutex::new(None),
            has_rest: AtomicBool::new(false),
            deflate: AtomicBool::new(false),
            task: std::sync::Mutex::new(None),
        })
    }

    fn has_rest(&self) -> bool {
        self.has_rest.load(Ordering::Acquire)
    }

    fn take_rest(&self) -> Option<OutFrame> {
        let rest = lock(&self.rest).take();
        self.has_rest.store(false, Ordering::Release);
        rest
    }

    /// The task to wake when a frame is left for it.
    fn register(&self, cx: &Context<'_>) {
        let mut task = lock(&self.task);
        if !task.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            *task = Some(cx.waker().clone());
        }
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl DirectWrite for Direct {
    fn try_write(&self, message: &Framed) -> DirectOutcome {
        let deflate = self.deflate.load(Ordering::Relaxed);
        let mut frame = text_frame(std::slice::from_ref(message), deflate);
        let total = usize::from(frame.head_len) + frame.payload.len();
        match crate::conn::try_send_vectored(&self.stream, &frame.head_and_payload()) {
            Ok(n) if n == total => {
                self.shared.metrics.add_out(1);
                self.shared
                    .metrics
                    .queued_to_written
                    .observe(Duration::ZERO);
                DirectOutcome::Written
            }
            Ok(n) if n > 0 => {
                self.shared.metrics.add_out(1);
                frame.pos = n;
                *lock(&self.rest) = Some(frame);
                self.has_rest.store(true, Ordering::Release);
                if let Some(w) = lock(&self.task).as_ref() {
                    w.wake_by_ref();
                }
                DirectOutcome::Started
            }
            // Full, or failed: the task finds out when it writes the queued message.
            _ => DirectOutcome::NotWritten,
        }
    }
}

impl Writer<'_> {
    fn busy(&self) -> bool {
        !matches!(self.op, Op::Idle)
    }

    fn start(&mut self, frame: OutFrame) {
        self.op = Op::Write(frame);
    }

    fn poll_op<IO>(&mut self, io: &mut IO, cx: &mut Context<'_>) -> Poll<io::Result<()>>
    where
        IO: AsyncWrite + Unpin,
    {
        loop {
            match &mut self.op {
                Op::Idle => return Poll::Ready(Ok(())),
                Op::Write(f) => {
                    let head_len = usize::from(f.head_len);
                    let total = head_len + f.payload.len();
                    while f.pos < total {
                        let n = if f.pos < head_len {
                            ready!(
                                Pin::new(&mut *io).poll_write_vectored(cx, &f.head_and_payload())
                            )?
                        } else {
                            ready!(
                                Pin::new(&mut *io).poll_write(cx, &f.payload[f.pos - head_len..])
                            )?
                        };
                        if n == 0 {
                            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                        }
                        f.pos += n;
                    }
                    self.op = Op::Flush;
                }
                Op::Flush => {
                    ready!(Pin::new(&mut *io).poll_flush(cx))?;
                    self.op = Op::Idle;
                    return Poll::Ready(Ok(()));
                }
            }
        }
    }

    fn poll_write<IO>(&mut self, io: &mut IO, cx: &mut Context<'_>) -> Poll<Written>
    where
        IO: AsyncWrite + Unpin,
    {
        match self.poll_op(io, cx) {
            Poll::Ready(r) => {
                let waited = self.timer.take().is_some();
                if let Some(since) = self.since.take()
                    && r.is_ok()
                {
                    self.queued_to_written.observe(since.elapsed());
                }
                Poll::Ready(match r {
                    Err(e) => Written::Failed(e),
                    Ok(()) if waited => Written::AfterWaiting,
                    Ok(()) => Written::AtOnce,
                })
            }
            Poll::Pending => {
                let deadline = self.deadline;
                let timer = self
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(deadline)));
                ready!(timer.as_mut().poll(cx));
                self.timer = None;
                self.since = None;
                self.op = Op::Idle;
                Poll::Ready(Written::TimedOut)
            }
        }
    }
}

/// What happened on the socket itself.
enum SocketEvent {
    Written(Written),
    Read(io::Result<usize>),
}

struct Gauge<'a>(&'a Shared);
impl Drop for Gauge<'_> {
    fn drop(&mut self) {
        self.0.metrics.websockets.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Runs a WebSocket whose `101` answer has been written on `io` (`read`: what the client sent
/// after its handshake, already read from `io`), until it closes.
///
/// With `direct` (a plain TCP socket), publishers write deliveries to the socket themselves
/// while the task is idle ([`Direct`]).
pub(crate) async fn run_on<IO>(
    shared: &Shared,
    mut io: IO,
    read: Vec<u8>,
    ctx: RequestContext,
    direct: Option<Arc<Direct>>,
) where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    shared.metrics.websockets.fetch_add(1, Ordering::Relaxed);
    let _gauge = Gauge(shared);
    tracing::Span::current().record("transport", "websocket");
    let deflate = ctx.websocket_deflate;
    let mut parser = FrameParser::new(shared.config.max_ws_message_bytes).inflating(deflate);
    if let Some(d) = &direct {
        d.deflate.store(deflate, Ordering::Relaxed);
    }
    let mut rbuf = BytesMut::from(&read[..]);
    drop(read);
    let mut wait = [0u8; WAIT_READ];
    let mut session: Option<std::sync::Arc<Session>> = None;
    let mut hold: Option<Hold> = None;
    let period = shared.config.ws_ping_interval;
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    let mut last_activity = Instant::now();
    let mut shutdown = shared.shutdown.clone();
    // One timer for the held connect's deadline, re-armed only when the hold changes: creating a
    // `sleep_until` on every wake-up costs a timer-wheel insert and remove per delivery.
    let hold_timer = tokio::time::sleep_until(tokio::time::Instant::now());
    tokio::pin!(hold_timer);
    let mut armed: Option<std::time::Instant> = None;
    // What to write next, reused for every write: no allocation per wake-up. It only fills while
    // nothing is being written, except for the one reply of a held connect that ends meanwhile.
    let mut out: Vec<Framed> = Vec::new();
    // When the oldest delivery staged in `out` was queued, if known (one stamp per write).
    let mut staged_since: Option<Instant> = None;
    let mut writer = Writer {
        op: Op::Idle,
        timer: None,
        deadline: shared.config.write_deadline(),
        since: None,
        queued_to_written: &shared.metrics.queued_to_written,
    };
    // A pong owed to the client, and whether a ping is.
    let mut pong: Option<Bytes> = None;
    let mut ping_owed = false;
    // Whether the session was told that this task is idle (publishers may then write to the
    // socket directly): the task takes that back before it writes anything itself.
    let mut idle_told = false;
    let writer_id: Option<Arc<dyn DirectWrite>> = direct.clone().map(|d| d as _);
    // The socket is ending: nothing more is read or taken; what is staged is written, then
    // `farewell` (a close frame), then the loop ends.
    let mut closing = false;
    let mut farewell: Option<OutFrame> = None;
    // Frames already received (with the handshake) are handled first.
    let mut pending_input = !rbuf.is_empty();
    'socket: loop {
        if std::mem::take(&mut idle_told)
            && let (Some(s), Some(w)) = (&session, &writer_id)
        {
            s.writer_busy(w);
        }
        if let Some(d) = &direct
            && d.has_rest()
            && let Some(rest) = d.take_rest()
        {
            // A publisher's frame that the kernel took only in part: it goes out first (the
            // task was idle when it was started, and has written nothing since).
            debug_assert!(!writer.busy());
            writer.start(rest);
        }
        if pending_input && !writer.busy() && !closing {
            pending_input = false;
            // Boxed: the socket's task keeps only a pointer for this step while it is idle
            // (an asynchronous security policy may make the step wait).
            let end = Box::pin(handle_input(
                shared,
                &ctx,
                &mut parser,
                &mut rbuf,
                &mut session,
                &mut hold,
                &mut out,
                &mut pong,
                writer_id.as_ref(),
            ))
            .await;
            if let Some(f) = end {
                farewell = Some(f);
                closing = true;
            }
            if rbuf.is_empty() {
                // Give the read buffer back: an idle socket keeps none.
                rbuf = BytesMut::new();
            }
        }
        while !writer.busy() {
            if closing && farewell.is_none() {
                // The last frame is written: anything staged since would follow the close
                // frame, which the protocol forbids.
                break 'socket;
            }
            if let Some(p) = pong.take() {
                writer.start(OutFrame::new(wsframe::PONG, p));
            } else if std::mem::take(&mut ping_owed) {
                writer.start(OutFrame::new(wsframe::PING, Bytes::new()));
            } else if !out.is_empty() {
                // Everything waiting in one frame, up to the message size this server accepts
                // from clients (a client need not take bigger ones); the rest in the next.
                let n = frame_count(&out, shared.config.max_ws_message_bytes);
                shared.metrics.add_out(n);
                writer.start(text_frame(&out[..n], deflate));
                // The oldest message's wait goes with the first frame of a split.
                writer.since = staged_since.take();
                if n == out.len() {
                    out.clear();
                } else {
                    out.drain(..n);
                }
            } else if let Some(f) = farewell.take() {
                writer.start(f);
            } else {
                break;
            }
            // Nearly always the kernel takes the frame at once: write it now rather than on
            // another turn of the `select!`. If it has to wait, that branch carries it on.
            let written =
                std::future::poll_fn(|cx| Poll::Ready(writer.poll_write(&mut io, cx))).await;
            if let Poll::Ready(w) = written
                && !w.ok(&mut last_activity)
            {
                break 'socket;
            }
        }
        let deadline = hold.as_ref().map(|h| h.deadline());
        if deadline != armed {
            if let Some(d) = deadline {
                hold_timer.as_mut().reset(tokio::time::Instant::from_std(d));
            }
            armed = deadline;
        }
        // While a write waits, the socket takes no new work: no frame is read (its replies would
        // pile up here) and no message is taken from the session queue (bounded, where
        // the overflow policy applies).
        let taking = !writer.busy() && !closing;
        let busy = writer.busy();
        let event = std::future::poll_fn(|cx| {
            if let Some(d) = &direct {
                if d.has_rest() {
                    return Poll::Ready(Event::Messages);
                }
                d.register(cx);
            }
            if let Some(s) = &session
                && !s.connect_only()
            {
                // Polled only while the task is idle (`taking`): with a direct writer, the
                // session may then let publishers write to the socket.
                let polled = if let Some(w) = &writer_id {
                    idle_told = true;
                    s.poll_messages_idle(cx, w)
                } else {
                    s.poll_messages(cx)
                };
                match polled {
                    Poll::Ready(Wake::Messages) => return Poll::Ready(Event::Messages),
                    Poll::Ready(_) if hold.is_none() => return Poll::Ready(Event::SessionClosed),
                    _ => {}
                }
            }
            if let Some(h) = &hold
                && let Poll::Ready(w) = h.poll_wake(cx)
            {
                let _ = w;
                return Poll::Ready(Event::HoldWake);
            }
            Poll::Pending
        });
        // The socket's own progress: the write in progress, or the next bytes from the client.
        let socket = std::future::poll_fn(|cx| {
            if writer.busy() {
                if let Poll::Ready(w) = writer.poll_write(&mut io, cx) {
                    return Poll::Ready(SocketEvent::Written(w));
                }
            } else if taking {
                let mut rb = ReadBuf::new(&mut wait);
                if let Poll::Ready(r) = Pin::new(&mut io).poll_read(cx, &mut rb) {
                    return Poll::Ready(SocketEvent::Read(r.map(|()| rb.filled().len())));
                }
            }
            Poll::Pending
        });
        tokio::select! {
            biased;
            _ = stopped(&mut shutdown), if !closing => {
                if let Some(h) = hold.take() {
                    out.extend(finish_hold(shared, h, &mut staged_since));
                }
                farewell = Some(OutFrame::close(1001, "server shutting down"));
                closing = true;
            }
            ev = socket, if busy || taking => match ev {
                SocketEvent::Written(w) => {
                    if !w.ok(&mut last_activity) {
                        break;
                    }
                }
                SocketEvent::Read(Ok(0)) => break,
                SocketEvent::Read(Err(e)) => {
                    tracing::debug!(error = %e, "websocket read error");
                    break;
                }
                SocketEvent::Read(Ok(n)) => {
                    last_activity = Instant::now();
                    rbuf.extend_from_slice(&wait[..n]);
                    // More may be waiting: take it in without waiting, in larger reads, up to a
                    // bound, so that many frames are handled (and answered) together.
                    let mut full = n == WAIT_READ;
                    while full && rbuf.len() < MAX_READ_AHEAD {
                        rbuf.reserve(READ_CHUNK);
                        match io.read_buf(&mut rbuf).now_or_never() {
                            Some(Ok(m)) if m > 0 => full = rbuf.len() == rbuf.capacity(),
                            _ => break,
                        }
                    }
                    pending_input = true;
                }
            },
            event = event, if taking => match event {
                Event::Messages => {
                    if let Some(s) = &session {
                        staged_since = staged_since.or(s.take_messages_since(&mut out));
                    }
                }
                Event::HoldWake => {
                    if let Some(h) = hold.take() {
                        out.extend(finish_hold(shared, h, &mut staged_since));
                    }
                }
                Event::SessionClosed => session = None,
            },
            // Serviced while a write waits: the connect is answered (its reply queued behind the
            // write), so the session is no longer held and expires normally if the socket dies.
            _ = &mut hold_timer, if deadline.is_some() => {
                if let Some(h) = hold.take() {
                    out.extend(finish_hold(shared, h, &mut staged_since));
                }
            }
            _ = ping.tick() => {
                // While a write waits, its deadline bounds the socket instead: frames are not
                // read then, so the silence would be ours, and a ping would only queue behind
                // the stuck frame.
                if !writer.busy() && !closing {
                    if last_activity.elapsed() > period * 2 {
                        farewell = Some(OutFrame::close(1001, "keep-alive timeout"));
                        closing = true;
                    } else {
                        ping_owed = true;
                    }
                }
            }
        }
    }
    // The socket is gone: its held connect ends now, and the session expires through the
    // sweeper `interval + maxInterval` from now unless the client reconnects (CometD keeps
    // sessions for maxInterval across reconnects).
    if let Some(h) = hold.take() {
        h.abandon(Instant::now());
    }
    if let (Some(s), Some(w)) = (&session, &writer_id) {
        s.clear_direct_writer(w);
    }
    let _ = tokio::time::timeout(writer.deadline, io.shutdown()).await;
}

/// Answers a held connect, recording how long it was held; when the reply carries queued
/// messages (a session with the ack extension, whose deliveries travel in connect replies),
/// the oldest one's queue time joins `staged_since`.
fn finish_hold(shared: &Shared, hold: Hold, staged_since: &mut Option<Instant>) -> Vec<Framed> {
    let session = hold.session().clone();
    let replies = crate::metrics::finish_hold(shared, hold);
    *staged_since = staged_since.or_else(|| session.take_drained_since());
    replies
}

/// How many of the messages at the front of `out` go in one frame of at most `limit` bytes
/// (at least one, whatever its size).
fn frame_count(out: &[Framed], limit: usize) -> usize {
    let mut len = 1; // the array's brackets, less the first comma
    for (i, m) in out.iter().enumerate() {
        len += m.object().len() + 1;
        if len > limit && i > 0 {
            return i;
        }
    }
    out.len()
}

/// Handles every complete frame in `rbuf`: messages go to the engine (their replies to `out`),
/// pings are owed a pong. A close or a framing error ends the socket: the close frame to end
/// with is returned (frames after it are not handled).
#[allow(clippy::too_many_arguments)]
async fn handle_input(
    shared: &Shared,
    ctx: &RequestContext,
    parser: &mut FrameParser,
    rbuf: &mut BytesMut,
    session: &mut Option<std::sync::Arc<Session>>,
    hold: &mut Option<Hold>,
    out: &mut Vec<Framed>,
    pong: &mut Option<Bytes>,
    direct: Option<&Arc<dyn DirectWrite>>,
) -> Option<OutFrame> {
    let engine = &shared.engine;
    let limits = engine.config().limits;
    loop {
        let frame = match parser.next(rbuf) {
            Ok(Some(f)) => f,
            Ok(None) => return None,
            Err(e) => {
                if e == FrameError::TooLarge {
                    shared.metrics.oversize.fetch_add(1, Ordering::Relaxed);
                }
                return Some(OutFrame::close(e.close_code(), e.reason()));
            }
        };
        match frame {
            Incoming::Text(t) => {
                match decode_batch(&t, &limits) {
                    Ok(batch) => {
                        shared.metrics.add_in(batch.len());
                        let publishes = crate::metrics::publishes(&batch);
                        // The asynchronous security policy, if any, runs here without
                        // blocking the runtime.
                        let batch = engine.authorize(ctx, batch).await;
                        let now = Instant::now();
                        let mut outcome = engine.handle_authorized(ctx, batch, now);
                        shared.metrics.published(now, publishes);
                        if let Some(s) = outcome.session.take()
                            && !s.is_closed()
                            && session.as_ref().is_none_or(|old| !Arc::ptr_eq(old, &s))
                        {
                            crate::trace::record_session(&s);
                            tracing::debug!("websocket session");
                            if let Some(d) = direct {
                                if let Some(old) = session.as_ref() {
                                    old.clear_direct_writer(d);
                                }
                                s.set_direct_writer(d.clone());
                            }
                            *session = Some(s);
                        }
                        if let Some(new) = outcome.hold.take() {
                            // The engine has already superseded the previous hold.
                            if let Some(old) = hold.replace(new) {
                                out.extend(crate::metrics::finish_hold(shared, old));
                            }
                        }
                        out.extend(outcome.replies);
                    }
                    Err(e) => out.push(engine.refusal(&e)),
                }
            }
            Incoming::Binary => {
                return Some(OutFrame::close(1003, "text frames only"));
            }
            Incoming::Ping(p) => *pong = Some(p),
            Incoming::Pong => {}
            Incoming::Close(code) => {
                // Answer with the client's code (1000 when it gave none), then end.
                let code = code.filter(|c| (1000..5000).contains(c)).unwrap_or(1000);
                return Some(OutFrame::close(code, ""));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_joins_waiting_messages_up_to_the_limit() {
        let m = |n: usize| Framed::from_object(&vec![b'1'; n]);
        // `[` + 10 + `,` + 10 + `]` = 23 bytes.
        let two = [m(10), m(10)];
        assert_eq!(frame_count(&two, 23), 2);
        assert_eq!(frame_count(&two, 22), 1);
        assert_eq!(join_array(&two[..2]).len(), 23);
        // One message goes alone whatever its size.
        assert_eq!(frame_count(&[m(100), m(1)], 10), 1);
        assert_eq!(frame_count(&[m(1)], 0), 1);
        assert_eq!(frame_count(&[m(3), m(3), m(3), m(100)], 13), 3);
        assert_eq!(frame_count(&[m(3), m(3), m(3), m(100)], 12), 2);
    }
}
