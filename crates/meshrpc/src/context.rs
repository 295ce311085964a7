//! The implicit call context: a handler that calls another service passes on its
//! remaining deadline and trace id without touching its trait.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

tokio::task_local! {
    static CURRENT: CallContext;
}

/// What travels with a call besides its arguments.
///
/// A handler runs inside its call's context, so the calls it makes inherit the deadline
/// and trace id. A task it spawns starts without it (tokio task-locals do not cross
/// `tokio::spawn`); carry it along with [`scope`](Self::scope):
///
/// ```
/// # async fn handler() {
/// let ctx = meshrpc::CallContext::current();
/// let work = async { meshrpc::CallContext::current().map(|c| c.trace_id) };
/// let seen = match ctx {
///     Some(ctx) => tokio::spawn(ctx.scope(work)).await.unwrap(), // same deadline and trace
///     None => tokio::spawn(work).await.unwrap(),                  // not inside a call
/// };
/// # let _ = seen;
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallContext {
    /// When the caller stops waiting.
    pub deadline: Option<Instant>,
    /// Trace id shared by every hop of one request (128 bits, as W3C Trace Context).
    pub trace_id: u128,
    /// This hop's span: the parent of the calls made from it (0: none).
    pub span_id: u64,
    /// The version the request is pinned to, if it is: every call made from this hop goes
    /// to replicas of that version only, so a request that entered the application at
    /// version N is served by version N end to end (an application split at the front
    /// door, or a `meshrpc-version` header, pins it; docs/traffic.md).
    pub version: Option<Arc<str>>,
}

impl CallContext {
    /// The context of the call being served by this task, if any.
    pub fn current() -> Option<CallContext> {
        CURRENT.try_with(CallContext::clone).ok()
    }

    /// The version the call being served by this task is pinned to, if any (cheaper than
    /// [`current`](Self::current) when only that is wanted).
    pub fn current_version() -> Option<Arc<str>> {
        CURRENT.try_with(|c| c.version.clone()).ok().flatten()
    }

    /// Time left before the deadline (`None`: no deadline).
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline.map(|d| d.saturating_duration_since(crate::clock::now()))
    }

    /// The W3C `traceparent` of this hop: `00-<trace id>-<span id>-01`.
    pub fn traceparent(&self) -> String {
        traceparent(self.trace_id, self.span_id)
    }

    /// Runs `fut` with this context as the current one.
    pub async fn scope<F: std::future::Future>(self, fut: F) -> F::Output {
        CURRENT.scope(self, fut).await
    }
}

/// Runs `f` (one poll of a call) with `ctx` as the current context.
pub(crate) fn poll_in<R>(ctx: &CallContext, f: impl FnOnce() -> R) -> R {
    CURRENT.sync_scope(ctx.clone(), f)
}

/// Runs `fut` until `deadline`: `Err(())` if it passes first. A future ready when first
/// polled (most handlers) costs no timer; only one that waits sets one.
pub(crate) async fn until_deadline<F: std::future::Future>(fut: F, deadline: Option<Instant>) -> Result<F::Output, ()> {
    use std::task::Poll;
    let mut fut = std::pin::pin!(fut);
    let first = std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await;
    match (first, deadline) {
        (Poll::Ready(out), _) => Ok(out),
        (Poll::Pending, Some(d)) => tokio::time::timeout_at(d.into(), fut).await.map_err(|_| ()),
        (Poll::Pending, None) => Ok(fut.await),
    }
}

/// A fresh trace id for a call that starts a new trace: a random 64-bit half chosen once
/// per process, and a counter mixed in (cheap, and unique enough across a mesh).
pub(crate) fn new_trace_id() -> u128 {
    (u128::from(process_seed()) << 64) | u128::from(next_id())
}

/// A fresh span id (never 0).
pub(crate) fn new_span_id() -> u64 {
    (next_id() ^ process_seed().rotate_left(17)).max(1)
}

/// Random per process: the clock's nanoseconds and the process id, hashed.
fn process_seed() -> u64 {
    static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *SEED.get_or_init(|| {
        // Not `clock::entropy`: trace ids steer nothing, and a draw here (once per process)
        // would shift a simulation's later draws between its first run and a replay.
        let nanos = crate::clock::wall_ns();
        let mut z = nanos ^ (u64::from(std::process::id()) << 32);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) | 1
    })
}

/// A counter per thread, mixed: ids taken in blocks, so threads never contend.
fn next_id() -> u64 {
    use std::{
        cell::Cell,
        sync::atomic::{AtomicU64, Ordering},
    };
    const BLOCK: u64 = 1 << 16;
    static BLOCKS: AtomicU64 = AtomicU64::new(0);
    thread_local! {
        static NEXT: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
    }
    let n = NEXT.with(|next| {
        let (mut n, end) = next.get();
        if n == end {
            n = BLOCKS.fetch_add(BLOCK, Ordering::Relaxed);
            next.set((n + 1, n + BLOCK));
        } else {
            next.set((n + 1, end));
        }
        n
    });
    n.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// `00-<32 hex>-<16 hex>-01`.
pub(crate) fn traceparent(trace_id: u128, span_id: u64) -> String {
    format!("00-{trace_id:032x}-{span_id:016x}-01")
}

/// A W3C `traceparent` header's trace id and parent span id; `None` when malformed (a
/// caller then starts a new trace: a bad header is never an error).
#[cfg_attr(not(feature = "http"), allow(dead_code))] // read from HTTP headers
pub(crate) fn parse_traceparent(header: &str) -> Option<(u128, u64)> {
    let mut parts = header.trim().split('-');
    let (version, trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, len| s.len() == len && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !hex(version, 2) || version == "ff" || !hex(trace, 32) || !hex(span, 16) || !hex(flags, 2) {
        return None;
    }
    if version == "00" && parts.next().is_some() {
        return None;
    }
    let (trace, span) = (u128::from_str_radix(trace, 16).ok()?, u64::from_str_radix(span, 16).ok()?);
    (trace != 0 && span != 0).then_some((trace, span))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_round_trips_and_malformed_ones_are_refused() {
        let (trace, span) = (new_trace_id(), new_span_id());
        assert_eq!(parse_traceparent(&traceparent(trace, span)), Some((trace, span)));
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(parse_traceparent(good), Some((0x4bf92f3577b34da6a3ce929d0e0e4736, 0x00f067aa0ba902b7)));
        for bad in [
            "",
            "garbage",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert_eq!(parse_traceparent(bad), None, "{bad}");
        }
        assert_ne!(new_trace_id(), new_trace_id());
    }
}
