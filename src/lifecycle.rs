//! Shutdown and upgrade: moves the process's [`Phase`] forward (which freezes the pool's write
//! side and, while handing over, makes the proxy ask clients to reconnect to the new process),
//! and ends the process as soon as the last in-flight request has finished (Pingora would
//! otherwise sleep out the whole grace period).
//!
//! Why the hand-over begins in the signal watch: Pingora announces
//! `GracefulUpgradeTransferringFds` and sends the sockets right away, without waiting for any
//! listener of that phase. A write acknowledged by this process after the new process has read
//! the store would be missing there (and, with the file store, overwritten). So
//! [`HandOverSignals`] stops admin changes, and waits for the one in progress, *before* it
//! tells Pingora to send the sockets; the new process resyncs after it received them.
//!
//! Why the hand-over closes keep-alive connections: after `SIGQUIT`, Pingora keeps accepting
//! for 5 s (both processes accept on the shared sockets), then drops every *idle* keep-alive
//! connection at once. A client that sent its next request on such a connection at that moment
//! sees a reset or an incomplete message. Answering every request with `Connection: close`
//! during those 5 s means that, by the time Pingora drops idle connections, clients have
//! already moved to new connections, most of them served by the new process.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use log::info;
use pingora::server::{
    ExecutionPhase, ShutdownSignal, ShutdownSignalWatch, ShutdownWatch, UnixShutdownSignalWatch,
};
use pingora::services::background::BackgroundService;
use tokio::sync::broadcast;

use crate::balancer::Balancer;
use crate::control::{Control, Phase};

/// How often the drain is checked after shutdown starts.
const DRAIN_POLL: Duration = Duration::from_millis(50);
/// How long the pool must stay idle before the process exits.
const DRAIN_SETTLE: Duration = Duration::from_millis(300);

/// Pingora's Unix signal watch (`SIGQUIT` upgrade, `SIGTERM` graceful stop, `SIGINT` fast
/// stop) that first moves the [`Phase`]: on `SIGQUIT` it returns only once admin changes are
/// refused and none is in progress, so Pingora sends the listening sockets after the last
/// acknowledged change is in the store.
pub struct HandOverSignals {
    control: Arc<Control>,
}

impl HandOverSignals {
    /// The signal watch for `control`'s process.
    pub fn new(control: Arc<Control>) -> HandOverSignals {
        HandOverSignals { control }
    }
}

#[async_trait]
impl ShutdownSignalWatch for HandOverSignals {
    async fn recv(&self) -> ShutdownSignal {
        let signal = UnixShutdownSignalWatch.recv().await;
        match signal {
            ShutdownSignal::GracefulUpgrade => self.control.begin_hand_over().await,
            ShutdownSignal::GracefulTerminate => self.control.begin_shutdown(),
            ShutdownSignal::FastShutdown => {}
        }
        signal
    }
}

/// Watches Pingora's execution phases during shutdown and upgrade; a `BackgroundService`.
/// After the shutdown broadcast it waits for in-flight requests to drain, removes its pid
/// file (only if it names this process) and exits 0.
pub struct Lifecycle {
    control: Arc<Control>,
    balancer: Arc<Balancer>,
    phases: std::sync::Mutex<Option<broadcast::Receiver<ExecutionPhase>>>,
    pid_file: PathBuf,
}

impl Lifecycle {
    /// `phases` comes from `Server::watch_execution_phase`; `pid_file` is the configured one.
    pub fn new(
        control: Arc<Control>,
        phases: broadcast::Receiver<ExecutionPhase>,
        pid_file: PathBuf,
    ) -> Lifecycle {
        Lifecycle {
            balancer: control.balancer().clone(),
            control,
            phases: std::sync::Mutex::new(Some(phases)),
            pid_file,
        }
    }

    async fn watch_phases(&self, mut phases: broadcast::Receiver<ExecutionPhase>) {
        loop {
            match phases.recv().await {
                // Already done by `HandOverSignals` when the server runs with it.
                Ok(
                    ExecutionPhase::GracefulUpgradeTransferringFds
                    | ExecutionPhase::GracefulUpgradeCloseTimeout,
                ) => self.control.begin_hand_over().await,
                Ok(ExecutionPhase::GracefulTerminate | ExecutionPhase::ShutdownStarted) => {
                    self.control.begin_shutdown();
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    async fn drained(&self) {
        let mut idle_since: Option<tokio::time::Instant> = None;
        loop {
            if self.balancer.total_in_flight() == 0 {
                let since = *idle_since.get_or_insert_with(tokio::time::Instant::now);
                if since.elapsed() >= DRAIN_SETTLE {
                    return;
                }
            } else {
                idle_since = None;
            }
            tokio::time::sleep(DRAIN_POLL).await;
        }
    }
}

#[async_trait]
impl BackgroundService for Lifecycle {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let phases = self.phases.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(phases) = phases {
            tokio::select! {
                _ = self.watch_phases(phases) => {}
                _ = shutdown.changed() => {}
            }
        }
        while !*shutdown.borrow() {
            if shutdown.changed().await.is_err() {
                return;
            }
        }
        self.control.begin_shutdown();
        if self.control.phase() == Phase::HandingOver {
            info!("sockets handed over; finishing in-flight requests");
        }
        self.drained().await;
        info!("all in-flight requests finished; exiting");
        remove_own_pid_file(&self.pid_file);
        std::process::exit(0);
    }
}

/// Removes the pid file if it names this process (after an upgrade it names the new one).
pub fn remove_own_pid_file(path: &std::path::Path) {
    let ours = std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        == Some(std::process::id());
    if ours {
        let _ = std::fs::remove_file(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_the_pid_file_only_when_it_names_this_process() {
        let dir = tempfile::tempdir().expect("tempdir");
        let other = dir.path().join("other.pid");
        std::fs::write(&other, "1\n").expect("write");
        remove_own_pid_file(&other);
        assert!(
            other.exists(),
            "a pid file naming another process was removed"
        );

        let own = dir.path().join("own.pid");
        std::fs::write(&own, format!("{}\n", std::process::id())).expect("write");
        remove_own_pid_file(&own);
        assert!(!own.exists());

        remove_own_pid_file(&dir.path().join("missing.pid"));
    }
}
