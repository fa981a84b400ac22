//! Settings of the Redis backplane: plain data with defaults, deserializable from the server's
//! TOML file (`[redis]`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How the backplane reaches Redis and how much it buffers. Every field has a default; without
/// a `url` there is no backplane and the server stays single-node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://[user:password@]host:port[/db]`. `None`: single node, no Redis.
    pub url: Option<String>,
    /// Prefix of every Redis channel this backplane uses (`<namespace>:c:<channel>` for
    /// broadcasts, `<namespace>:u:<principal>` for per-user deliveries), so that several
    /// clusters can share one Redis.
    pub namespace: String,
    /// Messages waiting for the publisher task; beyond it a cross-node publish is dropped and
    /// counted (the local path never waits for Redis).
    pub publish_queue: usize,
    /// Largest number of messages sent to Redis in one pipeline.
    pub publish_batch: usize,
    /// Messages received from Redis waiting to be fanned out locally; beyond it they are
    /// dropped and counted (a node that falls behind).
    pub receive_queue: usize,
    /// How long one Redis command (a publish pipeline, a subscription, a ping) may take, ms.
    pub response_timeout_ms: u64,
    /// How long one connection attempt may take, ms.
    pub connect_timeout_ms: u64,
    /// First delay between reconnection attempts, ms; it doubles up to `retry_max_ms`.
    pub retry_min_ms: u64,
    /// Largest delay between reconnection attempts, ms.
    pub retry_max_ms: u64,
    /// Period of the health check (a `PING` on the subscription connection) while Redis is
    /// reachable, ms.
    pub health_interval_ms: u64,
    /// Largest message accepted from Redis, in bytes (the JSON message, not counting the frame
    /// header); larger ones are dropped and counted (`rejected_total{reason="too_large"}`).
    /// Redis is not trusted to bound what it sends, and a received message is parsed and
    /// re-serialized. Keep it at least the server's `max_body_bytes` and
    /// `max_ws_message_bytes` (1 MiB each by default), or messages that clients may publish on
    /// one node are lost on the others.
    pub max_message_bytes: usize,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: None,
            namespace: "bayeux".into(),
            publish_queue: 16_384,
            publish_batch: 256,
            receive_queue: 16_384,
            response_timeout_ms: 1_000,
            connect_timeout_ms: 1_000,
            retry_min_ms: 100,
            retry_max_ms: 2_000,
            health_interval_ms: 1_000,
            max_message_bytes: 1 << 20,
        }
    }
}

impl RedisConfig {
    /// A configuration for `url` with every other setting at its default.
    pub fn with_url(url: impl Into<String>) -> RedisConfig {
        RedisConfig {
            url: Some(url.into()),
            ..RedisConfig::default()
        }
    }

    /// Whether a backplane is configured.
    pub fn enabled(&self) -> bool {
        self.url.is_some()
    }

    /// Checks the values that have no sensible meaning (empty namespace, zero sizes or times).
    pub fn validate(&self) -> Result<(), String> {
        if self.namespace.is_empty() {
            return Err("redis.namespace must not be empty".into());
        }
        let sizes = [
            ("publish_queue", self.publish_queue),
            ("publish_batch", self.publish_batch),
            ("receive_queue", self.receive_queue),
            ("max_message_bytes", self.max_message_bytes),
        ];
        for (name, v) in sizes {
            if v == 0 {
                return Err(format!("redis.{name} must be at least 1"));
            }
        }
        let times = [
            ("response_timeout_ms", self.response_timeout_ms),
            ("connect_timeout_ms", self.connect_timeout_ms),
            ("retry_min_ms", self.retry_min_ms),
            ("retry_max_ms", self.retry_max_ms),
            ("health_interval_ms", self.health_interval_ms),
        ];
        for (name, v) in times {
            if v == 0 {
                return Err(format!("redis.{name} must be at least 1"));
            }
        }
        if self.retry_max_ms < self.retry_min_ms {
            return Err("redis.retry_max_ms must not be below redis.retry_min_ms".into());
        }
        Ok(())
    }

    /// The URL without its password, for logs.
    pub fn redacted_url(&self) -> String {
        self.url.as_deref().map(redact).unwrap_or_default()
    }

    pub(crate) fn response_timeout(&self) -> Duration {
        Duration::from_millis(self.response_timeout_ms)
    }

    pub(crate) fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    pub(crate) fn retry_min(&self) -> Duration {
        Duration::from_millis(self.retry_min_ms)
    }

    pub(crate) fn retry_max(&self) -> Duration {
        Duration::from_millis(self.retry_max_ms)
    }

    pub(crate) fn health_interval(&self) -> Duration {
        Duration::from_millis(self.health_interval_ms)
    }
}

/// `redis://user:secret@host` -> `redis://user:***@host`.
fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_owned();
    };
    let userinfo = &rest[..at];
    let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
    if userinfo.contains(':') {
        format!("{}{user}:***{}", &url[..scheme_end], &rest[at..])
    } else {
        url.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_disabled() {
        let c = RedisConfig::default();
        assert!(!c.enabled());
        assert_eq!(c.validate(), Ok(()));
        assert!(RedisConfig::with_url("redis://127.0.0.1:6379").enabled());
    }

    #[test]
    fn toml_section_with_unknown_keys_is_refused() {
        let c: RedisConfig = toml::from_str("url = \"redis://h:1\"\npublish_queue = 8").unwrap();
        assert_eq!(c.url.as_deref(), Some("redis://h:1"));
        assert_eq!(c.publish_queue, 8);
        assert_eq!(c.namespace, "bayeux");
        assert!(toml::from_str::<RedisConfig>("nope = 1").is_err());
    }

    #[test]
    fn zero_sizes_and_empty_namespace_are_refused() {
        let c = RedisConfig {
            publish_queue: 0,
            ..RedisConfig::default()
        };
        assert!(c.validate().is_err());
        let mut c = RedisConfig::default();
        c.namespace.clear();
        assert!(c.validate().is_err());
        let c = RedisConfig {
            retry_max_ms: 1,
            ..RedisConfig::default()
        };
        assert!(c.validate().is_err());
    }

    #[test]
    fn passwords_stay_out_of_logs() {
        assert_eq!(redact("redis://u:pw@h:1/0"), "redis://u:***@h:1/0");
        assert_eq!(redact("redis://:pw@h:1"), "redis://:***@h:1");
        assert_eq!(redact("redis://h:1"), "redis://h:1");
        assert_eq!(redact("redis://u@h:1"), "redis://u@h:1");
        assert_eq!(redact("nonsense"), "nonsense");
    }
}
