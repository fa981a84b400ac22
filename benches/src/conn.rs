//! Bayeux over the wire, client side. The connections themselves are `bayeux-test-client`'s
//! (a [`Target`], [`Http`] keep-alive connections with a browser's cookie jar, WebSockets,
//! message builders); this module adds what the scenarios share on top: the transport choice,
//! small WebSocket buffers, and the request/response steps (handshake, connect, subscribe,
//! disconnect) over either transport, failing with an error rather than a panic. Replies to
//! these are read with a full JSON parse; deliveries never are (see [`crate::scan`]).

use std::fmt::Write as _;
use std::time::Duration;

pub use bayeux_test_client::{Http, Resp, Target, Ws};
use bayeux_test_client::{
    connect_msg, disconnect_msg, handshake_msg, subscribe_msg, successful_reply, ws_open,
};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// Errors of the generator: they end a run and are reported as text.
pub type BoxError = bayeux_test_client::Error;

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

/// The socket configuration of every generator WebSocket: small buffers, because the default
/// 128 KiB read buffer per connection is zero-filled on reads (a measured CPU sink) and at
/// 10,000 connections alone exceeds a GiB.
pub fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(16 * 1024)
        .max_write_buffer_size(16 << 20)
}

/// Opens a WebSocket to the endpoint.
pub async fn ws_connect(target: &Target) -> Result<Ws> {
    ws_open(target, Some(ws_config())).await
}

/// A Bayeux client connection for request/response steps.
pub enum Conn {
    /// Over a WebSocket.
    Ws(Box<Ws>),
    /// Over long-polling: one HTTP/1.1 keep-alive connection with its own cookie jar (one
    /// simulated browser), reopened when the server closed it between requests.
    Lp(Http),
}

impl Conn {
    /// Opens a connection of `transport` to `target`.
    pub async fn open(target: &Target, transport: Transport) -> Result<Conn> {
        Ok(match transport {
            Transport::Websocket => Conn::Ws(Box::new(ws_connect(target).await?)),
            Transport::LongPolling => Conn::Lp(Http::new(target).reconnecting()),
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
        successful_reply(&frame, id)?;
        Ok(frame)
    }

    async fn exchange(&mut self, body: String, id: &str) -> Result<Bytes> {
        match self {
            Conn::Lp(h) => h.post(body).await?.success(),
            Conn::Ws(ws) => {
                ws.send(Message::text(body)).await?;
                // Frames before the reply (deliveries) are skipped unparsed.
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
        let body = json!([handshake_msg(id, &[self.transport().name()])]).to_string();
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
        let body = json!([subscribe_msg(client_id, id, channel)]).to_string();
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

/// A `/meta/connect` request body; `immediate` asks the server not to hold it.
pub fn connect_body(client_id: &str, id: &str, transport: Transport, immediate: bool) -> String {
    let mut m = connect_msg(client_id, id, transport.name());
    if immediate {
        m["advice"] = json!({"timeout": 0});
    }
    json!([m]).to_string()
}

/// A `/meta/disconnect` request body.
pub fn disconnect_body(client_id: &str, id: &str) -> String {
    json!([disconnect_msg(client_id, id)]).to_string()
}

/// Appends one publish message (without the enclosing array) to `out`: the publishers' hot
/// path, written straight into a reused buffer rather than built as a JSON value.
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
    fn bodies() {
        let v: serde_json::Value =
            serde_json::from_str(&connect_body("c", "7", Transport::LongPolling, true)).unwrap();
        assert_eq!(v[0]["connectionType"], "long-polling");
        assert_eq!(v[0]["advice"]["timeout"], 0);
        let v: serde_json::Value =
            serde_json::from_str(&connect_body("c", "8", Transport::Websocket, false)).unwrap();
        assert!(v[0].get("advice").is_none());
        let mut out = String::new();
        publish_message(&mut out, "c", 9, "/a", r#"{"seq":1}"#);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["data"]["seq"], 1);
        assert_eq!(v["id"], "9");
    }
}
