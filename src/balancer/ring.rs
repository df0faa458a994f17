//! Consistent hashing (a ketama-style ring keyed by backend URL) and the `ip-hash` strategy:
//! a client address maps to a point; the first ready backend clockwise serves it. Removing
//! one of N backends moves only its own ~1/N of the clients; a DOWN backend's clients go to
//! the next backend on the ring and stay there while it is down.

use std::net::IpAddr;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::round_robin::{first_ready_from, take_turn, RoundRobin};
use super::{Plan, RequestKey, Snapshot, Strategy};
use crate::backend::{Backend, Tried};
use crate::config::StrategyKind;

/// Ring points per unit of weight.
const POINTS_PER_WEIGHT: u64 = 160;
/// Upper bound on ring points for very large pools (memory and build time).
const MAX_POINTS: u64 = 4_000_000;

/// Points sorted by hash; each names a backend index in the snapshot.
#[derive(Debug, Default, Clone)]
pub struct Ring {
    points: Vec<(u64, u32)>,
}

impl Ring {
    /// Places `POINTS_PER_WEIGHT` x weight points per backend (fewer for very large pools),
    /// each at a hash of the backend's URL and the point's number: a backend's points do not
    /// depend on the other backends, which is what keeps changes to ~1/N of the clients.
    pub fn build(backends: &[Arc<Backend>]) -> Ring {
        let total_weight: u64 = backends.iter().map(|b| u64::from(b.weight())).sum();
        let per_weight = MAX_POINTS
            .checked_div(total_weight)
            .map_or(0, |p| p.clamp(1, POINTS_PER_WEIGHT));
        let mut points = Vec::with_capacity((total_weight * per_weight) as usize);
        for (i, b) in backends.iter().enumerate() {
            for k in 0..u64::from(b.weight()) * per_weight {
                let digest = Sha256::new()
                    .chain_update(b.name.as_bytes())
                    .chain_update(k.to_le_bytes())
                    .finalize();
                let mut head = [0u8; 8];
                head.copy_from_slice(&digest[..8]);
                points.push((u64::from_le_bytes(head), i as u32));
            }
        }
        // Ties (equal hashes) go by URL, not by position: instances that added the same
        // backends in another order still build the same ring.
        points.sort_unstable_by(|a, b| {
            (a.0, &backends[a.1 as usize].name).cmp(&(b.0, &backends[b.1 as usize].name))
        });
        Ring { points }
    }

    /// Backend indices of the points clockwise from `hash`, once around the ring (a backend
    /// appears once per point it owns).
    pub fn walk(&self, hash: u64) -> impl Iterator<Item = usize> + '_ {
        let start = self.points.partition_point(|&(p, _)| p < hash);
        let n = self.points.len();
        (0..n).map(move |k| self.points[(start + k) % n].1 as usize)
    }

    /// Whether the ring has no points (an empty pool).
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }
}

/// FNV-1a then a splitmix64 finaliser: fast and stable across processes and versions.
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The ring position of a client address; an IPv4-mapped IPv6 address hashes as its IPv4.
pub fn hash_ip(ip: IpAddr) -> u64 {
    match ip {
        IpAddr::V4(v4) => hash_bytes(&v4.octets()),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => hash_bytes(&v4.octets()),
            None => hash_bytes(&v6.octets()),
        },
    }
}

/// First ready, untried backend clockwise from `hash` on the ring. If a bounded walk finds
/// none, the first ready backend from a position derived from `hash`: still the same
/// backend for the same client while the pool does not change.
pub fn ring_pick(snap: &Snapshot, ring: &Ring, hash: u64, tried: &Tried) -> Option<usize> {
    let mut checked = 0;
    let mut ramping = None;
    for i in ring.walk(hash) {
        let b = &snap.backends[i];
        if b.is_ready() && !tried.contains(b.id) {
            // A ramping backend (slow start) keeps only its ramp's share of its clients.
            if b.admit() {
                return Some(i);
            }
            ramping.get_or_insert(i);
        }
        checked += 1;
        if checked > 4 * snap.backends.len() + 64 {
            break;
        }
    }
    ramping.or_else(|| first_ready_from(snap, hash as usize, tried))
}

/// The `ip-hash` strategy: the client address on the consistent-hash [`Ring`]; without a
/// client address (not an IP socket), round-robin.
#[derive(Default)]
pub struct IpHash {
    fallback: RoundRobin,
}

impl Strategy for IpHash {
    fn kind(&self) -> StrategyKind {
        StrategyKind::IpHash
    }

    fn plan(&self, backends: &[Arc<Backend>]) -> Plan {
        Plan::Ring(Ring::build(backends))
    }

    fn pick(&self, snap: &Snapshot, key: &RequestKey<'_>, tried: &Tried) -> Option<usize> {
        match (&snap.plan, key.client_ip) {
            (Plan::Ring(ring), Some(ip)) if !ring.is_empty() => {
                ring_pick(snap, ring, hash_ip(ip), tried)
            }
            _ => take_turn(snap, &self.fallback, tried),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::super::*;
    use std::net::Ipv4Addr;

    fn client(i: u32) -> RequestKey<'static> {
        RequestKey {
            client_ip: Some(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i))),
            cookie: None,
        }
    }

    fn owner(lb: &Balancer, i: u32) -> u64 {
        lb.next_valid_peer(&client(i), &Tried::default())
            .expect("ready")
            .backend()
            .id
    }

    #[test]
    fn instances_that_added_backends_in_another_order_agree() {
        // Different insertion orders and process-local ids, as on two instances of a fleet.
        let a = Balancer::new(strategy(StrategyKind::IpHash), 1, 1);
        let b = Balancer::new(strategy(StrategyKind::IpHash), 1, 1);
        for (id, port) in [(0, 10_000), (1, 10_001), (2, 10_002), (3, 10_003)] {
            a.add_backend(backend(id, port, 1 + u32::from(port % 2)))
                .expect("unique");
        }
        for (id, port) in [(7, 10_002), (8, 10_000), (9, 10_003), (5, 10_001)] {
            b.add_backend(backend(id, port, 1 + u32::from(port % 2)))
                .expect("unique");
        }
        let url = |lb: &Balancer, i: u32| {
            lb.next_valid_peer(&client(i), &Tried::default())
                .expect("ready")
                .backend()
                .name
                .clone()
        };
        for i in 0..1000 {
            assert_eq!(url(&a, i), url(&b, i), "client {i}");
        }
    }

    #[test]
    fn same_client_same_backend_and_clients_spread() {
        let lb = balancer(StrategyKind::IpHash, &[1, 1, 1, 1]);
        let mut per_backend = [0usize; 4];
        for i in 0..1000 {
            let first = owner(&lb, i);
            for _ in 0..3 {
                assert_eq!(owner(&lb, i), first);
            }
            per_backend[first as usize] += 1;
        }
        assert!(per_backend.iter().all(|&c| c > 150), "{per_backend:?}");
    }

    #[test]
    fn removing_one_of_ten_moves_about_a_tenth() {
        let lb = balancer(StrategyKind::IpHash, &[1; 10]);
        let before: Vec<u64> = (0..5000).map(|i| owner(&lb, i)).collect();
        let gone = lb.snapshot().backends[3].clone();
        lb.remove_backend(&gone.url).expect("present");
        let moved = (0..5000u32)
            .filter(|&i| owner(&lb, i) != before[i as usize])
            .count();
        let on_removed = before.iter().filter(|&&id| id == gone.id).count();
        assert_eq!(moved, on_removed, "only the removed backend's clients move");
        let fraction = moved as f64 / 5000.0;
        assert!((0.06..0.14).contains(&fraction), "moved {fraction}");
    }

    #[test]
    fn a_down_backends_clients_move_and_stay() {
        let lb = balancer(StrategyKind::IpHash, &[1, 1, 1]);
        let victim = lb.snapshot().backends[0].clone();
        let clients: Vec<u32> = (0..300).filter(|&i| owner(&lb, i) == victim.id).collect();
        assert!(!clients.is_empty());
        victim.set_alive(false);
        for &c in &clients {
            let new = owner(&lb, c);
            assert_ne!(new, victim.id);
            assert_eq!(owner(&lb, c), new);
        }
    }
}
