//! Small helpers: random identifiers, Base64, constant-time comparison, timestamps.

use std::time::{SystemTime, UNIX_EPOCH};

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    // An OS without a random source cannot run a server that hands out bearer tokens.
    getrandom::fill(&mut buf).expect("the OS random number generator is unavailable");
    buf
}

/// A call id: 32 upper-case alphanumerics, uniformly drawn from the CSPRNG (rejection sampling
/// keeps the 36 symbols equally likely).
pub(crate) fn call_id() -> String {
    const ALPHABET: &[u8; 36] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut out = String::with_capacity(32);
    while out.len() < 32 {
        for b in random_bytes::<48>() {
            // 252 = 7 * 36: bytes above it would bias the low symbols.
            if b < 252 && out.len() < 32 {
                out.push(ALPHABET[(b % 36) as usize] as char);
            }
        }
    }
    out
}

/// A connection id: 16 lowercase hex digits.
pub(crate) fn conn_id() -> String {
    bayeux_core::random_hex(8)
}

/// A session-cookie token: 256 bits as 64 hex digits.
pub(crate) fn token() -> String {
    bayeux_core::random_hex(32)
}

/// Compares two byte strings in time that depends only on their lengths.
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Decodes standard Base64 (padding optional); `None` on any invalid symbol.
pub(crate) fn base64_decode(input: &str) -> Option<Vec<u8>> {
    fn val(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let s = input.trim_end_matches('=').as_bytes();
    if input.len() - s.len() > 2 || s.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    for chunk in s.chunks(4) {
        let mut acc = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            acc |= val(c)? << (18 - 6 * i);
        }
        let bytes = acc.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    Some(out)
}

/// Encodes standard Base64 with padding.
pub(crate) fn base64_encode(input: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let mut b = [0u8; 3];
        b[..chunk.len()].copy_from_slice(chunk);
        let n = u32::from_be_bytes([0, b[0], b[1], b[2]]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The current UTC time as `YYYY-MM-DD_HH-MM-SS` (the timestamp part of `GSIP_REC_FN`).
pub(crate) fn utc_stamp() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    stamp_of(secs)
}

fn stamp_of(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}_{:02}-{:02}-{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_ids_are_32_uppercase_alphanumerics_and_distinct() {
        let a = call_id();
        assert_eq!(a.len(), 32);
        assert!(
            a.bytes()
                .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
        );
        assert_ne!(a, call_id());
    }

    #[test]
    fn conn_ids_are_16_hex_digits() {
        let c = conn_id();
        assert_eq!(c.len(), 16);
        assert!(c.bytes().all(|b| b.is_ascii_hexdigit()));
    }

    #[test]
    fn base64_round_trips() {
        for s in ["", "a", "ab", "abc", "agent1:password", "ünïcødé:x"] {
            let e = base64_encode(s.as_bytes());
            assert_eq!(base64_decode(&e).unwrap(), s.as_bytes(), "{s}");
        }
        assert_eq!(base64_encode(b"agent1:password"), "YWdlbnQxOnBhc3N3b3Jk");
        assert_eq!(base64_decode("YWI").unwrap(), b"ab");
        assert!(base64_decode("a").is_none());
        assert!(base64_decode("ab$=").is_none());
        assert!(base64_decode("a===").is_none());
    }

    #[test]
    fn ct_eq_compares() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
    }

    #[test]
    fn stamps_format_utc() {
        assert_eq!(stamp_of(0), "1970-01-01_00-00-00");
        // 2015-10-16 14:26:23 UTC, the seed's timestamp.
        assert_eq!(stamp_of(1_445_005_583), "2015-10-16_14-26-23");
        assert_eq!(stamp_of(951_782_400), "2000-02-29_00-00-00");
    }
}
