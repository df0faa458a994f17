//! The pool's write side, shared by start-up and the admin API: builds backends from specs
//! (resolving their address), persists every change before it is acknowledged, then applies
//! it to the balancer and probes new backends at once.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use log::info;

use crate::balancer::{cookie_token, Balancer, LoadBalancer, PoolError};
use crate::config::{BackendSpec, BackendUrl, Timeouts};
use crate::health::Prober;
use crate::pool::Backend;
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
            self.balancer
                .add_backend(backend)
                .map_err(|e| e.to_string())?;
        }
        Ok(())
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
            info!("backend {} added (weight {})", backend.name, backend.weight);
            Ok(backend)
        })
        .await?;
        let seen = self.prober.probe(&backend).await;
        if backend.is_enabled() {
            self.balancer.set_backend_status(&backend, seen);
        }
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
