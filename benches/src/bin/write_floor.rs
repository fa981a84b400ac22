//! `write-floor`: what the kernel charges a server for one `write(2)` per delivery on this
//! machine, with nothing of Bayeux in the way. It is the bound under the per-session channels
//! scenario, where every delivery goes to a different socket and so takes a write of its own.
//!
//! ```sh
//! cargo build --release -p bayeux-benches --bins
//! target/release/write-floor --sockets 2000 --bytes 150 --writes 200000 --burst 1 --burst 11 --burst 25 --burst 0
//! ```
//!
//! A writer thread owns the server side of N loopback TCP connections (`TCP_NODELAY`, as the
//! server's WebSocket sockets) and writes `--bytes` to them in turn; a reader, a tokio runtime
//! with a task per connection (as the load generator), drains the other side.
//! - `--burst B` (B ≥ 1): the writer writes B frames to B different sockets, then sleeps until the
//!   reader has read them all, then writes the next B. This is the server's loop in the small
//!   window: woken by the publisher's frames, one write per delivery, asleep until the next
//!   publishes, while the subscribers' reader sleeps between deliveries too.
//! - `--burst 0`: the writer never waits, so the reader never sleeps (the most favourable case,
//!   and not the one a notification server sees).
//!
//! It prints the writer thread's CPU time (from `/proc/thread-self/schedstat`: user, system and
//! the wake-ups it pays for) per write, and the writes per CPU-second that makes.

use std::io::Write;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use tokio::io::AsyncReadExt;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// How long the writer waits on the reader (a blocked write, or bytes not read) before it gives
/// up: the loopback reader takes a burst in microseconds.
const STALL: Duration = Duration::from_secs(30);

#[derive(Parser, Debug)]
#[command(about = "The kernel's cost of one write per delivery on loopback, per writer CPU-second")]
struct Args {
    /// Connections written to in turn.
    #[arg(long, default_value_t = 2000)]
    sockets: usize,
    /// Bytes per write (a small WebSocket frame).
    #[arg(long, default_value_t = 150)]
    bytes: usize,
    /// Writes per measurement.
    #[arg(long, default_value_t = 200_000)]
    writes: u64,
    /// Writes per burst before waiting for the reader (repeatable; 0: never wait).
    #[arg(long = "burst", default_values_t = [1usize, 11, 25, 0])]
    bursts: Vec<usize>,
}

/// Nanoseconds this thread has run, from `/proc/thread-self/schedstat`. The kernel brings a
/// running thread's figure up to date only at a tick or a scheduling call, so this yields first
/// (which makes it account the time run so far).
fn thread_cpu_ns() -> Result<u64, Error> {
    std::thread::yield_now();
    let s = std::fs::read_to_string("/proc/thread-self/schedstat")?;
    let first = s.split_whitespace().next().ok_or("empty schedstat")?;
    Ok(first.parse()?)
}

/// Sleeps until the reader has read `target` bytes in all (it unparks this thread then), at
/// most [`STALL`].
fn wait_for_reader(received: &AtomicU64, want: &AtomicU64, target: u64) -> Result<(), Error> {
    want.store(target, Ordering::Release);
    let give_up = Instant::now() + STALL;
    while received.load(Ordering::Acquire) < target {
        if Instant::now() > give_up {
            return Err("the reader stopped reading".into());
        }
        std::thread::park_timeout(Duration::from_millis(100));
    }
    Ok(())
}

fn main() -> Result<(), Error> {
    let args = Args::parse();
    if args.sockets == 0 || args.bytes == 0 || args.writes == 0 {
        return Err("--sockets, --bytes and --writes must be positive".into());
    }
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    let addr = listener.local_addr()?;
    let mut server_side = Vec::with_capacity(args.sockets);
    let mut client_side = Vec::with_capacity(args.sockets);
    for _ in 0..args.sockets {
        let c = TcpStream::connect(addr)?;
        let (s, _) = listener.accept()?;
        s.set_nodelay(true)?;
        // A reader that stopped would otherwise leave the writer blocked for good.
        s.set_write_timeout(Some(STALL))?;
        c.set_nonblocking(true)?;
        server_side.push(s);
        client_side.push(c);
    }

    // The reader: a task per connection, counting bytes; wakes the writer when `want` is reached.
    let received = Arc::new(AtomicU64::new(0));
    let want = Arc::new(AtomicU64::new(u64::MAX));
    let writer_thread = std::thread::current();
    let rt = tokio::runtime::Runtime::new()?;
    for c in client_side {
        let (received, want, writer) = (received.clone(), want.clone(), writer_thread.clone());
        rt.spawn(async move {
            let Ok(mut c) = tokio::net::TcpStream::from_std(c) else {
                return;
            };
            let mut buf = vec![0u8; 16 * 1024];
            while let Ok(n) = c.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                let total = received.fetch_add(n as u64, Ordering::AcqRel) + n as u64;
                if total >= want.load(Ordering::Acquire) {
                    writer.unpark();
                }
            }
        });
    }

    let frame = vec![b'x'; args.bytes];
    let bytes = args.bytes as u64;
    let mut next = 0usize;
    println!(
        "{} sockets, {} bytes per write, {} writes per line",
        args.sockets, args.bytes, args.writes
    );
    for &burst in &args.bursts {
        let start_bytes = received.load(Ordering::Acquire);
        let mut written = 0u64;
        let wall = Instant::now();
        let cpu0 = thread_cpu_ns()?;
        while written < args.writes {
            let b = if burst == 0 {
                args.writes - written
            } else {
                (burst as u64).min(args.writes - written)
            };
            for _ in 0..b {
                server_side[next].write_all(&frame)?;
                next = (next + 1) % server_side.len();
            }
            written += b;
            if burst > 0 {
                wait_for_reader(&received, &want, start_bytes + written * bytes)?;
            }
        }
        let cpu = thread_cpu_ns()? - cpu0;
        // Let the reader finish before the next line.
        wait_for_reader(&received, &want, start_bytes + written * bytes)?;
        let per_write = cpu as f64 / written as f64;
        let label = if burst == 0 {
            "never waits (reader never sleeps)".to_string()
        } else {
            format!("bursts of {burst}, asleep in between")
        };
        println!(
            "{label:>36}: {:.2} µs of writer CPU per write, {:.0} writes per CPU-second ({:.2} s wall)",
            per_write / 1e3,
            1e9 / per_write,
            wall.elapsed().as_secs_f64()
        );
    }
    drop(server_side);
    rt.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}
