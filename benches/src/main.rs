//! `bayeux-bench`: a Bayeux load generator for any server, over WebSocket or long-polling.
//!
//! ```text
//! bayeux-bench fanout   --spawn --subscribers 1000 --publishers 4 --duration 10
//! bayeux-bench fanout   --url http://127.0.0.1:8000/cometd --server-pid 1234 --label faye --rate 100
//! bayeux-bench channels --spawn --subscribers 2000 --publishers 4
//! bayeux-bench churn    --spawn --transport long-polling --workers 32
//! bayeux-bench idle     --spawn --sessions 10000
//! bayeux-bench report   --input benches/results/results.jsonl --out-dir benches/results
//! ```
//!
//! Each run prints one JSON line on stdout (and appends it to `--json-out`), and a one-row
//! Markdown table on stderr. `report` turns many JSON lines into a Markdown table and SVG plots.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use bayeux_benches::conn::{Result, Target, Transport};
use bayeux_benches::report::{self, RunReport};
use bayeux_benches::scenario::{self, ChurnConfig, Env, IdleConfig, Mode, PubSubConfig};
use bayeux_benches::{plot, server};
use clap::{Args, Parser, Subcommand};

/// A Bayeux load generator: measures any Bayeux server over WebSocket or long-polling.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// S subscribers on one channel, P publishers.
    Fanout(PubSubArgs),
    /// One channel per subscriber (per-user notifications); publishes go to random channels.
    Channels(PubSubArgs),
    /// Handshake + subscribe + disconnect cycles.
    Churn(ChurnArgs),
    /// N connected idle sessions: server memory per session.
    Idle(IdleArgs),
    /// Markdown table and SVG plots from JSON lines of earlier runs.
    Report(ReportArgs),
}

fn parse_transport(s: &str) -> Result<Transport, String> {
    Transport::parse(s)
        .ok_or_else(|| format!("unknown transport {s}: websocket (ws) or long-polling (lp)"))
}

#[derive(Debug, Clone, Args)]
struct Common {
    /// The server's Bayeux endpoint, e.g. http://127.0.0.1:8080/cometd. Repeatable for fanout
    /// and channels: the nodes of one cluster, sessions spread over them round-robin.
    #[arg(long, conflicts_with = "spawn")]
    url: Vec<String>,
    /// Start our server (bayeux-server, next to this binary unless --server-bin) on a free port.
    #[arg(long)]
    spawn: bool,
    /// The bayeux-server binary for --spawn.
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// Extra argument for the spawned server (repeatable), e.g. --server-arg=--config=x.toml.
    #[arg(long = "server-arg", allow_hyphen_values = true)]
    server_args: Vec<String>,
    /// PID of the server at --url, for its CPU and memory figures. Repeatable: the figures are
    /// summed over the processes (give every node's PID).
    #[arg(long)]
    server_pid: Vec<u32>,
    /// The server's name in reports.
    #[arg(long)]
    label: Option<String>,
    /// Append the run's JSON line to this file.
    #[arg(long)]
    json_out: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    no_progress: bool,
    /// Exit with status 1 when messages were lost, duplicated or reordered, or errors occurred.
    #[arg(long)]
    check: bool,
}

#[derive(Debug, Clone, Args)]
struct PubSubArgs {
    #[command(flatten)]
    common: Common,
    /// Subscriber transport: websocket (ws) or long-polling (lp).
    #[arg(long, default_value = "websocket", value_parser = parse_transport)]
    transport: Transport,
    /// Publisher transport (default: the subscribers').
    #[arg(long, value_parser = parse_transport)]
    publish_transport: Option<Transport>,
    /// Subscribed sessions (channels: also the number of channels).
    #[arg(long, default_value_t = 100)]
    subscribers: usize,
    /// Publishing sessions.
    #[arg(long, default_value_t = 1)]
    publishers: usize,
    /// Publishes per second, all publishers together (0: as fast as --inflight allows).
    #[arg(long, default_value_t = 0.0, conflicts_with = "delivery_rate")]
    rate: f64,
    /// Offered deliveries per second instead of --rate (fanout: rate x subscribers).
    #[arg(long)]
    delivery_rate: Option<f64>,
    /// Unanswered publishes per publisher (long-polling: publishes per request).
    #[arg(long, default_value_t = 32)]
    inflight: usize,
    /// Seconds of publishing.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds at the start whose latencies are not recorded.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Padding per payload, bytes.
    #[arg(long, default_value_t = 0)]
    payload_bytes: usize,
    /// Sessions set up at once.
    #[arg(long, default_value_t = 64)]
    setup_concurrency: usize,
}

#[derive(Debug, Clone, Args)]
struct ChurnArgs {
    #[command(flatten)]
    common: Common,
    /// Transport: websocket (ws) or long-polling (lp).
    #[arg(long, default_value = "websocket", value_parser = parse_transport)]
    transport: Transport,
    /// Concurrent workers.
    #[arg(long, default_value_t = 32)]
    workers: usize,
    /// Seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
}

#[derive(Debug, Clone, Args)]
struct IdleArgs {
    #[command(flatten)]
    common: Common,
    /// Transport: websocket (ws) or long-polling (lp).
    #[arg(long, default_value = "websocket", value_parser = parse_transport)]
    transport: Transport,
    /// Sessions.
    #[arg(long, default_value_t = 1000)]
    sessions: usize,
    /// Seconds to hold them once connected.
    #[arg(long, default_value_t = 5.0)]
    hold: f64,
    /// Sessions set up at once.
    #[arg(long, default_value_t = 64)]
    setup_concurrency: usize,
}

#[derive(Debug, Clone, Args)]
struct ReportArgs {
    /// JSON-lines files of runs (repeatable).
    #[arg(long, required = true)]
    input: Vec<PathBuf>,
    /// Directory for results.md and the SVG plots.
    #[arg(long)]
    out_dir: PathBuf,
    /// The server whose figures are checked against the performance targets.
    #[arg(long, default_value = "bayeux-server")]
    targets_for: String,
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("bayeux-bench: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    let common = match &cli.cmd {
        Cmd::Fanout(a) | Cmd::Channels(a) => a.common.clone(),
        Cmd::Churn(a) => a.common.clone(),
        Cmd::Idle(a) => a.common.clone(),
        Cmd::Report(a) => return report_cmd(a),
    };
    // The server must outlive the runtime's connections: declared first, dropped last.
    let spawned = if common.spawn {
        let bin = common
            .server_bin
            .clone()
            .or_else(server::default_server_bin)
            .ok_or("bayeux-server not found next to bayeux-bench: build it (cargo build --release -p bayeux-server) or pass --server-bin")?;
        Some(server::spawn(&bin, &common.server_args)?)
    } else {
        None
    };
    let url = match (&spawned, common.url.first()) {
        (Some(s), _) => s.url.clone(),
        (None, Some(u)) => u.clone(),
        (None, None) => {
            return Err("give --url (with --server-pid for CPU figures) or --spawn".into());
        }
    };
    let multi = common.url.len() > 1 || common.server_pid.len() > 1;
    if multi && !matches!(cli.cmd, Cmd::Fanout(_) | Cmd::Channels(_)) {
        return Err("several --url or --server-pid values: only for fanout and channels".into());
    }
    let targets = if common.url.len() > 1 {
        common
            .url
            .iter()
            .map(|u| Target::parse(u))
            .collect::<Result<Vec<_>>>()?
    } else {
        Vec::new()
    };
    let env = Env {
        target: Target::parse(&url)?,
        server_pid: spawned
            .as_ref()
            .map(server::Spawned::pid)
            .or(common.server_pid.first().copied()),
        server_label: common.label.clone().unwrap_or_else(|| {
            if spawned.is_some() {
                "bayeux-server".into()
            } else {
                "server".into()
            }
        }),
        progress: !common.no_progress && std::io::IsTerminal::is_terminal(&std::io::stderr()),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = rt.block_on(async {
        match &cli.cmd {
            Cmd::Fanout(a) | Cmd::Channels(a) => {
                let mode = if matches!(cli.cmd, Cmd::Fanout(_)) {
                    Mode::Fanout
                } else {
                    Mode::Channels
                };
                let per_publish = match mode {
                    Mode::Fanout => a.subscribers.max(1) as f64,
                    Mode::Channels => 1.0,
                };
                let cfg = PubSubConfig {
                    mode,
                    transport: a.transport,
                    publish_transport: a.publish_transport.unwrap_or(a.transport),
                    subscribers: a.subscribers,
                    publishers: a.publishers,
                    rate: a.delivery_rate.map_or(a.rate, |d| d / per_publish),
                    inflight: a.inflight,
                    duration: secs(a.duration),
                    warmup: secs(a.warmup),
                    payload_bytes: a.payload_bytes,
                    setup_concurrency: a.setup_concurrency,
                    targets: targets.clone(),
                    server_pids: if common.server_pid.len() > 1 {
                        common.server_pid.clone()
                    } else {
                        Vec::new()
                    },
                    ..PubSubConfig::default()
                };
                scenario::run_pubsub(&env, &cfg).await
            }
            Cmd::Churn(a) => {
                let cfg = ChurnConfig {
                    transport: a.transport,
                    workers: a.workers,
                    duration: secs(a.duration),
                };
                scenario::run_churn(&env, &cfg).await
            }
            Cmd::Idle(a) => {
                let cfg = IdleConfig {
                    transport: a.transport,
                    sessions: a.sessions,
                    hold: secs(a.hold),
                    setup_concurrency: a.setup_concurrency,
                };
                scenario::run_idle(&env, &cfg).await
            }
            Cmd::Report(_) => unreachable!("handled above"),
        }
    })?;
    rt.shutdown_timeout(Duration::from_secs(2));
    drop(spawned);
    emit(&report, common.json_out.as_deref())?;
    Ok(if common.check && !report.clean() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn emit(report: &RunReport, json_out: Option<&std::path::Path>) -> Result<()> {
    let line = report.json_line();
    println!("{line}");
    if let Some(path) = json_out {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        writeln!(f, "{line}")?;
    }
    eprint!("{}", report::markdown(std::slice::from_ref(report)));
    for e in &report.errors {
        eprintln!("error: {e}");
    }
    Ok(())
}

/// How to read the table; written above it.
const NOTES: &str = "\
Produced by `scripts/compare-peers.sh` (one freshly started server per row, identical parameters \
for every server). The generator and the server share one 2-core machine (and, on a shared \
machine, other jobs: see `load`, the 1-minute load average at the end of the run), so compare \
servers **per server CPU-second**; latencies include waiting for a CPU whenever server CPU + \
generator CPU + other load approach 2 cores. *rate* is deliveries/s (churn: cycles/s). As fast as \
possible, each publisher keeps at most `--inflight` publishes unanswered or not yet delivered to \
every subscriber. *lost* counts deliveries that had not arrived 2 s after the last progress \
(at most 10 s) once publishing stopped: at saturation that is the backlog the server could not \
deliver, not necessarily a drop. *RSS/session* is (server RSS with N idle sessions − RSS \
before) / N.\n\n";

fn report_cmd(a: &ReportArgs) -> Result<ExitCode> {
    let mut runs = Vec::new();
    for p in &a.input {
        let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
        runs.extend(report::read_json_lines(&text));
    }
    std::fs::create_dir_all(&a.out_dir)?;
    let plots = plot::plots(&runs, &a.out_dir)?;
    let mut md = String::from("# Load matrix results\n\n");
    md.push_str(NOTES);
    md.push_str(&report::markdown(&runs));
    md.push_str(&format!("\n## Targets ({})\n\n", a.targets_for));
    let mut checks = report::check_targets(&runs, &a.targets_for);
    checks.extend(report::check_peer_ratios(&runs, &a.targets_for, "faye"));
    md.push_str(&report::targets_markdown(&checks));
    if !plots.is_empty() {
        md.push_str("\n## Plots\n\n");
        for p in &plots {
            md.push_str(&format!("![{p}]({p})\n\n"));
        }
    }
    std::fs::write(a.out_dir.join("results.md"), &md)?;
    print!("{md}");
    for p in plots {
        eprintln!("wrote {}", a.out_dir.join(p).display());
    }
    Ok(ExitCode::SUCCESS)
}
