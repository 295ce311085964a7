//! The node-wide concurrency limit: how many calls a node's handlers run at once. The
//! adaptive limit follows measured latency (a gradient limiter, after Netflix's
//! concurrency-limits): it grows while calls take about as long as the fastest recent
//! ones, and shrinks as soon as they queue. Calls beyond it are refused with
//! `overloaded` before anything runs, so callers retry elsewhere.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use crate::{
    call::{BoxFuture, Call, Dispatch, Reply},
    error::Error,
    figures::Figure,
};

/// How many calls a node runs at once, across all its connections and doors
/// ([`ServerConfig::concurrency`](super::ServerConfig)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConcurrencyLimit {
    /// No node-wide limit (each mesh connection still has `max_in_flight`).
    Off,
    /// At most this many.
    Fixed(usize),
    /// A limit that follows latency, between `min` and `max`, starting at `initial`.
    Adaptive {
        /// Where it starts.
        initial: usize,
        /// It never goes below this.
        min: usize,
        /// It never goes above this.
        max: usize,
    },
}

impl Default for ConcurrencyLimit {
    /// Adaptive from 128, between 8 and 4096.
    fn default() -> Self {
        ConcurrencyLimit::Adaptive { initial: 128, min: 8, max: 4096 }
    }
}

/// Calls faster than this are not told apart: microsecond jitter is not queueing.
const LATENCY_FLOOR: Duration = Duration::from_millis(1);
/// A window of measurements: at least this long and this many calls.
const WINDOW: Duration = Duration::from_millis(100);
const WINDOW_CALLS: u64 = 10;
/// The baseline is the fastest call of the last this many windows.
const BASELINE_WINDOWS: usize = 50;
/// Calls may take this many times the baseline before the limit shrinks.
const TOLERANCE: f64 = 1.5;

/// The limit and what it counts. One per node.
pub(crate) struct Limiter {
    adaptive: AtomicBool,
    limit: AtomicUsize,
    in_flight: AtomicUsize,
    refused: AtomicU64,
    window: Mutex<Window>,
}

struct Window {
    /// The adaptive limit's bounds.
    min: usize,
    max: usize,
    started: Instant,
    calls: u64,
    total: Duration,
    fastest: Duration,
    busiest: usize,
    /// Fastest call of each recent window, newest last.
    baselines: Vec<Duration>,
    /// The limit as a real number (the atomic holds it rounded).
    estimate: f64,
}

impl Limiter {
    pub(crate) fn new(mode: ConcurrencyLimit) -> Limiter {
        let limiter = Limiter {
            adaptive: AtomicBool::new(false),
            limit: AtomicUsize::new(usize::MAX),
            in_flight: AtomicUsize::new(0),
            refused: AtomicU64::new(0),
            window: Mutex::new(Window {
                min: 1,
                max: usize::MAX,
                started: Instant::now(),
                calls: 0,
                total: Duration::ZERO,
                fastest: Duration::MAX,
                busiest: 0,
                baselines: Vec::new(),
                estimate: 0.0,
            }),
        };
        limiter.configure(mode);
        limiter
    }

    pub(crate) fn configure(&self, mode: ConcurrencyLimit) {
        let mut w = self.window.lock().unwrap();
        let limit = match mode {
            ConcurrencyLimit::Off => usize::MAX,
            ConcurrencyLimit::Fixed(n) => n.max(1),
            ConcurrencyLimit::Adaptive { initial, min, max } => {
                (w.min, w.max) = (min.max(1), max.max(min).max(1));
                initial.clamp(w.min, w.max)
            }
        };
        w.estimate = limit as f64;
        self.adaptive.store(matches!(mode, ConcurrencyLimit::Adaptive { .. }), Ordering::Relaxed);
        self.limit.store(limit, Ordering::Relaxed);
    }

    /// Admits a call, or refuses it when the node runs its limit already.
    pub(crate) fn admit(self: &Arc<Self>) -> Result<Permit, Error> {
        let limit = self.limit.load(Ordering::Relaxed);
        let running = self.in_flight.fetch_add(1, Ordering::AcqRel);
        if running >= limit {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            self.refused.fetch_add(1, Ordering::Relaxed);
            return Err(Error::Overloaded { message: format!("the node runs its limit of {limit} calls at once") });
        }
        Ok(Permit { limiter: self.clone(), started: Instant::now(), running: running + 1 })
    }

    fn done(&self, latency: Duration, running: usize, now: Instant) {
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
        if !self.adaptive.load(Ordering::Relaxed) {
            return;
        }
        let mut w = self.window.lock().unwrap();
        w.calls += 1;
        w.total += latency;
        w.fastest = w.fastest.min(latency);
        w.busiest = w.busiest.max(running);
        if w.calls < WINDOW_CALLS || now.duration_since(w.started) < WINDOW {
            return;
        }
        let limit = next_limit(&mut w);
        self.limit.store(limit, Ordering::Relaxed);
        w.started = now;
        (w.calls, w.total, w.fastest, w.busiest) = (0, Duration::ZERO, Duration::MAX, 0);
    }

    /// The limit now.
    pub(crate) fn limit(&self) -> Option<usize> {
        let limit = self.limit.load(Ordering::Relaxed);
        (limit != usize::MAX).then_some(limit)
    }

    /// Calls running now.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Calls refused at the limit so far.
    pub(crate) fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    #[cfg_attr(not(feature = "http"), allow(dead_code))] // shown by `/metrics`
    pub(crate) fn figures(&self) -> [Figure; 3] {
        [
            Figure::gauge(
                "meshrpc_concurrency_limit",
                "Calls the node runs at once before refusing more (0: no limit)",
                self.limit().unwrap_or(0) as u64,
            ),
            Figure::gauge("meshrpc_calls_running", "Calls the node's handlers run now", self.in_flight() as u64),
            Figure::counter("meshrpc_calls_overloaded", "Calls refused at the concurrency limit", self.refused()),
        ]
    }
}

/// The limit after a window of measurements: shrinks by the ratio of the baseline (the
/// fastest recent call) to this window's average once calls queue beyond the tolerance,
/// grows by about √limit while they do not — unless the window never came near the limit
/// (the node was not the bottleneck).
fn next_limit(w: &mut Window) -> usize {
    let average = (w.total / w.calls.max(1) as u32).max(LATENCY_FLOOR);
    if w.baselines.len() == BASELINE_WINDOWS {
        w.baselines.remove(0);
    }
    w.baselines.push(w.fastest.max(LATENCY_FLOOR));
    let baseline = *w.baselines.iter().min().expect("one window at least");
    let gradient = (TOLERANCE * baseline.as_secs_f64() / average.as_secs_f64()).clamp(0.5, 1.0);
    let queue = w.estimate.sqrt();
    let estimate = if gradient < 1.0 {
        w.estimate * gradient + queue
    } else if (w.busiest as f64) < w.estimate / 2.0 {
        w.estimate
    } else {
        // Grow gently: a fifth of the way to limit + √limit.
        w.estimate * 0.8 + (w.estimate + queue) * 0.2
    };
    w.estimate = estimate.clamp(w.min as f64, w.max as f64);
    w.estimate.round() as usize
}

/// A call admitted under the limit; dropping it (the call ended) feeds the limit.
pub(crate) struct Permit {
    limiter: Arc<Limiter>,
    started: Instant,
    running: usize,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let now = Instant::now();
        self.limiter.done(now.duration_since(self.started), self.running, now);
    }
}

/// A node's dispatch under its concurrency limit.
pub(crate) struct Limited {
    pub(crate) inner: Arc<dyn Dispatch>,
    pub(crate) limiter: Arc<Limiter>,
}

impl Dispatch for Limited {
    fn dispatch(&self, call: Call) -> BoxFuture<Result<Reply, Error>> {
        let permit = match self.limiter.admit() {
            Ok(permit) => permit,
            Err(e) => return Box::pin(std::future::ready(Err(e))),
        };
        let answer = self.inner.dispatch(call);
        Box::pin(async move {
            let answer = answer.await;
            drop(permit);
            answer
        })
    }

    fn colocated(&self, spec: &'static crate::spec::ServiceSpec) -> Option<Arc<dyn std::any::Any + Send + Sync>> {
        self.inner.colocated(spec)
    }

    fn colocated_now(&self, service: &str) -> bool {
        self.inner.colocated_now(service)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(estimate: f64) -> Window {
        Window {
            min: 8,
            max: 4096,
            started: Instant::now(),
            calls: 0,
            total: Duration::ZERO,
            fastest: Duration::MAX,
            busiest: 0,
            baselines: Vec::new(),
            estimate,
        }
    }

    fn measure(w: &mut Window, latencies_ms: &[u64], busiest: usize) {
        (w.calls, w.total, w.busiest) = (latencies_ms.len() as u64, Duration::ZERO, busiest);
        w.fastest = Duration::MAX;
        for ms in latencies_ms {
            w.total += Duration::from_millis(*ms);
            w.fastest = w.fastest.min(Duration::from_millis(*ms));
        }
    }

    #[test]
    fn queueing_shrinks_the_limit_and_a_calm_node_grows_it_back() {
        let mut w = window(128.0);
        // Calls of 20 ms that queue behind 4 workers: most take ten times as long.
        let mut limits = Vec::new();
        for _ in 0..8 {
            measure(&mut w, &[20, 200, 200, 200, 200, 200, 200, 200, 200, 200], 40);
            limits.push(next_limit(&mut w));
        }
        assert!(limits.windows(2).all(|p| p[1] <= p[0]), "{limits:?}");
        assert_eq!(*limits.last().unwrap(), 8, "down to the minimum: {limits:?}");
        // The queue is gone: calls take their 20 ms again and the limit is used.
        let mut grown = 8;
        for _ in 0..10 {
            measure(&mut w, &[20; 10], grown);
            grown = next_limit(&mut w);
        }
        assert!(grown > 8, "{grown}");
    }

    #[test]
    fn fast_calls_are_not_told_apart_and_an_idle_node_keeps_its_limit() {
        let mut w = window(128.0);
        measure(&mut w, &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0], 10); // far below the limit
        assert_eq!(next_limit(&mut w), 128);
        // Sub-millisecond jitter (0 to 1 ms) near the limit: grows.
        measure(&mut w, &[0, 1, 0, 1, 0, 1, 0, 1, 0, 1], 120);
        assert!(next_limit(&mut w) > 128);
    }

    #[test]
    fn calls_beyond_the_limit_are_refused_before_they_run() {
        let limiter = Arc::new(Limiter::new(ConcurrencyLimit::Fixed(2)));
        let (a, b) = (limiter.admit().unwrap(), limiter.admit().unwrap());
        let refused = limiter.admit().err().unwrap();
        assert!(refused.to_string().contains("limit of 2 calls"), "{refused}");
        assert_eq!((limiter.in_flight(), limiter.refused()), (2, 1));
        drop((a, b));
        assert!(limiter.admit().is_ok());
        assert_eq!(Limiter::new(ConcurrencyLimit::Off).limit(), None);
    }
}
