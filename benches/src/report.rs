//! What a run measured, and the three ways it is written: one JSON line per run, a Markdown
//! table over many runs, and SVG plots.

use serde::{Deserialize, Serialize};

/// Latency percentiles, microseconds.
#[derive(Debug, Default, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Samples recorded (deliveries after the warm-up, or cycles).
    pub samples: u64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Maximum.
    pub max: u64,
}

impl Latency {
    /// Percentiles of `h`.
    pub fn of(h: &hdrhistogram::Histogram<u64>) -> Latency {
        Latency {
            samples: h.len(),
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

/// One run of one scenario against one server. Fields that a scenario does not measure stay
/// `None` (and are left out of the JSON line).
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    /// `fanout`, `channels`, `churn` or `idle`.
    pub scenario: String,
    /// Which server (a free label: `bayeux-server`, `faye`, ...).
    pub server: String,
    /// `websocket` or `long-polling` (of the subscribers; see `publish_transport`).
    pub transport: String,
    /// Transport of the publishers, when it differs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish_transport: Option<String>,
    /// The endpoint URL (several nodes: their URLs separated by spaces).
    pub url: String,
    /// Server nodes the sessions were spread over, when more than one (CPU and memory figures
    /// are then sums over the nodes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<usize>,
    /// Subscribed sessions (fanout, channels) or idle sessions.
    pub sessions: usize,
    /// Publishing sessions (fanout, channels) or concurrent workers (churn).
    pub publishers: usize,
    /// Publishes per second asked for in total; 0 means as fast as the window allows.
    pub target_rate: f64,
    /// Publishes in flight per publisher (the bound in as-fast-as-possible mode).
    pub inflight: usize,
    /// Payload padding, bytes.
    pub payload_bytes: usize,
    /// Measured seconds: from the first publish to the last delivery (or the run time).
    pub duration_s: f64,
    /// Publishes written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published: Option<u64>,
    /// Deliveries expected (publishes x recipients).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<u64>,
    /// Deliveries received (duplicates included).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered: Option<u64>,
    /// Expected deliveries never received.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lost: Option<u64>,
    /// Deliveries received more than once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duplicated: Option<u64>,
    /// Deliveries that arrived after a later one of the same publisher and channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reordered: Option<u64>,
    /// Deliveries per second over `duration_s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deliveries_per_s: Option<f64>,
    /// Offered load in deliveries per second (target rate x recipients per publish).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offered_deliveries_per_s: Option<f64>,
    /// Publish-to-delivery latency (fanout, channels) or cycle time (churn), microseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_us: Option<Latency>,
    /// Several nodes: latency of deliveries whose publisher was on the subscriber's node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_same_node_us: Option<Latency>,
    /// Several nodes: latency of deliveries that crossed from the publisher's node to another
    /// (the Redis hop included).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_cross_node_us: Option<Latency>,
    /// Handshake + subscribe + disconnect cycles completed (churn).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cycles: Option<u64>,
    /// Cycles per second (churn).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cycles_per_s: Option<f64>,
    /// Server CPU seconds over the measured interval (needs the server's PID).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_cpu_s: Option<f64>,
    /// Server resident memory at the end, bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_rss_bytes: Option<u64>,
    /// Server peak resident memory since it started, bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_peak_rss_bytes: Option<u64>,
    /// Deliveries per server CPU-second: the efficiency figure the targets use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deliveries_per_server_cpu_s: Option<f64>,
    /// Churn cycles per server CPU-second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cycles_per_server_cpu_s: Option<f64>,
    /// Server RSS growth per idle session, bytes (idle).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_rss_per_session_bytes: Option<f64>,
    /// The generator's own CPU seconds over the measured interval.
    pub generator_cpu_s: f64,
    /// The generator's CPU use in cores (CPU seconds / wall seconds): near the machine's core
    /// count means the generator, not the server, was the limit.
    pub generator_cpu_cores: f64,
    /// The server's CPU use in cores over the interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_cpu_cores: Option<f64>,
    /// The machine's 1-minute load average at the end of the run: on a shared machine, a load
    /// above the core count means the figures (latency above all) include waiting for a CPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_avg_1m: Option<f64>,
    /// Errors seen (first few).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    /// Unix time of the end of the run, seconds.
    pub finished_unix_s: u64,
}

impl RunReport {
    /// Whether the run saw no loss, duplicate, reordering or error.
    pub fn clean(&self) -> bool {
        self.errors.is_empty()
            && self.lost.unwrap_or(0) == 0
            && self.duplicated.unwrap_or(0) == 0
            && self.reordered.unwrap_or(0) == 0
    }

    /// The JSON line.
    pub fn json_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Reads JSON lines (blank and unparsable lines are skipped).
pub fn read_json_lines(text: &str) -> Vec<RunReport> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn si(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if v >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

fn ms(us: u64) -> String {
    if us >= 10_000 {
        format!("{:.0}", us as f64 / 1000.0)
    } else {
        format!("{:.2}", us as f64 / 1000.0)
    }
}

fn mib(b: u64) -> String {
    format!("{:.0}", b as f64 / (1024.0 * 1024.0))
}

fn opt<T>(v: Option<T>, f: impl Fn(T) -> String) -> String {
    v.map(f).unwrap_or_else(|| "–".into())
}

fn short_transport(t: &str) -> &str {
    match t {
        "websocket" => "WS",
        "long-polling" => "LP",
        other => other,
    }
}

/// The scenario column: what was run, with its size and offered rate.
pub fn describe(r: &RunReport) -> String {
    let rate = if r.target_rate > 0.0 {
        match r.offered_deliveries_per_s {
            Some(o) => format!(" @{}/s", si(o)),
            None => format!(" @{}/s", si(r.target_rate)),
        }
    } else {
        String::new()
    };
    let nodes = match r.nodes {
        Some(n) if n > 1 => format!(" on {n} nodes"),
        _ => String::new(),
    };
    match r.scenario.as_str() {
        "fanout" => format!(
            "fanout {} subs × {} pubs, {} in flight{rate}{nodes}",
            r.sessions, r.publishers, r.inflight
        ),
        "channels" => format!(
            "channels {} sessions × {} pubs, {} in flight{rate}{nodes}",
            r.sessions, r.publishers, r.inflight
        ),
        "churn" => format!("churn {} workers", r.publishers),
        "idle" => format!("idle {} sessions", r.sessions),
        other => other.to_owned(),
    }
}

/// A Markdown table of `runs`, in the order given.
pub fn markdown(runs: &[RunReport]) -> String {
    let mut out = String::new();
    out.push_str("| server | tr | scenario | rate /s | per server CPU-s | p50 ms | p99 ms | p99.9 ms | max ms | lost / dup / reord | server CPU (cores) | server peak RSS MiB | RSS/session | generator CPU (cores) | load |\n");
    out.push_str("|---|---|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|\n");
    for r in runs {
        let (rate, per_cpu) = match r.scenario.as_str() {
            "churn" => (opt(r.cycles_per_s, si), opt(r.cycles_per_server_cpu_s, si)),
            "idle" => ("–".into(), "–".into()),
            _ => (
                opt(r.deliveries_per_s, si),
                opt(r.deliveries_per_server_cpu_s, si),
            ),
        };
        let l = r.latency_us;
        let errs = if r.scenario == "idle" || r.scenario == "churn" {
            if r.errors.is_empty() {
                "–".into()
            } else {
                format!("{} errors", r.errors.len())
            }
        } else {
            let mut s = format!(
                "{} / {} / {}",
                r.lost.unwrap_or(0),
                r.duplicated.unwrap_or(0),
                r.reordered.unwrap_or(0)
            );
            if !r.errors.is_empty() {
                s.push_str(&format!(" ({} errors)", r.errors.len()));
            }
            s
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.2} | {} |\n",
            r.server,
            short_transport(&r.transport),
            describe(r),
            rate,
            per_cpu,
            opt(l, |l| ms(l.p50)),
            opt(l, |l| ms(l.p99)),
            opt(l, |l| ms(l.p999)),
            opt(l, |l| ms(l.max)),
            errs,
            match (r.server_cpu_s, r.server_cpu_cores) {
                (Some(s), Some(c)) => format!("{s:.1} s ({c:.2})"),
                _ => "–".into(),
            },
            opt(r.server_peak_rss_bytes, mib),
            opt(r.server_rss_per_session_bytes, |b| format!(
                "{:.1} KiB",
                b / 1024.0
            )),
            r.generator_cpu_cores,
            opt(r.load_avg_1m, |l| format!("{l:.1}")),
        ));
    }
    out
}

/// One target of the issue, checked against the runs of one server.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetCheck {
    /// What is asked.
    pub target: String,
    /// What was measured (or why it could not be).
    pub measured: String,
    /// Met, missed, or not measured.
    pub met: Option<bool>,
}

fn find(runs: &[RunReport], f: impl Fn(&RunReport) -> bool) -> Option<&RunReport> {
    // The last matching run wins: re-runs replace earlier ones.
    runs.iter().rev().find(|r| f(r))
}

/// Checks the performance targets (2-core machine, figures per server CPU-second) against the
/// runs labelled `server`.
pub fn check_targets(all: &[RunReport], server: &str) -> Vec<TargetCheck> {
    let runs: Vec<RunReport> = all.iter().filter(|r| r.server == server).cloned().collect();
    let runs = runs.as_slice();
    let mut out = Vec::new();
    let mut per_cpu =
        |target: &str, run: Option<&RunReport>, field: fn(&RunReport) -> Option<f64>, min: f64| {
            let (measured, met) = match run.and_then(|r| field(r).map(|v| (r, v))) {
                Some((r, v)) => (format!("{} ({})", si(v), describe(r)), Some(v >= min)),
                None => ("not measured".into(), None),
            };
            out.push(TargetCheck {
                target: target.into(),
                measured,
                met,
            });
        };
    let ws = |r: &RunReport| r.transport == "websocket";
    let lp = |r: &RunReport| r.transport == "long-polling";
    // The saturated regime (several publishers, many messages in flight).
    let max_fanout = |r: &RunReport, n: usize| {
        r.scenario == "fanout" && r.target_rate == 0.0 && r.sessions == n && r.publishers > 1
    };
    per_cpu(
        "WebSocket fan-out, 1,000 subscribers: ≥ 1,000,000 deliveries per server CPU-second",
        find(runs, |r| ws(r) && max_fanout(r, 1000)),
        |r| r.deliveries_per_server_cpu_s,
        1e6,
    );
    per_cpu(
        "long-polling fan-out, 200 subscribers: ≥ 1,000,000 deliveries per server CPU-second",
        find(runs, |r| lp(r) && max_fanout(r, 200)),
        |r| r.deliveries_per_server_cpu_s,
        1e6,
    );
    per_cpu(
        "per-session channels, 2,000 sessions, WebSocket: ≥ 300,000 deliveries per server CPU-second",
        find(runs, |r| {
            ws(r)
                && r.scenario == "channels"
                && r.sessions == 2000
                && r.target_rate == 0.0
                && r.publishers > 1
        }),
        |r| r.deliveries_per_server_cpu_s,
        3e5,
    );
    for (name, t) in [("WebSocket", "websocket"), ("long-polling", "long-polling")] {
        per_cpu(
            &format!("churn, {name}: ≥ 40,000 cycles per server CPU-second"),
            find(runs, |r| r.transport == t && r.scenario == "churn"),
            |r| r.cycles_per_server_cpu_s,
            4e4,
        );
    }
    // Latency at 100k deliveries/s, 1,000 WebSocket subscribers.
    let (measured, met) = match find(runs, |r| {
        ws(r)
            && r.scenario == "fanout"
            && r.sessions == 1000
            && r.offered_deliveries_per_s
                .is_some_and(|o| (o - 1e5).abs() < 1.0)
    }) {
        Some(r) => match r.latency_us {
            Some(l) => (
                format!("p99 {} ms ({})", ms(l.p99), describe(r)),
                Some(l.p99 <= 5000),
            ),
            None => ("no latency recorded".into(), Some(false)),
        },
        None => ("not measured".into(), None),
    };
    out.push(TargetCheck {
        target: "WebSocket fan-out, 1,000 subscribers at 100,000 deliveries/s: p99 ≤ 5 ms".into(),
        measured,
        met,
    });
    for (name, t, kib) in [
        ("WebSocket", "websocket", 4.0),
        ("long-polling", "long-polling", 8.0),
    ] {
        let (measured, met) = match find(runs, |r| {
            r.transport == t && r.scenario == "idle" && r.sessions >= 10_000
        }) {
            Some(r) => match r.server_rss_per_session_bytes {
                Some(b) => (
                    format!("{:.2} KiB ({})", b / 1024.0, describe(r)),
                    Some(b <= kib * 1024.0),
                ),
                None => ("no PID given".into(), None),
            },
            None => ("not measured".into(), None),
        };
        out.push(TargetCheck {
            target: format!("idle memory, {name}, 10,000 sessions: ≤ {kib} KiB RSS per session"),
            measured,
            met,
        });
    }
    let small =
        find(runs, |r| ws(r) && max_fanout(r, 100)).and_then(|r| r.deliveries_per_server_cpu_s);
    let large =
        find(runs, |r| ws(r) && max_fanout(r, 10_000)).and_then(|r| r.deliveries_per_server_cpu_s);
    let (measured, met) = match (small, large) {
        (Some(s), Some(l)) => (
            format!(
                "{} at 100, {} at 10,000 per server CPU-s (ratio {:.2})",
                si(s),
                si(l),
                s / l
            ),
            Some(l * 2.0 >= s),
        ),
        _ => ("not measured".into(), None),
    };
    out.push(TargetCheck {
        target:
            "scaling: WebSocket fan-out at 10,000 subscribers within 2× of 100 (per server CPU-s)"
                .into(),
        measured,
        met,
    });
    // Below saturation: the fixed-rate runs that kept up with their offered rate.
    let below: Vec<&RunReport> = runs
        .iter()
        .filter(|r| matches!(r.scenario.as_str(), "fanout" | "channels"))
        .filter(|r| match (r.offered_deliveries_per_s, r.deliveries_per_s) {
            (Some(o), Some(d)) => d >= 0.95 * o,
            _ => false,
        })
        .collect();
    let unclean: Vec<String> = below
        .iter()
        .filter(|r| !r.clean())
        .map(|r| describe(r))
        .collect();
    let all_unclean = runs
        .iter()
        .filter(|r| matches!(r.scenario.as_str(), "fanout" | "channels") && !r.clean())
        .count();
    out.push(TargetCheck {
        target: "zero lost / duplicated / reordered messages below saturation".into(),
        measured: if below.is_empty() {
            "no fixed-rate run".into()
        } else if unclean.is_empty() {
            format!(
                "{} fixed-rate runs clean ({} of all fan-out/channels runs unclean)",
                below.len(),
                all_unclean
            )
        } else {
            format!("unclean: {}", unclean.join("; "))
        },
        met: (!below.is_empty()).then_some(unclean.is_empty()),
    });
    out
}

/// The targets set against another server measured in the same matrix: `ours` must do at least
/// `min` times as many deliveries per server CPU-second as `peer` in the small-window regime
/// (one publisher, a few messages in flight: one write per delivery).
pub fn check_peer_ratios(all: &[RunReport], ours: &str, peer: &str) -> Vec<TargetCheck> {
    let small = |r: &RunReport| r.target_rate == 0.0 && r.publishers == 1;
    let cases: [(&str, fn(&RunReport) -> bool); 2] = [
        ("long-polling fan-out, 200 subscribers, 1 publisher", |r| {
            r.transport == "long-polling" && r.scenario == "fanout" && r.sessions == 200
        }),
        (
            "per-session channels over WebSocket, 2,000 sessions, 1 publisher",
            |r| r.transport == "websocket" && r.scenario == "channels" && r.sessions == 2000,
        ),
    ];
    let min = 6.0;
    cases
        .iter()
        .map(|(name, case)| {
            let rate = |server: &str| {
                find(all, |r| r.server == server && small(r) && case(r))
                    .and_then(|r| r.deliveries_per_server_cpu_s)
            };
            let (measured, met) = match (rate(ours), rate(peer)) {
                (Some(a), Some(b)) if b > 0.0 => (
                    format!("{} vs {} per server CPU-s: {:.1}×", si(a), si(b), a / b),
                    Some(a >= min * b),
                ),
                _ => ("not measured".into(), None),
            };
            TargetCheck {
                target: format!("{name}: ≥ {min}× {peer} per server CPU-second"),
                measured,
                met,
            }
        })
        .collect()
}

/// The targets as a Markdown table.
pub fn targets_markdown(checks: &[TargetCheck]) -> String {
    let mut out = String::from("| target | measured | met |\n|---|---|---|\n");
    for c in checks {
        let met = match c.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "–",
        };
        out.push_str(&format!("| {} | {} | {} |\n", c.target, c.measured, met));
    }
    out
}
