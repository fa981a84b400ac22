//! The engine: meta handlers, publish, the in-process API, expiry.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use parking_lot::RwLock;
use serde::Serialize;
use serde_json::value::RawValue;

use crate::authz::{AsyncSecurityPolicy, Authorized, Authorizer, Authorizers, Operation};
use crate::channel::{ChannelId, ChannelKind, ChannelPattern};
use crate::channels::{Change, ChannelHandle, ChannelSettings, Channels, Recipient};
use crate::codec::{Advice, Framed, Limits, Message, MessageId, Raw, Reply};
use crate::error::{Error, Failure, Reconnect};
use crate::ext::{Decision, Extension, Listener, RequestContext, SecurityPolicy};
use crate::introspect::{
    ChannelInfo, ID_PREFIX_LEN, MAX_SUBSCRIPTIONS_LISTED, Page, SessionInfo, smallest,
};
use crate::remote::{Calls, RemoteCall, Responder, Start};
use crate::router::{Backplane, FanOut, Router};
use crate::session::{
    AttachError, ConnectStart, Delivery, LocalCallback, Offer, OverflowPolicy, Owner, RemoveReason,
    Session, Slots, Timing, TransportKind, Wake,
};

/// Engine settings. Every field has a default matching CometD's where CometD has one.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// How long a `/meta/connect` is held with nothing to deliver, ms (advice `timeout`).
    pub timeout_ms: u64,
    /// Pause the client makes between connects, ms (advice `interval`).
    pub interval_ms: u64,
    /// How long a session lives without hearing from its client, ms: every message it sends
    /// extends its life to at least now + `max_interval`; a connect reply (or the end of a held
    /// connect) to `interval + max_interval` from then; a held connect keeps it alive.
    pub max_interval_ms: u64,
    /// Upper bound on a client-requested `advice.timeout`, ms.
    pub max_client_timeout_ms: u64,
    /// Connection types offered, in order of preference.
    pub transports: Vec<TransportKind>,
    /// Bound of each session's outbound queue (messages).
    pub max_queue: usize,
    /// What happens at that bound.
    pub overflow: OverflowPolicy,
    /// Maximum number of remote sessions of each endpoint (mount path): every endpoint has its
    /// own budget, so a flood of handshakes on one cannot lock users out of another. Handshakes
    /// beyond it are refused with `503::too_many_sessions`.
    pub max_sessions: usize,
    /// Maximum total bytes of the names one session is subscribed to (with
    /// `max_subscriptions`, what one session's subscriptions may cost).
    pub max_subscription_bytes: usize,
    /// Maximum subscriptions of one session.
    pub max_subscriptions: usize,
    /// Whether a publisher receives its own broadcast when subscribed.
    pub broadcast_to_publisher: bool,
    /// Long polls held at once per browser (HTTP/1.1); 0 means unlimited.
    pub max_sessions_per_browser: usize,
    /// Interval advised to the extra sessions of one browser, ms.
    pub multi_session_interval_ms: u64,
    /// Refuse messages of browser-bound sessions that arrive without a browser id.
    pub strict_browser: bool,
    /// Advertise `maxInterval` in advice so clients re-handshake by themselves.
    pub advertise_max_interval: bool,
    /// Codec limits.
    pub limits: Limits,
    /// Remote calls waiting for their answer, in the whole engine; a call beyond it is refused
    /// with `503::too_many_remote_calls`.
    pub max_remote_calls: usize,
    /// Remote calls one session may have waiting for their answer.
    pub max_remote_calls_per_session: usize,
    /// How long messages of lazy channels may wait for a non-lazy message, ms (CometD's
    /// `maxLazyTimeout`). Checked by [`Engine::sweep`], so they wait up to one sweep period
    /// longer.
    pub max_lazy_ms: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            timeout_ms: 30_000,
            interval_ms: 0,
            max_interval_ms: 10_000,
            max_client_timeout_ms: 120_000,
            transports: vec![
                TransportKind::WebSocket,
                TransportKind::LongPolling,
                TransportKind::CallbackPolling,
            ],
            max_queue: 4096,
            overflow: OverflowPolicy::DropOldest,
            max_sessions: 100_000,
            max_subscriptions: 1024,
            max_subscription_bytes: 32 * 1024,
            broadcast_to_publisher: true,
            max_sessions_per_browser: 1,
            multi_session_interval_ms: 2000,
            strict_browser: false,
            advertise_max_interval: false,
            limits: Limits::default(),
            max_remote_calls: 10_000,
            max_remote_calls_per_session: 64,
            max_lazy_ms: 5000,
        }
    }
}

/// Engine counters, for metrics.
#[derive(Debug, Default)]
pub struct Stats {
    /// Inbound messages handled.
    pub messages_in: AtomicU64,
    /// Messages put in session queues or handed to local sessions (refused ones are not
    /// counted).
    pub deliveries: AtomicU64,
    /// Messages dropped at a full queue (the oldest one dropped for a new one, or the new one
    /// refused under [`OverflowPolicy::Disconnect`]).
    pub queue_drops: AtomicU64,
    /// Of `queue_drops`, messages that had been sent to an ack-extension client and were not
    /// yet acknowledged: if that send is lost, the client never sees them.
    pub unacked_drops: AtomicU64,
    /// Sessions created.
    pub sessions_created: AtomicU64,
    /// Sessions removed.
    pub sessions_removed: AtomicU64,
    /// Connects currently held.
    pub held_connects: AtomicU64,
}

/// The answer to a batch.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Serialized replies (and, in connect replies, deliveries), in order.
    pub replies: Vec<Framed>,
    /// A `/meta/connect` to hold: complete it with [`Engine::finish_hold`].
    pub hold: Option<Hold>,
    /// The session the batch was about (created by a handshake, or named by the messages).
    pub session: Option<Arc<Session>>,
    /// Whether a handshake created `session` in this batch.
    pub handshake: bool,
}

/// A held `/meta/connect`: "answer when this session has messages, or at `deadline`".
///
/// Dropping it unanswered (the client went away) ends the hold: the session then expires from
/// the deadline the connect would have had.
#[derive(Debug)]
pub struct Hold {
    session: Arc<Session>,
    generation: u64,
    deadline: Instant,
    /// When the hold started (the `now` of the request that brought the connect).
    since: Instant,
    /// The connect's `id` and `ext`, all its reply and the outgoing extensions need: the rest of
    /// the request is not kept for the life of the hold.
    id: Option<MessageId>,
    ext: Option<Raw>,
    /// The `held_connects` gauge, and the session timing for the expiry when the hold ends.
    stats: Arc<Stats>,
    timing: Timing,
    finished: bool,
}

impl Hold {
    /// When the connect must be answered at the latest.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// The session.
    pub fn session(&self) -> &Arc<Session> {
        &self.session
    }

    /// When the hold started: the `now` of the request that brought the connect (a transport
    /// measures how long connects are held with it).
    pub fn since(&self) -> Instant {
        self.since
    }

    /// Ready when messages arrive, a newer connect supersedes this one, or the session ends.
    pub fn poll_wake(&self, cx: &mut Context<'_>) -> Poll<Wake> {
        self.session.poll_hold(cx, self.generation)
    }

    /// Waits for [`Hold::poll_wake`].
    pub async fn wake(&self) -> Wake {
        std::future::poll_fn(|cx| self.poll_wake(cx)).await
    }

    /// The client went away at `now` without taking the answer (its socket closed): the hold
    /// ends, and the session expires from `now` unless the client comes back. (Dropping a
    /// `Hold` does the same from its deadline, the latest the client could have been waiting.)
    pub fn abandon(mut self, now: Instant) {
        self.end(now, false);
    }

    fn end(&mut self, at: Instant, drain: bool) -> crate::session::HoldEnd {
        self.finished = true;
        self.stats.held_connects.fetch_sub(1, Ordering::Relaxed);
        self.session
            .end_hold(self.generation, at, drain, &self.timing)
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        if !self.finished {
            self.end(self.deadline, false);
        }
    }
}

struct Inner {
    config: EngineConfig,
    timing: Timing,
    sessions: DashMap<Arc<str>, Arc<Session>>,
    by_principal: DashMap<Arc<str>, Vec<Arc<Session>>>,
    /// Live remote sessions of each endpoint (`""` for requests that name none), counted
    /// against `max_sessions` (reserved before a session is created).
    endpoint_sessions: Arc<Slots>,
    /// Long polls held at once per browser.
    browsers: Arc<Slots>,
    /// The budget key of requests that name no endpoint.
    no_endpoint: Arc<str>,
    router: Router,
    extensions: RwLock<Arc<Vec<Arc<dyn Extension>>>>,
    policy: RwLock<Option<Arc<dyn SecurityPolicy>>>,
    async_policy: RwLock<Option<Arc<dyn AsyncSecurityPolicy>>>,
    authorizers: Authorizers,
    listeners: RwLock<Arc<Vec<Arc<dyn Listener>>>>,
    stats: Arc<Stats>,
    /// Remote-call handlers and the calls waiting for an answer.
    calls: Arc<Calls>,
    /// Live channels: settings and per-channel listeners.
    channels: Arc<Channels>,
}

/// The Bayeux engine. Cheap to clone; all clones share state.
///
/// ```
/// use std::time::Instant;
/// use bayeux_core::{decode_batch, Engine, EngineConfig, RequestContext, TransportKind};
///
/// let engine = Engine::new(EngineConfig::default());
/// let ctx = RequestContext::new(TransportKind::LongPolling);
/// let now = Instant::now();
/// let batch = decode_batch(br#"[{"channel":"/meta/handshake","version":"1.0",
///     "supportedConnectionTypes":["long-polling"],"id":"1"}]"#, &Default::default()).unwrap();
/// let out = engine.handle_batch(&ctx, batch, now);
/// let reply: serde_json::Value = serde_json::from_slice(out.replies[0].object()).unwrap();
/// assert_eq!(reply["successful"], true);
/// let client_id = reply["clientId"].as_str().unwrap();
///
/// // Server-side publish reaches subscribed sessions.
/// let sub = format!(r#"[{{"channel":"/meta/subscribe","clientId":"{client_id}","subscription":"/news"}}]"#);
/// engine.handle_batch(&ctx, decode_batch(sub.as_bytes(), &Default::default()).unwrap(), now);
/// assert_eq!(engine.publish_json("/news", &"hello").unwrap(), 1);
/// ```
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("sessions", &self.inner.sessions.len())
            .field("channels", &self.inner.router.len())
            .finish()
    }
}

/// The one conversion of a security decision into a failure: `denied` for a refusal,
/// `unauthenticated` for missing credentials, and a `Forbidden` message as the whole error text.
fn decide(
    decision: Decision,
    denied: fn(String) -> Failure,
    unauthenticated: fn(String) -> Failure,
) -> Result<(), Failure> {
    match decision {
        Decision::Allow => Ok(()),
        Decision::Deny(r) => Err(denied(r)),
        Decision::Unauthenticated(m) => Err(unauthenticated(m)),
        Decision::Forbidden(m) => Err(Failure::Forbidden(m)),
    }
}

/// A `/meta/handshake` travels alone: when a batch holds one, the other messages are ignored.
fn only_handshake(batch: Vec<Message>) -> Vec<Message> {
    match batch
        .iter()
        .position(|m| m.channel.as_deref() == Some("/meta/handshake"))
    {
        Some(0) if batch.len() == 1 => batch,
        Some(i) => batch.into_iter().skip(i).take(1).collect(),
        None => batch,
    }
}

fn valid_id(id: &MessageId) -> bool {
    let s = id.as_str();
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

impl Engine {
    /// A new engine with no sessions.
    pub fn new(config: EngineConfig) -> Engine {
        let timing = Timing::of(&config);
        Engine {
            inner: Arc::new_cyclic(|weak: &std::sync::Weak<Inner>| Inner {
                calls: {
                    // Answers go through the engine (counters, overflow policy); the registry
                    // holds it weakly, as the engine owns the registry.
                    let weak = weak.clone();
                    Arc::new(Calls::new(
                        Arc::new(move |session: &Arc<Session>, reply: &Framed| {
                            if let Some(inner) = weak.upgrade() {
                                let _ = (Engine { inner }).offer_to(session, reply);
                            }
                        }),
                        config.max_remote_calls,
                        config.max_remote_calls_per_session,
                    ))
                },
                browsers: Slots::new(config.max_sessions_per_browser),
                endpoint_sessions: Slots::new(config.max_sessions),
                no_endpoint: Arc::from(""),
                config,
                timing,
                sessions: DashMap::new(),
                by_principal: DashMap::new(),
                router: Router::default(),
                extensions: RwLock::new(Arc::new(Vec::new())),
                policy: RwLock::new(None),
                async_policy: RwLock::new(None),
                authorizers: Authorizers::default(),
                channels: Arc::new(Channels::default()),
                listeners: RwLock::new(Arc::new(Vec::new())),
                stats: Arc::new(Stats::default()),
            }),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.inner.stats
    }

    /// Number of live sessions (remote and local).
    pub fn session_count(&self) -> usize {
        self.inner.sessions.len()
    }

    /// Long polls currently counted against their browser's limit.
    pub fn browser_slots_taken(&self) -> usize {
        self.inner.browsers.taken()
    }

    /// Number of subscribed channel names and patterns.
    pub fn channel_count(&self) -> usize {
        self.inner.router.len()
    }

    /// Registers an extension; extensions run in registration order.
    pub fn add_extension(&self, ext: Arc<dyn Extension>) {
        let mut w = self.inner.extensions.write();
        let mut v = (**w).clone();
        v.push(ext);
        *w = Arc::new(v);
    }

    /// Sets the security policy.
    pub fn set_security_policy(&self, policy: Arc<dyn SecurityPolicy>) {
        *self.inner.policy.write() = Some(policy);
    }

    /// Sets the asynchronous security policy (see [`AsyncSecurityPolicy`]). Transports run it
    /// through [`Engine::authorize`]; batches handled without it ([`Engine::handle_batch`])
    /// are then refused every handshake, subscribe and publish
    /// (`async_policy_not_consulted`): a policy that is installed is never skipped.
    pub fn set_async_security_policy(&self, policy: Arc<dyn AsyncSecurityPolicy>) {
        *self.inner.async_policy.write() = Some(policy);
    }

    /// Attaches an authorizer to a channel or a wildcard pattern (see [`crate::authz`]).
    pub fn add_authorizer(&self, on: &str, authorizer: Arc<dyn Authorizer>) -> Result<(), Error> {
        let on = ChannelPattern::parse(on)?;
        self.inner.authorizers.add(&on, authorizer);
        Ok(())
    }

    /// Detaches an authorizer (the same `Arc`) from a channel or pattern. Returns whether it was
    /// attached there.
    pub fn remove_authorizer(&self, on: &str, authorizer: &Arc<dyn Authorizer>) -> bool {
        ChannelPattern::parse(on).is_ok_and(|on| self.inner.authorizers.remove(&on, authorizer))
    }

    /// Registers a listener.
    pub fn add_listener(&self, listener: Arc<dyn Listener>) {
        let mut w = self.inner.listeners.write();
        let mut v = (**w).clone();
        v.push(listener);
        *w = Arc::new(v);
    }

    /// Installs the cross-node backplane.
    pub fn set_backplane(&self, backplane: Arc<dyn Backplane>) {
        self.inner.router.set_backplane(backplane);
    }

    fn listeners(&self) -> Arc<Vec<Arc<dyn Listener>>> {
        self.inner.listeners.read().clone()
    }

    fn extensions(&self) -> Arc<Vec<Arc<dyn Extension>>> {
        self.inner.extensions.read().clone()
    }

    /// Looks a session up by id.
    pub fn session(&self, id: &str) -> Option<Arc<Session>> {
        self.inner.sessions.get(id).map(|s| s.clone())
    }

    /// The live sessions of `principal`.
    pub fn sessions_of(&self, principal: &str) -> Vec<Arc<Session>> {
        self.inner
            .by_principal
            .get(principal)
            .map(|v| v.clone())
            .unwrap_or_default()
    }

    fn advice(&self, reconnect: Reconnect, session: Option<&Session>) -> Advice {
        let c = &self.inner.config;
        let (timeout, interval) = match session {
            Some(s) => s.timeout_and_interval(&self.inner.timing),
            None => (c.timeout_ms, c.interval_ms),
        };
        Advice {
            reconnect,
            interval: if reconnect == Reconnect::Handshake {
                0
            } else {
                interval
            },
            timeout,
            max_interval: c.advertise_max_interval.then_some(c.max_interval_ms),
            multiple_clients: false,
        }
    }

    fn failure(&self, msg: &Message, channel: Option<&str>, failure: Failure) -> Reply {
        let mut r = Reply::new(channel, msg.id.clone(), false);
        r.error = Some(failure.error_string());
        let mut advice = self.advice(failure.reconnect(), None);
        if failure == Failure::TooManySessions {
            // Back off instead of handshaking again at once while the server is full.
            advice.interval = self.inner.config.multi_session_interval_ms.max(1000);
        }
        r.advice = Some(advice);
        if let Some(sub) = &msg.subscription
            && matches!(channel, Some("/meta/subscribe" | "/meta/unsubscribe"))
        {
            r.subscription = Some(sub.clone());
        }
        r
    }

    /// The answer to a request or frame the codec refused (see [`crate::decode_batch`]): the
    /// failure from the core's error map, with complete advice. It echoes nothing, since nothing
    /// could be read.
    pub fn refusal(&self, error: &Error) -> Framed {
        #[derive(Serialize)]
        struct Refusal {
            successful: bool,
            error: String,
            advice: Advice,
        }
        Framed::encode(&Refusal {
            successful: false,
            error: error.bayeux_error(),
            advice: self.advice(Reconnect::Retry, None),
        })
    }

    /// Finds the session a message names, checking that the request may use it: the session
    /// exists and is open, and the request's principal and browser are the session's own.
    fn find_session(&self, ctx: &RequestContext, msg: &Message) -> Result<Arc<Session>, Failure> {
        let id = msg.client_id.as_deref().ok_or(Failure::SessionUnknown)?;
        let session = self.session(id).ok_or(Failure::SessionUnknown)?;
        if session.is_local() || session.is_closed() {
            return Err(Failure::SessionUnknown);
        }
        if session.principal() != ctx.principal.as_deref() {
            return Err(Failure::SessionUnknown);
        }
        match (session.browser(), ctx.browser.as_deref()) {
            (Some(a), Some(b)) if a != b => return Err(Failure::SessionUnknown),
            (Some(_), None) if self.inner.config.strict_browser => {
                return Err(Failure::SessionUnknown);
            }
            _ => {}
        }
        Ok(session)
    }

    /// Handles one decoded batch from a remote client.
    ///
    /// A `/meta/handshake` travels alone: when a batch holds one, the other messages are ignored
    /// (Bayeux 1.0, 4.1.1). At most one connect per batch is held; a second one in the same batch
    /// supersedes the first.
    ///
    /// With an [`AsyncSecurityPolicy`] installed, use [`Engine::authorize`] and
    /// [`Engine::handle_authorized`] instead: here its checks fail closed.
    pub fn handle_batch(&self, ctx: &RequestContext, batch: Vec<Message>, now: Instant) -> Outcome {
        self.handle_authorized(
            ctx,
            Authorized {
                batch,
                decisions: Vec::new(),
            },
            now,
        )
    }

    /// Runs the asynchronous security policy on a batch (concurrently with other requests: it
    /// never blocks the runtime), for [`Engine::handle_authorized`]. Without a policy it is
    /// ready at once and allocates nothing.
    pub fn authorize<'a>(
        &'a self,
        ctx: &'a RequestContext,
        batch: Vec<Message>,
    ) -> impl std::future::Future<Output = Authorized> + Send + 'a {
        let policy = self.inner.async_policy.read().clone();
        async move {
            let batch = only_handshake(batch);
            let Some(policy) = policy else {
                return Authorized {
                    batch,
                    decisions: Vec::new(),
                };
            };
            let mut decisions = Vec::with_capacity(batch.len());
            for msg in &batch {
                decisions.push(self.ask_async(&*policy, ctx, msg).await);
            }
            Authorized { batch, decisions }
        }
    }

    /// The asynchronous policy's decision on one message, when one applies.
    async fn ask_async(
        &self,
        policy: &dyn AsyncSecurityPolicy,
        ctx: &RequestContext,
        msg: &Message,
    ) -> Option<Decision> {
        let channel = msg.channel.as_deref()?;
        if channel == "/meta/handshake" {
            return Some(policy.can_handshake(ctx, msg).await);
        }
        let session = self.find_session(ctx, msg).ok()?;
        match channel {
            "/meta/subscribe" => {
                let patterns = self.parse_subscription(msg).ok()?;
                for p in &patterns {
                    let d = policy.can_subscribe(&session, p, msg).await;
                    if d != Decision::Allow {
                        return Some(d);
                    }
                }
                Some(Decision::Allow)
            }
            c if c.starts_with("/meta/") => None,
            c => {
                let id = ChannelId::parse(c).ok()?;
                Some(policy.can_publish(&session, &id, msg).await)
            }
        }
    }

    /// Handles a batch whose asynchronous checks have run ([`Engine::authorize`]); otherwise
    /// as [`Engine::handle_batch`].
    pub fn handle_authorized(
        &self,
        ctx: &RequestContext,
        authorized: Authorized,
        now: Instant,
    ) -> Outcome {
        // Messages this batch queues are stamped with `now` (see `Session::take_messages_since`).
        let _queued_at = crate::session::QueuedAt::enter(now);
        let mut out = Outcome::default();
        let Authorized { batch, decisions } = authorized;
        let batch = only_handshake(batch);
        let mut decisions = decisions.into_iter();
        let async_policy = self.inner.async_policy.read().is_some();
        let extensions = self.extensions();
        for mut msg in batch {
            let pre = decisions.next().flatten();
            // A batch the policy did not see, or a message it was not asked about (one with no
            // live session, refused below anyway), fails closed.
            let pre = async_policy.then(|| {
                pre.unwrap_or_else(|| Decision::Deny("async_policy_not_consulted".into()))
            });
            self.inner.stats.messages_in.fetch_add(1, Ordering::Relaxed);
            // The one lookup of the message's session; hearing from a client keeps its session
            // alive, whatever the message (CometD's `cancelExpiration`).
            let session = self.find_session(ctx, &msg).ok();
            if let Some(s) = &session {
                s.touch(now, &self.inner.timing);
            }
            if !extensions
                .iter()
                .all(|e| e.incoming(session.as_ref(), &mut msg))
            {
                let reply = self.failure(&msg, msg.channel.as_deref(), Failure::MessageDeleted);
                out.replies.push(reply.encode());
                continue;
            }
            let (reply, session) = self.handle_one(ctx, &msg, session, pre, now, &mut out);
            if let Some(mut reply) = reply {
                for e in extensions.iter() {
                    e.outgoing(session.as_ref(), &msg, &mut reply);
                }
                out.replies.push(reply.encode());
            }
            if out.session.is_none() {
                out.session = session;
            }
        }
        out
    }

    fn handle_one(
        &self,
        ctx: &RequestContext,
        msg: &Message,
        found: Option<Arc<Session>>,
        pre: Option<Decision>,
        now: Instant,
        out: &mut Outcome,
    ) -> (Option<Reply>, Option<Arc<Session>>) {
        let Some(channel) = msg.channel.as_deref() else {
            return (Some(self.failure(msg, None, Failure::ChannelMissing)), None);
        };
        if let Some(id) = &msg.id
            && !valid_id(id)
        {
            return (
                Some(self.failure(msg, Some(channel), Failure::MessageIdInvalid)),
                None,
            );
        }
        let result = match channel {
            "/meta/handshake" => self.handshake(ctx, msg, pre, now).map(|(r, s)| {
                out.handshake = true;
                (Some(r), s)
            }),
            "/meta/connect" => self.connect(ctx, msg, found, now, out),
            "/meta/subscribe" => self.subscribe(msg, found, pre).map(|(r, s)| (Some(r), s)),
            "/meta/unsubscribe" => self.unsubscribe(msg, found).map(|(r, s)| (Some(r), s)),
            "/meta/disconnect" => self.disconnect(msg, found).map(|(r, s)| (Some(r), s)),
            _ => self
                .publish_remote(msg, found, pre, now)
                .map(|(r, s)| (Some(r), s)),
        };
        match result {
            Ok((r, s)) => (r, Some(s)),
            Err(f) => (Some(self.failure(msg, Some(channel), f)), None),
        }
    }

    fn handshake(
        &self,
        ctx: &RequestContext,
        msg: &Message,
        pre: Option<Decision>,
        now: Instant,
    ) -> Result<(Reply, Arc<Session>), Failure> {
        let c = &self.inner.config;
        if let Some(min) = msg.minimum_version.as_deref()
            && min
                .split('.')
                .next()
                .and_then(|m| m.trim().parse::<u32>().ok())
                .unwrap_or(1)
                > 1
        {
            return Err(Failure::VersionUnsupported);
        }
        if !c.transports.contains(&ctx.transport) {
            return Err(Failure::ConnectionTypeUnsupported);
        }
        if let Some(types) = &msg.supported_connection_types
            && !types
                .iter()
                .filter_map(|t| TransportKind::from_name(t))
                .any(|t| c.transports.contains(&t))
        {
            return Err(Failure::ConnectionTypeUnsupported);
        }
        // The place in the endpoint's budget is taken first, so concurrent handshakes cannot
        // together pass it; a refusal below drops it again.
        let endpoint = ctx.endpoint.as_ref().unwrap_or(&self.inner.no_endpoint);
        let endpoint_slot = self
            .inner
            .endpoint_sessions
            .take(endpoint)
            .ok_or(Failure::TooManySessions)?;
        if let Some(policy) = self.inner.policy.read().clone() {
            decide(
                policy.can_handshake(ctx, msg),
                Failure::HandshakeDenied,
                Failure::Unauthorized,
            )?;
        }
        if let Some(d) = pre {
            decide(d, Failure::HandshakeDenied, Failure::Unauthorized)?;
        }
        if let Some(quota) = &ctx.connection
            && !quota.take()
        {
            return Err(Failure::TooManySessions);
        }
        let session = Arc::new(Session::new(
            Owner {
                principal: ctx.principal.clone(),
                browser: ctx.browser.clone(),
                endpoint: Some(endpoint_slot),
                quota: ctx.connection.clone(),
            },
            ctx.transport,
            None,
            c.max_queue,
            c.overflow,
            &self.inner.timing,
            Some(now),
        ));
        self.add_session(&session);
        let mut r = Reply::new(Some("/meta/handshake"), msg.id.clone(), true);
        r.version = Some("1.0");
        r.minimum_version = Some("1.0");
        r.client_id = Some(session.id().as_str().to_owned());
        r.supported_connection_types =
            Some(c.transports.iter().map(|t| t.name().to_owned()).collect());
        r.advice = Some(self.advice(Reconnect::Retry, Some(&session)));
        Ok((r, session))
    }

    /// Makes a session visible. Listeners hear of it before anything can find it, so that its
    /// `session_added` comes before any other event of it. It is indexed by principal before by
    /// id; should a removal slip in between (it can only find the session through one of the two
    /// maps), the recheck below takes it out of both again.
    fn add_session(&self, session: &Arc<Session>) {
        for l in self.listeners().iter() {
            l.session_added(session);
        }
        if let Some(p) = session.principal() {
            self.inner
                .by_principal
                .entry(Arc::from(p))
                .or_default()
                .push(session.clone());
        }
        self.inner
            .sessions
            .insert(Arc::from(session.id().as_str()), session.clone());
        self.inner
            .stats
            .sessions_created
            .fetch_add(1, Ordering::Relaxed);
        if session.is_closed() {
            self.forget(session);
        }
    }

    /// Live remote sessions created on `endpoint`.
    pub fn endpoint_sessions(&self, endpoint: &str) -> usize {
        self.inner.endpoint_sessions.taken_by(endpoint)
    }

    /// Takes a session out of the lookup maps (idempotent).
    fn forget(&self, session: &Arc<Session>) {
        self.inner
            .sessions
            .remove_if(session.id().as_str(), |_, s| s.key() == session.key());
        if let Some(p) = session.principal() {
            self.inner.by_principal.remove_if_mut(p, |_, v| {
                v.retain(|s| s.key() != session.key());
                v.is_empty()
            });
        }
    }

    fn connect(
        &self,
        ctx: &RequestContext,
        msg: &Message,
        found: Option<Arc<Session>>,
        now: Instant,
        out: &mut Outcome,
    ) -> Result<(Option<Reply>, Arc<Session>), Failure> {
        let session = found.ok_or(Failure::SessionUnknown)?;
        if let Some(ct) = msg.connection_type.as_deref()
            && TransportKind::from_name(ct)
                .is_none_or(|t| !self.inner.config.transports.contains(&t))
        {
            return Err(Failure::ConnectionTypeUnsupported);
        }
        let timing = &self.inner.timing;
        // This session's hold time for this connect: the client's advice overrides the default,
        // for this connect only when it asks for 0 (an immediate answer).
        let immediate_request = msg.advice.as_ref().and_then(|a| a.timeout) == Some(0.0);
        if !immediate_request && let Some(a) = &msg.advice {
            session.apply_advice(a.timeout, a.interval, timing);
        }
        let (timeout, _) = session.timeout_and_interval(timing);
        // Multiple clients: a long poll beyond its browser's allowance is answered at once.
        let c = &self.inner.config;
        let slots = (ctx.transport.is_polling() && !ctx.http2 && c.max_sessions_per_browser > 0)
            .then_some(&self.inner.browsers);
        let start = session
            .begin_connect(now, !immediate_request && timeout > 0, slots, timing)
            .map_err(|_| Failure::SessionUnknown)?;
        let (messages, multiple) = match start {
            ConnectStart::Hold { generation } => {
                self.inner
                    .stats
                    .held_connects
                    .fetch_add(1, Ordering::Relaxed);
                // Two connects in one batch: the first is answered (empty, superseded) now.
                if let Some(old) = out.hold.take() {
                    out.replies.extend(self.finish_hold(old, now));
                }
                out.hold = Some(Hold {
                    session: session.clone(),
                    generation,
                    deadline: now + Duration::from_millis(timeout),
                    since: now,
                    id: msg.id.clone(),
                    ext: msg.ext.clone(),
                    stats: self.inner.stats.clone(),
                    timing: *timing,
                    finished: false,
                });
                return Ok((None, session));
            }
            ConnectStart::Answer { messages, multiple } => (messages, multiple),
        };
        out.replies.extend(messages);
        let mut r = Reply::new(Some("/meta/connect"), msg.id.clone(), true);
        let mut advice = self.advice(Reconnect::Retry, Some(&session));
        if multiple {
            advice.multiple_clients = true;
            if c.multi_session_interval_ms == 0 {
                // CometD: without a polling interval for extra tabs, they are told to stop.
                r.successful = false;
                advice.reconnect = Reconnect::None;
            } else {
                advice.interval = c.multi_session_interval_ms;
            }
        }
        r.advice = Some(advice);
        Ok((Some(r), session))
    }

    /// Completes a held connect: the reply carries the session's queued messages (unless the
    /// connect was superseded by a newer one) followed by the `/meta/connect` reply.
    pub fn finish_hold(&self, mut hold: Hold, now: Instant) -> Vec<Framed> {
        let end = hold.end(now, true);
        let session = hold.session.clone();
        let mut out = end.messages;
        // What outgoing extensions see of a held connect: its channel, `id` and `ext`.
        let request = Message {
            channel: Some("/meta/connect".to_owned()),
            id: hold.id.take(),
            ext: hold.ext.take(),
            ..Message::default()
        };
        let mut r = Reply::new(Some("/meta/connect"), request.id.clone(), true);
        let closed = end.closed;
        if closed == Some(RemoveReason::Disconnected) {
            // The client asked to disconnect: its pending connect succeeds and says stop, as
            // CometD does (a failure here would make the client report a failed disconnect).
            r.advice = Some(self.advice(Reconnect::None, None));
        } else if closed.is_some() {
            r.successful = false;
            r.error = Some(Failure::SessionUnknown.error_string());
            r.advice = Some(self.advice(Reconnect::Handshake, None));
        } else {
            r.advice = Some(self.advice(Reconnect::Retry, Some(&session)));
        }
        for e in self.extensions().iter() {
            e.outgoing(Some(&session), &request, &mut r);
        }
        out.push(r.encode());
        out
    }

    fn parse_subscription(&self, msg: &Message) -> Result<Vec<ChannelPattern>, Failure> {
        let sub = msg
            .subscription
            .as_ref()
            .ok_or(Failure::SubscriptionMissing)?;
        if sub.names().is_empty() {
            return Err(Failure::SubscriptionMissing);
        }
        sub.names()
            .iter()
            .map(|n| ChannelPattern::parse(n).map_err(|_| Failure::SubscriptionInvalid))
            .collect()
    }

    fn subscribe(
        &self,
        msg: &Message,
        found: Option<Arc<Session>>,
        pre: Option<Decision>,
    ) -> Result<(Reply, Arc<Session>), Failure> {
        let session = found.ok_or(Failure::SessionUnknown)?;
        let patterns = self.parse_subscription(msg)?;
        let policy = self.inner.policy.read().clone();
        for p in &patterns {
            if p.kind() == ChannelKind::Meta {
                return Err(Failure::SubscribeDenied("denied_by_security_policy".into()));
            }
            if let Some(policy) = &policy {
                decide(
                    policy.can_subscribe(&session, p, msg),
                    Failure::SubscribeDenied,
                    Failure::SubscribeDenied,
                )?;
            }
        }
        if let Some(d) = pre {
            decide(d, Failure::SubscribeDenied, Failure::SubscribeDenied)?;
        }
        let authorizers = &self.inner.authorizers;
        if !authorizers.is_empty() {
            for p in &patterns {
                if !self.inner.router.has_entry(p.as_str()) {
                    authorizers
                        .decide(Operation::Create, p, &session, msg)
                        .map_err(Failure::CreateDenied)?;
                }
                authorizers
                    .decide(Operation::Subscribe, p, &session, msg)
                    .map_err(Failure::SubscribeDenied)?;
            }
        }
        // Remote subscriptions to /service/** are accepted but never recorded: service messages
        // go to server-side sessions only.
        let patterns: Vec<ChannelPattern> = patterns
            .into_iter()
            .filter(|p| p.kind() != ChannelKind::Service)
            .collect();
        match self.attach(&session, &patterns, self.inner.config.max_subscriptions) {
            Ok(_) => {}
            Err(AttachError::Closed) => return Err(Failure::SessionUnknown),
            Err(AttachError::TooMany) => {
                return Err(Failure::SubscribeDenied("too_many_subscriptions".into()));
            }
        }
        let mut r = Reply::new(Some("/meta/subscribe"), msg.id.clone(), true);
        r.subscription = msg.subscription.clone();
        Ok((r, session))
    }

    /// The one way a subscription is added: the session's set, the router and the listeners
    /// change together, in one step of the session (see [`Session`]).
    /// Returns how many of `patterns` were new.
    fn attach(
        &self,
        session: &Arc<Session>,
        patterns: &[ChannelPattern],
        max: usize,
    ) -> Result<usize, AttachError> {
        let listeners = self.listeners();
        let mut added = 0;
        session.attach(
            patterns,
            max,
            self.inner.config.max_subscription_bytes,
            |p| {
                added += 1;
                // The channel exists (initialized) before anything is routed to it.
                let (channel, created) = self.inner.channels.ensure(p, false, |_| {});
                self.inner.channels.unpin(p.as_str());
                self.inner.router.subscribe(p, session);
                if created {
                    for l in listeners.iter() {
                        l.channel_added(channel.name());
                    }
                }
                for l in listeners.iter() {
                    l.subscribed(session, p);
                }
                if let Some(ls) = self.inner.channels.subscription_listeners(p.as_str()) {
                    for l in ls.iter() {
                        l(session, p, true);
                    }
                }
            },
        )?;
        Ok(added)
    }

    /// The one way a subscription is removed (the counterpart of [`Engine::attach`]).
    fn detach(&self, session: &Arc<Session>, pattern: &ChannelPattern) -> bool {
        session.detach(pattern, || {
            self.unrouted(session, pattern, &self.listeners())
        })
    }

    fn unrouted(
        &self,
        session: &Arc<Session>,
        pattern: &ChannelPattern,
        listeners: &[Arc<dyn Listener>],
    ) {
        let (_, gone) = self
            .inner
            .router
            .unsubscribe_reporting(pattern, session.key());
        for l in listeners {
            l.unsubscribed(session, pattern);
        }
        if let Some(ls) = self.inner.channels.subscription_listeners(pattern.as_str()) {
            for l in ls.iter() {
                l(session, pattern, false);
            }
        }
        if gone && let Change::Removed(name) = self.inner.channels.released(pattern) {
            for l in listeners {
                l.channel_removed(&name);
            }
        }
    }

    fn unsubscribe(
        &self,
        msg: &Message,
        found: Option<Arc<Session>>,
    ) -> Result<(Reply, Arc<Session>), Failure> {
        let session = found.ok_or(Failure::SessionUnknown)?;
        let patterns = self.parse_subscription(msg)?;
        for p in patterns {
            self.detach(&session, &p);
        }
        let mut r = Reply::new(Some("/meta/unsubscribe"), msg.id.clone(), true);
        r.subscription = msg.subscription.clone();
        Ok((r, session))
    }

    fn disconnect(
        &self,
        msg: &Message,
        found: Option<Arc<Session>>,
    ) -> Result<(Reply, Arc<Session>), Failure> {
        let session = found.ok_or(Failure::SessionUnknown)?;
        self.remove_session(&session, RemoveReason::Disconnected);
        let r = Reply::new(Some("/meta/disconnect"), msg.id.clone(), true);
        Ok((r, session))
    }

    fn publish_remote(
        &self,
        msg: &Message,
        found: Option<Arc<Session>>,
        pre: Option<Decision>,
        now: Instant,
    ) -> Result<(Reply, Arc<Session>), Failure> {
        let name = msg.channel.as_deref().unwrap_or_default();
        let channel = ChannelId::parse(name).map_err(|_| Failure::ChannelInvalid)?;
        let session = found.ok_or(Failure::SessionUnknown)?;
        if channel.kind() == ChannelKind::Meta {
            return Err(Failure::PublishDenied("denied_by_security_policy".into()));
        }
        let data = msg.data.as_ref().ok_or(Failure::DataMissing)?;
        if let Some(policy) = self.inner.policy.read().clone() {
            decide(
                policy.can_publish(&session, &channel, msg),
                Failure::PublishDenied,
                Failure::PublishDenied,
            )?;
        }
        if let Some(d) = pre {
            decide(d, Failure::PublishDenied, Failure::PublishDenied)?;
        }
        let authorizers = &self.inner.authorizers;
        if !authorizers.is_empty() {
            let target =
                ChannelPattern::parse(channel.as_str()).map_err(|_| Failure::ChannelInvalid)?;
            if !self.inner.router.has_entry(channel.as_str()) {
                authorizers
                    .decide(Operation::Create, &target, &session, msg)
                    .map_err(Failure::CreateDenied)?;
            }
            authorizers
                .decide(Operation::Publish, &target, &session, msg)
                .map_err(Failure::PublishDenied)?;
        }
        if channel.kind() == ChannelKind::Service {
            match self
                .inner
                .calls
                .start(&channel, msg.id.as_ref(), &data.0, &session, now)?
            {
                // The call is answered on its own; the publish itself is acknowledged below
                // (the WebSocket client expects that reply to every message it sends).
                Start::Called => {
                    let r = Reply::new(Some(name), msg.id.clone(), true);
                    return Ok((r, session));
                }
                Start::NoHandler => {}
            }
        }
        self.route_hooked(
            Some(&session),
            &channel,
            &data.0,
            msg.ext.as_ref().map(|e| &*e.0),
            msg.id.as_ref(),
        )?;
        let r = Reply::new(Some(name), msg.id.clone(), true);
        Ok((r, session))
    }

    /// Publishes through the router (which serializes once, fans out and hands broadcasts to the
    /// backplane), then applies what the fan-out reported.
    fn route(&self, delivery: &Delivery<'_>, exclude: Option<u64>, lazy: bool) -> usize {
        let fan_out = self.inner.router.publish(delivery, exclude, lazy);
        let count = self.account(fan_out);
        if delivery.channel.kind() == ChannelKind::Broadcast {
            for l in self.listeners().iter() {
                l.published(delivery.channel, count);
            }
        }
        count
    }

    /// Publishes through the channel's hooks: its message listeners (which may change the data
    /// or veto the message, once, before it is serialized) and its settings (lazy, broadcast to
    /// publisher), then [`Engine::route`]. Returns the number of recipients.
    fn route_hooked(
        &self,
        from: Option<&Arc<Session>>,
        channel: &ChannelId,
        data: &RawValue,
        ext: Option<&RawValue>,
        id: Option<&MessageId>,
    ) -> Result<usize, Failure> {
        let listeners = self.inner.channels.message_listeners(channel);
        let changed = if listeners.is_empty() {
            None
        } else {
            let mut owned = Raw(data.to_owned());
            for l in &listeners {
                if !l(from, channel, &mut owned) {
                    return Err(Failure::MessageDeleted);
                }
            }
            Some(owned)
        };
        let data = changed.as_ref().map_or(data, |r| &*r.0);
        let settings = self.inner.channels.settings(channel).unwrap_or_default();
        let to_publisher = settings
            .broadcast_to_publisher
            .unwrap_or(self.inner.config.broadcast_to_publisher);
        let exclude = from.filter(|_| !to_publisher).map(|s| s.key());
        let delivery = Delivery {
            channel,
            data,
            ext,
            sender: from.map(|s| s.id()),
            id,
        };
        let hooks = self.inner.channels.recipient_hooks(channel);
        if !hooks.is_empty() && channel.kind() == ChannelKind::Broadcast {
            let framed = Framed::delivery(channel.as_str(), data, ext);
            if let Some(bp) = self.inner.router.backplane() {
                bp.publish(channel, &framed);
            }
            let count =
                self.fan_out_per_recipient(&delivery, &framed, exclude, settings.lazy, &hooks);
            for l in self.listeners().iter() {
                l.published(channel, count);
            }
            return Ok(count);
        }
        Ok(self.route(&delivery, exclude, settings.lazy))
    }

    /// The opt-in slow path of a channel with recipient hooks: each recipient's copy is decided
    /// by the hooks, and serialized again only when they change it.
    fn fan_out_per_recipient(
        &self,
        delivery: &Delivery<'_>,
        shared: &Framed,
        exclude: Option<u64>,
        lazy: bool,
        hooks: &[crate::channels::RecipientHook],
    ) -> usize {
        let mut recipients: Vec<Arc<Session>> = Vec::new();
        self.inner
            .router
            .for_each_subscriber(delivery.channel, |s| {
                if Some(s.key()) != exclude {
                    recipients.push(s.clone());
                }
            });
        let mut fan = FanOut::default();
        let mut direct = crate::session::DIRECT_WRITES_PER_PUBLISH;
        for s in &recipients {
            let mut replaced: Option<Raw> = None;
            let mut skip = false;
            for h in hooks {
                let current = replaced.as_ref().map_or(delivery.data, |r| &*r.0);
                match h(s, delivery.channel, current) {
                    Recipient::Same => {}
                    Recipient::Replace(r) => replaced = Some(r),
                    Recipient::Skip => {
                        skip = true;
                        break;
                    }
                }
            }
            if skip {
                continue;
            }
            let data = replaced.as_ref().map_or(delivery.data, |r| &*r.0);
            if let Some(cb) = s.local_callback() {
                cb(&Delivery { data, ..*delivery });
                fan.recipients += 1;
                continue;
            }
            let own;
            let framed = match &replaced {
                Some(r) => {
                    own = Framed::delivery(delivery.channel.as_str(), &r.0, delivery.ext);
                    &own
                }
                None => shared,
            };
            let offer = s.offer(framed, lazy, &mut direct);
            fan.recipients += usize::from(offer.queued());
            if matches!(offer, Offer::DroppedOldest { .. } | Offer::Refused) {
                fan.overflowed.push((s.clone(), offer));
            }
        }
        self.account(fan)
    }

    /// Counts a fan-out's deliveries and applies the overflow policy to the sessions it
    /// reported full. Returns the number of recipients.
    fn account(&self, fan_out: FanOut) -> usize {
        self.inner
            .stats
            .deliveries
            .fetch_add(fan_out.recipients as u64, Ordering::Relaxed);
        self.handle_overflow(&fan_out.overflowed);
        fan_out.recipients
    }

    fn handle_overflow(&self, sessions: &[(Arc<Session>, Offer)]) {
        if sessions.is_empty() {
            return;
        }
        let stats = &self.inner.stats;
        stats
            .queue_drops
            .fetch_add(sessions.len() as u64, Ordering::Relaxed);
        let listeners = self.listeners();
        for (s, offer) in sessions {
            if let Offer::DroppedOldest { unacked: true } = offer {
                stats.unacked_drops.fetch_add(1, Ordering::Relaxed);
            }
            for l in listeners.iter() {
                l.queue_full(s);
            }
            if self.inner.config.overflow == OverflowPolicy::Disconnect {
                self.remove_session(s, RemoveReason::QueueOverflow);
            }
        }
    }

    /// Publishes `data` (JSON) on a broadcast or service channel from the server. Returns the
    /// number of local recipients.
    ///
    /// The channel's message listeners run first: a vetoed message reaches nobody (0).
    pub fn publish(&self, channel: &ChannelId, data: &RawValue) -> usize {
        self.route_hooked(None, channel, data, None, None)
            .unwrap_or(0)
    }

    /// Publishes any serializable value on `channel`.
    pub fn publish_json<T: Serialize + ?Sized>(
        &self,
        channel: &str,
        data: &T,
    ) -> Result<usize, Error> {
        let channel = ChannelId::parse(channel)?;
        let raw =
            serde_json::value::to_raw_value(data).map_err(|e| Error::Malformed(e.to_string()))?;
        Ok(self.publish(&channel, &raw))
    }

    /// Applies a broadcast that another node published: local fan-out only, never back to the
    /// backplane. Returns the number of local recipients.
    ///
    /// The backplane passes the fields it read from what it received, never the received
    /// bytes: the message clients get is serialized here, so nothing but `channel`, `data` and
    /// `ext` can reach them whatever the backplane carried. Only broadcast channels: a
    /// `/meta/**` or `/service/**` channel is refused (returns 0), since neither crosses nodes
    /// and a forged protocol message (a disconnect) must never reach a client.
    pub fn publish_from_backplane(
        &self,
        channel: &ChannelId,
        data: &RawValue,
        ext: Option<&RawValue>,
    ) -> usize {
        if channel.kind() != ChannelKind::Broadcast {
            return 0;
        }
        let delivery = Delivery {
            channel,
            data,
            ext,
            sender: None,
            id: None,
        };
        let framed = Framed::delivery(channel.as_str(), data, ext);
        // The message listeners ran on the node it was published on; the settings are ours.
        let lazy = self
            .inner
            .channels
            .settings(channel)
            .is_some_and(|s| s.lazy);
        let hooks = self.inner.channels.recipient_hooks(channel);
        if !hooks.is_empty() {
            return self.fan_out_per_recipient(&delivery, &framed, None, lazy, &hooks);
        }
        self.account(
            self.inner
                .router
                .fan_out(&delivery, Some(&framed), None, lazy),
        )
    }

    /// Delivers `data` on `channel` to one session, bypassing subscriptions.
    pub fn deliver(
        &self,
        session: &str,
        channel: &ChannelId,
        data: &RawValue,
    ) -> Result<(), Error> {
        let s = self.session(session).ok_or(Error::UnknownSession)?;
        let framed = Framed::delivery(channel.as_str(), data, None);
        self.deliver_framed(&s, channel, data, &framed)
    }

    fn deliver_framed(
        &self,
        s: &Arc<Session>,
        channel: &ChannelId,
        data: &RawValue,
        framed: &Framed,
    ) -> Result<(), Error> {
        if let Some(cb) = s.local_callback() {
            cb(&Delivery {
                channel,
                data,
                ext: None,
                sender: None,
                id: None,
            });
            return Ok(());
        }
        self.offer_to(s, framed)
    }

    /// Queues `framed` for a remote session, counting it and applying the overflow policy.
    fn offer_to(&self, s: &Arc<Session>, framed: &Framed) -> Result<(), Error> {
        let offer = s.offer(framed, false, &mut 1);
        if offer.queued() {
            self.inner.stats.deliveries.fetch_add(1, Ordering::Relaxed);
        }
        match offer {
            Offer::Queued => Ok(()),
            Offer::Closed => Err(Error::UnknownSession),
            Offer::DroppedOldest { .. } => {
                self.handle_overflow(&[(s.clone(), offer)]);
                Ok(())
            }
            Offer::Refused => {
                self.handle_overflow(&[(s.clone(), offer)]);
                Err(Error::QueueFull)
            }
        }
    }

    /// Delivers `data` on `channel` to every session of `principal` on this node, and through
    /// the backplane to that principal's sessions on other nodes. Returns the local count.
    pub fn deliver_to_principal(
        &self,
        principal: &str,
        channel: &ChannelId,
        data: &RawValue,
    ) -> usize {
        let framed = Framed::delivery(channel.as_str(), data, None);
        let n = self.deliver_to_principal_local(principal, channel, data, &framed);
        if let Some(bp) = self.inner.router.backplane() {
            bp.deliver_to_principal(principal, &framed);
        }
        n
    }

    fn deliver_to_principal_local(
        &self,
        principal: &str,
        channel: &ChannelId,
        data: &RawValue,
        framed: &Framed,
    ) -> usize {
        self.sessions_of(principal)
            .iter()
            .filter(|s| self.deliver_framed(s, channel, data, framed).is_ok())
            .count()
    }

    /// Applies a per-principal delivery made on another node: local sessions only. Returns the
    /// number of local recipients.
    ///
    /// As for [`Engine::publish_from_backplane`], the message is serialized here from its
    /// fields (a per-principal delivery has no `ext`), and only on a broadcast channel: a
    /// backplane can never make a client receive a `/meta/**` message (a forged disconnect) or
    /// a `/service/**` one.
    pub fn deliver_from_backplane(
        &self,
        principal: &str,
        channel: &ChannelId,
        data: &RawValue,
    ) -> usize {
        if channel.kind() != ChannelKind::Broadcast {
            return 0;
        }
        let framed = Framed::delivery(channel.as_str(), data, None);
        self.deliver_to_principal_local(principal, channel, data, &framed)
    }

    /// Creates a local (server-side) session whose deliveries call `callback`.
    pub fn local_session(
        &self,
        principal: Option<&str>,
        callback: impl Fn(&Delivery<'_>) + Send + Sync + 'static,
    ) -> LocalSession {
        let cb: LocalCallback = Arc::new(callback);
        let session = Arc::new(Session::new(
            Owner {
                principal: principal.map(Arc::from),
                ..Owner::default()
            },
            TransportKind::Local,
            Some(cb),
            1,
            OverflowPolicy::DropOldest,
            &self.inner.timing,
            None,
        ));
        self.add_session(&session);
        LocalSession {
            engine: self.clone(),
            session,
        }
    }

    /// Ends a session: its held connect is answered, its subscriptions are removed and it is
    /// forgotten. Returns false if it had already ended.
    pub fn remove_session(&self, session: &Arc<Session>, reason: RemoveReason) -> bool {
        self.end_session(session, reason, None)
    }

    /// Ends `session` in one step of the session (closing and detaching every subscription),
    /// then forgets it. With `expired_at`, only if it has expired by then: the sweeper decides
    /// under the same lock that a concurrent connect takes.
    fn end_session(
        &self,
        session: &Arc<Session>,
        reason: RemoveReason,
        expired_at: Option<Instant>,
    ) -> bool {
        let listeners = self.listeners();
        if !session.close(reason, expired_at, |p| {
            self.unrouted(session, p, &listeners)
        }) {
            return false;
        }
        self.forget(session);
        self.inner
            .stats
            .sessions_removed
            .fetch_add(1, Ordering::Relaxed);
        for l in listeners.iter() {
            l.session_removed(session, reason);
        }
        true
    }

    /// Removes the remote sessions that have expired by `now` (see [`Session`] for the liveness
    /// rule): a session holding a connect never expires. Returns how many were removed.
    ///
    /// It also times out the remote calls whose deadline has passed
    /// ([`Engine::expire_remote_calls`]), so a transport's sweeper drives both.
    pub fn sweep(&self, now: Instant) -> usize {
        self.expire_remote_calls(now);
        // Lazy messages that waited long enough wake their connections.
        let max_lazy = Duration::from_millis(self.inner.config.max_lazy_ms);
        for e in self.inner.sessions.iter() {
            if !e.value().is_local() {
                e.value().flush_lazy(now, max_lazy);
            }
        }
        let expired: Vec<Arc<Session>> = self
            .inner
            .sessions
            .iter()
            .filter(|e| !e.value().is_local() && e.value().is_expired(now))
            .map(|e| e.value().clone())
            .collect();
        expired
            .iter()
            .filter(|s| self.end_session(s, RemoveReason::Expired, Some(now)))
            .count()
    }

    /// Adds a channel initializer: it sets the settings of every channel created from now on,
    /// before the channel can be used (see [`crate::channels`]).
    pub fn add_channel_initializer(
        &self,
        initializer: impl Fn(&ChannelPattern, &mut ChannelSettings) + Send + Sync + 'static,
    ) {
        self.inner.channels.add_initializer(Arc::new(initializer));
    }

    /// Creates a channel (or pattern) from the server side, running the initializers and then
    /// `configure`; returns the existing one, unchanged, if it is live. A channel created this
    /// way lives until [`Engine::remove_channel`], or until its last subscriber leaves if it
    /// is not persistent.
    pub fn create_channel(
        &self,
        name: &str,
        configure: impl FnOnce(&mut ChannelSettings),
    ) -> Result<ChannelHandle, Error> {
        let name = ChannelPattern::parse(name)?;
        let (handle, created) = self.inner.channels.ensure(&name, true, configure);
        if created {
            for l in self.listeners().iter() {
                l.channel_added(&name);
            }
        }
        Ok(handle)
    }

    /// The live channel (or pattern) `name`.
    pub fn channel(&self, name: &str) -> Option<ChannelHandle> {
        self.inner.channels.handle(name)
    }

    /// Ends a channel whatever its settings; its subscribers stay subscribed (a later
    /// subscription creates it again). Returns whether it was live.
    pub fn remove_channel(&self, name: &str) -> bool {
        match self.inner.channels.remove(name) {
            Some(name) => {
                for l in self.listeners().iter() {
                    l.channel_removed(&name);
                }
                true
            }
            None => false,
        }
    }

    /// Number of live channels (names and patterns subscribed to, and channels the server
    /// created).
    pub fn live_channels(&self) -> usize {
        self.inner.channels.len()
    }

    /// One page of the sessions, by their internal sequence number, after `after` (see
    /// [`crate::introspect`]). At most [`crate::introspect::MAX_PAGE`] items.
    pub fn sessions_page(&self, after: Option<u64>, limit: usize) -> Page<SessionInfo, u64> {
        let (sessions, more) = smallest(
            self.inner.sessions.iter().map(|e| e.value().clone()),
            |s| s.key(),
            after.as_ref(),
            limit,
        );
        let items: Vec<SessionInfo> = sessions
            .iter()
            .map(|s| {
                let subs = s.subscriptions();
                SessionInfo {
                    key: s.key(),
                    id_prefix: s.id().as_str().chars().take(ID_PREFIX_LEN).collect(),
                    transport: s.transport().name(),
                    principal: s.principal().map(str::to_owned),
                    endpoint: s.endpoint().map(str::to_owned),
                    subscription_count: subs.len(),
                    subscriptions: subs
                        .iter()
                        .take(MAX_SUBSCRIPTIONS_LISTED)
                        .map(|p| p.as_str().to_owned())
                        .collect(),
                    queue_depth: s.queue_len(),
                    dropped: s.dropped(),
                    held: s.is_held(),
                }
            })
            .collect();
        let next = more.then(|| items.last().map(|i| i.key)).flatten();
        Page { items, next }
    }

    /// One page of the live channels, by name, after `after` (see [`crate::introspect`]).
    pub fn channels_page(&self, after: Option<&str>, limit: usize) -> Page<ChannelInfo, String> {
        let (channels, more) = self.inner.channels.page(after, limit);
        let items: Vec<ChannelInfo> = channels
            .into_iter()
            .map(|(name, settings)| ChannelInfo {
                subscribers: self.inner.router.subscribers_of(name.as_str()),
                name: name.as_str().to_owned(),
                persistent: settings.persistent,
                lazy: settings.lazy,
            })
            .collect();
        let next = more.then(|| items.last().map(|i| i.name.clone())).flatten();
        Page { items, next }
    }

    /// Registers the handler of remote calls on `channel` (a concrete `/service/**` channel),
    /// replacing any previous one. A call not answered within `timeout` is answered with
    /// `408::remote_call_timeout` at the first [`Engine::sweep`] after its deadline.
    ///
    /// The handler owns its channel: messages to it no longer reach local sessions subscribed
    /// to it. It runs on the thread handling the request, so it must not block: answer later
    /// from another thread or task with the [`Responder`] it is given.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use bayeux_core::{decode_batch, Engine, EngineConfig, RequestContext, TransportKind};
    ///
    /// let engine = Engine::new(EngineConfig::default());
    /// engine
    ///     .on_remote_call("/service/echo", Duration::from_secs(5), |call, responder| {
    ///         // Answer now, or move the responder to a task and answer later.
    ///         responder.success(call.data());
    ///     })
    ///     .unwrap();
    ///
    /// let ctx = RequestContext::new(TransportKind::WebSocket);
    /// let now = Instant::now();
    /// let hs = decode_batch(br#"{"channel":"/meta/handshake","version":"1.0"}"#,
    ///     &Default::default()).unwrap();
    /// let out = engine.handle_batch(&ctx, hs, now);
    /// let session = out.session.unwrap();
    /// let call = format!(r#"{{"channel":"/service/echo","id":"7","clientId":"{}","data":[1]}}"#,
    ///     session.id().as_str());
    /// engine.handle_batch(&ctx, decode_batch(call.as_bytes(), &Default::default()).unwrap(), now);
    /// // The answer waits in the caller's queue, for its transport to write.
    /// let answer = &session.take_messages()[0];
    /// assert_eq!(answer.object(),
    ///     br#"{"channel":"/service/echo","id":"7","successful":true,"data":[1]}"#);
    /// ```
    pub fn on_remote_call(
        &self,
        channel: &str,
        timeout: Duration,
        handler: impl Fn(RemoteCall, Responder) + Send + Sync + 'static,
    ) -> Result<(), Error> {
        let channel = ChannelId::parse(channel)?;
        if channel.kind() != ChannelKind::Service {
            return Err(Error::InvalidChannel(format!(
                "{}: remote calls are made on /service/** channels",
                channel.as_str()
            )));
        }
        self.inner
            .calls
            .register(&channel, timeout, Arc::new(handler));
        Ok(())
    }

    /// Removes the remote-call handler of `channel`; calls already made can still be answered.
    /// Returns whether there was one.
    pub fn remove_remote_call(&self, channel: &str) -> bool {
        ChannelId::parse(channel).is_ok_and(|c| self.inner.calls.unregister(&c))
    }

    /// Whether a remote-call handler is registered for `channel`.
    pub fn has_remote_call(&self, channel: &ChannelId) -> bool {
        self.inner.calls.has_handler(channel)
    }

    /// Remote calls waiting for their answer.
    pub fn pending_remote_calls(&self) -> usize {
        self.inner.calls.pending()
    }

    /// Answers with `408::remote_call_timeout` every remote call whose deadline is at or before
    /// `now`. Returns how many timed out. [`Engine::sweep`] calls it.
    pub fn expire_remote_calls(&self, now: Instant) -> usize {
        self.inner.calls.expire(now)
    }

    /// Ends every session (server shutdown): held connects wake with [`Wake::Closed`].
    pub fn close_all(&self) {
        let all: Vec<Arc<Session>> = self
            .inner
            .sessions
            .iter()
            .map(|e| e.value().clone())
            .collect();
        for s in all {
            self.remove_session(&s, RemoveReason::ServerShutdown);
        }
    }

    /// Subscribes any session to `pattern` from the server side (no security policy, no
    /// subscription limit). Returns whether it was added (false if already subscribed or the
    /// session has ended).
    pub fn subscribe_session(&self, session: &Arc<Session>, pattern: &ChannelPattern) -> bool {
        self.attach(session, std::slice::from_ref(pattern), usize::MAX)
            .is_ok_and(|added| added > 0)
    }

    /// Unsubscribes a session from `pattern` from the server side.
    pub fn unsubscribe_session(&self, session: &Arc<Session>, pattern: &ChannelPattern) -> bool {
        self.detach(session, pattern)
    }
}

/// A server-side session: subscribes with a callback, publishes, and ends when dropped or
/// disconnected.
#[derive(Debug)]
pub struct LocalSession {
    engine: Engine,
    session: Arc<Session>,
}

impl LocalSession {
    /// The underlying session.
    pub fn session(&self) -> &Arc<Session> {
        &self.session
    }

    /// Subscribes to a channel or pattern (including `/service/**`).
    pub fn subscribe(&self, pattern: &str) -> Result<(), Error> {
        let p = ChannelPattern::parse(pattern)?;
        self.engine.subscribe_session(&self.session, &p);
        Ok(())
    }

    /// Unsubscribes.
    pub fn unsubscribe(&self, pattern: &str) -> Result<(), Error> {
        let p = ChannelPattern::parse(pattern)?;
        self.engine.unsubscribe_session(&self.session, &p);
        Ok(())
    }

    /// Publishes as this session (it receives its own broadcast only if
    /// `broadcast_to_publisher`, or the channel's own setting). The channel's message listeners
    /// run first: a vetoed message reaches nobody (0).
    pub fn publish(&self, channel: &ChannelId, data: &RawValue) -> usize {
        self.engine
            .route_hooked(Some(&self.session), channel, data, None, None)
            .unwrap_or(0)
    }

    /// Ends the session.
    pub fn disconnect(&self) {
        self.engine
            .remove_session(&self.session, RemoveReason::Disconnected);
    }
}

impl Drop for LocalSession {
    fn drop(&mut self) {
        self.disconnect();
    }
}
