//! Sessions: unguessable ids, the bounded outbound queue, the held-connect state, expiry data and
//! attributes.

use std::any::Any;
use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use bytes::Bytes;
use parking_lot::Mutex;
use serde_json::value::RawValue;

use crate::channel::{ChannelId, ChannelPattern};
use crate::codec::MessageId;
use crate::ext::RemoveReason;

/// `bytes` bytes from the operating system's CSPRNG, as `2 * bytes` lowercase hex digits: the
/// one source of the unguessable tokens of the workspace (session ids, browser cookies, voice
/// session tokens).
///
/// # Panics
/// Only if the operating system has no random source at all, which makes running a server
/// meaningless.
pub fn random_hex(bytes: usize) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut buf = [0u8; 64];
    let mut s = String::with_capacity(bytes * 2);
    let mut left = bytes;
    while left > 0 {
        let n = left.min(buf.len());
        getrandom::fill(&mut buf[..n]).expect("the OS random number generator is unavailable");
        for b in &buf[..n] {
            s.push(HEX[(b >> 4) as usize] as char);
            s.push(HEX[(b & 15) as usize] as char);
        }
        left -= n;
    }
    s
}

/// A session id: 160 bits from the operating system's CSPRNG, as 40 lowercase hex digits.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(Arc<str>);

impl SessionId {
    /// Draws a new random id.
    ///
    /// # Panics
    /// Only if the operating system has no random source at all, which makes running a server
    /// meaningless.
    pub fn random() -> SessionId {
        SessionId(Arc::from(random_hex(20)))
    }

    /// The id as sent on the wire.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Session ids are bearer secrets: log only a prefix.
        write!(f, "SessionId({}…)", &self.0[..8.min(self.0.len())])
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The transport a session (or a request) uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransportKind {
    /// `websocket`.
    WebSocket,
    /// `long-polling`.
    LongPolling,
    /// `callback-polling` (JSONP).
    CallbackPolling,
    /// An in-process (local) session.
    Local,
}

impl TransportKind {
    /// The Bayeux connection-type name.
    pub fn name(self) -> &'static str {
        match self {
            TransportKind::WebSocket => "websocket",
            TransportKind::LongPolling => "long-polling",
            TransportKind::CallbackPolling => "callback-polling",
            TransportKind::Local => "in-process",
        }
    }

    /// Parses a connection-type name.
    pub fn from_name(name: &str) -> Option<TransportKind> {
        match name {
            "websocket" => Some(TransportKind::WebSocket),
            "long-polling" => Some(TransportKind::LongPolling),
            "callback-polling" => Some(TransportKind::CallbackPolling),
            _ => None,
        }
    }

    /// Whether the transport is request/response HTTP (deliveries travel in connect replies).
    pub fn is_polling(self) -> bool {
        matches!(
            self,
            TransportKind::LongPolling | TransportKind::CallbackPolling
        )
    }
}

/// A message handed to a local session's callback.
#[derive(Debug)]
pub struct Delivery<'a> {
    /// The channel the message was published or delivered on.
    pub channel: &'a ChannelId,
    /// The payload.
    pub data: &'a RawValue,
    /// The `ext` of the publish, if any.
    pub ext: Option<&'a RawValue>,
    /// The publishing session, when a client published it.
    pub sender: Option<&'a SessionId>,
    /// The publish's `id`, so a service can answer on `/service/**` with the same id.
    pub id: Option<&'a MessageId>,
}

/// Callback of a local (server-side) session.
pub type LocalCallback = Arc<dyn Fn(&Delivery<'_>) + Send + Sync>;

/// What happens when a message arrives at a full session queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OverflowPolicy {
    /// Drop the oldest queued message to make room (the slow client loses messages, not memory).
    #[default]
    DropOldest,
    /// Refuse the new message and end the session: the client is told to handshake again.
    Disconnect,
}

/// Result of offering a message to a session queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Offer {
    Queued,
    DroppedOldest,
    Refused,
    Closed,
}

/// Unacknowledged batches kept by the ack extension.
#[derive(Debug, Default)]
pub(crate) struct AckState {
    /// Number of the last batch sent.
    pub batch: u64,
    /// Messages sent in batch `batch` (and earlier unacknowledged ones), waiting for the client's
    /// acknowledgement.
    pub unacked: Vec<Bytes>,
}

pub(crate) struct State {
    pub queue: VecDeque<Bytes>,
    pub waker: Option<Waker>,
    /// Incremented by every new held connect; a hold whose generation is stale was superseded.
    pub hold_gen: u64,
    pub held: bool,
    /// When the last connect reply was sent (or the handshake, before any connect).
    pub last_seen: Instant,
    /// Whether a first `/meta/connect` has been answered.
    pub connected: bool,
    pub closed: bool,
    pub closed_reason: Option<RemoveReason>,
    /// Whether the session's current held connect counts against its browser's long polls.
    pub browser_slot: bool,
    /// Client-requested hold time and interval, ms.
    pub timeout: Option<u64>,
    pub interval: Option<u64>,
    pub subscriptions: HashSet<ChannelPattern>,
    pub ack: Option<AckState>,
    pub dropped: u64,
}

/// A Bayeux session: a remote client's, or a local one living in the server.
pub struct Session {
    id: SessionId,
    key: u64,
    principal: Option<Arc<str>>,
    browser: Option<Arc<str>>,
    transport: TransportKind,
    local: Option<LocalCallback>,
    max_queue: usize,
    overflow: OverflowPolicy,
    /// Mirrors `state.ack.is_some()` (ack is turned on once, never off), so that
    /// [`Session::connect_only`], asked on every WebSocket wake-up, takes no lock.
    ack: AtomicBool,
    pub(crate) state: Mutex<State>,
    attributes: Mutex<HashMap<String, Arc<dyn Any + Send + Sync>>>,
}

static NEXT_KEY: AtomicU64 = AtomicU64::new(1);

/// What woke a held connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// Messages are waiting.
    Messages,
    /// A newer connect of the same session replaced this one.
    Superseded,
    /// The session ended (disconnect, expiry, server shutdown).
    Closed,
}

impl Session {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        principal: Option<Arc<str>>,
        browser: Option<Arc<str>>,
        transport: TransportKind,
        local: Option<LocalCallback>,
        max_queue: usize,
        overflow: OverflowPolicy,
        now: Instant,
    ) -> Session {
        Session {
            id: SessionId::random(),
            key: NEXT_KEY.fetch_add(1, Ordering::Relaxed),
            principal,
            browser,
            transport,
            local,
            max_queue: max_queue.max(1),
            overflow,
            ack: AtomicBool::new(false),
            state: Mutex::new(State {
                queue: VecDeque::new(),
                waker: None,
                hold_gen: 0,
                held: false,
                last_seen: now,
                connected: false,
                closed: false,
                closed_reason: None,
                browser_slot: false,
                timeout: None,
                interval: None,
                subscriptions: HashSet::new(),
                ack: None,
                dropped: 0,
            }),
            attributes: Mutex::new(HashMap::new()),
        }
    }

    /// The session id.
    pub fn id(&self) -> &SessionId {
        &self.id
    }

    /// A process-unique number for this session (cheap to hash; not a secret, never on the wire).
    pub fn key(&self) -> u64 {
        self.key
    }

    /// The authenticated principal the session was created with, if any.
    pub fn principal(&self) -> Option<&str> {
        self.principal.as_deref()
    }

    /// The browser id (`BAYEUX_BROWSER` cookie) the session is bound to, if any.
    pub fn browser(&self) -> Option<&str> {
        self.browser.as_deref()
    }

    /// The transport named at handshake time (updated by nothing: a session keeps its kind).
    pub fn transport(&self) -> TransportKind {
        self.transport
    }

    /// Whether this is a local (server-side) session.
    pub fn is_local(&self) -> bool {
        self.local.is_some()
    }

    /// Whether the session has ended.
    pub fn is_closed(&self) -> bool {
        self.state.lock().closed
    }

    /// Why the session ended, if it has.
    pub fn closed_reason(&self) -> Option<RemoveReason> {
        self.state.lock().closed_reason
    }

    /// Number of messages waiting in the queue.
    pub fn queue_len(&self) -> usize {
        self.state.lock().queue.len()
    }

    /// Messages dropped at the queue bound so far.
    pub fn dropped(&self) -> u64 {
        self.state.lock().dropped
    }

    /// The channels and patterns the session is subscribed to.
    pub fn subscriptions(&self) -> Vec<ChannelPattern> {
        let mut v: Vec<_> = self.state.lock().subscriptions.iter().cloned().collect();
        v.sort();
        v
    }

    /// Sets an attribute.
    pub fn set_attribute(&self, name: &str, value: Arc<dyn Any + Send + Sync>) {
        self.attributes.lock().insert(name.to_owned(), value);
    }

    /// Reads an attribute.
    pub fn attribute(&self, name: &str) -> Option<Arc<dyn Any + Send + Sync>> {
        self.attributes.lock().get(name).cloned()
    }

    /// Whether the ack extension is active on this session (deliveries then travel only in
    /// `/meta/connect` replies).
    pub fn ack_enabled(&self) -> bool {
        self.ack.load(Ordering::Acquire)
    }

    /// Whether messages for this session are sent only inside `/meta/connect` replies: always for
    /// polling transports, and for any session using the ack extension.
    pub fn connect_only(&self) -> bool {
        self.transport.is_polling() || self.ack_enabled()
    }

    pub(crate) fn local_callback(&self) -> Option<&LocalCallback> {
        self.local.as_ref()
    }

    /// Puts serialized message bytes in the queue (or calls the local callback, done by the
    /// caller for local sessions), applying the overflow policy.
    pub(crate) fn offer(&self, bytes: &Bytes) -> Offer {
        let mut st = self.state.lock();
        if st.closed {
            return Offer::Closed;
        }
        let unacked = st.ack.as_ref().map_or(0, |a| a.unacked.len());
        let mut result = Offer::Queued;
        if st.queue.len() + unacked >= self.max_queue {
            match self.overflow {
                OverflowPolicy::DropOldest if !st.queue.is_empty() => {
                    st.queue.pop_front();
                    st.dropped += 1;
                    result = Offer::DroppedOldest;
                }
                _ => {
                    st.dropped += 1;
                    return Offer::Refused;
                }
            }
        }
        st.queue.push_back(bytes.clone());
        if let Some(w) = st.waker.take() {
            drop(st);
            w.wake();
        }
        result
    }

    /// Takes every queued message, for transports that write messages as they arrive
    /// (WebSocket without the ack extension). Returns nothing for connect-only sessions.
    pub fn take_messages(&self) -> Vec<Bytes> {
        let mut out = Vec::new();
        self.take_messages_into(&mut out);
        out
    }

    /// As [`Session::take_messages`], appending to `out`, so a writer can reuse one buffer
    /// instead of allocating for every write.
    pub fn take_messages_into(&self, out: &mut Vec<Bytes>) {
        if self.transport.is_polling() {
            return;
        }
        let mut st = self.state.lock();
        if st.ack.is_none() {
            out.extend(st.queue.drain(..));
        }
    }

    /// Polls for messages: ready when the queue is non-empty or the session has ended. For the
    /// WebSocket writer.
    pub fn poll_messages(&self, cx: &mut Context<'_>) -> Poll<Wake> {
        let mut st = self.state.lock();
        if st.closed {
            return Poll::Ready(Wake::Closed);
        }
        if !st.queue.is_empty() {
            return Poll::Ready(Wake::Messages);
        }
        replace_waker(&mut st.waker, cx);
        Poll::Pending
    }

    /// Polls a held connect of generation `gen`.
    pub(crate) fn poll_hold(&self, cx: &mut Context<'_>, generation: u64) -> Poll<Wake> {
        let mut st = self.state.lock();
        if st.hold_gen != generation {
            return Poll::Ready(Wake::Superseded);
        }
        if st.closed {
            return Poll::Ready(Wake::Closed);
        }
        let has_ack_backlog = st.ack.as_ref().is_some_and(|a| !a.unacked.is_empty());
        if !st.queue.is_empty() || has_ack_backlog {
            return Poll::Ready(Wake::Messages);
        }
        replace_waker(&mut st.waker, cx);
        Poll::Pending
    }

    /// Turns on acknowledged delivery (the ack extension does this at handshake).
    pub fn enable_ack(&self) {
        let mut st = self.state.lock();
        if st.ack.is_none() {
            st.ack = Some(AckState::default());
            self.ack.store(true, Ordering::Release);
        }
    }

    /// The client acknowledged batch `batch`: everything sent up to it is forgotten.
    pub fn ack_received(&self, batch: i64) {
        let mut st = self.state.lock();
        if let Some(ack) = st.ack.as_mut()
            && batch >= 0
            && batch as u64 >= ack.batch
        {
            ack.unacked.clear();
        }
    }

    /// The number of the last batch sent, when the ack extension is on.
    pub fn ack_batch(&self) -> Option<u64> {
        self.state.lock().ack.as_ref().map(|a| a.batch)
    }

    /// Takes the messages for a `/meta/connect` reply. With the ack extension, the unacknowledged
    /// messages are sent again with the new ones, under a new batch number.
    pub(crate) fn drain_for_connect(st: &mut State) -> Vec<Bytes> {
        let drained: Vec<Bytes> = st.queue.drain(..).collect();
        match st.ack.as_mut() {
            None => drained,
            Some(ack) => {
                if drained.is_empty() && ack.unacked.is_empty() {
                    return Vec::new();
                }
                ack.unacked.extend(drained);
                ack.batch += 1;
                ack.unacked.clone()
            }
        }
    }

    /// Marks the session closed and wakes whoever waits on it.
    pub(crate) fn close(&self, reason: RemoveReason) {
        let waker = {
            let mut st = self.state.lock();
            st.closed = true;
            st.closed_reason.get_or_insert(reason);
            st.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

fn replace_waker(slot: &mut Option<Waker>, cx: &mut Context<'_>) {
    match slot {
        Some(w) if w.will_wake(cx.waker()) => {}
        _ => *slot = Some(cx.waker().clone()),
    }
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.id)
            .field("principal", &self.principal)
            .field("transport", &self.transport)
            .field("local", &self.local.is_some())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_hex_has_the_asked_length_and_differs_each_time() {
        for n in [0, 1, 8, 20, 64, 65, 200] {
            let a = random_hex(n);
            assert_eq!(a.len(), 2 * n);
            assert!(
                a.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            );
            if n >= 8 {
                assert_ne!(a, random_hex(n));
            }
        }
        assert_eq!(SessionId::random().as_str().len(), 40);
    }

    fn session(max: usize, policy: OverflowPolicy) -> Session {
        Session::new(
            None,
            None,
            TransportKind::WebSocket,
            None,
            max,
            policy,
            Instant::now(),
        )
    }

    #[test]
    fn ids_are_random_and_long() {
        let a = SessionId::random();
        let b = SessionId::random();
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), 40);
        assert!(a.as_str().bytes().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn drop_oldest_keeps_the_newest_within_bound() {
        let s = session(3, OverflowPolicy::DropOldest);
        for i in 0..10u8 {
            s.offer(&Bytes::from(vec![i]));
        }
        let got: Vec<u8> = s.take_messages().iter().map(|b| b[0]).collect();
        assert_eq!(got, [7, 8, 9]);
        assert_eq!(s.dropped(), 7);
    }

    #[test]
    fn disconnect_policy_refuses_at_bound() {
        let s = session(2, OverflowPolicy::Disconnect);
        assert_eq!(s.offer(&Bytes::from_static(b"1")), Offer::Queued);
        assert_eq!(s.offer(&Bytes::from_static(b"2")), Offer::Queued);
        assert_eq!(s.offer(&Bytes::from_static(b"3")), Offer::Refused);
        assert_eq!(s.queue_len(), 2);
        s.close(RemoveReason::Disconnected);
        assert_eq!(s.offer(&Bytes::from_static(b"4")), Offer::Closed);
    }
}
