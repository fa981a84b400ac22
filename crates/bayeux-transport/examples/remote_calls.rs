//! Remote calls: a Bayeux server at `/cometd` whose `/service/*` handlers answer the CometD
//! client's `remoteCall(target, data, timeout, callback)`.
//!
//! ```text
//! cargo run -p bayeux-transport --example remote_calls -- 127.0.0.1:8080
//! ```
//!
//! - `/service/echo` answers with the request's data;
//! - `/service/fail` answers with a failure whose data is the request's data;
//! - `/service/slow` answers with the request's data after `data.delayMs` milliseconds, from a
//!   tokio task: an answer later than the handler's timeout (2 s) never comes, and the server
//!   answers `408::remote_call_timeout` instead (at the first sweep after the deadline, so
//!   within 3 s).
//!
//! From a browser or Node, with the CometD JavaScript client:
//!
//! ```text
//! cometd.remoteCall("echo", { hello: "world" }, 5000, (reply) => {
//!     // reply.successful === true, reply.data => { hello: "world" }
//! });
//! cometd.remoteCall("fail", { why: "test" }, 5000, (reply) => {
//!     // reply.successful === false, reply.data => { why: "test" }
//! });
//! ```
//!
//! It prints `listening on http://ADDR` once it accepts connections; Ctrl-C (or SIGTERM) stops it
//! gracefully.

use std::time::Duration;

use bayeux_core::{Engine, EngineConfig};
use bayeux_transport::{BayeuxService, TransportConfig, serve};
use tokio::net::TcpListener;

/// How long `/service/slow` may take before the server answers with a timeout.
const SLOW_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest delay `/service/slow` accepts: anything above is cut to it.
const MAX_DELAY_MS: u64 = 60_000;

fn services(engine: &Engine) -> Result<(), bayeux_core::Error> {
    let timeout = Duration::from_secs(5);
    engine.on_remote_call("/service/echo", timeout, |call, responder| {
        responder.success(call.data());
    })?;
    engine.on_remote_call("/service/fail", timeout, |call, responder| {
        responder.failure(call.data());
    })?;
    engine.on_remote_call("/service/slow", SLOW_TIMEOUT, |call, responder| {
        // Handlers must not block: the work moves to a task with the responder.
        let delay = call
            .data_as::<serde_json::Value>()
            .and_then(|d| d.get("delayMs").and_then(serde_json::Value::as_u64))
            .unwrap_or(0)
            .min(MAX_DELAY_MS);
        let data = call.data().to_owned();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(delay)).await;
            // False when the call has already timed out: nothing more reaches the client.
            if !responder.success(&data) {
                tracing::info!(delay, "answer after the timeout, dropped");
            }
        });
    })?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();

    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8080".to_owned());
    let engine = Engine::new(EngineConfig::default());
    services(&engine)?;
    // The service's sweeper also times out unanswered remote calls (`Engine::sweep`).
    let (service, shutdown) = BayeuxService::new(engine, TransportConfig::default());

    let listener = TcpListener::bind(&addr).await?;
    println!("listening on http://{}/cometd", listener.local_addr()?);

    let stop = async move {
        wait_for_stop().await;
        shutdown.shutdown();
    };
    serve(
        listener,
        service.clone(),
        service,
        stop,
        Duration::from_secs(5),
    )
    .await?;
    Ok(())
}

/// Ctrl-C, or SIGTERM on Unix (how test harnesses stop it).
async fn wait_for_stop() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
