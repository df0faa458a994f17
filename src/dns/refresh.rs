//! The DNS refresh loop: every `dns.refresh`, every backend host name in the pool is resolved
//! again and the pool follows the answer (through [`Control::refresh_names`]): new addresses
//! are probed, then take traffic; vanished ones drain; a failed lookup keeps what there was.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::sync::watch;

use crate::control::Control;

/// The background service that re-resolves backend host names.
pub struct DnsRefresher {
    control: Arc<Control>,
    /// `dns.refresh`; zero: no refresh. A reload sends the new one.
    every: Arc<watch::Sender<Duration>>,
}

impl DnsRefresher {
    /// Re-resolves `control`'s names every `every` (zero: never).
    pub fn new(control: Arc<Control>, every: Duration) -> DnsRefresher {
        DnsRefresher {
            control,
            every: Arc::new(watch::channel(every).0),
        }
    }

    /// The handle that changes the refresh interval (a configuration reload).
    pub fn interval_handle(&self) -> Arc<watch::Sender<Duration>> {
        self.every.clone()
    }
}

#[async_trait]
impl BackgroundService for DnsRefresher {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut every = self.every.subscribe();
        loop {
            let period = *every.borrow_and_update();
            let wait = async {
                if period.is_zero() {
                    std::future::pending::<()>().await
                } else {
                    tokio::time::sleep(period).await
                }
            };
            tokio::select! {
                _ = wait => { self.control.refresh_names().await; }
                Ok(()) = every.changed() => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}
