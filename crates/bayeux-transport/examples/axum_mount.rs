//! Mounting the Bayeux service in an axum 0.8 application: the app keeps its own routes (`/`
//! and `/api/hello`) and the Bayeux endpoint lives under `/bayeux`, on `127.0.0.1:8081`.
//!
//! ```text
//! cargo run -p bayeux-transport --example axum_mount
//! ```
//!
//! The transport routes on the full request path (a CometD client posts to `/bayeux/handshake`,
//! `/bayeux/connect`, ...), so the service is mounted with `route_service` on `/bayeux` and on
//! `/bayeux/{*rest}`. `nest_service` would strip the `/bayeux` prefix before the service saw the
//! path, and the endpoint would no longer match.
//!
//! `axum::serve` runs the connections here, so the transport's connection limit and header read
//! timeout (applied by `bayeux_transport::serve`) are the host's business.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::routing::get;
use bayeux_core::{Engine, EngineConfig};
use bayeux_transport::{BayeuxService, Endpoint, TransportConfig};
use serde_json::json;

async fn hello() -> axum::Json<serde_json::Value> {
    axum::Json(json!({ "hello": "world" }))
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let engine = Engine::new(EngineConfig::default());
    let config = TransportConfig {
        endpoints: vec![Endpoint::new("/bayeux")],
        ..TransportConfig::default()
    };
    let (bayeux, shutdown) = BayeuxService::new(engine.clone(), config);

    let app = Router::new()
        .route("/", get(|| async { "an axum app; Bayeux is at /bayeux\n" }))
        .route("/api/hello", get(hello))
        .route_service("/bayeux", bayeux.clone())
        .route_service("/bayeux/{*rest}", bayeux);

    // Something to subscribe to.
    let publisher = engine.clone();
    tokio::spawn(async move {
        let mut every_second = tokio::time::interval(Duration::from_secs(1));
        loop {
            every_second.tick().await;
            let millis = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            let _ = publisher.publish_json("/time", &json!({ "epochMillis": millis }));
        }
    });

    let listener = tokio::net::TcpListener::bind("127.0.0.1:8081").await?;
    println!("http://{}/ (Bayeux at /bayeux)", listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = tokio::signal::ctrl_c().await;
            // Held connects are answered and WebSockets closed before axum drains connections.
            shutdown.shutdown();
        })
        .await
}
