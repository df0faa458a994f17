//! The pool's write side, shared by start-up, the admin API, the store's watch, reloads and the
//! DNS refresh: owns the store, what of it this process has applied, and the process's
//! [`Phase`]. A backend URL becomes one endpoint per address of its host (a DOWN placeholder
//! while the name does not resolve). A change is
//! committed to the store (conditioned on what this process last applied) before it is applied
//! to the balancer and acknowledged; changes made by other instances arrive through the
//! watch ([`StoreWatch`]) and are applied the same way (new backends probed at once, removed
//! ones drained).

mod follow;
mod phase;
mod sync;

pub use phase::{Phase, PhaseCell};
pub use sync::{StoreResync, StoreWatch};

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use log::{info, warn};
use serde_json::{json, Value};

use crate::backend::Backend;
use crate::balancer::{cookie_token, Balancer, LoadBalancer, PoolError};
use crate::config::{BackendSpec, BackendUrl, DnsConfig, Timeouts};
use crate::dns::Resolver;
use crate::health::Prober;
use crate::store::{Basis, Change, CommitError, Entry, Event, Loaded, Store, StoredPool};

/// What looking up one host name gave: its addresses, or why there are none.
pub type Answer = Result<Vec<IpAddr>, String>;

/// How many times a write is retried after the store changed under it (each retry follows a
/// full resync, so a retry only repeats when yet another writer got in first).
const COMMIT_ATTEMPTS: usize = 3;

/// Why a change was refused; each maps to one admin API status.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("{0}")]
    Pool(#[from] PoolError),
    #[error("{0}")]
    Invalid(String),
    /// The store failed the write (500); the message says whether the change was made.
    #[error("{0}")]
    Store(String),
    /// The store cannot be reached or this process is not in sync with it (503): nothing changed.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Other writers kept changing the same backend (409): nothing changed.
    #[error("backend {0} was changed concurrently by another instance; retry")]
    Conflict(String),
    #[error("the pool is read-only while the gateway upgrades or shuts down; retry against the new process")]
    Frozen,
}

/// What this process has applied of the store. Guarded by the write lock: changes (local
/// commits, watched events, resyncs) are applied one at a time, in the store's order.
#[derive(Debug, Default)]
struct Applied {
    /// Every store change up to this revision is applied.
    revision: u64,
    /// Per backend URL, the revision of the last change applied to it (a removal is kept as a
    /// tombstone), so that an event older than what is applied is never replayed.
    keys: HashMap<String, u64>,
    /// False after a failed or interrupted resync, or a lost watch: the pool may be partial
    /// or stale, so writes are refused until a full resync succeeds.
    synced: bool,
}

/// The store's health as `/status` shows it.
#[derive(Debug, Default, Clone)]
struct Link {
    connected: bool,
    last_error: Option<String>,
}

/// A runtime change to a backend that stays in the pool (`PATCH /backends`); `None` leaves
/// that property as it is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BackendChange {
    /// The new weight (already validated).
    pub weight: Option<u32>,
    /// `Some(true)` drains the backend, `Some(false)` takes it back into service.
    pub drained: Option<bool>,
}

/// The write side of the pool. Changes are serialised; each one is committed to the store
/// (when there is one) before it is applied, and is acknowledged only once both are done. A
/// change that has started runs to completion even if its caller goes away, so the store and
/// the pool never disagree.
pub struct Control {
    balancer: Arc<Balancer>,
    prober: Arc<Prober>,
    store: Option<Arc<dyn Store>>,
    /// For new backends; a reload changes it (and the backends in the pool).
    timeouts: Mutex<Timeouts>,
    cookie_key: Vec<u8>,
    /// Resolves backend host names; a reload of `dns` swaps it.
    resolver: ArcSwap<Resolver>,
    next_id: AtomicU64,
    phase: Arc<PhaseCell>,
    /// The write lock and what it protects.
    applied: tokio::sync::Mutex<Applied>,
    link: Mutex<Link>,
    /// Serialises writes of the store's local copy.
    remembering: tokio::sync::Mutex<()>,
    /// Serialises `PATCH`es, each read-modify-write of a backend's spec, so that two at once
    /// (a weight and a drain) cannot undo each other.
    patching: tokio::sync::Mutex<()>,
}

impl Control {
    /// A control over `balancer` whose source of truth is `store` (none: memory only).
    pub fn new(
        balancer: Arc<Balancer>,
        prober: Arc<Prober>,
        store: Option<Arc<dyn Store>>,
        timeouts: Timeouts,
        cookie_key: Vec<u8>,
    ) -> Control {
        Control {
            balancer,
            prober,
            store,
            timeouts: Mutex::new(timeouts),
            cookie_key,
            resolver: ArcSwap::from_pointee(Resolver::new(&DnsConfig::default())),
            next_id: AtomicU64::new(1),
            phase: Arc::new(PhaseCell::default()),
            applied: tokio::sync::Mutex::new(Applied {
                synced: true,
                ..Applied::default()
            }),
            link: Mutex::new(Link {
                connected: true,
                last_error: None,
            }),
            remembering: tokio::sync::Mutex::new(()),
            patching: tokio::sync::Mutex::new(()),
        }
    }

    /// The balancer this control writes to.
    pub fn balancer(&self) -> &Arc<Balancer> {
        &self.balancer
    }

    /// The configured store, if any.
    pub fn store(&self) -> Option<&Arc<dyn Store>> {
        self.store.as_ref()
    }

    /// The process's phase: `Serving` until a graceful upgrade starts handing the listening
    /// sockets over (`HandingOver`) or a `SIGTERM` starts the shutdown (`ShuttingDown`). Only
    /// `Serving` takes admin changes; readiness (`/readyz`) is `phase().is_serving()`.
    pub fn phase(&self) -> Phase {
        self.phase.get()
    }

    /// The shared phase cell, for the request path (one atomic load per read).
    pub fn phase_cell(&self) -> Arc<PhaseCell> {
        self.phase.clone()
    }

    /// Enters `HandingOver` and returns once no change is in progress: from then on no change
    /// is acknowledged by this process, so every acknowledged change is in the store before
    /// the new process (which resyncs after receiving the sockets) reads it. Call it before
    /// the sockets are sent.
    pub async fn begin_hand_over(&self) {
        if self.phase.leave_serving(Phase::HandingOver) {
            info!("handing the listening sockets over; admin changes now go to the new process");
        }
        // A change past its phase check holds this lock until it is committed and applied.
        drop(self.applied.lock().await);
    }

    /// Enters `ShuttingDown` (unless handing over already): admin changes are refused.
    pub fn begin_shutdown(&self) {
        if self.phase.leave_serving(Phase::ShuttingDown) {
            info!("shutting down: admin changes refused and /readyz answers 503 from now on");
        }
    }

    /// Resolves host names with `resolver` from now on (start-up, and a reload of `dns`).
    pub fn set_resolver(&self, resolver: Resolver) {
        self.resolver.store(Arc::new(resolver));
    }

    fn timeouts(&self) -> Timeouts {
        self.timeouts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn backend_at(&self, spec: &BackendSpec, addr: SocketAddr) -> Arc<Backend> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let token = cookie_token(&self.cookie_key, &spec.url.to_string());
        Arc::new(Backend::new(id, spec, addr, &self.timeouts(), token))
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
        let reason = format!("cannot resolve {} ({why})", spec.url.host);
        Arc::new(Backend::unresolved(
            id,
            spec,
            &self.timeouts(),
            token,
            reason,
        ))
    }

    /// Looks up the host of `url` with the resolver in force (an IP literal answers itself).
    pub async fn lookup(&self, url: &BackendUrl) -> Answer {
        let resolver = self.resolver.load_full();
        resolver.lookup(&url.host).await
    }

    /// The endpoints of every spec, looked up all at once.
    async fn endpoints_of(&self, specs: &[&BackendSpec]) -> Vec<Arc<Backend>> {
        let answers = futures::future::join_all(specs.iter().map(|s| self.lookup(&s.url))).await;
        specs
            .iter()
            .zip(answers)
            .flat_map(|(spec, answer)| self.endpoints_from(spec, answer))
            .collect()
    }

    /// Puts `specs` in the pool as they are (nothing stored): tests, and [`Control::start`].
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
            if self.balancer.find(&spec.url).is_some() {
                return Err(PoolError::Duplicate(spec.url.to_string()).to_string());
            }
            let endpoints = self.endpoints_from(spec, answer);
            for backend in &endpoints {
                backend.no_ramp_on_first_up();
            }
            self.balancer.swap_members(&[], endpoints);
        }
        Ok(())
    }

    /// Puts the pool the process starts from in place (before any runtime or listener).
    pub fn start(&self, loaded: &Loaded, answers: &HashMap<String, Answer>) -> Result<(), String> {
        self.seed(&loaded.pool.specs(), answers)?;
        let mut applied = self
            .applied
            .try_lock()
            .map_err(|_| "the pool is already in use".to_string())?;
        *applied = Applied {
            revision: loaded.pool.revision,
            keys: keys_of(&loaded.pool),
            synced: loaded.synced,
        };
        if !loaded.synced {
            self.set_link(false, Some("not yet in sync with the store".into()));
        }
        Ok(())
    }

    /// The pool's specs, one per URL (a name's endpoints share theirs), in pool order.
    pub fn specs(&self) -> Vec<BackendSpec> {
        let mut specs: Vec<BackendSpec> = Vec::new();
        for b in self.balancer.snapshot().backends.iter() {
            if !specs.iter().any(|s| s.url == b.url) {
                specs.push(b.spec());
            }
        }
        specs
    }

    /// Every endpoint of `url` in the pool.
    pub(crate) fn endpoints(&self, url: &BackendUrl) -> Vec<Arc<Backend>> {
        self.balancer
            .snapshot()
            .backends
            .iter()
            .filter(|b| &b.url == url)
            .cloned()
            .collect()
    }

    /// The ids of every endpoint of `url` in the pool.
    fn endpoint_ids(&self, url: &BackendUrl) -> Vec<u64> {
        self.endpoints(url).iter().map(|b| b.id).collect()
    }

    /// The store's part of `/status`: kind, where it is, whether it is reachable and in sync,
    /// the revision applied and the last error.
    pub fn store_status(&self) -> Value {
        let Some(store) = &self.store else {
            return json!({ "kind": "memory" });
        };
        let link = self.link();
        let (revision, synced) = match self.applied.try_lock() {
            Ok(a) => (Some(a.revision), Some(a.synced)),
            // A change is being applied right now: report the link only.
            Err(_) => (None, None),
        };
        let mut v = json!({
            "kind": store.kind(),
            "connected": link.connected,
            "synced": synced,
            "revision": revision,
            "last_error": link.last_error,
        });
        if let (Value::Object(map), Value::Object(info)) = (&mut v, store.info()) {
            map.extend(info);
        }
        v
    }

    fn link(&self) -> Link {
        self.link.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set_link(&self, connected: bool, error: Option<String>) {
        let mut link = self.link.lock().unwrap_or_else(|p| p.into_inner());
        if link.connected && !connected {
            warn!(
                "{}: unavailable ({}); serving the last pool applied, admin changes refused",
                self.describe_store(),
                error.as_deref().unwrap_or("unknown error")
            );
        } else if !link.connected && connected {
            info!("{}: available again", self.describe_store());
        }
        link.connected = connected;
        if error.is_some() || connected {
            link.last_error = error;
        }
    }

    /// Records that the store is reachable (the watch is established).
    pub(crate) fn store_reachable(&self) {
        self.set_link(true, None);
    }

    /// Records that the store cannot be reached, and that the pool must be resynced before
    /// any further write (changes may be missed meanwhile).
    pub(crate) async fn store_lost(&self, error: String) {
        self.applied.lock().await.synced = false;
        self.set_link(false, Some(error));
    }

    fn describe_store(&self) -> String {
        self.store
            .as_ref()
            .map_or_else(|| "memory".to_string(), |s| s.describe())
    }

    /// The revision up to which every store change is applied.
    pub async fn applied_revision(&self) -> u64 {
        self.applied.lock().await.revision
    }

    /// Makes the pool match the store (full read): backends gone from the store are removed
    /// (their requests in flight finish), new ones are added and probed at once, changed ones
    /// are replaced. All or nothing: every new backend is resolved before anything is applied;
    /// on failure nothing changes and writes stay refused until a resync succeeds. Without a
    /// store it does nothing. Returns how many backends were added or removed.
    pub async fn resync(&self) -> Result<usize, ControlError> {
        let mut applied = self.applied.lock().await;
        let (changed, added) = self.resync_locked(&mut applied).await?;
        drop(applied);
        self.probe_all(added);
        Ok(changed)
    }

    async fn resync_locked(
        &self,
        applied: &mut Applied,
    ) -> Result<(usize, Vec<Arc<Backend>>), ControlError> {
        let Some(store) = self.store.clone() else {
            return Ok((0, Vec::new()));
        };
        let pool = match store.load().await {
            Ok(pool) => pool,
            Err(e) => {
                applied.synced = false;
                self.set_link(false, Some(e.to_string()));
                return Err(ControlError::Unavailable(e.to_string()));
            }
        };
        let specs = pool.specs();
        let current = self.specs();
        // Everything that can fail has been done: apply the whole difference at once. A name
        // that does not resolve here becomes a DOWN placeholder, not a failure.
        let gone: Vec<&BackendSpec> = current.iter().filter(|c| !specs.contains(c)).collect();
        let new_specs: Vec<&BackendSpec> = specs.iter().filter(|s| !current.contains(s)).collect();
        let fresh = self.endpoints_of(&new_specs).await;
        let remove: Vec<u64> = gone
            .iter()
            .flat_map(|c| self.endpoint_ids(&c.url))
            .collect();
        for c in &gone {
            if !new_specs.iter().any(|n| n.url == c.url) {
                info!("backend {} removed (by another instance)", c.url);
            }
        }
        for n in &new_specs {
            info!(
                "backend {} added (weight {}, by another instance)",
                n.url, n.weight
            );
        }
        let changed = gone.len() + new_specs.len();
        self.balancer.swap_members(&remove, fresh.clone());
        *applied = Applied {
            revision: pool.revision,
            keys: keys_of(&pool),
            synced: true,
        };
        self.set_link(true, None);
        if changed > 0 {
            info!(
                "{}: pool resynced at revision {} ({changed} backends added or removed)",
                self.describe_store(),
                pool.revision
            );
            self.remember(pool.revision).await;
        }
        Ok((changed, fresh))
    }

    /// Applies changes made by other writers, in the store's order. An event at or below what
    /// is applied (already seen, or made by this process) is skipped. On failure the pool is
    /// marked out of sync (the caller resyncs).
    pub async fn apply_events(&self, events: Vec<Event>) -> Result<(), ControlError> {
        let mut applied = self.applied.lock().await;
        let mut added = Vec::new();
        let mut changed = false;
        for event in events {
            let (url, revision) = match &event {
                Event::Put(e) => (e.spec.url.to_string(), e.revision),
                Event::Delete { url, revision } => (url.to_string(), *revision),
            };
            let seen = applied.keys.get(&url).copied().unwrap_or(0);
            if revision <= applied.revision || revision <= seen {
                applied.revision = applied.revision.max(revision);
                continue;
            }
            match event {
                Event::Put(entry) => {
                    let current = self.balancer.find(&entry.spec.url);
                    if current.as_ref().is_none_or(|b| b.spec() != entry.spec) {
                        let answer = self.lookup(&entry.spec.url).await;
                        let endpoints = self.endpoints_from(&entry.spec, answer);
                        let remove = self.endpoint_ids(&entry.spec.url);
                        self.balancer.swap_members(&remove, endpoints.clone());
                        info!(
                            "backend {} added (weight {}, by another instance)",
                            entry.spec.url, entry.spec.weight
                        );
                        added.extend(endpoints);
                        changed = true;
                    }
                }
                Event::Delete { url: u, .. } => {
                    if let Ok(removed) = self.balancer.remove_backend(&u) {
                        info!(
                            "backend {} removed (by another instance; {} requests in flight finish)",
                            removed.name,
                            removed.in_flight()
                        );
                        changed = true;
                    }
                }
            }
            applied.keys.insert(url, revision);
            applied.revision = applied.revision.max(revision);
        }
        let revision = applied.revision;
        drop(applied);
        self.probe_all(added);
        if changed {
            self.remember(revision).await;
        }
        Ok(())
    }

    /// Updates the store's local copy (etcd's cache file) with the pool as applied now. Copies
    /// are written one at a time, each from the pool as it is when its turn comes, so a copy
    /// never replaces a newer one. Once handing over, the new process keeps the copy.
    async fn remember(&self, revision: u64) {
        if let Some(store) = &self.store {
            if self.phase() == Phase::HandingOver {
                return;
            }
            let _turn = self.remembering.lock().await;
            let pool = StoredPool {
                revision,
                backends: self
                    .specs()
                    .into_iter()
                    .map(|spec| Entry { spec, revision })
                    .collect(),
            };
            store.remember(&pool).await;
        }
    }

    /// Probes each new backend once, in the background; it takes traffic once it passes.
    fn probe_all(&self, added: Vec<Arc<Backend>>) {
        for backend in added.into_iter().filter(|b| b.resolved) {
            let (prober, balancer) = (self.prober.clone(), self.balancer.clone());
            tokio::spawn(async move { prober.probe_into(&balancer, &backend).await });
        }
    }

    /// Adds a backend: committed to the store, in the pool, then probed once before this
    /// returns (it takes traffic once it passes). A host name becomes one endpoint per address,
    /// or a DOWN placeholder while it does not resolve (retried every `dns.refresh`). Errors:
    /// `Pool(Duplicate)`, `Conflict`, `Unavailable`, `Frozen` (nothing changed); `Store` (the
    /// message says whether the change was made).
    pub async fn add(self: &Arc<Self>, spec: BackendSpec) -> Result<Arc<Backend>, ControlError> {
        let answer = self.lookup(&spec.url).await;
        let this = self.clone();
        let endpoints = detached(async move {
            let change = Change::Add(spec.clone());
            let endpoints = this.endpoints_from(&spec, answer);
            let apply = || -> Result<(), ControlError> {
                this.balancer.swap_members(&[], endpoints.clone());
                info!("backend {} added (weight {})", spec.url, spec.weight);
                Ok(())
            };
            this.commit(change, apply).await?;
            Ok(endpoints)
        })
        .await?;
        self.probe_new(&endpoints).await;
        endpoints
            .into_iter()
            .next()
            .ok_or_else(|| ControlError::Invalid("the backend has no endpoint".into()))
    }

    /// Probes new endpoints once and applies the verdicts (not placeholders, not removed ones).
    async fn probe_new(&self, backends: &[Arc<Backend>]) {
        let probes = backends
            .iter()
            .filter(|b| b.resolved)
            .map(|b| self.prober.probe_into(&self.balancer, b));
        futures::future::join_all(probes).await;
    }

    /// Removes a backend: committed to the store, then out of the pool. Requests in flight to
    /// it finish. Errors as for [`Control::add`], with `Pool(NotFound)`.
    pub async fn remove(self: &Arc<Self>, url: &BackendUrl) -> Result<Arc<Backend>, ControlError> {
        let this = self.clone();
        let url = url.clone();
        detached(async move {
            let removed = Arc::new(Mutex::new(None));
            let slot = removed.clone();
            let target = url.clone();
            let apply = || -> Result<(), ControlError> {
                let b = this.balancer.remove_backend(&target)?;
                info!(
                    "backend {} removed ({} requests in flight finish)",
                    b.name,
                    b.in_flight()
                );
                *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(b);
                Ok(())
            };
            this.commit(Change::Remove(url.clone()), apply).await?;
            let b = removed.lock().unwrap_or_else(|p| p.into_inner()).take();
            b.ok_or_else(|| PoolError::NotFound(url.to_string()).into())
        })
        .await
    }

    /// Changes a backend in place (every endpoint of its URL): committed to the store, then
    /// applied, then the strategy's plan is rebuilt (off the request path) so that a new
    /// weight or drain state counts from the next pick. A drained backend keeps being probed
    /// and keeps its requests in flight; it gets no new one. Returns the URL's first endpoint.
    /// Errors: `Invalid` (an empty change), `Pool(NotFound)`, and as for [`Control::add`].
    pub async fn patch(
        self: &Arc<Self>,
        url: &BackendUrl,
        change: BackendChange,
    ) -> Result<Arc<Backend>, ControlError> {
        if change == BackendChange::default() {
            return Err(ControlError::Invalid(
                "nothing to change: give \"weight\" and/or \"state\"".into(),
            ));
        }
        let this = self.clone();
        let url = url.clone();
        detached(async move {
            let _patching = this.patching.lock().await;
            let Some(current) = this.balancer.find(&url) else {
                return Err(PoolError::NotFound(url.to_string()).into());
            };
            let before = current.spec();
            let mut after = before.clone();
            if let Some(w) = change.weight {
                after.weight = w;
            }
            if let Some(d) = change.drained {
                after.drained = d;
            }
            let target = after.clone();
            let balancer = this.balancer.clone();
            let apply = move || -> Result<(), ControlError> {
                let snapshot = balancer.snapshot();
                let endpoints: Vec<&Arc<Backend>> = snapshot
                    .backends
                    .iter()
                    .filter(|b| b.url == target.url)
                    .collect();
                for b in &endpoints {
                    b.set_weight(target.weight);
                    b.set_drained(target.drained);
                }
                balancer.replan();
                if before.weight != target.weight {
                    info!(
                        "backend {} weight {} -> {}",
                        target.url, before.weight, target.weight
                    );
                }
                let in_flight: u64 = endpoints.iter().map(|b| b.in_flight()).sum();
                match (before.drained, target.drained) {
                    (false, true) => info!(
                        "backend {} draining ({in_flight} requests in flight finish; probes go on)",
                        target.url
                    ),
                    (true, false) => {
                        info!("backend {} enabled (takes new requests again)", target.url)
                    }
                    _ => {}
                }
                Ok(())
            };
            this.commit(Change::Update(after), apply).await?;
            this.balancer
                .find(&url)
                .ok_or_else(|| PoolError::NotFound(url.to_string()).into())
        })
        .await
    }

    /// Commits `change` to the store, then runs `apply` (which changes the balancer), all
    /// under the write lock. The change is checked against the pool first; when the store
    /// moved on since this process last applied it, the pool is resynced and the check and
    /// commit repeated.
    async fn commit(
        &self,
        change: Change,
        apply: impl FnOnce() -> Result<(), ControlError>,
    ) -> Result<(), ControlError> {
        let mut applied = self.applied.lock().await;
        if !self.phase().is_serving() {
            return Err(ControlError::Frozen);
        }
        slow_commit_for_tests().await;
        let Some(store) = self.store.clone() else {
            self.check(&change)?;
            return apply();
        };
        let mut added = Vec::new();
        if !applied.synced {
            added.extend(self.resync_locked(&mut applied).await?.1);
        }
        let url = change.url().to_string();
        // Ok((revision, warning)): committed at `revision` (warning: durability unconfirmed).
        let mut committed: Result<(u64, Option<String>), ControlError> =
            Err(ControlError::Conflict(url.clone()));
        for _ in 0..COMMIT_ATTEMPTS {
            if let Err(e) = self.check(&change) {
                committed = Err(e);
                break;
            }
            let basis = Basis {
                revision: applied.revision,
                key_revision: self
                    .balancer
                    .find(change.url())
                    .and_then(|_| applied.keys.get(&url).copied()),
            };
            match store.commit(basis, &change).await {
                Ok(revision) => {
                    committed = Ok((revision, None));
                    break;
                }
                Err(CommitError::Uncertain { revision, message }) => {
                    committed = Ok((revision, Some(message)));
                    break;
                }
                Err(CommitError::Conflict) => match self.resync_locked(&mut applied).await {
                    Ok((_, fresh)) => added.extend(fresh),
                    Err(e) => {
                        committed = Err(e);
                        break;
                    }
                },
                Err(CommitError::Unavailable(m)) => {
                    applied.synced = false;
                    self.set_link(false, Some(m.clone()));
                    committed = Err(ControlError::Unavailable(m));
                    break;
                }
                Err(CommitError::Failed(m)) => {
                    committed = Err(ControlError::Store(m));
                    break;
                }
            }
        }
        let outcome = committed.and_then(|(revision, warning)| {
            self.applied_locally(&mut applied, &url, revision, apply)?;
            match warning {
                None => Ok(()),
                Some(m) => Err(ControlError::Store(format!(
                    "{m} (the change is made and applied; do not repeat it)"
                ))),
            }
        });
        let revision = applied.revision;
        drop(applied);
        self.probe_all(added);
        if outcome.is_ok() {
            self.remember(revision).await;
        }
        outcome
    }

    /// Refuses a change the pool as applied already rules out.
    fn check(&self, change: &Change) -> Result<(), ControlError> {
        let present = self.balancer.find(change.url()).is_some();
        match change {
            Change::Add(spec) if present => Err(PoolError::Duplicate(spec.url.to_string()).into()),
            Change::Remove(url) | Change::Update(BackendSpec { url, .. }) if !present => {
                Err(PoolError::NotFound(url.to_string()).into())
            }
            _ => Ok(()),
        }
    }

    /// Records a change this process committed at `revision`, then applies it.
    fn applied_locally(
        &self,
        applied: &mut Applied,
        url: &str,
        revision: u64,
        apply: impl FnOnce() -> Result<(), ControlError>,
    ) -> Result<(), ControlError> {
        applied.keys.insert(url.to_string(), revision);
        // Nothing can have happened in between when the revision is the next one.
        if revision == applied.revision + 1 {
            applied.revision = revision;
        }
        apply()
    }
}

/// Debug builds only: waits `PORTICO_TEST_COMMIT_DELAY_MS` between the phase check and the
/// commit, so that tests can hold a change in flight while the process hands over (the race
/// that `begin_hand_over` closes is otherwise a few microseconds wide).
async fn slow_commit_for_tests() {
    #[cfg(debug_assertions)]
    if let Some(ms) = std::env::var("PORTICO_TEST_COMMIT_DELAY_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
}

fn keys_of(pool: &StoredPool) -> HashMap<String, u64> {
    pool.backends
        .iter()
        .map(|e| (e.spec.url.to_string(), e.revision))
        .collect()
}

/// Runs `change` on its own task, so that it completes even if the caller is dropped
/// half-way (a change committed but not applied would make the store and the pool disagree).
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

    pub(crate) fn control(store: Option<Arc<dyn Store>>) -> Arc<Control> {
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
            keepalive: Duration::from_secs(60),
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
mod tests;
