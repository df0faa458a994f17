//! Round-robin: an atomic counter walks the pool; DOWN or already-tried backends are skipped.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::{RequestKey, Snapshot, Strategy};
use crate::config::StrategyKind;
use crate::pool::Tried;

/// The `round-robin` strategy: one shared counter, so concurrent picks still spread evenly.
#[derive(Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

impl RoundRobin {
    /// The next counter value (shared with strategies that fall back to round-robin).
    #[inline]
    pub fn tick(&self) -> usize {
        self.next.fetch_add(1, Ordering::Relaxed)
    }
}

/// First backend from `start` (wrapping) that is ready and untried. O(1) when all are ready.
#[inline]
pub fn first_ready_from(snap: &Snapshot, start: usize, tried: &Tried) -> Option<usize> {
    let n = snap.backends.len();
    if n == 0 {
        return None;
    }
    let start = start % n;
    (0..n).map(|i| (start + i) % n).find(|&i| {
        let b = &snap.backends[i];
        b.is_ready() && !tried.contains(b.id)
    })
}

impl Strategy for RoundRobin {
    fn kind(&self) -> StrategyKind {
        StrategyKind::RoundRobin
    }

    #[inline]
    fn pick(&self, snap: &Snapshot, _key: &RequestKey<'_>, tried: &Tried) -> Option<usize> {
        first_ready_from(snap, self.tick(), tried)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::super::*;

    #[test]
    fn spreads_exactly_evenly() {
        let lb = balancer(StrategyKind::RoundRobin, &[1, 1, 1]);
        assert_eq!(
            counts(&lb, 300, &RequestKey::default()),
            vec![100, 100, 100]
        );
    }

    #[test]
    fn skips_down_backends() {
        let lb = balancer(StrategyKind::RoundRobin, &[1, 1, 1]);
        lb.snapshot().backends[1].set_alive(false);
        let c = counts(&lb, 300, &RequestKey::default());
        assert_eq!(c[1], 0);
        assert_eq!(c[0] + c[2], 300);
    }
}
