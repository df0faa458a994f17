//! The signals Portico handles beside Pingora's own (`SIGTERM`, `SIGQUIT`, `SIGINT`):
//! `SIGHUP` reloads the configuration in place; `SIGUSR1` and `SIGUSR2` never terminate the
//! process (their default action would): they reopen the error log when the daemon writes one,
//! else are logged and ignored.
//!
//! Why a `BackgroundService`: Tokio's signal handling needs a running runtime, and Pingora
//! starts its runtimes only in `Server::run`. Handlers stay installed for the life of the
//! process once registered, and Pingora's own (in `run`'s main loop) are left untouched.

use std::sync::Arc;

use async_trait::async_trait;
use log::{info, warn};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::signal::unix::{signal, SignalKind};

use crate::reload::Reloader;

/// Handles `SIGHUP`, `SIGUSR1` and `SIGUSR2` until shutdown.
pub struct Signals {
    /// `None` when the configuration did not come from a file (`--demo` without one).
    reloader: Option<Arc<Reloader>>,
    /// Pingora's `error_log` when the process is a daemon (its stderr then goes there).
    error_log: Option<String>,
}

impl Signals {
    pub fn new(reloader: Option<Arc<Reloader>>, error_log: Option<String>) -> Signals {
        Signals {
            reloader,
            error_log,
        }
    }

    async fn hangup(&self) {
        match &self.reloader {
            Some(r) => {
                info!("SIGHUP received: reloading the configuration");
                r.reload().await;
            }
            None => warn!("SIGHUP received: ignored (the configuration is built in, not a file)"),
        }
    }

    fn user_signal(&self, name: &str) {
        match &self.error_log {
            Some(path) => match reopen_stderr(path) {
                Ok(()) => info!("{name} received: reopened the error log {path}"),
                Err(e) => warn!("{name} received: cannot reopen the error log {path}: {e}"),
            },
            None => info!("{name} received: ignored (no log file to reopen; logs go to stderr)"),
        }
    }
}

/// Points stderr at a fresh open of `path` (after a log rotation moved the old file away).
fn reopen_stderr(path: &str) -> Result<(), String> {
    let file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .map_err(|e| e.to_string())?;
    nix::unistd::dup2_stderr(&file).map_err(|e| e.to_string())
}

#[async_trait]
impl BackgroundService for Signals {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let (hup, usr1, usr2) = (
            signal(SignalKind::hangup()),
            signal(SignalKind::user_defined1()),
            signal(SignalKind::user_defined2()),
        );
        let (mut hup, mut usr1, mut usr2) = match (hup, usr1, usr2) {
            (Ok(h), Ok(u1), Ok(u2)) => (h, u1, u2),
            (h, u1, u2) => {
                let e = [h.err(), u1.err(), u2.err()].into_iter().flatten().next();
                warn!("cannot handle SIGHUP/SIGUSR1/SIGUSR2: {e:?}");
                return;
            }
        };
        loop {
            tokio::select! {
                Some(()) = hup.recv() => self.hangup().await,
                Some(()) = usr1.recv() => self.user_signal("SIGUSR1"),
                Some(()) = usr2.recv() => self.user_signal("SIGUSR2"),
                _ = shutdown.changed() => return,
            }
        }
    }
}
