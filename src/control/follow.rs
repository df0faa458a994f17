//! Pool changes that come from the configuration and from DNS rather than from the admin API:
//! a reload's `backends` (without a store) and the re-resolution of host names, whose
//! endpoints follow the answers.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use log::{info, warn};

use super::{Control, ControlError};
use crate::backend::Backend;
use crate::config::{BackendSpec, BackendUrl};
use crate::dns;

impl Control {
    /// Makes the pool hold exactly `specs` (a configuration reload without a store): backends not in `specs` are removed (their requests in flight
    /// finish), new ones are added and probed at once (traffic only once a probe passes), a
    /// changed weight is set in place (counted as a removal and an addition). Nothing is stored. Returns how many backends were
    /// added or removed. On error the pool may be partly changed, but every backend in it is
    /// valid.
    pub async fn apply(&self, specs: &[BackendSpec]) -> Result<usize, ControlError> {
        let mut added = Vec::new();
        let mut changed = 0;
        {
            let _w = self.applied.lock().await;
            if !self.phase().is_serving() {
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
        let current = self.endpoints(&spec.url);
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
        let _w = self.applied.lock().await;
        if !self.phase().is_serving() {
            return 0;
        }
        // The URL may have been removed or changed meanwhile: follow only the pool as it is.
        let still = self.endpoints(&spec.url);
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
}
