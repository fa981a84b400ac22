//! permessage-deflate (RFC 7692) over real sockets, with a raw client that compresses and
//! inflates with its own deflate state (flate2 directly, not the server's code): the
//! negotiation, compressed messages both ways (whole and fragmented), uncompressed messages on a
//! compressed socket, and what closes the socket (the Autobahn cases of sections 12 and 13 that
//! apply to a server without context takeover): RSV1 on a continuation or control frame or
//! without the extension (1002), data that is not deflate (1007), a message that inflates
//! beyond `max_ws_message_bytes` (1009).

mod common;

use std::net::SocketAddr;

use bayeux_transport::TransportConfig;
use bayeux_transport::wsframe::{self, client_frame, client_frame_rsv1};
use bytes::{Buf, BytesMut};
use common::*;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const MASK: [u8; 4] = [0xa1, 0xb2, 0xc3, 0xd4];
const ANSWER: &str = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

/// A frame from the server.
#[derive(Debug)]
struct Frame {
    fin: bool,
    rsv1: bool,
    opcode: u8,
    payload: Vec<u8>,
}

/// A raw WebSocket client.
struct Raw {
    tcp: TcpStream,
    buf: BytesMut,
}

impl Raw {
    /// Upgrades a new connection, offering these `Sec-WebSocket-Extensions` headers; returns
    /// the client and the extension header of the answer.
    async fn open(addr: SocketAddr, path: &str, offers: &[&str]) -> (Raw, Option<String>) {
        let mut tcp = TcpStream::connect(addr).await.expect("connect");
        let mut req = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        );
        for o in offers {
            req.push_str(&format!("Sec-WebSocket-Extensions: {o}\r\n"));
        }
        req.push_str("\r\n");
        tcp.write_all(req.as_bytes()).await.unwrap();
        let mut buf = BytesMut::new();
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let n = step("upgrade answer", tcp.read_buf(&mut buf))
                .await
                .unwrap();
            assert!(n > 0, "closed during the upgrade");
        };
        let head = String::from_utf8(buf.split_to(end).to_vec()).unwrap();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        let ext = head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("sec-websocket-extensions")
                .then(|| v.trim().to_owned())
        });
        (Raw { tcp, buf }, ext)
    }

    async fn write(&mut self, bytes: &[u8]) {
        self.tcp.write_all(bytes).await.unwrap();
    }

    /// Sends `v` as one text frame, compressed or not.
    async fn send(&mut self, v: &Value, compressed: bool) {
        let text = v.to_string();
        let frame = if compressed {
            client_frame_rsv1(true, wsframe::TEXT, true, &deflate(text.as_bytes()), MASK)
        } else {
            client_frame(true, wsframe::TEXT, text.as_bytes(), MASK)
        };
        self.write(&frame).await;
    }

    /// The next frame (panics if none comes within [`STEP`]); `None` when the server closed
    /// the connection.
    async fn frame(&mut self) -> Option<Frame> {
        loop {
            if let Some(f) = parse_server_frame(&mut self.buf) {
                return Some(f);
            }
            let n = step("server frame", self.tcp.read_buf(&mut self.buf))
                .await
                .ok()?;
            if n == 0 {
                return None;
            }
        }
    }

    /// The next data message, inflated if it was compressed: its messages and whether it was.
    async fn recv(&mut self) -> (Vec<Value>, bool) {
        loop {
            let f = self.frame().await.expect("connection closed");
            match f.opcode {
                wsframe::PING | wsframe::PONG => continue,
                wsframe::TEXT => {
                    assert!(f.fin, "the server does not fragment");
                    let text = if f.rsv1 {
                        inflate(&f.payload)
                    } else {
                        f.payload
                    };
                    let v: Value = serde_json::from_slice(&text).expect("JSON");
                    return (v.as_array().expect("array").clone(), f.rsv1);
                }
                op => panic!("unexpected frame {op}: {f:?}"),
            }
        }
    }

    /// Reads until the close frame; its code.
    async fn close_code(&mut self) -> u16 {
        loop {
            let f = self.frame().await.expect("closed without a close frame");
            if f.opcode == wsframe::CLOSE {
                assert!(!f.rsv1);
                return u16::from_be_bytes([f.payload[0], f.payload[1]]);
            }
        }
    }

    /// Handshakes (compressed or not) and sends the first connect; the clientId.
    async fn handshake(&mut self, compressed: bool) -> String {
        self.send(&json!([handshake_msg("1", &["websocket"])]), compressed)
            .await;
        let (msgs, _) = self.recv().await;
        let id = find(&msgs, "/meta/handshake")["clientId"]
            .as_str()
            .unwrap()
            .to_owned();
        self.send(&json!([connect_msg(&id, "2", "websocket")]), compressed)
            .await;
        let (msgs, _) = self.recv().await;
        assert_eq!(find(&msgs, "/meta/connect")["successful"], true);
        id
    }
}

fn parse_server_frame(buf: &mut BytesMut) -> Option<Frame> {
    if buf.len() < 2 {
        return None;
    }
    let (b0, b1) = (buf[0], buf[1]);
    assert_eq!(b1 & 0x80, 0, "server frames are not masked");
    assert_eq!(b0 & 0x30, 0, "RSV2/RSV3");
    let (len, at) = match b1 & 0x7f {
        126 if buf.len() >= 4 => (usize::from(u16::from_be_bytes([buf[2], buf[3]])), 4),
        127 if buf.len() >= 10 => {
            let mut b = [0; 8];
            b.copy_from_slice(&buf[2..10]);
            (u64::from_be_bytes(b) as usize, 10)
        }
        126 | 127 => return None,
        n => (usize::from(n), 2),
    };
    if buf.len() < at + len {
        return None;
    }
    buf.advance(at);
    let payload = buf.split_to(len).to_vec();
    Some(Frame {
        fin: b0 & 0x80 != 0,
        rsv1: b0 & 0x40 != 0,
        opcode: b0 & 0x0f,
        payload,
    })
}

/// Raw deflate with a sync flush, the trailer removed, as a client compresses a message.
fn deflate(data: &[u8]) -> Vec<u8> {
    let mut c = Compress::new(Compression::default(), false);
    let mut out = Vec::with_capacity(data.len() + 64);
    c.compress_vec(data, &mut out, FlushCompress::Sync).unwrap();
    assert_eq!(c.total_in() as usize, data.len());
    assert!(out.ends_with(&[0, 0, 0xff, 0xff]));
    out.truncate(out.len() - 4);
    out
}

/// Inflates a message of the server with a fresh state (the server takes over no context).
fn inflate(data: &[u8]) -> Vec<u8> {
    let mut d = Decompress::new(false);
    let mut input = data.to_vec();
    input.extend_from_slice(&[0, 0, 0xff, 0xff]);
    let mut out = Vec::with_capacity(1 << 20);
    d.decompress_vec(&input, &mut out, FlushDecompress::Sync)
        .expect("the server's deflate data");
    assert_eq!(d.total_in() as usize, input.len());
    out
}

async fn server(config: TransportConfig) -> Server {
    Server::start(engine_config(10_000), config).await
}

#[tokio::test]
async fn negotiation_answers_the_first_offer_it_can_honour() {
    bounded(async {
        let s = server(TransportConfig::default()).await;
        let cases: &[(&[&str], Option<&str>)] = &[
            (&[], None),
            (
                &["permessage-deflate; client_max_window_bits"],
                Some(ANSWER),
            ),
            (
                &[
                    "x-webkit-deflate-frame",
                    "permessage-deflate; server_max_window_bits=9",
                ],
                None,
            ),
            (
                &["permessage-deflate; server_max_window_bits=9, permessage-deflate"],
                Some(ANSWER),
            ),
            (
                &["permessage-deflate; server_max_window_bits=15"],
                Some(
                    "permessage-deflate; server_no_context_takeover; \
                     client_no_context_takeover; server_max_window_bits=15",
                ),
            ),
            (&["permessage-deflate; bogus"], None),
        ];
        for (offers, want) in cases {
            let (_, got) = Raw::open(s.addr, "/cometd", offers).await;
            assert_eq!(got.as_deref(), *want, "{offers:?}");
        }
        // Turned off: never negotiated.
        let off = server(TransportConfig {
            ws_permessage_deflate: false,
            ..TransportConfig::default()
        })
        .await;
        let (mut raw, got) = Raw::open(off.addr, "/cometd", &["permessage-deflate"]).await;
        assert_eq!(got, None);
        // And a compressed frame there is a protocol error.
        raw.send(&json!([handshake_msg("1", &["websocket"])]), true)
            .await;
        assert_eq!(raw.close_code().await, 1002);
    })
    .await;
}

#[tokio::test]
async fn compressed_both_ways_and_compressed_once_for_every_subscriber() {
    bounded(async {
        let s = server(TransportConfig::default()).await;
        let mut subs = Vec::new();
        for _ in 0..2 {
            let (mut raw, ext) = Raw::open(s.addr, "/cometd", &["permessage-deflate"]).await;
            assert_eq!(ext.as_deref(), Some(ANSWER));
            let id = raw.handshake(true).await;
            raw.send(&json!([subscribe_msg(&id, "3", "/stock/acme")]), true)
                .await;
            let (msgs, _) = raw.recv().await;
            assert_eq!(find(&msgs, "/meta/subscribe")["successful"], true);
            subs.push((raw, id));
        }
        // An uncompressed client on the same channel.
        let mut plain = ws_connect(s.addr, "/cometd").await;
        let pid = ws_handshake(&mut plain).await;
        ws_send(&mut plain, &json!([subscribe_msg(&pid, "3", "/stock/acme")])).await;
        ws_recv(&mut plain).await;

        let data: Vec<u32> = (0..400).map(|i| 1000 + i % 37).collect();
        let publish = json!([{"channel": "/stock/acme", "data": {"prices": data}, "id": "9"}]);
        let (pubr, _) = Raw::open(s.addr, "/cometd", &["permessage-deflate"]).await;
        let mut pubr = pubr;
        let pub_id = pubr.handshake(false).await;
        let mut publish = publish;
        publish[0]["clientId"] = json!(pub_id);
        pubr.send(&publish, true).await;
        let (msgs, _) = pubr.recv().await;
        assert_eq!(reply(&msgs, "9").expect("reply")["successful"], true);

        let mut payloads = Vec::new();
        for (raw, _) in &mut subs {
            let f = raw.frame().await.unwrap();
            assert!(f.rsv1, "a large delivery is compressed");
            assert_eq!(f.opcode, wsframe::TEXT);
            let v: Value = serde_json::from_slice(&inflate(&f.payload)).unwrap();
            assert_eq!(v[0]["channel"], "/stock/acme");
            assert_eq!(v[0]["data"]["prices"], json!(data));
            payloads.push(f.payload);
        }
        // No context takeover: the same bytes on every socket.
        assert_eq!(payloads[0], payloads[1]);
        assert!(payloads[0].len() * 3 < publish.to_string().len());
        let got = ws_recv(&mut plain).await;
        assert_eq!(got[0]["data"]["prices"], json!(data));

        // A small reply goes uncompressed on a compressed socket.
        let (raw, id) = &mut subs[0];
        let unsub = json!([{"channel": "/meta/unsubscribe", "clientId": id, "subscription": "/stock/acme", "id": "4"}]);
        raw.send(&unsub, false).await;
        let (msgs, compressed) = raw.recv().await;
        assert_eq!(reply(&msgs, "4").expect("reply")["successful"], true);
        assert!(!compressed, "{msgs:?}");
    })
    .await;
}

#[tokio::test]
async fn fragmented_compressed_message_with_a_ping_between() {
    bounded(async {
        let s = server(TransportConfig::default()).await;
        let (mut raw, _) = Raw::open(s.addr, "/cometd", &["permessage-deflate"]).await;
        let id = raw.handshake(true).await;
        let sub = json!([subscribe_msg(&id, "3", "/a"), subscribe_msg(&id, "4", "/b")]);
        let z = deflate(sub.to_string().as_bytes());
        let (a, rest) = z.split_at(z.len() / 3);
        let (b, c) = rest.split_at(rest.len() / 2);
        let mut bytes = client_frame_rsv1(false, wsframe::TEXT, true, a, MASK);
        bytes.extend(client_frame(false, 0, b, MASK));
        bytes.extend(client_frame(true, wsframe::PING, b"hi", MASK));
        bytes.extend(client_frame(true, 0, c, MASK));
        raw.write(&bytes).await;
        let pong = raw.frame().await.unwrap();
        assert_eq!(
            (pong.opcode, pong.rsv1, &pong.payload[..]),
            (wsframe::PONG, false, &b"hi"[..])
        );
        let (msgs, _) = raw.recv().await;
        assert_eq!(reply(&msgs, "3").expect("reply")["successful"], true);
        assert_eq!(reply(&msgs, "4").expect("reply")["successful"], true);
    })
    .await;
}

#[tokio::test]
async fn what_closes_a_compressed_socket() {
    bounded(async {
        let s = server(TransportConfig {
            max_ws_message_bytes: 64 * 1024,
            ..TransportConfig::default()
        })
        .await;
        let open = || Raw::open(s.addr, "/cometd", &["permessage-deflate"]);
        // The close code a fresh compressed socket answers `bytes` with.
        let close_code = async |bytes: &[u8]| {
            let (mut raw, _) = open().await;
            raw.write(bytes).await;
            raw.close_code().await
        };
        let hs = json!([handshake_msg("1", &["websocket"])]).to_string();
        let z = deflate(hs.as_bytes());
        let text = |payload: &[u8]| client_frame_rsv1(true, wsframe::TEXT, true, payload, MASK);

        // RSV1 on a continuation frame.
        let mut bytes = client_frame_rsv1(false, wsframe::TEXT, true, &z[..4], MASK);
        bytes.extend(client_frame_rsv1(true, 0, true, &z[4..], MASK));
        assert_eq!(close_code(&bytes).await, 1002);

        // RSV1 on a ping.
        let ping = client_frame_rsv1(true, wsframe::PING, true, b"", MASK);
        assert_eq!(close_code(&ping).await, 1002);

        // Not deflate data (a reserved block type).
        assert_eq!(close_code(&text(&[0xff, 0xff, 0x00])).await, 1007);

        // A bomb: 100 bytes on the wire, 1 MiB inflated, over the 64 KiB limit.
        let bomb = deflate(&vec![b' '; 1 << 20]);
        assert!(bomb.len() < 2048, "{}", bomb.len());
        assert_eq!(close_code(&text(&bomb)).await, 1009);

        // Inflating to text that is not UTF-8.
        assert_eq!(close_code(&text(&deflate(b"[\xff]"))).await, 1007);

        // Without the extension, RSV1 is a protocol error.
        let (mut raw, ext) = Raw::open(s.addr, "/cometd", &[]).await;
        assert_eq!(ext, None);
        raw.write(&client_frame_rsv1(true, wsframe::TEXT, true, &z, MASK))
            .await;
        assert_eq!(raw.close_code().await, 1002);

        // The server is fine: a compressed session works.
        let (mut raw, _) = open().await;
        raw.handshake(true).await;
    })
    .await;
}

#[tokio::test]
async fn negotiated_through_a_host_server_too() {
    bounded(async {
        let (bayeux, _shutdown) = bayeux_transport::BayeuxService::new(
            bayeux_core::Engine::new(engine_config(10_000)),
            TransportConfig::default(),
        );
        let app = axum::Router::new()
            .route_service("/cometd", bayeux.clone())
            .route_service("/cometd/{*rest}", bayeux);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let (mut raw, ext) = Raw::open(addr, "/cometd", &["permessage-deflate"]).await;
        assert_eq!(ext.as_deref(), Some(ANSWER));
        let id = raw.handshake(true).await;
        let big = "x".repeat(2000);
        let msg = json!([subscribe_msg(&id, "3", "/a"), {"channel": "/a", "clientId": id, "data": big, "id": "4"}]);
        raw.send(&msg, true).await;
        let mut got = Vec::new();
        let mut compressed = false;
        while got.len() < 3 {
            let (m, z) = raw.recv().await;
            compressed |= z;
            got.extend(m);
        }
        assert!(compressed);
        assert!(got.iter().any(|m| m["data"] == json!(big)), "{got:?}");
        server.abort();
    })
    .await;
}
