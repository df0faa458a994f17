//! Least-connections: the ready backend with the fewest requests in flight; ties are drawn.
//! Exact for pools up to [`EXACT_SCAN_LIMIT`] backends; beyond that it takes the less loaded
//! of two random ready backends (Envoy's method), which keeps a pick O(1) at any size.

use std::cell::Cell;

use super::round_robin::first_ready_from;
use super::{RequestKey, Snapshot, Strategy};
use crate::config::StrategyKind;
use crate::pool::Tried;

/// Largest pool scanned exhaustively on each pick.
pub const EXACT_SCAN_LIMIT: usize = 64;
/// Random draws tried before falling back to a scan when most backends are not ready.
const SAMPLE_ATTEMPTS: usize = 8;

/// The `least-conn` strategy (stateless: the load is read from each backend's counter).
#[derive(Default)]
pub struct LeastConn;

impl Strategy for LeastConn {
    fn kind(&self) -> StrategyKind {
        StrategyKind::LeastConn
    }

    fn pick(&self, snap: &Snapshot, _key: &RequestKey<'_>, tried: &Tried) -> Option<usize> {
        let n = snap.backends.len();
        if n <= EXACT_SCAN_LIMIT {
            exact(snap, tried)
        } else {
            two_choices(snap, tried)
        }
    }
}

/// Scans every backend; among equal loads one is drawn at random, so ties share the traffic.
fn exact(snap: &Snapshot, tried: &Tried) -> Option<usize> {
    let mut best: Option<(usize, u64)> = None;
    let mut ties = 0u64;
    for (i, b) in snap.backends.iter().enumerate() {
        if !b.is_ready() || tried.contains(b.id) {
            continue;
        }
        let load = b.in_flight();
        match best {
            Some((_, l)) if load > l => {}
            Some((_, l)) if load == l => {
                ties += 1;
                if random().is_multiple_of(ties) {
                    best = Some((i, load));
                }
            }
            _ => {
                best = Some((i, load));
                ties = 1;
            }
        }
    }
    best.map(|(i, _)| i)
}

fn two_choices(snap: &Snapshot, tried: &Tried) -> Option<usize> {
    let n = snap.backends.len();
    let ready = |i: usize| {
        let b = &snap.backends[i];
        b.is_ready() && !tried.contains(b.id)
    };
    let draw = || {
        (0..SAMPLE_ATTEMPTS)
            .map(|_| (random() % n as u64) as usize)
            .find(|&i| ready(i))
    };
    match (draw(), draw()) {
        (Some(a), Some(b)) => {
            let (la, lb) = (snap.backends[a].in_flight(), snap.backends[b].in_flight());
            Some(if lb < la { b } else { a })
        }
        (Some(a), None) | (None, Some(a)) => Some(a),
        (None, None) => first_ready_from(snap, random() as usize, tried),
    }
}

thread_local! {
    static RNG: Cell<u64> = Cell::new(seed());
}

fn seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_usize(&RNG as *const _ as usize);
    h.finish() | 1
}

/// xorshift64*: cheap, per-thread, good enough to spread picks.
fn random() -> u64 {
    RNG.with(|cell| {
        let mut x = cell.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        cell.set(x);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    })
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::super::*;
    use crate::pool::Lease;

    #[test]
    fn avoids_the_busy_backend_and_spreads_ties() {
        let lb = balancer(StrategyKind::LeastConn, &[1, 1, 1]);
        let busy = lb.snapshot().backends[0].clone();
        let _held: Vec<Lease> = (0..5).map(|_| Lease::new(busy.clone())).collect();
        let c = counts(&lb, 100, &RequestKey::default());
        assert_eq!(c[0], 0);
        assert_eq!(c[1] + c[2], 100);
        assert!(c[1] >= 30 && c[2] >= 30, "ties not spread: {c:?}");
    }

    #[test]
    fn picks_the_least_loaded_while_leases_are_held() {
        let lb = balancer(StrategyKind::LeastConn, &[1, 1, 1]);
        let held: Vec<Lease> = (0..9)
            .map(|_| {
                lb.next_valid_peer(&RequestKey::default(), &Tried::default())
                    .expect("ready")
            })
            .collect();
        for b in &lb.snapshot().backends {
            assert_eq!(b.in_flight(), 3);
        }
        drop(held);
    }

    #[test]
    fn large_pools_use_two_choices_and_never_pick_the_busiest() {
        let weights = vec![1; 200];
        let lb = balancer(StrategyKind::LeastConn, &weights);
        let snap = lb.snapshot();
        let busy = snap.backends[7].clone();
        let _held: Vec<Lease> = (0..3).map(|_| Lease::new(busy.clone())).collect();
        for b in snap.backends.iter().skip(100) {
            b.set_alive(false);
        }
        let c = counts(&lb, 2000, &RequestKey::default());
        assert!(c[100..].iter().all(|&x| x == 0), "picked a DOWN backend");
        assert!(c[7] < 20, "busy backend picked {} times", c[7]);
    }
}
