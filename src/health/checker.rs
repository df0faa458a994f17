//! The health checker: a Pingora `BackgroundService` that probes every backend of the pool
//! each interval (concurrently, bounded) and feeds the results to the balancer.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use log::debug;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use pingora::services::ServiceReadyNotifier;

use super::Prober;
use crate::balancer::{Balancer, LoadBalancer};

/// Probes in flight at once; with the probe timeout this bounds a round's length.
pub const MAX_CONCURRENT_PROBES: usize = 512;

pub struct HealthChecker {
    balancer: Arc<Balancer>,
    prober: Arc<Prober>,
    interval: Duration,
}

impl HealthChecker {
    pub fn new(balancer: Arc<Balancer>, prober: Arc<Prober>, interval: Duration) -> Self {
        HealthChecker {
            balancer,
            prober,
            interval,
        }
    }

    /// Probes the pool as it is now; each result is applied as soon as it arrives.
    pub async fn round(&self) {
        let backends = self.balancer.snapshot().backends.clone();
        let ids: Vec<u64> = backends.iter().map(|b| b.id).collect();
        self.prober.retain(&ids);
        futures::stream::iter(backends)
            .for_each_concurrent(MAX_CONCURRENT_PROBES, |b| async move {
                let seen = self.prober.probe(&b).await;
                if b.is_enabled() {
                    self.balancer.set_backend_status(&b, seen);
                }
            })
            .await;
    }
}

#[async_trait]
impl BackgroundService for HealthChecker {
    /// Runs a first round before declaring itself ready, so the proxy (which depends on this
    /// service) takes no traffic before every backend has been probed once; then one round
    /// per interval until shutdown, which interrupts a round or a wait at once.
    async fn start_with_ready_notifier(
        &self,
        mut shutdown: ShutdownWatch,
        ready: ServiceReadyNotifier,
    ) {
        tokio::select! {
            _ = self.round() => {}
            _ = shutdown.changed() => return,
        }
        ready.notify_ready();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.interval) => {}
                _ = shutdown.changed() => break,
            }
            tokio::select! {
                _ = self.round() => {}
                _ = shutdown.changed() => break,
            }
        }
        debug!("health checker stopped");
    }
}
