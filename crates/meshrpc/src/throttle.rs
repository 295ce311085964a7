//! Warnings a peer can trigger at will are logged at most once per period, with how many
//! were left out: a flood of garbage must not become a flood of log lines.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Mutex,
    },
    time::{Duration, Instant},
};

/// One rate-limited warning.
#[derive(Debug)]
pub(crate) struct Throttle {
    period: Duration,
    last: Mutex<Option<Instant>>,
    held: AtomicU64,
}

impl Throttle {
    pub(crate) const fn new(period: Duration) -> Throttle {
        Throttle { period, last: Mutex::new(None), held: AtomicU64::new(0) }
    }

    /// Calls `log` with the number of occurrences left out since the last line, at most
    /// once per period; otherwise counts this one as left out.
    pub(crate) fn log(&self, log: impl FnOnce(u64)) {
        let now = crate::clock::now();
        let mut last = self.last.lock().unwrap();
        if last.is_some_and(|t| now.duration_since(t) < self.period) {
            self.held.fetch_add(1, Ordering::Relaxed);
            return;
        }
        *last = Some(now);
        drop(last);
        log(self.held.swap(0, Ordering::Relaxed));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_logs_once_per_period_and_says_how_many_were_left_out() {
        let throttle = Throttle::new(Duration::from_secs(3600));
        let mut lines = Vec::new();
        for _ in 0..1000 {
            throttle.log(|left_out| lines.push(left_out));
        }
        assert_eq!(lines, vec![0]);
        *throttle.last.lock().unwrap() = Some(crate::clock::now() - Duration::from_secs(3601));
        throttle.log(|left_out| lines.push(left_out));
        assert_eq!(lines, vec![0, 999]);
    }
}
