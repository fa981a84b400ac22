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

/// Whether a leg's microphone is muted (`mute` in the call object).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Mute {
    /// Not muted (initial).
    Off,
    /// Muted by `MuteCall`.
    On,
}

/// The state of one user's leg that the operations look at: call state, recording state and
/// mute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LegState {
    /// The call state of the leg.
    pub state: CallState,
    /// The recording state of the leg.
    pub rec: RecordingState,
    /// Whether the leg is muted.
    pub mute: Mute,
}

impl LegState {
    /// A new leg in `state`: not recording, not muted.
    pub fn new(state: CallState) -> LegState {
        LegState {
            state,
            rec: RecordingState::Stopped,
            mute: Mute::Off,
        }
    }
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
    /// Release the call (both legs of a two-party call).
    Hangup,
    /// Send DTMF digits (`digits`, GWS): changes nothing, publishes `DtmfSent` to the
    /// requester only. The wire name is `SendDtmf` (the capability name); GWS's page title
    /// `SendDTMF` is accepted too.
    SendDtmf,
    /// Mute the requester's leg.
    MuteCall,
    /// Unmute the requester's leg.
    UnmuteCall,
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
    /// Set `userData[dispositionKey]` (default `DispositionCode`) to `disposition`.
    SetCallDisposition,
}

impl Operation {
    /// Every operation, for table tests.
    pub const ALL: [Operation; 16] = [
        Operation::Answer,
        Operation::Hold,
        Operation::Retrieve,
        Operation::Hangup,
        Operation::SendDtmf,
        Operation::MuteCall,
        Operation::UnmuteCall,
        Operation::StartCallRecording,
        Operation::StopCallRecording,
        Operation::PauseCallRecording,
        Operation::ResumeCallRecording,
        Operation::AttachUserData,
        Operation::UpdateUserData,
        Operation::DeleteUserDataPair,
        Operation::DeleteUserData,
        Operation::SetCallDisposition,
    ];

    /// The wire name.
    pub fn name(self) -> &'static str {
        match self {
            Operation::Answer => "Answer",
            Operation::Hold => "Hold",
            Operation::Retrieve => "Retrieve",
            Operation::Hangup => "Hangup",
            Operation::SendDtmf => "SendDtmf",
            Operation::MuteCall => "MuteCall",
            Operation::UnmuteCall => "UnmuteCall",
            Operation::StartCallRecording => "StartCallRecording",
            Operation::StopCallRecording => "StopCallRecording",
            Operation::PauseCallRecording => "PauseCallRecording",
            Operation::ResumeCallRecording => "ResumeCallRecording",
            Operation::AttachUserData => "AttachUserData",
            Operation::UpdateUserData => "UpdateUserData",
            Operation::DeleteUserDataPair => "DeleteUserDataPair",
            Operation::DeleteUserData => "DeleteUserData",
            Operation::SetCallDisposition => "SetCallDisposition",
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
        rule(self).effect == Effect::UserData
    }

    /// The notification an accepted operation publishes.
    pub fn notification(self) -> NotificationType {
        rule(self).notification
    }
}

/// What the next value of one field of a leg is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next<T> {
    /// Unchanged.
    Same,
    /// This value.
    To(T),
}

impl<T: Copy> Next<T> {
    fn apply(self, v: T) -> T {
        match self {
            Next::Same => v,
            Next::To(t) => t,
        }
    }
}

/// What an accepted operation does beyond the requester's leg, and who is notified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Only the requester's leg changes; only the requester is notified.
    Leg,
    /// The requester's leg and every `Dialing` leg of the call become `Established`; each is
    /// notified.
    Answer,
    /// The requester's party leaves; in a two-party call every leg is released; each released
    /// leg is notified.
    Release,
    /// The call's `userData` changes; every live party is notified.
    UserData,
}

/// One row of the state machine: when `op` is accepted (the requester's leg in one of
/// `states`, its recording in one of `recs`, its mute equal to `mute` when given), what the leg
/// becomes, the notification, and the effect on the rest of the call.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    /// The operation.
    pub op: Operation,
    /// The call states the requester's leg may be in.
    pub states: &'static [CallState],
    /// The recording states the requester's leg may be in.
    pub recs: &'static [RecordingState],
    /// The mute state required, if any.
    pub mute: Option<Mute>,
    /// The leg's next call state.
    pub next_state: Next<CallState>,
    /// The leg's next recording state.
    pub next_rec: Next<RecordingState>,
    /// The leg's next mute state.
    pub next_mute: Next<Mute>,
    /// The `notificationType` published.
    pub notification: NotificationType,
    /// What happens to the rest of the call, and who hears of it.
    pub effect: Effect,
}

const LIVE: &[CallState] = &[
    CallState::Dialing,
    CallState::Ringing,
    CallState::Established,
    CallState::Held,
];
const ANY_REC: &[RecordingState] = &RecordingState::ALL;
const ESTABLISHED: &[CallState] = &[CallState::Established];

/// A row that changes nothing but what is given.
const fn row(op: Operation, states: &'static [CallState], notification: NotificationType) -> Rule {
    Rule {
        op,
        states,
        recs: ANY_REC,
        mute: None,
        next_state: Next::Same,
        next_rec: Next::Same,
        next_mute: Next::Same,
        notification,
        effect: Effect::Leg,
    }
}

const fn recording(
    op: Operation,
    states: &'static [CallState],
    recs: &'static [RecordingState],
    next: RecordingState,
) -> Rule {
    Rule {
        recs,
        next_rec: Next::To(next),
        ..row(op, states, NotificationType::CallRecordingStateChange)
    }
}

const fn user_data(op: Operation) -> Rule {
    Rule {
        effect: Effect::UserData,
        ..row(op, LIVE, NotificationType::AttachedDataChanged)
    }
}

/// The state machine of a leg, one row per operation: adding an operation is adding a row
/// (and, if it touches more than the leg, an [`Effect`]).
pub const RULES: [Rule; 16] = {
    use CallState::*;
    use NotificationType::*;
    use Operation as O;
    use RecordingState::*;
    [
        Rule {
            next_state: Next::To(Established),
            effect: Effect::Answer,
            ..row(O::Answer, &[Ringing], StatusChange)
        },
        Rule {
            next_state: Next::To(Held),
            ..row(O::Hold, ESTABLISHED, StatusChange)
        },
        Rule {
            next_state: Next::To(Established),
            ..row(O::Retrieve, &[Held], StatusChange)
        },
        Rule {
            next_state: Next::To(Released),
            next_rec: Next::To(Stopped),
            effect: Effect::Release,
            ..row(O::Hangup, LIVE, StatusChange)
        },
        row(O::SendDtmf, &[Dialing, Established], DtmfSent),
        Rule {
            mute: Some(Mute::Off),
            next_mute: Next::To(Mute::On),
            ..row(O::MuteCall, ESTABLISHED, StatusChange)
        },
        Rule {
            mute: Some(Mute::On),
            next_mute: Next::To(Mute::Off),
            ..row(O::UnmuteCall, ESTABLISHED, StatusChange)
        },
        recording(O::StartCallRecording, ESTABLISHED, &[Stopped], Recording),
        recording(
            O::StopCallRecording,
            &[Established, Held],
            &[Recording, Paused],
            Stopped,
        ),
        recording(O::PauseCallRecording, ESTABLISHED, &[Recording], Paused),
        recording(O::ResumeCallRecording, ESTABLISHED, &[Paused], Recording),
        user_data(O::AttachUserData),
        user_data(O::UpdateUserData),
        user_data(O::DeleteUserDataPair),
        user_data(O::DeleteUserData),
        user_data(O::SetCallDisposition),
    ]
};

/// The row of `op`.
pub fn rule(op: Operation) -> &'static Rule {
    RULES
        .iter()
        .find(|r| r.op == op)
        .expect("every operation has a row")
}

/// The state machine of one leg: the leg after `op`, or `None` when `op` is not valid now (the
/// request is refused with statusCode 2 and nothing changes). Features are checked apart
/// ([`allowed_by_features`]).
pub fn transition(leg: LegState, op: Operation) -> Option<LegState> {
    let r = rule(op);
    let accepted = r.states.contains(&leg.state)
        && r.recs.contains(&leg.rec)
        && r.mute.is_none_or(|m| m == leg.mute);
    accepted.then(|| LegState {
        state: r.next_state.apply(leg.state),
        rec: r.next_rec.apply(leg.rec),
        mute: r.next_mute.apply(leg.mute),
    })
}

/// The operations in the order GWS lists them in `capabilities` (the seed's order, GWS's other
/// names after it; GWS's transfer and conference names, not implemented yet, are left out).
const CAPABILITY_ORDER: [Operation; 16] = [
    Operation::Answer,
    Operation::UpdateUserData,
    Operation::SendDtmf,
    Operation::Hold,
    Operation::Retrieve,
    Operation::AttachUserData,
    Operation::DeleteUserDataPair,
    Operation::DeleteUserData,
    Operation::Hangup,
    Operation::MuteCall,
    Operation::UnmuteCall,
    Operation::SetCallDisposition,
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
pub fn capabilities(leg: LegState, recording: bool) -> Vec<&'static str> {
    CAPABILITY_ORDER
        .iter()
        .filter(|op| allowed_by_features(**op, recording) && transition(leg, **op).is_some())
        .map(|op| op.name())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::CallState::*;
    use super::Operation::*;
    use super::RecordingState::*;
    use super::*;

    fn leg(state: CallState, rec: RecordingState, mute: Mute) -> LegState {
        LegState { state, rec, mute }
    }

    /// Every allowed transition of the non-user-data operations, written out by hand (not from
    /// the table): `(op, from, rec, mute, to, rec', mute')`; anything not listed is refused.
    /// `None` for mute: any mute, unchanged.
    #[allow(clippy::type_complexity)]
    const ALLOWED: &[(
        Operation,
        CallState,
        RecordingState,
        Option<Mute>,
        CallState,
        RecordingState,
        Option<Mute>,
    )] = &[
        (Answer, Ringing, Stopped, None, Established, Stopped, None),
        (Hold, Established, Stopped, None, Held, Stopped, None),
        (Hold, Established, Recording, None, Held, Recording, None),
        (Hold, Established, Paused, None, Held, Paused, None),
        (Retrieve, Held, Stopped, None, Established, Stopped, None),
        (
            Retrieve,
            Held,
            Recording,
            None,
            Established,
            Recording,
            None,
        ),
        (Retrieve, Held, Paused, None, Established, Paused, None),
        (Hangup, Dialing, Stopped, None, Released, Stopped, None),
        (Hangup, Ringing, Stopped, None, Released, Stopped, None),
        (Hangup, Established, Stopped, None, Released, Stopped, None),
        (
            Hangup,
            Established,
            Recording,
            None,
            Released,
            Stopped,
            None,
        ),
        (Hangup, Established, Paused, None, Released, Stopped, None),
        (Hangup, Held, Stopped, None, Released, Stopped, None),
        (Hangup, Held, Recording, None, Released, Stopped, None),
        (Hangup, Held, Paused, None, Released, Stopped, None),
        (SendDtmf, Dialing, Stopped, None, Dialing, Stopped, None),
        (
            SendDtmf,
            Established,
            Stopped,
            None,
            Established,
            Stopped,
            None,
        ),
        (
            SendDtmf,
            Established,
            Recording,
            None,
            Established,
            Recording,
            None,
        ),
        (
            SendDtmf,
            Established,
            Paused,
            None,
            Established,
            Paused,
            None,
        ),
        (
            MuteCall,
            Established,
            Stopped,
            Some(Mute::Off),
            Established,
            Stopped,
            Some(Mute::On),
        ),
        (
            MuteCall,
            Established,
            Recording,
            Some(Mute::Off),
            Established,
            Recording,
            Some(Mute::On),
        ),
        (
            MuteCall,
            Established,
            Paused,
            Some(Mute::Off),
            Established,
            Paused,
            Some(Mute::On),
        ),
        (
            UnmuteCall,
            Established,
            Stopped,
            Some(Mute::On),
            Established,
            Stopped,
            Some(Mute::Off),
        ),
        (
            UnmuteCall,
            Established,
            Recording,
            Some(Mute::On),
            Established,
            Recording,
            Some(Mute::Off),
        ),
        (
            UnmuteCall,
            Established,
            Paused,
            Some(Mute::On),
            Established,
            Paused,
            Some(Mute::Off),
        ),
        (
            StartCallRecording,
            Established,
            Stopped,
            None,
            Established,
            Recording,
            None,
        ),
        (
            PauseCallRecording,
            Established,
            Recording,
            None,
            Established,
            Paused,
            None,
        ),
        (
            ResumeCallRecording,
            Established,
            Paused,
            None,
            Established,
            Recording,
            None,
        ),
        (
            StopCallRecording,
            Established,
            Recording,
            None,
            Established,
            Stopped,
            None,
        ),
        (
            StopCallRecording,
            Established,
            Paused,
            None,
            Established,
            Stopped,
            None,
        ),
        (
            StopCallRecording,
            Held,
            Recording,
            None,
            Held,
            Stopped,
            None,
        ),
        (StopCallRecording, Held, Paused, None, Held, Stopped, None),
    ];

    /// States a leg can actually be in: recording only ever runs while Established or Held,
    /// mute is On only while Established or Held.
    fn reachable(l: LegState) -> bool {
        (l.rec == Stopped || matches!(l.state, Established | Held))
            && (l.mute == Mute::Off || matches!(l.state, Established | Held))
    }

    fn all_legs() -> impl Iterator<Item = LegState> {
        CallState::ALL.into_iter().flat_map(|s| {
            RecordingState::ALL
                .into_iter()
                .flat_map(move |r| [Mute::Off, Mute::On].map(|m| leg(s, r, m)))
        })
    }

    #[test]
    fn every_transition_is_allowed_or_refused_as_tabled() {
        let mut checked = 0;
        for op in Operation::ALL {
            for l in all_legs().filter(|l| reachable(*l)) {
                checked += 1;
                let expected = if op.is_user_data() {
                    (l.state != Released).then_some(l)
                } else {
                    ALLOWED
                        .iter()
                        .find(|(o, fs, fr, fm, ..)| {
                            *o == op
                                && *fs == l.state
                                && *fr == l.rec
                                && fm.is_none_or(|m| m == l.mute)
                        })
                        .map(|(_, _, _, _, ts, tr, tm)| leg(*ts, *tr, tm.unwrap_or(l.mute)))
                };
                assert_eq!(transition(l, op), expected, "{op:?} from {l:?}");
            }
        }
        // 5 states; Established and Held with 3 recording × 2 mute states, the rest 1.
        assert_eq!(checked, 16 * (3 + 2 * 6));
    }

    #[test]
    fn every_operation_has_exactly_one_row() {
        for op in Operation::ALL {
            assert_eq!(RULES.iter().filter(|r| r.op == op).count(), 1, "{op:?}");
            assert!(CAPABILITY_ORDER.contains(&op), "{op:?}");
        }
        assert_eq!(RULES.len(), Operation::ALL.len());
        let user_data: Vec<_> = Operation::ALL
            .into_iter()
            .filter(|o| o.is_user_data())
            .collect();
        assert_eq!(
            user_data,
            [
                AttachUserData,
                UpdateUserData,
                DeleteUserDataPair,
                DeleteUserData,
                SetCallDisposition
            ]
        );
        assert_eq!(SendDtmf.notification(), NotificationType::DtmfSent);
        assert_eq!(MuteCall.notification(), NotificationType::StatusChange);
        assert_eq!(
            SetCallDisposition.notification(),
            NotificationType::AttachedDataChanged
        );
    }

    #[test]
    fn capabilities_match_the_contract() {
        let c = |s, r, rec| capabilities(leg(s, r, Mute::Off), rec);
        let ud = [
            "UpdateUserData",
            "AttachUserData",
            "DeleteUserDataPair",
            "DeleteUserData",
            "SetCallDisposition",
        ];
        assert_eq!(
            c(Ringing, Stopped, true),
            vec![
                "Answer",
                "UpdateUserData",
                "AttachUserData",
                "DeleteUserDataPair",
                "DeleteUserData",
                "Hangup",
                "SetCallDisposition"
            ]
        );
        assert_eq!(
            c(Dialing, Stopped, true),
            vec![
                "UpdateUserData",
                "SendDtmf",
                "AttachUserData",
                "DeleteUserDataPair",
                "DeleteUserData",
                "Hangup",
                "SetCallDisposition"
            ]
        );
        // The seed's list, in the seed's order, without the transfer and conference names
        // (not implemented, so not listed: a listed operation must succeed), with mute and
        // disposition.
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
                "MuteCall",
                "SetCallDisposition",
                "PauseCallRecording",
                "StopCallRecording",
            ]
        );
        let muted = capabilities(leg(Established, Stopped, Mute::On), true);
        assert!(muted.contains(&"UnmuteCall") && !muted.contains(&"MuteCall"));
        assert!(!capabilities(leg(Held, Stopped, Mute::On), true).contains(&"UnmuteCall"));
        assert!(c(Established, Stopped, true).contains(&"StartCallRecording"));
        assert!(!c(Established, Stopped, false).contains(&"StartCallRecording"));
        let paused = c(Established, Paused, true);
        assert!(paused.contains(&"ResumeCallRecording") && paused.contains(&"StopCallRecording"));
        assert!(!paused.contains(&"PauseCallRecording") && !paused.contains(&"StartCallRecording"));
        let held = c(Held, Recording, true);
        assert!(held.contains(&"Retrieve") && held.contains(&"StopCallRecording"));
        assert!(!held.contains(&"PauseCallRecording") && !held.contains(&"SendDtmf"));
        assert!(!held.contains(&"MuteCall"));
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
        for l in all_legs() {
            for rec in [false, true] {
                let caps = capabilities(l, rec);
                for op in Operation::ALL {
                    let accepted = (rec || !op.is_recording()) && transition(l, op).is_some();
                    assert_eq!(caps.contains(&op.name()), accepted, "{op:?} {l:?} {rec}");
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
