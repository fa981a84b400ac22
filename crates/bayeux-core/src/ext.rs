//! Extension points: the security policy, message extensions and listeners; and the two
//! extensions CometD clients expect, `ack` and `timesync`.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::channel::{ChannelId, ChannelPattern};
use crate::codec::{Message, Reply};
use crate::session::{ConnectionQuota, RemoveReason, Session, TransportKind};

/// Who sent a request: the transport and what it authenticated.
#[derive(Debug, Clone)]
pub struct RequestContext {
    /// The transport the request arrived on.
    pub transport: TransportKind,
    /// The principal the transport authenticated (e.g. a user name), if any.
    pub principal: Option<Arc<str>>,
    /// The browser id (`BAYEUX_BROWSER` cookie) the request carried, if any.
    pub browser: Option<Arc<str>>,
    /// Whether the request came over HTTP/2 (exempt from the multiple-clients limit).
    pub http2: bool,
    /// The endpoint (mount path) the request arrived on, e.g. `/cometd`, so a security policy
    /// can treat endpoints differently. Each endpoint has its own session budget
    /// ([`crate::EngineConfig::max_sessions`]).
    pub endpoint: Option<Arc<str>>,
    /// The quota of live sessions of the connection the request arrived on (a WebSocket, or a
    /// keep-alive HTTP connection), when the transport tracks one: a handshake beyond it is
    /// refused with `503::too_many_sessions`.
    pub connection: Option<Arc<ConnectionQuota>>,
    /// Whether the WebSocket the request arrived on negotiated permessage-deflate (RFC 7692):
    /// set by the transport, which compresses what it writes on that socket; `false` on the
    /// other transports.
    pub websocket_deflate: bool,
}

impl RequestContext {
    /// An anonymous request on `transport`.
    pub fn new(transport: TransportKind) -> RequestContext {
        RequestContext {
            transport,
            principal: None,
            browser: None,
            http2: false,
            endpoint: None,
            connection: None,
            websocket_deflate: false,
        }
    }

    /// Sets the principal.
    pub fn with_principal(mut self, principal: impl Into<Arc<str>>) -> Self {
        self.principal = Some(principal.into());
        self
    }

    /// Sets the endpoint.
    pub fn with_endpoint(mut self, endpoint: impl Into<Arc<str>>) -> Self {
        self.endpoint = Some(endpoint.into());
        self
    }

    /// Sets the browser id.
    pub fn with_browser(mut self, browser: impl Into<Arc<str>>) -> Self {
        self.browser = Some(browser.into());
        self
    }
}

/// A security decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Go ahead.
    Allow,
    /// Refused; the reason goes into the args slot of the error string
    /// (`403:<reason>:publish_denied`).
    Deny(String),
    /// Handshake only: the request carried no acceptable credentials (`401::<message>`).
    Unauthenticated(String),
    /// Refused with the message as the whole error text (`403::<message>`), for applications
    /// whose clients expect their own wording (e.g. GWS's `403::Publish denied`).
    Forbidden(String),
}

/// Decides who may handshake, subscribe and publish. The engine itself already refuses remote
/// use of `/meta/**` and publishing to wildcards; a policy adds application rules.
pub trait SecurityPolicy: Send + Sync {
    /// May this request create a session?
    fn can_handshake(&self, _ctx: &RequestContext, _message: &Message) -> Decision {
        Decision::Allow
    }
    /// May `session` subscribe to `pattern`?
    fn can_subscribe(
        &self,
        _session: &Session,
        _pattern: &ChannelPattern,
        _message: &Message,
    ) -> Decision {
        Decision::Allow
    }
    /// May `session` publish to `channel`?
    fn can_publish(
        &self,
        _session: &Session,
        _channel: &ChannelId,
        _message: &Message,
    ) -> Decision {
        Decision::Allow
    }
}

/// A message extension: sees every inbound message before the engine handles it, and every reply
/// before it is encoded, in registration order.
///
/// Deliveries are serialized once for all their recipients, so outgoing hooks see replies only
/// (CometD also runs them on each delivery copy; we trade that for serialize-once).
pub trait Extension: Send + Sync {
    /// Inbound message. `session` is the sender's session when the message names a known one.
    /// Return `false` to delete the message (`404::message_deleted`).
    fn incoming(&self, _session: Option<&Arc<Session>>, _message: &mut Message) -> bool {
        true
    }
    /// A reply to `request` (meta or publish), before encoding. For a `/meta/connect` that was
    /// held, `request` keeps only the connect's `channel`, `id` and `ext` (a held connect does
    /// not keep the whole request for its lifetime).
    fn outgoing(&self, _session: Option<&Arc<Session>>, _request: &Message, _reply: &mut Reply) {}
}

/// Observes the engine. Every method has an empty default.
///
/// The events of one session arrive in order: `session_added` before the session can be found
/// (so before any other event of it), then its `subscribed` / `unsubscribed` events, then
/// `session_removed` last. To keep that order, `subscribed` and `unsubscribed` run while the
/// session's subscriptions are locked: they must not subscribe or unsubscribe that same session.
pub trait Listener: Send + Sync {
    /// A session was created (it is not yet visible to lookups).
    fn session_added(&self, _session: &Arc<Session>) {}
    /// A session was removed (after its `unsubscribed` events).
    fn session_removed(&self, _session: &Arc<Session>, _reason: RemoveReason) {}
    /// A session subscribed.
    fn subscribed(&self, _session: &Arc<Session>, _pattern: &ChannelPattern) {}
    /// A session unsubscribed (explicitly or by going away).
    fn unsubscribed(&self, _session: &Arc<Session>, _pattern: &ChannelPattern) {}
    /// A message was published on a broadcast channel; `recipients` local sessions got it.
    fn published(&self, _channel: &ChannelId, _recipients: usize) {}
    /// A message met a full queue.
    fn queue_full(&self, _session: &Arc<Session>) {}
    /// A channel (or pattern) came into existence, its initializers having run (see
    /// [`crate::channels`]). Runs while the subscribing session's subscriptions are locked.
    fn channel_added(&self, _channel: &ChannelPattern) {}
    /// A channel ended: its last subscriber left and it is not persistent, or the server
    /// removed it.
    fn channel_removed(&self, _channel: &ChannelPattern) {}
}

/// CometD's acknowledged-delivery extension (`ext.ack`).
///
/// Handshake: a client sending `ext.ack: true` gets `ext.ack: true` back and its session delivers
/// only inside `/meta/connect` replies, each numbered by `ext.ack: <batch>`. The client returns
/// the last batch it received on its next connect; until then the batch is kept and re-sent.
#[derive(Debug, Default, Clone, Copy)]
pub struct AckExtension;

impl Extension for AckExtension {
    fn incoming(&self, session: Option<&Arc<Session>>, message: &mut Message) -> bool {
        if message.channel.as_deref() == Some("/meta/connect")
            && let Some(session) = session
            && let Some(n) = message.ext_field("ack").and_then(|v| v.as_i64())
        {
            session.ack_received(n);
        }
        true
    }

    fn outgoing(&self, session: Option<&Arc<Session>>, request: &Message, reply: &mut Reply) {
        match (request.channel.as_deref(), session) {
            (Some("/meta/handshake"), Some(session))
                if reply.successful && request.ext_field("ack") == Some(Value::Bool(true)) =>
            {
                session.enable_ack();
                reply.set_ext("ack", Value::Bool(true));
            }
            (Some("/meta/connect"), Some(session)) if reply.successful => {
                if let Some(batch) = session.ack_batch() {
                    reply.set_ext("ack", json!(batch));
                }
            }
            _ => {}
        }
    }
}

/// CometD's timesync extension: answers `ext.timesync {tc, l, o}` on handshake and connect with
/// `{tc, ts, p, a}` (server time in ms since the epoch; processing time; the client's offset
/// error).
///
/// The core reads no clock: the wall clock comes in as a function returning milliseconds since
/// the Unix epoch (`bayeux_transport::epoch_ms` in a server, a fake one in tests).
#[derive(Debug, Clone, Copy)]
pub struct TimesyncExtension {
    clock: fn() -> i64,
}

impl TimesyncExtension {
    /// The extension reading the time from `clock` (ms since the Unix epoch).
    pub fn new(clock: fn() -> i64) -> TimesyncExtension {
        TimesyncExtension { clock }
    }
}

impl Extension for TimesyncExtension {
    fn incoming(&self, _session: Option<&Arc<Session>>, message: &mut Message) -> bool {
        // Record when the request arrived: a held connect is answered much later, and the
        // client needs the arrival time (`ts`) and the time kept (`p`) separately.
        if matches!(
            message.channel.as_deref(),
            Some("/meta/handshake" | "/meta/connect")
        ) && let Some(ext) = &message.ext
            && let Some(mut map) = ext.parse::<serde_json::Map<String, Value>>()
            && let Some(Value::Object(ts)) = map.get_mut("timesync")
        {
            ts.insert("ts".into(), json!((self.clock)()));
            if let Ok(raw) = crate::codec::Raw::from_value(&map) {
                message.ext = Some(raw);
            }
        }
        true
    }

    fn outgoing(&self, _session: Option<&Arc<Session>>, request: &Message, reply: &mut Reply) {
        if !matches!(
            request.channel.as_deref(),
            Some("/meta/handshake" | "/meta/connect")
        ) {
            return;
        }
        let Some(Value::Object(ts)) = request.ext_field("timesync") else {
            return;
        };
        let Some(tc) = ts.get("tc").and_then(Value::as_i64) else {
            return;
        };
        let l = ts.get("l").and_then(Value::as_i64).unwrap_or(0);
        let o = ts.get("o").and_then(Value::as_i64).unwrap_or(0);
        let now = (self.clock)();
        let received = ts.get("ts").and_then(Value::as_i64).unwrap_or(now);
        // The client's estimate of server time at reception was tc + o + l. Every term but
        // `now` comes from the client: saturate instead of overflowing.
        let a = tc
            .saturating_add(o)
            .saturating_add(l)
            .saturating_sub(received);
        let p = now.saturating_sub(received).max(0);
        reply.set_ext(
            "timesync",
            json!({"tc": tc, "ts": received, "p": p, "a": a}),
        );
    }
}
