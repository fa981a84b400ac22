//! The server's configuration file (TOML). Every setting has a default, so no file is needed.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use bayeux_core::{EngineConfig, Limits, OverflowPolicy};
use bayeux_redis::RedisConfig;
use bayeux_transport::{CookieConfig, Endpoint, Introspection, Origins, SameSite, TransportConfig};
use bayeux_voice::VoiceConfig;
use serde::Deserialize;

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Log filter (`info`, `debug`, `bayeux_transport=trace`, ...).
    pub log: String,
    /// Seconds allowed for graceful shutdown.
    pub shutdown_grace_secs: u64,
    /// Whether the voice API emulation (`/api/v2`) and its notifications endpoint are served.
    pub voice_enabled: bool,
    /// The Bayeux engine and its transports.
    pub bayeux: BayeuxSection,
    /// The voice API emulation (users, devices, origins, ...).
    pub voice: VoiceConfig,
    /// The Redis backplane joining several nodes (`[redis] url = "redis://..."`); without a
    /// `url` the server is a single node and needs no Redis.
    pub redis: RedisConfig,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            log: "info".into(),
            shutdown_grace_secs: 5,
            voice_enabled: true,
            bayeux: BayeuxSection::default(),
            voice: VoiceConfig::default(),
            redis: RedisConfig::default(),
        }
    }
}

/// `[bayeux]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BayeuxSection {
    /// Mount path of the Bayeux endpoint.
    pub path: String,
    /// Origins allowed cross-origin; empty means any origin.
    pub allow_origins: Vec<String>,
    /// Callback-polling (JSONP) on the endpoint: unset means on only when the endpoint has no
    /// authenticator (with the voice API enabled it has one, so JSONP is off); `true` turns it
    /// on there anyway for clients without fetch metadata and same-origin pages (see
    /// `bayeux_transport::Endpoint::callback_polling`), `false` turns it off.
    pub callback_polling: Option<bool>,
    /// Connect hold time, ms.
    pub timeout_ms: u64,
    /// Client pause between connects, ms.
    pub interval_ms: u64,
    /// Session expiry after the last connect, ms.
    pub max_interval_ms: u64,
    /// Session queue bound (messages).
    pub max_queue: usize,
    /// `drop-oldest` or `disconnect`.
    pub overflow: String,
    /// Maximum number of sessions of each endpoint (each has its own budget).
    pub max_sessions: usize,
    /// Maximum subscriptions per session.
    pub max_subscriptions: usize,
    /// Maximum total bytes of the names one session subscribes to.
    pub max_subscription_bytes: usize,
    /// Maximum live sessions one connection may have created.
    pub max_sessions_per_connection: usize,
    /// Maximum HTTP body, bytes.
    pub max_body_bytes: usize,
    /// Maximum WebSocket message, bytes.
    pub max_ws_message_bytes: usize,
    /// Maximum messages per batch.
    pub max_messages_per_batch: usize,
    /// Maximum JSON nesting depth.
    pub max_json_depth: usize,
    /// Maximum concurrent TCP connections.
    pub max_connections: usize,
    /// Header read timeout, ms.
    pub header_read_timeout_ms: u64,
    /// Body read timeout (from the end of the headers), ms.
    pub body_read_timeout_ms: u64,
    /// WebSocket ping period, ms.
    pub ws_ping_interval_ms: u64,
    /// How long a write may wait for the client before its connection is closed, ms; 0 means
    /// two `ws_ping_interval_ms`.
    pub write_timeout_ms: u64,
    /// Long polls held at once per browser over HTTP/1.1 (0 = unlimited).
    pub max_sessions_per_browser: usize,
    /// Refuse requests of cookie-bound sessions that arrive without the cookie.
    pub strict_browser: bool,
    /// `Secure` on the browser cookie.
    pub cookie_secure: bool,
    /// `SameSite` on the browser cookie: "", "lax", "strict" or "none".
    pub cookie_same_site: String,
    /// Whether a publisher receives its own broadcasts.
    pub broadcast_to_publisher: bool,
    /// Path of the introspection route (paged listings of sessions and channels), e.g.
    /// "/admin/bayeux"; empty (the default) turns it off. It names users and channels: enable
    /// it only where operators alone can reach the port, or with `introspection_token`.
    pub introspection_path: String,
    /// Bearer token the introspection route requires; empty for none.
    pub introspection_token: String,
}

impl Default for BayeuxSection {
    fn default() -> Self {
        let e = EngineConfig::default();
        let t = TransportConfig::default();
        BayeuxSection {
            path: "/cometd".into(),
            allow_origins: Vec::new(),
            callback_polling: None,
            timeout_ms: e.timeout_ms,
            interval_ms: e.interval_ms,
            max_interval_ms: e.max_interval_ms,
            max_queue: e.max_queue,
            overflow: "drop-oldest".into(),
            max_sessions: e.max_sessions,
            max_subscriptions: e.max_subscriptions,
            max_subscription_bytes: e.max_subscription_bytes,
            max_sessions_per_connection: t.max_sessions_per_connection,
            max_body_bytes: t.max_body_bytes,
            max_ws_message_bytes: t.max_ws_message_bytes,
            max_messages_per_batch: e.limits.max_messages,
            max_json_depth: e.limits.max_depth,
            max_connections: t.max_connections,
            header_read_timeout_ms: t.header_read_timeout.as_millis() as u64,
            body_read_timeout_ms: t.body_read_timeout.as_millis() as u64,
            ws_ping_interval_ms: t.ws_ping_interval.as_millis() as u64,
            write_timeout_ms: t.write_timeout.map_or(0, |d| d.as_millis() as u64),
            max_sessions_per_browser: e.max_sessions_per_browser,
            strict_browser: e.strict_browser,
            cookie_secure: false,
            cookie_same_site: String::new(),
            broadcast_to_publisher: e.broadcast_to_publisher,
            introspection_path: String::new(),
            introspection_token: String::new(),
        }
    }
}

impl ServerConfig {
    /// Reads a TOML file.
    pub fn load(path: &Path) -> Result<ServerConfig, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| format!("invalid config {}: {e}", path.display()))
    }

    /// The engine settings.
    pub fn engine(&self) -> Result<EngineConfig, String> {
        let b = &self.bayeux;
        let overflow = match b.overflow.as_str() {
            "drop-oldest" => OverflowPolicy::DropOldest,
            "disconnect" => OverflowPolicy::Disconnect,
            o => return Err(format!("bayeux.overflow: unknown policy {o:?}")),
        };
        Ok(EngineConfig {
            timeout_ms: b.timeout_ms,
            interval_ms: b.interval_ms,
            max_interval_ms: b.max_interval_ms,
            max_queue: b.max_queue.max(1),
            overflow,
            max_sessions: b.max_sessions,
            max_subscriptions: b.max_subscriptions,
            max_subscription_bytes: b.max_subscription_bytes,
            broadcast_to_publisher: b.broadcast_to_publisher,
            max_sessions_per_browser: b.max_sessions_per_browser,
            strict_browser: b.strict_browser,
            limits: Limits {
                max_bytes: b.max_body_bytes.max(b.max_ws_message_bytes),
                max_messages: b.max_messages_per_batch.max(1),
                max_depth: b.max_json_depth.max(2),
            },
            ..EngineConfig::default()
        })
    }

    /// The transport settings.
    pub fn transport(&self) -> Result<TransportConfig, String> {
        let b = &self.bayeux;
        if !b.path.starts_with('/') {
            return Err(format!("bayeux.path must start with '/': {:?}", b.path));
        }
        let same_site = match b.cookie_same_site.to_ascii_lowercase().as_str() {
            "" => SameSite::Unset,
            "lax" => SameSite::Lax,
            "strict" => SameSite::Strict,
            "none" => SameSite::None,
            o => return Err(format!("bayeux.cookie_same_site: unknown value {o:?}")),
        };
        let mut endpoint = Endpoint::new(b.path.as_str());
        if !b.allow_origins.is_empty() {
            endpoint.origins = Origins::List(b.allow_origins.clone());
        }
        endpoint.callback_polling = b.callback_polling;
        let introspection = match b.introspection_path.as_str() {
            "" => None,
            p if !p.starts_with('/') || endpoint.matches(p) => {
                return Err(format!(
                    "bayeux.introspection_path must start with '/' and lie outside bayeux.path: {p:?}"
                ));
            }
            p => Some(Introspection {
                path: p.trim_end_matches('/').to_owned(),
                token: (!b.introspection_token.is_empty()).then(|| b.introspection_token.clone()),
            }),
        };
        Ok(TransportConfig {
            introspection,
            endpoints: vec![endpoint],
            max_body_bytes: b.max_body_bytes,
            max_ws_message_bytes: b.max_ws_message_bytes,
            max_connections: b.max_connections.max(1),
            max_sessions_per_connection: b.max_sessions_per_connection.max(1),
            header_read_timeout: Duration::from_millis(b.header_read_timeout_ms.max(1)),
            body_read_timeout: Duration::from_millis(b.body_read_timeout_ms.max(1)),
            ws_ping_interval: Duration::from_millis(b.ws_ping_interval_ms.max(100)),
            write_timeout: (b.write_timeout_ms > 0)
                .then(|| Duration::from_millis(b.write_timeout_ms)),
            cookie: CookieConfig {
                secure: b.cookie_secure,
                same_site,
                ..CookieConfig::default()
            },
            ..TransportConfig::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_the_default() {
        let c: ServerConfig = toml::from_str("").unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.bayeux.path, "/cometd");
        assert!(c.engine().is_ok() && c.transport().is_ok());
    }

    #[test]
    fn introspection_is_off_unless_a_path_is_given() {
        assert_eq!(
            ServerConfig::default().transport().unwrap().introspection,
            None
        );
        let c: ServerConfig = toml::from_str(
            "[bayeux]\nintrospection_path = \"/admin/bayeux/\"\nintrospection_token = \"t\"",
        )
        .unwrap();
        assert_eq!(
            c.transport().unwrap().introspection,
            Some(Introspection {
                path: "/admin/bayeux".into(),
                token: Some("t".into())
            })
        );
        for bad in ["admin", "/cometd/admin"] {
            let c: ServerConfig =
                toml::from_str(&format!("[bayeux]\nintrospection_path = \"{bad}\"")).unwrap();
            assert!(c.transport().is_err(), "{bad}");
        }
    }

    #[test]
    fn redis_section() {
        assert!(!ServerConfig::default().redis.enabled());
        let c: ServerConfig =
            toml::from_str("[redis]\nurl = \"redis://127.0.0.1:6379\"\npublish_queue = 100")
                .unwrap();
        assert_eq!(c.redis.url.as_deref(), Some("redis://127.0.0.1:6379"));
        assert_eq!(c.redis.publish_queue, 100);
        assert!(toml::from_str::<ServerConfig>("[redis]\nnope = 1").is_err());
    }

    #[test]
    fn write_timeout_defaults_to_two_pings() {
        let c: ServerConfig = toml::from_str("[bayeux]\nws_ping_interval_ms = 1000").unwrap();
        let t = c.transport().unwrap();
        assert_eq!(t.write_timeout, None);
        assert_eq!(t.write_deadline(), Duration::from_secs(2));
        let c: ServerConfig = toml::from_str("[bayeux]\nwrite_timeout_ms = 500").unwrap();
        assert_eq!(
            c.transport().unwrap().write_deadline(),
            Duration::from_millis(500)
        );
    }

    #[test]
    fn callback_polling_setting_reaches_the_endpoint() {
        let c: ServerConfig = toml::from_str("").unwrap();
        assert_eq!(c.transport().unwrap().endpoints[0].callback_polling, None);
        let c: ServerConfig = toml::from_str("[bayeux]\ncallback_polling = true").unwrap();
        assert_eq!(
            c.transport().unwrap().endpoints[0].callback_polling,
            Some(true)
        );
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        assert!(toml::from_str::<ServerConfig>("nope = 1").is_err());
        let c: ServerConfig = toml::from_str("[bayeux]\noverflow = \"explode\"").unwrap();
        assert!(c.engine().is_err());
        let c: ServerConfig = toml::from_str("[bayeux]\npath = \"cometd\"").unwrap();
        assert!(c.transport().is_err());
    }
}
