//! The `tracing` spans of connections and requests carry the session's client id (its prefix)
//! into log lines: a WebSocket's on its connection span, a long poll's on each request's span.
//! Alone in its test binary: `tracing`'s callsite cache does not mix a scoped subscriber with
//! tests on other threads that have none.
//!
//! A current-thread runtime: the server's tasks run on the thread of the scoped subscriber.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bayeux_transport::TransportConfig;
use common::*;

/// A log sink shared with the test.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[tokio::test]
async fn log_lines_carry_the_session_of_their_connection_or_request() {
    let logs = Captured::default();
    let sink = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || sink.clone())
        .finish();
    let _default = tracing::subscriber::set_default(subscriber);
    bounded(async {
        let s = Server::start(engine_config(10_000), TransportConfig::default()).await;
        // A WebSocket: its connection's span gets the session.
        let mut ws = ws_connect(s.addr, "/cometd").await;
        let ws_id = ws_handshake(&mut ws).await;
        // A long poll: each request's span gets it.
        let mut lp = s.client();
        lp.handshake_and_connect().await;
        let lp_id = lp.id().to_owned();
        tokio::time::sleep(Duration::from_millis(50)).await;

        let text = logs.text();
        let line = text
            .lines()
            .find(|l| l.contains("websocket session"))
            .unwrap_or_else(|| panic!("no websocket session line:\n{text}"));
        assert!(line.contains("conn{peer=127.0.0.1:"), "{line}");
        assert!(line.contains("transport=\"websocket\""), "{line}");
        assert!(
            line.contains(&format!("client_id=\"{}\"", &ws_id[..8])),
            "{line}"
        );
        assert!(!line.contains(&ws_id), "the whole id is a secret: {line}");
        let line = text
            .lines()
            .find(|l| l.contains("request done") && l.contains(&lp_id[..8]))
            .unwrap_or_else(|| panic!("no request line with the long poll's id:\n{text}"));
        assert!(line.contains("request{method=POST"), "{line}");
        assert!(line.contains("transport=\"long-polling\""), "{line}");
    })
    .await;
}
