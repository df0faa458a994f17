//! Peak-EWMA latency per backend, for the `p2c-ewma` strategy (as Linkerd and Finagle do): a
//! sample above the estimate replaces it at once (peak), a lower one is averaged in with a
//! weight that decays with the time since the last sample; reading the estimate decays it
//! toward zero, so a backend that was slow once is tried again after a while.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::clock::now_ns;
use super::Backend;

/// The decay time constant.
pub const DECAY: Duration = Duration::from_secs(10);

impl Backend {
    /// Records one request's latency to this backend (time to the response header).
    pub fn observe_latency(&self, latency: Duration) {
        let now = now_ns();
        let sample = latency.as_nanos() as f64;
        let last = self.ewma_at_ns.swap(now, Ordering::Relaxed);
        let current = f64::from_bits(self.ewma_ns.load(Ordering::Relaxed));
        let next = if last == 0 || sample > current {
            sample
        } else {
            let w = decay(now.saturating_sub(last));
            current * w + sample * (1.0 - w)
        };
        self.ewma_ns.store(next.to_bits(), Ordering::Relaxed);
    }

    /// The estimate now, in nanoseconds, or `None` before the first sample.
    #[inline]
    pub fn latency_estimate(&self) -> Option<f64> {
        let at = self.ewma_at_ns.load(Ordering::Relaxed);
        if at == 0 {
            return None;
        }
        let value = f64::from_bits(self.ewma_ns.load(Ordering::Relaxed));
        Some(value * decay(now_ns().saturating_sub(at)))
    }

    /// Starts a backend that has no sample yet at `estimate_ns` (the pool's median), so that
    /// it is neither flooded nor starved while its first samples come in.
    pub fn seed_latency(&self, estimate_ns: f64) {
        if self
            .ewma_at_ns
            .compare_exchange(0, now_ns(), Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            self.ewma_ns.store(estimate_ns.to_bits(), Ordering::Relaxed);
        }
    }
}

fn decay(elapsed_ns: u64) -> f64 {
    (-(elapsed_ns as f64) / DECAY.as_nanos() as f64).exp()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balancer::testing::backend;

    #[test]
    fn peaks_at_once_and_averages_down() {
        let b = backend(1, 10_000, 1);
        assert_eq!(b.latency_estimate(), None);
        b.observe_latency(Duration::from_millis(1));
        b.observe_latency(Duration::from_millis(50));
        let e = b.latency_estimate().unwrap_or(0.0);
        assert!(e > 49e6 && e <= 50e6, "peak taken at once: {e}");
        // Samples within microseconds of each other barely move a peak down.
        b.observe_latency(Duration::from_millis(1));
        let e2 = b.latency_estimate().unwrap_or(0.0);
        assert!(e2 > 45e6 && e2 < e, "{e2}");
    }

    #[test]
    fn a_seed_applies_only_without_samples() {
        let b = backend(1, 10_000, 1);
        b.seed_latency(2e6);
        assert!(b.latency_estimate().is_some_and(|e| e > 1.9e6));
        b.seed_latency(9e9);
        assert!(b.latency_estimate().is_some_and(|e| e < 2.1e6));
    }
}
