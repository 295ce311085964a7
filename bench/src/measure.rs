//! How a system is measured: sequential latency, throughput with calls in flight (and
//! the p99 of those calls), and a server's CPU time from /proc.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;

use crate::{systems::Client, Opts};

pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

pub(crate) async fn latency(client: &dyn Client, opts: &Opts) -> [f64; 4] {
    for _ in 0..opts.warmup {
        client.call().await;
    }
    let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).unwrap();
    for _ in 0..opts.calls {
        let t = Instant::now();
        client.call().await;
        h.record(t.elapsed().as_nanos() as u64).unwrap();
    }
    let us = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    [us(0.5), us(0.9), us(0.99), h.max() as f64 / 1000.0]
}

/// Calls per second and the p99 (µs) of those calls, with `in_flight` concurrent calls
/// on each of `clients` (each its own connection), after half a second of the same load
/// as warm-up.
pub(crate) async fn throughput(clients: Vec<Arc<dyn Client>>, in_flight: usize, secs: f64) -> (f64, f64) {
    let (calls_per_s, p99, _) = throughput_cpu(clients, in_flight, secs, None).await;
    (calls_per_s, p99)
}

/// As `throughput`, plus the server's CPU time (user, sys) per call in µs, from
/// `/proc/<pid>/stat` over the measured window.
pub(crate) async fn throughput_cpu(
    clients: Vec<Arc<dyn Client>>,
    in_flight: usize,
    secs: f64,
    server_pid: Option<u32>,
) -> (f64, f64, (f64, f64)) {
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = clients
        .iter()
        .flat_map(|c| std::iter::repeat_n(c, in_flight))
        .map(|client| {
            let (client, measuring, stop) = (client.clone(), measuring.clone(), stop.clone());
            tokio::spawn(async move {
                let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).unwrap();
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    client.call().await;
                    if measuring.load(Ordering::Relaxed) {
                        h.record(t.elapsed().as_nanos() as u64).unwrap();
                    }
                }
                h
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(if secs < 1.0 { 100 } else { 500 })).await;
    let cpu_before = server_pid.map(cpu_ticks);
    measuring.store(true, Ordering::Relaxed);
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let elapsed = start.elapsed().as_secs_f64();
    let cpu_after = server_pid.map(cpu_ticks);
    let mut all = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).unwrap();
    for t in tasks {
        all.add(t.await.unwrap()).unwrap();
    }
    let cpu = match (cpu_before, cpu_after) {
        // USER_HZ is 100 on Linux: a tick is 10 ms.
        (Some(b), Some(a)) => {
            let per_call = |ticks: u64| ticks as f64 * 10_000.0 / all.len().max(1) as f64;
            (per_call(a.0 - b.0), per_call(a.1 - b.1))
        }
        _ => (f64::NAN, f64::NAN),
    };
    (all.len() as f64 / elapsed, all.value_at_quantile(0.99) as f64 / 1000.0, cpu)
}

/// CPU time of a process so far in ns, summed over its threads (`schedstat`: finer than
/// the 10 ms ticks of `stat`, which a sequential test of 20,000 calls would blur).
pub(crate) fn cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return 0 };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// (utime, stime) of a process in clock ticks.
fn cpu_ticks(pid: u32) -> (u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces), from field 3 on.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| fields.get(i).and_then(|f| f.parse().ok()).unwrap_or(0);
    (field(11), field(12))
}
