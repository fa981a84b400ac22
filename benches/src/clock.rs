//! One monotonic clock for the whole generator: send timestamps and receive times are
//! microseconds since the same process-local origin, so latency needs no wall clock.

use std::sync::OnceLock;
use std::time::Instant;

static ORIGIN: OnceLock<Instant> = OnceLock::new();

/// The origin of [`now_us`] (fixed on first use).
pub fn origin() -> Instant {
    *ORIGIN.get_or_init(Instant::now)
}

/// Microseconds since [`origin`].
pub fn now_us() -> u64 {
    origin().elapsed().as_micros() as u64
}

/// Microseconds since [`origin`] at `t`.
pub fn us_at(t: Instant) -> u64 {
    t.saturating_duration_since(origin()).as_micros() as u64
}
