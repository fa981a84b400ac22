//! Small helpers: random identifiers and tokens, timestamps.

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

/// A CSRF token in the shape GWS hands out (a random, version-4 UUID: 122 random bits).
pub(crate) fn csrf_token() -> String {
    let mut b = random_bytes::<16>();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
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
    fn csrf_tokens_are_distinct_v4_uuids() {
        let t = csrf_token();
        assert_eq!(t.len(), 36);
        let groups: Vec<&str> = t.split('-').collect();
        assert_eq!(
            groups.iter().map(|g| g.len()).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12]
        );
        assert!(
            groups
                .iter()
                .all(|g| g.bytes().all(|b| b.is_ascii_hexdigit()))
        );
        assert!(groups[2].starts_with('4'));
        assert!(matches!(groups[3].as_bytes()[0], b'8' | b'9' | b'a' | b'b'));
        assert_ne!(t, csrf_token());
    }

    #[test]
    fn stamps_format_utc() {
        assert_eq!(stamp_of(0), "1970-01-01_00-00-00");
        // 2015-10-16 14:26:23 UTC, the seed's timestamp.
        assert_eq!(stamp_of(1_445_005_583), "2015-10-16_14-26-23");
        assert_eq!(stamp_of(951_782_400), "2000-02-29_00-00-00");
    }
}
