//! The Redis interest map under concurrent session life cycles: many threads subscribe,
//! unsubscribe, disconnect, connect and sweep on one engine with an [`Interest`] registered as
//! its listener. Afterwards the interest holds exactly what the live sessions need, and nothing
//! once every session is gone. (No Redis server is needed: the interest map is local state.)

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bayeux_core::{
    ChannelId, Engine, EngineConfig, Hold, RequestContext, Session, TransportKind, decode_batch,
};
use bayeux_redis::Interest;
use bayeux_redis::wire::Naming;
use serde_json::{Value, json};

/// The sessions the threads share: client id and session.
type Pool = Vec<(String, Arc<Session>)>;

const PATTERNS: [&str; 5] = ["/a", "/a/*", "/a/**", "/b", "/**"];

fn send(engine: &Engine, ctx: &RequestContext, msg: Value) -> bayeux_core::Outcome {
    let bytes = serde_json::to_vec(&json!([msg])).unwrap();
    let batch = decode_batch(&bytes, &engine.config().limits).unwrap();
    engine.handle_batch(ctx, batch, Instant::now())
}

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[test]
fn the_interest_map_follows_racing_life_cycles_and_ends_empty() {
    let engine = Engine::new(EngineConfig {
        max_interval_ms: 20,
        ..EngineConfig::default()
    });
    let interest = Arc::new(Interest::new(Naming::new("bayeux")));
    engine.add_listener(interest.clone());
    let pool: Arc<Mutex<Pool>> = Arc::default();
    let threads: Vec<_> = (0..6u64)
        .map(|n| {
            let (engine, pool) = (engine.clone(), pool.clone());
            std::thread::spawn(move || {
                let mut rng = Rng(n * 7919 + 17);
                let mut holds: Vec<Hold> = Vec::new();
                for _ in 0..2_000 {
                    let ctx = RequestContext::new(TransportKind::WebSocket)
                        .with_principal(format!("user{}", rng.below(3)));
                    let pick = |rng: &mut Rng| {
                        let p = pool.lock().unwrap();
                        (!p.is_empty()).then(|| {
                            let (id, s) = &p[rng.below(p.len() as u64) as usize];
                            (id.clone(), s.principal().map(str::to_owned))
                        })
                    };
                    let as_owner = |owner: Option<String>| {
                        let ctx = RequestContext::new(TransportKind::WebSocket);
                        match owner {
                            Some(p) => ctx.with_principal(p),
                            None => ctx,
                        }
                    };
                    match rng.below(8) {
                        0 => {
                            let out = send(
                                &engine,
                                &ctx,
                                json!({"channel": "/meta/handshake", "version": "1.0",
                                       "supportedConnectionTypes": ["websocket"]}),
                            );
                            if let Some(s) = out.session {
                                let mut p = pool.lock().unwrap();
                                if p.len() < 30 {
                                    p.push((s.id().to_string(), s));
                                }
                            }
                        }
                        1 | 2 => {
                            if let Some((cid, owner)) = pick(&mut rng) {
                                let sub = PATTERNS[rng.below(5) as usize];
                                send(
                                    &engine,
                                    &as_owner(owner),
                                    json!({"channel": "/meta/subscribe", "clientId": cid,
                                           "subscription": sub}),
                                );
                            }
                        }
                        3 => {
                            if let Some((cid, owner)) = pick(&mut rng) {
                                let sub = PATTERNS[rng.below(5) as usize];
                                send(
                                    &engine,
                                    &as_owner(owner),
                                    json!({"channel": "/meta/unsubscribe", "clientId": cid,
                                           "subscription": sub}),
                                );
                            }
                        }
                        4 => {
                            if let Some((cid, owner)) = pick(&mut rng) {
                                let out = send(
                                    &engine,
                                    &as_owner(owner),
                                    json!({"channel": "/meta/connect", "clientId": cid,
                                           "connectionType": "websocket"}),
                                );
                                holds.extend(out.hold);
                            }
                        }
                        5 => {
                            if let Some((cid, owner)) = pick(&mut rng) {
                                send(
                                    &engine,
                                    &as_owner(owner),
                                    json!({"channel": "/meta/disconnect", "clientId": cid}),
                                );
                            }
                        }
                        6 => {
                            holds.clear();
                            engine.sweep(Instant::now() + Duration::from_millis(rng.below(100)));
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

    // The interest matches the live sessions exactly.
    let pool = pool.lock().unwrap();
    let live: Vec<&Arc<Session>> = pool
        .iter()
        .map(|(_, s)| s)
        .filter(|s| !s.is_closed())
        .collect();
    for p in PATTERNS.iter().filter(|p| !p.contains('*')) {
        let channel = ChannelId::parse(p).unwrap();
        let wanted = live
            .iter()
            .any(|s| s.subscriptions().iter().any(|sub| sub.matches(&channel)));
        assert_eq!(interest.wants_broadcast(&channel), wanted, "{p}");
    }
    // From the engine, not the pool: handshakes past the pool's 30 sessions are live too (until
    // a sweep late enough expires them) and hold their user's channel.
    for u in ["user0", "user1", "user2"] {
        let has = !engine.sessions_of(u).is_empty();
        assert_eq!(interest.wants_user(u), has, "{u}");
    }

    drop(holds);
    engine.close_all();
    assert_eq!(engine.channel_count(), 0);
    assert!(interest.is_empty(), "left behind: {:?}", interest.wanted());
    for u in ["user0", "user1", "user2"] {
        assert!(!interest.wants_user(u));
    }
}
