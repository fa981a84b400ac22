//! Sessions: unguessable ids, the bounded outbound queue, the held-connect state, expiry data and
//! attributes.

use std::any::Any;
use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use dashmap::DashMap;
#[cfg(not(feature = "model-check"))]
use parking_lot::Mutex;
use serde_json::value::RawValue;

use crate::channel::{ChannelId, ChannelPattern};
use crate::codec::{Framed, MessageId};

/// How many recipients of one publish its publisher may write to directly (see
/// [`Session::offer`]); the rest are queued for their connections' tasks. Small, so that a
/// publish to a per-user channel skips the wake-up of the recipient's task while a fan-out to
/// many keeps writing from all worker threads and holds the router's read lock briefly.
pub(crate) const DIRECT_WRITES_PER_PUBLISH: u32 = 4;

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

/// Why a session went away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoveReason {
    /// The client sent `/meta/disconnect` (or the server disconnected it).
    Disconnected,
    /// Nothing heard from the client for too long (see [`Session`] for the liveness rule).
    Expired,
    /// Its queue overflowed under [`crate::OverflowPolicy::Disconnect`].
    QueueOverflow,
    /// The server is shutting down ([`crate::Engine::close_all`]).
    ServerShutdown,
}

/// Result of offering a message to a session queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Offer {
    /// Queued with room to spare.
    Queued,
    /// Queued; the oldest message was dropped: a queued one, or (`unacked`) one sent to an
    /// ack-extension client and not yet acknowledged.
    DroppedOldest {
        /// Whether the dropped message was a sent, unacknowledged one.
        unacked: bool,
    },
    /// Not queued: the queue is full and the policy is to disconnect.
    Refused,
    /// Not queued: the session has ended.
    Closed,
}

impl Offer {
    /// Whether the message is now in the queue.
    pub(crate) fn queued(self) -> bool {
        matches!(self, Offer::Queued | Offer::DroppedOldest { .. })
    }
}

/// Places counted per key with one maximum each: the long polls a browser (`BAYEUX_BROWSER`
/// cookie) holds at once, the sessions of an endpoint. A place is a [`Slot`], given back when
/// it is dropped.
#[derive(Debug)]
pub(crate) struct Slots {
    max: usize,
    taken: DashMap<Arc<str>, usize>,
}

impl Slots {
    pub(crate) fn new(max: usize) -> Arc<Slots> {
        Arc::new(Slots {
            max,
            taken: DashMap::new(),
        })
    }

    /// Takes one of `key`'s places, if one is free.
    pub(crate) fn take(self: &Arc<Self>, key: &Arc<str>) -> Option<Slot> {
        if self.max == 0 {
            return None;
        }
        let mut n = self.taken.entry(key.clone()).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(Slot {
            slots: self.clone(),
            key: key.clone(),
        })
    }

    /// Places of `key` taken now.
    pub(crate) fn taken_by(&self, key: &str) -> usize {
        self.taken.get(key).map_or(0, |n| *n)
    }

    /// Places taken now, all keys together (for tests and metrics).
    pub(crate) fn taken(&self) -> usize {
        self.taken.iter().map(|e| *e.value()).sum()
    }
}

/// One place of [`Slots`]; given back when dropped.
#[derive(Debug)]
pub(crate) struct Slot {
    slots: Arc<Slots>,
    key: Arc<str>,
}

impl Slot {
    /// The key the place was taken for.
    pub(crate) fn key(&self) -> &Arc<str> {
        &self.key
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.taken.remove_if_mut(&*self.key, |_, n| {
            *n = n.saturating_sub(1);
            *n == 0
        });
    }
}

/// Unacknowledged messages kept by the ack extension.
#[derive(Debug, Default)]
struct AckState {
    /// Number of the last batch sent.
    batch: u64,
    /// Messages sent in batch `batch` (and earlier unacknowledged ones), oldest first, waiting
    /// for the client's acknowledgement.
    unacked: VecDeque<Framed>,
}

/// The session's timing settings, copied from the engine's configuration at creation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    /// Default hold time of a connect, ms.
    pub timeout_ms: u64,
    /// Default pause between connects, ms.
    pub interval_ms: u64,
    /// How long a session lives without hearing from its client, ms.
    pub max_interval_ms: u64,
    /// Upper bound of a client-requested hold time, ms.
    pub max_client_timeout_ms: u64,
}

struct State {
    queue: VecDeque<Framed>,
    /// Whether the queue holds a message that must be sent now: a non-lazy one, or lazy ones
    /// whose `max_lazy` has passed. Lazy messages alone do not wake the connection.
    eager: bool,
    /// When a sweep first saw the queue holding only lazy messages.
    lazy_since: Option<Instant>,
    waker: Option<Waker>,
    /// Incremented by every connect; a hold whose generation is stale was superseded.
    hold_gen: u64,
    /// Whether a connect is held now (the session then never expires).
    held: bool,
    /// When the session expires unless its client is heard from (never while `held`); `None`
    /// for a local session, which lives until it is removed.
    expires: Option<Instant>,
    /// Whether a first `/meta/connect` has been answered.
    connected: bool,
    closed: Option<RemoveReason>,
    /// The browser slot of the current held connect, when it counts against its browser.
    browser_slot: Option<Slot>,
    /// The session's place in its endpoint's budget, given back when it closes.
    endpoint_slot: Option<Slot>,
    /// Client-requested hold time and interval, ms.
    timeout: Option<u64>,
    interval: Option<u64>,
    ack: Option<AckState>,
    dropped: u64,
    /// When the oldest message in `queue` was queued (the time of the request that published
    /// it, see [`queued_at`]), set when the queue goes from empty to non-empty: one stamp per
    /// queue, not per message. `None` when unknown (queued outside a client's request).
    oldest_at: Option<Instant>,
    /// `oldest_at` of the messages the last connect reply took, until the transport collects
    /// it ([`Session::take_drained_since`]).
    drained_at: Option<Instant>,
    /// The connection's direct writer (WebSocket over plain TCP), when it has one.
    direct: Option<Arc<dyn DirectWrite>>,
    /// Whether that connection's task is idle (nothing staged, nothing being written), so that
    /// a publisher may write a message to its socket itself. Set only while `direct` is.
    writer_idle: bool,
    /// A direct write to `direct` was taken only in part: until its task has said it is busy
    /// (and so finishes that frame first), it cannot be idle again.
    direct_started: bool,
}

impl State {
    fn grace(&self, t: &Timing) -> Duration {
        Duration::from_millis(self.interval.unwrap_or(t.interval_ms) + t.max_interval_ms)
    }

    /// Takes the messages for a `/meta/connect` reply. With the ack extension, the
    /// unacknowledged messages are sent again with the new ones, under a new batch number.
    fn drain_for_connect(&mut self) -> Vec<Framed> {
        self.eager = false;
        self.lazy_since = None;
        // Only this reply's time is kept: an earlier one nobody collected must not outlive it.
        self.drained_at = if self.queue.is_empty() {
            None
        } else {
            self.oldest_at.take()
        };
        match self.ack.as_mut() {
            None => self.queue.drain(..).collect(),
            Some(ack) => {
                if self.queue.is_empty() && ack.unacked.is_empty() {
                    return Vec::new();
                }
                ack.unacked.extend(self.queue.drain(..));
                ack.batch += 1;
                ack.unacked.iter().cloned().collect()
            }
        }
    }
}

/// How a `/meta/connect` starts ([`Session::begin_connect`]).
#[derive(Debug)]
pub(crate) enum ConnectStart {
    /// Hold it: answer when messages arrive or at the hold deadline.
    Hold {
        /// The hold's generation, for [`Session::poll_hold`] and [`Session::end_hold`].
        generation: u64,
    },
    /// Answer now with these messages.
    Answer {
        messages: Vec<Framed>,
        /// The browser already holds its allowed long polls: advise `multiple-clients`.
        multiple: bool,
    },
}

/// How a held connect ended ([`Session::end_hold`]).
#[derive(Debug)]
pub(crate) struct HoldEnd {
    /// Why the session ended, if it has.
    pub closed: Option<RemoveReason>,
    /// The messages for the reply (none when superseded or closed).
    pub messages: Vec<Framed>,
}

impl Timing {
    /// The timing settings of `config`.
    pub(crate) fn of(config: &crate::EngineConfig) -> Timing {
        Timing {
            timeout_ms: config.timeout_ms,
            interval_ms: config.interval_ms,
            max_interval_ms: config.max_interval_ms,
            max_client_timeout_ms: config.max_client_timeout_ms,
        }
    }
}

/// A subscription could not be attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AttachError {
    /// The session has ended.
    Closed,
    /// The session would exceed its subscription limits (count or bytes of names).
    TooMany,
}

/// A Bayeux session: a remote client's, or a local one living in the server.
///
/// The session owns its life cycle; every change of its state is one locked step here, so that
/// concurrent requests, deliveries and the sweeper cannot slip between a check and an update:
///
/// - **Liveness** (as CometD's `ServerSessionImpl`): every message the client sends extends the
///   session's expiry to at least now + `max_interval`; a connect answered at once, or a held one
///   when it ends, sets it to the end + `interval` + `max_interval`; while a connect is held the
///   session never expires. Expiry is decided and carried out under the session's lock, so a
///   connect that arrives first keeps the session, and one that arrives after gets
///   `402::session_unknown`.
/// - **Subscriptions** are attached and detached under the session's subscription lock, which
///   closing also takes: a subscribe racing a disconnect either completes before it (and is then
///   undone by it) or fails; nothing is left behind in the router.
pub struct Session {
    id: SessionId,
    key: u64,
    principal: Option<Arc<str>>,
    browser: Option<Arc<str>>,
    /// The endpoint whose session budget this session counts against (remote sessions).
    endpoint: Option<Arc<str>>,
    /// The quota of the connection that created it, given back when it ends.
    quota: Option<Arc<ConnectionQuota>>,
    transport: TransportKind,
    local: Option<LocalCallback>,
    max_queue: usize,
    overflow: OverflowPolicy,
    /// Mirrors `state.ack.is_some()` (ack is turned on once, never off), so that
    /// [`Session::connect_only`], asked on every WebSocket wake-up, takes no lock.
    ack: AtomicBool,
    /// Lock order: `subscriptions`, then `state`; `state` is never held while taking another
    /// session lock or a router lock.
    subscriptions: Mutex<Subscriptions>,
    state: Mutex<State>,
    attributes: Mutex<HashMap<String, Arc<dyn Any + Send + Sync>>>,
}

static NEXT_KEY: AtomicU64 = AtomicU64::new(1);

/// How many live sessions one connection may have created: taken by a handshake, given back
/// when that session ends.
#[derive(Debug)]
pub struct ConnectionQuota {
    left: AtomicUsize,
}

impl ConnectionQuota {
    /// A quota of `max` live sessions.
    pub fn new(max: usize) -> Arc<ConnectionQuota> {
        Arc::new(ConnectionQuota {
            left: AtomicUsize::new(max),
        })
    }

    /// Takes one place; false when none is left.
    pub(crate) fn take(&self) -> bool {
        self.left
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
    }

    /// Gives a place back.
    pub(crate) fn give_back(&self) {
        self.left.fetch_add(1, Ordering::AcqRel);
    }

    /// Places left.
    pub fn left(&self) -> usize {
        self.left.load(Ordering::Acquire)
    }
}

/// A session's subscriptions and the bytes of their names (bounded with the count).
#[derive(Default)]
struct Subscriptions {
    set: HashSet<ChannelPattern>,
    name_bytes: usize,
}

/// Where a new session comes from: who it belongs to, and what it counts against.
#[derive(Debug, Default)]
pub(crate) struct Owner {
    pub principal: Option<Arc<str>>,
    pub browser: Option<Arc<str>>,
    /// The session's place in its endpoint's budget (remote sessions).
    pub endpoint: Option<Slot>,
    pub quota: Option<Arc<ConnectionQuota>>,
}

/// What a [`DirectWrite`] did with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirectOutcome {
    /// The whole frame was written.
    Written,
    /// Only part of it: the writer keeps the rest and wakes its connection's task, which
    /// must write the rest before anything else.
    Started,
    /// Nothing was written (the socket is full, or failed): the message is queued instead.
    NotWritten,
}

/// A connection's socket that a publisher may write a session's message to directly, without
/// waiting and without waking the connection's task (WebSocket over plain TCP does this). The
/// session calls it under its lock, only while the connection said it is idle
/// ([`Session::poll_messages_idle`]) and nothing is queued, so frames never interleave or
/// overtake each other.
pub trait DirectWrite: Send + Sync {
    /// Writes `message` as one frame without waiting.
    fn try_write(&self, message: &Framed) -> DirectOutcome;
}

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
    pub(crate) fn new(
        owner: Owner,
        transport: TransportKind,
        local: Option<LocalCallback>,
        max_queue: usize,
        overflow: OverflowPolicy,
        timing: &Timing,
        now: Option<Instant>,
    ) -> Session {
        Session {
            id: SessionId::random(),
            key: NEXT_KEY.fetch_add(1, Ordering::Relaxed),
            principal: owner.principal,
            browser: owner.browser,
            endpoint: owner.endpoint.as_ref().map(|slot| slot.key().clone()),
            quota: owner.quota,
            transport,
            local,
            max_queue: max_queue.max(1),
            overflow,
            ack: AtomicBool::new(false),
            subscriptions: Mutex::new(Subscriptions::default()),
            state: Mutex::new(State {
                queue: VecDeque::new(),
                eager: false,
                lazy_since: None,
                waker: None,
                hold_gen: 0,
                held: false,
                expires: now.map(|now| {
                    now + Duration::from_millis(timing.interval_ms + timing.max_interval_ms)
                }),
                connected: false,
                closed: None,
                browser_slot: None,
                endpoint_slot: owner.endpoint,
                timeout: None,
                interval: None,
                ack: None,
                dropped: 0,
                oldest_at: None,
                drained_at: None,
                direct: None,
                writer_idle: false,
                direct_started: false,
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

    /// The endpoint (mount path) the session was created on, if any.
    pub fn endpoint(&self) -> Option<&str> {
        self.endpoint.as_deref()
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
        self.state.lock().closed.is_some()
    }

    /// Why the session ended, if it has.
    pub fn closed_reason(&self) -> Option<RemoveReason> {
        self.state.lock().closed
    }

    /// Number of messages waiting in the queue.
    pub fn queue_len(&self) -> usize {
        self.state.lock().queue.len()
    }

    /// Messages dropped at the queue bound so far (queued ones, and with the ack extension sent
    /// ones that were not yet acknowledged).
    pub fn dropped(&self) -> u64 {
        self.state.lock().dropped
    }

    /// Whether a `/meta/connect` of this session is held now.
    pub fn is_held(&self) -> bool {
        self.state.lock().held
    }

    /// The channels and patterns the session is subscribed to.
    pub fn subscriptions(&self) -> Vec<ChannelPattern> {
        let mut v: Vec<_> = self.subscriptions.lock().set.iter().cloned().collect();
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

    /// The client was heard from at `now`: the session lives at least `max_interval` longer.
    pub(crate) fn touch(&self, now: Instant, timing: &Timing) {
        let mut st = self.state.lock();
        let at_least = now + Duration::from_millis(timing.max_interval_ms);
        st.expires = st.expires.max(Some(at_least));
    }

    /// The hold time and interval for this session: the client's advice, else the defaults.
    pub(crate) fn timeout_and_interval(&self, timing: &Timing) -> (u64, u64) {
        let st = self.state.lock();
        (
            st.timeout.unwrap_or(timing.timeout_ms),
            st.interval.unwrap_or(timing.interval_ms),
        )
    }

    /// Records a client's `advice` (finite, non-negative values, capped by the configuration).
    pub(crate) fn apply_advice(&self, timeout: Option<f64>, interval: Option<f64>, t: &Timing) {
        let mut st = self.state.lock();
        if let Some(v) = timeout.filter(|v| v.is_finite() && *v >= 0.0) {
            st.timeout = Some((v as u64).min(t.max_client_timeout_ms));
        }
        if let Some(v) = interval.filter(|v| v.is_finite() && *v >= 0.0) {
            st.interval = Some((v as u64).min(t.max_interval_ms));
        }
    }

    /// Puts serialized message bytes in the queue (local sessions are called back by the
    /// caller instead), applying the overflow policy. With the ack extension, sent messages
    /// not yet acknowledged count toward the bound and, being older than anything queued, are
    /// the first dropped.
    ///
    /// A `lazy` message does not wake the connection: it waits for a non-lazy one, the end of
    /// the held connect, or [`Session::flush_lazy`].
    ///
    /// When the session's connection has a [`DirectWrite`] and is idle, with nothing queued,
    /// a non-lazy message is written to its socket here, by the publisher, while `direct`
    /// (the publish's budget of such writes) lasts: the connection's task is not woken at all.
    /// Such a message counts as queued.
    pub(crate) fn offer(&self, message: &Framed, lazy: bool, direct: &mut u32) -> Offer {
        let mut st = self.state.lock();
        if st.closed.is_some() {
            return Offer::Closed;
        }
        if *direct > 0 && !lazy && st.writer_idle && st.queue.is_empty() {
            // `writer_idle` implies a writer and no ack extension (see `poll_messages_idle`).
            match st.direct.as_ref().map(|w| w.try_write(message)) {
                Some(DirectOutcome::Written) => {
                    *direct -= 1;
                    return Offer::Queued;
                }
                Some(DirectOutcome::Started) => {
                    // The writer has woken its task to finish the frame; nothing else goes
                    // direct meanwhile.
                    *direct -= 1;
                    st.writer_idle = false;
                    st.direct_started = true;
                    return Offer::Queued;
                }
                // The socket is full: the message is queued and the task writes it, under the
                // write deadline.
                Some(DirectOutcome::NotWritten) => st.writer_idle = false,
                None => {}
            }
        }
        let unacked = st.ack.as_ref().map_or(0, |a| a.unacked.len());
        let mut result = Offer::Queued;
        if st.queue.len() + unacked >= self.max_queue {
            if self.overflow == OverflowPolicy::Disconnect {
                st.dropped += 1;
                return Offer::Refused;
            }
            let dropped_unacked = st
                .ack
                .as_mut()
                .is_some_and(|a| a.unacked.pop_front().is_some());
            if !dropped_unacked {
                st.queue.pop_front();
            }
            st.dropped += 1;
            result = Offer::DroppedOldest {
                unacked: dropped_unacked,
            };
        }
        if st.queue.is_empty() {
            st.oldest_at = queued_at();
        }
        st.queue.push_back(message.clone());
        if lazy {
            return result;
        }
        st.eager = true;
        let waker = st.waker.take();
        drop(st);
        if let Some(w) = waker {
            w.wake();
        }
        result
    }

    /// Lazy messages wait at most `max_lazy` from the first sweep that saw them (`now`): the
    /// sweep that finds them older wakes the connection. Returns whether it woke it.
    pub(crate) fn flush_lazy(&self, now: Instant, max_lazy: Duration) -> bool {
        let mut st = self.state.lock();
        if st.eager || st.queue.is_empty() || st.closed.is_some() {
            return false;
        }
        match st.lazy_since {
            None => {
                st.lazy_since = Some(now);
                if !max_lazy.is_zero() {
                    return false;
                }
            }
            Some(t) if now.saturating_duration_since(t) < max_lazy => return false,
            Some(_) => {}
        }
        st.eager = true;
        let waker = st.waker.take();
        drop(st);
        if let Some(w) = waker {
            w.wake();
        }
        true
    }

    /// Takes every queued message, for transports that write messages as they arrive
    /// (WebSocket without the ack extension). Returns nothing for connect-only sessions.
    pub fn take_messages(&self) -> Vec<Framed> {
        let mut out = Vec::new();
        self.take_messages_into(&mut out);
        out
    }

    /// As [`Session::take_messages`], appending to `out`, so a writer can reuse one buffer
    /// instead of allocating for every write.
    pub fn take_messages_into(&self, out: &mut Vec<Framed>) {
        self.take_messages_since(out);
    }

    /// As [`Session::take_messages_into`], and returns when the oldest of the messages taken
    /// was queued (when known: see [`Session::take_drained_since`]), so that the transport can
    /// measure how long it waited, once per write and without a timestamp per message.
    pub fn take_messages_since(&self, out: &mut Vec<Framed>) -> Option<Instant> {
        if self.transport.is_polling() {
            return None;
        }
        let mut st = self.state.lock();
        // What is taken is written by the task: no direct write may overtake it.
        st.writer_idle = false;
        if st.ack.is_some() {
            return None;
        }
        let taken = !st.queue.is_empty();
        out.extend(st.queue.drain(..));
        st.eager = false;
        st.lazy_since = None;
        if taken { st.oldest_at.take() } else { None }
    }

    /// When the oldest message of the last `/meta/connect` reply that carried messages was
    /// queued, and forgets it: the long-polling transport (and the WebSocket one, for sessions
    /// with the ack extension) asks once it has the reply to write.
    ///
    /// The time is that of the client request that published the message, which the engine
    /// receives as its `now`: messages queued outside a client's request (server-side
    /// publishes, the backplane's) carry no time, and a queue that starts with one is not
    /// timed.
    pub fn take_drained_since(&self) -> Option<Instant> {
        self.state.lock().drained_at.take()
    }

    /// Polls for messages: ready when the queue is non-empty or the session has ended. For the
    /// WebSocket writer.
    pub fn poll_messages(&self, cx: &mut Context<'_>) -> Poll<Wake> {
        let mut st = self.state.lock();
        if st.closed.is_some() {
            return Poll::Ready(Wake::Closed);
        }
        if st.eager {
            return Poll::Ready(Wake::Messages);
        }
        replace_waker(&mut st.waker, cx);
        Poll::Pending
    }

    /// As [`Session::poll_messages`], for the connection whose direct writer is `writer`
    /// ([`Session::set_direct_writer`]), when its task has nothing staged and nothing being
    /// written: while this returns `Pending`, publishers may write messages to the socket
    /// themselves (unless another connection's writer has replaced `writer` since).
    pub fn poll_messages_idle(
        &self,
        cx: &mut Context<'_>,
        writer: &Arc<dyn DirectWrite>,
    ) -> Poll<Wake> {
        let mut st = self.state.lock();
        if st.closed.is_some() {
            return Poll::Ready(Wake::Closed);
        }
        let mine = is_writer(&st.direct, writer);
        if st.eager || (mine && st.direct_started) {
            return Poll::Ready(Wake::Messages);
        }
        replace_waker(&mut st.waker, cx);
        st.writer_idle = st.ack.is_none() && mine;
        Poll::Pending
    }

    /// The task of the connection whose direct writer is `writer` is about to write (or stage)
    /// something of its own: no direct write may start from now on. Any direct write already
    /// made is complete, or its writer holds the rest for the task to write first.
    pub fn writer_busy(&self, writer: &Arc<dyn DirectWrite>) {
        let mut st = self.state.lock();
        if is_writer(&st.direct, writer) {
            st.writer_idle = false;
            st.direct_started = false;
        }
    }

    /// Installs the connection's direct writer, in place of any other connection's. The
    /// connection is busy until it next calls [`Session::poll_messages_idle`]. A closed
    /// session keeps none.
    pub fn set_direct_writer(&self, writer: Arc<dyn DirectWrite>) {
        let mut st = self.state.lock();
        st.writer_idle = false;
        // A partial frame of the previous writer is its own task's to finish.
        st.direct_started = false;
        if st.closed.is_none() {
            st.direct = Some(writer);
        }
    }

    /// Removes `writer` if it is still the session's direct writer (its connection ends).
    pub fn clear_direct_writer(&self, writer: &Arc<dyn DirectWrite>) {
        let mut st = self.state.lock();
        if is_writer(&st.direct, writer) {
            st.direct = None;
            st.writer_idle = false;
            st.direct_started = false;
        }
    }

    /// Polls a held connect of generation `generation`.
    pub(crate) fn poll_hold(&self, cx: &mut Context<'_>, generation: u64) -> Poll<Wake> {
        let mut st = self.state.lock();
        if st.hold_gen != generation {
            return Poll::Ready(Wake::Superseded);
        }
        if st.closed.is_some() {
            return Poll::Ready(Wake::Closed);
        }
        let has_ack_backlog = st.ack.as_ref().is_some_and(|a| !a.unacked.is_empty());
        if st.eager || has_ack_backlog {
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

    /// Starts a `/meta/connect` at `now`, in one locked step: fails on a closed session;
    /// supersedes (wakes) any held connect; holds this one when `want_hold`, it is not the
    /// first connect and nothing is waiting, taking a browser slot from `slots` when given;
    /// otherwise answers now with the waiting messages and restarts the expiry clock.
    pub(crate) fn begin_connect(
        &self,
        now: Instant,
        want_hold: bool,
        slots: Option<&Arc<Slots>>,
        timing: &Timing,
    ) -> Result<ConnectStart, AttachError> {
        let mut st = self.state.lock();
        if st.closed.is_some() {
            return Err(AttachError::Closed);
        }
        let first = !std::mem::replace(&mut st.connected, true);
        // (Judged from the locked state: `connect_only` would lock it again.)
        let connect_only = self.transport.is_polling() || st.ack.is_some();
        let pending =
            st.eager && connect_only || st.ack.as_ref().is_some_and(|a| !a.unacked.is_empty());
        let hold = want_hold && !first && !pending;
        let mut multiple = false;
        if hold
            && let Some(slots) = slots
            && let Some(browser) = &self.browser
            && st.browser_slot.is_none()
        {
            // A session replacing its own held connect keeps that connect's slot.
            match slots.take(browser) {
                Some(slot) => st.browser_slot = Some(slot),
                None => multiple = true,
            }
        }
        // A newer connect supersedes the held one, whatever this one does.
        st.hold_gen += 1;
        let waker = st.waker.take();
        let start = if hold && !multiple {
            st.held = true;
            ConnectStart::Hold {
                generation: st.hold_gen,
            }
        } else {
            // Not held: a slot kept from a superseded connect is given back.
            st.browser_slot = None;
            st.held = false;
            st.expires = Some(now + st.grace(timing));
            ConnectStart::Answer {
                messages: st.drain_for_connect(),
                multiple,
            }
        };
        drop(st);
        if let Some(w) = waker {
            w.wake();
        }
        Ok(start)
    }

    /// Ends the held connect of generation `generation` at `at` (its answer, or the moment the
    /// client went away): when it is still the current one, the session is no longer held, its
    /// browser slot is given back, its expiry restarts from `at` and, if `drain` and the session
    /// is open, the waiting messages are taken for the reply.
    pub(crate) fn end_hold(
        &self,
        generation: u64,
        at: Instant,
        drain: bool,
        timing: &Timing,
    ) -> HoldEnd {
        let mut st = self.state.lock();
        let mut messages = Vec::new();
        if st.hold_gen == generation {
            st.browser_slot = None;
            st.held = false;
            let expires = at + st.grace(timing);
            st.expires = st.expires.max(Some(expires));
            if drain && st.closed.is_none() {
                messages = st.drain_for_connect();
            }
        }
        HoldEnd {
            closed: st.closed,
            messages,
        }
    }

    /// Whether the session would expire at `now` (a cheap pre-check for the sweeper; the
    /// decision itself is [`Session::close`] with `expired_at`).
    pub(crate) fn is_expired(&self, now: Instant) -> bool {
        let st = self.state.lock();
        st.closed.is_none() && !st.held && st.expires.is_some_and(|e| now > e)
    }

    /// Attaches `patterns` as one step: all of them or none when the session has ended or would
    /// exceed `max` subscriptions or `max_bytes` bytes of subscribed names. `added` runs for
    /// each new one while the subscriptions are locked (so that router and listeners follow the
    /// set in the same order as any concurrent detach or close).
    pub(crate) fn attach(
        &self,
        patterns: &[ChannelPattern],
        max: usize,
        max_bytes: usize,
        mut added: impl FnMut(&ChannelPattern),
    ) -> Result<(), AttachError> {
        let mut subs = self.subscriptions.lock();
        if self.is_closed() {
            return Err(AttachError::Closed);
        }
        let new: HashSet<&ChannelPattern> =
            patterns.iter().filter(|p| !subs.set.contains(*p)).collect();
        let new_bytes: usize = new.iter().map(|p| p.as_str().len()).sum();
        if subs.set.len() + new.len() > max || subs.name_bytes + new_bytes > max_bytes {
            return Err(AttachError::TooMany);
        }
        for p in patterns {
            if subs.set.insert(p.clone()) {
                subs.name_bytes += p.as_str().len();
                added(p);
            }
        }
        Ok(())
    }

    /// Detaches `pattern`; `removed` runs while the subscriptions are locked, if it was attached.
    pub(crate) fn detach(&self, pattern: &ChannelPattern, removed: impl FnOnce()) -> bool {
        let mut subs = self.subscriptions.lock();
        let was = subs.set.remove(pattern);
        if was {
            subs.name_bytes -= pattern.as_str().len();
            removed();
        }
        was
    }

    /// Ends the session as one step: marks it closed (only if it is still open and, when
    /// `expired_at` is given, only if it has expired by then), drops its queue, wakes whoever
    /// waits on it, and detaches every subscription, calling `removed` for each while the
    /// subscriptions are locked. Returns whether this call ended it.
    pub(crate) fn close(
        &self,
        reason: RemoveReason,
        expired_at: Option<Instant>,
        mut removed: impl FnMut(&ChannelPattern),
    ) -> bool {
        let mut subs = self.subscriptions.lock();
        let waker = {
            let mut st = self.state.lock();
            if st.closed.is_some() {
                return false;
            }
            if let Some(now) = expired_at
                && (st.held || st.expires.is_none_or(|e| now <= e))
            {
                return false;
            }
            st.closed = Some(reason);
            st.direct = None;
            st.writer_idle = false;
            st.direct_started = false;
            // Its place in the endpoint's budget is free again.
            st.endpoint_slot = None;
            st.queue = VecDeque::new();
            st.oldest_at = None;
            st.drained_at = None;
            st.eager = false;
            if let Some(ack) = st.ack.as_mut() {
                ack.unacked = VecDeque::new();
            }
            st.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
        for p in subs.set.drain() {
            removed(&p);
        }
        *subs = Subscriptions::default();
        if let Some(q) = &self.quota {
            q.give_back();
        }
        true
    }
}

/// The session's lock under the model check: shuttle's mutex, so that its scheduler controls
/// (and explores) every interleaving of the session's locked steps.
#[cfg(feature = "model-check")]
struct Mutex<T>(shuttle::sync::Mutex<T>);

#[cfg(feature = "model-check")]
impl<T> Mutex<T> {
    fn new(value: T) -> Mutex<T> {
        Mutex(shuttle::sync::Mutex::new(value))
    }

    fn lock(&self) -> shuttle::sync::MutexGuard<'_, T> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(all(test, feature = "model-check"))]
mod model_check;

std::thread_local! {
    /// The `now` of the client request being handled on this thread ([`QueuedAt`]), which
    /// stamps a session queue that goes from empty to non-empty. A thread-local rather than an
    /// argument of every publish path: the engine's request handling is synchronous, and the
    /// fan-out reads it only when a queue was empty (no clock read, no per-message field).
    static QUEUED_AT: std::cell::Cell<Option<Instant>> = const { std::cell::Cell::new(None) };
}

/// The time of the request being handled on this thread, if any.
fn queued_at() -> Option<Instant> {
    QUEUED_AT.with(|t| t.get())
}

/// While alive, messages queued on this thread are stamped with `now` (the engine sets it for
/// the duration of a client's batch); the previous value comes back when it is dropped.
pub(crate) struct QueuedAt(Option<Instant>);

impl QueuedAt {
    pub(crate) fn enter(now: Instant) -> QueuedAt {
        QueuedAt(QUEUED_AT.with(|t| t.replace(Some(now))))
    }
}

impl Drop for QueuedAt {
    fn drop(&mut self) {
        QUEUED_AT.with(|t| t.set(self.0));
    }
}

/// Whether `installed` is `writer` (the same object).
fn is_writer(installed: &Option<Arc<dyn DirectWrite>>, writer: &Arc<dyn DirectWrite>) -> bool {
    installed
        .as_ref()
        .is_some_and(|w| std::ptr::addr_eq(Arc::as_ptr(w), Arc::as_ptr(writer)))
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
            Owner::default(),
            TransportKind::WebSocket,
            None,
            max,
            policy,
            &Timing::of(&crate::EngineConfig::default()),
            Some(Instant::now()),
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
            s.offer(&Framed::from_object(&[b'0' + i]), false, &mut 0);
        }
        let got: Vec<u8> = s
            .take_messages()
            .iter()
            .map(|b| b.object()[0] - b'0')
            .collect();
        assert_eq!(got, [7, 8, 9]);
        assert_eq!(s.dropped(), 7);
    }

    #[test]
    fn a_queue_is_stamped_once_by_the_request_that_starts_it() {
        let s = session(10, OverflowPolicy::DropOldest);
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_millis(5);
        {
            let _at = QueuedAt::enter(t0);
            s.offer(&Framed::from_object(b"1"), false, &mut 0);
        }
        {
            let _at = QueuedAt::enter(t1);
            s.offer(&Framed::from_object(b"2"), false, &mut 0);
        }
        let mut out = Vec::new();
        assert_eq!(
            s.take_messages_since(&mut out),
            Some(t0),
            "the oldest's time"
        );
        assert_eq!(out.len(), 2);
        assert_eq!(s.take_messages_since(&mut out), None, "nothing taken");
        // Outside a request: no time, and the guard gave the previous one (none) back.
        assert_eq!(queued_at(), None);
        s.offer(&Framed::from_object(b"3"), false, &mut 0);
        assert_eq!(s.take_messages_since(&mut out), None);
        {
            let _at = QueuedAt::enter(t1);
            s.offer(&Framed::from_object(b"4"), false, &mut 0);
        }
        assert_eq!(s.take_messages_since(&mut out), Some(t1));
    }

    #[test]
    fn a_connect_reply_keeps_the_time_of_its_oldest_message_for_the_transport() {
        let timing = Timing::of(&crate::EngineConfig::default());
        let s = Session::new(
            Owner::default(),
            TransportKind::LongPolling,
            None,
            10,
            OverflowPolicy::DropOldest,
            &timing,
            Some(Instant::now()),
        );
        let t0 = Instant::now();
        {
            let _at = QueuedAt::enter(t0);
            s.offer(&Framed::from_object(b"1"), false, &mut 0);
            s.offer(&Framed::from_object(b"2"), false, &mut 0);
        }
        // Polling sessions are not written from the queue directly.
        assert_eq!(s.take_messages_since(&mut Vec::new()), None);
        let Ok(ConnectStart::Answer { messages, .. }) = s.begin_connect(t0, false, None, &timing)
        else {
            panic!("a first connect is answered at once");
        };
        assert_eq!(messages.len(), 2);
        assert_eq!(s.take_drained_since(), Some(t0));
        assert_eq!(s.take_drained_since(), None, "collected once");
        // A reply without messages leaves no time behind.
        {
            let _at = QueuedAt::enter(t0);
            s.offer(&Framed::from_object(b"3"), false, &mut 0);
        }
        s.begin_connect(t0, false, None, &timing).unwrap();
        s.begin_connect(t0, false, None, &timing).unwrap();
        assert_eq!(
            s.take_drained_since(),
            None,
            "the last reply carried nothing"
        );
    }

    #[test]
    fn disconnect_policy_refuses_at_bound() {
        let s = session(2, OverflowPolicy::Disconnect);
        assert_eq!(
            s.offer(&Framed::from_object(b"1"), false, &mut 0),
            Offer::Queued
        );
        assert_eq!(
            s.offer(&Framed::from_object(b"2"), false, &mut 0),
            Offer::Queued
        );
        assert_eq!(
            s.offer(&Framed::from_object(b"3"), false, &mut 0),
            Offer::Refused
        );
        assert_eq!(s.queue_len(), 2);
        assert!(s.close(RemoveReason::Disconnected, None, |_| {}));
        assert_eq!(
            s.offer(&Framed::from_object(b"4"), false, &mut 0),
            Offer::Closed
        );
    }
}
