//! The node-wide concurrency limit: how many calls a node's handlers run at once. The
//! adaptive limit follows measured latency (a gradient limiter, after Netflix's
//! concurrency-limits): it grows while calls take about as long as the fastest recent
//! calls of the same method, and shrinks as soon as they queue. Comparing each call with
//! its own method keeps a mix of fast and slow methods from looking like a queue. Calls
//! beyond the limit are refused with `overloaded` before anything runs, so callers retry
//! elsewhere. The registry asks it for every call it runs (`Registry::dispatch`).

use std::{
    collections::HashMap,
    hash::BuildHasherDefault,
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use crate::{error::Error, metrics::Figure};

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
/// A method's baseline is its fastest call over its last this many windows.
const BASELINE_WINDOWS: usize = 50;
/// Methods whose baselines are kept (more are not told apart: names come from callers).
const MAX_METHODS: usize = 4096;
/// Calls may take this many times the baseline before the limit shrinks.
const TOLERANCE: f64 = 1.5;

/// The limit and what it counts. One per node.
pub(crate) struct Limiter {
    adaptive: AtomicBool,
    limit: AtomicUsize,
    in_flight: AtomicUsize,
    /// Calls without a deadline running now: at most half the limit, so callers that
    /// never hang up cannot take the whole node.
    open_ended: AtomicUsize,
    refused: AtomicU64,
    /// Calls admitted: picks the ones measured.
    admitted: AtomicU64,
    window: Mutex<Window>,
}

/// Far from its limit, a node measures one call in this many (each measure costs two
/// clock reads and a lock); near it, every call.
const SAMPLE_EVERY: u64 = 4;

struct Window {
    /// The adaptive limit's bounds.
    min: usize,
    max: usize,
    started: Instant,
    calls: u64,
    /// The sum, over the window's calls, of latency ÷ its method's baseline.
    slowdown: f64,
    busiest: usize,
    /// By a hash of service and method.
    methods: HashMap<u64, Baseline, BuildHasherDefault<KeyHasher>>,
    /// The limit as a real number (the atomic holds it rounded).
    estimate: f64,
}

impl Window {
    /// One measured call of `method` (a [`method_key`]) that took `latency` with
    /// `running` calls at once: how much slower than its method's baseline it was.
    fn record(&mut self, method: u64, latency: Duration, running: usize) {
        self.calls += 1;
        self.busiest = self.busiest.max(running);
        let tracked = self.methods.len() < MAX_METHODS || self.methods.contains_key(&method);
        let baseline = match tracked.then(|| self.methods.entry(method).or_default()) {
            Some(b) => {
                b.fastest = Some(b.fastest.map_or(latency, |f| f.min(latency)));
                b.best.unwrap_or(latency)
            }
            None => latency,
        };
        self.slowdown += latency.as_secs_f64() / baseline.max(LATENCY_FLOOR).as_secs_f64();
    }
}

/// What one method's calls take when nothing queues.
#[derive(Default)]
struct Baseline {
    /// Its fastest call of each recent window it was called in, newest last.
    recent: Vec<Duration>,
    /// The fastest of `recent`.
    best: Option<Duration>,
    /// Its fastest call in the current window.
    fastest: Option<Duration>,
}

impl Limiter {
    pub(crate) fn new(mode: ConcurrencyLimit) -> Limiter {
        let limiter = Limiter {
            adaptive: AtomicBool::new(false),
            limit: AtomicUsize::new(usize::MAX),
            in_flight: AtomicUsize::new(0),
            open_ended: AtomicUsize::new(0),
            refused: AtomicU64::new(0),
            admitted: AtomicU64::new(0),
            window: Mutex::new(Window {
                min: 1,
                max: usize::MAX,
                started: crate::clock::now(),
                calls: 0,
                slowdown: 0.0,
                busiest: 0,
                methods: HashMap::default(),
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

    /// Admits a call of `service.method`, or refuses it when the node runs its limit
    /// already — or, for a call without a deadline (`open_ended`), its share of it: half.
    pub(crate) fn admit(self: &Arc<Self>, service: &str, method: &str, open_ended: bool) -> Result<Permit, Error> {
        let limit = self.limit.load(Ordering::Relaxed);
        if open_ended {
            let share = (limit / 2).max(1);
            if self.open_ended.fetch_add(1, Ordering::AcqRel) >= share {
                self.open_ended.fetch_sub(1, Ordering::AcqRel);
                self.refused.fetch_add(1, Ordering::Relaxed);
                return Err(Error::Overloaded {
                    message: format!(
                        "the node runs its share of {share} calls without a deadline at once (half its limit of {limit}): give the call a deadline"
                    ),
                });
            }
        }
        let running = self.in_flight.fetch_add(1, Ordering::AcqRel);
        if running >= limit {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            if open_ended {
                self.open_ended.fetch_sub(1, Ordering::AcqRel);
            }
            self.refused.fetch_add(1, Ordering::Relaxed);
            return Err(Error::Overloaded { message: format!("the node runs its limit of {limit} calls at once") });
        }
        // A call without a deadline lasts as long as its caller wants: its time says
        // nothing about queueing.
        let measured = self.adaptive.load(Ordering::Relaxed)
            && !open_ended
            && (running >= limit / 4 * 3 || self.admitted.fetch_add(1, Ordering::Relaxed) % SAMPLE_EVERY == 0);
        let sample = measured.then(|| Sample { started: crate::clock::now(), method: method_key(service, method) });
        Ok(Permit { limiter: self.clone(), running: running + 1, open_ended, sample })
    }

    fn done(&self, p: &Permit) {
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
        if p.open_ended {
            self.open_ended.fetch_sub(1, Ordering::AcqRel);
        }
        let Some(sample) = &p.sample else { return };
        let now = crate::clock::now();
        let latency = now.duration_since(sample.started).max(LATENCY_FLOOR);
        let mut w = self.window.lock().unwrap();
        w.record(sample.method, latency, p.running);
        if w.calls < WINDOW_CALLS || now.duration_since(w.started) < WINDOW {
            return;
        }
        let limit = next_limit(&mut w);
        self.limit.store(limit, Ordering::Relaxed);
        w.started = now;
        (w.calls, w.slowdown, w.busiest) = (0, 0.0, 0);
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

/// The limit after a window of measurements: shrinks by the ratio of the tolerance to
/// how much slower than their methods' baselines calls were, once they queue beyond the
/// tolerance; grows by about √limit / 5 while they do not — unless the window never came
/// near the limit (the node was not the bottleneck). Then the window's fastest calls join
/// their methods' baselines.
fn next_limit(w: &mut Window) -> usize {
    let slowdown = (w.slowdown / w.calls.max(1) as f64).max(1.0);
    let gradient = (TOLERANCE / slowdown).clamp(0.5, 1.0);
    let queue = w.estimate.sqrt();
    let estimate = if gradient < 1.0 {
        w.estimate * gradient + queue
    } else if (w.busiest as f64) < w.estimate / 2.0 {
        w.estimate
    } else {
        w.estimate * 0.8 + (w.estimate + queue) * 0.2
    };
    w.estimate = estimate.clamp(w.min as f64, w.max as f64);
    for b in w.methods.values_mut() {
        if let Some(fastest) = b.fastest.take() {
            if b.recent.len() == BASELINE_WINDOWS {
                b.recent.remove(0);
            }
            b.recent.push(fastest);
            b.best = b.recent.iter().min().copied();
        }
    }
    w.estimate.round() as usize
}

/// A method's key for its baseline.
pub(crate) fn method_key(service: &str, method: &str) -> u64 {
    // FNV-1a over `service/method`.
    service
        .bytes()
        .chain([b'/'])
        .chain(method.bytes())
        .fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// A call admitted under the limit; dropping it (the call ended) feeds the limit.
pub(crate) struct Permit {
    limiter: Arc<Limiter>,
    running: usize,
    /// The call has no deadline.
    open_ended: bool,
    /// When it started and its method, if it is measured.
    sample: Option<Sample>,
}

struct Sample {
    started: Instant,
    method: u64,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.limiter.done(self);
    }
}

/// The keys are hashes already.
#[derive(Default)]
struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(estimate: f64) -> Window {
        Window {
            min: 8,
            max: 4096,
            started: crate::clock::now(),
            calls: 0,
            slowdown: 0.0,
            busiest: 0,
            methods: HashMap::default(),
            estimate,
        }
    }

    /// A window of calls of methods `(key, ms)`, with `busiest` calls at once at most,
    /// recorded as `Limiter::done` records them; the limit after it.
    fn measure(w: &mut Window, calls: &[(u64, u64)], busiest: usize) -> usize {
        (w.calls, w.slowdown, w.busiest) = (0, 0.0, 0);
        for (method, ms) in calls {
            w.record(*method, Duration::from_millis(*ms).max(LATENCY_FLOOR), busiest);
        }
        next_limit(w)
    }

    #[test]
    fn queueing_shrinks_the_limit_and_a_calm_node_grows_it_back() {
        let mut w = window(128.0);
        measure(&mut w, &[(1, 20); 10], 8); // the method's baseline: 20 ms
                                            // Calls of 20 ms that queue behind 4 workers: most take ten times as long.
        let mut limits = Vec::new();
        for _ in 0..8 {
            let mut calls = vec![(1, 200); 9];
            calls.push((1, 20));
            limits.push(measure(&mut w, &calls, 40));
        }
        assert!(limits.windows(2).all(|p| p[1] <= p[0]), "{limits:?}");
        assert_eq!(*limits.last().unwrap(), 8, "down to the minimum: {limits:?}");
        // The queue is gone: calls take their 20 ms again and the limit is used.
        let mut grown = 8;
        for _ in 0..10 {
            grown = measure(&mut w, &[(1, 20); 10], grown);
        }
        assert!(grown > 8, "{grown}");
    }

    #[test]
    fn a_mix_of_fast_and_slow_methods_is_not_a_queue() {
        let mut w = window(128.0);
        let mix: Vec<(u64, u64)> = (0..20).map(|i| if i % 2 == 0 { (1, 5) } else { (2, 20) }).collect();
        let mut limit = 128;
        for _ in 0..10 {
            limit = measure(&mut w, &mix, 100);
        }
        assert!(limit >= 128, "{limit}");
    }

    #[test]
    fn fast_calls_are_not_told_apart_and_an_idle_node_keeps_its_limit() {
        let mut w = window(128.0);
        assert_eq!(measure(&mut w, &[(1, 0); 10], 10), 128, "far below the limit");
        // Sub-millisecond jitter (0 to 1 ms) near the limit: grows.
        let jitter: Vec<(u64, u64)> = (0..10).map(|i| (1, i % 2)).collect();
        assert!(measure(&mut w, &jitter, 120) > 128);
    }

    #[test]
    fn baselines_are_kept_for_at_most_max_methods() {
        // Method names come from callers: a caller inventing names gets no more memory
        // than MAX_METHODS baselines, however many it sends.
        let limiter = Arc::new(Limiter::new(ConcurrencyLimit::default()));
        for i in 0..(MAX_METHODS as u64 + 1000) * SAMPLE_EVERY {
            drop(limiter.admit("s", &format!("m{i}"), false).unwrap());
        }
        assert_eq!(limiter.window.lock().unwrap().methods.len(), MAX_METHODS);
        assert!(limiter.admit("s", "m0", false).is_ok(), "calls are still admitted");
    }

    #[test]
    fn a_method_past_the_baseline_cap_counts_as_never_slowed() {
        // Its call has no baseline to be slower than: it cannot shrink the limit.
        let mut w = window(128.0);
        for key in 0..MAX_METHODS as u64 {
            w.methods.insert(key, Baseline { best: Some(Duration::from_millis(1)), ..Baseline::default() });
        }
        w.record(MAX_METHODS as u64, Duration::from_millis(500), 120);
        assert_eq!((w.calls, w.slowdown, w.methods.len()), (1, 1.0, MAX_METHODS));
        w.record(0, Duration::from_millis(500), 120);
        assert_eq!(w.slowdown, 501.0, "a tracked method is measured against its baseline");
    }

    #[test]
    fn calls_beyond_the_limit_are_refused_before_they_run() {
        let limiter = Arc::new(Limiter::new(ConcurrencyLimit::Fixed(2)));
        let (a, b) = (limiter.admit("s", "m", false).unwrap(), limiter.admit("s", "m", false).unwrap());
        let refused = limiter.admit("s", "m", false).err().unwrap();
        assert!(refused.to_string().contains("limit of 2 calls"), "{refused}");
        assert_eq!((limiter.in_flight(), limiter.refused()), (2, 1));
        drop((a, b));
        assert!(limiter.admit("s", "m", false).is_ok());
        assert_eq!(Limiter::new(ConcurrencyLimit::Off).limit(), None);
    }

    #[test]
    fn calls_without_a_deadline_take_at_most_half_the_limit() {
        let limiter = Arc::new(Limiter::new(ConcurrencyLimit::Fixed(4)));
        let open: Vec<_> = (0..2).map(|_| limiter.admit("s", "m", true).unwrap()).collect();
        let refused = limiter.admit("s", "m", true).err().unwrap();
        assert!(refused.to_string().contains("share of 2 calls without a deadline"), "{refused}");
        // Calls with a deadline still have the other half.
        let bounded: Vec<_> = (0..2).map(|_| limiter.admit("s", "m", false).unwrap()).collect();
        assert!(limiter.admit("s", "m", false).is_err());
        assert_eq!((limiter.in_flight(), limiter.refused()), (4, 2));
        drop((open, bounded));
        assert_eq!(limiter.open_ended.load(Ordering::Relaxed), 0);
        assert!(limiter.admit("s", "m", true).is_ok());
    }
}
