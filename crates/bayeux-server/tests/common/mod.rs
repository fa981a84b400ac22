//! Helpers for the abuse suite: the real server app in-process on `127.0.0.1:0`, a raw
//! HTTP/1.1 client (hyper's connection API, JSON by hand), a long-polling control client that
//! counts what it receives, a server-side publisher feeding it, WebSocket connections, and the
//! process's resident memory.

#![allow(dead_code)]

pub mod burst;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bayeux_core::Engine;
use bayeux_server::{App, ServerConfig};
use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;

/// Upper bound of one exchange that must complete.
pub const STEP: Duration = Duration::from_secs(10);

/// Awaits `f` under [`STEP`], naming it in the panic.
pub async fn step<F: std::future::Future>(what: &str, f: F) -> F::Output {
    tokio::time::timeout(STEP, f)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
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

/// A response, collected.
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{} body is not JSON ({e}): {:?}",
                self.status,
                String::from_utf8_lossy(&self.body[..self.body.len().min(300)])
            )
        })
    }
}

/// One HTTP/1.1 keep-alive connection.
pub struct Http {
    sender: SendRequest<Full<Bytes>>,
    _conn: JoinHandle<()>,
}

impl Http {
    /// Connects to `addr`.
    pub async fn connect(addr: SocketAddr) -> Result<Http, hyper::Error> {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        let conn = tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Http {
            sender,
            _conn: conn,
        })
    }

    /// Sends one request.
    pub async fn request(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Result<Resp, hyper::Error> {
        self.sender.ready().await?;
        let mut b = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, "127.0.0.1");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = b.body(Full::new(body.into())).expect("request");
        let resp = self.sender.send_request(req).await?;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok(Resp {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    /// POSTs JSON to the Bayeux endpoint, with `cookie` if given.
    pub async fn post(&mut self, body: impl Into<Bytes>, cookie: Option<&str>) -> Resp {
        let mut headers = vec![("content-type", "application/json;charset=UTF-8")];
        if let Some(c) = cookie {
            headers.push(("cookie", c));
        }
        self.request(Method::POST, "/cometd", &headers, body)
            .await
            .expect("POST /cometd")
    }
}

/// A handshake over `http`: the client id and the browser cookie (`name=value`).
pub async fn handshake(http: &mut Http) -> (String, Option<String>) {
    let r = http
        .post(
            json!([{"channel": "/meta/handshake", "version": "1.0", "id": "1",
                "supportedConnectionTypes": ["long-polling"]}])
            .to_string(),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let v = r.json();
    assert_eq!(v[0]["successful"], true, "{v}");
    let cookie = r
        .headers
        .get(header::SET_COOKIE)
        .and_then(|c| c.to_str().ok())
        .and_then(|c| c.split(';').next())
        .map(str::to_owned);
    (
        v[0]["clientId"].as_str().expect("clientId").to_owned(),
        cookie,
    )
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
        let (id, cookie) = step("control handshake", handshake(&mut http)).await;
        let sub = json!([{"channel": "/meta/subscribe", "clientId": id, "id": "2",
            "subscription": "/control/**"},
            {"channel": "/meta/connect", "clientId": id, "id": "3",
            "connectionType": "long-polling", "advice": {"timeout": 0}}]);
        let r = step(
            "control subscribe",
            http.post(sub.to_string(), cookie.as_deref()),
        )
        .await;
        assert_eq!(r.json()[0]["successful"], true, "{}", r.json());
        let received = Arc::new(Mutex::new(Received::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let task = {
            let (received, stop, id) = (received.clone(), stop.clone(), id.clone());
            tokio::spawn(async move {
                let mut n = 10u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let connect = json!([{"channel": "/meta/connect", "clientId": id,
                        "id": n.to_string(), "connectionType": "long-polling"}]);
                    let mut headers = vec![("content-type", "application/json")];
                    if let Some(c) = &cookie {
                        headers.push(("cookie", c));
                    }
                    let sent = http.request(Method::POST, "/cometd", &headers, connect.to_string());
                    let r = match tokio::time::timeout(STEP, sent).await {
                        Ok(Ok(r)) => r,
                        Ok(Err(e)) => {
                            received
                                .lock()
                                .unwrap()
                                .errors
                                .push(format!("connect failed: {e}"));
                            break;
                        }
                        Err(_) => {
                            received
                                .lock()
                                .unwrap()
                                .errors
                                .push("connect timed out".into());
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
        use futures_util::{SinkExt, StreamExt};
        use tokio_tungstenite::tungstenite::Message;
        let mut ws = ws_connect(addr).await;
        let hs = json!([{"channel": "/meta/handshake", "version": "1.0", "id": "1",
            "supportedConnectionTypes": ["websocket"]}]);
        step(
            "ws control handshake",
            ws.send(Message::text(hs.to_string())),
        )
        .await
        .expect("send");
        let reply = loop {
            match step("ws control handshake reply", ws.next()).await {
                Some(Ok(Message::Text(t))) => break serde_json::from_str::<Value>(&t).unwrap(),
                Some(Ok(_)) => continue,
                other => panic!("ws control handshake: {other:?}"),
            }
        };
        assert_eq!(reply[0]["successful"], true, "{reply}");
        let id = reply[0]["clientId"].as_str().expect("clientId").to_owned();
        let sub = json!([{"channel": "/meta/subscribe", "clientId": id, "id": "2",
            "subscription": "/control/**"},
            {"channel": "/meta/connect", "clientId": id, "id": "3",
            "connectionType": "websocket", "advice": {"timeout": 0}}]);
        step(
            "ws control subscribe",
            ws.send(Message::text(sub.to_string())),
        )
        .await
        .expect("send");
        // The subscription is in place before this returns (and the publishers start): its reply
        // and the first connect's come in one frame.
        let reply = loop {
            match step("ws control subscribe reply", ws.next()).await {
                Some(Ok(Message::Text(t))) => break serde_json::from_str::<Value>(&t).unwrap(),
                Some(Ok(_)) => continue,
                other => panic!("ws control subscribe: {other:?}"),
            }
        };
        assert_eq!(reply[0]["successful"], true, "{reply}");
        assert_eq!(reply[1]["channel"], "/meta/connect", "{reply}");
        let received = Arc::new(Mutex::new(Received::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let task = {
            let (received, stop) = (received.clone(), stop.clone());
            tokio::spawn(async move {
                let mut n = 10u64;
                let mut pending = Some(reply.to_string());
                while !stop.load(Ordering::Relaxed) {
                    let next = match pending.take() {
                        Some(t) => Ok(Some(Ok(Message::text(t)))),
                        None => tokio::time::timeout(STEP, ws.next()).await,
                    };
                    let frame = match next {
                        Ok(Some(Ok(Message::Text(t)))) => t,
                        Ok(Some(Ok(_))) => continue,
                        Ok(other) => {
                            received
                                .lock()
                                .unwrap()
                                .errors
                                .push(format!("socket: {other:?}"));
                            break;
                        }
                        Err(_) => {
                            received
                                .lock()
                                .unwrap()
                                .errors
                                .push("read timed out".into());
                            break;
                        }
                    };
                    let v: Value = serde_json::from_str(&frame).expect("JSON frame");
                    let mut connect_answered = false;
                    {
                        let mut rec = received.lock().unwrap();
                        for m in v.as_array().expect("array") {
                            connect_answered |= m["channel"] == "/meta/connect";
                            rec.record(m);
                        }
                    }
                    if connect_answered {
                        n += 1;
                        let connect = json!([{"channel": "/meta/connect", "clientId": id,
                            "id": n.to_string(), "connectionType": "websocket"}]);
                        if ws.send(Message::text(connect.to_string())).await.is_err() {
                            received.lock().unwrap().errors.push("send failed".into());
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
        let (id, cookie) = step("http publisher handshake", handshake(&mut http)).await;
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let task = tokio::spawn(async move {
            let (mut n, mut errors) = (0u64, Vec::new());
            while !s.load(Ordering::Relaxed) {
                n += 1;
                let msg = json!([{"channel": HTTP_PUBLISH_CHANNEL, "clientId": id,
                    "id": n.to_string(), "data": {"n": n}}]);
                let mut headers = vec![("content-type", "application/json")];
                if let Some(c) = &cookie {
                    headers.push(("cookie", c));
                }
                let sent = http.request(Method::POST, "/cometd", &headers, msg.to_string());
                match tokio::time::timeout(STEP, sent).await {
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

/// A WebSocket client connection to the Bayeux endpoint.
pub type Ws = WebSocketStream<TcpStream>;

/// Opens a WebSocket to `/cometd` over `stream`.
pub async fn ws_over(addr: SocketAddr, stream: TcpStream) -> Ws {
    let (ws, _) = step(
        "websocket handshake",
        tokio_tungstenite::client_async(format!("ws://{addr}/cometd"), stream),
    )
    .await
    .expect("websocket upgrade");
    ws
}

/// Opens a WebSocket to `/cometd`.
pub async fn ws_connect(addr: SocketAddr) -> Ws {
    let stream = TcpStream::connect(addr).await.expect("connect");
    ws_over(addr, stream).await
}
