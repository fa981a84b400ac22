//! The front door: one service that routes every sub-path of each mount point to a transport,
//! long-polling (POST) and callback-polling (JSONP GET) in `polling`, WebSocket (GET + upgrade)
//! in `ws`, after the origin check, the cross-site check of credentialed endpoints, CORS and the
//! request context (principal, browser cookie).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Instant;

use bayeux_core::{ConnectionQuota, Engine, RequestContext, TransportKind};
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use tokio::sync::watch;

use crate::config::{Endpoint, TransportConfig};
use crate::cookie::browser_id;
use crate::metrics::Metrics;
use crate::shared::{Body, Shared, plain, stopped};
use crate::{auth, polling, ws};

/// The Bayeux HTTP service: mount it in any hyper or tower (axum) server, or run it with
/// [`crate::serve`]. Cheap to clone.
///
/// Creating one spawns the session sweeper on the current tokio runtime; it stops when the
/// [`ShutdownHandle`] fires.
#[derive(Clone)]
pub struct BayeuxService {
    pub(crate) shared: Arc<Shared>,
}

/// Triggers graceful shutdown: held connects are answered with reconnect advice, WebSockets are
/// closed with 1001, the sweeper stops.
#[derive(Clone, Debug)]
pub struct ShutdownHandle {
    tx: Arc<watch::Sender<bool>>,
}

impl ShutdownHandle {
    /// Starts the shutdown.
    pub fn shutdown(&self) {
        let _ = self.tx.send(true);
    }

    /// Whether shutdown has started.
    pub fn is_shutdown(&self) -> bool {
        *self.tx.borrow()
    }
}

impl std::fmt::Debug for BayeuxService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BayeuxService")
            .field("endpoints", &self.shared.config.endpoints)
            .finish()
    }
}

impl BayeuxService {
    /// Builds the service and spawns the sweeper. Must be called inside a tokio runtime.
    pub fn new(engine: Engine, config: TransportConfig) -> (BayeuxService, ShutdownHandle) {
        let (tx, rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            engine,
            config,
            metrics: Metrics::default(),
            shutdown: rx,
        });
        let weak = Arc::downgrade(&shared);
        let period = shared.config.sweep_period;
        let mut stop = shared.shutdown.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stopped(&mut stop) => break,
                }
                let Some(shared) = weak.upgrade() else { break };
                let n = shared.engine.sweep(Instant::now());
                if n > 0 {
                    tracing::debug!(expired = n, "swept sessions");
                }
            }
        });
        (
            BayeuxService { shared },
            ShutdownHandle { tx: Arc::new(tx) },
        )
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.shared.engine
    }

    /// Transport counters.
    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// Prometheus text for the engine and transport counters.
    pub fn render_metrics(&self) -> String {
        self.shared.metrics.render(&self.shared.engine)
    }

    /// Whether `path` belongs to one of the service's mount points.
    pub fn matches(&self, path: &str) -> bool {
        self.endpoint_for(path).is_some()
    }

    fn endpoint_for(&self, path: &str) -> Option<&Endpoint> {
        self.shared
            .config
            .endpoints
            .iter()
            .find(|e| e.matches(path))
    }

    /// Handles one HTTP request.
    pub async fn handle<B>(&self, req: Request<B>) -> Response<Body>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        if let Some(resp) = crate::introspect::serve(&self.shared, &req) {
            return resp;
        }
        let Some(endpoint) = self.endpoint_for(req.uri().path()).cloned() else {
            return plain(StatusCode::NOT_FOUND, "not found");
        };
        let origin = req
            .headers()
            .get(header::ORIGIN)
            .and_then(|o| o.to_str().ok())
            .map(str::to_owned);
        if let Some(o) = &origin
            && !endpoint.origins.allows(o)
        {
            return plain(StatusCode::FORBIDDEN, "origin not allowed");
        }
        if endpoint.is_credentialed() && cross_site(req.headers(), origin.as_deref()) {
            self.shared
                .metrics
                .cross_site_refused
                .fetch_add(1, Ordering::Relaxed);
            return plain(
                StatusCode::FORBIDDEN,
                "cross-site request refused on a credentialed endpoint",
            );
        }
        let mut resp = if req.method() == Method::OPTIONS {
            preflight(req.headers())
        } else {
            self.dispatch(req, &endpoint).await
        };
        if let Some(o) = origin
            && let Ok(v) = HeaderValue::from_str(&o)
        {
            let h = resp.headers_mut();
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
            h.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
            h.append(header::VARY, HeaderValue::from_static("Origin"));
        }
        resp
    }

    async fn dispatch<B>(&self, mut req: Request<B>, endpoint: &Endpoint) -> Response<Body>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let is_ws = ws::is_upgrade_request(&req);
        let jsonp = req.method() == Method::GET && !is_ws;
        let kind = if is_ws {
            TransportKind::WebSocket
        } else if jsonp {
            TransportKind::CallbackPolling
        } else {
            TransportKind::LongPolling
        };
        if !self.shared.engine.config().transports.contains(&kind) {
            return plain(StatusCode::BAD_REQUEST, "transport not enabled");
        }
        if req.method() != Method::POST && req.method() != Method::GET {
            return plain(StatusCode::METHOD_NOT_ALLOWED, "use POST, GET or OPTIONS");
        }
        if jsonp && !endpoint.callback_polling_enabled() {
            return plain(
                StatusCode::FORBIDDEN,
                "callback-polling is not enabled on this endpoint",
            );
        }
        let mut ctx = self.context(&req, endpoint, kind);
        let deflate = self.shared.config.ws_permessage_deflate;
        if is_ws && req.extensions().get::<LeanConnection>().is_some() {
            // `serve`'s own HTTP/1.1 loop switches protocols itself and runs the socket on the
            // connection it already owns.
            return match ws::accept(req.headers(), deflate) {
                Ok((mut resp, compressed)) => {
                    ctx.websocket_deflate = compressed;
                    resp.extensions_mut().insert(AcceptedSocket(ctx));
                    resp
                }
                Err(e) => plain(StatusCode::BAD_REQUEST, &format!("bad upgrade: {e}")),
            };
        }
        if is_ws {
            // A host's hyper server: switch with hyper's upgrade, then run the socket on it.
            let resp = match ws::accept(req.headers(), deflate) {
                Ok((r, compressed)) => {
                    ctx.websocket_deflate = compressed;
                    r
                }
                Err(e) => return plain(StatusCode::BAD_REQUEST, &format!("bad upgrade: {e}")),
            };
            let upgrade = hyper::upgrade::on(&mut req);
            let shared = self.shared.clone();
            // The socket's task stays in the span of the request that opened it.
            crate::trace::spawn_in(tracing::Span::current(), async move {
                match upgrade.await {
                    Ok(upgraded) => {
                        let io = hyper_util::rt::TokioIo::new(upgraded);
                        ws::run_on(&shared, io, Vec::new(), ctx, None).await;
                    }
                    Err(e) => tracing::debug!(error = %e, "websocket upgrade failed"),
                }
            });
            return resp;
        }
        // Boxed: a held long poll then keeps only the polling future, not also this one's own
        // copy of the request and context (0.4 KiB less per idle long-polling session on glibc).
        if jsonp {
            Box::pin(polling::callback_polling(&self.shared, req, ctx)).await
        } else {
            Box::pin(polling::long_polling(&self.shared, req, ctx)).await
        }
    }

    /// Builds the request context: principal from the endpoint's authenticator, browser id
    /// from the cookie.
    fn context<B>(
        &self,
        req: &Request<B>,
        endpoint: &Endpoint,
        kind: TransportKind,
    ) -> RequestContext {
        let cfg = &self.shared.config;
        let mut ctx = RequestContext::new(kind).with_endpoint(endpoint.path.as_str());
        ctx.http2 = req.version() == http::Version::HTTP_2;
        if let Some(auth) = &endpoint.authenticator {
            let (parts, ()) = clone_parts(req);
            ctx.principal = auth.authenticate(&parts);
        }
        if let Some(b) = browser_id(req.headers(), cfg) {
            ctx.browser = Some(Arc::from(b));
        }
        // The connection's session quota, from `serve`; a WebSocket is a connection of its own
        // even when a host serves the upgrade. A reverse proxy shares its upstream HTTP
        // connections between many clients (nginx `keepalive`), so a forwarded HTTP request
        // is not bound by its connection's quota (a client that forges the header gains no more
        // than opening another connection would; the endpoint's budget still holds).
        let websocket = kind == TransportKind::WebSocket;
        let forwarded = req.headers().contains_key(header::FORWARDED)
            || req.headers().contains_key("x-forwarded-for");
        ctx.connection = if websocket || !forwarded {
            req.extensions()
                .get::<Arc<ConnectionQuota>>()
                .cloned()
                .or_else(|| {
                    websocket.then(|| ConnectionQuota::new(cfg.max_sessions_per_connection))
                })
        } else {
            None
        };
        ctx
    }
}

/// Marks a request read by `serve`'s lean HTTP/1.1 loop, which runs an accepted WebSocket on
/// its own connection instead of through hyper's upgrade.
#[derive(Clone, Copy)]
pub(crate) struct LeanConnection;

/// On a `101 Switching Protocols` answer to a [`LeanConnection`] request: the accepted
/// socket's request context.
#[derive(Clone)]
pub(crate) struct AcceptedSocket(pub RequestContext);

/// Whether a browser says a request to a credentialed endpoint comes from a page that may not
/// read it (see [`Endpoint::authenticator`]): marked as another origin's without an `Origin`
/// the endpoint allowed (an allowed one was checked by the caller; `null`, the origin of
/// sandboxed and `data:` documents, names no page and counts as none), or a script load from
/// anywhere but the same origin, which is how JSONP is read by another page.
fn cross_site(headers: &HeaderMap, origin: Option<&str>) -> bool {
    let foreign = auth::marked_foreign(headers);
    let origin = origin.filter(|o| !o.eq_ignore_ascii_case("null"));
    foreign && (origin.is_none() || auth::script_load(headers))
}

fn clone_parts<B>(req: &Request<B>) -> (http::request::Parts, ()) {
    let mut b = Request::builder()
        .method(req.method().clone())
        .uri(req.uri().clone())
        .version(req.version());
    if let Some(h) = b.headers_mut() {
        *h = req.headers().clone();
    }
    // Building from valid parts cannot fail.
    b.body(())
        .map(|r| r.into_parts())
        .unwrap_or_else(|_| Request::new(()).into_parts())
}

fn preflight(req_headers: &HeaderMap) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::NO_CONTENT;
    let h = r.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, OPTIONS"),
    );
    let allow_headers = req_headers
        .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .cloned()
        .unwrap_or_else(|| HeaderValue::from_static("Content-Type"));
    h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, allow_headers);
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("86400"),
    );
    r
}

impl<B> tower::Service<Request<B>> for BayeuxService
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { Ok(this.handle(req).await) })
    }
}

impl<B> hyper::service::Service<Request<B>> for BayeuxService
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn call(&self, req: Request<B>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { Ok(this.handle(req).await) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_paths() {
        let e = Endpoint::new("/cometd");
        assert!(e.matches("/cometd"));
        assert!(e.matches("/cometd/connect"));
        assert!(!e.matches("/cometdx"));
        assert!(!e.matches("/other"));
    }

    #[test]
    fn cross_site_rule() {
        let h = |pairs: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.append(*k, HeaderValue::from_static(v));
            }
            h
        };
        let script = |site| h(&[("sec-fetch-site", site), ("sec-fetch-dest", "script")]);
        // No fetch metadata: not a browser, or an old one; the Origin rules alone apply.
        assert!(!cross_site(&HeaderMap::new(), None));
        // Another page's script load or navigation: no Origin, credentials attached.
        assert!(cross_site(&script("same-site"), None));
        assert!(cross_site(&script("cross-site"), None));
        assert!(cross_site(&h(&[("sec-fetch-site", "cross-site")]), None));
        // `Origin: null` (sandboxed or data: documents) names no page that could be allowed.
        assert!(cross_site(
            &h(&[("sec-fetch-site", "cross-site")]),
            Some("null")
        ));
        // A script load with an Origin (`<script crossorigin>`) is still a script load.
        assert!(cross_site(&script("same-site"), Some("http://a.example")));
        // CORS and WebSocket requests name their (allowed) origin.
        assert!(!cross_site(
            &h(&[("sec-fetch-site", "cross-site"), ("sec-fetch-mode", "cors")]),
            Some("http://a.example")
        ));
        // The endpoint's own pages, and what the user typed.
        assert!(!cross_site(&script("same-origin"), None));
        assert!(!cross_site(&h(&[("sec-fetch-site", "none")]), None));
    }
}
