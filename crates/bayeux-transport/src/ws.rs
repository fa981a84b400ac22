//! The WebSocket transport: each text frame is a JSON array of Bayeux messages, both ways.
//! Replies are written at once; deliveries as they are queued (all waiting ones in one frame),
//! except for sessions using the ack extension, whose deliveries travel in connect replies.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::Poll;
use std::time::Instant;

use bayeux_core::{Hold, RequestContext, Session, Wake, decode_batch, join_array};
use bytes::Bytes;
use futures_util::{FutureExt, SinkExt, StreamExt};
use hyper_tungstenite::HyperWebsocket;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::frame::{CloseFrame, Utf8Bytes};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::config::TransportConfig;
use crate::service::{Shared, error_body, stopped};

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
    // Reused for every write: no allocation per wake-up.
    let mut out: Vec<Bytes> = Vec::new();
    loop {
        let deadline = hold.as_ref().map(|h| h.deadline());
        if deadline != armed {
            if let Some(d) = deadline {
                hold_timer.as_mut().reset(tokio::time::Instant::from_std(d));
            }
            armed = deadline;
        }
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
        out.clear();
        tokio::select! {
            biased;
            _ = stopped(&mut shutdown) => {
                if let Some(h) = hold.take() {
                    out.extend(engine.finish_hold(h, Instant::now()));
                    let _ = sink.feed(text(join_array(&out))).await;
                }
                let _ = sink.send(close(CloseCode::Away, "server shutting down")).await;
                break;
            }
            frame = async {
                match carried.take() {
                    Some(f) => f,
                    None => stream.next().await,
                }
            } => {
                last_activity = Instant::now();
                match frame {
                    None => break,
                    Some(Err(WsError::Capacity(_))) => {
                        shared.metrics.oversize.fetch_add(1, Ordering::Relaxed);
                        let _ = sink.send(close(CloseCode::Size, "message too large")).await;
                        break;
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
                                    let mut outcome = engine.handle_batch(&ctx, batch, Instant::now());
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
                                Err(e) => out.push(error_body(&e, engine.config().timeout_ms)),
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
                        let _ = sink.send(close(CloseCode::Unsupported, "text frames only")).await;
                        break;
                    }
                    Some(Ok(Message::Close(_))) => {
                        let _ = sink.close().await;
                        break;
                    }
                    Some(Ok(_)) => {}
                }
            }
            event = event => match event {
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
            _ = &mut hold_timer, if deadline.is_some() => {
                if let Some(h) = hold.take() {
                    out.extend(engine.finish_hold(h, Instant::now()));
                }
            }
            _ = ping.tick() => {
                if last_activity.elapsed() > period * 2 {
                    let _ = sink.send(close(CloseCode::Away, "keep-alive timeout")).await;
                    break;
                }
                if sink.send(Message::Ping(Bytes::new())).await.is_err() {
                    break;
                }
            }
        }
        if !out.is_empty() {
            shared.metrics.add_out(out.len());
            if sink.send(text(join_array(&out))).await.is_err() {
                break;
            }
        }
    }
    // Dropping `hold` releases it; the session itself expires through the sweeper unless the
    // client reconnects (CometD keeps sessions for maxInterval across reconnects).
}
