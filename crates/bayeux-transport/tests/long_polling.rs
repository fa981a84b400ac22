//! Long-polling over HTTP/1.1 against a real server: routing of the mount point, id echo,
//! advice, held connects, superseded connects, form-encoded bodies, session limits.

mod common;

use std::time::{Duration, Instant};

use bayeux_core::EngineConfig;
use bayeux_transport::TransportConfig;
use common::*;
use http::{Method, StatusCode, header};
use http_body_util::Full;
use serde_json::{Value, json};

async fn server(timeout_ms: u64) -> Server {
    Server::start(engine_config(timeout_ms), TransportConfig::default()).await
}

#[tokio::test]
async fn every_sub_path_of_the_mount_is_routed() {
    bounded(async {
        let s = server(5_000).await;
        let mut c = s.client();
        // The CometD JS client appends the message type to the URL.
        for path in ["/cometd/handshake", "/cometd", "/cometd/", "/cometd/a/b/c"] {
            let resp = c
                .post(path, &json!([handshake_msg("1", &["long-polling"])]))
                .await;
            assert_eq!(resp.status, StatusCode::OK, "{path}: {}", resp.text());
            assert_eq!(
                find(&resp.messages(), "/meta/handshake")["successful"],
                true,
                "{path}"
            );
        }
        for path in ["/cometd/connect", "/cometd", "/cometd/connect/"] {
            // A fresh session each time: its first connect is answered at once.
            c.handshake().await;
            let msg = c.connect_message();
            let resp = c.post(path, &json!([msg])).await;
            assert_eq!(resp.status, StatusCode::OK, "{path}");
            let r = find(&resp.messages(), "/meta/connect").clone();
            assert_eq!(r["successful"], true, "{path}: {r}");
            assert_eq!(r["id"], msg["id"], "{path}");
        }
    })
    .await;
}

#[tokio::test]
async fn paths_outside_the_mount_are_not_found() {
    bounded(async {
        let s = server(5_000).await;
        let body = json!([handshake_msg("1", &["long-polling"])]).to_string();
        for path in [
            "/cometdx",
            "/cometdx/handshake",
            "/",
            "/other/cometd",
            "/comet",
        ] {
            let resp = send(s.addr, post(s.addr, path, body.clone())).await;
            assert_eq!(resp.status, StatusCode::NOT_FOUND, "{path}");
        }
        let resp = send(
            s.addr,
            empty(Method::GET, s.addr, "/cometdx?message=[]")
                .body(Full::default())
                .unwrap(),
        )
        .await;
        assert_eq!(resp.status, StatusCode::NOT_FOUND);
        assert_eq!(s.engine().session_count(), 0);
    })
    .await;
}

#[tokio::test]
async fn every_reply_echoes_the_request_id() {
    bounded(async {
        let s = server(5_000).await;
        let mut c = s.client();
        let hs = c.handshake().await; // asserts the id
        assert_eq!(hs["successful"], true);
        let id = c.id().to_owned();
        let batch = json!([
            {"channel": "/meta/connect", "clientId": id, "connectionType": "long-polling", "id": "c1"},
            {"channel": "/meta/subscribe", "clientId": id, "subscription": "/echo", "id": "s1"},
            {"channel": "/echo", "clientId": id, "data": {"x": 1}, "id": "p1"},
            {"channel": "/meta/unsubscribe", "clientId": id, "subscription": ["/echo"], "id": "u1"},
            {"channel": "/meta/subscribe", "clientId": id, "subscription": "/meta/nope", "id": "f1"},
            {"channel": "/meta/connect", "clientId": "nosuchclient", "connectionType": "long-polling", "id": "f2"},
            {"channel": "/meta/subscribe", "clientId": id, "subscription": "/echo", "id": 42},
        ]);
        let resp = c.post("/cometd", &batch).await;
        let msgs = resp.messages();
        for want in ["c1", "s1", "p1", "u1", "f1", "f2"] {
            assert!(
                msgs.iter().any(|m| m["id"] == want && m.get("successful").is_some()),
                "no reply with id {want}: {msgs:?}"
            );
        }
        // Numeric ids are echoed as numbers.
        assert!(msgs.iter().any(|m| m["id"] == 42), "{msgs:?}");
        let publish = msgs.iter().find(|m| m["id"] == "p1").unwrap();
        assert_eq!(publish["channel"], "/echo");
        assert_eq!(publish["successful"], true);
        assert!(publish.get("data").is_none(), "publish replies carry no data: {publish}");
        let sub = msgs.iter().find(|m| m["id"] == "s1").unwrap();
        assert_eq!(sub["subscription"], "/echo");
        let unsub = msgs.iter().find(|m| m["id"] == "u1").unwrap();
        assert_eq!(unsub["subscription"], json!(["/echo"]), "subscription echoed as sent");

        let resp = c
            .post(
                "/cometd/disconnect",
                &json!([{"channel": "/meta/disconnect", "clientId": id, "id": "d1"}]),
            )
            .await;
        let d = find(&resp.messages(), "/meta/disconnect").clone();
        assert_eq!(d["id"], "d1");
        assert_eq!(d["successful"], true);
    })
    .await;
}

#[tokio::test]
async fn handshake_reply_carries_full_advice() {
    bounded(async {
        let s = server(4_321).await;
        let mut c = s.client();
        let hs = c.handshake().await;
        assert_eq!(hs["successful"], true);
        assert_eq!(hs["version"], "1.0");
        assert!(hs["clientId"].as_str().unwrap().len() >= 32);
        assert_full_advice(&hs);
        assert_eq!(hs["advice"]["reconnect"], "retry");
        assert_eq!(hs["advice"]["timeout"], 4_321);
        assert_eq!(hs["advice"]["interval"], 0);
        let types = hs["supportedConnectionTypes"].as_array().unwrap();
        assert!(types.contains(&json!("long-polling")), "{hs}");
        assert!(types.contains(&json!("websocket")), "{hs}");
    })
    .await;
}

#[tokio::test]
async fn unknown_session_gets_402_with_handshake_advice() {
    bounded(async {
        let s = server(5_000).await;
        let mut c = s.client();
        for (path, msg) in [
            ("/cometd/connect", connect_msg("0123456789abcdef", "7", "long-polling")),
            (
                "/cometd/subscribe",
                json!({"channel": "/meta/subscribe", "clientId": "nobody", "subscription": "/a", "id": "7"}),
            ),
            ("/cometd/publish", json!({"channel": "/a", "clientId": "nobody", "data": 1, "id": "7"})),
            ("/cometd/publish", json!({"channel": "/a", "data": 1, "id": "7"})),
        ] {
            let resp = c.post(path, &json!([msg])).await;
            assert_eq!(resp.status, StatusCode::OK);
            let msgs = resp.messages();
            let r = &msgs[0];
            assert_eq!(r["id"], "7", "{r}");
            assert_eq!(r["successful"], false, "{r}");
            assert_eq!(r["error"], "402::session_unknown", "{r}");
            assert_full_advice(r);
            assert_eq!(r["advice"]["reconnect"], "handshake", "{r}");
            assert_eq!(r["advice"]["interval"], 0, "{r}");
        }
    })
    .await;
}

#[tokio::test]
async fn refused_operations_carry_full_advice() {
    bounded(async {
        let s = server(5_000).await;
        let mut c = s.client();
        c.handshake_and_connect().await;
        let r = c.subscribe(json!("/meta/secret")).await;
        assert_eq!(r["successful"], false, "{r}");
        assert!(r["error"].as_str().unwrap().starts_with("403:"), "{r}");
        assert_eq!(r["subscription"], "/meta/secret");
        assert_full_advice(&r);
        let r = c.publish("/meta/custom", json!(1)).await;
        assert_eq!(r["successful"], false, "{r}");
        assert_full_advice(&r);
        let r = c.publish("/a/*", json!(1)).await;
        assert_eq!(r["successful"], false, "wildcard publish refused: {r}");
        assert_full_advice(&r);
        // A handshake with no common connection type is refused for good.
        let resp = c
            .post(
                "/cometd/handshake",
                &json!([handshake_msg("9", &["flash"])]),
            )
            .await;
        let r = find(&resp.messages(), "/meta/handshake").clone();
        assert_eq!(r["successful"], false, "{r}");
        assert_eq!(r["id"], "9");
        assert_full_advice(&r);
        assert_eq!(r["advice"]["reconnect"], "none");
    })
    .await;
}

#[tokio::test]
async fn first_connect_is_answered_at_once() {
    bounded(async {
        let s = server(10_000).await;
        let mut c = s.client();
        c.handshake().await;
        let t = Instant::now();
        let msgs = c.connect().await;
        assert!(t.elapsed() < PROMPT, "first connect held {:?}", t.elapsed());
        let r = find(&msgs, "/meta/connect");
        assert_eq!(r["successful"], true);
        assert_full_advice(r);
    })
    .await;
}

#[tokio::test]
async fn held_connect_returns_promptly_when_a_message_is_published() {
    bounded(async {
        let s = server(10_000).await;
        let mut c = s.client();
        c.handshake_and_connect().await;
        assert_eq!(c.subscribe(json!("/news/*")).await["successful"], true);
        let held = c.spawn_connect();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!held.is_finished(), "the second connect is held");
        let t = Instant::now();
        s.engine()
            .publish_json("/news/today", &json!({"headline": "hi"}))
            .unwrap();
        let msgs = step("held connect", held).await.unwrap();
        let waited = t.elapsed();
        assert!(waited < PROMPT, "woken after {waited:?}");
        let d = deliveries(&msgs, "/news/today");
        assert_eq!(d.len(), 1, "{msgs:?}");
        assert_eq!(d[0]["data"], json!({"headline": "hi"}));
        assert!(
            d[0].get("clientId").is_none(),
            "deliveries carry no clientId"
        );
        assert!(d[0].get("id").is_none(), "deliveries carry no id");
        let last = msgs.last().unwrap();
        assert_eq!(last["channel"], "/meta/connect");
        assert_eq!(last["successful"], true);
    })
    .await;
}

#[tokio::test]
async fn held_connect_is_woken_by_another_clients_publish() {
    bounded(async {
        let s = server(10_000).await;
        let mut a = s.client();
        let mut b = s.client();
        a.handshake_and_connect().await;
        b.handshake_and_connect().await;
        a.subscribe(json!(["/chat/room"])).await;
        let held = a.spawn_connect();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let t = Instant::now();
        let r = b.publish("/chat/room", json!("hello")).await;
        assert_eq!(r["successful"], true);
        assert!(r.get("data").is_none());
        let msgs = step("held connect", held).await.unwrap();
        assert!(t.elapsed() < PROMPT, "{:?}", t.elapsed());
        let d = deliveries(&msgs, "/chat/room");
        assert_eq!(d.len(), 1, "{msgs:?}");
        assert_eq!(d[0]["data"], "hello");
        assert!(
            d[0].get("clientId").is_none(),
            "the publisher's clientId must not leak"
        );
    })
    .await;
}

#[tokio::test]
async fn held_connect_returns_at_the_timeout() {
    bounded(async {
        let s = server(300).await;
        let mut c = s.client();
        c.handshake_and_connect().await;
        let t = Instant::now();
        let msgs = c.connect().await;
        let took = t.elapsed();
        assert!(
            took >= Duration::from_millis(250),
            "returned after {took:?}"
        );
        assert!(
            took < Duration::from_millis(2500),
            "returned after {took:?}"
        );
        assert_eq!(msgs.len(), 1, "{msgs:?}");
        assert_eq!(msgs[0]["successful"], true);
        assert_full_advice(&msgs[0]);
        assert_eq!(msgs[0]["advice"]["timeout"], 300);
    })
    .await;
}

#[tokio::test]
async fn client_advice_timeout_is_honoured() {
    bounded(async {
        let s = server(10_000).await;
        let mut c = s.client();
        c.handshake_and_connect().await;
        let mut msg = c.connect_message();
        msg["advice"] = json!({"timeout": 200});
        let t = Instant::now();
        let resp = step("connect", c.post("/cometd/connect", &json!([msg]))).await;
        let took = t.elapsed();
        assert!(took >= Duration::from_millis(150), "{took:?}");
        assert!(took < Duration::from_millis(2500), "{took:?}");
        assert_eq!(
            find(&resp.messages(), "/meta/connect")["advice"]["timeout"],
            200
        );
        // advice.timeout 0 answers at once.
        let mut msg = c.connect_message();
        msg["advice"] = json!({"timeout": 0});
        let t = Instant::now();
        let resp = c.post("/cometd/connect", &json!([msg])).await;
        assert!(t.elapsed() < PROMPT, "{:?}", t.elapsed());
        assert_eq!(find(&resp.messages(), "/meta/connect")["successful"], true);
    })
    .await;
}

async fn check_superseded(keep_cookies: bool) {
    let s = server(10_000).await;
    let mut c = s.client();
    c.keep_cookies = keep_cookies;
    c.handshake_and_connect().await;
    assert_eq!(!c.jar.is_empty(), keep_cookies);
    c.subscribe(json!("/x")).await;
    let first = c.spawn_connect();
    // The first must be held before the second is sent (two connections: no order otherwise).
    held_connects(s.engine(), 1).await;
    assert!(!first.is_finished());
    let second = c.spawn_connect();
    let t = Instant::now();
    let msgs = step("superseded connect", first).await.unwrap();
    assert!(t.elapsed() < PROMPT, "{:?}", t.elapsed());
    assert_eq!(
        msgs.len(),
        1,
        "the superseded connect carries no messages: {msgs:?}"
    );
    assert_eq!(msgs[0]["channel"], "/meta/connect");
    // The newer connect is the one that is held and gets the messages.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !second.is_finished(),
        "the newer connect must be held, got {:?}",
        step("second", second).await
    );
    s.engine().publish_json("/x", &json!(1)).unwrap();
    let msgs = step("second connect", second).await.unwrap();
    assert_eq!(deliveries(&msgs, "/x").len(), 1, "{msgs:?}");
    let r = msgs.last().unwrap();
    assert!(r["advice"].get("multiple-clients").is_none(), "{r}");
}

#[tokio::test]
async fn second_connect_supersedes_the_first() {
    bounded(check_superseded(true)).await;
}

#[tokio::test]
async fn second_connect_supersedes_the_first_without_cookies() {
    bounded(check_superseded(false)).await;
}

#[tokio::test]
async fn disconnect_answers_the_held_connect() {
    bounded(async {
        let s = server(10_000).await;
        let mut c = s.client();
        c.handshake_and_connect().await;
        let held = c.spawn_connect();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let id = c.next_id();
        let resp = c
            .post(
                "/cometd/disconnect",
                &json!([{"channel": "/meta/disconnect", "clientId": c.id(), "id": id}]),
            )
            .await;
        assert_eq!(
            find(&resp.messages(), "/meta/disconnect")["successful"],
            true
        );
        let msgs = step("held connect after disconnect", held).await.unwrap();
        let r = msgs.last().unwrap();
        assert_eq!(r["channel"], "/meta/connect");
        assert_full_advice(r);
        assert_eq!(s.engine().session_count(), 0);
    })
    .await;
}

#[tokio::test]
async fn form_encoded_message_parameters_are_accepted() {
    bounded(async {
        let s = server(5_000).await;
        let mut c = s.client();
        let hs: String = form_urlencoded::Serializer::new(String::new())
            .append_pair(
                "message",
                &json!([handshake_msg("1", &["long-polling"])]).to_string(),
            )
            .finish();
        let req = http::Request::post(format!("http://{}/cometd/handshake", s.addr))
            .header(header::HOST, s.addr.to_string())
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Full::new(bytes::Bytes::from(hs)))
            .unwrap();
        let resp = send(s.addr, req).await;
        assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
        assert!(
            resp.header("content-type")
                .unwrap()
                .starts_with("application/json")
        );
        let r = find(&resp.messages(), "/meta/handshake").clone();
        assert_eq!(r["successful"], true);
        assert_eq!(r["id"], "1");
        c.store_cookie(&resp);
        let id = r["clientId"].as_str().unwrap();
        // Two message parameters, one a bare object and one an array.
        let body: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("message", &connect_msg(id, "2", "long-polling").to_string())
            .append_pair(
                "message",
                &json!([subscribe_msg(id, "3", "/f")]).to_string(),
            )
            .finish();
        let mut req = c.request("/cometd", body);
        req.headers_mut().insert(
            header::CONTENT_TYPE,
            "application/x-www-form-urlencoded; charset=UTF-8"
                .parse()
                .unwrap(),
        );
        let resp = send(s.addr, req).await;
        let msgs = resp.messages();
        assert_eq!(find(&msgs, "/meta/connect")["id"], "2");
        assert_eq!(find(&msgs, "/meta/subscribe")["successful"], true);
        // A form body with no message parameter is a Bayeux error.
        let mut req = c.request("/cometd", "foo=bar");
        req.headers_mut().insert(
            header::CONTENT_TYPE,
            "application/x-www-form-urlencoded".parse().unwrap(),
        );
        let resp = send(s.addr, req).await;
        assert_eq!(resp.status, StatusCode::BAD_REQUEST);
        assert_eq!(resp.messages()[0]["successful"], false);
    })
    .await;
}

#[tokio::test]
async fn max_sessions_refuses_further_handshakes_with_advice() {
    bounded(async {
        let s = Server::start(
            EngineConfig {
                max_sessions: 3,
                timeout_ms: 300,
                ..EngineConfig::default()
            },
            TransportConfig::default(),
        )
        .await;
        let mut clients = Vec::new();
        for _ in 0..3 {
            let mut c = s.client();
            c.handshake_and_connect().await;
            clients.push(c);
        }
        let mut fourth = s.client();
        let r = fourth.handshake().await;
        assert_eq!(r["successful"], false, "{r}");
        assert!(r["error"].as_str().unwrap().starts_with("503:"), "{r}");
        assert_full_advice(&r);
        assert_ne!(r["advice"]["reconnect"], "retry", "{r}");
        assert!(r.get("clientId").is_none());
        assert_eq!(s.engine().session_count(), 3);
        // The existing sessions are unaffected.
        for c in &mut clients {
            let msgs = c.connect().await;
            assert_eq!(msgs.last().unwrap()["successful"], true);
        }
    })
    .await;
}

#[tokio::test]
async fn responses_are_json_and_not_cached() {
    bounded(async {
        let s = server(5_000).await;
        let mut c = s.client();
        let resp = c
            .post(
                "/cometd/handshake",
                &json!(handshake_msg("1", &["long-polling"])),
            )
            .await;
        // A bare object is accepted; the answer is always an array.
        assert!(matches!(resp.json(), Value::Array(_)));
        assert!(
            resp.header("content-type")
                .unwrap()
                .starts_with("application/json")
        );
        assert!(resp.header("cache-control").unwrap().contains("no-cache"));
    })
    .await;
}

#[tokio::test]
async fn metrics_count_polling_requests_and_messages() {
    bounded(async {
        let s = server(5_000).await;
        let mut c = s.client();
        c.handshake_and_connect().await;
        c.subscribe(json!("/m")).await;
        let m = s.svc.metrics();
        use std::sync::atomic::Ordering::Relaxed;
        assert!(m.messages_in.load(Relaxed) >= 3);
        assert!(m.messages_out.load(Relaxed) >= 3);
        assert_eq!(
            m.http_requests.load(Relaxed),
            3,
            "bayeux_http_requests_total counts long-polling requests"
        );
        let text = s.svc.render_metrics();
        assert!(text.contains("bayeux_sessions 1"), "{text}");
    })
    .await;
}
