//! The call model: states, operations, and the state machine of one user's leg of a call.
//!
//! Everything here is pure: [`transition`] is the whole state machine and [`capabilities`] is
//! derived from it, so a capability is listed exactly when its operation would be accepted.

use serde::Serialize;

/// The state of one user's leg of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum CallState {
    /// The user placed the call; the other end has not answered.
    Dialing,
    /// The call is offered to the user.
    Ringing,
    /// Connected.
    Established,
    /// Put on hold by the user.
    Held,
    /// Over.
    Released,
}

impl CallState {
    /// Every state, for table tests.
    pub const ALL: [CallState; 5] = [
        CallState::Dialing,
        CallState::Ringing,
        CallState::Established,
        CallState::Held,
        CallState::Released,
    ];
}

/// The recording state of one user's leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum RecordingState {
    /// Not recording (initial).
    Stopped,
    /// Recording.
    Recording,
    /// Recording paused.
    Paused,
}

impl RecordingState {
    /// Every state, for table tests.
    pub const ALL: [RecordingState; 3] = [
        RecordingState::Stopped,
        RecordingState::Recording,
        RecordingState::Paused,
    ];

    /// The value of `userData.GSIP_RECORD` in this state.
    pub fn gsip_record(self) -> &'static str {
        match self {
            RecordingState::Stopped => "OFF",
            RecordingState::Recording => "ON",
            RecordingState::Paused => "PAUSED",
        }
    }
}

/// How the call came about, from the user's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum CallType {
    /// Between two configured users.
    Internal,
    /// From a user to a number that is no configured user's DN.
    Outbound,
    /// From outside to a user (created by a [`crate::Telephony`] source).
    Inbound,
}

/// The `notificationType` of a call notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum NotificationType {
    /// The call state changed (Dial, Answer, Hold, Retrieve, Hangup, far-end events).
    StatusChange,
    /// A recording operation (on the call, or device-level stop).
    CallRecordingStateChange,
    /// A user-data operation.
    AttachedDataChanged,
    /// `SendDtmf`: the digits were sent (to the requester only; the call does not change).
    DtmfSent,
}

/// A call operation (`operationName` on `POST /api/v2/me/calls/{id}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    /// Answer a ringing call.
    Answer,
    /// Put an established call on hold.
    Hold,
    /// Take a held call back.
    Retrieve,
    /// Release the call (both legs of an internal call).
    Hangup,
    /// Send DTMF digits (`digits`, GWS): changes nothing, publishes `DtmfSent` to the
    /// requester only. The wire name is `SendDtmf` (the capability name); GWS's page title
    /// `SendDTMF` is accepted too.
    SendDtmf,
    /// Start recording.
    StartCallRecording,
    /// Stop recording.
    StopCallRecording,
    /// Pause recording.
    PauseCallRecording,
    /// Resume a paused recording.
    ResumeCallRecording,
    /// Add or overwrite `userData` keys.
    AttachUserData,
    /// Add or overwrite `userData` keys.
    UpdateUserData,
    /// Remove one `userData` key (`key`).
    DeleteUserDataPair,
    /// Remove all `userData`.
    DeleteUserData,
}

impl Operation {
    /// Every operation, for table tests.
    pub const ALL: [Operation; 13] = [
        Operation::Answer,
        Operation::Hold,
        Operation::Retrieve,
        Operation::Hangup,
        Operation::SendDtmf,
        Operation::StartCallRecording,
        Operation::StopCallRecording,
        Operation::PauseCallRecording,
        Operation::ResumeCallRecording,
        Operation::AttachUserData,
        Operation::UpdateUserData,
        Operation::DeleteUserDataPair,
        Operation::DeleteUserData,
    ];

    /// The wire name.
    pub fn name(self) -> &'static str {
        match self {
            Operation::Answer => "Answer",
            Operation::Hold => "Hold",
            Operation::Retrieve => "Retrieve",
            Operation::Hangup => "Hangup",
            Operation::SendDtmf => "SendDtmf",
            Operation::StartCallRecording => "StartCallRecording",
            Operation::StopCallRecording => "StopCallRecording",
            Operation::PauseCallRecording => "PauseCallRecording",
            Operation::ResumeCallRecording => "ResumeCallRecording",
            Operation::AttachUserData => "AttachUserData",
            Operation::UpdateUserData => "UpdateUserData",
            Operation::DeleteUserDataPair => "DeleteUserDataPair",
            Operation::DeleteUserData => "DeleteUserData",
        }
    }

    /// The operation with this wire name (exact, case-sensitive as in GWS).
    pub fn from_name(name: &str) -> Option<Operation> {
        if name == "SendDTMF" {
            return Some(Operation::SendDtmf);
        }
        Operation::ALL.into_iter().find(|o| o.name() == name)
    }

    /// Whether the operation needs the `api-voice-recording` feature.
    pub fn is_recording(self) -> bool {
        matches!(
            self,
            Operation::StartCallRecording
                | Operation::StopCallRecording
                | Operation::PauseCallRecording
                | Operation::ResumeCallRecording
        )
    }

    /// Whether the operation changes `userData`.
    pub fn is_user_data(self) -> bool {
        matches!(
            self,
            Operation::AttachUserData
                | Operation::UpdateUserData
                | Operation::DeleteUserDataPair
                | Operation::DeleteUserData
        )
    }

    /// The notification an accepted operation publishes.
    pub fn notification(self) -> NotificationType {
        if self.is_recording() {
            NotificationType::CallRecordingStateChange
        } else if self.is_user_data() {
            NotificationType::AttachedDataChanged
        } else if self == Operation::SendDtmf {
            NotificationType::DtmfSent
        } else {
            NotificationType::StatusChange
        }
    }
}

/// The state machine of one leg: the leg's `(state, recordingState)` after `op`, or `None` when
/// `op` is not valid now (the request is refused with statusCode 2 and nothing changes).
///
/// Releasing a leg stops its recording.
pub fn transition(
    state: CallState,
    rec: RecordingState,
    op: Operation,
) -> Option<(CallState, RecordingState)> {
    use CallState::*;
    use RecordingState::*;
    match (op, state, rec) {
        (Operation::Answer, Ringing, r) => Some((Established, r)),
        (Operation::Hold, Established, r) => Some((Held, r)),
        (Operation::Retrieve, Held, r) => Some((Established, r)),
        (Operation::Hangup, s, _) if s != Released => Some((Released, Stopped)),
        (Operation::SendDtmf, s @ (Dialing | Established), r) => Some((s, r)),
        (Operation::StartCallRecording, Established, Stopped) => Some((Established, Recording)),
        (Operation::PauseCallRecording, Established, Recording) => Some((Established, Paused)),
        (Operation::ResumeCallRecording, Established, Paused) => Some((Established, Recording)),
        (Operation::StopCallRecording, s @ (Established | Held), Recording | Paused) => {
            Some((s, Stopped))
        }
        (o, s, r) if o.is_user_data() && s != Released => Some((s, r)),
        _ => None,
    }
}

/// The operations in the order GWS lists them in `capabilities` (the seed's order; GWS's
/// transfer and conference names, which this emulation does not implement yet, are left out).
const CAPABILITY_ORDER: [Operation; 13] = [
    Operation::Answer,
    Operation::UpdateUserData,
    Operation::SendDtmf,
    Operation::Hold,
    Operation::Retrieve,
    Operation::AttachUserData,
    Operation::DeleteUserDataPair,
    Operation::DeleteUserData,
    Operation::Hangup,
    Operation::StartCallRecording,
    Operation::ResumeCallRecording,
    Operation::PauseCallRecording,
    Operation::StopCallRecording,
];

/// Whether a user with (`recording`) or without the recording feature may use `op` at all.
pub fn allowed_by_features(op: Operation, recording: bool) -> bool {
    recording || !op.is_recording()
}

/// What a leg in this state lists as `capabilities`, by one rule: exactly the operations
/// [`transition`] accepts now and the user's features allow. No operation is listed that would
/// be refused, and none that would be accepted is left out.
pub fn capabilities(state: CallState, rec: RecordingState, recording: bool) -> Vec<&'static str> {
    CAPABILITY_ORDER
        .iter()
        .filter(|op| allowed_by_features(**op, recording) && transition(state, rec, **op).is_some())
        .map(|op| op.name())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::CallState::*;
    use super::Operation::*;
    use super::RecordingState::*;
    use super::*;

    /// Every allowed transition; anything not listed here must be refused.
    const ALLOWED: &[(
        Operation,
        CallState,
        RecordingState,
        CallState,
        RecordingState,
    )] = &[
        (Answer, Ringing, Stopped, Established, Stopped),
        (Hold, Established, Stopped, Held, Stopped),
        (Hold, Established, Recording, Held, Recording),
        (Hold, Established, Paused, Held, Paused),
        (Retrieve, Held, Stopped, Established, Stopped),
        (Retrieve, Held, Recording, Established, Recording),
        (Retrieve, Held, Paused, Established, Paused),
        (Hangup, Dialing, Stopped, Released, Stopped),
        (Hangup, Ringing, Stopped, Released, Stopped),
        (Hangup, Established, Stopped, Released, Stopped),
        (Hangup, Established, Recording, Released, Stopped),
        (Hangup, Established, Paused, Released, Stopped),
        (Hangup, Held, Stopped, Released, Stopped),
        (Hangup, Held, Recording, Released, Stopped),
        (Hangup, Held, Paused, Released, Stopped),
        (SendDtmf, Dialing, Stopped, Dialing, Stopped),
        (SendDtmf, Established, Stopped, Established, Stopped),
        (SendDtmf, Established, Recording, Established, Recording),
        (SendDtmf, Established, Paused, Established, Paused),
        (
            StartCallRecording,
            Established,
            Stopped,
            Established,
            Recording,
        ),
        (
            PauseCallRecording,
            Established,
            Recording,
            Established,
            Paused,
        ),
        (
            ResumeCallRecording,
            Established,
            Paused,
            Established,
            Recording,
        ),
        (
            StopCallRecording,
            Established,
            Recording,
            Established,
            Stopped,
        ),
        (StopCallRecording, Established, Paused, Established, Stopped),
        (StopCallRecording, Held, Recording, Held, Stopped),
        (StopCallRecording, Held, Paused, Held, Stopped),
    ];

    /// States a leg can actually be in: recording only ever runs while Established or Held.
    fn reachable(s: CallState, r: RecordingState) -> bool {
        r == Stopped || matches!(s, Established | Held)
    }

    #[test]
    fn every_transition_is_allowed_or_refused_as_tabled() {
        let mut checked = 0;
        for op in Operation::ALL {
            for s in CallState::ALL {
                for r in RecordingState::ALL {
                    if !reachable(s, r) {
                        continue;
                    }
                    checked += 1;
                    let expected = if op.is_user_data() && s != Released {
                        Some((s, r))
                    } else {
                        ALLOWED
                            .iter()
                            .find(|(o, fs, fr, _, _)| *o == op && *fs == s && *fr == r)
                            .map(|(_, _, _, ts, tr)| (*ts, *tr))
                    };
                    assert_eq!(transition(s, r, op), expected, "{op:?} from {s:?}/{r:?}");
                }
            }
        }
        assert_eq!(checked, 13 * (5 + 2 * 2));
    }

    #[test]
    fn capabilities_match_the_contract() {
        let c = |s, r, rec| capabilities(s, r, rec);
        let ud = [
            "UpdateUserData",
            "AttachUserData",
            "DeleteUserDataPair",
            "DeleteUserData",
        ];
        let mut ringing = vec!["Answer"];
        ringing.extend([
            "UpdateUserData",
            "AttachUserData",
            "DeleteUserDataPair",
            "DeleteUserData",
            "Hangup",
        ]);
        assert_eq!(c(Ringing, Stopped, true), ringing);
        assert_eq!(
            c(Dialing, Stopped, true),
            vec![
                "UpdateUserData",
                "SendDtmf",
                "AttachUserData",
                "DeleteUserDataPair",
                "DeleteUserData",
                "Hangup"
            ]
        );
        // The seed's list, in the seed's order, without the transfer and conference names
        // (not implemented, so not listed: a listed operation must succeed).
        assert_eq!(
            c(Established, Recording, true),
            vec![
                "UpdateUserData",
                "SendDtmf",
                "Hold",
                "AttachUserData",
                "DeleteUserDataPair",
                "DeleteUserData",
                "Hangup",
                "PauseCallRecording",
                "StopCallRecording",
            ]
        );
        assert!(c(Established, Stopped, true).contains(&"StartCallRecording"));
        assert!(!c(Established, Stopped, false).contains(&"StartCallRecording"));
        let paused = c(Established, Paused, true);
        assert!(paused.contains(&"ResumeCallRecording") && paused.contains(&"StopCallRecording"));
        assert!(!paused.contains(&"PauseCallRecording") && !paused.contains(&"StartCallRecording"));
        let held = c(Held, Recording, true);
        assert!(held.contains(&"Retrieve") && held.contains(&"StopCallRecording"));
        assert!(!held.contains(&"PauseCallRecording") && !held.contains(&"SendDtmf"));
        assert!(
            !c(Held, Stopped, true)
                .iter()
                .any(|n| n.contains("Recording"))
        );
        assert!(
            !c(Held, Recording, false)
                .iter()
                .any(|n| n.contains("Recording"))
        );
        for name in ud {
            assert!(c(Held, Stopped, false).contains(&name));
        }
        assert!(c(Released, Stopped, true).is_empty());
    }

    #[test]
    fn capabilities_are_exactly_the_accepted_operations() {
        for s in CallState::ALL {
            for r in RecordingState::ALL {
                for rec in [false, true] {
                    let caps = capabilities(s, r, rec);
                    for op in Operation::ALL {
                        let accepted =
                            (rec || !op.is_recording()) && transition(s, r, op).is_some();
                        assert_eq!(
                            caps.contains(&op.name()),
                            accepted,
                            "{op:?} {s:?} {r:?} {rec}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn names_round_trip() {
        for op in Operation::ALL {
            assert_eq!(Operation::from_name(op.name()), Some(op));
        }
        assert_eq!(Operation::from_name("answer"), None);
        assert_eq!(Operation::from_name("SendDTMF"), Some(SendDtmf));
        assert_eq!(Operation::from_name("SingleStepTransfer"), None);
    }
}
