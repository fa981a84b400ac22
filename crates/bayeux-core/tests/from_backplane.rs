//! `Engine::publish_from_backplane` and `deliver_from_backplane`: what another node (or anyone
//! who can write to the backplane) hands over is serialized again from its fields, and never on
//! a `/meta/**` or `/service/**` channel.

use std::sync::Arc;
use std::time::Instant;

use bayeux_core::{
    ChannelId, ChannelPattern, Engine, EngineConfig, Limits, RequestContext, Session,
    TransportKind, decode_batch,
};
use parking_lot::Mutex;
use serde_json::value::RawValue;

/// A WebSocket session of `principal` (its deliveries are queued bytes, as for any client),
/// subscribed to `patterns`.
fn remote(engine: &Engine, principal: &str, patterns: &[&str]) -> Arc<Session> {
    let ctx = RequestContext::new(TransportKind::WebSocket).with_principal(principal);
    let hs = decode_batch(
        br#"{"channel":"/meta/handshake","version":"1.0","supportedConnectionTypes":["websocket"]}"#,
        &Limits::default(),
    )
    .unwrap();
    let s = engine
        .handle_batch(&ctx, hs, Instant::now())
        .session
        .unwrap();
    for p in patterns {
        assert!(engine.subscribe_session(&s, &ChannelPattern::parse(p).unwrap()));
    }
    s
}

fn queued(s: &Session) -> Vec<String> {
    s.take_messages()
        .iter()
        .map(|f| String::from_utf8(f.array().to_vec()).unwrap())
        .collect()
}

fn raw(json: &str) -> Box<RawValue> {
    RawValue::from_string(json.to_owned()).unwrap()
}

fn ch(name: &str) -> ChannelId {
    ChannelId::parse(name).unwrap()
}

#[test]
fn a_broadcast_from_the_backplane_is_serialized_from_its_fields() {
    let engine = Engine::new(EngineConfig::default());
    let s = remote(&engine, "u1", &["/a/*"]);
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let log = seen.clone();
    let _local = engine.local_session(None, move |d| {
        log.lock().push(format!(
            "{} {} {:?}",
            d.channel.as_str(),
            d.data.get(),
            d.ext.map(|e| e.get())
        ));
    });
    _local.subscribe("/a/*").unwrap();
    let n = engine.publish_from_backplane(&ch("/a/b"), &raw(r#"{"k":1}"#), Some(&raw("{}")));
    assert_eq!(n, 2);
    assert_eq!(
        queued(&s),
        [r#"[{"channel":"/a/b","data":{"k":1},"ext":{}}]"#]
    );
    assert_eq!(*seen.lock(), [r#"/a/b {"k":1} Some("{}")"#]);
}

#[test]
fn the_backplane_cannot_reach_meta_or_service_channels() {
    let engine = Engine::new(EngineConfig::default());
    let s = remote(&engine, "u1", &["/**"]);
    let calls: Arc<Mutex<usize>> = Arc::default();
    let c = calls.clone();
    let service = engine.local_session(Some("u1"), move |_| *c.lock() += 1);
    service.subscribe("/service/x").unwrap();
    let advice = raw(r#"{"reconnect":"none"}"#);
    for name in ["/meta/disconnect", "/meta/connect", "/service/x"] {
        assert_eq!(engine.publish_from_backplane(&ch(name), &advice, None), 0);
        assert_eq!(engine.deliver_from_backplane("u1", &ch(name), &advice), 0);
    }
    assert!(queued(&s).is_empty());
    assert_eq!(*calls.lock(), 0);
    // A per-user delivery on a broadcast channel goes to that user's sessions, rebuilt.
    assert_eq!(
        engine.deliver_from_backplane("u1", &ch("/v2/me/calls"), &raw("[1]")),
        2
    );
    assert_eq!(queued(&s), [r#"[{"channel":"/v2/me/calls","data":[1]}]"#]);
    assert_eq!(
        engine.deliver_from_backplane("u2", &ch("/v2/me/calls"), &raw("1")),
        0
    );
}
