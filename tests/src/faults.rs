//! `Faulty`: a service told (by `labnode` flags) to fail a share of its calls, stall
//! some, hang, or run on a few workers only, and that counts what it did — for the
//! resilience tests.

use std::{
    io::Write,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Mutex,
    },
    time::Duration,
};

use meshrpc::Error;
use serde::{Deserialize, Serialize};

/// What a node running `Faulty` saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct FaultStats {
    /// Calls of `read` and `fetch`.
    pub calls: u64,
    /// Calls answered with the injected failure.
    pub failed: u64,
    /// Calls that stalled.
    pub stalled: u64,
    /// Calls whose handler was dropped before it finished (cancelled, timed out).
    pub cancelled: u64,
    /// Executions of `write`.
    pub writes: u64,
    /// Most `work` calls inside the handler at once (running or waiting for a worker)
    /// since the last `faults` call.
    pub peak_work: u64,
}

#[meshrpc::service]
pub trait Faulty {
    /// The node's name — or the fault it was told to inject.
    #[meshrpc(idempotent)]
    async fn read(&self, key: u64) -> Result<String, Error>;
    /// As `read`, hedged.
    #[meshrpc(idempotent, hedge)]
    async fn fetch(&self, key: u64) -> Result<String, Error>;
    /// Not idempotent: each execution is appended to the node's write log.
    async fn write(&self, id: u64) -> Result<String, Error>;
    /// Sleeps `ms`, under a timeout of its own.
    #[meshrpc(idempotent, timeout = "300ms")]
    async fn bounded(&self, ms: u64) -> Result<u64, Error>;
    /// Holds one of the node's few workers for `ms`: a node with a real capacity.
    async fn work(&self, ms: u64) -> Result<u64, Error>;
    /// What the node saw (resets `peak_work`).
    async fn faults(&self) -> Result<FaultStats, Error>;
}

/// How a node misbehaves.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Share of `read`/`fetch` calls failing with `internal` (every k-th, not random).
    pub fail_percent: u64,
    /// Share of `read`/`fetch` calls stalling for `stall`.
    pub stall_percent: u64,
    pub stall: Duration,
    /// `read`/`fetch` never answer.
    pub hang: bool,
    /// `write` takes this long.
    pub write_time: Duration,
    /// Workers for `work` (0: as many as calls).
    pub workers: usize,
    /// Where executions of `write` are appended, one id per line.
    pub write_log: Option<std::path::PathBuf>,
}

pub struct FaultyNode {
    name: String,
    faults: Faults,
    calls: AtomicU64,
    failed: AtomicU64,
    stalled: AtomicU64,
    cancelled: AtomicU64,
    writes: AtomicU64,
    working: AtomicUsize,
    peak_work: AtomicUsize,
    workers: tokio::sync::Semaphore,
    log: Option<Mutex<std::fs::File>>,
}

impl FaultyNode {
    pub fn new(name: impl Into<String>, faults: Faults) -> std::io::Result<FaultyNode> {
        let log = match &faults.write_log {
            Some(path) => Some(Mutex::new(std::fs::OpenOptions::new().create(true).append(true).open(path)?)),
            None => None,
        };
        let workers = if faults.workers == 0 { tokio::sync::Semaphore::MAX_PERMITS } else { faults.workers };
        Ok(FaultyNode {
            name: name.into(),
            calls: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            stalled: AtomicU64::new(0),
            cancelled: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            working: AtomicUsize::new(0),
            peak_work: AtomicUsize::new(0),
            workers: tokio::sync::Semaphore::new(workers),
            log,
            faults,
        })
    }

    async fn answer(&self) -> Result<String, Error> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        // Every k-th call for a share of k: exact shares, no flakes.
        let picked = |percent: u64| n * percent / 100 != (n - 1) * percent / 100;
        if self.faults.hang {
            std::future::pending::<()>().await;
        }
        if picked(self.faults.fail_percent) {
            self.failed.fetch_add(1, Ordering::SeqCst);
            return Err(Error::internal(format!("{}: injected failure", self.name)));
        }
        if picked(self.faults.stall_percent) {
            self.stalled.fetch_add(1, Ordering::SeqCst);
            let mut finished = Finished(&self.cancelled, false);
            tokio::time::sleep(self.faults.stall).await;
            finished.1 = true;
        }
        Ok(self.name.clone())
    }
}

/// Counts a handler dropped before it finished.
struct Finished<'a>(&'a AtomicU64, bool);

impl Drop for Finished<'_> {
    fn drop(&mut self) {
        if !self.1 {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[meshrpc::async_trait]
impl Faulty for FaultyNode {
    async fn read(&self, _key: u64) -> Result<String, Error> {
        self.answer().await
    }

    async fn fetch(&self, _key: u64) -> Result<String, Error> {
        self.answer().await
    }

    async fn write(&self, id: u64) -> Result<String, Error> {
        self.writes.fetch_add(1, Ordering::SeqCst);
        if let Some(log) = &self.log {
            // Written (to the kernel) before anything else: a kill -9 cannot lose it.
            writeln!(log.lock().unwrap(), "{id}").map_err(|e| Error::internal(e.to_string()))?;
        }
        tokio::time::sleep(self.faults.write_time).await;
        Ok(self.name.clone())
    }

    async fn bounded(&self, ms: u64) -> Result<u64, Error> {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok(ms)
    }

    async fn work(&self, ms: u64) -> Result<u64, Error> {
        let now = self.working.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak_work.fetch_max(now, Ordering::SeqCst);
        struct Leave<'a>(&'a AtomicUsize);
        impl Drop for Leave<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        let _leave = Leave(&self.working);
        let _worker = self.workers.acquire().await.map_err(|e| Error::internal(e.to_string()))?;
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok(ms)
    }

    async fn faults(&self) -> Result<FaultStats, Error> {
        Ok(FaultStats {
            calls: self.calls.load(Ordering::SeqCst),
            failed: self.failed.load(Ordering::SeqCst),
            stalled: self.stalled.load(Ordering::SeqCst),
            cancelled: self.cancelled.load(Ordering::SeqCst),
            writes: self.writes.load(Ordering::SeqCst),
            peak_work: self.peak_work.swap(self.working.load(Ordering::SeqCst), Ordering::SeqCst) as u64,
        })
    }
}
