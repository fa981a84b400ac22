//! Expiry and limits: the sweep and the session liveness rule, held connects and shutdown,
//! `max_sessions`, and queue overflow under each policy.

use std::task::Poll;

use crate::common::{Recorder, Transcript, lp, short_id};
use crate::support::{handshake_advice, t};
use bayeux_core::{EngineConfig, OverflowPolicy, Wake};
use serde_json::json;

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
