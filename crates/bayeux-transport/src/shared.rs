//! What the transports share: the state every request and socket sees, the shutdown signal,
//! and the plain HTTP responses. The two transports (`polling`, `ws`) and the service that
//! routes to them build on this module and never on each other.

use bayeux_core::Engine;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::Full;
use tokio::sync::watch;

use crate::config::TransportConfig;
use crate::metrics::Metrics;

/// The response body type of the service.
pub type Body = Full<Bytes>;

/// The state shared by the service, its transports and its sockets.
pub(crate) struct Shared {
    pub engine: Engine,
    pub config: TransportConfig,
    pub metrics: Metrics,
    pub shutdown: watch::Receiver<bool>,
}

/// Completes when shutdown has been signalled.
pub(crate) async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// A plain-text response (errors before Bayeux is involved: routing, methods, upgrades).
pub(crate) fn plain(status: StatusCode, text: &str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(text.to_owned())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain;charset=utf-8"),
    );
    r
}

/// A JSON response that no cache keeps.
pub(crate) fn json_response(status: StatusCode, body: Bytes) -> Response<Body> {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json;charset=utf-8"),
    );
    no_cache(r.headers_mut());
    r
}

/// Marks a response as not to be cached (Bayeux replies are never reusable).
pub(crate) fn no_cache(h: &mut HeaderMap) {
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-store"),
    );
}
