//! Remote calls, as CometD's JavaScript client makes them with `remoteCall(target, data,
//! timeout, callback)`: a message on `/service/<target>` with an `id`, answered by one message
//! to the caller only, on the same channel, with the same `id`, `successful` and `data`.
//!
//! A server registers a handler per channel ([`crate::Engine::on_remote_call`]). The handler
//! gets the [`RemoteCall`] and a [`Responder`], and answers now or later, from any thread or
//! task ([`Responder::success`], [`Responder::failure`]). A call not answered within its
//! handler's timeout is answered for it with `408::remote_call_timeout` by the sweeper
//! ([`crate::Engine::sweep`]; the core reads no clock, so the timeout fires at the first sweep
//! at or after the deadline). A responder dropped without answering answers
//! `500::remote_call_unanswered` at once. Pending calls are bounded per session and per
//! engine ([`crate::EngineConfig::max_remote_calls`]).
//!
//! The reply goes into the caller's queue like any message, so it travels on whatever
//! transport the caller uses: in a WebSocket frame as soon as it is queued, or in the answer of
//! the next (or the held) `/meta/connect` over HTTP.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::channel::ChannelId;
use crate::codec::{Framed, MessageId, Raw};
use crate::error::{Error, Failure};
use crate::session::Session;

/// A remote call as its handler sees it.
#[derive(Debug)]
pub struct RemoteCall {
    channel: ChannelId,
    id: MessageId,
    data: Raw,
    caller: Arc<Session>,
}

impl RemoteCall {
    /// The channel called, `/service/<target>`.
    pub fn channel(&self) -> &ChannelId {
        &self.channel
    }

    /// The request's `id`, which the reply carries.
    pub fn id(&self) -> &MessageId {
        &self.id
    }

    /// The request's `data`, unparsed.
    pub fn data(&self) -> &RawValue {
        &self.data.0
    }

    /// The request's `data`, parsed into `T` (`None` if it does not fit).
    pub fn data_as<'a, T: Deserialize<'a>>(&'a self) -> Option<T> {
        self.data.parse()
    }

    /// The caller's session (its principal, its attributes).
    pub fn caller(&self) -> &Arc<Session> {
        &self.caller
    }
}

/// Answers one remote call, once. Cheap to move to another thread or task.
///
/// Whichever comes first wins: the handler's answer, the timeout, or the drop of the responder
/// (which answers `500::remote_call_unanswered`); later answers are ignored and report `false`.
pub struct Responder {
    call: Arc<CallState>,
    calls: Arc<Calls>,
}

impl std::fmt::Debug for Responder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Responder")
            .field("channel", &self.call.channel.as_str())
            .field("id", &self.call.id.as_str())
            .finish()
    }
}

impl Responder {
    /// Answers with `successful: true` and `data`. Returns false if the call was already
    /// answered (timed out).
    pub fn success(self, data: &RawValue) -> bool {
        self.calls.answer(&self.call, true, Some(data), None)
    }

    /// Answers with `successful: false` and `data` (the failure the client's callback reads in
    /// `message.data`). Returns false if the call was already answered.
    pub fn failure(self, data: &RawValue) -> bool {
        self.calls.answer(&self.call, false, Some(data), None)
    }

    /// [`Responder::success`] with any serializable value.
    pub fn success_json<T: Serialize + ?Sized>(self, data: &T) -> Result<bool, Error> {
        let raw = Raw::from_value(data)?;
        Ok(self.success(&raw.0))
    }

    /// [`Responder::failure`] with any serializable value.
    pub fn failure_json<T: Serialize + ?Sized>(self, data: &T) -> Result<bool, Error> {
        let raw = Raw::from_value(data)?;
        Ok(self.failure(&raw.0))
    }

    /// Answers with the result: `Ok` as [`Responder::success`], `Err` as
    /// [`Responder::failure`].
    pub fn answer(self, result: Result<&RawValue, &RawValue>) -> bool {
        match result {
            Ok(d) => self.success(d),
            Err(d) => self.failure(d),
        }
    }

    /// Whether the call is still waiting for its answer (not answered and not timed out).
    pub fn is_pending(&self) -> bool {
        !self.call.done.load(Ordering::Acquire)
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        let f = Failure::RemoteCallUnanswered.error_string();
        self.calls.answer(&self.call, false, None, Some(f));
    }
}

/// A remote-call handler: gets the call and the responder that answers it.
pub type RemoteCallHandler = Arc<dyn Fn(RemoteCall, Responder) + Send + Sync>;

/// Where answers go: into the caller's queue, through the engine (which counts deliveries and
/// applies the overflow policy).
pub(crate) type Sink = Arc<dyn Fn(&Arc<Session>, &Framed) + Send + Sync>;

struct Service {
    handler: RemoteCallHandler,
    timeout: Duration,
}

pub(crate) struct CallState {
    caller: Arc<Session>,
    channel: ChannelId,
    id: MessageId,
    done: AtomicBool,
    /// The key in the pending table: deadline, then a sequence number.
    key: (Instant, u64),
}

#[derive(Default)]
struct Pending {
    by_deadline: BTreeMap<(Instant, u64), Arc<CallState>>,
    per_session: HashMap<u64, usize>,
    seq: u64,
}

/// The remote-call registry and the table of calls waiting for their answer.
pub(crate) struct Calls {
    services: RwLock<HashMap<Box<str>, Arc<Service>>>,
    pending: Mutex<Pending>,
    sink: Sink,
    max_total: usize,
    max_per_session: usize,
}

/// The reply to a remote call (CometD's `RemoteCall.Caller.result` / `failure`).
#[derive(Serialize)]
struct CallReply<'a> {
    channel: &'a str,
    id: &'a MessageId,
    successful: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// What [`Calls::start`] decided.
pub(crate) enum Start {
    /// No handler for this channel: the message is an ordinary service publish.
    NoHandler,
    /// The handler has been called (it may have answered already).
    Called,
}

impl Calls {
    pub(crate) fn new(sink: Sink, max_total: usize, max_per_session: usize) -> Calls {
        Calls {
            services: RwLock::new(HashMap::new()),
            pending: Mutex::new(Pending::default()),
            sink,
            max_total,
            max_per_session,
        }
    }

    pub(crate) fn register(&self, channel: &ChannelId, timeout: Duration, h: RemoteCallHandler) {
        let service = Arc::new(Service {
            handler: h,
            timeout,
        });
        self.services
            .write()
            .insert(Box::from(channel.as_str()), service);
    }

    pub(crate) fn unregister(&self, channel: &ChannelId) -> bool {
        self.services.write().remove(channel.as_str()).is_some()
    }

    pub(crate) fn has_handler(&self, channel: &ChannelId) -> bool {
        self.services.read().contains_key(channel.as_str())
    }

    /// Number of calls waiting for an answer.
    pub(crate) fn pending(&self) -> usize {
        self.pending.lock().by_deadline.len()
    }

    /// Starts a call of `channel` by `caller` at `now`, if a handler is registered: records it
    /// as pending (within the bounds) and calls the handler, with no lock held.
    pub(crate) fn start(
        self: &Arc<Self>,
        channel: &ChannelId,
        id: Option<&MessageId>,
        data: &RawValue,
        caller: &Arc<Session>,
        now: Instant,
    ) -> Result<Start, Failure> {
        let Some(service) = self.services.read().get(channel.as_str()).cloned() else {
            return Ok(Start::NoHandler);
        };
        let id = id.ok_or(Failure::RemoteCallIdMissing)?.clone();
        let call = {
            let mut p = self.pending.lock();
            let mine = p.per_session.get(&caller.key()).copied().unwrap_or(0);
            if p.by_deadline.len() >= self.max_total || mine >= self.max_per_session {
                return Err(Failure::TooManyRemoteCalls);
            }
            p.seq += 1;
            let call = Arc::new(CallState {
                caller: caller.clone(),
                channel: channel.clone(),
                id: id.clone(),
                done: AtomicBool::new(false),
                key: (now + service.timeout, p.seq),
            });
            p.by_deadline.insert(call.key, call.clone());
            *p.per_session.entry(caller.key()).or_default() += 1;
            call
        };
        let request = RemoteCall {
            channel: channel.clone(),
            id,
            data: Raw(data.to_owned()),
            caller: caller.clone(),
        };
        let responder = Responder {
            call,
            calls: self.clone(),
        };
        (service.handler)(request, responder);
        Ok(Start::Called)
    }

    /// Answers `call` unless it has been answered already; returns whether this answer won.
    fn answer(
        &self,
        call: &Arc<CallState>,
        successful: bool,
        data: Option<&RawValue>,
        error: Option<String>,
    ) -> bool {
        if call.done.swap(true, Ordering::AcqRel) {
            return false;
        }
        self.forget(call);
        let reply = Framed::encode(&CallReply {
            channel: call.channel.as_str(),
            id: &call.id,
            successful,
            data,
            error,
        });
        (self.sink)(&call.caller, &reply);
        true
    }

    fn forget(&self, call: &CallState) {
        let mut p = self.pending.lock();
        if p.by_deadline.remove(&call.key).is_some() {
            let key = call.caller.key();
            if let Some(n) = p.per_session.get_mut(&key) {
                *n -= 1;
                if *n == 0 {
                    p.per_session.remove(&key);
                }
            }
        }
    }

    /// Answers every call whose deadline is at or before `now` with
    /// `408::remote_call_timeout`. Returns how many timed out.
    pub(crate) fn expire(&self, now: Instant) -> usize {
        let expired: Vec<Arc<CallState>> = {
            let p = self.pending.lock();
            p.by_deadline
                .range(..=(now, u64::MAX))
                .map(|(_, c)| c.clone())
                .collect()
        };
        let error = Failure::RemoteCallTimeout.error_string();
        expired
            .iter()
            .filter(|c| self.answer(c, false, None, Some(error.clone())))
            .count()
    }
}
