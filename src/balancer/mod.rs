//! The `LoadBalancer`: Portico's pool state (an immutable snapshot swapped whole on change)
//! and the strategy that picks a backend from it. Picks are lock-free and allocation-free.
//! Plans are rebuilt off the request path ([`replanner`]); strategies re-check readiness at
//! pick time, so a plan a few milliseconds stale only costs a skipped entry.

mod cookie;
mod least_conn;
mod p2c;
mod replanner;
mod ring;
mod round_robin;
mod weighted;

pub use cookie::{cookie_token, Cookie};
pub use least_conn::LeastConn;
pub use p2c::PeakEwma;
pub use replanner::Replanner;
pub use ring::{IpHash, Ring};
pub use round_robin::RoundRobin;
pub use weighted::{Weighted, WeightedSchedule};

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use arc_swap::ArcSwap;
use log::warn;

use crate::backend::clock::{now_ns, ns};
use crate::backend::{
    Backend, Lease, Observation, OutlierDetection, Thresholds, Transition, Tried,
};
use crate::config::{BackendUrl, StrategyKind};

/// At most one "not ejected: floor reached" warning per this period.
const FLOOR_WARNING_PERIOD: Duration = Duration::from_secs(10);

/// What a strategy may use of the request: borrowed, nothing is copied.
#[derive(Debug, Default, Clone, Copy)]
pub struct RequestKey<'a> {
    /// The client's address (the TCP peer), for `ip-hash` (the proxy looks it up only then).
    pub client_ip: Option<IpAddr>,
    /// The value of the sticky cookie, when the strategy is `cookie` and the client sent one.
    pub cookie: Option<&'a str>,
}

/// Data a strategy derives from the pool when it changes, so picks need not compute it.
pub enum Plan {
    /// The strategy needs nothing precomputed.
    None,
    /// One cycle of smooth weighted round-robin over the ready backends.
    Weighted(WeightedSchedule),
    /// The consistent-hash ring over every backend (ready or not).
    Ring(Ring),
    /// Cookie value -> backend index.
    Cookie { tokens: HashMap<String, usize> },
}

/// The pool as one request sees it: backends in order, the strategy and its plan.
pub struct Snapshot {
    /// Every backend in the pool, in the order they were added.
    pub backends: Vec<Arc<Backend>>,
    /// Indices of the backends that were ready when the snapshot was built: turn-taking
    /// strategies walk this, so a DOWN backend's turns are spread over all the others rather
    /// than handed to its neighbour.
    pub ready: Vec<usize>,
    /// Per backend, its share of its URL's traffic: 1 / (ready endpoints of the URL), relative to
    /// the URL with the fewest (so the largest share is 1). A host
    /// name's endpoints split the backend's share between them, so a name that resolves to
    /// three addresses gets what one address would, not three times as much.
    pub shares: Vec<f64>,
    /// Derived from `backends` and their health.
    pub plan: Plan,
    /// The strategy that made `plan`: swapped with it (a reload), so that a pick never meets a
    /// plan made by another strategy.
    pub strategy: Arc<dyn Strategy>,
}

/// A way of choosing among the ready backends of a snapshot.
pub trait Strategy: Send + Sync {
    /// The configuration name of this strategy.
    fn kind(&self) -> StrategyKind;

    /// Derives the plan for a new set of backends (called off the request path, also after
    /// every change of health, weight or drain state).
    fn plan(&self, _backends: &[Arc<Backend>]) -> Plan {
        Plan::None
    }

    /// Index of the chosen backend in `snap.backends`: ready and not in `tried`.
    fn pick(&self, snap: &Snapshot, key: &RequestKey<'_>, tried: &Tried) -> Option<usize>;
}

/// Builds the strategy named in the configuration.
pub fn strategy(kind: StrategyKind) -> Box<dyn Strategy> {
    match kind {
        StrategyKind::RoundRobin => Box::new(RoundRobin::default()),
        StrategyKind::LeastConn => Box::new(LeastConn),
        StrategyKind::WeightedRoundRobin => Box::new(Weighted::default()),
        StrategyKind::IpHash => Box::new(IpHash::default()),
        StrategyKind::Cookie => Box::new(Cookie::default()),
        StrategyKind::P2cEwma => Box::new(PeakEwma),
    }
}

/// Why a pool change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    #[error("backend {0} is already in the pool")]
    Duplicate(String),
    #[error("backend {0} is not in the pool")]
    NotFound(String),
}

/// The contract of the seed's `LoadBalancer`: next valid peer, add, remove, set status.
pub trait LoadBalancer: Send + Sync {
    /// A lease on a ready backend not yet tried by this request, or `None` (answer 503).
    fn next_valid_peer(&self, key: &RequestKey<'_>, tried: &Tried) -> Option<Lease>;
    /// Adds a backend; new traffic may reach it once it is alive.
    fn add_backend(&self, backend: Arc<Backend>) -> Result<(), PoolError>;
    /// Removes a backend: no request that picks after this returns gets it (a pick already
    /// under way on the previous snapshot may still); requests in flight keep their lease and
    /// finish.
    fn remove_backend(&self, url: &BackendUrl) -> Result<Arc<Backend>, PoolError>;
    /// Feeds the proxy's own observation (a refusal) to the backend's health, logging and
    /// returning any transition. Probe results go through [`Balancer::record_probe`].
    fn set_backend_status(&self, backend: &Backend, seen: Observation) -> Option<Transition>;
}

/// Portico's load balancer over its own pool state.
pub struct Balancer {
    snapshot: ArcSwap<Snapshot>,
    /// Serialises writers (membership changes and re-plans); readers never take it.
    write: Mutex<()>,
    /// Removed backends that still have requests in flight.
    draining: Mutex<Vec<Arc<Backend>>>,
    /// Swapped whole by a reload (`health_check.rise`/`fall`, `slow_start`).
    thresholds: ArcSwap<Thresholds>,
    /// Swapped whole by a reload (`outlier_detection`).
    outlier: ArcSwap<OutlierDetection>,
    /// Serialises ejections, so two at once cannot both pass the floor check.
    ejecting: Mutex<()>,
    /// When the last "floor reached" warning was logged ([`now_ns`]).
    floor_warned_ns: AtomicU64,
    /// A [`Replanner`] is running: health flips ask it to replan instead of replanning inline.
    replanner: AtomicBool,
    replan_wanted: tokio::sync::Notify,
}

impl Balancer {
    /// An empty pool picked by `strategy`; health observations use `rise`/`fall`.
    pub fn new(strategy: Box<dyn Strategy>, rise: u32, fall: u32) -> Balancer {
        Balancer {
            snapshot: ArcSwap::from_pointee(Snapshot {
                backends: Vec::new(),
                ready: Vec::new(),
                shares: Vec::new(),
                plan: strategy.plan(&[]),
                strategy: Arc::from(strategy),
            }),
            write: Mutex::new(()),
            draining: Mutex::new(Vec::new()),
            thresholds: ArcSwap::from_pointee(Thresholds {
                rise,
                fall,
                slow_start: Duration::ZERO,
            }),
            outlier: ArcSwap::from_pointee(OutlierDetection::default()),
            ejecting: Mutex::new(()),
            floor_warned_ns: AtomicU64::new(0),
            replanner: AtomicBool::new(false),
            replan_wanted: tokio::sync::Notify::new(),
        }
    }

    /// Sets outlier detection and slow start (both off the request path's hot loop).
    pub fn with_resilience(self, outlier: OutlierDetection, slow_start: Duration) -> Balancer {
        self.set_resilience(outlier, slow_start);
        self
    }

    /// Replaces outlier detection and slow start for what happens from now on (a reload).
    pub fn set_resilience(&self, outlier: OutlierDetection, slow_start: Duration) {
        self.outlier.store(Arc::new(outlier));
        let mut t = **self.thresholds.load();
        t.slow_start = slow_start;
        self.thresholds.store(Arc::new(t));
    }

    /// Replaces the rise/fall thresholds for the next observations (a reload).
    pub fn set_rise_fall(&self, rise: u32, fall: u32) {
        let mut t = **self.thresholds.load();
        t.rise = rise;
        t.fall = fall;
        self.thresholds.store(Arc::new(t));
    }

    /// Replaces the strategy (a reload): the next pick uses the new one, with a plan it made;
    /// picks under way finish with the old one.
    pub fn set_strategy(&self, strategy: Box<dyn Strategy>) {
        let _w = lock(&self.write);
        let backends = self.snapshot.load().backends.clone();
        self.publish_with(backends, Arc::from(strategy));
    }

    /// Changes membership in one step (one new snapshot): backends whose id is in `remove`
    /// leave (as [`LoadBalancer::remove_backend`] does: no new request, their requests in
    /// flight finish), `add` join. For a reload that changes weights and for DNS refreshes, so
    /// that no pick ever sees a backend missing between its removal and its replacement.
    pub fn swap_members(&self, remove: &[u64], add: Vec<Arc<Backend>>) {
        let _w = lock(&self.write);
        let current = self.snapshot.load();
        let (gone, mut next): (Vec<_>, Vec<_>) = current
            .backends
            .iter()
            .cloned()
            .partition(|b| remove.contains(&b.id));
        next.extend(add);
        self.publish(next);
        for removed in gone {
            removed.disable();
            if removed.in_flight() > 0 {
                lock(&self.draining).push(removed);
            }
        }
    }

    /// The slow-start ramp length.
    pub fn slow_start(&self) -> Duration {
        self.thresholds.load().slow_start
    }

    /// Feeds a probe result, stamped with [`Backend::probe_stamp`] taken when the probe
    /// started, to the backend's health; replans on a transition.
    pub fn record_probe(
        &self,
        backend: &Backend,
        stamp: u64,
        seen: Observation,
    ) -> Option<Transition> {
        let transition = backend.observe(&seen, Some(stamp), &self.thresholds.load())?;
        self.replan_if_member(backend);
        Some(transition)
    }

    /// A request to `backend` got an answer that is not a failure.
    #[inline]
    pub fn report_success(&self, backend: &Backend) {
        backend.record_success();
    }

    /// A request to `backend` failed (5xx, timeout, reset, connect error other than a
    /// refusal): counts toward outlier ejection, which happens here once the limit is reached
    /// unless the floor (`max_ejection_percent`) forbids it.
    pub fn report_failure(&self, backend: &Backend) {
        let outlier = self.outlier.load();
        if !backend.record_failure(outlier.consecutive_errors) {
            return;
        }
        let _one_at_a_time = lock(&self.ejecting);
        let snap = self.snapshot.load();
        let ejected = snap.backends.iter().filter(|b| b.is_ejected()).count();
        if ejected >= outlier.max_ejected(snap.backends.len()) {
            let now = now_ns();
            let last = self.floor_warned_ns.load(Ordering::Relaxed);
            if last == 0 || now.saturating_sub(last) >= ns(FLOOR_WARNING_PERIOD) {
                self.floor_warned_ns.store(now, Ordering::Relaxed);
                warn!(
                    "backend {} not ejected after {} consecutive errors: {ejected} of {} backends are ejected already (max_ejection_percent {})",
                    backend.name,
                    backend.consecutive_errors(),
                    snap.backends.len(),
                    outlier.max_ejection_percent
                );
            }
            return;
        }
        drop(snap);
        if backend.eject(&outlier).is_some() {
            self.replan_if_member(backend);
        }
    }

    /// Asks for the plan to be rebuilt: by the [`Replanner`] when one runs (so a worker
    /// thread that saw a failure never rebuilds a schedule), else at once.
    pub fn request_replan(&self) {
        if self.replanner.load(Ordering::Acquire) {
            self.replan_wanted.notify_one();
        } else {
            self.replan();
        }
    }

    fn replan_if_member(&self, backend: &Backend) {
        if backend.is_enabled() {
            self.request_replan();
        }
    }

    /// The strategy in force.
    pub fn kind(&self) -> StrategyKind {
        self.snapshot.load().strategy.kind()
    }

    /// The current pool (cheap: one reference count).
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// The pool's backend with this URL, if any.
    pub fn find(&self, url: &BackendUrl) -> Option<Arc<Backend>> {
        self.snapshot
            .load()
            .backends
            .iter()
            .find(|b| &b.url == url)
            .cloned()
    }

    /// Removed backends with requests still in flight (finished ones are forgotten).
    pub fn draining(&self) -> Vec<Arc<Backend>> {
        let mut list = lock(&self.draining);
        list.retain(|b| b.in_flight() > 0);
        list.clone()
    }

    /// Requests in flight over the pool and the draining backends.
    pub fn total_in_flight(&self) -> u64 {
        let pool: u64 = self
            .snapshot
            .load()
            .backends
            .iter()
            .map(|b| b.in_flight())
            .sum();
        pool + self.draining().iter().map(|b| b.in_flight()).sum::<u64>()
    }

    fn publish(&self, backends: Vec<Arc<Backend>>) {
        let strategy = self.snapshot.load().strategy.clone();
        self.publish_with(backends, strategy);
    }

    fn publish_with(&self, backends: Vec<Arc<Backend>>, strategy: Arc<dyn Strategy>) {
        let plan = strategy.plan(&backends);
        let ready = (0..backends.len())
            .filter(|&i| backends[i].is_ready())
            .collect();
        // Relative to the smallest group, so that a pool whose names all have as many
        // endpoints (one each, the usual case) has every share at 1: no draw at pick time.
        let sizes = group_sizes(&backends);
        let smallest = (0..backends.len())
            .filter(|&i| backends[i].is_ready())
            .map(|i| sizes[i])
            .min()
            .unwrap_or(1);
        let shares = sizes
            .into_iter()
            .map(|k| smallest as f64 / k as f64)
            .collect();
        self.snapshot.store(Arc::new(Snapshot {
            backends,
            ready,
            shares,
            plan,
            strategy,
        }));
    }

    /// Rebuilds the strategy's plan over the current backends (after a weight or drain
    /// change), off the request path; picks in progress keep the plan they loaded.
    pub fn replan(&self) {
        let _w = lock(&self.write);
        let backends = self.snapshot.load().backends.clone();
        self.publish(backends);
    }
}

/// Per backend, how many ready endpoints its URL has (at least 1).
pub fn group_sizes(backends: &[Arc<Backend>]) -> Vec<usize> {
    let mut ready: HashMap<&BackendUrl, usize> = HashMap::new();
    for b in backends.iter().filter(|b| b.is_ready()) {
        *ready.entry(&b.url).or_default() += 1;
    }
    backends
        .iter()
        .map(|b| ready.get(&b.url).copied().unwrap_or(1).max(1))
        .collect()
}

impl Snapshot {
    /// Backend `i`'s weight in a share-based pick now: its URL's share (split over the URL's
    /// ready endpoints) times its slow-start ramp, in (0, 1].
    #[inline]
    pub fn factor(&self, i: usize) -> f64 {
        let share = self.shares.get(i).copied().unwrap_or(1.0);
        share * self.backends[i].ramp()
    }

    /// Whether a turn that fell on backend `i` is taken: with probability [`Snapshot::factor`].
    #[inline]
    pub fn admit(&self, i: usize) -> bool {
        let f = self.factor(i);
        f >= 1.0 || fastrand::f64() < f
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl LoadBalancer for Balancer {
    #[inline]
    fn next_valid_peer(&self, key: &RequestKey<'_>, tried: &Tried) -> Option<Lease> {
        let snap = self.snapshot.load();
        let index = snap.strategy.pick(&snap, key, tried)?;
        snap.backends.get(index).map(|b| Lease::new(b.clone()))
    }

    fn add_backend(&self, backend: Arc<Backend>) -> Result<(), PoolError> {
        let _w = lock(&self.write);
        let current = self.snapshot.load();
        // One URL may have several endpoints (a name with several addresses).
        if current
            .backends
            .iter()
            .any(|b| b.url == backend.url && b.addr == backend.addr)
        {
            return Err(PoolError::Duplicate(backend.name.clone()));
        }
        let mut next = current.backends.clone();
        next.push(backend);
        self.publish(next);
        Ok(())
    }

    fn remove_backend(&self, url: &BackendUrl) -> Result<Arc<Backend>, PoolError> {
        let _w = lock(&self.write);
        let current = self.snapshot.load();
        // Every endpoint of the URL leaves; the first one is returned.
        let (gone, next): (Vec<_>, Vec<_>) = current
            .backends
            .iter()
            .cloned()
            .partition(|b| &b.url == url);
        let Some(first) = gone.first().cloned() else {
            return Err(PoolError::NotFound(url.to_string()));
        };
        self.publish(next);
        for removed in gone {
            removed.disable();
            if removed.in_flight() > 0 {
                lock(&self.draining).push(removed);
            }
        }
        Ok(first)
    }

    fn set_backend_status(&self, backend: &Backend, seen: Observation) -> Option<Transition> {
        let transition = backend.observe(&seen, None, &self.thresholds.load())?;
        self.replan_if_member(backend);
        Some(transition)
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! Backends for selection tests, without sockets.
    use super::*;
    use crate::config::{BackendSpec, Timeouts};
    use std::net::SocketAddr;
    use std::time::Duration;

    /// An alive backend of URL `url` at `addr`.
    fn member(id: u64, url: &str, addr: SocketAddr, weight: u32) -> Arc<Backend> {
        let spec = BackendSpec {
            url: BackendUrl::parse(url).expect("test url"),
            weight,
            drained: false,
            protocol: Default::default(),
        };
        let timeouts = Timeouts {
            connect: Duration::from_secs(1),
            read: Duration::from_secs(1),
            websocket_idle: Duration::from_secs(1),
            keepalive: Duration::from_secs(60),
        };
        let token = cookie_token(b"test", &spec.url.to_string());
        let b = Arc::new(Backend::new(id, &spec, addr, &timeouts, token));
        b.set_alive(true);
        b
    }

    pub fn backend(id: u64, port: u16, weight: u32) -> Arc<Backend> {
        let url = format!("http://127.0.0.1:{port}");
        member(id, &url, ([127, 0, 0, 1], port).into(), weight)
    }

    /// Endpoint `id` of URL `http://name.test:<port>` at address `ip`:`port`.
    pub fn endpoint(id: u64, name: &str, ip: [u8; 4], port: u16) -> Arc<Backend> {
        member(id, &format!("http://{name}:{port}"), (ip, port).into(), 1)
    }

    pub fn balancer(kind: StrategyKind, weights: &[u32]) -> Balancer {
        let lb = Balancer::new(strategy(kind), 1, 1);
        for (i, w) in weights.iter().enumerate() {
            let b = backend(i as u64, 10_000 + i as u16, *w);
            lb.add_backend(b).expect("unique");
        }
        lb
    }

    /// Picks `n` times (releasing each lease) and counts picks per backend index.
    pub fn counts(lb: &Balancer, n: usize, key: &RequestKey<'_>) -> Vec<usize> {
        let snap = lb.snapshot();
        let mut counts = vec![0; snap.backends.len()];
        for _ in 0..n {
            let lease = lb
                .next_valid_peer(key, &Tried::default())
                .expect("a backend");
            let i = snap
                .backends
                .iter()
                .position(|b| b.id == lease.backend().id)
                .expect("from snapshot");
            counts[i] += 1;
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;

    #[test]
    fn no_ready_backend_gives_none_for_every_strategy() {
        for kind in StrategyKind::ALL {
            let lb = balancer(kind, &[1, 1]);
            for b in &lb.snapshot().backends {
                b.set_alive(false);
            }
            lb.replan();
            assert!(lb
                .next_valid_peer(&RequestKey::default(), &Tried::default())
                .is_none());
            let empty = balancer(kind, &[]);
            assert!(empty
                .next_valid_peer(&RequestKey::default(), &Tried::default())
                .is_none());
        }
    }

    #[test]
    fn tried_backends_are_skipped_by_every_strategy() {
        for kind in StrategyKind::ALL {
            let lb = balancer(kind, &[1, 1, 1]);
            let mut tried = Tried::default();
            let mut seen = Vec::new();
            for _ in 0..3 {
                let lease = lb
                    .next_valid_peer(&RequestKey::default(), &tried)
                    .expect("one left");
                assert!(
                    !seen.contains(&lease.backend().id),
                    "{kind:?} repeated a backend"
                );
                seen.push(lease.backend().id);
                tried.insert(lease.backend().id);
            }
            assert!(lb.next_valid_peer(&RequestKey::default(), &tried).is_none());
        }
    }

    #[test]
    fn leases_count_in_flight_and_release_on_drop() {
        let lb = balancer(StrategyKind::RoundRobin, &[1]);
        let b = lb.snapshot().backends[0].clone();
        let l1 = lb.next_valid_peer(&RequestKey::default(), &Tried::default());
        let l2 = lb.next_valid_peer(&RequestKey::default(), &Tried::default());
        assert_eq!(b.in_flight(), 2);
        drop(l1);
        assert_eq!(b.in_flight(), 1);
        drop(l2);
        assert_eq!(b.in_flight(), 0);
        assert_eq!(b.requests(), 2);
    }

    #[test]
    fn removed_backend_gets_nothing_new_but_keeps_its_leases() {
        let lb = balancer(StrategyKind::RoundRobin, &[1, 1]);
        let first = lb.snapshot().backends[0].clone();
        let lease = Lease::new(first.clone());
        lb.remove_backend(&first.url).expect("present");
        assert_eq!(lb.draining().len(), 1);
        for _ in 0..10 {
            let l = lb
                .next_valid_peer(&RequestKey::default(), &Tried::default())
                .expect("one");
            assert_ne!(l.backend().id, first.id);
        }
        assert!(matches!(
            lb.remove_backend(&first.url),
            Err(PoolError::NotFound(name)) if name == first.name
        ));
        drop(lease);
        assert!(lb.draining().is_empty());
    }

    #[test]
    fn duplicate_add_is_refused() {
        let lb = balancer(StrategyKind::RoundRobin, &[1]);
        let again = backend(99, 10_000, 1);
        assert!(matches!(
            lb.add_backend(again),
            Err(PoolError::Duplicate(_))
        ));
        assert_eq!(lb.snapshot().backends.len(), 1);
    }

    #[test]
    fn refused_marks_down_until_a_probe_passes() {
        let lb = balancer(StrategyKind::RoundRobin, &[1, 1]);
        let b = lb.snapshot().backends[0].clone();
        lb.set_backend_status(&b, Observation::Passed);
        let t = lb.set_backend_status(&b, Observation::Refused("connection refused".into()));
        assert_eq!(t, Some(Transition::Down));
        assert!(!b.is_ready());
        assert_eq!(b.health().reason.as_deref(), Some("connection refused"));
        assert_eq!(
            lb.set_backend_status(&b, Observation::Passed),
            Some(Transition::Up)
        );
        assert!(b.is_ready());
    }

    #[test]
    fn a_backend_back_from_down_ramps_but_the_starting_pool_does_not() {
        use std::time::Duration;
        let lb = Balancer::new(strategy(StrategyKind::RoundRobin), 1, 1)
            .with_resilience(OutlierDetection::default(), Duration::from_secs(3600));
        for i in 0..3 {
            let b = backend(i, 10_000 + i as u16, 1);
            b.set_alive(false);
            b.no_ramp_on_first_up();
            lb.add_backend(b).expect("unique");
        }
        let snap = lb.snapshot();
        for b in &snap.backends {
            lb.record_probe(b, b.probe_stamp(), Observation::Passed);
            assert_eq!(b.ramp(), 1.0, "first UP of the starting pool ramped");
        }
        let b = snap.backends[0].clone();
        lb.set_backend_status(&b, Observation::Refused("refused".into()));
        lb.record_probe(&b, b.probe_stamp(), Observation::Passed);
        assert!(b.is_ready() && b.ramp() < 0.2, "{}", b.ramp());
        let c = counts(&lb, 3000, &RequestKey::default());
        assert!(c[0] < 250, "a ramping backend got {c:?}");
    }

    #[test]
    fn a_name_s_endpoints_split_its_share_for_every_strategy() {
        let pool = |kind| {
            let lb = Balancer::new(strategy(kind), 1, 1);
            lb.swap_members(
                &[],
                vec![
                    endpoint(1, "a.test", [127, 0, 0, 2], 8080),
                    endpoint(2, "a.test", [127, 0, 0, 3], 8080),
                    endpoint(3, "b.test", [127, 0, 0, 4], 8080),
                ],
            );
            lb
        };
        // Turn-taking strategies: sequential picks.
        for kind in [
            StrategyKind::RoundRobin,
            StrategyKind::WeightedRoundRobin,
            StrategyKind::Cookie,
        ] {
            let c = counts(&pool(kind), 6000, &RequestKey::default());
            let (a, b) = (c[0] + c[1], c[2]);
            assert!(
                (2500..=3500).contains(&a) && (2500..=3500).contains(&b),
                "{kind:?}: name a {a} (endpoints {c:?}), name b {b}"
            );
            assert!(c[0] > 1000 && c[1] > 1000, "{kind:?}: {c:?}");
        }
        // Load-based strategies: requests held in flight spread by share.
        for kind in [StrategyKind::LeastConn, StrategyKind::P2cEwma] {
            let lb = pool(kind);
            let held: Vec<Lease> = (0..600)
                .filter_map(|_| lb.next_valid_peer(&RequestKey::default(), &Tried::default()))
                .collect();
            let on = |id| held.iter().filter(|l| l.backend().id == id).count();
            let (a, b) = (on(1) + on(2), on(3));
            assert!(
                (240..=360).contains(&a) && (240..=360).contains(&b),
                "{kind:?}: name a {a} ({} + {}), name b {b}",
                on(1),
                on(2)
            );
        }
    }
}
