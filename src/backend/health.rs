//! Backend health: the pure rise/fall state machine ([`Tracker`]) fed by the active checker
//! and by the proxy.

/// What the pool believes about a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Health {
    /// Never probed: gets no traffic; the first probe decides.
    #[default]
    Pending,
    /// Passing: may take traffic (if also enabled).
    Up,
    /// Failing: takes no traffic until `rise` consecutive probes pass.
    Down,
}

impl Health {
    /// The lower-case name `/status` shows: `pending`, `up`, `down`.
    pub fn name(self) -> &'static str {
        match self {
            Health::Pending => "pending",
            Health::Up => "up",
            Health::Down => "down",
        }
    }
}

/// A change of health worth one log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Pending or DOWN became UP.
    Up,
    /// Pending or UP became DOWN.
    Down,
}

/// Consecutive-result counting: `rise` passes bring a DOWN backend UP, `fall` failures take an
/// UP backend DOWN; the first result decides a pending backend.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tracker {
    health: Health,
    passes: u32,
    failures: u32,
}

impl Tracker {
    /// The current verdict.
    pub fn health(&self) -> Health {
        self.health
    }

    /// Consecutive passing probes up to now (0 after a failure or a forced DOWN).
    pub fn passes(&self) -> u32 {
        self.passes
    }

    /// Consecutive failing probes up to now (0 after a pass).
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Why the backend just became UP, for `/status`: "health check passed" or
    /// "3 health checks passed in a row".
    pub fn up_reason(&self) -> String {
        match self.passes {
            0 | 1 => "health check passed".to_string(),
            n => format!("{n} health checks passed in a row"),
        }
    }

    /// Records one probe result; returns the transition it causes, if any.
    pub fn observe(&mut self, passed: bool, rise: u32, fall: u32) -> Option<Transition> {
        if passed {
            self.failures = 0;
            self.passes = self.passes.saturating_add(1);
        } else {
            self.passes = 0;
            self.failures = self.failures.saturating_add(1);
        }
        let next = match (self.health, passed) {
            (Health::Pending, true) => Health::Up,
            (Health::Pending, false) => Health::Down,
            (Health::Down, true) if self.passes >= rise => Health::Up,
            (Health::Up, false) if self.failures >= fall => Health::Down,
            (h, _) => h,
        };
        self.transition_to(next)
    }

    /// The proxy saw the backend refuse a connection: DOWN at once, and only `rise` passing
    /// probes bring it back.
    pub fn force_down(&mut self) -> Option<Transition> {
        self.passes = 0;
        self.transition_to(Health::Down)
    }

    /// An ejection ended and a probe passed: UP at once.
    pub fn force_up(&mut self) -> Option<Transition> {
        self.failures = 0;
        self.transition_to(Health::Up)
    }

    fn transition_to(&mut self, next: Health) -> Option<Transition> {
        if next == self.health {
            return None;
        }
        self.health = next;
        match next {
            Health::Up => Some(Transition::Up),
            Health::Down => {
                self.passes = 0;
                Some(Transition::Down)
            }
            Health::Pending => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(t: &mut Tracker, results: &[bool], rise: u32, fall: u32) -> Vec<Option<Transition>> {
        results.iter().map(|&r| t.observe(r, rise, fall)).collect()
    }

    #[test]
    fn first_probe_decides_a_pending_backend() {
        let mut t = Tracker::default();
        assert_eq!(t.observe(true, 2, 3), Some(Transition::Up));
        let mut t = Tracker::default();
        assert_eq!(t.observe(false, 2, 3), Some(Transition::Down));
        assert_eq!(t.health(), Health::Down);
    }

    #[test]
    fn fall_consecutive_failures_take_it_down_once() {
        let mut t = Tracker::default();
        t.observe(true, 2, 3);
        let got = run(
            &mut t,
            &[false, false, true, false, false, false, false],
            2,
            3,
        );
        use Transition::*;
        assert_eq!(got, vec![None, None, None, None, None, Some(Down), None]);
    }

    #[test]
    fn rise_consecutive_passes_bring_it_back_once() {
        let mut t = Tracker::default();
        t.observe(false, 2, 3);
        let got = run(&mut t, &[true, false, true, true, true], 2, 3);
        assert_eq!(got, vec![None, None, None, Some(Transition::Up), None]);
    }

    #[test]
    fn forced_down_needs_rise_passes_and_logs_once() {
        let mut t = Tracker::default();
        t.observe(true, 2, 3);
        t.observe(true, 2, 3);
        assert_eq!(t.force_down(), Some(Transition::Down));
        assert_eq!(t.force_down(), None);
        assert_eq!(t.observe(true, 2, 3), None);
        assert_eq!(t.observe(true, 2, 3), Some(Transition::Up));
    }

    #[test]
    fn rise_and_fall_of_one_flip_immediately() {
        let mut t = Tracker::default();
        let got = run(&mut t, &[true, false, true, false], 1, 1);
        use Transition::*;
        assert_eq!(got, vec![Some(Up), Some(Down), Some(Up), Some(Down)]);
    }

    #[test]
    fn steady_states_never_yield_a_transition() {
        let mut t = Tracker::default();
        t.observe(true, 2, 3);
        assert!(run(&mut t, &[true; 50], 2, 3).iter().all(Option::is_none));
        t.force_down();
        assert!(run(&mut t, &[false; 50], 2, 3).iter().all(Option::is_none));
        assert_eq!(t.health(), Health::Down);
        assert_eq!(t.failures(), 50);
    }

    #[test]
    fn a_refusal_during_recovery_restarts_the_count() {
        let mut t = Tracker::default();
        t.observe(false, 3, 1);
        run(&mut t, &[true, true], 3, 1);
        assert_eq!(t.passes(), 2);
        assert_eq!(t.force_down(), None);
        assert_eq!(t.passes(), 0);
        let got = run(&mut t, &[true, true, true], 3, 1);
        assert_eq!(got, vec![None, None, Some(Transition::Up)]);
        assert_eq!(t.up_reason(), "3 health checks passed in a row");
    }

    #[test]
    fn a_pending_backend_refused_by_the_proxy_goes_down() {
        let mut t = Tracker::default();
        assert_eq!(t.force_down(), Some(Transition::Down));
        assert_eq!(t.observe(true, 1, 1), Some(Transition::Up));
        assert_eq!(t.up_reason(), "health check passed");
    }
}
