//! The Bayeux side: the security policy on a real engine, and notification routing to remote
//! sessions (A gets A's, B gets B's, C nothing — even when C subscribes to the same channel).

mod common;

use std::time::Instant;

use bayeux_core::{Engine, RequestContext, TransportKind, decode_batch};
use common::Harness;
use serde_json::{Value, json};

const NOTIFICATIONS: &str = "/api/v2/notifications";

fn batch(engine: &Engine, ctx: &RequestContext, msgs: Value) -> Vec<Value> {
    let msgs = decode_batch(msgs.to_string().as_bytes(), &Default::default()).unwrap();
    engine
        .handle_batch(ctx, msgs, Instant::now())
        .replies
        .iter()
        .map(|b| serde_json::from_slice(b.object()).unwrap())
        .collect()
}

fn ctx(principal: Option<&str>, endpoint: &str) -> RequestContext {
    let c = RequestContext::new(TransportKind::WebSocket).with_endpoint(endpoint);
    match principal {
        Some(p) => c.with_principal(p),
        None => c,
    }
}

fn handshake(engine: &Engine, ctx: &RequestContext) -> Value {
    batch(
        engine,
        ctx,
        json!([{"channel":"/meta/handshake","version":"1.0","supportedConnectionTypes":["websocket"],"id":"1"}]),
    )
    .remove(0)
}

/// Handshakes and subscribes `pattern`; returns the client id.
fn client(engine: &Engine, ctx: &RequestContext, pattern: &str) -> String {
    let hs = handshake(engine, ctx);
    assert_eq!(hs["successful"], true, "{hs}");
    let id = hs["clientId"].as_str().unwrap().to_owned();
    let sub = batch(
        engine,
        ctx,
        json!([{"channel":"/meta/subscribe","clientId":id,"subscription":pattern,"id":"2"}]),
    );
    assert_eq!(sub[0]["successful"], true, "{}", sub[0]);
    id
}

fn received(engine: &Engine, client: &str) -> Vec<Value> {
    engine
        .session(client)
        .unwrap()
        .take_messages()
        .iter()
        .map(|b| serde_json::from_slice(b.object()).unwrap())
        .collect()
}

#[test]
fn handshake_on_the_notifications_endpoint_requires_a_principal() {
    let h = Harness::demo();
    let before = h.engine.session_count();
    let anon = handshake(&h.engine, &ctx(None, NOTIFICATIONS));
    assert_eq!(anon["successful"], false);
    assert_eq!(anon["error"], "401::Access denied");
    assert_eq!(h.engine.session_count(), before, "no session is created");
    let ok = handshake(&h.engine, &ctx(Some("agent1"), NOTIFICATIONS));
    assert_eq!(ok["successful"], true);
    // Trailing slash in the configured path makes no difference; other endpoints are open.
    let other = handshake(&h.engine, &ctx(None, "/cometd"));
    assert_eq!(other["successful"], true);
}

#[test]
fn clients_may_not_publish_below_v2() {
    let h = Harness::demo();
    let c = ctx(Some("agent1"), NOTIFICATIONS);
    let id = client(&h.engine, &c, "/v2/me/calls");
    for channel in ["/v2/me/calls", "/v2/me/devices", "/v2/anything/else", "/v2"] {
        let r = batch(
            &h.engine,
            &c,
            json!([{"channel":channel,"clientId":id,"data":{"x":1},"id":"3"}]),
        );
        assert_eq!(r[0]["successful"], false, "{channel}");
        assert_eq!(r[0]["error"], "403::Publish denied", "{channel}");
    }
    let r = batch(
        &h.engine,
        &c,
        json!([{"channel":"/chat/room","clientId":id,"data":{"x":1},"id":"4"}]),
    );
    assert_eq!(r[0]["successful"], true);
    assert_eq!(h.pending(), 0);
}

#[test]
fn subscriptions_below_v2_are_limited_to_calls_and_devices() {
    let h = Harness::demo();
    let c = ctx(Some("agent1"), NOTIFICATIONS);
    let id = handshake(&h.engine, &c)["clientId"]
        .as_str()
        .unwrap()
        .to_owned();
    let sub = |pattern: &str| {
        batch(
            &h.engine,
            &c,
            json!([{"channel":"/meta/subscribe","clientId":id,"subscription":pattern,"id":"5"}]),
        )
        .remove(0)
    };
    for ok in ["/v2/me/calls", "/v2/me/devices", "/chat/**", "/**"] {
        assert_eq!(sub(ok)["successful"], true, "{ok}");
    }
    for denied in [
        "/v2/**",
        "/v2/*",
        "/v2/me/*",
        "/v2/me/**",
        "/v2/me/other",
        "/v2/users/agent2/calls",
    ] {
        let r = sub(denied);
        assert_eq!(r["successful"], false, "{denied}");
        assert_eq!(r["error"], "403::Subscribe denied", "{denied}");
    }
    // An anonymous session on another endpoint cannot subscribe to the voice channels.
    let anon = ctx(None, "/cometd");
    let aid = handshake(&h.engine, &anon)["clientId"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = batch(
        &h.engine,
        &anon,
        json!([{"channel":"/meta/subscribe","clientId":aid,"subscription":"/v2/me/calls","id":"6"}]),
    );
    assert_eq!(r[0]["successful"], false);
}

#[tokio::test]
async fn each_user_gets_only_their_own_notifications() {
    let h = Harness::demo();
    let a = client(
        &h.engine,
        &ctx(Some("agent1"), NOTIFICATIONS),
        "/v2/me/calls",
    );
    let b = client(
        &h.engine,
        &ctx(Some("agent2"), NOTIFICATIONS),
        "/v2/me/calls",
    );
    let c = client(
        &h.engine,
        &ctx(Some("agent3"), NOTIFICATIONS),
        "/v2/me/calls",
    );
    // A second session of agent1 (another tab) gets agent1's notifications too.
    let a2 = client(&h.engine, &ctx(Some("agent1"), "/cometd"), "/v2/me/calls");
    // Anonymous and wildcard subscribers get nothing.
    let anon = client(&h.engine, &ctx(None, "/cometd"), "/**");

    let id = h.dial_id("agent1", "15001").await;
    h.op("agent2", &id, json!({"operationName":"Answer"}))
        .await
        .expect(200, 0);
    h.op("agent1", &id, json!({"operationName":"StartCallRecording"}))
        .await
        .expect(200, 0);
    h.op("agent1", &id, json!({"operationName":"Hangup"}))
        .await
        .expect(200, 0);

    let ra = received(&h.engine, &a);
    let rb = received(&h.engine, &b);
    let kinds = |v: &[Value]| -> Vec<(String, String)> {
        v.iter()
            .map(|m| {
                assert_eq!(m["channel"], "/v2/me/calls");
                assert!(m.get("clientId").is_none() && m.get("id").is_none());
                (
                    m["data"]["notificationType"].as_str().unwrap().to_owned(),
                    m["data"]["call"]["state"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    let s = |a: &str, b: &str| (a.to_owned(), b.to_owned());
    assert_eq!(
        kinds(&ra),
        [
            s("StatusChange", "Dialing"),
            s("StatusChange", "Established"),
            s("CallRecordingStateChange", "Established"),
            s("StatusChange", "Released"),
        ]
    );
    assert_eq!(
        kinds(&rb),
        [
            s("StatusChange", "Ringing"),
            s("StatusChange", "Established"),
            s("StatusChange", "Released")
        ]
    );
    assert!(
        ra.iter()
            .all(|m| m["data"]["phoneNumber"] == "15000" && m["data"]["call"]["id"] == id.as_str())
    );
    assert!(rb.iter().all(|m| m["data"]["phoneNumber"] == "15001"));
    assert_eq!(received(&h.engine, &a2).len(), 4);
    assert!(received(&h.engine, &c).is_empty());
    assert!(received(&h.engine, &anon).is_empty());
    assert_eq!(h.inbox("agent3").len(), 0);
}
