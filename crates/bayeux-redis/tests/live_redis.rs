//! The backplane against a real `redis-server` started on a free loopback port: two engines in
//! one process play two nodes. `BAYEUX_REDIS_SERVER` names another binary.
//!
//! Without `redis-server` (`scripts/cluster-deps.sh` installs it) each test prints
//! `skipped: <test>: redis-server not found ...` on the terminal and returns: libtest has no
//! run-time skip, so it is counted among the passed ones and the `skipped:` lines are the count
//! (`cargo test 2>&1 | grep -c '^skipped:'`). With `BAYEUX_REQUIRE_EXTERNAL=1` (set by
//! `scripts/test-all.sh`) a missing `redis-server` fails the test instead.

use std::io::Write as _;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bayeux_core::{Engine, EngineConfig, LocalSession};
use bayeux_redis::{RedisBackplane, RedisConfig};
use parking_lot::Mutex;

/// `BAYEUX_REDIS_SERVER`, else the usual places; `None` when the binary does not exist.
fn redis_binary() -> Option<String> {
    let candidates = match std::env::var("BAYEUX_REDIS_SERVER") {
        Ok(b) => vec![b],
        Err(_) => vec![
            "/usr/bin/redis-server".to_owned(),
            "/usr/local/bin/redis-server".to_owned(),
        ],
    };
    candidates
        .into_iter()
        .find(|p| std::path::Path::new(p).is_file())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A redis-server child, killed by PID on drop.
struct RedisServer {
    bin: String,
    port: u16,
    child: Option<Child>,
}

impl RedisServer {
    fn start() -> Option<RedisServer> {
        let Some(bin) = redis_binary() else {
            skip("redis-server not found (run scripts/cluster-deps.sh or set BAYEUX_REDIS_SERVER)");
            return None;
        };
        let mut s = RedisServer {
            bin,
            port: free_port(),
            child: None,
        };
        s.spawn();
        Some(s)
    }

    fn spawn(&mut self) {
        let child = Command::new(&self.bin)
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Reports a skipped test: a `skipped: <test>: <reason>` line written to the process's stderr
/// itself, which libtest does not capture (it captures only `print!`/`eprint!`), so it shows in
/// a plain `cargo test`. Panics instead when `BAYEUX_REQUIRE_EXTERNAL=1`, as in CI, where a
/// missing tool must not pass unnoticed.
fn skip(reason: &str) {
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("live_redis");
    if std::env::var("BAYEUX_REQUIRE_EXTERNAL").as_deref() == Ok("1") {
        panic!("{test}: {reason}, and BAYEUX_REQUIRE_EXTERNAL=1");
    }
    let _ = writeln!(std::io::stderr().lock(), "skipped: {test}: {reason}");
}

struct Node {
    engine: Engine,
    bp: Arc<RedisBackplane>,
}

fn node(url: &str) -> Node {
    let engine = Engine::new(EngineConfig::default());
    let mut cfg = RedisConfig::with_url(url);
    cfg.retry_max_ms = 500;
    cfg.health_interval_ms = 200;
    let bp = RedisBackplane::start(&engine, &cfg).unwrap();
    Node { engine, bp }
}

type Log = Arc<Mutex<Vec<String>>>;

/// A local session of `principal` on `patterns`, recording `channel data` of each delivery.
fn listener(engine: &Engine, principal: Option<&str>, patterns: &[&str]) -> (LocalSession, Log) {
    let log: Log = Arc::default();
    let l = log.clone();
    let s = engine.local_session(principal, move |d| {
        l.lock()
            .push(format!("{} {}", d.channel.as_str(), d.data.get()));
    });
    for p in patterns {
        s.subscribe(p).unwrap();
    }
    (s, log)
}

async fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn raw(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

async fn numsub(conn: &mut redis::aio::MultiplexedConnection, channel: &str) -> i64 {
    let v: (String, i64) = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(channel)
        .query_async(conn)
        .await
        .unwrap();
    v.1
}

async fn numpat(conn: &mut redis::aio::MultiplexedConnection) -> i64 {
    redis::cmd("PUBSUB")
        .arg("NUMPAT")
        .query_async(conn)
        .await
        .unwrap()
}

/// Publishes numbered probes on `channel` from `from` until `log` shows the latest one (the
/// subscription is in place on the receiving node), then removes the probe lines from `log`.
/// Waiting for the latest probe, not any, leaves none in flight to land after the removal:
/// an earlier one was either lost (sent before the subscription) or delivered before it.
async fn until_flowing(from: &Engine, channel: &str, log: &Log) {
    let deadline = Instant::now() + Duration::from_secs(10);
    for n in 0u64.. {
        let probe = format!("probe {n}");
        from.publish_json(channel, &probe).unwrap();
        let line_end = format!("\"{probe}\"");
        // Long enough for a slow delivery; a probe sent before the subscription never comes.
        let give_up = Instant::now() + Duration::from_millis(500);
        while Instant::now() < give_up {
            tokio::time::sleep(Duration::from_millis(10)).await;
            if log.lock().iter().any(|l| l.ends_with(&line_end)) {
                log.lock().retain(|l| !l.contains("\"probe "));
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "cross-node delivery never started"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcasts_cross_nodes_exactly_once_in_order() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let (a, b) = (node(&redis.url()), node(&redis.url()));
    let (_sa, log_a) = listener(&a.engine, None, &["/news"]);
    // Exact channel and two globs on one node: Redis sends three copies; one is delivered.
    let (_sb, log_b) = listener(&b.engine, None, &["/news", "/**"]);
    let (_sb2, log_b2) = listener(&b.engine, None, &["/*"]);
    until_flowing(&a.engine, "/news", &log_b).await;
    log_a.lock().clear();
    log_b2.lock().clear();

    for i in 0..2000 {
        a.engine.publish_json("/news", &i).unwrap();
    }
    let want: Vec<String> = (0..2000).map(|i| format!("/news {i}")).collect();
    wait_for("node B to get 2000", Duration::from_secs(10), || {
        log_b.lock().len() >= 2000 && log_b2.lock().len() >= 2000
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(*log_a.lock(), want, "local delivery on A, once");
    assert_eq!(*log_b.lock(), want, "remote delivery on B, once, in order");
    assert_eq!(*log_b2.lock(), want);
    let mb = b.bp.metrics();
    assert!(mb.duplicates.load(Ordering::Relaxed) >= 2000);
    assert_eq!(mb.invalid.load(Ordering::Relaxed), 0);
    let ma = a.bp.metrics();
    // A hears its own messages on its own subscriber connection, not necessarily as soon as B.
    wait_for("A to hear itself and skip", Duration::from_secs(10), || {
        ma.own_skipped.load(Ordering::Relaxed) >= 2000
    })
    .await;
    assert_eq!(ma.publish_dropped(), 0);
    a.bp.shutdown();
    b.bp.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interest_follows_local_subscriptions() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let url = redis.url();
    let mut conn = raw(&url).await;
    let a = node(&url);
    let base_pat = numpat(&mut conn).await;
    let (s1, _) = listener(&a.engine, None, &["/x", "/y/*"]);
    let (s2, _) = listener(&a.engine, None, &["/x", "/y/**"]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while numsub(&mut conn, "bayeux:c:/x").await != 1 || numpat(&mut conn).await != base_pat + 1 {
        assert!(Instant::now() < deadline, "subscriptions not in place");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(a.bp.interest().len(), 2);
    s1.disconnect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        numsub(&mut conn, "bayeux:c:/x").await,
        1,
        "s2 still needs /x"
    );
    assert_eq!(numpat(&mut conn).await, base_pat + 1);
    s2.disconnect();
    let deadline = Instant::now() + Duration::from_secs(5);
    while numsub(&mut conn, "bayeux:c:/x").await != 0 || numpat(&mut conn).await != base_pat {
        assert!(Instant::now() < deadline, "subscriptions not released");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    a.bp.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_deliveries_reach_the_users_sessions_on_other_nodes_only() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let url = redis.url();
    let mut conn = raw(&url).await;
    let (a, b) = (node(&url), node(&url));
    let (_u1, log_u1) = listener(&b.engine, Some("agent1"), &[]);
    let (_u2, log_u2) = listener(&b.engine, Some("agent2"), &[]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while numsub(&mut conn, "bayeux:u:agent1").await != 1 {
        assert!(Instant::now() < deadline, "user channel not subscribed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ch = bayeux_core::ChannelId::parse("/v2/me/calls").unwrap();
    let data = serde_json::value::to_raw_value(&serde_json::json!({"state": "Dialing"})).unwrap();
    assert_eq!(a.engine.deliver_to_principal("agent1", &ch, &data), 0);
    wait_for("agent1 on node B", Duration::from_secs(5), || {
        !log_u1.lock().is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        *log_u1.lock(),
        vec![r#"/v2/me/calls {"state":"Dialing"}"#.to_owned()]
    );
    assert!(log_u2.lock().is_empty());
    a.bp.shutdown();
    b.bp.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_local_delivery_continues_and_cross_node_resumes_without_duplicates() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let (a, b) = (node(&redis.url()), node(&redis.url()));
    let (_sa, log_a) = listener(&a.engine, None, &["/s/*"]);
    let (_sb, log_b) = listener(&b.engine, None, &["/s/*"]);
    until_flowing(&a.engine, "/s/1", &log_b).await;
    log_a.lock().clear();
    for i in 0..100 {
        a.engine.publish_json("/s/1", &i).unwrap();
    }
    wait_for("first 100 on B", Duration::from_secs(5), || {
        log_b.lock().len() >= 100
    })
    .await;

    redis.kill();
    wait_for("A to notice", Duration::from_secs(5), || {
        !a.bp.is_connected()
    })
    .await;
    for i in 100..200 {
        a.engine.publish_json("/s/1", &i).unwrap();
    }
    assert_eq!(log_a.lock().len(), 200, "local delivery during the outage");
    let restarted = Instant::now();
    redis.spawn();
    // Cross-node delivery resumes by itself: publish until B hears again.
    let mut i = 200;
    let resumed = loop {
        a.engine.publish_json("/s/1", &i).unwrap();
        i += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
        if log_b
            .lock()
            .iter()
            .any(|l| l.starts_with("/s/1 ") && l[5..].parse::<i32>().unwrap() >= 200)
        {
            break restarted.elapsed();
        }
        assert!(
            restarted.elapsed() < Duration::from_secs(15),
            "never resumed"
        );
    };
    eprintln!("cross-node delivery resumed {resumed:?} after the restart");
    for j in i..i + 100 {
        a.engine.publish_json("/s/1", &j).unwrap();
    }
    let last = format!("/s/1 {}", i + 99);
    wait_for("the last message on B", Duration::from_secs(5), || {
        log_b.lock().last() == Some(&last)
    })
    .await;
    // B: strictly increasing (no duplicate, no reordering), a gap where Redis was down.
    let got: Vec<i32> = log_b
        .lock()
        .iter()
        .map(|l| l[5..].parse().unwrap())
        .collect();
    assert!(
        got.windows(2).all(|w| w[0] < w[1]),
        "order/duplicates: {got:?}"
    );
    assert_eq!(&got[..100], &(0..100).collect::<Vec<_>>()[..]);
    assert_eq!(
        log_a.lock().len() as i32,
        i + 100,
        "every local delivery on A"
    );
    let ma = a.bp.metrics();
    assert!(ma.publish_dropped() >= 1, "outage publishes counted");
    assert!(ma.outages.load(Ordering::Relaxed) >= 1);
    assert!(a.bp.is_connected() && b.bp.is_connected());
    a.bp.shutdown();
    b.bp.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_at_start_then_connects_by_itself() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    redis.kill();
    let (a, b) = (node(&redis.url()), node(&redis.url()));
    let (_sa, log_a) = listener(&a.engine, None, &["/late"]);
    let (_sb, log_b) = listener(&b.engine, None, &["/late"]);
    a.engine.publish_json("/late", &1).unwrap();
    assert_eq!(log_a.lock().len(), 1, "local delivery without Redis");
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!a.bp.is_connected());
    redis.spawn();
    until_flowing(&a.engine, "/late", &log_b).await;
    assert!(a.bp.is_connected());
    assert_eq!(a.bp.metrics().outages.load(Ordering::Relaxed), 1);
    a.bp.shutdown();
    b.bp.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_messages_on_our_channels_are_counted_and_ignored() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let url = redis.url();
    let (a, b) = (node(&url), node(&url));
    let (_sb, log_b) = listener(&b.engine, Some("agent1"), &["/f/**"]);
    until_flowing(&a.engine, "/f/x", &log_b).await;
    let mut conn = raw(&url).await;
    let garbage: [(&str, &[u8]); 5] = [
        ("bayeux:c:/f/x", b"hello"),
        ("bayeux:c:/f/x", b""),
        ("bayeux:c:/f/x", b"\x01aaaaaaaaaaaaaaaabbbbbbbbnot json"),
        ("bayeux:c:/f/x/y", &[0xff; 64]),
        (
            "bayeux:u:agent1",
            b"\x01aaaaaaaaaaaaaaaacccccccc{\"channel\":1}",
        ),
    ];
    for (ch, payload) in garbage {
        let _: i64 = redis::cmd("PUBLISH")
            .arg(ch)
            .arg(payload)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    let invalid = || b.bp.metrics().invalid.load(Ordering::Relaxed);
    wait_for("5 invalid", Duration::from_secs(5), || invalid() >= 5).await;
    assert_eq!(invalid(), 5);
    assert!(log_b.lock().is_empty());
    a.engine.publish_json("/f/x", &"after").unwrap();
    wait_for(
        "a good message after the garbage",
        Duration::from_secs(5),
        || !log_b.lock().is_empty(),
    )
    .await;
    a.bp.shutdown();
    b.bp.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_redis_never_blocks_the_local_path() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let url = redis.url();
    let engine = Engine::new(EngineConfig::default());
    let mut cfg = RedisConfig::with_url(&url);
    cfg.publish_queue = 64;
    cfg.publish_batch = 16;
    cfg.response_timeout_ms = 300;
    cfg.retry_max_ms = 500;
    cfg.health_interval_ms = 200;
    let a = Node {
        bp: RedisBackplane::start(&engine, &cfg).unwrap(),
        engine,
    };
    let b = node(&url);
    let (_sa, log_a) = listener(&a.engine, None, &["/slow"]);
    let (_sb, log_b) = listener(&b.engine, None, &["/slow"]);
    until_flowing(&a.engine, "/slow", &log_b).await;
    log_a.lock().clear();

    // Freeze Redis: connections stay open but nothing is answered.
    let pid = redis.child.as_ref().unwrap().id().to_string();
    let signal = |sig: &str| {
        assert!(
            Command::new("kill")
                .args([sig, &pid])
                .status()
                .unwrap()
                .success()
        );
    };
    signal("-STOP");
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    for i in 0..20_000 {
        let t = Instant::now();
        a.engine.publish_json("/slow", &i).unwrap();
        slowest = slowest.max(t.elapsed());
        if i % 1000 == 0 {
            tokio::task::yield_now().await;
        }
    }
    let took = started.elapsed();
    tokio::time::sleep(Duration::from_millis(800)).await;
    signal("-CONT");
    eprintln!("20000 publishes with Redis frozen: {took:?}, slowest {slowest:?}");
    assert!(
        took < Duration::from_secs(3),
        "publishing waited for Redis: {took:?}"
    );
    assert_eq!(log_a.lock().len(), 20_000, "every local delivery");
    let dropped = a.bp.metrics().publish_dropped();
    assert!(dropped > 10_000, "dropped {dropped}");
    // It recovers by itself.
    until_flowing(&a.engine, "/slow", &log_b).await;
    let got: Vec<i64> = log_b
        .lock()
        .iter()
        .filter_map(|l| l[6..].parse().ok())
        .collect();
    assert!(
        got.windows(2).all(|w| w[0] < w[1]),
        "no duplicate, no reordering"
    );
    a.bp.shutdown();
    b.bp.shutdown();
}

/// A WebSocket session of `principal` on `engine` (its deliveries are queued bytes, what a
/// client would read), subscribed to `patterns` through the engine.
fn client_session(
    engine: &Engine,
    principal: &str,
    patterns: &[&str],
) -> Arc<bayeux_core::Session> {
    let ctx = bayeux_core::RequestContext::new(bayeux_core::TransportKind::WebSocket)
        .with_principal(principal);
    let hs = bayeux_core::decode_batch(
        br#"{"channel":"/meta/handshake","version":"1.0","supportedConnectionTypes":["websocket"]}"#,
        &Default::default(),
    )
    .unwrap();
    let s = engine
        .handle_batch(&ctx, hs, Instant::now())
        .session
        .unwrap();
    for p in patterns {
        let p = bayeux_core::ChannelPattern::parse(p).unwrap();
        assert!(engine.subscribe_session(&s, &p));
    }
    s
}

fn queued_text(s: &bayeux_core::Session) -> Vec<String> {
    s.take_messages()
        .iter()
        .map(|f| String::from_utf8_lossy(f.array()).into_owned())
        .collect()
}

/// Anyone who can PUBLISH on the backplane's Redis channels, with a valid frame header naming
/// another node: what the local sessions of a node (a client session and a server-side one)
/// can be made to receive. Only well-formed deliveries on broadcast channels, rebuilt from
/// their channel, data and ext; everything else is dropped and counted by reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_backplane_messages_never_reach_clients() {
    use bayeux_redis::wire::{self, Invalid, NodeId};
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let url = redis.url();
    let a = node(&url);
    let engine = Engine::new(EngineConfig::default());
    let mut cfg = RedisConfig::with_url(&url);
    cfg.max_message_bytes = 4096;
    cfg.health_interval_ms = 200;
    let b = Node {
        bp: RedisBackplane::start(&engine, &cfg).unwrap(),
        engine,
    };
    let client = client_session(&b.engine, "agent1", &["/f/**"]);
    let (_local, log) = listener(&b.engine, Some("agent1"), &["/f/**"]);
    until_flowing(&a.engine, "/f/x", &log).await;
    let mut conn = raw(&url).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while numsub(&mut conn, "bayeux:u:agent1").await != 1 {
        assert!(Instant::now() < deadline, "user channel not subscribed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = queued_text(&client);
    let metrics = b.bp.metrics();
    assert_eq!(metrics.invalid.load(Ordering::Relaxed), 0);

    const BC: &str = "bayeux:c:/f/x";
    const USER: &str = "bayeux:u:agent1";
    let big = format!(r#"{{"channel":"/f/x","data":"{}"}}"#, "x".repeat(4096));
    let disconnect = br#"{"channel":"/meta/disconnect","data":{},"successful":true,"advice":{"reconnect":"none"}}"#;
    let crafted: Vec<(&str, &str, Vec<u8>, Invalid)> = vec![
        (
            "array form of a forced disconnect",
            BC,
            br#"[{"channel":"/meta/disconnect","successful":true,"advice":{"reconnect":"none"}}]"#.to_vec(),
            Invalid::NotObject,
        ),
        (
            "array form of a delivery",
            USER,
            br#"[{"channel":"/f/x","data":1},{"channel":"/meta/disconnect","successful":true}]"#.to_vec(),
            Invalid::NotObject,
        ),
        ("/meta/disconnect", BC, disconnect.to_vec(), Invalid::NotBroadcast),
        ("/meta/disconnect", USER, disconnect.to_vec(), Invalid::NotBroadcast),
        (
            "/meta/connect advice",
            USER,
            br#"{"channel":"/meta/connect","data":null,"successful":true,"advice":{"reconnect":"handshake"}}"#.to_vec(),
            Invalid::NotBroadcast,
        ),
        ("/service/x", BC, br#"{"channel":"/service/x","data":1}"#.to_vec(), Invalid::NotBroadcast),
        ("/service/x", USER, br#"{"channel":"/service/x","data":1}"#.to_vec(), Invalid::NotBroadcast),
        (
            "another channel than its Redis channel",
            BC,
            br#"{"channel":"/f/other","data":1}"#.to_vec(),
            Invalid::ChannelMismatch,
        ),
        (
            "a second channel member",
            BC,
            br#"{"channel":"/f/x","data":1,"channel":"/meta/disconnect"}"#.to_vec(),
            Invalid::Malformed,
        ),
        ("oversized", BC, big.clone().into_bytes(), Invalid::TooLarge),
        ("oversized", USER, big.into_bytes(), Invalid::TooLarge),
        ("invalid UTF-8", BC, b"{\"channel\":\"/f/x\",\"data\":\"\xff\xfe\"}".to_vec(), Invalid::Malformed),
        ("invalid UTF-8", USER, b"\xff\xfe{}".to_vec(), Invalid::NotObject),
        ("invalid JSON", BC, br#"{"channel":"/f/x","data":"#.to_vec(), Invalid::Malformed),
        ("invalid JSON", USER, br#"{"channel":"/f/x" "data":1}"#.to_vec(), Invalid::Malformed),
        (
            "trailing bytes",
            BC,
            br#"{"channel":"/f/x","data":1}{"channel":"/meta/disconnect","data":{}}"#.to_vec(),
            Invalid::Malformed,
        ),
        (
            "trailing bytes",
            USER,
            br#"{"channel":"/f/x","data":1},{"channel":"/meta/disconnect","data":{}}"#.to_vec(),
            Invalid::Malformed,
        ),
        (
            "lone surrogate",
            USER,
            br#"{"channel":"/f/x","data":"\udc00"}"#.to_vec(),
            Invalid::Malformed,
        ),
    ];
    let forger = NodeId([0xEE; 16]);
    let mut expected = [0u64; Invalid::ALL.len()];
    for (seq, (what, channel, body, why)) in crafted.iter().enumerate() {
        let frame = wire::encode(&forger, seq as u64 + 1, body);
        let receivers: i64 = redis::cmd("PUBLISH")
            .arg(*channel)
            .arg(frame)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(receivers >= 1, "{what} on {channel}: nobody subscribed");
        expected[why.index()] += 1;
    }
    let n = crafted.len() as u64;
    wait_for(
        "every crafted message refused",
        Duration::from_secs(5),
        || metrics.invalid.load(Ordering::Relaxed) >= n,
    )
    .await;
    for reason in Invalid::ALL {
        assert_eq!(
            metrics.rejected(reason),
            expected[reason.index()],
            "rejected_total{{reason=\"{}\"}}",
            reason.label()
        );
    }
    assert!(
        b.bp.render_metrics()
            .contains("bayeux_redis_rejected_total{reason=\"not_broadcast\"} 5\n")
    );

    // Well-formed ones from the same forger still arrive, rebuilt from their fields: the extra
    // members (advice, successful) stay behind.
    for (seq, channel, body) in [
        (
            1000,
            BC,
            &br#"{"channel":"/f/x","data":{"ok":1},"ext":{"e":1},"successful":false,"advice":{"reconnect":"none"}}"#[..],
        ),
        (
            1001,
            USER,
            br#"{"channel":"/v2/me/calls","data":"call","advice":{"reconnect":"none"}}"#,
        ),
    ] {
        let _: i64 = redis::cmd("PUBLISH")
            .arg(channel)
            .arg(wire::encode(&forger, seq, body))
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    wait_for("the well-formed messages", Duration::from_secs(5), || {
        log.lock().len() >= 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(*log.lock(), [r#"/f/x {"ok":1}"#, r#"/v2/me/calls "call""#]);
    assert_eq!(
        queued_text(&client),
        [
            r#"[{"channel":"/f/x","data":{"ok":1},"ext":{"e":1}}]"#,
            r#"[{"channel":"/v2/me/calls","data":"call"}]"#,
        ]
    );
    assert_eq!(metrics.invalid.load(Ordering::Relaxed), n);
    assert!(!client.is_closed());
    a.bp.shutdown();
    b.bp.shutdown();
}
