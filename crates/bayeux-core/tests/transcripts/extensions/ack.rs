//! The acknowledgement extension: batch numbering and resending until acknowledged, off unless
//! the client asks, over WebSocket, and no acknowledgement by a refused request.

use std::sync::Arc;
use std::task::Poll;

use crate::common::{Transcript, lp, within, ws};
use crate::support::{retry_advice, t};
use bayeux_core::{AckExtension, RequestContext, Wake};
use serde_json::{Value, json};

fn ack_handshake(t: &mut Transcript, ctx: &RequestContext) -> String {
    let r = t.send(
        ctx,
        json!([{"channel": "/meta/handshake", "version": "1.0", "id": "h",
                "supportedConnectionTypes": [ctx.transport.name()], "ext": {"ack": true}}]),
    );
    assert_eq!(r[0]["successful"], true);
    assert_eq!(r[0]["ext"], json!({"ack": true}));
    r[0]["clientId"].as_str().unwrap().to_owned()
}

fn ack_connect(t: &mut Transcript, ctx: &RequestContext, cid: &str, ack: u64) -> Vec<Value> {
    t.connect_with(ctx, cid, json!({"ext": {"ack": ack}}))
}

#[test]
fn ack_extension_numbers_batches_and_resends_until_acknowledged() {
    let mut t = t();
    t.engine.add_extension(Arc::new(AckExtension));
    let cid = ack_handshake(&mut t, &lp());
    let pubr = t.session(&lp());
    t.subscribe(&lp(), &cid, json!("/chat"));

    // First connect: nothing yet, batch 0.
    let r = ack_connect(&mut t, &lp(), &cid, 0);
    assert_eq!(
        r,
        [
            json!({"channel": "/meta/connect", "id": r[0]["id"], "successful": true,
                 "advice": retry_advice(), "ext": {"ack": 0}})
        ]
    );

    // Batch 1 carries m1.
    t.publish(&lp(), &pubr, "/chat", json!("m1"));
    let r = ack_connect(&mut t, &lp(), &cid, 0);
    assert_eq!(t.held(), 0, "queued messages answer at once");
    assert_eq!(r.len(), 2);
    assert_eq!(r[0], json!({"channel": "/chat", "data": "m1"}));
    assert_eq!(r[1]["ext"], json!({"ack": 1}));

    // The client did not get batch 1 (it acks 0): m1 comes again, at once, as batch 2.
    let r = ack_connect(&mut t, &lp(), &cid, 0);
    assert_eq!(t.held(), 0, "unacknowledged messages answer at once");
    assert_eq!(r.len(), 2);
    assert_eq!(r[0], json!({"channel": "/chat", "data": "m1"}));
    assert_eq!(r[1]["ext"], json!({"ack": 2}));

    // Acknowledged: nothing to resend, the connect is held.
    let r = ack_connect(&mut t, &lp(), &cid, 2);
    assert!(r.is_empty(), "{r:?}");
    assert_eq!(t.poll_last(), Poll::Pending);
    t.publish(&lp(), &pubr, "/chat", json!("m2"));
    assert_eq!(t.poll_last(), Poll::Ready(Wake::Messages));
    let r = t.finish_hold();
    assert_eq!(r.len(), 2);
    assert_eq!(r[0], json!({"channel": "/chat", "data": "m2"}));
    assert_eq!(r[1]["ext"], json!({"ack": 3}));

    // Batch 3 lost: acking 2 gets m2 (and only m2) again.
    let r = ack_connect(&mut t, &lp(), &cid, 2);
    assert_eq!(r.len(), 2);
    assert_eq!(r[0], json!({"channel": "/chat", "data": "m2"}));
    assert_eq!(r[1]["ext"], json!({"ack": 4}));

    // New messages while a batch is unacknowledged travel together with the resend.
    t.publish(&lp(), &pubr, "/chat", json!("m3"));
    let r = ack_connect(&mut t, &lp(), &cid, 2);
    assert_eq!(
        r[..2],
        [
            json!({"channel": "/chat", "data": "m2"}),
            json!({"channel": "/chat", "data": "m3"})
        ]
    );
    assert_eq!(r[2]["ext"], json!({"ack": 5}));

    let r = ack_connect(&mut t, &lp(), &cid, 5);
    assert!(r.is_empty());
    t.advance(30_000);
    let r = t.finish_hold();
    assert_eq!(r.len(), 1, "nothing is re-sent once acknowledged: {r:?}");
    assert_eq!(r[0]["ext"], json!({"ack": 5}));
}

#[test]
fn ack_is_off_unless_the_client_asks() {
    let mut t = t();
    t.engine.add_extension(Arc::new(AckExtension));
    let r = t.send(
        &lp(),
        json!([{"channel": "/meta/handshake", "version": "1.0",
                "supportedConnectionTypes": ["long-polling"], "ext": {"ack": false}}]),
    );
    assert!(r[0].get("ext").is_none(), "{}", r[0]);
    let cid = r[0]["clientId"].as_str().unwrap().to_owned();
    let r = t.connect(&lp(), &cid);
    assert!(r[0].get("ext").is_none());
    assert!(!t.engine.session(&cid).unwrap().ack_enabled());
}

/// Regression: `connect` once called `Session::connect_only` (which locks the session) while
/// holding the session lock, deadlocking any WebSocket connect that found queued messages.
#[test]
fn ack_sessions_over_websocket_deliver_only_in_connect_replies() {
    within("websocket+ack connect with a queued message", || {
        let mut t = t();
        t.engine.add_extension(Arc::new(AckExtension));
        let cid = ack_handshake(&mut t, &ws());
        t.subscribe(&ws(), &cid, json!("/w"));
        ack_connect(&mut t, &ws(), &cid, 0);
        t.engine.publish_json("/w", &1).unwrap();
        let s = t.engine.session(&cid).unwrap();
        assert!(s.connect_only());
        assert!(s.take_messages().is_empty());
        let r = ack_connect(&mut t, &ws(), &cid, 0);
        assert_eq!(t.held(), 0);
        assert_eq!(r[0], json!({"channel": "/w", "data": 1}));
        assert_eq!(r[1]["ext"], json!({"ack": 1}));
    });
}

/// A request the engine refuses (here: a foreign browser presenting a leaked clientId) must not
/// acknowledge the session's batches: the ack extension may only act on a session the request
/// is allowed to use.
#[test]
fn a_refused_connect_does_not_acknowledge_the_sessions_batches() {
    let mut t = t();
    t.engine.add_extension(Arc::new(AckExtension));
    let owner = lp().with_browser("b1");
    let cid = ack_handshake(&mut t, &owner);
    t.subscribe(&owner, &cid, json!("/chat"));
    ack_connect(&mut t, &owner, &cid, 0);
    t.engine.publish_json("/chat", &"m1").unwrap();
    let r = ack_connect(&mut t, &owner, &cid, 0);
    assert_eq!(r[1]["ext"], json!({"ack": 1}));

    let r = ack_connect(&mut t, &lp().with_browser("intruder"), &cid, 1);
    assert_eq!(r[0]["error"], "402::session_unknown");

    // The owner never got batch 1: it must come again.
    let r = ack_connect(&mut t, &owner, &cid, 0);
    assert_eq!(
        r.first(),
        Some(&json!({"channel": "/chat", "data": "m1"})),
        "batch 1 was dropped by a refused request: {r:?}"
    );
}
