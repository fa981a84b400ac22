//! The engine in-process, with no network: what a transport does with `bayeux-core`, done by
//! hand.
//!
//! ```text
//! cargo run -p bayeux-core --example in_process
//! ```
//!
//! It shows:
//! - an [`Engine`] with a [`SecurityPolicy`] (handshakes need a principal; clients may not
//!   publish on `/announcements/**`) and a [`Listener`] that logs sessions and subscriptions;
//! - a local (server-side) session, [`Engine::local_session`], subscribed with a callback to a
//!   broadcast pattern and to a `/service/**` channel;
//! - a remote client driven through [`Engine::handle_batch`] with JSON batches decoded by
//!   [`decode_batch`]: handshake, connect, subscribe, publish, a held connect, disconnect;
//! - server-side [`Engine::publish_json`], [`LocalSession::publish`], [`Engine::deliver`] (an
//!   answer to one session) and [`Engine::deliver_to_principal`] (to every session of a user).
//!
//! Every step asserts what it expects, so the program fails loudly if the engine misbehaves.
//! Time is passed in (`Instant::now()` here); a held connect is completed by hand with
//! [`Engine::finish_hold`], which is what a transport's timer or wake-up does.

use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use bayeux_core::{
    ChannelId, ChannelPattern, Decision, Engine, EngineConfig, Hold, Listener, LocalSession,
    Message, RemoveReason, RequestContext, SecurityPolicy, Session, TransportKind, Wake,
    decode_batch, join_array,
};
use parking_lot::Mutex;
use serde_json::{Value, json};

/// Application rules: every client must be authenticated (the transport puts the principal in
/// the request context), and `/announcements/**` is for the server to publish only.
struct Policy;

impl SecurityPolicy for Policy {
    fn can_handshake(&self, ctx: &RequestContext, _message: &Message) -> Decision {
        match ctx.principal {
            Some(_) => Decision::Allow,
            None => Decision::Unauthenticated("login_required".into()),
        }
    }

    fn can_publish(&self, _session: &Session, channel: &ChannelId, _message: &Message) -> Decision {
        if channel.as_str().starts_with("/announcements/") {
            Decision::Deny("read_only".into())
        } else {
            Decision::Allow
        }
    }
}

/// Logs what the engine reports.
struct Log;

fn who(session: &Session) -> String {
    let kind = if session.is_local() {
        "local"
    } else {
        "remote"
    };
    let id = session.id().as_str();
    format!(
        "{kind} {}.. ({})",
        &id[..8.min(id.len())],
        session.principal().unwrap_or("anonymous")
    )
}

impl Listener for Log {
    fn session_added(&self, session: &Arc<Session>) {
        println!("  [listener] session added: {}", who(session));
    }
    fn session_removed(&self, session: &Arc<Session>, reason: RemoveReason) {
        println!(
            "  [listener] session removed: {} ({reason:?})",
            who(session)
        );
    }
    fn subscribed(&self, session: &Arc<Session>, pattern: &ChannelPattern) {
        println!(
            "  [listener] {} subscribed to {}",
            who(session),
            pattern.as_str()
        );
    }
    fn published(&self, channel: &ChannelId, recipients: usize) {
        println!(
            "  [listener] published on {} to {recipients} session(s)",
            channel.as_str()
        );
    }
}

/// Decodes `batch` as a transport would, hands it to the engine and returns the replies (one
/// JSON array, as a long-poll response body) and the held connect, if any.
fn send(engine: &Engine, ctx: &RequestContext, batch: &Value) -> (Vec<Value>, Option<Hold>) {
    let bytes = serde_json::to_vec(batch).expect("serializable");
    println!("-> {batch}");
    let messages = decode_batch(&bytes, &engine.config().limits).expect("a valid batch");
    let out = engine.handle_batch(ctx, messages, Instant::now());
    let replies = parse(&out.replies);
    println!("<- {}", Value::Array(replies.clone()));
    (replies, out.hold)
}

/// Joins serialized replies and deliveries into one JSON array and parses it.
fn parse(replies: &[bayeux_core::Framed]) -> Vec<Value> {
    serde_json::from_slice(&join_array(replies)).expect("the engine writes a JSON array")
}

fn channels(replies: &[Value]) -> Vec<&str> {
    replies
        .iter()
        .map(|r| r["channel"].as_str().unwrap_or("?"))
        .collect()
}

/// What the local session received: channel, data, sender and message id.
type Inbox = Arc<Mutex<Vec<(String, Value, Option<String>, Option<String>)>>>;

fn main() {
    let engine = Engine::new(EngineConfig::default());
    engine.set_security_policy(Arc::new(Policy));
    engine.add_listener(Arc::new(Log));

    println!("== a local (server-side) session");
    let inbox: Inbox = Arc::default();
    let sink = inbox.clone();
    let server: LocalSession = engine.local_session(Some("server"), move |d| {
        println!(
            "  [local] {} {} (from {:?})",
            d.channel.as_str(),
            d.data.get(),
            d.sender.map(|s| s.as_str())
        );
        sink.lock().push((
            d.channel.as_str().to_owned(),
            serde_json::from_str(d.data.get()).expect("JSON data"),
            d.sender.map(|s| s.as_str().to_owned()),
            d.id.map(|i| i.as_str().to_owned()),
        ));
    });
    server.subscribe("/chat/*").expect("a valid pattern");
    server.subscribe("/service/echo").expect("a valid pattern");

    println!("\n== an anonymous handshake is refused by the policy");
    let anonymous = RequestContext::new(TransportKind::LongPolling);
    let (r, _) = send(
        &engine,
        &anonymous,
        &json!([{"channel": "/meta/handshake", "version": "1.0", "id": "1",
                 "supportedConnectionTypes": ["long-polling"]}]),
    );
    assert_eq!(r[0]["successful"], false);
    assert_eq!(r[0]["error"], "401::login_required");

    println!("\n== alice handshakes (the transport authenticated her) and connects");
    let alice = RequestContext::new(TransportKind::LongPolling).with_principal("alice");
    let (r, _) = send(
        &engine,
        &alice,
        &json!([{"channel": "/meta/handshake", "version": "1.0", "id": "1",
                 "supportedConnectionTypes": ["long-polling"]}]),
    );
    assert_eq!(r[0]["successful"], true, "{r:?}");
    let cid = r[0]["clientId"].as_str().expect("clientId").to_owned();
    let connect = |id: &str| {
        json!([{"channel": "/meta/connect", "clientId": cid, "id": id,
                "connectionType": "long-polling"}])
    };
    // The first connect is answered at once.
    let (r, hold) = send(&engine, &alice, &connect("2"));
    assert!(hold.is_none());
    assert_eq!(channels(&r), ["/meta/connect"]);
    assert_eq!(r[0]["successful"], true);

    println!("\n== alice subscribes to a room and to the announcements");
    let (r, _) = send(
        &engine,
        &alice,
        &json!([{"channel": "/meta/subscribe", "clientId": cid, "id": "3",
                 "subscription": "/chat/room"},
                {"channel": "/meta/subscribe", "clientId": cid, "id": "4",
                 "subscription": ["/announcements/*"]}]),
    );
    assert_eq!(r.len(), 2);
    assert!(r.iter().all(|m| m["successful"] == true), "{r:?}");

    println!("\n== alice publishes to the room: the local session and alice herself get it");
    let (r, _) = send(
        &engine,
        &alice,
        &json!([{"channel": "/chat/room", "clientId": cid, "id": "5",
                 "data": {"text": "hello"}}]),
    );
    assert_eq!(r[0]["successful"], true);
    {
        let got = inbox.lock();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, "/chat/room");
        assert_eq!(got[0].1, json!({"text": "hello"}));
        assert_eq!(got[0].2.as_deref(), Some(cid.as_str()), "sender is alice");
    }

    println!("\n== alice may not publish announcements");
    let (r, _) = send(
        &engine,
        &alice,
        &json!([{"channel": "/announcements/all", "clientId": cid, "id": "6",
                 "data": "I am the server now"}]),
    );
    assert_eq!(r[0]["successful"], false);
    assert_eq!(r[0]["error"], "403:read_only:publish_denied");

    println!("\n== the server publishes an announcement");
    let n = engine
        .publish_json("/announcements/all", &json!({"maintenance": "tonight"}))
        .expect("a valid channel");
    assert_eq!(n, 1, "alice is the only subscriber");

    println!("\n== alice calls a service; the server answers her session only");
    let (r, _) = send(
        &engine,
        &alice,
        &json!([{"channel": "/service/echo", "clientId": cid, "id": "7",
                 "data": {"ping": 1}}]),
    );
    assert_eq!(r[0]["successful"], true);
    let (channel, data, sender, id) = inbox.lock().pop().expect("the service request");
    assert_eq!(
        (channel.as_str(), id.as_deref()),
        ("/service/echo", Some("7"))
    );
    let answer = serde_json::value::to_raw_value(&json!({"pong": data["ping"]})).expect("JSON");
    engine
        .deliver(
            sender.as_deref().expect("a client sent it"),
            &ChannelId::parse("/service/echo").expect("valid"),
            &answer,
        )
        .expect("alice's session exists");

    println!("\n== a private message to every session of alice");
    let inbox_channel = ChannelId::parse("/private/inbox").expect("valid");
    let note =
        serde_json::value::to_raw_value(&json!({"from": "bob", "text": "hi alice"})).expect("JSON");
    assert_eq!(
        engine.deliver_to_principal("alice", &inbox_channel, &note),
        1
    );
    assert_eq!(
        engine.deliver_to_principal("carol", &inbox_channel, &note),
        0
    );

    println!("\n== alice connects: her queued messages come back at once, in order");
    let (r, hold) = send(&engine, &alice, &connect("8"));
    assert!(hold.is_none(), "messages were waiting: not held");
    assert_eq!(
        channels(&r),
        [
            "/chat/room",
            "/announcements/all",
            "/service/echo",
            "/private/inbox",
            "/meta/connect"
        ]
    );
    assert_eq!(r[0]["data"], json!({"text": "hello"}));
    assert_eq!(r[1]["data"], json!({"maintenance": "tonight"}));
    assert_eq!(r[2]["data"], json!({"pong": 1}));
    assert_eq!(r[3]["data"], json!({"from": "bob", "text": "hi alice"}));

    println!("\n== with nothing queued the next connect is held; a publish wakes it");
    let (r, hold) = send(&engine, &alice, &connect("9"));
    assert!(r.is_empty());
    let hold = hold.expect("a held connect");
    let mut cx = Context::from_waker(Waker::noop());
    assert_eq!(hold.poll_wake(&mut cx), Poll::Pending);
    let room = ChannelId::parse("/chat/room").expect("valid");
    let text = serde_json::value::to_raw_value(&json!({"text": "welcome"})).expect("JSON");
    assert_eq!(
        server.publish(&room, &text),
        2,
        "alice and the server itself"
    );
    assert_eq!(hold.poll_wake(&mut cx), Poll::Ready(Wake::Messages));
    let r = parse(&engine.finish_hold(hold, Instant::now()));
    println!("<- {}", Value::Array(r.clone()));
    assert_eq!(channels(&r), ["/chat/room", "/meta/connect"]);
    assert_eq!(r[0]["data"], json!({"text": "welcome"}));
    assert_eq!(r[1]["id"], "9");

    println!("\n== alice disconnects");
    let (r, _) = send(
        &engine,
        &alice,
        &json!([{"channel": "/meta/disconnect", "clientId": cid, "id": "10"}]),
    );
    assert_eq!(r[0]["successful"], true);
    assert!(engine.session(&cid).is_none());
    assert_eq!(engine.session_count(), 1, "only the local session is left");
    assert_eq!(
        engine
            .publish_json("/announcements/all", &"anyone?")
            .expect("valid"),
        0
    );
    server.disconnect();
    assert_eq!(engine.session_count(), 0);

    let stats = engine.stats();
    let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    println!(
        "\nok: {} messages in, {} deliveries, {} sessions created, {} removed",
        load(&stats.messages_in),
        load(&stats.deliveries),
        load(&stats.sessions_created),
        load(&stats.sessions_removed)
    );
}
