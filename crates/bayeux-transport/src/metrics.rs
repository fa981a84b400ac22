//! Counters exported in the Prometheus text format.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use bayeux_core::Engine;

/// Transport counters. The engine's own counters are added by [`Metrics::render`].
#[derive(Debug, Default)]
pub struct Metrics {
    /// Open TCP connections accepted by [`crate::serve`], upgraded WebSockets included.
    pub connections: AtomicI64,
    /// Open WebSocket connections.
    pub websockets: AtomicI64,
    /// Long-polling and callback-polling requests handled.
    pub http_requests: AtomicU64,
    /// Bayeux messages received by the transports.
    pub messages_in: AtomicU64,
    /// Bayeux messages written (replies and deliveries).
    pub messages_out: AtomicU64,
    /// Connections refused at the connection limit.
    pub connections_refused: AtomicU64,
    /// Requests refused for size (HTTP 413, WebSocket close 1009).
    pub oversize: AtomicU64,
    /// Requests a browser marked as coming from another origin, refused on a credentialed
    /// endpoint (HTTP 403; see [`crate::Endpoint::authenticator`]).
    pub cross_site_refused: AtomicU64,
}

impl Metrics {
    pub(crate) fn add_in(&self, n: usize) {
        self.messages_in.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub(crate) fn add_out(&self, n: usize) {
        self.messages_out.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// The Prometheus text exposition of these counters and the engine's.
    pub fn render(&self, engine: &Engine) -> String {
        let s = engine.stats();
        let mut out = String::with_capacity(2048);
        let mut line = |name: &str, kind: &str, help: &str, value: i64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed) as i64;
        line(
            "bayeux_sessions",
            "gauge",
            "Live sessions.",
            engine.session_count() as i64,
        );
        line(
            "bayeux_channels",
            "gauge",
            "Subscribed channel names and patterns.",
            engine.channel_count() as i64,
        );
        line(
            "bayeux_held_connects",
            "gauge",
            "Connects currently held.",
            r(&s.held_connects),
        );
        line(
            "bayeux_sessions_created_total",
            "counter",
            "Sessions created.",
            r(&s.sessions_created),
        );
        line(
            "bayeux_sessions_removed_total",
            "counter",
            "Sessions removed.",
            r(&s.sessions_removed),
        );
        line(
            "bayeux_engine_messages_in_total",
            "counter",
            "Messages handled by the engine.",
            r(&s.messages_in),
        );
        line(
            "bayeux_deliveries_total",
            "counter",
            "Messages queued to sessions.",
            r(&s.deliveries),
        );
        line(
            "bayeux_queue_drops_total",
            "counter",
            "Messages dropped at a full session queue.",
            r(&s.queue_drops),
        );
        line(
            "bayeux_unacked_drops_total",
            "counter",
            "Of the queue drops, messages sent to an ack-extension client and not yet acknowledged.",
            r(&s.unacked_drops),
        );
        line(
            "bayeux_connections",
            "gauge",
            "Open TCP connections.",
            self.connections.load(Ordering::Relaxed),
        );
        line(
            "bayeux_websockets",
            "gauge",
            "Open WebSocket connections.",
            self.websockets.load(Ordering::Relaxed),
        );
        line(
            "bayeux_http_requests_total",
            "counter",
            "Polling requests handled.",
            r(&self.http_requests),
        );
        line(
            "bayeux_messages_in_total",
            "counter",
            "Bayeux messages received.",
            r(&self.messages_in),
        );
        line(
            "bayeux_messages_out_total",
            "counter",
            "Bayeux messages written.",
            r(&self.messages_out),
        );
        line(
            "bayeux_connections_refused_total",
            "counter",
            "Connections refused at the limit.",
            r(&self.connections_refused),
        );
        line(
            "bayeux_oversize_total",
            "counter",
            "Requests refused for size.",
            r(&self.oversize),
        );
        line(
            "bayeux_cross_site_refused_total",
            "counter",
            "Cross-site browser requests refused on credentialed endpoints.",
            r(&self.cross_site_refused),
        );
        out
    }
}
