//! The transport tests' harness: an in-process server on `127.0.0.1:0` around this crate's
//! `BayeuxService`, and the waits and checks that depend on it. The client side (raw HTTP/1.1
//! and HTTP/2 requests, the cookie-keeping long-polling `Client`, raw TCP, WebSocket helpers,
//! bounded steps) is `bayeux-test-client`, re-exported here.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

pub use bayeux_test_client::*;

use bayeux_core::{Engine, EngineConfig};
use bayeux_transport::{BayeuxService, ShutdownHandle, TransportConfig, serve};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// "Answered promptly": far below any hold time the tests configure (10 s), with room for a
/// loaded CI machine running debug builds.
pub const PROMPT: Duration = Duration::from_millis(3000);

/// Waits (bounded by [`STEP`]) until the server holds `n` connects: a connect sent from a
/// spawned task is then known to have arrived, however loaded the machine.
pub async fn held_connects(engine: &Engine, n: u64) {
    let held = || {
        engine
            .stats()
            .held_connects
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let deadline = tokio::time::Instant::now() + STEP;
    while held() != n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} connects held, want {n}",
            held()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// An engine configuration whose connects are held `timeout_ms`.
pub fn engine_config(timeout_ms: u64) -> EngineConfig {
    EngineConfig {
        timeout_ms,
        ..EngineConfig::default()
    }
}

/// Asserts that `message` carries complete advice (`reconnect`, `interval`, `timeout`).
pub fn assert_full_advice(message: &Value) {
    let a = &message["advice"];
    assert!(
        a["reconnect"].is_string(),
        "advice.reconnect missing: {message}"
    );
    assert!(a["interval"].is_u64(), "advice.interval missing: {message}");
    assert!(a["timeout"].is_u64(), "advice.timeout missing: {message}");
}

/// A running server: `serve` on `127.0.0.1:0` with the Bayeux service.
pub struct Server {
    pub addr: SocketAddr,
    pub svc: BayeuxService,
    pub shutdown: ShutdownHandle,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl Server {
    /// Starts a server with a new engine.
    pub async fn start(engine: EngineConfig, config: TransportConfig) -> Server {
        Server::with_engine(Engine::new(engine), config).await
    }

    /// Starts a server around `engine`.
    pub async fn with_engine(engine: Engine, config: TransportConfig) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (svc, shutdown) = BayeuxService::new(engine, config);
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(
            listener,
            svc.clone(),
            svc.clone(),
            async move {
                let _ = rx.await;
            },
            Duration::from_secs(2),
        ));
        Server {
            addr,
            svc,
            shutdown,
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        self.svc.engine()
    }

    /// A long-polling client that keeps cookies.
    pub fn client(&self) -> Client {
        Client::new(self.addr)
    }

    /// Stops accepting (without firing the [`ShutdownHandle`]) and waits for `serve` to return.
    pub async fn stop_serving(&mut self) -> std::io::Result<()> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        match self.task.take() {
            Some(t) => step("serve returns", t).await.expect("serve task panicked"),
            None => Ok(()),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.shutdown();
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}
