//! WebSocket frames from clients through `bayeux_transport::wsframe::FrameParser`, the parser
//! the server's sockets run: raw bytes never make it panic, consume bytes it has not been given
//! or hand out text that is not UTF-8; and valid frame sequences (text messages cut into
//! fragments at arbitrary points, control frames between the fragments, any mask, fed in
//! arbitrary pieces) come out as exactly the messages that went in, checked against a plain
//! statement of the rules. With permessage-deflate on, the same holds for raw bytes (RSV1
//! frames inflated, never past the limit) and for sequences whose text messages are compressed.

use arbitrary::Arbitrary;
use bayeux_transport::deflate;
use bayeux_transport::wsframe::{self, FrameParser, Incoming, client_frame_rsv1};
use bytes::BytesMut;

/// The largest message the parser is built to take in these checks.
pub const MAX_MESSAGE: usize = 2048;

/// Feeds `data` to a parser (inflating RSV1 messages or not) in pieces of `step` bytes; returns
/// what it produced and whether it refused the input.
fn feed(data: &[u8], step: usize, inflating: bool) -> (Vec<Incoming>, bool) {
    let mut p = FrameParser::new(MAX_MESSAGE).inflating(inflating);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for piece in data.chunks(step.max(1)) {
        buf.extend_from_slice(piece);
        loop {
            let before = buf.len();
            match p.next(&mut buf) {
                Ok(Some(m)) => {
                    assert!(buf.len() < before, "a frame was produced from no bytes");
                    out.push(m);
                }
                Ok(None) => {
                    // Only whole fragments of an unfinished message are taken in silently.
                    assert!(
                        buf.len() == before || p.in_message(),
                        "bytes consumed without a frame"
                    );
                    break;
                }
                Err(_) => return (out, true),
            }
        }
    }
    (out, false)
}

/// Raw bytes: no panic, text is UTF-8, control payloads are small, and the result does not
/// depend on how the bytes were cut.
pub fn check_raw(data: &[u8]) {
    let step = data.first().map_or(1, |b| usize::from(*b % 16) + 1);
    check_raw_with(data, step, false);
    check_raw_with(data, step, true);
}

fn check_raw_with(data: &[u8], step: usize, inflating: bool) {
    let (a, refused_a) = feed(data, step, inflating);
    let (b, refused_b) = feed(data, data.len().max(1), inflating);
    assert_eq!(a, b, "the cut of the input changed the frames");
    assert_eq!(refused_a, refused_b);
    for m in &a {
        match m {
            Incoming::Text(t) => {
                assert!(std::str::from_utf8(t).is_ok());
                assert!(t.len() <= MAX_MESSAGE);
            }
            Incoming::Ping(p) => assert!(p.len() <= 125),
            _ => {}
        }
    }
}

/// One frame of a valid sequence.
#[derive(Debug, Arbitrary)]
pub enum Piece {
    /// A text message, cut into fragments at these lengths.
    Text {
        /// The message.
        text: String,
        /// Fragment lengths (the rest in a last fragment).
        cuts: Vec<u8>,
        /// Whether a ping goes between the first two fragments.
        ping_inside: bool,
        /// Whether it is compressed (permessage-deflate; a short text is repeated to some 300
        /// bytes first, so that it shrinks); the fragments are then cut from the compressed
        /// bytes.
        compressed: bool,
    },
    /// A ping with a payload.
    Ping(Vec<u8>),
    /// A pong.
    Pong,
}

/// A valid sequence of client frames.
#[derive(Debug, Arbitrary)]
pub struct Sequence {
    /// The frames.
    pub pieces: Vec<Piece>,
    /// The mask of every frame.
    pub mask: [u8; 4],
    /// The size of the pieces the bytes are fed in.
    pub step: u8,
}

/// Valid sequences come out as the messages that went in.
pub fn check_sequence(seq: &Sequence) {
    let mut bytes = Vec::new();
    let mut want = Vec::new();
    let mut inflating = false;
    for p in &seq.pieces {
        match p {
            Piece::Text {
                text,
                cuts,
                ping_inside,
                compressed,
            } => {
                // Repeated to some 300 bytes when compressed, so that it does shrink.
                let text = match text.len() {
                    1..150 if *compressed => text.repeat(300 / text.len() + 1),
                    _ => text.clone(),
                };
                if text.len() > MAX_MESSAGE {
                    continue;
                }
                let z = compressed
                    .then(|| deflate::compress(text.as_bytes()))
                    .flatten();
                inflating |= *compressed;
                let raw = z.as_deref().unwrap_or(text.as_bytes());
                let mut frags = Vec::new();
                let mut at = 0;
                for c in cuts {
                    let n = usize::from(*c).min(raw.len() - at);
                    if n == 0 {
                        break;
                    }
                    frags.push(&raw[at..at + n]);
                    at += n;
                }
                frags.push(&raw[at..]);
                let last = frags.len() - 1;
                for (i, f) in frags.iter().enumerate() {
                    let op = if i == 0 { wsframe::TEXT } else { 0 };
                    let rsv1 = i == 0 && z.is_some();
                    bytes.extend(client_frame_rsv1(i == last, op, rsv1, f, seq.mask));
                    if i == 0 && *ping_inside && last > 0 {
                        bytes.extend(client_frame_rsv1(
                            true,
                            wsframe::PING,
                            false,
                            b"p",
                            seq.mask,
                        ));
                        want.push(Incoming::Ping(bytes::Bytes::from_static(b"p")));
                    }
                }
                want.push(Incoming::Text(bytes::Bytes::copy_from_slice(
                    text.as_bytes(),
                )));
            }
            Piece::Ping(p) => {
                let p = &p[..p.len().min(125)];
                bytes.extend(client_frame_rsv1(true, wsframe::PING, false, p, seq.mask));
                want.push(Incoming::Ping(bytes::Bytes::copy_from_slice(p)));
            }
            Piece::Pong => {
                bytes.extend(client_frame_rsv1(true, wsframe::PONG, false, b"", seq.mask));
                want.push(Incoming::Pong);
            }
        }
    }
    let (got, refused) = feed(&bytes, usize::from(seq.step) + 1, inflating);
    assert!(!refused, "a valid sequence was refused");
    assert_eq!(got, want);
}

/// The fuzz input: the first byte chooses a valid sequence (even) or raw bytes (odd).
pub fn check(data: &[u8]) {
    match data.split_first() {
        Some((b, rest)) if b % 2 == 0 => {
            if let Ok(seq) = Sequence::arbitrary_take_rest(arbitrary::Unstructured::new(rest)) {
                check_sequence(&seq);
            }
        }
        _ => check_raw(data),
    }
}
