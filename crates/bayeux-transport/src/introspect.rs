//! The introspection route (off by default): paged JSON listings of the engine's sessions and
//! channels for operators, from [`bayeux_core::introspect`].
//!
//! With [`TransportConfig::introspection`] set to `/admin/bayeux`:
//!
//! - `GET /admin/bayeux/sessions?after=<key>&limit=<n>`: sessions (transport, principal,
//!   subscriptions, queue depth), by internal key;
//! - `GET /admin/bayeux/channels?after=<name>&limit=<n>`: live channels with subscriber counts.
//!
//! Each answer is `{"items": [...], "next": <cursor or null>}`, at most 500 items; follow `next`
//! as `after`. With a token configured, requests must carry `Authorization: Bearer <token>`.
//! The listings name users and channels: serve them only where operators alone can reach them
//! (an admin listener, a private network), or with a token.

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};

use crate::config::{Introspection, TransportConfig};
use crate::shared::{Body, Shared, json_response, plain};

/// Default page size when the request names none.
const DEFAULT_LIMIT: usize = 100;

/// Answers `req` when it is for the introspection route; `None` otherwise.
pub(crate) fn serve<B>(shared: &Shared, req: &Request<B>) -> Option<Response<Body>> {
    let cfg: &TransportConfig = &shared.config;
    let intro = cfg.introspection.as_ref()?;
    let rest = req.uri().path().strip_prefix(intro.path.as_str())?;
    if !(rest.is_empty() || rest.starts_with('/')) {
        return None;
    }
    Some(answer(shared, intro, rest, req))
}

fn answer<B>(
    shared: &Shared,
    intro: &Introspection,
    rest: &str,
    req: &Request<B>,
) -> Response<Body> {
    if let Some(token) = &intro.token {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !given.is_some_and(|g| same(g.as_bytes(), token.as_bytes())) {
            let mut r = plain(
                StatusCode::UNAUTHORIZED,
                "introspection needs its bearer token",
            );
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
            return r;
        }
    }
    if req.method() != Method::GET {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "use GET");
    }
    let mut after: Option<String> = None;
    let mut limit = DEFAULT_LIMIT;
    for (k, v) in form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes()) {
        match &*k {
            "after" => after = Some(v.into_owned()),
            "limit" => match v.parse::<usize>() {
                Ok(n) if n > 0 => limit = n,
                _ => return plain(StatusCode::BAD_REQUEST, "limit must be a positive integer"),
            },
            _ => {
                return plain(
                    StatusCode::BAD_REQUEST,
                    &format!("unknown parameter {k:?} (use after, limit)"),
                );
            }
        }
    }
    let engine = &shared.engine;
    let body = match rest.trim_end_matches('/') {
        "/sessions" => {
            let after = match after.as_deref().map(str::parse::<u64>) {
                None => None,
                Some(Ok(k)) => Some(k),
                Some(Err(_)) => {
                    return plain(
                        StatusCode::BAD_REQUEST,
                        "after must be a session key (an integer)",
                    );
                }
            };
            serde_json::to_vec(&engine.sessions_page(after, limit))
        }
        "/channels" => serde_json::to_vec(&engine.channels_page(after.as_deref(), limit)),
        _ => return plain(StatusCode::NOT_FOUND, "use /sessions or /channels"),
    };
    match body {
        Ok(b) => json_response(StatusCode::OK, Bytes::from(b)),
        Err(e) => plain(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

/// Compares in time independent of where the first difference is.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
