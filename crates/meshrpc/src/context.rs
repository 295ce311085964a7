//! The implicit call context: a handler that calls another service passes on its
//! remaining deadline and trace id without touching its trait.

use std::time::{Duration, Instant};

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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallContext {
    /// When the caller stops waiting.
    pub deadline: Option<Instant>,
    /// Trace id shared by every hop of one request.
    pub trace_id: u64,
}

impl CallContext {
    /// The context of the call being served by this task, if any.
    pub fn current() -> Option<CallContext> {
        CURRENT.try_with(|c| *c).ok()
    }

    /// Time left before the deadline (`None`: no deadline).
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline.map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// Runs `fut` with this context as the current one.
    pub async fn scope<F: std::future::Future>(self, fut: F) -> F::Output {
        CURRENT.scope(self, fut).await
    }
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

/// A fresh trace id for a call that starts a new trace.
pub(crate) fn new_trace_id() -> u64 {
    use std::{
        cell::Cell,
        sync::atomic::{AtomicU64, Ordering},
    };
    /// Each thread takes ids in blocks, so calls on different threads never contend
    /// on one counter.
    const BLOCK: u64 = 1 << 16;
    static BLOCKS: AtomicU64 = AtomicU64::new(0);
    thread_local! {
        static NEXT: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
    }
    // The process id once: `getpid` is a system call in glibc.
    static PID: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let pid = *PID.get_or_init(|| u64::from(std::process::id()));
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
    // Mix the process id and the counter: unique enough across a mesh, and cheap.
    (pid << 40) ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15)
}
