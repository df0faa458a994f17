//! The backends of the pool: identity, health and enabled state, and the atomic in-flight
//! count whose decrement is structural (a [`Lease`] dropped with the request's context).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use pingora::upstreams::peer::HttpPeer;

use crate::config::{BackendSpec, BackendUrl, Timeouts};
use crate::health::{Health, Tracker};

/// One endpoint of a backend: one socket address, with its own health, in-flight count and
/// probes. A backend URL with an IP address is one endpoint; a URL with a host name is one
/// endpoint per address the name resolves to, all sharing the URL (its identity is the pair
/// `(url, addr)`), or one unresolved placeholder while the name resolves to nothing.
/// Shared by the pool snapshot, leases in flight and the health checker.
///
/// Two independent flags decide traffic: `alive` (set by health checks and by the proxy on a
/// refused connection) and `enabled` (cleared when an operator removes it). A backend is
/// `ready` only when both hold.
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
    pub weight: u32,
    /// Opaque, keyed token naming this backend in the sticky cookie.
    pub cookie_token: String,
    /// Swapped whole when a reload changes `timeouts`.
    peer: ArcSwap<HttpPeer>,
    alive: AtomicBool,
    enabled: AtomicBool,
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
        set_peer_timeouts(&mut peer, timeouts);
        peer.options.verify_cert = true;
        peer.options.verify_hostname = true;
        Backend {
            id,
            name: spec.url.to_string(),
            url: spec.url.clone(),
            addr,
            resolved: true,
            weight: spec.weight,
            cookie_token,
            peer: ArcSwap::from_pointee(peer),
            alive: AtomicBool::new(false),
            enabled: AtomicBool::new(true),
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
            weight: self.weight,
        }
    }

    /// Healthy and not removed: may receive new requests.
    #[inline]
    pub fn is_ready(&self) -> bool {
        self.alive.load(Ordering::Relaxed) && self.enabled.load(Ordering::Relaxed)
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

    /// Takes over `from`'s health (flag and record): a backend replaced by a reload (new
    /// weight) keeps taking traffic without waiting for a probe.
    pub fn inherit_health(&self, from: &Backend) {
        *self.health() = from.health().clone();
        self.set_alive(from.is_alive());
    }

    /// A fresh peer for one request (Pingora takes it boxed).
    #[inline]
    pub fn peer(&self) -> Box<HttpPeer> {
        Box::new(HttpPeer::clone(&self.peer.load()))
    }

    /// Uses `timeouts` for the connections of requests that start from now on (a reload).
    pub fn set_timeouts(&self, timeouts: &Timeouts) {
        let mut peer = HttpPeer::clone(&self.peer.load());
        set_peer_timeouts(&mut peer, timeouts);
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

fn set_peer_timeouts(peer: &mut HttpPeer, timeouts: &Timeouts) {
    peer.options.connection_timeout = Some(timeouts.connect);
    peer.options.total_connection_timeout = Some(timeouts.connect * 2);
    peer.options.read_timeout = Some(timeouts.read);
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
