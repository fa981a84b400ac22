//! Long-polling (POST, JSON or form-encoded) and callback-polling (JSONP GET): one request, one
//! batch, one response. A held `/meta/connect` keeps the request open until the engine's hold
//! ends (messages, the deadline, a newer connect, or shutdown); its reply carries the session's
//! queued messages.

use std::sync::atomic::Ordering;
use std::time::Instant;

use bayeux_core::{Error as CoreError, Limits, Message, RequestContext, decode_batch, join_array};
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};

use crate::cookie::mint_browser;
use crate::shared::{Body, Shared, json_response, no_cache, plain, stopped};

/// How much of an oversized body is read and discarded before answering 413, as a multiple of
/// the body limit (see `read_body`).
pub(crate) const DRAIN_FACTOR: usize = 4;

/// Handles a long-polling POST: the body is a JSON batch, or `message=` form parameters.
pub(crate) async fn long_polling<B>(
    shared: &Shared,
    req: Request<B>,
    mut ctx: RequestContext,
) -> Response<Body>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    shared.metrics.http_requests.fetch_add(1, Ordering::Relaxed);
    let form = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let body = match Box::pin(read_body(shared, req.into_body())).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    // Decoded in its own scope so that the body's bytes are not kept while a connect is held.
    let batch = {
        // Clients (curl among them) often label a JSON body as form-encoded: a body that
        // starts like JSON is read as JSON whatever its content type says.
        let looks_json = body
            .iter()
            .find(|b| !b.is_ascii_whitespace())
            .is_some_and(|b| *b == b'[' || *b == b'{');
        let limits = shared.engine.config().limits;
        let batch = if form && !looks_json {
            decode_message_params(&body, &limits)
        } else {
            decode_batch(&body, &limits)
        };
        drop(body);
        batch
    };
    match batch {
        Ok(batch) => {
            let cookie = mint_browser(&shared.config, &mut ctx, &batch);
            let out = run_batch(shared, &ctx, batch).await;
            let mut r = json_response(StatusCode::OK, out);
            if let Some(c) = cookie {
                r.headers_mut().append(header::SET_COOKIE, c);
            }
            r
        }
        Err(e) => bayeux_error(shared, &e),
    }
}

/// Handles a callback-polling (JSONP) GET: `message=` query parameters in, `callback(...)` out.
pub(crate) async fn callback_polling<B>(
    shared: &Shared,
    req: Request<B>,
    mut ctx: RequestContext,
) -> Response<Body> {
    shared.metrics.http_requests.fetch_add(1, Ordering::Relaxed);
    let query = req.uri().query().unwrap_or("").as_bytes();
    let callback = form_urlencoded::parse(query)
        .filter(|(k, _)| k == shared.config.jsonp_parameter.as_str())
        .last()
        .map_or_else(|| "jsonpcallback".to_owned(), |(_, v)| v.into_owned());
    if !valid_callback(&callback) {
        return plain(StatusCode::BAD_REQUEST, "invalid JSONP callback name");
    }
    let batch = match decode_message_params(query, &shared.engine.config().limits) {
        Ok(b) => b,
        Err(e) => return bayeux_error(shared, &e),
    };
    let cookie = mint_browser(&shared.config, &mut ctx, &batch);
    let out = run_batch(shared, &ctx, batch).await;
    let mut body = Vec::with_capacity(out.len() + callback.len() + 3);
    body.extend_from_slice(callback.as_bytes());
    body.push(b'(');
    body.extend_from_slice(&out);
    body.extend_from_slice(b");");
    let mut r = Response::new(Full::new(Bytes::from(body)));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/javascript;charset=utf-8"),
    );
    no_cache(r.headers_mut());
    if let Some(c) = cookie {
        r.headers_mut().append(header::SET_COOKIE, c);
    }
    r
}

/// The one decoder of `message=` parameters (a form body or a JSONP query; each parameter is a
/// message or an array of them), within the codec's limits.
fn decode_message_params(input: &[u8], limits: &Limits) -> Result<Vec<Message>, CoreError> {
    let mut all = Vec::new();
    for (k, v) in form_urlencoded::parse(input) {
        if k == "message" {
            all.extend(decode_batch(v.as_bytes(), limits)?);
            if all.len() > limits.max_messages {
                return Err(CoreError::TooManyMessages {
                    limit: limits.max_messages,
                });
            }
        }
    }
    if all.is_empty() {
        return Err(CoreError::Malformed("no message parameter".into()));
    }
    Ok(all)
}

fn valid_callback(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == '$')
        && name.len() <= 64
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$' || c == '.')
}

/// An HTTP error whose body is the engine's refusal, for a request the codec refused: 413 for
/// the size limits, 400 otherwise.
fn bayeux_error(shared: &Shared, e: &CoreError) -> Response<Body> {
    let status = match e {
        CoreError::TooLarge { .. } | CoreError::TooManyMessages { .. } => {
            shared.metrics.oversize.fetch_add(1, Ordering::Relaxed);
            StatusCode::PAYLOAD_TOO_LARGE
        }
        _ => StatusCode::BAD_REQUEST,
    };
    json_response(status, shared.engine.refusal(e).array().clone())
}

/// The 413 answer to a body over `max_body_bytes`, with `Connection: close` when the rest of
/// the body will not be read.
pub(crate) fn too_large(shared: &Shared, close: bool) -> Response<Body> {
    let limit = shared.config.max_body_bytes;
    let mut r = bayeux_error(shared, &CoreError::TooLarge { limit });
    if close {
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    r
}

/// Reads a request body of at most `max_body_bytes`, within `body_read_timeout`.
///
/// A body over the limit gets `413` with `413::message_too_large`. So that the client can
/// finish sending and read that answer (closing a socket with unread data makes the kernel
/// reset it, and the client sees a broken pipe instead of the 413), the rest of an oversized
/// body is read and discarded, up to [`DRAIN_FACTOR`] times the limit; past that, or when the
/// declared length already goes past it, the 413 is sent at once with `Connection: close`.
async fn read_body<B>(shared: &Shared, body: B) -> Result<Bytes, Response<Body>>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let limit = shared.config.max_body_bytes;
    let drain_limit = limit.saturating_mul(DRAIN_FACTOR);
    let too_large = |close: bool| too_large(shared, close);
    let declared = body.size_hint().exact();
    if declared.is_some_and(|n| n > drain_limit as u64) {
        return Err(too_large(true));
    }
    let read = async move {
        let mut body = std::pin::pin!(body);
        // A body that arrives as one frame (the usual case) is kept as is, without a copy;
        // nothing is reserved from the declared length, which costs the client nothing to
        // claim.
        let mut first: Option<Bytes> = None;
        let mut rest = bytes::BytesMut::new();
        let mut seen = 0usize;
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else {
                return Err(plain(StatusCode::BAD_REQUEST, "could not read the body"));
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            seen = seen.saturating_add(data.len());
            if seen > drain_limit {
                return Err(too_large(true));
            } else if seen > limit {
                first = None;
                rest = bytes::BytesMut::new();
            } else if first.is_none() && rest.is_empty() {
                first = Some(data);
            } else {
                if let Some(f) = first.take() {
                    rest.extend_from_slice(&f);
                }
                rest.extend_from_slice(&data);
            }
        }
        if seen > limit {
            Err(too_large(false))
        } else {
            Ok(first.unwrap_or_else(|| rest.freeze()))
        }
    };
    match tokio::time::timeout(shared.config.body_read_timeout, read).await {
        Ok(r) => r,
        Err(_) => Err(plain(StatusCode::REQUEST_TIMEOUT, "request body timed out")),
    }
}

/// Runs a batch, holding its `/meta/connect` if the engine says so, and returns the JSON
/// array to send.
async fn run_batch(shared: &Shared, ctx: &RequestContext, batch: Vec<Message>) -> Bytes {
    let engine = &shared.engine;
    let metrics = &shared.metrics;
    metrics.add_in(batch.len());
    let publishes = crate::metrics::publishes(&batch);
    // The asynchronous security policy, if any, runs here without blocking the runtime.
    let batch = engine.authorize(ctx, batch).await;
    let now = Instant::now();
    let mut out = engine.handle_authorized(ctx, batch, now);
    metrics.published(now, publishes);
    if let Some(s) = &out.session {
        crate::trace::record_session(s);
    }
    if let Some(hold) = out.hold.take() {
        let mut shutdown = shared.shutdown.clone();
        let deadline = tokio::time::Instant::from_std(hold.deadline());
        tokio::select! {
            _ = hold.wake() => {}
            _ = tokio::time::sleep_until(deadline) => {}
            _ = stopped(&mut shutdown) => {}
        }
        out.replies
            .extend(crate::metrics::finish_hold(shared, hold));
    }
    // The reply is handed to the HTTP writer now: how long its oldest message waited.
    if let Some(since) = out.session.as_ref().and_then(|s| s.take_drained_since()) {
        metrics.queued_to_written.observe(since.elapsed());
    }
    metrics.add_out(out.replies.len());
    join_array(&out.replies)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callback_names() {
        for ok in ["cb", "jsonpcallback", "_x1", "$a.b"] {
            assert!(valid_callback(ok), "{ok}");
        }
        for bad in ["", "1a", "a-b", "a(b)", "alert(1);x", &"a".repeat(65)] {
            assert!(!valid_callback(bad), "{bad}");
        }
    }

    #[test]
    fn message_parameters_decode_into_one_batch() {
        let limits = Limits::default();
        let q = b"jsonp=cb&message=%5B%7B%22channel%22%3A%22%2Fa%22%7D%5D&message=%7B%22channel%22%3A%22%2Fb%22%7D";
        let batch = decode_message_params(q, &limits).unwrap();
        assert_eq!(batch.len(), 2);
        assert!(decode_message_params(b"jsonp=cb", &limits).is_err());
    }
}
