//! Memory comes back (issue 10): after a burst to WebSocket subscribers that never read, and
//! their leaving, the `bayeux-server` process's resident memory returns near where it started.
//!
//! Runs the real binary (`CARGO_BIN_EXE_bayeux-server`, a debug build under `cargo test`), since
//! the allocator is the binary's: the in-process servers of the other suites run on the test
//! harness's allocator. `BAYEUX_MEMORY_TEST_BIN=PATH` runs it against another build instead, e.g.
//! one with `--no-default-features`, on glibc's allocator, which keeps what the burst freed and
//! fails it.
//!
//! The burst (debug-sized, a few seconds): [`SUBSCRIBERS`] silent subscribers, [`MESSAGES`]
//! messages of 1 KiB. The subscribers' sessions outlive their sockets by the rest of their held
//! connect (`--timeout-ms 5000`, counted from their set-up) and `--max-interval-ms 1000`.

// Without the feature only the last test is built; the burst stays compiled, so it is checked.
#![cfg_attr(not(feature = "jemalloc"), allow(dead_code))]

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::burst;

/// Subscribers that never read.
const SUBSCRIBERS: usize = 400;
/// Messages published to them.
const MESSAGES: usize = 10_000;
/// Payload of each message, bytes.
const PAYLOAD: usize = 1024;
/// How far above its baseline the server's RSS may stay once the subscribers are gone, MiB.
const BOUND_MIB: u64 = 24;
/// How long the server may take to get there after the subscribers closed.
const SETTLE: Duration = Duration::from_secs(20);
/// The whole test.
const TEST_BOUND: Duration = Duration::from_secs(50);

const MIB: u64 = 1024 * 1024;

fn server_bin() -> PathBuf {
    std::env::var_os("BAYEUX_MEMORY_TEST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_bayeux-server")))
}

fn mib(b: u64) -> f64 {
    b as f64 / MIB as f64
}

async fn memory_returns_after_burst() {
    let bin = server_bin();
    let args = ["--timeout-ms=5000".into(), "--max-interval-ms=1000".into()];
    let server = burst::ServerProcess::spawn(&bin, &args).expect("start the server");
    let (addr, pid) = (server.addr, server.pid());
    // Let start-up allocations (runtime, voice API, logging) settle before the baseline.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let baseline = burst::rss_bytes(pid).expect("rss");
    // The figures /metrics gives: the process's RSS always, the allocator's with the feature
    // (unless another binary is under test).
    let with_allocator = std::env::var_os("BAYEUX_MEMORY_TEST_BIN").is_none();
    let m = burst::metrics(addr).await.expect("metrics");
    assert!(
        burst::metric(&m, "process_resident_memory_bytes").is_some_and(|v| v > 0.0),
        "no process_resident_memory_bytes in /metrics"
    );
    if with_allocator {
        let allocated = burst::metric(&m, "bayeux_allocator_allocated_bytes");
        let resident = burst::metric(&m, "bayeux_allocator_resident_bytes");
        assert!(
            allocated.is_some_and(|a| a > 0.0) && resident.is_some_and(|r| r > 0.0),
            "allocator figures missing from /metrics: allocated {allocated:?}, resident {resident:?}"
        );
    }

    let subscribers = burst::silent_subscribers(addr, SUBSCRIBERS)
        .await
        .expect("subscribers");
    let ok = burst::publish(addr, MESSAGES, PAYLOAD, 100)
        .await
        .expect("publish");
    assert_eq!(ok, MESSAGES, "publishes refused");
    let peak = burst::peak_rss_bytes(pid).expect("peak rss");
    // Without a burst that took memory, a return to the baseline would prove nothing.
    assert!(
        peak > baseline + 2 * BOUND_MIB * MIB,
        "the burst raised RSS only from {:.1} to {:.1} MiB",
        mib(baseline),
        mib(peak)
    );

    drop(subscribers);
    let left = Instant::now();
    let limit = baseline + BOUND_MIB * MIB;
    let mut series = Vec::new();
    let settled = loop {
        // Sessions first: RSS read after them cannot miss their release.
        let m = burst::metrics(addr).await.expect("metrics");
        let sessions = burst::metric(&m, "bayeux_sessions").unwrap_or(f64::NAN);
        // What the allocator itself still holds must be back under the bound too.
        let held = burst::metric(&m, "bayeux_allocator_resident_bytes");
        let rss = burst::rss_bytes(pid).expect("rss");
        series.push(format!(
            "{:.1}s {:.1} MiB{} {sessions} sessions",
            left.elapsed().as_secs_f64(),
            mib(rss),
            held.map_or(String::new(), |h| format!(
                " ({:.1} allocator)",
                mib(h as u64)
            ))
        ));
        let held_ok = held.is_none_or(|h| h <= (BOUND_MIB * MIB) as f64);
        if sessions == 0.0 && rss <= limit && held_ok {
            break Some((left.elapsed(), rss));
        }
        if left.elapsed() > SETTLE {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let Some((after, settled_rss)) = settled else {
        panic!(
            "{}: sessions not all gone, or RSS still above {:.1} MiB (baseline {:.1} + \
             {BOUND_MIB}) or the allocator's above {BOUND_MIB} MiB, {SETTLE:?} after the \
             subscribers left (peak {:.1} MiB); over time: {}",
            bin.display(),
            mib(limit),
            mib(baseline),
            mib(peak),
            // One reading a second is enough to see the trend.
            series
                .iter()
                .step_by(4)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        );
    };
    eprintln!(
        "RSS baseline {:.1} MiB, peak {:.1} MiB; sessions gone and RSS {:.1} MiB (limit {:.1}) \
         {:.1} s after the subscribers left",
        mib(baseline),
        mib(peak),
        mib(settled_rss),
        mib(limit),
        after.as_secs_f64()
    );
}

/// The binary built with the `jemalloc` feature (the default) gives a burst's memory back.
#[cfg(feature = "jemalloc")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_returns_to_the_system_after_a_burst() {
    tokio::time::timeout(TEST_BOUND, memory_returns_after_burst())
        .await
        .expect("the memory test took too long");
}

/// Without the feature, `/metrics` has the process's RSS but no allocator figures.
#[cfg(not(feature = "jemalloc"))]
#[tokio::test]
async fn no_allocator_metrics_without_the_feature() {
    let server = burst::ServerProcess::spawn(&server_bin(), &[]).expect("start the server");
    let m = burst::metrics(server.addr).await.expect("metrics");
    assert!(burst::metric(&m, "process_resident_memory_bytes").is_some());
    assert!(burst::metric(&m, "bayeux_allocator_resident_bytes").is_none());
    assert!(burst::metric(&m, "bayeux_allocator_allocated_bytes").is_none());
}
