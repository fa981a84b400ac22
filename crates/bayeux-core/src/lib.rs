//! # bayeux-core
//!
//! The Bayeux 1.0 protocol engine as CometD speaks it, with no I/O: bytes come in through
//! [`decode_batch`], an [`Engine`] handles the messages (meta handlers, extensions, security
//! policy, router) and hands back serialized replies and, for a `/meta/connect` that must wait,
//! a [`Hold`] ("answer when this session has messages or at this deadline"). Time is passed in;
//! the transport crate owns sockets and timers.
//!
//! The server-side API CometD users build on: remote calls ([`remote`]), per-channel
//! authorizers and an asynchronous security policy ([`authz`]), channel initializers,
//! listeners, settings and lazy messages ([`channels`]), and paged introspection
//! ([`introspect`]).
//!
//! What it does not do: HTTP, WebSocket, cookies, timers, threads. Those live in
//! `bayeux-transport`.
//!
//! ```
//! use std::time::Instant;
//! use bayeux_core::{Engine, EngineConfig};
//!
//! let engine = Engine::new(EngineConfig::default());
//! let received = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
//! let r = received.clone();
//! let service = engine.local_session(None, move |d| {
//!     assert_eq!(d.channel.as_str(), "/news/today");
//!     r.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
//! });
//! service.subscribe("/news/*").unwrap();
//! engine.publish_json("/news/today", &serde_json::json!({"headline": "hi"})).unwrap();
//! assert_eq!(received.load(std::sync::atomic::Ordering::SeqCst), 1);
//! # let _ = Instant::now();
//! ```

pub mod authz;
pub mod channel;
pub mod channels;
pub mod codec;
pub mod engine;
pub mod error;
pub mod ext;
pub mod introspect;
pub mod remote;
pub mod router;
pub mod session;

pub use authz::{
    AsyncSecurityPolicy, Authorization, Authorized, Authorizer, DecisionFuture, GrantAuthorizer,
    Operation,
};
pub use channel::{ChannelId, ChannelKind, ChannelPattern, Wildcard};
pub use channels::{
    ChannelHandle, ChannelSettings, Initializer, MessageListener, Recipient, RecipientHook,
    SubscriptionListener,
};
pub use codec::{
    Advice, AdviceIn, Framed, Limits, Message, MessageId, Raw, Reply, Subscription, decode_batch,
    encode_batch, join_array,
};
pub use engine::{Engine, EngineConfig, Hold, LocalSession, Outcome, Stats};
pub use error::{Error, Failure, Reconnect};
pub use ext::{
    AckExtension, Decision, Extension, Listener, RequestContext, SecurityPolicy, TimesyncExtension,
};
pub use introspect::{ChannelInfo, Page, SessionInfo};
pub use remote::{RemoteCall, RemoteCallHandler, Responder};
pub use router::{Backplane, Router};
pub use session::{
    ConnectionQuota, Delivery, DirectOutcome, DirectWrite, LocalCallback, OverflowPolicy,
    RemoveReason, Session, SessionId, TransportKind, Wake, random_hex,
};
