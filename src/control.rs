//! The pool's write side, shared by start-up and the admin API: builds backends from specs
//! (resolving their address), persists every change before it is acknowledged, then applies
//! it to the balancer and probes new backends at once.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use log::{info, warn};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use pingora::services::ServiceReadyNotifier;

use crate::backend::Backend;
use crate::balancer::{cookie_token, Balancer, LoadBalancer, PoolError};
use crate::config::{BackendSpec, BackendUrl, Timeouts};
use crate::health::Prober;
use crate::store::PoolStore;

/// How long resolving the host of a backend added at runtime may take.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

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
    timeouts: Timeouts,
    cookie_key: Vec<u8>,
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
            timeouts,
            cookie_key,
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

    /// A new backend object for `spec`; fails when its host does not resolve.
    pub fn build_backend(&self, spec: &BackendSpec) -> Result<Arc<Backend>, String> {
        Ok(self.backend_at(spec, spec.url.resolve()?))
    }

    fn backend_at(&self, spec: &BackendSpec, addr: SocketAddr) -> Arc<Backend> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let token = cookie_token(&self.cookie_key, &spec.url.to_string());
        Arc::new(Backend::new(id, spec, addr, &self.timeouts, token))
    }

    /// Puts the initial pool in place (no persistence: it came from the store or the file).
    pub fn seed(&self, specs: &[BackendSpec]) -> Result<(), String> {
        for spec in specs {
            let backend = self.build_backend(spec)?;
            backend.no_ramp_on_first_up();
            self.balancer
                .add_backend(backend)
                .map_err(|e| e.to_string())?;
        }
        Ok(())
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
        let mut added = Vec::new();
        let mut changed = 0;
        {
            let _w = self.write.lock().await;
            for current in self.balancer.snapshot().backends.iter() {
                if !specs.contains(&current.spec()) {
                    self.balancer.remove_backend(&current.url)?;
                    changed += 1;
                }
            }
            for spec in &specs {
                if self.balancer.find(&spec.url).is_none() {
                    let addr = resolve(&spec.url).await?;
                    let backend = self.backend_at(spec, addr);
                    self.balancer.add_backend(backend.clone())?;
                    added.push(backend);
                    changed += 1;
                }
            }
        }
        if changed > 0 {
            info!(
                "{}: pool resynced ({changed} backends added or removed)",
                self.describe_store()
            );
        }
        for backend in added {
            self.prober.probe_into(&self.balancer, &backend).await;
        }
        Ok(changed)
    }

    fn describe_store(&self) -> String {
        self.store
            .as_ref()
            .map_or_else(String::new, |s| s.describe())
    }

    fn specs_with(&self, change: impl FnOnce(&mut Vec<BackendSpec>)) -> Vec<BackendSpec> {
        let mut specs: Vec<BackendSpec> = self
            .balancer
            .snapshot()
            .backends
            .iter()
            .map(|b| b.spec())
            .collect();
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
    /// traffic only once the probe passes). Errors: `Invalid` when the host does not resolve,
    /// `Pool(Duplicate)`, `Store` (nothing changed), `Frozen`.
    pub async fn add(self: &Arc<Self>, spec: BackendSpec) -> Result<Arc<Backend>, ControlError> {
        let addr = resolve(&spec.url).await?;
        let this = self.clone();
        let backend = detached(async move {
            let _w = this.write.lock().await;
            if this.frozen.load(Ordering::SeqCst) {
                return Err(ControlError::Frozen);
            }
            if this.balancer.find(&spec.url).is_some() {
                return Err(PoolError::Duplicate(spec.url.to_string()).into());
            }
            let backend = this.backend_at(&spec, addr);
            this.persist(this.specs_with(|v| v.push(spec.clone())))
                .await?;
            this.balancer.add_backend(backend.clone())?;
            info!(
                "backend {} added (weight {})",
                backend.name,
                backend.weight()
            );
            Ok(backend)
        })
        .await?;
        self.prober.probe_into(&self.balancer, &backend).await;
        Ok(backend)
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

/// Resolves a backend's host off the async threads, bounded by [`RESOLVE_TIMEOUT`].
async fn resolve(url: &BackendUrl) -> Result<SocketAddr, ControlError> {
    let owned = url.clone();
    let lookup = tokio::task::spawn_blocking(move || owned.resolve());
    match tokio::time::timeout(RESOLVE_TIMEOUT, lookup).await {
        Ok(Ok(result)) => result.map_err(ControlError::Invalid),
        Ok(Err(e)) => Err(ControlError::Invalid(format!("cannot resolve {url}: {e}"))),
        Err(_) => Err(ControlError::Invalid(format!(
            "cannot resolve {url}: no answer within {}s",
            RESOLVE_TIMEOUT.as_secs()
        ))),
    }
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
        };
        let timeouts = Timeouts {
            connect: Duration::from_secs(1),
            read: Duration::from_secs(1),
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
        c.seed(&[spec("http://127.0.0.1:1", 1), spec("http://127.0.0.1:2", 1)])
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
        c.seed(&[spec("http://127.0.0.1:1", 1)]).expect("seeded");
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
