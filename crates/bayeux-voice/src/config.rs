//! Configuration: plain data with an embedded demo default, deserializable from TOML or JSON.

use std::collections::HashSet;
use std::fmt;

use serde::{Deserialize, Serialize};

/// The feature that allows call operations.
pub const FEATURE_VOICE: &str = "api-voice";
/// The feature that allows the recording operations and shows `recordingState`.
pub const FEATURE_RECORDING: &str = "api-voice-recording";

/// The password of the embedded demo users.
const DEMO_PASSWORD: &str = "password";

/// One user: credentials, the user's single device and the user's features.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// User name (the Basic-auth user and the Bayeux principal).
    pub name: String,
    /// Password, compared in constant time.
    pub password: String,
    /// The device id, a UUID.
    pub device_id: String,
    /// The device's DN (its `phoneNumber`), e.g. `15000`.
    pub dn: String,
    /// Enabled features, e.g. `api-voice`, `api-voice-recording`.
    #[serde(default)]
    pub features: Vec<String>,
}

impl UserConfig {
    /// Whether the user has `feature`.
    pub fn has_feature(&self, feature: &str) -> bool {
        self.features.iter().any(|f| f == feature)
    }
}

/// Settings of the voice emulation. Every field has a default; [`VoiceConfig::default`] is the
/// embedded demo configuration (three agents, password `password`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VoiceConfig {
    /// The users. Names, DNs and device ids must be unique.
    pub users: Vec<UserConfig>,
    /// Origins (`scheme://host[:port]`) allowed to call the API from a browser. Empty means the
    /// server's own origin only (the origin of [`VoiceConfig::public_base_url`]); `"*"` allows
    /// any origin.
    pub allowed_origins: Vec<String>,
    /// How long the far end of an outbound call (a number that is no configured user's DN)
    /// takes to answer, in milliseconds.
    pub outbound_answer_delay_ms: u64,
    /// The Bayeux endpoint that requires authentication on handshake.
    pub notifications_path: String,
    /// The server's own address as clients reach it, used in `uri` and `deviceUri`, e.g.
    /// `http://127.0.0.1:8080` (no trailing slash).
    pub public_base_url: String,
    /// Largest accepted request body, in bytes (HTTP 413 beyond). As on the Bayeux endpoint,
    /// the rest of an oversized body is read and discarded up to 4× this limit so the client
    /// can read the answer; beyond that the 413 goes at once and the connection is closed.
    pub max_body_bytes: usize,
    /// Time allowed to send a request body once the headers are in, in milliseconds (HTTP 408
    /// beyond, connection closed). The default is the transport's `body_read_timeout` (30 s):
    /// without it a client that stalls mid-body holds its connection forever.
    pub body_read_timeout_ms: u64,
    /// GWS's optional CSRF protection (`enableCsrfProtection`), off by default. When on, every
    /// authenticated answer carries `X-CSRF-HEADER: X-CSRF-TOKEN` and `X-CSRF-TOKEN: <token>`
    /// (the token of the session cookie, which lives as long as it), and a state-changing
    /// request (POST) without that token in its `X-CSRF-TOKEN` header is refused with HTTP 403,
    /// statusCode 3, "Missing or invalid Csrf token". Clients must then keep the session
    /// cookie.
    pub enable_csrf_protection: bool,
    /// Largest serialized `userData` of one call, in bytes (statusCode 1 beyond).
    pub max_user_data_bytes: usize,
    /// Calls one user may have that are not released (statusCode 2 beyond).
    pub max_calls_per_user: usize,
    /// Released calls kept per user, so `GET /me/calls/{id}` and operations on them still
    /// answer (the oldest are forgotten first).
    pub max_released_calls_per_user: usize,
    /// Name of the HTTP-only session cookie.
    pub session_cookie_name: String,
    /// Session cookies remembered at most, across users (the oldest are forgotten first).
    pub max_cookie_sessions: usize,
    /// Session cookies remembered at most per user.
    pub max_cookie_sessions_per_user: usize,
    /// A session cookie unused for this many seconds is forgotten.
    pub cookie_idle_timeout_secs: u64,
    /// Serves the test-control API under `/api/v2/test` (inbound calls from outside, far-end
    /// answer, busy and release, reset of all state). Off by default: when off, those paths
    /// answer 404/6 like any unknown path. For test doubles only; any configured user may use
    /// it.
    pub test_control: bool,
}

impl Default for VoiceConfig {
    fn default() -> Self {
        VoiceConfig {
            users: demo_users(),
            allowed_origins: Vec::new(),
            outbound_answer_delay_ms: 1000,
            notifications_path: "/api/v2/notifications".into(),
            public_base_url: "http://127.0.0.1:8080".into(),
            max_body_bytes: 64 * 1024,
            body_read_timeout_ms: 30_000,
            enable_csrf_protection: false,
            max_user_data_bytes: 32 * 1024,
            max_calls_per_user: 16,
            max_released_calls_per_user: 32,
            session_cookie_name: "JSESSIONID".into(),
            max_cookie_sessions: 10_000,
            max_cookie_sessions_per_user: 16,
            cookie_idle_timeout_secs: 3600,
            test_control: false,
        }
    }
}

fn demo_users() -> Vec<UserConfig> {
    let user = |name: &str, device: &str, dn: &str, recording: bool| UserConfig {
        name: name.into(),
        password: DEMO_PASSWORD.into(),
        device_id: device.into(),
        dn: dn.into(),
        features: if recording {
            vec![FEATURE_VOICE.into(), FEATURE_RECORDING.into()]
        } else {
            vec![FEATURE_VOICE.into()]
        },
    };
    vec![
        user(
            "agent1",
            "631608b3-ceb1-472b-ba05-2ae39555b0d1",
            "15000",
            true,
        ),
        user(
            "agent2",
            "0d6e4b1a-6f0c-4a37-9c57-3b2f0f8e5a01",
            "15001",
            true,
        ),
        user(
            "agent3",
            "9b1f2c7e-2d4a-4e8b-8f36-51c0a7d9e302",
            "15002",
            false,
        ),
    ]
}

/// Why a configuration is unusable.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// Two users share a name, a DN or a device id (the value is named).
    Duplicate(String),
    /// A field is empty or malformed (the field is named).
    Invalid(String),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Duplicate(v) => write!(
                f,
                "voice config: duplicate user name, DN or device id {v:?}"
            ),
            ConfigError::Invalid(m) => write!(f, "voice config: {m}"),
        }
    }
}

impl std::error::Error for ConfigError {}

impl VoiceConfig {
    /// Whether any configured user has the embedded demo credentials (a host should warn).
    pub fn uses_demo_credentials(&self) -> bool {
        let demo = demo_users();
        self.users.iter().any(|u| {
            demo.iter()
                .any(|d| d.name == u.name && d.password == u.password)
        })
    }

    /// Checks uniqueness and the shape of the fields.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut names = HashSet::new();
        let mut dns = HashSet::new();
        let mut devices = HashSet::new();
        for u in &self.users {
            if u.name.is_empty() || u.name.contains(':') {
                return Err(ConfigError::Invalid(format!(
                    "user name {:?} must be non-empty and free of ':'",
                    u.name
                )));
            }
            if u.dn.is_empty() || u.device_id.is_empty() {
                return Err(ConfigError::Invalid(format!(
                    "user {:?} needs a dn and a device_id",
                    u.name
                )));
            }
            if !names.insert(u.name.as_str()) {
                return Err(ConfigError::Duplicate(u.name.clone()));
            }
            if !dns.insert(u.dn.as_str()) {
                return Err(ConfigError::Duplicate(u.dn.clone()));
            }
            if !devices.insert(u.device_id.to_ascii_lowercase()) {
                return Err(ConfigError::Duplicate(u.device_id.clone()));
            }
        }
        if !self.notifications_path.starts_with('/') {
            return Err(ConfigError::Invalid(
                "notifications_path must start with '/'".into(),
            ));
        }
        if origin_of(&self.public_base_url).is_none() {
            return Err(ConfigError::Invalid(format!(
                "public_base_url {:?} must look like http://host[:port]",
                self.public_base_url
            )));
        }
        if self.session_cookie_name.is_empty()
            || !self
                .session_cookie_name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(ConfigError::Invalid(
                "session_cookie_name must be ASCII letters, digits, '_' or '-'".into(),
            ));
        }
        if self.max_body_bytes == 0
            || self.max_cookie_sessions == 0
            || self.body_read_timeout_ms == 0
        {
            return Err(ConfigError::Invalid(
                "max_body_bytes, max_cookie_sessions and body_read_timeout_ms must be positive"
                    .into(),
            ));
        }
        Ok(())
    }

    /// The origins effectively allowed: [`VoiceConfig::allowed_origins`], or the origin of
    /// [`VoiceConfig::public_base_url`] when that list is empty. `"*"` means any origin.
    pub fn effective_origins(&self) -> Vec<String> {
        if self.allowed_origins.is_empty() {
            origin_of(&self.public_base_url).into_iter().collect()
        } else {
            self.allowed_origins
                .iter()
                .map(|o| o.trim_end_matches('/').to_owned())
                .collect()
        }
    }

    /// The public base URL without a trailing slash.
    pub(crate) fn base_url(&self) -> &str {
        self.public_base_url.trim_end_matches('/')
    }
}

/// `scheme://authority` of a URL, or `None` when it is not an http(s) URL.
pub(crate) fn origin_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return None;
    }
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() {
        return None;
    }
    Some(format!("{}://{}", scheme.to_ascii_lowercase(), authority))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_default_is_valid_and_flagged() {
        let c = VoiceConfig::default();
        c.validate().unwrap();
        assert!(c.uses_demo_credentials());
        assert_eq!(c.users.len(), 3);
        assert!(c.users[0].has_feature(FEATURE_RECORDING));
        assert!(!c.users[2].has_feature(FEATURE_RECORDING));
        assert_eq!(c.effective_origins(), vec!["http://127.0.0.1:8080"]);
    }

    #[test]
    fn duplicates_are_refused() {
        let mut c = VoiceConfig::default();
        c.users[1].dn = "15000".into();
        assert_eq!(c.validate(), Err(ConfigError::Duplicate("15000".into())));
    }

    #[test]
    fn deserializes_partial_toml_and_json() {
        let c: VoiceConfig = toml::from_str(
            r#"
            allowed_origins = ["http://localhost:3000"]
            outbound_answer_delay_ms = 5
            [[users]]
            name = "alice"
            password = "s3cret"
            device_id = "11111111-2222-3333-4444-555555555555"
            dn = "7000"
            features = ["api-voice"]
            "#,
        )
        .unwrap();
        c.validate().unwrap();
        assert!(!c.uses_demo_credentials());
        assert_eq!(c.users.len(), 1);
        assert_eq!(c.notifications_path, "/api/v2/notifications");
        let j: VoiceConfig =
            serde_json::from_str(r#"{"public_base_url":"https://gws.example"}"#).unwrap();
        assert_eq!(j.users.len(), 3);
        assert_eq!(j.effective_origins(), vec!["https://gws.example"]);
        assert!(serde_json::from_str::<VoiceConfig>(r#"{"typo":1}"#).is_err());
        let limits: VoiceConfig = toml::from_str(
            "body_read_timeout_ms = 250\nmax_body_bytes = 100\nenable_csrf_protection = true",
        )
        .unwrap();
        assert_eq!(
            (
                limits.body_read_timeout_ms,
                limits.max_body_bytes,
                limits.enable_csrf_protection
            ),
            (250, 100, true)
        );
    }

    #[test]
    fn limits_default_like_the_transport() {
        let c = VoiceConfig::default();
        assert_eq!(
            std::time::Duration::from_millis(c.body_read_timeout_ms),
            bayeux_transport::TransportConfig::default().body_read_timeout
        );
        assert_eq!(c.max_body_bytes, 64 * 1024);
        assert!(!c.enable_csrf_protection);
        let zero = VoiceConfig {
            body_read_timeout_ms: 0,
            ..VoiceConfig::default()
        };
        assert!(matches!(zero.validate(), Err(ConfigError::Invalid(_))));
    }

    #[test]
    fn origin_of_urls() {
        assert_eq!(origin_of("http://a:1/x").as_deref(), Some("http://a:1"));
        assert_eq!(origin_of("HTTPS://b").as_deref(), Some("https://b"));
        assert_eq!(origin_of("ftp://c"), None);
        assert_eq!(origin_of("nope"), None);
    }
}
