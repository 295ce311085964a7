//! The retry budget (as Finagle's and Linkerd's): retries and hedges may add a share of
//! the calls made over a sliding window, plus a small floor, so a slowdown never turns
//! into a retry storm. And the jittered pause before a retry.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

/// How many retries (and hedges) calls may add.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct RetryBudget {
    /// Retries allowed per call made in the window (0.2).
    pub ratio: f64,
    /// Retries allowed per second of the window whatever the traffic (10): a node making
    /// few calls can still retry them.
    pub min_per_second: u32,
    /// The sliding window (10 s).
    pub window: Duration,
}

impl Default for RetryBudget {
    fn default() -> Self {
        RetryBudget { ratio: 0.2, min_per_second: 10, window: Duration::from_secs(10) }
    }
}

const SLOTS: usize = 10;

/// Calls and retries over the window, in slots of a tenth of it.
pub(super) struct Budget {
    settings: RetryBudget,
    slot: Duration,
    counts: Mutex<Counts>,
}

struct Counts {
    origin: Instant,
    /// The slot index (since `origin`) that `head` holds.
    head_slot: u64,
    head: usize,
    calls: [u64; SLOTS],
    retries: [u64; SLOTS],
}

impl Budget {
    pub(super) fn new(settings: RetryBudget) -> Budget {
        let slot = (settings.window / SLOTS as u32).max(Duration::from_millis(1));
        let now = crate::clock::now();
        Budget {
            settings,
            slot,
            counts: Mutex::new(Counts { origin: now, head_slot: 0, head: 0, calls: [0; SLOTS], retries: [0; SLOTS] }),
        }
    }

    /// A call was made.
    pub(super) fn deposit(&self, now: Instant) {
        let mut c = self.counts.lock().unwrap();
        let head = self.advance(&mut c, now);
        c.calls[head] += 1;
    }

    /// Takes one retry from the budget; false when it is spent.
    pub(super) fn withdraw(&self, now: Instant) -> bool {
        let mut c = self.counts.lock().unwrap();
        let head = self.advance(&mut c, now);
        if self.left_in(&c) < 1.0 {
            return false;
        }
        c.retries[head] += 1;
        true
    }

    /// Retries allowed right now.
    pub(super) fn left(&self, now: Instant) -> u64 {
        let mut c = self.counts.lock().unwrap();
        self.advance(&mut c, now);
        self.left_in(&c) as u64
    }

    fn left_in(&self, c: &Counts) -> f64 {
        let calls: u64 = c.calls.iter().sum();
        let retries: u64 = c.retries.iter().sum();
        let floor = f64::from(self.settings.min_per_second) * self.settings.window.as_secs_f64();
        (self.settings.ratio * calls as f64 + floor - retries as f64).max(0.0)
    }

    /// Moves the window to `now`, clearing the slots it left behind; the head slot.
    fn advance(&self, c: &mut Counts, now: Instant) -> usize {
        let slot = (now.saturating_duration_since(c.origin).as_nanos() / self.slot.as_nanos()) as u64;
        let steps = slot.saturating_sub(c.head_slot).min(SLOTS as u64);
        for _ in 0..steps {
            c.head = (c.head + 1) % SLOTS;
            c.calls[c.head] = 0;
            c.retries[c.head] = 0;
        }
        c.head_slot = c.head_slot.max(slot);
        c.head
    }
}

/// The pause before retry number `retry` (1, 2, …): full jitter over 10 ms doubling per
/// retry, at most 100 ms. `random` is any 64-bit random number.
pub(super) fn backoff(retry: u32, random: u64) -> Duration {
    let ceiling =
        Duration::from_millis(10).saturating_mul(1 << retry.saturating_sub(1).min(4)).min(Duration::from_millis(100));
    ceiling.mul_f64((random >> 11) as f64 / (1u64 << 53) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_are_bounded_by_a_share_of_calls_plus_a_floor() {
        let budget = Budget::new(RetryBudget { ratio: 0.2, min_per_second: 1, window: Duration::from_secs(10) });
        let t0 = crate::clock::now();
        for _ in 0..1000 {
            budget.deposit(t0);
        }
        let granted = (0..1000).filter(|_| budget.withdraw(t0)).count();
        assert_eq!(granted, 200 + 10, "20 % of 1000 calls plus 1 per second of a 10 s window");
        assert_eq!(budget.left(t0), 0);
        // Half a window later the calls still count; a whole window later nothing does,
        // and only the floor is left.
        assert_eq!(budget.left(t0 + Duration::from_secs(5)), 0);
        assert_eq!(budget.left(t0 + Duration::from_secs(11)), 10);
        assert!(budget.withdraw(t0 + Duration::from_secs(11)));
    }

    #[test]
    fn backoff_is_jittered_and_capped() {
        assert_eq!(backoff(1, 0), Duration::ZERO);
        assert!(backoff(1, u64::MAX) <= Duration::from_millis(10));
        assert!(backoff(2, u64::MAX) > Duration::from_millis(19));
        assert!(backoff(9, u64::MAX) <= Duration::from_millis(100));
    }
}
