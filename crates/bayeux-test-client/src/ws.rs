//! WebSocket: text frames of JSON arrays.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http::{HeaderName, HeaderValue};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};

use crate::http::tcp;
use crate::{CONNECT_TIMEOUT, Error, STEP, Target, connect_msg, find, handshake_msg, step};

/// A client WebSocket (plain TCP: callers may bring a socket of their own, see [`ws_upgrade`]).
pub type Ws = WebSocketStream<TcpStream>;

/// Upgrades `stream` to a WebSocket to `target`, with extra request `headers` and the socket
/// `config` (tungstenite's defaults if `None`); bounded by [`CONNECT_TIMEOUT`].
pub async fn ws_upgrade(
    target: &Target,
    stream: TcpStream,
    headers: &[(&str, &str)],
    config: Option<WebSocketConfig>,
) -> Result<Ws, Error> {
    let mut req = target.ws_url().into_client_request()?;
    for (k, v) in headers {
        req.headers_mut().insert(
            HeaderName::from_bytes(k.as_bytes())?,
            HeaderValue::from_str(v)?,
        );
    }
    let upgrade = tokio_tungstenite::client_async_with_config(req, stream, config);
    let (ws, _) = tokio::time::timeout(CONNECT_TIMEOUT, upgrade)
        .await
        .map_err(|_| "WebSocket upgrade timed out")??;
    Ok(ws)
}

/// Opens a WebSocket to `target` on a new connection.
pub async fn ws_open(target: &Target, config: Option<WebSocketConfig>) -> Result<Ws, Error> {
    let stream = tcp(&target.authority).await?;
    ws_upgrade(target, stream, &[], config).await
}

/// Opens a WebSocket to `path` at `addr` (panics if it fails or takes over [`STEP`]).
pub async fn ws_connect(addr: SocketAddr, path: &str) -> Ws {
    ws_connect_with(addr, path, &[]).await
}

/// Opens a WebSocket with extra request headers (panics if it fails or takes over [`STEP`]).
pub async fn ws_connect_with(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Ws {
    let target = Target::new(addr, path);
    let open = async {
        let stream = tcp(&target.authority).await?;
        ws_upgrade(&target, stream, headers, None).await
    };
    step("websocket upgrade", open)
        .await
        .expect("websocket upgrade")
}

/// Opens a WebSocket to `/cometd` at `addr` over `stream`, a socket set up by the caller (a
/// small receive buffer, say); panics if it fails or takes over [`STEP`].
pub async fn ws_over(addr: SocketAddr, stream: TcpStream) -> Ws {
    step(
        "websocket upgrade",
        ws_upgrade(&Target::from(addr), stream, &[], None),
    )
    .await
    .expect("websocket upgrade")
}

/// Sends a JSON value as one text frame (panics if the socket fails).
pub async fn ws_send(ws: &mut Ws, v: &Value) {
    ws.send(Message::text(v.to_string()))
        .await
        .expect("ws send");
}

/// What the server sent next.
#[derive(Debug)]
pub enum WsEvent {
    /// A text frame holding a JSON array.
    Messages(Vec<Value>),
    /// A close frame, or the end of the stream or an error (`None`).
    Closed(Option<CloseFrame>),
}

/// Waits up to `within` for the next text or close frame; pings and pongs are skipped, `None`
/// means nothing came. Panics on a binary frame or a text frame that is not a JSON array: a
/// Bayeux server sends neither.
pub async fn ws_next(ws: &mut Ws, within: Duration) -> Option<WsEvent> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let frame = tokio::time::timeout_at(deadline, ws.next()).await.ok()?;
        match frame {
            None | Some(Err(_)) => return Some(WsEvent::Closed(None)),
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(t.as_str())
                    .unwrap_or_else(|e| panic!("frame is not JSON ({e}): {t}"));
                match v {
                    Value::Array(a) => return Some(WsEvent::Messages(a)),
                    other => panic!("frame is not a JSON array: {other}"),
                }
            }
            Some(Ok(Message::Close(c))) => return Some(WsEvent::Closed(c)),
            Some(Ok(Message::Binary(b))) => panic!("unexpected binary frame {b:?}"),
            Some(Ok(_)) => {}
        }
    }
}

/// The next text frame (panics on a close, or if none comes within [`STEP`]).
pub async fn ws_recv(ws: &mut Ws) -> Vec<Value> {
    match ws_next(ws, STEP).await {
        Some(WsEvent::Messages(m)) => m,
        Some(WsEvent::Closed(c)) => panic!("websocket closed: {c:?}"),
        None => panic!("no websocket frame within {STEP:?}"),
    }
}

/// Reads frames until the close frame; returns its code (panics if a frame takes over
/// [`STEP`]).
pub async fn ws_close_code(ws: &mut Ws) -> Option<u16> {
    loop {
        match ws_next(ws, STEP).await {
            Some(WsEvent::Messages(_)) => continue,
            Some(WsEvent::Closed(c)) => return c.map(|c| u16::from(c.code)),
            None => panic!("websocket not closed within {STEP:?}"),
        }
    }
}

/// Handshakes over the WebSocket (id `1`) and sends the first, immediately answered connect
/// (id `2`); both must succeed. Returns the clientId.
pub async fn ws_handshake(ws: &mut Ws) -> String {
    ws_handshake_with(ws, handshake_msg("1", &["websocket"])).await
}

/// Handshakes with `message` and sends the first connect (id `2`); returns the clientId.
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
