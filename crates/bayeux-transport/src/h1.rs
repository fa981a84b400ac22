//! The lean HTTP/1.1 connection loop of [`crate::serve`]: requests to a Bayeux mount point
//! (long-polling, callback-polling, their CORS preflights) are parsed here and handed to the
//! Bayeux service directly, and a WebSocket upgrade there is answered here and the socket handed
//! to `ws::run_on`; the first request that is anything else (another path, another upgrade,
//! HTTP/2 with prior knowledge) hands the connection, with the bytes already read, to hyper for
//! the rest of its life.
//!
//! Why: a held `/meta/connect` is what a long-polling session costs at rest, and hyper keeps a
//! read buffer (8 to 16 KiB) and a header write buffer (8 KiB) for every connection whose request
//! is in flight, with no smaller minimum. Here a connection holds no buffer while its request
//! waits: the read buffer is given back once a request has been read (unless pipelined bytes
//! follow), and a response is written from a buffer that lives only for that write. The loop
//! also watches the socket while a request is held, so a client that goes away ends its held
//! connect at once.

use std::io::{self, Write as _};
use std::sync::Arc;

use bayeux_core::{ConnectionQuota, RequestContext};
use bytes::{Buf, Bytes, BytesMut};
use http::{Method, Request, Response, StatusCode, Version, header};
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::http1::{self, BodyLength, ChunkedDecoder, RequestHead};
use crate::service::{AcceptedSocket, BayeuxService, LeanConnection};
use crate::shared::Body;

/// How a connection left the loop.
pub(crate) enum Outcome {
    /// Closed (by either side, an error, a timeout or shutdown).
    Closed,
    /// Not ours: serve it with hyper, starting with these bytes.
    HandOff(Bytes),
    /// Switched to a WebSocket with this context (the `101` is written); the bytes are what
    /// the client sent after its handshake.
    WebSocket(RequestContext, Vec<u8>),
}

/// What the loop needs besides the socket.
pub(crate) struct Params<'a> {
    pub bayeux: &'a BayeuxService,
    pub quota: &'a Arc<ConnectionQuota>,
    pub closing: watch::Receiver<bool>,
    /// Whether the client closing its side while a request is handled means it went away (a
    /// held connect is then dropped at once), as it does on a socket; [`exchange`] half-closes
    /// after its input and still wants the answers.
    pub watch_eof: bool,
}

/// How much the read buffer grows by when it needs room.
const READ_CHUNK: usize = 2048;

/// Runs the connection until it closes or must be handed to hyper.
pub(crate) async fn run<IO>(io: &mut IO, p: Params<'_>) -> Outcome
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let Params {
        bayeux,
        quota,
        mut closing,
        watch_eof,
    } = p;
    let mut buf = BytesMut::new();
    // Every large step is boxed: the task keeps, for as long as a request is held, only what
    // this loop needs between steps (the buffer's handle, the request's method and version).
    loop {
        // 1. A request head, within the header timeout (which also bounds an idle connection).
        let head = match Box::pin(read_head(io, &mut buf, bayeux, &mut closing)).await {
            Ok(h) => h,
            Err(out) => return out,
        };
        let meta = ReqMeta {
            method: head.method.clone(),
            version: head.version,
            keep_alive: head.keep_alive,
        };

        // 2. The body, within the body timeout and the body limit.
        let body = match Box::pin(read_body(io, &mut buf, &head, bayeux)).await {
            Ok(b) => b,
            Err(BodyEnd::Respond(resp, close)) => {
                let keep = !close && meta.keep_alive;
                if Box::pin(write_response(io, resp, &meta, keep))
                    .await
                    .is_err()
                    || !keep
                {
                    return Outcome::Closed;
                }
                continue;
            }
            Err(BodyEnd::Close) => return Outcome::Closed,
        };

        // 3. The request, while the socket is watched for the client going away. Nothing is
        // buffered meanwhile unless the client already sent more (pipelining).
        if buf.is_empty() {
            buf = BytesMut::new();
        }
        // The request's span and start, only when the span is on (at debug): a held request
        // then carries one pointer for them.
        let traced = Some(crate::trace::request(&head.method, head.uri.path()))
            .filter(|span| !span.is_disabled())
            .map(|span| Box::new((span, std::time::Instant::now())));
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = head.method;
        *req.uri_mut() = head.uri;
        *req.version_mut() = head.version;
        *req.headers_mut() = head.headers;
        req.extensions_mut().insert(quota.clone());
        if head.upgrade {
            req.extensions_mut().insert(LeanConnection);
        }
        let mut handling: std::pin::Pin<Box<dyn Future<Output = _> + Send + '_>> = match &traced {
            Some(t) => Box::pin(tracing::Instrument::instrument(
                bayeux.handle(req),
                t.0.clone(),
            )),
            None => Box::pin(bayeux.handle(req)),
        };
        let mut resp = 'handled: {
            if !buf.is_empty() || !watch_eof {
                break 'handled handling.await;
            }
            let mut one = [0u8; 1];
            tokio::select! {
                r = &mut handling => r,
                r = io.read(&mut one) => match r {
                    Ok(1) => {
                        buf.extend_from_slice(&one);
                        handling.await
                    }
                    // The client went away (or broke the socket): drop the request, which
                    // ends a held connect at once.
                    _ => return Outcome::Closed,
                },
            }
        };

        if let Some(t) = traced {
            let (span, start) = *t;
            span.in_scope(|| {
                tracing::debug!(
                    status = resp.status().as_u16(),
                    ms = start.elapsed().as_millis() as u64,
                    "request done"
                );
            });
        }

        // A WebSocket the service accepted: the `101` goes out, then the socket leaves the loop.
        if let Some(AcceptedSocket(ctx)) = resp.extensions_mut().remove::<AcceptedSocket>() {
            if Box::pin(write_response(io, resp, &meta, true))
                .await
                .is_ok()
            {
                return Outcome::WebSocket(ctx, std::mem::take(&mut buf).to_vec());
            }
            return Outcome::Closed;
        }

        // 4. The response; the connection stays open only if both sides want it.
        let keep = meta.keep_alive && !*closing.borrow() && !asks_close(&resp);
        if Box::pin(write_response(io, resp, &meta, keep))
            .await
            .is_err()
            || !keep
        {
            let _ = io.shutdown().await;
            return Outcome::Closed;
        }
    }
}

/// Reads the next request head into `buf`, within the header timeout (which also bounds an
/// idle connection between requests). `Err` ends the loop: the connection closed, was
/// refused (answered here), or is not ours.
async fn read_head<IO>(
    io: &mut IO,
    buf: &mut BytesMut,
    bayeux: &BayeuxService,
    closing: &mut watch::Receiver<bool>,
) -> Result<RequestHead, Outcome>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let deadline = Instant::now() + bayeux.shared.config.header_read_timeout;
    loop {
        if !buf.is_empty() {
            match http1::h2_preface(buf) {
                Some(true) => return Err(Outcome::HandOff(std::mem::take(buf).freeze())),
                None => {}
                Some(false) => match http1::parse_head(buf) {
                    Ok(Some((head, len))) => {
                        let foreign_upgrade = head.upgrade && !is_websocket(&head);
                        if foreign_upgrade || !bayeux.matches(head.uri.path()) {
                            return Err(Outcome::HandOff(std::mem::take(buf).freeze()));
                        }
                        buf.advance(len);
                        return Ok(head);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        let _ = write_error(io, e.status(), e.text(), true).await;
                        return Err(Outcome::Closed);
                    }
                },
            }
        }
        let idle = buf.is_empty();
        if buf.capacity() - buf.len() < READ_CHUNK / 4 {
            buf.reserve(READ_CHUNK);
        }
        let read = tokio::select! {
            r = tokio::time::timeout_at(deadline, io.read_buf(buf)) => r,
            _ = closing.wait_for(|c| *c), if idle => return Err(Outcome::Closed),
        };
        match read {
            Ok(Ok(0)) | Ok(Err(_)) => return Err(Outcome::Closed),
            Ok(Ok(_)) => {}
            Err(_) if idle => return Err(Outcome::Closed),
            Err(_) => {
                let _ = write_error(
                    io,
                    StatusCode::REQUEST_TIMEOUT,
                    "request head timed out",
                    true,
                )
                .await;
                return Err(Outcome::Closed);
            }
        }
    }
}

/// Whether `head` asks for a WebSocket (the only upgrade a Bayeux endpoint takes; any other
/// goes to hyper, which refuses it).
fn is_websocket(head: &RequestHead) -> bool {
    head.method == Method::GET
        && http1::header_has_token(&head.headers, header::UPGRADE, "websocket")
}

/// Why a body was not read.
enum BodyEnd {
    /// Answer with this (and close the connection when the flag says so).
    Respond(Response<Body>, bool),
    /// Close without answering (the client went away).
    Close,
}

/// Reads the body of `head`: into memory up to `max_body_bytes`; a larger one is read and
/// discarded up to `polling::DRAIN_FACTOR` times that (the service's rule for bodies hyper
/// reads), so that the client can read the 413, and past
/// that (or when its declared length is already past it) answered at once before closing.
async fn read_body<IO>(
    io: &mut IO,
    buf: &mut BytesMut,
    head: &RequestHead,
    bayeux: &BayeuxService,
) -> Result<Bytes, BodyEnd>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let shared = &bayeux.shared;
    let limit = shared.config.max_body_bytes as u64;
    let drain = limit.saturating_mul(crate::polling::DRAIN_FACTOR as u64);
    let too_large = |close| BodyEnd::Respond(crate::polling::too_large(shared, close), close);
    if head.body == BodyLength::Empty {
        return Ok(Bytes::new());
    }
    if let BodyLength::Length(n) = head.body
        && n > drain
    {
        return Err(too_large(true));
    }
    if head.expect_continue
        && buf.is_empty()
        && io
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
            .await
            .is_err()
    {
        return Err(BodyEnd::Close);
    }
    let deadline = Instant::now() + shared.config.body_read_timeout;
    let mut body = BytesMut::new();
    let mut seen: u64 = 0;
    let mut chunked = ChunkedDecoder::new();
    loop {
        // Take what the buffer holds.
        match head.body {
            BodyLength::Empty => return Ok(Bytes::new()),
            BodyLength::Length(n) => {
                let take = (n - seen).min(buf.len() as u64) as usize;
                if seen + (take as u64) <= limit {
                    body.extend_from_slice(&buf[..take]);
                }
                buf.advance(take);
                seen += take as u64;
                if seen == n {
                    break;
                }
            }
            BodyLength::Chunked => {
                let mut over = false;
                let used = chunked
                    .decode(buf, |d| {
                        seen = seen.saturating_add(d.len() as u64);
                        if seen <= limit {
                            body.extend_from_slice(d);
                        } else {
                            over = true;
                        }
                    })
                    .map_err(|e| {
                        let why = match e {
                            http1::ChunkError::Malformed => "malformed chunked body",
                            http1::ChunkError::TooLarge => "chunked body framing too large",
                        };
                        BodyEnd::Respond(crate::shared::plain(StatusCode::BAD_REQUEST, why), true)
                    })?;
                buf.advance(used);
                if over {
                    body = BytesMut::new();
                }
                if seen > drain {
                    return Err(too_large(true));
                }
                if chunked.is_done() {
                    break;
                }
            }
        }
        // Need more.
        if buf.capacity() - buf.len() < READ_CHUNK / 4 {
            buf.reserve(READ_CHUNK);
        }
        match tokio::time::timeout_at(deadline, io.read_buf(buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Err(BodyEnd::Close),
            Ok(Ok(_)) => {}
            Err(_) => {
                return Err(BodyEnd::Respond(
                    crate::shared::plain(StatusCode::REQUEST_TIMEOUT, "request body timed out"),
                    true,
                ));
            }
        }
    }
    if seen > limit {
        return Err(too_large(false));
    }
    Ok(body.freeze())
}

/// What the response writer needs of the request.
struct ReqMeta {
    method: Method,
    version: Version,
    keep_alive: bool,
}

fn asks_close(resp: &Response<Body>) -> bool {
    resp.headers()
        .get_all(header::CONNECTION)
        .iter()
        .any(|v| v.as_bytes().eq_ignore_ascii_case(b"close"))
}

async fn write_error<IO>(io: &mut IO, status: StatusCode, text: &str, close: bool) -> io::Result<()>
where
    IO: AsyncWrite + Unpin,
{
    let meta = ReqMeta {
        method: Method::GET,
        version: Version::HTTP_11,
        keep_alive: !close,
    };
    write_response(io, crate::shared::plain(status, text), &meta, !close).await?;
    io.shutdown().await
}

/// Writes `resp` in one write: the head and, unless the request was `HEAD`, the body.
async fn write_response<IO>(
    io: &mut IO,
    resp: Response<Body>,
    req: &ReqMeta,
    keep: bool,
) -> io::Result<()>
where
    IO: AsyncWrite + Unpin,
{
    let (parts, body) = resp.into_parts();
    let body = collect(body).await;
    let status = parts.status;
    let switching = status == StatusCode::SWITCHING_PROTOCOLS;
    let no_body = status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
        || status.is_informational();
    let send_body = !no_body && req.method != Method::HEAD;
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in &parts.headers {
        if name == header::CONTENT_LENGTH
            || name == header::TRANSFER_ENCODING
            || (name == header::CONNECTION && !switching)
            || name == header::DATE
        {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !no_body {
        // Writing into a Vec cannot fail.
        let _ = write!(out, "content-length: {}\r\n", body.len());
    }
    out.extend_from_slice(b"date: ");
    date::append(&mut out);
    out.extend_from_slice(b"\r\n");
    if switching {
        // The response names the new protocol itself.
    } else if !keep {
        out.extend_from_slice(b"connection: close\r\n");
    } else if req.version == Version::HTTP_10 {
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
    let body: &[u8] = if send_body { &body } else { &[] };
    write_all_2(io, &out, body).await?;
    io.flush().await
}

/// Writes `a` then `b` with vectored writes: the body (shared with every other subscriber) is
/// not copied behind the head.
async fn write_all_2<IO>(io: &mut IO, a: &[u8], b: &[u8]) -> io::Result<()>
where
    IO: AsyncWrite + Unpin,
{
    let mut done = 0;
    let total = a.len() + b.len();
    while done < total {
        let n = if done < a.len() {
            let bufs = [io::IoSlice::new(&a[done..]), io::IoSlice::new(b)];
            io.write_vectored(&bufs).await?
        } else {
            io.write(&b[done - a.len()..]).await?
        };
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        done += n;
    }
    Ok(())
}

/// The bytes of a service response body (always one in-memory buffer).
async fn collect(body: Body) -> Bytes {
    match body.collect().await {
        Ok(c) => c.to_bytes(),
        Err(never) => match never {},
    }
}

/// The `Date` header, formatted at most once per second per thread.
mod date {
    use std::cell::RefCell;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    thread_local! {
        static CACHE: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }

    pub(super) fn append(out: &mut Vec<u8>) {
        let now = SystemTime::now();
        let secs = now
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_secs();
        CACHE.with(|c| {
            let mut c = c.borrow_mut();
            if c.0 != secs {
                *c = (secs, httpdate::fmt_http_date(now));
            }
            out.extend_from_slice(c.1.as_bytes());
        });
    }
}

/// Bytes already read from a connection, replayed to hyper before the socket's own.
pub(crate) struct Prefixed<IO> {
    prefix: Bytes,
    io: IO,
}

impl<IO> Prefixed<IO> {
    pub(crate) fn new(prefix: Bytes, io: IO) -> Self {
        Prefixed { prefix, io }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Prefixed<IO> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        out: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(out.remaining());
            out.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            if self.prefix.is_empty() {
                self.prefix = Bytes::new();
            }
            return std::task::Poll::Ready(Ok(()));
        }
        std::pin::Pin::new(&mut self.io).poll_read(cx, out)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Prefixed<IO> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        std::pin::Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> std::task::Poll<io::Result<usize>> {
        std::pin::Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// What [`exchange`] saw.
#[derive(Debug, Default)]
pub struct Exchange {
    /// Every byte the server wrote.
    pub output: Vec<u8>,
    /// Whether the connection was handed to hyper (it is then not served further here).
    pub handed_off: bool,
}

/// Runs `serve`'s lean HTTP/1.1 loop on one in-memory connection whose client sends `input`
/// and then closes its side (its requests are still answered); returns what the server wrote. This is how the fuzz targets and
/// the tests drive the exact code a TCP connection runs, without sockets.
pub async fn exchange(bayeux: &BayeuxService, input: &[u8]) -> Exchange {
    let (client, mut server) = tokio::io::duplex(64 * 1024);
    let (mut client_read, mut client_write) = tokio::io::split(client);
    let quota = ConnectionQuota::new(bayeux.shared.config.max_sessions_per_connection);
    let (_closing_tx, closing) = watch::channel(false);
    let params = Params {
        bayeux,
        quota: &quota,
        closing,
        watch_eof: false,
    };
    let send = async {
        let _ = client_write.write_all(input).await;
        let _ = client_write.shutdown().await;
    };
    let serve = async {
        let out = run(&mut server, params).await;
        drop(server);
        out
    };
    let mut output = Vec::new();
    let (_, outcome, _) = tokio::join!(send, serve, client_read.read_to_end(&mut output));
    Exchange {
        output,
        handed_off: matches!(outcome, Outcome::HandOff(_)),
    }
}
