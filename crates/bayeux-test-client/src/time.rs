//! Bounded waits: a test that hangs is a failed test, and its message says where it hung.

use std::future::Future;
use std::time::Duration;

/// Upper bound of a whole test ([`bounded`]).
pub const TEST_TIMEOUT: Duration = Duration::from_secs(20);

/// Upper bound of one exchange that is expected to complete ([`step`], and the panicking
/// WebSocket helpers).
pub const STEP: Duration = Duration::from_secs(5);

/// Upper bound of opening a TCP connection or a WebSocket: a connect to an unreachable host would
/// otherwise wait for the kernel's retries (minutes).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// Runs a whole test body under [`TEST_TIMEOUT`].
pub async fn bounded<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(TEST_TIMEOUT, f)
        .await
        .expect("the test exceeded its time bound")
}

/// Awaits one step under [`STEP`], naming it in the panic.
pub async fn step<F: Future>(what: &str, f: F) -> F::Output {
    within(STEP, what, f).await
}

/// Awaits one step under `limit`, naming it in the panic: for suites whose steps need another
/// bound than [`STEP`].
pub async fn within<F: Future>(limit: Duration, what: &str, f: F) -> F::Output {
    tokio::time::timeout(limit, f)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}
