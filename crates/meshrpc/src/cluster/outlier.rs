//! Outlier ejection: a replica that answers, but badly (consecutive failures, or a
//! success rate far below its peers'), is kept out of picking for a while and then let
//! back in on probation. Decided from what this node's calls saw; never the last replica.

use std::time::{Duration, Instant};

/// When a replica is ejected, and for how long.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct Ejection {
    /// This many failures in a row eject a replica (5).
    pub consecutive_failures: u32,
    /// A replica whose success rate over its recent calls is below this share of its
    /// peers' average is ejected (0.8: 50 % when the others answer 100 %).
    pub min_relative_success: f64,
    /// Calls a replica must have answered before its success rate counts (20; 4 on
    /// probation, just back from an ejection).
    pub min_calls: u32,
    /// The first ejection lasts this long (5 s); each one soon after another lasts twice
    /// as long, up to `max_time`.
    pub base_time: Duration,
    /// Longest ejection (60 s).
    pub max_time: Duration,
    /// At most this share of a service's replicas is ejected at once (0.5); the last one
    /// never is.
    pub max_share: f64,
}

impl Default for Ejection {
    fn default() -> Self {
        Ejection {
            consecutive_failures: 5,
            min_relative_success: 0.8,
            min_calls: 20,
            base_time: Duration::from_secs(5),
            max_time: Duration::from_secs(60),
            max_share: 0.5,
        }
    }
}

/// How one replica of one service has been answering this node.
#[derive(Debug, Clone, Default)]
pub(crate) struct Accrual {
    /// The last 32 outcomes, newest in bit 0; 1 = failed.
    failed: u32,
    samples: u32,
    consecutive: u32,
    ejected_until: Option<Instant>,
    /// Ejections since it last answered a whole window well.
    recent_ejections: u32,
    /// Back from an ejection and not yet through a window of calls.
    probation: bool,
}

const WINDOW: u32 = 32;

impl Accrual {
    /// Records an answer (`ok`) or a failure.
    pub(crate) fn record(&mut self, ok: bool) {
        self.failed = (self.failed << 1) | u32::from(!ok);
        self.samples = (self.samples + 1).min(WINDOW);
        self.consecutive = if ok { 0 } else { self.consecutive + 1 };
        if self.samples == WINDOW && self.failed == 0 {
            // A whole window answered well: its past ejections are forgiven.
            self.recent_ejections = 0;
            self.probation = false;
        }
    }

    /// Its success rate over recent calls, once it has answered enough of them.
    pub(crate) fn success_rate(&self, settings: &Ejection) -> Option<f64> {
        let min = if self.probation { 4 } else { settings.min_calls.clamp(1, WINDOW) };
        (self.samples >= min).then(|| {
            let window = if self.samples >= WINDOW { u32::MAX } else { (1 << self.samples) - 1 };
            1.0 - f64::from((self.failed & window).count_ones()) / f64::from(self.samples)
        })
    }

    /// True while ejected.
    pub(crate) fn ejected(&self, now: Instant) -> bool {
        self.ejected_until.is_some_and(|t| t > now)
    }

    /// When its latest ejection ends (or ended).
    pub(crate) fn ejected_until(&self) -> Option<Instant> {
        self.ejected_until
    }

    /// Whether its answers call for an ejection, given the average success rate of the
    /// service's other replicas (if they have answered enough calls).
    pub(crate) fn should_eject(&self, settings: &Ejection, peers: Option<f64>, now: Instant) -> Option<String> {
        if self.ejected(now) {
            return None;
        }
        if self.consecutive >= settings.consecutive_failures.max(1) {
            return Some(format!("{} failures in a row", self.consecutive));
        }
        let (mine, peers) = (self.success_rate(settings)?, peers?);
        (mine < peers * settings.min_relative_success)
            .then(|| format!("{:.0} % of its calls succeed, {:.0} % on the others", mine * 100.0, peers * 100.0))
    }

    /// Ejects it; how long for.
    pub(crate) fn eject(&mut self, settings: &Ejection, now: Instant) -> Duration {
        let time = settings.base_time.saturating_mul(1 << self.recent_ejections.min(6)).min(settings.max_time);
        self.recent_ejections += 1;
        self.ejected_until = Some(now + time);
        // Back on probation: a clean slate, judged on fewer calls.
        *self = Accrual {
            ejected_until: self.ejected_until,
            recent_ejections: self.recent_ejections,
            probation: true,
            ..Accrual::default()
        };
        time
    }
}

/// Whose replicas an answer is judged among: a service's, or an HTTP router's.
#[derive(Clone, Copy)]
pub(super) enum Replicas<'a> {
    Mesh,
    /// The members serving this HTTP router.
    Http(&'a str),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consecutive_failures_eject_and_ejections_grow_until_forgiven() {
        let settings = Ejection::default();
        let t0 = crate::clock::now();
        let mut a = Accrual::default();
        for _ in 0..4 {
            a.record(false);
        }
        assert_eq!(a.should_eject(&settings, None, t0), None);
        a.record(false);
        assert!(a.should_eject(&settings, None, t0).unwrap().contains("5 failures in a row"));
        assert_eq!(a.eject(&settings, t0), Duration::from_secs(5));
        assert!(a.ejected(t0 + Duration::from_secs(4)) && !a.ejected(t0 + Duration::from_secs(5)));
        // Back on probation, five more failures: twice as long.
        let t1 = t0 + Duration::from_secs(6);
        for _ in 0..5 {
            a.record(false);
        }
        assert!(a.should_eject(&settings, None, t1).is_some());
        assert_eq!(a.eject(&settings, t1), Duration::from_secs(10));
        // A whole window of good answers forgives them.
        for _ in 0..WINDOW {
            a.record(true);
        }
        assert_eq!(a.eject(&settings, t1), Duration::from_secs(5));
    }

    #[test]
    fn a_success_rate_far_below_the_peers_ejects() {
        let settings = Ejection::default();
        let now = crate::clock::now();
        let mut a = Accrual::default();
        for i in 0..19 {
            a.record(i % 2 == 0);
        }
        assert_eq!(a.success_rate(&settings), None, "fewer than 20 calls say nothing");
        a.record(false);
        assert_eq!(a.success_rate(&settings), Some(0.5));
        assert!(a.should_eject(&settings, Some(1.0), now).unwrap().contains("50 % of its calls succeed"));
        assert_eq!(a.should_eject(&settings, Some(0.55), now), None, "its peers fail as much: not an outlier");
        assert_eq!(a.should_eject(&settings, None, now), None, "no peer to compare with");
    }

    #[test]
    fn on_probation_a_few_calls_are_enough() {
        let settings = Ejection::default();
        let now = crate::clock::now();
        let mut a = Accrual::default();
        a.eject(&settings, now);
        let later = now + Duration::from_secs(6);
        for ok in [true, false, true, false] {
            a.record(ok);
        }
        assert!(a.should_eject(&settings, Some(1.0), later).is_some());
    }
}
