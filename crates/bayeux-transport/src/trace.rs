//! The `tracing` spans of connections and requests, and the session fields recorded on them.
//!
//! - `conn` (debug), one per accepted TCP connection, entered by its task (the lean HTTP/1.1
//!   loop, hyper, and the WebSocket task it becomes): `peer`, then `transport`, `client_id` and
//!   `user` once a WebSocket's session is known. `client_id` is the id's first 8 hex digits
//!   (as the id's `Debug` shows it): the whole id is a bearer secret and stays out of logs.
//! - `request` (debug), one per request the lean loop hands to the Bayeux service, inside
//!   `conn`: `method`, `path`, then `transport`, `client_id` and `user` once the batch named its
//!   session. The server's own router opens a `request` span with the same fields for the
//!   requests hyper serves.
//!
//! A long-polling session lives across many requests and connections, so it has no span of its
//! own: its fields are recorded on the span of whatever carries it (the WebSocket's connection,
//! or each polling request). Everything is at `debug`: with the level off, a span is
//! `Span::none()` (creating, entering and recording cost a level check, no allocation), and
//! sessions are recorded once per WebSocket session and once per polling request, never per
//! delivery.

use std::future::Future;
use std::net::SocketAddr;

use bayeux_core::Session;
use tracing::field::Empty;
use tracing::{Instrument, Span};

/// Spawns `task` inside `span` (entered on every poll), or as it is when the span is off.
pub(crate) fn spawn_in<F>(span: Span, task: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    // Off (the default below debug), the task carries no span at all: a held connection's task
    // stays as small as without tracing.
    if span.is_disabled() {
        tokio::spawn(task);
    } else {
        tokio::spawn(task.instrument(span));
    }
}

/// The span of an accepted connection from `peer`.
pub(crate) fn connection(peer: SocketAddr) -> Span {
    tracing::debug_span!(
        "conn",
        %peer,
        transport = Empty,
        client_id = Empty,
        user = Empty
    )
}

/// The span of one request of the lean HTTP/1.1 loop.
pub(crate) fn request(method: &http::Method, path: &str) -> Span {
    tracing::debug_span!(
        "request",
        %method,
        path,
        transport = Empty,
        client_id = Empty,
        user = Empty
    )
}

/// Records `session`'s id (its first 8 hex digits: the id is a bearer secret), transport and
/// principal on the current span (a connection's or a
/// request's), when that span is enabled.
pub(crate) fn record_session(session: &Session) {
    // The spans are at debug: below that no span of ours exists, and a level check is cheaper
    // than finding the current span.
    if !tracing::level_enabled!(tracing::Level::DEBUG) {
        return;
    }
    let span = Span::current();
    if span.is_disabled() {
        return;
    }
    span.record("transport", session.transport().name());
    // Session ids are bearer secrets: logs get the prefix the id's `Debug` shows.
    let id = session.id().as_str();
    span.record("client_id", id.get(..8).unwrap_or(id));
    if let Some(user) = session.principal() {
        span.record("user", user);
    }
}
