//! The test-control API under `/api/v2/test`: off by default (404/6), and when on: inbound
//! calls from outside, far-end answer / busy / release, and a reset of all state.

mod common;

use common::{Harness, config};
use serde_json::{Value, json};

fn with_test_control() -> Harness {
    let mut c = config(0);
    c.test_control = true;
    Harness::new(c)
}

fn digest(ns: &[Value]) -> Vec<(String, String)> {
    ns.iter()
        .map(|n| {
            (
                n["notificationType"].as_str().unwrap().to_owned(),
                n["call"]["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn off_by_default_every_path_is_not_found() {
    let h = Harness::demo();
    for path in [
        "/api/v2/test/calls",
        "/api/v2/test/calls/X",
        "/api/v2/test/reset",
    ] {
        h.post("agent1", path, json!({"from": "1", "to": "15000"}))
            .await
            .expect(404, 6);
        h.get("agent1", path).await.expect(404, 6);
    }
    assert!(format!("{:?}", h.api).contains("calls: 0"), "{:?}", h.api);
}

#[tokio::test]
async fn an_inbound_call_rings_the_user_with_its_user_data() {
    let h = with_test_control();
    let r = h
        .post(
            "agent3",
            "/api/v2/test/calls",
            json!({"from": "5551234", "to": "15001", "userData": {"account": "42"}}),
        )
        .await;
    r.expect(200, 0);
    let id = r.json["id"].as_str().unwrap().to_owned();
    let n = h.inbox("agent2").take();
    assert_eq!(digest(&n), [("StatusChange".into(), "Ringing".into())]);
    let call = &n[0]["call"];
    assert_eq!(call["id"], id.as_str());
    assert_eq!(call["callType"], "Inbound");
    assert_eq!(call["dnis"], "15001");
    assert_eq!(call["participants"][0]["phoneNumber"], "5551234");
    assert_eq!(call["userData"]["account"], "42");
    assert_eq!(h.pending(), 0, "only the called user hears of it");
    // The customer hangs up (the tester is not a party: any call id will do).
    h.op("agent2", &id, json!({"operationName": "Answer"}))
        .await
        .expect(200, 0);
    h.drain();
    h.post(
        "agent1",
        &format!("/api/v2/test/calls/{id}"),
        json!({"operationName": "FarEndRelease"}),
    )
    .await
    .expect(200, 0);
    let n = h.inbox("agent2").take();
    assert_eq!(digest(&n), [("StatusChange".into(), "Released".into())]);
    // A released leg keeps showing whom it talked to.
    assert_eq!(n[0]["call"]["participants"][0]["phoneNumber"], "5551234");
    // Released: nothing left to release.
    h.post(
        "agent1",
        &format!("/api/v2/test/calls/{id}"),
        json!({"operationName": "FarEndRelease"}),
    )
    .await
    .expect(400, 2);
}

#[tokio::test]
async fn far_end_answer_and_busy_of_outbound_calls() {
    let h = with_test_control();
    let a = h.dial_id("agent1", "5550001").await;
    let b = h.dial_id("agent1", "5550002").await;
    let h = &h;
    let far = |id: &str, op: &str| {
        let path = format!("/api/v2/test/calls/{id}");
        let body = json!({"operationName": op});
        async move { h.post("agent2", &path, body).await }
    };
    far(&a, "FarEndAnswer").await.expect(200, 0);
    assert_eq!(
        digest(&h.inbox("agent1").take()),
        [("StatusChange".into(), "Established".into())]
    );
    // Answered: neither answer nor busy again.
    far(&a, "FarEndAnswer").await.expect(400, 2);
    far(&a, "FarEndBusy").await.expect(400, 2);
    far(&b, "FarEndBusy").await.expect(200, 0);
    assert_eq!(
        digest(&h.inbox("agent1").take()),
        [("StatusChange".into(), "Released".into())]
    );
    // An internal call has no far end.
    let c = h.dial_id("agent1", "15001").await;
    far(&c, "FarEndAnswer").await.expect(400, 2);
    far(&c, "Explode").await.expect(400, 2);
    far("NOSUCHCALL", "FarEndAnswer").await.expect(404, 6);
    h.drain();
}

#[tokio::test]
async fn bad_requests() {
    let h = with_test_control();
    for (body, http, code) in [
        (json!({"to": "15001"}), 400, 1),
        (json!({"from": "5551234"}), 400, 1),
        (json!({"from": "", "to": "15001"}), 400, 1),
        (json!({"from": "5551234", "to": "19999"}), 404, 6),
        (json!({"from": "15000", "to": "15001"}), 400, 2),
        (
            json!({"from": "5551234", "to": "15001", "userData": 3}),
            400,
            1,
        ),
    ] {
        h.post("agent1", "/api/v2/test/calls", body.clone())
            .await
            .expect(http, code);
    }
    h.post("agent1", "/api/v2/test/calls/X", json!({}))
        .await
        .expect(400, 1);
    h.post("agent1", "/api/v2/test/reset", json!([1]))
        .await
        .expect(400, 1);
    assert_eq!(h.pending(), 0);
}

#[tokio::test]
async fn reset_releases_every_call_and_restores_every_device() {
    let h = with_test_control();
    let c = h.dial_id("agent1", "15001").await;
    h.op("agent2", &c, json!({"operationName": "Answer"}))
        .await
        .expect(200, 0);
    h.post(
        "agent3",
        "/api/v2/me/channels/voice",
        json!({"operationName": "NotReady", "reasonCode": "Break"}),
    )
    .await
    .expect(200, 0);
    h.drain();
    h.post("agent3", "/api/v2/test/reset", json!({}))
        .await
        .expect(200, 0);
    for u in ["agent1", "agent2"] {
        let n = h.inbox(u).take_on("/v2/me/calls");
        assert_eq!(
            digest(&n),
            [("StatusChange".into(), "Released".into())],
            "{u}"
        );
    }
    let d = h.inbox("agent3").take_on("/v2/me/devices");
    assert_eq!(d.len(), 1);
    assert_eq!(d[0]["devices"][0]["userState"]["state"], "Ready");
    assert_eq!(h.pending(), 0, "unchanged devices are not notified");
    // Every call is forgotten.
    h.get("agent1", &format!("/api/v2/me/calls/{c}"))
        .await
        .expect(404, 6);
    assert!(format!("{:?}", h.api).contains("calls: 0"), "{:?}", h.api);
}
