//! Hedged calls (opt-in per method, `#[meshrpc(idempotent, hedge)]`): a call still
//! unanswered after the method's recent p95 latency is sent to a second replica; the
//! first good answer wins and the other attempt is cancelled. Hedges spend the retry
//! budget, so a slow mesh is not doubled.

use std::{
    collections::HashMap,
    net::SocketAddr,
    pin::pin,
    sync::{Arc, Mutex},
    time::Duration,
};

use super::{
    failover::{may_retry, Reached},
    peers::Peer,
    resilience::Counters,
    Inner,
};
use crate::{
    call::{Call, Reply},
    error::Error,
    transport::PendingCall,
};

/// The latencies of a method's recent answers.
pub(crate) struct Latencies {
    ring: [Duration; RING],
    len: usize,
    next: usize,
    p95: Option<Duration>,
    since_sorted: usize,
}

const RING: usize = 128;
/// Answers needed before a method is hedged at all.
const MIN_SAMPLES: usize = 20;

impl Default for Latencies {
    fn default() -> Self {
        Latencies { ring: [Duration::ZERO; RING], len: 0, next: 0, p95: None, since_sorted: 0 }
    }
}

impl Latencies {
    pub(crate) fn record(&mut self, latency: Duration) {
        self.ring[self.next] = latency;
        self.next = (self.next + 1) % RING;
        self.len = (self.len + 1).min(RING);
        self.since_sorted += 1;
        // Sorting 128 values costs a microsecond: once every 16 answers is plenty.
        if self.len >= MIN_SAMPLES && (self.p95.is_none() || self.since_sorted >= 16) {
            let mut sorted = self.ring[..self.len].to_vec();
            let at = (self.len * 95).div_ceil(100) - 1;
            let (_, p95, _) = sorted.select_nth_unstable(at);
            self.p95 = Some(*p95);
            self.since_sorted = 0;
        }
    }

    /// The p95 of recent answers, once there are enough of them.
    pub(crate) fn p95(&self) -> Option<Duration> {
        self.p95
    }
}

/// The latencies of every hedged method, by `service/method`.
#[derive(Default)]
pub(super) struct Hedging {
    methods: Mutex<HashMap<String, Arc<Mutex<Latencies>>>>,
}

impl Hedging {
    pub(super) fn latencies(&self, service: &str, method: &str) -> Arc<Mutex<Latencies>> {
        let key = format!("{service}/{method}");
        self.methods.lock().unwrap().entry(key).or_default().clone()
    }
}

/// An attempt's answer, which replica gave it, and how far the call got when it failed.
pub(super) type Answered = (Result<Reply, (Error, Reached)>, Arc<Peer>);

/// Waits for `first` (sent to `peer`); once it outlasts the method's p95, sends the
/// call to another replica too and takes the first good answer.
pub(super) async fn hedged(
    inner: &Inner,
    call: &Call,
    fingerprint: Option<&str>,
    first: PendingCall,
    peer: Arc<Peer>,
    tried: &mut Vec<SocketAddr>,
) -> Answered {
    let latencies = inner.hedging.latencies(&call.service, &call.method);
    let started = crate::clock::now();
    let delay = latencies.lock().unwrap().p95().map(|p95| p95.max(inner.policies.settings.min_hedge_delay));
    let mut first = pin!(first.answer());
    let record = |peer: Arc<Peer>, answer: Result<Reply, Error>| {
        if answer.is_ok() {
            latencies.lock().unwrap().record(crate::clock::since(started));
        }
        (answer.map_err(|e| (e, Reached::Sent)), peer)
    };
    let Some(delay) = delay.filter(|d| call.deadline.is_none_or(|end| started + *d < end)) else {
        let answer = first.await;
        return record(peer, answer);
    };
    tokio::select! {
        answer = &mut first => return record(peer, answer),
        () = tokio::time::sleep(delay) => {}
    }
    if !inner.policies.budget.withdraw(crate::clock::now()) {
        Counters::add(&inner.policies.stats.retries_refused);
        let answer = first.await;
        return record(peer, answer);
    }
    let Some((second_peer, second)) = send_elsewhere(inner, call, fingerprint, tried).await else {
        let answer = first.await;
        return record(peer, answer);
    };
    Counters::add(&inner.policies.stats.hedges);
    tracing::debug!(service = %call.service, method = %call.method, ?delay, "hedging a slow call");
    let mut second = pin!(second.answer());
    // The first good answer wins; the other attempt is dropped, which cancels it.
    // A failure that another replica may cure waits for the other attempt instead.
    tokio::select! {
        answer = &mut first => match answer {
            Err(e) if may_retry(&e, Reached::Sent, true) => {
                let answer = second.await;
                if answer.is_ok() {
                    Counters::add(&inner.policies.stats.hedge_wins);
                }
                record(second_peer, answer)
            }
            answer => record(peer, answer),
        },
        answer = &mut second => match answer {
            Err(e) if may_retry(&e, Reached::Sent, true) => record(peer, first.await),
            answer => {
                Counters::add(&inner.policies.stats.hedge_wins);
                record(second_peer, answer)
            }
        },
    }
}

/// Sends `call` to a replica not yet tried (a hedge); `None` when none is reachable.
async fn send_elsewhere(
    inner: &Inner,
    call: &Call,
    fingerprint: Option<&str>,
    tried: &mut Vec<SocketAddr>,
) -> Option<(Arc<Peer>, PendingCall)> {
    let balancer = inner.balancer(&call.service);
    let view = inner.membership.view();
    let replicas = view.replicas(&call.service, fingerprint);
    let (member, peer) = inner.pick(&*balancer, &call.service, &call.service, replicas, tried, call.key.as_deref())?;
    let peer = peer?; // this node itself is not hedged to
    tried.push(peer.addr);
    let conn = peer.connection().await.ok()?;
    if inner.unproven(member, &conn, &call.service).is_some() {
        return None;
    }
    let pending = conn.send_call(call.clone()).ok()?;
    Some((peer, pending))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p95_of_recent_answers() {
        let mut l = Latencies::default();
        for ms in 1..MIN_SAMPLES as u64 {
            l.record(Duration::from_millis(ms));
        }
        assert_eq!(l.p95(), None, "too few answers to hedge on");
        l.record(Duration::from_millis(20));
        assert_eq!(l.p95(), Some(Duration::from_millis(19)));
        for _ in 0..RING {
            l.record(Duration::from_millis(5));
        }
        assert_eq!(l.p95(), Some(Duration::from_millis(5)), "old answers leave the window");
    }
}
