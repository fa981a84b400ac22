//! The load scenarios. Each is an async function taking plain configuration and returning a
//! [`RunReport`]; the `bayeux-bench` binary and the smoke test call the same functions.

pub mod churn;
pub mod idle;
pub mod pubsub;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};

use crate::conn::Target;
use crate::procfs::{self, ProcSample};
use crate::report::RunReport;

pub use churn::{ChurnConfig, run_churn};
pub use idle::{IdleConfig, run_idle};
pub use pubsub::{Mode, PubSubConfig, run_pubsub};

/// What every scenario needs besides its own settings: where the server is, which process it
/// is, and how to show progress.
#[derive(Debug, Clone)]
pub struct Env {
    /// The Bayeux endpoint.
    pub target: Target,
    /// The server's PID, for CPU and memory figures (none: those fields stay empty).
    pub server_pid: Option<u32>,
    /// The server's label in reports.
    pub server_label: String,
    /// Show a progress bar on the terminal.
    pub progress: bool,
}

/// A histogram for microsecond latencies up to a minute, 3 significant digits.
pub(crate) fn histogram() -> Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts.
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// Latency histograms sharded so that concurrent connection tasks rarely share a lock.
pub(crate) struct Shards(Vec<Mutex<Histogram<u64>>>);

impl Shards {
    pub(crate) fn new(n: usize) -> Shards {
        Shards((0..n.max(1)).map(|_| Mutex::new(histogram())).collect())
    }

    pub(crate) fn record(&self, shard: usize, values: &[u64]) {
        if values.is_empty() {
            return;
        }
        let mut h = self.0[shard % self.0.len()]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for &v in values {
            h.saturating_record(v.max(1));
        }
    }

    pub(crate) fn merged(&self) -> Histogram<u64> {
        let mut all = histogram();
        for h in &self.0 {
            let h = h.lock().unwrap_or_else(|e| e.into_inner());
            let _ = all.add(&*h);
        }
        all
    }
}

/// Errors collected from many tasks, keeping the first few.
#[derive(Default)]
pub(crate) struct Errors(Mutex<(usize, Vec<String>)>);

impl Errors {
    pub(crate) fn push(&self, e: impl std::fmt::Display) {
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        g.0 += 1;
        if g.1.len() < 8 {
            g.1.push(e.to_string());
        }
    }

    pub(crate) fn take(&self) -> Vec<String> {
        let g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let mut v = g.1.clone();
        if g.0 > v.len() {
            v.push(format!("... {} errors in all", g.0));
        }
        v
    }
}

/// CPU and memory readings of the server and of the generator at one moment.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Snapshot {
    pub at: Instant,
    pub server: Option<ProcSample>,
    pub me: ProcSample,
}

impl Snapshot {
    pub(crate) fn take(server_pid: Option<u32>) -> Snapshot {
        Snapshot {
            at: Instant::now(),
            server: server_pid.and_then(|p| procfs::sample(Some(p)).ok()),
            me: procfs::sample(None).unwrap_or_default(),
        }
    }

    /// Like [`Snapshot::take`] for several server processes (the nodes of a cluster): CPU
    /// seconds, RSS and peak RSS summed over them (the peaks of different nodes need not
    /// coincide, so the summed peak is an upper bound). No PIDs, or one unreadable: no figures.
    pub(crate) fn take_all(server_pids: &[u32]) -> Snapshot {
        let mut server: Option<ProcSample> = None;
        for &p in server_pids {
            match procfs::sample(Some(p)) {
                Ok(s) => {
                    let t = server.get_or_insert_with(ProcSample::default);
                    t.cpu_secs += s.cpu_secs;
                    t.rss_bytes += s.rss_bytes;
                    t.peak_rss_bytes += s.peak_rss_bytes;
                }
                Err(_) => {
                    server = None;
                    break;
                }
            }
        }
        Snapshot {
            at: Instant::now(),
            server,
            me: procfs::sample(None).unwrap_or_default(),
        }
    }
}

/// Fills the CPU and memory fields of `r` from two snapshots; `secs` is the measured interval.
pub(crate) fn fill_resources(r: &mut RunReport, a: &Snapshot, b: &Snapshot) {
    let wall = b.at.duration_since(a.at).as_secs_f64().max(1e-9);
    r.generator_cpu_s = b.me.cpu_secs - a.me.cpu_secs;
    r.generator_cpu_cores = r.generator_cpu_s / wall;
    if let (Some(sa), Some(sb)) = (a.server, b.server) {
        let cpu = sb.cpu_secs - sa.cpu_secs;
        r.server_cpu_s = Some(cpu);
        r.server_cpu_cores = Some(cpu / wall);
        r.server_rss_bytes = Some(sb.rss_bytes);
        r.server_peak_rss_bytes = Some(sb.peak_rss_bytes);
    }
    r.load_avg_1m = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().and_then(|v| v.parse().ok()));
    r.finished_unix_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
}

/// `count / cpu` when the CPU figure is meaningful (at least one clock tick).
pub(crate) fn per_cpu(count: f64, cpu: Option<f64>) -> Option<f64> {
    cpu.filter(|c| *c >= 0.01).map(|c| count / c)
}

/// A progress bar (hidden unless asked for and stderr is a terminal).
pub(crate) fn progress_bar(show: bool, len: u64, what: &str) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template(&format!(
            "{{spinner}} {what} [{{elapsed_precise}}] [{{bar:30}}] {{pos}}/{{len}} {{msg}}"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    pb.enable_steady_tick(Duration::from_millis(200));
    pb
}

/// A small fast PRNG (xorshift64*), enough to pick channels.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub(crate) fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % n.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::Snapshot;

    #[test]
    fn take_all_sums_processes() {
        assert!(Snapshot::take_all(&[]).server.is_none());
        let me = std::process::id();
        let one = Snapshot::take_all(&[me]).server.unwrap();
        let two = Snapshot::take_all(&[me, me]).server.unwrap();
        // CPU time only grows, so two later readings add up to at least twice the first.
        assert!(two.cpu_secs >= 2.0 * one.cpu_secs);
        assert!(two.peak_rss_bytes >= one.peak_rss_bytes);
        assert!(Snapshot::take_all(&[me, u32::MAX]).server.is_none());
    }
}
