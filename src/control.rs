//! The pool's write side, shared by start-up, the admin API, reloads and the DNS refresh:
//! builds backends from specs (one endpoint per address of the URL's host), persists every
//! change before it is acknowledged, then applies it to the balancer and probes new endpoints
//! at once.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use log::{info, warn};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use pingora::services::ServiceReadyNotifier;

use crate::backend::Backend;
use crate::balancer::{cookie_token, Balancer, LoadBalancer, PoolError};
use crate::config::{BackendSpec, BackendUrl, DnsConfig, Timeouts};
use crate::dns::{self, Resolver};
use crate::health::Prober;
use crate::store::PoolStore;

/// What looking up one host name gave: its addresses, or why there are none.
pub type Answer = Result<Vec<IpAddr>, String>;

/// Why a change was refused; each maps to one admin API status.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("{0}")]
    Pool(#[from] PoolError),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Store(String),
    #[error("the pool is read-only while the gateway upgrades or shuts down; retry against the new process")]
    Frozen,
}

/// The write side of the pool. Changes are serialised; each one is stored durably (when a
/// store is configured) before it is applied, and is acknowledged only once both are done.
/// A change that has started runs to completion even if its caller goes away, so the store
/// and the pool never disagree.
pub struct Control {
    balancer: Arc<Balancer>,
    prober: Arc<Prober>,
    store: Option<Arc<dyn PoolStore>>,
    /// For new backends; a reload changes it (and the backends in the pool).
    timeouts: std::sync::Mutex<Timeouts>,
    cookie_key: Vec<u8>,
    /// Resolves backend host names; a reload of `dns` swaps it.
    resolver: ArcSwap<Resolver>,
    next_id: AtomicU64,
    frozen: AtomicBool,
    /// Serialises changes so that the store and the pool see them in the same order.
    write: tokio::sync::Mutex<()>,
}

impl Control {
    /// A control over `balancer`; `store` (if any) receives the whole pool on every change.
    pub fn new(
        balancer: Arc<Balancer>,
        prober: Arc<Prober>,
        store: Option<Box<dyn PoolStore>>,
        timeouts: Timeouts,
        cookie_key: Vec<u8>,
    ) -> Control {
        Control {
            balancer,
            prober,
            store: store.map(Arc::from),
            timeouts: std::sync::Mutex::new(timeouts),
            cookie_key,
            resolver: ArcSwap::from_pointee(Resolver::new(&DnsConfig::default())),
            next_id: AtomicU64::new(1),
            frozen: AtomicBool::new(false),
            write: tokio::sync::Mutex::new(()),
        }
    }

    /// The balancer this control writes to.
    pub fn balancer(&self) -> &Arc<Balancer> {
        &self.balancer
    }

    /// The configured store, if any.
    pub fn store(&self) -> Option<&dyn PoolStore> {
        self.store.as_deref()
    }

    /// Refuses further changes (the listeners are moving to a new process, which has already
    /// loaded the stored pool). A change already past its checks still completes.
    pub fn freeze(&self) {
        self.frozen.store(true, Ordering::SeqCst);
    }

    /// Resolves host names with `resolver` from now on (start-up, and a reload of `dns`).
    pub fn set_resolver(&self, resolver: Resolver) {
        self.resolver.store(Arc::new(resolver));
    }

    fn backend_at(&self, spec: &BackendSpec, addr: SocketAddr) -> Arc<Backend> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let token = cookie_token(&self.cookie_key, &spec.url.to_string());
        let timeouts = self
            .timeouts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        Arc::new(Backend::new(id, spec, addr, &timeouts, token))
    }

    /// Uses `timeouts` for new backends and for new requests to every backend (a reload).
    pub fn set_timeouts(&self, timeouts: &Timeouts) {
        *self.timeouts.lock().unwrap_or_else(|p| p.into_inner()) = timeouts.clone();
        let pool = self.balancer.snapshot().backends.clone();
        for backend in pool.iter().chain(self.balancer.draining().iter()) {
            backend.set_timeouts(timeouts);
        }
    }

    /// The endpoints of `spec` for `answer`: one per address, or the DOWN placeholder with
    /// reason `cannot resolve <host>` when there is none.
    pub fn endpoints_from(&self, spec: &BackendSpec, answer: Answer) -> Vec<Arc<Backend>> {
        match answer {
            Ok(addrs) if !addrs.is_empty() => addrs
                .into_iter()
                .map(|ip| self.backend_at(spec, SocketAddr::new(ip, spec.url.port)))
                .collect(),
            Ok(_) => vec![self.unresolved(spec, "no address".into())],
            Err(why) => vec![self.unresolved(spec, why)],
        }
    }

    fn unresolved(&self, spec: &BackendSpec, why: String) -> Arc<Backend> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let token = cookie_token(&self.cookie_key, &spec.url.to_string());
        let timeouts = self
            .timeouts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let reason = format!("cannot resolve {} ({why})", spec.url.host);
        Arc::new(Backend::unresolved(id, spec, &timeouts, token, reason))
    }

    /// Looks up the host of `url` with the resolver in force.
    pub async fn lookup(&self, url: &BackendUrl) -> Answer {
        let resolver = self.resolver.load_full();
        resolver.lookup(&url.host).await
    }

    /// Puts the initial pool in place (no persistence: it came from the store or the file).
    /// Host names take their addresses from `answers` (looked up before, see
    /// [`Resolver::lookup_blocking`]); a name missing there or without an address becomes a
    /// DOWN placeholder that the DNS refresh retries.
    pub fn seed(
        &self,
        specs: &[BackendSpec],
        answers: &HashMap<String, Answer>,
    ) -> Result<(), String> {
        for spec in specs {
            let answer = match spec.url.host.parse::<IpAddr>() {
                Ok(ip) => Ok(vec![ip]),
                Err(_) => answers
                    .get(&spec.url.host)
                    .cloned()
                    .unwrap_or_else(|| Err("not looked up".into())),
            };
            for backend in self.endpoints_from(spec, answer) {
                backend.no_ramp_on_first_up();
                self.balancer
                    .add_backend(backend)
                    .map_err(|e| e.to_string())?;
            }
        }
        Ok(())
    }

    /// Probes new endpoints once and applies the verdicts (not placeholders, not removed ones).
    async fn probe_new(&self, backends: &[Arc<Backend>]) {
        let probes = backends
            .iter()
            .filter(|b| b.resolved)
            .map(|b| self.prober.probe_into(&self.balancer, b));
        futures::future::join_all(probes).await;
    }

    /// Makes the pool match the store again, for a process that loaded the store and then
    /// waited while another process could still change it (a graceful upgrade: the old process
    /// takes admin changes until it hands over its listeners). Backends gone from the store are
    /// removed (their requests in flight finish), new ones are added and probed at once,
    /// changed weights are replaced. Without a store or a stored pool it does nothing. Returns
    /// how many backends were added or removed. On error the pool may be partly resynced, but
    /// every backend in it is valid.
    pub async fn resync_from_store(&self) -> Result<usize, ControlError> {
        let Some(store) = self.store.clone() else {
            return Ok(0);
        };
        let loaded = tokio::task::spawn_blocking(move || store.load())
            .await
            .map_err(|e| ControlError::Store(format!("cannot load the pool: {e}")))?;
        let Some(specs) = loaded.map_err(|e| ControlError::Store(e.to_string()))? else {
            return Ok(0);
        };
        let changed = self.apply(&specs).await?;
        if changed > 0 {
            info!(
                "{}: pool resynced ({changed} backends added or removed)",
                self.describe_store()
            );
        }
        Ok(changed)
    }

    /// Makes the pool hold exactly `specs` (a configuration reload without a store, or a
    /// resync from the store): backends not in `specs` are removed (their requests in flight
    /// finish), new ones are added and probed at once (traffic only once a probe passes), a
    /// changed weight is set in place (counted as a removal and an addition). Nothing is stored. Returns how many backends were
    /// added or removed. On error the pool may be partly changed, but every backend in it is
    /// valid.
    pub async fn apply(&self, specs: &[BackendSpec]) -> Result<usize, ControlError> {
        let mut added = Vec::new();
        let mut changed = 0;
        {
            let _w = self.write.lock().await;
            if self.frozen.load(Ordering::SeqCst) {
                return Err(ControlError::Frozen);
            }
            let current = self.balancer.snapshot();
            let mut remove = Vec::new();
            let mut join = Vec::new();
            let mut seen_urls: Vec<&BackendUrl> = Vec::new();
            for backend in current.backends.iter() {
                let first = !seen_urls.contains(&&backend.url);
                if first {
                    seen_urls.push(&backend.url);
                }
                match specs.iter().find(|s| s.url == backend.url) {
                    None => {
                        remove.push(backend.id);
                        changed += usize::from(first);
                    }
                    Some(spec) if spec.weight != backend.weight() => {
                        // In place: the endpoint keeps its health, connections and counters;
                        // the new snapshot below replans with the new weight.
                        backend.set_weight(spec.weight);
                        changed += 2 * usize::from(first);
                    }
                    Some(_) => {}
                }
            }
            for spec in specs {
                if !current.backends.iter().any(|b| b.url == spec.url) {
                    let endpoints = self.endpoints_from(spec, self.lookup(&spec.url).await);
                    join.extend(endpoints.iter().cloned());
                    added.extend(endpoints);
                    changed += 1;
                }
            }
            self.balancer.swap_members(&remove, join);
        }
        self.probe_new(&added).await;
        Ok(changed)
    }

    /// Resolves every host name of the pool again and makes each URL's endpoints follow the
    /// answer: new addresses are probed first and then join (with the URL's weight), addresses
    /// gone from the answer leave and drain, a placeholder gives way to the addresses. A failed
    /// lookup changes nothing (a warning says so): a backend is never emptied by DNS. Returns
    /// how many endpoints joined or left.
    pub async fn refresh_names(&self) -> usize {
        let snapshot = self.balancer.snapshot();
        let mut named: Vec<BackendSpec> = Vec::new();
        for b in snapshot.backends.iter() {
            if !dns::is_literal(&b.url.host) && !named.iter().any(|s| s.url == b.url) {
                named.push(b.spec());
            }
        }
        drop(snapshot);
        let lookups = named.iter().map(|spec| async move {
            let answer = self.lookup(&spec.url).await;
            (spec, answer)
        });
        let answers = futures::future::join_all(lookups).await;
        let mut changed = 0;
        for (spec, answer) in answers {
            match answer {
                Ok(addrs) if !addrs.is_empty() => changed += self.follow(spec, addrs).await,
                Ok(_) => warn!(
                    "dns: {} has no address; {} keeps its endpoints",
                    spec.url.host, spec.url
                ),
                Err(why) => warn!(
                    "dns: cannot resolve {} ({why}); {} keeps its endpoints",
                    spec.url.host, spec.url
                ),
            }
        }
        changed
    }

    /// Makes the endpoints of `spec.url` the addresses `addrs` (see [`Control::refresh_names`]).
    async fn follow(&self, spec: &BackendSpec, addrs: Vec<IpAddr>) -> usize {
        let current: Vec<Arc<Backend>> = self
            .balancer
            .snapshot()
            .backends
            .iter()
            .filter(|b| b.url == spec.url)
            .cloned()
            .collect();
        let wanted: Vec<SocketAddr> = addrs
            .iter()
            .map(|ip| SocketAddr::new(*ip, spec.url.port))
            .collect();
        let new: Vec<Arc<Backend>> = wanted
            .iter()
            .filter(|a| !current.iter().any(|b| b.resolved && b.addr == **a))
            .map(|a| self.backend_at(spec, *a))
            .collect();
        let stale: Vec<&Arc<Backend>> = current
            .iter()
            .filter(|b| !b.resolved || !wanted.contains(&b.addr))
            .collect();
        if new.is_empty() && stale.is_empty() {
            return 0;
        }
        // Probed before they join: they take traffic as soon as they are in the pool.
        self.probe_new(&new).await;
        let _w = self.write.lock().await;
        if self.frozen.load(Ordering::SeqCst) {
            return 0;
        }
        // The URL may have been removed or changed meanwhile: follow only the pool as it is.
        let still: Vec<Arc<Backend>> = self
            .balancer
            .snapshot()
            .backends
            .iter()
            .filter(|b| b.url == spec.url)
            .cloned()
            .collect();
        if still.is_empty() || still.iter().any(|b| b.weight() != spec.weight) {
            return 0;
        }
        let remove: Vec<u64> = stale
            .iter()
            .filter(|b| still.iter().any(|s| s.id == b.id))
            .map(|b| b.id)
            .collect();
        for b in &new {
            info!("backend {}: new address from DNS", b.label());
        }
        for b in &stale {
            if b.resolved {
                info!(
                    "backend {}: address gone from DNS ({} requests in flight finish)",
                    b.label(),
                    b.in_flight()
                );
            }
        }
        let n = new.len() + remove.len();
        self.balancer.swap_members(&remove, new);
        n
    }

    fn describe_store(&self) -> String {
        self.store
            .as_ref()
            .map_or_else(String::new, |s| s.describe())
    }

    /// The pool's specs, one per URL (a name's endpoints share theirs), after `change`.
    fn specs_with(&self, change: impl FnOnce(&mut Vec<BackendSpec>)) -> Vec<BackendSpec> {
        let mut specs: Vec<BackendSpec> = Vec::new();
        for b in self.balancer.snapshot().backends.iter() {
            if !specs.iter().any(|s| s.url == b.url) {
                specs.push(b.spec());
            }
        }
        change(&mut specs);
        specs
    }

    /// Stores `specs` durably, off the async threads (the store fsyncs).
    async fn persist(&self, specs: Vec<BackendSpec>) -> Result<(), ControlError> {
        let Some(store) = self.store.clone() else {
            return Ok(());
        };
        tokio::task::spawn_blocking(move || store.save(&specs))
            .await
            .map_err(|e| ControlError::Store(format!("cannot save the pool: {e}")))?
            .map_err(|e| ControlError::Store(e.to_string()))
    }

    /// Adds a backend: stored, in the pool, then probed once before this returns (it takes
    /// traffic only once the probe passes). A host name becomes one endpoint per address, or
    /// a DOWN placeholder while it does not resolve (retried every `dns.refresh`). Errors:
    /// `Pool(Duplicate)`, `Store` (nothing changed), `Frozen`.
    pub async fn add(self: &Arc<Self>, spec: BackendSpec) -> Result<Arc<Backend>, ControlError> {
        let answer = self.lookup(&spec.url).await;
        let this = self.clone();
        let endpoints = detached(async move {
            let _w = this.write.lock().await;
            if this.frozen.load(Ordering::SeqCst) {
                return Err(ControlError::Frozen);
            }
            if this.balancer.find(&spec.url).is_some() {
                return Err(PoolError::Duplicate(spec.url.to_string()).into());
            }
            let endpoints = this.endpoints_from(&spec, answer);
            this.persist(this.specs_with(|v| v.push(spec.clone())))
                .await?;
            this.balancer.swap_members(&[], endpoints.clone());
            info!("backend {} added (weight {})", spec.url, spec.weight);
            Ok(endpoints)
        })
        .await?;
        self.probe_new(&endpoints).await;
        endpoints
            .into_iter()
            .next()
            .ok_or_else(|| ControlError::Invalid("the backend has no endpoint".into()))
    }

    /// Removes a backend: stored, then out of the pool. No new request goes to it once this
    /// returns; requests in flight to it finish. Errors: `Pool(NotFound)`, `Store` (nothing
    /// changed), `Frozen`.
    pub async fn remove(self: &Arc<Self>, url: &BackendUrl) -> Result<Arc<Backend>, ControlError> {
        let this = self.clone();
        let url = url.clone();
        detached(async move {
            let _w = this.write.lock().await;
            if this.frozen.load(Ordering::SeqCst) {
                return Err(ControlError::Frozen);
            }
            if this.balancer.find(&url).is_none() {
                return Err(PoolError::NotFound(url.to_string()).into());
            }
            this.persist(this.specs_with(|v| v.retain(|s| s.url != url)))
                .await?;
            let removed = this.balancer.remove_backend(&url)?;
            info!(
                "backend {} removed ({} requests in flight finish)",
                removed.name,
                removed.in_flight()
            );
            Ok(removed)
        })
        .await
    }
}

/// A one-shot background service for a process started with `-u`: once the listening sockets
/// have moved (it depends on the bootstrap service), it makes the pool match the store (the
/// old process took admin changes until the hand-over), then declares itself ready; the proxy
/// and the admin API depend on it. A failure is logged and the pool loaded at start-up kept:
/// the sockets have already moved, so refusing to serve is not an option.
pub struct StoreResync {
    control: Arc<Control>,
}

impl StoreResync {
    /// The service for `control`.
    pub fn new(control: Arc<Control>) -> StoreResync {
        StoreResync { control }
    }
}

#[async_trait::async_trait]
impl BackgroundService for StoreResync {
    async fn start_with_ready_notifier(
        &self,
        _shutdown: ShutdownWatch,
        ready: ServiceReadyNotifier,
    ) {
        if let Err(e) = self.control.resync_from_store().await {
            warn!("pool not resynced from the store after the upgrade: {e}");
        }
        ready.notify_ready();
    }
}

/// Runs `change` on its own task, so that it completes even if the caller is dropped
/// half-way (a change stored but not applied would make the store and the pool disagree).
async fn detached<T: Send + 'static>(
    change: impl std::future::Future<Output = Result<T, ControlError>> + Send + 'static,
) -> Result<T, ControlError> {
    tokio::spawn(change)
        .await
        .map_err(|e| ControlError::Store(format!("pool change failed: {e}")))?
}

/// A control over an empty round-robin pool, for unit tests here and in the admin API.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use crate::balancer::strategy;
    use crate::config::{HealthConfig, StrategyKind};
    use std::time::Duration;

    pub(crate) fn control(store: Option<Box<dyn PoolStore>>) -> Arc<Control> {
        let health = HealthConfig {
            interval: Duration::from_secs(10),
            path: None,
            timeout: Duration::from_millis(300),
            rise: 1,
            fall: 1,
            grpc: false,
        };
        let timeouts = Timeouts {
            connect: Duration::from_secs(1),
            read: Duration::from_secs(1),
            websocket_idle: Duration::from_secs(1),
        };
        Arc::new(Control::new(
            Arc::new(Balancer::new(strategy(StrategyKind::RoundRobin), 1, 1)),
            Arc::new(Prober::new(&health)),
            store,
            timeouts,
            b"k".to_vec(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::testing::control;
    use super::*;
    use crate::config::test_spec as spec;
    use crate::store::FileStore;

    fn pool(c: &Control) -> Vec<BackendSpec> {
        let mut specs: Vec<BackendSpec> = c
            .balancer()
            .snapshot()
            .backends
            .iter()
            .map(|b| b.spec())
            .collect();
        specs.sort_by_key(|s| s.url.to_string());
        specs
    }

    #[tokio::test]
    async fn resync_makes_the_pool_match_the_store() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.json");
        let c = control(Some(Box::new(FileStore::new(&path))));
        assert_eq!(c.resync_from_store().await.expect("nothing stored"), 0);
        c.seed(
            &[spec("http://127.0.0.1:1", 1), spec("http://127.0.0.1:2", 1)],
            &Default::default(),
        )
        .expect("seeded");
        let stored = vec![spec("http://127.0.0.1:2", 3), spec("http://127.0.0.1:3", 1)];
        FileStore::new(&path).save(&stored).expect("saved");
        assert_eq!(c.resync_from_store().await.expect("resynced"), 4);
        assert_eq!(pool(&c), stored);
        assert_eq!(c.resync_from_store().await.expect("resynced"), 0);
    }

    #[tokio::test]
    async fn refused_changes_leave_pool_and_store_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.json");
        let c = control(Some(Box::new(FileStore::new(&path))));
        c.seed(&[spec("http://127.0.0.1:1", 1)], &Default::default())
            .expect("seeded");
        assert!(matches!(
            c.add(spec("http://127.0.0.1:1", 2)).await,
            Err(ControlError::Pool(PoolError::Duplicate(_)))
        ));
        assert!(matches!(
            c.remove(&spec("http://127.0.0.1:2", 1).url).await,
            Err(ControlError::Pool(PoolError::NotFound(_)))
        ));
        assert!(!path.exists(), "a refused change was stored");
        c.remove(&spec("http://127.0.0.1:1", 1).url)
            .await
            .expect("removed");
        assert_eq!(
            FileStore::new(&path).load().expect("stored"),
            Some(Vec::new())
        );
        c.freeze();
        assert!(matches!(
            c.add(spec("http://127.0.0.1:5", 1)).await,
            Err(ControlError::Frozen)
        ));
        assert!(pool(&c).is_empty());
    }
}
