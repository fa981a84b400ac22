//! Connect: the first connect answered at once, later ones held until their deadline or a
//! delivery, the client's `advice.timeout`, superseded holds, and WebSocket connects finding
//! queued messages (or not, once the writer has taken them).

use std::task::Poll;
use std::time::Duration;

use crate::common::{self, Transcript, lp, within, ws};
use crate::support::{lp_only, retry_advice, t};
use bayeux_core::{EngineConfig, Wake};
use serde_json::json;

#[test]
fn first_connect_returns_at_once_the_second_is_held_until_the_deadline() {
    let mut t = t();
    let cid = t.handshake(&lp());
    let r = t.send(
        &lp(),
        json!([{"channel": "/meta/connect", "clientId": cid, "connectionType": "long-polling",
                "id": "2"}]),
    );
    assert_eq!(
        r,
        [
            json!({"channel": "/meta/connect", "id": "2", "successful": true,
                 "advice": retry_advice()})
        ]
    );
    assert_eq!(t.held(), 0);

    let r = t.send(
        &lp(),
        json!([{"channel": "/meta/connect", "clientId": cid, "connectionType": "long-polling",
                "id": "3"}]),
    );
    assert!(r.is_empty(), "{r:?}");
    assert_eq!(t.held(), 1);
    assert_eq!(
        t.holds[0].deadline(),
        t.now() + Duration::from_millis(30_000)
    );
    assert_eq!(t.holds[0].session().id().as_str(), cid);
    assert_eq!(t.poll_hold(0), Poll::Pending);

    t.advance(30_000);
    // Nothing arrived: the deadline answer is the bare connect reply.
    assert_eq!(t.poll_hold(0), Poll::Pending);
    let r = t.finish_hold();
    assert_eq!(
        r,
        [
            json!({"channel": "/meta/connect", "id": "3", "successful": true,
                 "advice": retry_advice()})
        ]
    );
    assert_eq!(
        t.engine
            .stats()
            .held_connects
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
}

#[test]
fn client_advice_timeout_sets_the_hold_time() {
    let mut t = t();
    let cid = t.session(&lp());
    let r = t.connect_with(&lp(), &cid, json!({"advice": {"timeout": 5000}}));
    assert!(r.is_empty());
    assert_eq!(t.holds[0].deadline(), t.now() + Duration::from_millis(5000));
    t.advance(5000);
    let r = t.finish_hold();
    assert_eq!(
        r[0]["advice"],
        json!({"reconnect": "retry", "interval": 0, "timeout": 5000})
    );
}

#[test]
fn client_advice_timeout_is_capped_by_max_client_timeout() {
    let mut t = Transcript::new(EngineConfig {
        max_client_timeout_ms: 60_000,
        ..EngineConfig::default()
    });
    let cid = t.session(&lp());
    assert!(
        t.connect_with(&lp(), &cid, json!({"advice": {"timeout": 3_600_000}}))
            .is_empty()
    );
    assert_eq!(
        t.holds[0].deadline(),
        t.now() + Duration::from_millis(60_000)
    );
}

#[test]
fn client_advice_timeout_zero_answers_at_once_and_only_that_connect() {
    let mut t = t();
    let cid = t.session(&lp());
    let r = t.connect_with(&lp(), &cid, json!({"id": "9", "advice": {"timeout": 0}}));
    assert_eq!(
        r,
        [
            json!({"channel": "/meta/connect", "id": "9", "successful": true,
                 "advice": retry_advice()})
        ]
    );
    assert_eq!(t.held(), 0);
    // The next plain connect is held for the server's timeout again.
    assert!(t.connect(&lp(), &cid).is_empty());
    assert_eq!(
        t.holds[0].deadline(),
        t.now() + Duration::from_millis(30_000)
    );
}

#[test]
fn a_newer_connect_supersedes_the_held_one_whose_answer_carries_no_messages() {
    let mut t = t();
    let cid = t.session(&lp());
    t.subscribe(&lp(), &cid, json!("/chat"));
    assert!(t.connect_with(&lp(), &cid, json!({"id": "old"})).is_empty());
    assert!(t.connect_with(&lp(), &cid, json!({"id": "new"})).is_empty());
    assert_eq!(t.held(), 2);
    assert_eq!(t.poll_hold(0), Poll::Ready(Wake::Superseded));
    assert_eq!(t.poll_hold(1), Poll::Pending);

    t.engine.publish_json("/chat", &json!("hi")).unwrap();
    // The message belongs to the current connect.
    assert_eq!(t.poll_hold(0), Poll::Ready(Wake::Superseded));
    assert_eq!(t.poll_hold(1), Poll::Ready(Wake::Messages));
    let old = t.finish_hold_at(0);
    assert_eq!(
        old,
        [
            json!({"channel": "/meta/connect", "id": "old", "successful": true,
                 "advice": retry_advice()})
        ]
    );
    let new = t.finish_hold();
    assert_eq!(
        new,
        [
            json!({"channel": "/chat", "data": "hi"}),
            json!({"channel": "/meta/connect", "id": "new", "successful": true,
                   "advice": retry_advice()})
        ]
    );
}

#[test]
fn a_publish_wakes_the_held_connect_and_deliveries_precede_the_connect_reply() {
    let mut t = t();
    let a = t.session(&lp());
    let b = t.session(&lp());
    t.subscribe(&lp(), &a, json!("/chat/room"));
    assert!(t.connect_with(&lp(), &a, json!({"id": "c"})).is_empty());
    assert_eq!(t.poll_last(), Poll::Pending);

    let r = t.publish(
        &lp(),
        &b,
        "/chat/room",
        json!({"text": "hello", "n": [1, 2]}),
    );
    assert_eq!(r.len(), 1);
    assert_eq!(t.poll_last(), Poll::Ready(Wake::Messages));
    t.advance(10);
    let r = t.finish_hold();
    assert_eq!(
        r,
        [
            json!({"channel": "/chat/room", "data": {"text": "hello", "n": [1, 2]}}),
            json!({"channel": "/meta/connect", "id": "c", "successful": true,
                   "advice": retry_advice()})
        ]
    );
}

#[test]
fn a_connect_with_queued_messages_returns_at_once_with_them() {
    let mut t = t();
    let a = t.session(&lp());
    t.subscribe(&lp(), &a, json!("/x"));
    t.engine.publish_json("/x", &1).unwrap();
    t.engine.publish_json("/x", &2).unwrap();
    let r = t.connect_with(&lp(), &a, json!({"id": "q"}));
    assert_eq!(t.held(), 0);
    assert_eq!(
        r,
        [
            json!({"channel": "/x", "data": 1}),
            json!({"channel": "/x", "data": 2}),
            json!({"channel": "/meta/connect", "id": "q", "successful": true,
                   "advice": retry_advice()})
        ]
    );
}

#[test]
fn connect_with_an_unsupported_connection_type_is_refused() {
    let mut t = Transcript::new(lp_only());
    let cid = t.handshake(&lp());
    let r = t.send(
        &lp(),
        json!([{"channel": "/meta/connect", "clientId": cid, "connectionType": "websocket",
                "id": "1"}]),
    );
    assert_eq!(r[0]["successful"], false);
    assert_eq!(r[0]["error"], "400::connection_type_unsupported");
}

#[test]
fn a_websocket_connect_with_queued_messages_completes() {
    within("websocket connect with a queued message", || {
        let mut t = t();
        let cid = t.session(&ws());
        t.subscribe(&ws(), &cid, json!("/w"));
        t.engine.publish_json("/w", &1).unwrap();
        // The writer has not taken the message yet when the next connect arrives.
        let mut all = t.connect(&ws(), &cid);
        if t.held() > 0 {
            assert_eq!(t.poll_last(), Poll::Ready(Wake::Messages));
            all.extend(t.finish_hold());
        }
        assert_eq!(all[0], json!({"channel": "/w", "data": 1}));
        assert_eq!(all.last().unwrap()["successful"], true);
        assert_eq!(t.engine.session(&cid).unwrap().queue_len(), 0);
    });
}

#[test]
fn websocket_messages_are_taken_by_the_writer_not_left_for_the_connect() {
    let mut t = t();
    let cid = t.session(&ws());
    t.subscribe(&ws(), &cid, json!("/w"));
    let s = t.engine.session(&cid).unwrap();
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    assert_eq!(s.poll_messages(&mut cx), Poll::Pending);
    t.engine.publish_json("/w", &1).unwrap();
    t.engine.publish_json("/w", &2).unwrap();
    assert_eq!(s.poll_messages(&mut cx), Poll::Ready(Wake::Messages));
    assert_eq!(
        common::parse_all(&s.take_messages()),
        [
            json!({"channel": "/w", "data": 1}),
            json!({"channel": "/w", "data": 2})
        ]
    );
    assert!(!s.connect_only());
    // A long-polling session keeps them for its connect.
    let lpc = t.session(&lp());
    t.subscribe(&lp(), &lpc, json!("/w"));
    t.engine.publish_json("/w", &3).unwrap();
    assert!(t.engine.session(&lpc).unwrap().take_messages().is_empty());
    assert_eq!(t.drain(&lp(), &lpc), [json!({"channel": "/w", "data": 3})]);
}
