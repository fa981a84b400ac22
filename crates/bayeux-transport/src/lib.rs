//! # bayeux-transport
//!
//! The network side of the Bayeux engine: `long-polling` (POST, JSON or form-encoded),
//! `callback-polling` (JSONP GET) and `websocket` on hyper 1.x and tokio, all on one port and
//! one path (every sub-path of a mount point is routed to the engine, as the CometD JavaScript
//! client expects).
//!
//! Use it two ways: [`serve`] for a standalone server, or mount [`BayeuxService`] (a hyper and
//! a tower `Service`) in your own router. This crate owns every timer of the system: held
//! connects, the session sweeper, WebSocket keep-alives and graceful shutdown.
//!
//! It does not know about calls, users or any application: authentication comes in through an
//! [`auth::Authenticator`], authorization through the core's `SecurityPolicy`.
//!
//! With the cargo feature `tls`, `serve_tls` serves HTTPS (rustls, ALPN `h2` and `http/1.1`)
//! with a `TlsConfig` read from PEM files and reloadable while serving.
//!
//! A standalone server (`examples/embedding.rs`, the same program as the repository README's
//! embedding example, which a test keeps identical):
//!
#![doc = concat!("```rust,no_run\n", include_str!("../examples/embedding.rs"), "```")]
//!
//! Mounted in an axum router instead, with the graceful stop left to the host:
//!
//! ```no_run
//! # async fn f() -> std::io::Result<()> {
//! use bayeux_core::{Engine, EngineConfig};
//! use bayeux_transport::{BayeuxService, TransportConfig};
//!
//! let (service, _shutdown) =
//!     BayeuxService::new(Engine::new(EngineConfig::default()), TransportConfig::default());
//! // The service routes on the full path (`/cometd/handshake`, ...): `route_service` keeps it,
//! // where `nest_service` would strip the prefix.
//! let app: axum::Router = axum::Router::new()
//!     .route_service("/cometd", service.clone())
//!     .route_service("/cometd/{*rest}", service);
//! # let _ = app; Ok(()) }
//! ```

pub mod auth;
pub mod config;
mod conn;
mod cookie;
pub mod deflate;
mod h1;
pub mod http1;
mod introspect;
pub mod metrics;
mod polling;
mod server;
mod service;
mod shared;
mod tls;
mod trace;
mod ws;
pub mod wsframe;

pub use config::{CookieConfig, Endpoint, Introspection, Origins, SameSite, TransportConfig};
pub use cookie::cookie_value;
pub use metrics::Metrics;
#[cfg(feature = "tls")]
pub use server::serve_tls;
pub use server::{HostService, serve};
pub use service::{BayeuxService, ShutdownHandle};
pub use shared::Body;
#[cfg(feature = "tls")]
pub use tls::TlsConfig;

/// The wall clock, in milliseconds since the Unix epoch: what the core's timesync extension
/// reports as server time (`bayeux_core::TimesyncExtension::new(bayeux_transport::epoch_ms)`).
/// The core reads no clock itself; this crate owns time.
pub fn epoch_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
