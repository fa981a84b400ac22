//! The server side of the WebSocket framing (RFC 6455, section 5), without I/O: the parser of
//! the frames clients send, and the headers of the frames the server writes. Public so that the
//! fuzz targets and property tests drive exactly what the server runs.
//!
//! Why not a general WebSocket crate: a Bayeux server writes the same serialized message to
//! thousands of sockets, and an idle socket should cost nothing but its session. Here a frame is
//! written as a small header followed by the shared message bytes (no copy into a per-socket
//! output buffer), and a socket keeps no read buffer between messages.
//!
//! What it accepts is what RFC 6455 requires of a server: every client frame masked, no
//! reserved bits, control frames unfragmented and at most 125 bytes, continuation frames only
//! inside a fragmented message, text that is valid UTF-8 once complete, and messages no larger
//! than the configured limit. With permessage-deflate negotiated ([`FrameParser::inflating`],
//! RFC 7692), RSV1 on the first frame of a data message marks it compressed: the message is
//! inflated (no context takeover, bounded by the same limit) before the UTF-8 check; RSV1
//! anywhere else is still refused.

use bytes::{Buf, Bytes, BytesMut};

use crate::deflate::{self, InflateError};

/// A message or control frame received from a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// A complete text message (reassembled if it was fragmented), valid UTF-8.
    Text(Bytes),
    /// A complete binary message (which Bayeux does not use).
    Binary,
    /// A ping with its payload, to be answered with a pong carrying it.
    Ping(Bytes),
    /// A pong.
    Pong,
    /// A close frame with its status code, if it had one.
    Close(Option<u16>),
}

/// Why the client's frames were refused; the socket is closed with [`FrameError::close_code`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// A framing rule was broken.
    Protocol(&'static str),
    /// A message over the size limit.
    TooLarge,
    /// A text message that is not UTF-8.
    InvalidUtf8,
    /// A compressed message that is not valid deflate data.
    BadCompression,
}

impl FrameError {
    /// The close code to answer with (1002, 1009 or 1007).
    pub fn close_code(&self) -> u16 {
        match self {
            FrameError::Protocol(_) => 1002,
            FrameError::TooLarge => 1009,
            FrameError::InvalidUtf8 | FrameError::BadCompression => 1007,
        }
    }

    /// A short reason for the close frame.
    pub fn reason(&self) -> &'static str {
        match self {
            FrameError::Protocol(why) => why,
            FrameError::TooLarge => "message too large",
            FrameError::InvalidUtf8 => "text is not UTF-8",
            FrameError::BadCompression => "invalid compressed data",
        }
    }
}

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// Reads client frames from a buffer of received bytes.
#[derive(Debug)]
pub struct FrameParser {
    max_message: usize,
    /// Whether permessage-deflate was negotiated.
    inflating: bool,
    /// The data frames of a fragmented message so far, and its kind.
    partial: Option<(BytesMut, Kind)>,
}

/// What a data message is: text or not, compressed or not.
#[derive(Debug, Clone, Copy)]
struct Kind {
    text: bool,
    compressed: bool,
}

impl FrameParser {
    /// A parser that refuses messages over `max_message` bytes.
    pub fn new(max_message: usize) -> Self {
        FrameParser {
            max_message,
            inflating: false,
            partial: None,
        }
    }

    /// The parser of a socket that negotiated permessage-deflate (`on`): data messages whose
    /// first frame has RSV1 set are inflated, to at most the parser's limit.
    pub fn inflating(mut self, on: bool) -> Self {
        self.inflating = on;
        self
    }

    /// Whether a fragmented message has begun and not ended.
    pub fn in_message(&self) -> bool {
        self.partial.is_some()
    }

    /// Takes the next message or control frame off the front of `buf`; `Ok(None)` when `buf`
    /// does not hold a whole frame yet (nothing is consumed then).
    pub fn next(&mut self, buf: &mut BytesMut) -> Result<Option<Incoming>, FrameError> {
        loop {
            let Some((fin, opcode, rsv1, mask, offset, len)) = self.header(buf)? else {
                return Ok(None);
            };
            if (buf.len() - offset) < len {
                return Ok(None);
            }
            buf.advance(offset);
            let mut payload = buf.split_to(len);
            unmask(&mut payload, mask);
            match opcode {
                OP_CLOSE => {
                    if payload.len() == 1 {
                        return Err(FrameError::Protocol("close frame of one byte"));
                    }
                    let code =
                        (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
                    if std::str::from_utf8(payload.get(2..).unwrap_or_default()).is_err() {
                        return Err(FrameError::InvalidUtf8);
                    }
                    return Ok(Some(Incoming::Close(code)));
                }
                OP_PING => return Ok(Some(Incoming::Ping(payload.freeze()))),
                OP_PONG => return Ok(Some(Incoming::Pong)),
                _ => {}
            }
            if opcode == OP_CONTINUATION {
                let Some((parts, _)) = self.partial.as_mut() else {
                    return Err(FrameError::Protocol("continuation outside a message"));
                };
                parts.extend_from_slice(&payload);
                if !fin {
                    continue;
                }
                let Some((parts, kind)) = self.partial.take() else {
                    continue;
                };
                return self.finish(parts, kind);
            }
            if self.partial.is_some() {
                return Err(FrameError::Protocol("message inside a message"));
            }
            let kind = Kind {
                text: opcode == OP_TEXT,
                compressed: rsv1,
            };
            if fin {
                return self.finish(payload, kind);
            }
            self.partial = Some((payload, kind));
        }
    }

    /// Decodes the header at the front of `buf`: FIN, opcode, RSV1, mask key, header length and
    /// payload length; `None` if incomplete.
    #[allow(clippy::type_complexity)]
    fn header(
        &self,
        buf: &[u8],
    ) -> Result<Option<(bool, u8, bool, [u8; 4], usize, usize)>, FrameError> {
        if buf.len() < 2 {
            return Ok(None);
        }
        let (b0, b1) = (buf[0], buf[1]);
        let fin = b0 & 0x80 != 0;
        let rsv1 = b0 & RSV1 != 0;
        if b0 & 0x30 != 0 || (rsv1 && !self.inflating) {
            return Err(FrameError::Protocol("reserved bits set"));
        }
        let opcode = b0 & 0x0F;
        let control = opcode & 0x8 != 0;
        if !matches!(
            opcode,
            OP_CONTINUATION | OP_TEXT | OP_BINARY | OP_CLOSE | OP_PING | OP_PONG
        ) {
            return Err(FrameError::Protocol("unknown opcode"));
        }
        // RFC 7692: only the first frame of a data message says it is compressed.
        if rsv1 && (control || opcode == OP_CONTINUATION) {
            return Err(FrameError::Protocol(
                "RSV1 on a control or continuation frame",
            ));
        }
        if b1 & 0x80 == 0 {
            return Err(FrameError::Protocol("unmasked client frame"));
        }
        let (len, at) = match b1 & 0x7F {
            126 => {
                if buf.len() < 4 {
                    return Ok(None);
                }
                (u64::from(u16::from_be_bytes([buf[2], buf[3]])), 4)
            }
            127 => {
                if buf.len() < 10 {
                    return Ok(None);
                }
                let mut b = [0u8; 8];
                b.copy_from_slice(&buf[2..10]);
                (u64::from_be_bytes(b), 10)
            }
            n => (u64::from(n), 2),
        };
        if control && (!fin || len > 125) {
            return Err(FrameError::Protocol("fragmented or long control frame"));
        }
        let so_far = self.partial.as_ref().map_or(0, |(p, _)| p.len()) as u64;
        if !control && so_far.saturating_add(len) > self.max_message as u64 {
            return Err(FrameError::TooLarge);
        }
        if buf.len() < at + 4 {
            return Ok(None);
        }
        let mask = [buf[at], buf[at + 1], buf[at + 2], buf[at + 3]];
        // Bounded by `max_message` (data) or 125 (control) above.
        Ok(Some((fin, opcode, rsv1, mask, at + 4, len as usize)))
    }

    /// A complete data message: inflated if compressed, checked if text.
    fn finish(&self, payload: BytesMut, kind: Kind) -> Result<Option<Incoming>, FrameError> {
        if !kind.text {
            // Not inflated: a Bayeux socket closes on binary messages anyway.
            return Ok(Some(Incoming::Binary));
        }
        let payload = if kind.compressed {
            match deflate::decompress(&payload, self.max_message) {
                Ok(p) => Bytes::from(p),
                Err(InflateError::Invalid) => return Err(FrameError::BadCompression),
                Err(InflateError::TooLarge) => return Err(FrameError::TooLarge),
            }
        } else {
            payload.freeze()
        };
        if std::str::from_utf8(&payload).is_err() {
            return Err(FrameError::InvalidUtf8);
        }
        Ok(Some(Incoming::Text(payload)))
    }
}

fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    let mut chunks = payload.chunks_exact_mut(4);
    let m = u32::from_ne_bytes(mask);
    for c in &mut chunks {
        let v = u32::from_ne_bytes([c[0], c[1], c[2], c[3]]) ^ m;
        c.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i];
    }
}

/// The header of an unmasked server frame: up to 10 bytes, and how many are used.
pub fn header(opcode: u8, len: usize) -> ([u8; 10], usize) {
    let mut h = [0u8; 10];
    h[0] = 0x80 | (opcode & 0x0F);
    if len < 126 {
        h[1] = len as u8;
        (h, 2)
    } else if let Ok(n) = u16::try_from(len) {
        h[1] = 126;
        h[2..4].copy_from_slice(&n.to_be_bytes());
        (h, 4)
    } else {
        h[1] = 127;
        h[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        (h, 10)
    }
}

/// RSV1 in the first byte of a frame: a compressed message (permessage-deflate).
pub const RSV1: u8 = 0x40;

/// The opcode of a text frame.
pub const TEXT: u8 = OP_TEXT;
/// The opcode of a close frame.
pub const CLOSE: u8 = OP_CLOSE;
/// The opcode of a ping frame.
pub const PING: u8 = OP_PING;
/// The opcode of a pong frame.
pub const PONG: u8 = OP_PONG;

/// The payload of a close frame: the code and a reason (cut to fit a control frame).
pub fn close_payload(code: u16, reason: &str) -> Bytes {
    let mut r = reason.as_bytes();
    if r.len() > 123 {
        r = &r[..123];
        while std::str::from_utf8(r).is_err() {
            r = &r[..r.len() - 1];
        }
    }
    let mut p = Vec::with_capacity(2 + r.len());
    p.extend_from_slice(&code.to_be_bytes());
    p.extend_from_slice(r);
    Bytes::from(p)
}

/// A masked client frame, as a client writes it: what the tests and fuzz targets feed the
/// parser with.
pub fn client_frame(fin: bool, opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    client_frame_rsv1(fin, opcode, false, payload, mask)
}

/// A masked client frame with RSV1 set or not (the first frame of a compressed message has it).
pub fn client_frame_rsv1(
    fin: bool,
    opcode: u8,
    rsv1: bool,
    payload: &[u8],
    mask: [u8; 4],
) -> Vec<u8> {
    let (mut h, n) = header(opcode, payload.len());
    if !fin {
        h[0] &= 0x7F;
    }
    if rsv1 {
        h[0] |= RSV1;
    }
    h[1] |= 0x80;
    let mut out = h[..n].to_vec();
    out.extend_from_slice(&mask);
    let mut body = payload.to_vec();
    unmask(&mut body, mask);
    out.extend_from_slice(&body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: [u8; 4] = [0x12, 0x34, 0x56, 0x78];

    fn parse_all(bytes: &[u8], max: usize, step: usize) -> Result<Vec<Incoming>, FrameError> {
        parse_with(FrameParser::new(max), bytes, step)
    }

    /// Feeds `bytes` to `p` `step` bytes at a time; every byte must be taken.
    fn parse_with(
        mut p: FrameParser,
        bytes: &[u8],
        step: usize,
    ) -> Result<Vec<Incoming>, FrameError> {
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for piece in bytes.chunks(step.max(1)) {
            buf.extend_from_slice(piece);
            while let Some(m) = p.next(&mut buf)? {
                out.push(m);
            }
        }
        assert!(buf.is_empty(), "bytes left over");
        Ok(out)
    }

    #[test]
    fn text_in_one_frame_and_in_fragments_with_control_frames_between() {
        let mut bytes = client_frame(true, TEXT, b"[{\"a\":1}]", M);
        bytes.extend(client_frame(false, TEXT, b"[{\"b\"", M));
        bytes.extend(client_frame(true, PING, b"hi", M));
        bytes.extend(client_frame(false, OP_CONTINUATION, b":", M));
        bytes.extend(client_frame(true, OP_CONTINUATION, b"2}]", M));
        bytes.extend(client_frame(true, OP_BINARY, b"\x00", M));
        bytes.extend(client_frame(true, CLOSE, &close_payload(1000, "bye"), M));
        for step in [1, 3, 7, 1000] {
            let got = parse_all(&bytes, 1 << 20, step).unwrap();
            assert_eq!(
                got,
                vec![
                    Incoming::Text(Bytes::from_static(b"[{\"a\":1}]")),
                    Incoming::Ping(Bytes::from_static(b"hi")),
                    Incoming::Text(Bytes::from_static(b"[{\"b\":2}]")),
                    Incoming::Binary,
                    Incoming::Close(Some(1000)),
                ]
            );
        }
    }

    #[test]
    fn lengths_of_every_width() {
        for n in [0, 125, 126, 65_535, 65_536, 100_000] {
            let payload = vec![b'x'; n];
            let got = parse_all(&client_frame(true, TEXT, &payload, M), 1 << 20, 4096).unwrap();
            assert_eq!(got, vec![Incoming::Text(Bytes::from(payload))]);
            let (h, used) = header(TEXT, n);
            assert_eq!(
                used,
                if n < 126 {
                    2
                } else if n < 65_536 {
                    4
                } else {
                    10
                }
            );
            assert_eq!(h[0], 0x81);
        }
    }

    #[test]
    fn what_a_server_must_refuse() {
        let err = |bytes: Vec<u8>| parse_all(&bytes, 1000, 5).unwrap_err();
        let mut unmasked = client_frame(true, TEXT, b"x", M);
        unmasked[1] &= 0x7F;
        assert_eq!(err(unmasked), FrameError::Protocol("unmasked client frame"));
        let mut rsv = client_frame(true, TEXT, b"x", M);
        rsv[0] |= 0x40;
        assert_eq!(err(rsv), FrameError::Protocol("reserved bits set"));
        assert_eq!(
            err(client_frame(true, 0x3, b"", M)),
            FrameError::Protocol("unknown opcode")
        );
        assert!(matches!(
            err(client_frame(false, PING, b"", M)),
            FrameError::Protocol(_)
        ));
        assert!(matches!(
            err(client_frame(true, PING, &[0; 126], M)),
            FrameError::Protocol(_)
        ));
        assert!(matches!(
            err(client_frame(true, OP_CONTINUATION, b"x", M)),
            FrameError::Protocol(_)
        ));
        let mut nested = client_frame(false, TEXT, b"x", M);
        nested.extend(client_frame(true, TEXT, b"y", M));
        assert!(matches!(err(nested), FrameError::Protocol(_)));
        assert_eq!(
            err(client_frame(true, TEXT, &[b'x'; 1001], M)),
            FrameError::TooLarge
        );
        // The limit is on the whole message, across fragments.
        let mut frags = client_frame(false, TEXT, &[b'x'; 600], M);
        frags.extend(client_frame(true, OP_CONTINUATION, &[b'x'; 600], M));
        assert_eq!(err(frags), FrameError::TooLarge);
        assert_eq!(
            err(client_frame(true, TEXT, b"\xff", M)),
            FrameError::InvalidUtf8
        );
        assert_eq!(
            err(client_frame(true, CLOSE, b"\x03", M)),
            FrameError::Protocol("close frame of one byte")
        );
        // A huge declared length is refused from the header alone.
        let mut huge = vec![0x81, 0xFF];
        huge.extend_from_slice(&u64::MAX.to_be_bytes());
        let mut p = FrameParser::new(1000);
        assert_eq!(
            p.next(&mut BytesMut::from(&huge[..])).unwrap_err(),
            FrameError::TooLarge
        );
    }

    fn parse_inflating(bytes: &[u8], max: usize, step: usize) -> Result<Vec<Incoming>, FrameError> {
        parse_with(FrameParser::new(max).inflating(true), bytes, step)
    }

    #[test]
    fn compressed_messages_with_rsv1_on_the_first_frame_only() {
        let text = format!(
            "[{}]",
            vec!["{\"channel\":\"/a/b\",\"data\":42}"; 20].join(",")
        );
        let z = deflate::compress(text.as_bytes()).unwrap();
        let want = Incoming::Text(Bytes::from(text.clone()));
        // Whole, fragmented with a ping between, and an uncompressed message after.
        let mut bytes = client_frame_rsv1(true, TEXT, true, &z, M);
        let (a, b) = z.split_at(z.len() / 3);
        bytes.extend(client_frame_rsv1(false, TEXT, true, a, M));
        bytes.extend(client_frame(true, PING, b"", M));
        bytes.extend(client_frame(false, OP_CONTINUATION, &b[..1], M));
        bytes.extend(client_frame(true, OP_CONTINUATION, &b[1..], M));
        bytes.extend(client_frame(true, TEXT, b"[]", M));
        for step in [1, 5, 1000] {
            assert_eq!(
                parse_inflating(&bytes, 1 << 16, step).unwrap(),
                vec![
                    want.clone(),
                    Incoming::Ping(Bytes::new()),
                    want.clone(),
                    Incoming::Text(Bytes::from_static(b"[]"))
                ]
            );
        }
        let err = |bytes: Vec<u8>, max: usize| parse_inflating(&bytes, max, 7).unwrap_err();
        // RSV1 on a continuation or a control frame; RSV2 and RSV3 in any case.
        let mut cont = client_frame_rsv1(false, TEXT, true, a, M);
        cont.extend(client_frame_rsv1(true, OP_CONTINUATION, true, b, M));
        assert_eq!(
            err(cont, 1 << 16),
            FrameError::Protocol("RSV1 on a control or continuation frame")
        );
        assert_eq!(
            err(client_frame_rsv1(true, PING, true, b"", M), 1 << 16).close_code(),
            1002
        );
        let mut rsv2 = client_frame(true, TEXT, b"[]", M);
        rsv2[0] |= 0x20;
        assert_eq!(
            err(rsv2, 1 << 16),
            FrameError::Protocol("reserved bits set")
        );
        // Not deflate data; inflating past the limit; inflating to something not UTF-8.
        assert_eq!(
            err(
                client_frame_rsv1(true, TEXT, true, &[0xff, 0xff], M),
                1 << 16
            )
            .close_code(),
            1007
        );
        assert_eq!(
            err(client_frame_rsv1(true, TEXT, true, &z, M), text.len() - 1),
            FrameError::TooLarge
        );
        let mut latin1 = vec![0xe9u8; 300];
        latin1.extend_from_slice(&[b'x'; 300]);
        let zl = deflate::compress(&latin1).unwrap();
        assert_eq!(
            err(client_frame_rsv1(true, TEXT, true, &zl, M), 1 << 16),
            FrameError::InvalidUtf8
        );
        // Without the extension, RSV1 is refused as before.
        assert_eq!(
            parse_all(&client_frame_rsv1(true, TEXT, true, &z, M), 1 << 16, 3).unwrap_err(),
            FrameError::Protocol("reserved bits set")
        );
    }

    #[test]
    fn close_payloads_fit_a_control_frame() {
        let p = close_payload(1001, &"é".repeat(100));
        assert!(p.len() <= 125);
        assert!(std::str::from_utf8(&p[2..]).is_ok());
        assert_eq!(&p[..2], &1001u16.to_be_bytes());
    }
}
