//! Reading what a server sends without parsing it: deliveries are found by scanning bytes for
//! the benchmark payload (`{"seq":S,"ts":T,"p":P,...}`), replies by a few fixed substrings. No
//! JSON tree is ever built on the delivery path, so the generator's cost per delivery stays a
//! few nanoseconds plus a memory scan.
//!
//! This relies on servers serializing JSON compactly and keeping the payload's key order, which
//! every server measured here does (serde_json, and `JSON.stringify` in Node).

use memchr::memmem::Finder;
use std::sync::LazyLock;

/// One delivery of a benchmark message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    /// The publisher's index.
    pub publisher: u32,
    /// The publisher's sequence number on that channel.
    pub seq: u64,
    /// Send timestamp, microseconds on [`crate::clock`].
    pub ts: u64,
}

/// What else a frame or response body contained.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FrameInfo {
    /// Deliveries found.
    pub deliveries: usize,
    /// `/meta/connect` replies (successful or not).
    pub connect_replies: usize,
    /// `"successful":true` occurrences (every reply kind).
    pub successes: usize,
    /// `"successful":false` occurrences: the caller looks closer (rare path).
    pub failures: usize,
}

static SEQ: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"seq\":"));
static CONNECT: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"/meta/connect\""));
static OK: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"successful\":true"));
static FAIL: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"successful\":false"));

/// Parses the unsigned integer at the start of `b` (after optional spaces); returns the value
/// and the bytes consumed.
fn uint(b: &[u8]) -> Option<(u64, usize)> {
    let mut i = 0;
    while i < b.len() && b[i] == b' ' {
        i += 1;
    }
    let start = i;
    let mut v: u64 = 0;
    while i < b.len() && b[i].is_ascii_digit() {
        v = v.wrapping_mul(10).wrapping_add(u64::from(b[i] - b'0'));
        i += 1;
    }
    (i > start).then_some((v, i))
}

/// Finds `key` (e.g. `"ts":`) within the next few bytes of `b` and parses its number.
fn field(b: &[u8], key: &[u8]) -> Option<(u64, usize)> {
    let window = &b[..b.len().min(48)];
    let at = memchr::memmem::find(window, key)?;
    let (v, n) = uint(&b[at + key.len()..])?;
    Some((v, at + key.len() + n))
}

/// Scans `buf` for benchmark deliveries (calling `on_delivery` for each, in order) and counts
/// replies.
pub fn scan(buf: &[u8], mut on_delivery: impl FnMut(Seen)) -> FrameInfo {
    let mut info = FrameInfo::default();
    let mut pos = 0;
    while let Some(at) = SEQ.find(&buf[pos..]) {
        let p = pos + at + 6;
        let Some((seq, n)) = uint(&buf[p..]) else {
            pos = p;
            continue;
        };
        let rest = &buf[p + n..];
        if let Some((ts, m)) = field(rest, b"\"ts\":")
            && let Some((publisher, k)) = field(&rest[m..], b"\"p\":")
        {
            on_delivery(Seen {
                publisher: publisher as u32,
                seq,
                ts,
            });
            info.deliveries += 1;
            pos = p + n + m + k;
        } else {
            pos = p + n;
        }
    }
    info.connect_replies = CONNECT.find_iter(buf).count();
    info.successes = OK.find_iter(buf).count();
    info.failures = FAIL.find_iter(buf).count();
    info
}

/// The `clientId` of the first message in `buf` that has one (handshake replies).
pub fn client_id(buf: &[u8]) -> Option<String> {
    let key = b"\"clientId\":\"";
    let at = memchr::memmem::find(buf, key)? + key.len();
    let end = memchr::memchr(b'"', &buf[at..])?;
    std::str::from_utf8(&buf[at..at + end])
        .ok()
        .map(str::to_owned)
}

/// The benchmark payload: `{"seq":S,"ts":T,"p":P}` plus `pad` bytes of padding.
pub fn payload(out: &mut String, seq: u64, ts: u64, publisher: u32, pad: &str) {
    use std::fmt::Write;
    let _ = write!(out, "{{\"seq\":{seq},\"ts\":{ts},\"p\":{publisher}");
    if !pad.is_empty() {
        let _ = write!(out, ",\"pad\":\"{pad}\"");
    }
    out.push('}');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_deliveries_and_replies() {
        let mut s = String::new();
        payload(&mut s, 7, 123456, 2, "xx");
        let frame = format!(
            r#"[{{"channel":"/bench/a","data":{s}}},{{"channel":"/meta/connect","successful":true}},{{"channel":"/bench/a","data":{{"seq":8,"ts":9,"p":2}}}}]"#
        );
        let mut got = Vec::new();
        let info = scan(frame.as_bytes(), |d| got.push(d));
        assert_eq!(
            got,
            [
                Seen {
                    publisher: 2,
                    seq: 7,
                    ts: 123456
                },
                Seen {
                    publisher: 2,
                    seq: 8,
                    ts: 9
                }
            ]
        );
        assert_eq!(info.connect_replies, 1);
        assert_eq!(info.successes, 1);
        assert_eq!(info.failures, 0);
    }

    #[test]
    fn tolerates_foreign_fields_and_truncation() {
        let info = scan(br#"[{"data":{"seq":"x"}},{"seq":5}] {"seq":"#, |_| panic!());
        assert_eq!(info.deliveries, 0);
        assert_eq!(
            client_id(br#"[{"channel":"/meta/handshake","clientId":"abc","successful":true}]"#)
                .as_deref(),
            Some("abc")
        );
    }
}
