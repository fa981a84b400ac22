//! The memory burst of issue 10 against a `bayeux-server` process: WebSocket subscribers that
//! never read, a WebSocket publisher sending many messages to their channel, then the
//! subscribers leave; and the process's resident memory, read from `/proc/<pid>`.
//!
//! Shared by `tests/memory.rs` (a small burst against the debug binary) and
//! `examples/memory_burst.rs` (the measurement in the README). Self-contained: it uses no
//! other helper of `tests/common`, so the example can include it by path.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

/// Errors end a burst and are reported as text.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// Upper bound of one exchange with the server (a handshake, a subscribe, a publish reply).
const STEP: Duration = Duration::from_secs(20);

/// The channel the subscribers listen to and the publisher feeds.
pub const CHANNEL: &str = "/burst/feed";

/// A WebSocket to the Bayeux endpoint.
pub type Ws = WebSocketStream<TcpStream>;

/// A `bayeux-server` process started for a measurement; killed (by its own PID) when dropped.
pub struct ServerProcess {
    child: Child,
    /// The address it listens on, from its first stdout line.
    pub addr: SocketAddr,
}

impl ServerProcess {
    /// Starts `bin --listen 127.0.0.1:0 --log-level warn ARGS...` and waits (20 s at most) for
    /// its `bayeux-server listening on http://ADDR ...` line.
    pub fn spawn(bin: &Path, args: &[String]) -> Result<ServerProcess, Error> {
        let mut child = Command::new(bin)
            .args(["--listen", "127.0.0.1:0", "--log-level", "warn"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(l)) = lines.next() {
                let _ = tx.send(l);
            }
            // Keep reading so the server never blocks on a full pipe.
            for _ in lines {}
        });
        let line = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(l) => l,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{} printed no listening line", bin.display()).into());
            }
        };
        let addr = line
            .split_once("http://")
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .and_then(|a| a.parse().ok());
        match addr {
            Some(addr) => Ok(ServerProcess { child, addr }),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                Err(format!("unexpected first line from the server: {line}").into())
            }
        }
    }

    /// The server's PID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Resident set size of process `pid` now, bytes (`VmRSS` of `/proc/<pid>/status`).
pub fn rss_bytes(pid: u32) -> Result<u64, Error> {
    status_kb(pid, "VmRSS:").map(|kb| kb * 1024)
}

/// Peak resident set size of process `pid` since it started, bytes (`VmHWM`).
pub fn peak_rss_bytes(pid: u32) -> Result<u64, Error> {
    status_kb(pid, "VmHWM:").map(|kb| kb * 1024)
}

fn status_kb(pid: u32, field: &str) -> Result<u64, Error> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| format!("no {field} in /proc/{pid}/status").into())
}

/// `GET /metrics`, parsed into `(name, value)` pairs (comment lines left out).
pub async fn metrics(addr: SocketAddr) -> Result<Vec<(String, f64)>, Error> {
    let fetch = async {
        let mut s = TcpStream::connect(addr).await?;
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .await?;
        let mut body = String::new();
        s.read_to_string(&mut body).await?;
        Ok::<_, Error>(body)
    };
    let text = tokio::time::timeout(STEP, fetch)
        .await
        .map_err(|_| "GET /metrics timed out")??;
    let (head, body) = text.split_once("\r\n\r\n").ok_or("no HTTP body")?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        return Err(format!("GET /metrics: {}", head.lines().next().unwrap_or("")).into());
    }
    Ok(body
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect())
}

/// The value of metric `name` in `metrics`.
pub fn metric(metrics: &[(String, f64)], name: &str) -> Option<f64> {
    metrics.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
}

async fn next_json(ws: &mut Ws) -> Result<Vec<Value>, Error> {
    loop {
        let frame = tokio::time::timeout(STEP, ws.next())
            .await
            .map_err(|_| "no reply from the server")?
            .ok_or("the server closed the WebSocket")??;
        match frame {
            Message::Text(t) => {
                let v: Value = serde_json::from_str(t.as_str())?;
                return Ok(v.as_array().cloned().unwrap_or_default());
            }
            Message::Close(c) => {
                return Err(format!("the server closed the WebSocket: {c:?}").into());
            }
            _ => {}
        }
    }
}

/// Opens a WebSocket to `/cometd` and handshakes: the socket and the client id.
async fn session(addr: SocketAddr) -> Result<(Ws, String), Error> {
    let stream = TcpStream::connect(addr).await?;
    let (mut ws, _) = tokio::time::timeout(
        STEP,
        tokio_tungstenite::client_async(format!("ws://{addr}/cometd"), stream),
    )
    .await
    .map_err(|_| "WebSocket upgrade timed out")??;
    let hs = json!([{"channel": "/meta/handshake", "version": "1.0", "id": "1",
        "supportedConnectionTypes": ["websocket"]}]);
    ws.send(Message::text(hs.to_string())).await?;
    let reply = next_json(&mut ws).await?;
    let id = reply
        .iter()
        .find(|m| m["channel"] == "/meta/handshake" && m["successful"] == true)
        .and_then(|m| m["clientId"].as_str())
        .ok_or_else(|| format!("handshake refused: {reply:?}"))?
        .to_owned();
    Ok((ws, id))
}

/// A subscriber to [`CHANNEL`] that, once its subscription is confirmed, never reads again:
/// the server's writes to it stall and its session queue fills. Its session lives until the
/// socket closes (and the server's `max_interval_ms` after that).
pub async fn silent_subscriber(addr: SocketAddr) -> Result<Ws, Error> {
    let (mut ws, id) = session(addr).await?;
    let sub = json!([{"channel": "/meta/subscribe", "clientId": id, "id": "2",
            "subscription": CHANNEL},
        {"channel": "/meta/connect", "clientId": id, "id": "3",
            "connectionType": "websocket", "advice": {"timeout": 0}}]);
    ws.send(Message::text(sub.to_string())).await?;
    loop {
        let reply = next_json(&mut ws).await?;
        if let Some(m) = reply.iter().find(|m| m["channel"] == "/meta/subscribe") {
            if m["successful"] != true {
                return Err(format!("subscribe refused: {m}").into());
            }
            // A connect the server holds keeps the session alive, however short its
            // `max_interval_ms`, until the socket closes; its reply is never read.
            let connect = json!([{"channel": "/meta/connect", "clientId": id, "id": "4",
                "connectionType": "websocket"}]);
            ws.send(Message::text(connect.to_string())).await?;
            return Ok(ws);
        }
    }
}

/// Opens `n` [`silent_subscriber`]s, 32 at a time.
pub async fn silent_subscribers(addr: SocketAddr, n: usize) -> Result<Vec<Ws>, Error> {
    let mut all = Vec::with_capacity(n);
    while all.len() < n {
        let k = (n - all.len()).min(32);
        let opened = futures_util::future::join_all((0..k).map(|_| silent_subscriber(addr))).await;
        for ws in opened {
            all.push(ws?);
        }
    }
    Ok(all)
}

/// Publishes `messages` messages of `{"p": "<payload_bytes x's>"}` to [`CHANNEL`] over one
/// WebSocket, `batch` messages per frame, at most four frames awaiting their replies, and
/// waits for every reply. Returns how many publishes the server acknowledged; any refusal is an
/// error naming the first.
pub async fn publish(
    addr: SocketAddr,
    messages: usize,
    payload_bytes: usize,
    batch: usize,
) -> Result<usize, Error> {
    const WINDOW: usize = 4;
    let (mut ws, id) = session(addr).await?;
    // Connecting as a client does, again after each connect reply: a held connect keeps the
    // publisher's session from expiring however short the server's `max_interval_ms`.
    let connect = json!([{"channel": "/meta/connect", "clientId": id, "id": "c",
        "connectionType": "websocket"}])
    .to_string();
    ws.send(Message::text(connect.clone())).await?;
    let payload = "x".repeat(payload_bytes);
    let batch = batch.max(1);
    let (mut sent, mut answered, mut ok) = (0usize, 0usize, 0usize);
    let mut refused = None;
    while answered < messages {
        while sent < messages && sent - answered < WINDOW * batch {
            let k = batch.min(messages - sent);
            let frame: Vec<Value> = (sent..sent + k)
                .map(|i| {
                    json!({"channel": CHANNEL, "clientId": id, "id": i.to_string(),
                        "data": {"p": payload}})
                })
                .collect();
            ws.send(Message::text(Value::Array(frame).to_string()))
                .await?;
            sent += k;
        }
        for m in next_json(&mut ws).await? {
            if m["channel"] == "/meta/connect" && m["successful"] == true {
                ws.send(Message::text(connect.clone())).await?;
            } else if m["channel"] == CHANNEL {
                answered += 1;
                if m["successful"] == true {
                    ok += 1;
                } else if refused.is_none() {
                    refused = Some(m);
                }
            }
        }
    }
    // Leave at once rather than through the session expiry.
    let bye = json!([{"channel": "/meta/disconnect", "clientId": id, "id": "bye"}]);
    ws.send(Message::text(bye.to_string())).await?;
    let _ = next_json(&mut ws).await;
    let _ = ws.close(None).await;
    match refused {
        Some(m) if ok < messages => Err(format!(
            "{} of {messages} publishes refused, first: {m}",
            messages - ok
        )
        .into()),
        _ => Ok(ok),
    }
}
