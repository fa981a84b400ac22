//! `deflate-wire`: what permessage-deflate costs and saves on a `bayeux-server`, measured with
//! a raw WebSocket client of its own (the load generator's tungstenite client does not speak
//! the extension). The same server binary serves both runs; only the client's offer differs.
//!
//! ```sh
//! cargo build --release -p bayeux-server -p bayeux-benches --bins
//! target/release/deflate-wire fanout --subscribers 500 --publishes 2000 --rate 100 [--deflate]
//! target/release/deflate-wire idle --sessions 5000 [--deflate]
//! ```
//!
//! `fanout`: S WebSocket subscribers on one channel, one publisher sending P messages (the
//! payload of a voice-API event, some 650 bytes of JSON, or `--events K` of them in one message)
//! at a fixed rate, so that each delivery travels in a frame of its own. It reports the bytes the subscribers read from their sockets
//! (frame headers included) per delivery, and the server's CPU time (from `/proc`) per delivery.
//!
//! `idle`: N sessions over WebSocket that handshake, connect and then sit with a connect held;
//! it reports (server RSS with the sessions − RSS before) / N.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bayeux_benches::procfs;
use bayeux_benches::server::{default_server_bin, spawn};
use bytes::{Buf, BytesMut};
use flate2::{Decompress, FlushDecompress};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

type Error = Box<dyn std::error::Error + Send + Sync>;

const CHANNEL: &str = "/bench/deflate";

/// A voice-API style event (some 600 bytes): what a CometD deployment of this server carries.
fn payload(seq: u64) -> String {
    format!(
        r#"{{"seq":{seq},"messageType":"CallStateChanged","call":{{"id":"0a6c7f2e-4f1b-4a55-9d0e-{seq:012}","callUuid":"01HQ5XK3M5B2ZJ7T9V8W6Y4R2P","state":"Established","callType":"Inbound","direction":"Incoming","dnis":"15000","ani":"+14155550123","participants":[{{"number":"+14155550123","role":"Customer","state":"Established"}},{{"number":"15000","role":"Agent","state":"Established"}}],"capabilities":["Hold","Release","Transfer","Conference","SendDtmf","Record"],"userData":{{"ServiceType":"Support","Language":"en-US","Segment":"Gold","CustomerId":"C-{seq:08}"}},"duration":{},"recordingState":"Stopped"}},"deviceId":"631608b3-ceb1-472b-ba05-2ae39555b0d1","dn":"15000"}}"#,
        seq % 600
    )
}

/// A raw client WebSocket.
struct Ws {
    tcp: TcpStream,
    buf: BytesMut,
    deflate: bool,
    inflater: Decompress,
    bytes_read: Arc<AtomicU64>,
}

impl Ws {
    async fn open(
        addr: &str,
        path: &str,
        offer: bool,
        bytes_read: Arc<AtomicU64>,
    ) -> Result<Ws, Error> {
        let mut tcp = TcpStream::connect(addr).await?;
        let ext = if offer {
            "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
        } else {
            ""
        };
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{ext}\r\n"
        );
        tcp.write_all(req.as_bytes()).await?;
        let mut buf = BytesMut::with_capacity(1024);
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if tcp.read_buf(&mut buf).await? == 0 {
                return Err("closed during the upgrade".into());
            }
        };
        let head = String::from_utf8_lossy(&buf.split_to(end)).to_ascii_lowercase();
        if !head.starts_with("http/1.1 101") {
            return Err(format!("upgrade refused: {head}").into());
        }
        let deflate = head.contains("permessage-deflate");
        if deflate != offer {
            return Err("permessage-deflate not negotiated as offered".into());
        }
        Ok(Ws {
            tcp,
            buf,
            deflate,
            inflater: Decompress::new(false),
            bytes_read,
        })
    }

    /// Sends a text frame (masked with a zero key, uncompressed).
    async fn send(&mut self, text: &str) -> Result<(), Error> {
        let n = text.len();
        let mut f = Vec::with_capacity(n + 14);
        f.push(0x81);
        if n < 126 {
            f.push(0x80 | n as u8);
        } else if n < 65_536 {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        } else {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
        f.extend_from_slice(&[0; 4]);
        f.extend_from_slice(text.as_bytes());
        self.tcp.write_all(&f).await?;
        Ok(())
    }

    /// The next text message, inflated if compressed (pings and pongs skipped).
    async fn recv(&mut self) -> Result<Vec<u8>, Error> {
        loop {
            if self.buf.len() >= 2 {
                let (b0, b1) = (self.buf[0], self.buf[1]);
                let (len, at) = match b1 & 0x7f {
                    126 if self.buf.len() >= 4 => (
                        usize::from(u16::from_be_bytes([self.buf[2], self.buf[3]])),
                        4,
                    ),
                    127 if self.buf.len() >= 10 => {
                        let mut b = [0; 8];
                        b.copy_from_slice(&self.buf[2..10]);
                        (u64::from_be_bytes(b) as usize, 10)
                    }
                    126 | 127 => (usize::MAX, 0),
                    n => (usize::from(n), 2),
                };
                if len != usize::MAX && self.buf.len() >= at + len {
                    self.buf.advance(at);
                    let p = self.buf.split_to(len);
                    match b0 & 0x0f {
                        0x1 if b0 & 0x40 != 0 => {
                            if !self.deflate {
                                return Err("compressed frame on a plain socket".into());
                            }
                            return self.inflate(&p);
                        }
                        0x1 => return Ok(p.to_vec()),
                        0x8 => return Err("closed by the server".into()),
                        _ => continue,
                    }
                }
            }
            let n = self.tcp.read_buf(&mut self.buf).await?;
            if n == 0 {
                return Err("connection closed".into());
            }
            self.bytes_read.fetch_add(n as u64, Ordering::Relaxed);
        }
    }

    fn inflate(&mut self, data: &[u8]) -> Result<Vec<u8>, Error> {
        self.inflater.reset(false);
        let mut input = data.to_vec();
        input.extend_from_slice(&[0, 0, 0xff, 0xff]);
        let mut out = Vec::with_capacity(data.len() * 8 + 1024);
        loop {
            self.inflater.decompress_vec(
                &input[self.inflater.total_in() as usize..],
                &mut out,
                FlushDecompress::Sync,
            )?;
            if self.inflater.total_in() as usize == input.len() && out.len() < out.capacity() {
                return Ok(out);
            }
            out.reserve(out.capacity());
        }
    }

    /// Waits for the reply with this id (deliveries before it are skipped).
    async fn reply(&mut self, id: &str) -> Result<serde_json::Value, Error> {
        let needle = format!("\"id\":\"{id}\"");
        loop {
            let m = self.recv().await?;
            if memchr::memmem::find(&m, needle.as_bytes()).is_some() {
                let v: serde_json::Value = serde_json::from_slice(&m)?;
                let r = v
                    .as_array()
                    .and_then(|a| a.iter().find(|x| x["id"] == id))
                    .cloned()
                    .ok_or("no reply")?;
                if r["successful"] != true {
                    return Err(format!("refused: {r}").into());
                }
                return Ok(r);
            }
        }
    }

    /// Handshake and first connect; the clientId.
    async fn session(&mut self) -> Result<String, Error> {
        self.send(r#"[{"channel":"/meta/handshake","version":"1.0","supportedConnectionTypes":["websocket"],"id":"1"}]"#)
            .await?;
        let hs = self.reply("1").await?;
        let id = hs["clientId"].as_str().ok_or("no clientId")?.to_owned();
        self.send(&format!(
            r#"[{{"channel":"/meta/connect","clientId":"{id}","connectionType":"websocket","id":"2","advice":{{"timeout":0}}}}]"#
        ))
        .await?;
        self.reply("2").await?;
        Ok(id)
    }

    /// Sends the connect the server holds.
    async fn hold(&mut self, client: &str, n: u64) -> Result<(), Error> {
        self.send(&format!(
            r#"[{{"channel":"/meta/connect","clientId":"{client}","connectionType":"websocket","id":"c{n}"}}]"#
        ))
        .await
    }
}

fn arg(args: &[String], name: &str, default: u64) -> u64 {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mode = args.first().cloned().unwrap_or_default();
    let offer = args.iter().any(|a| a == "--deflate");
    let bin = default_server_bin().ok_or("bayeux-server not found next to deflate-wire")?;
    let server = spawn(&bin, &[])?;
    let pid = server.pid();
    let url = server.url.strip_prefix("http://").ok_or("url")?;
    let (addr, path) = url.split_at(url.find('/').ok_or("path")?);
    let (addr, path) = (addr.to_owned(), path.to_owned());
    match mode.as_str() {
        "fanout" => fanout(&addr, &path, pid, offer, &args).await,
        "idle" => idle(&addr, &path, pid, offer, &args).await,
        _ => Err("usage: deflate-wire fanout|idle [--deflate] [--subscribers S --publishes P --rate R --events K | --sessions N]".into()),
    }
}

async fn fanout(
    addr: &str,
    path: &str,
    pid: u32,
    offer: bool,
    args: &[String],
) -> Result<(), Error> {
    let subscribers = arg(args, "--subscribers", 500);
    let publishes = arg(args, "--publishes", 2000);
    let rate = arg(args, "--rate", 100).max(1);
    let events = arg(args, "--events", 1).max(1);
    let data = |seq: u64| {
        if events == 1 {
            return payload(seq);
        }
        let all: Vec<String> = (0..events).map(|i| payload(seq * events + i)).collect();
        format!(r#"{{"events":[{}]}}"#, all.join(","))
    };
    let bytes_read = Arc::new(AtomicU64::new(0));
    let delivered = Arc::new(AtomicU64::new(0));
    let frames = Arc::new(AtomicU64::new(0));
    let mut subs = Vec::new();
    for _ in 0..subscribers {
        let mut ws = Ws::open(addr, path, offer, bytes_read.clone()).await?;
        let id = ws.session().await?;
        ws.send(&format!(
            r#"[{{"channel":"/meta/subscribe","clientId":"{id}","subscription":"{CHANNEL}","id":"3"}}]"#
        ))
        .await?;
        ws.reply("3").await?;
        ws.hold(&id, 0).await?;
        subs.push((ws, id));
    }
    let mut publisher = Ws::open(addr, path, false, Arc::new(AtomicU64::new(0))).await?;
    let pub_id = publisher.session().await?;
    // Measured from here: setup traffic excluded.
    bytes_read.store(0, Ordering::Relaxed);
    let needle = format!("\"channel\":\"{CHANNEL}\"");
    let mut tasks = Vec::new();
    for (mut ws, id) in subs {
        let (delivered, frames, needle) = (delivered.clone(), frames.clone(), needle.clone());
        tasks.push(tokio::spawn(async move {
            let finder = memchr::memmem::Finder::new(needle.as_bytes());
            let mut got = 0;
            let mut n = 1;
            while got < publishes {
                let m = ws.recv().await?;
                let k = finder.find_iter(&m).count() as u64;
                got += k;
                delivered.fetch_add(k, Ordering::Relaxed);
                frames.fetch_add(u64::from(k > 0), Ordering::Relaxed);
                if k == 0 && memchr::memmem::find(&m, b"/meta/connect").is_some() {
                    ws.hold(&id, n).await?;
                    n += 1;
                }
            }
            Ok::<_, Error>(())
        }));
    }
    let before = procfs::sample(Some(pid))?;
    let started = Instant::now();
    let period = Duration::from_secs_f64(1.0 / rate as f64);
    let mut tick = tokio::time::interval(period);
    for seq in 0..publishes {
        tick.tick().await;
        publisher
            .send(&format!(
                r#"[{{"channel":"{CHANNEL}","clientId":"{pub_id}","data":{},"id":"p{seq}"}}]"#,
                data(seq)
            ))
            .await?;
        publisher.reply(&format!("p{seq}")).await?;
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(60), t).await???;
    }
    let elapsed = started.elapsed();
    let after = procfs::sample(Some(pid))?;
    let d = delivered.load(Ordering::Relaxed);
    let bytes = bytes_read.load(Ordering::Relaxed);
    let cpu = after.cpu_secs - before.cpu_secs;
    let line = serde_json::json!({
        "scenario": "fanout",
        "deflate": offer,
        "subscribers": subscribers,
        "publishes": publishes,
        "rate": rate,
        "payload_bytes": data(0).len(),
        "deliveries": d,
        "frames": frames.load(Ordering::Relaxed),
        "wire_bytes_per_delivery": bytes as f64 / d as f64,
        "deflate_us_per_message": deflate_cost(&data(7)),
        "server_cpu_secs": cpu,
        "server_cpu_us_per_delivery": cpu * 1e6 / d as f64,
        "elapsed_secs": elapsed.as_secs_f64(),
    });
    println!("{line}");
    Ok(())
}

/// What deflating one delivery costs (µs) with the server's settings (flate2 on miniz_oxide,
/// level 1, state reset per message): the cost per delivery that compressing once per message,
/// rather than once per socket, saves.
fn deflate_cost(data: &str) -> f64 {
    let message = format!(r#"[{{"channel":"{CHANNEL}","data":{data}}}]"#);
    let mut c = flate2::Compress::new(flate2::Compression::new(1), false);
    let mut out = Vec::with_capacity(message.len() * 2);
    let n = 20_000;
    let t = Instant::now();
    for _ in 0..n {
        c.reset();
        out.clear();
        let _ = c.compress_vec(message.as_bytes(), &mut out, flate2::FlushCompress::Sync);
    }
    t.elapsed().as_secs_f64() * 1e6 / f64::from(n)
}

async fn idle(addr: &str, path: &str, pid: u32, offer: bool, args: &[String]) -> Result<(), Error> {
    let sessions = arg(args, "--sessions", 5000);
    // A first batch warms the server up (allocator arenas, tables); the figure is the growth
    // from there.
    let warm = 200;
    let counter = Arc::new(AtomicU64::new(0));
    let mut held = Vec::new();
    // Opens `n` more sessions, each with a connect held.
    let open_held = async |n: u64, held: &mut Vec<Ws>| -> Result<(), Error> {
        for _ in 0..n {
            let mut ws = Ws::open(addr, path, offer, counter.clone()).await?;
            let id = ws.session().await?;
            ws.hold(&id, 0).await?;
            held.push(ws);
        }
        Ok(())
    };
    open_held(warm, &mut held).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = procfs::sample(Some(pid))?;
    open_held(sessions, &mut held).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = procfs::sample(Some(pid))?;
    let per = (after.rss_bytes as f64 - before.rss_bytes as f64) / sessions as f64;
    println!(
        "{}",
        serde_json::json!({
            "scenario": "idle",
            "deflate": offer,
            "sessions": sessions,
            "rss_before": before.rss_bytes,
            "rss_after": after.rss_bytes,
            "bytes_per_session": per,
        })
    );
    drop(held);
    Ok(())
}
