//! Agent state on `/api/v2/me/channels/voice` and do-not-disturb on the device: the answers,
//! what `GET /api/v2/me/devices` and `GET /api/v2/me` show after them, and the one
//! `DeviceStateChangeMessage` on `/v2/me/devices` each publishes to that user only.

mod common;

use common::Harness;
use serde_json::{Value, json};

const DEVICES: &str = "/v2/me/devices";
const CHANNEL: &str = "/api/v2/me/channels/voice";

async fn device(h: &Harness, user: &str) -> Value {
    let r = h.get(user, "/api/v2/me/devices").await;
    r.expect(200, 0);
    let devices = r.json["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 1);
    devices[0].clone()
}

/// The one device notification `user` got since the last call, checked against `GET`.
async fn one_notification(h: &Harness, user: &str) -> Value {
    let n = h.inbox(user).take_on(DEVICES);
    assert_eq!(n.len(), 1, "{user}: {n:?}");
    let n = &n[0];
    assert_eq!(n["messageType"], "DeviceStateChangeMessage");
    assert!(n.get("notificationType").is_none(), "{n}");
    let devices = n["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 1);
    assert_eq!(
        devices[0],
        device(h, user).await,
        "the notification shows what GET shows"
    );
    devices[0].clone()
}

#[tokio::test]
async fn initial_state_is_ready_and_do_not_disturb_off() {
    let h = Harness::demo();
    let d = device(&h, "agent1").await;
    assert_eq!(
        d["userState"],
        json!({"state": "Ready", "displayName": "Ready"})
    );
    assert_eq!(d["doNotDisturb"], "Off");
    assert_eq!(d["deviceState"], "Active");
    assert_eq!(d["telephonyNetwork"], "Private");
    assert!(
        d["capabilities"]
            .as_array()
            .unwrap()
            .contains(&json!("DoNotDisturbOn"))
    );
    let me = h.get("agent1", "/api/v2/me").await;
    assert_eq!(me.json["user"]["devices"][0], d);
}

#[tokio::test]
async fn every_agent_state_and_its_notification_to_that_user_only() {
    let h = Harness::demo();
    let cases = [
        (
            json!({"operationName": "NotReady", "reasonCode": "Lunch"}),
            json!({"state": "NotReady", "displayName": "Not Ready", "reasonCode": "Lunch"}),
        ),
        (
            json!({"operationName": "NotReady"}),
            json!({"state": "NotReady", "displayName": "Not Ready"}),
        ),
        (
            json!({"operationName": "AfterCallWork", "wrapUpTime": 30}),
            json!({"state": "NotReady", "displayName": "AfterCallWork", "workMode": "AfterCallWork"}),
        ),
        (
            json!({"operationName": "AuxWork"}),
            json!({"state": "NotReady", "displayName": "AuxWork", "workMode": "AuxWork"}),
        ),
        (
            json!({"operationName": "Ready", "workmode": "ManualIn"}),
            json!({"state": "Ready", "displayName": "Ready", "workMode": "ManualIn"}),
        ),
        (
            json!({"operationName": "Ready"}),
            json!({"state": "Ready", "displayName": "Ready"}),
        ),
        // Unchanged: still one notification.
        (
            json!({"operationName": "Ready"}),
            json!({"state": "Ready", "displayName": "Ready"}),
        ),
    ];
    for (body, expected) in cases {
        h.post("agent2", CHANNEL, body.clone()).await.expect(200, 0);
        let d = one_notification(&h, "agent2").await;
        assert_eq!(d["userState"], expected, "{body}");
        assert_eq!(h.pending(), 0, "others hear nothing");
    }
    // Other users' state is their own.
    assert_eq!(device(&h, "agent1").await["userState"]["state"], "Ready");
}

#[tokio::test]
async fn do_not_disturb_on_and_off() {
    let h = Harness::demo();
    let id = h.device_of("agent1");
    let path = format!("/api/v2/me/devices/{id}");
    h.post("agent1", &path, json!({"operationName": "DoNotDisturbOn"}))
        .await
        .expect(200, 0);
    let d = one_notification(&h, "agent1").await;
    assert_eq!(d["doNotDisturb"], "On");
    let caps = d["capabilities"].as_array().unwrap();
    assert!(caps.contains(&json!("DoNotDisturbOff")) && !caps.contains(&json!("DoNotDisturbOn")));
    // Agent state and do-not-disturb are independent.
    h.post("agent1", CHANNEL, json!({"operationName": "NotReady"}))
        .await
        .expect(200, 0);
    let d = one_notification(&h, "agent1").await;
    assert_eq!(
        (d["doNotDisturb"].as_str(), d["userState"]["state"].as_str()),
        (Some("On"), Some("NotReady"))
    );
    h.post("agent1", &path, json!({"operationName": "DoNotDisturbOff"}))
        .await
        .expect(200, 0);
    assert_eq!(one_notification(&h, "agent1").await["doNotDisturb"], "Off");
    assert_eq!(h.pending(), 0);
    // Do-not-disturb does not change call routing: a call still rings.
    h.post("agent1", &path, json!({"operationName": "DoNotDisturbOn"}))
        .await
        .expect(200, 0);
    h.inbox("agent1").take_on(DEVICES);
    h.dial("agent2", "15000").await.expect(200, 0);
    assert_eq!(h.inbox("agent1").take()[0]["call"]["state"], "Ringing");
}

#[tokio::test]
async fn refusals_change_nothing_and_publish_nothing() {
    let h = Harness::demo();
    let other = h.device_of("agent2");
    let mine = h.device_of("agent1");
    let cases = [
        (
            CHANNEL.to_owned(),
            json!({"operationName": "Sleep"}),
            400,
            2,
        ),
        (
            CHANNEL.to_owned(),
            json!({"operationName": "ready"}),
            400,
            2,
        ),
        (CHANNEL.to_owned(), json!({"reasonCode": "x"}), 400, 1),
        (
            CHANNEL.to_owned(),
            json!({"operationName": "Ready", "workmode": "Lazy"}),
            400,
            1,
        ),
        (
            CHANNEL.to_owned(),
            json!({"operationName": "NotReady", "reasonCode": 7}),
            400,
            1,
        ),
        (
            format!("/api/v2/me/devices/{other}"),
            json!({"operationName": "DoNotDisturbOn"}),
            404,
            6,
        ),
        (
            format!("/api/v2/me/devices/{mine}"),
            json!({"operationName": "DoNotDisturb"}),
            400,
            2,
        ),
    ];
    let before = device(&h, "agent1").await;
    for (path, body, http, code) in cases {
        h.post("agent1", &path, body).await.expect(http, code);
    }
    assert_eq!(h.pending(), 0);
    assert_eq!(device(&h, "agent1").await, before);
    assert_eq!(device(&h, "agent2").await["doNotDisturb"], "Off");
    // GET is not served on the channel.
    h.get("agent1", CHANNEL).await.expect(405, 2);
}
