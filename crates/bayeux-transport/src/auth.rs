//! Request authentication: how a transport learns the principal of an HTTP request.

use std::sync::Arc;

/// Authenticates HTTP requests (long-polling POSTs, JSONP GETs, WebSocket upgrades).
///
/// The principal returned becomes [`bayeux_core::RequestContext::principal`]: a session created by
/// a handshake is bound to it, and every later request naming that session must authenticate as
/// the same principal. A WebSocket is authenticated once, by its upgrade request.
pub trait Authenticator: Send + Sync + 'static {
    /// The principal this request authenticates as, or `None` when it carries no valid
    /// credentials.
    fn authenticate(&self, parts: &http::request::Parts) -> Option<Arc<str>>;
}
