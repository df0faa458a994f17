//! A request's claim on a backend ([`Lease`]: in-flight accounting that ends when the claim is
//! dropped) and the backends one request has already tried ([`Tried`]).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::Backend;

/// A request's claim on a backend: +1 in flight when taken, -1 when dropped, whatever path
/// the request ends by (success, error, timeout, client gone, retried elsewhere).
pub struct Lease {
    backend: Arc<Backend>,
}

impl Lease {
    pub fn new(backend: Arc<Backend>) -> Lease {
        backend.in_flight.fetch_add(1, Ordering::Relaxed);
        backend.requests.fetch_add(1, Ordering::Relaxed);
        Lease { backend }
    }

    pub fn backend(&self) -> &Arc<Backend> {
        &self.backend
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.backend.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The backends one request has already tried, so a retry goes elsewhere. Fixed size: no
/// allocation on the request path.
#[derive(Debug, Default, Clone)]
pub struct Tried {
    ids: [u64; Tried::CAPACITY],
    len: usize,
}

impl Tried {
    pub const CAPACITY: usize = 17;

    #[inline]
    pub fn contains(&self, id: u64) -> bool {
        self.ids[..self.len].contains(&id)
    }

    pub fn insert(&mut self, id: u64) {
        if self.len < Self::CAPACITY && !self.contains(id) {
            self.ids[self.len] = id;
            self.len += 1;
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}
