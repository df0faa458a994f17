//! Smooth weighted round-robin. The schedule (one cycle of sum(weights) picks over the ready
//! backends) is computed when the pool or its health changes; a pick is one atomic increment
//! and an index, so each backend gets exactly its weight's share of every full cycle.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::{Plan, RequestKey, Snapshot, Strategy};
use crate::backend::{Backend, Tried};
use crate::config::StrategyKind;

/// Above this many (cycle length x backends) steps, the schedule is built by stride ordering
/// instead of nginx's O(cycle x n) loop; both place each backend's picks evenly.
const NGINX_LOOP_BUDGET: u64 = 4_000_000;

/// Turns redrawn before the schedule is walked.
const REDRAWS: usize = 8;

/// One cycle of picks: indices into the snapshot's backends.
#[derive(Debug, Default, Clone)]
pub struct WeightedSchedule {
    /// Snapshot indices in pick order; each ready backend appears weight/gcd times.
    pub order: Vec<u32>,
}

/// The `weighted-round-robin` strategy: walks the snapshot's [`WeightedSchedule`] with one
/// shared counter, skipping entries that are not ready or already tried by the request.
#[derive(Default)]
pub struct Weighted {
    next: AtomicUsize,
}

impl Strategy for Weighted {
    fn kind(&self) -> StrategyKind {
        StrategyKind::WeightedRoundRobin
    }

    fn plan(&self, backends: &[Arc<Backend>]) -> Plan {
        let weights: Vec<(usize, u32)> = backends
            .iter()
            .enumerate()
            .filter(|(_, b)| b.is_ready())
            .map(|(i, b)| (i, b.weight()))
            .collect();
        Plan::Weighted(WeightedSchedule {
            order: schedule(&weights),
        })
    }

    fn pick(&self, snap: &Snapshot, _key: &RequestKey<'_>, tried: &Tried) -> Option<usize> {
        let Plan::Weighted(schedule) = &snap.plan else {
            return None;
        };
        let len = schedule.order.len();
        if len == 0 {
            return None;
        }
        // Turns that fall on a backend that is no longer ready, tried, or refused by its
        // slow-start ramp are redrawn from the shared counter a few times (spreading them
        // over the schedule), then the schedule is walked from there.
        let mut ramping = None;
        for _ in 0..REDRAWS {
            let i = schedule.order[self.next.fetch_add(1, Ordering::Relaxed) % len] as usize;
            let b = &snap.backends[i];
            if b.is_ready() && !tried.contains(b.id) {
                if b.admit() {
                    return Some(i);
                }
                ramping.get_or_insert(i);
            }
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..len)
            .map(|k| schedule.order[(start + k) % len] as usize)
            .find(|&i| {
                let b = &snap.backends[i];
                b.is_ready() && !tried.contains(b.id)
            })
            .or(ramping)
    }
}

/// The pick order for one cycle over `(index, weight)` pairs, weights reduced by their gcd.
pub fn schedule(weights: &[(usize, u32)]) -> Vec<u32> {
    let g = weights.iter().fold(0, |g, &(_, w)| gcd(g, w)).max(1);
    let reduced: Vec<(usize, u64)> = weights
        .iter()
        .map(|&(i, w)| (i, u64::from(w / g)))
        .collect();
    let total: u64 = reduced.iter().map(|&(_, w)| w).sum();
    if total.saturating_mul(reduced.len() as u64) <= NGINX_LOOP_BUDGET {
        nginx_smooth(&reduced, total)
    } else {
        stride(&reduced)
    }
}

/// nginx's smooth weighted round-robin: every step each backend gains its weight, the one
/// with the highest current value is picked and loses the total.
fn nginx_smooth(weights: &[(usize, u64)], total: u64) -> Vec<u32> {
    let mut current = vec![0i64; weights.len()];
    let mut order = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for (k, &(_, w)) in weights.iter().enumerate() {
            current[k] += w as i64;
            if current[k] > current[best] {
                best = k;
            }
        }
        current[best] -= total as i64;
        order.push(weights[best].0 as u32);
    }
    order
}

/// Backend `i`'s picks sit at (k + 1/2) / w_i of the cycle, for k in 0..w_i: sorted, they give
/// the same per-cycle shares and spacing as nginx's loop in O(total log total).
fn stride(weights: &[(usize, u64)]) -> Vec<u32> {
    let mut slots: Vec<(u64, u64, usize, u32)> = Vec::new();
    for (pos, &(i, w)) in weights.iter().enumerate() {
        for k in 0..w {
            slots.push((2 * k + 1, 2 * w, pos, i as u32));
        }
    }
    slots.sort_by(|a, b| {
        (u128::from(a.0) * u128::from(b.1))
            .cmp(&(u128::from(b.0) * u128::from(a.1)))
            .then(a.2.cmp(&b.2))
    });
    slots.into_iter().map(|s| s.3).collect()
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::super::*;
    use super::*;

    #[test]
    fn nginx_sequence_for_5_1_1() {
        let order = schedule(&[(0, 5), (1, 1), (2, 1)]);
        assert_eq!(order, vec![0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn every_window_of_a_cycle_has_exact_shares() {
        let lb = balancer(StrategyKind::WeightedRoundRobin, &[5, 3, 2]);
        for _window in 0..4 {
            assert_eq!(counts(&lb, 10, &RequestKey::default()), vec![5, 3, 2]);
        }
    }

    #[test]
    fn no_bursts_to_the_heaviest() {
        let order = schedule(&[(0, 9), (1, 1)]);
        let runs = order
            .windows(6)
            .filter(|w| w.iter().all(|&i| i == 0))
            .count();
        assert!(runs <= 4, "{order:?}");
        assert_eq!(order.iter().filter(|&&i| i == 1).count(), 1);
    }

    #[test]
    fn stride_gives_exact_shares_and_spacing() {
        let weights: Vec<(usize, u64)> = (0..50).map(|i| (i, (i % 7 + 1) as u64)).collect();
        let order = stride(&weights);
        for &(i, w) in &weights {
            assert_eq!(order.iter().filter(|&&x| x as usize == i).count() as u64, w);
        }
        let total: u64 = weights.iter().map(|&(_, w)| w).sum();
        for &(i, w) in &weights {
            let mut seen = 0u64;
            for (len, &x) in order.iter().enumerate() {
                seen += u64::from(x as usize == i);
                let fair = (len as f64 + 1.0) * w as f64 / total as f64;
                assert!(
                    (seen as f64 - fair).abs() <= 2.0,
                    "backend {i} bursts at {len}"
                );
            }
        }
    }

    #[test]
    fn down_backends_leave_the_schedule() {
        let lb = balancer(StrategyKind::WeightedRoundRobin, &[2, 1]);
        let b0 = lb.snapshot().backends[0].clone();
        lb.set_backend_status(&b0, Observation::Refused("connection refused".into()));
        assert_eq!(counts(&lb, 6, &RequestKey::default()), vec![0, 6]);
        lb.set_backend_status(&b0, Observation::Passed);
        assert_eq!(counts(&lb, 6, &RequestKey::default()), vec![4, 2]);
    }
}
