//! Transport settings: plain data with defaults.

use std::sync::Arc;
use std::time::Duration;

use crate::auth::Authenticator;

/// `SameSite` attribute of the browser cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SameSite {
    /// No attribute.
    #[default]
    Unset,
    /// `SameSite=Lax`.
    Lax,
    /// `SameSite=Strict`.
    Strict,
    /// `SameSite=None` (requires `Secure` in browsers).
    None,
}

/// The `BAYEUX_BROWSER` cookie.
#[derive(Debug, Clone)]
pub struct CookieConfig {
    /// Cookie name.
    pub name: String,
    /// `Secure` attribute.
    pub secure: bool,
    /// `HttpOnly` attribute.
    pub http_only: bool,
    /// `SameSite` attribute.
    pub same_site: SameSite,
    /// `Path` attribute.
    pub path: String,
}

impl Default for CookieConfig {
    fn default() -> Self {
        CookieConfig {
            name: "BAYEUX_BROWSER".into(),
            secure: false,
            http_only: true,
            same_site: SameSite::Unset,
            path: "/".into(),
        }
    }
}

/// Which origins may use an endpoint cross-origin.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Origins {
    /// Any origin (Jetty's cross-origin filter default); the request's origin is echoed.
    #[default]
    Any,
    /// Only these origins (`scheme://host[:port]`).
    List(Vec<String>),
}

impl Origins {
    /// Whether `origin` may use the endpoint.
    pub fn allows(&self, origin: &str) -> bool {
        match self {
            Origins::Any => true,
            Origins::List(l) => l.iter().any(|o| o.eq_ignore_ascii_case(origin)),
        }
    }
}

/// One mount point of the Bayeux endpoint (every sub-path of it is routed to the engine).
#[derive(Clone)]
pub struct Endpoint {
    /// The mount path, e.g. `/cometd`.
    pub path: String,
    /// Which origins may use it.
    pub origins: Origins,
    /// How requests on it are authenticated (none: every request is anonymous).
    ///
    /// An endpoint with an authenticator is *credentialed*: browsers attach the user's cookies
    /// and cached Basic credentials to every request to it, whichever page makes the request.
    /// So on it, requests a browser marks as coming from another origin (`Sec-Fetch-Site`
    /// `same-site` or `cross-site`) are refused (HTTP 403) unless they carry an `Origin` the
    /// endpoint allows (CORS and WebSocket requests), and script loads (`Sec-Fetch-Dest:
    /// script`) are refused unless the browser marks them same-origin. Requests without fetch
    /// metadata (non-browser clients, old browsers) are unaffected.
    pub authenticator: Option<Arc<dyn Authenticator>>,
    /// Whether callback-polling (JSONP GET) is served here; `None` (the default) means "only
    /// when the endpoint has no authenticator".
    ///
    /// A JSONP response is a script any page may load, with the user's credentials attached and
    /// no `Origin` to check, so on a credentialed endpoint it hands the user's session to
    /// whichever page asks. `Some(true)` turns it on there anyway, for clients that send no
    /// fetch metadata and same-origin pages (browsers that mark a script load as same-site or
    /// cross-site are still refused, see [`Endpoint::authenticator`]); `Some(false)` turns it
    /// off on an anonymous endpoint. Refused JSONP requests get HTTP 403.
    pub callback_polling: Option<bool>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("path", &self.path)
            .field("origins", &self.origins)
            .field("authenticator", &self.authenticator.is_some())
            .field("callback_polling", &self.callback_polling)
            .finish()
    }
}

impl Endpoint {
    /// An anonymous endpoint at `path` open to any origin.
    pub fn new(path: impl Into<String>) -> Endpoint {
        Endpoint {
            path: path.into().trim_end_matches('/').to_owned(),
            origins: Origins::Any,
            authenticator: None,
            callback_polling: None,
        }
    }

    /// Whether requests carry credentials here (the endpoint has an authenticator).
    pub fn is_credentialed(&self) -> bool {
        self.authenticator.is_some()
    }

    /// Whether callback-polling is served here: [`Endpoint::callback_polling`], or, when that is
    /// `None`, only on an endpoint without an authenticator.
    pub fn callback_polling_enabled(&self) -> bool {
        self.callback_polling.unwrap_or(!self.is_credentialed())
    }

    /// Whether `path` is this mount point or below it.
    pub fn matches(&self, path: &str) -> bool {
        match path.strip_prefix(self.path.as_str()) {
            Some(rest) => rest.is_empty() || rest.starts_with('/'),
            None => false,
        }
    }
}

/// The introspection route: paged listings of sessions and channels for operators (see
/// [`TransportConfig::introspection`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Introspection {
    /// Path prefix of the route, e.g. `/admin/bayeux`: `<path>/sessions`, `<path>/channels`.
    pub path: String,
    /// When set, requests must carry `Authorization: Bearer <token>`.
    pub token: Option<String>,
}

/// Transport limits and timers.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// The mount points.
    pub endpoints: Vec<Endpoint>,
    /// Maximum HTTP request body (413 beyond).
    pub max_body_bytes: usize,
    /// Maximum WebSocket message (close 1009 beyond); for a compressed message, the limit is
    /// on both its compressed and its inflated size.
    pub max_ws_message_bytes: usize,
    /// Whether WebSockets negotiate permessage-deflate (RFC 7692) when the client offers it
    /// (browsers do); on by default, as in CometD. Each message is compressed on its own
    /// (`server_no_context_takeover`, `client_no_context_takeover`), so a delivery is
    /// compressed once for all its subscribers and an idle socket keeps no compression state;
    /// messages under 128 bytes go uncompressed.
    pub ws_permessage_deflate: bool,
    /// Maximum concurrent TCP connections accepted by [`crate::serve`]. A connection counts
    /// until its socket is closed: an upgraded WebSocket keeps its slot for its whole life.
    pub max_connections: usize,
    /// Maximum live sessions one connection may have created (a WebSocket; a keep-alive HTTP
    /// connection under [`crate::serve`]): further handshakes on it get
    /// `503::too_many_sessions`. A browser over HTTP/2 runs all its tabs on one connection,
    /// one session each. HTTP requests forwarded by a proxy (`Forwarded`, `X-Forwarded-For`)
    /// are exempt, since a proxy shares its upstream connections between clients; WebSockets
    /// never are.
    pub max_sessions_per_connection: usize,
    /// Time allowed to send the request headers. It also bounds how long a keep-alive
    /// connection may sit idle between requests (hyper starts the header timer when it waits for
    /// the next request), so it doubles as the idle timeout of HTTP/1.1 connections.
    pub header_read_timeout: Duration,
    /// Time allowed to send a request body once the headers are in (408 beyond): without it a
    /// client that stalls mid-body holds its connection, and a slot of `max_connections`,
    /// forever.
    pub body_read_timeout: Duration,
    /// How often expired sessions are swept.
    pub sweep_period: Duration,
    /// WebSocket ping period; a socket silent for two periods is closed.
    pub ws_ping_interval: Duration,
    /// How long one write may wait for the client to take it before the socket is closed;
    /// `None` (the default) means two `ws_ping_interval`s, since a client that cannot take a
    /// write is as dead as one that stops answering pings.
    ///
    /// It bounds every WebSocket frame (with its flush) in the service itself, wherever the
    /// service runs; when a write is cut off the held connect is released and the session
    /// expires as usual unless the client reconnects. While a frame waits, this deadline stands
    /// in for the keep-alive check, since the socket is not read meanwhile. Under
    /// [`crate::serve`] it also bounds every write of long-polling replies (the connection is
    /// dropped). A host that mounts [`crate::BayeuxService`] in its own server owns the write
    /// deadlines of its HTTP connections, long-polling included.
    pub write_timeout: Option<Duration>,
    /// The browser cookie.
    pub cookie: CookieConfig,
    /// Query parameter naming the JSONP callback.
    pub jsonp_parameter: String,
    /// The introspection route, off (`None`) by default: `GET <path>/sessions` and
    /// `GET <path>/channels?after=..&limit=..` answer paged JSON listings (at most 500 items;
    /// session ids shown as a prefix only). They name users and channels: serve them only where
    /// operators alone can reach them, or with a token.
    pub introspection: Option<Introspection>,
}

impl TransportConfig {
    /// The write deadline in effect: [`TransportConfig::write_timeout`], or two
    /// `ws_ping_interval`s when it is `None`.
    pub fn write_deadline(&self) -> Duration {
        self.write_timeout
            .unwrap_or_else(|| self.ws_ping_interval.saturating_mul(2))
    }
}

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig {
            endpoints: vec![Endpoint::new("/cometd")],
            max_body_bytes: 1 << 20,
            max_ws_message_bytes: 1 << 20,
            ws_permessage_deflate: true,
            max_connections: 20_000,
            max_sessions_per_connection: 32,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            sweep_period: Duration::from_millis(997),
            ws_ping_interval: Duration::from_secs(30),
            write_timeout: None,
            cookie: CookieConfig::default(),
            jsonp_parameter: "jsonp".into(),
            introspection: None,
        }
    }
}
