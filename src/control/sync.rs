//! The background loops that keep the pool in step with its store: [`StoreWatch`] (full read,
//! then watch from that revision; again after every disconnection) and [`StoreResync`] (one
//! full read once a graceful upgrade's sockets have arrived).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use log::warn;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use pingora::services::ServiceReadyNotifier;

use super::Control;

/// First wait before trying an unreachable store again; doubled up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_millis(100);
/// Longest wait between two attempts to reach the store: a store that comes back is in use
/// again within this long.
const MAX_RETRY: Duration = Duration::from_secs(1);

/// Applies the changes other instances make to a shared store (etcd), within a second:
/// a full read (resync), then a watch from the revision read. When the watch breaks (the
/// store is unreachable), writes are refused and the loop retries the full read until it
/// succeeds, then watches again. Does nothing for a store without other writers (the file).
pub struct StoreWatch {
    control: Arc<Control>,
}

impl StoreWatch {
    /// The service for `control`.
    pub fn new(control: Arc<Control>) -> StoreWatch {
        StoreWatch { control }
    }

    async fn run(&self) {
        let Some(store) = self.control.store().cloned() else {
            return;
        };
        let mut retry = FIRST_RETRY;
        loop {
            if let Err(e) = self.control.resync().await {
                warn!("{}: resync failed: {e}", store.describe());
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(MAX_RETRY);
                continue;
            }
            let from = self.control.applied_revision().await;
            let mut events = match store.watch(from).await {
                Ok(Some(events)) => events,
                Ok(None) => return,
                Err(e) => {
                    self.control.store_lost(e.to_string()).await;
                    tokio::time::sleep(retry).await;
                    retry = (retry * 2).min(MAX_RETRY);
                    continue;
                }
            };
            self.control.store_reachable();
            retry = FIRST_RETRY;
            let error = loop {
                match events.next().await {
                    Some(Ok(batch)) => {
                        if let Err(e) = self.control.apply_events(batch).await {
                            break e.to_string();
                        }
                    }
                    Some(Err(e)) => break e.to_string(),
                    None => break "the watch ended".to_string(),
                }
            };
            self.control.store_lost(error).await;
            store.disconnect();
        }
    }
}

#[async_trait::async_trait]
impl BackgroundService for StoreWatch {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        tokio::select! {
            _ = self.run() => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// A one-shot background service for a process started with `-u`: once the listening sockets
/// have moved (it depends on the bootstrap service), it makes the pool match the store (the
/// old process took admin changes until it began the hand-over, which it did before sending
/// the sockets), then declares itself ready; the proxy and the admin API depend on it. On
/// failure the pool loaded at start-up is served and admin changes are refused until a resync
/// succeeds: the sockets have already moved, so refusing to serve is not an option.
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
        if let Err(e) = self.control.resync().await {
            warn!("pool not resynced from the store after the upgrade: {e}");
        }
        ready.notify_ready();
    }
}
