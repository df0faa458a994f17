//! Round-robin: an atomic counter walks the pool; DOWN or already-tried backends are skipped.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::{RequestKey, Snapshot, Strategy};
use crate::backend::Tried;
use crate::config::StrategyKind;

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

/// Takes the next turn over the ready backends (`snap.ready`) with the shared counter. A turn
/// whose backend is no longer ready (the plan is rebuilt off the request path, so it can be
/// a few milliseconds stale), already tried by this request, or refused by its slow-start
/// ramp is not handed to the neighbour: the next turn of the counter is drawn instead, so
/// skipped turns spread evenly over all the others. A ramping backend is still taken when no
/// other can be. Falls back to a scan of the whole pool.
#[inline]
pub fn take_turn(snap: &Snapshot, rr: &RoundRobin, tried: &Tried) -> Option<usize> {
    let n = snap.ready.len();
    let mut ramping = None;
    for _ in 0..n.saturating_mul(2) {
        let i = snap.ready[rr.tick() % n];
        let b = &snap.backends[i];
        if !b.is_ready() || tried.contains(b.id) {
            continue;
        }
        if b.admit() {
            return Some(i);
        }
        ramping.get_or_insert(i);
    }
    ramping.or_else(|| first_ready_from(snap, rr.tick(), tried))
}

impl Strategy for RoundRobin {
    fn kind(&self) -> StrategyKind {
        StrategyKind::RoundRobin
    }

    #[inline]
    fn pick(&self, snap: &Snapshot, _key: &RequestKey<'_>, tried: &Tried) -> Option<usize> {
        take_turn(snap, self, tried)
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
    fn a_down_backend_s_turns_spread_evenly_over_the_others() {
        let lb = balancer(StrategyKind::RoundRobin, &[1, 1, 1, 1]);
        lb.snapshot().backends[1].set_alive(false);
        // Stale plan (the DOWN backend still listed): turns are redrawn, not handed on.
        let c = counts(&lb, 1200, &RequestKey::default());
        assert_eq!(c[1], 0);
        for n in [c[0], c[2], c[3]] {
            assert!((300..=500).contains(&n), "uneven: {c:?}");
        }
        // Rebuilt plan: exact thirds.
        lb.replan();
        let c = counts(&lb, 300, &RequestKey::default());
        assert_eq!(c, vec![100, 0, 100, 100]);
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
