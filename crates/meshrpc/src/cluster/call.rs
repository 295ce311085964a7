//! One call through the cluster, as named steps: [`pick`](Route::pick) a replica (its
//! certificate, then version, ejection and balancing), [`send`](Route::send) it the call,
//! [`attempt`](Route::attempt) an answer (hedged when the method allows), [`judge`] the
//! replica by it, [`record`](Route::record) it in the golden metrics, and
//! [`next`](Route::next): answer, or try another replica when failover allows and the
//! retry budget has room. Mirroring is a plain call beside the first attempt.
//!
//! [`judge`]: super::Inner::judge

use std::{borrow::Cow, net::SocketAddr, sync::Arc, time::Instant};

use super::{
    balance::Balance,
    failover::{may_retry, Reached, MAX_ATTEMPTS},
    hedge::Answered,
    outlier::Replicas,
    peers::Peer,
    resilience::{Counters, MethodPolicy},
    retry::backoff,
    Inner, Member, View,
};
use crate::{
    call::{Call, Dispatch, Reply},
    error::Error,
    request_log::RequestLog,
    spec::ServiceSpec,
    transport::PendingCall,
};

/// A call on its way: what its attempts so far tried and learnt.
pub(super) struct Route<'n> {
    inner: &'n Arc<Inner>,
    call: Call,
    /// The call's service (a static name: no copy).
    service: Cow<'static, str>,
    fingerprint: Option<String>,
    /// The contract the caller was built from, when it says (errors name a difference).
    spec: Option<&'static ServiceSpec>,
    balancer: Arc<dyn Balance>,
    tried: Vec<SocketAddr>,
    /// Attempts that may have reached a replica.
    sent: usize,
    last_error: Option<Error>,
    /// What the method allows, learnt from the first replica picked.
    policy: Option<MethodPolicy>,
    /// Picked by a pin or a split rule (such calls are not hedged).
    versioned: bool,
}

/// Who answers: this node itself, or a peer.
enum Picked<'v> {
    Local,
    Peer(&'v Member, Arc<Peer>),
}

/// After an attempt: the call's answer, or another attempt.
enum Next {
    Answer(Result<Reply, Error>),
    Retry,
}

impl<'n> Route<'n> {
    pub(super) fn new(
        inner: &'n Arc<Inner>,
        call: Call,
        fingerprint: Option<String>,
        spec: Option<&'static ServiceSpec>,
    ) -> Route<'n> {
        inner.policies.budget.deposit(crate::clock::now());
        Route {
            inner,
            balancer: inner.balancer(&call.service),
            service: call.service.clone(),
            call,
            fingerprint,
            spec,
            tried: Vec::new(),
            sent: 0,
            last_error: None,
            policy: None,
            versioned: false,
        }
    }

    /// The steps, until an answer or nothing left to try. Replicas the call could not
    /// even be sent to do not use up its attempts.
    pub(super) async fn run(mut self) -> Result<Reply, Error> {
        while self.sent < MAX_ATTEMPTS && self.tried.len() < 2 * MAX_ATTEMPTS {
            if self.sent > 0 {
                self.before_retry().await?;
            }
            let view = self.inner.membership.view();
            let (member, peer) = match self.pick(&view)? {
                Picked::Local => return self.inner.local.dispatch(self.call).await,
                Picked::Peer(member, peer) => (member, peer),
            };
            self.learn_policy(member);
            let Some(pending) = self.send(member, &peer).await? else { continue };
            // A call is mirrored once, on its first attempt.
            let mirror = (self.tried.len() == 1)
                .then(|| super::traffic::mirror(self.inner, &view, &self.call, member, self.fingerprint.as_deref()))
                .flatten();
            let start = crate::clock::now();
            let edge = self.record(member, start);
            let (answer, answered_by) = self.attempt(pending, peer).await;
            if let Some(mirror) = mirror {
                mirror.compare(answer.as_ref().map_err(|(e, _)| e));
            }
            let answer = recorded(edge, answer);
            let outcome = answer.as_ref().map(|_| ()).map_err(|(e, _)| e);
            self.inner.judge(Replicas::Mesh, &view, &answered_by, &self.service, outcome);
            match self.next(answer, member, &answered_by, start) {
                Next::Answer(answer) => return answer,
                Next::Retry => {}
            }
        }
        Err(self.last_error.unwrap_or_else(|| Error::unavailable("no attempt made")))
    }

    /// A replica for the next attempt: among those that may prove the service, of the
    /// version a pin or a split chose, not ejected, by the balancing policy.
    fn pick<'v>(&mut self, view: &'v View) -> Result<Picked<'v>, Error> {
        let (inner, service) = (self.inner, &*self.service);
        let replicas = view.replicas(service, self.fingerprint.as_deref());
        // Under an application split every call is pinned (once, at the first pick): a
        // handler serving an unpinned request (it entered before the rule reached its front
        // door) keeps the rest of the request at the version serving it; a call from outside
        // any handler enters the application here, at the version the rule chooses.
        if self.call.version.is_none() && self.tried.is_empty() && inner.traffic.app_split() {
            let serving = crate::context::CallContext::current().and(inner.service_version.as_deref());
            self.call.version = match serving {
                Some(own) => Some(Arc::from(own)),
                None => {
                    let (fingerprint, key) = (self.fingerprint.as_deref(), self.call.key.as_deref());
                    super::traffic::entry_version(inner, view, service, view.replicas(service, fingerprint), key)
                }
            };
        }
        let (pin, key) = (self.call.version.as_deref(), self.call.key.as_deref());
        // Most calls are neither pinned nor split: they go straight to the picker.
        self.versioned = pin.is_some() || inner.traffic.split(service);
        let picked = if !self.versioned {
            inner.pick(&*self.balancer, service, service, replicas, &self.tried, key)
        } else {
            // The certificate comes first: a replica that cannot prove the service
            // never counts as one of its versions (it could capture the split).
            let provable =
                replicas.filter(|m| m.is_self || m.addr.is_none_or(|a| inner.peers.get(a).may_serve(service)));
            match super::traffic::versioned(inner, view, service, provable, &self.tried, pin, key) {
                Ok(replicas) => inner.pick(&*self.balancer, service, service, replicas.into_iter(), &self.tried, key),
                Err(e) => return Err(self.last_error.take().unwrap_or(e)),
            }
        };
        match picked {
            None => Err(self
                .last_error
                .take()
                .unwrap_or_else(|| inner.nobody_serves(view, service, self.fingerprint.as_deref(), self.spec))),
            Some((_, None)) => Ok(Picked::Local), // this node is the replica
            Some((member, Some(peer))) => Ok(Picked::Peer(member, peer)),
        }
    }

    /// What the method allows (once): and its own timeout, which a caller may only shorten.
    fn learn_policy(&mut self, member: &Member) {
        if self.policy.is_some() {
            return;
        }
        let policy = MethodPolicy::of(member, &self.call);
        if let Some(timeout) = policy.timeout {
            let own = crate::clock::now() + timeout;
            self.call.deadline = Some(self.call.deadline.map_or(own, |d| d.min(own)));
        }
        self.policy = Some(policy);
    }

    /// Sends the call to `peer`, whose certificate must prove the service; `None` when it
    /// could not be sent and another replica may be tried.
    async fn send(&mut self, member: &Member, peer: &Arc<Peer>) -> Result<Option<PendingCall>, Error> {
        self.tried.push(peer.addr);
        let sent = async {
            let main = peer.connection().await?;
            let conn = match self.policy {
                Some(policy) if policy.streams => peer.stream_connection(main.clone()).await,
                _ => main.clone(),
            };
            // The connection the call goes on must prove the service (a lane is a
            // handshake of its own).
            if let Some(e) = self.inner.unproven(member, &conn, &self.service) {
                return Err(e);
            }
            match conn.send_call(self.call.clone()) {
                // A lane closed as idle between its pick and this send: the call never
                // left, and the peer's connection takes it.
                Err(_) if !conn.same(&main) && conn.state() != crate::proto::ConnState::Open => {
                    main.send_call(self.call.clone())
                }
                sent => sent,
            }
        };
        match sent.await {
            Ok(pending) => {
                self.sent += 1;
                Ok(Some(pending))
            }
            Err(e) if may_retry(&e, Reached::NotSent, false) => {
                tracing::debug!(replica = %member.id, error = %e, "call not sent: trying another replica");
                self.last_error = Some(e);
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// One attempt's answer, or how far it got when it failed: hedged (the first attempt
    /// of a method that allows it, not routed by version), or ended at the attempt
    /// timeout for an idempotent call, to be retried elsewhere.
    async fn attempt(&mut self, pending: PendingCall, peer: Arc<Peer>) -> Answered {
        let (inner, policy) = (self.inner, self.policy.expect("learnt when picked"));
        if policy.hedge && self.sent == 1 && !self.versioned && inner.policies.settings.hedging {
            let fingerprint = self.fingerprint.as_deref();
            return super::hedge::hedged(inner, &self.call, fingerprint, pending, peer, &mut self.tried).await;
        }
        let limit = inner.policies.settings.attempt_timeout.filter(|_| policy.idempotent);
        let answer = match limit {
            Some(limit) if self.call.deadline.is_none_or(|d| crate::clock::now() + limit < d) => {
                match tokio::time::timeout(limit, pending.answer()).await {
                    Ok(answer) => answer.map_err(|e| (e, Reached::Sent)),
                    Err(_) => Err((Error::Timeout, Reached::TimedOut)),
                }
            }
            _ => pending.answer().await.map_err(|e| (e, Reached::Sent)),
        };
        (answer, peer)
    }

    /// The golden metrics of the edge this node → the replica's node, from `start`.
    fn record(&self, member: &Member, start: Instant) -> Option<RequestLog> {
        crate::metrics::calls::enabled().then(|| {
            let exists = || member.services.get(&*self.service).is_some_and(|s| s.has_method(&self.call.method));
            let series =
                crate::metrics::calls::outbound().series(&self.service, &self.call.method, &member.name, exists);
            RequestLog::outbound(series, start)
        })
    }

    /// The call's answer, or another attempt when failover allows it.
    fn next(&mut self, answer: Result<Reply, (Error, Reached)>, member: &Member, by: &Peer, start: Instant) -> Next {
        let idempotent = self.policy.is_some_and(|p| p.idempotent) && self.inner.policies.settings.retries;
        match answer {
            Ok(reply) => {
                by.observe(crate::clock::since(start));
                Next::Answer(Ok(reply))
            }
            Err((e, reached)) if may_retry(&e, reached, idempotent) => {
                tracing::debug!(replica = %member.id, error = %e, "attempt failed: trying another replica");
                self.last_error = Some(e);
                Next::Retry
            }
            Err((e, _)) => Next::Answer(Err(e)),
        }
    }

    /// Before retrying a call that may have reached a replica: a share of the retry
    /// budget, and a jittered pause that ends before the call's deadline.
    async fn before_retry(&mut self) -> Result<(), Error> {
        let (inner, call) = (self.inner, &self.call);
        let stats = &inner.policies.stats;
        let refused = if !inner.policies.budget.withdraw(crate::clock::now()) {
            Counters::add(&stats.retries_refused);
            tracing::debug!(service = %call.service, method = %call.method, "retry budget spent: not retrying");
            Some(Error::unavailable("retry budget spent"))
        } else {
            let pause = backoff(self.sent as u32, inner.traffic.random());
            if call.deadline.is_some_and(|d| crate::clock::now() + pause >= d) {
                Some(Error::Timeout)
            } else {
                tokio::time::sleep(pause).await;
                Counters::add(&stats.retries);
                None
            }
        };
        match refused {
            Some(e) => Err(self.last_error.take().unwrap_or(e)),
            None => Ok(()),
        }
    }
}

/// A stream answer takes the edge's log along: the call ends when the stream does.
fn recorded(edge: Option<RequestLog>, answer: Answered0) -> Answered0 {
    match (edge, answer) {
        (Some(edge), Ok(reply)) => Ok(edge.follow(reply)),
        (Some(edge), Err((e, reached))) => {
            edge.end_with(e.code());
            Err((e, reached))
        }
        (None, answer) => answer,
    }
}

/// An attempt's answer, or why and how far it failed.
type Answered0 = Result<Reply, (Error, Reached)>;
