//! `Streamer`: every stream shape, with producers the tests can watch (how many live, how
//! many were dropped) and items that fail on purpose.

use std::{
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::Duration,
};

use meshrpc::Stream;
use serde::{Deserialize, Serialize};

use crate::lab::LabError;

/// One item of a counting stream: its number and `pad` bytes of payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Tick {
    pub n: u64,
    pub pad: String,
}

/// What the producers of stream answers did. Its schema is named `Stats`, as `lab`'s
/// `Stats` is (another shape): two services' types that share a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[schemars(rename = "Stats")]
pub struct Producers {
    /// Producers made (one per stream answered).
    pub started: u64,
    /// Producers dropped (their stream ended, or the caller went away).
    pub dropped: u64,
    /// Items produced, over all streams.
    pub produced: u64,
}

#[meshrpc::service(schema)]
pub trait Streamer {
    /// `from..to`, each item with `pad` bytes of payload, produced as the reader takes them.
    async fn count(&self, from: u64, to: u64, pad: u64) -> Result<Stream<Tick, LabError>, LabError>;
    /// A tick every `every_ms`, forever.
    async fn ticks(&self, every_ms: u64) -> Result<Stream<u64, LabError>, LabError>;
    /// `0..n`, then the error `refused: item n`.
    async fn fail_at(&self, n: u64) -> Result<Stream<u64, LabError>, LabError>;
    /// Refuses before any item (the call's error, not an item's).
    async fn refuse_stream(&self) -> Result<Stream<u64, LabError>, LabError>;
    /// What the producers did.
    async fn producers(&self) -> Result<Producers, LabError>;
    /// The sum of the caller's numbers (a client stream); a bad item fails the call.
    async fn sum(&self, numbers: Stream<u64>) -> Result<u64, LabError>;
    /// Waits `millis` before reading the caller's items, then counts them (a handler that
    /// reads late).
    async fn hold(&self, millis: u64, items: Stream<Tick>) -> Result<u64, LabError>;
    /// Each of the caller's lines back with `prefix` (a bidirectional stream).
    async fn chat(&self, prefix: String, lines: Stream<String, LabError>)
        -> Result<Stream<String, LabError>, LabError>;
}

/// The streamer's implementation.
#[derive(Default, Clone)]
pub struct StreamerNode {
    counts: Arc<Counts>,
}

#[derive(Default)]
struct Counts {
    started: AtomicU64,
    dropped: AtomicU64,
    produced: AtomicU64,
}

/// Counts a producer's life.
struct Live(Arc<Counts>);

impl Live {
    fn new(counts: &Arc<Counts>) -> Live {
        counts.started.fetch_add(1, Ordering::Relaxed);
        Live(counts.clone())
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.0.dropped.fetch_add(1, Ordering::Relaxed);
    }
}

/// `from..to`, produced on demand.
struct Counter {
    next: u64,
    to: u64,
    pad: String,
    live: Live,
}

impl futures_core::Stream for Counter {
    type Item = Result<Tick, LabError>;
    fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.next >= self.to {
            return Poll::Ready(None);
        }
        let n = self.next;
        self.next += 1;
        self.live.0.produced.fetch_add(1, Ordering::Relaxed);
        Poll::Ready(Some(Ok(Tick { n, pad: self.pad.clone() })))
    }
}

/// A tick every period, forever.
struct Ticker {
    interval: tokio::time::Interval,
    n: u64,
    live: Live,
}

impl futures_core::Stream for Ticker {
    type Item = Result<u64, LabError>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.interval.poll_tick(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(_) => {
                self.n += 1;
                self.live.0.produced.fetch_add(1, Ordering::Relaxed);
                Poll::Ready(Some(Ok(self.n)))
            }
        }
    }
}

#[meshrpc::async_trait]
impl Streamer for StreamerNode {
    async fn count(&self, from: u64, to: u64, pad: u64) -> Result<Stream<Tick, LabError>, LabError> {
        let live = Live::new(&self.counts);
        Ok(Stream::new(Counter { next: from, to, pad: "x".repeat(pad as usize), live }))
    }

    async fn ticks(&self, every_ms: u64) -> Result<Stream<u64, LabError>, LabError> {
        let live = Live::new(&self.counts);
        let interval = tokio::time::interval(Duration::from_millis(every_ms.max(1)));
        Ok(Stream::new(Ticker { interval, n: 0, live }))
    }

    async fn fail_at(&self, n: u64) -> Result<Stream<u64, LabError>, LabError> {
        let items = (0..=n).map(move |i| if i < n { Ok(i) } else { Err(LabError::Refused(format!("item {n}"))) });
        let (tx, stream) = Stream::channel(4);
        tokio::spawn(async move {
            for item in items {
                let sent = match item {
                    Ok(i) => tx.send(i).await,
                    Err(e) => tx.clone().fail(e).await,
                };
                if sent.is_err() {
                    return;
                }
            }
        });
        Ok(stream)
    }

    async fn refuse_stream(&self) -> Result<Stream<u64, LabError>, LabError> {
        Err(LabError::Refused("no stream today".into()))
    }

    async fn producers(&self) -> Result<Producers, LabError> {
        let c = &self.counts;
        Ok(Producers {
            started: c.started.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            produced: c.produced.load(Ordering::Relaxed),
        })
    }

    async fn sum(&self, mut numbers: Stream<u64>) -> Result<u64, LabError> {
        let mut total = 0u64;
        while let Some(n) = numbers.next().await {
            total = total.wrapping_add(n?);
        }
        Ok(total)
    }

    async fn hold(&self, millis: u64, mut items: Stream<Tick>) -> Result<u64, LabError> {
        tokio::time::sleep(Duration::from_millis(millis)).await;
        let mut n = 0;
        while let Some(item) = items.next().await {
            item?;
            n += 1;
        }
        Ok(n)
    }

    async fn chat(
        &self,
        prefix: String,
        mut lines: Stream<String, LabError>,
    ) -> Result<Stream<String, LabError>, LabError> {
        let (tx, answers) = Stream::channel(4);
        tokio::spawn(async move {
            while let Some(line) = lines.next().await {
                let sent = match line {
                    Ok(line) => tx.send(format!("{prefix}{line}")).await,
                    Err(e) => tx.clone().fail(e).await,
                };
                if sent.is_err() {
                    return;
                }
            }
        });
        Ok(answers)
    }
}
