//! Answers waiting for HTTP callers to read them. An answer of known size is charged to
//! its port's budget (`HttpLimits::max_unread_answers`) when it is ready, and given back
//! once all its bytes reached the socket (its buffer is freed whole, not as it drains):
//! callers that read slowly or not at all hold at most the budget, and an answer that does not fit is replaced by `503 overloaded` (its call has
//! run; the caller may retry). A connection whose charged bytes do not move for
//! `stuck_timeout` is closed (`driver.rs`), as a mesh caller's is.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use axum::body::HttpBody as _;
use axum::http::StatusCode;

use crate::transport::{FrameBudget, PortCounters};

type Response = axum::response::Response;

/// What every HTTP connection of one port shares: the budget and where it counts.
#[derive(Debug)]
pub(crate) struct Answers {
    budget: FrameBudget,
    limit: usize,
    pub(crate) counters: Arc<PortCounters>,
}

impl Answers {
    pub(crate) fn new(limit: usize, counters: Arc<PortCounters>) -> Arc<Answers> {
        Arc::new(Answers { budget: FrameBudget::new(limit), limit, counters })
    }
}

/// What one HTTP connection is given: its timeouts, and its port's budget for answers
/// not yet read.
#[derive(Debug, Clone)]
pub(crate) struct HttpConn {
    /// First bytes and request heads.
    pub(crate) header_timeout: Duration,
    /// A connection silent for this long is closed.
    pub(crate) idle_timeout: Duration,
    /// A connection whose answer does not move for this long is closed.
    pub(crate) stuck_timeout: Duration,
    pub(crate) answers: Arc<Answers>,
}

/// The answers of one connection charged to the budget and not yet written whole.
#[derive(Debug)]
pub(crate) struct Unsent {
    answers: Arc<Answers>,
    /// Bytes charged (read without the lock: most writes find nothing charged).
    held: AtomicUsize,
    /// Bytes written since they were charged.
    sent: Mutex<usize>,
}

impl Unsent {
    pub(crate) fn new(answers: Arc<Answers>) -> Arc<Unsent> {
        Arc::new(Unsent { answers, held: AtomicUsize::new(0), sent: Mutex::new(0) })
    }

    /// Bytes charged and not yet written whole.
    pub(crate) fn held(&self) -> usize {
        self.held.load(Ordering::Acquire)
    }

    /// `n` bytes reached the socket: once as many as were charged did, the charge is
    /// given back.
    pub(crate) fn written(&self, n: usize) {
        if self.held() == 0 {
            return;
        }
        let mut sent = self.sent.lock().unwrap();
        *sent += n;
        if *sent >= self.held() {
            *sent = 0;
            self.answers.budget.update(self.held.swap(0, Ordering::AcqRel), 0);
        }
    }

    /// Everything this connection wrote so far was written whole (it parked): nothing is
    /// held (an answer whose body was never sent, to a `HEAD`, is let go of too).
    pub(crate) fn clear(&self) {
        let mut sent = self.sent.lock().unwrap();
        *sent = 0;
        self.answers.budget.update(self.held.swap(0, Ordering::AcqRel), 0);
    }

    /// Charges an answer of known size, or replaces it with `503 overloaded` when the
    /// port's budget has no room for it.
    pub(crate) fn charge(&self, resp: Response) -> Response {
        let Some(len) = resp.body().size_hint().exact().map(|n| n as usize).filter(|n| *n > 0) else {
            return resp;
        };
        if self.answers.budget.update(0, len) {
            let _sent = self.sent.lock().unwrap();
            self.held.fetch_add(len, Ordering::AcqRel);
            return resp;
        }
        PortCounters::add(&self.answers.counters.shed_http_answers);
        let message = format!(
            "overloaded: the node holds its limit of {} MiB of answers its HTTP callers have not read yet (this one: {len} bytes)",
            self.answers.limit >> 20
        );
        super::error_response(StatusCode::SERVICE_UNAVAILABLE, "overloaded", &message, None)
    }
}

impl Drop for Unsent {
    fn drop(&mut self) {
        self.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_charged_until_written_and_refused_past_the_budget() {
        let answers = Answers::new(100, Arc::default());
        let (a, b) = (Unsent::new(answers.clone()), Unsent::new(answers.clone()));
        let body = |n: usize| Response::new(axum::body::Body::from(vec![b'x'; n]));
        assert_eq!(a.charge(body(60)).status(), StatusCode::OK);
        let refused = b.charge(body(50));
        assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE, "60 + 50 > 100");
        assert_eq!(answers.counters.shed_http_answers.load(Ordering::Relaxed), 1);
        a.written(45);
        assert_eq!(a.held(), 60, "held whole until written whole");
        assert_eq!(b.charge(body(50)).status(), StatusCode::SERVICE_UNAVAILABLE);
        a.written(15);
        assert_eq!(a.held(), 0);
        assert_eq!(b.charge(body(50)).status(), StatusCode::OK, "given back once written whole");
        assert_eq!(a.charge(body(40)).status(), StatusCode::OK);
        drop(a);
        assert_eq!(b.charge(body(50)).status(), StatusCode::OK, "what a connection held is given back when it closes");
        b.written(1000);
        assert_eq!(b.held(), 0);
    }
}
