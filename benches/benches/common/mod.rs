//! Helpers shared by the micro-benchmarks: engine sessions made through the public API, the way
//! the transports make them.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Instant;

use bayeux_core::{
    Engine, EngineConfig, Limits, RequestContext, Session, TransportKind, decode_batch,
};

/// A 40-hex-digit client id, the length the engine uses.
pub const CLIENT_ID: &str = "3f2a9c1b7e4d5a6b8c9d0e1f2a3b4c5d6e7f8a9b";

/// A typical chat-like payload.
pub const DATA: &str = r#"{"user":"alice","text":"hello, world: a typical short notification","room":"lobby","at":1700000000123}"#;

/// An engine with room for many sessions and a queue bound that benchmarks do not reach.
pub fn engine() -> Engine {
    Engine::new(EngineConfig {
        max_sessions: 1_000_000,
        max_queue: 100_000,
        ..EngineConfig::default()
    })
}

/// Runs one batch of JSON text.
pub fn batch(engine: &Engine, ctx: &RequestContext, json: &str) -> bayeux_core::Outcome {
    let msgs = decode_batch(json.as_bytes(), &Limits::default()).expect("valid batch");
    engine.handle_batch(ctx, msgs, Instant::now())
}

/// Handshakes and connects a remote session on `transport`; returns its id and the session.
pub fn remote_session(engine: &Engine, transport: TransportKind) -> (String, Arc<Session>) {
    let ctx = RequestContext::new(transport);
    let out = batch(
        engine,
        &ctx,
        &format!(
            r#"[{{"id":"1","channel":"/meta/handshake","version":"1.0","supportedConnectionTypes":["{}"]}}]"#,
            transport.name()
        ),
    );
    let session = out.session.expect("handshake creates a session");
    let id = session.id().as_str().to_owned();
    batch(
        engine,
        &ctx,
        &format!(
            r#"[{{"id":"2","channel":"/meta/connect","clientId":"{id}","connectionType":"{}"}}]"#,
            transport.name()
        ),
    );
    (id, session)
}

/// Subscribes session `id` to `channel`.
pub fn subscribe(engine: &Engine, transport: TransportKind, id: &str, channel: &str) {
    let ctx = RequestContext::new(transport);
    let out = batch(
        engine,
        &ctx,
        &format!(
            r#"[{{"id":"3","channel":"/meta/subscribe","clientId":"{id}","subscription":"{channel}"}}]"#
        ),
    );
    assert!(
        String::from_utf8_lossy(out.replies[0].object()).contains("\"successful\":true"),
        "subscribe failed"
    );
}
