//! What a node says about the calls it serves: a summary line per method every interval
//! (calls, errors, p99) at INFO, target `meshrpc::summary`; and, only when asked, a line
//! per call like the seed's GIN request log (target `meshrpc::request`):
//! `MESHRPC_REQUEST_LOG=on` (every call), `sample:N` (one call in N), `off` (the default).
//! A node under load then writes a few lines every ten seconds, not one per call.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU32, AtomicU64, Ordering},
        Arc, OnceLock, RwLock,
    },
    time::{Duration, Instant},
};

use crate::{call::Reply, error::Error};

/// How often the summary is written (`MESHRPC_LOG_SUMMARY_MS` overrides it).
pub(crate) const SUMMARY_INTERVAL: Duration = Duration::from_secs(10);

/// Which calls get a line of their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lines {
    Off,
    Every,
    OneIn(u64),
}

impl Lines {
    /// Parses `on`, `off`, `sample:N`; anything else is `off` (and says so once).
    pub(crate) fn parse(v: &str) -> Result<Lines, String> {
        match v.trim() {
            "" | "off" | "0" | "false" => Ok(Lines::Off),
            "on" | "1" | "true" | "all" => Ok(Lines::Every),
            s => match s.strip_prefix("sample:").map(str::parse::<u64>) {
                Some(Ok(0)) => Ok(Lines::Off),
                Some(Ok(1)) => Ok(Lines::Every),
                Some(Ok(n)) => Ok(Lines::OneIn(n)),
                _ => Err(format!("MESHRPC_REQUEST_LOG=`{s}`: expected on, off or sample:N")),
            },
        }
    }

    fn from_env() -> Lines {
        static LINES: OnceLock<Lines> = OnceLock::new();
        *LINES.get_or_init(|| {
            Lines::parse(&std::env::var("MESHRPC_REQUEST_LOG").unwrap_or_default()).unwrap_or_else(|e| {
                tracing::warn!("{e}; request lines stay off");
                Lines::Off
            })
        })
    }

    /// Whether the `n`-th call gets a line.
    fn picks(self, n: u64) -> bool {
        match self {
            Lines::Off => false,
            Lines::Every => true,
            Lines::OneIn(k) => n % k == 0,
        }
    }
}

static NTH: AtomicU64 = AtomicU64::new(0);

/// Whether this request gets a line of its own (for front doors that log requests, not
/// calls: the gateway).
pub(crate) fn line_picked() -> bool {
    let lines = Lines::from_env();
    lines != Lines::Off && lines.picks(NTH.fetch_add(1, Ordering::Relaxed))
}

/// The summary slot of the method a connection called last.
#[derive(Default)]
pub(crate) struct LastMethod(Option<(Box<str>, Box<str>, Arc<MethodStats>)>);

impl LastMethod {
    fn stats(&mut self, summary: &Summary, service: &str, method: &str) -> Arc<MethodStats> {
        match &self.0 {
            Some((s, m, stats)) if **s == *service && **m == *method => stats.clone(),
            _ => {
                let stats = summary.stats(service, method);
                self.0 = Some((service.into(), method.into(), stats.clone()));
                stats
            }
        }
    }
}

/// A call being served: counted in its method's summary when it ends, and logged on
/// its own line if `MESHRPC_REQUEST_LOG` picks it.
pub(crate) struct RequestLog {
    stats: Option<Arc<MethodStats>>,
    line: Option<Line>,
    start: Instant,
}

struct Line {
    service: String,
    method: String,
    caller: String,
}

impl RequestLog {
    /// Starts the log of a call. A connection that serves many calls passes its `last`
    /// slot: most connections call one method over and over, and the shared map costs a
    /// lock and two string hashes.
    pub(crate) fn begin(
        last: Option<&mut LastMethod>,
        service: &str,
        method: &str,
        caller: &str,
        start: Instant,
    ) -> RequestLog {
        let stats = summary().map(|summary| match last {
            Some(last) => last.stats(summary, service, method),
            None => summary.stats(service, method),
        });
        let line = (line_picked() && tracing::enabled!(target: "meshrpc::request", tracing::Level::INFO))
            .then(|| Line { service: service.to_owned(), method: method.to_owned(), caller: caller.to_owned() });
        RequestLog { stats, line, start }
    }

    /// Starts the log of a call from this process (the colocated fast path): each thread
    /// keeps the slot of the method it called last, as a connection does.
    pub(crate) fn begin_local(service: &str, method: &str, start: Instant) -> RequestLog {
        thread_local! {
            static LAST: std::cell::RefCell<LastMethod> = std::cell::RefCell::default();
        }
        LAST.with(|last| match last.try_borrow_mut() {
            Ok(mut last) => RequestLog::begin(Some(&mut last), service, method, "local", start),
            Err(_) => RequestLog::begin(None, service, method, "local", start),
        })
    }

    /// Logs the call when it ends: with its result, or as `cancelled` if it is dropped
    /// first (the caller cancelled it, or its connection closed).
    pub(crate) fn until_done(self) -> Running {
        Running(Some(self))
    }

    pub(crate) fn end(self, result: &Result<Reply, Error>) {
        let status = match result {
            // A stream is logged when it opens (its items are not calls).
            Ok(Reply::Ok(_) | Reply::Stream(_)) => "ok",
            Ok(Reply::AppError(_)) => "application",
            Err(e) => e.code(),
        };
        self.end_with(status);
    }

    /// Logs the call with `status` (`ok`, `application`, `timeout`…).
    pub(crate) fn end_with(self, status: &str) {
        let micros = self.start.elapsed().as_micros() as u64;
        if let Some(stats) = &self.stats {
            stats.record(micros, status != "ok");
        }
        if let Some(line) = self.line {
            tracing::info!(
                target: "meshrpc::request",
                caller = %line.caller, service = line.service, method = line.method, status, micros,
                "call"
            );
        }
    }
}

/// A call that is logged when it ends (see [`RequestLog::until_done`]).
pub(crate) struct Running(Option<RequestLog>);

impl Running {
    pub(crate) fn end(mut self, result: &Result<Reply, Error>) {
        if let Some(log) = self.0.take() {
            log.end(result);
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(log) = self.0.take() {
            log.end(&Err(Error::Cancelled));
        }
    }
}

/// Latency buckets: 4 per power of two of microseconds, up to 2^40 µs.
const BUCKETS: usize = 4 * 40;

fn bucket(micros: u64) -> usize {
    let micros = micros.max(1);
    let log2 = 63 - micros.leading_zeros() as usize;
    let fraction = if log2 >= 2 { ((micros >> (log2 - 2)) & 3) as usize } else { 0 };
    (log2 * 4 + fraction).min(BUCKETS - 1)
}

/// The upper bound (µs) of a bucket.
fn bucket_top(i: usize) -> u64 {
    let (log2, fraction) = (i / 4, (i % 4) as u64);
    if log2 < 2 {
        return 1 << (log2 + 1);
    }
    (1u64 << log2) + ((fraction + 1) << (log2 - 2))
}

/// One method's calls since the last summary.
pub(crate) struct MethodStats {
    calls: AtomicU64,
    errors: AtomicU64,
    buckets: [AtomicU32; BUCKETS],
}

impl MethodStats {
    fn new() -> MethodStats {
        MethodStats {
            calls: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            buckets: std::array::from_fn(|_| AtomicU32::new(0)),
        }
    }

    fn record(&self, micros: u64, failed: bool) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if failed {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        self.buckets[bucket(micros)].fetch_add(1, Ordering::Relaxed);
    }

    /// `(calls, errors, p99 µs)` since the last take, and starts over.
    fn take(&self) -> (u64, u64, u64) {
        let calls = self.calls.swap(0, Ordering::Relaxed);
        let errors = self.errors.swap(0, Ordering::Relaxed);
        let counts: Vec<u64> = self.buckets.iter().map(|b| u64::from(b.swap(0, Ordering::Relaxed))).collect();
        let total: u64 = counts.iter().sum();
        let mut seen = 0;
        let p99 = counts
            .iter()
            .enumerate()
            .find_map(|(i, n)| {
                seen += n;
                (total > 0 && seen * 100 >= total * 99).then(|| bucket_top(i))
            })
            .unwrap_or(0);
        (calls, errors, p99)
    }
}

/// Every method's stats, and the task that writes the summary.
pub(crate) struct Summary {
    methods: RwLock<HashMap<String, HashMap<String, Arc<MethodStats>>>>,
    /// Where calls go past [`MAX_METHODS`] names (callers choose the names they send).
    other: Arc<MethodStats>,
}

/// Distinct `service.method` names summarised one by one; the rest are summed as one.
pub(crate) const MAX_METHODS: usize = 1024;

/// The process's summary, its writer started on first use (inside a tokio runtime).
fn summary() -> Option<&'static Summary> {
    static SUMMARY: OnceLock<Option<&'static Summary>> = OnceLock::new();
    *SUMMARY.get_or_init(|| {
        let handle = tokio::runtime::Handle::try_current().ok()?;
        let summary: &'static Summary =
            Box::leak(Box::new(Summary { methods: RwLock::default(), other: Arc::new(MethodStats::new()) }));
        let every = std::env::var("MESHRPC_LOG_SUMMARY_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .map_or(SUMMARY_INTERVAL, Duration::from_millis);
        handle.spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                summary.write(every);
            }
        });
        Some(summary)
    })
}

impl Summary {
    fn stats(&self, service: &str, method: &str) -> Arc<MethodStats> {
        if let Some(s) = self.methods.read().unwrap().get(service).and_then(|m| m.get(method)) {
            return s.clone();
        }
        let mut methods = self.methods.write().unwrap();
        if methods.values().map(HashMap::len).sum::<usize>() >= MAX_METHODS {
            return self.other.clone();
        }
        let service_entry = methods.entry(service.to_owned()).or_default();
        service_entry.entry(method.to_owned()).or_insert_with(|| Arc::new(MethodStats::new())).clone()
    }

    fn write(&self, every: Duration) {
        let methods = self.methods.read().unwrap();
        let other = [("(other)".to_owned(), HashMap::from([("(other)".to_owned(), self.other.clone())]))];
        for (service, methods) in methods.iter().chain(other.iter().map(|(s, m)| (s, m))) {
            for (method, stats) in methods {
                let (calls, errors, p99) = stats.take();
                if calls > 0 {
                    tracing::info!(
                        target: "meshrpc::summary",
                        service, method, calls, errors, p99_us = p99, interval_s = every.as_secs_f64(),
                        "calls"
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse() {
        assert_eq!(Lines::parse("").unwrap(), Lines::Off);
        assert_eq!(Lines::parse("on").unwrap(), Lines::Every);
        assert_eq!(Lines::parse("sample:100").unwrap(), Lines::OneIn(100));
        assert_eq!(Lines::parse("sample:1").unwrap(), Lines::Every);
        assert!(Lines::parse("sometimes").is_err());
        assert!(Lines::OneIn(10).picks(20) && !Lines::OneIn(10).picks(21));
    }

    #[test]
    fn p99_is_the_bucket_holding_the_99th_percent() {
        let stats = MethodStats::new();
        for _ in 0..990 {
            stats.record(20, false);
        }
        for _ in 0..10 {
            stats.record(5_000, true);
        }
        let (calls, errors, p99) = stats.take();
        assert_eq!((calls, errors), (1000, 10));
        assert!((20..=24).contains(&p99), "{p99}");
        stats.record(5_000, false);
        let (_, _, p99) = stats.take();
        assert!((5_000..=6_144).contains(&p99), "{p99}");
        assert_eq!(stats.take(), (0, 0, 0));
    }

    #[test]
    fn buckets_bound_their_values() {
        for v in [1u64, 2, 3, 5, 17, 100, 1023, 1024, 1025, 999_999] {
            let top = bucket_top(bucket(v));
            assert!(top >= v && top <= v * 2, "{v} → {top}");
        }
    }
}
