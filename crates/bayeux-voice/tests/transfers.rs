//! Transfers and conferences: the contract's worked table, case by case. agent1 (15000) is on
//! call C with agent2 (15001), both `Established`; the destination is agent3 (15002). Every
//! user gets exactly the tabled notifications, in order, and nothing else.

mod common;

use common::Harness;
use serde_json::{Value, json};

/// A connected call agent1 → agent2; returns its id, inboxes drained.
async fn connected(h: &Harness) -> String {
    let id = h.dial_id("agent1", "15001").await;
    h.op("agent2", &id, json!({"operationName": "Answer"}))
        .await
        .expect(200, 0);
    h.drain();
    id
}

/// `(notificationType, call id, state, participants)` of each notification.
fn digest(ns: &[Value]) -> Vec<(String, String, String, Vec<String>)> {
    ns.iter()
        .map(|n| {
            (
                n["notificationType"].as_str().unwrap().to_owned(),
                n["call"]["id"].as_str().unwrap().to_owned(),
                n["call"]["state"].as_str().unwrap().to_owned(),
                n["call"]["participants"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| p["phoneNumber"].as_str().unwrap().to_owned())
                    .collect(),
            )
        })
        .collect()
}

fn d(kind: &str, call: &str, state: &str, parts: &[&str]) -> (String, String, String, Vec<String>) {
    (
        kind.into(),
        call.into(),
        state.into(),
        parts.iter().map(|s| s.to_string()).collect(),
    )
}

fn caps(n: &Value) -> Vec<String> {
    n["call"]["capabilities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn single_step_transfer() {
    let h = Harness::demo();
    let c = connected(&h).await;
    h.op(
        "agent1",
        &c,
        json!({"operationName": "SingleStepTransfer", "destination": {"phoneNumber": "15002"},
               "userData": {"reason": "sales"}, "location": "ignored"}),
    )
    .await
    .expect(200, 0);
    let a1 = h.inbox("agent1").take();
    let a2 = h.inbox("agent2").take();
    let a3 = h.inbox("agent3").take();
    // A notification carries the call as it is once the operation is done; a released leg
    // keeps the participants it had when it left (agent3 had joined by then).
    assert_eq!(
        digest(&a1),
        [d("StatusChange", &c, "Released", &["15001", "15002"])]
    );
    assert_eq!(
        digest(&a2),
        [d("ParticipantsUpdated", &c, "Established", &["15002"])]
    );
    assert_eq!(digest(&a3), [d("StatusChange", &c, "Ringing", &["15001"])]);
    // The userData came with the operation's notifications.
    assert_eq!(a2[0]["call"]["userData"]["reason"], "sales");
    assert_eq!(a3[0]["call"]["userData"]["reason"], "sales");
    assert_eq!(a3[0]["call"]["callType"], "Internal");
    assert_eq!(a3[0]["call"]["dnis"], "15002");
    h.op("agent3", &c, json!({"operationName": "Answer"}))
        .await
        .expect(200, 0);
    assert_eq!(
        digest(&h.inbox("agent3").take()),
        [d("StatusChange", &c, "Established", &["15001"])]
    );
    assert_eq!(h.pending(), 0, "agent2 hears nothing of the answer");
    // agent1 is off the call: no more operations, not in its list.
    h.op("agent1", &c, json!({"operationName": "Hangup"}))
        .await
        .expect(400, 2);
    let mine = h.get("agent1", "/api/v2/me/calls").await;
    assert_eq!(mine.json["calls"], json!([]));
}

#[tokio::test]
async fn single_step_conference_then_remove_and_hangup() {
    let h = Harness::demo();
    let c = connected(&h).await;
    h.op(
        "agent1",
        &c,
        json!({"operationName": "SingleStepConference", "destination": {"phoneNumber": "15002"}}),
    )
    .await
    .expect(200, 0);
    let a1 = h.inbox("agent1").take();
    assert_eq!(
        digest(&a1),
        [d(
            "ParticipantsUpdated",
            &c,
            "Established",
            &["15001", "15002"]
        )]
    );
    assert!(caps(&a1[0]).contains(&"RemoveParticipantFromConference".to_owned()));
    assert_eq!(
        digest(&h.inbox("agent2").take()),
        [d(
            "ParticipantsUpdated",
            &c,
            "Established",
            &["15000", "15002"]
        )]
    );
    let a3 = h.inbox("agent3").take();
    assert_eq!(
        digest(&a3),
        [d("StatusChange", &c, "Ringing", &["15000", "15001"])]
    );
    // Only the owner may remove.
    h.op(
        "agent2",
        &c,
        json!({"operationName": "RemoveParticipantFromConference", "participant": "15002"}),
    )
    .await
    .expect(400, 2);
    // Not a party: refused.
    h.op(
        "agent1",
        &c,
        json!({"operationName": "RemoveParticipantFromConference", "participant": "19999"}),
    )
    .await
    .expect(400, 2);
    assert_eq!(h.pending(), 0);
    h.op(
        "agent1",
        &c,
        json!({"operationName": "RemoveParticipantFromConference", "participant": "15002"}),
    )
    .await
    .expect(200, 0);
    assert_eq!(
        digest(&h.inbox("agent1").take()),
        [d("ParticipantsUpdated", &c, "Established", &["15001"])]
    );
    assert_eq!(
        digest(&h.inbox("agent2").take()),
        [d("ParticipantsUpdated", &c, "Established", &["15000"])]
    );
    assert_eq!(
        digest(&h.inbox("agent3").take()),
        [d("StatusChange", &c, "Released", &["15000", "15001"])]
    );
    // Conference again, and this time agent3 hangs up itself.
    h.op(
        "agent1",
        &c,
        json!({"operationName": "SingleStepConference", "destination": {"phoneNumber": "15002"}}),
    )
    .await
    .expect(200, 0);
    h.drain();
    h.op("agent3", &c, json!({"operationName": "Answer"}))
        .await
        .expect(200, 0);
    h.drain();
    h.op("agent3", &c, json!({"operationName": "Hangup"}))
        .await
        .expect(200, 0);
    assert_eq!(
        digest(&h.inbox("agent1").take()),
        [d("ParticipantsUpdated", &c, "Established", &["15001"])]
    );
    assert_eq!(
        digest(&h.inbox("agent2").take()),
        [d("ParticipantsUpdated", &c, "Established", &["15000"])]
    );
    assert_eq!(digest(&h.inbox("agent3").take())[0].2, "Released");
}

/// InitiateTransfer or InitiateConference, then agent3 answers: the pair is connected.
async fn consult(h: &Harness, c: &str, op: &str) -> String {
    h.op(
        "agent1",
        c,
        json!({"operationName": op, "destination": {"phoneNumber": "15002"}, "userData": {"k": 1}}),
    )
    .await
    .expect(200, 0);
    let a1 = h.inbox("agent1").take();
    assert_eq!(a1.len(), 2, "{a1:?}");
    let k = a1[1]["call"]["id"].as_str().unwrap().to_owned();
    assert_ne!(k, c);
    assert_eq!(
        digest(&a1),
        [
            d("StatusChange", c, "Held", &["15001"]),
            d("StatusChange", &k, "Dialing", &["15002"])
        ]
    );
    // Held with the pair not connected: Hangup and user data only.
    assert!(
        !caps(&a1[0]).contains(&"Retrieve".to_owned()),
        "{:?}",
        caps(&a1[0])
    );
    assert_eq!(a1[1]["call"]["callType"], "Consult");
    assert_eq!(a1[1]["call"]["parentCallPath"], format!("/calls/{c}"));
    assert!(
        a1[1]["call"]["parentCallUri"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/api/v2/me/calls/{c}"))
    );
    assert_eq!(a1[1]["call"]["userData"]["k"], 1);
    assert_eq!(h.inbox("agent2").len(), 0);
    let a3 = h.inbox("agent3").take();
    assert_eq!(digest(&a3), [d("StatusChange", &k, "Ringing", &["15000"])]);
    assert_eq!(a3[0]["call"]["callType"], "Consult");
    assert!(a3[0]["call"].get("parentCallUri").is_none());
    h.op("agent3", &k, json!({"operationName": "Answer"}))
        .await
        .expect(200, 0);
    let a1 = h.inbox("agent1").take();
    assert_eq!(
        digest(&a1),
        [d("StatusChange", &k, "Established", &["15002"])]
    );
    let listed = caps(&a1[0]);
    for op in ["SwapCalls", "CompleteTransfer", "CompleteConference"] {
        assert!(listed.contains(&op.to_owned()), "{listed:?}");
    }
    assert!(!listed.contains(&"Hold".to_owned()));
    assert_eq!(
        digest(&h.inbox("agent3").take()),
        [d("StatusChange", &k, "Established", &["15000"])]
    );
    assert_eq!(h.pending(), 0);
    k
}

#[tokio::test]
async fn initiate_and_complete_transfer() {
    let h = Harness::demo();
    let c = connected(&h).await;
    // agent1 records its consultation leg; that recording stops when agent1 leaves.
    let k = consult(&h, &c, "InitiateTransfer").await;
    h.op("agent1", &k, json!({"operationName": "StartCallRecording"}))
        .await
        .expect(200, 0);
    h.drain();
    // A consultCallUri that names another call is refused.
    h.op(
        "agent1",
        &c,
        json!({"operationName": "CompleteTransfer", "consultCallUri": format!("/calls/{c}")}),
    )
    .await
    .expect(400, 2);
    assert_eq!(h.pending(), 0);
    h.op(
        "agent1",
        &c,
        json!({"operationName": "CompleteTransfer", "consultCallUri": format!("http://x/api/v2/me/calls/{k}")}),
    )
    .await
    .expect(200, 0);
    assert_eq!(
        digest(&h.inbox("agent1").take()),
        [
            d("StatusChange", &c, "Released", &["15001", "15002"]),
            d("StatusChange", &k, "Released", &["15002"])
        ]
    );
    assert_eq!(
        digest(&h.inbox("agent2").take()),
        [d("ParticipantsUpdated", &c, "Established", &["15002"])]
    );
    let a3 = h.inbox("agent3").take();
    assert_eq!(
        digest(&a3),
        [
            d("StatusChange", &k, "Released", &["15000"]),
            d("ParticipantsUpdated", &c, "Established", &["15001"])
        ]
    );
    assert_eq!(a3[1]["call"]["callType"], "Internal");
    // agent1's recording was its own leg's: it stopped when it left.
    let k1 = h.call("agent1", &k).await;
    assert_eq!(k1["recordingState"], "Stopped");
    // agent2 and agent3 now talk on C; when agent3 hangs up, both released legs keep showing
    // the other party.
    h.op("agent3", &c, json!({"operationName": "Hangup"}))
        .await
        .expect(200, 0);
    assert_eq!(
        digest(&h.inbox("agent2").take()),
        [d("StatusChange", &c, "Released", &["15002"])]
    );
    assert_eq!(
        digest(&h.inbox("agent3").take()),
        [d("StatusChange", &c, "Released", &["15001"])]
    );
}

#[tokio::test]
async fn initiate_and_complete_conference() {
    let h = Harness::demo();
    let c = connected(&h).await;
    let k = consult(&h, &c, "InitiateConference").await;
    // agent3 mutes its leg of K; the mute moves with the leg onto C.
    h.op("agent3", &k, json!({"operationName": "MuteCall"}))
        .await
        .expect(200, 0);
    h.drain();
    h.op("agent1", &k, json!({"operationName": "CompleteConference"}))
        .await
        .expect(200, 0);
    let a1 = h.inbox("agent1").take();
    assert_eq!(
        digest(&a1),
        [
            d("StatusChange", &k, "Released", &["15002"]),
            d("StatusChange", &c, "Established", &["15001", "15002"]),
            d(
                "ParticipantsUpdated",
                &c,
                "Established",
                &["15001", "15002"]
            )
        ]
    );
    assert!(caps(&a1[2]).contains(&"RemoveParticipantFromConference".to_owned()));
    assert_eq!(
        digest(&h.inbox("agent2").take()),
        [d(
            "ParticipantsUpdated",
            &c,
            "Established",
            &["15000", "15002"]
        )]
    );
    let a3 = h.inbox("agent3").take();
    assert_eq!(
        digest(&a3),
        [
            d("StatusChange", &k, "Released", &["15000"]),
            d(
                "ParticipantsUpdated",
                &c,
                "Established",
                &["15000", "15001"]
            )
        ]
    );
    // The moved leg kept its mute.
    assert_eq!(a3[1]["call"]["mute"], "On");
}

#[tokio::test]
async fn swap_calls() {
    let h = Harness::demo();
    let c = connected(&h).await;
    let k = consult(&h, &c, "InitiateTransfer").await;
    h.op(
        "agent1",
        &c,
        json!({"operationName": "SwapCalls", "otherCallUri": format!("/calls/{c}")}),
    )
    .await
    .expect(400, 2);
    h.op(
        "agent1",
        &c,
        json!({"operationName": "SwapCalls", "otherCallUri": format!("/calls/{k}")}),
    )
    .await
    .expect(200, 0);
    assert_eq!(
        digest(&h.inbox("agent1").take()),
        [
            d("StatusChange", &k, "Held", &["15002"]),
            d("StatusChange", &c, "Established", &["15001"])
        ]
    );
    assert_eq!(h.pending(), 0, "the other parties hear nothing");
    // Either call of the pair completes.
    h.op("agent1", &k, json!({"operationName": "CompleteTransfer"}))
        .await
        .expect(200, 0);
    assert_eq!(
        h.inbox("agent2").take()[0]["notificationType"],
        "ParticipantsUpdated"
    );
}

#[tokio::test]
async fn consultation_ends_when_the_consulted_party_hangs_up() {
    let h = Harness::demo();
    let c = connected(&h).await;
    let k = consult(&h, &c, "InitiateTransfer").await;
    h.op("agent3", &k, json!({"operationName": "Hangup"}))
        .await
        .expect(200, 0);
    h.drain();
    // The pair is over: agent1 can retrieve C, and may not complete.
    let c1 = h.call("agent1", &c).await;
    let listed: Vec<&str> = c1["capabilities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        listed.contains(&"Retrieve") && !listed.contains(&"CompleteTransfer"),
        "{listed:?}"
    );
    h.op("agent1", &c, json!({"operationName": "CompleteTransfer"}))
        .await
        .expect(400, 2);
    h.op("agent1", &c, json!({"operationName": "Retrieve"}))
        .await
        .expect(200, 0);
}

#[tokio::test]
async fn bad_destinations_and_parameters() {
    let h = Harness::demo();
    let c = connected(&h).await;
    for (body, http, code) in [
        (json!({"operationName": "SingleStepTransfer"}), 400, 1),
        (
            json!({"operationName": "SingleStepTransfer", "destination": {}}),
            400,
            1,
        ),
        (
            json!({"operationName": "SingleStepTransfer", "destination": {"phoneNumber": "15000"}}),
            400,
            2,
        ),
        (
            json!({"operationName": "InitiateConference", "destination": {"phoneNumber": "15001"}}),
            400,
            2,
        ),
        (
            json!({"operationName": "InitiateTransfer", "destination": {"phoneNumber": "15002"}, "userData": 1}),
            400,
            1,
        ),
        (
            json!({"operationName": "RemoveParticipantFromConference"}),
            400,
            1,
        ),
        (
            json!({"operationName": "SwapCalls", "otherCallUri": 5}),
            400,
            1,
        ),
        (json!({"operationName": "CompleteTransfer"}), 400, 2),
    ] {
        h.op("agent1", &c, body.clone()).await.expect(http, code);
    }
    assert_eq!(h.pending(), 0);
}

#[tokio::test]
async fn external_destinations_connect_at_once_or_answer_later() {
    let h = Harness::demo();
    let c = connected(&h).await;
    // A single-step conference to an outside number connects at once.
    h.op(
        "agent1",
        &c,
        json!({"operationName": "SingleStepConference", "destination": {"phoneNumber": "5550100"}}),
    )
    .await
    .expect(200, 0);
    assert_eq!(
        digest(&h.inbox("agent1").take()),
        [d(
            "ParticipantsUpdated",
            &c,
            "Established",
            &["15001", "5550100"]
        )]
    );
    h.drain();
    // A consultation to an outside number: the far end answers (here through the control).
    let c2 = h.dial_id("agent3", "15001").await;
    h.op("agent2", &c2, json!({"operationName": "Answer"}))
        .await
        .expect(200, 0);
    h.drain();
    h.op(
        "agent3",
        &c2,
        json!({"operationName": "InitiateTransfer", "destination": {"phoneNumber": "5550111"}}),
    )
    .await
    .expect(200, 0);
    let k = h.inbox("agent3").take()[1]["call"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    h.api.call_control().far_end_answered(&k).unwrap();
    assert_eq!(
        digest(&h.inbox("agent3").take()),
        [d("StatusChange", &k, "Established", &["5550111"])]
    );
    h.op("agent3", &k, json!({"operationName": "CompleteTransfer"}))
        .await
        .expect(200, 0);
    let a2 = h.inbox("agent2").take();
    assert_eq!(
        digest(&a2),
        [d("ParticipantsUpdated", &c2, "Established", &["5550111"])]
    );
    assert_eq!(a2[0]["call"]["callType"], "Internal");
}
