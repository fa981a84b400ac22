//! The switch: every call, its parties (users' legs and external numbers), the operations on
//! them, and the notifications they publish.
//!
//! One mutex guards the call table. An operation checks, mutates and publishes while holding
//! it, so each user receives notifications in exactly the order the states changed, and a
//! refused operation neither changes nor publishes anything (every check comes before the first
//! change). Telephony hooks run after the lock is released, so a telephony source may call back
//! synchronously.
//!
//! The operations that move parties (answer, hang-up, transfers, conferences, far-end events)
//! publish by one rule ([`crate::model::Rule`]): the legs an operation touches are recorded,
//! in order, before it changes anything; afterwards each gets a `StatusChange` if its state or
//! mute changed (a new leg counts as changed), then a `ParticipantsUpdated` if its participants
//! changed (not for a new or released leg).
//!
//! Notifications go to the owning user's sessions only, through
//! [`Engine::deliver_to_principal`]; a local-session callback receiving them must not call back
//! into the voice service synchronously (the lock is held).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use bayeux_core::{ChannelId, Engine};
use parking_lot::Mutex;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::agent::{AgentMode, AgentState};
use crate::config::VoiceConfig;
use crate::directory::{Directory, User};
use crate::error::VoiceError;
use crate::model::{
    CallState, CallType, Effect, LegState, Mute, NotificationType, Operation, Pair, RecordingState,
    capabilities, rule, transition,
};
use crate::telephony::{CallControl, NetworkSide, OutboundCall, Telephony};
use crate::util;

/// The channel of call notifications.
pub const CALLS_CHANNEL: &str = "/v2/me/calls";
/// The channel of device notifications.
pub const DEVICES_CHANNEL: &str = "/v2/me/devices";

/// One user's leg of a call.
#[derive(Debug)]
struct Leg {
    user: Arc<User>,
    state: CallState,
    rec: RecordingState,
    mute: Mute,
    /// `GSIP_RECORD`, set from the first Start on.
    gsip_record: Option<&'static str>,
    /// `GSIP_REC_FN`, set on the first Start.
    gsip_rec_fn: Option<String>,
    call_type: CallType,
    dnis: String,
    /// The requester's leg of a consultation call: the call it was made from.
    parent: Option<String>,
    /// When the leg joined the call (orders `participants`).
    joined: u64,
    /// The participants when the leg was released: a released leg is no longer a party, and
    /// its view keeps showing whom it talked to.
    frozen: Option<Vec<String>>,
    started: Instant,
    ended: Option<Instant>,
}

impl Leg {
    fn new(
        user: &Arc<User>,
        state: CallState,
        call_type: CallType,
        dnis: &str,
        joined: u64,
    ) -> Leg {
        Leg {
            user: user.clone(),
            state,
            rec: RecordingState::Stopped,
            mute: Mute::Off,
            gsip_record: None,
            gsip_rec_fn: None,
            call_type,
            dnis: dnis.to_owned(),
            parent: None,
            joined,
            frozen: None,
            started: Instant::now(),
            ended: None,
        }
    }

    fn live(&self) -> bool {
        self.state != CallState::Released
    }

    /// Moves the leg to `(state, rec, mute)`, keeping `GSIP_RECORD` in step with the recording.
    fn set(&mut self, state: CallState, rec: RecordingState, mute: Mute) {
        if rec != self.rec && (self.gsip_record.is_some() || rec != RecordingState::Stopped) {
            self.gsip_record = Some(rec.gsip_record());
        }
        self.rec = rec;
        self.mute = mute;
        if state == CallState::Released && self.ended.is_none() {
            self.ended = Some(Instant::now());
        }
        self.state = state;
    }

    fn set_state(&mut self, state: CallState) {
        let rec = if state == CallState::Released {
            RecordingState::Stopped
        } else {
            self.rec
        };
        self.set(state, rec, self.mute);
    }
}

/// An external party (a number that is no configured user's DN).
#[derive(Debug)]
struct External {
    number: String,
    /// Answered (or the caller of an inbound call); `false` while it is still alerting.
    connected: bool,
    joined: u64,
}

/// A call: shared data (id, `userData`), its users' legs (released ones kept for their views),
/// and its external parties.
#[derive(Debug)]
struct Call {
    id: String,
    conn_id: String,
    /// The number that started the call (for `GSIP_REC_FN`).
    caller: String,
    user_data: Map<String, Value>,
    legs: Vec<Leg>,
    externals: Vec<External>,
    /// The user who made the call a conference (may remove parties).
    owner: Option<Arc<str>>,
    next_join: u64,
}

impl Call {
    fn new(id: String, caller: &str, user_data: Map<String, Value>) -> Call {
        Call {
            id,
            conn_id: util::conn_id(),
            caller: caller.to_owned(),
            user_data,
            legs: Vec::new(),
            externals: Vec::new(),
            owner: None,
            next_join: 0,
        }
    }

    fn join_seq(&mut self) -> u64 {
        self.next_join += 1;
        self.next_join
    }

    fn add_leg(
        &mut self,
        user: &Arc<User>,
        state: CallState,
        call_type: CallType,
        dnis: &str,
    ) -> usize {
        let joined = self.join_seq();
        self.legs
            .push(Leg::new(user, state, call_type, dnis, joined));
        self.legs.len() - 1
    }

    fn add_external(&mut self, number: &str, connected: bool) {
        let joined = self.join_seq();
        self.externals.push(External {
            number: number.to_owned(),
            connected,
            joined,
        });
    }

    /// The user's leg: the live one, else the latest.
    fn leg_of(&self, user: &str) -> Option<usize> {
        self.live_leg_of(user)
            .or_else(|| self.legs.iter().rposition(|l| &*l.user.name == user))
    }

    fn live_leg_of(&self, user: &str) -> Option<usize> {
        self.legs
            .iter()
            .rposition(|l| &*l.user.name == user && l.live())
    }

    /// Over: no user is on it any more.
    fn all_released(&self) -> bool {
        self.legs.iter().all(|l| !l.live())
    }

    fn party_count(&self) -> usize {
        self.legs.iter().filter(|l| l.live()).count() + self.externals.len()
    }

    fn has_party(&self, number: &str) -> bool {
        self.legs.iter().any(|l| l.live() && l.user.dn == number)
            || self.externals.iter().any(|e| e.number == number)
    }

    /// The type of a user's leg that joins the call.
    fn joining_type(&self) -> CallType {
        if self.externals.is_empty() {
            CallType::Internal
        } else {
            CallType::Inbound
        }
    }

    /// The other parties of leg `leg`, in the order they joined (frozen once released).
    fn participants(&self, leg: usize) -> Vec<String> {
        if let Some(f) = &self.legs[leg].frozen {
            return f.clone();
        }
        let mut v: Vec<(u64, &str)> = self
            .legs
            .iter()
            .enumerate()
            .filter(|(i, l)| *i != leg && l.live())
            .map(|(_, l)| (l.joined, l.user.dn.as_str()))
            .chain(self.externals.iter().map(|e| (e.joined, e.number.as_str())))
            .collect();
        v.sort_by_key(|p| p.0);
        v.into_iter().map(|(_, n)| n.to_owned()).collect()
    }

    /// Every live leg's participants now (`None` for released legs): what a leg keeps showing
    /// once released.
    fn snapshot(&self) -> Vec<Option<Vec<String>>> {
        (0..self.legs.len())
            .map(|i| self.legs[i].live().then(|| self.participants(i)))
            .collect()
    }

    /// Releases every live leg, each keeping its participants from `before`.
    fn release_with(&mut self, before: Vec<Option<Vec<String>>>) {
        for (l, f) in self.legs.iter_mut().zip(before) {
            if let Some(f) = f
                && l.live()
            {
                l.frozen = Some(f);
                l.set_state(CallState::Released);
            }
        }
        self.externals.clear();
        self.owner = None;
    }

    /// Releases every leg and drops the external parties.
    fn release_all(&mut self) {
        let before = self.snapshot();
        self.release_with(before);
    }

    /// Leg `leg`'s party leaves the call (the Hangup rule): with fewer than two parties left,
    /// every remaining leg is released. Released legs keep the participants they had before.
    fn leave(&mut self, leg: usize) {
        let before = self.snapshot();
        if let Some(f) = before[leg].clone() {
            self.legs[leg].frozen = Some(f);
            self.legs[leg].set_state(CallState::Released);
        }
        if self.owner.as_deref() == Some(&*self.legs[leg].user.name) {
            self.owner = None;
        }
        self.settle(before);
    }

    /// With fewer than two parties left, releases everyone (keeping the participants of
    /// `before`).
    fn settle(&mut self, before: Vec<Option<Vec<String>>>) {
        if self.party_count() < 2 {
            self.release_with(before);
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Participant<'a> {
    e164_number: &'static str,
    formatted_phone_number: &'a str,
    phone_number: &'a str,
    digits: &'a str,
}

/// A user's view of a call, in the GWS 8.6 shape.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CallView<'a> {
    id: &'a str,
    state: CallState,
    call_uuid: &'a str,
    conn_id: &'a str,
    device_uri: String,
    participants: Vec<Participant<'a>>,
    dnis: &'a str,
    call_type: CallType,
    capabilities: Vec<&'static str>,
    #[serde(skip_serializing_if = "Map::is_empty")]
    user_data: Map<String, Value>,
    duration: String,
    mute: Mute,
    #[serde(skip_serializing_if = "Option::is_none")]
    recording_state: Option<RecordingState>,
    supervisor_listening_in: bool,
    monitored_user_muted: bool,
    monitoring: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    parent_call_uri: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parent_call_path: Option<String>,
    uri: String,
    path: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CallNotification<'a> {
    message_type: &'static str,
    notification_type: NotificationType,
    phone_number: &'a str,
    call: CallView<'a>,
}

/// The parameters of a call operation, validated by the REST layer.
#[derive(Debug, Default)]
pub(crate) struct OpParams {
    pub user_data: Option<Map<String, Value>>,
    pub key: Option<String>,
    /// `SetCallDisposition`: `(dispositionKey, disposition)`.
    pub disposition: Option<(String, String)>,
    /// `destination.phoneNumber` of the single-step and initiate operations.
    pub destination: Option<String>,
    /// The call id named by `consultCallUri` / `otherCallUri`, when given.
    pub other_call: Option<String>,
    /// `participant` of RemoveParticipantFromConference.
    pub participant: Option<String>,
}

/// What a leg looked like before an operation, for the notification rule.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    state: CallState,
    mute: Mute,
    participants: Vec<String>,
}

fn seen(call: &Call, leg: usize) -> Seen {
    let l = &call.legs[leg];
    Seen {
        state: l.state,
        mute: l.mute,
        participants: call.participants(leg),
    }
}

/// The legs an operation touches, in notification order, with how each looked before (`None`:
/// a new leg), and the calls that were live before it.
#[derive(Debug, Default)]
struct Touches {
    legs: Vec<(String, Arc<str>, Option<Seen>)>,
    live_calls: Vec<String>,
}

impl Touches {
    /// Records `user`'s leg of `call` as it is now (once; the first record wins).
    fn leg(&mut self, reg: &Registry, call: &str, user: &Arc<str>) {
        if self.legs.iter().any(|(c, u, _)| c == call && u == user) {
            return;
        }
        let before = reg
            .calls
            .get(call)
            .and_then(|c| c.live_leg_of(user).map(|i| seen(c, i)));
        self.legs.push((call.to_owned(), user.clone(), before));
        if !self.live_calls.iter().any(|c| c == call)
            && reg.calls.get(call).is_some_and(|c| !c.all_released())
        {
            self.live_calls.push(call.to_owned());
        }
    }

    /// Records a leg that will appear on `call`, moved from another call where it looked like
    /// `before`.
    fn moved(&mut self, call: &str, user: &Arc<str>, before: Seen) {
        self.legs
            .push((call.to_owned(), user.clone(), Some(before)));
    }

    /// Records every live leg of `call`, `first` (if any) first.
    fn all(&mut self, reg: &Registry, call: &str, first: Option<&Arc<str>>) {
        if let Some(u) = first {
            self.leg(reg, call, u);
        }
        let users: Vec<Arc<str>> = reg
            .calls
            .get(call)
            .map(|c| {
                c.legs
                    .iter()
                    .filter(|l| l.live())
                    .map(|l| l.user.name.clone())
                    .collect()
            })
            .unwrap_or_default();
        for u in users {
            self.leg(reg, call, &u);
        }
    }
}

/// The consultation pair of a user: the call it was made from and the consultation call.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ConsultPair {
    parent: String,
    consult: String,
}

#[derive(Debug, Default)]
struct Registry {
    calls: HashMap<String, Call>,
    /// Each user's call ids, oldest first, released ones included until pruned.
    by_user: HashMap<Arc<str>, VecDeque<String>>,
    /// Each user's consultation pair, while both calls have the user's live leg.
    pairs: HashMap<Arc<str>, ConsultPair>,
}

impl Registry {
    fn ids_of(&self, user: &str) -> impl Iterator<Item = &String> {
        self.by_user.get(user).into_iter().flatten()
    }

    fn remember(&mut self, user: &Arc<str>, id: &str) {
        let list = self.by_user.entry(user.clone()).or_default();
        if !list.iter().any(|i| i == id) {
            list.push_back(id.to_owned());
        }
    }

    fn active_count(&self, user: &str) -> usize {
        self.ids_of(user)
            .filter(|id| {
                self.calls
                    .get(*id)
                    .is_some_and(|c| c.live_leg_of(user).is_some())
            })
            .count()
    }

    fn new_id(&self) -> String {
        loop {
            let id = util::call_id();
            if !self.calls.contains_key(&id) {
                return id;
            }
        }
    }

    /// The leg of call `id` that `user` may act on (the call must be one the user remembers).
    fn find(&self, user: &str, id: &str) -> Result<usize, VoiceError> {
        if !self.ids_of(user).any(|i| i == id) {
            return Err(VoiceError::call_not_found());
        }
        self.calls
            .get(id)
            .and_then(|c| c.leg_of(user))
            .ok_or_else(VoiceError::call_not_found)
    }

    fn call_mut(&mut self, id: &str) -> Result<&mut Call, VoiceError> {
        self.calls
            .get_mut(id)
            .ok_or_else(VoiceError::call_not_found)
    }

    /// Where `user`'s leg of `call` stands in the user's consultation pair.
    fn pair_of(&self, user: &str, call: &str) -> Pair {
        let Some(p) = self.pairs.get(user) else {
            return Pair::None;
        };
        if p.parent != call && p.consult != call {
            return Pair::Elsewhere;
        }
        let dialing = self
            .calls
            .get(&p.consult)
            .and_then(|k| k.live_leg_of(user).map(|i| k.legs[i].state))
            .is_none_or(|s| s == CallState::Dialing);
        if dialing {
            Pair::Pending
        } else {
            Pair::Connected
        }
    }

    /// The leg as the state machine sees it, with its pair and ownership.
    fn leg_state(&self, call: &Call, leg: usize) -> LegState {
        let l = &call.legs[leg];
        LegState {
            state: l.state,
            rec: l.rec,
            mute: l.mute,
            pair: if l.live() {
                self.pair_of(&l.user.name, &call.id)
            } else {
                Pair::None
            },
            can_remove: l.live()
                && call.owner.as_deref() == Some(&*l.user.name)
                && call.party_count() >= 3,
        }
    }

    /// Forgets the pairs whose calls no longer both have the user's live leg.
    fn sweep_pairs(&mut self) {
        let calls = &self.calls;
        self.pairs.retain(|user, p| {
            [&p.parent, &p.consult].iter().all(|id| {
                calls
                    .get(*id)
                    .is_some_and(|c| c.live_leg_of(user).is_some())
            })
        });
    }

    /// Forgets `user`'s oldest calls where the user's leg is released, beyond `keep`; a call no
    /// user remembers is dropped.
    fn prune(&mut self, user: &str, keep: usize) {
        let Some(list) = self.by_user.get(user) else {
            return;
        };
        let calls = &self.calls;
        let released: Vec<String> = list
            .iter()
            .filter(|id| calls.get(*id).is_none_or(|c| c.live_leg_of(user).is_none()))
            .cloned()
            .collect();
        let excess = released.len().saturating_sub(keep);
        for id in released.into_iter().take(excess) {
            if let Some(list) = self.by_user.get_mut(user) {
                list.retain(|i| *i != id);
            }
            let remembered = self.calls.get(&id).is_some_and(|c| {
                c.legs.iter().any(|l| {
                    self.by_user
                        .get(&*l.user.name)
                        .is_some_and(|list| list.contains(&id))
                })
            });
            if !remembered {
                self.calls.remove(&id);
            }
        }
    }
}

/// What to tell the telephony source once the lock is released.
enum After {
    Outbound(OutboundCall),
    Released(String),
}

/// What the far end of a call does (test control).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FarEnd {
    /// An alerting external party answers.
    Answer,
    /// An alerting external party is busy: the call is released.
    Busy,
    /// Every connected external party hangs up (the Hangup rule).
    Release,
}

/// The call model and its notifications.
pub(crate) struct Switch {
    config: Arc<VoiceConfig>,
    directory: Arc<Directory>,
    registry: Mutex<Registry>,
    engine: Engine,
    telephony: Arc<dyn Telephony>,
    calls_channel: ChannelId,
    devices_channel: ChannelId,
    /// Each user's agent state (absent: the initial one). Its own lock, never taken together
    /// with the call table's.
    agents: Mutex<HashMap<Arc<str>, AgentState>>,
    control: CallControl,
}

impl std::fmt::Debug for Switch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Switch")
            .field("calls", &self.registry.lock().calls.len())
            .finish()
    }
}

impl NetworkSide for Switch {
    fn far_end_answered(&self, call_id: &str) -> Result<(), VoiceError> {
        Switch::far_end(self, call_id, FarEnd::Answer)
    }

    fn far_end_released(&self, call_id: &str) -> Result<(), VoiceError> {
        Switch::network_released(self, call_id)
    }

    fn inbound_call(
        &self,
        user: &str,
        from: &str,
        user_data: Option<Map<String, Value>>,
    ) -> Result<String, VoiceError> {
        Switch::inbound_call(self, user, from, user_data)
    }
}

impl Switch {
    pub fn new(
        config: Arc<VoiceConfig>,
        directory: Arc<Directory>,
        engine: Engine,
        telephony: Arc<dyn Telephony>,
    ) -> Arc<Switch> {
        Arc::new_cyclic(|weak| Switch {
            config,
            directory,
            registry: Mutex::new(Registry::default()),
            engine,
            telephony,
            calls_channel: ChannelId::parse(CALLS_CHANNEL).expect("a valid channel name"),
            devices_channel: ChannelId::parse(DEVICES_CHANNEL).expect("a valid channel name"),
            agents: Mutex::new(HashMap::new()),
            control: CallControl {
                calls: weak.clone() as std::sync::Weak<dyn NetworkSide>,
            },
        })
    }

    pub fn control(&self) -> CallControl {
        self.control.clone()
    }

    fn view<'a>(
        &self,
        reg: &Registry,
        call: &'a Call,
        leg: usize,
        now: Instant,
        parts: &'a [String],
    ) -> CallView<'a> {
        let base = self.config.base_url();
        let l = &call.legs[leg];
        let mut user_data = call.user_data.clone();
        if l.user.recording {
            if let Some(r) = l.gsip_record {
                user_data.insert("GSIP_RECORD".into(), Value::from(r));
            }
            if let Some(f) = &l.gsip_rec_fn {
                user_data.insert("GSIP_REC_FN".into(), Value::from(f.as_str()));
            }
        }
        let end = l.ended.unwrap_or(now);
        CallView {
            id: &call.id,
            state: l.state,
            call_uuid: &call.id,
            conn_id: &call.conn_id,
            device_uri: format!("{base}/api/v2/devices/{}", l.user.device_id),
            participants: parts
                .iter()
                .map(|n| Participant {
                    e164_number: "",
                    formatted_phone_number: n,
                    phone_number: n,
                    digits: n,
                })
                .collect(),
            dnis: &l.dnis,
            call_type: l.call_type,
            capabilities: capabilities(reg.leg_state(call, leg), l.user.recording),
            user_data,
            duration: end
                .saturating_duration_since(l.started)
                .as_secs()
                .to_string(),
            mute: l.mute,
            recording_state: l.user.recording.then_some(l.rec),
            supervisor_listening_in: false,
            monitored_user_muted: false,
            monitoring: false,
            parent_call_uri: l
                .parent
                .as_ref()
                .map(|p| format!("{base}/api/v2/me/calls/{p}")),
            parent_call_path: l.parent.as_ref().map(|p| format!("/calls/{p}")),
            uri: format!("{base}/api/v2/me/calls/{}", call.id),
            path: format!("/calls/{}", call.id),
        }
    }

    fn view_json(&self, reg: &Registry, call: &Call, leg: usize) -> Result<Value, VoiceError> {
        let parts = call.participants(leg);
        serde_json::to_value(self.view(reg, call, leg, Instant::now(), &parts))
            .map_err(|e| VoiceError::Internal(e.to_string()))
    }

    /// Publishes one notification to the owner of leg `leg` of `call`.
    fn notify(&self, reg: &Registry, call: &Call, leg: usize, kind: NotificationType) {
        let l = &call.legs[leg];
        let parts = call.participants(leg);
        let n = CallNotification {
            message_type: "CallStateChangeMessage",
            notification_type: kind,
            phone_number: &l.user.dn,
            call: self.view(reg, call, leg, Instant::now(), &parts),
        };
        match serde_json::value::to_raw_value(&n) {
            Ok(raw) => {
                self.engine
                    .deliver_to_principal(&l.user.name, &self.calls_channel, &raw);
            }
            Err(e) => tracing::error!("voice: cannot serialize a notification: {e}"),
        }
    }

    /// After the changes: forgets ended pairs, publishes the notification rule's messages for
    /// every touched leg, prunes the touched users' histories, and collects the calls that
    /// ended.
    fn emit(&self, reg: &mut Registry, touches: Touches, after: &mut Vec<After>) {
        reg.sweep_pairs();
        for (call_id, user, before) in &touches.legs {
            let Some(call) = reg.calls.get(call_id) else {
                continue;
            };
            let Some(leg) = call.leg_of(user) else {
                continue;
            };
            let now = seen(call, leg);
            let changed = before
                .as_ref()
                .is_none_or(|b| b.state != now.state || b.mute != now.mute);
            if changed {
                self.notify(reg, call, leg, NotificationType::StatusChange);
            }
            if let Some(b) = before
                && now.state != CallState::Released
                && b.participants != now.participants
            {
                self.notify(reg, call, leg, NotificationType::ParticipantsUpdated);
            }
        }
        for id in &touches.live_calls {
            if reg.calls.get(id).is_some_and(Call::all_released) {
                after.push(After::Released(id.clone()));
            }
        }
        let keep = self.config.max_released_calls_per_user;
        let mut users: Vec<&Arc<str>> = touches.legs.iter().map(|(_, u, _)| u).collect();
        users.dedup();
        for u in users {
            reg.prune(u, keep);
        }
    }

    fn run_after(&self, after: Vec<After>) {
        for a in after {
            match a {
                After::Outbound(call) => self.telephony.outbound_call(&call, self.control()),
                After::Released(id) => self.telephony.call_released(&id),
            }
        }
    }

    fn check_size(&self, data: &Map<String, Value>) -> Result<(), VoiceError> {
        let size = serde_json::to_vec(data)
            .map(|v| v.len())
            .unwrap_or(usize::MAX);
        if size > self.config.max_user_data_bytes {
            return Err(VoiceError::BadRequest(format!(
                "userData larger than {} bytes",
                self.config.max_user_data_bytes
            )));
        }
        Ok(())
    }

    /// Feature gating of a call operation: without `api-voice` nothing is allowed, without
    /// `api-voice-recording` the recording operations do not exist for the user.
    pub fn check_features(user: &User, op: Option<Operation>) -> Result<(), VoiceError> {
        if !user.voice {
            return Err(VoiceError::InvalidOperation(
                "Operation not allowed: feature api-voice missing".into(),
            ));
        }
        if op.is_some_and(Operation::is_recording) && !user.recording {
            return Err(VoiceError::InvalidOperation(
                "Operation not allowed: feature api-voice-recording missing".into(),
            ));
        }
        Ok(())
    }

    /// The configured user a new leg for `destination` belongs to, if any, after checking that
    /// the destination may take one more call.
    fn callee(&self, reg: &Registry, destination: &str) -> Result<Option<Arc<User>>, VoiceError> {
        let callee = self.directory.by_dn(destination).cloned();
        if let Some(c) = &callee
            && reg.active_count(&c.name) >= self.config.max_calls_per_user
        {
            return Err(VoiceError::InvalidOperation("Destination busy".into()));
        }
        Ok(callee)
    }

    fn check_own_capacity(&self, reg: &Registry, user: &User) -> Result<(), VoiceError> {
        let max = self.config.max_calls_per_user;
        if reg.active_count(&user.name) >= max {
            return Err(VoiceError::InvalidOperation(format!(
                "Too many calls (at most {max})"
            )));
        }
        Ok(())
    }

    /// `POST /api/v2/me/devices/{id}/calls` with `Dial`.
    pub fn dial(
        &self,
        user: &Arc<User>,
        device_id: &str,
        destination: &str,
        user_data: Option<Map<String, Value>>,
    ) -> Result<String, VoiceError> {
        Self::check_features(user, None)?;
        if !user.owns_device(device_id) {
            return Err(VoiceError::device_not_found());
        }
        if destination == user.dn {
            return Err(VoiceError::InvalidOperation(
                "Cannot dial the device's own number".into(),
            ));
        }
        let user_data = user_data.unwrap_or_default();
        self.check_size(&user_data)?;
        let mut reg = self.registry.lock();
        self.check_own_capacity(&reg, user)?;
        let callee = self.callee(&reg, destination)?;
        let id = reg.new_id();
        let mut call = Call::new(id.clone(), &user.dn, user_data);
        let mut after = Vec::new();
        match &callee {
            Some(c) => {
                call.add_leg(user, CallState::Dialing, CallType::Internal, destination);
                call.add_leg(c, CallState::Ringing, CallType::Internal, destination);
            }
            None => {
                call.add_leg(user, CallState::Dialing, CallType::Outbound, destination);
                call.add_external(destination, false);
                after.push(After::Outbound(OutboundCall {
                    call_id: id.clone(),
                    user: user.name.to_string(),
                    from: user.dn.clone(),
                    destination: destination.to_owned(),
                }));
            }
        }
        let users: Vec<Arc<str>> = call.legs.iter().map(|l| l.user.name.clone()).collect();
        reg.calls.insert(id.clone(), call);
        let mut touches = Touches::default();
        for u in &users {
            reg.remember(u, &id);
            // A new leg: a StatusChange each.
            touches.legs.push((id.clone(), u.clone(), None));
        }
        self.emit(&mut reg, touches, &mut after);
        drop(reg);
        self.run_after(after);
        Ok(id)
    }

    /// `POST /api/v2/me/calls/{id}`.
    pub fn call_operation(
        &self,
        user: &Arc<User>,
        call_id: &str,
        op: Operation,
        params: OpParams,
    ) -> Result<(), VoiceError> {
        Self::check_features(user, Some(op))?;
        let mut reg = self.registry.lock();
        let leg = reg.find(&user.name, call_id)?;
        let next = {
            let call = &reg.calls[call_id];
            transition(reg.leg_state(call, leg), op)
                .ok_or_else(|| VoiceError::invalid_state(op.name()))?
        };
        let rule = rule(op);
        let me = user.name.clone();
        let mut after = Vec::new();
        let mut touches = Touches::default();
        match rule.effect {
            Effect::Leg => {
                let call = reg.call_mut(call_id)?;
                let caller = call.caller.clone();
                let l = &mut call.legs[leg];
                if op == Operation::StartCallRecording && l.gsip_rec_fn.is_none() {
                    l.gsip_rec_fn = Some(format!(
                        "{}_{}_{}_{}_{}",
                        call_id,
                        l.user.dn,
                        caller,
                        l.dnis,
                        util::utc_stamp()
                    ));
                }
                l.set(next.state, next.rec, next.mute);
                let call = &reg.calls[call_id];
                self.notify(&reg, call, leg, rule.notification);
            }
            Effect::UserData => {
                let call = reg.call_mut(call_id)?;
                let mut data = call.user_data.clone();
                match op {
                    Operation::DeleteUserData => data.clear(),
                    Operation::DeleteUserDataPair => {
                        data.remove(params.key.as_deref().unwrap_or_default());
                    }
                    Operation::SetCallDisposition => {
                        let (key, value) = params.disposition.unwrap_or_default();
                        data.insert(key, Value::from(value));
                    }
                    _ => data.extend(params.user_data.unwrap_or_default()),
                }
                self.check_size(&data)?;
                call.user_data = data;
                // userData belongs to the call: every party sees the change.
                let call = &reg.calls[call_id];
                for i in 0..call.legs.len() {
                    if call.legs[i].live() {
                        self.notify(&reg, call, i, rule.notification);
                    }
                }
            }
            Effect::Answer => {
                touches.all(&reg, call_id, Some(&me));
                let call = reg.call_mut(call_id)?;
                call.legs[leg].set_state(next.state);
                for l in &mut call.legs {
                    if l.state == CallState::Dialing {
                        l.set_state(CallState::Established);
                    }
                }
            }
            Effect::Release => {
                touches.all(&reg, call_id, Some(&me));
                reg.call_mut(call_id)?.leave(leg);
            }
            Effect::SingleStep { conference } => {
                let dest = self.check_destination(&reg, user, call_id, &params)?;
                let callee = self.callee(&reg, &dest)?;
                let merged = self.merged_user_data(&reg.calls[call_id], &params)?;
                touches.all(&reg, call_id, Some(&me));
                let call = reg.call_mut(call_id)?;
                call.user_data = merged;
                match &callee {
                    Some(c) => {
                        let t = call.joining_type();
                        let dn = c.dn.clone();
                        call.add_leg(c, CallState::Ringing, t, &dn);
                    }
                    None => call.add_external(&dest, true),
                }
                if conference {
                    call.owner = Some(me.clone());
                } else {
                    call.leave(leg);
                }
                if let Some(c) = &callee {
                    reg.remember(&c.name, call_id);
                    touches
                        .legs
                        .push((call_id.to_owned(), c.name.clone(), None));
                }
            }
            Effect::Initiate => {
                let dest = self.check_destination(&reg, user, call_id, &params)?;
                self.check_own_capacity(&reg, user)?;
                let callee = self.callee(&reg, &dest)?;
                let data = params.user_data.unwrap_or_default();
                self.check_size(&data)?;
                touches.leg(&reg, call_id, &me);
                reg.call_mut(call_id)?.legs[leg].set_state(CallState::Held);
                let k = reg.new_id();
                let mut consult = Call::new(k.clone(), &user.dn, data);
                let i = consult.add_leg(user, CallState::Dialing, CallType::Consult, &dest);
                consult.legs[i].parent = Some(call_id.to_owned());
                match &callee {
                    Some(c) => {
                        consult.add_leg(c, CallState::Ringing, CallType::Consult, &dest);
                    }
                    None => {
                        consult.add_external(&dest, false);
                        after.push(After::Outbound(OutboundCall {
                            call_id: k.clone(),
                            user: me.to_string(),
                            from: user.dn.clone(),
                            destination: dest.clone(),
                        }));
                    }
                }
                reg.calls.insert(k.clone(), consult);
                reg.remember(&me, &k);
                touches.legs.push((k.clone(), me.clone(), None));
                if let Some(c) = &callee {
                    reg.remember(&c.name, &k);
                    touches.legs.push((k.clone(), c.name.clone(), None));
                }
                reg.pairs.insert(
                    me.clone(),
                    ConsultPair {
                        parent: call_id.to_owned(),
                        consult: k,
                    },
                );
            }
            Effect::Complete { conference } => {
                let pair = reg
                    .pairs
                    .get(&me)
                    .cloned()
                    .ok_or_else(|| VoiceError::invalid_state(op.name()))?;
                if params
                    .other_call
                    .as_ref()
                    .is_some_and(|o| *o != pair.consult)
                {
                    return Err(VoiceError::InvalidOperation(
                        "consultCallUri does not name the consultation call".into(),
                    ));
                }
                self.complete(&mut reg, &mut touches, user, &pair, conference)?;
            }
            Effect::Swap => {
                let pair = reg
                    .pairs
                    .get(&me)
                    .cloned()
                    .ok_or_else(|| VoiceError::invalid_state(op.name()))?;
                let other = if pair.parent == call_id {
                    &pair.consult
                } else {
                    &pair.parent
                };
                if params.other_call.as_ref().is_some_and(|o| o != other) {
                    return Err(VoiceError::InvalidOperation(
                        "otherCallUri does not name the other call of the pair".into(),
                    ));
                }
                let state_of = |reg: &Registry, id: &str| {
                    reg.calls
                        .get(id)
                        .and_then(|c| c.live_leg_of(&me).map(|i| c.legs[i].state))
                };
                let mut ids = [call_id.to_owned(), other.clone()];
                if state_of(&reg, &ids[0]) != Some(CallState::Established) {
                    ids.swap(0, 1);
                }
                if state_of(&reg, &ids[0]) != Some(CallState::Established)
                    || state_of(&reg, &ids[1]) != Some(CallState::Held)
                {
                    return Err(VoiceError::invalid_state(op.name()));
                }
                touches.leg(&reg, &ids[0], &me);
                touches.leg(&reg, &ids[1], &me);
                for (id, to) in [
                    (&ids[0], CallState::Held),
                    (&ids[1], CallState::Established),
                ] {
                    let call = reg.call_mut(id)?;
                    if let Some(i) = call.live_leg_of(&me) {
                        call.legs[i].set_state(to);
                    }
                }
            }
            Effect::RemoveParticipant => {
                let p = params.participant.clone().unwrap_or_default();
                let call = &reg.calls[call_id];
                if p == user.dn || !call.has_party(&p) {
                    return Err(VoiceError::InvalidOperation(
                        "participant is not another party of the call".into(),
                    ));
                }
                touches.all(&reg, call_id, Some(&me));
                let call = reg.call_mut(call_id)?;
                match call.legs.iter().position(|l| l.live() && l.user.dn == p) {
                    Some(i) => call.leave(i),
                    None => {
                        let before = call.snapshot();
                        call.externals.retain(|e| e.number != p);
                        call.settle(before);
                    }
                }
            }
        }
        self.emit(&mut reg, touches, &mut after);
        drop(reg);
        self.run_after(after);
        Ok(())
    }

    /// The destination of a single-step or initiate operation: required, not the requester's
    /// own number, not a party of the call already.
    fn check_destination(
        &self,
        reg: &Registry,
        user: &User,
        call_id: &str,
        params: &OpParams,
    ) -> Result<String, VoiceError> {
        let dest = params
            .destination
            .clone()
            .ok_or_else(|| VoiceError::BadRequest("destination missing".into()))?;
        if dest == user.dn {
            return Err(VoiceError::InvalidOperation(
                "The destination is the requester's own number".into(),
            ));
        }
        if reg.calls.get(call_id).is_some_and(|c| c.has_party(&dest)) {
            return Err(VoiceError::InvalidOperation(
                "The destination is already a party of the call".into(),
            ));
        }
        Ok(dest)
    }

    fn merged_user_data(
        &self,
        call: &Call,
        params: &OpParams,
    ) -> Result<Map<String, Value>, VoiceError> {
        let mut data = call.user_data.clone();
        if let Some(extra) = &params.user_data {
            data.extend(extra.clone());
        }
        self.check_size(&data)?;
        Ok(data)
    }

    /// CompleteTransfer / CompleteConference of `user`'s connected pair: the consulted parties
    /// move onto the parent call; the requester leaves both calls (transfer) or takes the
    /// parent back as its owner (conference). Notification order as GWS: for a transfer the
    /// requester hears of the parent first, for a conference of the consultation first.
    fn complete(
        &self,
        reg: &mut Registry,
        touches: &mut Touches,
        user: &Arc<User>,
        pair: &ConsultPair,
        conference: bool,
    ) -> Result<(), VoiceError> {
        let me = &user.name;
        let (c_id, k_id) = (pair.parent.as_str(), pair.consult.as_str());
        if conference {
            touches.leg(reg, k_id, me);
            touches.leg(reg, c_id, me);
        } else {
            touches.leg(reg, c_id, me);
            touches.leg(reg, k_id, me);
        }
        // The consulted users: released from K, then moved onto C.
        let movers: Vec<(Arc<str>, Seen)> = {
            let k = &reg.calls[k_id];
            k.legs
                .iter()
                .enumerate()
                .filter(|(_, l)| l.live() && l.user.name != *me)
                .map(|(i, l)| (l.user.name.clone(), seen(k, i)))
                .collect()
        };
        for (u, before) in &movers {
            touches.leg(reg, k_id, u);
            touches.moved(
                c_id,
                u,
                Seen {
                    state: before.state,
                    mute: before.mute,
                    participants: before.participants.clone(),
                },
            );
        }
        touches.all(reg, c_id, None);
        // Take the consulted parties out of K.
        let mut moved_legs = Vec::new();
        let mut moved_externals = Vec::new();
        {
            let k = reg.call_mut(k_id)?;
            for i in 0..k.legs.len() {
                let l = &k.legs[i];
                if l.live() && l.user.name != *me {
                    moved_legs.push(Leg {
                        user: l.user.clone(),
                        state: l.state,
                        rec: l.rec,
                        mute: l.mute,
                        gsip_record: l.gsip_record,
                        gsip_rec_fn: l.gsip_rec_fn.clone(),
                        call_type: l.call_type,
                        dnis: l.dnis.clone(),
                        parent: None,
                        joined: 0,
                        frozen: None,
                        started: l.started,
                        ended: None,
                    });
                }
            }
            moved_externals.extend(k.externals.iter().map(|e| e.number.clone()));
            k.release_all();
        }
        // Onto C.
        let c = reg.call_mut(c_id)?;
        for number in &moved_externals {
            c.add_external(number, true);
        }
        let t = c.joining_type();
        for mut l in moved_legs {
            l.joined = c.join_seq();
            l.call_type = t;
            c.legs.push(l);
        }
        if let Some(i) = c.live_leg_of(me) {
            if conference {
                c.legs[i].set_state(CallState::Established);
                c.owner = Some(me.clone());
            } else {
                c.leave(i);
            }
        }
        for (u, _) in movers {
            reg.remember(&u, c_id);
        }
        reg.pairs.remove(me);
        Ok(())
    }

    /// `POST /api/v2/me/devices/{id}` with `StopCallRecording`: stops every recording (or
    /// paused recording) on the device's calls, one notification per call. Accepted even when
    /// nothing is recorded.
    pub fn stop_device_recording(
        &self,
        user: &Arc<User>,
        device_id: &str,
    ) -> Result<(), VoiceError> {
        Self::check_features(user, Some(Operation::StopCallRecording))?;
        if !user.owns_device(device_id) {
            return Err(VoiceError::device_not_found());
        }
        let mut reg = self.registry.lock();
        let ids: Vec<String> = reg.ids_of(&user.name).cloned().collect();
        for id in ids {
            let Some(call) = reg.calls.get(&id) else {
                continue;
            };
            let Some(leg) = call.live_leg_of(&user.name) else {
                continue;
            };
            if let Some(next) = transition(reg.leg_state(call, leg), Operation::StopCallRecording) {
                let Ok(call) = reg.call_mut(&id) else {
                    continue;
                };
                call.legs[leg].set(next.state, next.rec, next.mute);
                let call = &reg.calls[&id];
                self.notify(&reg, call, leg, NotificationType::CallRecordingStateChange);
            }
        }
        Ok(())
    }

    /// `GET /api/v2/me/calls`: the user's calls where the user's leg is not released, oldest
    /// first.
    pub fn calls_json(&self, user: &User) -> Result<Vec<Value>, VoiceError> {
        let reg = self.registry.lock();
        reg.ids_of(&user.name)
            .filter_map(|id| reg.calls.get(id))
            .filter_map(|c| c.live_leg_of(&user.name).map(|i| (c, i)))
            .map(|(c, i)| self.view_json(&reg, c, i))
            .collect()
    }

    /// `GET /api/v2/me/calls/{id}` (released calls too, while remembered).
    pub fn call_json(&self, user: &User, id: &str) -> Result<Value, VoiceError> {
        let reg = self.registry.lock();
        let leg = reg.find(&user.name, id)?;
        self.view_json(&reg, &reg.calls[id], leg)
    }

    /// A far-end event on call `call_id` (the telephony seam and the test-control API).
    pub fn far_end(&self, call_id: &str, what: FarEnd) -> Result<(), VoiceError> {
        let mut reg = self.registry.lock();
        let call = reg
            .calls
            .get(call_id)
            .ok_or_else(VoiceError::call_not_found)?;
        let alerting = call.externals.iter().any(|e| !e.connected);
        let connected = call.externals.iter().any(|e| e.connected);
        let ok = match what {
            FarEnd::Answer | FarEnd::Busy => alerting,
            FarEnd::Release => connected,
        };
        if !ok || call.all_released() {
            return Err(VoiceError::invalid_state(match what {
                FarEnd::Answer => "Far-end answer",
                FarEnd::Busy => "Far-end busy",
                FarEnd::Release => "Far-end release",
            }));
        }
        let mut touches = Touches::default();
        touches.all(&reg, call_id, None);
        let call = reg.call_mut(call_id)?;
        match what {
            FarEnd::Answer => {
                for e in &mut call.externals {
                    e.connected = true;
                }
                for l in &mut call.legs {
                    if l.state == CallState::Dialing {
                        l.set_state(CallState::Established);
                    }
                }
            }
            FarEnd::Busy => call.release_all(),
            FarEnd::Release => {
                let before = call.snapshot();
                call.externals.retain(|e| !e.connected);
                call.settle(before);
            }
        }
        let mut after = Vec::new();
        self.emit(&mut reg, touches, &mut after);
        drop(reg);
        self.run_after(after);
        Ok(())
    }

    /// The network released the call ([`CallControl::far_end_released`]): every leg not yet
    /// released is released.
    pub fn network_released(&self, call_id: &str) -> Result<(), VoiceError> {
        let mut reg = self.registry.lock();
        let call = reg
            .calls
            .get(call_id)
            .ok_or_else(VoiceError::call_not_found)?;
        if call.all_released() {
            return Err(VoiceError::invalid_state("Far-end release"));
        }
        let mut touches = Touches::default();
        touches.all(&reg, call_id, None);
        reg.call_mut(call_id)?.release_all();
        let mut after = Vec::new();
        self.emit(&mut reg, touches, &mut after);
        drop(reg);
        self.run_after(after);
        Ok(())
    }

    /// A call from the external number `from` to the user named `user`: a `Ringing`
    /// `Inbound` leg.
    pub fn inbound_call(
        &self,
        user: &str,
        from: &str,
        user_data: Option<Map<String, Value>>,
    ) -> Result<String, VoiceError> {
        let user = self
            .directory
            .by_name(user)
            .cloned()
            .ok_or_else(|| VoiceError::NotFound("User not found".into()))?;
        if from.is_empty() {
            return Err(VoiceError::BadRequest("caller number missing".into()));
        }
        if from == user.dn {
            return Err(VoiceError::InvalidOperation(
                "The caller is the user's own number".into(),
            ));
        }
        let user_data = user_data.unwrap_or_default();
        self.check_size(&user_data)?;
        let mut reg = self.registry.lock();
        if reg.active_count(&user.name) >= self.config.max_calls_per_user {
            return Err(VoiceError::InvalidOperation("Destination busy".into()));
        }
        let id = reg.new_id();
        let mut call = Call::new(id.clone(), from, user_data);
        call.add_external(from, true);
        call.add_leg(&user, CallState::Ringing, CallType::Inbound, &user.dn);
        reg.calls.insert(id.clone(), call);
        reg.remember(&user.name, &id);
        let mut touches = Touches::default();
        touches.legs.push((id.clone(), user.name.clone(), None));
        let mut after = Vec::new();
        self.emit(&mut reg, touches, &mut after);
        Ok(id)
    }

    /// The test-control inbound call: from the external `from` to the user whose DN is `to`.
    pub fn test_inbound_call(
        &self,
        from: &str,
        to: &str,
        user_data: Option<Map<String, Value>>,
    ) -> Result<String, VoiceError> {
        let user = self
            .directory
            .by_dn(to)
            .cloned()
            .ok_or_else(|| VoiceError::NotFound("No user has that number".into()))?;
        if self.directory.by_dn(from).is_some() {
            return Err(VoiceError::InvalidOperation(
                "from is a configured user's number: use Dial".into(),
            ));
        }
        self.inbound_call(&user.name, from, user_data)
    }

    /// Test control: every live call released (each live leg notified), every call forgotten,
    /// every agent back to `Ready` with do-not-disturb off (one device notification per user
    /// whose state changed).
    pub fn reset(&self) {
        let mut reg = self.registry.lock();
        let ids: Vec<String> = reg
            .calls
            .iter()
            .filter(|(_, c)| !c.all_released())
            .map(|(id, _)| id.clone())
            .collect();
        let mut after = Vec::new();
        for id in ids {
            let mut touches = Touches::default();
            touches.all(&reg, &id, None);
            if let Some(c) = reg.calls.get_mut(&id) {
                c.release_all();
            }
            self.emit(&mut reg, touches, &mut after);
        }
        reg.calls.clear();
        reg.by_user.clear();
        reg.pairs.clear();
        drop(reg);
        self.run_after(after);
        let mut agents = self.agents.lock();
        for (name, state) in agents.iter_mut() {
            if *state != AgentState::default() {
                *state = AgentState::default();
                if let Some(user) = self.directory.by_name(name) {
                    self.publish_device(user, state);
                }
            }
        }
        agents.clear();
    }

    /// The user's agent state.
    pub fn agent_state(&self, user: &User) -> AgentState {
        self.agents
            .lock()
            .get(&*user.name)
            .cloned()
            .unwrap_or_default()
    }

    /// `GET /api/v2/me/devices` (and the device of `GET /api/v2/me`).
    pub fn device_json(&self, user: &User) -> Value {
        user.device_json(self.config.base_url(), &self.agent_state(user))
    }

    /// `GET /api/v2/me`.
    pub fn user_json(&self, user: &User) -> Value {
        user.user_json(self.config.base_url(), &self.agent_state(user))
    }

    /// Changes the user's agent state with `change` and publishes one
    /// `DeviceStateChangeMessage` on `/v2/me/devices` to that user only, even when nothing
    /// changed (the contract's choice), while holding the lock, so notifications come in the
    /// order of the changes.
    fn change_agent(&self, user: &Arc<User>, change: impl FnOnce(&mut AgentState)) {
        let mut agents = self.agents.lock();
        let state = agents.entry(user.name.clone()).or_default();
        change(state);
        self.publish_device(user, state);
    }

    fn publish_device(&self, user: &User, state: &AgentState) {
        let message = serde_json::json!({
            "messageType": "DeviceStateChangeMessage",
            "devices": [user.device_json(self.config.base_url(), state)],
        });
        match serde_json::value::to_raw_value(&message) {
            Ok(raw) => {
                self.engine
                    .deliver_to_principal(&user.name, &self.devices_channel, &raw);
            }
            Err(e) => tracing::error!("voice: cannot serialize a device notification: {e}"),
        }
    }

    /// `POST /api/v2/me/channels/voice`: Ready, NotReady, AfterCallWork, AuxWork.
    pub fn set_agent_mode(&self, user: &Arc<User>, mode: AgentMode) -> Result<(), VoiceError> {
        Self::check_features(user, None)?;
        self.change_agent(user, |s| s.mode = mode);
        Ok(())
    }

    /// `POST /api/v2/me/devices/{id}` with `DoNotDisturbOn` / `DoNotDisturbOff`.
    pub fn set_do_not_disturb(
        &self,
        user: &Arc<User>,
        device_id: &str,
        on: bool,
    ) -> Result<(), VoiceError> {
        Self::check_features(user, None)?;
        if !user.owns_device(device_id) {
            return Err(VoiceError::device_not_found());
        }
        self.change_agent(user, |s| s.do_not_disturb = on);
        Ok(())
    }

    /// Number of calls remembered (for tests and diagnostics).
    pub fn call_count(&self) -> usize {
        self.registry.lock().calls.len()
    }
}
