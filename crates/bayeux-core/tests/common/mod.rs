//! A transcript harness for the engine: JSON batches in, parsed replies out, over a fake clock.
//!
//! Time only moves when a test calls [`Transcript::advance`]; held connects are kept by the
//! harness until the test finishes or polls them.

#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bayeux_core::{
    Engine, EngineConfig, Error, Hold, Listener, RemoveReason, RequestContext, Session,
    TransportKind, Wake, decode_batch,
};
use serde_json::{Value, json};

/// An engine, a fake clock and the connects it currently holds.
pub struct Transcript {
    /// The engine under test.
    pub engine: Engine,
    /// The fake clock's origin.
    pub base: Instant,
    /// Time elapsed on the fake clock.
    pub elapsed: Duration,
    /// Held connects, oldest first.
    pub holds: Vec<Hold>,
    next_id: u64,
}

impl Transcript {
    /// A fresh engine at time zero.
    pub fn new(config: EngineConfig) -> Transcript {
        Transcript {
            engine: Engine::new(config),
            base: Instant::now(),
            elapsed: Duration::ZERO,
            holds: Vec::new(),
            next_id: 0,
        }
    }

    /// The fake clock's current time.
    pub fn now(&self) -> Instant {
        self.base + self.elapsed
    }

    /// Moves the fake clock forward.
    pub fn advance(&mut self, ms: u64) {
        self.elapsed += Duration::from_millis(ms);
    }

    /// A fresh message id ("1", "2", ...).
    pub fn id(&mut self) -> String {
        self.next_id += 1;
        self.next_id.to_string()
    }

    /// Encodes `batch`, decodes it with the engine's limits, handles it at `now()` and returns
    /// the replies. A held connect is kept (see [`Transcript::finish_hold`]).
    pub fn send(&mut self, ctx: &RequestContext, batch: Value) -> Vec<Value> {
        let bytes = serde_json::to_vec(&batch).expect("serializable");
        self.send_bytes(ctx, &bytes)
            .unwrap_or_else(|e| panic!("decode failed for {batch}: {e}"))
    }

    /// Like [`Transcript::send`], from raw bytes; decode errors are returned.
    pub fn send_bytes(&mut self, ctx: &RequestContext, bytes: &[u8]) -> Result<Vec<Value>, Error> {
        let messages = decode_batch(bytes, &self.engine.config().limits)?;
        let out = self.engine.handle_batch(ctx, messages, self.now());
        if let Some(h) = out.hold {
            self.holds.push(h);
        }
        Ok(parse_all(&out.replies))
    }

    /// Handshakes with `supportedConnectionTypes` listing the context's transport and returns
    /// the clientId.
    pub fn handshake(&mut self, ctx: &RequestContext) -> String {
        let id = self.id();
        let r = self.send(
            ctx,
            json!([{"channel": "/meta/handshake", "version": "1.0", "id": id,
                    "supportedConnectionTypes": [ctx.transport.name()]}]),
        );
        assert_eq!(r.len(), 1, "{r:?}");
        assert_eq!(r[0]["successful"], true, "{r:?}");
        r[0]["clientId"].as_str().expect("clientId").to_owned()
    }

    /// Sends a `/meta/connect` for `client_id` (with `extra` fields merged in).
    pub fn connect_with(
        &mut self,
        ctx: &RequestContext,
        client_id: &str,
        extra: Value,
    ) -> Vec<Value> {
        let id = self.id();
        let mut msg = json!({"channel": "/meta/connect", "clientId": client_id, "id": id,
                             "connectionType": ctx.transport.name()});
        if let (Some(m), Value::Object(extra)) = (msg.as_object_mut(), extra) {
            m.extend(extra);
        }
        self.send(ctx, json!([msg]))
    }

    /// Sends a plain `/meta/connect`.
    pub fn connect(&mut self, ctx: &RequestContext, client_id: &str) -> Vec<Value> {
        self.connect_with(ctx, client_id, json!({}))
    }

    /// Handshake plus the first (immediate) connect: a session ready to be held.
    pub fn session(&mut self, ctx: &RequestContext) -> String {
        let cid = self.handshake(ctx);
        let r = self.connect(ctx, &cid);
        assert_eq!(r.len(), 1, "first connect returns at once: {r:?}");
        assert_eq!(r[0]["successful"], true);
        cid
    }

    /// Subscribes `client_id` to `subscription` (a string or array) and checks success.
    pub fn subscribe(&mut self, ctx: &RequestContext, client_id: &str, subscription: Value) {
        let id = self.id();
        let r = self.send(
            ctx,
            json!([{"channel": "/meta/subscribe", "clientId": client_id, "id": id,
                    "subscription": subscription}]),
        );
        assert_eq!(r.len(), 1);
        assert_eq!(r[0]["successful"], true, "{r:?}");
    }

    /// Publishes `data` on `channel` as `client_id` and returns the replies.
    pub fn publish(
        &mut self,
        ctx: &RequestContext,
        client_id: &str,
        channel: &str,
        data: Value,
    ) -> Vec<Value> {
        let id = self.id();
        self.send(
            ctx,
            json!([{"channel": channel, "clientId": client_id, "id": id, "data": data}]),
        )
    }

    /// Number of held connects the harness keeps.
    pub fn held(&self) -> usize {
        self.holds.len()
    }

    /// Polls held connect `i` with a no-op waker.
    pub fn poll_hold(&self, i: usize) -> Poll<Wake> {
        let mut cx = Context::from_waker(Waker::noop());
        self.holds[i].poll_wake(&mut cx)
    }

    /// Polls the most recent held connect.
    pub fn poll_last(&self) -> Poll<Wake> {
        self.poll_hold(self.holds.len() - 1)
    }

    /// Completes the most recent held connect at `now()`.
    pub fn finish_hold(&mut self) -> Vec<Value> {
        let h = self.holds.pop().expect("a held connect");
        parse_all(&self.engine.finish_hold(h, self.now()))
    }

    /// Completes held connect `i` at `now()`.
    pub fn finish_hold_at(&mut self, i: usize) -> Vec<Value> {
        let h = self.holds.remove(i);
        parse_all(&self.engine.finish_hold(h, self.now()))
    }

    /// Drains whatever is queued for `client_id` by answering a connect at once
    /// (`advice.timeout: 0`), and returns the deliveries (the connect reply is checked and
    /// dropped).
    pub fn drain(&mut self, ctx: &RequestContext, client_id: &str) -> Vec<Value> {
        let mut r = self.connect_with(ctx, client_id, json!({"advice": {"timeout": 0}}));
        let last = r.pop().expect("connect reply");
        assert_eq!(last["channel"], "/meta/connect");
        assert_eq!(last["successful"], true, "{last}");
        r
    }
}

/// Runs `f` on its own thread and fails the test if it has not finished within two seconds,
/// so a deadlock in the engine fails one test instead of hanging the suite.
pub fn within<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let handle = std::thread::spawn(f);
    let deadline = Instant::now() + Duration::from_secs(2);
    while !handle.is_finished() {
        assert!(
            Instant::now() < deadline,
            "{what}: still running after 2 s (deadlock?)"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    match handle.join() {
        Ok(v) => v,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Joins replies the way a transport does ([`bayeux_core::join_array`]: parts are message
/// objects or framed one-element arrays) and parses the body into its messages.
pub fn parse_all(replies: &[bayeux_core::Framed]) -> Vec<Value> {
    let body = bayeux_core::join_array(replies);
    serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("body is not a JSON array ({e}): {body:?}"))
}

/// An anonymous long-polling request.
pub fn lp() -> RequestContext {
    RequestContext::new(TransportKind::LongPolling)
}

/// An anonymous WebSocket request.
pub fn ws() -> RequestContext {
    RequestContext::new(TransportKind::WebSocket)
}

/// The sorted keys of a JSON object.
pub fn keys(v: &Value) -> Vec<&str> {
    let mut k: Vec<&str> = v
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect();
    k.sort_unstable();
    k
}

/// Records listener calls as strings, in order.
#[derive(Default)]
pub struct Recorder {
    /// The calls.
    pub events: Mutex<Vec<String>>,
}

impl Recorder {
    /// A new shared recorder.
    pub fn new() -> Arc<Recorder> {
        Arc::new(Recorder::default())
    }

    /// The calls so far.
    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.events.lock().unwrap())
    }

    fn push(&self, s: String) {
        self.events.lock().unwrap().push(s);
    }
}

fn short(s: &Session) -> String {
    s.id().as_str()[..6].to_owned()
}

impl Listener for Recorder {
    fn session_added(&self, session: &Arc<Session>) {
        self.push(format!("added {}", short(session)));
    }
    fn session_removed(&self, session: &Arc<Session>, reason: RemoveReason) {
        self.push(format!("removed {} {reason:?}", short(session)));
    }
    fn subscribed(&self, session: &Arc<Session>, pattern: &bayeux_core::ChannelPattern) {
        self.push(format!("subscribed {} {pattern}", short(session)));
    }
    fn unsubscribed(&self, session: &Arc<Session>, pattern: &bayeux_core::ChannelPattern) {
        self.push(format!("unsubscribed {} {pattern}", short(session)));
    }
    fn published(&self, channel: &bayeux_core::ChannelId, recipients: usize) {
        self.push(format!("published {channel} {recipients}"));
    }
    fn queue_full(&self, session: &Arc<Session>) {
        self.push(format!("queue_full {}", short(session)));
    }
}

/// The recorder's short form of a clientId.
pub fn short_id(client_id: &str) -> &str {
    &client_id[..6]
}
