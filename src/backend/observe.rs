//! What the active checker and the proxy observe about a backend, and the health transitions
//! that follow: rise/fall for probes, DOWN at once for a refused connection, the end of an
//! ejection. Every transition is logged here, under the backend's record lock, so that lines
//! about one backend appear in the order its state changed even when the checker and the
//! proxy race.

use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime};

use log::{info, warn};

use super::{Backend, Health, HealthRecord, Thresholds, Transition};

/// What a probe or the proxy observed about a backend.
#[derive(Debug, Clone)]
pub enum Observation {
    Passed,
    Failed(String),
    /// The proxy could not connect: DOWN at once.
    Refused(String),
}

impl Backend {
    /// The stamp a probe takes when it starts. A passive DOWN (refusal, ejection) changes it,
    /// so a probe that started before the DOWN cannot count toward bringing the backend back.
    pub fn probe_stamp(&self) -> u64 {
        self.probe_epoch.load(Ordering::SeqCst)
    }

    /// Feeds one observation to the backend's health. `stamp` is the probe's
    /// ([`Backend::probe_stamp`] when it started; `None` for the proxy's own observations).
    /// Returns the transition it caused, if any.
    pub(crate) fn observe(
        &self,
        seen: &Observation,
        stamp: Option<u64>,
        t: &Thresholds,
    ) -> Option<Transition> {
        let mut record = self.health();
        let was = record.tracker.health();
        let mut back_from_ejection = false;
        let transition = match seen {
            Observation::Refused(_) => {
                self.probe_epoch.fetch_add(1, Ordering::SeqCst);
                record.tracker.force_down()
            }
            Observation::Passed | Observation::Failed(_) => {
                if stamp.is_some_and(|s| s != self.probe_stamp()) {
                    return None;
                }
                record.last_probe = Some(SystemTime::now());
                let passed = matches!(seen, Observation::Passed);
                match record.ejected_until {
                    Some(until) if Instant::now() < until => return None,
                    Some(_) => {
                        // The ejection is over: one passing probe brings it back; a failing
                        // one leaves it an ordinary DOWN backend that needs `rise` passes.
                        record.ejected_until = None;
                        if passed {
                            record.returned_at = Some(Instant::now());
                            back_from_ejection = true;
                            record.tracker.force_up()
                        } else {
                            record.tracker.observe(false, t.rise, t.fall);
                            if let Observation::Failed(reason) = seen {
                                record.reason = Some(reason.clone());
                            }
                            None
                        }
                    }
                    None => record.tracker.observe(passed, t.rise, t.fall),
                }
            }
        }?;
        let reason = match seen {
            Observation::Failed(r) | Observation::Refused(r) => r.clone(),
            Observation::Passed if back_from_ejection => {
                "ejection over, health check passed".into()
            }
            Observation::Passed => record.tracker.up_reason(),
        };
        let ramp = self.ramp_for(was, t.slow_start);
        self.apply(&mut record, transition, &reason, ramp);
        Some(transition)
    }

    /// Records a transition that has just happened in `record`: the traffic flag, the time,
    /// the reason (why it went DOWN, or how it came UP), the slow-start ramp, one log line.
    pub(crate) fn apply(
        &self,
        record: &mut HealthRecord,
        transition: Transition,
        reason: &str,
        slow_start: std::time::Duration,
    ) {
        record.changed_at = SystemTime::now();
        self.set_alive(record.tracker.health() == Health::Up);
        match transition {
            Transition::Down => {
                warn!("backend {} is DOWN ({reason})", self.label());
                record.reason = Some(reason.to_string());
            }
            Transition::Up => {
                info!("backend {} is UP", self.label());
                record.reason = Some(reason.to_string());
                self.consecutive_errors.store(0, Ordering::Relaxed);
                self.start_ramp(slow_start);
            }
        }
    }
}
