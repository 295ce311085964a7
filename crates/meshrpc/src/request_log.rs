//! What a node says about the calls it serves: a summary line per method every interval
//! (calls, errors, p99) at INFO, target `meshrpc::summary`; and, only when asked, a line
//! per call like the seed's GIN request log (target `meshrpc::request`), as the
//! process's `Telemetry::request_lines` say (`MESHRPC_REQUEST_LOG=on`, `sample:N` for the
//! binaries; off by default). A node under load then writes a few lines every ten
//! seconds, not one per call.

use std::{
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, OnceLock,
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use crate::{
    call::Items,
    call::{Call, Dispatch, Polled, Reply},
    error::Error,
    metrics::calls::{self, MethodStats},
    stream::Stream,
    telemetry::RequestLines,
};

static NTH: AtomicU64 = AtomicU64::new(0);

/// Whether this request gets a line of its own (for front doors that log requests, not
/// calls: the gateway).
pub(crate) fn line_picked() -> bool {
    let lines = crate::telemetry::current().request_lines;
    lines != RequestLines::Off && lines.picks(NTH.fetch_add(1, Ordering::Relaxed))
}

/// The series of the method a connection called last.
#[derive(Default)]
pub(crate) struct LastMethod(Option<(Box<str>, Box<str>, Arc<MethodStats>)>);

impl LastMethod {
    fn stats(&mut self, service: &str, method: &str, peer: &str, exists: impl FnOnce() -> bool) -> Arc<MethodStats> {
        match &self.0 {
            Some((s, m, stats)) if **s == *service && **m == *method => stats.clone(),
            _ => {
                let stats = calls::inbound().series(service, method, peer, exists);
                self.0 = Some((service.into(), method.into(), stats.clone()));
                stats
            }
        }
    }
}

/// A call being served: counted in its series (golden metrics and the summary) when it
/// ends, and logged on its own line if `Telemetry::request_lines` picks it.
pub(crate) struct RequestLog {
    stats: Option<Arc<MethodStats>>,
    /// Boxed: most calls take no line, and every call future carries its log.
    line: Option<Box<Line>>,
    start: Instant,
    /// The caller's deadline, when it sent one: a stream it cancels at that moment was cut
    /// by its deadline, whichever side's timer saw it first.
    deadline: Option<Instant>,
}

/// How close to the caller's deadline its cancel counts as that deadline: deadlines travel
/// in whole milliseconds and timers fire on millisecond ticks, so the caller's timer may
/// beat ours by about that much.
const DEADLINE_SLACK: std::time::Duration = std::time::Duration::from_millis(2);

struct Line {
    service: String,
    method: String,
    caller: String,
    trace_id: u128,
}

impl RequestLog {
    /// Starts the log of `call` from `peer` (a node's name: the metrics label; `caller`
    /// says more, for the request line), which `dispatch` will answer (it knows whether the
    /// method exists: one that does not takes no series). A connection that serves many
    /// calls passes its `last` slot (its peer never changes): most connections call one
    /// method over and over, and the shared map costs a lock and three string hashes.
    pub(crate) fn begin(
        last: Option<&mut LastMethod>,
        call: &Call,
        peer: &str,
        caller: &str,
        start: Instant,
        dispatch: &dyn Dispatch,
    ) -> RequestLog {
        let (service, method) = (&*call.service, &*call.method);
        let exists = || dispatch.has_method(service, method) != Some(false);
        let stats = (calls::enabled() && summary_started()).then(|| match last {
            Some(last) => last.stats(service, method, peer, exists),
            None => calls::inbound().series(service, method, peer, exists),
        });
        RequestLog { deadline: call.deadline, ..RequestLog::with(stats, service, method, caller, call.trace_id, start) }
    }

    fn with(
        stats: Option<Arc<MethodStats>>,
        service: &str,
        method: &str,
        caller: &str,
        trace_id: u128,
        start: Instant,
    ) -> RequestLog {
        if let Some(stats) = &stats {
            stats.started();
        }
        let line = (line_picked() && tracing::enabled!(target: "meshrpc::request", tracing::Level::INFO)).then(|| {
            Box::new(Line {
                service: service.to_owned(),
                method: method.to_owned(),
                caller: caller.to_owned(),
                trace_id,
            })
        });
        RequestLog { stats, line, start, deadline: None }
    }

    /// Starts the log of a call from this process (the colocated fast path, to a method
    /// that exists): each thread keeps the slot of the method it called last, as a
    /// connection does.
    pub(crate) fn begin_local(service: &str, method: &str, trace_id: u128, start: Instant) -> RequestLog {
        thread_local! {
            static LAST: std::cell::RefCell<LastMethod> = std::cell::RefCell::default();
        }
        let stats = (calls::enabled() && summary_started()).then(|| {
            LAST.with(|last| match last.try_borrow_mut() {
                Ok(mut last) => last.stats(service, method, "local", || true),
                Err(_) => calls::inbound().series(service, method, "local", || true),
            })
        });
        RequestLog::with(stats, service, method, "local", trace_id, start)
    }

    /// Logs the call when it ends: with its result, or as `cancelled` if it is dropped
    /// first (the caller cancelled it, or its connection closed).
    pub(crate) fn until_done(self) -> Running {
        Running(Some(self))
    }

    /// A call this node makes to a replica (outbound), counted in `stats` from `start`.
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    pub(crate) fn outbound(stats: Arc<MethodStats>, start: Instant) -> RequestLog {
        stats.started();
        RequestLog { stats: Some(stats), line: None, start, deadline: None }
    }

    /// Ends the log with `result`: at once for a value or an error; a stream takes the log
    /// along, and the call stays in flight until the stream ends (see [`follow`](Self::follow)).
    pub(crate) fn finish(self, result: Result<Reply, Error>) -> Result<Reply, Error> {
        match result {
            Ok(reply) => Ok(self.follow(reply)),
            Err(e) => {
                self.end_with(e.code());
                Err(e)
            }
        }
    }

    /// Ends the log with `reply`, unless it is a stream: then the call ends with the
    /// stream (a stream is one call): `ok` if it ends cleanly, `application` at an error
    /// of the method's item type, the error's code at any other (`timeout` at its
    /// deadline, `unavailable` when its replica died), `cancelled` if its reader drops it
    /// first (`timeout` if that is at the caller's deadline: the caller's timer won). Its items and their bytes are counted as they pass.
    pub(crate) fn follow(self, reply: Reply) -> Reply {
        match reply {
            Reply::Stream(items) if self.stats.is_some() || self.line.is_some() => {
                Reply::Stream(Items::from_source(Counted { items, log: Some(self), unsaid: (0, 0) }))
            }
            reply => {
                self.end_with(if matches!(reply, Reply::AppError(_)) { "application" } else { "ok" });
                reply
            }
        }
    }

    /// As [`follow`](Self::follow), for a typed stream answered in this process (the
    /// colocated path): an item error ends it as `timeout` if it came at `deadline`, else
    /// as `application`; its items are counted, with no bytes (nothing was encoded).
    pub(crate) fn follow_typed<T, E>(self, stream: Stream<T, E>, deadline: Option<Instant>) -> Stream<T, E>
    where
        T: Send + 'static,
        E: Send + 'static,
    {
        Stream::new(CountedTyped { stream, log: Some(self), deadline })
    }

    pub(crate) fn end(self, result: &Result<Reply, Error>) {
        self.end_with(status_of(result));
    }

    /// Logs the call with `status` (`ok`, `application`, `timeout`…).
    pub(crate) fn end_with(self, status: &str) {
        if self.stats.is_none() && self.line.is_none() {
            return; // nothing counts it: no clock read
        }
        let micros = crate::clock::since(self.start).as_micros() as u64;
        if let Some(stats) = &self.stats {
            stats.record(micros, status);
        }
        if let Some(line) = self.line {
            tracing::info!(
                target: "meshrpc::request",
                caller = %line.caller, service = line.service, method = line.method, status, micros,
                trace_id = %format_args!("{:032x}", line.trace_id),
                "call"
            );
        }
    }
}

/// A call's answer as a label: `ok` (for a stream: it opened; see
/// [`RequestLog::follow`] for how it ended), `application`, or the error's code.
pub(crate) fn status_of(result: &Result<Reply, Error>) -> &'static str {
    match result {
        Ok(Reply::Ok(_) | Reply::Stream(_)) => "ok",
        Ok(Reply::AppError(_)) => "application",
        Err(e) => e.code(),
    }
}

/// A call that is logged when it ends (see [`RequestLog::until_done`]).
pub(crate) struct Running(Option<RequestLog>);

impl Running {
    /// As [`RequestLog::finish`].
    pub(crate) fn finish(mut self, result: Result<Reply, Error>) -> Result<Reply, Error> {
        match self.0.take() {
            Some(log) => log.finish(result),
            None => result,
        }
    }
}

/// A stream answer counted as its call: its items as they pass, the call when it ends.
struct Counted {
    items: Items,
    log: Option<RequestLog>,
    /// Items and bytes passed and not yet added to the series: a stream of small items
    /// adds them every [`COUNT_EVERY`] items (and whenever it waits or ends), not per item.
    unsaid: (u64, u64),
}

/// Items a stream passes before its count reaches the series (a scrape mid-stream is at
/// most this many behind, and never behind a stream that waits for its producer).
const COUNT_EVERY: u64 = 64;

impl Counted {
    fn say(&mut self) {
        let (items, bytes) = std::mem::take(&mut self.unsaid);
        if items != 0 {
            if let Some(stats) = self.log.as_ref().and_then(|l| l.stats.as_ref()) {
                stats.stream_items(items, bytes);
            }
        }
    }

    /// Counts an item of `len` bytes that passed.
    fn passed(&mut self, len: usize) {
        self.unsaid.0 += 1;
        self.unsaid.1 += len as u64;
        if self.unsaid.0 >= COUNT_EVERY {
            self.say();
        }
    }

    /// Ends the call's log when `next` ends the stream.
    fn observe(&mut self, next: &Option<Result<Reply, Error>>) {
        let end = match next {
            Some(Ok(Reply::Ok(item))) => return self.passed(item.len()),
            None => "ok",
            Some(Ok(Reply::AppError(_))) => "application",
            Some(Ok(Reply::Stream(_))) => "protocol",
            Some(Err(e)) => e.code(),
        };
        self.say();
        if let Some(log) = self.log.take() {
            log.end_with(end);
        }
    }
}

impl futures_core::Stream for Counted {
    type Item = Result<Reply, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let Poll::Ready(next) = Pin::new(&mut self.items).poll_next(cx) else {
            self.say();
            return Poll::Pending;
        };
        self.observe(&next);
        Poll::Ready(next)
    }
}

impl crate::call::ItemSource for Counted {
    fn poll_into(mut self: Pin<&mut Self>, cx: &mut Context<'_>, out: &mut bytes::BytesMut) -> Poll<Polled> {
        let start = out.len();
        match self.items.poll_into(cx, out) {
            Poll::Pending => {
                self.say();
                Poll::Pending
            }
            Poll::Ready(Polled::Appended) => {
                self.passed(out.len() - start);
                Poll::Ready(Polled::Appended)
            }
            Poll::Ready(Polled::Next(next)) => {
                self.observe(&next);
                Poll::Ready(Polled::Next(next))
            }
        }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.say();
        if let Some(log) = self.log.take() {
            let cut = log.deadline.is_some_and(|d| crate::clock::now() + DEADLINE_SLACK >= d);
            log.end_with(if cut { "timeout" } else { "cancelled" });
        }
    }
}

/// A typed stream answer counted as its call (see [`RequestLog::follow_typed`]).
struct CountedTyped<T, E> {
    stream: Stream<T, E>,
    log: Option<RequestLog>,
    deadline: Option<Instant>,
}

impl<T, E> futures_core::Stream for CountedTyped<T, E> {
    type Item = Result<T, E>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let next = Pin::new(&mut self.stream).poll_next(cx);
        let end = match &next {
            Poll::Pending => return next,
            Poll::Ready(Some(Ok(_))) => {
                if let Some(stats) = self.log.as_ref().and_then(|l| l.stats.as_ref()) {
                    stats.stream_item(0);
                }
                return next;
            }
            Poll::Ready(None) => "ok",
            Poll::Ready(Some(Err(_))) if self.deadline.is_some_and(|d| crate::clock::now() >= d) => "timeout",
            Poll::Ready(Some(Err(_))) => "application",
        };
        if let Some(log) = self.log.take() {
            log.end_with(end);
        }
        next
    }
}

impl<T, E> Drop for CountedTyped<T, E> {
    fn drop(&mut self) {
        if let Some(log) = self.log.take() {
            log.end_with("cancelled");
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

/// Starts the summary writer on first use (inside a tokio runtime); false outside one.
fn summary_started() -> bool {
    static STARTED: OnceLock<bool> = OnceLock::new();
    *STARTED.get_or_init(|| {
        let Ok(handle) = tokio::runtime::Handle::try_current() else { return false };
        // A zero interval (tokio's interval panics on it) means the default.
        let every = Some(crate::telemetry::current().summary_every)
            .filter(|every| !every.is_zero())
            .unwrap_or(std::time::Duration::from_secs(10));
        handle.spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                write_summary(every);
            }
        });
        true
    })
}

/// A line per method (all its peers together) that had calls since the last one.
fn write_summary(every: Duration) {
    let mut methods: std::collections::BTreeMap<(String, String), (u64, u64, u64)> = Default::default();
    calls::inbound().each(|service, method, _peer, stats| {
        let (calls, errors, p99) = stats.take_window();
        if calls > 0 {
            let entry = methods.entry((service.to_owned(), method.to_owned())).or_default();
            (entry.0, entry.1, entry.2) = (entry.0 + calls, entry.1 + errors, entry.2.max(p99));
        }
    });
    for ((service, method), (calls, errors, p99)) in methods {
        tracing::info!(
            target: "meshrpc::summary",
            service, method, calls, errors, p99_us = p99, interval_s = every.as_secs_f64(),
            "calls"
        );
    }
}
