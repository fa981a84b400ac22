//! Clients that stop reading: every write has a deadline, past which the socket is closed and
//! its held connect released; the session then expires as usual, other clients see no
//! slowdown meanwhile, and the gauges come back to zero.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use bayeux_core::{Engine, EngineConfig};
use bayeux_transport::{BayeuxService, ShutdownHandle, TransportConfig};
use common::*;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::JoinHandle;

/// The channel both subscribers listen on.
const FEED: &str = "/feed";
/// Payload of each message published to the WebSocket subscribers.
const PAD_BYTES: usize = 8 * 1024;
/// Worst publish-to-receive latency allowed to the healthy subscriber.
const MAX_LATENCY: Duration = Duration::from_secs(1);

/// A TCP connection whose receive buffer (and so its TCP window) is tiny: once it stops
/// reading, the server's writes to it stall as soon as the server's send buffer is full.
async fn tiny_window(addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    step("connect", socket.connect(addr))
        .await
        .expect("connect")
}

/// A WebSocket over [`tiny_window`].
async fn tiny_window_ws(addr: SocketAddr) -> Ws {
    ws_over(addr, tiny_window(addr).await).await
}

/// A WebSocket client that handshakes, subscribes to [`FEED`] and leaves a connect held,
/// asking the server to hold it `hold_ms`; returns the clientId.
async fn subscribed(ws: &mut Ws, hold_ms: u64) -> String {
    let id = ws_handshake(ws).await;
    ws_send(ws, &json!([subscribe_msg(&id, "3", FEED)])).await;
    assert_eq!(
        find(&ws_recv(ws).await, "/meta/subscribe")["successful"],
        true
    );
    let mut connect = connect_msg(&id, "4", "websocket");
    connect["advice"] = json!({"timeout": hold_ms});
    ws_send(ws, &json!([connect])).await;
    id
}

/// Reads `ws` like a CometD client (a new connect after each connect reply) until the message
/// with `end`; returns the socket and, for each delivery, its `seq` and when it arrived.
fn healthy_reader(mut ws: Ws, id: String) -> JoinHandle<(Ws, Vec<(u64, Instant)>)> {
    tokio::spawn(async move {
        let mut got = Vec::new();
        let mut next_id = 100u64;
        loop {
            let msgs = match ws_next(&mut ws, STEP).await {
                Some(WsEvent::Messages(m)) => m,
                other => panic!("the healthy subscriber got {other:?}"),
            };
            let now = Instant::now();
            for m in msgs {
                if m["channel"] == "/meta/connect" {
                    assert_eq!(m["successful"], true, "{m}");
                    next_id += 1;
                    let c = connect_msg(&id, &next_id.to_string(), "websocket");
                    ws_send(&mut ws, &json!([c])).await;
                } else if m["channel"] == FEED {
                    if m["data"]["end"] == true {
                        return (ws, got);
                    }
                    got.push((m["data"]["seq"].as_u64().expect("seq"), now));
                }
            }
        }
    })
}

fn held(engine: &Engine) -> u64 {
    engine.stats().held_connects.load(Relaxed)
}

/// Polls `cond` every 5 ms until it holds, for at most [`STEP`].
async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + STEP;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Publishes numbered messages to [`FEED`]; remembers when each was published.
struct Publisher {
    pad: String,
    sent: Vec<Instant>,
}

impl Publisher {
    fn new(pad_bytes: usize) -> Publisher {
        Publisher {
            pad: "x".repeat(pad_bytes),
            sent: Vec::new(),
        }
    }

    fn publish(&mut self, engine: &Engine) {
        let seq = self.sent.len();
        self.sent.push(Instant::now());
        engine
            .publish_json(FEED, &json!({"seq": seq, "pad": self.pad}))
            .expect("publish");
    }

    fn end(&self, engine: &Engine) {
        engine
            .publish_json(FEED, &json!({"end": true}))
            .expect("publish");
    }

    /// Asserts that `got` holds every message published, in order, each within
    /// [`MAX_LATENCY`]; returns the worst latency.
    fn check(&self, got: &[(u64, Instant)]) -> Duration {
        let seqs: Vec<u64> = got.iter().map(|(s, _)| *s).collect();
        let want: Vec<u64> = (0..self.sent.len() as u64).collect();
        assert_eq!(
            seqs, want,
            "the healthy subscriber got every message, in order"
        );
        let worst = got
            .iter()
            .map(|(s, at)| at.duration_since(self.sent[*s as usize]))
            .max()
            .unwrap_or_default();
        assert!(worst < MAX_LATENCY, "worst latency {worst:?}");
        worst
    }
}

/// What [`stall`] observed, in time since the stuck client stopped reading.
struct Stall {
    /// When its session queue was first seen not emptied: the server's write to it waits.
    blocked: Option<Duration>,
    /// When its WebSocket was closed by the server.
    closed: Duration,
}

/// With `stuck` (subscribed, connect held) no longer reading and `healthy` reading: publishes to
/// both until the server gives up on `stuck`, then a few more; checks that the healthy
/// subscriber got every message promptly.
async fn stall(
    engine: &Engine,
    svc: &BayeuxService,
    stuck_id: &str,
    healthy: JoinHandle<(Ws, Vec<(u64, Instant)>)>,
    mut while_blocked: impl FnMut(),
) -> (Stall, Ws) {
    let stuck = engine.session(stuck_id).expect("stuck session");
    let mut p = Publisher::new(PAD_BYTES);
    let start = Instant::now();
    let mut blocked = None;
    let mut closed = None;
    let mut after_close = 0;
    while after_close < 20 {
        p.publish(engine);
        // The server takes no message from the queue of a socket whose write waits.
        if blocked.is_none() && closed.is_none() && stuck.queue_len() > 1 {
            blocked = Some(start.elapsed());
        }
        if blocked.is_some() && closed.is_none() {
            while_blocked();
        }
        if closed.is_none() && svc.metrics().websockets.load(Relaxed) == 1 {
            closed = Some(start.elapsed());
        }
        if closed.is_some() {
            after_close += 1;
        }
        assert!(
            start.elapsed() < STEP,
            "the server did not close the stuck socket (write blocked: {blocked:?})"
        );
        // Until the stuck socket's buffers are full the messages go out as fast as possible;
        // then at a steady 500 a second.
        if blocked.is_some() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        } else {
            tokio::task::yield_now().await;
        }
    }
    p.end(engine);
    let (ws, got) = step("healthy subscriber", healthy)
        .await
        .expect("reader task");
    let worst = p.check(&got);
    eprintln!(
        "{} messages of {PAD_BYTES} bytes; healthy subscriber worst latency {worst:?}",
        p.sent.len()
    );
    let stall = Stall {
        blocked,
        closed: closed.expect("closed"),
    };
    (stall, ws)
}

/// Reads what the server managed to send before closing; the stream must then end.
async fn assert_closed_by_server(ws: &mut Ws) {
    loop {
        match ws_next(ws, STEP).await {
            Some(WsEvent::Messages(_)) => {}
            Some(WsEvent::Closed(_)) => return,
            None => panic!("the stuck socket is still open"),
        }
    }
}

/// Disconnects the session and closes the socket.
async fn leave(mut ws: Ws, id: &str) {
    ws_send(
        &mut ws,
        &json!([{"channel": "/meta/disconnect", "clientId": id, "id": "99"}]),
    )
    .await;
    loop {
        match ws_next(&mut ws, STEP).await {
            Some(WsEvent::Messages(m)) if m.iter().any(|m| m["id"] == "99") => break,
            Some(WsEvent::Messages(_)) => {}
            other => panic!("no disconnect reply: {other:?}"),
        }
    }
    let _ = ws.close(None).await;
}

#[tokio::test]
async fn websocket_that_stops_reading_is_closed_at_the_write_deadline() {
    bounded(async {
        let ping = Duration::from_millis(250);
        let s = Server::start(
            EngineConfig {
                max_interval_ms: 500,
                ..engine_config(10_000)
            },
            TransportConfig {
                ws_ping_interval: ping,
                // None: two ping intervals.
                write_timeout: None,
                sweep_period: Duration::from_millis(50),
                ..TransportConfig::default()
            },
        )
        .await;
        let engine = s.engine();
        let metrics = s.svc.metrics();

        let mut healthy = ws_connect(s.addr, "/cometd").await;
        let healthy_id = subscribed(&mut healthy, 10_000).await;
        let mut stuck = tiny_window_ws(s.addr).await;
        // A connect whose client goes away expires from the deadline it would have had: keep it
        // short so that the session does not outlive the test.
        let stuck_id = subscribed(&mut stuck, 1_000).await;
        held_connects(engine, 2).await;
        assert_eq!(metrics.websockets.load(Relaxed), 2);
        assert_eq!(
            metrics.connections.load(Relaxed),
            2,
            "WebSockets are counted"
        );
        let healthy = healthy_reader(healthy, healthy_id.clone());

        // From here on `stuck` is not read until the server has closed it.
        let (stall, healthy) = stall(engine, &s.svc, &stuck_id, healthy, || {}).await;
        let deadline = ping * 2;
        // The write is normally seen waiting first; on a very slow machine the keep-alive check
        // (also two pings) may get there before the buffers are full, which is just as good.
        let since = stall.blocked.unwrap_or(stall.closed);
        eprintln!(
            "write deadline {deadline:?}: the stuck socket's write was seen waiting {:?} after \
             it stopped reading; the server closed it {:?} after that ({:?} after it stopped \
             reading)",
            stall.blocked,
            stall.closed - since,
            stall.closed
        );
        assert!(
            stall.closed - since < deadline + PROMPT,
            "closed {:?} after the write was seen waiting",
            stall.closed - since
        );
        assert_closed_by_server(&mut stuck).await;
        // Its connection slot is released.
        wait_until("the stuck connection is released", || {
            metrics.connections.load(Relaxed) == 1
        })
        .await;
        // (The healthy client leaves now: it no longer reads, so it would stop answering pings.)
        leave(healthy, &healthy_id).await;
        // The stuck session's connect is released with the socket: the session expires.
        wait_until("the stuck session expires", || {
            engine.session(&stuck_id).is_none()
        })
        .await;
        wait_until("every gauge back to zero", || {
            metrics.websockets.load(Relaxed) == 0
                && metrics.connections.load(Relaxed) == 0
                && held(engine) == 0
                && engine.session_count() == 0
        })
        .await;
    })
    .await;
}

/// The service in a host's own accept loop, without [`bayeux_transport::serve`] (and so
/// without its write-bounding socket): the WebSocket's own deadline must hold alone.
struct Embedded {
    addr: SocketAddr,
    svc: BayeuxService,
    shutdown: ShutdownHandle,
    accept: JoinHandle<()>,
}

impl Embedded {
    async fn start(engine: EngineConfig, config: TransportConfig) -> Embedded {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (svc, shutdown) = BayeuxService::new(Engine::new(engine), config);
        let service = svc.clone();
        let accept = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let service = service.clone();
                tokio::spawn(async move {
                    let builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    let _ = builder
                        .serve_connection_with_upgrades(TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        Embedded {
            addr,
            svc,
            shutdown,
            accept,
        }
    }
}

impl Drop for Embedded {
    fn drop(&mut self) {
        self.shutdown.shutdown();
        self.accept.abort();
    }
}

#[tokio::test]
async fn websocket_write_deadline_holds_without_serve_and_the_hold_is_still_answered() {
    bounded(async {
        let write_timeout = Duration::from_millis(2500);
        let s = Embedded::start(
            EngineConfig {
                max_interval_ms: 500,
                ..engine_config(10_000)
            },
            TransportConfig {
                // Keep-alive far away: only the write deadline can close the stuck socket.
                ws_ping_interval: Duration::from_secs(30),
                write_timeout: Some(write_timeout),
                sweep_period: Duration::from_millis(50),
                ..TransportConfig::default()
            },
        )
        .await;
        let engine = s.svc.engine();
        let metrics = s.svc.metrics();

        let mut healthy = ws_connect(s.addr, "/cometd").await;
        let healthy_id = subscribed(&mut healthy, 10_000).await;
        let mut stuck = tiny_window_ws(s.addr).await;
        // Its connect is answered after 1.5 s: while its socket's write waits.
        let stuck_id = subscribed(&mut stuck, 1_500).await;
        held_connects(engine, 2).await;
        let healthy = healthy_reader(healthy, healthy_id.clone());

        // While the write waits, the hold deadline is still serviced: the stuck session's
        // connect is released with its socket still open.
        let mut held_when_blocked = None;
        let mut released_while_open = false;
        let (stall, healthy) = stall(engine, &s.svc, &stuck_id, healthy, || {
            let h = held(engine);
            held_when_blocked.get_or_insert(h);
            if h == 1 && metrics.websockets.load(Relaxed) == 2 {
                released_while_open = true;
            }
        })
        .await;
        // Nothing else closes the socket here: the write was seen waiting before.
        let blocked = stall
            .blocked
            .expect("the write to the stuck socket was seen waiting");
        let took = stall.closed - blocked;
        eprintln!(
            "write deadline {write_timeout:?}: the write was seen waiting {blocked:?} after the \
             client stopped reading; the server closed the socket {took:?} after that"
        );
        assert_eq!(
            held_when_blocked,
            Some(2),
            "the write blocked before the hold deadline (blocked after {blocked:?})"
        );
        assert!(
            released_while_open,
            "the held connect was answered while the write waited"
        );
        // The configured deadline, measured from the first write that waited (a little before
        // the queue is seen not emptied).
        assert!(
            took + Duration::from_millis(250) >= write_timeout,
            "{took:?}"
        );
        assert!(took < write_timeout + PROMPT, "{took:?}");
        assert_closed_by_server(&mut stuck).await;
        leave(healthy, &healthy_id).await;
        wait_until("the stuck session expires", || {
            engine.session(&stuck_id).is_none()
        })
        .await;
        wait_until("every gauge back to zero", || {
            metrics.websockets.load(Relaxed) == 0
                && held(engine) == 0
                && engine.session_count() == 0
        })
        .await;
    })
    .await;
}

#[tokio::test]
async fn long_poll_that_stops_reading_its_reply_is_dropped_at_the_write_deadline() {
    bounded(async {
        let write_timeout = Duration::from_millis(500);
        let s = Server::start(
            engine_config(10_000),
            TransportConfig {
                write_timeout: Some(write_timeout),
                ..TransportConfig::default()
            },
        )
        .await;
        let engine = s.engine();
        let metrics = s.svc.metrics();
        let mut c = s.client();
        c.handshake_and_connect().await;
        assert_eq!(c.subscribe(json!(FEED)).await["successful"], true);
        // Messages wait in the queue: the next connect returns them all in one reply of 8 MiB,
        // twice the most Linux buffers for a socket by default.
        let mut p = Publisher::new(64 * 1024);
        for _ in 0..128 {
            p.publish(engine);
        }
        wait_until("no connection left open", || {
            metrics.connections.load(Relaxed) == 0
        })
        .await;
        let mut tcp = tiny_window(s.addr).await;
        let msg = c.connect_message();
        let req = c.request("/cometd/connect", json!([msg]).to_string());
        let (parts, body) = req.into_parts();
        let body = http_body_util::BodyExt::collect(body)
            .await
            .expect("body")
            .to_bytes();
        let mut raw = format!(
            "POST {} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
            parts.uri.path(),
            body.len()
        );
        if let Some(cookie) = parts.headers.get(http::header::COOKIE) {
            raw.push_str(&format!("Cookie: {}\r\n", cookie.to_str().unwrap()));
        }
        raw.push_str("\r\n");
        tcp.write_all(raw.as_bytes()).await.unwrap();
        tcp.write_all(&body).await.unwrap();
        let sent = Instant::now();
        // Counted at once, dropped no sooner than the deadline after its reply stalls.
        wait_until("the connection is counted", || {
            metrics.connections.load(Relaxed) == 1
        })
        .await;
        // The reply is not read: the server drops the connection.
        wait_until("the stuck connection is dropped", || {
            metrics.connections.load(Relaxed) == 0
        })
        .await;
        let took = sent.elapsed();
        eprintln!("write deadline {write_timeout:?}: the long poll was dropped after {took:?}");
        assert!(took >= write_timeout, "{took:?}");
        // What the server had written before is still delivered, then the connection ends: a
        // successful reply, cut short.
        let mut got = Vec::new();
        let _ = step("the rest of the reply", tcp.read_to_end(&mut got)).await;
        let text = String::from_utf8_lossy(&got);
        assert_eq!(raw_status(&text), 200);
        let (head, body) = text.split_once("\r\n\r\n").expect("a response head");
        let length: usize = head
            .lines()
            .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:")?.trim().parse().ok())
            .expect("content-length");
        assert!(length > 8 << 20, "{length}");
        assert!(body.len() < length, "the whole reply arrived: {}", body.len());
    })
    .await;
}
