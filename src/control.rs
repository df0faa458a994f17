//! The pool's write side, shared by start-up and the admin API: builds backends from specs
//! (resolving their address), persists every change before it is acknowledged, then applies
//! it to the balancer and probes new backends at once.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use log::info;

use crate::balancer::{cookie_token, Balancer, LoadBalancer, PoolError};
use crate::config::{BackendSpec, BackendUrl, Timeouts};
use crate::health::Prober;
use crate::pool::Backend;
use crate::store::PoolStore;

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

pub struct Control {
    balancer: Arc<Balancer>,
    prober: Arc<Prober>,
    store: Option<Box<dyn PoolStore>>,
    timeouts: Timeouts,
    cookie_key: Vec<u8>,
    next_id: AtomicU64,
    frozen: AtomicBool,
    /// Serialises changes so that the store and the pool see them in the same order.
    write: tokio::sync::Mutex<()>,
}

impl Control {
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
            store,
            timeouts,
            cookie_key,
            next_id: AtomicU64::new(1),
            frozen: AtomicBool::new(false),
            write: tokio::sync::Mutex::new(()),
        }
    }

    pub fn balancer(&self) -> &Arc<Balancer> {
        &self.balancer
    }

    pub fn store(&self) -> Option<&dyn PoolStore> {
        self.store.as_deref()
    }

    /// Refuses further changes (the listeners are moving to a new process, which has already
    /// loaded the stored pool).
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

    fn persist(&self, specs: &[BackendSpec]) -> Result<(), ControlError> {
        match &self.store {
            Some(store) => store
                .save(specs)
                .map_err(|e| ControlError::Store(e.to_string())),
            None => Ok(()),
        }
    }

    /// Adds a backend: stored, in the pool, then probed once (it takes traffic only if the
    /// probe passes).
    pub async fn add(&self, spec: BackendSpec) -> Result<Arc<Backend>, ControlError> {
        let backend = {
            let _w = self.write.lock().await;
            if self.frozen.load(Ordering::SeqCst) {
                return Err(ControlError::Frozen);
            }
            if self.balancer.find(&spec.url).is_some() {
                return Err(PoolError::Duplicate(spec.url.to_string()).into());
            }
            let url = spec.url.clone();
            let addr = tokio::task::spawn_blocking(move || url.resolve())
                .await
                .map_err(|e| ControlError::Invalid(e.to_string()))?
                .map_err(ControlError::Invalid)?;
            let backend = self.backend_at(&spec, addr);
            self.persist(&self.specs_with(|v| v.push(spec.clone())))?;
            self.balancer.add_backend(backend.clone())?;
            info!("backend {} added (weight {})", backend.name, backend.weight);
            backend
        };
        let seen = self.prober.probe(&backend).await;
        if backend.is_enabled() {
            self.balancer.set_backend_status(&backend, seen);
        }
        Ok(backend)
    }

    /// Removes a backend: stored, then out of the pool; requests in flight to it finish.
    pub async fn remove(&self, url: &BackendUrl) -> Result<Arc<Backend>, ControlError> {
        let _w = self.write.lock().await;
        if self.frozen.load(Ordering::SeqCst) {
            return Err(ControlError::Frozen);
        }
        if self.balancer.find(url).is_none() {
            return Err(PoolError::NotFound(url.to_string()).into());
        }
        self.persist(&self.specs_with(|v| v.retain(|s| &s.url != url)))?;
        let removed = self.balancer.remove_backend(url)?;
        info!(
            "backend {} removed ({} requests in flight finish)",
            removed.name,
            removed.in_flight()
        );
        Ok(removed)
    }
}
