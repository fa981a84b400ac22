//! # bayeux-test-client
//!
//! A raw Bayeux client for this workspace's tests and its load generator: it builds the JSON
//! itself and speaks it over plain HTTP and WebSocket, so what a test sends is exactly what it
//! wrote, malformed or not.
//!
//! - [`Target`]: where an endpoint is (`host:port` and path).
//! - [`Http`]: one HTTP/1.1 keep-alive (or HTTP/2 prior-knowledge) connection with a browser's
//!   cookie [`Jar`]; [`send`] and [`send_h2`] send one request on a connection of its own.
//! - [`Client`]: a long-polling client that keeps the `BAYEUX_BROWSER` cookie like a browser and
//!   numbers its messages; its methods assert what every well-behaved exchange must satisfy.
//! - [`Ws`] and the `ws_*` functions: WebSocket connections carrying text frames of JSON arrays.
//! - Message builders ([`handshake_msg`], [`connect_msg`], [`subscribe_msg`], [`publish_msg`],
//!   [`disconnect_msg`]) and lookups in a batch ([`find`], [`reply`], [`deliveries`]).
//! - Bounded waits: [`bounded`] for a whole test, [`step`] and [`within`] for one exchange.
//! - Raw TCP: [`raw_exchange`] and the parsing of what comes back.
//!
//! Two styles: functions returning [`Result`] (the load generator, and test loops that record
//! failures instead of panicking) and test helpers that panic with a message naming what failed.
//! Nothing here knows the server's types: it is a client, usable against any Bayeux server.
//!
//! The message builders give exactly the JSON a test means to send:
//!
//! ```
//! let msg = bayeux_test_client::handshake_msg("1", &["websocket", "long-polling"]);
//! assert_eq!(msg["channel"], "/meta/handshake");
//! assert_eq!(msg["id"], "1");
//! assert_eq!(msg["supportedConnectionTypes"][1], "long-polling");
//! ```

mod client;
mod http;
mod msg;
mod raw;
mod target;
mod time;
mod ws;

pub use client::Client;
pub use http::{Http, Jar, Resp, empty, post, send, send_h2};
pub use msg::{
    connect_msg, deliveries, disconnect_msg, find, handshake_msg, parse_batch, publish_msg, reply,
    subscribe_msg, successful_reply,
};
pub use raw::{raw_body, raw_exchange, raw_status};
pub use target::Target;
pub use time::{CONNECT_TIMEOUT, STEP, TEST_TIMEOUT, bounded, step, within};
pub use ws::{
    Ws, WsEvent, ws_close_code, ws_connect, ws_connect_with, ws_handshake, ws_handshake_with,
    ws_next, ws_open, ws_over, ws_recv, ws_send, ws_upgrade,
};

/// Any failure of the client: connecting, the HTTP or WebSocket protocol, an unexpected reply.
/// Boxed, because callers only report it.
pub type Error = Box<dyn std::error::Error + Send + Sync>;
