//! Outlier ejection (passive health): a backend whose requests fail `consecutive_errors`
//! times in a row (5xx answers, read timeouts, resets, connect timeouts; not refusals, which
//! take it DOWN at once) is ejected for `base_ejection_time x (ejections in a row)`, capped at
//! `max_ejection_time`, and returns when that time is over and a health probe passes. The
//! balancer applies the floor (`max_ejection_percent`), since only it sees the whole pool.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{Backend, Transition};

/// Outlier-detection settings (`outlier_detection` in the configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutlierDetection {
    /// Failures in a row that eject a backend; 0 turns passive ejection off.
    pub consecutive_errors: u32,
    pub base_ejection_time: Duration,
    pub max_ejection_time: Duration,
    /// Passive ejection never takes more than this share (percent) of the pool.
    pub max_ejection_percent: u32,
}

impl Default for OutlierDetection {
    fn default() -> Self {
        OutlierDetection {
            consecutive_errors: 5,
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(300),
            max_ejection_percent: 50,
        }
    }
}

impl OutlierDetection {
    /// How many of `pool` backends may be ejected at once.
    pub fn max_ejected(&self, pool: usize) -> usize {
        pool * self.max_ejection_percent as usize / 100
    }

    /// How long the `n`-th ejection in a row lasts.
    pub fn ejection_time(&self, n: u32) -> Duration {
        self.base_ejection_time
            .saturating_mul(n.max(1))
            .min(self.max_ejection_time)
    }
}

impl Backend {
    /// A request to this backend got an answer that is not a failure.
    #[inline]
    pub fn record_success(&self) {
        // Read first: the common case writes nothing, so the cache line stays shared.
        if self.consecutive_errors.load(Ordering::Relaxed) != 0 {
            self.consecutive_errors.store(0, Ordering::Relaxed);
        }
    }

    /// A request to this backend failed; returns whether `limit` failures in a row (0: never)
    /// are now reached.
    #[inline]
    pub fn record_failure(&self, limit: u32) -> bool {
        let n = self.consecutive_errors.fetch_add(1, Ordering::Relaxed) + 1;
        limit > 0 && n >= limit
    }

    /// Failures in a row so far.
    pub fn consecutive_errors(&self) -> u32 {
        self.consecutive_errors.load(Ordering::Relaxed)
    }

    /// Whether the backend is ejected now.
    pub fn is_ejected(&self) -> bool {
        self.health().ejected_until.is_some()
    }

    /// Ejects the backend (the balancer has checked the floor). Nothing happens when it is not
    /// UP (a DOWN backend gets no traffic anyway). Returns the transition.
    pub(crate) fn eject(&self, settings: &OutlierDetection) -> Option<Transition> {
        let mut record = self.health();
        if record.ejected_until.is_some() || !self.is_alive() {
            return None;
        }
        let now = Instant::now();
        if record
            .returned_at
            .is_some_and(|t| now.duration_since(t) >= settings.max_ejection_time)
        {
            record.ejections = 0;
        }
        record.ejections = record.ejections.saturating_add(1);
        record.ejected_until = Some(now + settings.ejection_time(record.ejections));
        self.probe_epoch.fetch_add(1, Ordering::SeqCst);
        let errors = self.consecutive_errors.swap(0, Ordering::Relaxed);
        let transition = record.tracker.force_down()?;
        let reason = format!("ejected: {errors} consecutive errors");
        self.apply(&mut record, transition, &reason, Duration::ZERO);
        Some(transition)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{Health, Observation, Thresholds};
    use crate::balancer::testing::backend;

    const T1: Thresholds = Thresholds {
        rise: 1,
        fall: 1,
        slow_start: Duration::ZERO,
    };
    const T3: Thresholds = Thresholds {
        rise: 3,
        fall: 3,
        slow_start: Duration::ZERO,
    };

    fn settings(base_ms: u64) -> OutlierDetection {
        OutlierDetection {
            consecutive_errors: 3,
            base_ejection_time: Duration::from_millis(base_ms),
            max_ejection_time: Duration::from_millis(base_ms * 3),
            max_ejection_percent: 50,
        }
    }

    #[test]
    fn failures_in_a_row_reach_the_limit_and_a_success_resets() {
        let b = backend(1, 10_000, 1);
        assert!(!b.record_failure(3));
        assert!(!b.record_failure(3));
        b.record_success();
        assert!(!b.record_failure(3));
        assert!(!b.record_failure(3));
        assert!(b.record_failure(3));
        assert!(!backend(2, 10_001, 1).record_failure(0), "0 is off");
    }

    #[test]
    fn ejection_times_grow_and_are_capped() {
        let s = settings(100);
        let times: Vec<u64> = (1..=5)
            .map(|n| s.ejection_time(n).as_millis() as u64)
            .collect();
        assert_eq!(times, vec![100, 200, 300, 300, 300]);
        assert_eq!(s.max_ejected(3), 1);
        assert_eq!(s.max_ejected(4), 2);
        assert_eq!(s.max_ejected(1), 0);
    }

    #[test]
    fn an_ejected_backend_ignores_probes_until_its_time_is_over() {
        let b = backend(1, 10_000, 1);
        b.observe(&Observation::Passed, None, &T1);
        let stamp = b.probe_stamp();
        assert_eq!(b.eject(&settings(3_600_000)), Some(Transition::Down));
        assert!(b.is_ejected() && !b.is_ready());
        assert_eq!(
            b.health().reason.as_deref(),
            Some("ejected: 0 consecutive errors")
        );
        assert_eq!(b.eject(&settings(1)), None, "already ejected");
        assert_eq!(
            b.observe(&Observation::Passed, Some(b.probe_stamp()), &T1),
            None
        );
        assert_eq!(b.health_state(), Health::Down);
        assert_eq!(
            b.observe(&Observation::Passed, Some(stamp), &T1),
            None,
            "stale"
        );
    }

    #[test]
    fn one_passing_probe_after_the_ejection_brings_it_back() {
        let b = backend(1, 10_000, 1);
        b.observe(&Observation::Passed, None, &T3);
        b.eject(&settings(0));
        assert!(b.is_ejected());
        let up = b.observe(&Observation::Passed, Some(b.probe_stamp()), &T3);
        assert_eq!(up, Some(Transition::Up));
        assert!(b.is_ready() && !b.is_ejected());
        assert_eq!(
            b.health().reason.as_deref(),
            Some("ejection over, health check passed")
        );
        assert_eq!(b.health().ejections, 1);
    }

    #[test]
    fn a_probe_started_before_a_refusal_does_not_count() {
        let b = backend(1, 10_000, 1);
        b.observe(&Observation::Passed, None, &T1);
        let stamp = b.probe_stamp();
        b.observe(&Observation::Refused("refused".into()), None, &T1);
        assert_eq!(b.observe(&Observation::Passed, Some(stamp), &T1), None);
        assert!(!b.is_ready());
        let fresh = b.probe_stamp();
        assert_eq!(
            b.observe(&Observation::Passed, Some(fresh), &T1),
            Some(Transition::Up)
        );
    }
}
