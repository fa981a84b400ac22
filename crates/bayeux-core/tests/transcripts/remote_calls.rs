//! Remote calls (`/service/<target>` with a handler): the answer goes to the caller only, on the
//! call's channel with its `id`; failures, timeouts on the fake clock, unanswered responders and
//! the bounds on pending calls.

use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use crate::common::{Transcript, lp, ws};
use crate::support::t;
use bayeux_core::{
    Decision, EngineConfig, Error, Message, Responder, SecurityPolicy, Session, Wake,
};
use serde_json::json;

/// Registers `/service/echo` (answers with the data), `/service/fail` (fails with the data) and
/// `/service/later` (keeps the responder in the returned stash), each with a 1 s timeout.
fn services(t: &Transcript) -> Arc<Mutex<Vec<Responder>>> {
    let e = &t.engine;
    let second = Duration::from_secs(1);
    e.on_remote_call("/service/echo", second, |call, r| {
        assert!(r.success(call.data()));
    })
    .unwrap();
    e.on_remote_call("/service/fail", second, |call, r| {
        assert!(r.failure(call.data()));
    })
    .unwrap();
    let stash = Arc::new(Mutex::new(Vec::new()));
    let s = stash.clone();
    e.on_remote_call("/service/later", second, move |_, r| {
        s.lock().unwrap().push(r);
    })
    .unwrap();
    stash
}

#[test]
fn remote_call_answer_reaches_the_caller_with_the_request_id() {
    let mut t = t();
    services(&t);
    let caller = t.session(&lp());
    let other = t.session(&lp());
    let r = t.publish(&lp(), &caller, "/service/echo", json!({"n": 1}));
    // The publish is acknowledged at once, without data (the WebSocket client expects it).
    assert_eq!(
        r,
        [json!({"channel": "/service/echo", "id": "5", "successful": true})]
    );
    assert_eq!(
        t.drain(&lp(), &caller),
        [json!({"channel": "/service/echo", "id": "5", "successful": true, "data": {"n": 1}})]
    );
    assert!(t.drain(&lp(), &other).is_empty(), "the caller only");
    assert_eq!(t.engine.pending_remote_calls(), 0);
}

#[test]
fn remote_call_failure_carries_the_handler_data() {
    let mut t = t();
    services(&t);
    let caller = t.session(&ws());
    t.publish(&ws(), &caller, "/service/fail", json!("nope"));
    let s = t.engine.session(&caller).unwrap();
    let got: Vec<serde_json::Value> = s
        .take_messages()
        .iter()
        .map(|f| serde_json::from_slice(f.object()).unwrap())
        .collect();
    assert_eq!(
        got,
        [json!({"channel": "/service/fail", "id": "3", "successful": false, "data": "nope"})]
    );
}

#[test]
fn remote_call_answered_later_from_another_thread_wakes_the_held_connect() {
    let mut t = t();
    let stash = services(&t);
    let caller = t.session(&lp());
    t.connect(&lp(), &caller);
    assert_eq!(t.held(), 1);
    t.publish(&lp(), &caller, "/service/later", json!([1, 2]));
    assert_eq!(t.poll_last(), Poll::Pending);
    assert_eq!(t.engine.pending_remote_calls(), 1);
    let r = stash.lock().unwrap().pop().unwrap();
    assert!(r.is_pending());
    std::thread::spawn(move || r.success_json(&json!({"sum": 3})).unwrap())
        .join()
        .unwrap();
    assert_eq!(t.poll_last(), Poll::Ready(Wake::Messages));
    let r = t.finish_hold();
    assert_eq!(
        r[0],
        json!({"channel": "/service/later", "id": "4", "successful": true, "data": {"sum": 3}})
    );
    assert_eq!(r[1]["channel"], "/meta/connect");
    assert_eq!(t.engine.pending_remote_calls(), 0);
}

#[test]
fn remote_call_not_answered_in_time_fails_with_a_timeout_on_the_fake_clock() {
    let mut t = t();
    let stash = services(&t);
    let caller = t.session(&lp());
    t.publish(&lp(), &caller, "/service/later", json!(1));
    t.advance(999);
    assert_eq!(t.engine.sweep(t.now()), 0);
    assert!(t.drain(&lp(), &caller).is_empty(), "not yet");
    t.advance(1);
    t.engine.sweep(t.now());
    assert_eq!(
        t.drain(&lp(), &caller),
        [
            json!({"channel": "/service/later", "id": "3", "successful": false,
                "error": "408::remote_call_timeout"})
        ]
    );
    // The late answer loses, and nothing more reaches the client.
    let late = stash.lock().unwrap().pop().unwrap();
    assert!(!late.is_pending());
    assert!(!late.success_json(&2).unwrap());
    assert!(t.drain(&lp(), &caller).is_empty());
    assert_eq!(t.engine.pending_remote_calls(), 0);
}

#[test]
fn remote_call_whose_responder_is_dropped_fails_at_once() {
    let mut t = t();
    t.engine
        .on_remote_call("/service/drop", Duration::from_secs(60), |_, r| drop(r))
        .unwrap();
    let caller = t.session(&lp());
    t.publish(&lp(), &caller, "/service/drop", json!(1));
    assert_eq!(
        t.drain(&lp(), &caller),
        [
            json!({"channel": "/service/drop", "id": "3", "successful": false,
                "error": "500::remote_call_unanswered"})
        ]
    );
    assert_eq!(t.engine.pending_remote_calls(), 0);
}

#[test]
fn remote_call_without_id_is_refused_and_the_handler_not_called() {
    let mut t = t();
    let stash = services(&t);
    let caller = t.session(&lp());
    let r = t.send(
        &lp(),
        json!([{"channel": "/service/later", "clientId": caller, "data": 1}]),
    );
    assert_eq!(r[0]["successful"], false);
    assert_eq!(r[0]["error"], "400::remote_call_id_missing");
    assert!(stash.lock().unwrap().is_empty());
}

#[test]
fn pending_remote_calls_are_bounded_per_session_and_per_engine() {
    let mut t = Transcript::new(EngineConfig {
        max_remote_calls: 3,
        max_remote_calls_per_session: 2,
        ..EngineConfig::default()
    });
    let stash = services(&t);
    let a = t.session(&lp());
    let b = t.session(&lp());
    for _ in 0..2 {
        let r = t.publish(&lp(), &a, "/service/later", json!(1));
        assert_eq!(r[0]["successful"], true);
    }
    let r = t.publish(&lp(), &a, "/service/later", json!(1));
    assert_eq!(r[0]["error"], "503::too_many_remote_calls");
    let r = t.publish(&lp(), &b, "/service/later", json!(1));
    assert_eq!(r[0]["successful"], true);
    let r = t.publish(&lp(), &b, "/service/later", json!(1));
    assert_eq!(r[0]["error"], "503::too_many_remote_calls", "engine bound");
    assert_eq!(t.engine.pending_remote_calls(), 3);
    assert_eq!(stash.lock().unwrap().len(), 3);
    // Answering one frees its place.
    assert!(stash.lock().unwrap().remove(0).success_json(&0).unwrap());
    let r = t.publish(&lp(), &a, "/service/later", json!(1));
    assert_eq!(r[0]["successful"], true);
}

#[test]
fn remote_call_denied_by_the_security_policy_never_reaches_the_handler() {
    struct NoLater;
    impl SecurityPolicy for NoLater {
        fn can_publish(
            &self,
            _: &Session,
            channel: &bayeux_core::ChannelId,
            _: &Message,
        ) -> Decision {
            if channel.as_str() == "/service/later" {
                Decision::Deny("no".into())
            } else {
                Decision::Allow
            }
        }
    }
    let mut t = t();
    let stash = services(&t);
    t.engine.set_security_policy(Arc::new(NoLater));
    let caller = t.session(&lp());
    let r = t.publish(&lp(), &caller, "/service/later", json!(1));
    assert_eq!(r[0]["error"], "403:no:publish_denied");
    assert!(stash.lock().unwrap().is_empty());
}

#[test]
fn remote_call_handler_owns_its_channel_and_only_service_channels_take_one() {
    let mut t = t();
    services(&t);
    let seen = Arc::new(Mutex::new(0));
    let s = seen.clone();
    let local = t
        .engine
        .local_session(None, move |_| *s.lock().unwrap() += 1);
    local.subscribe("/service/**").unwrap();
    let caller = t.session(&lp());
    t.publish(&lp(), &caller, "/service/echo", json!(1));
    t.publish(&lp(), &caller, "/service/other", json!(1));
    assert_eq!(
        *seen.lock().unwrap(),
        1,
        "only the message without a handler"
    );
    assert!(matches!(
        t.engine
            .on_remote_call("/chat/room", Duration::from_secs(1), |_, _| {}),
        Err(Error::InvalidChannel(_))
    ));
    assert!(matches!(
        t.engine
            .on_remote_call("/service/*", Duration::from_secs(1), |_, _| {}),
        Err(Error::InvalidChannel(_))
    ));
    assert!(t.engine.remove_remote_call("/service/echo"));
    assert!(!t.engine.remove_remote_call("/service/echo"));
    t.publish(&lp(), &caller, "/service/echo", json!(1));
    assert_eq!(
        *seen.lock().unwrap(),
        2,
        "no handler: an ordinary service message"
    );
}
