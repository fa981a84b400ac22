//! Handshake: the reply's fields and advice, client ids, version and connection-type
//! negotiation, and a handshake sharing its batch with other messages.

use std::time::Duration;

use crate::common::{Transcript, keys, lp, ws};
use crate::support::{lp_only, none_advice, retry_advice, t};
use bayeux_core::{EngineConfig, TransportKind};
use serde_json::{Value, json};

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
