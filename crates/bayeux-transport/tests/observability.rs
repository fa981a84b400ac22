//! The latency histograms of `/metrics` through a running `serve`: they count a publish, the
//! writes of its deliveries (WebSocket and long-polling) and held connects. (The log spans are
//! tested in `log_spans.rs`, alone in their binary: a scoped subscriber and tests on other
//! threads without one do not mix well in `tracing`'s callsite cache.)
//!
//! A current-thread runtime: the server's tasks and the clients share the thread, so what the
//! server records when it writes is recorded before the client reads it.

mod common;

use bayeux_transport::TransportConfig;
use common::*;
use serde_json::json;

/// The `{name}_count` value of a `/metrics` text.
fn count(text: &str, name: &str) -> u64 {
    let prefix = format!("{name}_count ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {name}_count in:\n{text}"))
        .parse()
        .unwrap()
}

const HISTOGRAMS: [&str; 3] = [
    "bayeux_publish_to_queued_seconds",
    "bayeux_queued_to_written_seconds",
    "bayeux_connect_hold_seconds",
];

#[tokio::test]
async fn histograms_count_publishes_writes_and_holds() {
    bounded(async {
        // Connects are held 300 ms.
        let s = Server::start(engine_config(300), TransportConfig::default()).await;
        let metrics = || s.svc.metrics().render(s.engine());
        let before = metrics();
        for h in HISTOGRAMS {
            assert_eq!(count(&before, h), 0, "{h}");
            assert!(
                before.contains(&format!("# TYPE {h} histogram")),
                "{before}"
            );
            assert!(
                before.contains(&format!("{h}_bucket{{le=\"+Inf\"}} 0")),
                "{before}"
            );
        }

        // A WebSocket subscriber and a long-polling one, each with a held connect.
        let mut ws = ws_connect(s.addr, "/cometd").await;
        let ws_id = ws_handshake(&mut ws).await;
        ws_send(&mut ws, &json!([subscribe_msg(&ws_id, "3", "/chat")])).await;
        assert_eq!(
            find(&ws_recv(&mut ws).await, "/meta/subscribe")["successful"],
            true
        );
        ws_send(&mut ws, &json!([connect_msg(&ws_id, "4", "websocket")])).await;
        let mut lp = s.client();
        lp.handshake_and_connect().await;
        assert_eq!(lp.subscribe(json!("/chat")).await["successful"], true);
        let held = lp.spawn_connect();
        held_connects(s.engine(), 2).await;

        // One publish from a third client reaches both.
        let mut publisher = s.client();
        publisher.handshake_and_connect().await;
        assert_eq!(
            publisher.publish("/chat", json!("hi")).await["successful"],
            true
        );
        let msgs = ws_recv(&mut ws).await;
        assert_eq!(deliveries(&msgs, "/chat").len(), 1, "{msgs:?}");
        let msgs = step("held long poll", held).await.unwrap();
        assert_eq!(deliveries(&msgs, "/chat").len(), 1, "{msgs:?}");
        // The WebSocket's connect is answered at its deadline.
        let msgs = ws_recv(&mut ws).await;
        assert_eq!(find(&msgs, "/meta/connect")["id"], "4", "{msgs:?}");

        let after = metrics();
        assert_eq!(count(&after, HISTOGRAMS[0]), 1, "one published message");
        assert_eq!(
            count(&after, HISTOGRAMS[1]),
            2,
            "the WebSocket frame and the long-poll reply"
        );
        assert_eq!(
            count(&after, HISTOGRAMS[2]),
            2,
            "the long poll answered with the delivery, the WebSocket connect at its deadline"
        );
        // The held connects waited at least until the publish (and the WebSocket's its 300 ms):
        // the sum is in seconds and at least that.
        let sum: f64 = after
            .lines()
            .find_map(|l| l.strip_prefix("bayeux_connect_hold_seconds_sum "))
            .unwrap()
            .parse()
            .unwrap();
        assert!(sum >= 0.3, "{after}");
    })
    .await;
}
