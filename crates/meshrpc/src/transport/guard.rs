//! What a node counts and bounds across all its connections: refused connections,
//! connections closed for misbehaving, and the bytes held in frames not yet whole.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Counters of a node's port, for `/metrics` and tests. Each only grows.
#[derive(Debug, Default)]
pub struct PortCounters {
    /// Connections refused because the node had `max_connections` open.
    pub refused_connections: AtomicU64,
    /// Connections closed because the node-wide budget for partial frames was spent.
    pub shed_partial_frames: AtomicU64,
    /// Connections closed because a frame did not arrive whole within its time budget.
    pub slow_frames: AtomicU64,
    /// Mesh connections closed after their idle timeout.
    pub idle_closed: AtomicU64,
    /// Connections closed because the caller stopped reading its answers.
    pub stuck_closed: AtomicU64,
    /// Answers refused as `too_large` for the caller.
    pub oversized_answers: AtomicU64,
    /// Mesh handshakes refused (wrong preface or version, garbage).
    pub refused_handshakes: AtomicU64,
    /// TLS handshakes refused on a mutual-TLS port (plaintext, another CA, an expired
    /// certificate, another cluster's, silence after the ClientHello).
    pub refused_tls: AtomicU64,
    /// Calls ended as `overloaded` because the node-wide budget for unread stream items
    /// was spent.
    pub shed_stream_items: AtomicU64,
    /// HTTP answers replaced by `503 overloaded`: the port's budget for answers its
    /// callers have not read was spent.
    pub shed_http_answers: AtomicU64,
    /// Connections open now (a gauge).
    pub open_connections: AtomicU64,
}

/// UDP datagrams on a gossip port that were not gossip, in this process (counted by the
/// gossip engine, which logs at most one line about them per 10 s).
pub(crate) static GOSSIP_GARBAGE: AtomicU64 = AtomicU64::new(0);

impl PortCounters {
    pub(crate) fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters, for `/metrics`.
    #[cfg_attr(not(feature = "http"), allow(dead_code))] // shown by `/metrics`
    pub(crate) fn figures(&self) -> Vec<crate::metrics::Figure> {
        let mut figures: Vec<_> = self
            .values()
            .iter()
            .map(|(name, help, value)| crate::metrics::Figure::counter(name, help, *value))
            .collect();
        figures.push(crate::metrics::Figure::gauge(
            "meshrpc_connections_open",
            "Connections the node's port serves now (mesh and HTTP)",
            self.open_connections.load(Ordering::Relaxed),
        ));
        figures
    }

    /// The counters as `(name, help, value)`, named as in `/metrics`.
    pub fn values(&self) -> [(&'static str, &'static str, u64); 12] {
        let v = |c: &AtomicU64| c.load(Ordering::Relaxed);
        [
            ("meshrpc_connections_refused", "Connections refused at the connection cap", v(&self.refused_connections)),
            (
                "meshrpc_partial_frames_shed",
                "Connections closed when the node-wide budget for partial frames was spent",
                v(&self.shed_partial_frames),
            ),
            ("meshrpc_slow_frames", "Connections closed when a frame missed its time budget", v(&self.slow_frames)),
            (
                "meshrpc_stream_items_shed",
                "Calls ended as overloaded when the node-wide budget for unread stream items was spent",
                v(&self.shed_stream_items),
            ),
            (
                "meshrpc_idle_connections_closed",
                "Mesh connections closed after their idle timeout",
                v(&self.idle_closed),
            ),
            (
                "meshrpc_stuck_connections_closed",
                "Connections closed because the caller stopped reading its answers",
                v(&self.stuck_closed),
            ),
            ("meshrpc_oversized_answers", "Answers refused as too large for their caller", v(&self.oversized_answers)),
            (
                "meshrpc_http_answers_shed",
                "HTTP answers replaced by 503 overloaded: the budget for answers callers have not read was spent",
                v(&self.shed_http_answers),
            ),
            ("meshrpc_handshakes_refused", "Mesh handshakes refused", v(&self.refused_handshakes)),
            ("meshrpc_gossip_garbage", "UDP datagrams on the gossip port that were not gossip", v(&GOSSIP_GARBAGE)),
            ("meshrpc_tls_handshakes_refused", "TLS handshakes refused on the mesh port", v(&self.refused_tls)),
            ("meshrpc_calls_denied", "Calls denied by the authorization policy", v(&crate::identity::CALLS_DENIED)),
        ]
    }
}

/// Bytes held in frames not yet whole, across all connections of a node.
#[derive(Debug)]
pub(crate) struct FrameBudget {
    used: AtomicUsize,
    limit: usize,
}

impl FrameBudget {
    pub(crate) fn new(limit: usize) -> FrameBudget {
        FrameBudget { used: AtomicUsize::new(0), limit }
    }

    /// A connection's share goes from `held` to `wanted` bytes: false (and nothing
    /// taken) when that would pass the node's limit.
    pub(crate) fn update(&self, held: usize, wanted: usize) -> bool {
        if wanted <= held {
            self.used.fetch_sub(held - wanted, Ordering::Relaxed);
            return true;
        }
        let more = wanted - held;
        if self.used.fetch_add(more, Ordering::Relaxed) + more > self.limit {
            self.used.fetch_sub(more, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Bytes held now.
    #[cfg(test)]
    pub(crate) fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_refuses_what_would_pass_the_limit_and_takes_nothing() {
        let budget = FrameBudget::new(100);
        assert!(budget.update(0, 60));
        assert!(!budget.update(0, 50), "60 + 50 > 100");
        assert_eq!(budget.used(), 60);
        assert!(budget.update(60, 100));
        assert!(budget.update(100, 0));
        assert_eq!(budget.used(), 0);
    }
}

/// What every connection of one port shares: its counters and its partial-frame budget.
#[derive(Debug)]
pub(crate) struct Guard {
    pub(crate) counters: std::sync::Arc<PortCounters>,
    pub(crate) budget: FrameBudget,
    /// Stream items received and not yet read by their handlers, node-wide.
    pub(crate) items: std::sync::Arc<FrameBudget>,
}
