//! What a caller does when replicas fail or slow down: the settings of retries, outlier
//! ejection and hedging (docs/resilience.md), what each method allows (from its
//! `#[meshrpc(...)]` options, as its replicas gossip them) and what the policies did.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use super::{
    outlier::Ejection,
    retry::{Budget, RetryBudget},
    Member,
};
use crate::{call::Call, metrics::Figure};

/// How a node's calls recover from failing and slow replicas
/// ([`ClusterBuilder::resilience`](super::ClusterBuilder::resilience)). The defaults suit
/// most meshes; every policy can be turned off.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Resilience {
    /// Retry calls of idempotent methods that may have reached a replica (`unavailable`
    /// mid-call, `internal`, a timed-out attempt) on another replica (on). Calls that
    /// provably never reached one are always retried; other methods never are.
    pub retries: bool,
    /// What retries and hedges may add to the calls made (20 % of them over 10 s, plus
    /// 10 per second).
    pub budget: RetryBudget,
    /// Each attempt of an idempotent call gets at most this long before it is given up
    /// and retried elsewhere (off: an attempt lasts until the call's deadline).
    pub attempt_timeout: Option<Duration>,
    /// Keep replicas that answer badly out of picking for a while (on).
    pub ejection: Option<Ejection>,
    /// Hedge methods marked `#[meshrpc(hedge)]` (on).
    pub hedging: bool,
    /// A hedge is never sent sooner than this after the first attempt (1 ms), however
    /// fast the method's p95.
    pub min_hedge_delay: Duration,
}

impl Default for Resilience {
    fn default() -> Self {
        Resilience {
            retries: true,
            budget: RetryBudget::default(),
            attempt_timeout: None,
            ejection: Some(Ejection::default()),
            hedging: true,
            min_hedge_delay: Duration::from_millis(1),
        }
    }
}

impl Resilience {
    /// No retries after a call may have run, no ejection, no hedging: what meshrpc did
    /// before these policies (calls that never reached a replica are still retried).
    pub fn off() -> Resilience {
        Resilience { retries: false, ejection: None, hedging: false, ..Resilience::default() }
    }
}

/// What a method allows, as the replica picked for it advertises.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct MethodPolicy {
    pub(super) idempotent: bool,
    pub(super) hedge: bool,
    pub(super) timeout: Option<Duration>,
    /// It carries items or answers with them: it goes on the peer's stream lane.
    pub(super) streams: bool,
}

impl MethodPolicy {
    pub(super) fn of(member: &Member, call: &Call) -> MethodPolicy {
        let method = member.services.get(&*call.service).and_then(|s| s.method(&call.method));
        method.map_or_else(
            || MethodPolicy { streams: call.input.is_some(), ..MethodPolicy::default() },
            |m| MethodPolicy {
                // A call carrying items cannot send them twice.
                idempotent: m.idempotent && call.input.is_none(),
                hedge: m.hedge && m.idempotent && call.input.is_none() && !m.streams,
                timeout: m.timeout,
                streams: m.streams || call.input.is_some(),
            },
        )
    }
}

/// The caller's side of the policies: the budget and what was done.
pub(super) struct Policies {
    pub(super) settings: Resilience,
    pub(super) budget: Budget,
    pub(super) stats: Counters,
}

impl Policies {
    pub(super) fn new(settings: Resilience) -> Policies {
        Policies { budget: Budget::new(settings.budget), settings, stats: Counters::default() }
    }
}

/// Counters of what the policies did on this node's calls.
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) retries: AtomicU64,
    pub(super) retries_refused: AtomicU64,
    pub(super) hedges: AtomicU64,
    pub(super) hedge_wins: AtomicU64,
    pub(super) ejections: AtomicU64,
}

impl Counters {
    pub(super) fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// What the resilience policies did on a node's outgoing calls, and where they stand
/// ([`Cluster::resilience_stats`](super::Cluster::resilience_stats); `/metrics`).
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct ResilienceStats {
    /// Attempts sent again after one that may have reached a replica failed.
    pub retries: u64,
    /// Retries and hedges not sent because the budget was spent.
    pub retries_refused: u64,
    /// Second attempts sent because the first was slower than the method's p95.
    pub hedges: u64,
    /// Hedges that answered before the first attempt.
    pub hedge_wins: u64,
    /// Replicas ejected from picking (each time).
    pub ejections: u64,
    /// Replicas (`node id` and service) ejected right now.
    pub ejected: Vec<(String, String)>,
    /// Retries the budget allows right now.
    pub budget_left: u64,
}

impl ResilienceStats {
    pub(crate) fn figures(&self) -> [Figure; 7] {
        [
            Figure::counter(
                "meshrpc_retries",
                "Attempts retried after one that may have reached a replica failed",
                self.retries,
            ),
            Figure::counter(
                "meshrpc_retries_refused",
                "Retries and hedges not sent because the retry budget was spent",
                self.retries_refused,
            ),
            Figure::counter(
                "meshrpc_hedges",
                "Second attempts sent after the first outlasted the method's p95",
                self.hedges,
            ),
            Figure::counter("meshrpc_hedge_wins", "Hedges that answered before the first attempt", self.hedge_wins),
            Figure::counter("meshrpc_ejections", "Replicas ejected from picking for answering badly", self.ejections),
            Figure::gauge(
                "meshrpc_ejected_replicas",
                "Replicas ejected from picking right now",
                self.ejected.len() as u64,
            ),
            Figure::gauge("meshrpc_retry_budget_left", "Retries the retry budget allows right now", self.budget_left),
        ]
    }
}
