//! Agent state on the voice channel (`POST /api/v2/me/channels/voice`) and do-not-disturb on
//! the device (`POST /api/v2/me/devices/{id}`): the requests, the state, and its JSON.

use serde_json::{Map, Value, json};

use crate::error::VoiceError;

/// Longest accepted `reasonCode`.
const MAX_REASON_LEN: usize = 64;

/// The agent state of a user on the voice channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AgentMode {
    /// Ready for calls, with the `workMode` the request gave (`ManualIn` or `AutoIn`), if any.
    Ready { work_mode: Option<&'static str> },
    /// Not ready, with the request's `reasonCode`, if any.
    NotReady { reason_code: Option<String> },
    /// Not ready, wrapping up after a call.
    AfterCallWork,
    /// Not ready, busy with other work.
    AuxWork,
}

/// A user's agent state and the device's do-not-disturb. Initially `Ready` and `Off`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AgentState {
    pub mode: AgentMode,
    pub do_not_disturb: bool,
}

impl Default for AgentState {
    fn default() -> AgentState {
        AgentState {
            mode: AgentMode::Ready { work_mode: None },
            do_not_disturb: false,
        }
    }
}

impl AgentState {
    /// The device's `userState` object.
    pub fn user_state_json(&self) -> Value {
        match &self.mode {
            AgentMode::Ready { work_mode } => {
                let mut v = json!({"state": "Ready", "displayName": "Ready"});
                if let Some(w) = work_mode {
                    v["workMode"] = Value::from(*w);
                }
                v
            }
            AgentMode::NotReady { reason_code } => {
                let mut v = json!({"state": "NotReady", "displayName": "Not Ready"});
                if let Some(r) = reason_code {
                    v["reasonCode"] = Value::from(r.as_str());
                }
                v
            }
            AgentMode::AfterCallWork => json!({
                "state": "NotReady", "displayName": "AfterCallWork", "workMode": "AfterCallWork"
            }),
            AgentMode::AuxWork => json!({
                "state": "NotReady", "displayName": "AuxWork", "workMode": "AuxWork"
            }),
        }
    }

    /// The device's `doNotDisturb` value.
    pub fn dnd_json(&self) -> &'static str {
        if self.do_not_disturb { "On" } else { "Off" }
    }
}

/// The agent-state operations of `POST /api/v2/me/channels/voice`, parsed from the body: the
/// new mode, or a clear error (400/1 for a malformed parameter, 400/2 for an unknown operation).
pub(crate) fn channel_operation(
    name: &str,
    body: &Map<String, Value>,
) -> Result<AgentMode, VoiceError> {
    match name {
        "Ready" => {
            let work_mode = match body.get("workmode").or_else(|| body.get("workMode")) {
                None | Some(Value::Null) => None,
                Some(Value::String(w)) if w == "ManualIn" => Some("ManualIn"),
                Some(Value::String(w)) if w == "AutoIn" => Some("AutoIn"),
                Some(_) => {
                    return Err(VoiceError::BadRequest(
                        "workmode must be ManualIn or AutoIn".into(),
                    ));
                }
            };
            Ok(AgentMode::Ready { work_mode })
        }
        "NotReady" => {
            let reason_code = match body.get("reasonCode") {
                None | Some(Value::Null) => None,
                Some(Value::String(r)) if !r.is_empty() && r.len() <= MAX_REASON_LEN => {
                    Some(r.clone())
                }
                Some(_) => {
                    return Err(VoiceError::BadRequest(format!(
                        "reasonCode must be a string of 1 to {MAX_REASON_LEN} bytes"
                    )));
                }
            };
            Ok(AgentMode::NotReady { reason_code })
        }
        // `wrapUpTime` is accepted and ignored.
        "AfterCallWork" => Ok(AgentMode::AfterCallWork),
        "AuxWork" => Ok(AgentMode::AuxWork),
        _ => Err(VoiceError::InvalidOperation("Unknown operation".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(name: &str, body: Value) -> Result<AgentMode, VoiceError> {
        channel_operation(name, body.as_object().unwrap())
    }

    #[test]
    fn operations_and_their_user_state() {
        let state = |mode| AgentState {
            mode,
            do_not_disturb: false,
        };
        let ready = parse("Ready", json!({"workmode": "AutoIn"})).unwrap();
        assert_eq!(
            state(ready).user_state_json(),
            json!({"state": "Ready", "displayName": "Ready", "workMode": "AutoIn"})
        );
        let nr = parse("NotReady", json!({"reasonCode": "Lunch"})).unwrap();
        assert_eq!(
            state(nr).user_state_json(),
            json!({"state": "NotReady", "displayName": "Not Ready", "reasonCode": "Lunch"})
        );
        let acw = parse("AfterCallWork", json!({"wrapUpTime": 30})).unwrap();
        assert_eq!(state(acw).user_state_json()["workMode"], "AfterCallWork");
        assert_eq!(
            AgentState::default().user_state_json(),
            json!({"state": "Ready", "displayName": "Ready"})
        );
    }

    #[test]
    fn bad_parameters_and_unknown_operations() {
        for (name, body) in [
            ("Ready", json!({"workmode": "Sideways"})),
            ("Ready", json!({"workmode": 1})),
            ("NotReady", json!({"reasonCode": ""})),
            ("NotReady", json!({"reasonCode": 5})),
            ("NotReady", json!({"reasonCode": "x".repeat(65)})),
        ] {
            assert_eq!(parse(name, body).unwrap_err().status_code(), 1, "{name}");
        }
        for name in ["ready", "Login", "DoNotDisturbOn"] {
            assert_eq!(
                parse(name, json!({})).unwrap_err().status_code(),
                2,
                "{name}"
            );
        }
    }
}
