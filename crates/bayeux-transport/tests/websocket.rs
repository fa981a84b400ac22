//! The WebSocket transport with raw frames: every text frame is a JSON array of messages,
//! deliveries are written without waiting for the connect, limits close the socket with the
//! right code, the ack extension moves deliveries into connect replies.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bayeux_core::{AckExtension, Engine, EngineConfig, Limits};
use bayeux_transport::TransportConfig;
use common::*;
use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message as WsMessage;

async fn server(timeout_ms: u64) -> Server {
    Server::start(engine_config(timeout_ms), TransportConfig::default()).await
}

/// Subscribes `id` to `channel` (message id `3`) and checks that it succeeded.
async fn ws_subscribe(ws: &mut Ws, id: &str, channel: &str) {
    ws_send(ws, &json!([subscribe_msg(id, "3", channel)])).await;
    assert_eq!(
        find(&ws_recv(ws).await, "/meta/subscribe")["successful"],
        true
    );
}

/// Collects frames for up to `within`, stopping early once `done` holds for what was received.
async fn collect_until(
    ws: &mut Ws,
    within: Duration,
    done: impl Fn(&[Value]) -> bool,
) -> (Vec<Value>, usize) {
    let deadline = Instant::now() + within;
    let mut all = Vec::new();
    let mut frames = 0;
    while !done(&all) {
        let left = deadline.saturating_duration_since(Instant::now());
        match ws_next(ws, left).await {
            Some(WsEvent::Messages(m)) => {
                frames += 1;
                all.extend(m);
            }
            Some(WsEvent::Closed(c)) => panic!("websocket closed: {c:?}"),
            None => break,
        }
    }
    (all, frames)
}

#[tokio::test]
async fn handshake_connect_subscribe_publish_over_one_socket() {
    bounded(async {
        let s = server(10_000).await;
        let mut ws = ws_connect(s.addr, "/cometd").await;
        ws_send(
            &mut ws,
            &json!([handshake_msg("1", &["websocket", "long-polling"])]),
        )
        .await;
        let msgs = ws_recv(&mut ws).await;
        let hs = find(&msgs, "/meta/handshake");
        assert_eq!(hs["successful"], true);
        assert_eq!(hs["id"], "1");
        assert_full_advice(hs);
        let id = hs["clientId"].as_str().unwrap().to_owned();

        ws_send(&mut ws, &json!([connect_msg(&id, "2", "websocket")])).await;
        let msgs = ws_recv(&mut ws).await;
        assert_eq!(find(&msgs, "/meta/connect")["id"], "2");

        ws_send(&mut ws, &json!([subscribe_msg(&id, "3", "/chat")])).await;
        let msgs = ws_recv(&mut ws).await;
        let sub = find(&msgs, "/meta/subscribe");
        assert_eq!(sub["successful"], true);
        assert_eq!(sub["subscription"], "/chat");
        assert_eq!(sub["id"], "3");

        // The second connect is held: nothing comes back.
        ws_send(&mut ws, &json!([connect_msg(&id, "4", "websocket")])).await;
        assert!(ws_next(&mut ws, Duration::from_millis(300)).await.is_none());

        // A publish is answered and delivered at once, without answering the held connect.
        ws_send(
            &mut ws,
            &json!([{"channel": "/chat", "clientId": id, "data": {"text": "hi"}, "id": "5"}]),
        )
        .await;
        let (msgs, _) = collect_until(&mut ws, STEP, |m| {
            m.iter().any(|x| x["id"] == "5") && !deliveries(m, "/chat").is_empty()
        })
        .await;
        let reply = msgs.iter().find(|m| m["id"] == "5").expect("publish reply");
        assert_eq!(reply["successful"], true);
        assert!(
            reply.get("data").is_none(),
            "publish replies carry no data: {reply}"
        );
        let d = deliveries(&msgs, "/chat");
        assert_eq!(d.len(), 1);
        assert_eq!(d[0]["data"], json!({"text": "hi"}));
        assert!(
            d[0].get("clientId").is_none() && d[0].get("id").is_none(),
            "{}",
            d[0]
        );
        assert!(
            msgs.iter().all(|m| m["channel"] != "/meta/connect"),
            "{msgs:?}"
        );

        // A server-side publish arrives promptly, still without the connect reply.
        let t = Instant::now();
        s.engine()
            .publish_json("/chat", &json!("from server"))
            .unwrap();
        let msgs = ws_recv(&mut ws).await;
        assert!(t.elapsed() < PROMPT, "{:?}", t.elapsed());
        assert_eq!(
            msgs,
            vec![json!({"channel": "/chat", "data": "from server"})]
        );
    })
    .await;
}

// A current-thread runtime: the socket's task cannot run while the test publishes. While the
// task is idle, a publish is written to the socket by the publisher itself; once the kernel
// stops taking them (the client is not reading), messages wait in the session queue, and the
// waiting ones travel together in one frame.
#[tokio::test(flavor = "current_thread")]
async fn waiting_messages_share_one_frame() {
    bounded(async {
        let s = server(10_000).await;
        let mut ws = ws_connect(s.addr, "/cometd").await;
        let id = ws_handshake(&mut ws).await;
        ws_subscribe(&mut ws, &id, "/t/**").await;
        let session = s.engine().session(&id).expect("the session");
        let big = "x".repeat(256 * 1024);
        let mut written_directly = 0;
        while session.queue_len() == 0 {
            assert!(written_directly < 400, "the socket never filled");
            s.engine().publish_json("/t/big", &big).unwrap();
            written_directly += 1;
        }
        assert!(
            written_directly > 1,
            "the idle socket took publishes directly"
        );
        for i in 0..3 {
            s.engine().publish_json(&format!("/t/{i}"), &i).unwrap();
        }
        assert!(session.queue_len() >= 3, "the three wait in the queue");
        // The client reads everything: the three come in one frame, in order.
        let deadline = Instant::now() + STEP * 4;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(WsEvent::Messages(m)) = ws_next(&mut ws, left).await else {
                panic!("no frame with /t/2");
            };
            if m.iter().any(|m| m["channel"] == "/t/2") {
                let small: Vec<_> = m.iter().filter(|m| m["channel"] != "/t/big").collect();
                assert_eq!(
                    small.len(),
                    3,
                    "three waiting messages in one frame: {small:?}"
                );
                for (i, m) in small.iter().enumerate() {
                    assert_eq!(m["channel"], format!("/t/{i}"));
                    assert_eq!(m["data"], i);
                }
                break;
            }
        }
    })
    .await;
}

#[tokio::test]
async fn binary_frame_closes_with_1003() {
    bounded(async {
        let s = server(10_000).await;
        let mut ws = ws_connect(s.addr, "/cometd").await;
        ws_handshake(&mut ws).await;
        ws.send(WsMessage::binary(b"[]".to_vec())).await.unwrap();
        assert_eq!(ws_close_code(&mut ws).await, Some(1003));
    })
    .await;
}

#[tokio::test]
async fn message_over_the_limit_closes_with_1009() {
    bounded(async {
        let s = Server::start(
            engine_config(10_000),
            TransportConfig {
                max_ws_message_bytes: 1024,
                ..TransportConfig::default()
            },
        )
        .await;
        let mut ws = ws_connect(s.addr, "/cometd").await;
        let id = ws_handshake(&mut ws).await;
        let big = json!([{"channel": "/a", "clientId": id, "data": "x".repeat(4096)}]);
        ws_send(&mut ws, &big).await;
        assert_eq!(ws_close_code(&mut ws).await, Some(1009));
        assert!(
            s.svc
                .metrics()
                .oversize
                .load(std::sync::atomic::Ordering::Relaxed)
                >= 1
        );
        // Another socket is unaffected.
        let mut other = ws_connect(s.addr, "/cometd").await;
        ws_handshake(&mut other).await;
    })
    .await;
}

#[tokio::test]
async fn held_connect_is_answered_at_the_timeout() {
    bounded(async {
        let s = server(300).await;
        let mut ws = ws_connect(s.addr, "/cometd").await;
        let id = ws_handshake(&mut ws).await;
        let t = Instant::now();
        ws_send(&mut ws, &json!([connect_msg(&id, "3", "websocket")])).await;
        let msgs = ws_recv(&mut ws).await;
        let took = t.elapsed();
        assert!(took >= Duration::from_millis(250), "{took:?}");
        assert!(took < Duration::from_millis(2500), "{took:?}");
        let r = find(&msgs, "/meta/connect");
        assert_eq!(r["id"], "3");
        assert_eq!(r["successful"], true);
        assert_full_advice(r);
        // And again: the socket keeps serving connects.
        ws_send(&mut ws, &json!([connect_msg(&id, "4", "websocket")])).await;
        assert_eq!(find(&ws_recv(&mut ws).await, "/meta/connect")["id"], "4");
    })
    .await;
}

#[tokio::test]
async fn ack_extension_delivers_only_in_connect_replies() {
    bounded(async {
        let engine = Engine::new(engine_config(10_000));
        engine.add_extension(Arc::new(AckExtension));
        let s = Server::with_engine(engine, TransportConfig::default()).await;
        let mut ws = ws_connect(s.addr, "/cometd").await;
        let mut hs = handshake_msg("1", &["websocket"]);
        hs["ext"] = json!({"ack": true});
        ws_send(&mut ws, &json!([hs])).await;
        let msgs = ws_recv(&mut ws).await;
        let r = find(&msgs, "/meta/handshake");
        assert_eq!(r["ext"]["ack"], true, "{r}");
        let id = r["clientId"].as_str().unwrap().to_owned();

        ws_send(&mut ws, &json!([connect_msg(&id, "2", "websocket")])).await;
        let msgs = ws_recv(&mut ws).await;
        let b0 = find(&msgs, "/meta/connect")["ext"]["ack"]
            .as_i64()
            .expect("ext.ack batch");
        ws_subscribe(&mut ws, &id, "/acked").await;

        let mut connect = connect_msg(&id, "4", "websocket");
        connect["ext"] = json!({"ack": b0});
        ws_send(&mut ws, &json!([connect])).await;
        assert!(ws_next(&mut ws, Duration::from_millis(200)).await.is_none());
        s.engine().publish_json("/acked", &"m1").unwrap();
        // The delivery travels with the connect reply, in one frame.
        let msgs = ws_recv(&mut ws).await;
        assert_eq!(deliveries(&msgs, "/acked").len(), 1, "{msgs:?}");
        let r = msgs.last().unwrap();
        assert_eq!(r["channel"], "/meta/connect", "{msgs:?}");
        assert_eq!(r["id"], "4");
        let b1 = r["ext"]["ack"].as_i64().expect("ext.ack batch");
        assert!(b1 > b0, "{b1} > {b0}");

        // Acknowledge b1; the next batch holds only the new message.
        let mut connect = connect_msg(&id, "5", "websocket");
        connect["ext"] = json!({"ack": b1});
        ws_send(&mut ws, &json!([connect])).await;
        assert!(ws_next(&mut ws, Duration::from_millis(200)).await.is_none());
        s.engine().publish_json("/acked", &"m2").unwrap();
        let msgs = ws_recv(&mut ws).await;
        let d = deliveries(&msgs, "/acked");
        assert_eq!(d.len(), 1, "{msgs:?}");
        assert_eq!(d[0]["data"], "m2");
        let b2 = msgs.last().unwrap()["ext"]["ack"].as_i64().unwrap();

        // A reconnect that did not acknowledge b2 gets m2 again, at once.
        let mut connect = connect_msg(&id, "6", "websocket");
        connect["ext"] = json!({"ack": b1});
        ws_send(&mut ws, &json!([connect])).await;
        let msgs = ws_recv(&mut ws).await;
        let d = deliveries(&msgs, "/acked");
        assert_eq!(d.len(), 1, "unacknowledged message re-sent: {msgs:?}");
        assert_eq!(d[0]["data"], "m2");
        assert!(msgs.last().unwrap()["ext"]["ack"].as_i64().unwrap() > b2);
    })
    .await;
}

#[tokio::test]
async fn unknown_session_over_websocket_is_402() {
    bounded(async {
        let s = server(10_000).await;
        let mut ws = ws_connect(s.addr, "/cometd").await;
        ws_send(&mut ws, &json!([connect_msg("nope", "9", "websocket")])).await;
        let msgs = ws_recv(&mut ws).await;
        let r = find(&msgs, "/meta/connect");
        assert_eq!(r["id"], "9");
        assert_eq!(r["error"], "402::session_unknown");
        assert_eq!(r["advice"]["reconnect"], "handshake");
        assert_full_advice(r);
    })
    .await;
}

#[tokio::test]
async fn malformed_frames_get_a_bayeux_error_and_the_socket_stays_open() {
    bounded(async {
        let s = Server::start(
            EngineConfig {
                limits: Limits {
                    max_messages: 5,
                    ..Limits::default()
                },
                ..engine_config(10_000)
            },
            TransportConfig::default(),
        )
        .await;
        let mut ws = ws_connect(s.addr, "/cometd").await;
        ws.send(WsMessage::text("not json")).await.unwrap();
        let msgs = ws_recv(&mut ws).await;
        assert_eq!(msgs[0]["successful"], false);
        assert!(
            msgs[0]["error"].as_str().unwrap().starts_with("400:"),
            "{msgs:?}"
        );
        assert_full_advice(&msgs[0]);
        let batch: Vec<_> = (0..6)
            .map(|i| json!({"channel": "/a", "data": i}))
            .collect();
        ws_send(&mut ws, &json!(batch)).await;
        let msgs = ws_recv(&mut ws).await;
        assert!(
            msgs[0]["error"].as_str().unwrap().starts_with("413:"),
            "{msgs:?}"
        );
        // Still usable.
        ws_handshake(&mut ws).await;
    })
    .await;
}

#[tokio::test]
async fn websocket_upgrade_outside_the_mount_is_refused() {
    bounded(async {
        let s = server(10_000).await;
        let r = tokio_tungstenite::connect_async(format!("ws://{}/cometdx", s.addr)).await;
        match r {
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                assert_eq!(resp.status(), http::StatusCode::NOT_FOUND)
            }
            other => panic!("expected 404, got {:?}", other.map(|(_, r)| r.status())),
        }
        // A sub-path of the mount is routed.
        let mut ws = ws_connect(s.addr, "/cometd/websocket").await;
        ws_handshake(&mut ws).await;
    })
    .await;
}

// Regression: the server answers all frames already received in one write, up to a budget; a
// frame read just as the budget ran out was once dropped, leaving its publish unanswered.
#[tokio::test]
async fn every_one_of_many_pipelined_publishes_is_answered() {
    bounded(async {
        let s = server(10_000).await;
        let mut ws = ws_connect(s.addr, "/cometd").await;
        let id = ws_handshake(&mut ws).await;
        let n = 300;
        for i in 0..n {
            let m = json!([{"channel": "/p", "clientId": id, "data": i, "id": format!("p{i}")}]);
            ws.feed(WsMessage::text(m.to_string())).await.unwrap();
        }
        ws.flush().await.unwrap();
        let (msgs, _) = collect_until(&mut ws, Duration::from_secs(10), |m| {
            m.iter().filter(|x| x["channel"] == "/p").count() == n
        })
        .await;
        let answered: Vec<_> = msgs.iter().filter(|x| x["channel"] == "/p").collect();
        assert_eq!(answered.len(), n, "every publish gets its reply");
        for (i, r) in answered.iter().enumerate() {
            assert_eq!(r["id"], format!("p{i}"), "replies in order");
            assert_eq!(r["successful"], true);
        }
    })
    .await;
}

// Publishers on several threads write to one socket directly while its task is idle, the task
// writes the client's replies and what queued while it was busy, and the client pauses now and
// then so that big frames are taken only in part: every frame arrives whole, each publisher's
// messages in order, none lost or repeated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_writes_and_the_task_never_interleave() {
    const PUBLISHERS: u64 = 3;
    const EACH: u64 = 1500;
    bounded(async {
        let engine = EngineConfig {
            max_queue: 100_000,
            ..engine_config(10_000)
        };
        let s = Server::start(engine, TransportConfig::default()).await;
        let mut ws = ws_connect(s.addr, "/cometd").await;
        let id = ws_handshake(&mut ws).await;
        ws_subscribe(&mut ws, &id, "/t/**").await;
        let mut tasks = Vec::new();
        for p in 0..PUBLISHERS {
            let engine = s.engine().clone();
            tasks.push(tokio::spawn(async move {
                let big = "y".repeat(512 * 1024);
                for n in 0..EACH {
                    let data = if n % 50 == 7 {
                        json!({"p": p, "n": n, "pad": big})
                    } else {
                        json!({"p": p, "n": n})
                    };
                    engine.publish_json(&format!("/t/{p}"), &data).unwrap();
                    if n % 50 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            }));
        }
        let mut next = [0u64; PUBLISHERS as usize];
        let mut own_sent = 0u64;
        let mut own_seen = 0u64;
        let mut frames = 0u64;
        let deadline = Instant::now() + Duration::from_secs(30);
        while next.iter().any(|&n| n < EACH) || own_seen < own_sent {
            let left = deadline.saturating_duration_since(Instant::now());
            let msgs = match ws_next(&mut ws, left).await {
                Some(WsEvent::Messages(msgs)) => msgs,
                other => panic!("stopped at {next:?}, own {own_seen}/{own_sent}: {other:?}"),
            };
            frames += 1;
            for m in msgs {
                if m["channel"] == "/t/own" && m.get("successful").is_none() {
                    own_seen += 1;
                } else if let Some(p) = m["data"]["p"].as_u64() {
                    let n = m["data"]["n"].as_u64().unwrap();
                    assert_eq!(n, next[p as usize], "publisher {p} out of order");
                    next[p as usize] += 1;
                }
            }
            // The client publishes too (the task is then busy with its input and replies), and
            // sometimes stops reading for a moment.
            if frames.is_multiple_of(4) && own_sent < 1000 {
                own_sent += 1;
                let id_n = format!("own{own_sent}");
                ws_send(
                    &mut ws,
                    &json!([publish_msg(&id, &id_n, "/t/own", json!(own_sent))]),
                )
                .await;
            }
            if frames.is_multiple_of(200) {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(next, [EACH; PUBLISHERS as usize]);
    })
    .await;
}

// A session taken over by a second socket (a client that reconnects on a new WebSocket with
// its clientId) moves its direct writes there; the first socket, and then the second one
// closing, leave the session delivering whole frames through the sockets that remain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_moving_to_another_socket_keeps_its_frames_whole() {
    bounded(async {
        let s = server(10_000).await;
        let mut a = ws_connect(s.addr, "/cometd").await;
        let id = ws_handshake(&mut a).await;
        ws_subscribe(&mut a, &id, "/m").await;
        let mut b = ws_connect(s.addr, "/cometd").await;
        ws_send(&mut b, &json!([connect_msg(&id, "4", "websocket")])).await;
        let deadline = Instant::now() + STEP;
        // The held connect on `a` is superseded; `b`'s connect is held (or answered).
        let mut seen = Vec::new();
        for n in 0..200u64 {
            s.engine().publish_json("/m", &json!(n)).unwrap();
        }
        while seen.len() < 200 && Instant::now() < deadline {
            for ws in [&mut a, &mut b] {
                if let Some(WsEvent::Messages(m)) = ws_next(ws, Duration::from_millis(20)).await {
                    seen.extend(
                        m.iter()
                            .filter(|m| m["channel"] == "/m")
                            .map(|m| m["data"].clone()),
                    );
                }
            }
        }
        let mut got: Vec<u64> = seen.iter().map(|v| v.as_u64().unwrap()).collect();
        got.sort_unstable();
        assert_eq!(got, (0..200).collect::<Vec<_>>(), "each delivered once");
        // `b` goes away: the session still delivers on `a`.
        drop(b);
        tokio::time::sleep(Duration::from_millis(100)).await;
        s.engine().publish_json("/m", &json!("after")).unwrap();
        let (msgs, _) =
            collect_until(&mut a, STEP, |m| m.iter().any(|m| m["data"] == "after")).await;
        assert!(msgs.iter().any(|m| m["data"] == "after"), "{msgs:?}");
    })
    .await;
}
