//! HTTP request decoding through the public service: long-poll bodies (JSON and form-encoded
//! `message=`), JSONP query parameters, cookies, origins, methods and paths, fed to
//! `BayeuxService::handle` on one current-thread runtime.
//!
//! The fuzz target reads a raw, readable form (request line, headers, empty line, body; see
//! [`Harness::check_raw`]) so the committed seeds are real requests. Each input containing the
//! text `CLIENTID` starts with a real handshake, and that text is replaced by the session's id, so connects, subscribes and publishes reach the engine. Connects
//! are never held (`timeout_ms` 0 and client timeouts capped at 0). After each input every
//! session is closed and the engine must be empty again.
//!
//! The authentication inputs (`Authorization`, cookies, `Origin` and `Sec-Fetch-*`) reach a
//! second, credentialed endpoint, `/secure`, whose authenticator accepts user `alice` by a Basic
//! authorization or a session cookie and which allows the origin `https://good.example`. On it,
//! a session may be created only when an independent statement of the cross-site rule says the
//! request may read the endpoint, and never by callback-polling.

use std::sync::OnceLock;

use arbitrary::Arbitrary;
use std::sync::Arc;

use bayeux_core::{Engine, EngineConfig};
use bayeux_transport::auth::Authenticator;
use bayeux_transport::{BayeuxService, Endpoint, Origins, TransportConfig};
use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use serde_json::Value;

/// The runtime and service shared by every input.
pub struct Harness {
    rt: tokio::runtime::Runtime,
    service: BayeuxService,
}

/// The shared harness, created on first use.
pub fn harness() -> &'static Harness {
    static H: OnceLock<Harness> = OnceLock::new();
    H.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let engine = Engine::new(EngineConfig {
            timeout_ms: 0,
            max_client_timeout_ms: 0,
            max_sessions: 64,
            max_subscriptions: 16,
            max_queue: 16,
            ..EngineConfig::default()
        });
        let mut secure = Endpoint::new("/secure");
        secure.authenticator = Some(Arc::new(AliceAuth));
        secure.origins = Origins::List(vec![GOOD_ORIGIN.into()]);
        let transport = TransportConfig {
            endpoints: vec![Endpoint::new("/cometd"), secure],
            max_body_bytes: 64 * 1024,
            ..TransportConfig::default()
        };
        let service = rt.block_on(async { BayeuxService::new(engine, transport).0 });
        Harness { rt, service }
    })
}

/// The origin the credentialed endpoint allows.
const GOOD_ORIGIN: &str = "https://good.example";

/// Authenticates `alice` by `Authorization: Basic YWxpY2U6c2VjcmV0` (`alice:secret`) or the
/// cookie `SID=alice-session`; anything else is anonymous.
struct AliceAuth;

impl Authenticator for AliceAuth {
    fn authenticate(&self, parts: &http::request::Parts) -> Option<Arc<str>> {
        let basic = parts
            .headers
            .get(header::AUTHORIZATION)
            .is_some_and(|v| v.as_bytes() == b"Basic YWxpY2U6c2VjcmV0");
        let cookie = bayeux_transport::cookie_value(&parts.headers, "SID") == Some("alice-session");
        (basic || cookie).then(|| Arc::from("alice"))
    }
}

/// Whether a request to the credentialed endpoint may read it, written independently of the
/// server's code: pages of the endpoint's own origin (or no fetch metadata at all) may; another
/// page needs an allowed `Origin`, and may never load it as a script.
fn may_read_secure(req: &Request<Full<Bytes>>) -> bool {
    let h = |name: &str| req.headers().get(name).map(|v| v.as_bytes().to_vec());
    let site = h("sec-fetch-site");
    let own = match &site {
        None => true,
        Some(v) => v.as_slice() == b"same-origin" || v.as_slice() == b"none",
    };
    let origin = h("origin");
    let origin_allowed = origin
        .as_ref()
        .is_none_or(|o| o.eq_ignore_ascii_case(GOOD_ORIGIN.as_bytes()));
    let real_origin = origin.as_ref().is_some_and(|o| o.as_slice() != b"null");
    let script = h("sec-fetch-dest").is_some_and(|d| d.as_slice() == b"script");
    origin_allowed && (own || real_origin) && (own || !script)
}

/// Request method.
#[derive(Debug, Arbitrary)]
pub enum MethodIn {
    /// POST.
    Post,
    /// GET.
    Get,
    /// OPTIONS.
    Options,
    /// PUT.
    Put,
    /// HEAD.
    Head,
}

/// Request path.
#[derive(Debug, Arbitrary)]
pub enum PathIn {
    /// `/cometd`.
    Mount,
    /// `/cometd/<meta type>` as the JS client sends.
    Sub(u8),
    /// `/cometd` + any text.
    Below(String),
    /// Any text.
    Raw(String),
}

/// A query parameter name.
#[derive(Debug, Arbitrary)]
pub enum Key {
    /// `message`.
    Message,
    /// `jsonp`.
    Jsonp,
    /// Any name.
    Raw(String),
}

impl Key {
    fn text(&self) -> &str {
        match self {
            Key::Message => "message",
            Key::Jsonp => "jsonp",
            Key::Raw(s) => s,
        }
    }
}

/// `Content-Type`.
#[derive(Debug, Arbitrary)]
pub enum ContentTypeIn {
    /// None.
    None,
    /// `application/json;charset=UTF-8`.
    Json,
    /// `application/x-www-form-urlencoded`.
    Form,
    /// `text/plain`.
    Text,
    /// Any text.
    Raw(String),
}

/// The request body.
#[derive(Debug, Arbitrary)]
pub enum BodyIn {
    /// Raw bytes.
    Raw(Vec<u8>),
    /// Form-encoded parameters.
    Form(Vec<(Key, String)>),
}

/// One fuzzed request.
#[derive(Debug, Arbitrary)]
pub struct HttpInput {
    /// Method.
    pub method: MethodIn,
    /// Path.
    pub path: PathIn,
    /// Query parameters (form-encoded).
    pub query: Vec<(Key, String)>,
    /// Extra raw query text, appended as is.
    pub raw_query: Option<String>,
    /// `Content-Type`.
    pub content_type: ContentTypeIn,
    /// Body.
    pub body: BodyIn,
    /// `Cookie` header (else the browser cookie of the handshake, if one was made).
    pub cookie: Option<String>,
    /// `Origin` header.
    pub origin: Option<String>,
    /// Add WebSocket upgrade headers.
    pub upgrade: bool,
    /// Handshake first (an `X-Session: CLIENTID` header; `CLIENTID` in the query or body is
    /// replaced by the session's id).
    pub use_session: bool,
}

fn replace(haystack: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(haystack.len());
    let mut i = 0;
    while i < haystack.len() {
        if haystack[i..].starts_with(needle) {
            out.extend_from_slice(with);
            i += needle.len();
        } else {
            out.push(haystack[i]);
            i += 1;
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

impl HttpInput {
    /// The input in the raw form the fuzz target reads (see [`Harness::check_raw`]).
    pub fn render(&self) -> Vec<u8> {
        const SUBS: &[&str] = &[
            "handshake",
            "connect",
            "subscribe",
            "unsubscribe",
            "disconnect",
            "",
        ];
        let path = match &self.path {
            PathIn::Mount => "/cometd".to_owned(),
            PathIn::Sub(i) => format!("/cometd/{}", SUBS[*i as usize % SUBS.len()]),
            PathIn::Below(s) => format!("/cometd{s}"),
            PathIn::Raw(s) => s.clone(),
        };
        let mut query = form_urlencoded::Serializer::new(String::new());
        for (k, v) in self.query.iter().take(8) {
            query.append_pair(k.text(), v);
        }
        let mut query = query.finish();
        if let Some(raw) = &self.raw_query {
            query.push_str(raw);
        }
        let method = match self.method {
            MethodIn::Post => "POST",
            MethodIn::Get => "GET",
            MethodIn::Options => "OPTIONS",
            MethodIn::Put => "PUT",
            MethodIn::Head => "HEAD",
        };
        let mut out = format!("{method} {path}");
        if !query.is_empty() {
            out.push('?');
            out.push_str(&query);
        }
        out.push('\n');
        let mut header = |k: &str, v: &str| {
            out.push_str(k);
            out.push_str(": ");
            out.push_str(v);
            out.push('\n');
        };
        match &self.content_type {
            ContentTypeIn::None => {}
            ContentTypeIn::Json => header("Content-Type", "application/json;charset=UTF-8"),
            ContentTypeIn::Form => header("Content-Type", "application/x-www-form-urlencoded"),
            ContentTypeIn::Text => header("Content-Type", "text/plain"),
            ContentTypeIn::Raw(s) => header("Content-Type", s),
        }
        if let Some(c) = &self.cookie {
            header("Cookie", c);
        }
        if let Some(o) = &self.origin {
            header("Origin", o);
        }
        if self.upgrade {
            header("Connection", "Upgrade");
            header("Upgrade", "websocket");
            header("Sec-WebSocket-Version", "13");
            header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==");
        }
        if self.use_session {
            header("X-Session", "CLIENTID");
        }
        let mut out = out.into_bytes();
        out.push(b'\n');
        match &self.body {
            BodyIn::Raw(bytes) => out.extend_from_slice(bytes),
            BodyIn::Form(params) => {
                let mut f = form_urlencoded::Serializer::new(String::new());
                for (k, v) in params.iter().take(8) {
                    f.append_pair(k.text(), v);
                }
                out.extend_from_slice(f.finish().as_bytes());
            }
        }
        out
    }
}

/// Splits the raw form into the head (request line and headers) and the body.
fn split_raw(input: &[u8]) -> (&[u8], &[u8]) {
    match input.windows(2).position(|w| w == b"\n\n") {
        Some(i) => (&input[..i], &input[i + 2..]),
        None => (input, &[]),
    }
}

fn build(input: &[u8]) -> Option<Request<Full<Bytes>>> {
    let (head, body) = split_raw(input);
    let head = std::str::from_utf8(head).ok()?;
    let mut lines = head.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let (method, target) = lines.next()?.split_once(' ')?;
    let mut b = Request::builder()
        .method(Method::from_bytes(method.as_bytes()).ok()?)
        .uri(target);
    for line in lines {
        let (k, v) = line.split_once(':')?;
        b = b.header(k.trim(), v.trim());
    }
    // Invalid methods, URIs and header values are refused by `http` before any server sees them.
    b.body(Full::new(Bytes::copy_from_slice(body))).ok()
}

/// The raw form as HTTP/1.1 bytes (CRLF line ends, a version, a `Content-Length` for the
/// body unless the input frames it itself), and whether it is plain: framed by the length
/// added here, with no `Expect` or `Connection` header, so that the lean loop must answer it
/// exactly as the service does.
fn wire_form(input: &[u8]) -> Option<(Vec<u8>, bool)> {
    let (head, body) = split_raw(input);
    let head = std::str::from_utf8(head).ok()?;
    let mut lines = head.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let first = lines.next()?;
    let mut out = format!("{first} HTTP/1.1\r\n");
    // Only a request line that is valid HTTP/1.1 can be compared: a target of visible ASCII
    // without a fragment (`http::Uri` accepts more than the wire grammar does).
    let target = first.split_once(' ').map_or("", |(_, t)| t);
    let mut plain = target.bytes().all(|b| b.is_ascii_graphic() && b != b'#');
    for line in lines {
        // As `build` reads it: the name and value trimmed.
        let (name, value) = line.split_once(':')?;
        let (name, value) = (name.trim(), value.trim());
        if matches!(
            name.to_ascii_lowercase().as_str(),
            "content-length" | "transfer-encoding" | "expect" | "connection" | "upgrade"
        ) {
            plain = false;
        }
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    // The loop's head limits (431) are its own: the service never sees such heads.
    let header_lines = head.split('\n').count();
    plain &= header_lines < bayeux_transport::http1::MAX_HEADERS
        && out.len() + 64 < bayeux_transport::http1::MAX_HEAD_BYTES;
    if plain {
        out.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    Some((out, plain))
}

/// Parses what the lean loop wrote: a sequence of complete HTTP/1.1 responses (the last may
/// be cut only if the connection was handed over), each with a status the loop may give.
/// Returns their statuses.
fn check_wire(mut out: &[u8]) -> Vec<u16> {
    let mut statuses = Vec::new();
    while !out.is_empty() {
        let mut hs = [httparse::EMPTY_HEADER; 64];
        let mut r = httparse::Response::new(&mut hs);
        let n = match r.parse(out) {
            Ok(httparse::Status::Complete(n)) => n,
            other => panic!(
                "not an HTTP response ({other:?}): {:?}",
                String::from_utf8_lossy(&out[..out.len().min(300)])
            ),
        };
        let status = r.code.expect("status");
        assert_eq!(r.version, Some(1), "not HTTP/1.1");
        assert!(
            matches!(
                status,
                100 | 101 | 200 | 204 | 400 | 403 | 404 | 405 | 408 | 413 | 417 | 431 | 501
            ),
            "unexpected status {status}"
        );
        let len = if status == 100 || status == 204 {
            0
        } else {
            r.headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .map(|h| {
                    std::str::from_utf8(h.value)
                        .ok()
                        .and_then(|v| v.parse::<usize>().ok())
                        .expect("content-length")
                })
                .unwrap_or(0)
        };
        statuses.push(status);
        // A HEAD answer has no body whatever its length says; the input may hold several
        // requests, so only the total is bounded.
        let body = if out[n..].starts_with(b"HTTP/1.1 ") {
            0
        } else {
            len.min(out.len() - n)
        };
        out = &out[n + body..];
    }
    statuses
}

/// `BAYEUX_FUZZ_DEBUG=1` prints each response (to see what seeds reach).
fn debug() -> bool {
    static D: OnceLock<bool> = OnceLock::new();
    *D.get_or_init(|| std::env::var_os("BAYEUX_FUZZ_DEBUG").is_some())
}

/// The response, collected.
struct Collected {
    status: StatusCode,
    content_type: String,
    set_cookie: Option<String>,
    body: Bytes,
}

impl Harness {
    fn send(&self, req: Request<Full<Bytes>>) -> Collected {
        self.rt.block_on(async {
            let resp = self.service.handle(req).await;
            let (parts, body) = resp.into_parts();
            let body = body.collect().await.expect("Full never fails").to_bytes();
            Collected {
                status: parts.status,
                content_type: parts
                    .headers
                    .get(header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned(),
                set_cookie: parts
                    .headers
                    .get(header::SET_COOKIE)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned),
                body,
            }
        })
    }

    /// A real handshake: the new session's id and browser cookie (`name=value`).
    fn handshake(&self) -> (String, Option<String>) {
        let body = r#"[{"channel":"/meta/handshake","version":"1.0","id":"1",
            "supportedConnectionTypes":["long-polling","callback-polling"]}]"#;
        let req = Request::post("/cometd/handshake")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .expect("a valid request");
        let resp = self.send(req);
        assert_eq!(resp.status, StatusCode::OK);
        let v: Value = serde_json::from_slice(&resp.body).expect("handshake reply");
        let id = v[0]["clientId"].as_str().expect("clientId").to_owned();
        let cookie = resp
            .set_cookie
            .and_then(|c| c.split(';').next().map(str::to_owned));
        (id, cookie)
    }

    /// Runs one input in its raw form: a request line (`METHOD target`), header lines
    /// (`Name: value`), an empty line and the body, with `\n` line ends. When the input contains
    /// `CLIENTID`, a session is handshaken first and its id replaces that text (its browser
    /// cookie is sent unless the input has a `Cookie` header). Panics when a property fails.
    pub fn check_raw(&self, input: &[u8]) {
        let session = contains(input, b"CLIENTID").then(|| self.handshake());
        let input = match &session {
            Some((id, _)) => replace(input, b"CLIENTID", id.as_bytes()),
            None => input.to_vec(),
        };
        if let Some(mut req) = build(&input) {
            if let Some((_, Some(cookie))) = &session
                && !req.headers().contains_key(header::COOKIE)
                && let Ok(v) = header::HeaderValue::from_str(cookie)
            {
                req.headers_mut().insert(header::COOKIE, v);
            }
            let get = req.method() == Method::GET;
            let secure = req.uri().path().starts_with("/secure");
            let may_read = may_read_secure(&req);
            let upgrade = req.headers().contains_key(header::UPGRADE);
            let resp = self.send(req);
            let alice = self.service.engine().sessions_of("alice").len();
            if secure && alice > 0 {
                assert!(
                    may_read,
                    "a cross-site request created a session on /secure"
                );
                assert!(
                    !get || upgrade,
                    "callback-polling created a session on /secure"
                );
            }
            if debug() {
                eprintln!(
                    "{} {:?}",
                    resp.status,
                    String::from_utf8_lossy(&resp.body[..resp.body.len().min(600)])
                );
            }
            check_response(&resp, get);
            // The same request over the wire, through `serve`'s own HTTP/1.1 loop: it must
            // answer as the service does whenever the loop takes the request itself.
            if let Some((wire, plain)) = wire_form(&input) {
                let ex = self
                    .rt
                    .block_on(bayeux_transport::http1::exchange(&self.service, &wire));
                let statuses = check_wire(&ex.output);
                if plain && !ex.handed_off && !upgrade {
                    assert_eq!(
                        statuses.first().copied(),
                        Some(resp.status.as_u16()),
                        "the lean loop and the service disagree on {:?}",
                        String::from_utf8_lossy(&wire)
                    );
                }
            }
        }
        // The input as raw bytes on a connection: whatever it is, the loop answers with
        // well-formed HTTP/1.1 responses or hands the connection over.
        let ex = self
            .rt
            .block_on(bayeux_transport::http1::exchange(&self.service, &input));
        check_wire(&ex.output);
        let engine = self.service.engine();
        engine.close_all();
        assert_eq!(engine.session_count(), 0, "sessions left behind");
        assert_eq!(engine.channel_count(), 0, "channels left behind");
        assert_eq!(
            engine
                .stats()
                .held_connects
                .load(std::sync::atomic::Ordering::Relaxed),
            0,
            "held connects left behind"
        );
    }

    /// Runs one structured input (rendered to the raw form).
    pub fn check(&self, input: &HttpInput) {
        self.check_raw(&input.render());
    }
}

fn check_response(resp: &Collected, get: bool) {
    let s = resp.status.as_u16();
    assert!(
        matches!(s, 101 | 200 | 204 | 400 | 403 | 404 | 405 | 413),
        "unexpected status {s}: {:?}",
        String::from_utf8_lossy(&resp.body)
    );
    let json_array = |body: &[u8]| {
        let v: Value = serde_json::from_slice(body).unwrap_or_else(|e| {
            panic!(
                "{s} body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(body)
            )
        });
        let arr = v
            .as_array()
            .unwrap_or_else(|| panic!("{s} body is not an array: {v}"));
        for m in arr {
            let o = m
                .as_object()
                .unwrap_or_else(|| panic!("not an object: {m}"));
            assert!(
                o.contains_key("successful") || o.contains_key("data"),
                "neither a reply nor a delivery: {m}"
            );
            if let Some(e) = o.get("error") {
                let e = e.as_str().expect("error is a string");
                assert!(
                    e.len() > 4 && e.as_bytes()[3] == b':',
                    "bad error string {e:?}"
                );
                assert!(o.contains_key("advice"), "failure without advice: {m}");
            }
        }
    };
    if resp.content_type.starts_with("application/json") {
        json_array(&resp.body);
    } else if resp.content_type.starts_with("text/javascript") {
        assert!(get && s == 200, "JSONP body on {s}");
        let body = std::str::from_utf8(&resp.body).expect("JSONP body is UTF-8");
        let open = body.find('(').expect("JSONP call");
        let name = &body[..open];
        assert!(
            !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b == b'.'),
            "JSONP callback {name:?}"
        );
        let inner = body[open + 1..].strip_suffix(");").expect("JSONP call end");
        json_array(inner.as_bytes());
    } else if s == 200 {
        panic!("200 with content type {:?}", resp.content_type);
    }
}
