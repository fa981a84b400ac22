//! The HTTP side: one service that routes every sub-path of each mount point to the engine over
//! long-polling (POST), callback-polling (JSONP GET) or WebSocket (GET + upgrade), with CORS and
//! the browser cookie.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Instant;

use bayeux_core::{
    Engine, Error as CoreError, Message, RequestContext, TransportKind, decode_batch, join_array,
    random_hex,
};
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use tokio::sync::watch;

use crate::config::{Endpoint, SameSite, TransportConfig};
use crate::metrics::Metrics;
use crate::ws;

/// How much of an oversized body is read and discarded before answering 413, as a multiple of
/// the body limit (see `read_body`).
const DRAIN_FACTOR: usize = 4;

/// The response body type of the service.
pub type Body = Full<Bytes>;

pub(crate) struct Shared {
    pub engine: Engine,
    pub config: TransportConfig,
    pub metrics: Metrics,
    pub shutdown: watch::Receiver<bool>,
}

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
        let is_ws = hyper_tungstenite::is_upgrade_request(&req);
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
        let ctx = self.context(&req, endpoint, kind);
        if is_ws {
            let config = ws::socket_config(&self.shared.config);
            return match hyper_tungstenite::upgrade(&mut req, Some(config)) {
                Ok((resp, socket)) => {
                    let shared = self.shared.clone();
                    tokio::spawn(ws::run(shared, socket, ctx));
                    resp
                }
                Err(e) => plain(StatusCode::BAD_REQUEST, &format!("bad upgrade: {e}")),
            };
        }
        if jsonp {
            self.callback_polling(req, ctx).await
        } else {
            self.long_polling(req, ctx).await
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
        if let Some(b) =
            cookie_value(req.headers(), &cfg.cookie.name).filter(|b| valid_browser_id(b))
        {
            ctx.browser = Some(Arc::from(b));
        }
        ctx
    }

    /// A request without the browser cookie that handshakes gets a new browser id: the session
    /// is bound to it and the cookie is set on the response. Requests without the cookie that
    /// do not handshake stay unbound (clients that keep no cookies).
    fn mint_browser(&self, ctx: &mut RequestContext, batch: &[Message]) -> Option<HeaderValue> {
        if ctx.browser.is_some()
            || !batch
                .iter()
                .any(|m| m.channel.as_deref() == Some("/meta/handshake"))
        {
            return None;
        }
        let id = random_hex(16);
        ctx.browser = Some(Arc::from(id.as_str()));
        HeaderValue::from_str(&set_cookie(&self.shared.config, &id)).ok()
    }

    /// Reads a request body of at most `max_body_bytes`, within `body_read_timeout`.
    ///
    /// A body over the limit gets `413` with `413::message_too_large`. So that the client can
    /// finish sending and read that answer (closing a socket with unread data makes the kernel
    /// reset it, and the client sees a broken pipe instead of the 413), the rest of an oversized
    /// body is read and discarded, up to [`DRAIN_FACTOR`] times the limit; past that, or when the
    /// declared length already goes past it, the 413 is sent at once with `Connection: close`.
    async fn read_body<B>(&self, body: B) -> Result<Bytes, Response<Body>>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let limit = self.shared.config.max_body_bytes;
        let drain_limit = limit.saturating_mul(DRAIN_FACTOR);
        let too_large = |close: bool| {
            let mut r = self.bayeux_error(&CoreError::TooLarge { limit });
            if close {
                r.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            r
        };
        let declared = body.size_hint().exact();
        if declared.is_some_and(|n| n > drain_limit as u64) {
            return Err(too_large(true));
        }
        let read = async move {
            let mut body = std::pin::pin!(body);
            // A body that arrives as one frame (the usual case) is kept as is, without a copy;
            // nothing is reserved from the declared length, which costs the client nothing to
            // claim.
            let mut first: Option<Bytes> = None;
            let mut rest = bytes::BytesMut::new();
            let mut seen = 0usize;
            while let Some(frame) = body.frame().await {
                let Ok(frame) = frame else {
                    return Err(plain(StatusCode::BAD_REQUEST, "could not read the body"));
                };
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                seen = seen.saturating_add(data.len());
                if seen > drain_limit {
                    return Err(too_large(true));
                } else if seen > limit {
                    first = None;
                    rest = bytes::BytesMut::new();
                } else if first.is_none() && rest.is_empty() {
                    first = Some(data);
                } else {
                    if let Some(f) = first.take() {
                        rest.extend_from_slice(&f);
                    }
                    rest.extend_from_slice(&data);
                }
            }
            if seen > limit {
                Err(too_large(false))
            } else {
                Ok(first.unwrap_or_else(|| rest.freeze()))
            }
        };
        match tokio::time::timeout(self.shared.config.body_read_timeout, read).await {
            Ok(r) => r,
            Err(_) => Err(plain(StatusCode::REQUEST_TIMEOUT, "request body timed out")),
        }
    }

    async fn long_polling<B>(&self, req: Request<B>, mut ctx: RequestContext) -> Response<Body>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        self.shared
            .metrics
            .http_requests
            .fetch_add(1, Ordering::Relaxed);
        let form = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        let body = match Box::pin(self.read_body(req.into_body())).await {
            Ok(b) => b,
            Err(resp) => return resp,
        };
        // Clients (curl among them) often label a JSON body as form-encoded: a body that starts
        // like JSON is read as JSON whatever its content type says.
        let looks_json = body
            .iter()
            .find(|b| !b.is_ascii_whitespace())
            .is_some_and(|b| *b == b'[' || *b == b'{');
        let batch = if form && !looks_json {
            self.decode_form(&body)
        } else {
            decode_batch(&body, &self.shared.engine.config().limits)
        };
        match batch {
            Ok(batch) => {
                let cookie = self.mint_browser(&mut ctx, &batch);
                let out = self.run_batch(&ctx, batch).await;
                let mut r = json_response(StatusCode::OK, out);
                if let Some(c) = cookie {
                    r.headers_mut().append(header::SET_COOKIE, c);
                }
                r
            }
            Err(e) => self.bayeux_error(&e),
        }
    }

    /// `message=` parameters (each a message or an array), as the spec allows for long-polling.
    fn decode_form(&self, body: &[u8]) -> Result<Vec<Message>, CoreError> {
        let limits = self.shared.engine.config().limits;
        let mut all = Vec::new();
        for (k, v) in form_urlencoded::parse(body) {
            if k == "message" {
                all.extend(decode_batch(v.as_bytes(), &limits)?);
                if all.len() > limits.max_messages {
                    return Err(CoreError::TooManyMessages {
                        limit: limits.max_messages,
                    });
                }
            }
        }
        if all.is_empty() {
            return Err(CoreError::Malformed("no message parameter".into()));
        }
        Ok(all)
    }

    async fn callback_polling<B>(
        &self,
        req: Request<B>,
        mut ctx: RequestContext,
    ) -> Response<Body> {
        self.shared
            .metrics
            .http_requests
            .fetch_add(1, Ordering::Relaxed);
        let query = req.uri().query().unwrap_or("");
        let mut callback = "jsonpcallback".to_owned();
        let mut messages = Vec::new();
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            if k == self.shared.config.jsonp_parameter.as_str() {
                callback = v.into_owned();
            } else if k == "message" {
                messages.push(v.into_owned());
            }
        }
        if !valid_callback(&callback) {
            return plain(StatusCode::BAD_REQUEST, "invalid JSONP callback name");
        }
        let limits = self.shared.engine.config().limits;
        let mut batch = Vec::new();
        for m in &messages {
            match decode_batch(m.as_bytes(), &limits) {
                Ok(b) => batch.extend(b),
                Err(e) => return self.bayeux_error(&e),
            }
        }
        if batch.len() > limits.max_messages {
            return self.bayeux_error(&CoreError::TooManyMessages {
                limit: limits.max_messages,
            });
        }
        if batch.is_empty() {
            return self.bayeux_error(&CoreError::Malformed("no message parameter".into()));
        }
        let cookie = self.mint_browser(&mut ctx, &batch);
        let out = self.run_batch(&ctx, batch).await;
        let mut body = Vec::with_capacity(out.len() + callback.len() + 3);
        body.extend_from_slice(callback.as_bytes());
        body.push(b'(');
        body.extend_from_slice(&out);
        body.extend_from_slice(b");");
        let mut r = Response::new(Full::new(Bytes::from(body)));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/javascript;charset=utf-8"),
        );
        no_cache(r.headers_mut());
        if let Some(c) = cookie {
            r.headers_mut().append(header::SET_COOKIE, c);
        }
        r
    }

    /// An HTTP error whose body is a Bayeux failure, for a request the codec refused: 413 for
    /// the size limits, 400 otherwise.
    fn bayeux_error(&self, e: &CoreError) -> Response<Body> {
        let status = match e {
            CoreError::TooLarge { .. } | CoreError::TooManyMessages { .. } => {
                self.shared.metrics.oversize.fetch_add(1, Ordering::Relaxed);
                StatusCode::PAYLOAD_TOO_LARGE
            }
            _ => StatusCode::BAD_REQUEST,
        };
        json_response(status, self.shared.engine.refusal(e).array().clone())
    }

    /// Runs a batch, holding its `/meta/connect` if the engine says so, and returns the JSON
    /// array to send.
    async fn run_batch(&self, ctx: &RequestContext, batch: Vec<Message>) -> Bytes {
        let engine = &self.shared.engine;
        let metrics = &self.shared.metrics;
        metrics.add_in(batch.len());
        let mut out = engine.handle_batch(ctx, batch, Instant::now());
        if let Some(hold) = out.hold.take() {
            let mut shutdown = self.shared.shutdown.clone();
            let deadline = tokio::time::Instant::from_std(hold.deadline());
            tokio::select! {
                _ = hold.wake() => {}
                _ = tokio::time::sleep_until(deadline) => {}
                _ = stopped(&mut shutdown) => {}
            }
            out.replies.extend(engine.finish_hold(hold, Instant::now()));
        }
        metrics.add_out(out.replies.len());
        join_array(&out.replies)
    }
}

/// Completes when shutdown has been signalled.
pub(crate) async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
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

fn valid_browser_id(v: &str) -> bool {
    !v.is_empty() && v.len() <= 64 && v.bytes().all(|b| b.is_ascii_alphanumeric())
}

fn valid_callback(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == '$')
        && name.len() <= 64
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$' || c == '.')
}

fn set_cookie(cfg: &TransportConfig, value: &str) -> String {
    let c = &cfg.cookie;
    let mut s = format!("{}={}; Path={}", c.name, value, c.path);
    if c.http_only {
        s.push_str("; HttpOnly");
    }
    if c.secure {
        s.push_str("; Secure");
    }
    match c.same_site {
        SameSite::Unset => {}
        SameSite::Lax => s.push_str("; SameSite=Lax"),
        SameSite::Strict => s.push_str("; SameSite=Strict"),
        SameSite::None => s.push_str("; SameSite=None"),
    }
    s
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
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

fn no_cache(h: &mut HeaderMap) {
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-store"),
    );
}

fn json_response(status: StatusCode, body: Bytes) -> Response<Body> {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json;charset=utf-8"),
    );
    no_cache(r.headers_mut());
    r
}

pub(crate) fn plain(status: StatusCode, text: &str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(text.to_owned())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain;charset=utf-8"),
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
    fn callback_names() {
        for ok in ["cb", "jsonpcallback", "_x1", "$a.b"] {
            assert!(valid_callback(ok), "{ok}");
        }
        for bad in ["", "1a", "a-b", "a(b)", "alert(1);x", &"a".repeat(65)] {
            assert!(!valid_callback(bad), "{bad}");
        }
    }

    #[test]
    fn cookies() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; BAYEUX_BROWSER=abc ; c=3"),
        );
        assert_eq!(cookie_value(&h, "BAYEUX_BROWSER"), Some("abc"));
        assert_eq!(cookie_value(&h, "x"), None);
    }

    #[test]
    fn endpoint_paths() {
        let e = Endpoint::new("/cometd");
        assert!(e.matches("/cometd"));
        assert!(e.matches("/cometd/connect"));
        assert!(!e.matches("/cometdx"));
        assert!(!e.matches("/other"));
    }
}
