//! # bayeux-redis
//!
//! The Redis backplane of [`bayeux_core`]: with it, several server nodes behind a load balancer
//! act as one Bayeux server. A broadcast published on any node reaches the subscribers of every
//! node, and a delivery to a user (`Engine::deliver_to_principal`, e.g. the voice
//! notifications on `/v2/me/calls`) reaches that user's sessions on whichever node they live.
//!
//! ```no_run
//! # async fn f() -> Result<(), bayeux_redis::Error> {
//! use bayeux_core::{Engine, EngineConfig};
//! use bayeux_redis::{RedisBackplane, RedisConfig};
//!
//! let engine = Engine::new(EngineConfig::default());
//! // Before serving: installs the interest listener and the backplane into the engine.
//! let backplane = RedisBackplane::start(&engine, &RedisConfig::with_url("redis://127.0.0.1:6379"))?;
//! // ... serve; append backplane.render_metrics() to /metrics ...
//! # let _ = backplane; Ok(()) }
//! ```
//!
//! ## What it does
//! - **Interest-based.** A node receives from Redis only what its local sessions need: the
//!   channels and patterns they subscribe to (reference-counted; a Redis subscription exists
//!   while at least one local session needs it) and the delivery channel of each user with a
//!   local session. Wildcards become conservative Redis globs (`/a/*` and `/a/**` both become
//!   `<ns>:c:/a/*`) and the node's own matcher makes the final decision. See [`wire`] for the
//!   channel names and the frame format.
//! - **Serialize once.** The engine serializes a message once; that same byte string, behind a
//!   25-byte header (version, origin node id, sequence number), is what crosses Redis and what
//!   the other nodes put into their sessions' queues. Nothing is re-serialized.
//! - **No double delivery.** A node skips its own messages (it delivered them locally before
//!   publishing) and the second copy Redis sends when a message matches both an exact
//!   subscription and a glob of the same node.
//! - **Per-publisher order.** One publisher task per node sends on one connection, in the order
//!   the engine handed the messages over; one receiver task applies them in arrival order. A
//!   message arriving after a later one of the same node (possible only around a reconnection)
//!   is dropped rather than delivered out of order.
//! - **Never blocks the local path.** The engine hands messages over with a non-blocking send
//!   into a bounded queue; when it is full (Redis slow or down) the cross-node copy is dropped
//!   and counted. Likewise, what Redis sends waits in a bounded queue, and a node that falls
//!   behind drops and counts.
//! - **Redis outages.** Local delivery keeps working. Cross-node publishes are dropped and
//!   counted (`bayeux_redis_publish_dropped_total`), the outage is logged once, and when Redis
//!   returns the node reconnects, re-issues its subscriptions and carries on by itself, with no
//!   restart and no duplicates (Redis pub/sub replays nothing). Unreachable at start is the same
//!   case: the node starts and serves locally meanwhile.
//! - **Bad input.** Corrupt or foreign messages on a backplane channel are ignored and counted
//!   (`bayeux_redis_invalid_total`, by reason in `bayeux_redis_rejected_total`), never
//!   delivered, never a panic.
//! - **Redis is not trusted.** Whoever can publish on this Redis can forge frames of any node,
//!   so a received message is parsed and only its `channel`, `data` and `ext` are kept; the
//!   engine serializes the delivery again from them. It must be one JSON object of at most
//!   `max_message_bytes`, on a broadcast channel (never `/meta/**` or `/service/**`, for
//!   broadcasts and per-user deliveries alike) and, for a broadcast, on the channel its Redis
//!   channel routes. A Redis publisher can thus make clients receive what a publisher on a
//!   broadcast channel could (and per-user deliveries on broadcast channels), and nothing
//!   else: no protocol message, no forced disconnect, no reply fields. See [`wire`].
//!
//! ## What it does not do
//! - Guarantee delivery: Redis pub/sub is at-most-once. What is published while a node is
//!   disconnected from Redis is lost for that node (the ack extension does not span nodes).
//! - Move sessions: a session lives on the node that handshook it. Deployments use sticky
//!   sessions (the `BAYEUX_BROWSER` cookie for long-polling, the connection for WebSocket); a
//!   client whose node dies gets `402::session_unknown` from another node and handshakes again.
//! - Share state other than messages: the voice emulation's calls live on the node that
//!   served the REST request that made them.
//! - Redis Cluster or Sentinel: one Redis (6 or later: RESP3 is used).

mod backplane;
pub mod config;
pub mod interest;
pub mod metrics;
pub mod wire;

pub use backplane::{Error, RedisBackplane};
pub use config::RedisConfig;
pub use interest::Interest;
pub use metrics::Metrics;
pub use wire::NodeId;
