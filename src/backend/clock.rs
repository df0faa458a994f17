//! One monotonic clock for backend state kept in atomics: nanoseconds since the first call.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Nanoseconds since the process's clock epoch; never 0 (0 stands for "unset" in atomics).
#[inline]
pub fn now_ns() -> u64 {
    let ns = u64::try_from(epoch().elapsed().as_nanos()).unwrap_or(u64::MAX);
    ns.max(1)
}

/// `d` in nanoseconds, saturating.
#[inline]
pub fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
