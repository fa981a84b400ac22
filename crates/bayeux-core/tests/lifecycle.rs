//! Session life cycle: liveness as CometD defines it, expiry decided under the session's lock,
//! the ack extension at the queue bound, honest counters, and a concurrency stress test of
//! subscribe / unsubscribe / disconnect / expiry / connect after which nothing is left behind.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bayeux_core::{
    AckExtension, ChannelPattern, Engine, EngineConfig, Hold, Listener, OverflowPolicy,
    RemoveReason, RequestContext, Session, TransportKind, decode_batch,
};
use common::{Transcript, lp, ws};
use serde_json::{Value, json};

fn config() -> EngineConfig {
    EngineConfig {
        max_interval_ms: 10_000,
        timeout_ms: 30_000,
        ..EngineConfig::default()
    }
}

#[test]
fn a_publisher_that_never_connects_keeps_its_session_and_loses_nothing() {
    let mut t = Transcript::new(config());
    let sub = t.session(&lp());
    t.subscribe(&lp(), &sub, json!("/notify"));
    // A backend that only publishes over HTTP: handshake, then a publish every 50 ms for 30 s,
    // three times max_interval, with the sweeper running all along.
    let publisher = t.handshake(&lp());
    let mut received = 0;
    for i in 0..600 {
        t.advance(50);
        assert_eq!(t.engine.sweep(t.now()), 0, "nothing expires (step {i})");
        let r = t.publish(&lp(), &publisher, "/notify", json!(i));
        assert_eq!(r[0]["successful"], true, "publish {i}: {r:?}");
        // The subscriber polls now and then, as a long-polling client does.
        if i % 20 == 19 {
            received += t.drain(&lp(), &sub).len();
        }
    }
    assert_eq!(received, 600);
    assert_eq!(t.engine.stats().sessions_removed.load(Ordering::Relaxed), 0);
}

#[test]
fn a_silent_session_expires_max_interval_after_its_last_message() {
    let mut t = Transcript::new(config());
    let cid = t.handshake(&lp());
    t.advance(5_000);
    t.subscribe(&lp(), &cid, json!("/a"));
    // Heard from at 5 s: alive until 15 s.
    t.advance(9_999);
    assert_eq!(t.engine.sweep(t.now()), 0);
    t.advance(2);
    assert_eq!(t.engine.sweep(t.now()), 1);
    assert!(t.engine.session(&cid).is_none());
    assert_eq!(t.engine.channel_count(), 0);
    let r = t.publish(&lp(), &cid, "/a", json!(1));
    assert_eq!(r[0]["error"], "402::session_unknown");
}

#[test]
fn a_held_connect_is_never_swept_and_expiry_restarts_when_it_ends() {
    let mut t = Transcript::new(config());
    let cid = t.session(&lp());
    assert!(t.connect(&lp(), &cid).is_empty(), "held");
    // Far past every deadline: a held connect keeps its session.
    t.advance(120_000);
    assert_eq!(t.engine.sweep(t.now()), 0);
    let r = t.finish_hold();
    assert_eq!(r[0]["successful"], true);
    t.advance(10_001);
    assert_eq!(t.engine.sweep(t.now()), 1);
}

#[test]
fn a_dropped_hold_lets_the_session_expire_from_its_deadline() {
    let mut t = Transcript::new(config());
    let cid = t.session(&ws());
    assert!(t.connect(&ws(), &cid).is_empty(), "held");
    // The socket dies at once: the hold is dropped unanswered.
    t.holds.clear();
    assert_eq!(t.engine.stats().held_connects.load(Ordering::Relaxed), 0);
    t.advance(30_000 + 10_000);
    assert_eq!(
        t.engine.sweep(t.now()),
        0,
        "deadline + max_interval not yet passed"
    );
    t.advance(1);
    assert_eq!(t.engine.sweep(t.now()), 1);
}

#[test]
fn ack_overflow_drops_the_oldest_unacknowledged_message_never_the_newest() {
    let mut t = Transcript::new(EngineConfig {
        max_queue: 3,
        ..config()
    });
    t.engine.add_extension(Arc::new(AckExtension));
    let ctx = lp();
    let id = t.id();
    let r = t.send(
        &ctx,
        json!([{"channel": "/meta/handshake", "version": "1.0", "id": id,
                "supportedConnectionTypes": ["long-polling"], "ext": {"ack": true}}]),
    );
    let cid = r[0]["clientId"].as_str().unwrap().to_owned();
    t.connect_with(&ctx, &cid, json!({"ext": {"ack": -1}}));
    t.subscribe(&ctx, &cid, json!("/a"));
    let publisher = t.handshake(&ctx);
    for i in 1..=2 {
        t.publish(&ctx, &publisher, "/a", json!(i));
    }
    // Batch 1 carries 1 and 2; the client never acknowledges it.
    let data = |r: &[Value]| -> Vec<i64> {
        r.iter()
            .filter(|m| m["channel"] == "/a")
            .map(|m| m["data"].as_i64().unwrap())
            .collect()
    };
    let r = t.connect_with(
        &ctx,
        &cid,
        json!({"ext": {"ack": 0}, "advice": {"timeout": 0}}),
    );
    assert_eq!(data(&r), [1, 2]);
    // 3 fits (2 unacknowledged + 1 queued); 4 overflows: the oldest, 1, goes.
    for i in 3..=4 {
        t.publish(&ctx, &publisher, "/a", json!(i));
    }
    let r = t.connect_with(
        &ctx,
        &cid,
        json!({"ext": {"ack": 0}, "advice": {"timeout": 0}}),
    );
    assert_eq!(data(&r), [2, 3, 4], "{r:?}");
    let stats = t.engine.stats();
    assert_eq!(stats.queue_drops.load(Ordering::Relaxed), 1);
    assert_eq!(stats.unacked_drops.load(Ordering::Relaxed), 1);
    assert_eq!(t.engine.session(&cid).unwrap().dropped(), 1);
}

#[test]
fn deliveries_count_only_what_was_queued() {
    let mut t = Transcript::new(EngineConfig {
        max_queue: 2,
        overflow: OverflowPolicy::Disconnect,
        ..config()
    });
    let ctx = lp();
    let cid = t.session(&ctx);
    t.subscribe(&ctx, &cid, json!("/a"));
    for i in 0..3 {
        t.engine.publish_json("/a", &i).unwrap();
    }
    let stats = t.engine.stats();
    assert_eq!(stats.deliveries.load(Ordering::Relaxed), 2);
    assert_eq!(stats.queue_drops.load(Ordering::Relaxed), 1);
    assert!(
        t.engine.session(&cid).is_none(),
        "disconnected at the bound"
    );
}

#[test]
fn a_session_is_announced_before_it_can_be_found_and_removed_after_its_subscriptions() {
    let mut t = Transcript::new(config());
    let checker = Checker::new();
    t.engine.add_listener(checker.clone());
    let cid = t.session(&lp());
    t.subscribe(&lp(), &cid, json!(["/a", "/b/*"]));
    let id = t.id();
    t.send(
        &lp(),
        json!([{"channel": "/meta/disconnect", "clientId": cid, "id": id}]),
    );
    checker.assert_consistent();
    assert!(checker.state.lock().unwrap().live_patterns().is_empty());
}

/// A listener that checks the order of each session's events: added first, subscriptions only
/// while the session lives, removed last with nothing left subscribed.
struct Checker {
    state: Mutex<CheckerState>,
}

#[derive(Default)]
struct CheckerState {
    added: HashSet<u64>,
    removed: HashSet<u64>,
    patterns: HashMap<u64, HashSet<String>>,
    errors: Vec<String>,
}

impl CheckerState {
    fn live_patterns(&self) -> HashSet<String> {
        self.patterns.values().flatten().cloned().collect()
    }
}

impl Checker {
    fn new() -> Arc<Checker> {
        Arc::new(Checker {
            state: Mutex::new(CheckerState::default()),
        })
    }

    fn assert_consistent(&self) {
        let st = self.state.lock().unwrap();
        assert!(
            st.errors.is_empty(),
            "listener events out of order: {:?}",
            st.errors
        );
    }
}

impl Listener for Checker {
    fn session_added(&self, s: &Arc<Session>) {
        let mut st = self.state.lock().unwrap();
        if !st.added.insert(s.key()) {
            st.errors.push(format!("added twice {}", s.key()));
        }
    }
    fn session_removed(&self, s: &Arc<Session>, _reason: RemoveReason) {
        let mut st = self.state.lock().unwrap();
        if !st.added.contains(&s.key()) || !st.removed.insert(s.key()) {
            st.errors
                .push(format!("removed before added, or twice {}", s.key()));
        }
        if st.patterns.get(&s.key()).is_some_and(|p| !p.is_empty()) {
            st.errors
                .push(format!("removed with subscriptions left {}", s.key()));
        }
    }
    fn subscribed(&self, s: &Arc<Session>, p: &ChannelPattern) {
        let mut st = self.state.lock().unwrap();
        if !st.added.contains(&s.key()) || st.removed.contains(&s.key()) {
            st.errors
                .push(format!("subscribed outside the session's life {}", s.key()));
        }
        if !st
            .patterns
            .entry(s.key())
            .or_default()
            .insert(p.to_string())
        {
            st.errors.push(format!("subscribed twice {} {p}", s.key()));
        }
    }
    fn unsubscribed(&self, s: &Arc<Session>, p: &ChannelPattern) {
        let mut st = self.state.lock().unwrap();
        if !st
            .patterns
            .get_mut(&s.key())
            .is_some_and(|set| set.remove(p.as_str()))
        {
            st.errors.push(format!(
                "unsubscribed what was not subscribed {} {p}",
                s.key()
            ));
        }
    }
}

/// A small deterministic generator, so that a failing run can be replayed from its seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn batch(engine: &Engine, ctx: &RequestContext, msg: Value, now: Instant) -> bayeux_core::Outcome {
    let bytes = serde_json::to_vec(&json!([msg])).unwrap();
    let messages = decode_batch(&bytes, &engine.config().limits).unwrap();
    engine.handle_batch(ctx, messages, now)
}

/// The sessions the stress threads share: client id and session.
type Pool = Vec<(String, Arc<Session>)>;

const PATTERNS: [&str; 5] = ["/a", "/a/*", "/a/**", "/b", "/**"];

/// Many threads subscribe, unsubscribe, publish, connect (holding and dropping connects),
/// disconnect and sweep with a clock far ahead, on a shared pool of sessions. Afterwards the
/// router holds exactly what the live sessions hold, the listener saw every session's events in
/// order, and once every session is closed nothing is left: no channel, no held connect, no
/// browser slot, and the counters add up.
#[test]
fn concurrent_life_cycle_operations_leave_nothing_behind() {
    common::within("stress", || {
        for seed in 1..=4u64 {
            stress_once(seed);
        }
    });
}

fn stress_once(seed: u64) {
    const THREADS: u64 = 6;
    const OPS: u64 = 1_500;
    let engine = Engine::new(EngineConfig {
        max_queue: 8,
        max_interval_ms: 50,
        ..EngineConfig::default()
    });
    let checker = Checker::new();
    engine.add_listener(checker.clone());
    let pool: Arc<Mutex<Pool>> = Arc::default();
    let threads: Vec<_> = (0..THREADS)
        .map(|n| {
            let engine = engine.clone();
            let pool = pool.clone();
            std::thread::spawn(move || {
                let mut rng = Rng(seed * 7919 + n * 104_729 + 1);
                let mut holds: Vec<Hold> = Vec::new();
                let browser: Arc<str> = Arc::from(format!("browser{}", n % 2));
                for _ in 0..OPS {
                    let mut ctx = RequestContext::new(if rng.below(2) == 0 {
                        TransportKind::LongPolling
                    } else {
                        TransportKind::WebSocket
                    });
                    ctx.browser = Some(browser.clone());
                    let now = Instant::now();
                    let pick = |rng: &mut Rng| {
                        let p = pool.lock().unwrap();
                        (!p.is_empty()).then(|| p[rng.below(p.len() as u64) as usize].0.clone())
                    };
                    match rng.below(9) {
                        0 => {
                            let out = batch(
                                &engine,
                                &ctx,
                                json!({"channel": "/meta/handshake", "version": "1.0",
                                       "supportedConnectionTypes": [ctx.transport.name()]}),
                                now,
                            );
                            if let Some(s) = out.session {
                                let mut p = pool.lock().unwrap();
                                if p.len() < 40 {
                                    p.push((s.id().to_string(), s));
                                }
                            }
                        }
                        1 | 2 => {
                            if let Some(cid) = pick(&mut rng) {
                                let sub = PATTERNS[rng.below(5) as usize];
                                batch(
                                    &engine,
                                    &ctx,
                                    json!({"channel": "/meta/subscribe", "clientId": cid,
                                           "subscription": sub}),
                                    now,
                                );
                            }
                        }
                        3 => {
                            if let Some(cid) = pick(&mut rng) {
                                let sub = PATTERNS[rng.below(5) as usize];
                                batch(
                                    &engine,
                                    &ctx,
                                    json!({"channel": "/meta/unsubscribe", "clientId": cid,
                                           "subscription": sub}),
                                    now,
                                );
                            }
                        }
                        4 => {
                            if let Some(cid) = pick(&mut rng) {
                                let out = batch(
                                    &engine,
                                    &ctx,
                                    json!({"channel": "/meta/connect", "clientId": cid,
                                           "connectionType": ctx.transport.name()}),
                                    now,
                                );
                                holds.extend(out.hold);
                            }
                        }
                        5 => {
                            if !holds.is_empty() {
                                let h = holds.swap_remove(rng.below(holds.len() as u64) as usize);
                                if rng.below(2) == 0 {
                                    engine.finish_hold(h, now);
                                }
                            }
                        }
                        6 => {
                            if let Some(cid) = pick(&mut rng) {
                                batch(
                                    &engine,
                                    &ctx,
                                    json!({"channel": "/meta/disconnect", "clientId": cid}),
                                    now,
                                );
                            }
                        }
                        7 => {
                            engine.sweep(now + Duration::from_millis(rng.below(200)));
                        }
                        _ => {
                            engine.publish_json("/a/x", &1).unwrap();
                        }
                    }
                }
                holds
            })
        })
        .collect();
    let holds: Vec<Hold> = threads
        .into_iter()
        .flat_map(|t| t.join().expect("a stress thread panicked"))
        .collect();
    checker.assert_consistent();

    // The router holds exactly what the live sessions hold.
    let pool = pool.lock().unwrap();
    let live: Vec<&Arc<Session>> = pool
        .iter()
        .map(|(_, s)| s)
        .filter(|s| !s.is_closed())
        .collect();
    for (_, s) in pool.iter().filter(|(_, s)| s.is_closed()) {
        assert!(
            s.subscriptions().is_empty(),
            "a closed session kept subscriptions"
        );
    }
    let held: HashSet<String> = live
        .iter()
        .flat_map(|s| s.subscriptions())
        .map(|p| p.to_string())
        .collect();
    assert_eq!(
        engine.channel_count(),
        held.len(),
        "router vs sessions (seed {seed})"
    );
    assert_eq!(checker.state.lock().unwrap().live_patterns(), held);

    drop(holds);
    assert_eq!(engine.stats().held_connects.load(Ordering::Relaxed), 0);
    assert_eq!(engine.browser_slots_taken(), 0);
    engine.close_all();
    checker.assert_consistent();
    let stats = engine.stats();
    assert_eq!(engine.channel_count(), 0, "seed {seed}");
    assert_eq!(engine.session_count(), 0);
    assert_eq!(
        stats.sessions_created.load(Ordering::Relaxed),
        stats.sessions_removed.load(Ordering::Relaxed)
    );
    let st = checker.state.lock().unwrap();
    assert_eq!(st.added.len(), st.removed.len());
    assert!(st.live_patterns().is_empty());
    // The far-ahead sweeps did expire sessions while connects raced them.
    assert!(stats.sessions_created.load(Ordering::Relaxed) > 0);
}

#[test]
fn an_abandoned_hold_lets_the_session_expire_from_the_moment_the_client_left() {
    let mut t = Transcript::new(config());
    let cid = t.session(&ws());
    assert!(t.connect(&ws(), &cid).is_empty(), "held");
    t.advance(1_000);
    // The socket closes 1 s into a 30 s hold: the transport abandons the hold then.
    t.holds.pop().unwrap().abandon(t.now());
    assert_eq!(t.engine.stats().held_connects.load(Ordering::Relaxed), 0);
    t.advance(10_000);
    assert_eq!(t.engine.sweep(t.now()), 0);
    t.advance(1);
    assert_eq!(
        t.engine.sweep(t.now()),
        1,
        "expired max_interval after the client left"
    );
}
