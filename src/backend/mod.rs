//! A backend of the pool and everything Portico knows about it, in one home below both the
//! balancer (which picks among backends) and the active checker (which probes them): identity,
//! the flags that decide traffic, health ([`health`]), what probes and the proxy observed
//! ([`observe`]), outlier ejection ([`outlier`]), slow start ([`ramp`]), latency ([`ewma`]) and
//! the in-flight count whose decrement is structural (a [`Lease`] dropped with the request).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwap;
use std::time::{Instant, SystemTime};

use pingora::upstreams::peer::HttpPeer;

use crate::config::{BackendSpec, BackendUrl, Protocol, Timeouts};
pub mod clock;
mod ewma;
mod health;
mod lease;
mod observe;
mod outlier;
mod ramp;

pub use health::{Health, Tracker, Transition};
pub use lease::{Lease, Tried};
pub use observe::Observation;
pub use outlier::OutlierDetection;

/// How observations turn into health: `rise` passes bring a DOWN backend UP, `fall` failures
/// take an UP one DOWN, and a backend that becomes UP ramps over `slow_start` (zero: off).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    pub rise: u32,
    pub fall: u32,
    pub slow_start: std::time::Duration,
}

/// One endpoint of a backend: one socket address, with its own health, in-flight count,
/// probes, ejection and slow-start state. A backend URL with an IP address is one endpoint; a
/// URL with a host name is one endpoint per address the name resolves to, all sharing the URL
/// (an endpoint's identity is the pair `(url, addr)`), or one unresolved placeholder while the
/// name resolves to nothing. Shared by the pool snapshot, leases in flight and the checker.
///
/// Three independent flags decide traffic: `alive` (set by health checks, by the proxy on a
/// refused connection and by outlier ejection), `enabled` (cleared when an operator removes
/// it) and `drained` (set by an operator who keeps it in the pool but sends it nothing new). A
/// backend is `ready` only when it is alive, enabled and not drained.
pub struct Backend {
    /// Unique for the life of the process, also across remove and re-add of the same URL.
    pub id: u64,
    pub url: BackendUrl,
    /// `url` as text, normalised (what `/status` and logs show).
    pub name: String,
    pub addr: SocketAddr,
    /// `false` for the placeholder of a name that does not resolve: never probed, never ready,
    /// DOWN with the reason; the DNS refresh replaces it once the name resolves.
    pub resolved: bool,
    weight: AtomicU32,
    pub protocol: Protocol,
    /// Opaque, keyed token naming this backend in the sticky cookie.
    pub cookie_token: String,
    /// Swapped whole when a reload changes `timeouts`.
    peer: ArcSwap<HttpPeer>,
    alive: AtomicBool,
    enabled: AtomicBool,
    drained: AtomicBool,
    pub(crate) in_flight: AtomicU64,
    pub(crate) requests: AtomicU64,
    errors: AtomicU64,
    /// Failures in a row seen by the proxy (outlier detection); a success resets it.
    consecutive_errors: AtomicU32,
    /// Bumped at every passive DOWN: a probe stamped with an older value is stale.
    probe_epoch: AtomicU64,
    /// When the slow-start ramp began ([`clock::now_ns`]); 0 when not ramping.
    up_since_ns: AtomicU64,
    /// The length of the current ramp, in nanoseconds.
    ramp_len_ns: AtomicU64,
    /// Whether the first UP (from pending) ramps: not for the pool a process starts with,
    /// which takes its first traffic all together (ramping everyone ramps no one).
    ramp_first_up: AtomicBool,
    /// Peak-EWMA latency (f64 bits, nanoseconds) and when it was last updated (0: never).
    ewma_ns: AtomicU64,
    ewma_at_ns: AtomicU64,
    health: Mutex<HealthRecord>,
}

/// Health bookkeeping kept off the request path: the rise/fall tracker and the last change.
#[derive(Debug, Clone)]
pub struct HealthRecord {
    pub tracker: Tracker,
    pub changed_at: SystemTime,
    pub reason: Option<String>,
    pub last_probe: Option<SystemTime>,
    /// Set while the backend is ejected: probes before this instant are ignored.
    pub ejected_until: Option<Instant>,
    /// Ejections in a row (the next ejection lasts `base x (this + 1)`, capped).
    pub ejections: u32,
    /// When the backend last came back from an ejection (resets `ejections` once it has stayed
    /// back for the longest ejection time).
    pub returned_at: Option<Instant>,
}

impl Backend {
    /// Builds a backend whose connections use `timeouts`. It starts `Pending` (not alive) until
    /// its first probe, so no request meets a backend nobody has checked.
    pub fn new(
        id: u64,
        spec: &BackendSpec,
        addr: SocketAddr,
        timeouts: &Timeouts,
        cookie_token: String,
    ) -> Backend {
        let peer = crate::peer::peer_for(spec, addr, timeouts);
        Backend {
            id,
            name: spec.url.to_string(),
            url: spec.url.clone(),
            addr,
            resolved: true,
            weight: AtomicU32::new(spec.weight),
            protocol: spec.protocol,
            cookie_token,
            peer: ArcSwap::from_pointee(peer),
            alive: AtomicBool::new(false),
            enabled: AtomicBool::new(true),
            drained: AtomicBool::new(false),
            in_flight: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            consecutive_errors: AtomicU32::new(0),
            probe_epoch: AtomicU64::new(0),
            up_since_ns: AtomicU64::new(0),
            ramp_len_ns: AtomicU64::new(0),
            ramp_first_up: AtomicBool::new(true),
            ewma_ns: AtomicU64::new(0),
            ewma_at_ns: AtomicU64::new(0),
            health: Mutex::new(HealthRecord {
                tracker: Tracker::default(),
                changed_at: SystemTime::now(),
                reason: None,
                last_probe: None,
                ejected_until: None,
                ejections: 0,
                returned_at: None,
            }),
        }
    }

    /// The placeholder of `spec` whose host name does not resolve (`reason` says why): in the
    /// pool so that `/status` shows it DOWN, never ready, never probed.
    pub fn unresolved(
        id: u64,
        spec: &BackendSpec,
        timeouts: &Timeouts,
        cookie_token: String,
        reason: String,
    ) -> Backend {
        let addr = SocketAddr::from(([0, 0, 0, 0], spec.url.port));
        let mut backend = Backend::new(id, spec, addr, timeouts, cookie_token);
        backend.resolved = false;
        backend.enabled.store(false, Ordering::Relaxed);
        {
            let mut record = backend.health();
            record.tracker.force_down();
            record.reason = Some(reason);
        }
        backend
    }

    /// The URL, and the address when the host is a name: how logs name one endpoint.
    pub fn label(&self) -> String {
        if !self.resolved {
            format!("{} (unresolved)", self.name)
        } else if self.url.host.parse::<std::net::IpAddr>().is_ok() {
            self.name.clone()
        } else {
            format!("{} ({})", self.name, self.addr)
        }
    }

    pub fn spec(&self) -> BackendSpec {
        BackendSpec {
            url: self.url.clone(),
            weight: self.weight(),
            protocol: self.protocol,
        }
    }

    /// The configured weight (changed at runtime by an operator).
    #[inline]
    pub fn weight(&self) -> u32 {
        self.weight.load(Ordering::Relaxed)
    }

    /// Sets the weight; the balancer must replan for weighted schedules to follow.
    pub fn set_weight(&self, weight: u32) {
        self.weight.store(weight, Ordering::Relaxed);
    }

    /// Healthy, not removed and not drained: may receive new requests.
    #[inline]
    pub fn is_ready(&self) -> bool {
        self.alive.load(Ordering::Relaxed)
            && self.enabled.load(Ordering::Relaxed)
            && !self.drained.load(Ordering::Relaxed)
    }

    /// Kept in the pool and probed, but given no new requests (an operator's drain).
    pub fn is_drained(&self) -> bool {
        self.drained.load(Ordering::Relaxed)
    }

    /// Drains (`true`) or re-enables (`false`) the backend; the balancer must replan.
    pub fn set_drained(&self, drained: bool) {
        self.drained.store(drained, Ordering::Relaxed);
    }

    #[inline]
    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Relaxed)
    }

    pub fn is_enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// Sets the health flag directly, bypassing the rise/fall tracker (benchmarks and tests
    /// build ready pools with it; the health checker goes through `set_backend_status`).
    pub fn set_alive(&self, alive: bool) {
        self.alive.store(alive, Ordering::Relaxed);
    }

    pub(crate) fn disable(&self) {
        self.enabled.store(false, Ordering::Relaxed);
    }

    #[inline]
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    pub fn count_error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// A fresh peer for one request (Pingora takes it boxed).
    #[inline]
    pub fn peer(&self) -> Box<HttpPeer> {
        Box::new(HttpPeer::clone(&self.peer.load()))
    }

    /// Uses `timeouts` for the connections of requests that start from now on (a reload).
    pub fn set_timeouts(&self, timeouts: &Timeouts) {
        let mut peer = HttpPeer::clone(&self.peer.load());
        crate::peer::set_timeouts(&mut peer, timeouts);
        self.peer.store(Arc::new(peer));
    }

    /// The health record; poisoning is recovered, the record stays consistent field by field.
    pub fn health(&self) -> MutexGuard<'_, HealthRecord> {
        self.health.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn health_state(&self) -> Health {
        self.health().tracker.health()
    }
}
