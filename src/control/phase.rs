//! The process's phase (serving, handing over to a new process, shutting down): set by the
//! lifecycle code, read by the proxy, the admin API and the write side of the pool.

use std::sync::atomic::{AtomicU8, Ordering};

/// Where the process is in its life. It only moves forward: `Serving` to `HandingOver`
/// (graceful upgrade) or to `ShuttingDown` (`SIGTERM`); neither is ever left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Taking traffic and admin changes.
    Serving,
    /// Handing the listening sockets to a new process (graceful upgrade): admin changes are
    /// refused (the new process takes them), and the proxy answers with `Connection: close` so
    /// that clients reconnect, to the new process, before Pingora drops idle connections.
    HandingOver,
    /// Finishing in-flight requests before exiting: admin changes are refused.
    ShuttingDown,
}

impl Phase {
    /// The phase's name, for `/status` and `/readyz`.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Serving => "serving",
            Phase::HandingOver => "handing-over",
            Phase::ShuttingDown => "shutting-down",
        }
    }

    /// Whether the process takes new work (readiness): only while `Serving`.
    pub fn is_serving(self) -> bool {
        self == Phase::Serving
    }
}

/// A [`Phase`] shared between threads; reads are one relaxed atomic load (request path).
#[derive(Debug, Default)]
pub struct PhaseCell(AtomicU8);

impl PhaseCell {
    /// The current phase.
    #[inline]
    pub fn get(&self) -> Phase {
        match self.0.load(Ordering::Acquire) {
            0 => Phase::Serving,
            1 => Phase::HandingOver,
            _ => Phase::ShuttingDown,
        }
    }

    /// Leaves `Serving` for `to`; returns false (and changes nothing) if it was left already.
    pub(crate) fn leave_serving(&self, to: Phase) -> bool {
        let to = match to {
            Phase::Serving => return false,
            Phase::HandingOver => 1,
            Phase::ShuttingDown => 2,
        };
        self.0
            .compare_exchange(0, to, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_phase_only_moves_forward_once() {
        let cell = PhaseCell::default();
        assert_eq!(cell.get(), Phase::Serving);
        assert!(cell.leave_serving(Phase::HandingOver));
        assert!(!cell.leave_serving(Phase::ShuttingDown));
        assert_eq!(cell.get(), Phase::HandingOver);
        assert!(!cell.get().is_serving());
    }
}
