//! Shared helpers for the transport tests: an in-process server on `127.0.0.1:0`, raw HTTP/1.1
//! and HTTP/2 requests, a cookie-keeping long-polling client, raw TCP and WebSocket helpers.
//!
//! Every wait is bounded: [`bounded`] for a whole test, [`step`] for one exchange.

#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bayeux_core::{Engine, EngineConfig};
use bayeux_transport::{BayeuxService, ShutdownHandle, TransportConfig, serve};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, Request, StatusCode, Version, header};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Upper bound of a whole test.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(20);
/// Upper bound of one exchange that is expected to complete.
pub const STEP: Duration = Duration::from_secs(5);
/// "Answered promptly": far below any hold time the tests configure (10 s), with room for a
/// loaded CI machine running debug builds.
pub const PROMPT: Duration = Duration::from_millis(3000);

/// Runs a whole test body under [`TEST_TIMEOUT`].
pub async fn bounded<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(TEST_TIMEOUT, f)
        .await
        .expect("the test exceeded its time bound")
}

/// Awaits one step under [`STEP`], naming it in the panic.
pub async fn step<F: Future>(what: &str, f: F) -> F::Output {
    tokio::time::timeout(STEP, f)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// Waits (bounded by [`STEP`]) until the server holds `n` connects: a connect sent from a
/// spawned task is then known to have arrived, however loaded the machine.
pub async fn held_connects(engine: &Engine, n: u64) {
    let held = || {
        engine
            .stats()
            .held_connects
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let deadline = tokio::time::Instant::now() + STEP;
    while held() != n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} connects held, want {n}",
            held()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// An engine configuration whose connects are held `timeout_ms`.
pub fn engine_config(timeout_ms: u64) -> EngineConfig {
    EngineConfig {
        timeout_ms,
        ..EngineConfig::default()
    }
}

/// A running server: `serve` on `127.0.0.1:0` with the Bayeux service.
pub struct Server {
    pub addr: SocketAddr,
    pub svc: BayeuxService,
    pub shutdown: ShutdownHandle,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl Server {
    /// Starts a server with a new engine.
    pub async fn start(engine: EngineConfig, config: TransportConfig) -> Server {
        Server::with_engine(Engine::new(engine), config).await
    }

    /// Starts a server around `engine`.
    pub async fn with_engine(engine: Engine, config: TransportConfig) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (svc, shutdown) = BayeuxService::new(engine, config);
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(
            listener,
            svc.clone(),
            svc.clone(),
            async move {
                let _ = rx.await;
            },
            Duration::from_secs(2),
        ));
        Server {
            addr,
            svc,
            shutdown,
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        self.svc.engine()
    }

    /// A long-polling client that keeps cookies.
    pub fn client(&self) -> Client {
        Client::new(self.addr)
    }

    /// Stops accepting (without firing the [`ShutdownHandle`]) and waits for `serve` to return.
    pub async fn stop_serving(&mut self) -> std::io::Result<()> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        match self.task.take() {
            Some(t) => step("serve returns", t).await.expect("serve task panicked"),
            None => Ok(()),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.shutdown();
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// A fully read HTTP response.
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.text()))
    }

    /// The body as a JSON array of messages.
    pub fn messages(&self) -> Vec<Value> {
        match self.json() {
            Value::Array(a) => a,
            other => panic!("body is not a JSON array: {other}"),
        }
    }

    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Every `Set-Cookie` header.
    pub fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_owned))
            .collect()
    }
}

/// Sends one request on a new HTTP/1.1 connection and reads the whole response.
pub async fn send(addr: SocketAddr, req: Request<Full<Bytes>>) -> Resp {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .expect("http1 handshake");
    tokio::spawn(conn);
    let resp = sender.send_request(req).await.expect("send request");
    read(resp).await
}

/// Sends one request on a new HTTP/2 (prior knowledge) connection.
pub async fn send_h2(addr: SocketAddr, req: Request<Full<Bytes>>) -> Resp {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .expect("http2 handshake");
    tokio::spawn(conn);
    let resp = sender.send_request(req).await.expect("send request");
    read(resp).await
}

async fn read(resp: http::Response<hyper::body::Incoming>) -> Resp {
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.expect("read body").to_bytes();
    Resp {
        status: parts.status,
        version: parts.version,
        headers: parts.headers,
        body,
    }
}

/// A POST request with a JSON body.
pub fn post(addr: SocketAddr, path: &str, body: impl Into<Bytes>) -> Request<Full<Bytes>> {
    Request::post(format!("http://{addr}{path}"))
        .header(header::HOST, addr.to_string())
        .header(header::CONTENT_TYPE, "application/json;charset=UTF-8")
        .body(Full::new(body.into()))
        .expect("request")
}

/// A request without a body.
pub fn empty(
    method: http::Method,
    addr: SocketAddr,
    path_and_query: &str,
) -> http::request::Builder {
    Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path_and_query}"))
        .header(header::HOST, addr.to_string())
}

/// A `/meta/handshake` message.
pub fn handshake_msg(id: &str, types: &[&str]) -> Value {
    json!({
        "channel": "/meta/handshake",
        "version": "1.0",
        "minimumVersion": "1.0",
        "supportedConnectionTypes": types,
        "id": id,
    })
}

/// A `/meta/connect` message.
pub fn connect_msg(client_id: &str, id: &str, connection_type: &str) -> Value {
    json!({
        "channel": "/meta/connect",
        "clientId": client_id,
        "connectionType": connection_type,
        "id": id,
    })
}

/// The first message on `channel`.
pub fn find<'a>(messages: &'a [Value], channel: &str) -> &'a Value {
    messages
        .iter()
        .find(|m| m["channel"] == channel)
        .unwrap_or_else(|| panic!("no message on {channel} in {messages:?}"))
}

/// Deliveries (messages with `data`) on `channel`.
pub fn deliveries<'a>(messages: &'a [Value], channel: &str) -> Vec<&'a Value> {
    messages
        .iter()
        .filter(|m| m["channel"] == channel && m.get("data").is_some())
        .collect()
}

/// Asserts that `message` carries complete advice (`reconnect`, `interval`, `timeout`).
pub fn assert_full_advice(message: &Value) {
    let a = &message["advice"];
    assert!(
        a["reconnect"].is_string(),
        "advice.reconnect missing: {message}"
    );
    assert!(a["interval"].is_u64(), "advice.interval missing: {message}");
    assert!(a["timeout"].is_u64(), "advice.timeout missing: {message}");
}

/// A long-polling client that keeps the `BAYEUX_BROWSER` cookie like a browser.
#[derive(Debug, Clone)]
pub struct Client {
    pub addr: SocketAddr,
    /// The `name=value` cookie sent with each request.
    pub cookie: Option<String>,
    /// Whether `Set-Cookie` is stored.
    pub keep_cookies: bool,
    /// Extra headers sent with each request.
    pub headers: Vec<(String, String)>,
    /// The session id after a handshake.
    pub client_id: Option<String>,
    next_id: u64,
}

impl Client {
    /// A client with no cookie yet.
    pub fn new(addr: SocketAddr) -> Client {
        Client {
            addr,
            cookie: None,
            keep_cookies: true,
            headers: Vec::new(),
            client_id: None,
            next_id: 0,
        }
    }

    /// Adds a header sent with each request.
    pub fn with_header(mut self, name: &str, value: &str) -> Client {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// A fresh message id.
    pub fn next_id(&mut self) -> String {
        self.next_id += 1;
        self.next_id.to_string()
    }

    /// The session id (panics before a handshake).
    pub fn id(&self) -> &str {
        self.client_id.as_deref().expect("not handshaken")
    }

    /// The request for `body` on `path`, with this client's cookie and headers.
    pub fn request(&self, path: &str, body: impl Into<Bytes>) -> Request<Full<Bytes>> {
        let mut b = Request::post(format!("http://{}{path}", self.addr))
            .header(header::HOST, self.addr.to_string())
            .header(header::CONTENT_TYPE, "application/json;charset=UTF-8");
        if let Some(c) = &self.cookie {
            b = b.header(header::COOKIE, c.as_str());
        }
        for (k, v) in &self.headers {
            b = b.header(k.as_str(), v.as_str());
        }
        b.body(Full::new(body.into())).expect("request")
    }

    /// POSTs `body` (JSON) to `path`, storing any browser cookie set.
    pub async fn post(&mut self, path: &str, body: &Value) -> Resp {
        let req = self.request(path, body.to_string());
        let resp = send(self.addr, req).await;
        self.store_cookie(&resp);
        resp
    }

    /// Stores the `BAYEUX_BROWSER` cookie of `resp`, if any.
    pub fn store_cookie(&mut self, resp: &Resp) {
        if !self.keep_cookies {
            return;
        }
        for c in resp.set_cookies() {
            if let Some(kv) = c.split(';').next()
                && kv.starts_with("BAYEUX_BROWSER=")
            {
                self.cookie = Some(kv.to_owned());
            }
        }
    }

    /// Handshakes for `long-polling`; returns the reply.
    pub async fn handshake(&mut self) -> Value {
        let id = self.next_id();
        let resp = self
            .post(
                "/cometd/handshake",
                &json!([handshake_msg(&id, &["long-polling"])]),
            )
            .await;
        assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
        let reply = find(&resp.messages(), "/meta/handshake").clone();
        assert_eq!(reply["id"], id.as_str());
        if reply["successful"] == true {
            self.client_id = Some(reply["clientId"].as_str().expect("clientId").to_owned());
        }
        reply
    }

    /// Handshakes and sends the first (immediate) connect.
    pub async fn handshake_and_connect(&mut self) {
        let reply = self.handshake().await;
        assert_eq!(reply["successful"], true, "{reply}");
        let msgs = self.connect().await;
        assert_eq!(find(&msgs, "/meta/connect")["successful"], true, "{msgs:?}");
    }

    /// The next `/meta/connect` message.
    pub fn connect_message(&mut self) -> Value {
        let id = self.next_id();
        connect_msg(self.id(), &id, "long-polling")
    }

    /// Sends a `/meta/connect` and returns the whole response array.
    pub async fn connect(&mut self) -> Vec<Value> {
        let msg = self.connect_message();
        let resp = self.post("/cometd/connect", &json!([msg])).await;
        assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
        let msgs = resp.messages();
        let last = msgs.last().expect("empty connect response");
        assert_eq!(
            last["channel"], "/meta/connect",
            "connect reply comes last: {msgs:?}"
        );
        assert_eq!(last["id"], msg["id"], "connect reply echoes the id");
        msgs
    }

    /// Sends a `/meta/connect` and returns the response, whatever it is.
    pub async fn try_connect(&mut self) -> Vec<Value> {
        let msg = self.connect_message();
        self.post("/cometd/connect", &json!([msg])).await.messages()
    }

    /// Starts a connect in the background (it may be held).
    pub fn spawn_connect(&mut self) -> JoinHandle<Vec<Value>> {
        let mut c = self.clone();
        self.next_id += 1;
        tokio::spawn(async move { c.connect().await })
    }

    /// Subscribes; returns the reply.
    pub async fn subscribe(&mut self, subscription: Value) -> Value {
        let id = self.next_id();
        let msg = json!([{
            "channel": "/meta/subscribe",
            "clientId": self.id(),
            "subscription": subscription,
            "id": id,
        }]);
        let resp = self.post("/cometd/subscribe", &msg).await;
        let reply = find(&resp.messages(), "/meta/subscribe").clone();
        assert_eq!(reply["id"], id.as_str());
        reply
    }

    /// Publishes `data` on `channel`; returns the reply.
    pub async fn publish(&mut self, channel: &str, data: Value) -> Value {
        let id = self.next_id();
        let msg = json!([{"channel": channel, "clientId": self.id(), "data": data, "id": id}]);
        let resp = self.post("/cometd/publish", &msg).await;
        let msgs = resp.messages();
        msgs.into_iter()
            .find(|m| m["id"] == id.as_str())
            .expect("publish reply")
    }
}

/// Writes `bytes` on a new TCP connection and reads until the server closes it.
pub async fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(bytes).await.expect("write");
    let mut out = Vec::new();
    let _ = step("raw response", tcp.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// The status code of a raw HTTP/1.1 response.
pub fn raw_status(raw: &str) -> u16 {
    raw.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {raw:?}"))
}

/// The body of a raw HTTP/1.1 response (no chunked decoding: the service sends full bodies).
pub fn raw_body(raw: &str) -> &str {
    raw.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("")
}

/// A client WebSocket.
pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Opens a WebSocket to `path`.
pub async fn ws_connect(addr: SocketAddr, path: &str) -> Ws {
    let (ws, resp) = step(
        "websocket upgrade",
        tokio_tungstenite::connect_async(format!("ws://{addr}{path}")),
    )
    .await
    .expect("websocket upgrade");
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    ws
}

/// Opens a WebSocket with extra request headers.
pub async fn ws_connect_with(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Ws {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = format!("ws://{addr}{path}")
        .into_client_request()
        .expect("ws request");
    for (k, v) in headers {
        req.headers_mut().insert(
            http::HeaderName::from_bytes(k.as_bytes()).expect("header name"),
            http::HeaderValue::from_str(v).expect("header value"),
        );
    }
    let (ws, _) = step("websocket upgrade", tokio_tungstenite::connect_async(req))
        .await
        .expect("websocket upgrade");
    ws
}

/// Sends a JSON value as one text frame.
pub async fn ws_send(ws: &mut Ws, v: &Value) {
    ws.send(WsMessage::text(v.to_string()))
        .await
        .expect("ws send");
}

/// What the server sent next.
#[derive(Debug)]
pub enum WsEvent {
    /// A text frame holding a JSON array.
    Messages(Vec<Value>),
    /// A close frame (or the end of the stream).
    Closed(Option<CloseFrame>),
}

/// Waits up to `within` for the next text or close frame (pings and pongs are skipped).
pub async fn ws_next(ws: &mut Ws, within: Duration) -> Option<WsEvent> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let frame = tokio::time::timeout_at(deadline, ws.next()).await.ok()?;
        match frame {
            None => return Some(WsEvent::Closed(None)),
            Some(Err(_)) => return Some(WsEvent::Closed(None)),
            Some(Ok(WsMessage::Text(t))) => {
                let v: Value = serde_json::from_str(t.as_str())
                    .unwrap_or_else(|e| panic!("frame is not JSON ({e}): {t}"));
                match v {
                    Value::Array(a) => return Some(WsEvent::Messages(a)),
                    other => panic!("frame is not a JSON array: {other}"),
                }
            }
            Some(Ok(WsMessage::Close(c))) => return Some(WsEvent::Closed(c)),
            Some(Ok(WsMessage::Binary(b))) => panic!("unexpected binary frame {b:?}"),
            Some(Ok(_)) => {}
        }
    }
}

/// The next text frame (panics on close or after [`STEP`]).
pub async fn ws_recv(ws: &mut Ws) -> Vec<Value> {
    match ws_next(ws, STEP).await {
        Some(WsEvent::Messages(m)) => m,
        Some(WsEvent::Closed(c)) => panic!("websocket closed: {c:?}"),
        None => panic!("no websocket frame within {STEP:?}"),
    }
}

/// Reads frames until the close frame; returns its code.
pub async fn ws_close_code(ws: &mut Ws) -> Option<u16> {
    loop {
        match ws_next(ws, STEP).await {
            Some(WsEvent::Messages(_)) => continue,
            Some(WsEvent::Closed(c)) => return c.map(|c| u16::from(c.code)),
            None => panic!("websocket not closed within {STEP:?}"),
        }
    }
}

/// Handshakes over the WebSocket and sends the first (immediate) connect; returns the clientId.
pub async fn ws_handshake(ws: &mut Ws) -> String {
    ws_handshake_with(ws, handshake_msg("1", &["websocket"])).await
}

/// Handshakes with `message` and sends the first connect; returns the clientId.
pub async fn ws_handshake_with(ws: &mut Ws, message: Value) -> String {
    ws_send(ws, &json!([message])).await;
    let msgs = ws_recv(ws).await;
    let hs = find(&msgs, "/meta/handshake");
    assert_eq!(hs["successful"], true, "{hs}");
    let id = hs["clientId"].as_str().expect("clientId").to_owned();
    ws_send(ws, &json!([connect_msg(&id, "2", "websocket")])).await;
    let msgs = ws_recv(ws).await;
    assert_eq!(find(&msgs, "/meta/connect")["successful"], true, "{msgs:?}");
    id
}
