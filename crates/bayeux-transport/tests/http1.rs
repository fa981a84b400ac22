//! The lean HTTP/1.1 loop of `serve`, over raw TCP: what real clients and proxies send
//! (keep-alive and `Connection: close`, HTTP/1.0, pipelining, chunked and `Content-Length`
//! bodies, `Expect: 100-continue`, HEAD), the limits and timeouts, the hand-off to hyper of
//! anything that is not a Bayeux request, and a held connect ended by the client leaving.

mod common;

use std::time::Duration;

use bayeux_test_client::post as post_req;
use bayeux_transport::TransportConfig;
use common::*;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One parsed response.
#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }
}

/// A raw connection that reads responses one at a time, keeping what follows.
struct Raw {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    async fn connect(server: &Server) -> Raw {
        let s = step("connect", TcpStream::connect(server.addr))
            .await
            .expect("connect");
        Raw { s, buf: Vec::new() }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).await.expect("write");
    }

    async fn fill(&mut self) -> usize {
        let mut chunk = [0u8; 4096];
        let n = step("read", self.s.read(&mut chunk)).await.unwrap_or(0);
        self.buf.extend_from_slice(&chunk[..n]);
        n
    }

    /// Reads one response; `head_only` for the answer to a HEAD request.
    async fn response_to(&mut self, head_only: bool) -> Resp {
        loop {
            let mut hs = [httparse::EMPTY_HEADER; 64];
            let mut r = httparse::Response::new(&mut hs);
            if let httparse::Status::Complete(n) = r.parse(&self.buf).expect("response head") {
                let status = r.code.unwrap_or(0);
                let headers: Vec<(String, String)> = r
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_owned(),
                            String::from_utf8_lossy(h.value).into_owned(),
                        )
                    })
                    .collect();
                let len: usize = headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                    .map_or(0, |(_, v)| v.parse().expect("content-length"));
                let len = if head_only || status < 200 { 0 } else { len };
                while self.buf.len() < n + len {
                    assert!(self.fill().await > 0, "connection closed mid-body");
                }
                let body = self.buf[n..n + len].to_vec();
                self.buf.drain(..n + len);
                return Resp {
                    status,
                    headers,
                    body,
                };
            }
            assert!(self.fill().await > 0, "connection closed before a response");
        }
    }

    async fn response(&mut self) -> Resp {
        self.response_to(false).await
    }

    /// Whether the server closes the connection (EOF) within a step.
    async fn closed(&mut self) -> bool {
        let mut b = [0u8; 64];
        matches!(
            tokio::time::timeout(STEP, self.s.read(&mut b)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }
}

fn post(path: &str, body: &str, extra: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn handshake_body() -> String {
    json!([{"channel": "/meta/handshake", "version": "1.0", "supportedConnectionTypes": ["long-polling"], "id": "1"}]).to_string()
}

fn assert_handshake(r: &Resp) -> String {
    assert_eq!(r.status, 200, "{r:?}");
    let v = r.json();
    assert_eq!(v[0]["successful"], true, "{v}");
    v[0]["clientId"].as_str().expect("clientId").to_owned()
}

async fn server() -> Server {
    Server::start(engine_config(10_000), TransportConfig::default()).await
}

#[tokio::test]
async fn keep_alive_and_pipelined_requests_are_answered_in_order() {
    let server = server().await;
    let mut c = Raw::connect(&server).await;
    let mut two = post("/cometd", &handshake_body(), "");
    two.extend(post("/cometd/handshake", &handshake_body(), ""));
    c.send(&two).await;
    let a = assert_handshake(&c.response().await);
    let b = assert_handshake(&c.response().await);
    assert_ne!(a, b);
    // The same connection carries a third request.
    c.send(&post("/cometd", &handshake_body(), "")).await;
    assert_handshake(&c.response().await);
}

#[tokio::test]
async fn chunked_bodies_in_pieces_and_100_continue() {
    let server = server().await;
    let mut c = Raw::connect(&server).await;
    let body = handshake_body();
    let chunked = bayeux_transport::http1::encode_chunked(body.as_bytes(), &[5, 9, 1]);
    c.send(b"POST /cometd HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
        .await;
    for piece in chunked.chunks(7) {
        c.send(piece).await;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_handshake(&c.response().await);

    c.send(
        format!(
            "POST /cometd HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(c.response().await.status, 100);
    c.send(body.as_bytes()).await;
    assert_handshake(&c.response().await);
}

#[tokio::test]
async fn head_options_and_closing_semantics() {
    let server = server().await;
    let mut c = Raw::connect(&server).await;
    c.send(b"HEAD /cometd HTTP/1.1\r\nHost: t\r\n\r\n").await;
    let r = c.response_to(true).await;
    assert_eq!(r.status, 405);
    assert!(r.header("content-length").is_some());
    // No body followed the HEAD answer: the next response parses.
    c.send(b"OPTIONS /cometd HTTP/1.1\r\nHost: t\r\nOrigin: http://a.example\r\nAccess-Control-Request-Method: POST\r\n\r\n")
        .await;
    let r = c.response().await;
    assert_eq!(r.status, 204);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("http://a.example")
    );
    c.send(&post("/cometd", &handshake_body(), "Connection: close\r\n"))
        .await;
    let r = c.response().await;
    assert_handshake(&r);
    assert_eq!(r.header("connection"), Some("close"));
    assert!(c.closed().await);

    // HTTP/1.0: closed after the answer unless keep-alive is asked for.
    let body = handshake_body();
    let mut c = Raw::connect(&server).await;
    c.send(
        format!(
            "POST /cometd HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .await;
    let r = c.response().await;
    assert_handshake(&r);
    assert_eq!(r.header("connection"), Some("keep-alive"));
    c.send(
        format!(
            "POST /cometd HTTP/1.0\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .await;
    assert_handshake(&c.response().await);
    assert!(c.closed().await);
}

#[tokio::test]
async fn other_requests_are_handed_to_hyper_on_the_same_connection() {
    let server = server().await;
    let mut c = Raw::connect(&server).await;
    c.send(&post("/cometd", &handshake_body(), "")).await;
    assert_handshake(&c.response().await);
    // Not a Bayeux path: hyper (and the host's service) answers, on the same socket...
    c.send(b"GET /elsewhere HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert_eq!(c.response().await.status, 404);
    // ... which hyper keeps serving, Bayeux requests included.
    c.send(&post("/cometd", &handshake_body(), "")).await;
    assert_handshake(&c.response().await);

    // HTTP/2 with prior knowledge goes to hyper too.
    let h2 = send_h2(
        server.addr,
        post_req(server.addr, "/cometd", handshake_body()),
    )
    .await;
    assert_eq!(h2.json()[0]["successful"], true);
}

#[tokio::test]
async fn bad_framing_is_refused_and_the_connection_closed() {
    let server = server().await;
    for (raw, status) in [
        (
            &b"POST /cometd HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
            400,
        ),
        (
            b"POST /cometd HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            400,
        ),
        (
            b"POST /cometd HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            501,
        ),
        (b"POST /cometd HTTP/1.1\r\nExpect: nothing\r\n\r\n", 417),
        (
            b"POST /cometd HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            400,
        ),
        (b"GARBAGE\x01\r\n\r\n", 400),
    ] {
        let mut c = Raw::connect(&server).await;
        c.send(raw).await;
        let r = c.response().await;
        assert_eq!(r.status, status, "{}", String::from_utf8_lossy(raw));
        assert!(c.closed().await, "{}", String::from_utf8_lossy(raw));
    }
    // A head over the limit.
    let mut c = Raw::connect(&server).await;
    let big = format!(
        "GET /cometd HTTP/1.1\r\nX-Big: {}\r\n\r\n",
        "a".repeat(bayeux_transport::http1::MAX_HEAD_BYTES)
    );
    c.send(big.as_bytes()).await;
    assert_eq!(c.response().await.status, 431);
    assert!(c.closed().await);
}

#[tokio::test]
async fn body_limits_and_timeouts() {
    let config = TransportConfig {
        max_body_bytes: 1000,
        header_read_timeout: Duration::from_millis(400),
        body_read_timeout: Duration::from_millis(400),
        ..TransportConfig::default()
    };
    let server = Server::start(engine_config(10_000), config).await;
    // Over the limit but within the drain: 413, and the connection carries on.
    let mut c = Raw::connect(&server).await;
    let pad = format!("[{}]", "1,".repeat(800) + "1");
    c.send(&post("/cometd", &pad, "")).await;
    let r = c.response().await;
    assert_eq!(r.status, 413);
    assert_eq!(r.json()[0]["error"], "413::message_too_large");
    c.send(&post("/cometd", &handshake_body(), "")).await;
    assert_handshake(&c.response().await);
    // Declared far past it: 413 at once, then closed.
    c.send(b"POST /cometd HTTP/1.1\r\nContent-Length: 100000\r\n\r\n")
        .await;
    assert_eq!(c.response().await.status, 413);
    assert!(c.closed().await);
    // A chunked body past the drain: 413 and closed.
    let mut c = Raw::connect(&server).await;
    let big = bayeux_transport::http1::encode_chunked(&[b' '; 5000], &[]);
    c.send(b"POST /cometd HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")
        .await;
    c.send(&big).await;
    assert_eq!(c.response().await.status, 413);
    assert!(c.closed().await);
    // A body that stalls: 408 and closed.
    let mut c = Raw::connect(&server).await;
    c.send(b"POST /cometd HTTP/1.1\r\nContent-Length: 10\r\n\r\n[")
        .await;
    assert_eq!(c.response().await.status, 408);
    assert!(c.closed().await);
    // A head that stalls: 408 and closed.
    let mut c = Raw::connect(&server).await;
    c.send(b"POST /cometd HTTP/1.1\r\nHost").await;
    assert_eq!(c.response().await.status, 408);
    assert!(c.closed().await);
    // A connection that sends nothing, or goes idle between requests, is closed.
    let mut c = Raw::connect(&server).await;
    assert!(c.closed().await);
    let mut c = Raw::connect(&server).await;
    c.send(&post("/cometd", &handshake_body(), "")).await;
    assert_handshake(&c.response().await);
    assert!(c.closed().await);
}

#[tokio::test]
async fn a_client_that_leaves_ends_its_held_connect_at_once() {
    let server = server().await;
    let mut c = Raw::connect(&server).await;
    c.send(&post("/cometd", &handshake_body(), "")).await;
    let id = assert_handshake(&c.response().await);
    let connect = |n: &str| {
        json!([{"channel": "/meta/connect", "clientId": id, "connectionType": "long-polling", "id": n}])
            .to_string()
    };
    c.send(&post("/cometd", &connect("2"), "")).await;
    assert_eq!(c.response().await.json()[0]["successful"], true);
    c.send(&post("/cometd", &connect("3"), "")).await;
    held_connects(server.engine(), 1).await;
    drop(c);
    // Far sooner than the 10 s hold.
    held_connects(server.engine(), 0).await;
}
