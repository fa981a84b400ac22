//! The abuse suite: the real server app in-process on `127.0.0.1:0`, well-behaved clients
//! running throughout, and an attacker doing one kind of damage per test. The well-behaved
//! clients are a long-polling and a WebSocket subscriber on `/control/**`, a server-side
//! publisher feeding them every 10 ms, and a backend publishing over HTTP every 20 ms that never
//! sends `/meta/connect` (its session must live on what it publishes). Each test checks that the
//! attacker gets a clear refusal (an HTTP status and Bayeux error, or a WebSocket close code),
//! that the server keeps running (`/healthz`), that the HTTP publisher never failed and both
//! subscribers got every message of both publishers exactly once, in order, and that the
//! server's resident memory stays under [`RSS_BOUND_MIB`] (the server is this process, so
//! `/proc/self/status` is its memory).
//!
//! Server settings for all tests (see [`config`]): 1 MiB bodies, 64 KiB WebSocket messages,
//! 1000 messages per batch, depth 64, connects held 1 s, sessions expire 500 ms after their
//! client was last heard from (swept about every second), 300 ms to send request headers, queues of 1024
//! messages, 1000 subscriptions per session.
//!
//! The tests run one at a time (memory and timing are measured per test). Counts are the full
//! ones of the brief unless a comment says otherwise; the whole file takes about 20-40 s in a
//! debug build.

mod common;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use bayeux_server::ServerConfig;
use common::{
    CONTROL_CHANNEL, Control, HTTP_PUBLISH_CHANNEL, Http, HttpPublisher, Publisher, Server, Ws,
    WsControl, WsEvent, handshake, rss_mib, step, ws_connect, ws_next, ws_over,
};
use futures_util::{SinkExt, StreamExt};
use http::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};

/// Resident memory the server (this whole test process) may reach during any attack, MiB.
/// A debug build with every test's allocations peaks at about 100-150 MiB here.
const RSS_BOUND_MIB: u64 = 512;

/// Upper bound of one whole test.
const TEST_BOUND: Duration = Duration::from_secs(45);

const MAX_BODY: usize = 1 << 20;
const MAX_WS: usize = 64 * 1024;
const MAX_QUEUE: usize = 1024;
const MAX_SUBSCRIPTIONS: usize = 1000;

fn config() -> ServerConfig {
    let mut c = ServerConfig {
        voice_enabled: false,
        ..ServerConfig::default()
    };
    let b = &mut c.bayeux;
    b.max_body_bytes = MAX_BODY;
    b.max_ws_message_bytes = MAX_WS;
    b.max_messages_per_batch = 1000;
    b.max_json_depth = 64;
    b.timeout_ms = 1000;
    b.max_interval_ms = 500;
    b.header_read_timeout_ms = 300;
    b.max_queue = MAX_QUEUE;
    b.max_subscriptions = MAX_SUBSCRIPTIONS;
    c
}

/// One test at a time: memory is measured per test, and timing-sensitive parts (expiry, header
/// timeouts) should not compete for the two cores.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// A server with the control clients and their publishers running.
struct Abuse {
    server: Server,
    control: Control,
    ws_control: WsControl,
    publisher: Publisher,
    http_publisher: HttpPublisher,
    rss_before: u64,
    peak_rss: u64,
    started: Instant,
}

impl Abuse {
    async fn start() -> Abuse {
        Abuse::start_with(config()).await
    }

    async fn start_with(config: ServerConfig) -> Abuse {
        let rss_before = rss_mib();
        let server = Server::start(config).await;
        let control = Control::start(server.addr).await;
        let ws_control = WsControl::start(server.addr).await;
        let publisher = Publisher::start(server.engine().clone());
        let http_publisher = HttpPublisher::start(server.addr).await;
        Abuse {
            server,
            control,
            ws_control,
            publisher,
            http_publisher,
            rss_before,
            peak_rss: rss_mib(),
            started: Instant::now(),
        }
    }

    fn sample_rss(&mut self) {
        self.peak_rss = self.peak_rss.max(rss_mib());
        assert!(
            self.peak_rss <= RSS_BOUND_MIB,
            "resident memory {} MiB over the bound",
            self.peak_rss
        );
    }

    /// Ends the test: the server is healthy, the HTTP publisher never lost its session, both
    /// control clients got every message of both publishers, memory stayed bounded.
    async fn finish(mut self, what: &str) {
        self.sample_rss();
        // The control clients keep receiving after the attack, too.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(self.server.healthy().await, "{what}: server not healthy");
        let published = self.publisher.stop().await;
        let http_published = self.http_publisher.stop().await;
        let expected = [
            (CONTROL_CHANNEL, published),
            (HTTP_PUBLISH_CHANNEL, http_published),
        ];
        self.control.finish(&expected).await;
        self.ws_control.finish(&expected).await;
        eprintln!(
            "{what}: ok in {:?}; both control clients received all {published} + \
             {http_published} messages; RSS {} MiB before, peak {} MiB",
            self.started.elapsed(),
            self.rss_before,
            self.peak_rss
        );
        self.server.stop().await;
    }
}

/// Runs one test body: alone (see [`serial`]), on its own two-thread runtime, bounded by
/// [`TEST_BOUND`].
fn run(body: impl std::future::Future<Output = ()>) {
    let _one_at_a_time = serial();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        tokio::time::timeout(TEST_BOUND, body)
            .await
            .expect("the test exceeded its time bound");
    });
}

/// The `Content-Type` of a JSON body.
const JSON: (&str, &str) = ("content-type", "application/json;charset=UTF-8");

/// The Bayeux error string of a refused request's body.
fn bayeux_error(body: &Value) -> String {
    body[0]["error"].as_str().unwrap_or_default().to_owned()
}

async fn post_raw(addr: std::net::SocketAddr, content_type: &str, body: Vec<u8>) -> common::Resp {
    let mut http = Http::connect(addr).await.expect("connect");
    step(
        "attack request",
        http.request(
            Method::POST,
            "/cometd",
            &[("content-type", content_type)],
            body,
        ),
    )
    .await
    .expect("the server answers instead of dropping the connection")
}

/// 20 bodies of 2 MiB (limit 1 MiB): each gets 413 with `413::message_too_large`, also when the
/// declared length is a lie the server only discovers while reading.
#[test]
fn oversized_bodies_get_413() {
    run(async {
        let mut t = Abuse::start().await;
        let body = {
            let mut b = b"[{\"channel\":\"/a\",\"data\":\"".to_vec();
            b.resize(2 * MAX_BODY, b'x');
            b.extend_from_slice(b"\"}]");
            b
        };
        for _ in 0..20 {
            let r = post_raw(t.server.addr, "application/json", body.clone()).await;
            assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
            assert_eq!(bayeux_error(&r.json()), "413::message_too_large");
            t.sample_rss();
        }
        // Chunked, so no Content-Length warns the server, and never ending: refused while
        // reading, once past what the server drains of an oversized body (4 times the limit).
        let mut s = TcpStream::connect(t.server.addr).await.unwrap();
        s.write_all(b"POST /cometd HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
            .await
            .unwrap();
        let chunk = vec![b' '; 64 * 1024];
        let mut sent = 0;
        let mut status_line = String::new();
        // (What the kernel accepts is not what the server read: loopback buffers are large.)
        while sent < 8 * MAX_BODY {
            let head = format!("{:x}\r\n", chunk.len());
            if s.write_all(head.as_bytes()).await.is_err()
                || s.write_all(&chunk).await.is_err()
                || s.write_all(b"\r\n").await.is_err()
            {
                break;
            }
            sent += chunk.len();
        }
        let mut buf = vec![0u8; 4096];
        if let Ok(Ok(n)) = tokio::time::timeout(common::STEP, s.read(&mut buf)).await {
            status_line = String::from_utf8_lossy(&buf[..n])
                .lines()
                .next()
                .unwrap_or("")
                .to_owned();
        }
        assert!(
            status_line.contains("413"),
            "chunked oversize: {status_line:?} after {sent} bytes"
        );
        t.finish("oversized bodies").await;
    });
}

/// JSON nested 100,000 deep (arrays, and objects): 400 with `400::message_too_deep`, refused
/// before any parser recursion.
#[test]
fn deep_nesting_gets_400() {
    run(async {
        let mut t = Abuse::start().await;
        let arrays = "[".repeat(100_000).into_bytes();
        let objects = "{\"a\":".repeat(100_000).into_bytes();
        let closed = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)).into_bytes();
        for body in [arrays, objects, closed] {
            for _ in 0..5 {
                let r = post_raw(t.server.addr, "application/json", body.clone()).await;
                assert_eq!(r.status, StatusCode::BAD_REQUEST);
                assert_eq!(bayeux_error(&r.json()), "400::message_too_deep");
            }
            t.sample_rss();
        }
        // The same over WebSocket (within the 64 KiB message limit): an error reply, and the
        // socket stays usable.
        let mut ws = ws_connect(t.server.addr).await;
        ws.send(Message::text("[".repeat(60_000))).await.unwrap();
        let reply = next_text(&mut ws).await;
        assert_eq!(bayeux_error(&reply), "400::message_too_deep");
        ws.send(Message::text(r#"[{"channel":"/meta/handshake","version":"1.0","supportedConnectionTypes":["websocket"]}]"#))
            .await
            .unwrap();
        assert_eq!(next_text(&mut ws).await[0]["successful"], true);
        t.finish("deep nesting").await;
    });
}

/// Batches of 100,000 messages: refused (`413::batch_too_large`) whether as a JSON array, as
/// 100,000 form `message=` parameters (here 20,000: 100,000 would exceed the body limit first),
/// or over WebSocket (close 1009: it exceeds the message size).
#[test]
fn huge_batches_are_refused() {
    run(async {
        let mut t = Abuse::start().await;
        let mut batch = String::from("[");
        for i in 0..100_000 {
            if i > 0 {
                batch.push(',');
            }
            batch.push_str("{}");
        }
        batch.push(']');
        for _ in 0..5 {
            let r = post_raw(
                t.server.addr,
                "application/json",
                batch.clone().into_bytes(),
            )
            .await;
            assert_batch_refused(&r);
            t.sample_rss();
        }
        let form = "message=%5B%7B%7D%5D&".repeat(20_000).into_bytes();
        let r = post_raw(t.server.addr, "application/x-www-form-urlencoded", form).await;
        assert_batch_refused(&r);
        // A publish batch just over the count limit, real messages: still refused whole.
        // Handshaken on one connection, published on another of the same browser.
        let (id, mut http) = {
            let mut http = Http::connect(t.server.addr).await.unwrap();
            (handshake(&mut http).await, http.sibling())
        };
        let msgs: Vec<Value> = (0..1001)
            .map(|i| json!({"channel": "/x", "clientId": id, "data": i}))
            .collect();
        let r = http
            .post(Value::from(msgs).to_string())
            .await
            .expect("POST /cometd");
        assert_batch_refused(&r);
        let mut ws = ws_connect(t.server.addr).await;
        // Refused from its header on: the send may fail if the server resets the socket first.
        let _ = ws.send(Message::text(batch)).await;
        expect_close(&mut ws, CloseCode::Size).await;
        t.finish("huge batches").await;
    });
}

/// A whole batch refused for its message count: 413 (or 400) with `413::batch_too_large`.
fn assert_batch_refused(r: &common::Resp) {
    assert!(
        matches!(r.status.as_u16(), 400 | 413),
        "batch refused with {}",
        r.status
    );
    assert_eq!(bayeux_error(&r.json()), "413::batch_too_large");
}

/// Invalid UTF-8 in JSON bodies: 400 `400::message_invalid`. Percent-encoded invalid UTF-8 in
/// form parameters and JSONP queries is decoded lossily (U+FFFD), so it is refused as an invalid
/// channel or message, never accepted.
#[test]
fn invalid_utf8_gets_400() {
    run(async {
        let t = Abuse::start().await;
        let bodies: [&[u8]; 5] = [
            b"[{\"channel\":\"/a\",\"data\":\"\xff\xfe\"}]",
            b"[{\"channel\":\"/a\xc0\xaf\"}]",
            b"[{\"channel\":\"/a\",\"data\":\"\xed\xa0\x80\"}]",
            b"[{\"channel\":\"/a\",\"data\":\"\xe2\x82\"}]",
            b"\xef\xbb\xbf[{\"channel\":\"/a\"}]",
        ];
        for body in bodies {
            for _ in 0..10 {
                let r = post_raw(t.server.addr, "application/json", body.to_vec()).await;
                assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body:?}");
                assert_eq!(bayeux_error(&r.json()), "400::message_invalid", "{body:?}");
            }
        }
        let r = post_raw(
            t.server.addr,
            "application/x-www-form-urlencoded",
            b"message=%5B%7B%22channel%22%3A%22%2Fa%FF%22%7D%5D".to_vec(),
        )
        .await;
        match r.status {
            StatusCode::OK => assert_eq!(r.json()[0]["error"], "405::channel_invalid"),
            s => assert_eq!(s, StatusCode::BAD_REQUEST),
        }
        let mut http = Http::connect(t.server.addr).await.unwrap();
        let r = http
            .request(
                Method::GET,
                "/cometd?jsonp=cb&message=%5B%FF%5D",
                &[],
                Vec::new(),
            )
            .await
            .unwrap();
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        t.finish("invalid UTF-8").await;
    });
}

/// 10,000 handshakes that never connect, from 8 connections at once: every one is answered,
/// no connection holds more than `max_sessions_per_connection` live sessions (the rest get
/// `503::too_many_sessions`), and the sessions are swept after `max_interval` (500 ms; the
/// sweeper runs about every second), leaving only the well-behaved clients'.
#[test]
fn handshake_flood_is_swept() {
    run(async {
        let mut t = Abuse::start().await;
        const N: usize = 10_000;
        const CONNS: usize = 8;
        let baseline = t.server.engine().session_count();
        let mut tasks = Vec::new();
        for _ in 0..CONNS {
            let addr = t.server.addr;
            tasks.push(tokio::spawn(async move {
                let mut http = Http::connect(addr).await.unwrap();
                let body = json!([{"channel": "/meta/handshake", "version": "1.0",
                    "supportedConnectionTypes": ["long-polling"]}])
                .to_string();
                for _ in 0..N / CONNS {
                    // Without a cookie (`post` would send the first handshake's): each handshake
                    // comes from a new browser.
                    let r = http
                        .request(Method::POST, "/cometd", &[JSON], body.clone())
                        .await
                        .expect("POST /cometd");
                    // One connection holds at most `max_sessions_per_connection` live sessions:
                    // past that its handshakes are refused until some of them expire.
                    let reply = &r.json()[0];
                    assert!(
                        reply["successful"] == true || reply["error"] == "503::too_many_sessions",
                        "{reply}"
                    );
                }
            }));
        }
        let mut peak_sessions = 0;
        for task in tasks {
            while !task.is_finished() {
                peak_sessions = peak_sessions.max(t.server.engine().session_count());
                t.sample_rss();
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            task.await.expect("handshake flood");
        }
        let per_connection = ServerConfig::default().bayeux.max_sessions_per_connection;
        assert!(
            peak_sessions <= baseline + CONNS * per_connection,
            "{peak_sessions} sessions from {CONNS} connections"
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        while t.server.engine().session_count() > baseline {
            assert!(
                Instant::now() < deadline,
                "{} sessions still alive (baseline {baseline})",
                t.server.engine().session_count()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        eprintln!("handshake flood: peak {peak_sessions} sessions, all swept");
        t.finish("handshake flood").await;
    });
}

/// 1,000 connections that never finish their request headers (fewer when the open-files limit
/// would not allow both ends of each): the header timeout (300 ms) closes every one of them.
#[test]
fn slow_headers_are_timed_out() {
    run(async {
        let mut t = Abuse::start().await;
        let n = 1000.min((common::open_files_limit().saturating_sub(300) / 2) as usize);
        let start = Instant::now();
        let mut conns = Vec::with_capacity(n);
        for i in 0..n {
            let mut s = TcpStream::connect(t.server.addr).await.expect("connect");
            let partial: &[u8] = if i % 2 == 0 {
                b"POST /cometd HTTP/1.1\r\nHost: x\r\nContent-Le"
            } else {
                b"GET /cometd?jsonp=cb&message="
            };
            s.write_all(partial).await.unwrap();
            conns.push(s);
        }
        t.sample_rss();
        let waits = conns.into_iter().map(|mut s| async move {
            let mut buf = [0u8; 512];
            loop {
                match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => return true,
                    Ok(Ok(_)) => continue,
                    Err(_) => return false,
                }
            }
        });
        let closed = futures_util::future::join_all(waits).await;
        let open = closed.iter().filter(|c| !**c).count();
        assert_eq!(
            open, 0,
            "{open} of {n} stalled connections still open after 5 s"
        );
        eprintln!(
            "slow headers: {n} connections closed after {:?}",
            start.elapsed()
        );
        t.finish("slow headers").await;
    });
}

/// Request heads the lean HTTP/1.1 loop must refuse, 50 connections of each kind at once: a
/// head over 32 KiB, more than 100 headers, `Content-Length` with `Transfer-Encoding`,
/// conflicting lengths, a malformed chunked body, a chunk extension that never ends, garbage.
/// Each gets its status and a closed connection; the control clients lose nothing.
#[test]
fn ambiguous_or_oversized_heads_are_refused() {
    run(async {
        let t = Abuse::start().await;
        let many: String = (0..120).map(|i| format!("X-{i}: 1\r\n")).collect();
        let attacks: Vec<(Vec<u8>, u16)> = vec![
            (
                format!("POST /cometd HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(40_000))
                    .into_bytes(),
                431,
            ),
            (format!("POST /cometd HTTP/1.1\r\n{many}\r\n").into_bytes(), 431),
            (
                b"POST /cometd HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(),
                400,
            ),
            (
                b"POST /cometd HTTP/1.1\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\n[{}]".to_vec(),
                400,
            ),
            (
                b"POST /cometd HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\n".to_vec(),
                400,
            ),
            (
                format!(
                    "POST /cometd HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1;{}",
                    "e".repeat(8_000)
                )
                .into_bytes(),
                400,
            ),
            (b"\x16\x03\x01garbage\r\n\r\n".to_vec(), 400),
        ];
        let conns = attacks.iter().flat_map(|(raw, status)| {
            (0..50).map(move |_| async move {
                let mut s = TcpStream::connect(t.server.addr).await.expect("connect");
                // The server may answer and close before all of it is written.
                let _ = s.write_all(raw).await;
                let mut got = Vec::new();
                let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got));
                assert!(read.await.is_ok(), "connection left open after {status}");
                let text = String::from_utf8_lossy(&got).into_owned();
                assert!(
                    text.starts_with(&format!("HTTP/1.1 {status} ")),
                    "want {status}, got {:?}",
                    &text[..text.len().min(120)]
                );
            })
        });
        futures_util::future::join_all(conns).await;
        t.finish("ambiguous or oversized heads").await;
    });
}

/// WebSocket messages over the limit (one 100 KiB text frame; fragments that never end; a
/// binary frame): closed with 1009 (1003 for binary) once the limit is passed, not after the
/// attacker has sent everything.
#[test]
fn websocket_oversize_is_closed_1009() {
    run(async {
        let mut t = Abuse::start().await;
        for _ in 0..10 {
            let mut ws = ws_connect(t.server.addr).await;
            // The server may close (and reset) the socket as soon as it has read the frame
            // header, before this side has written it all: a failed send is fine, the close
            // frame is read all the same.
            let _ = ws.send(Message::text("x".repeat(100 * 1024))).await;
            expect_close(&mut ws, CloseCode::Size).await;
        }
        // Fragments of 8 KiB, never a final one: at most 4 MiB are offered; the server must
        // give up after about 64 KiB.
        let mut ws = ws_connect(t.server.addr).await;
        let chunk = "y".repeat(8 * 1024);
        let mut sent = 0usize;
        let mut opcode = OpCode::Data(Data::Text);
        while sent < 4 << 20 {
            let frame = Frame::message(chunk.clone().into_bytes(), opcode, false);
            if ws.send(Message::Frame(frame)).await.is_err() {
                break;
            }
            opcode = OpCode::Data(Data::Continue);
            sent += chunk.len();
            if sent > MAX_WS + 16 * chunk.len() {
                // Far past the limit: the close must be waiting already.
                break;
            }
        }
        expect_close(&mut ws, CloseCode::Size).await;
        let mut ws = ws_connect(t.server.addr).await;
        ws.send(Message::binary(vec![0u8; 16])).await.unwrap();
        expect_close(&mut ws, CloseCode::Unsupported).await;
        t.sample_rss();
        t.finish("websocket oversize").await;
    });
}

/// A WebSocket subscriber that never reads (its receive buffer is 4 KiB) while 20,000 messages
/// of 1 KiB are published to it: its queue stays within `max_queue`, drops are counted in the
/// engine's stats, memory stays bounded, and nobody else is slowed down.
#[test]
fn slow_consumer_is_bounded() {
    run(async {
        // The subscriber's only connect is answered at once and it sends no other: with the
        // usual 500 ms its session could expire (and stop receiving) before its queue fills on a
        // loaded machine, and no drop would be counted.
        let mut c = config();
        c.bayeux.max_interval_ms = 60_000;
        let mut t = Abuse::start_with(c).await;
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let stream = socket.connect(t.server.addr).await.unwrap();
        let mut ws = ws_over(t.server.addr, stream).await;
        ws.send(Message::text(
            json!([{"channel": "/meta/handshake", "version": "1.0",
                "supportedConnectionTypes": ["websocket"]}])
            .to_string(),
        ))
        .await
        .unwrap();
        let id = next_text(&mut ws).await[0]["clientId"]
            .as_str()
            .unwrap()
            .to_owned();
        ws.send(Message::text(
            json!([{"channel": "/meta/subscribe", "clientId": id, "subscription": "/slow"},
                {"channel": "/meta/connect", "clientId": id, "connectionType": "websocket",
                 "advice": {"timeout": 0}}])
            .to_string(),
        ))
        .await
        .unwrap();
        let reply = next_text(&mut ws).await;
        assert_eq!(reply[0]["successful"], true, "{reply}");
        // From here on the subscriber reads nothing.
        let engine = t.server.engine().clone();
        let drops_before = engine
            .stats()
            .queue_drops
            .load(std::sync::atomic::Ordering::Relaxed);
        let payload = "z".repeat(1024);
        let mut max_queue_seen = 0;
        for i in 0..20_000u32 {
            engine
                .publish_json("/slow", &json!({"i": i, "pad": payload}))
                .unwrap();
            if i % 500 == 0 {
                if let Some(s) = engine.session(&id) {
                    max_queue_seen = max_queue_seen.max(s.queue_len());
                }
                t.sample_rss();
                tokio::task::yield_now().await;
            }
        }
        let drops = engine
            .stats()
            .queue_drops
            .load(std::sync::atomic::Ordering::Relaxed)
            - drops_before;
        assert!(
            max_queue_seen <= MAX_QUEUE,
            "queue reached {max_queue_seen}"
        );
        assert!(
            drops > 0,
            "no drops counted: the subscriber absorbed 20 MiB?"
        );
        eprintln!("slow consumer: queue peaked at {max_queue_seen}, {drops} drops counted");
        drop(ws);
        t.finish("slow consumer").await;
    });
}

/// One session publishes to 100,000 distinct channels (100 batches of 1000, each with a
/// `/meta/connect` answered at once to keep the session alive): every publish is accepted, and
/// since publishing creates no channel in the router, the channel count does not move.
#[test]
fn publishing_to_many_channels_creates_none() {
    run(async {
        let mut t = Abuse::start().await;
        let baseline = t.server.engine().channel_count();
        let mut http = Http::connect(t.server.addr).await.unwrap();
        let id = handshake(&mut http).await;
        for batch in 0..100 {
            let mut msgs: Vec<Value> = (0..999)
                .map(
                    |i| json!({"channel": format!("/spam/{batch}/{i}"), "clientId": id, "data": i}),
                )
                .collect();
            msgs.push(json!({"channel": "/meta/connect", "clientId": id,
                "connectionType": "long-polling", "advice": {"timeout": 0}}));
            let r = http
                .post(Value::from(msgs).to_string())
                .await
                .expect("POST /cometd");
            let v = r.json();
            let replies = v.as_array().unwrap();
            assert_eq!(replies.len(), 1000);
            assert!(
                replies.iter().all(|m| m["successful"] == true),
                "{}",
                replies[0]
            );
            if batch % 10 == 0 {
                assert_eq!(t.server.engine().channel_count(), baseline);
                t.sample_rss();
            }
        }
        assert_eq!(t.server.engine().channel_count(), baseline);
        t.finish("publishing to many channels").await;
    });
}

/// 10,000 distinct subscriptions across 10 sessions (1000 each, the per-session limit; one
/// more is refused): the router holds them all, and they are all removed when the sessions go,
/// half by `/meta/disconnect` and half by expiry.
#[test]
fn subscriptions_go_with_their_sessions() {
    run(async {
        let mut t = Abuse::start().await;
        let engine = t.server.engine().clone();
        let addr = t.server.addr;
        let baseline = engine.channel_count();
        let mut sessions = Vec::new();
        for s in 0..10 {
            let mut http = Http::connect(addr).await.unwrap();
            let id = handshake(&mut http).await;
            // Sessions expire 500 ms after their last connect: each one holds a connect (up to
            // 30 s) so that none expires, however long the others take to set up on a loaded
            // machine, before the counts below.
            let r = http
                .post(connect_msg(&id, 0).to_string())
                .await
                .expect("POST /cometd");
            assert_eq!(r.json()[0]["successful"], true, "{}", r.json());
            let held = tokio::spawn(held_connect(http.sibling(), id.clone()));
            let names: Vec<String> = (0..MAX_SUBSCRIPTIONS)
                .map(|i| {
                    if i % 10 == 0 {
                        format!("/subs/{s}/{i}/*")
                    } else {
                        format!("/subs/{s}/{i}")
                    }
                })
                .collect();
            let r = http
                .post(
                    json!([{"channel": "/meta/subscribe", "clientId": id, "subscription": names}])
                        .to_string(),
                )
                .await
                .expect("POST /cometd");
            assert_eq!(r.json()[0]["successful"], true);
            let r = http
                .post(
                    json!([{"channel": "/meta/subscribe", "clientId": id,
                        "subscription": "/one/too/many"}])
                    .to_string(),
                )
                .await
                .expect("POST /cometd");
            assert_eq!(
                r.json()[0]["error"],
                "403:too_many_subscriptions:subscribe_denied"
            );
            // The browser (its cookie) without the connection, which is closed here.
            sessions.push((id, http.sibling(), held));
            t.sample_rss();
        }
        assert_eq!(engine.channel_count(), baseline + 10 * MAX_SUBSCRIPTIONS);
        // Fresh connections: the server closes a keep-alive connection left idle for the header
        // read timeout (300 ms), which the setup above may well have taken.
        for (id, browser, _) in sessions.iter().take(5) {
            let mut http = browser.sibling();
            let r = http
                .post(json!([{"channel": "/meta/disconnect", "clientId": id}]).to_string())
                .await
                .expect("POST /cometd");
            assert_eq!(r.json()[0]["successful"], true);
        }
        assert_eq!(engine.channel_count(), baseline + 5 * MAX_SUBSCRIPTIONS);
        // The other five stop holding (a connect answered at once replaces the held one) and are
        // left to expire.
        for (id, browser, _) in sessions.iter().skip(5) {
            let mut http = browser.sibling();
            let r = http
                .post(connect_msg(id, 0).to_string())
                .await
                .expect("POST /cometd");
            let v = r.json();
            let last = v.as_array().and_then(|a| a.last()).expect("a reply");
            assert_eq!(last["successful"], true, "{v}");
        }
        for (_, _, held) in sessions {
            let r = step("held connect answered", held)
                .await
                .expect("held connect");
            assert_eq!(r.status, StatusCode::OK);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while engine.channel_count() > baseline {
            assert!(
                Instant::now() < deadline,
                "{} subscribed names left (baseline {baseline})",
                engine.channel_count()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        t.finish("subscriptions").await;
    });
}

/// 10,000 guessed client ids (random 160-bit hex, near misses of the control client's id, empty
/// and 10 KB ones) on connect, subscribe, publish and disconnect: every one gets
/// `402::session_unknown` with `reconnect: handshake`, and none reaches a session.
#[test]
fn guessed_client_ids_get_402() {
    run(async {
        let mut t = Abuse::start().await;
        let real = t.control.client_id.clone();
        let mut http = Http::connect(t.server.addr).await.unwrap();
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut guess = |i: usize| -> String {
            match i % 50 {
                0 => {
                    // The real id with one hex digit changed.
                    let mut b = real.clone().into_bytes();
                    let p = i / 50 % b.len();
                    b[p] = if b[p] == b'0' { b'1' } else { b'0' };
                    String::from_utf8(b).unwrap()
                }
                1 => String::new(),
                2 => "a".repeat(10_000),
                3 => real.to_uppercase(),
                _ => (0..40)
                    .map(|_| {
                        rng ^= rng << 13;
                        rng ^= rng >> 7;
                        rng ^= rng << 17;
                        char::from(b"0123456789abcdef"[(rng % 16) as usize])
                    })
                    .collect(),
            }
        };
        let channels = [
            "/meta/connect",
            "/meta/subscribe",
            "/control/feed",
            "/meta/disconnect",
        ];
        let mut n = 0;
        for batch in 0..10 {
            let msgs: Vec<Value> = (0..1000)
                .map(|i| {
                    n += 1;
                    json!({"channel": channels[i % 4], "clientId": guess(batch * 1000 + i),
                        "connectionType": "long-polling", "subscription": "/control/**",
                        "data": {"n": 0}, "id": n.to_string()})
                })
                .collect();
            // No handshake on this connection: no cookie is ever set, none is sent.
            let r = http
                .post(Value::from(msgs).to_string())
                .await
                .expect("POST /cometd");
            let v = r.json();
            let replies = v.as_array().unwrap();
            assert_eq!(replies.len(), 1000);
            for m in replies {
                assert_eq!(m["successful"], false, "{m}");
                assert_eq!(m["error"], "402::session_unknown", "{m}");
                assert_eq!(m["advice"]["reconnect"], "handshake", "{m}");
            }
            t.sample_rss();
        }
        // None of the guesses touched the control session.
        let s = t.server.engine().session(&real).expect("control session");
        assert_eq!(s.subscriptions().len(), 1);
        t.finish("guessed client ids").await;
    });
}

/// A long-polling `/meta/connect` of session `id`, answered at once when `timeout_ms` is 0.
fn connect_msg(id: &str, timeout_ms: u64) -> Value {
    json!([{"channel": "/meta/connect", "clientId": id, "connectionType": "long-polling",
        "advice": {"timeout": timeout_ms}}])
}

/// A `/meta/connect` of session `id` that the server holds (up to 30 s) until it is superseded or
/// the session ends, on `http`, a connection of its own. A session holding a connect does not
/// expire.
async fn held_connect(mut http: Http, id: String) -> common::Resp {
    http.post(connect_msg(&id, 30_000).to_string())
        .await
        .expect("POST /cometd")
}

/// The next text frame, a JSON array (panics on anything else, or after [`common::STEP`]).
async fn next_text(ws: &mut Ws) -> Value {
    match ws_next(ws, common::STEP).await {
        Some(WsEvent::Messages(m)) => Value::from(m),
        other => panic!("expected a text frame, got {other:?}"),
    }
}

/// Reads until the server's close frame, which must carry `code`.
async fn expect_close(ws: &mut Ws, code: CloseCode) {
    loop {
        match step("websocket close", ws.next()).await {
            Some(Ok(Message::Close(Some(f)))) => {
                assert_eq!(f.code, code, "close reason {:?}", f.reason);
                return;
            }
            Some(Ok(Message::Close(None))) | None => {
                panic!("closed without a {code:?} close frame")
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => panic!("websocket error before the {code:?} close frame: {e}"),
        }
    }
}

/// 200 connections that send complete headers and part of the body, then stall: each must be
/// answered (408) or closed within a bound, as connections that stall in their headers are.
/// Without a body timeout each one holds a connection slot and a task forever, and
/// `max_connections` of them lock every client out.
///
/// The bound is the proposed `bayeux.body_read_timeout_ms` setting (500 ms here; see the
/// report): until it exists, this test fails at the configuration step.
#[test]
fn stalled_bodies_are_timed_out() {
    run(async {
        // Written as TOML so that this file compiles before the setting exists.
        let c: ServerConfig = toml::from_str(
            "voice_enabled = false\n[bayeux]\nheader_read_timeout_ms = 300\nbody_read_timeout_ms = 500\n",
        )
        .expect("the body read timeout setting (bayeux.body_read_timeout_ms) is missing");
        let server = Server::start(c).await;
        let mut conns = Vec::new();
        for _ in 0..200 {
            let mut s = TcpStream::connect(server.addr).await.unwrap();
            s.write_all(b"POST /cometd HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n[{")
                .await
                .unwrap();
            conns.push(s);
        }
        let waits = conns.into_iter().map(|mut s| async move {
            let mut buf = [0u8; 512];
            let mut head = String::new();
            loop {
                match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => return Some(head),
                    Ok(Ok(n)) => head.push_str(&String::from_utf8_lossy(&buf[..n])),
                    Err(_) => return None,
                }
            }
        });
        let results = futures_util::future::join_all(waits).await;
        let stuck = results.iter().filter(|r| r.is_none()).count();
        assert_eq!(
            stuck, 0,
            "{stuck} of 200 connections with a stalled body still open after 5 s"
        );
        for head in results.into_iter().flatten() {
            assert!(
                head.is_empty() || head.starts_with("HTTP/1.1 408"),
                "{head:?}"
            );
        }
        assert!(server.healthy().await);
        server.stop().await;
    });
}
