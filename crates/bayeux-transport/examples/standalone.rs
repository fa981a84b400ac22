//! A standalone Bayeux server: the engine, the transport service and `serve` on
//! `127.0.0.1:8080`, with a server-side publisher that sends a tick to `/time` every second.
//!
//! ```text
//! cargo run -p bayeux-transport --example standalone
//! ```
//!
//! Point a CometD client at `http://127.0.0.1:8080/cometd` and subscribe to `/time`; or, with
//! curl (the cookie jar keeps the `BAYEUX_BROWSER` cookie the server sets):
//!
//! ```text
//! curl -c jar -b jar -d '[{"channel":"/meta/handshake","version":"1.0","supportedConnectionTypes":["long-polling"]}]' \
//!      http://127.0.0.1:8080/cometd/handshake
//! ```
//!
//! Ctrl-C shuts down gracefully: held connects are answered, WebSockets are closed with 1001.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bayeux_core::{Engine, EngineConfig};
use bayeux_transport::{BayeuxService, TransportConfig, serve};
use serde_json::json;
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();

    let engine = Engine::new(EngineConfig::default());
    // Creating the service spawns the session sweeper; `shutdown` starts the graceful stop.
    let (service, shutdown) = BayeuxService::new(engine.clone(), TransportConfig::default());

    // A server-side publisher: the engine's in-process API, no session needed.
    let publisher = engine.clone();
    let ticks = shutdown.clone();
    tokio::spawn(async move {
        let mut every_second = tokio::time::interval(Duration::from_secs(1));
        while !ticks.is_shutdown() {
            every_second.tick().await;
            let millis = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            if let Err(e) = publisher.publish_json("/time", &json!({ "epochMillis": millis })) {
                tracing::warn!(error = %e, "publish failed");
            }
        }
    });

    let listener = TcpListener::bind("127.0.0.1:8080").await?;
    tracing::info!(
        "Bayeux endpoint at http://{}/cometd",
        listener.local_addr()?
    );

    let stop = async move {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutting down");
        // Answer held connects and close WebSockets before the accept loop stops.
        shutdown.shutdown();
    };
    // `serve` takes the Bayeux service twice: once for its limits and counters, once as the
    // hyper service to run (which could be a router wrapping it).
    serve(
        listener,
        service.clone(),
        service,
        stop,
        Duration::from_secs(5),
    )
    .await
}
