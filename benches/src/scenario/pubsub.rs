//! `fanout` and `channels`: subscribers, publishers, and what arrived.
//!
//! - `fanout`: every subscriber on one channel; each publish reaches all of them.
//! - `channels`: subscriber *i* alone on `/bench/u/i` (the per-user notification pattern);
//!   publishers pick a channel at random for each publish.
//!
//! Each publish carries `{"seq":S,"ts":T,"p":P}`: the publisher's index, its sequence number on
//! that channel and the send time (in rate mode the *intended* send time, so a server that falls
//! behind is charged for the queueing it causes). Subscribers scan deliveries for those three
//! numbers and keep per-stream order bookkeeping ([`crate::track`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_tungstenite::tungstenite::Message;

use super::{Env, Errors, Rng, Shards, Snapshot, fill_resources, per_cpu, progress_bar};
use crate::clock::{now_us, us_at};
use crate::conn::{
    BoxError, Http, Resp, Result, Transport, connect_body, disconnect_body, lp_session,
    publish_message, ws_session,
};
use crate::report::{Latency, RunReport};
use crate::scan::{payload, scan};
use crate::track::{Arrival, Track};

/// Which channel layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// All subscribers on one channel.
    Fanout,
    /// One channel per subscriber, publishes to random channels.
    Channels,
}

impl Mode {
    /// The scenario name.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Fanout => "fanout",
            Mode::Channels => "channels",
        }
    }
}

/// Settings of a `fanout` or `channels` run.
#[derive(Debug, Clone)]
pub struct PubSubConfig {
    /// Channel layout.
    pub mode: Mode,
    /// Transport of the subscribers.
    pub transport: Transport,
    /// Transport of the publishers (the same as the subscribers' unless a server lacks one).
    pub publish_transport: Transport,
    /// Subscribed sessions (in `channels` mode, also the number of channels).
    pub subscribers: usize,
    /// Publishing sessions.
    pub publishers: usize,
    /// Publishes per second, all publishers together; 0 = as fast as `inflight` allows.
    pub rate: f64,
    /// Publishes per publisher that may be unanswered or not yet delivered to every recipient
    /// (over long-polling also the batch size of one request). Counting deliveries, not only
    /// publish replies, keeps "as fast as possible" at the rate the server can deliver: a server
    /// acknowledges a publish once routed, so replies alone would let its queues grow until they
    /// overflow.
    pub inflight: usize,
    /// How long to publish.
    pub duration: Duration,
    /// Deliveries of messages sent in the first `warmup` are not counted in the latency
    /// histogram (they are still checked for loss and order).
    pub warmup: Duration,
    /// Padding added to each payload, bytes.
    pub payload_bytes: usize,
    /// Sessions set up at once.
    pub setup_concurrency: usize,
    /// After publishing stops, how long to wait for missing deliveries.
    pub drain_timeout: Duration,
    /// Several nodes of one cluster: every endpoint, subscribers and publishers spread over them
    /// round-robin (session *i* on `targets[i % n]`). Empty: `env.target` alone.
    pub targets: Vec<crate::conn::Target>,
    /// The PIDs of those nodes: CPU and memory are summed over them. Empty: `env.server_pid`.
    pub server_pids: Vec<u32>,
    /// With several targets, how long to wait after every session is subscribed before
    /// publishing, so that the nodes' subscriptions to each other (through Redis) are in place.
    pub settle: Duration,
}

impl Default for PubSubConfig {
    fn default() -> Self {
        PubSubConfig {
            mode: Mode::Fanout,
            transport: Transport::Websocket,
            publish_transport: Transport::Websocket,
            subscribers: 100,
            publishers: 1,
            rate: 0.0,
            inflight: 32,
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(1),
            payload_bytes: 0,
            setup_concurrency: 64,
            drain_timeout: Duration::from_secs(10),
            targets: Vec::new(),
            server_pids: Vec::new(),
            settle: Duration::from_secs(1),
        }
    }
}

impl Run {
    /// The endpoint of session `idx` (subscriber or publisher index): round-robin over the nodes.
    fn target(&self, idx: usize) -> &crate::conn::Target {
        match self.cfg.targets.len() {
            0 => &self.env.target,
            n => &self.cfg.targets[idx % n],
        }
    }
}

/// State shared by the tasks of one run.
struct Run {
    cfg: PubSubConfig,
    env: Env,
    channels: Vec<String>,
    delivered: AtomicU64,
    /// Deliveries received per publisher (all subscribers together), for the delivery window.
    delivered_by: Vec<AtomicU64>,
    /// Recipients of one publish (fanout: every subscriber; channels: one).
    per_publish: u64,
    published: AtomicU64,
    last_delivery_us: AtomicU64,
    warmup_end_us: AtomicU64,
    latency: Shards,
    /// With several nodes: latencies of deliveries whose publisher is on the subscriber's node,
    /// and of those that crossed to another node (through Redis).
    latency_same_node: Shards,
    latency_cross_node: Shards,
    errors: Errors,
    pad: String,
}

/// What one subscriber saw.
#[derive(Default)]
struct SubResult {
    channel: usize,
    tracks: Vec<Track>,
    duplicated: u64,
    reordered: u64,
}

/// What one publisher sent: the number of publishes per channel.
#[derive(Default)]
struct PubResult {
    sent: Vec<u64>,
}

type Ready = mpsc::UnboundedSender<Result<(), String>>;

/// Runs a `fanout` or `channels` scenario.
pub async fn run_pubsub(env: &Env, cfg: &PubSubConfig) -> Result<RunReport> {
    if cfg.subscribers == 0 || cfg.publishers == 0 {
        return Err("need at least one subscriber and one publisher".into());
    }
    let channels: Vec<String> = match cfg.mode {
        Mode::Fanout => vec!["/bench/fanout".to_owned()],
        Mode::Channels => (0..cfg.subscribers)
            .map(|i| format!("/bench/u/{i}"))
            .collect(),
    };
    let run = Arc::new(Run {
        cfg: cfg.clone(),
        env: env.clone(),
        channels,
        delivered: AtomicU64::new(0),
        delivered_by: (0..cfg.publishers).map(|_| AtomicU64::new(0)).collect(),
        per_publish: match cfg.mode {
            Mode::Fanout => cfg.subscribers as u64,
            Mode::Channels => 1,
        },
        published: AtomicU64::new(0),
        last_delivery_us: AtomicU64::new(0),
        warmup_end_us: AtomicU64::new(u64::MAX),
        latency: Shards::new(32),
        latency_same_node: Shards::new(32),
        latency_cross_node: Shards::new(32),
        errors: Errors::default(),
        pad: "x".repeat(cfg.payload_bytes),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let (start_tx, start_rx) = watch::channel::<Option<Instant>>(None);
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel();
    let permits = Arc::new(Semaphore::new(cfg.setup_concurrency.max(1)));
    let setup_bar = progress_bar(
        env.progress,
        (cfg.subscribers + cfg.publishers) as u64,
        "setting up sessions",
    );

    let mut subs = Vec::with_capacity(cfg.subscribers);
    for i in 0..cfg.subscribers {
        let (run, permits, ready, stop) = (
            run.clone(),
            permits.clone(),
            ready_tx.clone(),
            stop_rx.clone(),
        );
        subs.push(tokio::spawn(async move {
            match run.cfg.transport {
                Transport::Websocket => ws_subscriber(run, i, permits, ready, stop).await,
                Transport::LongPolling => lp_subscriber(run, i, permits, ready, stop).await,
            }
        }));
    }
    let mut pubs = Vec::with_capacity(cfg.publishers);
    let setup_limit = Duration::from_secs(60) + Duration::from_millis(10) * cfg.subscribers as u32;
    let mut setup = wait_ready(cfg.subscribers, &mut ready_rx, setup_limit, &setup_bar).await;
    if setup.is_ok() {
        for p in 0..cfg.publishers {
            let (run, permits, ready, start, stop) = (
                run.clone(),
                permits.clone(),
                ready_tx.clone(),
                start_rx.clone(),
                stop_rx.clone(),
            );
            pubs.push(tokio::spawn(async move {
                match run.cfg.publish_transport {
                    Transport::Websocket => {
                        ws_publisher(run, p as u32, permits, ready, start, stop).await
                    }
                    Transport::LongPolling => {
                        lp_publisher(run, p as u32, permits, ready, start, stop).await
                    }
                }
            }));
        }
        setup = wait_ready(cfg.publishers, &mut ready_rx, setup_limit, &setup_bar).await;
    }
    setup_bar.finish_and_clear();
    if let Err(e) = setup {
        let _ = stop_tx.send(true);
        let _ = start_tx.send(Some(Instant::now()));
        for h in &subs {
            h.abort();
        }
        for h in &pubs {
            h.abort();
        }
        return Err(e);
    }

    if cfg.targets.len() > 1 {
        tokio::time::sleep(cfg.settle).await;
    }
    let pids: Vec<u32> = if cfg.server_pids.is_empty() {
        env.server_pid.into_iter().collect()
    } else {
        cfg.server_pids.clone()
    };

    // Publishing.
    let before = Snapshot::take_all(&pids);
    let start = Instant::now();
    run.warmup_end_us
        .store(us_at(start + cfg.warmup), Ordering::Relaxed);
    let _ = start_tx.send(Some(start));
    let bar = progress_bar(env.progress, cfg.duration.as_secs().max(1), cfg.mode.name());
    let mut last = (Instant::now(), 0u64);
    while start.elapsed() < cfg.duration {
        let left = cfg.duration.saturating_sub(start.elapsed());
        tokio::time::sleep(Duration::from_millis(250).min(left)).await;
        let d = run.delivered.load(Ordering::Relaxed);
        let rate = (d - last.1) as f64 / last.0.elapsed().as_secs_f64().max(1e-6);
        last = (Instant::now(), d);
        bar.set_position(start.elapsed().as_secs());
        bar.set_message(format!(
            "{rate:.0} deliveries/s, {} published",
            run.published.load(Ordering::Relaxed)
        ));
    }
    // Sent counts per publisher and channel, for the loss computation.
    let mut pub_sent: Vec<Vec<u64>> = Vec::with_capacity(pubs.len());
    for h in pubs {
        pub_sent.push(h.await.map_err(|e| BoxError::from(e.to_string()))?.sent);
    }
    let published: u64 = pub_sent.iter().flatten().sum();
    let per_publish = match cfg.mode {
        Mode::Fanout => cfg.subscribers as u64,
        Mode::Channels => 1,
    };
    let expected = published * per_publish;
    bar.set_message("draining");
    let drain_start = Instant::now();
    let mut last_change = (Instant::now(), run.delivered.load(Ordering::Relaxed));
    loop {
        let d = run.delivered.load(Ordering::Relaxed);
        if d >= expected || drain_start.elapsed() > cfg.drain_timeout {
            break;
        }
        if d != last_change.1 {
            last_change = (Instant::now(), d);
        } else if last_change.0.elapsed() > Duration::from_secs(2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let after = Snapshot::take_all(&pids);
    bar.finish_and_clear();
    let _ = stop_tx.send(true);

    let (mut lost, mut duplicated, mut reordered) = (0u64, 0u64, 0u64);
    for h in subs {
        let r = h.await.map_err(|e| BoxError::from(e.to_string()))?;
        duplicated += r.duplicated;
        reordered += r.reordered;
        for (p, sent) in pub_sent.iter().enumerate() {
            let want = sent.get(r.channel).copied().unwrap_or(0);
            let got = r.tracks.get(p).map_or(0, Track::unique);
            lost += want.saturating_sub(got);
        }
    }
    let delivered = run.delivered.load(Ordering::Relaxed);
    let first_us = us_at(start);
    let last_us = run
        .last_delivery_us
        .load(Ordering::Relaxed)
        .max(first_us + 1);
    let secs = (last_us - first_us) as f64 / 1e6;
    let mut report = RunReport {
        scenario: cfg.mode.name().into(),
        server: env.server_label.clone(),
        transport: cfg.transport.name().into(),
        publish_transport: (cfg.publish_transport != cfg.transport)
            .then(|| cfg.publish_transport.name().to_owned()),
        url: if cfg.targets.is_empty() {
            env.target.http_url()
        } else {
            cfg.targets
                .iter()
                .map(crate::conn::Target::http_url)
                .collect::<Vec<_>>()
                .join(" ")
        },
        nodes: (cfg.targets.len() > 1).then_some(cfg.targets.len()),
        sessions: cfg.subscribers,
        publishers: cfg.publishers,
        target_rate: cfg.rate,
        inflight: cfg.inflight,
        payload_bytes: cfg.payload_bytes,
        duration_s: secs,
        published: Some(published),
        expected: Some(expected),
        delivered: Some(delivered),
        lost: Some(lost),
        duplicated: Some(duplicated),
        reordered: Some(reordered),
        deliveries_per_s: Some(delivered as f64 / secs),
        offered_deliveries_per_s: (cfg.rate > 0.0).then_some(cfg.rate * per_publish as f64),
        ..RunReport::default()
    };
    let h = run.latency.merged();
    if !h.is_empty() {
        report.latency_us = Some(Latency::of(&h));
    }
    let h = run.latency_same_node.merged();
    if !h.is_empty() {
        report.latency_same_node_us = Some(Latency::of(&h));
    }
    let h = run.latency_cross_node.merged();
    if !h.is_empty() {
        report.latency_cross_node_us = Some(Latency::of(&h));
    }
    fill_resources(&mut report, &before, &after);
    report.deliveries_per_server_cpu_s = per_cpu(delivered as f64, report.server_cpu_s);
    report.errors = run.errors.take();
    Ok(report)
}

async fn wait_ready(
    n: usize,
    rx: &mut mpsc::UnboundedReceiver<Result<(), String>>,
    limit: Duration,
    bar: &indicatif::ProgressBar,
) -> Result<()> {
    let deadline = tokio::time::Instant::now() + limit;
    for _ in 0..n {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(Ok(()))) => bar.inc(1),
            Ok(Some(Err(e))) => return Err(format!("session setup failed: {e}").into()),
            Ok(None) => return Err("session tasks ended during setup".into()),
            Err(_) => return Err("session setup timed out".into()),
        }
    }
    Ok(())
}

/// Per-subscriber delivery bookkeeping, fed by the frame scanner.
struct Receiver {
    shard: usize,
    result: SubResult,
    latencies: Vec<u64>,
    /// Of `latencies`, those from publishers on another node (several nodes only).
    cross_latencies: Vec<u64>,
    same_latencies: Vec<u64>,
    /// This subscriber's node and the number of nodes (1: a single server).
    node: usize,
    nodes: usize,
    per_publisher: Vec<u64>,
}

impl Receiver {
    fn new(run: &Run, idx: usize) -> Receiver {
        Receiver {
            shard: idx,
            result: SubResult {
                channel: match run.cfg.mode {
                    Mode::Fanout => 0,
                    Mode::Channels => idx,
                },
                tracks: vec![Track::default(); run.cfg.publishers],
                duplicated: 0,
                reordered: 0,
            },
            latencies: Vec::with_capacity(64),
            cross_latencies: Vec::new(),
            same_latencies: Vec::new(),
            node: idx % run.cfg.targets.len().max(1),
            nodes: run.cfg.targets.len().max(1),
            per_publisher: vec![0; run.cfg.publishers],
        }
    }

    /// Takes in one frame or response body; returns how many connect replies it held, or an
    /// error when the server refused something.
    fn frame(&mut self, run: &Run, buf: &[u8]) -> Result<usize, String> {
        let now = now_us();
        let warm = run.warmup_end_us.load(Ordering::Relaxed);
        self.latencies.clear();
        self.cross_latencies.clear();
        self.same_latencies.clear();
        let (tracks, lat, by) = (
            &mut self.result.tracks,
            &mut self.latencies,
            &mut self.per_publisher,
        );
        let (cross, same, node, nodes) = (
            &mut self.cross_latencies,
            &mut self.same_latencies,
            self.node,
            self.nodes,
        );
        let (mut dup, mut reord) = (0, 0);
        let info = scan(buf, |d| {
            if let Some(n) = by.get_mut(d.publisher as usize) {
                *n += 1;
            }
            if let Some(t) = tracks.get_mut(d.publisher as usize) {
                match t.arrive(d.seq) {
                    Arrival::Duplicate => dup += 1,
                    Arrival::Reordered => reord += 1,
                    Arrival::InOrder | Arrival::Gap => {}
                }
            }
            if d.ts >= warm {
                let l = now.saturating_sub(d.ts);
                lat.push(l);
                if nodes > 1 {
                    // Publisher p is on node p % nodes (round-robin like the subscribers).
                    if d.publisher as usize % nodes == node {
                        same.push(l);
                    } else {
                        cross.push(l);
                    }
                }
            }
        });
        self.result.duplicated += dup;
        self.result.reordered += reord;
        if info.deliveries > 0 {
            run.delivered
                .fetch_add(info.deliveries as u64, Ordering::Relaxed);
            run.last_delivery_us.fetch_max(now, Ordering::Relaxed);
            run.latency.record(self.shard, &self.latencies);
            run.latency_same_node
                .record(self.shard, &self.same_latencies);
            run.latency_cross_node
                .record(self.shard, &self.cross_latencies);
            for (p, n) in self.per_publisher.iter_mut().enumerate() {
                if *n > 0 {
                    run.delivered_by[p].fetch_add(*n, Ordering::Relaxed);
                    *n = 0;
                }
            }
        }
        if info.failures > 0 {
            return Err(snippet(buf));
        }
        Ok(info.connect_replies)
    }
}

fn snippet(buf: &[u8]) -> String {
    let s = String::from_utf8_lossy(&buf[..buf.len().min(300)]);
    format!("server refused a request: {s}")
}

async fn ws_subscriber(
    run: Arc<Run>,
    idx: usize,
    permits: Arc<Semaphore>,
    ready: Ready,
    mut stop: watch::Receiver<bool>,
) -> SubResult {
    let mut rx = Receiver::new(&run, idx);
    let channel = &run.channels[rx.result.channel];
    let setup = async {
        let _permit = permits.acquire().await?;
        ws_session(run.target(idx), Some(channel), "4").await
    };
    let (mut ws, cid) = match setup.await {
        Ok(x) => x,
        Err(e) => {
            let _ = ready.send(Err(e.to_string()));
            return rx.result;
        }
    };
    let _ = ready.send(Ok(()));
    let mut next_id = 5u64;
    loop {
        let msg = tokio::select! {
            biased;
            m = ws.next() => m,
            _ = stop.changed() => break,
        };
        match msg {
            Some(Ok(Message::Text(t))) => match rx.frame(&run, t.as_bytes()) {
                Ok(0) => {}
                Ok(_) => {
                    let body =
                        connect_body(&cid, &next_id.to_string(), Transport::Websocket, false);
                    next_id += 1;
                    if let Err(e) = ws.send(Message::text(body)).await {
                        run.errors.push(format!("subscriber {idx}: {e}"));
                        break;
                    }
                }
                Err(e) => {
                    run.errors.push(format!("subscriber {idx}: {e}"));
                    break;
                }
            },
            Some(Ok(Message::Close(c))) => {
                run.errors
                    .push(format!("subscriber {idx}: server closed: {c:?}"));
                break;
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                run.errors.push(format!("subscriber {idx}: {e}"));
                break;
            }
            None => {
                run.errors
                    .push(format!("subscriber {idx}: connection closed"));
                break;
            }
        }
    }
    let bye = async {
        let _ = ws.send(Message::text(disconnect_body(&cid, "99"))).await;
        let _ = ws.close().await;
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), bye).await;
    rx.result
}

async fn lp_subscriber(
    run: Arc<Run>,
    idx: usize,
    permits: Arc<Semaphore>,
    ready: Ready,
    mut stop: watch::Receiver<bool>,
) -> SubResult {
    let mut rx = Receiver::new(&run, idx);
    let channel = &run.channels[rx.result.channel];
    let setup = async {
        let _permit = permits.acquire().await?;
        lp_session(run.target(idx), Some(channel)).await
    };
    let (mut control, cid) = match setup.await {
        Ok(x) => x,
        Err(e) => {
            let _ = ready.send(Err(e.to_string()));
            return rx.result;
        }
    };
    // The held connect has its own connection, as a browser would use.
    let mut poll = Http::sibling(&control);
    control.close();
    let _ = ready.send(Ok(()));
    let mut next_id = 4u64;
    loop {
        let body = connect_body(&cid, &next_id.to_string(), Transport::LongPolling, false);
        next_id += 1;
        let r = tokio::select! {
            biased;
            _ = stop.changed() => break,
            r = poll.post(body) => r.and_then(Resp::success),
        };
        match r {
            Ok(b) => {
                if let Err(e) = rx.frame(&run, &b) {
                    run.errors.push(format!("subscriber {idx}: {e}"));
                    break;
                }
            }
            Err(e) => {
                run.errors.push(format!("subscriber {idx}: {e}"));
                break;
            }
        }
    }
    let _ = tokio::time::timeout(
        Duration::from_secs(5),
        control.post(disconnect_body(&cid, "99")),
    )
    .await;
    rx.result
}

/// Builds publish messages: picks the channel, numbers the message, stamps it.
struct Publisher {
    idx: u32,
    cid: String,
    seqs: Vec<u64>,
    rng: Rng,
    next_id: u64,
    sent: u64,
    data: String,
}

impl Publisher {
    fn new(run: &Run, idx: u32, cid: String) -> Publisher {
        Publisher {
            idx,
            cid,
            seqs: vec![0; run.channels.len()],
            rng: Rng::new(u64::from(idx) + 1),
            next_id: 100,
            sent: 0,
            data: String::with_capacity(64 + run.pad.len()),
        }
    }

    /// Appends one publish (stamped `ts`) to `out`.
    fn message(&mut self, run: &Run, ts: u64, out: &mut String) {
        let c = if self.seqs.len() == 1 {
            0
        } else {
            self.rng.below(self.seqs.len())
        };
        let seq = self.seqs[c];
        self.seqs[c] += 1;
        self.data.clear();
        payload(&mut self.data, seq, ts, self.idx, &run.pad);
        publish_message(out, &self.cid, self.next_id, &run.channels[c], &self.data);
        self.next_id += 1;
        self.sent += 1;
    }

    /// Intended send time of message number `n` at `rate` per second (per publisher).
    fn intended(start_us: u64, offset_us: f64, rate: f64, n: u64) -> u64 {
        start_us + (offset_us + n as f64 * 1e6 / rate) as u64
    }

    /// How many more may be sent without exceeding `cap` publishes not yet delivered to every
    /// recipient.
    fn delivery_room(&self, run: &Run, cap: usize) -> usize {
        let delivered = run.delivered_by[self.idx as usize].load(Ordering::Relaxed);
        let outstanding = (self.sent * run.per_publish).saturating_sub(delivered);
        let limit = cap as u64 * run.per_publish;
        (limit.saturating_sub(outstanding) / run.per_publish.max(1)) as usize
    }

    /// Messages due by `now` in rate mode.
    fn due(&self, start_us: u64, offset_us: f64, rate: f64, now: u64) -> u64 {
        let elapsed = now.saturating_sub(start_us) as f64 - offset_us;
        if elapsed < 0.0 {
            return 0;
        }
        ((elapsed * rate / 1e6) as u64 + 1).saturating_sub(self.sent)
    }
}

async fn wait_start(start: &mut watch::Receiver<Option<Instant>>) -> Option<Instant> {
    start.wait_for(Option::is_some).await.ok().and_then(|s| *s)
}

async fn ws_publisher(
    run: Arc<Run>,
    idx: u32,
    permits: Arc<Semaphore>,
    ready: Ready,
    mut start: watch::Receiver<Option<Instant>>,
    _stop: watch::Receiver<bool>,
) -> PubResult {
    let setup = async {
        let _permit = permits.acquire().await?;
        ws_session(run.target(idx as usize), None, "c3").await
    };
    let (ws, cid) = match setup.await {
        Ok(x) => x,
        Err(e) => {
            let _ = ready.send(Err(e.to_string()));
            return PubResult::default();
        }
    };
    let _ = ready.send(Ok(()));
    let mut p = Publisher::new(&run, idx, cid.clone());
    let Some(t0) = wait_start(&mut start).await else {
        return PubResult::default();
    };
    let cfg = &run.cfg;
    let (mut sink, mut stream) = (*ws).split();
    let rate = cfg.rate / cfg.publishers as f64;
    let start_us = us_at(t0);
    let offset_us = if rate > 0.0 {
        f64::from(idx) * 1e6 / rate / cfg.publishers as f64
    } else {
        0.0
    };
    let deadline = tokio::time::Instant::from_std(t0 + cfg.duration);
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut publishing = true;
    let mut drain_until = deadline + Duration::from_secs(5);
    let mut inflight = 0usize;
    let mut next_connect = 4u64;
    let mut buf = String::with_capacity(256);
    let cap = cfg.inflight.max(1);
    loop {
        // How many to send now.
        // As fast as possible: refill the window (rate mode sends on the ticks below).
        let n = if publishing && rate <= 0.0 {
            (cap - inflight.min(cap)).min(p.delivery_room(&run, cap))
        } else {
            0
        };
        if n > 0
            && send_ws(&run, &mut p, &mut sink, &mut buf, n, None)
                .await
                .is_err()
        {
            break;
        }
        inflight += n;
        tokio::select! {
            biased;
            m = stream.next() => match m {
                Some(Ok(Message::Text(t))) => {
                    let info = scan(t.as_bytes(), |_| {});
                    let replies = (info.successes + info.failures).saturating_sub(info.connect_replies);
                    inflight = inflight.saturating_sub(replies);
                    if info.failures > 0 {
                        run.errors.push(format!("publisher {idx}: {}", snippet(t.as_bytes())));
                    }
                    if info.connect_replies > 0 {
                        let body = connect_body(&cid, &format!("c{next_connect}"), Transport::Websocket, false);
                        next_connect += 1;
                        if sink.send(Message::text(body)).await.is_err() {
                            break;
                        }
                    }
                }
                Some(Ok(Message::Close(_))) | None => {
                    run.errors.push(format!("publisher {idx}: connection closed"));
                    break;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    run.errors.push(format!("publisher {idx}: {e}"));
                    break;
                }
            },
            // As fast as possible, the window also opens as deliveries arrive, which no reply
            // announces: the top of the loop looks again on each tick.
            _ = tick.tick(), if publishing => {
                let now = now_us();
                let due = if rate > 0.0 { p.due(start_us, offset_us, rate, now) as usize } else { 0 };
                let n = due.min(cap - inflight.min(cap));
                if n > 0 {
                    let first = p.sent;
                    let stamp = move |k: u64| Publisher::intended(start_us, offset_us, rate, first + k);
                    if send_ws(&run, &mut p, &mut sink, &mut buf, n, Some(&stamp)).await.is_err() {
                        break;
                    }
                    inflight += n;
                }
            }
            _ = tokio::time::sleep_until(deadline), if publishing => {
                publishing = false;
                drain_until = tokio::time::Instant::now() + Duration::from_secs(5);
            }
            _ = tokio::time::sleep_until(drain_until), if !publishing => break,
        }
        if !publishing && inflight == 0 {
            break;
        }
    }
    let bye = async {
        let _ = sink.send(Message::text(disconnect_body(&cid, "99"))).await;
        let _ = sink.close().await;
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), bye).await;
    PubResult { sent: p.seqs }
}

type WsSink = futures_util::stream::SplitSink<crate::conn::Ws, Message>;

/// Writes `n` publishes, one per frame, with one flush. `stamp(k)` gives the timestamp of the
/// k-th (default: now).
async fn send_ws(
    run: &Run,
    p: &mut Publisher,
    sink: &mut WsSink,
    buf: &mut String,
    n: usize,
    stamp: Option<&(dyn Fn(u64) -> u64 + Sync)>,
) -> Result<()> {
    for k in 0..n {
        buf.clear();
        buf.push('[');
        let ts = stamp.map_or_else(now_us, |f| f(k as u64));
        p.message(run, ts, buf);
        buf.push(']');
        sink.feed(Message::text(buf.as_str())).await?;
    }
    sink.flush().await?;
    run.published.fetch_add(n as u64, Ordering::Relaxed);
    Ok(())
}

async fn lp_publisher(
    run: Arc<Run>,
    idx: u32,
    permits: Arc<Semaphore>,
    ready: Ready,
    mut start: watch::Receiver<Option<Instant>>,
    mut stop: watch::Receiver<bool>,
) -> PubResult {
    let setup = async {
        let _permit = permits.acquire().await?;
        lp_session(run.target(idx as usize), None).await
    };
    let (mut control, cid) = match setup.await {
        Ok(x) => x,
        Err(e) => {
            let _ = ready.send(Err(e.to_string()));
            return PubResult::default();
        }
    };
    // Keep the session alive with held connects on a second connection, like a browser.
    let mut poll = Http::sibling(&control);
    let keepalive = {
        let cid = cid.clone();
        let run = run.clone();
        tokio::spawn(async move {
            let mut n = 3u64;
            loop {
                let body = connect_body(&cid, &format!("c{n}"), Transport::LongPolling, false);
                n += 1;
                tokio::select! {
                    _ = stop.changed() => break,
                    r = poll.post(body) => if let Err(e) = r.and_then(Resp::success) {
                        run.errors.push(format!("publisher {idx} connect: {e}"));
                        break;
                    },
                }
            }
        })
    };
    let _ = ready.send(Ok(()));
    let mut p = Publisher::new(&run, idx, cid.clone());
    let Some(t0) = wait_start(&mut start).await else {
        return PubResult::default();
    };
    let cfg = &run.cfg;
    let rate = cfg.rate / cfg.publishers as f64;
    let start_us = us_at(t0);
    let offset_us = if rate > 0.0 {
        f64::from(idx) * 1e6 / rate / cfg.publishers as f64
    } else {
        0.0
    };
    let deadline = t0 + cfg.duration;
    let cap = cfg.inflight.max(1);
    let mut body = String::with_capacity(256 * cap);
    while Instant::now() < deadline {
        let n = if rate > 0.0 {
            let now = now_us();
            let due = p.due(start_us, offset_us, rate, now) as usize;
            if due == 0 {
                let next = Publisher::intended(start_us, offset_us, rate, p.sent);
                tokio::time::sleep(Duration::from_micros(next.saturating_sub(now).max(200))).await;
                continue;
            }
            due.min(cap)
        } else {
            let room = p.delivery_room(&run, cap);
            if room == 0 {
                tokio::time::sleep(Duration::from_micros(200)).await;
                continue;
            }
            room
        };
        body.clear();
        body.push('[');
        let first = p.sent;
        for k in 0..n {
            if k > 0 {
                body.push(',');
            }
            let ts = if rate > 0.0 {
                Publisher::intended(start_us, offset_us, rate, first + k as u64)
            } else {
                now_us()
            };
            p.message(&run, ts, &mut body);
        }
        body.push(']');
        run.published.fetch_add(n as u64, Ordering::Relaxed);
        match control.post(body.clone()).await.and_then(Resp::success) {
            Ok(b) => {
                let info = scan(&b, |_| {});
                if info.failures > 0 {
                    run.errors.push(format!("publisher {idx}: {}", snippet(&b)));
                }
            }
            Err(e) => {
                run.errors.push(format!("publisher {idx}: {e}"));
                break;
            }
        }
    }
    let _ = tokio::time::timeout(
        Duration::from_secs(5),
        control.post(disconnect_body(&cid, "99")),
    )
    .await;
    keepalive.abort();
    PubResult { sent: p.seqs }
}
