//! The Bayeux endpoint on 127.0.0.1:8080/cometd, with the ack extension and a server-side
//! publish; Ctrl-C stops it gracefully. `cargo run -p bayeux-transport --example embedding`
use bayeux_core::{AckExtension, Engine, EngineConfig};
use bayeux_transport::{BayeuxService, TransportConfig, serve};
use std::sync::Arc;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let engine = Engine::new(EngineConfig::default());
    engine.add_extension(Arc::new(AckExtension));
    // Server-side publishing: serialized once, shared by every subscriber.
    engine
        .publish_json("/news/today", &serde_json::json!({"headline": "hi"}))
        .ok();
    let (service, shutdown) = BayeuxService::new(engine, TransportConfig::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
    let stop = async move {
        tokio::signal::ctrl_c().await.ok();
        shutdown.shutdown();
    };
    serve(
        listener,
        service.clone(),
        service,
        stop,
        std::time::Duration::from_secs(5),
    )
    .await
}
