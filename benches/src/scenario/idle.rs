//! `idle`: N sessions that handshake, connect and then sit with a connect held, to measure what
//! one idle session costs the server in resident memory.
//!
//! The figure is (server RSS with N sessions − server RSS before) / N. Run it against a freshly
//! started server: memory freed by earlier runs and kept by the allocator would hide growth.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_tungstenite::tungstenite::Message;

use super::{Env, Errors, Snapshot, fill_resources, progress_bar};
use crate::conn::{Http, Result, Transport, connect_body, disconnect_body, lp_session, ws_session};
use crate::procfs;
use crate::report::RunReport;
use crate::scan::scan;

/// Settings of an `idle` run.
#[derive(Debug, Clone)]
pub struct IdleConfig {
    /// Transport.
    pub transport: Transport,
    /// Sessions to hold open.
    pub sessions: usize,
    /// How long to hold them once all are connected (memory is read at the end).
    pub hold: Duration,
    /// Sessions set up at once.
    pub setup_concurrency: usize,
}

impl Default for IdleConfig {
    fn default() -> Self {
        IdleConfig {
            transport: Transport::Websocket,
            sessions: 1000,
            hold: Duration::from_secs(5),
            setup_concurrency: 64,
        }
    }
}

/// Runs the `idle` scenario.
pub async fn run_idle(env: &Env, cfg: &IdleConfig) -> Result<RunReport> {
    let base = env.server_pid.and_then(|p| procfs::sample(Some(p)).ok());
    let before = Snapshot::take(env.server_pid);
    let errors = Arc::new(Errors::default());
    let permits = Arc::new(Semaphore::new(cfg.setup_concurrency.max(1)));
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel::<Result<(), String>>();
    let (stop_tx, stop_rx) = watch::channel(false);
    let bar = progress_bar(env.progress, cfg.sessions as u64, "idle sessions");
    let mut tasks = Vec::with_capacity(cfg.sessions);
    for i in 0..cfg.sessions {
        let (target, permits, ready, stop, errors) = (
            env.target.clone(),
            permits.clone(),
            ready_tx.clone(),
            stop_rx.clone(),
            errors.clone(),
        );
        let transport = cfg.transport;
        tasks.push(tokio::spawn(async move {
            let r = match transport {
                Transport::Websocket => ws_idle(&target, &permits, &ready, stop).await,
                Transport::LongPolling => lp_idle(&target, &permits, &ready, stop).await,
            };
            if let Err(e) = r {
                let msg = format!("session {i}: {e}");
                let _ = ready.send(Err(msg.clone()));
                errors.push(msg);
            }
        }));
    }
    drop(ready_tx);
    let limit = tokio::time::Instant::now()
        + Duration::from_secs(60)
        + Duration::from_millis(10) * cfg.sessions as u32;
    let mut failed = None;
    for _ in 0..cfg.sessions {
        match tokio::time::timeout_at(limit, ready_rx.recv()).await {
            Ok(Some(Ok(()))) => bar.inc(1),
            Ok(Some(Err(e))) => {
                failed = Some(e);
                break;
            }
            Ok(None) => break,
            Err(_) => {
                failed = Some("session setup timed out".into());
                break;
            }
        }
    }
    bar.finish_and_clear();
    if let Some(e) = failed {
        let _ = stop_tx.send(true);
        for t in &tasks {
            t.abort();
        }
        return Err(format!("idle setup failed: {e}").into());
    }
    let established = Instant::now();
    tokio::time::sleep(cfg.hold).await;
    let after = Snapshot::take(env.server_pid);
    let mut r = RunReport {
        scenario: "idle".into(),
        server: env.server_label.clone(),
        transport: cfg.transport.name().into(),
        url: env.target.http_url(),
        sessions: cfg.sessions,
        duration_s: after.at.duration_since(established).as_secs_f64(),
        ..RunReport::default()
    };
    fill_resources(&mut r, &before, &after);
    if let (Some(b), Some(a)) = (base, after.server) {
        r.server_rss_per_session_bytes =
            Some((a.rss_bytes as f64 - b.rss_bytes as f64) / cfg.sessions as f64);
    }
    let _ = stop_tx.send(true);
    let teardown = async {
        for t in tasks {
            let _ = t.await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(60), teardown).await;
    r.errors = errors.take();
    Ok(r)
}

async fn ws_idle(
    target: &crate::conn::Target,
    permits: &Semaphore,
    ready: &mpsc::UnboundedSender<Result<(), String>>,
    mut stop: watch::Receiver<bool>,
) -> Result<()> {
    let (mut ws, cid) = {
        let _permit = permits.acquire().await?;
        ws_session(target, None, "3").await?
    };
    let _ = ready.send(Ok(()));
    let mut n = 4u64;
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            m = ws.next() => match m {
                Some(Ok(Message::Text(t))) => {
                    let info = scan(t.as_bytes(), |_| {});
                    if info.failures > 0 {
                        return Err(String::from_utf8_lossy(t.as_bytes()).into_owned().into());
                    }
                    if info.connect_replies > 0 {
                        ws.send(Message::text(connect_body(&cid, &n.to_string(), Transport::Websocket, false))).await?;
                        n += 1;
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.into()),
                None => return Err("connection closed".into()),
            },
        }
    }
    let _permit = permits.acquire().await?;
    let bye = async {
        let _ = ws.send(Message::text(disconnect_body(&cid, "99"))).await;
        let _ = ws.close().await;
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), bye).await;
    Ok(())
}

async fn lp_idle(
    target: &crate::conn::Target,
    permits: &Semaphore,
    ready: &mpsc::UnboundedSender<Result<(), String>>,
    mut stop: watch::Receiver<bool>,
) -> Result<()> {
    // One connection per session, set up and then holding connects: what the server keeps for
    // an idle long-polling client, without transient set-up connections in the figure.
    let (mut poll, cid) = {
        let _permit = permits.acquire().await?;
        lp_session(target, None).await?
    };
    let _ = ready.send(Ok(()));
    let mut n = 3u64;
    loop {
        let body = connect_body(&cid, &n.to_string(), Transport::LongPolling, false);
        n += 1;
        tokio::select! {
            _ = stop.changed() => break,
            r = poll.post(body) => {
                let b = r?.success()?;
                if scan(&b, |_| {}).failures > 0 {
                    return Err(String::from_utf8_lossy(&b).into_owned().into());
                }
            }
        }
    }
    let _permit = permits.acquire().await?;
    let mut control = Http::sibling(&poll);
    drop(poll);
    let _ = tokio::time::timeout(
        Duration::from_secs(5),
        control.post(disconnect_body(&cid, "99")),
    )
    .await;
    Ok(())
}
