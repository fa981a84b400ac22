//! The switch: every call and its users' legs, the operations on them, and the notifications
//! they publish.
//!
//! One mutex guards the call table. An operation checks, mutates and publishes while holding
//! it, so each user receives notifications in exactly the order the states changed, and a
//! refused operation neither changes nor publishes anything. Telephony hooks run after the lock
//! is released, so a telephony source may call back synchronously.
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
    CallState, CallType, Effect, LegState, Mute, NotificationType, Operation, RecordingState,
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
    /// The other party's number, as shown in `participants`.
    other: String,
    started: Instant,
    ended: Option<Instant>,
}

impl Leg {
    fn new(user: &Arc<User>, state: CallState, call_type: CallType, other: &str) -> Leg {
        Leg {
            user: user.clone(),
            state,
            rec: RecordingState::Stopped,
            mute: Mute::Off,
            gsip_record: None,
            gsip_rec_fn: None,
            call_type,
            other: other.to_owned(),
            started: Instant::now(),
            ended: None,
        }
    }

    /// The part of the leg the state machine looks at.
    fn leg_state(&self) -> LegState {
        LegState {
            state: self.state,
            rec: self.rec,
            mute: self.mute,
        }
    }

    /// Moves the leg to `next`, keeping `GSIP_RECORD` in step with the recording.
    fn set(&mut self, next: LegState) {
        let LegState { state, rec, mute } = next;
        self.mute = mute;
        if rec != self.rec && (self.gsip_record.is_some() || rec != RecordingState::Stopped) {
            self.gsip_record = Some(rec.gsip_record());
        }
        self.rec = rec;
        if state == CallState::Released && self.ended.is_none() {
            self.ended = Some(Instant::now());
        }
        self.state = state;
    }
}

/// A call: shared data (id, numbers, `userData`) and one leg per configured user on it.
#[derive(Debug)]
struct Call {
    id: String,
    conn_id: String,
    dnis: String,
    caller: String,
    user_data: Map<String, Value>,
    legs: Vec<Leg>,
}

impl Call {
    fn leg_of(&self, user: &str) -> Option<usize> {
        self.legs.iter().position(|l| &*l.user.name == user)
    }

    fn all_released(&self) -> bool {
        self.legs.iter().all(|l| l.state == CallState::Released)
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
    participants: [Participant<'a>; 1],
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
}

#[derive(Debug, Default)]
struct Registry {
    calls: HashMap<String, Call>,
    /// Each user's call ids, oldest first, released ones included until pruned.
    by_user: HashMap<Arc<str>, VecDeque<String>>,
}

impl Registry {
    fn ids_of(&self, user: &str) -> impl Iterator<Item = &String> {
        self.by_user.get(user).into_iter().flatten()
    }

    fn active_count(&self, user: &str) -> usize {
        self.ids_of(user)
            .filter(|id| {
                self.calls
                    .get(*id)
                    .and_then(|c| c.leg_of(user).map(|i| c.legs[i].state))
                    .is_some_and(|s| s != CallState::Released)
            })
            .count()
    }

    /// The call `id` if `user` has a leg in it that is still remembered.
    fn find(&mut self, user: &str, id: &str) -> Result<(&mut Call, usize), VoiceError> {
        if !self.ids_of(user).any(|i| i == id) {
            return Err(VoiceError::call_not_found());
        }
        let call = self
            .calls
            .get_mut(id)
            .ok_or_else(VoiceError::call_not_found)?;
        let leg = call.leg_of(user).ok_or_else(VoiceError::call_not_found)?;
        Ok((call, leg))
    }

    /// Forgets `user`'s oldest released calls beyond `keep`; a call no user remembers is
    /// dropped.
    fn prune(&mut self, user: &str, keep: usize) {
        let Some(list) = self.by_user.get(user) else {
            return;
        };
        let calls = &self.calls;
        let released: Vec<String> = list
            .iter()
            .filter(|id| calls.get(*id).is_none_or(Call::all_released))
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
    Nothing,
    Outbound(OutboundCall),
    Released(String),
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
        Switch::far_end_answered(self, call_id)
    }

    fn far_end_released(&self, call_id: &str) -> Result<(), VoiceError> {
        Switch::far_end_released(self, call_id)
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

    fn view<'a>(&self, call: &'a Call, leg: &'a Leg, now: Instant) -> CallView<'a> {
        let base = self.config.base_url();
        let mut user_data = call.user_data.clone();
        if leg.user.recording {
            if let Some(r) = leg.gsip_record {
                user_data.insert("GSIP_RECORD".into(), Value::from(r));
            }
            if let Some(f) = &leg.gsip_rec_fn {
                user_data.insert("GSIP_REC_FN".into(), Value::from(f.as_str()));
            }
        }
        let end = leg.ended.unwrap_or(now);
        CallView {
            id: &call.id,
            state: leg.state,
            call_uuid: &call.id,
            conn_id: &call.conn_id,
            device_uri: format!("{base}/api/v2/devices/{}", leg.user.device_id),
            participants: [Participant {
                e164_number: "",
                formatted_phone_number: &leg.other,
                phone_number: &leg.other,
                digits: &leg.other,
            }],
            dnis: &call.dnis,
            call_type: leg.call_type,
            capabilities: capabilities(leg.leg_state(), leg.user.recording),
            user_data,
            duration: end
                .saturating_duration_since(leg.started)
                .as_secs()
                .to_string(),
            mute: leg.mute,
            recording_state: leg.user.recording.then_some(leg.rec),
            supervisor_listening_in: false,
            monitored_user_muted: false,
            monitoring: false,
            uri: format!("{base}/api/v2/me/calls/{}", call.id),
            path: format!("/calls/{}", call.id),
        }
    }

    /// Publishes one notification to the owner of leg `leg` of `call`.
    fn notify(&self, call: &Call, leg: usize, kind: NotificationType) {
        let leg = &call.legs[leg];
        let n = CallNotification {
            message_type: "CallStateChangeMessage",
            notification_type: kind,
            phone_number: &leg.user.dn,
            call: self.view(call, leg, Instant::now()),
        };
        match serde_json::value::to_raw_value(&n) {
            Ok(raw) => {
                self.engine
                    .deliver_to_principal(&leg.user.name, &self.calls_channel, &raw);
            }
            Err(e) => tracing::error!("voice: cannot serialize a notification: {e}"),
        }
    }

    fn after(&self, after: After) {
        match after {
            After::Nothing => {}
            After::Outbound(call) => self.telephony.outbound_call(&call, self.control()),
            After::Released(id) => self.telephony.call_released(&id),
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

    /// Releases every leg of `call` not yet released, notifying each owner.
    fn release_all(&self, call: &mut Call) -> Vec<Arc<str>> {
        let mut released = Vec::new();
        for i in 0..call.legs.len() {
            if call.legs[i].state != CallState::Released {
                let mute = call.legs[i].mute;
                call.legs[i].set(LegState {
                    state: CallState::Released,
                    rec: RecordingState::Stopped,
                    mute,
                });
                self.notify(call, i, NotificationType::StatusChange);
                released.push(call.legs[i].user.name.clone());
            }
        }
        released
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
        let callee = self.directory.by_dn(destination).cloned();
        let max = self.config.max_calls_per_user;
        let mut reg = self.registry.lock();
        if reg.active_count(&user.name) >= max {
            return Err(VoiceError::InvalidOperation(format!(
                "Too many calls (at most {max})"
            )));
        }
        if let Some(c) = &callee
            && reg.active_count(&c.name) >= max
        {
            return Err(VoiceError::InvalidOperation("Destination busy".into()));
        }
        let id = loop {
            let id = util::call_id();
            if !reg.calls.contains_key(&id) {
                break id;
            }
        };
        let call_type = if callee.is_some() {
            CallType::Internal
        } else {
            CallType::Outbound
        };
        let mut legs = vec![Leg::new(user, CallState::Dialing, call_type, destination)];
        if let Some(c) = &callee {
            legs.push(Leg::new(
                c,
                CallState::Ringing,
                CallType::Internal,
                &user.dn,
            ));
        }
        let call = Call {
            id: id.clone(),
            conn_id: util::conn_id(),
            dnis: destination.to_owned(),
            caller: user.dn.clone(),
            user_data,
            legs,
        };
        for l in &call.legs {
            reg.by_user
                .entry(l.user.name.clone())
                .or_default()
                .push_back(id.clone());
        }
        for i in 0..call.legs.len() {
            self.notify(&call, i, NotificationType::StatusChange);
        }
        reg.calls.insert(id.clone(), call);
        drop(reg);
        if callee.is_none() {
            self.after(After::Outbound(OutboundCall {
                call_id: id.clone(),
                user: user.name.to_string(),
                from: user.dn.clone(),
                destination: destination.to_owned(),
            }));
        }
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
        let keep = self.config.max_released_calls_per_user;
        let mut reg = self.registry.lock();
        let (call, leg) = reg.find(&user.name, call_id)?;
        let next = transition(call.legs[leg].leg_state(), op)
            .ok_or_else(|| VoiceError::invalid_state(op.name()))?;
        let rule = rule(op);
        let mut after = After::Nothing;
        let mut released = Vec::new();
        match rule.effect {
            Effect::Leg => {
                let l = &mut call.legs[leg];
                if op == Operation::StartCallRecording && l.gsip_rec_fn.is_none() {
                    l.gsip_rec_fn = Some(format!(
                        "{}_{}_{}_{}_{}",
                        call.id,
                        l.user.dn,
                        call.caller,
                        call.dnis,
                        util::utc_stamp()
                    ));
                }
                l.set(next);
                self.notify(call, leg, rule.notification);
            }
            Effect::Release => {
                released = self.release_all(call);
                after = After::Released(call.id.clone());
            }
            Effect::Answer => {
                call.legs[leg].set(next);
                self.notify(call, leg, rule.notification);
                // The caller's leg of an internal call is connected by the same answer.
                for i in 0..call.legs.len() {
                    if i != leg && call.legs[i].state == CallState::Dialing {
                        let mut l = call.legs[i].leg_state();
                        l.state = CallState::Established;
                        call.legs[i].set(l);
                        self.notify(call, i, rule.notification);
                    }
                }
            }
            Effect::UserData => {
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
                for i in 0..call.legs.len() {
                    if call.legs[i].state != CallState::Released {
                        self.notify(call, i, rule.notification);
                    }
                }
            }
        }
        for u in released {
            reg.prune(&u, keep);
        }
        drop(reg);
        self.after(after);
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
            let Some(call) = reg.calls.get_mut(&id) else {
                continue;
            };
            let Some(leg) = call.leg_of(&user.name) else {
                continue;
            };
            if let Some(next) = transition(call.legs[leg].leg_state(), Operation::StopCallRecording)
            {
                call.legs[leg].set(next);
                self.notify(call, leg, NotificationType::CallRecordingStateChange);
            }
        }
        Ok(())
    }

    /// `GET /api/v2/me/calls`: the user's calls that are not released, oldest first.
    pub fn calls_json(&self, user: &User) -> Result<Vec<Value>, VoiceError> {
        let reg = self.registry.lock();
        let now = Instant::now();
        reg.ids_of(&user.name)
            .filter_map(|id| reg.calls.get(id))
            .filter_map(|c| c.leg_of(&user.name).map(|i| (c, &c.legs[i])))
            .filter(|(_, l)| l.state != CallState::Released)
            .map(|(c, l)| {
                serde_json::to_value(self.view(c, l, now))
                    .map_err(|e| VoiceError::Internal(e.to_string()))
            })
            .collect()
    }

    /// `GET /api/v2/me/calls/{id}` (released calls too, while remembered).
    pub fn call_json(&self, user: &User, id: &str) -> Result<Value, VoiceError> {
        let mut reg = self.registry.lock();
        let (call, leg) = reg.find(&user.name, id)?;
        serde_json::to_value(self.view(call, &call.legs[leg], Instant::now()))
            .map_err(|e| VoiceError::Internal(e.to_string()))
    }

    pub fn far_end_answered(&self, call_id: &str) -> Result<(), VoiceError> {
        let mut reg = self.registry.lock();
        let call = reg
            .calls
            .get_mut(call_id)
            .ok_or_else(VoiceError::call_not_found)?;
        let leg = call
            .legs
            .iter()
            .position(|l| l.call_type == CallType::Outbound && l.state == CallState::Dialing)
            .ok_or_else(|| VoiceError::invalid_state("Far-end answer"))?;
        let mut next = call.legs[leg].leg_state();
        next.state = CallState::Established;
        call.legs[leg].set(next);
        self.notify(call, leg, NotificationType::StatusChange);
        Ok(())
    }

    pub fn far_end_released(&self, call_id: &str) -> Result<(), VoiceError> {
        let keep = self.config.max_released_calls_per_user;
        let mut reg = self.registry.lock();
        let call = reg
            .calls
            .get_mut(call_id)
            .ok_or_else(VoiceError::call_not_found)?;
        if call.all_released() {
            return Err(VoiceError::invalid_state("Far-end release"));
        }
        let released = self.release_all(call);
        for u in released {
            reg.prune(&u, keep);
        }
        drop(reg);
        self.after(After::Released(call_id.to_owned()));
        Ok(())
    }

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
        let user_data = user_data.unwrap_or_default();
        self.check_size(&user_data)?;
        let mut reg = self.registry.lock();
        if reg.active_count(&user.name) >= self.config.max_calls_per_user {
            return Err(VoiceError::InvalidOperation("Destination busy".into()));
        }
        let id = loop {
            let id = util::call_id();
            if !reg.calls.contains_key(&id) {
                break id;
            }
        };
        let call = Call {
            id: id.clone(),
            conn_id: util::conn_id(),
            dnis: user.dn.clone(),
            caller: from.to_owned(),
            user_data,
            legs: vec![Leg::new(&user, CallState::Ringing, CallType::Inbound, from)],
        };
        reg.by_user
            .entry(user.name.clone())
            .or_default()
            .push_back(id.clone());
        self.notify(&call, 0, NotificationType::StatusChange);
        reg.calls.insert(id.clone(), call);
        Ok(id)
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
