//! What a process counts about calls, by direction (served, made), service, method and
//! peer: the golden metrics (calls by result code, a latency histogram, calls running)
//! that `/metrics`, `meshrpc top` and the dashboard show, and the window that the
//! request log's summary line reads. Lock-free on the hot path once a series exists: a
//! connection keeps the series it used last.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering},
        Arc, OnceLock, RwLock,
    },
};

use serde::{Deserialize, Serialize};

use crate::spec::NODE_SERVICE;

/// Distinct `(service, method, peer)` series with a named peer kept per direction (≈ 4 KiB
/// each: at most ≈ 4 MiB a direction). Only methods that exist get series; past this bound
/// (or the share of callers that are no members, see [`CallStats::series`]) a method's
/// calls count under its peer `other`.
pub(crate) const MAX_SERIES: usize = 1024;

/// Named peers one method keeps per direction: callers choose the names they send, so a
/// caller naming itself anew on every connection fills one method's share, not the node's.
/// Members of this process's clusters keep their names past it.
pub(crate) const MAX_PEERS: usize = 32;

/// Member names remembered as real (see [`members_seen`]).
const MAX_MEMBER_NAMES: usize = 4096;

fn member_names() -> &'static RwLock<std::collections::HashSet<String>> {
    static NAMES: OnceLock<RwLock<std::collections::HashSet<String>>> = OnceLock::new();
    NAMES.get_or_init(Default::default)
}

/// A cluster of this process sees members of these names: calls from them keep series of
/// their own, whatever other callers name themselves (at most [`MAX_MEMBER_NAMES`] names).
#[cfg_attr(not(feature = "cluster"), allow(dead_code))]
pub(crate) fn members_seen<'a>(names: impl Iterator<Item = &'a str>) {
    let fresh: Vec<&str> = {
        let known = member_names().read().unwrap();
        names.filter(|n| !known.contains(*n)).collect()
    };
    if fresh.is_empty() {
        return;
    }
    let mut known = member_names().write().unwrap();
    for name in fresh {
        if known.len() < MAX_MEMBER_NAMES {
            known.insert(name.to_owned());
        }
    }
}

fn is_member(peer: &str) -> bool {
    member_names().read().unwrap().contains(peer)
}

/// Result codes a call can end with, as labels: `ok`, `application`, then
/// [`Error::code`](crate::Error::code)'s.
pub(crate) const CODES: [&str; 15] = [
    "ok",
    "application",
    "bad_request",
    "unknown_service",
    "unknown_method",
    "timeout",
    "cancelled",
    "unavailable",
    "overloaded",
    "too_large",
    "protocol",
    "tls",
    "permission_denied",
    "internal",
    "other",
];

fn code_index(code: &str) -> usize {
    CODES.iter().position(|c| *c == code).unwrap_or(CODES.len() - 1)
}

/// Upper bounds (seconds) of the latency histogram's buckets (Prometheus `le`); one more
/// bucket holds the rest (`+Inf`).
pub(crate) const LATENCY_BOUNDS: [f64; 16] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// The same bounds in microseconds.
const BOUNDS_MICROS: [u64; 16] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
    5_000_000, 10_000_000,
];

/// Summary-window buckets: 4 per power of two of microseconds, up to 2^40 µs.
const WINDOW_BUCKETS: usize = 4 * 40;

fn window_bucket(micros: u64) -> usize {
    let micros = micros.max(1);
    let log2 = 63 - micros.leading_zeros() as usize;
    let fraction = if log2 >= 2 { ((micros >> (log2 - 2)) & 3) as usize } else { 0 };
    (log2 * 4 + fraction).min(WINDOW_BUCKETS - 1)
}

/// The upper bound (µs) of a summary-window bucket.
fn window_bucket_top(i: usize) -> u64 {
    let (log2, fraction) = (i / 4, (i % 4) as u64);
    if log2 < 2 {
        return 1 << (log2 + 1);
    }
    (1u64 << log2) + ((fraction + 1) << (log2 - 2))
}

/// Whether calls are counted at all (`Telemetry::count_calls`; off for the bench's
/// comparison, and the summary line then says nothing either).
pub(crate) fn enabled() -> bool {
    crate::telemetry::current().count_calls
}

/// Shards of a series: each thread counts in its own (cache lines are not shared between
/// cores on the hot path); reading sums them.
const SHARDS: usize = 4;

/// One series: a method's calls with one peer, in one direction.
pub(crate) struct MethodStats {
    shards: [Shard; SHARDS],
}

/// One thread's share of a series, on cache lines of its own.
#[repr(align(128))]
struct Shard {
    /// By [`CODES`]; only grows.
    codes: [AtomicU64; CODES.len()],
    /// By [`LATENCY_BOUNDS`] (+Inf last), not cumulative; only grows.
    latency: [AtomicU64; LATENCY_BOUNDS.len() + 1],
    latency_micros: AtomicU64,
    running: AtomicI64,
    /// Items a stream answer carried, and their bytes (encoded); only grow.
    stream_items: AtomicU64,
    stream_bytes: AtomicU64,
    /// Since the last summary line.
    window_calls: AtomicU64,
    window_errors: AtomicU64,
    window: [AtomicU32; WINDOW_BUCKETS],
}

impl Shard {
    fn new() -> Shard {
        Shard {
            codes: std::array::from_fn(|_| AtomicU64::new(0)),
            latency: std::array::from_fn(|_| AtomicU64::new(0)),
            latency_micros: AtomicU64::new(0),
            running: AtomicI64::new(0),
            stream_items: AtomicU64::new(0),
            stream_bytes: AtomicU64::new(0),
            window_calls: AtomicU64::new(0),
            window_errors: AtomicU64::new(0),
            window: std::array::from_fn(|_| AtomicU32::new(0)),
        }
    }
}

/// This thread's shard.
fn shard_index() -> usize {
    use std::sync::atomic::AtomicUsize;
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    INDEX.with(|i| *i)
}

impl MethodStats {
    fn new() -> MethodStats {
        MethodStats { shards: std::array::from_fn(|_| Shard::new()) }
    }

    fn mine(&self) -> &Shard {
        &self.shards[shard_index()]
    }

    pub(crate) fn started(&self) {
        self.mine().running.fetch_add(1, Ordering::Relaxed);
    }

    /// A call ended with `code` after `micros`.
    pub(crate) fn record(&self, micros: u64, code: &str) {
        let shard = self.mine();
        shard.running.fetch_sub(1, Ordering::Relaxed);
        shard.codes[code_index(code)].fetch_add(1, Ordering::Relaxed);
        let bucket = BOUNDS_MICROS.iter().position(|b| micros <= *b).unwrap_or(BOUNDS_MICROS.len());
        shard.latency[bucket].fetch_add(1, Ordering::Relaxed);
        shard.latency_micros.fetch_add(micros, Ordering::Relaxed);
        shard.window_calls.fetch_add(1, Ordering::Relaxed);
        if code != "ok" {
            shard.window_errors.fetch_add(1, Ordering::Relaxed);
        }
        shard.window[window_bucket(micros)].fetch_add(1, Ordering::Relaxed);
    }

    /// A stream answer of one of its calls carried an item of `bytes` (encoded).
    pub(crate) fn stream_item(&self, bytes: u64) {
        self.stream_items(1, bytes);
    }

    /// Stream answers of its calls carried `items` more items of `bytes` in all.
    pub(crate) fn stream_items(&self, items: u64, bytes: u64) {
        let shard = self.mine();
        shard.stream_items.fetch_add(items, Ordering::Relaxed);
        shard.stream_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// `(calls, errors, p99 µs)` since the last take, and starts over.
    pub(crate) fn take_window(&self) -> (u64, u64, u64) {
        let (mut calls, mut errors) = (0, 0);
        let mut counts = vec![0u64; WINDOW_BUCKETS];
        for shard in &self.shards {
            calls += shard.window_calls.swap(0, Ordering::Relaxed);
            errors += shard.window_errors.swap(0, Ordering::Relaxed);
            for (sum, b) in counts.iter_mut().zip(&shard.window) {
                *sum += u64::from(b.swap(0, Ordering::Relaxed));
            }
        }
        let total: u64 = counts.iter().sum();
        let mut seen = 0;
        let p99 = counts
            .iter()
            .enumerate()
            .find_map(|(i, n)| {
                seen += n;
                (total > 0 && seen * 100 >= total * 99).then(|| window_bucket_top(i))
            })
            .unwrap_or(0);
        (calls, errors, p99)
    }

    fn snapshot(&self) -> Snapshot {
        let sum = |f: &dyn Fn(&Shard) -> u64| self.shards.iter().map(f).sum::<u64>();
        let codes = CODES
            .iter()
            .enumerate()
            .map(|(i, c)| (c.to_string(), sum(&|s| s.codes[i].load(Ordering::Relaxed))))
            .filter(|(_, n)| *n > 0)
            .collect();
        let latency = (0..=LATENCY_BOUNDS.len()).map(|i| sum(&|s| s.latency[i].load(Ordering::Relaxed))).collect();
        let running: i64 = self.shards.iter().map(|s| s.running.load(Ordering::Relaxed)).sum();
        Snapshot {
            codes,
            latency,
            micros: sum(&|s| s.latency_micros.load(Ordering::Relaxed)),
            running: running.max(0) as u64,
            stream_items: sum(&|s| s.stream_items.load(Ordering::Relaxed)),
            stream_bytes: sum(&|s| s.stream_bytes.load(Ordering::Relaxed)),
        }
    }
}

/// What a series counted, summed over its shards.
struct Snapshot {
    codes: Vec<(String, u64)>,
    latency: Vec<u64>,
    micros: u64,
    running: u64,
    stream_items: u64,
    stream_bytes: u64,
}

/// Whether calls were served by this node or made by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Calls this node served (its handlers ran).
    Inbound,
    /// Calls this node made to other nodes (through its cluster).
    Outbound,
}

/// The series of one method: by named peer, and the rest.
#[derive(Default)]
struct MethodSeries {
    peers: HashMap<String, Arc<MethodStats>>,
    /// Calls from peers past [`MAX_PEERS`] (or [`MAX_SERIES`]), labelled `other`.
    other: Option<Arc<MethodStats>>,
}

type Series = HashMap<String, HashMap<String, MethodSeries>>;

/// Every series of one direction.
pub(crate) struct CallStats {
    series: RwLock<Series>,
    /// Series with a named peer, and those of them whose peer is no member of a cluster.
    named: std::sync::atomic::AtomicUsize,
    strangers: std::sync::atomic::AtomicUsize,
    /// Calls of services or methods that do not exist: one series, labelled `other`.
    unknown: Arc<MethodStats>,
}

impl CallStats {
    fn new() -> CallStats {
        CallStats {
            series: RwLock::default(),
            named: Default::default(),
            strangers: Default::default(),
            unknown: Arc::new(MethodStats::new()),
        }
    }

    /// The series of `service.method` with `peer`. Whether the method exists is asked
    /// (`exists`) only when it has no series yet: calls of methods that do not exist share
    /// one series labelled `other` and never take one of their own. At most [`MAX_SERIES`]
    /// have a named peer; callers that are no members of this process's clusters take at
    /// most half of them, and [`MAX_PEERS`] of one method. Calls past that count under
    /// the method's peer `other`.
    pub(crate) fn series(
        &self,
        service: &str,
        method: &str,
        peer: &str,
        exists: impl FnOnce() -> bool,
    ) -> Arc<MethodStats> {
        let known = match self.series.read().unwrap().get(service).and_then(|m| m.get(method)) {
            Some(series) => match series.peers.get(peer) {
                Some(s) => return s.clone(),
                None => true,
            },
            None => false,
        };
        if !known && !exists() {
            return self.unknown.clone();
        }
        let mut series = self.series.write().unwrap();
        let method = series.entry(service.to_owned()).or_default().entry(method.to_owned()).or_default();
        if let Some(s) = method.peers.get(peer) {
            return s.clone();
        }
        // Members of the cluster may take every named series; other callers half of them,
        // and [`MAX_PEERS`] of one method.
        let (named, member) = (self.named.load(Ordering::Relaxed), is_member(peer));
        let room = match member {
            true => named < MAX_SERIES,
            false => method.peers.len() < MAX_PEERS && self.strangers.load(Ordering::Relaxed) < MAX_SERIES / 2,
        };
        if room {
            self.named.fetch_add(1, Ordering::Relaxed);
            if !member {
                self.strangers.fetch_add(1, Ordering::Relaxed);
            }
            let stats = Arc::new(MethodStats::new());
            method.peers.insert(peer.to_owned(), stats.clone());
            return stats;
        }
        method.other.get_or_insert_with(|| Arc::new(MethodStats::new())).clone()
    }

    /// Every series with its labels: each method's named peers and `other`, then the calls
    /// of methods that do not exist (service, method and peer `other`).
    pub(crate) fn each(&self, mut f: impl FnMut(&str, &str, &str, &MethodStats)) {
        for (service, methods) in self.series.read().unwrap().iter() {
            for (method, series) in methods {
                for (peer, stats) in &series.peers {
                    f(service, method, peer, stats);
                }
                if let Some(other) = &series.other {
                    f(service, method, "other", other);
                }
            }
        }
        f("other", "other", "other", &self.unknown);
    }

    /// What this direction counted so far.
    pub(crate) fn snapshot(&self, direction: Direction) -> Vec<SeriesStats> {
        let mut out = Vec::new();
        self.each(|service, method, peer, stats| {
            let snap = stats.snapshot();
            if snap.codes.is_empty() && snap.running == 0 {
                return;
            }
            out.push(SeriesStats {
                direction,
                service: service.to_owned(),
                method: method.to_owned(),
                peer: peer.to_owned(),
                codes: snap.codes,
                latency: snap.latency,
                latency_seconds: snap.micros as f64 / 1e6,
                running: snap.running,
                stream_items: snap.stream_items,
                stream_bytes: snap.stream_bytes,
            });
        });
        out
    }
}

/// Calls served by this process.
pub(crate) fn inbound() -> &'static CallStats {
    static STATS: OnceLock<CallStats> = OnceLock::new();
    STATS.get_or_init(CallStats::new)
}

/// Calls made by this process's clusters.
pub(crate) fn outbound() -> &'static CallStats {
    static STATS: OnceLock<CallStats> = OnceLock::new();
    STATS.get_or_init(CallStats::new)
}

/// One series as a node reports it (`meshrpc.stats`, `meshrpc top`, the dashboard).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeriesStats {
    /// Served or made.
    pub direction: Direction,
    /// The service called.
    pub service: String,
    /// The method called.
    pub method: String,
    /// The other side: the calling node's name (inbound; `client` for a caller that gave
    /// none, `http` over HTTP) or the called replica's node name (outbound).
    pub peer: String,
    /// Calls by result code (`ok`, `application`, `timeout`…), since the node started. A
    /// stream counts when it ends: `ok` only if it ended cleanly.
    pub codes: Vec<(String, u64)>,
    /// Calls by latency bucket ([`LATENCY_BOUNDS_SECONDS`], then the rest), since the
    /// node started.
    pub latency: Vec<u64>,
    /// Sum of the calls' latencies (a stream's: until it ended).
    pub latency_seconds: f64,
    /// Calls running now (a stream until it ends).
    pub running: u64,
    /// Items the stream answers of these calls carried (0 for unary calls; absent from
    /// older nodes' answers).
    #[serde(default)]
    pub stream_items: u64,
    /// Their bytes, encoded.
    #[serde(default)]
    pub stream_bytes: u64,
}

/// The upper bounds of [`SeriesStats::latency`]'s buckets, in seconds.
pub const LATENCY_BOUNDS_SECONDS: [f64; 16] = LATENCY_BOUNDS;

impl SeriesStats {
    /// Calls ended, whatever their result.
    pub fn calls(&self) -> u64 {
        self.codes.iter().map(|(_, n)| n).sum()
    }

    /// Calls that succeeded: `ok`, and application errors (the service answered).
    pub fn successes(&self) -> u64 {
        self.codes.iter().filter(|(c, _)| c == "ok" || c == "application").map(|(_, n)| n).sum()
    }
}

/// Answers a call of [`NODE_SERVICE`].
pub(crate) fn answer(call: &crate::call::Call) -> Result<crate::call::Reply, crate::error::Error> {
    if call.method != "stats" {
        return Err(crate::error::Error::UnknownMethod {
            service: NODE_SERVICE.into(),
            method: call.method.to_string(),
        });
    }
    call.codec.encode(&node_stats()).map(crate::call::Reply::Ok)
}

/// What this process counted: both directions.
pub fn node_stats() -> NodeStats {
    let mut series = inbound().snapshot(Direction::Inbound);
    series.extend(outbound().snapshot(Direction::Outbound));
    NodeStats { series }
}

/// A node's figures, as its `meshrpc.stats` method answers them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct NodeStats {
    /// Every series of calls it served and made.
    pub series: Vec<SeriesStats>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p99_is_the_bucket_holding_the_99th_percent() {
        let stats = MethodStats::new();
        for _ in 0..990 {
            stats.started();
            stats.record(20, "ok");
        }
        for _ in 0..10 {
            stats.started();
            stats.record(5_000, "internal");
        }
        let (calls, errors, p99) = stats.take_window();
        assert_eq!((calls, errors), (1000, 10));
        assert!((20..=24).contains(&p99), "{p99}");
        stats.started();
        stats.record(5_000, "ok");
        let (_, _, p99) = stats.take_window();
        assert!((5_000..=6_144).contains(&p99), "{p99}");
        assert_eq!(stats.take_window(), (0, 0, 0));
        // The golden figures never reset.
        let snap = stats.snapshot();
        assert_eq!(snap.codes, [("ok".to_string(), 991), ("internal".to_string(), 10)]);
        assert_eq!(snap.latency[0], 990, "20 µs ≤ 100 µs");
        assert_eq!(snap.latency[5], 11, "5 ms ≤ 5 ms");
        assert_eq!(snap.running, 0);
    }

    #[test]
    fn window_buckets_bound_their_values() {
        for v in [1u64, 2, 3, 5, 17, 100, 1023, 1024, 1025, 999_999] {
            let top = window_bucket_top(window_bucket(v));
            assert!(top >= v && top <= v * 2, "{v} → {top}");
        }
    }

    #[test]
    fn only_methods_that_exist_take_series_and_peers_are_bounded_per_method() {
        let stats = CallStats::new();
        let labels = |stats: &CallStats| {
            let mut all = Vec::new();
            stats.each(|s, m, p, series| all.push((format!("{s}.{m}@{p}"), series.snapshot().running)));
            all.sort();
            all
        };
        // 10,000 calls of methods that do not exist: one series, `other`.
        for i in 0..10_000 {
            stats.series("greeter", &format!("m{i}"), "http", || false).started();
        }
        // Peers naming themselves anew: one method's share, then its `other`.
        for i in 0..MAX_PEERS + 5 {
            stats.series("greeter", "greet", &format!("caller{i}"), || true).started();
        }
        // A member of the cluster keeps its name past them.
        members_seen(["mesh-api"].into_iter());
        stats.series("greeter", "greet", "mesh-api", || true).started();
        // A real method called for the first time still gets its own series.
        stats.series("greeter", "send_postcard", "mesh-api", || true).started();
        let all = labels(&stats);
        assert_eq!(all.len(), MAX_PEERS + 4, "{all:?}");
        assert!(all.contains(&("greeter.greet@mesh-api".into(), 1)));
        assert!(all.contains(&("other.other@other".into(), 10_000)));
        assert!(all.contains(&("greeter.greet@other".into(), 5)));
        assert!(all.contains(&("greeter.send_postcard@mesh-api".into(), 1)));
        // Once a method has a series, whether it exists is not asked again.
        stats.series("greeter", "greet", "caller0", || unreachable!()).started();
    }
}
