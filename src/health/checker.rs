//! The health checker: a Pingora `BackgroundService` that probes every backend of the pool
//! each interval and feeds each result to the balancer as soon as it arrives.
//!
//! # Scheduling
//! Every `health_check_frequency` (a tick, measured from tick to tick, not from the end of a
//! round) the checker reads the pool *as it is at that moment* (runtime additions and removals
//! included) and starts one probe task for every backend that has no probe in flight. Probe
//! tasks are independent: nothing waits for the slowest, so a backend that hangs until the
//! probe timeout never delays the verdict on the others, even when the timeout is longer than
//! the interval. A backend whose previous probe is still running is skipped at that tick, so
//! probes never pile up on a hanging backend.
//!
//! At most [`MAX_CONCURRENT_PROBES`] probes run at once (each holds a socket); the timeout of
//! a probe starts when it gets its turn. A tick over N backends that all hang therefore ends
//! within `ceil(N / 512) x timeout`: 1,000 backends with the default 2 s timeout take at most
//! 4 s, within the default 10 s interval; backends that answer or refuse take milliseconds.
//!
//! Why not a round that awaits all its probes before the next one starts (a bounded
//! `for_each_concurrent`)? A single hanging backend would then stretch every round to the
//! timeout and slow down failure detection for the whole pool. Why not one timer task per
//! backend? It isolates backends just as well but must be spawned and cancelled on every
//! pool change; reading the pool snapshot at each tick has one source of truth.
//!
//! # Start-up and shutdown
//! The first tick runs before the service declares itself ready and waits for all its probes
//! (each bounded by the timeout), so the proxy, which depends on this service, binds its
//! listener only once every configured backend has a verdict. On shutdown the loop stops at
//! once and probes in flight are cancelled.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use log::debug;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use pingora::services::ServiceReadyNotifier;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};

use super::Prober;
use crate::backend::Backend;
use crate::balancer::Balancer;

/// Probes in flight at once. Each holds one socket (raise `LimitNOFILE` to well above this
/// plus the expected client connections).
pub const MAX_CONCURRENT_PROBES: usize = 512;

/// The background service that keeps every backend's health current.
pub struct HealthChecker {
    balancer: Arc<Balancer>,
    prober: Arc<Prober>,
    /// `health_check_frequency`; a reload sends the new one and the next tick follows it.
    interval: Arc<watch::Sender<Duration>>,
    permits: Arc<Semaphore>,
    busy: Arc<Mutex<HashSet<u64>>>,
}

/// A backend's claim to have a probe in flight; released when the probe task ends by any path
/// (done, cancelled, panicked).
struct Busy {
    set: Arc<Mutex<HashSet<u64>>>,
    id: u64,
}

impl Busy {
    fn claim(set: &Arc<Mutex<HashSet<u64>>>, id: u64) -> Option<Busy> {
        let fresh = set.lock().unwrap_or_else(|p| p.into_inner()).insert(id);
        fresh.then(|| Busy {
            set: set.clone(),
            id,
        })
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let mut set = self.set.lock().unwrap_or_else(|p| p.into_inner());
        set.remove(&self.id);
    }
}

impl HealthChecker {
    /// A checker probing `balancer`'s pool with `prober` every `interval`.
    pub fn new(balancer: Arc<Balancer>, prober: Arc<Prober>, interval: Duration) -> Self {
        HealthChecker {
            balancer,
            prober,
            interval: Arc::new(watch::channel(interval).0),
            permits: Arc::new(Semaphore::new(MAX_CONCURRENT_PROBES)),
            busy: Arc::new(Mutex::new(HashSet::new())),
        }
    }

    /// The handle that changes the interval of the running checker (a configuration reload):
    /// the next tick comes one new interval after the change.
    pub fn interval_handle(&self) -> Arc<watch::Sender<Duration>> {
        self.interval.clone()
    }

    /// Starts a probe task in `probes` for every backend of the pool as it is now that has no
    /// probe in flight; returns how many were started. Each result is applied to the balancer
    /// when it arrives, unless the backend was removed meanwhile.
    pub fn launch(&self, probes: &mut JoinSet<()>) -> usize {
        let snapshot = self.balancer.snapshot();
        let mut started = 0;
        for backend in snapshot.backends.iter().filter(|b| b.resolved) {
            let Some(busy) = Busy::claim(&self.busy, backend.id) else {
                continue;
            };
            probes.spawn(probe_task(
                backend.clone(),
                self.balancer.clone(),
                self.prober.clone(),
                self.permits.clone(),
                busy,
            ));
            started += 1;
        }
        started
    }

    /// One whole round: probes the pool as it is now and waits for every result (each probe
    /// is bounded by the probe timeout).
    pub async fn round(&self) {
        let mut probes = JoinSet::new();
        self.launch(&mut probes);
        while probes.join_next().await.is_some() {}
    }
}

async fn probe_task(
    backend: Arc<Backend>,
    balancer: Arc<Balancer>,
    prober: Arc<Prober>,
    permits: Arc<Semaphore>,
    busy: Busy,
) {
    let _busy = busy;
    let Ok(_permit) = permits.acquire_owned().await else {
        return;
    };
    if !backend.is_enabled() {
        return;
    }
    prober.probe_into(&balancer, &backend).await;
}

#[async_trait]
impl BackgroundService for HealthChecker {
    /// Runs a first round before declaring itself ready, so the proxy (which depends on this
    /// service) takes no traffic before every backend has been probed once; then starts probes
    /// at every tick until shutdown, which stops the loop and cancels probes in flight at once.
    async fn start_with_ready_notifier(
        &self,
        mut shutdown: ShutdownWatch,
        ready: ServiceReadyNotifier,
    ) {
        if *shutdown.borrow() {
            return;
        }
        let first = Instant::now();
        tokio::select! {
            _ = self.round() => {}
            _ = shutdown.changed() => return,
        }
        ready.notify_ready();
        let mut interval = self.interval.subscribe();
        let every = *interval.borrow_and_update();
        let mut tick = tokio::time::interval_at(first + every, every);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut probes = JoinSet::new();
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    self.launch(&mut probes);
                }
                Ok(()) = interval.changed() => {
                    let every = *interval.borrow_and_update();
                    tick = tokio::time::interval_at(Instant::now() + every, every);
                    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
                }
                Some(_) = probes.join_next(), if !probes.is_empty() => {}
                _ = shutdown.changed() => break,
            }
        }
        probes.abort_all();
        debug!("health checker stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Health;
    use crate::balancer::{strategy, testing, LoadBalancer};
    use crate::config::{HealthConfig, StrategyKind};
    use tokio::net::TcpListener;

    fn prober(timeout: Duration) -> Arc<Prober> {
        Arc::new(Prober::new(&HealthConfig {
            interval: Duration::from_secs(3600),
            path: Some("/health".into()),
            timeout,
            rise: 1,
            fall: 1,
            grpc: false,
        }))
    }

    /// A port that refuses connections (bound, never listening) while the socket lives.
    fn closed_port() -> (tokio::net::TcpSocket, u16) {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.bind(([127, 0, 0, 1], 0).into()).expect("bind");
        let port = socket.local_addr().expect("addr").port();
        (socket, port)
    }

    /// A listener that accepts and never answers; dropped (closed) with the returned task.
    async fn silent() -> (u16, tokio::task::JoinHandle<()>) {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = l.local_addr().expect("addr").port();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = l.accept().await {
                held.push(s);
            }
        });
        (port, task)
    }

    async fn wait_for(deadline: Duration, check: impl Fn() -> bool) -> bool {
        let start = Instant::now();
        while !check() {
            if start.elapsed() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }

    fn checker(ports: &[u16], timeout: Duration) -> (HealthChecker, Arc<Balancer>) {
        let lb = Arc::new(Balancer::new(strategy(StrategyKind::RoundRobin), 1, 1));
        for (i, port) in ports.iter().enumerate() {
            lb.add_backend(testing::backend(i as u64, *port, 1))
                .expect("unique");
        }
        let c = HealthChecker::new(lb.clone(), prober(timeout), Duration::from_secs(3600));
        (c, lb)
    }

    #[tokio::test]
    async fn a_hanging_backend_does_not_delay_the_verdict_on_others() {
        let (silent_port, _task) = silent().await;
        let (_closed, closed) = closed_port();
        let (c, lb) = checker(&[silent_port, closed], Duration::from_secs(30));
        let mut probes = JoinSet::new();
        assert_eq!(c.launch(&mut probes), 2);
        let snap = lb.snapshot();
        let (hanging, refused) = (&snap.backends[0], &snap.backends[1]);
        assert!(
            wait_for(Duration::from_secs(10), || refused.health_state()
                == Health::Down)
            .await,
            "the refusing backend was not judged while the other hung"
        );
        assert_eq!(hanging.health_state(), Health::Pending);
        assert_eq!(
            refused.health().reason.as_deref(),
            Some("connection refused")
        );
    }

    #[tokio::test]
    async fn a_backend_with_a_probe_in_flight_is_skipped_until_it_ends() {
        let (silent_port, _task) = silent().await;
        let (c, lb) = checker(&[silent_port], Duration::from_millis(300));
        let mut probes = JoinSet::new();
        assert_eq!(c.launch(&mut probes), 1);
        assert_eq!(c.launch(&mut probes), 0, "a second probe was stacked");
        while probes.join_next().await.is_some() {}
        let b = lb.snapshot().backends[0].clone();
        assert_eq!(b.health_state(), Health::Down);
        assert_eq!(b.health().reason.as_deref(), Some("no answer within 300ms"));
        assert_eq!(c.launch(&mut probes), 1, "the claim was not released");
    }

    #[tokio::test]
    async fn a_round_probes_the_pool_as_it_is_now() {
        let ((_s1, p1), (_s2, p2)) = (closed_port(), closed_port());
        let (c, lb) = checker(&[p1], Duration::from_secs(5));
        c.round().await;
        let added = testing::backend(7, p2, 1);
        lb.add_backend(added.clone()).expect("unique");
        let removed = lb.snapshot().backends[0].clone();
        let before = removed.health().last_probe;
        lb.remove_backend(&removed.url).expect("present");
        c.round().await;
        assert_eq!(added.health_state(), Health::Down);
        assert_eq!(
            removed.health().last_probe,
            before,
            "a removed backend was probed"
        );
    }

    #[tokio::test]
    async fn an_answering_backend_passes_a_round() {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = l.local_addr().expect("addr").port();
        let server = tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            while let Ok((mut s, _)) = l.accept().await {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
                    .await;
            }
        });
        let (c, lb) = checker(&[port], Duration::from_secs(5));
        c.round().await;
        let b = lb.snapshot().backends[0].clone();
        assert_eq!(b.health_state(), Health::Up, "{:?}", b.health().reason);
        assert!(b.health().last_probe.is_some());
        server.abort();
    }
}
