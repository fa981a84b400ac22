//! `churn`: workers that each repeat handshake + subscribe + disconnect as fast as the server
//! answers. Each worker keeps one connection (a WebSocket, or one HTTP keep-alive connection with
//! its cookie), so what is measured is session churn in the server, not TCP setup.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::{Env, Errors, Shards, Snapshot, fill_resources, per_cpu, progress_bar};
use crate::conn::{BoxError, Conn, Result, Transport};
use crate::report::{Latency, RunReport};

/// Settings of a `churn` run.
#[derive(Debug, Clone)]
pub struct ChurnConfig {
    /// Transport.
    pub transport: Transport,
    /// Concurrent workers.
    pub workers: usize,
    /// How long to run.
    pub duration: Duration,
}

impl Default for ChurnConfig {
    fn default() -> Self {
        ChurnConfig {
            transport: Transport::Websocket,
            workers: 32,
            duration: Duration::from_secs(10),
        }
    }
}

/// Runs the `churn` scenario.
pub async fn run_churn(env: &Env, cfg: &ChurnConfig) -> Result<RunReport> {
    let cycles = Arc::new(AtomicU64::new(0));
    let latency = Arc::new(Shards::new(16));
    let errors = Arc::new(Errors::default());
    // Connections are opened before the clock starts.
    let mut conns = Vec::with_capacity(cfg.workers);
    for _ in 0..cfg.workers {
        conns.push(Conn::open(&env.target, cfg.transport).await?);
    }
    let before = Snapshot::take(env.server_pid);
    let start = Instant::now();
    let deadline = start + cfg.duration;
    let mut tasks = Vec::with_capacity(cfg.workers);
    for (w, mut conn) in conns.into_iter().enumerate() {
        let (cycles, latency, errors) = (cycles.clone(), latency.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            let channel = format!("/bench/churn/{w}");
            let mut lat = Vec::with_capacity(64);
            while Instant::now() < deadline {
                let t = Instant::now();
                let cycle = async {
                    let cid = conn.handshake("1").await?;
                    conn.subscribe(&cid, &channel, "2").await?;
                    conn.disconnect(&cid, "3").await?;
                    Ok::<_, BoxError>(())
                };
                if let Err(e) = cycle.await {
                    errors.push(format!("worker {w}: {e}"));
                    break;
                }
                cycles.fetch_add(1, Ordering::Relaxed);
                lat.push(t.elapsed().as_micros() as u64);
                if lat.len() == lat.capacity() {
                    latency.record(w, &lat);
                    lat.clear();
                }
            }
            latency.record(w, &lat);
        }));
    }
    let bar = progress_bar(env.progress, cfg.duration.as_secs().max(1), "churn");
    while Instant::now() < deadline {
        tokio::time::sleep(
            Duration::from_millis(250).min(deadline.saturating_duration_since(Instant::now())),
        )
        .await;
        let n = cycles.load(Ordering::Relaxed);
        bar.set_position(start.elapsed().as_secs());
        bar.set_message(format!(
            "{n} cycles, {:.0}/s",
            n as f64 / start.elapsed().as_secs_f64().max(1e-6)
        ));
    }
    for t in tasks {
        t.await.map_err(|e| BoxError::from(e.to_string()))?;
    }
    let after = Snapshot::take(env.server_pid);
    bar.finish_and_clear();
    let n = cycles.load(Ordering::Relaxed);
    let secs = after.at.duration_since(start).as_secs_f64();
    let mut r = RunReport {
        scenario: "churn".into(),
        server: env.server_label.clone(),
        transport: cfg.transport.name().into(),
        url: env.target.http_url(),
        publishers: cfg.workers,
        duration_s: secs,
        cycles: Some(n),
        cycles_per_s: Some(n as f64 / secs),
        ..RunReport::default()
    };
    let h = latency.merged();
    if !h.is_empty() {
        r.latency_us = Some(Latency::of(&h));
    }
    fill_resources(&mut r, &before, &after);
    r.cycles_per_server_cpu_s = per_cpu(n as f64, r.server_cpu_s);
    r.errors = errors.take();
    Ok(r)
}
