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
    /// From outside to a user, or a user joining a call that has an external party.
    Inbound,
    /// A consultation call (InitiateTransfer / InitiateConference), every leg of it.
    Consult,
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
    /// The leg's `participants` changed (a party joined or left) while its state did not.
    ParticipantsUpdated,
}

/// Where a leg stands in its user's consultation pair (a call C and the consultation call K
/// made from it by InitiateTransfer or InitiateConference).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Pair {
    /// The user has no consultation pair.
    None,
    /// The user has a consultation pair, made of other calls.
    Elsewhere,
    /// In a pair whose consultation leg is still `Dialing`.
    Pending,
    /// In a pair whose consultation leg has left `Dialing`.
    Connected,
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
    /// The leg's place in its user's consultation pair.
    pub pair: Pair,
    /// Whether the user owns the call (made it a conference) and at least two other parties
    /// are on it, so that one can be removed.
    pub can_remove: bool,
}

impl LegState {
    /// A new leg in `state`: not recording, not muted, in no pair, owning nothing.
    pub fn new(state: CallState) -> LegState {
        LegState {
            state,
            rec: RecordingState::Stopped,
            mute: Mute::Off,
            pair: Pair::None,
            can_remove: false,
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
    /// Hand the call to `destination` and leave it.
    SingleStepTransfer,
    /// Add `destination` to the call; the requester becomes its owner.
    SingleStepConference,
    /// Hold the call and make a consultation call to `destination`.
    InitiateTransfer,
    /// Hold the call and make a consultation call to `destination`.
    InitiateConference,
    /// Join the consulted parties to the held call and leave both calls.
    CompleteTransfer,
    /// Join the consulted parties to the held call and take it back, as its owner.
    CompleteConference,
    /// Hold the active call of the pair and take the held one back.
    SwapCalls,
    /// The owner removes a party (`participant`) from a conference.
    RemoveParticipantFromConference,
}

impl Operation {
    /// Every operation, for table tests.
    pub const ALL: [Operation; 24] = [
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
        Operation::SingleStepTransfer,
        Operation::SingleStepConference,
        Operation::InitiateTransfer,
        Operation::InitiateConference,
        Operation::CompleteTransfer,
        Operation::CompleteConference,
        Operation::SwapCalls,
        Operation::RemoveParticipantFromConference,
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
            Operation::SingleStepTransfer => "SingleStepTransfer",
            Operation::SingleStepConference => "SingleStepConference",
            Operation::InitiateTransfer => "InitiateTransfer",
            Operation::InitiateConference => "InitiateConference",
            Operation::CompleteTransfer => "CompleteTransfer",
            Operation::CompleteConference => "CompleteConference",
            Operation::SwapCalls => "SwapCalls",
            Operation::RemoveParticipantFromConference => "RemoveParticipantFromConference",
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
    /// `destination` joins the call; with `conference: false` the requester leaves it.
    SingleStep {
        /// Conference (the requester stays, as owner) or transfer (the requester leaves).
        conference: bool,
    },
    /// The requester's leg is held and a consultation call to `destination` starts.
    Initiate,
    /// The consulted parties move onto the held call; with `conference: false` the requester
    /// leaves both calls, else it takes the held call back as its owner.
    Complete {
        /// Conference or transfer.
        conference: bool,
    },
    /// The two calls of the pair swap `Established` and `Held`.
    Swap,
    /// A party (`participant`) leaves the call.
    RemoveParticipant,
}

/// One row of the state machine: when `op` is accepted (the requester's leg in one of
/// `states`, its recording in one of `recs`, its mute equal to `mute` when given, its pair in
/// one of `pairs`, owning the conference when `owner`), what the leg becomes, the
/// notification, and the effect on the rest of the call.
///
/// For the effects that move parties ([`Effect::Answer`], [`Effect::Release`],
/// [`Effect::SingleStep`], [`Effect::Initiate`], [`Effect::Complete`], [`Effect::Swap`],
/// [`Effect::RemoveParticipant`]) `notification` is `StatusChange` and the notifications
/// follow one rule for every leg the operation touches, in order: a `StatusChange` if its
/// state or mute changed (a new leg counts as changed), then a `ParticipantsUpdated` if its
/// participants changed (not for a new or released leg).
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
    /// The pair states the requester's leg may be in.
    pub pairs: &'static [Pair],
    /// Whether the requester must be able to remove a party ([`LegState::can_remove`]).
    pub owner: bool,
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
const ANY_PAIR: &[Pair] = &[Pair::None, Pair::Elsewhere, Pair::Pending, Pair::Connected];
/// The leg's call is in no consultation pair of its user.
const NO_PAIR: &[Pair] = &[Pair::None, Pair::Elsewhere];
/// The user has no consultation pair at all (one consultation at a time).
const NO_PAIR_AT_ALL: &[Pair] = &[Pair::None];
const CONNECTED: &[Pair] = &[Pair::Connected];

/// A row that changes nothing but what is given.
const fn row(op: Operation, states: &'static [CallState], notification: NotificationType) -> Rule {
    Rule {
        op,
        states,
        recs: ANY_REC,
        mute: None,
        pairs: ANY_PAIR,
        owner: false,
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
pub const RULES: [Rule; 24] = {
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
        // One consultation at a time: within a pair, SwapCalls replaces Hold and Retrieve.
        Rule {
            next_state: Next::To(Held),
            pairs: NO_PAIR,
            ..row(O::Hold, ESTABLISHED, StatusChange)
        },
        Rule {
            next_state: Next::To(Established),
            pairs: NO_PAIR,
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
        Rule {
            pairs: NO_PAIR,
            effect: Effect::SingleStep { conference: false },
            ..row(O::SingleStepTransfer, ESTABLISHED, StatusChange)
        },
        Rule {
            pairs: NO_PAIR,
            effect: Effect::SingleStep { conference: true },
            ..row(O::SingleStepConference, ESTABLISHED, StatusChange)
        },
        Rule {
            pairs: NO_PAIR_AT_ALL,
            next_state: Next::To(Held),
            effect: Effect::Initiate,
            ..row(O::InitiateTransfer, ESTABLISHED, StatusChange)
        },
        Rule {
            pairs: NO_PAIR_AT_ALL,
            next_state: Next::To(Held),
            effect: Effect::Initiate,
            ..row(O::InitiateConference, ESTABLISHED, StatusChange)
        },
        Rule {
            pairs: CONNECTED,
            effect: Effect::Complete { conference: false },
            ..row(O::CompleteTransfer, &[Established, Held], StatusChange)
        },
        Rule {
            pairs: CONNECTED,
            effect: Effect::Complete { conference: true },
            ..row(O::CompleteConference, &[Established, Held], StatusChange)
        },
        Rule {
            pairs: CONNECTED,
            effect: Effect::Swap,
            ..row(O::SwapCalls, &[Established, Held], StatusChange)
        },
        Rule {
            pairs: NO_PAIR,
            owner: true,
            effect: Effect::RemoveParticipant,
            ..row(
                O::RemoveParticipantFromConference,
                ESTABLISHED,
                StatusChange,
            )
        },
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
        && r.mute.is_none_or(|m| m == leg.mute)
        && r.pairs.contains(&leg.pair)
        && (!r.owner || leg.can_remove);
    accepted.then(|| LegState {
        state: r.next_state.apply(leg.state),
        rec: r.next_rec.apply(leg.rec),
        mute: r.next_mute.apply(leg.mute),
        ..leg
    })
}

/// The operations in the order GWS lists them in `capabilities` (the seed's order, GWS's other
/// names after it).
const CAPABILITY_ORDER: [Operation; 24] = [
    Operation::Answer,
    Operation::UpdateUserData,
    Operation::SendDtmf,
    Operation::InitiateConference,
    Operation::Hold,
    Operation::Retrieve,
    Operation::SingleStepTransfer,
    Operation::InitiateTransfer,
    Operation::AttachUserData,
    Operation::DeleteUserDataPair,
    Operation::SingleStepConference,
    Operation::DeleteUserData,
    Operation::Hangup,
    Operation::CompleteTransfer,
    Operation::CompleteConference,
    Operation::SwapCalls,
    Operation::RemoveParticipantFromConference,
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
        LegState {
            rec,
            mute,
            ..LegState::new(state)
        }
    }

    /// Every allowed transition of the non-user-data operations for a leg in no consultation
    /// pair that cannot remove a party, written out by hand (not from the table): `(op, from,
    /// rec, mute, to, rec', mute')`; anything not listed is refused. `None` for mute: any mute,
    /// unchanged.
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
        (
            SingleStepTransfer,
            Established,
            Stopped,
            None,
            Established,
            Stopped,
            None,
        ),
        (
            SingleStepTransfer,
            Established,
            Recording,
            None,
            Established,
            Recording,
            None,
        ),
        (
            SingleStepTransfer,
            Established,
            Paused,
            None,
            Established,
            Paused,
            None,
        ),
        (
            SingleStepConference,
            Established,
            Stopped,
            None,
            Established,
            Stopped,
            None,
        ),
        (
            SingleStepConference,
            Established,
            Recording,
            None,
            Established,
            Recording,
            None,
        ),
        (
            SingleStepConference,
            Established,
            Paused,
            None,
            Established,
            Paused,
            None,
        ),
        (
            InitiateTransfer,
            Established,
            Stopped,
            None,
            Held,
            Stopped,
            None,
        ),
        (
            InitiateTransfer,
            Established,
            Recording,
            None,
            Held,
            Recording,
            None,
        ),
        (
            InitiateTransfer,
            Established,
            Paused,
            None,
            Held,
            Paused,
            None,
        ),
        (
            InitiateConference,
            Established,
            Stopped,
            None,
            Held,
            Stopped,
            None,
        ),
        (
            InitiateConference,
            Established,
            Recording,
            None,
            Held,
            Recording,
            None,
        ),
        (
            InitiateConference,
            Established,
            Paused,
            None,
            Held,
            Paused,
            None,
        ),
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
        assert_eq!(checked, 24 * (3 + 2 * 6));
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
        // The seed's list, in the seed's order, with mute and disposition.
        assert_eq!(
            c(Established, Recording, true),
            vec![
                "UpdateUserData",
                "SendDtmf",
                "InitiateConference",
                "Hold",
                "SingleStepTransfer",
                "InitiateTransfer",
                "AttachUserData",
                "DeleteUserDataPair",
                "SingleStepConference",
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

    /// The contract's table for legs in a consultation pair and for conference owners.
    #[test]
    fn capabilities_in_a_pair_and_for_the_owner() {
        let ud = [
            "UpdateUserData",
            "AttachUserData",
            "DeleteUserDataPair",
            "DeleteUserData",
            "SetCallDisposition",
        ];
        let with = |state, pair, can_remove| {
            let mut caps = capabilities(
                LegState {
                    pair,
                    can_remove,
                    ..LegState::new(state)
                },
                false,
            );
            caps.retain(|c| !ud.contains(c));
            caps
        };
        assert_eq!(with(Held, Pair::Pending, false), vec!["Hangup"]);
        assert_eq!(
            with(Dialing, Pair::Pending, false),
            vec!["SendDtmf", "Hangup"]
        );
        assert_eq!(
            with(Established, Pair::Connected, false),
            vec![
                "SendDtmf",
                "Hangup",
                "CompleteTransfer",
                "CompleteConference",
                "SwapCalls",
                "MuteCall"
            ]
        );
        assert_eq!(
            with(Held, Pair::Connected, false),
            vec![
                "Hangup",
                "CompleteTransfer",
                "CompleteConference",
                "SwapCalls"
            ]
        );
        assert!(with(Established, Pair::None, true).contains(&"RemoveParticipantFromConference"));
        assert!(!with(Established, Pair::None, false).contains(&"RemoveParticipantFromConference"));
        assert!(!with(Held, Pair::None, true).contains(&"RemoveParticipantFromConference"));
        // A user with a consultation pair elsewhere may not start a second one.
        let elsewhere = with(Established, Pair::Elsewhere, false);
        assert!(elsewhere.contains(&"Hold") && elsewhere.contains(&"SingleStepTransfer"));
        assert!(
            !elsewhere.contains(&"InitiateTransfer") && !elsewhere.contains(&"InitiateConference")
        );
    }

    #[test]
    fn capabilities_are_exactly_the_accepted_operations() {
        let contexts = [
            (Pair::None, false),
            (Pair::None, true),
            (Pair::Elsewhere, false),
            (Pair::Pending, false),
            (Pair::Connected, false),
        ];
        for l in all_legs().flat_map(|l| {
            contexts.map(|(pair, can_remove)| LegState {
                pair,
                can_remove,
                ..l
            })
        }) {
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
        assert_eq!(Operation::from_name("ClearCall"), None);
    }
}
