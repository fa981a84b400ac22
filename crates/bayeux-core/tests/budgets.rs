//! Budgets that isolate: each endpoint has its own session budget, one connection can hold only
//! so many live sessions, and a session's subscriptions are bounded in count and in bytes.

mod common;

use std::sync::Arc;

use bayeux_core::{ConnectionQuota, EngineConfig, RequestContext, TransportKind};
use common::Transcript;
use serde_json::{Value, json};

fn handshake(t: &mut Transcript, ctx: &RequestContext) -> Value {
    let r = t.send(
        ctx,
        json!([{"channel": "/meta/handshake", "version": "1.0",
                "supportedConnectionTypes": [ctx.transport.name()]}]),
    );
    r[0].clone()
}

fn at(endpoint: &str) -> RequestContext {
    RequestContext::new(TransportKind::LongPolling).with_endpoint(endpoint)
}

#[test]
fn a_flood_on_one_endpoint_does_not_exhaust_another() {
    let mut t = Transcript::new(EngineConfig {
        max_sessions: 3,
        ..EngineConfig::default()
    });
    let mut flood = Vec::new();
    for _ in 0..3 {
        let r = handshake(&mut t, &at("/cometd"));
        assert_eq!(r["successful"], true);
        flood.push(r["clientId"].as_str().unwrap().to_owned());
    }
    let r = handshake(&mut t, &at("/cometd"));
    assert_eq!(r["error"], "503::too_many_sessions", "{r}");
    // The agents' endpoint has its own budget.
    for _ in 0..3 {
        assert_eq!(
            handshake(&mut t, &at("/api/v2/notifications"))["successful"],
            true
        );
    }
    assert_eq!(t.engine.endpoint_sessions("/cometd"), 3);
    assert_eq!(t.engine.endpoint_sessions("/api/v2/notifications"), 3);
    // A session that ends gives its place back.
    let id = t.id();
    t.send(
        &at("/cometd"),
        json!([{"channel": "/meta/disconnect", "clientId": flood[0], "id": id}]),
    );
    assert_eq!(t.engine.endpoint_sessions("/cometd"), 2);
    assert_eq!(handshake(&mut t, &at("/cometd"))["successful"], true);
}

#[test]
fn one_connection_holds_at_most_its_quota_of_live_sessions() {
    let mut t = Transcript::new(EngineConfig::default());
    let quota = ConnectionQuota::new(2);
    let mut socket = RequestContext::new(TransportKind::WebSocket);
    socket.connection = Some(quota.clone());
    let a = handshake(&mut t, &socket);
    let b = handshake(&mut t, &socket);
    assert_eq!(a["successful"], true);
    assert_eq!(b["successful"], true);
    let c = handshake(&mut t, &socket);
    assert_eq!(c["error"], "503::too_many_sessions", "{c}");
    assert_eq!(quota.left(), 0);
    // Another connection is not affected.
    let mut other = RequestContext::new(TransportKind::WebSocket);
    other.connection = Some(ConnectionQuota::new(2));
    assert_eq!(handshake(&mut t, &other)["successful"], true);
    // When its sessions end (here they expire), the connection may create others.
    t.advance(60_000);
    t.engine.sweep(t.now());
    assert_eq!(quota.left(), 2);
    assert_eq!(handshake(&mut t, &socket)["successful"], true);
    // Held by this test, by the request context and by the one live session.
    assert_eq!(Arc::strong_count(&quota), 3);
}

#[test]
fn subscriptions_are_bounded_in_bytes_as_well_as_in_count() {
    let mut t = Transcript::new(EngineConfig {
        max_subscriptions: 1000,
        max_subscription_bytes: 1000,
        ..EngineConfig::default()
    });
    let ctx = common::lp();
    let cid = t.session(&ctx);
    // Nine names of 101 bytes fit (909 bytes); the tenth would not.
    let name = |i: usize| format!("/{}{i}", "x".repeat(99));
    for i in 0..9 {
        t.subscribe(&ctx, &cid, json!(name(i)));
    }
    let id = t.id();
    let r = t.send(
        &ctx,
        json!([{"channel": "/meta/subscribe", "clientId": cid, "id": id,
                "subscription": name(9)}]),
    );
    assert_eq!(
        r[0]["error"], "403:too_many_subscriptions:subscribe_denied",
        "{r:?}"
    );
    assert_eq!(t.engine.channel_count(), 9);
    // Unsubscribing gives the bytes back.
    let id = t.id();
    t.send(
        &ctx,
        json!([{"channel": "/meta/unsubscribe", "clientId": cid, "id": id,
                "subscription": name(0)}]),
    );
    t.subscribe(&ctx, &cid, json!(name(9)));
}
