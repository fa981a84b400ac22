//! The operators' endpoints of the binary: `/healthz` (liveness), `/readyz` (readiness, which
//! follows the Redis backplane), `/metrics` moved to the admin listener (`--admin-listen`), and
//! JSON log lines (`--log-format json`) with each request's span. Needs the `redis` feature (default).

#![cfg(feature = "redis")]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The server process, killed by PID on drop.
struct Server {
    child: Child,
    public: SocketAddr,
    admin: Option<SocketAddr>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(args: &[&str], stderr: Stdio) -> Server {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bayeux-server"));
    for (k, _) in std::env::vars() {
        if k.starts_with("BAYEUX_") || k == "RUST_LOG" {
            cmd.env_remove(k);
        }
    }
    let mut child = cmd
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("start bayeux-server");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let addr_after = |line: &str, marker: &str| -> Option<SocketAddr> {
        line.split(marker)
            .nth(1)?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let public = addr_after(&line, "listening on http://").expect("public listening line");
    let admin = if args.contains(&"--admin-listen") {
        line.clear();
        out.read_line(&mut line).unwrap();
        Some(addr_after(&line, "admin listening on http://").expect("admin listening line"))
    } else {
        None
    };
    Server {
        child,
        public,
        admin,
    }
}

/// Sends `request` (with `Connection: close`) and returns the status and the body.
fn exchange(addr: SocketAddr, request: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_owned();
    (status, body)
}

/// GET `path`: status and body.
fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    exchange(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
    )
}

#[test]
fn admin_listener_takes_metrics_and_readiness_follows_redis() {
    // Nothing listens on port 1: the backplane stays unconnected.
    let server = spawn(
        &[
            "--admin-listen",
            "127.0.0.1:0",
            "--no-voice",
            "--redis",
            "redis://127.0.0.1:1",
        ],
        Stdio::null(),
    );
    let admin = server.admin.unwrap();
    let (status, body) = get(admin, "/metrics");
    assert_eq!(status, 200);
    assert!(body.contains("bayeux_sessions"), "{body}");
    assert!(body.contains("bayeux_redis_connected 0"), "{body}");
    assert_eq!(
        get(server.public, "/metrics").0,
        404,
        "metrics left the public port"
    );
    assert_eq!(get(admin, "/healthz"), (200, "ok\n".into()));
    assert_eq!(get(server.public, "/healthz").0, 200);
    let (status, body) = get(admin, "/readyz");
    assert_eq!(status, 503);
    assert!(body.contains("redis"), "{body}");
    assert_eq!(get(server.public, "/readyz").0, 503);
    assert_eq!(
        get(admin, "/cometd").0,
        404,
        "the admin port serves nothing else"
    );
}

#[test]
fn ready_without_a_backplane_and_json_logs() {
    let mut server = spawn(
        &[
            "--log-format",
            "json",
            "--log-level",
            "warn,bayeux_server=debug",
        ],
        Stdio::piped(),
    );
    assert_eq!(get(server.public, "/readyz"), (200, "ready\n".into()));
    assert_eq!(get(server.public, "/metrics").0, 200, "no admin listener");
    // Every log line is one JSON object; each request ends with a `request done` event inside
    // its `request` span.
    let mut err = BufReader::new(server.child.stderr.take().unwrap());
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut paths = Vec::new();
    while paths.len() < 2 {
        assert!(Instant::now() < deadline, "no request lines: {paths:?}");
        let mut line = String::new();
        if err.read_line(&mut line).unwrap() == 0 {
            panic!("the server's stderr ended");
        }
        let v: serde_json::Value = serde_json::from_str(line.trim()).expect("a JSON log line");
        assert!(v["level"].is_string() && v["fields"].is_object(), "{line}");
        if v["fields"]["message"] == "request done" {
            assert_eq!(v["span"]["name"], "request", "{line}");
            assert_eq!(v["fields"]["status"], 200, "{line}");
            paths.push(v["span"]["path"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(paths, ["/readyz", "/metrics"]);
}

/// POSTs a JSON batch to `path`: the status and the parsed reply.
fn post(addr: SocketAddr, path: &str, body: &serde_json::Value) -> (u16, Vec<serde_json::Value>) {
    let body = body.to_string();
    let (status, reply) = exchange(
        addr,
        &format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    );
    (status, serde_json::from_str(&reply).unwrap_or_default())
}

/// The `{name}_count` value of a `/metrics` text.
fn histogram_count(metrics: &str, name: &str) -> u64 {
    let prefix = format!("{name}_count ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {name}_count in:\n{metrics}"))
        .parse()
        .unwrap()
}

#[test]
fn latency_histograms_and_the_session_in_json_log_spans() {
    let mut server = spawn(
        &[
            "--no-voice",
            "--timeout-ms",
            "5000",
            "--log-format",
            "json",
            "--log-level",
            "warn,bayeux_transport=debug",
        ],
        Stdio::piped(),
    );
    let addr = server.public;
    let (_, r) = post(
        addr,
        "/cometd/handshake",
        &serde_json::json!([{"channel": "/meta/handshake", "version": "1.0",
            "supportedConnectionTypes": ["long-polling"], "id": "1"}]),
    );
    let id = r[0]["clientId"].as_str().expect("clientId").to_owned();
    let connect = |n: &str| {
        serde_json::json!([{"channel": "/meta/connect", "clientId": id,
            "connectionType": "long-polling", "id": n}])
    };
    assert_eq!(post(addr, "/cometd/connect", &connect("2")).0, 200);
    let (_, r) = post(
        addr,
        "/cometd",
        &serde_json::json!([{"channel": "/meta/subscribe", "clientId": id,
            "subscription": "/chat", "id": "3"}]),
    );
    assert_eq!(r[0]["successful"], true, "{r:?}");
    // A held connect, answered by the publish that follows.
    let held = {
        let body = connect("4");
        std::thread::spawn(move || post(addr, "/cometd/connect", &body))
    };
    let (_, m) = get(addr, "/metrics");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !get(addr, "/metrics").1.contains("bayeux_held_connects 1") {
        assert!(Instant::now() < deadline, "the connect was not held");
        std::thread::sleep(Duration::from_millis(10));
    }
    for h in [
        "bayeux_publish_to_queued_seconds",
        "bayeux_queued_to_written_seconds",
        "bayeux_connect_hold_seconds",
    ] {
        assert_eq!(histogram_count(&m, h), 0, "{h}");
    }
    let (_, r) = post(
        addr,
        "/cometd",
        &serde_json::json!([{"channel": "/chat", "clientId": id, "data": "hi", "id": "5"}]),
    );
    assert_eq!(r[0]["successful"], true, "{r:?}");
    let (status, r) = held.join().unwrap();
    assert_eq!(status, 200);
    assert_eq!(r[0]["data"], "hi", "{r:?}");
    let (_, m) = get(addr, "/metrics");
    assert_eq!(histogram_count(&m, "bayeux_publish_to_queued_seconds"), 1);
    assert_eq!(histogram_count(&m, "bayeux_queued_to_written_seconds"), 1);
    assert_eq!(histogram_count(&m, "bayeux_connect_hold_seconds"), 1);

    // A `request done` line of the session carries it in its span, inside the
    // connection's span.
    let mut err = BufReader::new(server.child.stderr.take().unwrap());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        assert!(
            Instant::now() < deadline,
            "no request line with the session"
        );
        let mut line = String::new();
        if err.read_line(&mut line).unwrap() == 0 {
            panic!("the server's stderr ended");
        }
        let v: serde_json::Value = serde_json::from_str(line.trim()).expect("a JSON log line");
        if v["fields"]["message"] != "request done" || v["span"]["path"] != "/cometd" {
            continue;
        }
        assert_eq!(v["span"]["name"], "request", "{line}");
        assert_eq!(v["span"]["client_id"], &id[..8], "{line}");
        assert_eq!(v["span"]["transport"], "long-polling", "{line}");
        assert!(!line.contains(&id), "the whole id is a secret: {line}");
        assert_eq!(v["spans"][0]["name"], "conn", "{line}");
        assert!(
            v["spans"][0]["peer"]
                .as_str()
                .is_some_and(|p| p.starts_with("127.0.0.1:")),
            "{line}"
        );
        break;
    }
}
