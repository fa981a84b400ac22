//! The state machine through the REST API: every operation from every reachable leg state.
//! Allowed ones answer statusCode 0 and publish exactly the tabled notifications; refused ones
//! answer HTTP 400 / statusCode 2, change nothing and publish nothing.

mod common;

use bayeux_voice::model::{Effect, capabilities, rule, transition};
use bayeux_voice::{CallState, LegState, Mute, Operation, RecordingState};
use common::{Harness, summary};
use serde_json::{Value, json};

/// Brings a fresh internal call agent1 → agent2 into `state`/`rec` for the acting user and
/// returns `(call id, actor, peer)`.
async fn reach(h: &Harness, leg: LegState) -> (String, &'static str, &'static str) {
    let LegState {
        state, rec, mute, ..
    } = leg;
    let id = h.dial_id("agent1", "15001").await;
    if state == CallState::Ringing {
        h.drain();
        return (id, "agent2", "agent1");
    }
    if state != CallState::Dialing {
        h.op("agent2", &id, json!({"operationName": "Answer"}))
            .await
            .expect(200, 0);
    }
    if matches!(rec, RecordingState::Recording | RecordingState::Paused)
        || state == CallState::Released
    {
        h.op(
            "agent1",
            &id,
            json!({"operationName": "StartCallRecording"}),
        )
        .await
        .expect(200, 0);
    }
    if rec == RecordingState::Paused {
        h.op(
            "agent1",
            &id,
            json!({"operationName": "PauseCallRecording"}),
        )
        .await
        .expect(200, 0);
    }
    if mute == Mute::On {
        h.op("agent1", &id, json!({"operationName": "MuteCall"}))
            .await
            .expect(200, 0);
    }
    match state {
        CallState::Held => h
            .op("agent1", &id, json!({"operationName": "Hold"}))
            .await
            .expect(200, 0),
        CallState::Released => h
            .op("agent1", &id, json!({"operationName": "Hangup"}))
            .await
            .expect(200, 0),
        _ => {}
    }
    h.drain();
    (id, "agent1", "agent2")
}

fn body(op: Operation) -> Value {
    let mut b = json!({"operationName": op.name()});
    match op {
        Operation::AttachUserData | Operation::UpdateUserData => b["userData"] = json!({"k": "v"}),
        Operation::DeleteUserDataPair => b["key"] = json!("k"),
        Operation::SendDtmf => b["digits"] = json!("123#"),
        Operation::SetCallDisposition => b["disposition"] = json!("Sale"),
        Operation::SingleStepTransfer
        | Operation::SingleStepConference
        | Operation::InitiateTransfer
        | Operation::InitiateConference => b["destination"] = json!({"phoneNumber": "15002"}),
        Operation::RemoveParticipantFromConference => b["participant"] = json!("15001"),
        _ => {}
    }
    b
}

fn without_duration(mut v: Value) -> Value {
    v.as_object_mut().unwrap().remove("duration");
    v
}

fn name<T: std::fmt::Debug>(v: T) -> String {
    format!("{v:?}")
}

const REACHABLE: [(CallState, RecordingState, Mute); 11] = [
    (CallState::Dialing, RecordingState::Stopped, Mute::Off),
    (CallState::Ringing, RecordingState::Stopped, Mute::Off),
    (CallState::Established, RecordingState::Stopped, Mute::Off),
    (CallState::Established, RecordingState::Recording, Mute::Off),
    (CallState::Established, RecordingState::Paused, Mute::Off),
    (CallState::Established, RecordingState::Recording, Mute::On),
    (CallState::Held, RecordingState::Stopped, Mute::Off),
    (CallState::Held, RecordingState::Recording, Mute::Off),
    (CallState::Held, RecordingState::Paused, Mute::Off),
    (CallState::Held, RecordingState::Stopped, Mute::On),
    (CallState::Released, RecordingState::Stopped, Mute::Off),
];

#[tokio::test]
async fn every_operation_from_every_state() {
    let (mut allowed, mut refused) = (0, 0);
    for (state, rec, mute) in REACHABLE {
        let leg = LegState {
            rec,
            mute,
            ..LegState::new(state)
        };
        for op in Operation::ALL {
            let h = Harness::demo();
            let (id, actor, peer) = reach(&h, leg).await;
            let before = (h.call(actor, &id).await, h.call(peer, &id).await);
            assert_eq!(before.0["state"], name(state), "setup {state:?}/{rec:?}");
            assert_eq!(
                before.0["recordingState"],
                name(rec),
                "setup {state:?}/{rec:?}"
            );
            assert_eq!(before.0["mute"], name(mute), "setup {leg:?}");
            let r = h.op(actor, &id, body(op)).await;
            let case = format!("{op:?} from {leg:?}");
            let Some(next_leg) = transition(leg, op) else {
                refused += 1;
                r.expect(400, 2);
                assert_eq!(h.pending(), 0, "{case}: a refused operation published");
                let after = (h.call(actor, &id).await, h.call(peer, &id).await);
                assert_eq!(
                    without_duration(after.0),
                    without_duration(before.0),
                    "{case}"
                );
                assert_eq!(
                    without_duration(after.1),
                    without_duration(before.1),
                    "{case}"
                );
                continue;
            };
            allowed += 1;
            r.expect(200, 0);
            if !matches!(
                rule(op).effect,
                Effect::Leg | Effect::UserData | Effect::Answer | Effect::Release
            ) {
                // Operations that move parties: tests/transfers.rs checks their effects.
                continue;
            }
            let (next, next_rec) = (next_leg.state, next_leg.rec);
            let call = h.call(actor, &id).await;
            assert_eq!(call["state"], name(next), "{case}");
            assert_eq!(call["recordingState"], name(next_rec), "{case}");
            assert_eq!(call["mute"], name(next_leg.mute), "{case}");
            let caps: Vec<String> = capabilities(next_leg, true)
                .iter()
                .map(|s| s.to_string())
                .collect();
            assert_eq!(call["capabilities"], json!(caps), "{case}");
            let mine = h.inbox(actor).take();
            let theirs = h.inbox(peer).take();
            assert_eq!(h.inbox("agent3").len(), 0, "{case}: bystander notified");
            let (n_mine, n_theirs, kind) = match op {
                Operation::SendDtmf => (1, 0, "DtmfSent"),
                Operation::Answer => (1, 1, "StatusChange"),
                Operation::Hangup => (1, 1, "StatusChange"),
                Operation::Hold
                | Operation::Retrieve
                | Operation::MuteCall
                | Operation::UnmuteCall => (1, 0, "StatusChange"),
                o if o.is_recording() => (1, 0, "CallRecordingStateChange"),
                _ => (1, 1, "AttachedDataChanged"),
            };
            assert_eq!(
                (mine.len(), theirs.len()),
                (n_mine, n_theirs),
                "{case}: {mine:?} {theirs:?}"
            );
            if let Some(n) = mine.first() {
                assert_eq!(
                    summary(n),
                    (kind.to_owned(), name(next), name(next_rec)),
                    "{case}"
                );
                assert_eq!(
                    without_duration(n["call"].clone()),
                    without_duration(call),
                    "{case}"
                );
            }
            if let Some(n) = theirs.first() {
                assert_eq!(n["notificationType"], kind, "{case}");
                assert_eq!(
                    n["phoneNumber"],
                    if peer == "agent1" { "15000" } else { "15001" }
                );
            }
        }
    }
    assert_eq!(allowed + refused, 11 * 24);
    // Per leg (counted by hand from the contract's tables): Dialing 7 (Hangup, SendDtmf, 5
    // user-data), Ringing 7 (Answer, Hangup, 5), Released 0; Established/Off: Hold, Hangup,
    // SendDtmf, MuteCall, 5, plus 1 (Stopped: Start) or 2 (Pause or Resume, and Stop) = 10, 11,
    // 11, and Established/Recording/On 11 (UnmuteCall instead of MuteCall); Held: Retrieve,
    // Hangup, 5, plus Stop when recording = 7, 8, 8, and Held/Stopped/On 7; plus the four
    // single-step and initiate operations on each of the four Established legs.
    assert_eq!(
        allowed,
        7 + 7 + 10 + 11 + 11 + 11 + 7 + 8 + 8 + 7 + 4 * 4,
        "allowed transitions"
    );
}

#[tokio::test]
async fn recording_operations_are_invalid_without_the_feature() {
    let h = Harness::demo();
    // agent3 (no recording feature) calls agent1; both established.
    let id = h.dial_id("agent3", "15000").await;
    h.op("agent1", &id, json!({"operationName": "Answer"}))
        .await
        .expect(200, 0);
    h.drain();
    let call = h.call("agent3", &id).await;
    assert!(call.get("recordingState").is_none(), "{call}");
    assert!(
        !call["capabilities"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c.as_str().unwrap().contains("Recording"))
    );
    for op in [
        Operation::StartCallRecording,
        Operation::PauseCallRecording,
        Operation::ResumeCallRecording,
        Operation::StopCallRecording,
    ] {
        h.op("agent3", &id, body(op)).await.expect(400, 2);
    }
    let device = h.device_of("agent3");
    h.post(
        "agent3",
        &format!("/api/v2/me/devices/{device}"),
        json!({"operationName": "StopCallRecording"}),
    )
    .await
    .expect(400, 2);
    assert_eq!(h.pending(), 0);
    // The other party, who has the feature, records its own leg; agent3 hears nothing of it.
    h.op(
        "agent1",
        &id,
        json!({"operationName": "StartCallRecording"}),
    )
    .await
    .expect(200, 0);
    assert_eq!(h.inbox("agent3").len(), 0);
    assert_eq!(h.inbox("agent1").take().len(), 1);
    let view3 = h.call("agent3", &id).await;
    assert!(view3.get("userData").is_none(), "{view3}");
}
