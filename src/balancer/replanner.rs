//! The replanner: a background service that rebuilds the balancer's plan when asked, so that
//! a proxy worker that saw a backend fail (or the health checker) never rebuilds a weighted
//! schedule or a ring on its own thread. Requests that arrive in between pick from the
//! previous plan, which strategies re-check for readiness at pick time.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use super::Balancer;

/// Rebuilds `balancer`'s plan whenever [`Balancer::request_replan`] asks; several requests
/// that arrive during one rebuild are served by the next one.
pub struct Replanner {
    balancer: Arc<Balancer>,
}

impl Replanner {
    /// The service for `balancer`.
    pub fn new(balancer: Arc<Balancer>) -> Replanner {
        Replanner { balancer }
    }

    /// Runs until `stop` resolves.
    pub async fn run(&self, stop: impl std::future::Future<Output = ()>) {
        let lb = &self.balancer;
        lb.replanner.store(true, Ordering::Release);
        // A request made before the flag was set replanned inline; one more costs nothing.
        lb.replan();
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = lb.replan_wanted.notified() => lb.replan(),
                _ = &mut stop => break,
            }
        }
        lb.replanner.store(false, Ordering::Release);
    }
}

#[async_trait]
impl BackgroundService for Replanner {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        self.run(async move {
            let _ = shutdown.changed().await;
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Observation;
    use crate::balancer::testing::balancer;
    use crate::balancer::LoadBalancer;
    use crate::config::StrategyKind;
    use std::time::Duration;

    #[tokio::test]
    async fn a_flip_is_replanned_by_the_service_not_inline() {
        let lb = Arc::new(balancer(StrategyKind::WeightedRoundRobin, &[1, 1]));
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let service = Replanner::new(lb.clone());
        let task = tokio::spawn(async move {
            service
                .run(async move {
                    let _ = stop_rx.await;
                })
                .await
        });
        while !lb.replanner.load(Ordering::Acquire) {
            tokio::task::yield_now().await;
        }
        let b = lb.snapshot().backends[0].clone();
        lb.set_backend_status(&b, Observation::Refused("refused".into()));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while lb.snapshot().ready != vec![1] {
            assert!(tokio::time::Instant::now() < deadline, "never replanned");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let _ = stop_tx.send(());
        task.await.expect("replanner ends");
        assert!(!lb.replanner.load(Ordering::Acquire));
    }
}
