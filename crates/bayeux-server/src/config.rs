//! The server's configuration: a TOML file, `BAYEUX_*` environment variables and command-line
//! flags over built-in defaults (flags > environment > file > defaults). Every setting has a
//! default, so no file is needed. [`ServerConfig::from_sources`] merges the layers and checks
//! every value, naming the file's line or the environment variable of a bad one.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bayeux_core::{EngineConfig, Limits, OverflowPolicy};
#[cfg(feature = "redis")]
use bayeux_redis::RedisConfig;
use bayeux_transport::{CookieConfig, Endpoint, Introspection, Origins, SameSite, TransportConfig};
#[cfg(feature = "voice")]
use bayeux_voice::VoiceConfig;
use serde::{Deserialize, Serialize};

/// The whole configuration (the file's top level and its sections).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Log filter (`info`, `debug`, `bayeux_transport=trace`, ...), checked at start. At
    /// `debug`, `bayeux_transport`'s `conn` span (peer; a WebSocket's transport, client id
    /// prefix and user) and `request` span (method, path, transport, client id prefix, user)
    /// wrap the lines logged for a connection and a request.
    pub log: LogFilter,
    /// Log line format: `text` (human-readable) or `json` (one JSON object per line).
    pub log_format: LogFormat,
    /// Seconds allowed for graceful shutdown.
    pub shutdown_grace_secs: u64,
    /// Whether the voice API emulation (`/api/v2`) and its notifications endpoint are served.
    pub voice_enabled: bool,
    /// The Bayeux engine and its transports.
    pub bayeux: BayeuxSection,
    /// The voice API emulation (users, devices, origins, ...). Cargo feature `voice`.
    #[cfg(feature = "voice")]
    pub voice: VoiceConfig,
    /// The Redis backplane joining several nodes (`[redis] url = "redis://..."`); without a
    /// `url` the server is a single node and needs no Redis. Cargo feature `redis`.
    #[cfg(feature = "redis")]
    pub redis: RedisConfig,
    /// HTTPS on the listening port (`[tls] cert`, `key`); without them, cleartext HTTP.
    pub tls: TlsSection,
    /// A separate listener for `/metrics`, `/healthz` and `/readyz` (`[admin] listen`).
    pub admin: AdminSection,
}

/// `[admin]`: an optional second listener, for operators only. Its `/metrics` (or the public
/// port's, without it) has the latency histograms `bayeux_publish_to_queued_seconds`,
/// `bayeux_queued_to_written_seconds` and `bayeux_connect_hold_seconds` beside the counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminSection {
    /// Where `/metrics`, `/healthz` and `/readyz` are served, in cleartext, e.g.
    /// `127.0.0.1:9090`. When set, the public port no longer serves `/metrics` (it keeps
    /// `/healthz` and `/readyz` for load balancers). Unset: everything on the public port.
    pub listen: Option<SocketAddr>,
}

/// `log_format`: how log lines are written (to stderr).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (`timestamp`, `level`, `target`, `fields`, `spans`).
    Json,
}

/// `[tls]`: the PEM files of the server's certificate chain and private key. Both or neither;
/// with them the port speaks HTTPS only (HTTP/2 and HTTP/1.1 through ALPN), and `SIGHUP`
/// reloads the two files without a restart.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsSection {
    /// Certificate chain, PEM: the server's certificate first, then its intermediates.
    pub cert: Option<PathBuf>,
    /// Private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key: Option<PathBuf>,
}

impl TlsSection {
    /// Whether TLS is configured (both files given; [`ServerConfig::validate`] refuses one
    /// without the other).
    pub fn enabled(&self) -> bool {
        self.cert.is_some() && self.key.is_some()
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            log: LogFilter("info".into()),
            log_format: LogFormat::Text,
            shutdown_grace_secs: 5,
            voice_enabled: cfg!(feature = "voice"),
            bayeux: BayeuxSection::default(),
            #[cfg(feature = "voice")]
            voice: VoiceConfig::default(),
            #[cfg(feature = "redis")]
            redis: RedisConfig::default(),
            tls: TlsSection::default(),
            admin: AdminSection::default(),
        }
    }
}

/// `[bayeux]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
    /// What a publish to a full session queue does: `drop-oldest` or `disconnect`.
    pub overflow: Overflow,
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
    /// Negotiate permessage-deflate (RFC 7692) with WebSocket clients that offer it.
    pub ws_permessage_deflate: bool,
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
    /// `SameSite` on the browser cookie: `""` (no attribute), `"lax"`, `"strict"` or `"none"`.
    pub cookie_same_site: CookieSameSite,
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
            overflow: Overflow::DropOldest,
            max_sessions: e.max_sessions,
            max_subscriptions: e.max_subscriptions,
            max_subscription_bytes: e.max_subscription_bytes,
            max_sessions_per_connection: t.max_sessions_per_connection,
            max_body_bytes: t.max_body_bytes,
            max_ws_message_bytes: t.max_ws_message_bytes,
            ws_permessage_deflate: t.ws_permessage_deflate,
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
            cookie_same_site: CookieSameSite::Unset,
            broadcast_to_publisher: e.broadcast_to_publisher,
            introspection_path: String::new(),
            introspection_token: String::new(),
        }
    }
}

impl ServerConfig {
    /// Reads a TOML file (no environment, no flags): a bad value is reported with its line.
    pub fn load(path: &Path) -> Result<ServerConfig, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        ServerConfig::parse_file(&text, &path.display().to_string())
    }

    /// Parses the text of a configuration file named `name` (for messages).
    pub fn parse_file(text: &str, name: &str) -> Result<ServerConfig, String> {
        toml::from_str(text).map_err(|e| format!("invalid config {name}: {e}"))
    }

    /// The file (when given) with the environment over it: each `BAYEUX_*` variable that names
    /// a setting (see [`env_key`]) replaces the file's value; an empty one counts as unset. Variables that name no setting
    /// are returned in the second member, for the caller to warn about. A bad value is reported
    /// with the file's line or the variable's name. Flags are the caller's, applied after.
    pub fn from_sources(
        file: Option<(&str, &str)>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<(ServerConfig, Vec<String>), String> {
        // The file alone first, so that its errors carry their line.
        let (mut table, mut config) = match file {
            Some((text, name)) => {
                let config = ServerConfig::parse_file(text, name)?;
                let table: toml::Table =
                    toml::from_str(text).map_err(|e| format!("invalid config {name}: {e}"))?;
                (table, config)
            }
            None => (toml::Table::new(), ServerConfig::default()),
        };
        let keys = setting_keys();
        let mut ignored = Vec::new();
        let env: BTreeMap<String, String> = env
            .into_iter()
            // An empty variable is unset (as `VAR=` in a container's environment means).
            .filter(|(k, v)| k.starts_with(ENV_PREFIX) && !v.is_empty())
            .collect();
        for (var, raw) in env {
            let Some((path, kind)) = keys
                .iter()
                .find(|(path, _)| env_key(path) == var)
                .map(|(p, k)| (p.clone(), *k))
            else {
                ignored.push(var);
                continue;
            };
            let value = env_value(kind, &raw).map_err(|e| format!("{var}={raw:?}: {e}"))?;
            set_path(&mut table, &path, value);
            // One variable at a time, so a bad value names its variable.
            config = toml::Value::Table(table.clone())
                .try_into()
                .map_err(|e: toml::de::Error| format!("{var}={raw:?}: {}", e.message()))?;
        }
        Ok((config, ignored))
    }

    /// Every check a start would make, without starting: values, the log filter, the engine and
    /// transport settings, the voice users, the Redis settings, and that the voice API's URIs
    /// do not point at an unspecified address.
    pub fn validate(&self) -> Result<(), String> {
        self.engine()?;
        self.transport()?;
        self.log.directives()?;
        self.check_features()?;
        #[cfg(feature = "redis")]
        if self.redis.enabled() {
            self.redis.validate()?;
        }
        match (&self.tls.cert, &self.tls.key) {
            (None, None) => {}
            (Some(_), None) | (None, Some(_)) => {
                return Err("tls.cert and tls.key go together: give both or neither".into());
            }
            #[cfg(feature = "tls")]
            (Some(cert), Some(key)) => {
                bayeux_transport::TlsConfig::from_pem_files(cert, key)
                    .map_err(|e| format!("tls: {e}"))?;
            }
            #[cfg(not(feature = "tls"))]
            (Some(_), Some(_)) => {
                return Err(
                    "tls: this bayeux-server was built without TLS (cargo feature \
                            `tls`)"
                        .into(),
                );
            }
        }
        #[cfg(feature = "voice")]
        if self.voice_enabled {
            self.voice.validate().map_err(|e| format!("voice: {e}"))?;
            if self.listen.ip().is_unspecified()
                && self.voice.public_base_url == VoiceConfig::default().public_base_url
            {
                return Err(format!(
                    "listen = \"{}\" is an unspecified address, which browsers cannot reach: set \
                     voice.public_base_url (BAYEUX_VOICE_PUBLIC_BASE_URL, --public-base-url) to \
                     the URL clients use, e.g. \"https://voice.example.com\", or turn the voice \
                     API off (voice_enabled = false, --no-voice)",
                    self.listen
                ));
            }
        }
        Ok(())
    }

    /// Refuses what this build cannot serve: the voice API without the `voice` feature.
    pub fn check_features(&self) -> Result<(), String> {
        if self.voice_enabled && !cfg!(feature = "voice") {
            return Err(
                "voice_enabled = true, but this bayeux-server was built without the voice \
                        API (cargo feature `voice`)"
                    .into(),
            );
        }
        Ok(())
    }

    /// The effective configuration as TOML (what `--print-config` shows).
    pub fn to_toml(&self) -> Result<String, String> {
        toml::to_string(self).map_err(|e| format!("cannot print the configuration: {e}"))
    }

    /// The engine settings.
    pub fn engine(&self) -> Result<EngineConfig, String> {
        let b = &self.bayeux;
        let overflow = match b.overflow {
            Overflow::DropOldest => OverflowPolicy::DropOldest,
            Overflow::Disconnect => OverflowPolicy::Disconnect,
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
        let same_site = match b.cookie_same_site {
            CookieSameSite::Unset => SameSite::Unset,
            CookieSameSite::Lax => SameSite::Lax,
            CookieSameSite::Strict => SameSite::Strict,
            CookieSameSite::None => SameSite::None,
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
            ws_permessage_deflate: b.ws_permessage_deflate,
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

/// `[bayeux] overflow`: what a publish to a full session queue does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Overflow {
    /// The session's oldest queued message is dropped (and counted).
    DropOldest,
    /// The session ends.
    Disconnect,
}

/// `[bayeux] cookie_same_site`: the `SameSite` attribute of the browser cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CookieSameSite {
    /// No attribute (`""`).
    #[serde(rename = "")]
    Unset,
    /// `SameSite=Lax`.
    #[serde(rename = "lax")]
    Lax,
    /// `SameSite=Strict`.
    #[serde(rename = "strict")]
    Strict,
    /// `SameSite=None` (browsers require `cookie_secure = true` with it).
    #[serde(rename = "none")]
    None,
}

/// A log filter in `RUST_LOG` syntax (`info`, `warn,bayeux_transport=debug`, ...), checked
/// when read: a bare word must be a level (`trace`, `debug`, `info`, `warn`, `error`, `off`),
/// so a misspelt level is refused instead of silently filtering everything out; a target takes
/// `target=level`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct LogFilter(String);

impl LogFilter {
    /// Checks `filter`.
    pub fn new(filter: &str) -> Result<LogFilter, String> {
        let f = LogFilter(filter.trim().to_owned());
        f.directives()?;
        Ok(f)
    }

    /// The filter's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The filter for `tracing_subscriber`.
    pub fn directives(&self) -> Result<tracing_subscriber::EnvFilter, String> {
        const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
        for d in self.0.split(',').map(str::trim).filter(|d| !d.is_empty()) {
            let level = match d.rsplit_once('=') {
                Some((_, level)) => level,
                None if d.contains('[') => continue,
                None => d,
            };
            if !LEVELS.contains(&level.to_ascii_lowercase().as_str()) {
                return Err(format!(
                    "invalid log filter {:?}: {level:?} is not a level (trace, debug, info, warn, \
                     error, off); a target takes target=level",
                    self.0
                ));
            }
        }
        tracing_subscriber::EnvFilter::try_new(&self.0)
            .map_err(|e| format!("invalid log filter {:?}: {e}", self.0))
    }
}

impl TryFrom<String> for LogFilter {
    type Error = String;
    fn try_from(s: String) -> Result<LogFilter, String> {
        LogFilter::new(&s)
    }
}

impl From<LogFilter> for String {
    fn from(f: LogFilter) -> String {
        f.0
    }
}

impl std::fmt::Display for LogFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Prefix of the environment variables of settings.
pub const ENV_PREFIX: &str = "BAYEUX_";

/// Settings whose default is "unset", so that they do not appear in the serialized defaults:
/// their dotted path and the kind of value they take.
const OPTIONAL_KEYS: &[(&str, ValueKind)] = &[
    ("bayeux.callback_polling", ValueKind::Other),
    #[cfg(feature = "redis")]
    ("redis.url", ValueKind::String),
    ("tls.cert", ValueKind::String),
    ("tls.key", ValueKind::String),
    ("admin.listen", ValueKind::String),
];

/// How an environment variable's text becomes a TOML value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ValueKind {
    /// Taken as it is.
    String,
    /// A TOML array (`[...]`), or a comma-separated list of strings.
    List,
    /// A TOML value: a number, `true`/`false`, an inline table.
    Other,
}

/// The environment variable of a setting, by its dotted path: `BAYEUX_` then the key for the
/// top level and `[bayeux]` (`listen` → `BAYEUX_LISTEN`, `bayeux.timeout_ms` →
/// `BAYEUX_TIMEOUT_MS`), the section and the key for the other sections (`voice.public_base_url`
/// → `BAYEUX_VOICE_PUBLIC_BASE_URL`, `redis.url` → `BAYEUX_REDIS_URL`).
pub fn env_key(path: &str) -> String {
    let name = path.strip_prefix("bayeux.").unwrap_or(path);
    format!(
        "{ENV_PREFIX}{}",
        name.replace('.', "_").to_ascii_uppercase()
    )
}

/// Every setting's dotted path (`listen`, `bayeux.timeout_ms`, `voice.users`, ...) and kind.
fn setting_keys() -> Vec<(String, ValueKind)> {
    let mut keys = Vec::new();
    if let Ok(toml::Value::Table(t)) = toml::Value::try_from(ServerConfig::default()) {
        for (k, v) in &t {
            match v {
                toml::Value::Table(section) => {
                    for (sk, sv) in section {
                        keys.push((format!("{k}.{sk}"), kind_of(sv)));
                    }
                }
                v => keys.push((k.clone(), kind_of(v))),
            }
        }
    }
    keys.extend(OPTIONAL_KEYS.iter().map(|(p, k)| ((*p).to_owned(), *k)));
    keys
}

fn kind_of(v: &toml::Value) -> ValueKind {
    match v {
        toml::Value::String(_) => ValueKind::String,
        toml::Value::Array(a) if a.iter().all(toml::Value::is_str) => ValueKind::List,
        _ => ValueKind::Other,
    }
}

fn env_value(kind: ValueKind, raw: &str) -> Result<toml::Value, String> {
    let parse = |raw: &str| -> Result<toml::Value, String> {
        let t: toml::Table = toml::from_str(&format!("v = {raw}"))
            .map_err(|_| "not a number, true/false or a TOML value".to_owned())?;
        Ok(t.get("v").cloned().unwrap_or(toml::Value::Boolean(false)))
    };
    match kind {
        ValueKind::String => Ok(toml::Value::String(raw.to_owned())),
        ValueKind::List if raw.trim_start().starts_with('[') => parse(raw),
        ValueKind::List => Ok(toml::Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| toml::Value::String(s.to_owned()))
                .collect(),
        )),
        ValueKind::Other => parse(raw),
    }
}

fn set_path(table: &mut toml::Table, path: &str, value: toml::Value) {
    match path.split_once('.') {
        Some((section, key)) => {
            let entry = table
                .entry(section.to_owned())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if !entry.is_table() {
                *entry = toml::Value::Table(toml::Table::new());
            }
            if let toml::Value::Table(t) = entry {
                t.insert(key.to_owned(), value);
            }
        }
        None => {
            table.insert(path.to_owned(), value);
        }
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
    #[cfg(all(feature = "voice", feature = "redis"))]
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
        let e = toml::from_str::<ServerConfig>("[bayeux]\noverflow = \"explode\"").unwrap_err();
        assert!(e.to_string().contains("line 2"), "{e}");
        let c: ServerConfig = toml::from_str("[bayeux]\npath = \"cometd\"").unwrap();
        assert!(c.transport().is_err());
    }

    #[cfg(all(feature = "voice", feature = "redis"))]
    const EXAMPLE: &str = include_str!("../config.example.toml");

    #[cfg(all(feature = "voice", feature = "redis"))]
    fn env(vars: &[(&str, &str)]) -> Vec<(String, String)> {
        vars.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    #[cfg(all(feature = "voice", feature = "redis"))]
    fn the_example_file_is_the_defaults_and_names_every_setting() {
        let c = ServerConfig::parse_file(EXAMPLE, "config.example.toml").unwrap();
        assert_eq!(c, ServerConfig::default());
        c.validate().unwrap();
        let table: toml::Table = toml::from_str(EXAMPLE).unwrap();
        for (path, _) in setting_keys() {
            let present = match path.split_once('.') {
                Some((section, key)) => table
                    .get(section)
                    .and_then(toml::Value::as_table)
                    .is_some_and(|t| t.contains_key(key)),
                None => table.contains_key(&path),
            };
            let key = path.rsplit('.').next().unwrap();
            let commented = EXAMPLE
                .lines()
                .any(|l| l.starts_with(&format!("# {key} =")));
            assert!(present || commented, "config.example.toml lacks {path}");
        }
    }

    #[test]
    #[cfg(all(feature = "voice", feature = "redis"))]
    fn environment_variable_names_are_distinct_and_cover_every_section() {
        let keys = setting_keys();
        let mut names: Vec<String> = keys.iter().map(|(p, _)| env_key(p)).collect();
        names.sort();
        let before = names.len();
        names.dedup();
        assert_eq!(names.len(), before, "two settings share a variable");
        for name in [
            "BAYEUX_LISTEN",
            "BAYEUX_LOG",
            "BAYEUX_VOICE_ENABLED",
            "BAYEUX_TIMEOUT_MS",
            "BAYEUX_COOKIE_SAME_SITE",
            "BAYEUX_CALLBACK_POLLING",
            "BAYEUX_VOICE_PUBLIC_BASE_URL",
            "BAYEUX_VOICE_USERS",
            "BAYEUX_REDIS_URL",
            "BAYEUX_REDIS_NAMESPACE",
            "BAYEUX_TLS_CERT",
            "BAYEUX_TLS_KEY",
            "BAYEUX_ADMIN_LISTEN",
            "BAYEUX_LOG_FORMAT",
        ] {
            assert!(names.iter().any(|n| n == name), "{name}");
        }
    }

    #[test]
    #[cfg(all(feature = "voice", feature = "redis"))]
    fn the_environment_overrides_the_file() {
        let file = "listen = \"127.0.0.1:7000\"\n[bayeux]\ntimeout_ms = 1000\nmax_queue = 5\n";
        let (c, ignored) = ServerConfig::from_sources(
            Some((file, "f.toml")),
            env(&[
                ("BAYEUX_TIMEOUT_MS", "2000"),
                (
                    "BAYEUX_ALLOW_ORIGINS",
                    "https://a.example, https://b.example",
                ),
                ("BAYEUX_OVERFLOW", "disconnect"),
                ("BAYEUX_CALLBACK_POLLING", "false"),
                ("BAYEUX_VOICE_PUBLIC_BASE_URL", "https://voice.example"),
                ("BAYEUX_VOICE_ENABLED", "false"),
                ("BAYEUX_REDIS_URL", "redis://127.0.0.1:6390"),
                ("BAYEUX_SERVER_BIN", "/bin/true"),
                ("BAYEUX_MAX_QUEUE", ""),
                ("PATH", "/usr/bin"),
            ]),
        )
        .unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:7000", "file");
        assert_eq!(c.bayeux.max_queue, 5, "file");
        assert_eq!(c.bayeux.timeout_ms, 2000, "environment over file");
        assert_eq!(
            c.bayeux.allow_origins,
            ["https://a.example", "https://b.example"]
        );
        assert_eq!(c.bayeux.overflow, Overflow::Disconnect);
        assert_eq!(c.bayeux.callback_polling, Some(false));
        assert_eq!(c.voice.public_base_url, "https://voice.example");
        assert!(!c.voice_enabled);
        assert_eq!(c.redis.url.as_deref(), Some("redis://127.0.0.1:6390"));
        assert_eq!(c.bayeux.max_interval_ms, 10_000, "default");
        assert_eq!(ignored, ["BAYEUX_SERVER_BIN"]);
        // A TOML array in a list variable, a whole user table list.
        let (c, _) = ServerConfig::from_sources(
            None,
            env(&[
                ("BAYEUX_ALLOW_ORIGINS", "[\"https://c.example\"]"),
                (
                    "BAYEUX_VOICE_USERS",
                    "[{name = \"u1\", password = \"secret\", device_id = \"d1\", dn = \"100\", features = [\"api-voice\"]}]",
                ),
            ]),
        )
        .unwrap();
        assert_eq!(c.bayeux.allow_origins, ["https://c.example"]);
        assert_eq!(c.voice.users.len(), 1);
        assert_eq!(c.voice.users[0].name, "u1");
        c.validate().unwrap();
    }

    #[test]
    #[cfg(all(feature = "voice", feature = "redis"))]
    fn bad_values_name_their_line_or_variable() {
        let cases = [
            ("[bayeux]\noverflow = \"drop-newest\"", "line 2"),
            ("[bayeux]\n\ncookie_same_site = \"Lax\"", "line 3"),
            ("log = \"infoo\"", "line 1"),
            ("log = \"info,hyper=loud\"", "line 1"),
            ("listen = \"localhost:80\"", "line 1"),
            ("[bayeux]\nmax_queue = -1", "line 2"),
            ("[redis]\nurl = 6379", "line 2"),
            ("[voice]\nnope = 1", "line 2"),
        ];
        for (file, line) in cases {
            let e = ServerConfig::from_sources(Some((file, "f.toml")), Vec::new()).unwrap_err();
            assert!(e.contains(line) && e.contains("f.toml"), "{file:?}: {e}");
        }
        for (var, value) in [
            ("BAYEUX_TIMEOUT_MS", "soon"),
            ("BAYEUX_TIMEOUT_MS", "-5"),
            ("BAYEUX_OVERFLOW", "explode"),
            ("BAYEUX_LISTEN", "127.0.0.1"),
            ("BAYEUX_LOG", "verbose"),
            ("BAYEUX_STRICT_BROWSER", "yes"),
            ("BAYEUX_REDIS_PUBLISH_QUEUE", "1.5"),
        ] {
            let e = ServerConfig::from_sources(None, env(&[(var, value)])).unwrap_err();
            assert!(e.starts_with(&format!("{var}=")), "{var}: {e}");
        }
    }

    #[test]
    #[cfg(all(feature = "voice", feature = "redis"))]
    fn an_unspecified_listen_address_needs_the_public_url() {
        let (c, _) =
            ServerConfig::from_sources(None, env(&[("BAYEUX_LISTEN", "0.0.0.0:8080")])).unwrap();
        let e = c.validate().unwrap_err();
        assert!(e.contains("public_base_url"), "{e}");
        let (c, _) = ServerConfig::from_sources(
            None,
            env(&[
                ("BAYEUX_LISTEN", "[::]:8080"),
                ("BAYEUX_VOICE_ENABLED", "false"),
            ]),
        )
        .unwrap();
        c.validate().unwrap();
        let (c, _) = ServerConfig::from_sources(
            None,
            env(&[
                ("BAYEUX_LISTEN", "0.0.0.0:8080"),
                ("BAYEUX_VOICE_PUBLIC_BASE_URL", "https://voice.example"),
            ]),
        )
        .unwrap();
        c.validate().unwrap();
    }

    #[test]
    #[cfg(all(feature = "voice", feature = "redis"))]
    fn the_printed_configuration_reads_back_the_same() {
        let (c, _) = ServerConfig::from_sources(
            None,
            env(&[
                ("BAYEUX_REDIS_URL", "redis://127.0.0.1:1"),
                ("BAYEUX_CALLBACK_POLLING", "true"),
                ("BAYEUX_COOKIE_SAME_SITE", "none"),
                ("BAYEUX_LOG", "warn,bayeux_transport=debug"),
            ]),
        )
        .unwrap();
        let text = c.to_toml().unwrap();
        assert_eq!(ServerConfig::parse_file(&text, "printed").unwrap(), c);
        let d = ServerConfig::default();
        assert_eq!(
            ServerConfig::parse_file(&d.to_toml().unwrap(), "printed").unwrap(),
            d
        );
    }
}
