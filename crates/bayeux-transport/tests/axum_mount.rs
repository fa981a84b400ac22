//! The service mounted in an axum router, as `examples/axum_mount.rs` does: `route_service` on
//! the mount point and on every path below it, next to the app's own routes.

mod common;

use std::time::Duration;

use axum::Router;
use axum::routing::get;
use bayeux_core::Engine;
use bayeux_transport::{BayeuxService, Endpoint, TransportConfig};
use common::*;
use http::{Method, StatusCode};
use http_body_util::Full;
use serde_json::json;

#[tokio::test]
async fn bayeux_under_bayeux_next_to_app_routes() {
    bounded(async {
        let config = TransportConfig {
            endpoints: vec![Endpoint::new("/bayeux")],
            ..TransportConfig::default()
        };
        let (bayeux, shutdown) = BayeuxService::new(Engine::new(engine_config(300)), config);
        let app = Router::new()
            .route("/api/hello", get(|| async { "hello" }))
            .route_service("/bayeux", bayeux.clone())
            .route_service("/bayeux/{*rest}", bayeux.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stop_rx.await;
                })
                .await
        });

        let resp = send(
            addr,
            empty(Method::GET, addr, "/api/hello")
                .body(Full::default())
                .unwrap(),
        )
        .await;
        assert_eq!(resp.status, StatusCode::OK);
        assert_eq!(resp.text(), "hello");

        let hs = json!([handshake_msg("1", &["long-polling"])]).to_string();
        for path in ["/bayeux", "/bayeux/handshake"] {
            let resp = send(addr, post(addr, path, hs.clone())).await;
            assert_eq!(resp.status, StatusCode::OK, "{path}");
            assert_eq!(
                find(&resp.messages(), "/meta/handshake")["successful"],
                true
            );
        }
        let resp = send(addr, post(addr, "/cometd/handshake", hs.clone())).await;
        assert_eq!(resp.status, StatusCode::NOT_FOUND);

        // Long-polling with the cookie, the held connect answered at the 300 ms timeout.
        let resp = send(addr, post(addr, "/bayeux/handshake", hs.clone())).await;
        let id = find(&resp.messages(), "/meta/handshake")["clientId"]
            .as_str()
            .unwrap()
            .to_owned();
        let cookie = resp.set_cookies()[0].split(';').next().unwrap().to_owned();
        for n in ["2", "3"] {
            let mut req = post(
                addr,
                "/bayeux/connect",
                json!([connect_msg(&id, n, "long-polling")]).to_string(),
            );
            req.headers_mut()
                .insert(http::header::COOKIE, cookie.parse().unwrap());
            let resp = send(addr, req).await;
            assert_eq!(find(&resp.messages(), "/meta/connect")["successful"], true);
        }

        // WebSocket upgrades pass through axum.
        let mut ws = ws_connect(addr, "/bayeux").await;
        let ws_id = ws_handshake(&mut ws).await;
        ws_send(&mut ws, &json!([subscribe_msg(&ws_id, "3", "/t")])).await;
        assert_eq!(
            find(&ws_recv(&mut ws).await, "/meta/subscribe")["successful"],
            true
        );
        bayeux.engine().publish_json("/t", &"tick").unwrap();
        assert_eq!(
            ws_recv(&mut ws).await,
            vec![json!({"channel": "/t", "data": "tick"})]
        );

        shutdown.shutdown();
        assert_eq!(ws_close_code(&mut ws).await, Some(1001));
        let _ = stop_tx.send(());
        let r = tokio::time::timeout(Duration::from_secs(5), server).await;
        assert!(matches!(r, Ok(Ok(Ok(())))), "axum server stops: {r:?}");
    })
    .await;
}
