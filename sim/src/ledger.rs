//! The simulation's own service: every method leaves a trace the harness checks (how
//! many times each call's effect happened, which items a stream sent), and a replica can
//! be told to answer errors.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use serde::{Deserialize, Serialize};

/// The ledger's errors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
pub enum LedgerError {
    /// The replica was told to fail (a fault).
    #[error("replica {0} is faulty")]
    Faulty(String),
    /// The mesh's.
    #[error(transparent)]
    Rpc(#[from] meshrpc::Error),
}

/// Calls whose effects the harness counts.
#[meshrpc::service]
pub trait Ledger {
    /// Records call `id` (not idempotent: its effect must happen at most once).
    async fn deposit(&self, id: u64) -> Result<String, LedgerError>;
    /// Reads for call `id` (idempotent: may be retried, within the attempt budget).
    #[meshrpc(idempotent)]
    async fn look(&self, id: u64) -> Result<String, LedgerError>;
    /// Items `0..n`, one every `every_ms`.
    async fn count(&self, n: u32, every_ms: u64) -> Result<meshrpc::Stream<u32, LedgerError>, LedgerError>;
}

/// What every replica of a run shares with the harness.
#[derive(Default)]
pub struct Books {
    /// How many times each call's effect happened, by call id.
    pub effects: Mutex<BTreeMap<u64, u32>>,
    /// Replicas that answer errors (by node name).
    pub faulty: Mutex<BTreeSet<String>>,
}

/// One replica.
pub struct LedgerNode {
    /// The node's name (its answers carry it).
    pub name: String,
    /// The run's books.
    pub books: Arc<Books>,
}

impl LedgerNode {
    fn effect(&self, id: u64) -> Result<String, LedgerError> {
        if self.books.faulty.lock().unwrap().contains(&self.name) {
            return Err(LedgerError::Faulty(self.name.clone()));
        }
        *self.books.effects.lock().unwrap().entry(id).or_default() += 1;
        Ok(self.name.clone())
    }
}

/// A handler's work: 1–8 ms of simulated time, fixed by the call.
fn work(id: u64) -> Duration {
    Duration::from_millis(1 + id % 8)
}

#[meshrpc::async_trait]
impl Ledger for LedgerNode {
    async fn deposit(&self, id: u64) -> Result<String, LedgerError> {
        tokio::time::sleep(work(id)).await;
        self.effect(id)
    }

    async fn look(&self, id: u64) -> Result<String, LedgerError> {
        tokio::time::sleep(work(id)).await;
        self.effect(id)
    }

    async fn count(&self, n: u32, every_ms: u64) -> Result<meshrpc::Stream<u32, LedgerError>, LedgerError> {
        if self.books.faulty.lock().unwrap().contains(&self.name) {
            return Err(LedgerError::Faulty(self.name.clone()));
        }
        let (tx, items) = meshrpc::Stream::channel(4);
        tokio::spawn(async move {
            for i in 0..n {
                tokio::time::sleep(Duration::from_millis(every_ms)).await;
                if tx.send(i).await.is_err() {
                    return;
                }
            }
        });
        Ok(items)
    }
}
