//! Limits and protocol hygiene: body size, malformed bodies, batch size, connection limit,
//! header read timeout, HTTP/2 prior knowledge.

mod common;

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use bayeux_core::{EngineConfig, Limits};
use bayeux_transport::TransportConfig;
use common::*;
use http::{Method, StatusCode, header};
use http_body_util::Full;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn small_server() -> Server {
    Server::start(
        EngineConfig {
            limits: Limits {
                max_messages: 5,
                ..Limits::default()
            },
            ..engine_config(5_000)
        },
        TransportConfig {
            max_body_bytes: 1024,
            ..TransportConfig::default()
        },
    )
    .await
}

/// Asserts a Bayeux failure body: an array with `successful: false`, an error string with
/// `code` and complete advice.
fn assert_bayeux_error(resp: &Resp, code: &str) {
    assert!(
        resp.header("content-type")
            .unwrap()
            .starts_with("application/json")
    );
    let msgs = resp.messages();
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    assert_eq!(msgs[0]["successful"], false, "{msgs:?}");
    let error = msgs[0]["error"].as_str().expect("error string");
    assert!(error.starts_with(code), "{error}");
    assert_full_advice(&msgs[0]);
}

#[tokio::test]
async fn body_over_the_limit_is_413_with_a_bayeux_error() {
    bounded(async {
        let s = small_server().await;
        let big = json!([{"channel": "/meta/handshake", "version": "1.0",
            "supportedConnectionTypes": ["long-polling"], "ext": {"pad": "x".repeat(4000)}}]);
        let resp = send(s.addr, post(s.addr, "/cometd/handshake", big.to_string())).await;
        assert_eq!(resp.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_bayeux_error(&resp, "413:");
        assert_eq!(s.engine().session_count(), 0);
        assert!(
            s.svc.metrics().oversize.load(Relaxed) >= 1,
            "oversize counted"
        );
        // Chunked (no Content-Length) is limited the same way.
        let chunk = "x".repeat(600);
        let raw = format!(
            "POST /cometd HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
             {len:x}\r\n{chunk}\r\n{len:x}\r\n{chunk}\r\n0\r\n\r\n",
            len = chunk.len()
        );
        let out = raw_exchange(s.addr, raw.as_bytes()).await;
        assert_eq!(raw_status(&out), 413, "{out}");
        // Other clients are unaffected.
        let mut c = s.client();
        c.handshake_and_connect().await;
    })
    .await;
}

#[tokio::test]
async fn non_json_body_is_400_with_a_bayeux_error() {
    bounded(async {
        let s = small_server().await;
        for body in [
            &b"hello"[..],
            b"",
            b"[1,2]",
            b"[{\"channel\":\"/meta/handshake\"",
            b"{\"channel\":5}",
        ] {
            let resp = send(s.addr, post(s.addr, "/cometd", body.to_vec())).await;
            assert_eq!(
                resp.status,
                StatusCode::BAD_REQUEST,
                "{:?}",
                String::from_utf8_lossy(body)
            );
            assert_bayeux_error(&resp, "400:");
        }
    })
    .await;
}

#[tokio::test]
async fn invalid_utf8_is_400() {
    bounded(async {
        let s = small_server().await;
        let mut body = br#"[{"channel":"/meta/handshake","version":"1.0","ext":{"x":""#.to_vec();
        body.extend_from_slice(b"\xff\xfe\xc3");
        body.extend_from_slice(br#""}}]"#);
        let resp = send(s.addr, post(s.addr, "/cometd/handshake", body)).await;
        assert_eq!(resp.status, StatusCode::BAD_REQUEST);
        assert_bayeux_error(&resp, "400:");
        assert_eq!(s.engine().session_count(), 0);
    })
    .await;
}

#[tokio::test]
async fn too_many_messages_in_a_batch_is_refused() {
    bounded(async {
        let s = small_server().await;
        let mut c = s.client();
        c.handshake_and_connect().await;
        let id = c.id().to_owned();
        let batch: Vec<_> = (0..6)
            .map(|i| json!({"channel": "/a", "clientId": id, "data": i}))
            .collect();
        let resp = c.post("/cometd", &json!(batch)).await;
        assert!(
            resp.status == StatusCode::BAD_REQUEST || resp.status == StatusCode::PAYLOAD_TOO_LARGE,
            "{}",
            resp.status
        );
        assert_bayeux_error(&resp, "413:");
        // Five is fine.
        let resp = c.post("/cometd", &json!(batch[..5])).await;
        assert_eq!(resp.status, StatusCode::OK);
        assert_eq!(resp.messages().len(), 5);
        // The same limit applies to form-encoded and JSONP requests.
        let form: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("message", &json!(batch[..3]).to_string())
            .append_pair("message", &json!(batch[..3]).to_string())
            .finish();
        let mut req = c.request("/cometd", form);
        req.headers_mut().insert(
            header::CONTENT_TYPE,
            "application/x-www-form-urlencoded".parse().unwrap(),
        );
        let resp = send(s.addr, req).await;
        assert_ne!(resp.status, StatusCode::OK);
        assert_bayeux_error(&resp, "413:");
        for params in [
            vec![json!(batch)],
            vec![json!(batch[..3]), json!(batch[..3])],
        ] {
            let mut q = form_urlencoded::Serializer::new(String::new());
            q.append_pair("jsonp", "cb");
            for p in &params {
                q.append_pair("message", &p.to_string());
            }
            let req = empty(Method::GET, s.addr, &format!("/cometd?{}", q.finish()))
                .body(Full::default())
                .unwrap();
            let resp = send(s.addr, req).await;
            assert_ne!(resp.status, StatusCode::OK);
            assert_bayeux_error(&resp, "413:");
        }
    })
    .await;
}

#[tokio::test]
async fn unsupported_methods_are_refused() {
    bounded(async {
        let s = small_server().await;
        for m in [Method::PUT, Method::DELETE, Method::PATCH] {
            let req = empty(m.clone(), s.addr, "/cometd")
                .body(Full::default())
                .unwrap();
            let resp = send(s.addr, req).await;
            assert_eq!(resp.status, StatusCode::METHOD_NOT_ALLOWED, "{m}");
        }
    })
    .await;
}

/// Sends one keep-alive request on `tcp`; returns the status, or `None` if the server closed
/// the connection.
async fn keep_alive_request(tcp: &mut TcpStream) -> Option<u16> {
    let body = json!([handshake_msg("1", &["long-polling"])]).to_string();
    let req = format!(
        "POST /cometd/handshake HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Cookie: BAYEUX_BROWSER=abc\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    if tcp.write_all(req.as_bytes()).await.is_err() {
        return None;
    }
    read_response(tcp).await.map(|(status, _)| status)
}

/// Reads one response with a Content-Length body from `tcp`: its status and head, or `None` if
/// the server closed the connection first.
async fn read_response(tcp: &mut TcpStream) -> Option<(u16, String)> {
    let mut buf = vec![0u8; 8192];
    let mut got = Vec::new();
    loop {
        let n = step("keep-alive response", tcp.read(&mut buf)).await.ok()?;
        if n == 0 {
            return None;
        }
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got);
        if let Some((head, rest)) = text.split_once("\r\n\r\n") {
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            if rest.len() >= len {
                return Some((raw_status(&text), head.to_ascii_lowercase()));
            }
        }
    }
}

/// A body within the limit that arrives in several chunks is put back together.
#[tokio::test]
async fn chunked_body_within_the_limit_is_read_whole() {
    bounded(async {
        let s = small_server().await;
        let body = json!([handshake_msg("1", &["long-polling"])]).to_string();
        let (a, b) = body.split_at(body.len() / 2);
        let raw = format!(
            "POST /cometd HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
             {:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n",
            a.len(),
            b.len()
        );
        let out = raw_exchange(s.addr, raw.as_bytes()).await;
        assert_eq!(raw_status(&out), 200, "{out}");
        assert!(raw_body(&out).contains("\"successful\":true"), "{out}");
        assert_eq!(s.engine().session_count(), 1);
    })
    .await;
}

/// An oversized body is read to its end (up to four times the limit) before the 413, so the
/// client finishes sending and reads the answer, and the connection stays usable; a body past
/// that gets its 413 at once, with `Connection: close`.
#[tokio::test]
async fn oversized_body_is_drained_then_refused() {
    bounded(async {
        let s = small_server().await;
        let mut tcp = TcpStream::connect(s.addr).await.unwrap();
        let body = "x".repeat(3000);
        let req = format!(
            "POST /cometd HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        tcp.write_all(req.as_bytes()).await.unwrap();
        let (status, head) = read_response(&mut tcp).await.expect("a 413");
        assert_eq!(status, 413);
        assert!(!head.contains("connection: close"), "{head}");
        // Same connection, next request.
        assert_eq!(keep_alive_request(&mut tcp).await, Some(200));

        // Declared past the drain limit: answered before any of the body is read.
        let mut tcp = TcpStream::connect(s.addr).await.unwrap();
        let req = "POST /cometd HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
                   Content-Length: 1000000\r\n\r\n[";
        tcp.write_all(req.as_bytes()).await.unwrap();
        let (status, head) = read_response(&mut tcp).await.expect("a 413");
        assert_eq!(status, 413);
        assert!(head.contains("connection: close"), "{head}");
        let mut rest = Vec::new();
        let n = step("close", tcp.read_to_end(&mut rest)).await.unwrap_or(0);
        assert_eq!(n, 0, "the connection is closed after the 413");
    })
    .await;
}

#[tokio::test]
async fn connections_beyond_the_limit_are_refused_without_affecting_others() {
    bounded(async {
        let s = Server::start(
            engine_config(5_000),
            TransportConfig {
                max_connections: 2,
                ..TransportConfig::default()
            },
        )
        .await;
        let mut a = TcpStream::connect(s.addr).await.unwrap();
        let mut b = TcpStream::connect(s.addr).await.unwrap();
        assert_eq!(keep_alive_request(&mut a).await, Some(200));
        assert_eq!(keep_alive_request(&mut b).await, Some(200));
        let mut c = TcpStream::connect(s.addr).await.unwrap();
        assert_eq!(
            keep_alive_request(&mut c).await,
            None,
            "third connection refused"
        );
        assert!(s.svc.metrics().connections_refused.load(Relaxed) >= 1);
        // The admitted connections still work.
        assert_eq!(keep_alive_request(&mut a).await, Some(200));
        assert_eq!(keep_alive_request(&mut b).await, Some(200));
        // Closing one frees its slot.
        drop(b);
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let mut d = TcpStream::connect(s.addr).await.unwrap();
            if keep_alive_request(&mut d).await == Some(200) {
                break;
            }
            assert!(Instant::now() < deadline, "the freed slot was never reused");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(keep_alive_request(&mut a).await, Some(200));
    })
    .await;
}

async fn header_timeout_server() -> Server {
    Server::start(
        engine_config(5_000),
        TransportConfig {
            header_read_timeout: Duration::from_millis(500),
            ..TransportConfig::default()
        },
    )
    .await
}

/// Waits for the server to close `tcp`; returns how long that took.
async fn time_to_close(mut tcp: TcpStream) -> Duration {
    let t = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match step("server closes the connection", tcp.read(&mut buf)).await {
            Ok(0) | Err(_) => return t.elapsed(),
            Ok(_) => {}
        }
    }
}

#[tokio::test]
async fn half_a_request_line_is_closed_after_the_header_read_timeout() {
    bounded(async {
        let s = header_timeout_server().await;
        let mut tcp = TcpStream::connect(s.addr).await.unwrap();
        tcp.write_all(b"POST /cometd HT").await.unwrap();
        let took = time_to_close(tcp).await;
        assert!(took >= Duration::from_millis(300), "{took:?}");
        assert!(took < Duration::from_millis(2500), "{took:?}");
        // A complete request in time is served.
        let mut tcp = TcpStream::connect(s.addr).await.unwrap();
        assert_eq!(keep_alive_request(&mut tcp).await, Some(200));
    })
    .await;
}

#[tokio::test]
async fn silent_connection_is_closed_after_the_header_read_timeout() {
    bounded(async {
        let s = header_timeout_server().await;
        // A client that connects and sends nothing must not hold a connection slot forever.
        let tcp = TcpStream::connect(s.addr).await.unwrap();
        let took = time_to_close(tcp).await;
        assert!(took < Duration::from_millis(2500), "{took:?}");
    })
    .await;
}

#[tokio::test]
async fn http2_prior_knowledge_works() {
    bounded(async {
        let s = small_server().await;
        let req = http::Request::post(format!("http://{}/cometd/handshake", s.addr))
            .version(http::Version::HTTP_2)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(bytes::Bytes::from(
                json!([handshake_msg("1", &["long-polling"])]).to_string(),
            )))
            .unwrap();
        let resp = send_h2(s.addr, req).await;
        assert_eq!(resp.version, http::Version::HTTP_2);
        assert_eq!(resp.status, StatusCode::OK);
        let hs = find(&resp.messages(), "/meta/handshake").clone();
        assert_eq!(hs["successful"], true, "{hs}");
        assert_eq!(resp.set_cookies().len(), 1);
    })
    .await;
}

#[tokio::test]
async fn http2_sessions_of_one_browser_are_not_limited() {
    bounded(async {
        let s = Server::start(engine_config(10_000), TransportConfig::default()).await;
        let addr = s.addr;
        let h2 = |body: serde_json::Value| {
            http::Request::post(format!("http://{addr}/cometd"))
                .version(http::Version::HTTP_2)
                .header(header::CONTENT_TYPE, "application/json")
                .header(header::COOKIE, "BAYEUX_BROWSER=0123abcd")
                .body(Full::new(bytes::Bytes::from(body.to_string())))
                .unwrap()
        };
        let mut held = Vec::new();
        for _ in 0..2 {
            let resp = send_h2(addr, h2(json!([handshake_msg("1", &["long-polling"])]))).await;
            let id = find(&resp.messages(), "/meta/handshake")["clientId"]
                .as_str()
                .unwrap()
                .to_owned();
            send_h2(addr, h2(json!([connect_msg(&id, "2", "long-polling")]))).await;
            let req = h2(json!([connect_msg(&id, "3", "long-polling")]));
            held.push(tokio::spawn(send_h2(addr, req)));
        }
        tokio::time::sleep(Duration::from_millis(400)).await;
        for h in &held {
            assert!(!h.is_finished(), "both HTTP/2 long polls are held");
        }
        for h in held {
            h.abort();
        }
    })
    .await;
}

/// A WebSocket keeps its slot of `max_connections` (and its place in the `connections` gauge)
/// for as long as it is open, not just until the HTTP upgrade.
#[tokio::test]
async fn websockets_count_against_the_connection_limit_while_open() {
    bounded(async {
        let s = Server::start(
            engine_config(5_000),
            TransportConfig {
                max_connections: 3,
                ..TransportConfig::default()
            },
        )
        .await;
        let m = s.svc.metrics();
        let mut open = Vec::new();
        for _ in 0..3 {
            let mut ws = ws_connect(s.addr, "/cometd").await;
            ws_handshake(&mut ws).await;
            open.push(ws);
        }
        assert_eq!(m.websockets.load(Relaxed), 3);
        assert_eq!(
            m.connections.load(Relaxed),
            3,
            "upgraded sockets are counted"
        );
        // Every slot is taken by a WebSocket: more are refused at accept, however many.
        for _ in 0..3 {
            let r = step("refused upgrade", ws_open(&Target::from(s.addr), None)).await;
            assert!(r.is_err(), "a WebSocket past the limit was let in");
        }
        assert!(m.connections_refused.load(Relaxed) >= 3);
        assert_eq!(m.connections.load(Relaxed), 3);
        // So is a plain HTTP request.
        let mut tcp = TcpStream::connect(s.addr).await.unwrap();
        assert_eq!(keep_alive_request(&mut tcp).await, None);
        // The open ones are still served.
        for ws in &mut open {
            ws_send(
                ws,
                &json!([{"channel": "/meta/connect", "clientId": "x", "id": "9"}]),
            )
            .await;
            assert_eq!(find(&ws_recv(ws).await, "/meta/connect")["id"], "9");
        }

        // Closing one frees its slot.
        let mut gone = open.pop().unwrap();
        gone.close(None).await.unwrap();
        assert!(matches!(
            ws_next(&mut gone, STEP).await,
            Some(WsEvent::Closed(_))
        ));
        let deadline = Instant::now() + Duration::from_secs(3);
        let mut again = loop {
            if let Ok(Ok(ws)) =
                tokio::time::timeout(STEP, ws_open(&Target::from(s.addr), None)).await
            {
                break ws;
            }
            assert!(Instant::now() < deadline, "the freed slot was never reused");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        ws_handshake(&mut again).await;
        assert_eq!(m.connections.load(Relaxed), 3);
        assert_eq!(m.websockets.load(Relaxed), 3);

        drop(open);
        drop(again);
        let deadline = Instant::now() + STEP;
        while m.connections.load(Relaxed) != 0 || m.websockets.load(Relaxed) != 0 {
            assert!(
                Instant::now() < deadline,
                "the gauges did not return to zero"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

/// One connection holds at most `max_sessions_per_connection` live sessions, whatever it sends:
/// a WebSocket that keeps handshaking, and a keep-alive HTTP connection under `serve`, get
/// `503::too_many_sessions` past the quota; another connection is not affected.
#[tokio::test]
async fn one_connection_cannot_create_sessions_past_its_quota() {
    bounded(async {
        let s = Server::start(
            engine_config(5_000),
            TransportConfig {
                max_sessions_per_connection: 3,
                ..TransportConfig::default()
            },
        )
        .await;
        let mut ws = ws_connect(s.addr, "/cometd").await;
        for i in 0..5 {
            ws_send(
                &mut ws,
                &json!([handshake_msg(&i.to_string(), &["websocket"])]),
            )
            .await;
            let reply = find(&ws_recv(&mut ws).await, "/meta/handshake").clone();
            if i < 3 {
                assert_eq!(reply["successful"], true, "{reply}");
            } else {
                assert_eq!(reply["error"], "503::too_many_sessions", "{reply}");
            }
        }
        assert_eq!(s.engine().session_count(), 3);
        // The same over one keep-alive HTTP connection.
        let mut http = Http::connect(s.addr).await.expect("connect");
        for i in 0..5 {
            let body = json!([handshake_msg(&i.to_string(), &["long-polling"])]).to_string();
            let r = http.post(body).await.expect("POST");
            let reply = find(&r.messages(), "/meta/handshake").clone();
            if i < 3 {
                assert_eq!(reply["successful"], true, "{reply}");
            } else {
                assert_eq!(reply["error"], "503::too_many_sessions", "{reply}");
            }
        }
        // A fresh connection is served.
        let mut other = ws_connect(s.addr, "/cometd").await;
        ws_send(&mut other, &json!([handshake_msg("1", &["websocket"])])).await;
        assert_eq!(
            find(&ws_recv(&mut other).await, "/meta/handshake")["successful"],
            true
        );
    })
    .await;
}

/// A reverse proxy carries many clients over one upstream keep-alive connection: forwarded HTTP
/// requests are not bound by the connection's quota.
#[tokio::test]
async fn forwarded_http_requests_are_not_bound_by_the_proxy_connection_quota() {
    bounded(async {
        let s = Server::start(
            engine_config(5_000),
            TransportConfig {
                max_sessions_per_connection: 2,
                ..TransportConfig::default()
            },
        )
        .await;
        let mut http = Http::connect(s.addr).await.expect("connect");
        for i in 0..4 {
            let body = json!([handshake_msg(&i.to_string(), &["long-polling"])]).to_string();
            let r = http
                .request(
                    Method::POST,
                    "/cometd",
                    &[
                        ("content-type", "application/json"),
                        ("x-forwarded-for", "203.0.113.7"),
                    ],
                    body,
                )
                .await
                .expect("POST");
            assert_eq!(find(&r.messages(), "/meta/handshake")["successful"], true);
        }
    })
    .await;
}
