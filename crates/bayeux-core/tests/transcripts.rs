//! Scenario tests written as Bayeux transcripts: JSON batches in, exact JSON replies out, over a
//! fake clock. Each test reads as a conversation between one or more clients and the engine.

mod common;

use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bayeux_core::{
    AckExtension, ChannelId, Decision, EngineConfig, Error, Extension, Limits, Message,
    OverflowPolicy, Reply, RequestContext, SecurityPolicy, Session, TimesyncExtension,
    TransportKind, Wake, decode_batch,
};
use common::{Recorder, Transcript, keys, lp, short_id, within, ws};
use serde_json::{Value, json};

fn t() -> Transcript {
    Transcript::new(EngineConfig::default())
}

fn lp_only() -> EngineConfig {
    EngineConfig {
        transports: vec![TransportKind::LongPolling],
        ..EngineConfig::default()
    }
}

/// The advice every reply of a default engine carries for a live session.
fn retry_advice() -> Value {
    json!({"reconnect": "retry", "interval": 0, "timeout": 30000})
}

/// The advice of `402::session_unknown`.
fn handshake_advice() -> Value {
    json!({"reconnect": "handshake", "interval": 0, "timeout": 30000})
}

fn none_advice() -> Value {
    json!({"reconnect": "none", "interval": 0, "timeout": 30000})
}

// ---------------------------------------------------------------------------------------------
// Handshake
// ---------------------------------------------------------------------------------------------

#[test]
fn handshake_reply_has_version_types_client_id_complete_advice_and_echoes_id() {
    let mut t = t();
    let r = t.send(
        &lp(),
        json!([{"channel": "/meta/handshake", "version": "1.0", "minimumVersion": "1.0",
                "supportedConnectionTypes": ["long-polling", "callback-polling"], "id": "1"}]),
    );
    assert_eq!(r.len(), 1);
    let h = &r[0];
    assert_eq!(
        keys(h),
        [
            "advice",
            "channel",
            "clientId",
            "id",
            "minimumVersion",
            "successful",
            "supportedConnectionTypes",
            "version"
        ]
    );
    assert_eq!(h["channel"], "/meta/handshake");
    assert_eq!(h["id"], "1");
    assert_eq!(h["successful"], true);
    assert_eq!(h["version"], "1.0");
    assert_eq!(h["minimumVersion"], "1.0");
    assert_eq!(
        h["supportedConnectionTypes"],
        json!(["websocket", "long-polling", "callback-polling"])
    );
    assert_eq!(h["advice"], retry_advice());
    let cid = h["clientId"].as_str().unwrap();
    assert_eq!(cid.len(), 40);
    assert!(
        cid.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "{cid}"
    );
    assert_eq!(t.engine.session_count(), 1);
    assert!(t.engine.session(cid).is_some());
}

#[test]
fn handshake_numeric_id_is_echoed_as_a_number() {
    let mut t = t();
    let r = t.send(
        &lp(),
        json!([{"channel": "/meta/handshake", "version": "1.0", "id": 42,
                "supportedConnectionTypes": ["long-polling"]}]),
    );
    assert_eq!(r[0]["id"], json!(42));
}

#[test]
fn every_handshake_gets_a_distinct_client_id() {
    let mut t = t();
    let a = t.handshake(&lp());
    let b = t.handshake(&lp());
    assert_ne!(a, b);
    assert_eq!(t.engine.session_count(), 2);
}

#[test]
fn handshake_advertises_max_interval_when_configured() {
    let mut t = Transcript::new(EngineConfig {
        advertise_max_interval: true,
        ..EngineConfig::default()
    });
    let r = t.send(
        &lp(),
        json!([{"channel": "/meta/handshake", "version": "1.0",
                "supportedConnectionTypes": ["long-polling"]}]),
    );
    assert_eq!(
        r[0]["advice"],
        json!({"reconnect": "retry", "interval": 0, "timeout": 30000, "maxInterval": 10000})
    );
    // No id sent, none echoed.
    assert!(r[0].get("id").is_none());
}

/// The CometD JavaScript client sends its own defaults on every handshake
/// (`advice: {timeout: 60000, interval: 0}`). CometD reads client advice only on
/// `/meta/connect`, for that connect; here a handshake's advice would replace the operator's
/// `timeout` for every JS session (60 s holds: exactly the idle timeout of common proxies).
#[test]
fn the_js_clients_handshake_advice_does_not_override_the_server_timeout() {
    let mut t = t();
    let r = t.send(
        &lp(),
        json!([{"id": "1", "version": "1.0", "minimumVersion": "1.0",
                "channel": "/meta/handshake",
                "supportedConnectionTypes": ["websocket", "long-polling", "callback-polling"],
                "advice": {"timeout": 60000, "interval": 0}}]),
    );
    assert_eq!(r[0]["advice"], retry_advice(), "handshake reply advice");
    let cid = r[0]["clientId"].as_str().unwrap().to_owned();
    // The JS client's first connect asks for an immediate answer; the next one is held.
    let r = t.connect_with(&lp(), &cid, json!({"advice": {"timeout": 0}}));
    assert_eq!(r[0]["advice"], retry_advice());
    assert!(t.connect(&lp(), &cid).is_empty());
    assert_eq!(
        t.holds[0].deadline() - t.now(),
        Duration::from_millis(30_000),
        "hold time"
    );
}

#[test]
fn minimum_version_2_is_refused_with_version_unsupported() {
    let mut t = t();
    let r = t.send(
        &lp(),
        json!([{"channel": "/meta/handshake", "version": "2.0", "minimumVersion": "2.0",
                "supportedConnectionTypes": ["long-polling"], "id": "7"}]),
    );
    assert_eq!(
        r,
        [
            json!({"channel": "/meta/handshake", "id": "7", "successful": false,
                 "error": "400::version_unsupported", "advice": none_advice()})
        ]
    );
    assert_eq!(t.engine.session_count(), 0);
}

#[test]
fn minimum_version_1_is_accepted() {
    let mut t = t();
    for min in ["1.0", "1", "0.9"] {
        let r = t.send(
            &lp(),
            json!([{"channel": "/meta/handshake", "version": "1.0", "minimumVersion": min,
                    "supportedConnectionTypes": ["long-polling"]}]),
        );
        assert_eq!(r[0]["successful"], true, "{min}");
    }
}

#[test]
fn connection_types_are_negotiated_ignoring_unknown_ones() {
    let mut t = Transcript::new(EngineConfig {
        transports: vec![TransportKind::LongPolling, TransportKind::CallbackPolling],
        ..EngineConfig::default()
    });
    let r = t.send(
        &lp(),
        json!([{"channel": "/meta/handshake", "version": "1.0",
                "supportedConnectionTypes": ["websocket", "flash", "long-polling"]}]),
    );
    assert_eq!(r[0]["successful"], true);
    assert_eq!(
        r[0]["supportedConnectionTypes"],
        json!(["long-polling", "callback-polling"])
    );
}

#[test]
fn no_common_connection_type_is_refused_with_reconnect_none() {
    let mut t = Transcript::new(lp_only());
    let r = t.send(
        &lp(),
        json!([{"channel": "/meta/handshake", "version": "1.0", "id": "1",
                "supportedConnectionTypes": ["websocket", "iframe"]}]),
    );
    assert_eq!(
        r,
        [
            json!({"channel": "/meta/handshake", "id": "1", "successful": false,
                 "error": "400::connection_type_unsupported", "advice": none_advice()})
        ]
    );
    // A handshake arriving on a transport the server does not offer is refused too.
    let r = t.send(
        &ws(),
        json!([{"channel": "/meta/handshake", "version": "1.0", "id": "2",
                "supportedConnectionTypes": ["websocket", "long-polling"]}]),
    );
    assert_eq!(r[0]["error"], "400::connection_type_unsupported");
    assert_eq!(r[0]["advice"]["reconnect"], "none");
    assert_eq!(t.engine.session_count(), 0);
}

#[test]
fn a_handshake_travels_alone_other_messages_of_its_batch_are_ignored() {
    let mut t = t();
    let old = t.session(&lp());
    t.subscribe(&lp(), &old, json!("/chat"));
    let r = t.send(
        &lp(),
        json!([
            {"channel": "/chat", "clientId": old, "data": "before", "id": "1"},
            {"channel": "/meta/handshake", "version": "1.0", "id": "2",
             "supportedConnectionTypes": ["long-polling"]},
            {"channel": "/meta/subscribe", "clientId": old, "subscription": "/other", "id": "3"},
            {"channel": "/chat", "clientId": old, "data": "after", "id": "4"},
        ]),
    );
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(r[0]["channel"], "/meta/handshake");
    assert_eq!(r[0]["id"], "2");
    assert_eq!(r[0]["successful"], true);
    // Neither publish nor the subscribe took effect.
    assert_eq!(t.drain(&lp(), &old), Vec::<Value>::new());
    let s = t.engine.session(&old).unwrap();
    assert_eq!(s.subscriptions().len(), 1);
}

// ---------------------------------------------------------------------------------------------
// Connect
// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// Subscribe / unsubscribe
// ---------------------------------------------------------------------------------------------

#[test]
fn subscribe_and_unsubscribe_echo_string_and_array_forms() {
    let mut t = t();
    let cid = t.session(&lp());
    let r = t.send(
        &lp(),
        json!([{"channel": "/meta/subscribe", "clientId": cid, "subscription": "/a", "id": "1"},
               {"channel": "/meta/subscribe", "clientId": cid,
                "subscription": ["/b", "/c/*"], "id": "2"}]),
    );
    assert_eq!(
        r,
        [
            json!({"channel": "/meta/subscribe", "id": "1", "successful": true,
                   "subscription": "/a"}),
            json!({"channel": "/meta/subscribe", "id": "2", "successful": true,
                   "subscription": ["/b", "/c/*"]})
        ]
    );
    let s = t.engine.session(&cid).unwrap();
    let subs: Vec<String> = s.subscriptions().iter().map(|p| p.to_string()).collect();
    assert_eq!(subs, ["/a", "/b", "/c/*"]);

    let r = t.send(
        &lp(),
        json!([{"channel": "/meta/unsubscribe", "clientId": cid, "subscription": "/a", "id": "3"},
               {"channel": "/meta/unsubscribe", "clientId": cid,
                "subscription": ["/b", "/c/*"], "id": "4"}]),
    );
    assert_eq!(
        r,
        [
            json!({"channel": "/meta/unsubscribe", "id": "3", "successful": true,
                   "subscription": "/a"}),
            json!({"channel": "/meta/unsubscribe", "id": "4", "successful": true,
                   "subscription": ["/b", "/c/*"]})
        ]
    );
    assert!(s.subscriptions().is_empty());
    assert_eq!(t.engine.channel_count(), 0);
    t.engine.publish_json("/a", &1).unwrap();
    t.engine.publish_json("/c/d", &1).unwrap();
    assert!(t.drain(&lp(), &cid).is_empty());
}

#[test]
fn wildcard_subscriptions_match_one_or_many_segments() {
    let mut t = t();
    let one = t.session(&lp());
    let deep = t.session(&lp());
    t.subscribe(&lp(), &one, json!("/a/*"));
    t.subscribe(&lp(), &deep, json!("/a/**"));
    for ch in ["/a", "/a/b", "/a/b/c", "/ab/c"] {
        t.engine.publish_json(ch, &ch).unwrap();
    }
    assert_eq!(
        t.drain(&lp(), &one),
        [json!({"channel": "/a/b", "data": "/a/b"})]
    );
    assert_eq!(
        t.drain(&lp(), &deep),
        [
            json!({"channel": "/a/b", "data": "/a/b"}),
            json!({"channel": "/a/b/c", "data": "/a/b/c"})
        ]
    );
}

#[test]
fn invalid_and_missing_subscriptions_are_refused() {
    let mut t = t();
    let cid = t.session(&lp());
    for bad in [
        json!("/a/*/b"),
        json!("nope"),
        json!("/a//b"),
        json!(["/ok", "/**/x"]),
    ] {
        let r = t.send(
            &lp(),
            json!([{"channel": "/meta/subscribe", "clientId": cid, "subscription": bad,
                    "id": "5"}]),
        );
        assert_eq!(
            r,
            [
                json!({"channel": "/meta/subscribe", "id": "5", "successful": false,
                     "error": "403::subscription_invalid", "subscription": bad,
                     "advice": retry_advice()})
            ]
        );
    }
    // A refused array subscribes none of its names.
    assert!(t.engine.session(&cid).unwrap().subscriptions().is_empty());

    for (channel, sub) in [
        ("/meta/subscribe", None),
        ("/meta/subscribe", Some(json!([]))),
        ("/meta/unsubscribe", None),
    ] {
        let mut msg = json!({"channel": channel, "clientId": cid, "id": "6"});
        if let Some(s) = &sub {
            msg["subscription"] = s.clone();
        }
        let r = t.send(&lp(), json!([msg]));
        assert_eq!(r[0]["successful"], false);
        assert_eq!(
            r[0]["error"], "403::subscription_missing",
            "{channel} {sub:?}"
        );
        assert_eq!(r[0]["channel"], channel);
        assert_eq!(r[0]["id"], "6");
    }
    let r = t.send(
        &lp(),
        json!([{"channel": "/meta/unsubscribe", "clientId": cid, "subscription": "/a/*/b"}]),
    );
    assert_eq!(r[0]["error"], "403::subscription_invalid");
}

#[test]
fn subscribing_to_meta_channels_is_denied() {
    let mut t = t();
    let cid = t.session(&lp());
    for sub in [
        json!("/meta/**"),
        json!("/meta/connect"),
        json!(["/ok", "/meta/*"]),
    ] {
        let r = t.send(
            &lp(),
            json!([{"channel": "/meta/subscribe", "clientId": cid, "subscription": sub,
                    "id": "1"}]),
        );
        assert_eq!(r[0]["successful"], false);
        assert_eq!(
            r[0]["error"],
            "403:denied_by_security_policy:subscribe_denied"
        );
        assert_eq!(r[0]["subscription"], sub);
    }
    assert!(t.engine.session(&cid).unwrap().subscriptions().is_empty());
}

#[test]
fn service_subscriptions_are_accepted_but_never_broadcast() {
    let mut t = t();
    let cid = t.session(&lp());
    let r = t.send(
        &lp(),
        json!([{"channel": "/meta/subscribe", "clientId": cid,
                "subscription": ["/service/**", "/service/echo"], "id": "1"}]),
    );
    assert_eq!(r[0]["successful"], true);
    assert_eq!(
        r[0]["subscription"],
        json!(["/service/**", "/service/echo"])
    );
    assert!(t.engine.session(&cid).unwrap().subscriptions().is_empty());
    // Not even a `/**` subscriber sees service traffic.
    t.subscribe(&lp(), &cid, json!("/**"));
    let other = t.session(&lp());
    let r = t.publish(&lp(), &other, "/service/echo", json!("x"));
    assert_eq!(r[0]["successful"], true);
    t.engine.publish_json("/service/echo", &"y").unwrap();
    assert!(t.drain(&lp(), &cid).is_empty());
}

#[test]
fn max_subscriptions_bounds_each_session() {
    let mut t = Transcript::new(EngineConfig {
        max_subscriptions: 2,
        ..EngineConfig::default()
    });
    let cid = t.session(&lp());
    t.subscribe(&lp(), &cid, json!(["/a", "/b"]));
    let r = t.send(
        &lp(),
        json!([{"channel": "/meta/subscribe", "clientId": cid, "subscription": "/c", "id": "1"}]),
    );
    assert_eq!(r[0]["successful"], false);
    assert_eq!(r[0]["error"], "403:too_many_subscriptions:subscribe_denied");
    assert_eq!(r[0]["subscription"], "/c");
    // Re-subscribing to an existing name is not a new subscription.
    t.subscribe(&lp(), &cid, json!("/a"));
    assert_eq!(t.engine.session(&cid).unwrap().subscriptions().len(), 2);
    // Other sessions have their own bound.
    let other = t.session(&lp());
    t.subscribe(&lp(), &other, json!(["/c", "/d"]));
}

// ---------------------------------------------------------------------------------------------
// Publish
// ---------------------------------------------------------------------------------------------

#[test]
fn publish_reply_has_no_data_and_the_delivery_has_no_id_or_client_id() {
    let mut t = t();
    let publisher = t.session(&lp());
    let sub = t.session(&lp());
    t.subscribe(&lp(), &sub, json!("/chat"));
    let r = t.send(
        &lp(),
        json!([{"channel": "/chat", "clientId": publisher, "id": "77",
                "data": {"msg": "hi", "big": 12345678901234567890u64}}]),
    );
    assert_eq!(
        r,
        [json!({"channel": "/chat", "id": "77", "successful": true})]
    );
    assert_eq!(
        t.drain(&lp(), &sub),
        [json!({"channel": "/chat", "data": {"msg": "hi", "big": 12345678901234567890u64}})]
    );
}

#[test]
fn publish_data_is_relayed_byte_for_byte() {
    let mut t = t();
    let cid = t.session(&lp());
    t.subscribe(&lp(), &cid, json!("/raw"));
    let body = format!(
        r#"[{{"channel":"/raw","clientId":"{cid}","data":{{"n":1.50,"big":123456789012345678901234567890,"s":"\u00e9"}}}}]"#
    );
    t.send_bytes(&lp(), body.as_bytes()).unwrap();
    let connect =
        format!(r#"[{{"channel":"/meta/connect","clientId":"{cid}","advice":{{"timeout":0}}}}]"#);
    let batch = decode_batch(connect.as_bytes(), &Limits::default()).unwrap();
    let out = t.engine.handle_batch(&lp(), batch, t.now());
    let body = bayeux_core::join_array(&out.replies);
    let body = std::str::from_utf8(&body).unwrap();
    assert!(
        body.starts_with(
            r#"[{"channel":"/raw","data":{"n":1.50,"big":123456789012345678901234567890,"s":"\u00e9"}},{"channel":"/meta/connect","#
        ),
        "{body}"
    );
}

#[test]
fn a_session_matched_by_two_patterns_gets_one_copy() {
    let mut t = t();
    let cid = t.session(&lp());
    t.subscribe(&lp(), &cid, json!(["/a/b", "/a/*", "/a/**", "/**"]));
    t.engine.publish_json("/a/b", &1).unwrap();
    assert_eq!(
        t.drain(&lp(), &cid),
        [json!({"channel": "/a/b", "data": 1})]
    );
}

#[test]
fn publish_refusals_carry_the_cometd_error_strings() {
    let mut t = t();
    let cid = t.session(&lp());
    t.subscribe(&lp(), &cid, json!("/**"));
    let cases = [
        (
            json!({"channel": "/a/*", "clientId": cid, "data": 1, "id": "1"}),
            json!({"channel": "/a/*", "id": "1", "successful": false,
                   "error": "405::channel_invalid", "advice": retry_advice()}),
        ),
        (
            json!({"channel": "/a/**", "clientId": cid, "data": 1, "id": "2"}),
            json!({"channel": "/a/**", "id": "2", "successful": false,
                   "error": "405::channel_invalid", "advice": retry_advice()}),
        ),
        (
            json!({"channel": "/meta/foo", "clientId": cid, "data": 1, "id": "3"}),
            json!({"channel": "/meta/foo", "id": "3", "successful": false,
                   "error": "403:denied_by_security_policy:publish_denied",
                   "advice": retry_advice()}),
        ),
        (
            json!({"channel": "/a", "clientId": cid, "id": "4"}),
            json!({"channel": "/a", "id": "4", "successful": false,
                   "error": "400::data_missing", "advice": retry_advice()}),
        ),
        (
            json!({"clientId": cid, "data": 1, "id": "5"}),
            json!({"channel": null, "id": "5", "successful": false,
                   "error": "400::channel_missing", "advice": retry_advice()}),
        ),
        (
            json!({"channel": "/a", "clientId": cid, "data": 1, "id": "a-b"}),
            json!({"channel": "/a", "id": "a-b", "successful": false,
                   "error": "405::message_id_invalid", "advice": retry_advice()}),
        ),
        (
            json!({"channel": "no-slash", "clientId": cid, "data": 1}),
            json!({"channel": "no-slash", "successful": false,
                   "error": "405::channel_invalid", "advice": retry_advice()}),
        ),
    ];
    for (msg, want) in cases {
        let r = t.send(&lp(), json!([msg]));
        assert_eq!(r, [want], "{msg}");
    }
    assert!(
        t.drain(&lp(), &cid).is_empty(),
        "no refused publish was delivered"
    );
}

#[test]
fn message_ids_must_be_alphanumeric_on_meta_channels_too() {
    let mut t = t();
    let r = t.send(
        &lp(),
        json!([{"channel": "/meta/handshake", "version": "1.0", "id": "1.5",
                "supportedConnectionTypes": ["long-polling"]}]),
    );
    assert_eq!(r[0]["error"], "405::message_id_invalid");
    assert_eq!(r[0]["id"], "1.5");
    let long = "a".repeat(65);
    let r = t.send(
        &lp(),
        json!([{"channel": "/meta/handshake", "version": "1.0", "id": long,
                "supportedConnectionTypes": ["long-polling"]}]),
    );
    assert_eq!(r[0]["error"], "405::message_id_invalid");
    assert_eq!(t.engine.session_count(), 0);
}

#[test]
fn data_null_is_a_valid_publish() {
    let mut t = t();
    let cid = t.session(&lp());
    t.subscribe(&lp(), &cid, json!("/n"));
    let r = t.publish(&lp(), &cid, "/n", Value::Null);
    assert_eq!(r[0]["successful"], true);
    assert_eq!(
        t.drain(&lp(), &cid),
        [json!({"channel": "/n", "data": null})]
    );
}

#[test]
fn publisher_gets_its_own_broadcast_only_with_broadcast_to_publisher() {
    for (flag, own) in [(true, 1), (false, 0)] {
        let mut t = Transcript::new(EngineConfig {
            broadcast_to_publisher: flag,
            ..EngineConfig::default()
        });
        let publisher = t.session(&lp());
        let other = t.session(&lp());
        t.subscribe(&lp(), &publisher, json!("/chat"));
        t.subscribe(&lp(), &other, json!("/chat"));
        let r = t.publish(&lp(), &publisher, "/chat", json!("m"));
        assert_eq!(r[0]["successful"], true);
        assert_eq!(
            t.drain(&lp(), &publisher).len(),
            own,
            "broadcast_to_publisher={flag}"
        );
        assert_eq!(
            t.drain(&lp(), &other),
            [json!({"channel": "/chat", "data": "m"})]
        );
    }
}

#[test]
fn publish_ext_travels_with_the_delivery() {
    let mut t = t();
    let cid = t.session(&lp());
    t.subscribe(&lp(), &cid, json!("/e"));
    t.send(
        &lp(),
        json!([{"channel": "/e", "clientId": cid, "data": 1, "ext": {"tag": "x"}}]),
    );
    assert_eq!(
        t.drain(&lp(), &cid),
        [json!({"channel": "/e", "data": 1, "ext": {"tag": "x"}})]
    );
}

// ---------------------------------------------------------------------------------------------
// Disconnect, unknown sessions, bindings
// ---------------------------------------------------------------------------------------------

#[test]
fn disconnect_releases_the_held_connect_and_forgets_the_session() {
    let mut t = t();
    let cid = t.session(&lp());
    t.subscribe(&lp(), &cid, json!("/chat"));
    assert!(
        t.connect_with(&lp(), &cid, json!({"id": "held"}))
            .is_empty()
    );
    assert_eq!(t.poll_last(), Poll::Pending);

    let r = t.send(
        &lp(),
        json!([{"channel": "/meta/disconnect", "clientId": cid, "id": "9"}]),
    );
    assert_eq!(
        r,
        [json!({"channel": "/meta/disconnect", "id": "9", "successful": true})]
    );
    assert_eq!(t.poll_last(), Poll::Ready(Wake::Closed));
    // The client asked to stop: its pending connect succeeds and says so (as CometD does).
    let r = t.finish_hold();
    assert_eq!(
        r,
        [
            json!({"channel": "/meta/connect", "id": "held", "successful": true,
                 "advice": none_advice()})
        ]
    );
    assert_eq!(t.engine.session_count(), 0);
    assert_eq!(t.engine.channel_count(), 0);

    for (msg, channel) in [
        (
            json!({"channel": "/meta/connect", "connectionType": "long-polling"}),
            "/meta/connect",
        ),
        (
            json!({"channel": "/meta/subscribe", "subscription": "/a"}),
            "/meta/subscribe",
        ),
        (json!({"channel": "/chat", "data": 1}), "/chat"),
        (json!({"channel": "/meta/disconnect"}), "/meta/disconnect"),
    ] {
        let mut msg = msg;
        msg["clientId"] = json!(cid);
        msg["id"] = json!("10");
        let r = t.send(&lp(), json!([msg]));
        assert_eq!(r.len(), 1);
        assert_eq!(r[0]["channel"], channel);
        assert_eq!(r[0]["id"], "10");
        assert_eq!(r[0]["successful"], false);
        assert_eq!(r[0]["error"], "402::session_unknown");
        assert_eq!(r[0]["advice"], handshake_advice());
    }
}

#[test]
fn unknown_or_missing_client_id_is_402_on_every_channel() {
    let mut t = t();
    let bogus = "0".repeat(40);
    let messages = [
        json!({"channel": "/meta/connect", "connectionType": "long-polling"}),
        json!({"channel": "/meta/subscribe", "subscription": "/a"}),
        json!({"channel": "/meta/unsubscribe", "subscription": "/a"}),
        json!({"channel": "/meta/disconnect"}),
        json!({"channel": "/a/b", "data": {}}),
        json!({"channel": "/service/x", "data": {}}),
    ];
    for base in &messages {
        for cid in [Some(bogus.as_str()), None] {
            let mut msg = base.clone();
            msg["id"] = json!("3");
            if let Some(c) = cid {
                msg["clientId"] = json!(c);
            }
            let r = t.send(&lp(), json!([msg]));
            assert_eq!(r.len(), 1, "{msg}");
            assert_eq!(r[0]["channel"], base["channel"]);
            assert_eq!(r[0]["id"], "3");
            assert_eq!(r[0]["successful"], false, "{msg}");
            assert_eq!(r[0]["error"], "402::session_unknown", "{msg}");
            assert_eq!(r[0]["advice"], handshake_advice());
            if base["channel"] == "/meta/subscribe" || base["channel"] == "/meta/unsubscribe" {
                assert_eq!(r[0]["subscription"], "/a");
            }
        }
    }
    assert_eq!(t.held(), 0);
}

#[test]
fn a_session_is_bound_to_its_principal() {
    let mut t = t();
    let alice = lp().with_principal("alice");
    let cid = t.session(&alice);
    let bob = lp().with_principal("bob");
    for ctx in [&bob, &lp()] {
        let r = t.send(
            ctx,
            json!([{"channel": "/meta/subscribe", "clientId": cid, "subscription": "/a"},
                   {"channel": "/meta/connect", "clientId": cid, "connectionType": "long-polling"},
                   {"channel": "/a", "clientId": cid, "data": 1},
                   {"channel": "/meta/disconnect", "clientId": cid}]),
        );
        assert_eq!(r.len(), 4);
        for reply in &r {
            assert_eq!(reply["error"], "402::session_unknown", "{reply}");
        }
    }
    assert_eq!(t.held(), 0);
    let s = t.engine.session(&cid).unwrap();
    assert!(s.subscriptions().is_empty());
    assert_eq!(s.principal(), Some("alice"));
    t.subscribe(&alice, &cid, json!("/a"));
    assert_eq!(t.engine.sessions_of("alice").len(), 1);
    assert!(t.engine.sessions_of("bob").is_empty());
}

#[test]
fn a_session_is_bound_to_its_browser() {
    let mut t = t();
    let b1 = lp().with_browser("b1");
    let cid = t.session(&b1);
    let r = t.send(
        &lp().with_browser("b2"),
        json!([{"channel": "/meta/subscribe", "clientId": cid, "subscription": "/a"}]),
    );
    assert_eq!(r[0]["error"], "402::session_unknown");
    // A request without a browser id (e.g. a non-browser client) is accepted.
    t.subscribe(&lp(), &cid, json!("/a"));
    t.subscribe(&b1, &cid, json!("/b"));

    let mut strict = Transcript::new(EngineConfig {
        strict_browser: true,
        ..EngineConfig::default()
    });
    let cid = strict.session(&b1);
    let r = strict.send(
        &lp(),
        json!([{"channel": "/meta/subscribe", "clientId": cid, "subscription": "/a"}]),
    );
    assert_eq!(r[0]["error"], "402::session_unknown");
    strict.subscribe(&b1, &cid, json!("/a"));
    // A session created without a browser id accepts any.
    let plain = strict.session(&lp());
    strict.subscribe(&lp().with_browser("b9"), &plain, json!("/a"));
}

// ---------------------------------------------------------------------------------------------
// Multiple clients of one browser
// ---------------------------------------------------------------------------------------------

#[test]
fn a_second_long_poll_of_one_browser_gets_multiple_clients_advice() {
    let mut t = t();
    let browser = lp().with_browser("b1");
    let s1 = t.session(&browser);
    let s2 = t.session(&browser);
    assert!(t.connect(&browser, &s1).is_empty());
    assert_eq!(t.held(), 1);
    let r = t.connect_with(&browser, &s2, json!({"id": "m"}));
    assert_eq!(t.held(), 1, "the second session's connect is not held");
    assert_eq!(
        r,
        [
            json!({"channel": "/meta/connect", "id": "m", "successful": true,
                 "advice": {"reconnect": "retry", "interval": 2000, "timeout": 30000,
                            "multiple-clients": true}})
        ]
    );
    assert_eq!(
        t.poll_hold(0),
        Poll::Pending,
        "the first session is unaffected"
    );
    // Once the first long poll is answered, the slot is free again.
    t.advance(30_000);
    let r = t.finish_hold();
    assert_eq!(r[0]["advice"], retry_advice());
    assert!(t.connect(&browser, &s2).is_empty());
    assert_eq!(t.held(), 1);
    // ... and now s1 is the extra one.
    let r = t.connect(&browser, &s1);
    assert_eq!(r[0]["advice"]["multiple-clients"], true);
}

#[test]
fn multiple_clients_interval_follows_the_configuration() {
    let mut t = Transcript::new(EngineConfig {
        multi_session_interval_ms: 4500,
        ..EngineConfig::default()
    });
    let browser = lp().with_browser("b1");
    let s1 = t.session(&browser);
    let s2 = t.session(&browser);
    assert!(t.connect(&browser, &s1).is_empty());
    let r = t.connect(&browser, &s2);
    assert_eq!(r[0]["advice"]["interval"], 4500);
    assert_eq!(r[0]["advice"]["multiple-clients"], true);
}

#[test]
fn multiple_clients_does_not_apply_to_http2_websocket_or_other_browsers() {
    let mut t = t();
    let browser = lp().with_browser("b1");
    let s1 = t.session(&browser);
    assert!(t.connect(&browser, &s1).is_empty());

    let mut h2 = lp().with_browser("b1");
    h2.http2 = true;
    let s2 = t.session(&h2);
    assert!(
        t.connect(&h2, &s2).is_empty(),
        "HTTP/2 long polls are exempt"
    );

    let wsb = ws().with_browser("b1");
    let s3 = t.session(&wsb);
    assert!(t.connect(&wsb, &s3).is_empty(), "WebSocket is exempt");

    let other = lp().with_browser("b2");
    let s4 = t.session(&other);
    assert!(
        t.connect(&other, &s4).is_empty(),
        "another browser has its own slot"
    );
    assert_eq!(t.held(), 4);

    let mut unlimited = Transcript::new(EngineConfig {
        max_sessions_per_browser: 0,
        ..EngineConfig::default()
    });
    let a = unlimited.session(&browser);
    let b = unlimited.session(&browser);
    assert!(unlimited.connect(&browser, &a).is_empty());
    assert!(unlimited.connect(&browser, &b).is_empty());
}

/// A client whose long poll was cut (page reload, network blip) reconnects while the server
/// still holds the old request. That is the same session replacing its own connect, not a second
/// client of the browser: the new connect must be held, not told `multiple-clients`.
#[test]
fn a_session_superseding_its_own_held_connect_is_not_a_multiple_clients_case() {
    let mut t = t();
    let browser = lp().with_browser("b1");
    let s = t.session(&browser);
    assert!(
        t.connect_with(&browser, &s, json!({"id": "old"}))
            .is_empty()
    );
    let r = t.connect_with(&browser, &s, json!({"id": "new"}));
    assert!(
        r.is_empty(),
        "the reconnect of the same session was answered at once: {r:?}"
    );
    assert_eq!(t.held(), 2);
    assert_eq!(t.poll_hold(0), Poll::Ready(Wake::Superseded));
}

// ---------------------------------------------------------------------------------------------
// Expiry and limits
// ---------------------------------------------------------------------------------------------

#[test]
fn sweep_removes_sessions_after_interval_plus_max_interval() {
    let mut t = t();
    let rec = Recorder::new();
    t.engine.add_listener(rec.clone());
    let cid = t.session(&lp());
    rec.take();
    t.advance(10_000);
    assert_eq!(
        t.engine.sweep(t.now()),
        0,
        "exactly maxInterval is still alive"
    );
    t.advance(1);
    assert_eq!(t.engine.sweep(t.now()), 1);
    assert_eq!(rec.take(), [format!("removed {} Expired", short_id(&cid))]);
    assert_eq!(t.engine.session_count(), 0);
    let r = t.connect(&lp(), &cid);
    assert_eq!(r[0]["error"], "402::session_unknown");
    assert_eq!(r[0]["advice"], handshake_advice());
}

#[test]
fn sweep_counts_the_client_interval() {
    let mut t = t();
    let cid = t.handshake(&lp());
    let r = t.connect_with(
        &lp(),
        &cid,
        json!({"advice": {"interval": 3000, "timeout": 1000}}),
    );
    assert_eq!(
        r[0]["advice"],
        json!({"reconnect": "retry", "interval": 3000, "timeout": 1000})
    );
    t.advance(13_000);
    assert_eq!(t.engine.sweep(t.now()), 0);
    t.advance(1);
    assert_eq!(t.engine.sweep(t.now()), 1);
}

#[test]
fn a_held_connect_keeps_its_session_alive_and_expiry_restarts_at_the_answer() {
    let mut t = t();
    let kept = t.session(&lp());
    let idle1 = t.session(&lp());
    let idle2 = t.session(&lp());
    assert!(t.connect(&lp(), &kept).is_empty());
    t.advance(60_000);
    assert_eq!(t.engine.sweep(t.now()), 2, "the two idle sessions go");
    assert!(t.engine.session(&idle1).is_none());
    assert!(t.engine.session(&idle2).is_none());
    assert!(t.engine.session(&kept).is_some());
    let r = t.finish_hold();
    assert_eq!(r[0]["successful"], true);
    t.advance(10_000);
    assert_eq!(t.engine.sweep(t.now()), 0);
    t.advance(1);
    assert_eq!(t.engine.sweep(t.now()), 1);
}

#[test]
fn a_dropped_hold_expires_from_its_deadline() {
    let mut t = t();
    let cid = t.session(&lp());
    assert!(t.connect(&lp(), &cid).is_empty());
    // The client went away; the transport drops the hold without answering.
    t.holds.clear();
    t.advance(30_000 + 10_000);
    assert_eq!(t.engine.sweep(t.now()), 0);
    t.advance(1);
    assert_eq!(t.engine.sweep(t.now()), 1);
}

/// `close_all` is the server going away, not the client asking to stop: a held connect answered
/// after it must not carry `reconnect: "none"`, or every client stays offline after a restart.
#[test]
fn server_shutdown_does_not_tell_held_clients_to_stop() {
    let mut t = t();
    let cid = t.session(&lp());
    assert!(t.connect(&lp(), &cid).is_empty());
    t.engine.close_all();
    assert_eq!(t.poll_last(), Poll::Ready(Wake::Closed));
    assert_eq!(t.engine.session_count(), 0);
    let r = t.finish_hold();
    assert_ne!(
        r[0]["advice"]["reconnect"], "none",
        "a shutdown answered the held connect like a client disconnect: {}",
        r[0]
    );
}

#[test]
fn max_sessions_refuses_handshakes_and_leaves_existing_sessions_alone() {
    let mut t = Transcript::new(EngineConfig {
        max_sessions: 2,
        ..EngineConfig::default()
    });
    let a = t.session(&lp());
    let b = t.session(&lp());
    let r = t.send(
        &lp(),
        json!([{"channel": "/meta/handshake", "version": "1.0", "id": "3",
                "supportedConnectionTypes": ["long-polling"]}]),
    );
    assert_eq!(
        r,
        [
            json!({"channel": "/meta/handshake", "id": "3", "successful": false,
                 "error": "503::too_many_sessions",
                 // A full server asks for a pause before the next handshake.
                 "advice": {"reconnect": "handshake", "interval": 2000, "timeout": 30000}})
        ]
    );
    assert_eq!(t.engine.session_count(), 2);
    t.subscribe(&lp(), &a, json!("/x"));
    assert_eq!(t.publish(&lp(), &b, "/x", json!(1))[0]["successful"], true);
    assert_eq!(t.drain(&lp(), &a), [json!({"channel": "/x", "data": 1})]);
    // A freed slot can be taken again.
    t.send(
        &lp(),
        json!([{"channel": "/meta/disconnect", "clientId": b}]),
    );
    t.handshake(&lp());
}

#[test]
fn queue_overflow_with_drop_oldest_keeps_the_newest() {
    let mut t = Transcript::new(EngineConfig {
        max_queue: 3,
        overflow: OverflowPolicy::DropOldest,
        ..EngineConfig::default()
    });
    let rec = Recorder::new();
    t.engine.add_listener(rec.clone());
    let cid = t.session(&lp());
    t.subscribe(&lp(), &cid, json!("/q"));
    rec.take();
    for i in 0..5 {
        t.engine.publish_json("/q", &i).unwrap();
    }
    let s = t.engine.session(&cid).unwrap();
    assert_eq!(s.queue_len(), 3);
    assert_eq!(s.dropped(), 2);
    let events = rec.take();
    let full = events
        .iter()
        .filter(|e| e.starts_with("queue_full"))
        .count();
    assert_eq!(full, 2, "{events:?}");
    assert_eq!(
        t.drain(&lp(), &cid),
        [
            json!({"channel": "/q", "data": 2}),
            json!({"channel": "/q", "data": 3}),
            json!({"channel": "/q", "data": 4})
        ]
    );
    assert_eq!(
        t.engine
            .stats()
            .queue_drops
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );
}

#[test]
fn queue_overflow_with_disconnect_removes_the_session() {
    let mut t = Transcript::new(EngineConfig {
        max_queue: 2,
        overflow: OverflowPolicy::Disconnect,
        ..EngineConfig::default()
    });
    let rec = Recorder::new();
    t.engine.add_listener(rec.clone());
    let slow = t.session(&lp());
    let fine = t.session(&lp());
    t.subscribe(&lp(), &slow, json!("/q"));
    t.subscribe(&lp(), &fine, json!("/q"));
    assert!(
        t.connect(&lp(), &slow).is_empty(),
        "slow session holds a connect"
    );
    rec.take();
    t.engine.publish_json("/q", &0).unwrap();
    // The held connect is woken by the first message; the client is too slow to come back.
    t.engine.publish_json("/q", &1).unwrap();
    assert_eq!(t.drain(&lp(), &fine).len(), 2);
    t.engine.publish_json("/q", &2).unwrap();
    assert!(t.engine.session(&slow).is_none());
    let events = rec.take();
    assert!(
        events.contains(&format!("queue_full {}", short_id(&slow))),
        "{events:?}"
    );
    assert!(
        events.contains(&format!("removed {} QueueOverflow", short_id(&slow))),
        "{events:?}"
    );
    assert!(
        events.contains(&format!("unsubscribed {} /q", short_id(&slow))),
        "{events:?}"
    );
    assert_eq!(t.poll_last(), Poll::Ready(Wake::Closed));
    let r = t.finish_hold();
    assert_eq!(r.len(), 1);
    assert_eq!(r[0]["error"], "402::session_unknown");
    assert_eq!(r[0]["advice"]["reconnect"], "handshake");
    let r = t.connect(&lp(), &slow);
    assert_eq!(r[0]["error"], "402::session_unknown");
    // The other subscriber still gets everything.
    assert_eq!(t.drain(&lp(), &fine), [json!({"channel": "/q", "data": 2})]);
}

// ---------------------------------------------------------------------------------------------
// Extensions: ack, timesync, ordering, deletion
// ---------------------------------------------------------------------------------------------

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

fn epoch_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[test]
fn timesync_replies_carry_tc_ts_p_and_a() {
    let mut t = t();
    t.engine.add_extension(Arc::new(TimesyncExtension));
    let tc = epoch_ms() - 1000;
    let before = epoch_ms();
    let r = t.send(
        &lp(),
        json!([{"channel": "/meta/handshake", "version": "1.0",
                "supportedConnectionTypes": ["long-polling"],
                "ext": {"timesync": {"tc": tc, "l": 40, "o": 300}}}]),
    );
    let after = epoch_ms();
    let ts = &r[0]["ext"]["timesync"];
    assert_eq!(keys(ts), ["a", "p", "tc", "ts"]);
    assert_eq!(ts["tc"], tc);
    let server = ts["ts"].as_i64().unwrap();
    assert!(
        (before..=after).contains(&server),
        "{before} {server} {after}"
    );
    let p = ts["p"].as_i64().unwrap();
    assert!((0..=after - before).contains(&p), "{p}");
    assert_eq!(ts["a"].as_i64().unwrap(), tc + 300 + 40 - server);

    // On connect too.
    let cid = r[0]["clientId"].as_str().unwrap().to_owned();
    let r = t.connect_with(
        &lp(),
        &cid,
        json!({"ext": {"timesync": {"tc": tc, "l": 0, "o": 0}}}),
    );
    assert_eq!(r[0]["ext"]["timesync"]["tc"], tc);
    // Not on other channels, nor without a timesync request.
    let r = t.send(
        &lp(),
        json!([{"channel": "/meta/subscribe", "clientId": cid, "subscription": "/a",
                "ext": {"timesync": {"tc": tc, "l": 0, "o": 0}}}]),
    );
    assert!(r[0].get("ext").is_none());
    let r = t.connect_with(&lp(), &cid, json!({"advice": {"timeout": 0}}));
    assert!(r[0].get("ext").is_none());
}

/// The JS client computes `lag = (now - tc - p) / 2` and `offset = ts - tc - lag`. For a held
/// connect, `ts` must be the server time when the request arrived and `p` the time the server
/// kept it; otherwise half the hold time is counted as clock offset.
#[test]
fn timesync_on_a_held_connect_reports_the_hold_as_processing_time() {
    let mut t = t();
    t.engine.add_extension(Arc::new(TimesyncExtension));
    let cid = t.session(&lp());
    let tc = epoch_ms();
    let r = t.connect_with(
        &lp(),
        &cid,
        json!({"ext": {"timesync": {"tc": tc, "l": 0, "o": 0}}}),
    );
    assert!(r.is_empty());
    let received = epoch_ms();
    std::thread::sleep(Duration::from_millis(150));
    let r = t.finish_hold();
    let ts = &r[0]["ext"]["timesync"];
    let server = ts["ts"].as_i64().unwrap();
    let p = ts["p"].as_i64().unwrap();
    assert!(
        server <= received && p >= 100,
        "ts={server} (request arrived by {received}), p={p}: the hold is counted as clock offset"
    );
}

struct Named {
    name: &'static str,
    log: Arc<Mutex<Vec<String>>>,
}

impl Extension for Named {
    fn incoming(&self, _s: Option<&Arc<Session>>, m: &mut Message) -> bool {
        self.log.lock().unwrap().push(format!(
            "in {} {}",
            self.name,
            m.channel.as_deref().unwrap_or("-")
        ));
        true
    }
    fn outgoing(&self, _s: Option<&Arc<Session>>, req: &Message, reply: &mut Reply) {
        self.log.lock().unwrap().push(format!(
            "out {} {}",
            self.name,
            req.channel.as_deref().unwrap_or("-")
        ));
        reply.set_ext(self.name, json!(true));
    }
}

#[test]
fn extensions_run_in_registration_order() {
    let mut t = t();
    let log = Arc::new(Mutex::new(Vec::new()));
    for name in ["first", "second"] {
        t.engine.add_extension(Arc::new(Named {
            name,
            log: log.clone(),
        }));
    }
    let r = t.send(
        &lp(),
        json!([{"channel": "/meta/handshake", "version": "1.0",
                "supportedConnectionTypes": ["long-polling"]}]),
    );
    assert_eq!(r[0]["ext"], json!({"first": true, "second": true}));
    let cid = r[0]["clientId"].as_str().unwrap().to_owned();
    t.publish(&lp(), &cid, "/x", json!(1));
    assert_eq!(
        *log.lock().unwrap(),
        [
            "in first /meta/handshake",
            "in second /meta/handshake",
            "out first /meta/handshake",
            "out second /meta/handshake",
            "in first /x",
            "in second /x",
            "out first /x",
            "out second /x"
        ]
    );
    // A held connect's reply goes through the outgoing extensions when it is finished.
    t.connect(&lp(), &cid);
    assert!(t.connect(&lp(), &cid).is_empty());
    log.lock().unwrap().clear();
    let r = t.finish_hold();
    assert_eq!(r[0]["ext"], json!({"first": true, "second": true}));
    assert_eq!(
        *log.lock().unwrap(),
        ["out first /meta/connect", "out second /meta/connect"]
    );
}

struct Dropper;

impl Extension for Dropper {
    fn incoming(&self, _s: Option<&Arc<Session>>, m: &mut Message) -> bool {
        m.channel.as_deref() != Some("/dropped")
    }
}

struct Rewriter;

impl Extension for Rewriter {
    fn incoming(&self, _s: Option<&Arc<Session>>, m: &mut Message) -> bool {
        if m.channel.as_deref() == Some("/rewrite") {
            m.data = Some(bayeux_core::Raw::from_json(r#""rewritten""#).unwrap());
        }
        true
    }
}

#[test]
fn an_extension_can_delete_or_rewrite_incoming_messages() {
    let mut t = t();
    let log = Arc::new(Mutex::new(Vec::new()));
    t.engine.add_extension(Arc::new(Dropper));
    t.engine.add_extension(Arc::new(Rewriter));
    t.engine.add_extension(Arc::new(Named {
        name: "later",
        log: log.clone(),
    }));
    let cid = t.session(&lp());
    t.subscribe(&lp(), &cid, json!("/*"));
    log.lock().unwrap().clear();
    let r = t.send(
        &lp(),
        json!([{"channel": "/dropped", "clientId": cid, "data": 1, "id": "8"},
               {"channel": "/rewrite", "clientId": cid, "data": 2, "id": "9"}]),
    );
    assert_eq!(
        r[0],
        json!({"channel": "/dropped", "id": "8", "successful": false,
               "error": "404::message_deleted", "advice": retry_advice()})
    );
    assert_eq!(r[1]["successful"], true);
    // Later extensions do not see a deleted message.
    assert_eq!(
        *log.lock().unwrap(),
        ["in later /rewrite", "out later /rewrite"]
    );
    assert_eq!(
        t.drain(&lp(), &cid),
        [json!({"channel": "/rewrite", "data": "rewritten"})]
    );
}

// ---------------------------------------------------------------------------------------------
// Security policy
// ---------------------------------------------------------------------------------------------

struct Policy;

impl SecurityPolicy for Policy {
    fn can_handshake(&self, ctx: &RequestContext, message: &Message) -> Decision {
        match ctx.principal.as_deref() {
            Some("banned") => Decision::Deny("banned_user".into()),
            Some(_) => Decision::Allow,
            None if message.ext_field("token").is_some() => Decision::Allow,
            None => Decision::Unauthenticated("authentication_required".into()),
        }
    }
    fn can_subscribe(
        &self,
        session: &Session,
        pattern: &bayeux_core::ChannelPattern,
        _m: &Message,
    ) -> Decision {
        if pattern.as_str().starts_with("/secret") && session.principal() != Some("admin") {
            Decision::Deny("forbidden".into())
        } else {
            Decision::Allow
        }
    }
    fn can_publish(&self, session: &Session, channel: &ChannelId, _m: &Message) -> Decision {
        if channel.as_str().starts_with("/readonly") && session.principal() != Some("admin") {
            Decision::Deny("read_only".into())
        } else {
            Decision::Allow
        }
    }
}

#[test]
fn security_policy_refuses_handshakes() {
    let mut t = t();
    t.engine.set_security_policy(Arc::new(Policy));
    let hs = json!([{"channel": "/meta/handshake", "version": "1.0", "id": "1",
                     "supportedConnectionTypes": ["long-polling"]}]);
    let r = t.send(&lp().with_principal("banned"), hs.clone());
    assert_eq!(
        r,
        [
            json!({"channel": "/meta/handshake", "id": "1", "successful": false,
                 "error": "403:banned_user:handshake_denied", "advice": none_advice()})
        ]
    );
    let r = t.send(&lp(), hs.clone());
    assert_eq!(
        r,
        [
            json!({"channel": "/meta/handshake", "id": "1", "successful": false,
                 "error": "401::authentication_required", "advice": none_advice()})
        ]
    );
    assert_eq!(t.engine.session_count(), 0);
    let r = t.send(
        &lp(),
        json!([{"channel": "/meta/handshake", "version": "1.0",
                "supportedConnectionTypes": ["long-polling"], "ext": {"token": "t"}}]),
    );
    assert_eq!(r[0]["successful"], true);
    let r = t.send(&lp().with_principal("alice"), hs);
    assert_eq!(r[0]["successful"], true);
}

#[test]
fn security_policy_refuses_subscribes_and_publishes() {
    let mut t = t();
    t.engine.set_security_policy(Arc::new(Policy));
    let alice = lp().with_principal("alice");
    let admin = lp().with_principal("admin");
    let a = t.session(&alice);
    let root = t.session(&admin);

    let r = t.send(
        &alice,
        json!([{"channel": "/meta/subscribe", "clientId": a,
                "subscription": ["/public", "/secret/**"], "id": "1"}]),
    );
    assert_eq!(
        r,
        [
            json!({"channel": "/meta/subscribe", "id": "1", "successful": false,
                 "error": "403:forbidden:subscribe_denied",
                 "subscription": ["/public", "/secret/**"], "advice": retry_advice()})
        ]
    );
    assert!(t.engine.session(&a).unwrap().subscriptions().is_empty());
    t.subscribe(&admin, &root, json!(["/secret/**", "/readonly"]));
    t.subscribe(&alice, &a, json!("/readonly"));

    let r = t.publish(&alice, &a, "/readonly", json!("x"));
    assert_eq!(
        r,
        [
            json!({"channel": "/readonly", "id": r[0]["id"], "successful": false,
                 "error": "403:read_only:publish_denied", "advice": retry_advice()})
        ]
    );
    assert!(t.drain(&admin, &root).is_empty());
    let r = t.publish(&admin, &root, "/readonly", json!("y"));
    assert_eq!(r[0]["successful"], true);
    assert_eq!(
        t.drain(&alice, &a),
        [json!({"channel": "/readonly", "data": "y"})]
    );
}

// ---------------------------------------------------------------------------------------------
// Listeners
// ---------------------------------------------------------------------------------------------

#[test]
fn listeners_see_sessions_subscriptions_and_publishes() {
    let mut t = t();
    let rec = Recorder::new();
    t.engine.add_listener(rec.clone());
    let a = t.handshake(&lp());
    let b = t.handshake(&lp());
    let (sa, sb) = (short_id(&a).to_owned(), short_id(&b).to_owned());
    t.subscribe(&lp(), &a, json!(["/x", "/y/*"]));
    t.subscribe(&lp(), &a, json!("/x"));
    t.send(
        &lp(),
        json!([{"channel": "/meta/unsubscribe", "clientId": a, "subscription": "/x"}]),
    );
    t.publish(&lp(), &b, "/y/z", json!(1));
    t.publish(&lp(), &b, "/nobody", json!(1));
    t.send(
        &lp(),
        json!([{"channel": "/meta/disconnect", "clientId": a}]),
    );
    assert_eq!(
        rec.take(),
        [
            format!("added {sa}"),
            format!("added {sb}"),
            format!("subscribed {sa} /x"),
            format!("subscribed {sa} /y/*"),
            format!("unsubscribed {sa} /x"),
            "published /y/z 1".to_owned(),
            "published /nobody 0".to_owned(),
            format!("unsubscribed {sa} /y/*"),
            format!("removed {sa} Disconnected"),
        ]
    );
    t.advance(10_001);
    t.engine.sweep(t.now());
    assert_eq!(rec.take(), [format!("removed {sb} Expired")]);
}

// ---------------------------------------------------------------------------------------------
// In-process API
// ---------------------------------------------------------------------------------------------

#[test]
fn publish_json_reaches_remote_and_local_subscribers() {
    let mut t = t();
    let cid = t.session(&lp());
    t.subscribe(&lp(), &cid, json!("/news/*"));
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    let local = t.engine.local_session(None, move |d| {
        g.lock().unwrap().push((
            d.channel.to_string(),
            d.data.get().to_owned(),
            d.sender.is_some(),
        ));
    });
    local.subscribe("/news/**").unwrap();
    assert_eq!(
        t.engine
            .publish_json("/news/today", &json!({"h": 1}))
            .unwrap(),
        2
    );
    assert_eq!(t.engine.publish_json("/elsewhere", &1).unwrap(), 0);
    assert!(matches!(
        t.engine.publish_json("/news/*", &1),
        Err(Error::InvalidChannel(_))
    ));
    assert_eq!(
        t.drain(&lp(), &cid),
        [json!({"channel": "/news/today", "data": {"h": 1}})]
    );
    assert_eq!(
        *got.lock().unwrap(),
        [("/news/today".to_owned(), r#"{"h":1}"#.to_owned(), false)]
    );
    // A local session is not reachable with its id from the outside.
    let lid = local.session().id().to_string();
    let r = t.connect(&lp(), &lid);
    assert_eq!(r[0]["error"], "402::session_unknown");
    drop(local);
    assert_eq!(t.engine.publish_json("/news/today", &1).unwrap(), 1);
}

#[test]
fn deliver_reaches_exactly_one_session() {
    let mut t = t();
    let a = t.session(&lp());
    let b = t.session(&lp());
    let ch = ChannelId::parse("/private/note").unwrap();
    let data = serde_json::value::to_raw_value(&json!({"for": "a"})).unwrap();
    t.engine.deliver(&a, &ch, &data).unwrap();
    assert_eq!(
        t.drain(&lp(), &a),
        [json!({"channel": "/private/note", "data": {"for": "a"}})]
    );
    assert!(t.drain(&lp(), &b).is_empty());
    assert_eq!(
        t.engine.deliver(&"f".repeat(40), &ch, &data),
        Err(Error::UnknownSession)
    );
}

#[test]
fn deliver_to_principal_reaches_only_that_principals_sessions() {
    let mut t = t();
    let alice = lp().with_principal("alice");
    let bob = lp().with_principal("bob");
    let a1 = t.session(&alice);
    let a2 = t.session(&ws().with_principal("alice"));
    let b1 = t.session(&bob);
    let anon = t.session(&lp());
    let ch = ChannelId::parse("/v2/me/calls").unwrap();
    let data = serde_json::value::to_raw_value(&json!({"call": 1})).unwrap();
    assert_eq!(t.engine.deliver_to_principal("alice", &ch, &data), 2);
    assert_eq!(t.engine.deliver_to_principal("carol", &ch, &data), 0);
    let want = [json!({"channel": "/v2/me/calls", "data": {"call": 1}})];
    assert_eq!(t.drain(&alice, &a1), want);
    let s2 = t.engine.session(&a2).unwrap();
    let ws_msgs: Vec<Value> = common::parse_all(&s2.take_messages());
    assert_eq!(ws_msgs, want);
    assert!(t.drain(&bob, &b1).is_empty());
    assert!(t.drain(&lp(), &anon).is_empty());
    // Sessions leave the principal's index when they end.
    t.send(
        &alice,
        json!([{"channel": "/meta/disconnect", "clientId": a1}]),
    );
    assert_eq!(t.engine.sessions_of("alice").len(), 1);
    assert_eq!(t.engine.deliver_to_principal("alice", &ch, &data), 1);
}

#[test]
fn a_local_service_answers_a_remote_request_on_its_service_channel() {
    let mut t = t();
    let engine = t.engine.clone();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let service = t.engine.local_session(Some("server"), move |d| {
        let sender = d.sender.expect("a remote sender").to_string();
        s.lock()
            .unwrap()
            .push((sender.clone(), d.id.map(|i| i.as_str().to_owned())));
        engine.deliver(&sender, d.channel, d.data).unwrap();
    });
    service.subscribe("/service/echo").unwrap();
    let cid = t.session(&lp());
    let other = t.session(&lp());
    t.subscribe(&lp(), &other, json!("/**"));
    let r = t.send(
        &lp(),
        json!([{"channel": "/service/echo", "clientId": cid, "id": "12",
                "data": {"ping": true}}]),
    );
    assert_eq!(
        r,
        [json!({"channel": "/service/echo", "id": "12", "successful": true})]
    );
    assert_eq!(
        *seen.lock().unwrap(),
        [(cid.clone(), Some("12".to_owned()))]
    );
    assert_eq!(
        t.drain(&lp(), &cid),
        [json!({"channel": "/service/echo", "data": {"ping": true}})]
    );
    assert!(
        t.drain(&lp(), &other).is_empty(),
        "service traffic is never broadcast"
    );
}

#[test]
fn a_local_session_sees_remote_publishes_with_their_sender() {
    let mut t = t();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let observer = t.engine.local_session(None, move |d| {
        s.lock().unwrap().push((
            d.sender.map(|x| x.to_string()),
            d.id.map(|i| i.as_str().to_owned()),
            d.ext.map(|e| e.get().to_owned()),
        ));
    });
    observer.subscribe("/chat/**").unwrap();
    let cid = t.session(&lp());
    t.send(
        &lp(),
        json!([{"channel": "/chat/a", "clientId": cid, "id": "5", "data": 1, "ext": {"k": 1}}]),
    );
    assert_eq!(
        *seen.lock().unwrap(),
        [(
            Some(cid),
            Some("5".to_owned()),
            Some(r#"{"k":1}"#.to_owned())
        )]
    );
}

// ---------------------------------------------------------------------------------------------
// Bad input
// ---------------------------------------------------------------------------------------------

#[test]
fn undecodable_requests_are_errors_with_bayeux_error_strings() {
    let mut t = Transcript::new(EngineConfig {
        limits: Limits {
            max_bytes: 4096,
            max_messages: 3,
            max_depth: 6,
        },
        ..EngineConfig::default()
    });
    let malformed: &[&[u8]] = &[
        b"",
        b"   ",
        b"{",
        b"[{]",
        b"[{\"channel\":\"/a\",}]",
        b"nope",
        b"5",
        b"\"/meta/handshake\"",
        b"null",
        b"true",
        b"[1]",
        b"[[]]",
        br#"[["/meta/handshake"]]"#,
        b"[null]",
        b"[\"x\"]",
        b"[{}] []",
        b"\xff\xfe[]",
        br#"[{"channel":5}]"#,
        br#"[{"clientId":[]}]"#,
        br#"[{"clientId":7}]"#,
        br#"[{"id":{}}]"#,
        br#"[{"id":true}]"#,
        br#"[{"subscription":5}]"#,
        br#"[{"subscription":[5]}]"#,
        br#"[{"supportedConnectionTypes":"long-polling"}]"#,
        br#"[{"advice":"x"}]"#,
        br#"[{"advice":{"timeout":"5"}}]"#,
        br#"[{"version":1}]"#,
        br#"[{"connectionType":["long-polling"]}]"#,
        br#"[{"channel":"/a","channel":"/b"}]"#,
        br#"[{"data":}]"#,
    ];
    let accepted: Vec<String> = malformed
        .iter()
        .filter(|bad| t.send_bytes(&lp(), bad).is_ok())
        .map(|bad| String::from_utf8_lossy(bad).into_owned())
        .collect();
    assert!(
        accepted.is_empty(),
        "decoded although malformed: {accepted:?}"
    );
    for bad in malformed {
        let e = t.send_bytes(&lp(), bad).unwrap_err();
        assert!(
            matches!(e, Error::Malformed(_)),
            "{:?} -> {e:?}",
            String::from_utf8_lossy(bad)
        );
        assert_eq!(e.bayeux_error(), "400::message_invalid");
        assert!(!e.to_string().is_empty());
    }
    let big = format!(r#"[{{"channel":"/a","data":"{}"}}]"#, "x".repeat(5000));
    let e = t.send_bytes(&lp(), big.as_bytes()).unwrap_err();
    assert_eq!(e, Error::TooLarge { limit: 4096 });
    assert_eq!(e.bayeux_error(), "413::message_too_large");

    let many = json!([{"channel": "/a"}, {"channel": "/a"}, {"channel": "/a"}, {"channel": "/a"}]);
    let e = t
        .send_bytes(&lp(), many.to_string().as_bytes())
        .unwrap_err();
    assert_eq!(e, Error::TooManyMessages { limit: 3 });
    assert_eq!(e.bayeux_error(), "413::batch_too_large");

    let deep = br#"[{"channel":"/a","data":[[[[[1]]]]]}]"#;
    let e = t.send_bytes(&lp(), deep).unwrap_err();
    assert_eq!(e, Error::TooDeep { limit: 6 });
    assert_eq!(e.bayeux_error(), "400::message_too_deep");
    let just_deep_enough = br#"[{"channel":"/a","data":[[[[1]]]]}]"#;
    assert!(t.send_bytes(&lp(), just_deep_enough).is_ok());

    assert_eq!(
        Error::InvalidChannel("x".into()).bayeux_error(),
        "405::channel_invalid"
    );
    assert_eq!(Error::UnknownSession.bayeux_error(), "402::session_unknown");
    assert_eq!(Error::QueueFull.bayeux_error(), "503::queue_full");
    // Nothing above touched the engine.
    assert_eq!(t.engine.session_count(), 0);
    assert_eq!(
        t.engine
            .stats()
            .messages_in
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[test]
fn a_bare_object_and_an_empty_batch_are_accepted() {
    let mut t = t();
    let r = t
        .send_bytes(
            &lp(),
            br#"{"channel":"/meta/handshake","version":"1.0","supportedConnectionTypes":["long-polling"],"id":"1"}"#,
        )
        .unwrap();
    assert_eq!(r[0]["successful"], true);
    assert!(t.send_bytes(&lp(), b"[]").unwrap().is_empty());
    // An object with no channel is answered, not dropped.
    let r = t.send_bytes(&lp(), b"{}").unwrap();
    assert_eq!(
        r,
        [
            json!({"channel": null, "successful": false, "error": "400::channel_missing",
                 "advice": retry_advice()})
        ]
    );
}

#[test]
fn failed_messages_leave_other_sessions_untouched() {
    let mut t = t();
    let victim_ctx = lp().with_principal("victim");
    let victim = t.session(&victim_ctx);
    t.subscribe(&victim_ctx, &victim, json!(["/room", "/other/*"]));
    assert!(t.connect(&victim_ctx, &victim).is_empty());
    let attacker_ctx = lp().with_principal("mallory");
    let attacker = t.session(&attacker_ctx);
    let victim_session = t.engine.session(&victim).unwrap();
    let subs_before = victim_session.subscriptions();

    let r = t.send(
        &attacker_ctx,
        json!([
            {"channel": "/meta/unsubscribe", "clientId": victim, "subscription": "/room"},
            {"channel": "/meta/subscribe", "clientId": victim, "subscription": "/trap"},
            {"channel": "/meta/connect", "clientId": victim, "connectionType": "long-polling"},
            {"channel": "/meta/disconnect", "clientId": victim},
            {"channel": "/room", "clientId": victim, "data": "spoofed"},
            {"channel": "/room/*", "clientId": attacker, "data": 1},
            {"channel": "/room", "clientId": attacker},
            {"channel": "/room", "clientId": attacker, "data": 1, "id": "bad id"},
            {"channel": "/meta/subscribe", "clientId": attacker, "subscription": "/room/**/x"},
            {"clientId": attacker, "data": 1},
            {"channel": "/room", "clientId": attacker, "data": "ok", "id": "last"},
        ]),
    );
    assert_eq!(r.len(), 11);
    for reply in &r[..10] {
        assert_eq!(reply["successful"], false, "{reply}");
    }
    assert_eq!(
        r[10],
        json!({"channel": "/room", "id": "last", "successful": true})
    );
    // The victim's session, subscriptions and held connect are as they were; it received the
    // one valid publish and nothing else.
    assert!(t.engine.session(&victim).is_some());
    assert_eq!(victim_session.subscriptions(), subs_before);
    assert_eq!(t.held(), 1);
    assert_eq!(t.poll_last(), Poll::Ready(Wake::Messages));
    let r = t.finish_hold();
    assert_eq!(r.len(), 2);
    assert_eq!(r[0], json!({"channel": "/room", "data": "ok"}));
    assert_eq!(r[1]["successful"], true);
}
