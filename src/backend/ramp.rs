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
    /// Starts a ramp of length `slow_start` now (called on every transition to UP); a zero
    /// length means no ramp.
    pub(crate) fn start_ramp(&self, slow_start: Duration) {
        self.ramp_len_ns.store(ns(slow_start), Ordering::Relaxed);
        let start = if slow_start.is_zero() { 0 } else { now_ns() };
        self.up_since_ns.store(start, Ordering::Relaxed);
    }

    /// Marks a backend of the pool a process starts with: its first UP does not ramp.
    pub fn no_ramp_on_first_up(&self) {
        self.ramp_first_up.store(false, Ordering::Relaxed);
    }

    /// The ramp length for a transition to UP from `was`: none for the first UP of a
    /// backend the process started with.
    pub(crate) fn ramp_for(&self, was: super::Health, slow_start: Duration) -> Duration {
        if was == super::Health::Pending && !self.ramp_first_up.load(Ordering::Relaxed) {
            Duration::ZERO
        } else {
            slow_start
        }
    }

    /// The factor in (0, 1] by which this backend's share is scaled now; 1 outside a ramp.
    #[inline]
    pub fn ramp(&self) -> f64 {
        let since = self.up_since_ns.load(Ordering::Relaxed);
        if since == 0 {
            return 1.0;
        }
        let elapsed = now_ns().saturating_sub(since);
        let total = self.ramp_len_ns.load(Ordering::Relaxed);
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
    pub fn admit(&self) -> bool {
        let r = self.ramp();
        r >= 1.0 || fastrand::f64() < r
    }

    /// The weight strategies use now: the configured weight scaled by the ramp (at least 1
    /// while the backend is ready).
    pub fn effective_weight(&self) -> u32 {
        let w = f64::from(self.weight()) * self.ramp();
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
        assert_eq!(b.ramp(), 1.0, "not ramping before UP");
        b.start_ramp(Duration::from_secs(3600));
        let r = b.ramp();
        assert!((RAMP_FLOOR..RAMP_FLOOR + 0.01).contains(&r), "{r}");
        assert_eq!(b.effective_weight(), 1);
        b.start_ramp(Duration::ZERO);
        assert_eq!(b.ramp(), 1.0, "slow_start 0 is off");
        b.start_ramp(Duration::from_nanos(1));
        assert_eq!(b.ramp(), 1.0, "over");
        assert_eq!(b.effective_weight(), 10);
    }

    #[test]
    fn admission_follows_the_ramp() {
        let b = backend(1, 10_000, 1);
        b.start_ramp(Duration::from_secs(3600));
        let taken = (0..10_000).filter(|_| b.admit()).count();
        assert!((700..1300).contains(&taken), "{taken} of 10000 at 10 %");
    }
}
