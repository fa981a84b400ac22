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

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bayeux_core::{Framed, Hold, RequestContext, Session, Wake, decode_batch, join_array};
use bytes::Bytes;
use futures_util::{FutureExt, Sink, SinkExt, StreamExt};
use hyper_tungstenite::HyperWebsocket;
use tokio::time::Sleep;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::frame::{CloseFrame, Utf8Bytes};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::config::TransportConfig;
use crate::shared::{Shared, stopped};

pub(crate) fn socket_config(cfg: &TransportConfig) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(cfg.ws_read_buffer_bytes)
        .write_buffer_size(0)
        .max_write_buffer_size(cfg.max_ws_message_bytes.saturating_mul(4).max(1 << 20))
        .max_message_size(Some(cfg.max_ws_message_bytes))
        .max_frame_size(Some(cfg.max_ws_message_bytes))
}

enum Event {
    Messages,
    HoldWake,
    SessionClosed,
}

fn text(bytes: Bytes) -> Message {
    // Our own JSON output is always UTF-8; fall back to an empty array if it ever were not.
    Message::Text(Utf8Bytes::try_from(bytes).unwrap_or_else(|_| Utf8Bytes::from_static("[]")))
}

fn close(code: CloseCode, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    }))
}

/// What the socket is writing.
enum Op {
    Idle,
    /// A frame not yet accepted by the sink.
    Send(Message),
    /// A frame accepted, not yet flushed to the socket.
    Flush,
    /// The closing handshake after the client's close frame.
    Close,
}

/// The socket's one write in progress and its deadline.
struct Writer {
    op: Op,
    /// Armed when the write first has to wait, dropped when it completes: a write the kernel
    /// takes at once (nearly all of them) costs no timer and no allocation.
    timer: Option<Pin<Box<Sleep>>>,
    deadline: Duration,
}

/// How a write ended.
enum Written {
    /// Done without waiting.
    AtOnce,
    /// Done after waiting for the client to take data: proof that it is alive.
    AfterWaiting,
    /// The sink failed.
    Failed(WsError),
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

impl Writer {
    fn busy(&self) -> bool {
        !matches!(self.op, Op::Idle)
    }

    fn poll_op<S>(&mut self, sink: &mut S, cx: &mut Context<'_>) -> Poll<Result<(), WsError>>
    where
        S: Sink<Message, Error = WsError> + Unpin,
    {
        loop {
            match std::mem::replace(&mut self.op, Op::Idle) {
                Op::Idle => return Poll::Ready(Ok(())),
                Op::Send(m) => match sink.poll_ready_unpin(cx) {
                    Poll::Ready(Ok(())) => {
                        sink.start_send_unpin(m)?;
                        self.op = Op::Flush;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {
                        self.op = Op::Send(m);
                        return Poll::Pending;
                    }
                },
                Op::Flush => {
                    if sink.poll_flush_unpin(cx)?.is_pending() {
                        self.op = Op::Flush;
                        return Poll::Pending;
                    }
                    return Poll::Ready(Ok(()));
                }
                Op::Close => {
                    if sink.poll_close_unpin(cx)?.is_pending() {
                        self.op = Op::Close;
                        return Poll::Pending;
                    }
                    return Poll::Ready(Ok(()));
                }
            }
        }
    }

    fn poll_write<S>(&mut self, sink: &mut S, cx: &mut Context<'_>) -> Poll<Written>
    where
        S: Sink<Message, Error = WsError> + Unpin,
    {
        match self.poll_op(sink, cx) {
            Poll::Ready(r) => {
                let waited = self.timer.take().is_some();
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
                self.op = Op::Idle;
                Poll::Ready(Written::TimedOut)
            }
        }
    }
}

struct Gauge<'a>(&'a Shared);
impl Drop for Gauge<'_> {
    fn drop(&mut self) {
        self.0.metrics.websockets.fetch_sub(1, Ordering::Relaxed);
    }
}

pub(crate) async fn run(shared: Arc<Shared>, socket: HyperWebsocket, ctx: RequestContext) {
    let ws = match socket.await {
        Ok(ws) => ws,
        Err(e) => {
            tracing::debug!(error = %e, "websocket upgrade failed");
            return;
        }
    };
    shared.metrics.websockets.fetch_add(1, Ordering::Relaxed);
    let _gauge = Gauge(&shared);
    let engine = &shared.engine;
    let limits = engine.config().limits;
    let (mut sink, mut stream) = ws.split();
    let mut session: Option<Arc<Session>> = None;
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
    // A frame read while draining ready frames that was not a text frame.
    let mut carried: Option<Option<Result<Message, WsError>>> = None;
    // What to write next, reused for every write: no allocation per wake-up. It only fills while
    // nothing is being written, except for the one reply of a held connect that ends meanwhile.
    let mut out: Vec<Framed> = Vec::new();
    let mut writer = Writer {
        op: Op::Idle,
        timer: None,
        deadline: shared.config.write_deadline(),
    };
    // The socket is ending: nothing more is read or taken; what is staged is written, then
    // `farewell` (a close frame), then the loop ends.
    let mut closing = false;
    let mut farewell: Option<Message> = None;
    'socket: loop {
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
        let event = std::future::poll_fn(|cx| {
            if let Some(s) = &session
                && !s.connect_only()
            {
                match s.poll_messages(cx) {
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
        tokio::select! {
            biased;
            _ = stopped(&mut shutdown), if !closing => {
                if let Some(h) = hold.take() {
                    out.extend(engine.finish_hold(h, Instant::now()));
                }
                farewell = Some(close(CloseCode::Away, "server shutting down"));
                closing = true;
            }
            written = std::future::poll_fn(|cx| writer.poll_write(&mut sink, cx)), if writer.busy() => {
                if !written.ok(&mut last_activity) {
                    break;
                }
            }
            frame = async {
                match carried.take() {
                    Some(f) => f,
                    None => stream.next().await,
                }
            }, if taking => {
                last_activity = Instant::now();
                match frame {
                    None => break,
                    Some(Err(WsError::Capacity(_))) => {
                        shared.metrics.oversize.fetch_add(1, Ordering::Relaxed);
                        farewell = Some(close(CloseCode::Size, "message too large"));
                        closing = true;
                    }
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "websocket read error");
                        break;
                    }
                    Some(Ok(Message::Text(t))) => {
                        let mut t = t;
                        // Frames already received are handled before anything is written, so
                        // a client with many publishes in flight gets one frame of replies
                        // (one write) instead of one write per publish.
                        let mut budget = 64;
                        loop {
                            match decode_batch(t.as_bytes(), &limits) {
                                Ok(batch) => {
                                    shared.metrics.add_in(batch.len());
                                    let batch = engine.authorize(&ctx, batch).await;
                                    let mut outcome = engine.handle_authorized(&ctx, batch, Instant::now());
                                    if let Some(s) = outcome.session.take() && !s.is_closed() {
                                        session = Some(s);
                                    }
                                    if let Some(new) = outcome.hold.take() {
                                        // The engine has already superseded the previous hold.
                                        if let Some(old) = hold.replace(new) {
                                            out.extend(engine.finish_hold(old, Instant::now()));
                                        }
                                    }
                                    out.extend(outcome.replies);
                                }
                                Err(e) => out.push(engine.refusal(&e)),
                            }
                            // Check the budget before reading on: a frame read here must be
                            // handled, never dropped.
                            budget -= 1;
                            if budget == 0 {
                                break;
                            }
                            match stream.next().now_or_never() {
                                Some(Some(Ok(Message::Text(next)))) => t = next,
                                // Anything else already received (control frames, errors, the
                                // end) is handled on the next turn of the loop.
                                Some(other) => {
                                    carried = Some(other);
                                    break;
                                }
                                None => break,
                            }
                        }
                    }
                    Some(Ok(Message::Binary(_))) => {
                        farewell = Some(close(CloseCode::Unsupported, "text frames only"));
                        closing = true;
                    }
                    Some(Ok(Message::Close(_))) => {
                        // tungstenite has queued the answering close frame: flush it and end.
                        writer.op = Op::Close;
                        closing = true;
                    }
                    Some(Ok(_)) => {}
                }
            }
            event = event, if taking => match event {
                Event::Messages => {
                    if let Some(s) = &session {
                        s.take_messages_into(&mut out);
                    }
                }
                Event::HoldWake => {
                    if let Some(h) = hold.take() {
                        out.extend(engine.finish_hold(h, Instant::now()));
                    }
                }
                Event::SessionClosed => session = None,
            },
            // Serviced while a write waits: the connect is answered (its reply queued behind the
            // write), so the session is no longer held and expires normally if the socket dies.
            _ = &mut hold_timer, if deadline.is_some() => {
                if let Some(h) = hold.take() {
                    out.extend(engine.finish_hold(h, Instant::now()));
                }
            }
            _ = ping.tick() => {
                // While a write waits, its deadline bounds the socket instead: frames are not
                // read then, so the silence would be ours, and a ping would only queue behind
                // the stuck frame.
                if !writer.busy() && !closing {
                    if last_activity.elapsed() > period * 2 {
                        farewell = Some(close(CloseCode::Away, "keep-alive timeout"));
                        closing = true;
                    } else {
                        writer.op = Op::Send(Message::Ping(Bytes::new()));
                    }
                }
            }
        }
        while !writer.busy() {
            if closing && farewell.is_none() {
                // The last frame is written (or the closing handshake done): anything staged
                // since would follow the close frame, which the protocol forbids.
                break 'socket;
            }
            if !out.is_empty() {
                shared.metrics.add_out(out.len());
                writer.op = Op::Send(text(join_array(&out)));
                out.clear();
            } else if let Some(f) = farewell.take() {
                writer.op = Op::Send(f);
            } else {
                break;
            }
            // Nearly always the kernel takes the frame at once: write it now rather than on
            // another turn of the `select!`. If it has to wait, that branch carries it on.
            let written =
                std::future::poll_fn(|cx| Poll::Ready(writer.poll_write(&mut sink, cx))).await;
            if let Poll::Ready(w) = written
                && !w.ok(&mut last_activity)
            {
                break 'socket;
            }
        }
    }
    // The socket is gone: its held connect ends now, and the session expires through the
    // sweeper `interval + maxInterval` from now unless the client reconnects (CometD keeps
    // sessions for maxInterval across reconnects).
    if let Some(h) = hold.take() {
        h.abandon(Instant::now());
    }
}
