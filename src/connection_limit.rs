//! The cap on concurrent client connections (`max_connections`): a `ServerApp` wrapper that
//! counts the connections its listeners hand over and closes, at once, those past the cap.
//!
//! A wrapper rather than a setting because Pingora has no connection cap of its own; it sits
//! where Pingora hands a new connection to the application, so one counter can be shared by
//! the HTTP and HTTPS listeners.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use log::warn;
use pingora::apps::ServerApp;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;

use crate::serve::Serve;

/// The connections open across the listeners that share it, and the cap.
pub struct ConnectionCounter {
    open: AtomicUsize,
    max: usize,
    started: Instant,
    /// Second (since `started`) of the last "refused" log line, plus one (0: never logged).
    last_logged: AtomicU64,
    /// Connections refused since the last log line.
    refused: AtomicU64,
}

impl ConnectionCounter {
    pub fn new(max: usize) -> Arc<ConnectionCounter> {
        Arc::new(ConnectionCounter {
            open: AtomicUsize::new(0),
            max,
            started: Instant::now(),
            last_logged: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        })
    }

    /// Client connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Takes a slot, or `None` when `max` are open (the refusal is counted and logged at most
    /// once a second).
    fn admit(self: &Arc<Self>) -> Option<Slot> {
        let admitted = self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .is_ok();
        if admitted {
            return Some(Slot(self.clone()));
        }
        self.refused.fetch_add(1, Ordering::Relaxed);
        let second = self.started.elapsed().as_secs() + 1;
        let last = self.last_logged.load(Ordering::Relaxed);
        if last != second
            && self
                .last_logged
                .compare_exchange(last, second, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            // At least this one, even if another thread logged the others meanwhile.
            let refused = self.refused.swap(0, Ordering::Relaxed).max(1);
            warn!(
                "max_connections ({}) reached: closed {refused} new client connection(s) at once",
                self.max
            );
        }
        None
    }
}

/// One admitted connection; gives its slot back when dropped, whatever way the connection ends.
struct Slot(Arc<ConnectionCounter>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// `inner` behind the cap of `counter`.
pub struct ConnectionLimit<A> {
    inner: Arc<A>,
    counter: Arc<ConnectionCounter>,
}

impl<A> ConnectionLimit<A> {
    pub fn new(inner: A, counter: Arc<ConnectionCounter>) -> ConnectionLimit<A> {
        ConnectionLimit {
            inner: Arc::new(inner),
            counter,
        }
    }
}

impl<A: Serve> Serve for ConnectionLimit<A> {
    /// Serves the connection if a slot is free; otherwise drops it, which closes it at once.
    async fn serve(self: &Arc<Self>, stream: Stream, shutdown: &ShutdownWatch) -> Option<Stream> {
        let _slot = self.counter.admit()?;
        // The slot is held for the whole connection: Pingora's HTTP application serves every
        // keep-alive request of a connection within this one call.
        self.inner.serve(stream, shutdown).await
    }

    async fn stop(&self) {
        self.inner.stop().await;
    }
}

/// The outermost layer, the one Pingora calls: the only boxed future of the stack.
#[async_trait]
impl<A: Serve> ServerApp for ConnectionLimit<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        self.serve(stream, shutdown).await
    }

    async fn cleanup(&self) {
        self.stop().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_up_to_the_cap_and_frees_on_drop() {
        let c = ConnectionCounter::new(2);
        let a = c.admit();
        let b = c.admit();
        assert!(a.is_some() && b.is_some());
        assert!(c.admit().is_none());
        assert_eq!(c.open(), 2);
        drop(a);
        assert_eq!(c.open(), 1);
        assert!(c.admit().is_some());
        assert_eq!(
            c.open(),
            1,
            "the slot taken and dropped in the assert is given back"
        );
    }
}
