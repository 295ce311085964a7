//! `Lab`: a service whose methods expose what the server saw (deadlines, cancellations,
//! which node answered), plus an unusual signature for every supported shape.

use std::{
    collections::HashMap,
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error, schemars::JsonSchema)]
pub enum LabError {
    #[error("refused: {0}")]
    Refused(String),
    #[error(transparent)]
    Rpc(#[from] meshrpc::Error),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum Shape {
    Dot,
    Circle { radius: f64 },
    Poly(Vec<(i32, i32)>),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Nested {
    pub label: String,
    pub children: Vec<Nested>,
    pub shape: Option<Shape>,
}

/// Counters of what the server did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Stats {
    pub started: u64,
    pub finished: u64,
    /// Handlers whose future was dropped before finishing (cancelled or timed out).
    pub dropped: u64,
}

#[meshrpc::service(schema)]
pub trait Lab {
    /// Every supported argument shape at once.
    #[allow(clippy::too_many_arguments)]
    async fn many(
        &self,
        a: u8,
        b: i64,
        c: f64,
        d: bool,
        e: Option<String>,
        f: Vec<u32>,
        g: HashMap<String, Nested>,
        h: Shape,
    ) -> Result<(u8, i64, f64, bool, Option<String>, Vec<u32>, HashMap<String, Nested>, Shape), LabError>;
    #[meshrpc(idempotent)]
    async fn nothing(&self) -> Result<(), LabError>;
    #[meshrpc(idempotent)]
    async fn echo(&self, nested: Nested) -> Result<Nested, LabError>;
    /// Sleeps, counting starts, finishes and drops.
    async fn sleep(&self, millis: u64) -> Result<u64, LabError>;
    #[meshrpc(idempotent)]
    async fn stats(&self) -> Result<Stats, LabError>;
    /// Milliseconds left before this call's deadline, as the handler sees it.
    #[meshrpc(idempotent)]
    async fn deadline_left(&self) -> Result<Option<u64>, LabError>;
    /// Calls `deadline_left` on the node at `addr` from inside this handler.
    async fn relay_deadline(&self, addr: String) -> Result<(Option<u64>, Option<u64>), LabError>;
    async fn refuse(&self, reason: String) -> Result<(), LabError>;
    async fn panic(&self) -> Result<(), LabError>;
    /// The node's name: tells which replica answered.
    #[meshrpc(idempotent)]
    async fn whoami(&self) -> Result<String, LabError>;
    /// `a / b`: infinite or NaN for some inputs, which JSON cannot carry.
    #[meshrpc(idempotent)]
    async fn ratio(&self, a: f64, b: f64) -> Result<f64, LabError>;
    /// A string of `len` bytes: an answer as large as asked.
    #[meshrpc(idempotent)]
    async fn blob(&self, len: u64) -> Result<String, LabError>;
    /// Wide integers, as JSON numbers both ways.
    #[meshrpc(idempotent)]
    async fn wide(&self, a: u64, b: i128) -> Result<(u64, i128), LabError>;
}

/// The lab's implementation.
pub struct LabNode {
    pub name: String,
    /// Extra time every `whoami` takes (a slow replica, for the balancer tests).
    pub slow: Duration,
    started: AtomicU64,
    finished: AtomicU64,
    dropped: AtomicU64,
}

impl LabNode {
    pub fn new(name: impl Into<String>) -> Self {
        LabNode {
            name: name.into(),
            slow: Duration::ZERO,
            started: AtomicU64::new(0),
            finished: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        }
    }
}

struct DropCounter<'a>(&'a AtomicU64, bool);

impl Drop for DropCounter<'_> {
    fn drop(&mut self) {
        if !self.1 {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
}

fn left_ms() -> Option<u64> {
    meshrpc::CallContext::current()?.remaining().map(|d| d.as_millis() as u64)
}

#[meshrpc::async_trait]
impl Lab for LabNode {
    async fn many(
        &self,
        a: u8,
        b: i64,
        c: f64,
        d: bool,
        e: Option<String>,
        f: Vec<u32>,
        g: HashMap<String, Nested>,
        h: Shape,
    ) -> Result<(u8, i64, f64, bool, Option<String>, Vec<u32>, HashMap<String, Nested>, Shape), LabError> {
        Ok((a, b, c, d, e, f, g, h))
    }

    async fn nothing(&self) -> Result<(), LabError> {
        Ok(())
    }

    async fn echo(&self, nested: Nested) -> Result<Nested, LabError> {
        Ok(nested)
    }

    async fn sleep(&self, millis: u64) -> Result<u64, LabError> {
        self.started.fetch_add(1, Ordering::SeqCst);
        let mut guard = DropCounter(&self.dropped, false);
        tokio::time::sleep(Duration::from_millis(millis)).await;
        guard.1 = true;
        self.finished.fetch_add(1, Ordering::SeqCst);
        Ok(millis)
    }

    async fn stats(&self) -> Result<Stats, LabError> {
        Ok(Stats {
            started: self.started.load(Ordering::SeqCst),
            finished: self.finished.load(Ordering::SeqCst),
            dropped: self.dropped.load(Ordering::SeqCst),
        })
    }

    async fn deadline_left(&self) -> Result<Option<u64>, LabError> {
        Ok(left_ms())
    }

    async fn relay_deadline(&self, addr: String) -> Result<(Option<u64>, Option<u64>), LabError> {
        let mine = left_ms();
        let next = LabClient::new(meshrpc::connect(addr.as_str()).await?);
        Ok((mine, next.deadline_left().await?))
    }

    async fn refuse(&self, reason: String) -> Result<(), LabError> {
        Err(LabError::Refused(reason))
    }

    async fn panic(&self) -> Result<(), LabError> {
        panic!("lab handler panicked on purpose")
    }

    async fn whoami(&self) -> Result<String, LabError> {
        if !self.slow.is_zero() {
            tokio::time::sleep(self.slow).await;
        }
        Ok(self.name.clone())
    }

    async fn ratio(&self, a: f64, b: f64) -> Result<f64, LabError> {
        Ok(a / b)
    }

    async fn blob(&self, len: u64) -> Result<String, LabError> {
        Ok("x".repeat(len as usize))
    }

    async fn wide(&self, a: u64, b: i128) -> Result<(u64, i128), LabError> {
        Ok((a, b))
    }
}

/// Another version of `lab` (same name, different methods): callers built against
/// `Lab` must not pick it.
#[meshrpc::service(name = "lab")]
pub trait LabV2 {
    async fn whoami(&self, verbose: bool) -> Result<String, LabError>;
}

pub struct LabV2Node(pub String);

#[meshrpc::async_trait]
impl LabV2 for LabV2Node {
    async fn whoami(&self, _verbose: bool) -> Result<String, LabError> {
        Ok(self.0.clone())
    }
}
