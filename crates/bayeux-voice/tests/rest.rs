//! REST handlers called directly: authentication, origin and CORS, parsing, status codes,
//! resource shapes, user data, recording data, retention and the tower service.

mod common;

use std::time::Duration;

use bayeux_voice::{UserConfig, VoiceApi, VoiceConfig};
use bytes::Bytes;
use common::{Harness, req, send, summary};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};

const ME: &str = "/api/v2/me";

#[tokio::test]
async fn missing_or_wrong_credentials_are_401_20() {
    let h = Harness::demo();
    for r in [
        req("GET", ME),
        req("GET", ME).auth("agent1", "wrong"),
        req("GET", ME).auth("nobody", "password"),
        req("GET", ME).header("authorization", "Bearer abc"),
        req("GET", ME).header("cookie", "JSESSIONID=forged"),
    ] {
        let resp = send(&h.api, r, None).await;
        resp.expect(401, 20);
        assert_eq!(resp.json["statusMessage"], "Access denied");
        assert!(resp.headers.contains_key("www-authenticate"));
        assert!(!resp.headers.contains_key("set-cookie"));
    }
    let post = send(
        &h.api,
        req("POST", "/api/v2/me/calls/X")
            .auth("agent1", "nope")
            .json(),
        Some(r#"{"operationName":"Hangup"}"#.into()),
    )
    .await;
    post.expect(401, 20);
}

#[tokio::test]
async fn session_cookie_authenticates_later_requests() {
    let h = Harness::demo();
    let first = h.get("agent2", ME).await;
    first.expect(200, 0);
    let set = first.headers["set-cookie"].to_str().unwrap().to_owned();
    assert!(set.contains("HttpOnly") && set.contains("Path=/"), "{set}");
    let pair = set.split(';').next().unwrap().to_owned();
    let by_cookie = send(&h.api, req("GET", ME).header("cookie", &pair), None).await;
    by_cookie.expect(200, 0);
    assert_eq!(by_cookie.json["user"]["userName"], "agent2");
    assert!(!by_cookie.headers.contains_key("set-cookie"));
    // Basic plus a valid cookie of the same user: no new cookie.
    let both = send(
        &h.api,
        req("GET", ME)
            .auth("agent2", "password")
            .header("cookie", &pair),
        None,
    )
    .await;
    both.expect(200, 0);
    assert!(!both.headers.contains_key("set-cookie"));
    // The cookie also authenticates the Bayeux endpoint.
    let (parts, ()) = http::Request::builder()
        .uri("/api/v2/notifications")
        .header("cookie", &pair)
        .body(())
        .unwrap()
        .into_parts();
    use bayeux_transport::auth::Authenticator;
    assert_eq!(
        h.api.authenticator().authenticate(&parts).as_deref(),
        Some("agent2")
    );
}

#[tokio::test]
async fn foreign_origin_is_403_3_and_allowed_origin_gets_cors() {
    let h = Harness::demo();
    let foreign = send(
        &h.api,
        req("GET", ME)
            .auth("agent1", "password")
            .header("origin", "http://evil.example"),
        None,
    )
    .await;
    foreign.expect(403, 3);
    assert_eq!(foreign.json["statusMessage"], "Origin not allowed");
    assert!(!foreign.headers.contains_key("access-control-allow-origin"));
    let id_before = h.pending();
    let foreign_post = send(
        &h.api,
        req(
            "POST",
            &format!("/api/v2/me/devices/{}/calls", h.device_of("agent1")),
        )
        .auth("agent1", "password")
        .json()
        .header("origin", "http://evil.example"),
        Some(json!({"operationName":"Dial","destination":{"phoneNumber":"15001"}}).to_string()),
    )
    .await;
    foreign_post.expect(403, 3);
    assert_eq!(h.pending(), id_before);

    let own = "http://127.0.0.1:8080";
    let ok = send(
        &h.api,
        req("GET", ME)
            .auth("agent1", "password")
            .header("origin", own),
        None,
    )
    .await;
    ok.expect(200, 0);
    assert_eq!(ok.headers["access-control-allow-origin"], own);
    assert_eq!(ok.headers["access-control-allow-credentials"], "true");

    let pre = send(
        &h.api,
        req("OPTIONS", "/api/v2/me/calls/X")
            .header("origin", own)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization, content-type",
            ),
        None,
    )
    .await;
    assert_eq!(pre.status, 204);
    assert_eq!(pre.headers["access-control-allow-origin"], own);
    assert!(
        pre.headers["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("POST")
    );
    assert_eq!(
        pre.headers["access-control-allow-headers"],
        "authorization, content-type"
    );
    let pre_foreign = send(
        &h.api,
        req("OPTIONS", ME).header("origin", "http://evil.example"),
        None,
    )
    .await;
    pre_foreign.expect(403, 3);
}

#[tokio::test]
async fn configured_origins_replace_the_default() {
    let config = VoiceConfig {
        allowed_origins: vec!["http://localhost:3000".into()],
        ..common::config(0)
    };
    let h = Harness::new(config);
    assert_eq!(h.api.allowed_origins(), ["http://localhost:3000"]);
    // The notifications endpoint carries the same list, the path and the authenticator.
    let e = h.api.notifications_endpoint();
    assert_eq!(e.path, h.api.notifications_path());
    assert_eq!(
        e.origins,
        bayeux_transport::Origins::List(vec!["http://localhost:3000".into()])
    );
    assert!(e.authenticator.is_some());
    let r = |o: &'static str| {
        send(
            &h.api,
            req("GET", ME)
                .auth("agent1", "password")
                .header("origin", o),
            None,
        )
    };
    r("http://localhost:3000").await.expect(200, 0);
    r("http://127.0.0.1:8080").await.expect(403, 3);
}

#[tokio::test]
async fn malformed_bodies_are_400_1() {
    let h = Harness::demo();
    let id = h.dial_id("agent1", "15001").await;
    h.drain();
    let path = format!("/api/v2/me/calls/{id}");
    for body in [
        "not json",
        "",
        "[1,2]",
        r#"{"operation":"Hangup"}"#,
        r#"{"operationName":7}"#,
        r#"{"operationName":"AttachUserData"}"#,
        r#"{"operationName":"AttachUserData","userData":"x"}"#,
        r#"{"operationName":"UpdateUserData","userData":[1]}"#,
        r#"{"operationName":"DeleteUserDataPair"}"#,
        r#"{"operationName":"DeleteUserDataPair","key":5}"#,
        r#"{"operationName":"SendDtmf"}"#,
        // The old, non-GWS field name is not accepted: GWS's is `digits`.
        r#"{"operationName":"SendDtmf","dtmfDigits":"12"}"#,
        r#"{"operationName":"SendDtmf","digits":""}"#,
        r#"{"operationName":"SendDtmf","digits":"12a"}"#,
        r#"{"operationName":"SendDtmf","digits":12}"#,
        r#"{"operationName":"SendDTMF","digits":"1 2"}"#,
        r#"{"operationName":"SetCallDisposition"}"#,
        r#"{"operationName":"SetCallDisposition","disposition":""}"#,
        r#"{"operationName":"SetCallDisposition","disposition":3}"#,
        r#"{"operationName":"SetCallDisposition","disposition":"x","dispositionKey":""}"#,
    ] {
        let r = send(
            &h.api,
            req("POST", &path).auth("agent1", "password").json(),
            Some(body.into()),
        )
        .await;
        r.expect(400, 1);
    }
    let dial = format!("/api/v2/me/devices/{}/calls", h.device_of("agent1"));
    for body in [
        json!({"operationName":"Dial"}),
        json!({"operationName":"Dial","destination":"15001"}),
        json!({"operationName":"Dial","destination":{}}),
        json!({"operationName":"Dial","destination":{"phoneNumber":""}}),
        json!({"operationName":"Dial","destination":{"phoneNumber":"1 2"}}),
        json!({"operationName":"Dial","destination":{"phoneNumber":"15001"},"userData":3}),
    ] {
        h.post("agent1", &dial, body).await.expect(400, 1);
    }
    assert_eq!(h.pending(), 0);
}

#[tokio::test]
async fn send_dtmf_notifies_dtmf_sent_to_the_requester_only() {
    let h = Harness::demo();
    let id = h.dial_id("agent1", "15001").await;
    h.drain();
    // Dialing: accepted, under either spelling of the operation name.
    for name in ["SendDtmf", "SendDTMF"] {
        h.op(
            "agent1",
            &id,
            json!({"operationName": name, "digits": "0123456789*#"}),
        )
        .await
        .expect(200, 0);
        let mine = h.inbox("agent1").take();
        assert_eq!(mine.len(), 1, "{mine:?}");
        assert_eq!(mine[0]["messageType"], "CallStateChangeMessage");
        assert_eq!(mine[0]["notificationType"], "DtmfSent");
        assert_eq!(mine[0]["phoneNumber"], "15000");
        assert_eq!(mine[0]["call"]["id"], id.as_str());
        assert_eq!(mine[0]["call"]["state"], "Dialing");
        assert_eq!(h.pending(), 0, "the other party hears nothing");
    }
    // Ringing (agent2's leg): not listed, refused, nothing published.
    let caps = h.call("agent2", &id).await["capabilities"].clone();
    assert!(!caps.as_array().unwrap().contains(&json!("SendDtmf")));
    h.op(
        "agent2",
        &id,
        json!({"operationName": "SendDtmf", "digits": "1"}),
    )
    .await
    .expect(400, 2);
    assert_eq!(h.pending(), 0);
}

#[tokio::test]
async fn mute_and_disposition() {
    let h = Harness::demo();
    let id = h.dial_id("agent1", "15001").await;
    // Not while dialing.
    h.op("agent1", &id, json!({"operationName": "MuteCall"}))
        .await
        .expect(400, 2);
    h.op("agent2", &id, json!({"operationName": "Answer"}))
        .await
        .expect(200, 0);
    h.drain();
    h.op("agent1", &id, json!({"operationName": "MuteCall"}))
        .await
        .expect(200, 0);
    let n = h.inbox("agent1").take();
    assert_eq!(n.len(), 1);
    assert_eq!(n[0]["notificationType"], "StatusChange");
    assert_eq!(n[0]["call"]["mute"], "On");
    assert!(
        n[0]["call"]["capabilities"]
            .as_array()
            .unwrap()
            .contains(&json!("UnmuteCall"))
    );
    assert_eq!(h.pending(), 0, "the other party hears nothing of a mute");
    assert_eq!(h.call("agent2", &id).await["mute"], "Off");
    h.op("agent1", &id, json!({"operationName": "MuteCall"}))
        .await
        .expect(400, 2);
    h.op("agent1", &id, json!({"operationName": "UnmuteCall"}))
        .await
        .expect(200, 0);
    assert_eq!(h.inbox("agent1").take()[0]["call"]["mute"], "Off");
    // Disposition: the default key, then a named one; every party is told.
    h.op(
        "agent2",
        &id,
        json!({"operationName": "SetCallDisposition", "disposition": "Sale",
               "callUuid": id, "callUri": "ignored"}),
    )
    .await
    .expect(200, 0);
    h.op(
        "agent2",
        &id,
        json!({"operationName": "SetCallDisposition", "disposition": "42", "dispositionKey": "Outcome"}),
    )
    .await
    .expect(200, 0);
    for user in ["agent1", "agent2"] {
        let n = h.inbox(user).take();
        assert_eq!(n.len(), 2, "{user}: {n:?}");
        assert!(
            n.iter()
                .all(|n| n["notificationType"] == "AttachedDataChanged")
        );
        assert_eq!(n[1]["call"]["userData"]["DispositionCode"], "Sale");
        assert_eq!(n[1]["call"]["userData"]["Outcome"], "42");
    }
}

#[tokio::test]
async fn unknown_operations_are_400_2() {
    let h = Harness::demo();
    let id = h.dial_id("agent1", "15001").await;
    h.drain();
    for name in [
        "Frobnicate",
        "hangup",
        // GWS operations that are not emulated.
        "ClearCall",
        "Reject",
        "Dial",
    ] {
        h.op("agent1", &id, json!({"operationName": name}))
            .await
            .expect(400, 2);
    }
    let device = h.device_of("agent1");
    h.post(
        "agent1",
        &format!("/api/v2/me/devices/{device}/calls"),
        json!({"operationName":"Answer"}),
    )
    .await
    .expect(400, 2);
    h.post(
        "agent1",
        &format!("/api/v2/me/devices/{device}"),
        json!({"operationName":"Dial"}),
    )
    .await
    .expect(400, 2);
    assert_eq!(h.pending(), 0);
}

#[tokio::test]
async fn other_users_calls_and_devices_are_404_6() {
    let h = Harness::demo();
    let id = h.dial_id("agent1", "15001").await;
    h.drain();
    h.get("agent3", &format!("/api/v2/me/calls/{id}"))
        .await
        .expect(404, 6);
    h.op("agent3", &id, json!({"operationName":"Hangup"}))
        .await
        .expect(404, 6);
    h.op(
        "agent1",
        "0123456789ABCDEFGHIJKLMNOPQRSTUV",
        json!({"operationName":"Hangup"}),
    )
    .await
    .expect(404, 6);
    let other_device = h.device_of("agent2");
    h.post(
        "agent1",
        &format!("/api/v2/me/devices/{other_device}/calls"),
        json!({"operationName":"Dial","destination":{"phoneNumber":"15002"}}),
    )
    .await
    .expect(404, 6);
    h.post(
        "agent1",
        &format!("/api/v2/me/devices/{other_device}"),
        json!({"operationName":"StopCallRecording"}),
    )
    .await
    .expect(404, 6);
    h.get("agent1", &format!("/api/v2/me/devices/{other_device}"))
        .await
        .expect(404, 6);
    h.get("agent1", &format!("/api/v2/devices/{other_device}"))
        .await
        .expect(404, 6);
    assert_eq!(h.pending(), 0);
    let mine = h.get("agent3", "/api/v2/me/calls").await;
    mine.expect(200, 0);
    assert_eq!(mine.json["calls"], json!([]));
}

#[tokio::test]
async fn unknown_paths_and_methods() {
    let h = Harness::demo();
    h.get("agent1", "/api/v2/nothing").await.expect(404, 6);
    h.get("agent1", "/api/v2/me/calls/a/b").await.expect(404, 6);
    let r = h.post("agent1", "/api/v2/me", json!({})).await;
    r.expect(405, 2);
    assert_eq!(r.headers["allow"], "GET, OPTIONS");
    h.get(
        "agent1",
        &format!("/api/v2/me/devices/{}/calls", h.device_of("agent1")),
    )
    .await
    .expect(405, 2);
}

#[tokio::test]
async fn missing_features_are_400_2() {
    let mut config = common::config(0);
    config.users.push(UserConfig {
        name: "viewer".into(),
        password: "password".into(),
        device_id: "aaaaaaaa-0000-4000-8000-000000000001".into(),
        dn: "15099".into(),
        features: vec![],
    });
    let h = Harness::new(config);
    let device = h.device_of("viewer");
    h.get("viewer", ME).await.expect(200, 0);
    h.post(
        "viewer",
        &format!("/api/v2/me/devices/{device}/calls"),
        json!({"operationName":"Dial","destination":{"phoneNumber":"15000"}}),
    )
    .await
    .expect(400, 2);
    // Someone calls the viewer: it may not answer.
    let id = h.dial_id("agent1", "15099").await;
    h.op("viewer", &id, json!({"operationName":"Answer"}))
        .await
        .expect(400, 2);
    h.drain();
    // agent3 lacks recording.
    let id3 = h.dial_id("agent3", "15000").await;
    h.op(
        "agent3",
        &id3,
        json!({"operationName":"StartCallRecording"}),
    )
    .await
    .expect(400, 2);
    assert_eq!(h.inbox("agent3").len(), 0);
}

#[tokio::test]
async fn oversized_bodies_and_user_data() {
    let h = Harness::demo();
    let id = h.dial_id("agent1", "15001").await;
    h.drain();
    let huge = json!({"operationName":"AttachUserData","userData":{"big":"x".repeat(70 * 1024)}});
    h.op("agent1", &id, huge).await.expect(413, 1);
    // Under the body limit but over the per-call userData bound (32 KiB by default), in steps.
    for i in 0..3 {
        let part = json!({"operationName":"AttachUserData","userData":{format!("k{i}"): "y".repeat(12 * 1024)}});
        let r = h.op("agent1", &id, part).await;
        if i < 2 {
            r.expect(200, 0);
        } else {
            r.expect(400, 1);
        }
    }
    let call = h.call("agent1", &id).await;
    assert_eq!(call["userData"].as_object().unwrap().len(), 2);
    // Two accepted attaches, each seen by both parties; the refused one by nobody.
    assert_eq!(h.inbox("agent1").take().len(), 2);
    assert_eq!(h.inbox("agent2").take().len(), 2);
    // A declared length over the limit is refused before reading.
    let r = send(
        &h.api,
        req("POST", &format!("/api/v2/me/calls/{id}"))
            .auth("agent1", "password")
            .json()
            .header("content-length", "10000000"),
        Some(String::new()),
    )
    .await;
    r.expect(413, 1);
    // A Dial with huge userData creates nothing.
    let dial = json!({"operationName":"Dial","destination":{"phoneNumber":"15002"},
                      "userData":{"a":"z".repeat(40 * 1024)}});
    h.post(
        "agent1",
        &format!("/api/v2/me/devices/{}/calls", h.device_of("agent1")),
        dial,
    )
    .await
    .expect(400, 1);
    assert_eq!(h.pending(), 0);
}

#[tokio::test]
async fn released_calls_refuse_operations_and_leave_the_list() {
    let h = Harness::demo();
    let id = h.dial_id("agent1", "15001").await;
    h.op("agent2", &id, json!({"operationName":"Answer"}))
        .await
        .expect(200, 0);
    h.op("agent1", &id, json!({"operationName":"StartCallRecording"}))
        .await
        .expect(200, 0);
    h.drain();
    h.op("agent2", &id, json!({"operationName":"Hangup"}))
        .await
        .expect(200, 0);
    let a = h.inbox("agent1").take();
    let b = h.inbox("agent2").take();
    assert_eq!((a.len(), b.len()), (1, 1));
    assert_eq!(
        summary(&a[0]),
        ("StatusChange".into(), "Released".into(), "Stopped".into())
    );
    assert_eq!(a[0]["call"]["capabilities"], json!([]));
    assert_eq!(a[0]["call"]["userData"]["GSIP_RECORD"], "OFF");
    for op in [
        "Hangup",
        "Answer",
        "Hold",
        "Retrieve",
        "StartCallRecording",
        "StopCallRecording",
        "DeleteUserData",
    ] {
        h.op("agent1", &id, json!({"operationName": op}))
            .await
            .expect(400, 2);
        h.op("agent2", &id, json!({"operationName": op}))
            .await
            .expect(400, 2);
    }
    h.op(
        "agent1",
        &id,
        json!({"operationName":"AttachUserData","userData":{"a":1}}),
    )
    .await
    .expect(400, 2);
    assert_eq!(h.pending(), 0);
    assert_eq!(h.call("agent1", &id).await["state"], "Released");
    let list = h.get("agent1", "/api/v2/me/calls").await;
    assert_eq!(list.json["calls"], json!([]));
}

#[tokio::test]
async fn released_calls_are_forgotten_beyond_the_bound() {
    let config = VoiceConfig {
        max_released_calls_per_user: 2,
        ..common::config(0)
    };
    let h = Harness::new(config);
    let mut ids = Vec::new();
    for _ in 0..4 {
        let id = h.dial_id("agent1", "15001").await;
        h.op("agent1", &id, json!({"operationName":"Hangup"}))
            .await
            .expect(200, 0);
        ids.push(id);
    }
    h.get("agent1", &format!("/api/v2/me/calls/{}", ids[0]))
        .await
        .expect(404, 6);
    h.get("agent2", &format!("/api/v2/me/calls/{}", ids[1]))
        .await
        .expect(404, 6);
    h.get("agent1", &format!("/api/v2/me/calls/{}", ids[3]))
        .await
        .expect(200, 0);
    h.op("agent1", &ids[0], json!({"operationName":"Hangup"}))
        .await
        .expect(404, 6);
}

#[tokio::test]
async fn too_many_calls_are_refused() {
    let config = VoiceConfig {
        max_calls_per_user: 2,
        ..common::config(0)
    };
    let h = Harness::new(config);
    h.dial("agent1", "555").await.expect(200, 0);
    h.dial("agent1", "556").await.expect(200, 0);
    h.drain();
    h.dial("agent1", "557").await.expect(400, 2);
    h.dial("agent2", "15000").await.expect(400, 2);
    assert_eq!(h.pending(), 0);
    h.dial("agent1", "15000").await.expect(400, 2);
}

#[tokio::test]
async fn me_and_devices() {
    let h = Harness::demo();
    let me = h.get("agent1", ME).await;
    me.expect(200, 0);
    assert_eq!(me.json["user"]["userName"], "agent1");
    let device = &me.json["user"]["devices"][0];
    assert_eq!(device["id"], "631608b3-ceb1-472b-ba05-2ae39555b0d1");
    assert_eq!(device["phoneNumber"], "15000");
    let devices = h.get("agent1", "/api/v2/me/devices/").await;
    devices.expect(200, 0);
    assert_eq!(devices.json["devices"].as_array().unwrap().len(), 1);
    assert_eq!(&devices.json["devices"][0], device);
    let one = h
        .get(
            "agent1",
            "/api/v2/devices/631608B3-CEB1-472B-BA05-2AE39555B0D1",
        )
        .await;
    one.expect(200, 0);
    assert_eq!(&one.json["device"], device);
}

#[tokio::test]
async fn call_objects_have_the_gws_shape() {
    let h = Harness::demo();
    let id = h.dial_id("agent1", "15001").await;
    let caller = h.call("agent1", &id).await;
    let callee = h.call("agent2", &id).await;
    assert_eq!(id.len(), 32);
    assert!(
        id.bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
    );
    assert_eq!(caller["callUuid"], id.as_str());
    let conn = caller["connId"].as_str().unwrap();
    assert!(conn.len() == 16 && conn.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(callee["connId"], conn);
    assert_eq!(caller["state"], "Dialing");
    assert_eq!(callee["state"], "Ringing");
    assert_eq!(caller["callType"], "Internal");
    assert_eq!(caller["dnis"], "15001");
    assert_eq!(
        caller["participants"],
        json!([{"e164Number":"","formattedPhoneNumber":"15001","phoneNumber":"15001","digits":"15001"}])
    );
    assert_eq!(callee["participants"][0]["phoneNumber"], "15000");
    assert_eq!(
        caller["deviceUri"],
        "http://127.0.0.1:8080/api/v2/devices/631608b3-ceb1-472b-ba05-2ae39555b0d1"
    );
    assert_eq!(
        caller["uri"],
        format!("http://127.0.0.1:8080/api/v2/me/calls/{id}")
    );
    assert_eq!(caller["path"], format!("/calls/{id}"));
    assert!(caller["duration"].as_str().unwrap().parse::<u64>().is_ok());
    assert_eq!(caller["mute"], "Off");
    assert_eq!(caller["recordingState"], "Stopped");
    assert_eq!(caller["supervisorListeningIn"], false);
    assert_eq!(caller["monitoredUserMuted"], false);
    assert_eq!(caller["monitoring"], false);
    assert!(
        caller.get("userData").is_none(),
        "userData is absent when empty"
    );
    let list = h.get("agent2", "/api/v2/me/calls").await;
    assert_eq!(list.json["calls"].as_array().unwrap().len(), 1);
    assert_eq!(list.json["calls"][0]["id"], id.as_str());
}

#[tokio::test]
async fn recording_life_cycle_and_gsip_user_data() {
    let h = Harness::demo();
    let id = h.dial_id("agent1", "15001").await;
    h.op("agent2", &id, json!({"operationName":"Answer"}))
        .await
        .expect(200, 0);
    h.drain();
    let steps = [
        ("StartCallRecording", "Recording", "ON"),
        ("PauseCallRecording", "Paused", "PAUSED"),
        ("ResumeCallRecording", "Recording", "ON"),
        ("StopCallRecording", "Stopped", "OFF"),
        ("StartCallRecording", "Recording", "ON"),
    ];
    let mut file_name: Option<String> = None;
    for (op, state, gsip) in steps {
        h.op("agent1", &id, json!({"operationName": op}))
            .await
            .expect(200, 0);
        let n = h.inbox("agent1").take();
        assert_eq!(n.len(), 1);
        assert_eq!(
            summary(&n[0]),
            (
                "CallRecordingStateChange".into(),
                "Established".into(),
                state.into()
            )
        );
        assert_eq!(n[0]["messageType"], "CallStateChangeMessage");
        assert_eq!(n[0]["phoneNumber"], "15000");
        let ud = &n[0]["call"]["userData"];
        assert_eq!(ud["GSIP_RECORD"], gsip);
        let f = ud["GSIP_REC_FN"].as_str().unwrap().to_owned();
        assert!(f.starts_with(&format!("{id}_15000_15000_15001_")), "{f}");
        // Set once, on the first Start.
        assert_eq!(file_name.get_or_insert(f.clone()), &f);
        assert_eq!(h.inbox("agent2").len(), 0, "recording is per leg");
    }
    // User data: shared by both parties; the recording keys stay with the recording leg.
    h.op(
        "agent2",
        &id,
        json!({"operationName":"AttachUserData","userData":{"IW_CaseUid":"c1","n":1}}),
    )
    .await
    .expect(200, 0);
    let a = h.inbox("agent1").take();
    let b = h.inbox("agent2").take();
    assert_eq!(a[0]["notificationType"], "AttachedDataChanged");
    assert_eq!(a[0]["call"]["userData"]["IW_CaseUid"], "c1");
    assert_eq!(a[0]["call"]["userData"]["GSIP_RECORD"], "ON");
    assert_eq!(b[0]["call"]["userData"], json!({"IW_CaseUid":"c1","n":1}));
    h.op(
        "agent1",
        &id,
        json!({"operationName":"UpdateUserData","userData":{"n":2}}),
    )
    .await
    .expect(200, 0);
    h.op(
        "agent1",
        &id,
        json!({"operationName":"DeleteUserDataPair","key":"IW_CaseUid"}),
    )
    .await
    .expect(200, 0);
    assert_eq!(h.call("agent2", &id).await["userData"], json!({"n":2}));
    h.op("agent1", &id, json!({"operationName":"DeleteUserData"}))
        .await
        .expect(200, 0);
    assert!(h.call("agent2", &id).await.get("userData").is_none());
    assert_eq!(
        h.call("agent1", &id).await["userData"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["GSIP_RECORD", "GSIP_REC_FN"]
    );
    assert_eq!(h.inbox("agent1").take().len(), 3);
    assert_eq!(h.inbox("agent2").take().len(), 3);
}

#[tokio::test]
async fn device_level_stop_stops_every_recorded_call() {
    let h = Harness::demo();
    let mut ids = Vec::new();
    for _ in 0..3 {
        let id = h.dial_id("agent1", "15001").await;
        h.op("agent2", &id, json!({"operationName":"Answer"}))
            .await
            .expect(200, 0);
        ids.push(id);
    }
    h.op(
        "agent1",
        &ids[0],
        json!({"operationName":"StartCallRecording"}),
    )
    .await
    .expect(200, 0);
    h.op(
        "agent1",
        &ids[1],
        json!({"operationName":"StartCallRecording"}),
    )
    .await
    .expect(200, 0);
    h.op(
        "agent1",
        &ids[1],
        json!({"operationName":"PauseCallRecording"}),
    )
    .await
    .expect(200, 0);
    h.op("agent1", &ids[1], json!({"operationName":"Hold"}))
        .await
        .expect(200, 0);
    h.drain();
    let device = h.device_of("agent1");
    h.post(
        "agent1",
        &format!("/api/v2/me/devices/{device}"),
        json!({"operationName":"StopCallRecording"}),
    )
    .await
    .expect(200, 0);
    let n = h.inbox("agent1").take();
    assert_eq!(n.len(), 2, "{n:?}");
    assert_eq!(
        summary(&n[0]),
        (
            "CallRecordingStateChange".into(),
            "Established".into(),
            "Stopped".into()
        )
    );
    assert_eq!(
        summary(&n[1]),
        (
            "CallRecordingStateChange".into(),
            "Held".into(),
            "Stopped".into()
        )
    );
    assert_eq!(h.inbox("agent2").len(), 0);
    // Nothing left to stop: accepted, nothing published.
    h.post(
        "agent1",
        &format!("/api/v2/me/devices/{device}"),
        json!({"operationName":"StopCallRecording"}),
    )
    .await
    .expect(200, 0);
    assert_eq!(h.pending(), 0);
}

#[tokio::test(start_paused = true)]
async fn outbound_calls_are_answered_after_the_delay() {
    let config = VoiceConfig {
        outbound_answer_delay_ms: 3000,
        ..common::config(0)
    };
    let h = Harness::new(config);
    let id = h.dial_id("agent1", "5551234").await;
    let call = h.call("agent1", &id).await;
    assert_eq!(
        (call["state"].as_str(), call["callType"].as_str()),
        (Some("Dialing"), Some("Outbound"))
    );
    tokio::time::sleep(Duration::from_millis(2900)).await;
    assert_eq!(h.pending(), 0);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let n = h.inbox("agent1").take();
    assert_eq!(n.len(), 1);
    assert_eq!(
        summary(&n[0]),
        (
            "StatusChange".into(),
            "Established".into(),
            "Stopped".into()
        )
    );
    assert_eq!(n[0]["call"]["participants"][0]["digits"], "5551234");
    // Hung up before the far end answers: no late Established.
    let id2 = h.dial_id("agent1", "5550000").await;
    h.op("agent1", &id2, json!({"operationName":"Hangup"}))
        .await
        .expect(200, 0);
    assert_eq!(h.inbox("agent1").take().len(), 1);
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(h.pending(), 0);
}

#[tokio::test]
async fn inbound_and_far_end_release_through_call_control() {
    let h = Harness::demo();
    let control = h.api.call_control();
    let id = control
        .inbound_call(
            "agent2",
            "+33123456789",
            Some(json!({"IW_BundleUid":"b"}).as_object().unwrap().clone()),
        )
        .unwrap();
    let n = h.inbox("agent2").take();
    assert_eq!(
        summary(&n[0]),
        ("StatusChange".into(), "Ringing".into(), "Stopped".into())
    );
    assert_eq!(n[0]["call"]["callType"], "Inbound");
    assert_eq!(n[0]["call"]["dnis"], "15001");
    assert_eq!(n[0]["call"]["userData"]["IW_BundleUid"], "b");
    h.op("agent2", &id, json!({"operationName":"Answer"}))
        .await
        .expect(200, 0);
    assert_eq!(h.inbox("agent2").take()[0]["call"]["state"], "Established");
    assert!(control.far_end_answered(&id).is_err());
    control.far_end_released(&id).unwrap();
    let n = h.inbox("agent2").take();
    assert_eq!(
        summary(&n[0]),
        ("StatusChange".into(), "Released".into(), "Stopped".into())
    );
    assert!(control.far_end_released(&id).is_err());
    assert!(control.inbound_call("nobody", "1", None).is_err());
    assert_eq!(h.pending(), 0);
}

#[tokio::test]
async fn served_as_a_tower_service() {
    use tower::Service;
    let h = Harness::demo();
    let mut svc: VoiceApi = h.api.clone();
    std::future::poll_fn(|cx| Service::<http::Request<Full<Bytes>>>::poll_ready(&mut svc, cx))
        .await
        .unwrap();
    let request = http::Request::get(ME)
        .header(
            "authorization",
            bayeux_voice::basic_authorization("agent3", "password"),
        )
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = svc.call(request).await.unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(v["user"]["userName"], "agent3");
    assert_eq!(v["user"]["devices"][0]["phoneNumber"], "15002");
}

#[tokio::test]
async fn the_contract_is_served_without_credentials() {
    let h = Harness::demo();
    let r = send(&h.api, req("GET", "/voice/openapi.json"), None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["content-type"], "application/json");
    assert_eq!(
        r.json,
        serde_json::from_str::<Value>(bayeux_voice::OPENAPI).unwrap()
    );
    for (name, _) in bayeux_voice::NOTIFICATION_SCHEMAS {
        let r = send(
            &h.api,
            req("GET", &format!("/voice/schemas/{name}.schema.json")),
            None,
        )
        .await;
        assert_eq!(r.status, 200, "{name}");
        assert_eq!(r.headers["content-type"], "application/schema+json");
        assert_eq!(r.json["$ref"], format!("#/$defs/{name}"));
    }
    let r = send(&h.api, req("GET", "/voice/nothing"), None).await;
    r.expect(404, 6);
    let r = send(
        &h.api,
        req("POST", "/voice/openapi.json").json(),
        Some("{}".into()),
    )
    .await;
    r.expect(405, 2);
}
