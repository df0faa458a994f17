//! A backend of the pool and everything Portico knows about it, in one home below both the
//! balancer (which picks among backends) and the active checker (which probes them): identity,
//! the flags that decide traffic, health ([`health`]), what probes and the proxy observed
//! ([`observe`]), outlier ejection ([`outlier`]), slow start ([`ramp`]), latency ([`ewma`]) and
//! the in-flight count whose decrement is structural (a [`Lease`] dropped with the request).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Instant, SystemTime};

use pingora::upstreams::peer::HttpPeer;

use crate::config::{BackendSpec, BackendUrl, Timeouts};
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

/// One backend server. Shared by the pool snapshot, leases in flight and the health checker.
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
    weight: AtomicU32,
    /// Opaque, keyed token naming this backend in the sticky cookie.
    pub cookie_token: String,
    peer: HttpPeer,
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
        let tls = spec.url.is_tls();
        // Always the URL's host: Pingora skips certificate verification when the SNI is
        // empty. For an IP address rustls sends no SNI and checks the certificate's IP SAN.
        let sni = if tls {
            spec.url.host.clone()
        } else {
            String::new()
        };
        let mut peer = HttpPeer::new(addr, tls, sni);
        peer.options.connection_timeout = Some(timeouts.connect);
        peer.options.total_connection_timeout = Some(timeouts.connect * 2);
        peer.options.read_timeout = Some(timeouts.read);
        peer.options.verify_cert = true;
        peer.options.verify_hostname = true;
        Backend {
            id,
            name: spec.url.to_string(),
            url: spec.url.clone(),
            addr,
            weight: AtomicU32::new(spec.weight),
            cookie_token,
            peer,
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

    pub fn spec(&self) -> BackendSpec {
        BackendSpec {
            url: self.url.clone(),
            weight: self.weight(),
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
        Box::new(self.peer.clone())
    }

    /// The health record; poisoning is recovered, the record stays consistent field by field.
    pub fn health(&self) -> MutexGuard<'_, HealthRecord> {
        self.health.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn health_state(&self) -> Health {
        self.health().tracker.health()
    }
}
