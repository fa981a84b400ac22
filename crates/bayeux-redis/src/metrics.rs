//! Backplane counters, rendered in the Prometheus text format next to the server's own.

use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::wire::Invalid;

/// Counters of one backplane. All are monotonic except the gauges named so.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Gauge: whether Redis answered the last command.
    pub connected: AtomicBool,
    /// Times Redis became unreachable (including unreachable at start).
    pub outages: AtomicU64,
    /// Messages published to Redis.
    pub published: AtomicU64,
    /// Cross-node publishes dropped because the publish queue was full (slow Redis).
    pub publish_dropped_queue_full: AtomicU64,
    /// Cross-node publishes dropped because Redis was unreachable, failed them or did not
    /// confirm them in time (a timed-out publish may still reach Redis later: it is never
    /// retried, so it can arrive at most once).
    pub publish_dropped_unavailable: AtomicU64,
    /// Messages received from Redis (including those skipped below).
    pub received: AtomicU64,
    /// Received messages dropped because the receive queue was full (this node fell behind).
    pub receive_dropped: AtomicU64,
    /// This node's own messages coming back, skipped.
    pub own_skipped: AtomicU64,
    /// Second copies of one message (exact subscription and glob), and messages arriving after
    /// a later one of the same origin (order is kept by dropping them), skipped.
    pub duplicates: AtomicU64,
    /// Received messages that no local subscription matches (globs are wider than patterns).
    pub unmatched: AtomicU64,
    /// Corrupt, forged or foreign messages on a backplane channel, ignored: the sum of
    /// `rejected` (kept as its own counter for dashboards that predate the breakdown).
    pub invalid: AtomicU64,
    /// The same messages by reason, indexed by [`Invalid::index`]: see [`Metrics::rejected`].
    pub rejected: [AtomicU64; Invalid::ALL.len()],
    /// Local deliveries made from received messages.
    pub delivered: AtomicU64,
    /// Gauge: Redis subscriptions (channels and globs) in place.
    pub subscriptions: AtomicU64,
    /// Gauge: messages waiting in the publish queue.
    pub publish_queue: AtomicU64,
}

pub(crate) fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

impl Metrics {
    /// Cross-node publishes dropped, for any reason.
    pub fn publish_dropped(&self) -> u64 {
        self.publish_dropped_queue_full.load(Ordering::Relaxed)
            + self.publish_dropped_unavailable.load(Ordering::Relaxed)
    }

    /// Received messages refused for `reason`.
    pub fn rejected(&self, reason: Invalid) -> u64 {
        self.rejected[reason.index()].load(Ordering::Relaxed)
    }

    /// Counts one refused message.
    pub(crate) fn reject(&self, reason: Invalid) {
        add(&self.invalid, 1);
        add(&self.rejected[reason.index()], 1);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(2048);
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut one = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        one(
            "bayeux_redis_connected",
            "gauge",
            "Whether Redis answered the backplane's last command.",
            self.connected.load(Ordering::Relaxed) as u64,
        );
        one(
            "bayeux_redis_outages_total",
            "counter",
            "Times Redis became unreachable.",
            r(&self.outages),
        );
        one(
            "bayeux_redis_published_total",
            "counter",
            "Messages published to Redis.",
            r(&self.published),
        );
        let _ = writeln!(
            out,
            "# HELP bayeux_redis_publish_dropped_total Cross-node publishes dropped (local delivery was not affected).\n\
             # TYPE bayeux_redis_publish_dropped_total counter\n\
             bayeux_redis_publish_dropped_total{{reason=\"queue_full\"}} {}\n\
             bayeux_redis_publish_dropped_total{{reason=\"unavailable\"}} {}",
            r(&self.publish_dropped_queue_full),
            r(&self.publish_dropped_unavailable)
        );
        let mut one = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        one(
            "bayeux_redis_received_total",
            "counter",
            "Messages received from Redis.",
            r(&self.received),
        );
        one(
            "bayeux_redis_receive_dropped_total",
            "counter",
            "Received messages dropped at the full receive queue.",
            r(&self.receive_dropped),
        );
        one(
            "bayeux_redis_own_skipped_total",
            "counter",
            "Own messages echoed by Redis, skipped.",
            r(&self.own_skipped),
        );
        one(
            "bayeux_redis_duplicates_total",
            "counter",
            "Second copies and late messages of an origin, skipped.",
            r(&self.duplicates),
        );
        one(
            "bayeux_redis_unmatched_total",
            "counter",
            "Received messages matching no local subscription.",
            r(&self.unmatched),
        );
        one(
            "bayeux_redis_invalid_total",
            "counter",
            "Corrupt, forged or foreign messages on backplane channels, ignored (all reasons).",
            r(&self.invalid),
        );
        let _ = writeln!(
            out,
            "# HELP bayeux_redis_rejected_total Messages from Redis refused, by reason (never delivered).\n\
             # TYPE bayeux_redis_rejected_total counter"
        );
        for reason in Invalid::ALL {
            let _ = writeln!(
                out,
                "bayeux_redis_rejected_total{{reason=\"{}\"}} {}",
                reason.label(),
                self.rejected(reason)
            );
        }
        let mut one = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        one(
            "bayeux_redis_delivered_total",
            "counter",
            "Local deliveries made from messages of other nodes.",
            r(&self.delivered),
        );
        one(
            "bayeux_redis_subscriptions",
            "gauge",
            "Redis channels and patterns subscribed.",
            r(&self.subscriptions),
        );
        one(
            "bayeux_redis_publish_queue",
            "gauge",
            "Messages waiting to be published to Redis.",
            r(&self.publish_queue),
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_counter_once_with_help_and_type() {
        let m = Metrics::default();
        add(&m.publish_dropped_queue_full, 2);
        add(&m.publish_dropped_unavailable, 3);
        assert_eq!(m.publish_dropped(), 5);
        let text = m.render();
        assert!(text.contains("bayeux_redis_publish_dropped_total{reason=\"queue_full\"} 2\n"));
        assert!(text.contains("bayeux_redis_publish_dropped_total{reason=\"unavailable\"} 3\n"));
        assert!(text.contains("bayeux_redis_connected 0\n"));
        m.reject(Invalid::NotBroadcast);
        m.reject(Invalid::NotBroadcast);
        m.reject(Invalid::TooLarge);
        assert_eq!(m.rejected(Invalid::NotBroadcast), 2);
        let text = m.render();
        assert!(text.contains("bayeux_redis_rejected_total{reason=\"not_broadcast\"} 2\n"));
        assert!(text.contains("bayeux_redis_rejected_total{reason=\"too_large\"} 1\n"));
        assert!(text.contains("bayeux_redis_rejected_total{reason=\"malformed\"} 0\n"));
        assert!(text.contains("bayeux_redis_invalid_total 3\n"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (name, value) = line.rsplit_once(' ').unwrap();
            assert!(name.starts_with("bayeux_redis_"), "{line}");
            value.parse::<u64>().unwrap();
        }
        assert_eq!(
            text.matches("# TYPE").count(),
            text.matches("# HELP").count()
        );
    }
}
