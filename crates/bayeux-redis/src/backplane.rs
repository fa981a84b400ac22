//! The backplane itself: the engine-facing [`Backplane`] implementation and its three tasks.
//!
//! ```text
//!  engine publish/deliver ──try_send──▶ [publish queue] ──▶ publisher task ──PUBLISH (pipelined)──▶ Redis
//!  engine listener events ──▶ Interest ──notify──▶ subscriber task ──SUBSCRIBE/PSUBSCRIBE, PING──▶ Redis
//!  Redis pushes ──push sender (try_send)──▶ [receive queue] ──▶ receiver task ──▶ engine *_from_backplane
//! ```
//! Nothing on the engine side ever waits for Redis: both queues are bounded and a full queue
//! drops and counts.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bayeux_core::{Backplane, ChannelId, Engine, Framed, Limits};
use bytes::Bytes;
use parking_lot::Mutex;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{IntoConnectionInfo, ProtocolVersion, PushInfo, PushKind, Value};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::config::RedisConfig;
use crate::interest::Interest;
use crate::metrics::{Metrics, add};
use crate::wire::{self, FrameArg, Invalid, Naming, NodeId, RedisSub, Target};

/// Why the backplane could not start. Redis being unreachable is not one of them: the backplane
/// starts anyway and connects when it can.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The configuration has no `url`.
    NoUrl,
    /// A setting is out of range.
    InvalidConfig(String),
    /// The URL cannot be used.
    InvalidUrl(String),
    /// Not called inside a tokio runtime.
    NoRuntime,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NoUrl => f.write_str("redis: no url configured"),
            Error::InvalidConfig(m) => write!(f, "redis: {m}"),
            Error::InvalidUrl(m) => write!(f, "redis: invalid url: {m}"),
            Error::NoRuntime => {
                f.write_str("redis: the backplane must start inside a tokio runtime")
            }
        }
    }
}

impl std::error::Error for Error {}

/// A message on its way to Redis.
enum Outbound {
    Broadcast(ChannelId, Framed),
    User(Arc<str>, Framed),
}

/// A message from Redis: its Redis channel and payload.
struct Inbound {
    channel: Vec<u8>,
    payload: Vec<u8>,
}

enum Health {
    Starting,
    Up,
    Down { since: Instant, dropped_before: u64 },
}

/// Lets a warning through at most once per period.
struct Throttle(Mutex<Option<Instant>>);

impl Throttle {
    fn new() -> Throttle {
        Throttle(Mutex::new(None))
    }

    fn ready(&self, every: Duration) -> bool {
        let mut last = self.0.lock();
        let now = Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < every) {
            return false;
        }
        *last = Some(now);
        true
    }
}

const WARN_EVERY: Duration = Duration::from_secs(30);
const SUBSCRIBE_CHUNK: usize = 256;

struct Shared {
    node: NodeId,
    naming: Naming,
    interest: Arc<Interest>,
    metrics: Metrics,
    health: Mutex<Health>,
    config: RedisConfig,
    url: String,
    /// Set when the subscription connection was lost: every subscription is issued again.
    resync: AtomicBool,
    invalid_log: Throttle,
    queue_full_log: Throttle,
    behind_log: Throttle,
}

impl Shared {
    /// Redis failed a command. Logged once per outage.
    fn mark_down(&self, what: &str, err: &dyn fmt::Display) {
        let mut h = self.health.lock();
        let first = match *h {
            Health::Down { .. } => return,
            Health::Starting => true,
            Health::Up => false,
        };
        *h = Health::Down {
            since: Instant::now(),
            dropped_before: self.metrics.publish_dropped(),
        };
        drop(h);
        self.metrics.connected.store(false, Ordering::Relaxed);
        add(&self.metrics.outages, 1);
        if first {
            tracing::warn!(
                url = %self.url, error = %err,
                "redis unreachable at start ({what}): running single-node, retrying with backoff; \
                 cross-node publishes are dropped and counted until it answers"
            );
        } else {
            tracing::warn!(
                url = %self.url, error = %err,
                "redis unreachable ({what}): cross-node delivery suspended, local delivery \
                 continues; retrying with backoff"
            );
        }
    }

    /// Redis answered. Returns whether this ends an outage.
    fn mark_up(&self) -> bool {
        let mut h = self.health.lock();
        let previous = std::mem::replace(&mut *h, Health::Up);
        drop(h);
        self.metrics.connected.store(true, Ordering::Relaxed);
        match previous {
            Health::Up => false,
            Health::Starting => {
                tracing::info!(url = %self.url, node = %self.node, "redis backplane connected");
                false
            }
            Health::Down {
                since,
                dropped_before,
            } => {
                let dropped = self
                    .metrics
                    .publish_dropped()
                    .saturating_sub(dropped_before);
                tracing::info!(
                    url = %self.url,
                    outage_secs = format_args!("{:.1}", since.elapsed().as_secs_f64()),
                    dropped,
                    "redis reachable again: resubscribing, cross-node delivery resumes"
                );
                true
            }
        }
    }

    fn is_down(&self) -> bool {
        matches!(*self.health.lock(), Health::Down { .. })
    }

    fn invalid(&self, why: Invalid, channel: &[u8]) {
        self.metrics.reject(why);
        if self.invalid_log.ready(WARN_EVERY) {
            tracing::warn!(
                reason = %why,
                channel = %String::from_utf8_lossy(&channel[..channel.len().min(128)]),
                total = self.metrics.invalid.load(Ordering::Relaxed),
                "ignored a corrupt, forged or foreign message on a backplane channel"
            );
        }
    }

    /// The limits a received message is parsed under: the engine's (depth), with the
    /// backplane's own size limit.
    fn limits(&self, engine: &Engine) -> Limits {
        Limits {
            max_bytes: self.config.max_message_bytes,
            ..engine.config().limits
        }
    }

    /// One message from Redis: checked, deduplicated, matched, then fanned out locally.
    ///
    /// Redis is not trusted (see [`wire`]): the message is parsed into its channel, data and
    /// ext, which must be a broadcast channel and, for a broadcast, the very channel the Redis
    /// channel routes; the engine serializes what clients get from those fields alone. The
    /// checks come before deduplication so that a refused message leaves no trace (it cannot
    /// advance an origin's sequence number and so hide that origin's next real message).
    fn handle_inbound(&self, engine: &Engine, dedup: &mut Dedup, m: Inbound) {
        let target = match self.naming.parse(&m.channel) {
            Ok(t) => t,
            Err(why) => return self.invalid(why, &m.channel),
        };
        let frame = match wire::decode(Bytes::from(m.payload)) {
            Ok(f) => f,
            Err(why) => return self.invalid(why, &m.channel),
        };
        if frame.origin == self.node {
            add(&self.metrics.own_skipped, 1);
            return;
        }
        let wanted = match &target {
            Target::Broadcast(channel) => self.interest.wants_broadcast(channel),
            Target::User(principal) => self.interest.wants_user(principal),
        };
        if !wanted {
            add(&self.metrics.unmatched, 1);
            return;
        }
        let received = match wire::parse_delivery(&frame.message, &self.limits(engine)) {
            Ok(r) => r,
            Err(why) => return self.invalid(why, &m.channel),
        };
        if let Target::Broadcast(channel) = &target
            && received.channel != *channel
        {
            // It would reach the subscribers of the other channel, whom this Redis channel
            // was not routed to.
            return self.invalid(Invalid::ChannelMismatch, &m.channel);
        }
        if !dedup.accept(frame.origin, frame.seq, Instant::now()) {
            add(&self.metrics.duplicates, 1);
            return;
        }
        let data = &received.data.0;
        let delivered = match &target {
            Target::Broadcast(_) => {
                let ext = received.ext.as_ref().map(|e| &*e.0);
                engine.publish_from_backplane(&received.channel, data, ext)
            }
            Target::User(principal) => {
                engine.deliver_from_backplane(principal, &received.channel, data)
            }
        };
        add(&self.metrics.delivered, delivered as u64);
    }
}

/// Remembers the last sequence number seen from each origin: Redis sends one message twice to
/// a node subscribed to both its channel and a matching glob, and each origin's messages arrive
/// in order on the one subscription connection.
#[derive(Debug, Default)]
pub(crate) struct Dedup {
    last: HashMap<NodeId, (u64, Instant)>,
}

const MAX_ORIGINS: usize = 4096;
const ORIGIN_IDLE: Duration = Duration::from_secs(600);

impl Dedup {
    /// Whether `seq` from `origin` is new.
    pub(crate) fn accept(&mut self, origin: NodeId, seq: u64, now: Instant) -> bool {
        if let Some((last, seen)) = self.last.get_mut(&origin) {
            *seen = now;
            if seq <= *last {
                return false;
            }
            *last = seq;
            return true;
        }
        if self.last.len() >= MAX_ORIGINS {
            // Origins are nodes (a new id per start): forget those long gone.
            self.last
                .retain(|_, (_, seen)| now.saturating_duration_since(*seen) < ORIGIN_IDLE);
            if self.last.len() >= MAX_ORIGINS
                && let Some(oldest) = self
                    .last
                    .iter()
                    .min_by_key(|(_, (_, s))| *s)
                    .map(|(k, _)| *k)
            {
                self.last.remove(&oldest);
            }
        }
        self.last.insert(origin, (seq, now));
        true
    }
}

/// The Redis backplane of one node. See the crate documentation.
pub struct RedisBackplane {
    shared: Arc<Shared>,
    tx: mpsc::Sender<Outbound>,
    stop: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl fmt::Debug for RedisBackplane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBackplane")
            .field("node", &self.shared.node)
            .field("url", &self.shared.url)
            .finish()
    }
}

fn client_for(url: &str) -> Result<redis::Client, Error> {
    let info = url
        .into_connection_info()
        .map_err(|e| Error::InvalidUrl(e.to_string()))?;
    // RESP3: pub/sub messages arrive as pushes on a multiplexed connection that the connection
    // manager re-establishes (and resubscribes) by itself. CLIENT SETINFO is skipped: Redis
    // before 7.2 does not know it.
    let settings = info
        .redis_settings()
        .clone()
        .set_protocol(ProtocolVersion::RESP3)
        .set_skip_set_lib_name();
    redis::Client::open(info.set_redis_settings(settings))
        .map_err(|e| Error::InvalidUrl(e.to_string()))
}

fn bulk(v: Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.into_bytes()),
        _ => None,
    }
}

/// Runs on the connection's reader: must never block.
fn push_sender(
    shared: Arc<Shared>,
    tx: mpsc::Sender<Inbound>,
) -> impl Fn(PushInfo) -> Result<(), Infallible> + Send + Sync + 'static {
    move |info: PushInfo| {
        match info.kind {
            PushKind::Message | PushKind::PMessage => {
                add(&shared.metrics.received, 1);
                // message: [channel, payload]; pmessage: [pattern, channel, payload].
                let mut data = info.data;
                let payload = data.pop().and_then(bulk);
                let channel = data.pop().and_then(bulk);
                let (Some(channel), Some(payload)) = (channel, payload) else {
                    shared.invalid(Invalid::Short, b"");
                    return Ok(());
                };
                // Refused before it waits in the queue: Redis does not bound what it sends
                // (512 MB a message), the receive queue bounds only the count.
                if payload.len() > wire::HEADER_LEN + shared.config.max_message_bytes {
                    shared.invalid(Invalid::TooLarge, &channel);
                    return Ok(());
                }
                if let Err(mpsc::error::TrySendError::Full(_)) =
                    tx.try_send(Inbound { channel, payload })
                {
                    add(&shared.metrics.receive_dropped, 1);
                    if shared.behind_log.ready(WARN_EVERY) {
                        tracing::warn!(
                            total = shared.metrics.receive_dropped.load(Ordering::Relaxed),
                            "this node falls behind the backplane: received messages dropped"
                        );
                    }
                }
            }
            PushKind::Disconnection => {
                shared.resync.store(true, Ordering::Relaxed);
                shared.mark_down("subscription connection", &"connection closed");
                shared.interest.poke();
            }
            _ => {}
        }
        Ok(())
    }
}

impl RedisBackplane {
    /// Starts the backplane of `engine`: registers the interest listener, installs itself as
    /// the engine's backplane and spawns its tasks on the current tokio runtime. Call it before
    /// the engine has sessions. Returns at once: Redis may be unreachable, the backplane
    /// connects (and reconnects) in the background.
    pub fn start(engine: &Engine, config: &RedisConfig) -> Result<Arc<RedisBackplane>, Error> {
        config.validate().map_err(Error::InvalidConfig)?;
        let url = config.url.as_deref().ok_or(Error::NoUrl)?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)?;
        let client = client_for(url)?;
        let naming = Naming::new(&config.namespace);
        let interest = Arc::new(Interest::new(naming.clone()));
        let shared = Arc::new(Shared {
            node: NodeId::random(),
            naming,
            interest: interest.clone(),
            metrics: Metrics::default(),
            health: Mutex::new(Health::Starting),
            config: config.clone(),
            url: config.redacted_url(),
            resync: AtomicBool::new(false),
            invalid_log: Throttle::new(),
            queue_full_log: Throttle::new(),
            behind_log: Throttle::new(),
        });
        let (tx, rx) = mpsc::channel(config.publish_queue);
        let (in_tx, in_rx) = mpsc::channel(config.receive_queue);
        let (stop, stop_rx) = watch::channel(false);

        // Few retries inside the manager: the subscriber task owns the backoff loop, so one
        // command never waits for a long reconnection schedule.
        let base = ConnectionManagerConfig::new()
            .set_number_of_retries(1)
            .set_min_delay(config.retry_min())
            .set_max_delay(config.retry_max())
            .set_response_timeout(Some(config.response_timeout()))
            .set_connection_timeout(Some(config.connect_timeout()));
        let sub_config = base
            .clone()
            .set_push_sender(push_sender(shared.clone(), in_tx))
            .set_automatic_resubscription();
        let sub = ConnectionManager::new_lazy_with_config(client.clone(), sub_config)
            .map_err(|e| Error::InvalidUrl(e.to_string()))?;
        let publ = ConnectionManager::new_lazy_with_config(client, base)
            .map_err(|e| Error::InvalidUrl(e.to_string()))?;

        let tasks = vec![
            runtime.spawn(publisher(shared.clone(), publ, rx, stop_rx.clone())),
            runtime.spawn(subscriber(shared.clone(), sub, stop_rx.clone())),
            runtime.spawn(receiver(shared.clone(), engine.clone(), in_rx, stop_rx)),
        ];
        let bp = Arc::new(RedisBackplane {
            shared,
            tx,
            stop,
            tasks: Mutex::new(tasks),
        });
        engine.add_listener(interest);
        engine.set_backplane(bp.clone());
        tracing::info!(
            url = %bp.shared.url, node = %bp.shared.node, namespace = %config.namespace,
            "redis backplane started"
        );
        Ok(bp)
    }

    /// This node's id on the backplane.
    pub fn node_id(&self) -> NodeId {
        self.shared.node
    }

    /// Whether Redis answered the last command.
    pub fn is_connected(&self) -> bool {
        self.shared.metrics.connected.load(Ordering::Relaxed)
    }

    /// The counters.
    pub fn metrics(&self) -> &Metrics {
        let queued = self.tx.max_capacity() - self.tx.capacity();
        self.shared
            .metrics
            .publish_queue
            .store(queued as u64, Ordering::Relaxed);
        &self.shared.metrics
    }

    /// The counters in the Prometheus text format, to append to the server's `/metrics`.
    pub fn render_metrics(&self) -> String {
        self.metrics().render()
    }

    /// The local interest table (which Redis subscriptions this node needs).
    pub fn interest(&self) -> &Arc<Interest> {
        &self.shared.interest
    }

    /// Stops the tasks and closes the Redis connections. The engine keeps working locally;
    /// later cross-node publishes are dropped.
    pub fn shutdown(&self) {
        let _ = self.stop.send(true);
        for t in self.tasks.lock().drain(..) {
            t.abort();
        }
    }

    fn enqueue(&self, m: Outbound) {
        match self.tx.try_send(m) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                add(&self.shared.metrics.publish_dropped_queue_full, 1);
                if self.shared.queue_full_log.ready(WARN_EVERY) {
                    tracing::warn!(
                        capacity = self.tx.max_capacity(),
                        "redis publish queue full (Redis slow or unreachable): cross-node \
                         publishes dropped"
                    );
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                add(&self.shared.metrics.publish_dropped_unavailable, 1);
            }
        }
    }
}

impl Backplane for RedisBackplane {
    fn publish(&self, channel: &ChannelId, message: &Framed) {
        self.enqueue(Outbound::Broadcast(channel.clone(), message.clone()));
    }

    fn deliver_to_principal(&self, principal: &str, message: &Framed) {
        self.enqueue(Outbound::User(Arc::from(principal), message.clone()));
    }
}

/// Sends queued messages in order, pipelined, on one connection: per-origin order is the order
/// the engine handed them over. While Redis is down, batches are dropped (and counted) except
/// for a probe now and then.
async fn publisher(
    shared: Arc<Shared>,
    mut conn: ConnectionManager,
    mut rx: mpsc::Receiver<Outbound>,
    mut stop: watch::Receiver<bool>,
) {
    let max = shared.config.publish_batch;
    let timeout = shared.config.response_timeout();
    let probe_every = (shared.config.retry_min() * 4).min(shared.config.retry_max());
    let mut seq: u64 = 0;
    let mut batch: Vec<Outbound> = Vec::with_capacity(max);
    let mut last_attempt: Option<Instant> = None;
    loop {
        tokio::select! {
            n = rx.recv_many(&mut batch, max) => if n == 0 { break },
            _ = stop.changed() => break,
        }
        let n = batch.len() as u64;
        if shared.is_down() && last_attempt.is_some_and(|t| t.elapsed() < probe_every) {
            add(&shared.metrics.publish_dropped_unavailable, n);
            batch.clear();
            continue;
        }
        last_attempt = Some(Instant::now());
        let mut pipe = redis::pipe();
        for m in &batch {
            seq += 1;
            let (name, message) = match m {
                Outbound::Broadcast(c, b) => (shared.naming.broadcast(c.as_str()), b),
                Outbound::User(p, b) => (shared.naming.user(p), b),
            };
            pipe.cmd("PUBLISH")
                .arg(name)
                .arg(FrameArg {
                    origin: &shared.node,
                    seq,
                    // The wire carries the message object (see `wire`).
                    message: message.object(),
                })
                .ignore();
        }
        batch.clear();
        match tokio::time::timeout(timeout, pipe.exec_async(&mut conn)).await {
            Ok(Ok(())) => {
                add(&shared.metrics.published, n);
                shared.mark_up();
            }
            Ok(Err(e)) => {
                add(&shared.metrics.publish_dropped_unavailable, n);
                shared.mark_down("publish", &e);
            }
            Err(_) => {
                add(&shared.metrics.publish_dropped_unavailable, n);
                shared.mark_down("publish", &"timed out");
            }
        }
    }
}

async fn apply(
    conn: &mut ConnectionManager,
    timeout: Duration,
    subscribe: &[&RedisSub],
    unsubscribe: &[&RedisSub],
) -> Result<(), String> {
    async fn run(
        conn: &mut ConnectionManager,
        timeout: Duration,
        subs: &[&RedisSub],
        adding: bool,
    ) -> Result<(), String> {
        let channels: Vec<&str> = subs
            .iter()
            .filter(|s| matches!(s, RedisSub::Channel(_)))
            .map(|s| s.name())
            .collect();
        let patterns: Vec<&str> = subs
            .iter()
            .filter(|s| matches!(s, RedisSub::Pattern(_)))
            .map(|s| s.name())
            .collect();
        for chunk in channels.chunks(SUBSCRIBE_CHUNK) {
            let f = async {
                if adding {
                    conn.subscribe(chunk).await
                } else {
                    conn.unsubscribe(chunk).await
                }
            };
            tokio::time::timeout(timeout, f)
                .await
                .map_err(|_| "timed out".to_owned())?
                .map_err(|e| e.to_string())?;
        }
        for chunk in patterns.chunks(SUBSCRIBE_CHUNK) {
            let f = async {
                if adding {
                    conn.psubscribe(chunk).await
                } else {
                    conn.punsubscribe(chunk).await
                }
            };
            tokio::time::timeout(timeout, f)
                .await
                .map_err(|_| "timed out".to_owned())?
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }
    run(conn, timeout, subscribe, true).await?;
    run(conn, timeout, unsubscribe, false).await
}

/// Keeps the subscription connection's subscriptions equal to the local interest, checks
/// Redis's health, and re-issues every subscription after an outage.
async fn subscriber(
    shared: Arc<Shared>,
    mut conn: ConnectionManager,
    mut stop: watch::Receiver<bool>,
) {
    let cfg = &shared.config;
    let timeout = cfg.response_timeout();
    let interest = shared.interest.clone();
    // What we asked Redis for on the current connection (a superset when unsure).
    let mut applied: HashSet<RedisSub> = HashSet::new();
    let mut full_resync = false;
    let mut backoff = cfg.retry_min();
    loop {
        let ping = tokio::time::timeout(timeout, redis::cmd("PING").exec_async(&mut conn)).await;
        let healthy = match ping {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                shared.mark_down("subscription connection", &e);
                false
            }
            Err(_) => {
                shared.mark_down("subscription connection", &"ping timed out");
                false
            }
        };
        if healthy {
            backoff = cfg.retry_min();
            if shared.mark_up() {
                full_resync = true;
            }
            if shared.resync.swap(false, Ordering::Relaxed) {
                full_resync = true;
            }
            if full_resync {
                // Changes noted so far are covered by the full comparison.
                interest.take_changes();
                let wanted: HashSet<RedisSub> = interest.wanted().into_iter().collect();
                let add: Vec<&RedisSub> = wanted.iter().collect();
                let remove: Vec<&RedisSub> = applied.difference(&wanted).collect();
                match apply(&mut conn, timeout, &add, &remove).await {
                    Ok(()) => {
                        tracing::debug!(
                            subscriptions = wanted.len(),
                            "redis subscriptions re-issued"
                        );
                        applied = wanted;
                        full_resync = false;
                    }
                    Err(e) => {
                        applied.extend(wanted);
                        shared.mark_down("subscribe", &e);
                    }
                }
            } else {
                let changes = interest.take_changes();
                if !changes.is_empty() {
                    let add: Vec<&RedisSub> = changes
                        .iter()
                        .filter(|c| c.wanted && !applied.contains(&c.sub))
                        .map(|c| &c.sub)
                        .collect();
                    let remove: Vec<&RedisSub> = changes
                        .iter()
                        .filter(|c| !c.wanted && applied.contains(&c.sub))
                        .map(|c| &c.sub)
                        .collect();
                    match apply(&mut conn, timeout, &add, &remove).await {
                        Ok(()) => {
                            for c in &changes {
                                if c.wanted {
                                    applied.insert(c.sub.clone());
                                } else {
                                    applied.remove(&c.sub);
                                }
                            }
                        }
                        Err(e) => {
                            // Unsure what took: remember everything as applied so that the
                            // full resynchronisation after the reconnect cleans up.
                            applied.extend(changes.iter().map(|c| c.sub.clone()));
                            full_resync = true;
                            shared.mark_down("subscribe", &e);
                        }
                    }
                }
            }
            shared
                .metrics
                .subscriptions
                .store(applied.len() as u64, Ordering::Relaxed);
            tokio::select! {
                _ = interest.changed() => {}
                _ = tokio::time::sleep(cfg.health_interval()) => {}
                _ = stop.changed() => break,
            }
        } else {
            full_resync = true;
            let wait = backoff;
            backoff = (backoff * 2).min(cfg.retry_max());
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.changed() => break,
            }
        }
    }
}

/// Applies received messages to the engine, in arrival order.
async fn receiver(
    shared: Arc<Shared>,
    engine: Engine,
    mut rx: mpsc::Receiver<Inbound>,
    mut stop: watch::Receiver<bool>,
) {
    let mut dedup = Dedup::default();
    let mut buf: Vec<Inbound> = Vec::with_capacity(256);
    loop {
        tokio::select! {
            n = rx.recv_many(&mut buf, 256) => if n == 0 { break },
            _ = stop.changed() => break,
        }
        for m in buf.drain(..) {
            shared.handle_inbound(&engine, &mut dedup, m);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn dedup_drops_repeats_and_keeps_origins_apart() {
        let mut d = Dedup::default();
        let (a, b) = (NodeId([1; 16]), NodeId([2; 16]));
        let now = Instant::now();
        assert!(d.accept(a, 1, now));
        assert!(!d.accept(a, 1, now), "the second copy of one message");
        assert!(d.accept(b, 1, now));
        assert!(d.accept(a, 5, now), "gaps are fine (at-most-once)");
        assert!(!d.accept(a, 3, now));
        assert!(d.accept(a, 6, now));
    }

    #[test]
    fn dedup_memory_is_bounded() {
        let mut d = Dedup::default();
        let now = Instant::now();
        for i in 0..(MAX_ORIGINS as u32 + 100) {
            let mut id = [0u8; 16];
            id[..4].copy_from_slice(&i.to_be_bytes());
            assert!(d.accept(NodeId(id), 1, now));
        }
        assert!(d.last.len() <= MAX_ORIGINS);
    }

    fn shared_for_tests(engine_interest: Arc<Interest>) -> Shared {
        Shared {
            node: NodeId([9; 16]),
            naming: Naming::new("bayeux"),
            interest: engine_interest,
            metrics: Metrics::default(),
            health: Mutex::new(Health::Starting),
            config: RedisConfig::with_url("redis://127.0.0.1:1"),
            url: "redis://127.0.0.1:1".into(),
            resync: AtomicBool::new(false),
            invalid_log: Throttle::new(),
            queue_full_log: Throttle::new(),
            behind_log: Throttle::new(),
        }
    }

    fn inbound(channel: &str, payload: Vec<u8>) -> Inbound {
        Inbound {
            channel: channel.as_bytes().to_vec(),
            payload,
        }
    }

    /// An engine with one local session on `pattern` counting its deliveries, and the shared
    /// state of a backplane whose interest table follows that engine.
    fn setup(pattern: &str) -> (Engine, Shared, Arc<AtomicUsize>, bayeux_core::LocalSession) {
        let engine = Engine::new(Default::default());
        let interest = Arc::new(Interest::new(Naming::new("bayeux")));
        engine.add_listener(interest.clone());
        let n = Arc::new(AtomicUsize::new(0));
        let m = n.clone();
        let session = engine.local_session(Some("agent1"), move |_| {
            m.fetch_add(1, Ordering::SeqCst);
        });
        session.subscribe(pattern).unwrap();
        (engine, shared_for_tests(interest), n, session)
    }

    #[test]
    fn inbound_messages_are_delivered_once_and_own_messages_skipped() {
        let (engine, shared, got, _s) = setup("/a/*");
        let mut dedup = Dedup::default();
        let other = NodeId([1; 16]);
        let msg = br#"{"channel":"/a/b","data":{"n":1}}"#;
        let frame = wire::encode(&other, 1, msg);
        shared.handle_inbound(&engine, &mut dedup, inbound("bayeux:c:/a/b", frame.clone()));
        shared.handle_inbound(&engine, &mut dedup, inbound("bayeux:c:/a/b", frame));
        assert_eq!(got.load(Ordering::SeqCst), 1);
        assert_eq!(shared.metrics.duplicates.load(Ordering::Relaxed), 1);
        let own = wire::encode(&shared.node, 1, msg);
        shared.handle_inbound(&engine, &mut dedup, inbound("bayeux:c:/a/b", own));
        assert_eq!(got.load(Ordering::SeqCst), 1);
        assert_eq!(shared.metrics.own_skipped.load(Ordering::Relaxed), 1);
        // The glob bayeux:c:/a/* also brings /a/b/c, which /a/* does not match.
        let deep = wire::encode(&other, 2, br#"{"channel":"/a/b/c","data":1}"#);
        shared.handle_inbound(&engine, &mut dedup, inbound("bayeux:c:/a/b/c", deep));
        assert_eq!(got.load(Ordering::SeqCst), 1);
        assert_eq!(shared.metrics.unmatched.load(Ordering::Relaxed), 1);
        assert_eq!(shared.metrics.delivered.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn corrupt_and_foreign_messages_are_counted_never_delivered() {
        let (engine, shared, got, _s) = setup("/a/*");
        let mut dedup = Dedup::default();
        let other = NodeId([1; 16]);
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("bayeux:c:/a/b", b"plain text from someone else".to_vec()),
            ("bayeux:c:/a/b", Vec::new()),
            ("bayeux:c:/a/b", wire::encode(&other, 1, b"{not json")),
            (
                "bayeux:c:/a/b",
                wire::encode(&other, 2, br#"{"channel":"/a/b","data":1"#),
            ),
            // The body names another channel than the one it was published on.
            (
                "bayeux:c:/a/b",
                wire::encode(&other, 3, br#"{"channel":"/a/c","data":1}"#),
            ),
            (
                "bayeux:c:/meta/connect",
                wire::encode(&other, 4, br#"{"channel":"/meta/connect","data":1}"#),
            ),
            (
                "bayeux:c:/service/x",
                wire::encode(&other, 5, br#"{"channel":"/service/x","data":1}"#),
            ),
            ("bayeux:zz", wire::encode(&other, 6, br#"{}"#)),
            ("bayeux:u:agent1", wire::encode(&other, 7, b"\xff\xfe")),
            (
                "bayeux:u:agent1",
                wire::encode(&other, 8, br#"{"channel":"bad","data":1}"#),
            ),
            // Forged protocol messages to a user: a disconnect, in object and array form.
            (
                "bayeux:u:agent1",
                wire::encode(
                    &other,
                    9,
                    br#"{"channel":"/meta/disconnect","data":{},"successful":true}"#,
                ),
            ),
            (
                "bayeux:u:agent1",
                wire::encode(
                    &other,
                    10,
                    br#"[{"channel":"/meta/connect","advice":{"reconnect":"none"}}]"#,
                ),
            ),
            (
                "bayeux:c:/a/b",
                wire::encode(
                    &other,
                    11,
                    br#"{"channel":"/a/b","data":1,"channel":"/meta/disconnect"}"#,
                ),
            ),
        ];
        let n = cases.len() as u64;
        for (c, p) in cases {
            shared.handle_inbound(&engine, &mut dedup, inbound(c, p));
        }
        assert_eq!(got.load(Ordering::SeqCst), 0);
        let m = &shared.metrics;
        assert_eq!(m.invalid.load(Ordering::Relaxed), n);
        let by_reason: u64 = Invalid::ALL.iter().map(|r| m.rejected(*r)).sum();
        assert_eq!(by_reason, n);
        assert_eq!(m.rejected(Invalid::Channel), 3);
        assert_eq!(m.rejected(Invalid::ChannelMismatch), 1);
        assert_eq!(m.rejected(Invalid::NotBroadcast), 1);
        assert_eq!(m.rejected(Invalid::NotObject), 2);
        assert_eq!(m.rejected(Invalid::Malformed), 4);
        // And the next good message still goes through, although its sequence number is
        // below the refused ones': a refused message does not count as seen.
        let ok = wire::encode(&other, 1, br#"{"channel":"/a/z","data":true}"#);
        shared.handle_inbound(&engine, &mut dedup, inbound("bayeux:c:/a/z", ok));
        assert_eq!(got.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn what_reaches_a_session_is_rebuilt_from_the_fields() {
        let (engine, shared, _, _s) = setup("/x");
        let mut dedup = Dedup::default();
        let other = NodeId([1; 16]);
        // A remote (queued) session of agent1 on /a/*.
        let ctx = bayeux_core::RequestContext::new(bayeux_core::TransportKind::WebSocket)
            .with_principal("agent1");
        let hs = bayeux_core::decode_batch(
            br#"{"channel":"/meta/handshake","version":"1.0","supportedConnectionTypes":["websocket"]}"#,
            &Default::default(),
        )
        .unwrap();
        let session = engine
            .handle_batch(&ctx, hs, Instant::now())
            .session
            .unwrap();
        assert!(engine.subscribe_session(
            &session,
            &bayeux_core::ChannelPattern::parse("/a/*").unwrap()
        ));
        let forged = br#" {"channel":"/a/b","data":{"k":1},"ext":{"e":2},"successful":false,"advice":{"reconnect":"none"},"clientId":"x"} "#;
        shared.handle_inbound(
            &engine,
            &mut dedup,
            inbound("bayeux:c:/a/b", wire::encode(&other, 1, forged)),
        );
        let user =
            br#"{"channel":"/v2/me/calls","data":[1],"ext":{"e":2},"advice":{"reconnect":"none"}}"#;
        shared.handle_inbound(
            &engine,
            &mut dedup,
            inbound("bayeux:u:agent1", wire::encode(&other, 2, user)),
        );
        let got: Vec<String> = session
            .take_messages()
            .iter()
            .map(|f| String::from_utf8(f.array().to_vec()).unwrap())
            .collect();
        assert_eq!(
            got,
            [
                r#"[{"channel":"/a/b","data":{"k":1},"ext":{"e":2}}]"#,
                r#"[{"channel":"/v2/me/calls","data":[1]}]"#,
            ]
        );
    }

    #[test]
    fn user_deliveries_reach_only_local_sessions_of_that_user() {
        let (engine, shared, got, _s) = setup("/x");
        let mut dedup = Dedup::default();
        let other = NodeId([1; 16]);
        let m = br#"{"channel":"/v2/me/calls","data":{"state":"Dialing"}}"#;
        shared.handle_inbound(
            &engine,
            &mut dedup,
            inbound("bayeux:u:agent2", wire::encode(&other, 1, m)),
        );
        assert_eq!(got.load(Ordering::SeqCst), 0);
        assert_eq!(shared.metrics.unmatched.load(Ordering::Relaxed), 1);
        shared.handle_inbound(
            &engine,
            &mut dedup,
            inbound("bayeux:u:agent1", wire::encode(&other, 2, m)),
        );
        assert_eq!(got.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_node_that_falls_behind_drops_and_counts_at_its_bounded_receive_queue() {
        let shared = Arc::new(shared_for_tests(Arc::new(Interest::new(Naming::new(
            "bayeux",
        )))));
        let (tx, mut rx) = mpsc::channel(2);
        let push = push_sender(shared.clone(), tx);
        let message = |n: u8| PushInfo {
            kind: PushKind::Message,
            data: vec![
                Value::BulkString(b"bayeux:c:/a".to_vec()),
                Value::BulkString(vec![n]),
            ],
        };
        for n in 0..5 {
            push(message(n)).unwrap();
        }
        // A pmessage carries the pattern first.
        push(PushInfo {
            kind: PushKind::PMessage,
            data: vec![
                Value::BulkString(b"bayeux:c:/*".to_vec()),
                Value::BulkString(b"bayeux:c:/a".to_vec()),
                Value::BulkString(vec![9]),
            ],
        })
        .unwrap();
        let m = &shared.metrics;
        assert_eq!(m.received.load(Ordering::Relaxed), 6);
        assert_eq!(m.receive_dropped.load(Ordering::Relaxed), 4);
        assert_eq!(rx.recv().await.unwrap().payload, vec![0]);
        assert_eq!(rx.recv().await.unwrap().payload, vec![1]);
        // Malformed pushes are counted, never a panic.
        for data in [vec![], vec![Value::Nil, Value::Int(3)], vec![Value::Okay]] {
            push(PushInfo {
                kind: PushKind::Message,
                data,
            })
            .unwrap();
        }
        assert_eq!(m.invalid.load(Ordering::Relaxed), 3);
        // A lost connection marks Redis down and asks for a full resubscription.
        push(PushInfo {
            kind: PushKind::Disconnection,
            data: vec![],
        })
        .unwrap();
        assert!(shared.is_down());
        assert!(shared.resync.load(Ordering::Relaxed));
    }

    #[test]
    fn outages_are_logged_once_and_recoveries_reported() {
        let shared = shared_for_tests(Arc::new(Interest::new(Naming::new("bayeux"))));
        assert!(!shared.mark_up(), "first connection is not a recovery");
        shared.mark_down("x", &"boom");
        shared.mark_down("x", &"boom");
        assert!(shared.is_down());
        assert_eq!(shared.metrics.outages.load(Ordering::Relaxed), 1);
        assert!(shared.mark_up());
        assert!(!shared.mark_up());
        assert!(shared.metrics.connected.load(Ordering::Relaxed));
    }

    #[tokio::test]
    async fn a_full_publish_queue_drops_and_counts_without_blocking() {
        // Unreachable Redis (port 1) and a queue of 2: publishing never waits.
        let engine = Engine::new(Default::default());
        let mut cfg = RedisConfig::with_url("redis://127.0.0.1:1");
        cfg.publish_queue = 2;
        cfg.publish_batch = 1;
        let bp = RedisBackplane::start(&engine, &cfg).unwrap();
        let started = Instant::now();
        for i in 0..1000 {
            engine.publish_json("/a", &i).unwrap();
        }
        assert!(started.elapsed() < Duration::from_secs(1));
        let m = bp.metrics();
        assert!(m.publish_dropped_queue_full.load(Ordering::Relaxed) >= 990);
        assert_eq!(m.published.load(Ordering::Relaxed), 0);
        bp.shutdown();
    }

    #[test]
    fn start_needs_a_url_a_valid_config_and_a_runtime() {
        let engine = Engine::new(Default::default());
        assert_eq!(
            RedisBackplane::start(&engine, &RedisConfig::default()).unwrap_err(),
            Error::NoUrl
        );
        assert_eq!(
            RedisBackplane::start(&engine, &RedisConfig::with_url("redis://127.0.0.1:1"))
                .unwrap_err(),
            Error::NoRuntime
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            assert!(matches!(
                RedisBackplane::start(&engine, &RedisConfig::with_url("http://nope")),
                Err(Error::InvalidUrl(_))
            ));
            let mut cfg = RedisConfig::with_url("redis://127.0.0.1:1");
            cfg.receive_queue = 0;
            assert!(matches!(
                RedisBackplane::start(&engine, &cfg),
                Err(Error::InvalidConfig(_))
            ));
        });
    }
}
