//! Least-connections: the ready backend with the fewest requests in flight; ties are drawn.
//! Exact for pools up to [`EXACT_SCAN_LIMIT`] backends; beyond that it takes the less loaded
//! of two random ready backends (Envoy's method), which keeps a pick O(1) at any size.

use super::round_robin::first_ready_from;
use super::{RequestKey, Snapshot, Strategy};
use crate::backend::{Backend, Tried};
use crate::config::StrategyKind;

/// Largest pool scanned exhaustively on each pick.
pub const EXACT_SCAN_LIMIT: usize = 64;
/// Random draws tried before falling back to a scan when most backends are not ready.
const SAMPLE_ATTEMPTS: usize = 8;

/// The `least-conn` strategy (stateless: the load is read from each backend's counter).
#[derive(Default)]
pub struct LeastConn;

/// Least-conn's score (lower wins): requests in flight, plus the one being placed, divided by
/// the slow-start ramp so a ramping backend looks busier than it is.
#[inline]
fn load(b: &Backend) -> f64 {
    (b.in_flight() + 1) as f64 / b.ramp()
}

impl Strategy for LeastConn {
    fn kind(&self) -> StrategyKind {
        StrategyKind::LeastConn
    }

    fn pick(&self, snap: &Snapshot, _key: &RequestKey<'_>, tried: &Tried) -> Option<usize> {
        let n = snap.backends.len();
        if n <= EXACT_SCAN_LIMIT {
            lowest(snap, tried, load)
        } else {
            two_choices(snap, tried, load)
        }
    }
}

/// The ready, untried backend with the lowest `score`; ties are drawn uniformly.
pub fn lowest(snap: &Snapshot, tried: &Tried, score: impl Fn(&Backend) -> f64) -> Option<usize> {
    let mut best: Option<(usize, f64)> = None;
    let mut ties = 0u64;
    for (i, b) in snap.backends.iter().enumerate() {
        if !b.is_ready() || tried.contains(b.id) {
            continue;
        }
        let s = score(b);
        match best {
            Some((_, l)) if s > l => {}
            Some((_, l)) if s == l => {
                ties += 1;
                if fastrand::u64(..ties) == 0 {
                    best = Some((i, s));
                }
            }
            _ => {
                best = Some((i, s));
                ties = 1;
            }
        }
    }
    best.map(|(i, _)| i)
}

/// The lower-scoring of two distinct random ready, untried backends (power of two choices).
pub fn two_choices(
    snap: &Snapshot,
    tried: &Tried,
    score: impl Fn(&Backend) -> f64,
) -> Option<usize> {
    let n = snap.backends.len();
    if n == 0 {
        return None;
    }
    let ready = |i: usize| {
        let b = &snap.backends[i];
        b.is_ready() && !tried.contains(b.id)
    };
    let draw = |not: Option<usize>| {
        (0..SAMPLE_ATTEMPTS)
            .map(|_| fastrand::usize(..n))
            .find(|&i| Some(i) != not && ready(i))
    };
    let first = draw(None);
    match (first, draw(first)) {
        (Some(a), Some(b)) => {
            let (sa, sb) = (score(&snap.backends[a]), score(&snap.backends[b]));
            Some(if sb < sa { b } else { a })
        }
        (Some(a), None) | (None, Some(a)) => Some(a),
        (None, None) => first_ready_from(snap, fastrand::usize(..), tried),
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::super::*;
    use crate::backend::Lease;

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
