//! Helpers for the abuse suite: the real server app in-process on `127.0.0.1:0`, the
//! well-behaved clients running throughout an attack (a long-polling and a WebSocket control
//! client that count what they receive, a server-side publisher feeding them, a backend
//! publishing over HTTP), and the process's resident memory. The raw client underneath (HTTP/1.1
//! keep-alive with the browser cookie, WebSocket, message builders) is `bayeux-test-client`.

#![allow(dead_code)]

pub mod burst;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bayeux_core::Engine;
use bayeux_server::{App, ServerConfig};
// Re-exported for the test files; not every test binary uses each.
#[allow(unused_imports)]
pub use bayeux_test_client::{Http, Resp, Ws, WsEvent, ws_next};
use bayeux_test_client::{
    Target, connect_msg, handshake_msg, publish_msg, subscribe_msg, within, ws_send, ws_upgrade,
};
use bytes::Bytes;
use futures_util::SinkExt;
use http::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

/// Upper bound of one exchange that must complete: longer than the client crate's, because
/// these exchanges compete with an attack for the two cores.
pub const STEP: Duration = Duration::from_secs(10);

/// Awaits `f` under [`STEP`], naming it in the panic.
pub async fn step<F: std::future::Future>(what: &str, f: F) -> F::Output {
    within(STEP, what, f).await
}

/// The server's resident set size (this process: the server runs in-process), MiB.
pub fn rss_mib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb / 1024)
}

/// The soft limit on open files of this process.
pub fn open_files_limit() -> u64 {
    std::fs::read_to_string("/proc/self/limits")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024)
}

/// A running server: `App::run` on `127.0.0.1:0` in a spawned task.
pub struct Server {
    pub addr: SocketAddr,
    pub app: App,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl Server {
    /// Builds the app from `config` and serves it.
    pub async fn start(config: ServerConfig) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let app = App::build_for(&config, addr).expect("app");
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(app.clone().run(
            listener,
            async move {
                let _ = rx.await;
            },
            Duration::from_secs(2),
        ));
        Server {
            addr,
            app,
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        self.app.engine()
    }

    /// Whether `/healthz` answers 200 on a fresh connection.
    pub async fn healthy(&self) -> bool {
        let Ok(mut http) = Http::connect(self.addr).await else {
            return false;
        };
        matches!(
            http.request(Method::GET, "/healthz", &[], Bytes::new()).await,
            Ok(r) if r.status == StatusCode::OK
        )
    }

    /// Stops the server and waits for it (bounded).
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let r = step("server shutdown", task).await;
            r.expect("server task").expect("serve");
        }
    }
}

/// A long-polling handshake over `http`: returns the client id; the browser cookie is kept in
/// `http.jar` for the requests that follow (and for its siblings).
pub async fn handshake(http: &mut Http) -> String {
    let r = http
        .post(json!([handshake_msg("1", &["long-polling"])]).to_string())
        .await
        .expect("POST /cometd");
    assert_eq!(r.status, StatusCode::OK);
    let v = r.json();
    assert_eq!(v[0]["successful"], true, "{v}");
    v[0]["clientId"].as_str().expect("clientId").to_owned()
}

/// The channel the server-side [`Publisher`] feeds.
pub const CONTROL_CHANNEL: &str = "/control/feed";
/// The channel the [`HttpPublisher`] (a client that never connects) publishes on.
pub const HTTP_PUBLISH_CHANNEL: &str = "/control/http";

/// What a control client received: the `n` of every message, by channel, in arrival order, and
/// anything that went wrong.
#[derive(Default)]
struct Received {
    by_channel: std::collections::HashMap<String, Vec<u64>>,
    errors: Vec<String>,
}

impl Received {
    /// Records one message of a reply or delivery batch: connect replies must succeed, other
    /// meta replies are ignored, deliveries are counted.
    fn record(&mut self, m: &Value) {
        let channel = m["channel"].as_str().unwrap_or_default();
        if channel == "/meta/connect" {
            if m["successful"] != true {
                self.errors.push(format!("connect failed: {m}"));
            }
        } else if channel.starts_with("/meta/") {
            if m["successful"] != true {
                self.errors.push(format!("meta failed: {m}"));
            }
        } else if let Some(n) = m["data"]["n"].as_u64() {
            self.by_channel
                .entry(channel.to_owned())
                .or_default()
                .push(n);
        } else {
            self.errors.push(format!("unexpected: {m}"));
        }
    }

    fn count(&self, channel: &str) -> u64 {
        self.by_channel.get(channel).map_or(0, |v| v.len() as u64)
    }
}

/// Records a failure of a control client's loop (which then ends).
fn fail(received: &Mutex<Received>, what: impl Into<String>) {
    received.lock().unwrap().errors.push(what.into());
}

/// Checks that `who` received messages `1..=n` of each expected channel exactly once, in order,
/// and had no error.
fn check_received(who: &str, received: &Mutex<Received>, expected: &[(&str, u64)]) {
    let r = received.lock().unwrap();
    assert!(r.errors.is_empty(), "{who} errors: {:?}", r.errors);
    for (channel, published) in expected {
        let got = r.by_channel.get(*channel).cloned().unwrap_or_default();
        let want: Vec<u64> = (1..=*published).collect();
        if got != want {
            let missing: Vec<u64> = want.iter().filter(|n| !got.contains(n)).copied().collect();
            panic!(
                "{who} lost or duplicated messages on {channel}: got {} of {published}, \
                 missing {:?}",
                got.len(),
                &missing[..missing.len().min(20)]
            );
        }
    }
}

/// Waits (bounded) until `received` holds at least the expected count on every channel.
async fn wait_received(received: &Mutex<Received>, expected: &[(&str, u64)]) {
    for _ in 0..200 {
        let done = {
            let r = received.lock().unwrap();
            expected.iter().all(|(c, n)| r.count(c) >= *n)
        };
        if done {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The subscription of the control clients and their first connect, answered at once: the
/// subscription is in place when its reply arrives.
fn subscribe_and_connect(id: &str, connection_type: &str) -> Value {
    let mut connect = connect_msg(id, "3", connection_type);
    connect["advice"] = json!({"timeout": 0});
    json!([subscribe_msg(id, "2", "/control/**"), connect])
}

/// A well-behaved long-polling client: handshakes, subscribes to `/control/**` and keeps
/// connecting, recording every message it receives.
pub struct Control {
    pub client_id: String,
    received: Arc<Mutex<Received>>,
    stop: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl Control {
    /// Starts the client against `addr`.
    pub async fn start(addr: SocketAddr) -> Control {
        let mut http = step("control connect", Http::connect(addr))
            .await
            .expect("control connection");
        let id = step("control handshake", handshake(&mut http)).await;
        let sub = subscribe_and_connect(&id, "long-polling");
        let r = step("control subscribe", http.post(sub.to_string()))
            .await
            .expect("POST /cometd");
        assert_eq!(r.json()[0]["successful"], true, "{}", r.json());
        let received = Arc::new(Mutex::new(Received::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let task = {
            let (received, stop, id) = (received.clone(), stop.clone(), id.clone());
            tokio::spawn(async move {
                let mut n = 10u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let connect = json!([connect_msg(&id, &n.to_string(), "long-polling")]);
                    let r = match tokio::time::timeout(STEP, http.post(connect.to_string())).await {
                        Ok(Ok(r)) => r,
                        Ok(Err(e)) => {
                            fail(&received, format!("connect failed: {e}"));
                            break;
                        }
                        Err(_) => {
                            fail(&received, "connect timed out");
                            break;
                        }
                    };
                    let v = r.json();
                    let mut rec = received.lock().unwrap();
                    for m in v.as_array().expect("array") {
                        rec.record(m);
                    }
                }
            })
        };
        Control {
            client_id: id,
            received,
            stop,
            task,
        }
    }

    /// Waits (bounded) until every expected message arrived, stops, and checks that each
    /// arrived exactly once, in order, and that no connect failed.
    pub async fn finish(self, expected: &[(&str, u64)]) {
        wait_received(&self.received, expected).await;
        self.stop.store(true, Ordering::Relaxed);
        // The loop ends after its current connect (held at most the server's timeout).
        step("control loop end", self.task)
            .await
            .expect("control task");
        check_received("long-polling control client", &self.received, expected);
    }
}

/// A well-behaved WebSocket client: handshakes, subscribes to `/control/**` and keeps a connect
/// held, recording every message it receives.
pub struct WsControl {
    received: Arc<Mutex<Received>>,
    stop: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl WsControl {
    /// Starts the client against `addr`.
    pub async fn start(addr: SocketAddr) -> WsControl {
        let mut ws = ws_connect(addr).await;
        let hs = json!([handshake_msg("1", &["websocket"])]);
        step("ws control handshake", ws_send(&mut ws, &hs)).await;
        let reply = match ws_next(&mut ws, STEP).await {
            Some(WsEvent::Messages(m)) => m,
            other => panic!("ws control handshake: {other:?}"),
        };
        assert_eq!(reply[0]["successful"], true, "{reply:?}");
        let id = reply[0]["clientId"].as_str().expect("clientId").to_owned();
        let sub = subscribe_and_connect(&id, "websocket");
        step("ws control subscribe", ws_send(&mut ws, &sub)).await;
        // The subscription is in place before this returns (and the publishers start): its reply
        // and the first connect's come in one frame.
        let reply = match ws_next(&mut ws, STEP).await {
            Some(WsEvent::Messages(m)) => m,
            other => panic!("ws control subscribe: {other:?}"),
        };
        assert_eq!(reply[0]["successful"], true, "{reply:?}");
        assert_eq!(reply[1]["channel"], "/meta/connect", "{reply:?}");
        let received = Arc::new(Mutex::new(Received::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let task = {
            let (received, stop) = (received.clone(), stop.clone());
            tokio::spawn(async move {
                let mut n = 10u64;
                let mut pending = Some(reply);
                while !stop.load(Ordering::Relaxed) {
                    let messages = match pending.take() {
                        Some(m) => m,
                        None => match ws_next(&mut ws, STEP).await {
                            Some(WsEvent::Messages(m)) => m,
                            Some(WsEvent::Closed(c)) => {
                                fail(&received, format!("socket closed: {c:?}"));
                                break;
                            }
                            None => {
                                fail(&received, "read timed out");
                                break;
                            }
                        },
                    };
                    let mut connect_answered = false;
                    {
                        let mut rec = received.lock().unwrap();
                        for m in &messages {
                            connect_answered |= m["channel"] == "/meta/connect";
                            rec.record(m);
                        }
                    }
                    if connect_answered {
                        n += 1;
                        let connect = json!([connect_msg(&id, &n.to_string(), "websocket")]);
                        if ws.send(Message::text(connect.to_string())).await.is_err() {
                            fail(&received, "send failed");
                            break;
                        }
                    }
                }
                let _ = ws.close(None).await;
            })
        };
        WsControl {
            received,
            stop,
            task,
        }
    }

    /// As [`Control::finish`].
    pub async fn finish(self, expected: &[(&str, u64)]) {
        wait_received(&self.received, expected).await;
        self.stop.store(true, Ordering::Relaxed);
        // The loop ends at its next frame: a delivery, or the held connect's answer.
        step("ws control loop end", self.task)
            .await
            .expect("ws control task");
        check_received("WebSocket control client", &self.received, expected);
    }
}

/// Publishes `{"n": 1, 2, ...}` on [`CONTROL_CHANNEL`] from the server side every 10 ms.
pub struct Publisher {
    stop: Arc<AtomicBool>,
    task: JoinHandle<(u64, u64)>,
}

impl Publisher {
    /// Starts publishing through `engine`.
    pub fn start(engine: Engine) -> Publisher {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let task = tokio::spawn(async move {
            let (mut n, mut unheard) = (0u64, 0u64);
            while !s.load(Ordering::Relaxed) {
                n += 1;
                let recipients = engine
                    .publish_json(CONTROL_CHANNEL, &json!({ "n": n }))
                    .expect("publish");
                if recipients == 0 {
                    unheard += 1;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (n, unheard)
        });
        Publisher { stop, task }
    }

    /// Stops; returns how many messages were published. Every one must have had a recipient
    /// (the control session was never dropped).
    pub async fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let (n, unheard) = step("publisher end", self.task).await.expect("publisher");
        assert_eq!(unheard, 0, "publishes that reached no subscriber");
        n
    }
}

/// A backend that publishes over HTTP and never sends `/meta/connect` (a service posting
/// notifications): handshakes, then publishes `{"n": 1, 2, ...}` on [`HTTP_PUBLISH_CHANNEL`]
/// every 20 ms. Its session must live as long as it publishes.
pub struct HttpPublisher {
    stop: Arc<AtomicBool>,
    task: JoinHandle<(u64, Vec<String>)>,
}

impl HttpPublisher {
    /// Starts publishing to `addr`.
    pub async fn start(addr: SocketAddr) -> HttpPublisher {
        let mut http = step("http publisher connect", Http::connect(addr))
            .await
            .expect("http publisher connection");
        let id = step("http publisher handshake", handshake(&mut http)).await;
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let task = tokio::spawn(async move {
            let (mut n, mut errors) = (0u64, Vec::new());
            while !s.load(Ordering::Relaxed) {
                n += 1;
                let msg = json!([publish_msg(
                    &id,
                    &n.to_string(),
                    HTTP_PUBLISH_CHANNEL,
                    json!({"n": n})
                )]);
                match tokio::time::timeout(STEP, http.post(msg.to_string())).await {
                    Ok(Ok(r)) if r.status == StatusCode::OK => {
                        let v = r.json();
                        if v[0]["successful"] != true {
                            errors.push(format!("publish {n}: {v}"));
                            break;
                        }
                    }
                    Ok(Ok(r)) => {
                        errors.push(format!("publish {n}: HTTP {}", r.status));
                        break;
                    }
                    Ok(Err(e)) => {
                        errors.push(format!("publish {n}: {e}"));
                        break;
                    }
                    Err(_) => {
                        errors.push(format!("publish {n} timed out"));
                        break;
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (n, errors)
        });
        HttpPublisher { stop, task }
    }

    /// Stops; returns how many messages were published, every one of them successfully.
    pub async fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let (n, errors) = step("http publisher end", self.task)
            .await
            .expect("http publisher");
        assert!(errors.is_empty(), "the HTTP publisher failed: {errors:?}");
        n
    }
}

/// Opens a WebSocket to `/cometd` over `stream` (bounded by this suite's [`STEP`]).
pub async fn ws_over(addr: SocketAddr, stream: TcpStream) -> Ws {
    step(
        "websocket handshake",
        ws_upgrade(&Target::from(addr), stream, &[], None),
    )
    .await
    .expect("websocket upgrade")
}

/// Opens a WebSocket to `/cometd`.
pub async fn ws_connect(addr: SocketAddr) -> Ws {
    let stream = TcpStream::connect(addr).await.expect("connect");
    ws_over(addr, stream).await
}
