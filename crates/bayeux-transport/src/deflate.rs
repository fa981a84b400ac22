//! permessage-deflate (RFC 7692) for the WebSocket transport, without I/O: the negotiation of
//! the `Sec-WebSocket-Extensions` header, and the compression and decompression of one message.
//! Public so that the fuzz targets and tests drive exactly what the server runs.
//!
//! The server always answers `server_no_context_takeover; client_no_context_takeover`: every
//! message, both ways, is compressed on its own, with a fresh deflate state. That costs some
//! compression ratio, and buys two things a Bayeux server needs:
//!
//! - a message serialized once for all its subscribers is also compressed once: its compressed
//!   bytes are the same for every socket (they are cached with the message, see
//!   [`bayeux_core::Framed::compressed_with`]);
//! - a socket keeps no compression state between messages: an idle socket costs what it did
//!   without the extension. The deflate and inflate states (some 300 and 40 KiB) are one per
//!   thread, reset for each message.
//!
//! Messages smaller than [`MIN_COMPRESS`] bytes, and those that would not shrink, are sent
//! uncompressed (RSV1 clear), as RFC 7692 allows for each message.

use std::cell::RefCell;

use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// The extension's name in `Sec-WebSocket-Extensions`.
pub const NAME: &str = "permessage-deflate";

/// Messages (frame payloads) shorter than this are sent uncompressed: a short reply (a connect
/// answer is some 80 bytes) would shrink by a few bytes at best, for the cost of a deflate run.
pub const MIN_COMPRESS: usize = 128;

/// The level of the server's deflate runs (1 to 9): messages are compressed once for all
/// their subscribers, but replies and batches of several messages once per socket, so a fast
/// level.
const LEVEL: u32 = 1;

/// The trailer a sync flush ends with, which RFC 7692 has the sender remove and the receiver
/// put back.
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// The answer to an accepted offer (no window parameter in it).
const ANSWER: &str = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";
/// The answer to an accepted offer that set `server_max_window_bits=15`: the answer must
/// repeat it (RFC 7692, section 7.1.2.1).
const ANSWER_WINDOW_15: &str = "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=15";

/// Chooses the first `permessage-deflate` offer of these `Sec-WebSocket-Extensions` header
/// values that the server can honour, and returns the extension header to answer with; `None`
/// when there is none (then the socket runs without compression).
///
/// An offer is declined (and the next one considered) when it has a parameter that is unknown,
/// repeated, or has an invalid value, and when it asks for a server window smaller than 2^15
/// bytes (`server_max_window_bits` below 15: the deflate backend always uses a 32 KiB window).
/// `client_max_window_bits` is accepted and not answered: the server inflates any window up to
/// 2^15 bytes.
pub fn negotiate<'a, I>(header_values: I) -> Option<&'static str>
where
    I: IntoIterator<Item = &'a [u8]>,
{
    for value in header_values {
        // A header that is not text is not an offer we can read.
        let Ok(value) = std::str::from_utf8(value) else {
            continue;
        };
        for offer in split_unquoted(value, ',') {
            if let Some(answer) = judge_offer(offer) {
                return Some(answer);
            }
        }
    }
    None
}

/// The answer to one offer (`name; param; param=value`), if it is a `permessage-deflate` we
/// can honour.
fn judge_offer(offer: &str) -> Option<&'static str> {
    let mut parts = split_unquoted(offer, ';').into_iter();
    let name = parts.next()?.trim();
    if !name.eq_ignore_ascii_case(NAME) {
        return None;
    }
    let mut seen = [false; 4];
    let mut window_15 = false;
    for param in parts {
        let (key, value) = match param.split_once('=') {
            Some((k, v)) => (k.trim(), Some(unquote(v.trim())?)),
            None => (param.trim(), None),
        };
        let slot = match key.to_ascii_lowercase().as_str() {
            "server_no_context_takeover" if value.is_none() => 0,
            "client_no_context_takeover" if value.is_none() => 1,
            "server_max_window_bits" => {
                // Only 15 can be honoured; smaller windows decline the offer.
                if window_bits(value.as_deref()?)? != 15 {
                    return None;
                }
                window_15 = true;
                2
            }
            "client_max_window_bits" => {
                if let Some(v) = value.as_deref() {
                    window_bits(v)?;
                }
                3
            }
            _ => return None,
        };
        if std::mem::replace(&mut seen[slot], true) {
            return None;
        }
    }
    Some(if window_15 { ANSWER_WINDOW_15 } else { ANSWER })
}

/// A window size parameter: 8 to 15, in decimal without a leading zero.
fn window_bits(v: &str) -> Option<u8> {
    if v.is_empty() || v.len() > 2 || v.starts_with('0') || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u8 = v.parse().ok()?;
    (8..=15).contains(&n).then_some(n)
}

/// A parameter value: a token, or a quoted string (with `\` escapes) holding one.
fn unquote(v: &str) -> Option<String> {
    let inner = if let Some(rest) = v.strip_prefix('"') {
        let body = rest.strip_suffix('"')?;
        let mut out = String::with_capacity(body.len());
        let mut chars = body.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => out.push(chars.next()?),
                '"' => return None,
                c => out.push(c),
            }
        }
        out
    } else {
        v.to_owned()
    };
    let token = !inner.is_empty()
        && inner
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b));
    token.then_some(inner)
}

/// Splits `s` at `sep` outside quoted strings.
fn split_unquoted(s: &str, sep: char) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
        } else if quoted && c == '\\' {
            escaped = true;
        } else if c == '"' {
            quoted = !quoted;
        } else if c == sep && !quoted {
            out.push(&s[start..i]);
            start = i + 1;
        }
    }
    out.push(&s[start..]);
    out
}

thread_local! {
    /// This thread's deflate state, reset for every message (no context takeover).
    static DEFLATE: RefCell<Option<Compress>> = const { RefCell::new(None) };
    /// This thread's inflate state, reset for every message.
    static INFLATE: RefCell<Option<Decompress>> = const { RefCell::new(None) };
}

/// The payload of a compressed frame holding `message`: raw deflate, flushed, without the
/// final `00 00 ff ff` (RFC 7692, section 7.2.1). `None` when `message` is shorter than
/// [`MIN_COMPRESS`] or would not shrink: it is then sent as it is.
pub fn compress(message: &[u8]) -> Option<Bytes> {
    if message.len() < MIN_COMPRESS {
        return None;
    }
    DEFLATE.with(|cell| {
        let mut cell = cell.borrow_mut();
        let c = cell.get_or_insert_with(|| Compress::new(Compression::new(LEVEL), false));
        c.reset();
        let mut out = Vec::with_capacity(message.len() / 2 + 64);
        let mut taken = 0;
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(out.capacity().max(256));
            }
            let before = c.total_in();
            c.compress_vec(&message[taken..], &mut out, FlushCompress::Sync)
                .ok()?;
            taken += (c.total_in() - before) as usize;
            // The flush is complete once all is taken and the output did not fill up.
            if taken == message.len() && out.len() < out.capacity() {
                break;
            }
        }
        let body = out.strip_suffix(&TAIL)?.len();
        if body + 8 >= message.len() {
            return None;
        }
        out.truncate(body);
        Some(Bytes::from(out))
    })
}

/// Why a compressed message could not be inflated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InflateError {
    /// Not valid deflate data (close code 1007).
    Invalid,
    /// It inflates to more than the limit (close code 1009).
    TooLarge,
}

/// Inflates the payload of a compressed message (its frames' payloads joined) with a fresh
/// state, as `client_no_context_takeover` has the client compress it; at most `max` bytes
/// come out, and no more than about that much memory is used whatever the input claims.
pub fn decompress(payload: &[u8], max: usize) -> Result<Vec<u8>, InflateError> {
    INFLATE.with(|cell| {
        let mut cell = cell.borrow_mut();
        let d = cell.get_or_insert_with(|| Decompress::new(false));
        d.reset(false);
        let limit = max.saturating_add(1);
        let mut out: Vec<u8> =
            Vec::with_capacity(payload.len().saturating_mul(3).max(64).min(limit));
        for input in [payload, &TAIL[..]] {
            let mut taken = 0;
            loop {
                if out.len() == out.capacity() {
                    if out.len() >= limit {
                        return Err(InflateError::TooLarge);
                    }
                    let more = out.capacity().min(limit - out.len()).max(1);
                    out.reserve_exact(more);
                }
                let (in_before, out_before) = (d.total_in(), out.len());
                let status = d
                    .decompress_vec(&input[taken..], &mut out, FlushDecompress::None)
                    .map_err(|_| InflateError::Invalid)?;
                taken += (d.total_in() - in_before) as usize;
                if out.len() > max {
                    return Err(InflateError::TooLarge);
                }
                if status == Status::StreamEnd {
                    // A final block ends the message; what follows is only the trailer.
                    return Ok(out);
                }
                let stuck = d.total_in() == in_before && out.len() == out_before;
                if taken == input.len() && out.len() < out.capacity() {
                    break;
                }
                if stuck && out.len() < out.capacity() {
                    return Err(InflateError::Invalid);
                }
            }
        }
        Ok(out)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(values: &[&str]) -> Option<&'static str> {
        negotiate(values.iter().map(|v| v.as_bytes()))
    }

    #[test]
    fn negotiation_table() {
        let table: &[(&[&str], Option<&str>)] = &[
            (&["permessage-deflate"], Some(ANSWER)),
            // Chromium and Node's `ws`.
            (
                &["permessage-deflate; client_max_window_bits"],
                Some(ANSWER),
            ),
            (
                &["Permessage-Deflate ; Client_Max_Window_Bits"],
                Some(ANSWER),
            ),
            (
                &["permessage-deflate; client_max_window_bits=10; server_no_context_takeover"],
                Some(ANSWER),
            ),
            (
                &["permessage-deflate; client_no_context_takeover; server_no_context_takeover"],
                Some(ANSWER),
            ),
            (
                &["permessage-deflate; server_max_window_bits=15"],
                Some(ANSWER_WINDOW_15),
            ),
            (
                &["permessage-deflate; server_max_window_bits=\"15\""],
                Some(ANSWER_WINDOW_15),
            ),
            // A window we cannot honour, then a fallback offer we can.
            (
                &["permessage-deflate; server_max_window_bits=10, permessage-deflate"],
                Some(ANSWER),
            ),
            (&["permessage-deflate; server_max_window_bits=10"], None),
            // Several headers; other extensions first.
            (
                &[
                    "x-webkit-deflate-frame",
                    "foo; a=\"b,c\", permessage-deflate",
                ],
                Some(ANSWER),
            ),
            // Malformed or repeated parameters decline the offer.
            (&["permessage-deflate; server_max_window_bits"], None),
            (&["permessage-deflate; server_max_window_bits=015"], None),
            (&["permessage-deflate; server_max_window_bits=16"], None),
            (&["permessage-deflate; client_max_window_bits=7"], None),
            (
                &["permessage-deflate; client_max_window_bits=\"1 5\""],
                None,
            ),
            (&["permessage-deflate; client_max_window_bits=\"15"], None),
            (&["permessage-deflate; server_no_context_takeover=1"], None),
            (
                &["permessage-deflate; server_no_context_takeover; server_no_context_takeover"],
                None,
            ),
            (
                &["permessage-deflate; client_max_window_bits; client_max_window_bits=15"],
                None,
            ),
            (&["permessage-deflate; unknown_param"], None),
            (&["permessage-deflater"], None),
            (&["deflate-frame"], None),
            (&[""], None),
            (&[], None),
        ];
        for (values, want) in table {
            assert_eq!(offer(values), *want, "{values:?}");
        }
        assert_eq!(
            negotiate([&b"\xff\xfe"[..], b"permessage-deflate"]),
            Some(ANSWER)
        );
    }

    fn message(n: usize) -> Vec<u8> {
        let mut m = b"[{\"channel\":\"/stock/ACME\",\"data\":{\"prices\":[".to_vec();
        let mut i = 0u64;
        while m.len() < n {
            m.extend_from_slice(format!("{},", 1000 + (i * 7919) % 113).as_bytes());
            i += 1;
        }
        m.extend_from_slice(b"0]}}]");
        m
    }

    #[test]
    fn round_trips_and_sizes() {
        for n in [1000, 70_000, 300_000] {
            let m = message(n);
            let z = compress(&m).expect("compressible");
            assert!(z.len() < m.len() / 2, "{n}: {} of {}", z.len(), m.len());
            assert!(!z.ends_with(&TAIL));
            assert_eq!(decompress(&z, m.len()).unwrap(), m);
            assert_eq!(decompress(&z, m.len() - 1), Err(InflateError::TooLarge));
            // The same bytes every time: no context carried from one message to the next.
            assert_eq!(compress(&m).unwrap(), z);
        }
        assert_eq!(compress(&message(100)[..100]), None);
        // Random bytes do not shrink: sent as they are.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let noise: Vec<u8> = (0..4000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect();
        assert_eq!(compress(&noise), None);
    }

    #[test]
    fn what_inflating_refuses() {
        // A block type that does not exist (BTYPE = 11).
        assert_eq!(decompress(&[0xff, 0xff], 1000), Err(InflateError::Invalid));
        // A bomb: a megabyte of one byte, a few hundred compressed bytes.
        let zeros = vec![b'0'; 1 << 20];
        let z = compress(&zeros).unwrap();
        assert!(z.len() < 10_000, "{}", z.len());
        assert_eq!(decompress(&z, 64 * 1024), Err(InflateError::TooLarge));
        // An empty message: the client's sync flush alone.
        assert_eq!(decompress(&[0x00], 10).unwrap(), b"");
        // A message ending with a final block (BFINAL = 1), trailer or not.
        let mut c = Compress::new(Compression::default(), false);
        let mut fin = Vec::with_capacity(256);
        c.compress_vec(b"hello hello hello", &mut fin, FlushCompress::Finish)
            .unwrap();
        assert_eq!(decompress(&fin, 100).unwrap(), b"hello hello hello");
    }
}
