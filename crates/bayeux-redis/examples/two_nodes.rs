//! Two nodes joined through Redis, in one process: a message published on node A reaches a
//! local session subscribed on node B, and a delivery to a user made on A reaches that user's
//! session on B.
//!
//! ```text
//! redis-server --port 6379 --save "" --appendonly no      # Redis 6 or later
//! cargo run -p bayeux-redis --example two_nodes                            # redis://127.0.0.1:6379
//! cargo run -p bayeux-redis --example two_nodes -- redis://127.0.0.1:16399
//! ```
//!
//! Each node is an [`Engine`] with its own [`RedisBackplane`], started before the engine has
//! sessions (as a server does). The backplane connects in the background and subscribes in
//! Redis to what the node's local sessions need, so the program first waits (a few seconds at
//! most) for both nodes to reach Redis, exiting with an error if they cannot, then publishes
//! probes until node B hears one (its Redis subscription is in place), and only then sends the
//! messages it checks. Redis pub/sub is at-most-once: what is published before the receiving
//! node's subscription is in place is not delivered there.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bayeux_core::{ChannelId, Engine, EngineConfig, LocalSession};
use bayeux_redis::{RedisBackplane, RedisConfig};
use parking_lot::Mutex;
use serde_json::json;

/// How long to wait for Redis, and for cross-node delivery to start.
const WAIT: Duration = Duration::from_secs(5);

/// Deliveries one local session received, as `channel data`.
type Log = Arc<Mutex<Vec<String>>>;

struct Node {
    name: &'static str,
    engine: Engine,
    backplane: Arc<RedisBackplane>,
}

fn node(name: &'static str, url: &str) -> Result<Node, String> {
    let engine = Engine::new(EngineConfig::default());
    let mut config = RedisConfig::with_url(url);
    // Give up on a dead address quickly, so the reachability check below is short.
    config.connect_timeout_ms = 500;
    config.response_timeout_ms = 500;
    let backplane =
        RedisBackplane::start(&engine, &config).map_err(|e| format!("node {name}: {e}"))?;
    println!(
        "node {name}: id {} on {}",
        backplane.node_id(),
        config.redacted_url()
    );
    Ok(Node {
        name,
        engine,
        backplane,
    })
}

/// A local session on `node` (of `principal`, if any) subscribed to `patterns`, logging what it
/// receives.
fn session(node: &Node, principal: Option<&str>, patterns: &[&str]) -> (LocalSession, Log) {
    let log: Log = Arc::default();
    let l = log.clone();
    let tag = format!("{}/{}", node.name, principal.unwrap_or("anonymous"));
    let s = node.engine.local_session(principal, move |d| {
        println!("  [{tag}] {} {}", d.channel.as_str(), d.data.get());
        l.lock()
            .push(format!("{} {}", d.channel.as_str(), d.data.get()));
    });
    for p in patterns {
        s.subscribe(p).expect("a valid pattern");
    }
    (s, log)
}

/// Calls `send(n)` with n = 0, 1, ... every 100 ms until `log` holds the line `expect(n)` of
/// the latest one, then forgets the probes. False if that takes longer than [`WAIT`].
async fn until_flowing(log: &Log, send: impl Fn(u64), expect: impl Fn(u64) -> String) -> bool {
    let deadline = Instant::now() + WAIT;
    for n in 0u64.. {
        if Instant::now() >= deadline {
            return false;
        }
        send(n);
        let line = expect(n);
        let give_up = Instant::now() + Duration::from_millis(100);
        while Instant::now() < give_up {
            tokio::time::sleep(Duration::from_millis(5)).await;
            if log.lock().contains(&line) {
                log.lock().retain(|l| !l.contains("probe"));
                return true;
            }
        }
    }
    false
}

/// Waits until `log` holds `want` lines (or [`WAIT`] passes), then a little more to catch a
/// duplicate.
async fn collect(log: &Log, want: usize) -> Vec<String> {
    let deadline = Instant::now() + WAIT;
    while log.lock().len() < want && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    log.lock().clone()
}

async fn run(url: &str) -> Result<(), String> {
    let a = node("A", url)?;
    let b = node("B", url)?;

    // Bounded wait for Redis: both backplanes mark themselves connected on their first answer.
    let deadline = Instant::now() + WAIT;
    while !(a.backplane.is_connected() && b.backplane.is_connected()) {
        if Instant::now() >= deadline {
            return Err(format!(
                "Redis at {url} is unreachable (no answer within {} s); start one, e.g. \
                 `redis-server --port 6379 --save '' --appendonly no`, or pass its URL as the \
                 first argument",
                WAIT.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("both nodes reached Redis");

    // On B: a subscriber to /news/* and a session of user alice (no subscription needed for
    // deliveries to her).
    let (_news, news_log) = session(&b, None, &["/news/*"]);
    let (_alice, alice_log) = session(&b, Some("alice"), &[]);

    println!("\n== waiting for node B's Redis subscriptions");
    let flowing = until_flowing(
        &news_log,
        |n| {
            a.engine
                .publish_json("/news/probe", &n)
                .expect("a valid channel");
        },
        |n| format!("/news/probe {n}"),
    )
    .await;
    if !flowing {
        return Err("node B never received node A's broadcasts".into());
    }
    let inbox = ChannelId::parse("/private/inbox").expect("a valid channel");
    let flowing = until_flowing(
        &alice_log,
        |n| {
            let probe = serde_json::value::to_raw_value(&format!("probe {n}")).expect("JSON");
            a.engine.deliver_to_principal("alice", &inbox, &probe);
        },
        |n| format!("/private/inbox \"probe {n}\""),
    )
    .await;
    if !flowing {
        return Err("alice's session on node B never received node A's deliveries".into());
    }

    println!("\n== node A publishes on /news/today");
    // A has no local subscriber: 0 local recipients; the copy goes through Redis.
    let local = a
        .engine
        .publish_json("/news/today", &json!({"headline": "hello from A"}))
        .expect("a valid channel");
    assert_eq!(local, 0, "node A has no subscriber of its own");
    let got = collect(&news_log, 1).await;
    if got != [r#"/news/today {"headline":"hello from A"}"#] {
        return Err(format!(
            "node B's subscriber got {got:?}, expected the one message"
        ));
    }

    println!("\n== node A delivers to user alice");
    let note = serde_json::value::to_raw_value(&json!({"text": "hi alice"})).expect("JSON");
    assert_eq!(a.engine.deliver_to_principal("alice", &inbox, &note), 0);
    let got = collect(&alice_log, 1).await;
    if got != [r#"/private/inbox {"text":"hi alice"}"#] {
        return Err(format!(
            "alice's session on node B got {got:?}, expected the one message"
        ));
    }

    let (ma, mb) = (a.backplane.metrics(), b.backplane.metrics());
    let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    println!(
        "\nok: node A published {} message(s) to Redis, node B received {}; dropped: {}",
        load(&ma.published),
        load(&mb.received),
        ma.publish_dropped()
    );
    a.backplane.shutdown();
    b.backplane.shutdown();
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "redis://127.0.0.1:6379".to_owned());
    match run(&url).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
