//! Per-channel authorizers, as CometD combines them, and the asynchronous security policy.
//!
//! # Authorizers
//!
//! An [`Authorizer`] is attached to a channel or a wildcard pattern
//! ([`crate::Engine::add_authorizer`]) and answers [`Authorization::Grant`],
//! [`Authorization::Deny`] or [`Authorization::Ignore`] for an [`Operation`] (create, subscribe,
//! publish) of a remote session. For an operation on a target (a channel, or the pattern a
//! client subscribes to), the engine consults the authorizers of the target itself and of every
//! wildcard pattern that covers it (for `/a/b/c`: `/a/b/*`, `/a/b/**`, `/a/**`, `/**`; for the
//! pattern `/a/b/*`: `/a/b/**`, `/a/**`, `/**`), and decides as CometD does:
//!
//! - no authorizer in that set: granted;
//! - any authorizer denies: denied (with its reason);
//! - otherwise at least one grant is needed: granted if one grants, else denied with
//!   `denied_by_not_granting` (ignore abstains).
//!
//! `Create` is asked when the operation would bring a channel into existence: a subscription to
//! a name nobody is subscribed to yet, a publish to a channel nobody is subscribed to by that
//! exact name. A refusal is `403:<reason>:create_denied`. Authorizers apply to remote sessions
//! only (the server's own API is trusted), after the [`crate::SecurityPolicy`] and the
//! [`AsyncSecurityPolicy`] allowed the operation.
//!
//! ```
//! use std::sync::Arc;
//! use bayeux_core::{Authorization, Engine, EngineConfig, GrantAuthorizer, Operation};
//!
//! let engine = Engine::new(EngineConfig::default());
//! // Anyone may subscribe to /news/**, nobody may publish there (no grant for publish).
//! engine.add_authorizer("/news/**", Arc::new(GrantAuthorizer::new(&[Operation::Create, Operation::Subscribe]))).unwrap();
//! // ...except the editors, whose sessions carry the principal "editor".
//! engine.add_authorizer("/news/**", Arc::new(|op: Operation, _: &bayeux_core::ChannelPattern,
//!     session: &bayeux_core::Session, _: &bayeux_core::Message| {
//!     if op == Operation::Publish && session.principal() == Some("editor") {
//!         Authorization::Grant
//!     } else {
//!         Authorization::Ignore
//!     }
//! })).unwrap();
//! ```
//!
//! # Asynchronous security policy
//!
//! An [`AsyncSecurityPolicy`] answers with a future, so a check can ask a database or an
//! identity service without blocking the runtime. The transports run it before the batch is
//! handled ([`crate::Engine::authorize`]), then hand its decisions to the engine
//! ([`crate::Engine::handle_authorized`]).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use parking_lot::RwLock;

use crate::channel::{ChannelPattern, Wildcard};
use crate::codec::Message;
use crate::ext::{Decision, RequestContext};
use crate::session::Session;

/// An operation an authorizer is asked about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    /// Bringing a channel into existence (the first subscription to a name, or a publish to a
    /// channel nobody is subscribed to by that exact name).
    Create,
    /// Subscribing to a channel or pattern.
    Subscribe,
    /// Publishing to a channel.
    Publish,
}

/// An authorizer's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authorization {
    /// Allows the operation, unless another authorizer of the set denies it.
    Grant,
    /// Refuses the operation; the reason goes into the error string (`403:<reason>:..`).
    Deny(String),
    /// Abstains.
    Ignore,
}

/// Authorizes operations on the channels it is attached to (and, attached to a wildcard
/// pattern, on the channels the pattern covers). Must not block.
pub trait Authorizer: Send + Sync {
    /// `target` is the channel published to, or the channel or pattern subscribed to.
    fn authorize(
        &self,
        operation: Operation,
        target: &ChannelPattern,
        session: &Session,
        message: &Message,
    ) -> Authorization;
}

impl<F> Authorizer for F
where
    F: Fn(Operation, &ChannelPattern, &Session, &Message) -> Authorization + Send + Sync,
{
    fn authorize(
        &self,
        operation: Operation,
        target: &ChannelPattern,
        session: &Session,
        message: &Message,
    ) -> Authorization {
        self(operation, target, session, message)
    }
}

/// Grants a fixed set of operations and ignores the others (CometD's `GrantAuthorizer`).
#[derive(Debug, Clone)]
pub struct GrantAuthorizer {
    create: bool,
    subscribe: bool,
    publish: bool,
}

impl GrantAuthorizer {
    /// Grants `operations`.
    pub fn new(operations: &[Operation]) -> GrantAuthorizer {
        GrantAuthorizer {
            create: operations.contains(&Operation::Create),
            subscribe: operations.contains(&Operation::Subscribe),
            publish: operations.contains(&Operation::Publish),
        }
    }

    /// Grants every operation.
    pub fn all() -> GrantAuthorizer {
        GrantAuthorizer::new(&[Operation::Create, Operation::Subscribe, Operation::Publish])
    }
}

impl Authorizer for GrantAuthorizer {
    fn authorize(
        &self,
        op: Operation,
        _: &ChannelPattern,
        _: &Session,
        _: &Message,
    ) -> Authorization {
        let granted = match op {
            Operation::Create => self.create,
            Operation::Subscribe => self.subscribe,
            Operation::Publish => self.publish,
        };
        if granted {
            Authorization::Grant
        } else {
            Authorization::Ignore
        }
    }
}

/// The reason of a refusal when authorizers exist for a target but none granted.
pub const NOT_GRANTED: &str = "denied_by_not_granting";

/// The wildcard patterns that match every channel `target` matches, most specific first: for
/// `/a/b/c`, `/a/b/*`, `/a/b/**`, `/a/**`, `/**`; for `/a/b/*`, `/a/b/**`, `/a/**`, `/**`; for
/// `/a/b/**`, `/a/**`, `/**`.
pub fn covering_wildcards(target: &ChannelPattern) -> Vec<String> {
    let name = target.as_str();
    let last = name.rfind('/').unwrap_or(0);
    let mut out = Vec::new();
    if target.wildcard() == Wildcard::None {
        out.push(format!("{}/*", &name[..last]));
    }
    let deep_from = match target.wildcard() {
        // `/a/b/**` is not covered by `/a/b/**` itself (that is the target) nor by `/a/b/*`.
        Wildcard::Deep => last.checked_sub(1),
        _ => Some(last),
    };
    if let Some(upto) = deep_from {
        for (i, _) in name[..=upto]
            .match_indices('/')
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
        {
            out.push(format!("{}/**", &name[..i]));
        }
    }
    out
}

/// Authorizers by the channel or pattern name they are attached to.
type ByName = HashMap<Box<str>, Vec<Arc<dyn Authorizer>>>;

/// The authorizers of the engine.
#[derive(Default)]
pub(crate) struct Authorizers {
    by_name: RwLock<ByName>,
}

impl Authorizers {
    pub(crate) fn add(&self, on: &ChannelPattern, a: Arc<dyn Authorizer>) {
        self.by_name
            .write()
            .entry(Box::from(on.as_str()))
            .or_default()
            .push(a);
    }

    pub(crate) fn remove(&self, on: &ChannelPattern, a: &Arc<dyn Authorizer>) -> bool {
        let mut map = self.by_name.write();
        let Some(list) = map.get_mut(on.as_str()) else {
            return false;
        };
        let before = list.len();
        list.retain(|x| !Arc::ptr_eq(x, a));
        let removed = list.len() != before;
        if list.is_empty() {
            map.remove(on.as_str());
        }
        removed
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.by_name.read().is_empty()
    }

    /// The combined decision for `operation` on `target`: `Ok` when granted, `Err(reason)`.
    pub(crate) fn decide(
        &self,
        operation: Operation,
        target: &ChannelPattern,
        session: &Session,
        message: &Message,
    ) -> Result<(), String> {
        // The set is collected first, so no authorizer runs under the lock.
        let set: Vec<Arc<dyn Authorizer>> = {
            let map = self.by_name.read();
            if map.is_empty() {
                return Ok(());
            }
            std::iter::once(target.as_str().to_owned())
                .chain(covering_wildcards(target))
                .filter_map(|n| map.get(n.as_str()))
                .flat_map(|v| v.iter().cloned())
                .collect()
        };
        if set.is_empty() {
            return Ok(());
        }
        let mut granted = false;
        for a in &set {
            match a.authorize(operation, target, session, message) {
                Authorization::Deny(reason) => return Err(reason),
                Authorization::Grant => granted = true,
                Authorization::Ignore => {}
            }
        }
        if granted {
            Ok(())
        } else {
            Err(NOT_GRANTED.to_owned())
        }
    }
}

/// A future answering a security question.
pub type DecisionFuture = Pin<Box<dyn Future<Output = Decision> + Send>>;

/// A security policy that answers with futures, so a check may wait for a database or an
/// identity service without blocking the runtime. Every method defaults to allowing.
///
/// It runs before the batch is handled ([`crate::Engine::authorize`]), on each message as it
/// arrived (before incoming extensions), and only for messages that name a live session of the
/// request (handshakes excepted). Its futures own what they need (`'static`): clone out of the
/// arguments what the check reads.
///
/// ```
/// use std::sync::Arc;
/// use bayeux_core::{AsyncSecurityPolicy, ChannelId, Decision, DecisionFuture, Message, Session};
///
/// struct Directory;
/// impl AsyncSecurityPolicy for Directory {
///     fn can_publish(&self, session: &Arc<Session>, channel: &ChannelId, _: &Message) -> DecisionFuture {
///         let user = session.principal().map(str::to_owned);
///         let channel = channel.clone();
///         Box::pin(async move {
///             // e.g. ask the directory service whether `user` may write to `channel`
///             if user.is_some() && channel.as_str().starts_with("/chat/") {
///                 Decision::Allow
///             } else {
///                 Decision::Deny("not_a_member".into())
///             }
///         })
///     }
/// }
/// ```
pub trait AsyncSecurityPolicy: Send + Sync {
    /// May this request create a session?
    fn can_handshake(&self, _ctx: &RequestContext, _message: &Message) -> DecisionFuture {
        Box::pin(std::future::ready(Decision::Allow))
    }
    /// May `session` subscribe to `pattern`?
    fn can_subscribe(
        &self,
        _session: &Arc<Session>,
        _pattern: &ChannelPattern,
        _message: &Message,
    ) -> DecisionFuture {
        Box::pin(std::future::ready(Decision::Allow))
    }
    /// May `session` publish to `channel`?
    fn can_publish(
        &self,
        _session: &Arc<Session>,
        _channel: &crate::channel::ChannelId,
        _message: &Message,
    ) -> DecisionFuture {
        Box::pin(std::future::ready(Decision::Allow))
    }
}

/// A batch whose asynchronous security checks have run: hand it to
/// [`crate::Engine::handle_authorized`].
#[derive(Debug, Default)]
pub struct Authorized {
    pub(crate) batch: Vec<Message>,
    /// One entry per message: the asynchronous policy's decision, when it was asked.
    pub(crate) decisions: Vec<Option<Decision>>,
}

impl Authorized {
    /// A batch no asynchronous check applies to.
    pub fn unchecked(batch: Vec<Message>) -> Authorized {
        Authorized {
            batch,
            decisions: Vec::new(),
        }
    }

    /// The messages.
    pub fn messages(&self) -> &[Message] {
        &self.batch
    }
}
