//! `memory_burst`: does `bayeux-server` give memory back after a burst? (issue 10)
//!
//! Starts a `bayeux-server` binary on `127.0.0.1:0`, opens `--subscribers` WebSocket subscribers
//! that never read, publishes `--messages` messages of `--payload-bytes` to their channel over
//! one WebSocket, then closes the subscribers and watches the server's resident memory
//! (`/proc/<pid>/status`) and `/metrics` once a second for `--watch` seconds. Prints the series
//! and a summary: RSS before the burst, at its peak (`VmHWM`), when the subscribers left and 15 s
//! later. Everything stays on the loopback interface and ends by itself.
//!
//! ```sh
//! cargo build --release -p bayeux-server --bin bayeux-server --example memory_burst
//! target/release/examples/memory_burst                      # the server next to it, jemalloc
//! target/release/examples/memory_burst --server-bin PATH    # another build (e.g. the system allocator)
//! ```
//!
//! The subscribers hold a connect, as CometD clients do: their sessions outlive their sockets
//! by the rest of that connect's hold (`timeout_ms`, 30 s by default, from their set-up) and
//! `max_interval_ms` (10 s). To see the memory after they are gone within the watch, shorten
//! both, e.g. `--server-arg=--timeout-ms=5000 --server-arg=--max-interval-ms=5000`.

#[path = "../tests/common/burst.rs"]
mod burst;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;

/// Options.
#[derive(Debug, Parser)]
struct Args {
    /// The server binary (default: `bayeux-server` in the target directory of this example).
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// An argument for the server (repeatable).
    #[arg(long = "server-arg", allow_hyphen_values = true)]
    server_args: Vec<String>,
    /// WebSocket subscribers that never read.
    #[arg(long, default_value_t = 200)]
    subscribers: usize,
    /// Messages published.
    #[arg(long, default_value_t = 100_000)]
    messages: usize,
    /// Size of each message's payload string.
    #[arg(long, default_value_t = 1024)]
    payload_bytes: usize,
    /// Messages per published frame.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Seconds to watch after the subscribers left.
    #[arg(long, default_value_t = 30)]
    watch: u64,
}

const MIB: f64 = 1024.0 * 1024.0;

fn mib(b: u64) -> String {
    format!("{:.1}", b as f64 / MIB)
}

fn default_server_bin() -> Option<PathBuf> {
    // target/<profile>/examples/memory_burst -> target/<profile>/bayeux-server
    let exe = std::env::current_exe().ok()?;
    let bin = exe.parent()?.parent()?.join("bayeux-server");
    bin.is_file().then_some(bin)
}

#[tokio::main]
async fn main() -> Result<(), burst::Error> {
    let args = Args::parse();
    let bin = match args.server_bin.clone().or_else(default_server_bin) {
        Some(b) => b,
        None => return Err("no bayeux-server binary: build it or give --server-bin".into()),
    };
    let server = burst::ServerProcess::spawn(&bin, &args.server_args)?;
    let (addr, pid) = (server.addr, server.pid());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let m = burst::metrics(addr).await?;
    let allocator = if burst::metric(&m, "bayeux_allocator_resident_bytes").is_some() {
        "jemalloc"
    } else {
        "system"
    };
    let before = burst::rss_bytes(pid)?;
    println!(
        "server {} (pid {pid}, allocator {allocator}) on {addr}: RSS before {} MiB",
        bin.display(),
        mib(before)
    );

    let started = Instant::now();
    let subscribers = burst::silent_subscribers(addr, args.subscribers).await?;
    println!(
        "{} silent subscribers in {:.1} s, RSS {} MiB",
        subscribers.len(),
        started.elapsed().as_secs_f64(),
        mib(burst::rss_bytes(pid)?)
    );
    let published = Instant::now();
    let ok = burst::publish(addr, args.messages, args.payload_bytes, args.batch).await?;
    let m = burst::metrics(addr).await?;
    let value = |name: &str| burst::metric(&m, name).unwrap_or(f64::NAN);
    println!(
        "published {ok} of {} messages of {} bytes in {:.1} s: deliveries {}, queue drops {}, RSS {} MiB",
        args.messages,
        args.payload_bytes,
        published.elapsed().as_secs_f64(),
        value("bayeux_deliveries_total"),
        value("bayeux_queue_drops_total"),
        mib(burst::rss_bytes(pid)?)
    );

    let at_close = burst::rss_bytes(pid)?;
    drop(subscribers);
    let left = Instant::now();
    println!("subscribers closed; t = seconds since");
    println!("t\trss_mib\tsessions\twebsockets\talloc_allocated_mib\talloc_resident_mib");
    let (mut at_15, mut sessions_gone) = (None, None);
    for t in 0..=args.watch {
        tokio::time::sleep_until((left + Duration::from_secs(t)).into()).await;
        let rss = burst::rss_bytes(pid)?;
        if t == 15 {
            at_15 = Some(rss);
        }
        let m = burst::metrics(addr).await?;
        let get = |name: &str| burst::metric(&m, name);
        if sessions_gone.is_none() && get("bayeux_sessions") == Some(0.0) {
            sessions_gone = Some(t);
        }
        let alloc = |name: &str| get(name).map_or("-".to_owned(), |v| mib(v as u64));
        println!(
            "{t}\t{}\t{}\t{}\t{}\t{}",
            mib(rss),
            get("bayeux_sessions").unwrap_or(f64::NAN),
            get("bayeux_websockets").unwrap_or(f64::NAN),
            alloc("bayeux_allocator_allocated_bytes"),
            alloc("bayeux_allocator_resident_bytes"),
        );
    }
    let peak = burst::peak_rss_bytes(pid)?;
    let last = burst::rss_bytes(pid)?;
    println!(
        "SUMMARY allocator={allocator} subscribers={} messages={} payload={} B: RSS before {} MiB, \
         peak {} MiB, at close {} MiB, +15 s {} MiB, +{} s {} MiB; sessions all gone by +{} s",
        args.subscribers,
        args.messages,
        args.payload_bytes,
        mib(before),
        mib(peak),
        mib(at_close),
        at_15.map_or("-".to_owned(), mib),
        args.watch,
        mib(last),
        sessions_gone.map_or("-".to_owned(), |t| t.to_string())
    );
    drop(server);
    Ok(())
}
