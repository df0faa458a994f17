//! `p2c-ewma`: latency-aware power of two choices, as Linkerd and Finagle balance. Two distinct
//! ready backends are drawn at random and the one with the lower cost wins, where cost is the
//! backend's peak-EWMA latency x (requests in flight + 1), divided by its slow-start ramp.
//! A backend with no sample yet is seeded with the median of the others, so it is neither
//! flooded nor starved.
//!
//! Prefer it over `least-conn` when backends differ in speed (mixed hardware, a noisy
//! neighbour, a backend with a cold cache or a slow dependency): least-conn only sees a slow
//! backend once requests pile up on it, p2c-ewma sees it from its latency at once. For pools
//! of equal backends serving requests of very different cost (long polls, uploads),
//! least-conn's exact count is the better signal.

use std::sync::Arc;

use super::least_conn::{lowest, two_choices};
use super::{Plan, RequestKey, Snapshot, Strategy};
use crate::backend::{Backend, Tried};
use crate::config::StrategyKind;

/// Latency assumed when no backend of the pool has a sample yet (1 ms).
const DEFAULT_LATENCY_NS: f64 = 1e6;

/// The `p2c-ewma` strategy.
#[derive(Default)]
pub struct PeakEwma;

#[inline]
fn cost(b: &Backend) -> f64 {
    let latency = b.latency_estimate().unwrap_or(DEFAULT_LATENCY_NS);
    // A latency that decayed to nothing still ranks by load.
    latency.max(1.0) * (b.in_flight() + 1) as f64 / b.ramp()
}

impl Strategy for PeakEwma {
    fn kind(&self) -> StrategyKind {
        StrategyKind::P2cEwma
    }

    /// Seeds backends without a latency sample at the pool's median (off the request path).
    fn plan(&self, backends: &[Arc<Backend>]) -> Plan {
        let mut known: Vec<f64> = backends
            .iter()
            .filter_map(|b| b.latency_estimate())
            .collect();
        known.sort_by(f64::total_cmp);
        let median = known
            .get(known.len() / 2)
            .copied()
            .unwrap_or(DEFAULT_LATENCY_NS);
        for b in backends {
            b.seed_latency(median);
        }
        Plan::None
    }

    fn pick(&self, snap: &Snapshot, _key: &RequestKey<'_>, tried: &Tried) -> Option<usize> {
        if snap.ready.len() <= 2 {
            // Two choices out of two is an exact comparison (and avoids redraws).
            return lowest(snap, tried, cost);
        }
        two_choices(snap, tried, cost)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::super::*;
    use std::time::Duration;

    #[test]
    fn the_slow_backend_gets_few_requests() {
        let lb = balancer(StrategyKind::P2cEwma, &[1, 1, 1]);
        let snap = lb.snapshot();
        for _ in 0..3 {
            snap.backends[0].observe_latency(Duration::from_millis(50));
            snap.backends[1].observe_latency(Duration::from_millis(1));
            snap.backends[2].observe_latency(Duration::from_millis(1));
        }
        let c = counts(&lb, 600, &RequestKey::default());
        assert!(c[0] < 10, "slow backend picked {} of 600: {c:?}", c[0]);
        assert!(c[1] > 200 && c[2] > 200, "{c:?}");
    }

    #[test]
    fn a_new_backend_starts_at_the_median() {
        let lb = balancer(StrategyKind::P2cEwma, &[1, 1, 1]);
        let snap = lb.snapshot();
        snap.backends[0].observe_latency(Duration::from_millis(1));
        snap.backends[1].observe_latency(Duration::from_millis(3));
        snap.backends[2].observe_latency(Duration::from_millis(7));
        let added = backend(9, 10_009, 1);
        assert_eq!(added.latency_estimate(), None);
        lb.add_backend(added.clone()).expect("unique");
        let seeded = added.latency_estimate().unwrap_or(0.0);
        assert!((2.9e6..=3.0e6).contains(&seeded), "{seeded}");
    }
}
