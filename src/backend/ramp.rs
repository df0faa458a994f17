//! Slow start: a backend that becomes UP (or is added) ramps linearly from
//! [`RAMP_FLOOR`] of its share to all of it over `slow_start`, so cold caches and JIT warm-up
//! meet a trickle of traffic first (Envoy's `slow_start_config`, HAProxy's `slowstart`).
//!
//! The ramp is a factor in (0, 1] applied by every strategy: round-robin, weighted and cookie
//! admit a ramping backend's turn with that probability (a refused turn goes to the next
//! turn of the shared counter, so the others stay even); least-conn and p2c divide their
//! score by it.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::clock::{now_ns, ns};
use super::Backend;

/// The share a backend gets at the very start of its ramp.
pub const RAMP_FLOOR: f64 = 0.1;

impl Backend {
    /// Starts the ramp now (called on every transition to UP).
    pub(crate) fn start_ramp(&self) {
        self.up_since_ns.store(now_ns(), Ordering::Relaxed);
    }

    /// The factor in (0, 1] by which this backend's share is scaled now; 1 when `slow_start`
    /// is zero or the ramp is over.
    #[inline]
    pub fn ramp(&self, slow_start: Duration) -> f64 {
        let since = self.up_since_ns.load(Ordering::Relaxed);
        if since == 0 || slow_start.is_zero() {
            return 1.0;
        }
        let elapsed = now_ns().saturating_sub(since);
        let total = ns(slow_start);
        if elapsed >= total {
            // Over: later picks skip the clock read.
            self.up_since_ns.store(0, Ordering::Relaxed);
            return 1.0;
        }
        RAMP_FLOOR + (1.0 - RAMP_FLOOR) * (elapsed as f64 / total as f64)
    }

    /// Whether a turn that fell on this backend is taken: always outside a ramp, with the ramp's
    /// probability during it.
    #[inline]
    pub fn admit(&self, slow_start: Duration) -> bool {
        let r = self.ramp(slow_start);
        r >= 1.0 || fastrand::f64() < r
    }

    /// The weight strategies use now: the configured weight scaled by the ramp (at least 1
    /// while the backend is ready).
    pub fn effective_weight(&self, slow_start: Duration) -> u32 {
        let w = f64::from(self.weight()) * self.ramp(slow_start);
        (w.round() as u32).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balancer::testing::backend;

    #[test]
    fn ramps_from_the_floor_and_ends() {
        let b = backend(1, 10_000, 10);
        assert_eq!(
            b.ramp(Duration::from_secs(10)),
            1.0,
            "not ramping before UP"
        );
        b.start_ramp();
        let r = b.ramp(Duration::from_secs(3600));
        assert!((RAMP_FLOOR..RAMP_FLOOR + 0.01).contains(&r), "{r}");
        assert_eq!(b.effective_weight(Duration::from_secs(3600)), 1);
        assert_eq!(b.ramp(Duration::ZERO), 1.0, "slow_start 0 is off");
        assert_eq!(b.ramp(Duration::from_nanos(1)), 1.0, "over");
        assert_eq!(b.ramp(Duration::from_secs(3600)), 1.0, "stays over");
        assert_eq!(b.effective_weight(Duration::from_secs(3600)), 10);
    }

    #[test]
    fn admission_follows_the_ramp() {
        let b = backend(1, 10_000, 1);
        b.start_ramp();
        let taken = (0..10_000)
            .filter(|_| b.admit(Duration::from_secs(3600)))
            .count();
        assert!((700..1300).contains(&taken), "{taken} of 10000 at 10 %");
    }
}
