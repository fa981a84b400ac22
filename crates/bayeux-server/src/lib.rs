//! # bayeux-server
//!
//! The standalone notification server: the Bayeux engine with its transports (and the voice API
//! emulation), `/healthz` and `/metrics`, configured by a TOML file whose every setting has a
//! default. With a Redis URL (`--redis`, `[redis] url`) several nodes form one server through
//! the `bayeux-redis` backplane. The binary is `bayeux-server`; this library lets tests and
//! embedders build the same application in-process.
//!
//! Settings come from flags, `BAYEUX_*` environment variables, the file and the defaults, in
//! that order of precedence ([`config`], [`ServerConfig::from_sources`]). Cargo features, all
//! on by default: `voice` (the voice API), `redis` (the backplane), `tls` (HTTPS with
//! `App::run_tls`) and `jemalloc` (the binary's allocator).
//!
//! The application in-process, on a free port, answering its health check:
//!
//! ```
//! use bayeux_server::{App, ServerConfig};
//! use http_body_util::BodyExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), String> {
//! let config: ServerConfig = toml::from_str("[bayeux]\ntimeout_ms = 20000").map_err(|e| e.to_string())?;
//! let app = App::build_for(&config, "127.0.0.1:8080".parse().unwrap())?;
//! let reply = app.handle(http::Request::get("/healthz").body(String::new()).unwrap()).await;
//! assert_eq!(reply.status(), 200);
//! let body = reply.into_body().collect().await.unwrap().to_bytes();
//! assert_eq!(&body[..], b"ok\n");
//! // Serving it: `app.run(listener, stop_signal, grace).await` (see the binary's main.rs).
//! # app.shutdown_handle().shutdown();
//! # Ok(()) }
//! ```

pub mod config;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bayeux_core::{AckExtension, Engine, TimesyncExtension};
#[cfg(feature = "redis")]
use bayeux_redis::RedisBackplane;
#[cfg(feature = "voice")]
use bayeux_transport::auth::Authenticator;
use bayeux_transport::{BayeuxService, Body, ShutdownHandle};
#[cfg(feature = "voice")]
use bayeux_voice::{VoiceApi, VoiceConfig};
use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use tokio::net::TcpListener;

#[cfg(feature = "tls")]
pub use bayeux_transport::TlsConfig;
pub use config::ServerConfig;

/// The TLS settings `run_on` may serve with (nothing exists without the `tls` feature).
#[cfg(feature = "tls")]
type Tls = bayeux_transport::TlsConfig;
#[cfg(not(feature = "tls"))]
enum Tls {}

/// Appends more Prometheus text to every `/metrics` answer (see [`App::with_metrics`]).
type MetricsSource = Arc<dyn Fn(&mut String) + Send + Sync>;

/// The assembled application: one hyper service routing every path.
#[derive(Clone)]
pub struct App {
    bayeux: BayeuxService,
    shutdown: ShutdownHandle,
    #[cfg(feature = "voice")]
    voice: Option<VoiceApi>,
    #[cfg(feature = "redis")]
    backplane: Option<Arc<RedisBackplane>>,
    extra_metrics: Vec<MetricsSource>,
    /// Whether the public port serves `/metrics` (not when an admin listener does).
    public_metrics: bool,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App").field("bayeux", &self.bayeux).finish()
    }
}

impl App {
    /// Builds the engine, its extensions, transports and the voice API, for a server reached at
    /// the configured listen address. Must run inside a tokio runtime.
    pub fn build(config: &ServerConfig) -> Result<App, String> {
        App::build_for(config, config.listen)
    }

    /// As [`App::build`], for a server actually listening on `addr` (used for the voice API's
    /// URIs when the configuration does not set `voice.public_base_url`).
    pub fn build_for(config: &ServerConfig, addr: SocketAddr) -> Result<App, String> {
        config.check_features()?;
        let engine = Engine::new(config.engine()?);
        // Before anything creates sessions: the backplane learns local interest from the
        // engine's listener events. Redis being unreachable does not fail the start.
        #[cfg(feature = "redis")]
        let backplane = if config.redis.enabled() {
            Some(RedisBackplane::start(&engine, &config.redis).map_err(|e| e.to_string())?)
        } else {
            None
        };
        engine.add_extension(Arc::new(AckExtension));
        engine.add_extension(Arc::new(TimesyncExtension::new(bayeux_transport::epoch_ms)));
        #[cfg_attr(not(feature = "voice"), allow(unused_mut))]
        let mut transport = config.transport()?;
        #[cfg(not(feature = "voice"))]
        let _ = addr;
        #[cfg(feature = "voice")]
        let voice = if config.voice_enabled {
            let mut vc = config.voice.clone();
            if vc.public_base_url == VoiceConfig::default().public_base_url {
                let scheme = if config.tls.enabled() {
                    "https"
                } else {
                    "http"
                };
                vc.public_base_url = format!("{scheme}://{addr}");
            }
            let voice = VoiceApi::new(vc, engine.clone()).map_err(|e| format!("voice: {e}"))?;
            engine.set_security_policy(Arc::new(voice.security_policy()));
            let auth: Arc<dyn Authenticator> = Arc::new(voice.authenticator());
            // Users who authenticate on the open endpoint too get their own notifications there;
            // anonymous sessions stay allowed on it.
            for e in &mut transport.endpoints {
                e.authenticator = Some(auth.clone());
            }
            transport.endpoints.push(voice.notifications_endpoint());
            Some(voice)
        } else {
            None
        };
        let (bayeux, shutdown) = BayeuxService::new(engine, transport);
        Ok(App {
            bayeux,
            shutdown,
            #[cfg(feature = "voice")]
            voice,
            #[cfg(feature = "redis")]
            backplane,
            extra_metrics: Vec::new(),
            public_metrics: config.admin.listen.is_none(),
        })
    }

    /// Adds `source` to `/metrics`: it appends its own Prometheus text (with `# HELP` and
    /// `# TYPE` lines) on every scrape. The binary adds its allocator's figures this way, since
    /// only it knows which allocator it runs on. Before [`App::run`]: the app is cloned per
    /// connection.
    pub fn with_metrics(mut self, source: impl Fn(&mut String) + Send + Sync + 'static) -> App {
        self.extra_metrics.push(Arc::new(source));
        self
    }

    /// The voice API, when enabled.
    #[cfg(feature = "voice")]
    pub fn voice(&self) -> Option<&VoiceApi> {
        self.voice.as_ref()
    }

    /// The Redis backplane, when configured.
    #[cfg(feature = "redis")]
    pub fn backplane(&self) -> Option<&Arc<RedisBackplane>> {
        self.backplane.as_ref()
    }

    /// The engine (to publish from the server side).
    pub fn engine(&self) -> &Engine {
        self.bayeux.engine()
    }

    /// The Bayeux service.
    pub fn bayeux(&self) -> &BayeuxService {
        &self.bayeux
    }

    /// Starts graceful shutdown.
    pub fn shutdown_handle(&self) -> &ShutdownHandle {
        &self.shutdown
    }

    /// Routes one request, inside a `request` span (at `debug`: method, path, HTTP version, and
    /// the Bayeux transport, client id prefix and user once the batch names its session) that
    /// the transport's and the voice API's events of this request belong to, and logs its end
    /// at `debug` (status, milliseconds taken, a held connect's hold included): an access log
    /// with `--log-level debug` (or `bayeux_server=debug`).
    pub fn handle<B>(&self, req: Request<B>) -> impl Future<Output = Response<Body>> + Send + '_
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        use futures_util::FutureExt as _;
        use tracing::Instrument as _;
        let span = tracing::debug_span!(
            "request",
            method = %req.method(),
            path = %req.uri().path(),
            version = ?req.version(),
            transport = tracing::field::Empty,
            client_id = tracing::field::Empty,
            user = tracing::field::Empty,
        );
        // `map`, not an async block: a held connect keeps the routing future once, plus the
        // start time and the span.
        let start = std::time::Instant::now();
        self.route(req)
            .map(move |resp| {
                tracing::debug!(
                    status = resp.status().as_u16(),
                    ms = start.elapsed().as_millis() as u64,
                    "request done"
                );
                resp
            })
            .instrument(span)
    }

    async fn route<B>(&self, req: Request<B>) -> Response<Body>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let path = req.uri().path();
        if path == "/healthz" || path == "/readyz" || (path == "/metrics" && self.public_metrics) {
            return self.admin_response(path);
        }
        match path {
            p if self.bayeux.matches(p) => self.bayeux.handle(req).await,
            #[cfg(feature = "voice")]
            p if self.voice.as_ref().is_some_and(|v| v.matches(p)) => match &self.voice {
                // Boxed: the voice future is large and would size every held connect.
                Some(v) => Box::pin(v.handle(req)).await,
                None => text(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
            },
            _ => text(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
        }
    }

    /// The operators' endpoints, on the public port or the admin listener: `/healthz`
    /// (liveness: 200 until shutdown starts), `/readyz` (readiness: 200 while serving and, with a
    /// Redis backplane, while Redis is connected; 503 with the reason otherwise) and `/metrics`
    /// (Prometheus text). Anything else: 404.
    pub fn admin_response(&self, path: &str) -> Response<Body> {
        match path {
            "/healthz" => {
                if self.shutdown.is_shutdown() {
                    text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "text/plain",
                        "shutting down\n".into(),
                    )
                } else {
                    text(StatusCode::OK, "text/plain", "ok\n".into())
                }
            }
            "/readyz" => match self.not_ready() {
                Some(reason) => text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    format!("not ready: {reason}\n"),
                ),
                None => text(StatusCode::OK, "text/plain", "ready\n".into()),
            },
            "/metrics" => {
                let mut body = self.bayeux.render_metrics();
                #[cfg(feature = "redis")]
                if let Some(bp) = &self.backplane {
                    body.push_str(&bp.render_metrics());
                }
                if let Some(rss) = process_resident_bytes() {
                    write_gauge(
                        &mut body,
                        "process_resident_memory_bytes",
                        "Resident set size of the server process (VmRSS).",
                        rss,
                    );
                }
                for source in &self.extra_metrics {
                    source(&mut body);
                }
                text(StatusCode::OK, "text/plain; version=0.0.4", body)
            }
            _ => text(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
        }
    }

    /// Why this node should not get new clients now, if it should not.
    fn not_ready(&self) -> Option<&'static str> {
        if self.shutdown.is_shutdown() {
            return Some("shutting down");
        }
        #[cfg(feature = "redis")]
        if self.backplane.as_ref().is_some_and(|bp| !bp.is_connected()) {
            return Some("redis backplane not connected");
        }
        None
    }

    /// Serves [`App::admin_response`] on `listener` (cleartext HTTP/1.1 and HTTP/2) until `stop`
    /// completes. At most 64 connections at once (more are closed at accept), each request's
    /// headers within 10 s; request bodies are not read.
    pub async fn serve_admin(
        self,
        listener: TcpListener,
        stop: impl Future<Output = ()>,
    ) -> std::io::Result<()> {
        const MAX_ADMIN_CONNECTIONS: usize = 64;
        let limit = Arc::new(tokio::sync::Semaphore::new(MAX_ADMIN_CONNECTIONS));
        let mut builder =
            hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
        builder
            .http1()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(Duration::from_secs(10));
        let builder = Arc::new(builder);
        tokio::pin!(stop);
        loop {
            let (stream, _) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "admin accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = &mut stop => return Ok(()),
            };
            let Ok(permit) = limit.clone().try_acquire_owned() else {
                continue;
            };
            let app = self.clone();
            let builder = builder.clone();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                        let resp = app.admin_response(req.uri().path());
                        async move { Ok::<_, Infallible>(resp) }
                    });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = tokio::time::timeout(
                    Duration::from_secs(60),
                    builder.serve_connection(io, service),
                )
                .await;
                drop(permit);
            });
        }
    }

    /// Serves on `listener` until `stop` completes, then shuts down gracefully.
    pub async fn run(
        self,
        listener: TcpListener,
        stop: impl Future<Output = ()>,
        grace: Duration,
    ) -> std::io::Result<()> {
        self.run_on(listener, None, stop, grace).await
    }

    /// As [`App::run`], over TLS with `tls` (whose [`bayeux_transport::TlsConfig::reload`]
    /// takes effect for the connections accepted afterwards).
    #[cfg(feature = "tls")]
    pub async fn run_tls(
        self,
        listener: TcpListener,
        tls: bayeux_transport::TlsConfig,
        stop: impl Future<Output = ()>,
        grace: Duration,
    ) -> std::io::Result<()> {
        self.run_on(listener, Some(tls), stop, grace).await
    }

    async fn run_on(
        self,
        listener: TcpListener,
        tls: Option<Tls>,
        stop: impl Future<Output = ()>,
        grace: Duration,
    ) -> std::io::Result<()> {
        let shutdown = self.shutdown.clone();
        let bayeux = self.bayeux.clone();
        #[cfg(feature = "redis")]
        let backplane = self.backplane.clone();
        let stop = async move {
            stop.await;
            shutdown.shutdown();
        };
        let result = match tls {
            None => bayeux_transport::serve(listener, bayeux, self, stop, grace).await,
            #[cfg(feature = "tls")]
            Some(tls) => {
                bayeux_transport::serve_tls(listener, tls, bayeux, self, stop, grace).await
            }
        };
        #[cfg(feature = "redis")]
        if let Some(bp) = backplane {
            bp.shutdown();
        }
        result
    }
}

/// Appends one gauge in the Prometheus text format: its `# HELP` and `# TYPE` lines and value.
pub fn write_gauge(out: &mut String, name: &str, help: &str, value: u64) {
    use std::fmt::Write as _;
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
    );
}

/// This process's resident set size in bytes, from `/proc/self/status` (`VmRSS`, in kB there,
/// so no page size is needed); `None` where there is no procfs. The kernel keeps the figure as
/// a counter, so reading it costs a few microseconds per scrape.
pub fn process_resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse::<u64>()
        .ok()?;
    Some(kb * 1024)
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    r
}

impl hyper::service::Service<Request<hyper::body::Incoming>> for App {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn call(&self, req: Request<hyper::body::Incoming>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { Ok(this.handle(req).await) })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn gauge_text() {
        let mut out = String::new();
        super::write_gauge(&mut out, "x_bytes", "Some bytes.", 42);
        assert_eq!(
            out,
            "# HELP x_bytes Some bytes.\n# TYPE x_bytes gauge\nx_bytes 42\n"
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn process_rss_is_read() {
        let rss = super::process_resident_bytes().expect("VmRSS");
        assert!(rss > 1 << 20, "{rss}");
    }
}
