//! Counters and latency histograms exported in the Prometheus text format.
//!
//! The histograms are hand-written rather than taken from a metrics crate: three fixed-bucket
//! histograms need no registry, and each observation is two relaxed atomic additions (its
//! bucket and the sum), with no lock and no allocation.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bayeux_core::{Engine, Framed, Hold, Message};

use crate::shared::Shared;

/// The upper bounds of the histogram buckets, in microseconds: 50 µs to 60 s.
const BOUNDS_US: [u64; 19] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000, 30_000_000, 60_000_000,
];

/// [`BOUNDS_US`] as the `le` labels of the exposition, in seconds.
const BOUNDS_LE: [&str; 19] = [
    "5e-05", "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05",
    "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "30", "60",
];

/// A latency histogram with fixed buckets (50 µs to 60 s, and `+Inf`), rendered in seconds.
///
/// Recording is lock-free and allocation-free: one relaxed atomic addition to the bucket the
/// value falls in and one to the sum (kept in microseconds; none for a zero). The count is the sum of the
/// buckets, so a scrape may see the sum and the buckets of an observation in progress apart.
#[derive(Debug)]
pub struct Histogram {
    /// Observations per bucket (not cumulative); the last one is `+Inf`.
    buckets: [AtomicU64; BOUNDS_US.len() + 1],
    sum_us: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Histogram {
        Histogram {
            buckets: [const { AtomicU64::new(0) }; BOUNDS_US.len() + 1],
            sum_us: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        self.observe_n(d, 1);
    }

    /// Records `n` observations of the same value (a batch timed once).
    pub fn observe_n(&self, d: Duration, n: u64) {
        if n == 0 {
            return;
        }
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        // The first bucket whose bound is at least the value (`le`: less than or equal).
        let i = BOUNDS_US.partition_point(|&b| b < us);
        self.buckets[i].fetch_add(n, Ordering::Relaxed);
        // A zero (a direct write's wait) costs one atomic addition, not two.
        if us > 0 {
            self.sum_us
                .fetch_add(us.saturating_mul(n), Ordering::Relaxed);
        }
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// The sum of the observations so far (microsecond resolution).
    pub fn sum(&self) -> Duration {
        Duration::from_micros(self.sum_us.load(Ordering::Relaxed))
    }

    /// Appends the histogram as Prometheus text: `# HELP`, `# TYPE`, the cumulative
    /// `{name}_bucket{le=".."}` lines up to `+Inf`, `{name}_sum` (seconds) and `{name}_count`.
    pub fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0u64;
        for (i, b) in self.buckets.iter().enumerate() {
            cumulative += b.load(Ordering::Relaxed);
            let le = BOUNDS_LE.get(i).copied().unwrap_or("+Inf");
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
        }
        let sum = self.sum_us.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "{name}_sum {}.{:06}\n{name}_count {cumulative}",
            sum / 1_000_000,
            sum % 1_000_000
        );
    }
}

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
    /// `bayeux_publish_to_queued_seconds`: from reading a batch that publishes (the `now` the
    /// transport hands the engine) to the engine returning, its messages then in every
    /// recipient's queue. Timed once per batch, observed once per published message.
    pub publish_to_queued: Histogram,
    /// `bayeux_queued_to_written_seconds`: how long the oldest message of a write waited in
    /// its session queue, observed once per write (WebSocket: when the frame's write completes;
    /// long-polling: when the connect reply is handed to the HTTP writer). Messages queued
    /// outside a client's request (server-side and backplane publishes) carry no time: a queue
    /// that starts with one is not timed. When a full queue drops its oldest messages, the time
    /// stays that of the first message of the run (an upper bound). For WebSocket sessions
    /// with the ack extension, only the replies of held connects are timed. A delivery that its
    /// publisher wrote to an idle WebSocket itself never waited in a queue: it counts as 0.
    pub queued_to_written: Histogram,
    /// `bayeux_connect_hold_seconds`: how long held `/meta/connect`s were held, from the
    /// request that brought the connect to its answer (messages, deadline, a newer connect or
    /// shutdown), both transports. Connects whose client went away are not counted.
    pub connect_hold: Histogram,
}

impl Metrics {
    pub(crate) fn add_in(&self, n: usize) {
        self.messages_in.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub(crate) fn add_out(&self, n: usize) {
        self.messages_out.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// A batch of `publishes` messages, read at `read`, has been handled by the engine.
    pub(crate) fn published(&self, read: Instant, publishes: u64) {
        if publishes > 0 {
            self.publish_to_queued.observe_n(read.elapsed(), publishes);
        }
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
        self.publish_to_queued.render(
            &mut out,
            "bayeux_publish_to_queued_seconds",
            "From reading a batch of publishes to its messages being in every recipient's queue, per published message.",
        );
        self.queued_to_written.render(
            &mut out,
            "bayeux_queued_to_written_seconds",
            "How long the oldest message of each write waited in its session queue.",
        );
        self.connect_hold.render(
            &mut out,
            "bayeux_connect_hold_seconds",
            "How long held /meta/connect requests were held before their answer.",
        );
        out
    }
}

/// How many messages of `batch` publish (any channel outside `/meta/**`): counted before the
/// engine takes the batch, for [`Metrics::published`].
pub(crate) fn publishes(batch: &[Message]) -> u64 {
    batch
        .iter()
        .filter(|m| {
            m.channel
                .as_deref()
                .is_some_and(|c| !c.starts_with("/meta/"))
        })
        .count() as u64
}

/// Answers a held connect now, recording how long it was held.
pub(crate) fn finish_hold(shared: &Shared, hold: Hold) -> Vec<Framed> {
    let now = Instant::now();
    shared
        .metrics
        .connect_hold
        .observe(now.saturating_duration_since(hold.since()));
    shared.engine.finish_hold(hold, now)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(h: &Histogram) -> Vec<u64> {
        h.buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect()
    }

    #[test]
    fn bounds_and_labels_agree() {
        assert_eq!(BOUNDS_US.len(), BOUNDS_LE.len());
        for (us, le) in BOUNDS_US.iter().zip(BOUNDS_LE) {
            let secs: f64 = le.parse().unwrap();
            assert_eq!((secs * 1e6).round() as u64, *us, "{le}");
        }
        assert!(BOUNDS_US.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn a_value_on_a_bound_falls_in_that_bucket() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(50)); // le=5e-05
        h.observe(Duration::from_micros(51)); // le=0.0001
        h.observe(Duration::ZERO); // le=5e-05
        h.observe(Duration::from_millis(1)); // le=0.001 (index 4)
        h.observe(Duration::from_secs(60)); // le=60 (last bound)
        h.observe(Duration::from_secs(61)); // +Inf
        let c = counts(&h);
        assert_eq!(c[0], 2);
        assert_eq!(c[1], 1);
        assert_eq!(c[4], 1);
        assert_eq!(c[18], 1);
        assert_eq!(c[19], 1);
        assert_eq!(h.count(), 6);
        assert_eq!(
            h.sum(),
            Duration::from_micros(50 + 51 + 1_000 + 121_000_000)
        );
    }

    #[test]
    fn observe_n_counts_n_times() {
        let h = Histogram::default();
        h.observe_n(Duration::from_micros(300), 4);
        h.observe_n(Duration::from_micros(300), 0);
        assert_eq!(counts(&h)[3], 4);
        assert_eq!(h.count(), 4);
        assert_eq!(h.sum(), Duration::from_micros(1_200));
    }

    #[test]
    fn renders_cumulative_buckets_sum_and_count() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(70));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(100));
        let mut out = String::new();
        h.render(&mut out, "x_seconds", "Help text.");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "# HELP x_seconds Help text.");
        assert_eq!(lines[1], "# TYPE x_seconds histogram");
        assert_eq!(lines[2], "x_seconds_bucket{le=\"5e-05\"} 0");
        assert_eq!(lines[3], "x_seconds_bucket{le=\"0.0001\"} 1");
        assert_eq!(lines[7], "x_seconds_bucket{le=\"0.0025\"} 1");
        assert_eq!(lines[8], "x_seconds_bucket{le=\"0.005\"} 2");
        assert_eq!(lines[20], "x_seconds_bucket{le=\"60\"} 2");
        assert_eq!(lines[21], "x_seconds_bucket{le=\"+Inf\"} 3");
        assert_eq!(lines[22], "x_seconds_sum 100.003070");
        assert_eq!(lines[23], "x_seconds_count 3");
        assert_eq!(lines.len(), 24);
    }

    #[test]
    fn publishes_are_messages_outside_meta() {
        let batch = bayeux_core::decode_batch(
            br#"[{"channel":"/meta/connect"},{"channel":"/a"},{"channel":"/service/x"},{}]"#,
            &bayeux_core::Limits::default(),
        )
        .unwrap();
        assert_eq!(publishes(&batch), 2);
    }
}
