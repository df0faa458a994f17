//! The backends of the pool: identity, health and enabled state, and the atomic in-flight
//! count whose decrement is structural (a [`Lease`] dropped with the request's context).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use pingora::upstreams::peer::HttpPeer;

use crate::config::{BackendSpec, BackendUrl, Timeouts};
use crate::health::{Health, Tracker};

/// One backend server. Shared by the pool snapshot, leases in flight and the health checker.
///
/// Three independent flags decide traffic: `alive` (set by health checks and by the proxy on a
/// refused connection), `enabled` (cleared when an operator removes it) and `drained` (set and
/// cleared by an operator through `PATCH /backends`; a drained backend stays in the pool and is
/// still probed). A backend is `ready` when it is alive, enabled and not drained.
pub struct Backend {
    /// Unique for the life of the process, also across remove and re-add of the same URL.
    pub id: u64,
    pub url: BackendUrl,
    /// `url` as text, normalised (what `/status` and logs show).
    pub name: String,
    pub addr: SocketAddr,
    /// Changed at runtime by `PATCH /backends`; strategies read it when they (re)plan.
    weight: AtomicU32,
    /// Opaque, keyed token naming this backend in the sticky cookie.
    pub cookie_token: String,
    peer: HttpPeer,
    alive: AtomicBool,
    enabled: AtomicBool,
    drained: AtomicBool,
    in_flight: AtomicU64,
    requests: AtomicU64,
    errors: AtomicU64,
    health: Mutex<HealthRecord>,
}

/// Health bookkeeping kept off the request path: the rise/fall tracker and the last change.
#[derive(Debug, Clone)]
pub struct HealthRecord {
    pub tracker: Tracker,
    pub changed_at: SystemTime,
    pub reason: Option<String>,
    pub last_probe: Option<SystemTime>,
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
            drained: AtomicBool::new(spec.drained),
            in_flight: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            health: Mutex::new(HealthRecord {
                tracker: Tracker::default(),
                changed_at: SystemTime::now(),
                reason: None,
                last_probe: None,
            }),
        }
    }

    pub fn spec(&self) -> BackendSpec {
        BackendSpec {
            url: self.url.clone(),
            weight: self.weight(),
            drained: self.is_drained(),
        }
    }

    /// Healthy, not removed and not drained: may receive new requests.
    #[inline]
    pub fn is_ready(&self) -> bool {
        self.alive.load(Ordering::Relaxed)
            && self.enabled.load(Ordering::Relaxed)
            && !self.drained.load(Ordering::Relaxed)
    }

    /// The weight strategies plan with.
    #[inline]
    pub fn weight(&self) -> u32 {
        self.weight.load(Ordering::Relaxed)
    }

    /// Changes the weight; takes effect at the balancer's next plan (`Balancer::replan`).
    pub fn set_weight(&self, weight: u32) {
        self.weight.store(weight, Ordering::Relaxed);
    }

    /// Drained by an operator: no new request, requests in flight finish, probes go on.
    pub fn is_drained(&self) -> bool {
        self.drained.load(Ordering::Relaxed)
    }

    /// Drains (`true`) or enables (`false`) the backend; pick-time readiness checks see it at
    /// once, plans that list ready backends after `Balancer::replan`.
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

/// A request's claim on a backend: +1 in flight when taken, -1 when dropped, whatever path
/// the request ends by (success, error, timeout, client gone, retried elsewhere).
pub struct Lease {
    backend: Arc<Backend>,
}

impl Lease {
    pub fn new(backend: Arc<Backend>) -> Lease {
        backend.in_flight.fetch_add(1, Ordering::Relaxed);
        backend.requests.fetch_add(1, Ordering::Relaxed);
        Lease { backend }
    }

    pub fn backend(&self) -> &Arc<Backend> {
        &self.backend
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.backend.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The backends one request has already tried, so a retry goes elsewhere. Fixed size: no
/// allocation on the request path.
#[derive(Debug, Default, Clone)]
pub struct Tried {
    ids: [u64; Tried::CAPACITY],
    len: usize,
}

impl Tried {
    pub const CAPACITY: usize = 17;

    #[inline]
    pub fn contains(&self, id: u64) -> bool {
        self.ids[..self.len].contains(&id)
    }

    pub fn insert(&mut self, id: u64) {
        if self.len < Self::CAPACITY && !self.contains(id) {
            self.ids[self.len] = id;
            self.len += 1;
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}
