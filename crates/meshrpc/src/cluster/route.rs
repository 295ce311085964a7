//! Where a call goes: the one replica picker (for mesh calls and proxied HTTP alike),
//! failover to another replica when [`super::failover::may_retry`] allows, and pings.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use super::{
    balance::{Balance, Candidate},
    failover::{judged, MAX_ATTEMPTS},
    outlier::Replicas,
    peers::{Peer, Pickable},
    resilience::Counters,
    traffic::Colocated,
    Cluster, Inner, Member, MemberState, View,
};
use crate::{
    call::{BoxFuture, Call, Dispatch, Reply},
    client::Channel,
    error::Error,
    server::Registry,
    spec::ServiceSpec,
    transport::Connection,
};

impl Inner {
    /// The version this node serves `service` at (`None`: it does not publish it).
    pub(super) fn local_version(&self, service: &str) -> Option<&str> {
        let spec_version = self.registry.spec_version(service)?;
        Some(self.service_version.as_deref().unwrap_or(spec_version))
    }

    pub(super) fn balancer(&self, service: &str) -> Arc<dyn Balance> {
        let mut map = self.balancers.lock().unwrap();
        match map.get(service) {
            Some(b) => b.clone(),
            None => {
                let b = self.policy.balancer();
                map.insert(service.to_owned(), b.clone());
                b
            }
        }
    }

    pub(super) async fn ping(
        &self,
        service: &str,
        fingerprint: Option<&str>,
        timeout: Duration,
    ) -> Result<Duration, Error> {
        let view = self.membership.view();
        let mut last = Error::UnknownService { service: service.to_owned() };
        // With subsetting, a replica of this caller's subset: a ping opens no connection
        // the caller would not keep (every caller pinging the first replica in the view
        // once loaded that one with a connection from each).
        for m in self.in_preference(service, view.replicas(service, fingerprint).collect()) {
            if m.is_self {
                return Ok(Duration::ZERO);
            }
            let peer = self.peers.get(m.addr.expect("replicas have addresses"));
            let attempt = async {
                let conn = peer.connection().await?;
                match self.unproven(m, &conn, service) {
                    Some(e) => Err(e),
                    None => conn.ping(timeout).await,
                }
            };
            match tokio::time::timeout(timeout, attempt).await {
                Ok(Ok(rtt)) => return Ok(rtt),
                Ok(Err(e)) => last = e,
                Err(_) => last = Error::Timeout,
            }
        }
        Err(last)
    }

    /// Picks a replica among `members`, skipping those already tried and peers that are
    /// down or draining; `None` for the local node. This is the one picker: RPC calls and
    /// proxied HTTP both go through it. A peer's certificate must prove `service`; its
    /// ejection is the one its answers judged as `judged_as` earned.
    pub(super) fn pick<'v>(
        &self,
        balancer: &dyn Balance,
        service: &str,
        judged_as: &str,
        mut members: impl Iterator<Item = &'v Member>,
        tried: &[SocketAddr],
        key: Option<&str>,
    ) -> Option<(&'v Member, Option<Arc<Peer>>)> {
        let now = crate::clock::now();
        let with_ejection = self.policies.settings.ejection.is_some();
        // Ordered by the caller's preference only when subsetting is on: no allocation
        // on the common path.
        let mut ordered;
        // A call with a sticky key picks among every replica: its key must land on the
        // same replica whichever caller sends it.
        let subset = if key.is_some() { 0 } else { self.subset };
        let members: &mut dyn Iterator<Item = &'v Member> = match subset {
            0 => &mut members,
            _ => {
                ordered = self.in_preference(judged_as, members.collect()).into_iter();
                &mut ordered
            }
        };
        let mut replicas: Vec<(&Member, Option<Arc<Peer>>, Pickable)> = members
            .filter_map(|m| Some((m, m.addr?)))
            .filter(|(_, addr)| !tried.contains(addr))
            .map(|(m, addr)| (m, (!m.is_self).then(|| self.peers.get(addr))))
            // First of all, the certificate must prove the service (mutual TLS); then the
            // peer must be up, and is marked if ejected or recovering.
            .filter_map(|(m, p)| match &p {
                None => Some((m, p, Pickable { ejected: false, recovering: false })),
                Some(peer) if peer.may_serve(service) => {
                    let mut state = peer.pickable(judged_as, now)?;
                    state.ejected &= with_ejection;
                    Some((m, p, state))
                }
                Some(_) => None,
            })
            .collect();
        // A peer whose connection broke is reconnected in the background, not by a call,
        // unless nobody else is left.
        if replicas.iter().any(|(_, _, s)| !s.recovering) {
            replicas.retain(|(_, p, s)| {
                if let (Some(peer), true) = (p, s.recovering) {
                    peer.probe();
                }
                !s.recovering
            });
        }
        // Outlier ejection, unless it would leave nobody.
        if replicas.iter().any(|(_, _, s)| !s.ejected) {
            replicas.retain(|(_, _, s)| !s.ejected);
        }
        // This caller's subset: the first of them in its order of preference, the next
        // ones standing in for those dropped above.
        // This node's own replica costs no connection: it is never cut.
        if subset > 0 {
            let mut remote = 0;
            replicas.retain(|(m, _, _)| {
                remote += usize::from(!m.is_self);
                m.is_self || remote <= subset
            });
        }
        // This node's own replica has no connection to measure: it counts as loaded as the
        // others on average, so the load-aware policies give it its share, not every call.
        let mut candidates: Vec<Candidate<'_>> = replicas
            .iter()
            .map(|(m, p, _)| Candidate { id: &m.id, load: p.as_ref().map_or(f64::NAN, |p| p.load()) })
            .collect();
        if let Some(local) = candidates.iter().position(|c| c.load.is_nan()) {
            let (sum, n) =
                candidates.iter().filter(|c| !c.load.is_nan()).fold((0.0, 0), |(s, n), c| (s + c.load, n + 1));
            candidates[local].load = if n == 0 { 0.0 } else { sum / f64::from(n) };
        }
        let i = balancer.pick(&candidates, key)?;
        replicas.into_iter().nth(i).map(|(m, p, _)| (m, p))
    }

    /// `members` in this caller's order of preference: its subset first (see
    /// [`subset`](super::subset)), when subsetting is on and they are more than it.
    pub(super) fn in_preference<'v>(&self, called: &str, members: Vec<&'v Member>) -> Vec<&'v Member> {
        if self.subset == 0 {
            return members;
        }
        // The caller's number among the instances of its own service (its name), both
        // cut from who was seen lately (`subset::Seen`).
        let view = self.membership.view();
        let Some(me) = view.members.iter().find(|m| m.is_self) else { return members };
        let callers = view.members.iter().filter(|m| m.name == me.name).map(|m| m.id.as_str());
        let ids: Vec<&str> = members.iter().map(|m| m.id.as_str()).collect();
        let order = self.subset_seen.lock().unwrap().preference(
            called,
            (&me.name, &me.id),
            callers,
            &ids,
            self.subset,
            crate::clock::now(),
        );
        order.into_iter().map(|i| members[i]).collect()
    }

    /// Sends `call` to a replica of its service and answers it: the steps are in
    /// [`Route`](super::call::Route).
    pub(super) async fn call(
        self: Arc<Self>,
        call: Call,
        fingerprint: Option<String>,
        spec: Option<&'static ServiceSpec>,
    ) -> Result<Reply, Error> {
        super::call::Route::new(&self, call, fingerprint, spec).run().await
    }

    /// Records what an answer says about the replica that gave it, and ejects the replica
    /// from picking when its answers call for it (never the last one, nor more than the
    /// allowed share of the service's replicas).
    pub(super) fn judge(&self, of: Replicas<'_>, view: &View, peer: &Peer, service: &str, outcome: Result<(), &Error>) {
        let Some(settings) = &self.policies.settings.ejection else { return };
        let Some(ok) = judged(outcome) else { return };
        let now = crate::clock::now();
        let Some(accrual) = peer.accrual(service, |a| {
            a.record(ok);
            (!ok).then(|| a.clone())
        }) else {
            return;
        };
        let replicas: Vec<&Member> = match of {
            Replicas::Mesh => view.replicas(service, None).collect(),
            Replicas::Http(name) => view.http_replicas(name).collect(),
        };
        let others: Vec<Arc<Peer>> = replicas
            .iter()
            .filter(|m| !m.is_self)
            .filter_map(|m| m.addr)
            .filter(|addr| *addr != peer.addr)
            .map(|addr| self.peers.get(addr))
            .collect();
        let rates: Vec<f64> = others.iter().filter_map(|p| p.accrual(service, |a| a.success_rate(settings))).collect();
        let peers_rate = (!rates.is_empty()).then(|| rates.iter().sum::<f64>() / rates.len() as f64);
        let Some(why) = accrual.should_eject(settings, peers_rate, now) else { return };
        let total = replicas.len();
        let ejected = others.iter().filter(|p| p.ejected(service, now)).count();
        if ejected + 1 >= total || (ejected + 1) as f64 > settings.max_share * total as f64 {
            tracing::debug!(peer = %peer.addr, service, %why, ejected, total, "not ejecting: too few replicas left");
            return;
        }
        let time = peer.accrual(service, |a| a.eject(settings, now));
        Counters::add(&self.policies.stats.ejections);
        tracing::warn!(peer = %peer.addr, service, %why, ?time, "replica ejected from picking");
    }

    /// The error for a replica whose certificate does not carry `service` (reported);
    /// `None` when it does, or without TLS.
    pub(super) fn unproven(&self, member: &Member, conn: &Connection, service: &str) -> Option<Error> {
        let identity = conn.peer_identity()?;
        if identity.proves(service) {
            return None;
        }
        #[cfg(feature = "tls")]
        self.unproven.report(&member.id, &identity.to_string(), service);
        Some(Error::tls(format!("replica {} ({identity}) has no certificate for `{service}`: not called", member.id)))
    }

    pub(super) fn nobody_serves(
        &self,
        view: &View,
        service: &str,
        fingerprint: Option<&str>,
        spec: Option<&ServiceSpec>,
    ) -> Error {
        if !view.knows(service) {
            return Error::UnknownService { service: service.to_owned() };
        }
        // Every replica refused this node's connection as overloaded (at its connection
        // cap): say so, as the caller of a replica past its cap is told.
        let refusals: Vec<Option<Error>> = view
            .replicas(service, fingerprint)
            .filter(|m| !m.is_self)
            .filter_map(|m| m.addr)
            .map(|addr| self.peers.refused(addr))
            .collect();
        let overloaded: Vec<&str> = refusals
            .iter()
            .filter_map(|e| match e {
                Some(Error::Overloaded { message }) => Some(message.as_str()),
                _ => None,
            })
            .collect();
        if !refusals.is_empty() && overloaded.len() == refusals.len() {
            let message = format!("no replica of `{service}` takes a connection: {}", overloaded[0]);
            return Error::Overloaded { message };
        }
        // Members that publish it at our contract but take no calls (yet, or any more), and
        // members that publish another contract.
        let publishing = view.members.iter().filter_map(|m| Some((m, m.services.get(service)?)));
        let (compatible, incompatible): (Vec<_>, Vec<_>) =
            publishing.partition(|(_, s)| fingerprint.is_none_or(|want| want == s.fingerprint));
        let idle = |state: MemberState| compatible.iter().filter(|(m, _)| m.state == state).count();
        let (starting, draining) = (idle(MemberState::Starting), idle(MemberState::Draining));
        Error::unavailable(if view.replicas(service, fingerprint).next().is_some() {
            format!("no reachable replica of `{service}`")
        } else if starting + draining > 0 {
            format!(
                "no replica of `{service}` takes calls: {starting} starting (a node takes calls once it serves: \
                 `Cluster::serve`, `serve_until_signal`), {draining} draining"
            )
        } else if !incompatible.is_empty() {
            match spec.and_then(|spec| super::contract::incompatibility(view, spec)) {
                Some(why) => format!("no compatible replica of `{service}`: {why}"),
                None => format!(
                    "no compatible replica of `{service}`: {} serve another version of its methods",
                    incompatible.len()
                ),
            }
        } else {
            format!("no reachable replica of `{service}`")
        })
    }
}

/// The cluster's balanced, failover-aware dispatch.
pub(super) struct ClusterDispatch {
    pub(super) inner: Arc<Inner>,
    pub(super) fingerprint: Option<String>,
    /// The contract the channel's client was built from (its errors name a difference).
    pub(super) spec: Option<&'static ServiceSpec>,
}

impl Dispatch for ClusterDispatch {
    fn dispatch(&self, call: Call) -> BoxFuture<Result<Reply, Error>> {
        Box::pin(self.inner.clone().call(call, self.fingerprint.clone(), self.spec))
    }

    fn colocated(&self, spec: &'static ServiceSpec) -> Option<Arc<dyn std::any::Any + Send + Sync>> {
        // Server layers must see every call to this node: with them, no shortcut.
        if self.inner.colocated != Colocated::Prefer || self.inner.layered {
            return None;
        }
        self.inner.registry.local(spec)
    }

    fn colocated_now(&self, service: &str) -> bool {
        let inner = &self.inner;
        if !inner.membership.serving() {
            return false;
        }
        match inner.colocated {
            Colocated::Off => false,
            // A request pinned to a version stays in process only where this node runs
            // that version; an unpinned one only when no rule would choose for it.
            Colocated::Prefer => match crate::context::CallContext::current_version() {
                Some(pinned) => inner.local_version(service).is_some_and(|v| *v == *pinned),
                None => !inner.traffic.split(service) && !inner.traffic.app_split(),
            },
            // The picker decides for every call, and gives this node its share.
            Colocated::Share => false,
        }
    }

    fn has_method(&self, service: &str, method: &str) -> Option<bool> {
        Some(self.inner.membership.view().has_method(service, method))
    }

    fn entry_version(&self, service: &str, key: Option<&str>) -> Option<Arc<str>> {
        if !self.inner.traffic.app_split() {
            return None;
        }
        let view = self.inner.membership.view();
        let replicas = view.replicas(service, self.fingerprint.as_deref());
        super::traffic::entry_version(&self.inner, &view, service, replicas, key)
    }
}

/// HTTP on a node: its own services locally, anything else through the mesh.
pub(super) struct PreferLocal {
    pub(super) registry: Arc<Registry>,
    /// The version this node serves its services at, when it names one.
    pub(super) service_version: Option<String>,
    pub(super) local: Arc<dyn Dispatch>,
    pub(super) mesh: Channel,
}

impl PreferLocal {
    /// Whether this node answers `call` itself: it publishes the service, at the version
    /// the call is pinned to if it is.
    fn here(&self, call: &Call) -> bool {
        let Some(spec_version) = self.registry.spec_version(&call.service) else { return false };
        let local = self.service_version.as_deref().unwrap_or(spec_version);
        call.version.as_deref().is_none_or(|pinned| pinned == local)
    }
}

impl Dispatch for PreferLocal {
    fn dispatch(&self, call: Call) -> BoxFuture<Result<Reply, Error>> {
        if self.here(&call) {
            self.local.dispatch(call)
        } else {
            self.mesh.dispatch(call)
        }
    }

    fn entry_version(&self, service: &str, key: Option<&str>) -> Option<Arc<str>> {
        self.mesh.entry_version(service, key)
    }

    fn has_method(&self, service: &str, method: &str) -> Option<bool> {
        match self.registry.serves(service) {
            true => self.local.has_method(service, method),
            false => self.mesh.has_method(service, method),
        }
    }
}

/// A replica picked to answer a proxied HTTP request; tell it how the request went.
pub struct HttpReplica {
    /// The replica's address (mesh port, where its HTTP routers answer).
    pub addr: SocketAddr,
    peer: Arc<Peer>,
    start: Instant,
    /// The router's name, and the cluster that judges its answers.
    name: String,
    inner: Arc<Inner>,
}

/// What proxied HTTP is balanced and judged under: not the router's name, which a service
/// of the same name uses for its RPC calls.
/// What a published HTTP router is called among the names a node calls.
pub(super) const HTTP_KEY_PREFIX: &str = "http:";

pub(super) fn http_key(name: &str) -> String {
    format!("{HTTP_KEY_PREFIX}{name}")
}

impl std::fmt::Debug for HttpReplica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpReplica").field("addr", &self.addr).finish_non_exhaustive()
    }
}

impl HttpReplica {
    /// The replica answered with `status`: its latency feeds the load-aware policies, and
    /// its answers outlier ejection, as for mesh calls (a 5xx is a failure; past the
    /// policy's threshold the replica is not picked for a while).
    pub fn answered(&self, status: u16) {
        self.peer.observe(crate::clock::since(self.start));
        let failed = match status {
            // Overloaded says nothing about the replica's health, as for mesh calls.
            503 => Some(Error::Overloaded { message: "HTTP 503".into() }),
            500.. => Some(Error::unavailable(format!("HTTP {status}"))),
            _ => None,
        };
        self.judge(failed.as_ref().map_or(Ok(()), Err));
    }

    /// The replica did not answer in time: a failure, for outlier ejection.
    pub fn timed_out(&self) {
        self.judge(Err(&Error::Timeout));
    }

    /// The replica answered well.
    #[deprecated(note = "use `answered(status)`, which also feeds outlier ejection")]
    pub fn succeeded(&self) {
        self.answered(200);
    }

    fn judge(&self, outcome: Result<(), &Error>) {
        let view = self.inner.membership.view();
        self.inner.judge(Replicas::Http(&self.name), &view, &self.peer, &http_key(&self.name), outcome);
    }

    /// The replica could not be reached: it is not picked again until its backoff passes,
    /// as for mesh calls.
    pub fn failed(&self) {
        self.peer.mark_down();
    }
}

impl Cluster {
    /// Pings a member over this node's connection to it (mutual TLS when on), and checks
    /// its certificate against what it gossips: services it may not serve are reported
    /// ([`unproven_replicas`](Cluster::unproven_replicas)).
    pub async fn ping_member(&self, member: &Member, timeout: Duration) -> Result<Duration, Error> {
        let addr = member.addr.ok_or_else(|| Error::unavailable(format!("{} has no mesh address", member.id)))?;
        let attempt = async {
            let conn = self.inner.peers.get(addr).connection().await?;
            for service in member.services.keys().chain(member.http.iter()) {
                let _ = self.inner.unproven(member, &conn, service);
            }
            conn.ping(timeout).await
        };
        tokio::time::timeout(timeout, attempt).await.map_err(|_| Error::Timeout)?
    }

    /// Services members advertise whose method list this node could not fetch yet, each
    /// with the last reason (a node refusing connections, say). Until it has a service's
    /// list, a node does not call that service on those members (docs/wire.md, "Gossip").
    pub fn unfetched_method_lists(&self) -> Vec<(String, String)> {
        self.inner.membership.book.unfetched()
    }

    /// Where a member's resilience policies stand, asked over this node's connection to
    /// it (`meshrpc.policies`; nodes of 0.1.0 gossiped them: [`Member::policies`]).
    pub async fn member_policies(&self, member: &Member, timeout: Duration) -> Result<super::Policies, Error> {
        if let Some(gossiped) = &member.policies {
            return Ok(gossiped.clone());
        }
        let addr = member.addr.ok_or_else(|| Error::unavailable(format!("{} has no mesh address", member.id)))?;
        let mut call = crate::call::Call::new(crate::spec::NODE_SERVICE, "policies", bytes::Bytes::from_static(b"{}"));
        call.deadline = Some(crate::clock::now() + timeout);
        let codec = call.codec;
        let attempt = async {
            match self.inner.peers.once(addr).await?.send_call(call)?.answer().await? {
                crate::call::Reply::Ok(body) => codec.decode(&body),
                _ => Err(Error::protocol("`meshrpc.policies` answered with something else than policies")),
            }
        };
        tokio::time::timeout(timeout, attempt).await.map_err(|_| Error::Timeout)?
    }

    /// Picks a replica publishing the HTTP router `name` through the same picker as mesh
    /// calls (backoff of failed peers, draining, the balancing policy, sticky `key`),
    /// skipping the addresses in `tried`. The replica is known reachable: its mesh
    /// connection is up (a replica that cannot be reached is marked down, as for calls,
    /// and another one is picked), so a request body is never spent on a dead replica.
    pub async fn pick_http(&self, name: &str, key: Option<&str>, tried: &[SocketAddr]) -> Result<HttpReplica, Error> {
        let inner = &self.inner;
        // Balanced and judged apart from a service of the same name.
        let judged_as = http_key(name);
        let balancer = inner.balancer(&judged_as);
        let mut tried = tried.to_vec();
        let mut last_error = None;
        for _ in 0..MAX_ATTEMPTS {
            let view = inner.membership.view();
            let members = view.http_replicas(name);
            let Some((member, peer)) = inner.pick(&*balancer, name, &judged_as, members, &tried, key) else { break };
            let addr = member.addr.expect("picked members have addresses");
            let peer = peer.unwrap_or_else(|| inner.peers.get(addr));
            if !member.is_self {
                let connected = peer.connection().await;
                let proven = connected.and_then(|conn| inner.unproven(member, &conn, name).map_or(Ok(()), Err));
                if let Err(e) = proven {
                    tracing::debug!(replica = %member.id, error = %e, "HTTP replica unreachable: picking another");
                    tried.push(addr);
                    last_error = Some(e);
                    continue;
                }
            }
            return Ok(HttpReplica {
                addr,
                peer,
                start: crate::clock::now(),
                name: name.to_owned(),
                inner: inner.clone(),
            });
        }
        Err(last_error.unwrap_or_else(|| Error::unavailable(format!("no reachable replica serves HTTP for `{name}`"))))
    }
}
