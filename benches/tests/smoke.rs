//! Smoke test of the load generator against our server, started in-process: a few seconds of
//! each scenario, so the tool cannot rot. Below saturation nothing may be lost, duplicated or
//! reordered.

use std::time::Duration;

use bayeux_benches::scenario::{ChurnConfig, Env, IdleConfig, Mode, PubSubConfig};
use bayeux_benches::{Target, Transport, run_churn, run_idle, run_pubsub};
use bayeux_server::{App, ServerConfig};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

struct Server {
    env: Env,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn start() -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = ServerConfig::default();
    let app = App::build_for(&config, addr).unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(app.run(
        listener,
        async {
            let _ = rx.await;
        },
        Duration::from_secs(2),
    ));
    Server {
        env: Env {
            target: Target::parse(&format!("http://{addr}/cometd")).unwrap(),
            // In-process: the server's CPU is ours, so it is not reported separately.
            server_pid: None,
            server_label: "in-process".into(),
            progress: false,
        },
        stop: Some(tx),
        task,
    }
}

impl Server {
    async fn stop(mut self) {
        let _ = self.stop.take().map(|s| s.send(()));
        let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
    }
}

fn assert_clean(r: &bayeux_benches::RunReport) {
    assert!(r.errors.is_empty(), "errors: {:?}", r.errors);
    let expected = r.expected.unwrap();
    assert!(expected > 0, "nothing was published: {r:?}");
    assert_eq!(r.delivered, Some(expected), "{r:?}");
    assert_eq!(r.lost, Some(0), "{r:?}");
    assert_eq!(r.duplicated, Some(0), "{r:?}");
    assert_eq!(r.reordered, Some(0), "{r:?}");
    let l = r.latency_us.expect("latencies were recorded");
    assert!(l.samples > 0 && l.p50 <= l.p99 && l.p99 <= l.max, "{l:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_fanout_as_fast_as_possible_loses_nothing() {
    let server = start().await;
    let cfg = PubSubConfig {
        mode: Mode::Fanout,
        subscribers: 20,
        publishers: 2,
        inflight: 16,
        duration: Duration::from_secs(3),
        warmup: Duration::from_millis(200),
        ..PubSubConfig::default()
    };
    let r = run_pubsub(&server.env, &cfg).await.unwrap();
    assert_clean(&r);
    assert_eq!(r.scenario, "fanout");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_polling_fanout_and_websocket_channels_at_a_fixed_rate() {
    let server = start().await;
    let lp = PubSubConfig {
        mode: Mode::Fanout,
        transport: Transport::LongPolling,
        publish_transport: Transport::LongPolling,
        subscribers: 10,
        publishers: 2,
        rate: 200.0,
        duration: Duration::from_secs(2),
        warmup: Duration::from_millis(200),
        ..PubSubConfig::default()
    };
    let r = run_pubsub(&server.env, &lp).await.unwrap();
    assert_clean(&r);
    assert_eq!(r.offered_deliveries_per_s, Some(2000.0));
    let channels = PubSubConfig {
        mode: Mode::Channels,
        subscribers: 50,
        publishers: 2,
        rate: 1000.0,
        duration: Duration::from_secs(2),
        warmup: Duration::from_millis(200),
        ..PubSubConfig::default()
    };
    let r = run_pubsub(&server.env, &channels).await.unwrap();
    assert_clean(&r);
    assert_eq!(r.expected, r.published);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_and_idle_complete_without_errors() {
    let server = start().await;
    for transport in [Transport::Websocket, Transport::LongPolling] {
        let cfg = ChurnConfig {
            transport,
            workers: 4,
            duration: Duration::from_millis(1500),
        };
        let r = run_churn(&server.env, &cfg).await.unwrap();
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        assert!(r.cycles.unwrap() > 10, "{r:?}");
        assert!(r.latency_us.is_some());
        let cfg = IdleConfig {
            transport,
            sessions: 50,
            hold: Duration::from_millis(300),
            setup_concurrency: 16,
        };
        let r = run_idle(&server.env, &cfg).await.unwrap();
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        assert_eq!(r.sessions, 50);
    }
    server.stop().await;
}

/// `write-floor` measures each burst size it is given and reports a positive cost for each.
#[test]
fn write_floor_reports_each_burst() {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_write-floor"))
        .args(["--sockets", "20", "--writes", "2000", "--bytes", "64"])
        .args(["--burst", "1", "--burst", "5", "--burst", "0"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("write-floor did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success());
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut out).unwrap();
    let lines: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("per CPU-second"))
        .collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        lines[0].contains("bursts of 1,") && lines[2].contains("never waits"),
        "{out}"
    );
    for l in lines {
        let per_write: f64 = l
            .split(':')
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(per_write > 0.0, "{l}");
    }
}
