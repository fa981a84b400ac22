//! Graceful shutdown: held connects are answered, WebSockets are closed with 1001 and `serve`
//! returns.

mod common;

use std::time::{Duration, Instant};

use bayeux_transport::TransportConfig;
use common::*;
use serde_json::json;

#[tokio::test]
async fn shutdown_answers_held_connects_and_closes_websockets_with_1001() {
    bounded(async {
        let mut s = Server::start(engine_config(10_000), TransportConfig::default()).await;
        let mut lp = s.client();
        lp.handshake_and_connect().await;
        let held = lp.spawn_connect();

        let mut ws = ws_connect(s.addr, "/cometd").await;
        let id = ws_handshake(&mut ws).await;
        ws_send(&mut ws, &json!([connect_msg(&id, "3", "websocket")])).await;
        let mut idle_ws = ws_connect(s.addr, "/cometd").await;
        ws_handshake(&mut idle_ws).await;

        // Both connects (long-polling and WebSocket) are held before the shutdown.
        held_connects(s.engine(), 2).await;
        assert!(!held.is_finished(), "long poll held before shutdown");
        assert!(ws_next(&mut ws, Duration::from_millis(10)).await.is_none());

        let t = Instant::now();
        s.shutdown.shutdown();
        assert!(s.shutdown.is_shutdown());

        let msgs = step("held long poll answered", held).await.unwrap();
        assert!(t.elapsed() < PROMPT, "{:?}", t.elapsed());
        let r = msgs.last().unwrap();
        assert_eq!(r["channel"], "/meta/connect");
        assert_full_advice(r);

        let msgs = ws_recv(&mut ws).await;
        let r = find(&msgs, "/meta/connect");
        assert_eq!(r["id"], "3", "the held WebSocket connect is answered");
        assert_full_advice(r);
        assert_eq!(ws_close_code(&mut ws).await, Some(1001));
        assert_eq!(ws_close_code(&mut idle_ws).await, Some(1001));

        s.stop_serving().await.expect("serve returns Ok");
        assert!(
            tokio::net::TcpStream::connect(s.addr).await.is_err(),
            "the listener is closed after serve returns"
        );
    })
    .await;
}

#[tokio::test]
async fn connects_after_shutdown_are_not_held() {
    bounded(async {
        let s = Server::start(engine_config(10_000), TransportConfig::default()).await;
        let mut c = s.client();
        c.handshake_and_connect().await;
        s.shutdown.shutdown();
        let t = Instant::now();
        let msgs = step("connect after shutdown", c.connect()).await;
        assert!(t.elapsed() < PROMPT, "{:?}", t.elapsed());
        assert_eq!(msgs.last().unwrap()["channel"], "/meta/connect");
    })
    .await;
}

#[tokio::test]
async fn serve_returns_within_the_grace_period_despite_open_connections() {
    bounded(async {
        let mut s = Server::start(engine_config(10_000), TransportConfig::default()).await;
        // An idle keep-alive connection and a half-sent request.
        let _idle = tokio::net::TcpStream::connect(s.addr).await.unwrap();
        let mut half = tokio::net::TcpStream::connect(s.addr).await.unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut half, b"POST /cometd HTTP/1.1\r\n")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        s.shutdown.shutdown();
        let t = Instant::now();
        s.stop_serving().await.unwrap();
        // The helper's grace is 2 s.
        assert!(
            t.elapsed() < Duration::from_millis(3000),
            "{:?}",
            t.elapsed()
        );
    })
    .await;
}
