//! Bayeux over the wire, client side: a target URL, WebSocket and long-polling connections, and
//! the request/response steps every scenario shares (handshake, connect, subscribe,
//! disconnect). Replies to these are read with a full JSON parse; deliveries never are (see
//! [`crate::scan`]).

use std::fmt::Write as _;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, header};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// Errors of the generator: they end a run and are reported as text.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Result with [`BoxError`].
pub type Result<T, E = BoxError> = std::result::Result<T, E>;

/// How long one setup step (a handshake, a subscribe) may take before the run fails.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(20);

/// The Bayeux transport a scenario uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Transport {
    /// `websocket`.
    Websocket,
    /// `long-polling`.
    LongPolling,
}

impl Transport {
    /// The Bayeux connection-type name.
    pub fn name(self) -> &'static str {
        match self {
            Transport::Websocket => "websocket",
            Transport::LongPolling => "long-polling",
        }
    }

    /// Parses `websocket`/`ws` or `long-polling`/`lp`.
    pub fn parse(s: &str) -> Option<Transport> {
        match s {
            "websocket" | "ws" => Some(Transport::Websocket),
            "long-polling" | "lp" => Some(Transport::LongPolling),
            _ => None,
        }
    }
}

/// Where the server's Bayeux endpoint is: `http://host:port/path` (or `ws://...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `host:port`.
    pub authority: String,
    /// The endpoint path, e.g. `/cometd`.
    pub path: String,
}

impl Target {
    /// Parses `http://host:port/path` or `ws://host:port/path`.
    pub fn parse(url: &str) -> Result<Target> {
        let rest = ["http://", "ws://"]
            .iter()
            .find_map(|p| url.strip_prefix(p))
            .ok_or_else(|| format!("unsupported URL {url}: use http://host:port/path"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if !authority.contains(':') {
            return Err(format!("URL {url} needs an explicit port").into());
        }
        Ok(Target {
            authority: authority.to_owned(),
            path: path.to_owned(),
        })
    }

    /// The URL as `http://...`.
    pub fn http_url(&self) -> String {
        format!("http://{}{}", self.authority, self.path)
    }
}

/// A WebSocket to the server.
pub type Ws = WebSocketStream<TcpStream>;

/// The socket configuration of every generator WebSocket: small buffers, because the default
/// 128 KiB read buffer per connection is zero-filled on reads (a measured CPU sink) and at
/// 10,000 connections alone exceeds a GiB.
pub fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(16 * 1024)
        .max_write_buffer_size(16 << 20)
}

async fn tcp(target: &Target) -> Result<TcpStream> {
    let s = tokio::time::timeout(STEP_TIMEOUT, TcpStream::connect(&target.authority))
        .await
        .map_err(|_| format!("connecting to {} timed out", target.authority))??;
    s.set_nodelay(true)?;
    Ok(s)
}

/// Opens a WebSocket to the endpoint.
pub async fn ws_connect(target: &Target) -> Result<Ws> {
    let stream = tcp(target).await?;
    let url = format!("ws://{}{}", target.authority, target.path);
    let (ws, _) = tokio::time::timeout(
        STEP_TIMEOUT,
        tokio_tungstenite::client_async_with_config(url, stream, Some(ws_config())),
    )
    .await
    .map_err(|_| "WebSocket upgrade timed out")??;
    Ok(ws)
}

/// One HTTP/1.1 keep-alive connection with its own cookie jar (one simulated browser), for
/// long-polling. Reconnects when the server closed it between requests.
pub struct Http {
    target: Target,
    sender: Option<SendRequest<Full<Bytes>>>,
    /// `Cookie` header value (`a=1; b=2`), from the `Set-Cookie`s received.
    pub cookies: String,
}

impl Http {
    /// A connection to `target` (opened on first use).
    pub fn new(target: &Target) -> Http {
        Http {
            target: target.clone(),
            sender: None,
            cookies: String::new(),
        }
    }

    /// A connection sharing `other`'s cookies (the same browser).
    pub fn sibling(other: &Http) -> Http {
        Http {
            target: other.target.clone(),
            sender: None,
            cookies: other.cookies.clone(),
        }
    }

    async fn ready(&mut self) -> Result<&mut SendRequest<Full<Bytes>>> {
        let alive = match &mut self.sender {
            Some(s) => s.ready().await.is_ok(),
            None => false,
        };
        if !alive {
            let io = TokioIo::new(tcp(&self.target).await?);
            let (sender, conn) = hyper::client::conn::http1::handshake(io).await?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            self.sender = Some(sender);
        }
        self.sender.as_mut().ok_or_else(|| "no connection".into())
    }

    /// POSTs a JSON body to the endpoint and returns the response body.
    pub async fn post(&mut self, body: String) -> Result<Bytes> {
        let authority = self.target.authority.clone();
        let path = self.target.path.clone();
        let cookies = self.cookies.clone();
        let sender = self.ready().await?;
        let mut req = Request::post(path)
            .header(header::HOST, authority)
            .header(header::CONTENT_TYPE, "application/json;charset=UTF-8");
        if !cookies.is_empty() {
            req = req.header(header::COOKIE, cookies);
        }
        let resp = sender
            .send_request(req.body(Full::new(Bytes::from(body)))?)
            .await?;
        let status = resp.status();
        let set: Vec<String> = resp
            .headers()
            .get_all(header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|v| v.split(';').next())
            .map(|kv| kv.trim().to_owned())
            .collect();
        let body = resp.into_body().collect().await?.to_bytes();
        for kv in set {
            self.set_cookie(&kv);
        }
        if !status.is_success() {
            return Err(format!("HTTP {status}: {}", String::from_utf8_lossy(&body)).into());
        }
        Ok(body)
    }

    fn set_cookie(&mut self, kv: &str) {
        let Some((name, _)) = kv.split_once('=') else {
            return;
        };
        let mut parts: Vec<&str> = self
            .cookies
            .split("; ")
            .filter(|p| !p.is_empty() && p.split_once('=').map(|x| x.0) != Some(name))
            .collect();
        parts.push(kv);
        self.cookies = parts.join("; ");
    }

    /// Drops the connection (the cookies stay).
    pub fn close(&mut self) {
        self.sender = None;
    }
}

/// A Bayeux client connection for request/response steps.
pub enum Conn {
    /// Over a WebSocket.
    Ws(Box<Ws>),
    /// Over long-polling.
    Lp(Http),
}

/// Checks that the reply with id `id` in `frame` is successful.
fn check_reply(frame: &[u8], id: &str) -> Result<()> {
    let v: serde_json::Value = serde_json::from_slice(frame)?;
    let list = match &v {
        serde_json::Value::Array(a) => a.as_slice(),
        other => std::slice::from_ref(other),
    };
    let reply = list
        .iter()
        .find(|m| m.get("id").and_then(|i| i.as_str()) == Some(id))
        .ok_or_else(|| {
            format!(
                "no reply with id {id} in {}",
                String::from_utf8_lossy(frame)
            )
        })?;
    if reply.get("successful").and_then(|s| s.as_bool()) == Some(true) {
        Ok(())
    } else {
        Err(format!("request failed: {reply}").into())
    }
}

impl Conn {
    /// Opens a connection of `transport` to `target`.
    pub async fn open(target: &Target, transport: Transport) -> Result<Conn> {
        Ok(match transport {
            Transport::Websocket => Conn::Ws(Box::new(ws_connect(target).await?)),
            Transport::LongPolling => Conn::Lp(Http::new(target)),
        })
    }

    /// The transport.
    pub fn transport(&self) -> Transport {
        match self {
            Conn::Ws(_) => Transport::Websocket,
            Conn::Lp(_) => Transport::LongPolling,
        }
    }

    /// Sends `body` (a JSON array holding a message with id `id`) and returns the frame or
    /// response body that carries its reply, after checking the reply is successful.
    pub async fn request(&mut self, body: String, id: &str) -> Result<Bytes> {
        let frame = tokio::time::timeout(STEP_TIMEOUT, self.exchange(body, id))
            .await
            .map_err(|_| format!("no reply to message {id} within {STEP_TIMEOUT:?}"))??;
        check_reply(&frame, id)?;
        Ok(frame)
    }

    async fn exchange(&mut self, body: String, id: &str) -> Result<Bytes> {
        match self {
            Conn::Lp(h) => h.post(body).await,
            Conn::Ws(ws) => {
                ws.send(Message::text(body)).await?;
                let needle = format!("\"id\":\"{id}\"");
                let finder = memchr::memmem::Finder::new(needle.as_bytes());
                loop {
                    match ws.next().await {
                        Some(Ok(Message::Text(t))) => {
                            let b: Bytes = t.into();
                            if finder.find(&b).is_some() {
                                return Ok(b);
                            }
                        }
                        Some(Ok(Message::Close(c))) => {
                            return Err(format!("server closed the WebSocket: {c:?}").into());
                        }
                        Some(Ok(_)) => {}
                        Some(Err(e)) => return Err(e.into()),
                        None => return Err("server closed the WebSocket".into()),
                    }
                }
            }
        }
    }

    /// `/meta/handshake`; returns the client id.
    pub async fn handshake(&mut self, id: &str) -> Result<String> {
        let body = format!(
            r#"[{{"id":"{id}","channel":"/meta/handshake","version":"1.0","minimumVersion":"1.0","supportedConnectionTypes":["{}"]}}]"#,
            self.transport().name()
        );
        let reply = self.request(body, id).await?;
        crate::scan::client_id(&reply).ok_or_else(|| "handshake reply without clientId".into())
    }

    /// The first `/meta/connect`, asking for an immediate answer.
    pub async fn first_connect(&mut self, client_id: &str, id: &str) -> Result<()> {
        let body = connect_body(client_id, id, self.transport(), true);
        self.request(body, id).await.map(drop)
    }

    /// `/meta/subscribe` to `channel`.
    pub async fn subscribe(&mut self, client_id: &str, channel: &str, id: &str) -> Result<()> {
        let body = format!(
            r#"[{{"id":"{id}","channel":"/meta/subscribe","clientId":"{client_id}","subscription":"{channel}"}}]"#
        );
        self.request(body, id).await.map(drop)
    }

    /// `/meta/disconnect`.
    pub async fn disconnect(&mut self, client_id: &str, id: &str) -> Result<()> {
        self.request(disconnect_body(client_id, id), id)
            .await
            .map(drop)
    }
}

/// Sets up a session on a connection of its own: handshake (id `1`), first connect (`2`) and,
/// with `channel`, a subscription (`3`). Returns the connection and the client id.
pub async fn session(
    target: &Target,
    transport: Transport,
    channel: Option<&str>,
) -> Result<(Conn, String)> {
    let mut conn = Conn::open(target, transport).await?;
    let cid = conn.handshake("1").await?;
    conn.first_connect(&cid, "2").await?;
    if let Some(channel) = channel {
        conn.subscribe(&cid, channel, "3").await?;
    }
    Ok((conn, cid))
}

/// A WebSocket [`session`] that then sends a `/meta/connect` (id `hold_id`) for the server to
/// hold: the socket is ready to receive deliveries.
pub async fn ws_session(
    target: &Target,
    channel: Option<&str>,
    hold_id: &str,
) -> Result<(Box<Ws>, String)> {
    let (conn, cid) = session(target, Transport::Websocket, channel).await?;
    let Conn::Ws(mut ws) = conn else {
        return Err(BoxError::from("not a WebSocket"));
    };
    ws.send(Message::text(connect_body(
        &cid,
        hold_id,
        Transport::Websocket,
        false,
    )))
    .await?;
    Ok((ws, cid))
}

/// A long-polling [`session`]: its HTTP connection and client id.
pub async fn lp_session(target: &Target, channel: Option<&str>) -> Result<(Http, String)> {
    let (conn, cid) = session(target, Transport::LongPolling, channel).await?;
    match conn {
        Conn::Lp(http) => Ok((http, cid)),
        Conn::Ws(_) => Err(BoxError::from("not long-polling")),
    }
}

/// A `/meta/connect` message; `immediate` asks the server not to hold it.
pub fn connect_body(client_id: &str, id: &str, transport: Transport, immediate: bool) -> String {
    let mut s = format!(
        r#"[{{"id":"{id}","channel":"/meta/connect","clientId":"{client_id}","connectionType":"{}""#,
        transport.name()
    );
    if immediate {
        s.push_str(r#","advice":{"timeout":0}"#);
    }
    s.push_str("}]");
    s
}

/// A `/meta/disconnect` message.
pub fn disconnect_body(client_id: &str, id: &str) -> String {
    format!(r#"[{{"id":"{id}","channel":"/meta/disconnect","clientId":"{client_id}"}}]"#)
}

/// Appends one publish message (without the enclosing array) to `out`.
pub fn publish_message(out: &mut String, client_id: &str, id: u64, channel: &str, data: &str) {
    let _ = write!(
        out,
        r#"{{"id":"{id}","channel":"{channel}","clientId":"{client_id}","data":{data}}}"#
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let t = Target::parse("http://127.0.0.1:8080/cometd").unwrap();
        assert_eq!(t.authority, "127.0.0.1:8080");
        assert_eq!(t.path, "/cometd");
        assert_eq!(Target::parse("ws://h:1").unwrap().path, "/");
        assert!(Target::parse("https://h:1/").is_err());
        assert!(Target::parse("http://h/x").is_err());
    }

    #[test]
    fn cookie_jar_replaces_by_name() {
        let mut h = Http::new(&Target::parse("http://h:1/").unwrap());
        h.set_cookie("A=1");
        h.set_cookie("B=2");
        h.set_cookie("A=3");
        assert_eq!(h.cookies, "B=2; A=3");
    }
}
