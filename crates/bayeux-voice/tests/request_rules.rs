//! The request rules of issue 11: the body-read timeout and size limits (the Bayeux endpoint's
//! rules, with the voice API's own limit), JSON-only state changes, GWS's optional CSRF token,
//! Basic credentials through the `base64` crate, and the shared cookie parser.

mod common;

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bayeux_core::{Engine, EngineConfig};
use bayeux_transport::{BayeuxService, TransportConfig, serve};
use bayeux_voice::{VoiceApi, VoiceConfig, basic_authorization};
use bytes::Bytes;
use common::{Harness, Resp, req, send, send_body};
use http_body::Frame;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ME: &str = "/api/v2/me";

/// A body that sends `first`, then nothing more and never ends: a client stalled mid-body.
struct Stalled {
    first: Option<Bytes>,
}

impl http_body::Body for Stalled {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.first.take() {
            Some(b) => Poll::Ready(Some(Ok(Frame::data(b)))),
            None => Poll::Pending,
        }
    }
}

/// A body of `left` chunks of `chunk`, with no declared length (chunked encoding).
struct Chunks {
    left: usize,
    chunk: Bytes,
}

impl http_body::Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        self.left -= 1;
        Poll::Ready(Some(Ok(Frame::data(self.chunk.clone()))))
    }
}

fn with(f: impl FnOnce(&mut VoiceConfig)) -> Harness {
    let mut c = common::config(0);
    f(&mut c);
    Harness::new(c)
}

fn dial_path(h: &Harness, user: &str) -> String {
    format!("/api/v2/me/devices/{}/calls", h.device_of(user))
}

fn dial_body() -> String {
    json!({"operationName":"Dial","destination":{"phoneNumber":"15001"}}).to_string()
}

#[tokio::test]
async fn a_stalled_body_times_out_with_408() {
    let h = with(|c| c.body_read_timeout_ms = 200);
    let path = dial_path(&h, "agent1");
    for first in [None, Some(Bytes::from_static(br#"{"operationName":"Di"#))] {
        let started = Instant::now();
        let r = tokio::time::timeout(
            Duration::from_secs(10),
            send_body(
                &h.api,
                req("POST", &path).auth("agent1", "password").json(),
                Stalled { first },
            ),
        )
        .await
        .expect("the API must not wait for a stalled body forever");
        r.expect(408, 1);
        assert_eq!(r.json["statusMessage"], "Request body timed out");
        // The rest of the body is still on the connection: it cannot be reused.
        assert_eq!(r.headers["connection"], "close");
        assert!(started.elapsed() >= Duration::from_millis(200));
    }
    assert_eq!(h.pending(), 0, "a timed-out Dial creates no call");
    // A body that arrives in time is served as before.
    h.dial("agent1", "15001").await.expect(200, 0);
}

#[tokio::test]
async fn the_default_timeout_is_the_transports() {
    let api = VoiceApi::new(VoiceConfig::default(), Engine::new(EngineConfig::default())).unwrap();
    assert_eq!(
        Duration::from_millis(api.config().body_read_timeout_ms),
        TransportConfig::default().body_read_timeout
    );
}

/// The timeout over a real socket: hyper's streaming body, as a host serves the API.
#[tokio::test]
async fn a_stalled_body_times_out_over_tcp() {
    let engine = Engine::new(EngineConfig::default());
    let config = VoiceConfig {
        body_read_timeout_ms: 300,
        ..VoiceConfig::default()
    };
    let voice = VoiceApi::new(config, engine.clone()).unwrap();
    let (bayeux, shutdown) = BayeuxService::new(engine, TransportConfig::default());
    let service = hyper::service::service_fn(move |r| {
        let voice = voice.clone();
        async move { Ok::<_, Infallible>(Box::pin(voice.handle(r)).await) }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(
        listener,
        bayeux,
        service,
        async move {
            let _ = stop_rx.await;
        },
        Duration::from_secs(1),
    ));

    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /api/v2/me/devices/631608b3-ceb1-472b-ba05-2ae39555b0d1/calls HTTP/1.1\r\n\
         Host: {addr}\r\nAuthorization: {}\r\nContent-Type: application/json\r\n\
         Content-Length: 100\r\n\r\n{{\"operationName\"",
        basic_authorization("agent1", "password")
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut answer))
        .await
        .expect("the server answers and closes within the timeout")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains(r#""statusCode":1"#), "{answer}");
    assert!(started.elapsed() >= Duration::from_millis(250));

    shutdown.shutdown();
    let _ = stop_tx.send(());
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn oversized_bodies_are_413_streamed_or_declared() {
    let h = with(|c| c.max_body_bytes = 1024);
    let path = dial_path(&h, "agent1");
    let post = || req("POST", &path).auth("agent1", "password").json();
    // Streamed past the limit, within 4×: read and discarded, the connection stays usable.
    let chunk = Bytes::from(vec![b' '; 256]);
    let r = send_body(
        &h.api,
        post(),
        Chunks {
            left: 8,
            chunk: chunk.clone(),
        },
    )
    .await;
    r.expect(413, 1);
    assert!(!r.headers.contains_key("connection"));
    // Streamed past 4× the limit: refused there, connection closed.
    let r = send_body(&h.api, post(), Chunks { left: 1000, chunk }).await;
    r.expect(413, 1);
    assert_eq!(r.headers["connection"], "close");
    // Declared past 4× the limit: refused before reading.
    let r = send(
        &h.api,
        post().header("content-length", "5000"),
        Some(String::new()),
    )
    .await;
    r.expect(413, 1);
    assert_eq!(r.headers["connection"], "close");
    // Exactly at the limit: read (and, being spaces plus JSON, served).
    let body = format!("{}{}", dial_body(), " ".repeat(1024 - dial_body().len()));
    assert_eq!(body.len(), 1024);
    send(&h.api, post(), Some(body)).await.expect(200, 0);
}

#[tokio::test]
async fn state_changes_need_a_json_content_type() {
    let h = Harness::demo();
    let path = dial_path(&h, "agent1");
    let post = || req("POST", &path).auth("agent1", "password");
    let mut refused = vec![
        post(),
        post().header("content-type", "application/x-www-form-urlencoded"),
        post().header("content-type", "text/plain"),
        post().header("content-type", "text/plain; charset=utf-8"),
        post().header("content-type", "multipart/form-data; boundary=x"),
        post().header("content-type", "application/jsonx"),
        post().header("content-type", "text/json"),
        post().header("content-type", ""),
    ];
    // Two Content-Type headers: ambiguous, refused.
    refused.push(
        post()
            .header("content-type", "text/plain")
            .header("content-type", "application/json"),
    );
    for r in refused {
        let resp = send(&h.api, r, Some(dial_body())).await;
        resp.expect(415, 1);
        assert_eq!(
            resp.json["statusMessage"],
            "Content-Type must be application/json"
        );
    }
    // A form post of the same fields, as a cross-site form would send it.
    let form = send(
        &h.api,
        post().header("content-type", "application/x-www-form-urlencoded"),
        Some("operationName=Dial&destination=15001".into()),
    )
    .await;
    form.expect(415, 1);
    assert_eq!(h.pending(), 0, "no refused request created a call");
    for ok in [
        "application/json",
        "application/json; charset=utf-8",
        "Application/JSON;charset=UTF-8",
    ] {
        let r = send(&h.api, post().header("content-type", ok), Some(dial_body())).await;
        r.expect(200, 0);
    }
    assert!(h.pending() > 0);
    // Reads need no content type.
    h.get("agent1", ME).await.expect(200, 0);
}

#[tokio::test]
async fn csrf_off_by_default_sends_and_needs_no_token() {
    let h = Harness::demo();
    assert!(!h.api.config().enable_csrf_protection);
    let r = h.get("agent1", ME).await;
    r.expect(200, 0);
    assert!(!r.headers.contains_key("x-csrf-header"));
    assert!(!r.headers.contains_key("x-csrf-token"));
    h.dial("agent1", "15001").await.expect(200, 0);
    let cors = send(
        &h.api,
        req("GET", ME)
            .auth("agent1", "password")
            .header("origin", "http://127.0.0.1:8080"),
        None,
    )
    .await;
    assert!(!cors.headers.contains_key("access-control-expose-headers"));
}

fn cookie_pair(r: &Resp) -> String {
    let set = r.headers["set-cookie"].to_str().unwrap();
    set.split(';').next().unwrap().to_owned()
}

#[tokio::test]
async fn csrf_on_hands_out_a_token_and_requires_it() {
    let h = with(|c| c.enable_csrf_protection = true);
    let path = dial_path(&h, "agent1");
    // GWS's flow: a GET answers the header name and the session's token.
    let first = h.get("agent1", ME).await;
    first.expect(200, 0);
    assert_eq!(first.headers["x-csrf-header"], "X-CSRF-TOKEN");
    let token = first.headers["x-csrf-token"].to_str().unwrap().to_owned();
    assert_eq!(token.len(), 36, "{token}");
    let pair = cookie_pair(&first);
    // The token lives with the session: the cookie's later answers carry the same one.
    let again = send(&h.api, req("GET", ME).header("cookie", &pair), None).await;
    again.expect(200, 0);
    assert_eq!(again.headers["x-csrf-token"], token.as_str());

    let post = |cookie: Option<&str>, csrf: Option<&str>| {
        let mut r = req("POST", &path).auth("agent1", "password").json();
        if let Some(c) = cookie {
            r = r.header("cookie", c);
        }
        if let Some(t) = csrf {
            r = r.header("x-csrf-token", t);
        }
        send(&h.api, r, Some(dial_body()))
    };
    let other = h.get("agent1", ME).await;
    let other_token = other.headers["x-csrf-token"].to_str().unwrap().to_owned();
    assert_ne!(other_token, token, "each session has its own token");
    for (cookie, csrf) in [
        (Some(pair.as_str()), None),
        (Some(pair.as_str()), Some("")),
        (Some(pair.as_str()), Some(other_token.as_str())),
        (Some(pair.as_str()), Some(&token[..35])),
        // No cookie: no session, so no token can match (GWS needs the cookie too).
        (None, Some(token.as_str())),
        (None, None),
    ] {
        let r = post(cookie, csrf).await;
        r.expect(403, 3);
        assert_eq!(r.json["statusMessage"], "Missing or invalid Csrf token");
        // The refusal still hands out a token, so a client can recover.
        assert!(r.headers.contains_key("x-csrf-token"));
    }
    assert_eq!(h.pending(), 0, "no refused request created a call");
    post(Some(&pair), Some(&token)).await.expect(200, 0);
    // By cookie alone (the browser's way), with the token.
    let by_cookie = send(
        &h.api,
        req("POST", &path)
            .json()
            .header("cookie", &pair)
            .header("x-csrf-token", &token),
        Some(json!({"operationName":"Dial","destination":{"phoneNumber":"15002"}}).to_string()),
    )
    .await;
    by_cookie.expect(200, 0);
    // Another user's cookie with this token: that session's token differs.
    let agent2 = h.get("agent2", ME).await;
    let r = send(
        &h.api,
        req("POST", &dial_path(&h, "agent2"))
            .json()
            .header("cookie", &cookie_pair(&agent2))
            .header("x-csrf-token", &token),
        Some(dial_body()),
    )
    .await;
    r.expect(403, 3);
    // The check comes before routing and the body: a forger learns nothing more.
    let r = post(Some(&pair), None).await;
    r.expect(403, 3);
    let r = send(
        &h.api,
        req("POST", "/api/v2/nowhere").header("cookie", &pair),
        Some("x".into()),
    )
    .await;
    r.expect(403, 3);
}

#[tokio::test]
async fn csrf_on_exposes_its_headers_to_allowed_pages() {
    let h = with(|c| c.enable_csrf_protection = true);
    let own = "http://127.0.0.1:8080";
    let r = send(
        &h.api,
        req("GET", ME)
            .auth("agent1", "password")
            .header("origin", own),
        None,
    )
    .await;
    r.expect(200, 0);
    let exposed = r.headers["access-control-expose-headers"].to_str().unwrap();
    assert!(exposed.contains("X-CSRF-TOKEN") && exposed.contains("X-CSRF-HEADER"));
    let pre = send(
        &h.api,
        req("OPTIONS", "/api/v2/me/calls/X")
            .header("origin", own)
            .header("access-control-request-method", "POST"),
        None,
    )
    .await;
    assert_eq!(pre.status, 204);
    let allowed = pre.headers["access-control-allow-headers"]
        .to_str()
        .unwrap();
    assert!(allowed.contains("X-CSRF-TOKEN"), "{allowed}");
}

#[tokio::test]
async fn basic_credentials_through_the_crate_decoder() {
    let h = Harness::demo();
    let r = send(
        &h.api,
        req("GET", ME).header("authorization", "Basic YWdlbnQxOnBhc3N3b3Jk"),
        None,
    )
    .await;
    r.expect(200, 0);
    assert_eq!(r.json["user"]["userName"], "agent1");
    assert_eq!(
        basic_authorization("agent1", "password"),
        "Basic YWdlbnQxOnBhc3N3b3Jk"
    );
    for bad in [
        "Basic",
        "Basic ",
        "Basic !!!",
        "Basic YWdlbnQxOnBhc3N3b3Jk===",
        "Basic YWdlbnQx",
        "Basic %%%%",
        "Digest YWdlbnQxOnBhc3N3b3Jk",
    ] {
        let r = send(&h.api, req("GET", ME).header("authorization", bad), None).await;
        r.expect(401, 20);
    }
}

#[tokio::test]
async fn session_cookies_with_and_without_quotes() {
    let h = Harness::demo();
    let first = h.get("agent2", ME).await;
    let pair = cookie_pair(&first);
    let (name, token) = pair.split_once('=').unwrap();
    for cookie in [
        format!("{name}={token}"),
        format!("{name}=\"{token}\""),
        format!("a=1; {name}=\"{token}\"; b=2"),
    ] {
        let r = send(&h.api, req("GET", ME).header("cookie", &cookie), None).await;
        r.expect(200, 0);
        assert_eq!(r.json["user"]["userName"], "agent2");
    }
    for cookie in [
        format!("{name}=\"{token}"),
        format!("{name}={token}\""),
        format!("{name}=\"\"{token}\"\""),
    ] {
        let r = send(&h.api, req("GET", ME).header("cookie", &cookie), None).await;
        r.expect(401, 20);
    }
}
