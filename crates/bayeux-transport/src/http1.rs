//! The HTTP/1.1 request parser of [`crate::serve`]'s lean connection loop, without I/O: the
//! request head (with `httparse`) and chunked bodies. Public so that the fuzz targets and
//! property tests drive exactly what the server runs.
//!
//! It is strict where leniency lets two parsers disagree about where a request ends (request
//! smuggling): `Transfer-Encoding` must end in `chunked` and may not come with
//! `Content-Length`; several `Content-Length` values must agree; a chunk line must end in CRLF.

pub use crate::h1::{Exchange, exchange};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Uri, Version};

/// Most header lines a request may carry (431 beyond).
pub const MAX_HEADERS: usize = 100;
/// Largest request head, request line and headers (431 beyond).
pub const MAX_HEAD_BYTES: usize = 32 * 1024;
/// Largest chunk extension, and largest trailer section, of a chunked body.
pub const MAX_CHUNK_META_BYTES: usize = 4 * 1024;

/// How the body of a request is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyLength {
    /// No body.
    Empty,
    /// `Content-Length` bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// A parsed request head.
#[derive(Debug)]
pub struct RequestHead {
    /// The method.
    pub method: Method,
    /// The request target.
    pub uri: Uri,
    /// `HTTP/1.0` or `HTTP/1.1`.
    pub version: Version,
    /// The header fields.
    pub headers: HeaderMap,
    /// How the body is delimited.
    pub body: BodyLength,
    /// Whether the client lets the connection carry further requests.
    pub keep_alive: bool,
    /// Whether the client waits for `100 Continue` before sending its body.
    pub expect_continue: bool,
    /// Whether the client asks to switch protocols (a WebSocket upgrade).
    pub upgrade: bool,
}

/// Why a request head was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadError {
    /// Over [`MAX_HEAD_BYTES`] or [`MAX_HEADERS`].
    TooLarge,
    /// Not a valid HTTP/1.x request head.
    Malformed(&'static str),
    /// A transfer coding other than `chunked`.
    UnsupportedCoding,
    /// An `Expect` other than `100-continue`.
    UnsupportedExpectation,
}

impl HeadError {
    /// The status the server answers with (and then closes the connection).
    pub fn status(&self) -> StatusCode {
        match self {
            HeadError::TooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            HeadError::Malformed(_) => StatusCode::BAD_REQUEST,
            HeadError::UnsupportedCoding => StatusCode::NOT_IMPLEMENTED,
            HeadError::UnsupportedExpectation => StatusCode::EXPECTATION_FAILED,
        }
    }

    /// A short text for the response body.
    pub fn text(&self) -> &'static str {
        match self {
            HeadError::TooLarge => "request head too large",
            HeadError::Malformed(why) => why,
            HeadError::UnsupportedCoding => "unsupported transfer coding",
            HeadError::UnsupportedExpectation => "unsupported expectation",
        }
    }
}

/// The first bytes of an HTTP/2 connection with prior knowledge.
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Whether `buf` starts like an HTTP/2 connection preface (`Some(true)`: it is one;
/// `Some(false)`: it cannot be one; `None`: too short to say).
pub fn h2_preface(buf: &[u8]) -> Option<bool> {
    let n = buf.len().min(H2_PREFACE.len());
    if buf[..n] != H2_PREFACE[..n] {
        Some(false)
    } else if n == H2_PREFACE.len() {
        Some(true)
    } else {
        None
    }
}

/// Parses the request head at the start of `buf`: `Ok(None)` when more bytes are needed,
/// otherwise the head and its length in bytes.
pub fn parse_head(buf: &[u8]) -> Result<Option<(RequestHead, usize)>, HeadError> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut slots);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD_BYTES => {
            return Err(HeadError::TooLarge);
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(httparse::Error::Version) => return Err(HeadError::Malformed("unsupported version")),
        Err(_) => return Err(HeadError::Malformed("malformed request head")),
    };
    if len > MAX_HEAD_BYTES {
        return Err(HeadError::TooLarge);
    }
    let method = Method::from_bytes(req.method.unwrap_or_default().as_bytes())
        .map_err(|_| HeadError::Malformed("invalid method"))?;
    let uri: Uri = req
        .path
        .unwrap_or_default()
        .parse()
        .map_err(|_| HeadError::Malformed("invalid request target"))?;
    let version = match req.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let mut headers = HeaderMap::with_capacity(req.headers.len());
    for h in req.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| HeadError::Malformed("invalid header name"))?;
        let value = HeaderValue::from_bytes(h.value)
            .map_err(|_| HeadError::Malformed("invalid header value"))?;
        headers.append(name, value);
    }
    let body = body_length(&headers, version)?;
    let has_token = |name, token| header_has_token(&headers, name, token);
    let keep_alive = if version == Version::HTTP_11 {
        !has_token(header::CONNECTION, "close")
    } else {
        has_token(header::CONNECTION, "keep-alive") && !has_token(header::CONNECTION, "close")
    };
    let upgrade = method == Method::CONNECT
        || (headers.contains_key(header::UPGRADE) && has_token(header::CONNECTION, "upgrade"));
    let mut expect_continue = false;
    for v in headers.get_all(header::EXPECT) {
        if v.as_bytes().eq_ignore_ascii_case(b"100-continue") {
            expect_continue = version == Version::HTTP_11;
        } else {
            return Err(HeadError::UnsupportedExpectation);
        }
    }
    Ok(Some((
        RequestHead {
            method,
            uri,
            version,
            headers,
            body,
            keep_alive,
            expect_continue,
            upgrade,
        },
        len,
    )))
}

/// Whether any `name` header of `headers` lists `token` (comma-separated, case-insensitive), as
/// `Connection: keep-alive, Upgrade` lists `upgrade`.
pub fn header_has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.as_bytes()
            .split(|b| *b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    })
}

/// The body framing of a request (RFC 9112, section 6.3).
fn body_length(headers: &HeaderMap, version: Version) -> Result<BodyLength, HeadError> {
    let mut codings = headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(<[u8]>::trim_ascii)
        .peekable();
    if codings.peek().is_some() {
        if version == Version::HTTP_10 {
            return Err(HeadError::Malformed(
                "Transfer-Encoding in an HTTP/1.0 request",
            ));
        }
        if headers.contains_key(header::CONTENT_LENGTH) {
            return Err(HeadError::Malformed(
                "both Transfer-Encoding and Content-Length",
            ));
        }
        let all: Vec<&[u8]> = codings.collect();
        let last_chunked = all
            .last()
            .is_some_and(|c| c.eq_ignore_ascii_case(b"chunked"));
        if !last_chunked {
            return Err(HeadError::Malformed(
                "the last transfer coding is not chunked",
            ));
        }
        if all.len() > 1 {
            return Err(HeadError::UnsupportedCoding);
        }
        return Ok(BodyLength::Chunked);
    }
    let mut length: Option<u64> = None;
    for v in headers.get_all(header::CONTENT_LENGTH) {
        for part in v.as_bytes().split(|b| *b == b',') {
            let part = part.trim_ascii();
            if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
                return Err(HeadError::Malformed("invalid Content-Length"));
            }
            let n = part.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
            if length.is_some_and(|l| l != n) {
                return Err(HeadError::Malformed("conflicting Content-Length values"));
            }
            length = Some(n);
        }
    }
    Ok(match length {
        None | Some(0) => BodyLength::Empty,
        Some(n) => BodyLength::Length(n),
    })
}

/// Why a chunked body was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkError {
    /// Not valid chunked framing.
    Malformed,
    /// A chunk size over 2^60, or extensions or trailers over [`MAX_CHUNK_META_BYTES`].
    TooLarge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Reading the hex size; the flag says whether a digit was seen.
    Size(bool),
    /// Skipping a chunk extension, up to CR.
    Extension,
    /// After the size line's CR.
    SizeLf,
    /// Inside chunk data.
    Data,
    /// After chunk data: CR.
    DataCr,
    /// After chunk data: LF.
    DataLf,
    /// At the start of a trailer line (or the final empty line).
    TrailerStart,
    /// Inside a trailer line.
    Trailer,
    /// After a trailer line's CR.
    TrailerLf,
    /// After the final CR.
    EndLf,
    /// The body is complete.
    Done,
}

/// A decoder of `Transfer-Encoding: chunked`, fed with whatever bytes have arrived.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: Chunk,
    size: u64,
    meta: usize,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        ChunkedDecoder {
            state: Chunk::Size(false),
            size: 0,
            meta: 0,
        }
    }
}

impl ChunkedDecoder {
    /// A decoder at the start of a body.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the whole body, with its trailers, has been read.
    pub fn is_done(&self) -> bool {
        self.state == Chunk::Done
    }

    /// Decodes from `input`, passing each piece of body data to `data`. Returns how many bytes
    /// of `input` were used: all of them unless the body ended within `input`, in which case
    /// the rest belongs to the next request.
    pub fn decode(
        &mut self,
        input: &[u8],
        mut data: impl FnMut(&[u8]),
    ) -> Result<usize, ChunkError> {
        let mut i = 0;
        while i < input.len() && self.state != Chunk::Done {
            let b = input[i];
            match self.state {
                Chunk::Size(seen) => {
                    if let Some(d) = (b as char).to_digit(16) {
                        if self.size >> 60 != 0 {
                            return Err(ChunkError::TooLarge);
                        }
                        self.size = self.size << 4 | u64::from(d);
                        self.state = Chunk::Size(true);
                    } else if !seen {
                        return Err(ChunkError::Malformed);
                    } else if b == b';' || b == b' ' || b == b'\t' {
                        self.state = Chunk::Extension;
                    } else if b == b'\r' {
                        self.state = Chunk::SizeLf;
                    } else {
                        return Err(ChunkError::Malformed);
                    }
                    i += 1;
                }
                Chunk::Extension => {
                    if b == b'\r' {
                        self.state = Chunk::SizeLf;
                    } else if b == b'\n' || (b < 0x20 && b != b'\t') || b == 0x7f {
                        return Err(ChunkError::Malformed);
                    } else {
                        self.meta += 1;
                        if self.meta > MAX_CHUNK_META_BYTES {
                            return Err(ChunkError::TooLarge);
                        }
                    }
                    i += 1;
                }
                Chunk::SizeLf => {
                    if b != b'\n' {
                        return Err(ChunkError::Malformed);
                    }
                    self.state = if self.size == 0 {
                        Chunk::TrailerStart
                    } else {
                        Chunk::Data
                    };
                    i += 1;
                }
                Chunk::Data => {
                    let avail = (input.len() - i) as u64;
                    let n = usize::try_from(avail.min(self.size)).unwrap_or(usize::MAX);
                    data(&input[i..i + n]);
                    i += n;
                    self.size -= n as u64;
                    if self.size == 0 {
                        self.state = Chunk::DataCr;
                    }
                }
                Chunk::DataCr => {
                    if b != b'\r' {
                        return Err(ChunkError::Malformed);
                    }
                    self.state = Chunk::DataLf;
                    i += 1;
                }
                Chunk::DataLf => {
                    if b != b'\n' {
                        return Err(ChunkError::Malformed);
                    }
                    self.state = Chunk::Size(false);
                    i += 1;
                }
                Chunk::TrailerStart => {
                    self.state = if b == b'\r' {
                        Chunk::EndLf
                    } else if b == b'\n' {
                        return Err(ChunkError::Malformed);
                    } else {
                        Chunk::Trailer
                    };
                    self.bump_meta()?;
                    i += 1;
                }
                Chunk::Trailer => {
                    if b == b'\r' {
                        self.state = Chunk::TrailerLf;
                    } else if b == b'\n' {
                        return Err(ChunkError::Malformed);
                    }
                    self.bump_meta()?;
                    i += 1;
                }
                Chunk::TrailerLf => {
                    if b != b'\n' {
                        return Err(ChunkError::Malformed);
                    }
                    self.state = Chunk::TrailerStart;
                    i += 1;
                }
                Chunk::EndLf => {
                    if b != b'\n' {
                        return Err(ChunkError::Malformed);
                    }
                    self.state = Chunk::Done;
                    i += 1;
                }
                Chunk::Done => break,
            }
        }
        Ok(i)
    }

    fn bump_meta(&mut self) -> Result<(), ChunkError> {
        self.meta += 1;
        if self.meta > MAX_CHUNK_META_BYTES {
            Err(ChunkError::TooLarge)
        } else {
            Ok(())
        }
    }
}

/// Encodes `data` as a chunked body cut at the given chunk sizes (the rest in one last
/// chunk): the reference the tests and fuzz targets check the decoder against.
pub fn encode_chunked(data: &[u8], cuts: &[usize]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 16 * (cuts.len() + 2));
    let mut rest = data;
    for &c in cuts {
        let n = c.min(rest.len());
        if n == 0 {
            continue;
        }
        out.extend_from_slice(format!("{n:x}\r\n").as_bytes());
        out.extend_from_slice(&rest[..n]);
        out.extend_from_slice(b"\r\n");
        rest = &rest[n..];
    }
    if !rest.is_empty() {
        out.extend_from_slice(format!("{:x}\r\n", rest.len()).as_bytes());
        out.extend_from_slice(rest);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(s: &str) -> Result<Option<(RequestHead, usize)>, HeadError> {
        parse_head(s.as_bytes())
    }

    #[test]
    fn a_long_poll_head() {
        let raw = "POST /cometd/connect HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nContent-Length: 12\r\n\r\n[{\"a\":1}]xyz";
        let (h, n) = head(raw).unwrap().unwrap();
        assert_eq!(&raw[n..], "[{\"a\":1}]xyz");
        assert_eq!(h.method, Method::POST);
        assert_eq!(h.uri.path(), "/cometd/connect");
        assert_eq!(h.body, BodyLength::Length(12));
        assert!(h.keep_alive && !h.upgrade && !h.expect_continue);
        assert_eq!(h.headers["content-type"], "application/json");
    }

    #[test]
    fn partial_heads_wait_for_more() {
        assert!(
            head("POST /cometd HTTP/1.1\r\nHost: a\r\n")
                .unwrap()
                .is_none()
        );
        assert!(head("").unwrap().is_none());
        let big = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(MAX_HEAD_BYTES));
        assert_eq!(head(&big).unwrap_err(), HeadError::TooLarge);
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X{i}: 1\r\n")).collect();
        assert_eq!(
            head(&format!("GET / HTTP/1.1\r\n{many}\r\n")).unwrap_err(),
            HeadError::TooLarge
        );
    }

    #[test]
    fn connection_semantics() {
        let h = |s: &str| head(s).unwrap().unwrap().0;
        assert!(!h("GET / HTTP/1.1\r\nConnection: close\r\n\r\n").keep_alive);
        assert!(!h("GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(h("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
        assert!(
            h("GET / HTTP/1.1\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n")
                .upgrade
        );
        assert!(!h("GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n").upgrade);
        assert!(
            h("POST / HTTP/1.1\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n")
                .expect_continue
        );
        assert_eq!(
            head("POST / HTTP/1.1\r\nExpect: teapot\r\n\r\n").unwrap_err(),
            HeadError::UnsupportedExpectation
        );
    }

    #[test]
    fn body_framing_is_strict() {
        let b = |s: &str| head(s).map(|r| r.unwrap().0.body);
        assert_eq!(b("POST / HTTP/1.1\r\n\r\n"), Ok(BodyLength::Empty));
        assert_eq!(
            b("POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n"),
            Ok(BodyLength::Empty)
        );
        assert_eq!(
            b("POST / HTTP/1.1\r\nContent-Length: 5, 5\r\nContent-Length: 5\r\n\r\n"),
            Ok(BodyLength::Length(5))
        );
        assert_eq!(
            b("POST / HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n"),
            Ok(BodyLength::Chunked)
        );
        for bad in [
            "POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: \r\n\r\n",
        ] {
            assert!(matches!(b(bad), Err(HeadError::Malformed(_))), "{bad}");
        }
        assert_eq!(
            b("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
            Err(HeadError::UnsupportedCoding)
        );
        assert!(matches!(
            head("GET / HTTP/2.0\r\n\r\n"),
            Err(HeadError::Malformed(_))
        ));
    }

    #[test]
    fn h2_preface_detection() {
        assert_eq!(h2_preface(b"PRI * HT"), None);
        assert_eq!(h2_preface(H2_PREFACE), Some(true));
        assert_eq!(h2_preface(b"POST /"), Some(false));
    }

    fn decode_all(input: &[u8], step: usize) -> Result<(Vec<u8>, usize), ChunkError> {
        let mut d = ChunkedDecoder::new();
        let mut out = Vec::new();
        let mut used = 0;
        while used < input.len() && !d.is_done() {
            let end = (used + step.max(1)).min(input.len());
            used += d.decode(&input[used..end], |p| out.extend_from_slice(p))?;
        }
        Ok((out, used))
    }

    #[test]
    fn chunked_bodies_round_trip() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
        let enc = encode_chunked(&data, &[1, 15, 16, 300, 7]);
        for step in [1, 2, 3, 7, 64, 10_000] {
            let (out, used) = decode_all(&enc, step).unwrap();
            assert_eq!(out, data);
            assert_eq!(used, enc.len());
        }
        // What follows the body is left for the next request.
        let mut pipelined = enc.clone();
        pipelined.extend_from_slice(b"GET / HTTP/1.1\r\n");
        let mut d = ChunkedDecoder::new();
        let used = d.decode(&pipelined, |_| {}).unwrap();
        assert!(d.is_done());
        assert_eq!(used, enc.len());
    }

    #[test]
    fn chunk_extensions_and_trailers() {
        let body = b"5;name=value\r\nhello\r\n0\r\nX-Trailer: 1\r\n\r\n";
        let (out, _) = decode_all(body, 1).unwrap();
        assert_eq!(out, b"hello");
        for bad in [
            &b"5\nhello\r\n0\r\n\r\n"[..],
            b"5\r\nhelloX\r\n0\r\n\r\n",
            b"\r\n",
            b"g\r\n",
            b"0\r\n\n",
            b"5;a\nb\r\n",
        ] {
            assert_eq!(
                decode_all(bad, 3).unwrap_err(),
                ChunkError::Malformed,
                "{bad:?}"
            );
        }
        assert_eq!(
            decode_all(b"fffffffffffffffff\r\n", 1).unwrap_err(),
            ChunkError::TooLarge
        );
        let long_ext = format!("1;{}\r\n", "a".repeat(MAX_CHUNK_META_BYTES + 1));
        assert_eq!(
            decode_all(long_ext.as_bytes(), 100).unwrap_err(),
            ChunkError::TooLarge
        );
    }
}
