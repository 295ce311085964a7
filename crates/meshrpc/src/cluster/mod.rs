//! A cluster node (feature `cluster`): gossip membership, service discovery, one replica
//! picker for calls and proxied HTTP, failover, graceful drain. Built on the direct
//! [`Server`] and [`Connection`](crate::transport::Connection).

mod admin;
mod balance;
mod builder;
mod call;
#[cfg(feature = "tls")]
pub(crate) mod connector;
mod contract;
pub(crate) mod failover;
pub(crate) mod gossip;
mod grpc;
mod hedge;
mod metrics;
mod outlier;
mod peers;
mod remote;
mod resilience;
mod retry;
mod route;
#[cfg(feature = "tls")]
mod security;
mod signal;
mod subset;
mod traffic;

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde::Serialize;

pub use balance::{Balance, Candidate, LeastLoaded, Policy, RoundRobin, Sticky};
pub use builder::ClusterBuilder;
pub use gossip::rules::RejectedRule;
pub use gossip::{Advertised, AdvertisedMethod, GossipConfig, Member, MemberState, Policies, Split, View};
pub use grpc::{GrpcChannel, GrpcResponse};
pub use metrics::{edges, method_rates, Edge, MeshSnapshot, MethodRates};
pub use outlier::Ejection;
pub use resilience::{Resilience, ResilienceStats};
pub use retry::RetryBudget;
pub use route::HttpReplica;
#[cfg(feature = "tls")]
pub use security::{UnprovenReplica, EXPIRY_WARNING};
pub use signal::wait_for_signal;
pub use traffic::{Colocated, MirrorStats, APP_SPLIT};

use self::{
    gossip::Membership,
    peers::Peers,
    route::{ClusterDispatch, PreferLocal},
};
use crate::{
    call::Dispatch, client::Channel, error::Error, http::HttpMount, http::Published, server::Registry, server::Server,
    server::ServerConfig, server::Service, server::ShutdownHandle, spec::ServiceSpec,
};

/// Mesh port used when a seed names no port (as in Go meshRPC).
pub const DEFAULT_PORT: u16 = 11999;

/// A node of the mesh. Cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    mesh_addr: Option<SocketAddr>,
    registry: Arc<Registry>,
    /// The registry behind this node's server layers: where calls to itself go.
    local: Arc<dyn Dispatch>,
    /// The routers published on this node's port (`None` on client-only nodes).
    http: Option<Arc<Published>>,
    membership: Membership,
    /// Who may write cluster rules, and this node's signature on its own.
    rules: Arc<gossip::rules::RuleGate>,
    /// The seeds this node was given (`host:port`): the nodes its caller-side requests
    /// (rules it hands over) go to first.
    seeds: Vec<String>,
    peers: Peers,
    policy: Policy,
    balancers: Mutex<HashMap<String, Arc<dyn Balance>>>,
    server: Mutex<Option<Server>>,
    shutdown: Option<ShutdownHandle>,
    drain_grace: Duration,
    started: Instant,
    /// The admin port, bound at start and served with the node.
    admin: Mutex<Option<admin::Admin>>,
    admin_addr: Option<SocketAddr>,
    #[cfg(feature = "tls")]
    tls: Option<crate::transport::TlsConfig>,
    #[cfg(feature = "tls")]
    access: Option<Arc<crate::access::Access>>,
    #[cfg(feature = "tls")]
    unproven: security::Unproven,
    /// The version this node advertises for every service it publishes (`None`: each
    /// service's own, from its spec).
    service_version: Option<String>,
    traffic: traffic::Traffic,
    /// Calls to services this node publishes: in process or not.
    colocated: Colocated,
    /// The node's server has layers (which must see every call: no colocated path).
    layered: bool,
    /// Retries, ejection and hedging of this node's calls.
    policies: resilience::Policies,
    /// The node's concurrency limit (`None` on client-only nodes).
    limiter: Option<Arc<crate::server::Limiter>>,
    hedging: hedge::Hedging,
    /// Replicas of a service this node keeps to (0: all of them; `ClusterBuilder::subset`).
    subset: usize,
    /// Who the subsets are cut from (callers and replicas seen lately).
    subset_seen: std::sync::Mutex<subset::Seen>,
}

/// A service as the cluster sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceStatus {
    /// The service name.
    pub name: String,
    /// Fingerprint of the method set → node ids serving it (more than one: replicas
    /// built from different versions of the trait, which do not call each other).
    pub fingerprints: std::collections::BTreeMap<String, Vec<String>>,
    /// Version of the service → node ids running it.
    pub versions: std::collections::BTreeMap<String, Vec<String>>,
    /// The split rule in force, if any.
    pub split: Option<Split>,
    /// The mirror rule in force, if any (`(version, percent)`).
    pub mirror: Option<Split>,
}

/// The application versions a cluster runs ([`Cluster::app_versions`]).
#[derive(Debug, Clone, serde::Serialize)]
pub struct AppVersions {
    /// Version → ids of the serving members running it.
    pub versions: std::collections::BTreeMap<String, Vec<String>>,
    /// The application split in force, if any.
    pub split: Option<Split>,
    /// Version → percent of new requests it gets under the split (versions with a
    /// member only; empty without a split).
    pub shares: std::collections::BTreeMap<String, f64>,
}

impl Cluster {
    /// Starts configuring a node named `name`.
    pub fn builder(name: impl Into<String>) -> ClusterBuilder {
        ClusterBuilder {
            name: name.into(),
            tag: "meshrpc".into(),
            seeds: Vec::new(),
            listen: None,
            advertise: None,
            policy: Policy::default(),
            gossip: GossipConfig::default(),
            server: ServerConfig::default(),
            drain_grace: Duration::from_millis(500),
            layers: Vec::new(),
            admin: None,
            service_version: None,
            colocated: Colocated::default(),
            resilience: Resilience::default(),
            subset: 0,
            network: None,
            #[cfg(feature = "tls")]
            credentials: Default::default(),
        }
    }

    /// This node's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The admin port's address, if it has one ([`ClusterBuilder::admin_addr`]).
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.inner.admin_addr
    }

    /// Resolves once the node was asked to shut down.
    pub(crate) async fn stopped(&self) {
        match &self.inner.shutdown {
            Some(handle) => handle.requested().await,
            None => std::future::pending().await,
        }
    }

    /// The mesh address peers reach this node by (`None` for client-only nodes).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.inner.mesh_addr
    }

    /// Publishes a service on this node; the cluster learns of it by gossip, with its
    /// version ([`ClusterBuilder::service_version`], else the spec's).
    pub fn publish(&self, service: impl Service) -> &Self {
        let spec = service.spec();
        self.inner.registry.publish(Arc::new(service));
        let inner = self.inner.clone();
        let version = self.service_version(spec).to_owned();
        tokio::spawn(async move { inner.membership.advertise_service(spec, &version).await });
        self
    }

    /// The version this node advertises for `spec`'s service.
    pub fn service_version<'a>(&'a self, spec: &'a ServiceSpec) -> &'a str {
        self.inner.service_version.as_deref().unwrap_or(spec.version)
    }

    /// The application version set on the builder, if one was (not a spec's own).
    pub(crate) fn version_override(&self) -> Option<&str> {
        self.inner.service_version.as_deref()
    }

    /// Publishes a plain HTTP router, served under `/{name}/…` on this node and through
    /// the gateway, before or while serving. On a client-only node (no port) it is refused.
    pub fn publish_http(&self, name: &str, router: axum::Router) -> Result<&Self, Error> {
        let Some(http) = &self.inner.http else {
            return Err(Error::bad_request(format!("`{name}`: a client-only node has no port to serve HTTP on")));
        };
        http.publish(name, router);
        let (inner, name) = (self.inner.clone(), name.to_owned());
        tokio::spawn(async move { inner.membership.advertise_http(&name).await });
        Ok(self)
    }

    /// A channel to `spec`'s service, balanced over its compatible replicas. Pass it to
    /// a generated client: `GreeterClient::new(cluster.client(GreeterClient::SPEC))`.
    pub fn client(&self, spec: &'static ServiceSpec) -> Channel {
        Channel::new(ClusterDispatch {
            inner: self.inner.clone(),
            fingerprint: Some(spec.fingerprint()),
            spec: Some(spec),
        })
    }

    /// A channel to any service by name, without a version check (gateway, CLI).
    pub fn channel(&self) -> Channel {
        Channel::new(ClusterDispatch { inner: self.inner.clone(), fingerprint: None, spec: None })
    }

    /// The live members.
    pub fn members(&self) -> Vec<Member> {
        self.inner.membership.view().members.clone()
    }

    /// The latest view of the cluster.
    pub fn view(&self) -> Arc<View> {
        self.inner.membership.view()
    }

    /// Waits until the view satisfies `ready` (checked now and on every change), and
    /// returns that view.
    pub async fn wait_view(&self, ready: impl Fn(&View) -> bool) -> Arc<View> {
        let mut watch = self.inner.membership.watch();
        let seen = watch.wait_for(|v| ready(v)).await.map(|v| v.clone());
        seen.unwrap_or_else(|_| self.view())
    }

    /// Published services across the cluster, with the replicas of each method set.
    pub fn services(&self) -> Vec<ServiceStatus> {
        let view = self.inner.membership.view();
        let mut out: std::collections::BTreeMap<String, ServiceStatus> = Default::default();
        for m in view.members.iter().filter(|m| m.state == MemberState::Serving) {
            for (name, adv) in &m.services {
                let s = out.entry(name.clone()).or_insert_with(|| ServiceStatus {
                    name: name.clone(),
                    fingerprints: Default::default(),
                    versions: Default::default(),
                    split: view.split(name).cloned(),
                    mirror: view.mirror(name).cloned(),
                });
                s.fingerprints.entry(adv.fingerprint.clone()).or_default().push(m.id.clone());
                s.versions.entry(adv.version.clone()).or_default().push(m.id.clone());
            }
        }
        out.into_values().collect()
    }

    /// The application versions running (a node's is the version of the services it
    /// serves; one serving several versions counts under each) and the application split
    /// in force ([`APP_SPLIT`]), with each version's share of new requests.
    pub fn app_versions(&self) -> AppVersions {
        let view = self.inner.membership.view();
        let mut versions: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for m in view.members.iter().filter(|m| m.state == MemberState::Serving) {
            let mut own: Vec<&str> = m.services.values().map(|s| s.version.as_str()).collect();
            own.sort_unstable();
            own.dedup();
            for version in own {
                versions.entry(version.to_owned()).or_default().push(m.id.clone());
            }
        }
        let split = view.split(APP_SPLIT).cloned();
        let shares = match &split {
            Some(rule) => {
                let live: Vec<(&String, u32)> = rule
                    .weights
                    .iter()
                    .filter(|(v, w)| *w > 0 && versions.contains_key(v))
                    .map(|(v, w)| (v, *w))
                    .collect();
                let total: u32 = live.iter().map(|(_, w)| w).sum();
                live.into_iter().map(|(v, w)| (v.clone(), f64::from(w) * 100.0 / f64::from(total.max(1)))).collect()
            }
            None => Default::default(),
        };
        AppVersions { versions, split, shares }
    }

    /// What the resilience policies did on this node's calls, and where they stand:
    /// retries, hedges, ejected replicas, the retry budget left.
    pub fn resilience_stats(&self) -> ResilienceStats {
        let inner = &self.inner;
        let now = crate::clock::now();
        let counters = &inner.policies.stats;
        let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        let view = inner.membership.view();
        let mut ejected = Vec::new();
        for peer in inner.peers.all() {
            let id = view
                .members
                .iter()
                .find(|m| m.addr == Some(peer.addr))
                .map_or_else(|| peer.addr.to_string(), |m| m.id.clone());
            ejected.extend(peer.ejections(now).into_iter().map(|service| (id.clone(), service)));
        }
        ejected.sort();
        ResilienceStats {
            retries: load(&counters.retries),
            retries_refused: load(&counters.retries_refused),
            hedges: load(&counters.hedges),
            hedge_wins: load(&counters.hedge_wins),
            ejections: load(&counters.ejections),
            ejected,
            budget_left: inner.policies.budget.left(now),
        }
    }

    /// Members of the view by state, and what gossip cost, for `/metrics`.
    pub(crate) fn member_figures(&self) -> Vec<crate::metrics::Figure> {
        use crate::metrics::Figure;
        let view = self.inner.membership.view();
        let count = |state| view.members.iter().filter(|m| m.state == state).count() as u64;
        let help = "Members of the cluster this node sees, by state";
        let mut figures = vec![
            Figure::gauge("meshrpc_members", help, count(MemberState::Starting)).with_label("state", "starting"),
            Figure::gauge("meshrpc_members", help, count(MemberState::Serving)).with_label("state", "serving"),
            Figure::gauge("meshrpc_members", help, count(MemberState::Draining)).with_label("state", "draining"),
        ];
        figures.extend(self.inner.membership.cost().figures());
        figures.push(Figure::counter(
            "meshrpc_rules_rejected",
            "Split and mirror rules refused: unsigned, badly signed or written by an identity not allowed to",
            self.inner.rules.rejected(),
        ));
        #[cfg(feature = "tls")]
        let unproven = self.inner.unproven.count();
        #[cfg(not(feature = "tls"))]
        let unproven = 0;
        figures.push(Figure::counter(
            "meshrpc_unproven_replicas",
            "Replicas seen gossiping a service their certificate does not carry",
            unproven,
        ));
        figures.push(Figure::gauge(
            "meshrpc_gossip_state_bytes",
            "Bytes of keys and values this node gossips about itself",
            self.inner.membership.own_state_bytes(),
        ));
        figures.push(Figure::gauge(
            "meshrpc_method_lists",
            "Method lists this node keeps: its own services' and those it fetched by key",
            self.inner.membership.book.len() as u64,
        ));
        figures.push(Figure::counter(
            "meshrpc_method_lists_fetched",
            "Method lists fetched over the mesh by key (once per distinct list, not per member)",
            self.inner.membership.book.fetched(),
        ));
        figures
    }

    /// Where this node's resilience policies stand: its concurrency limit and what its
    /// calls eject (what it gossips for `meshrpc status`).
    pub fn policies(&self) -> Policies {
        let stats = self.resilience_stats();
        let (limit, running, overloaded) = self
            .inner
            .limiter
            .as_ref()
            .map_or((None, 0, 0), |l| (l.limit().map(|l| l as u64), l.in_flight() as u64, l.refused()));
        Policies {
            concurrency_limit: limit,
            running,
            overloaded,
            retry_budget_left: stats.budget_left,
            ejected: stats.ejected.into_iter().map(|(node, service)| format!("{node}/{service}")).collect(),
        }
    }

    /// Last keepalive round trip to a peer, if connected.
    pub fn peer_latency(&self, addr: SocketAddr) -> Option<Duration> {
        self.inner.peers.all().into_iter().find(|p| p.addr == addr)?.latency()
    }

    /// How long this node has been up.
    pub fn uptime(&self) -> Duration {
        crate::clock::since(self.inner.started)
    }

    /// Pings one replica of `service`; returns the round trip.
    pub async fn ping(&self, service: &str, timeout: Duration) -> Result<Duration, Error> {
        self.inner.ping(service, None, timeout).await
    }

    /// Waits until every listed service has a compatible replica that answers a ping.
    /// The error names the services still missing at the deadline.
    pub async fn wait_for(&self, specs: &[&'static ServiceSpec], timeout: Duration) -> Result<(), Error> {
        let deadline = crate::clock::now() + timeout;
        let mut missing: Vec<&ServiceSpec> = specs.to_vec();
        let mut view = self.inner.membership.watch();
        loop {
            let mut still = Vec::new();
            for spec in missing {
                let fp = spec.fingerprint();
                let left = deadline.saturating_duration_since(crate::clock::now()).min(Duration::from_secs(1));
                if self.inner.ping(spec.name, Some(&fp), left).await.is_err() {
                    still.push(spec);
                }
            }
            missing = still;
            if missing.is_empty() {
                return Ok(());
            }
            if crate::clock::now() >= deadline {
                let names: Vec<_> = missing.iter().map(|s| s.name).collect();
                let unfetched: Vec<String> = self
                    .unfetched_method_lists()
                    .into_iter()
                    .filter(|(service, _)| names.contains(&service.as_str()))
                    .map(|(service, why)| {
                        format!("; `{service}` is advertised, but its method list could not be fetched: {why}")
                    })
                    .collect();
                // A service served only by another version of its contract: say how.
                let view = self.inner.membership.view();
                let incompatible: Vec<String> = missing
                    .iter()
                    .filter_map(|spec| Some(format!("; `{}`: {}", spec.name, contract::incompatibility(&view, spec)?)))
                    .collect();
                return Err(Error::unavailable(format!(
                    "services not reachable within {timeout:?}: {}{}{}",
                    names.join(", "),
                    unfetched.concat(),
                    incompatible.concat()
                )));
            }
            // Try again when the view changes, or soon anyway (a replica may come back).
            let _ = tokio::time::timeout(Duration::from_millis(200), view.changed()).await;
        }
    }

    /// Serves published services until [`shutdown`](Self::shutdown), then drains:
    /// announces it, lets callers move away, finishes in-flight calls, leaves.
    pub async fn serve(&self) -> Result<(), Error> {
        let server = self.inner.server.lock().unwrap().take();
        let (Some(server), Some(http)) = (server, &self.inner.http) else {
            return Err(Error::internal("serve called twice or on a client-only node"));
        };
        // `/metrics` on the node's port and its admin port: the server's figures, then
        // what the cluster's policies did.
        let figures: crate::metrics::Figures = {
            let (server_figures, inner) = (server.figures(), Arc::downgrade(&self.inner));
            Arc::new(move || {
                let mut figures = server_figures();
                figures.extend(traffic::MirrorStats::figures());
                if let Some(inner) = inner.upgrade() {
                    let cluster = Cluster { inner };
                    figures.extend(cluster.resilience_stats().figures());
                    figures.extend(cluster.member_figures());
                }
                figures
            })
        };
        let server = server.mount_http(HttpMount {
            // Plain HTTP on any node reaches any service: local first, else the mesh.
            dispatch: Arc::new(PreferLocal {
                registry: self.inner.registry.clone(),
                service_version: self.inner.service_version.clone(),
                local: self.inner.local.clone(),
                mesh: self.channel(),
            }),
            figures: figures.clone(),
            // The OpenAPI document of the cluster on the node's port too (as on its admin port).
            routes: axum::Router::new().route(
                "/openapi.json",
                axum::routing::get({
                    let cluster = self.clone();
                    move || {
                        let cluster = cluster.clone();
                        async move { axum::Json(cluster.openapi(Duration::from_secs(2)).await) }
                    }
                }),
            ),
        });
        let admin = self.inner.admin.lock().unwrap().take();
        if let Some(admin) = admin {
            tokio::spawn(admin.serve(self.clone(), figures));
        }
        for spec in self.inner.registry.specs() {
            self.inner.membership.advertise_service(spec, self.service_version(spec)).await;
        }
        for name in http.names() {
            self.inner.membership.advertise_http(&name).await;
        }
        self.inner.membership.set_state(MemberState::Serving).await;
        tracing::info!(node = %self.inner.name, addr = ?self.inner.mesh_addr, "serving");
        let served = server.serve().await;
        // Drained: members learn at once that this node is gone, not by failure detection.
        self.inner.membership.leave().await;
        served
    }

    /// Starts a graceful drain; `serve` returns when it is done.
    pub async fn shutdown(&self) {
        self.inner.membership.set_state(MemberState::Draining).await;
        // Give gossip time to tell callers before go-away closes the door.
        tokio::time::sleep(self.inner.drain_grace).await;
        if let Some(h) = &self.inner.shutdown {
            h.shutdown();
        }
    }
}

/// The keepalive of connections to peers: how often each pings. A peer that vanishes
/// without closing its connections (a partition) is dropped from picks within
/// `KEEPALIVE + KEEPALIVE_TIMEOUT` (3 s).
pub const KEEPALIVE: Duration = Duration::from_secs(1);

/// How long a connection to a peer may receive nothing at all after its ping before it is
/// closed. Two periods, not one: a node whose handlers keep its cores busy (answers of
/// many megabytes in the making) can send nothing for a second and still be alive.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(2);

/// How often the background upkeep runs.
const UPKEEP: Duration = Duration::from_secs(1);

/// Background upkeep: forget peers that left, connect ahead to new replicas. (Each peer's
/// connection keeps itself alive.)
async fn maintain(inner: std::sync::Weak<Inner>) {
    let mut tick = tokio::time::interval(UPKEEP);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        let view = inner.membership.view();
        let live: Vec<SocketAddr> = view.members.iter().filter_map(|m| m.addr).collect();
        // A caller that follows a node's view keeps its connection to that node, which its
        // seed may name by another address than the node advertises.
        if inner.membership.gossips() {
            inner.peers.retain(&live);
        }
        connect_ahead(&inner, &view);
        close_unused_outside_subsets(&inner, &view);
    }
}

/// Replicas of the services this node calls get a connection before a call needs one,
/// in the background: a replica that vanished before any call reached it (a killed
/// container's address answers nothing) is found out here — and kept out of picks by its
/// backoff — not by a call waiting out a connect timeout. The picker still sees every
/// replica, connected or not, so sticky keys do not move.
/// Connections opened ahead of calls per round (a second), at most.
const CONNECT_AHEAD_PER_ROUND: usize = 4;

/// With subsetting, a connection outside this caller's subsets that started no call for
/// this long is closed.
const UNUSED_OUTSIDE_SUBSETS: Duration = Duration::from_secs(10);

/// The services (and HTTP routers) this node has called.
fn called(inner: &Inner) -> Vec<String> {
    inner.balancers.lock().unwrap().keys().cloned().collect()
}

/// The addresses of the replicas in this caller's subsets of what it calls.
fn subsets(inner: &Inner, view: &View, called: &[String]) -> Vec<SocketAddr> {
    let mut addrs = Vec::new();
    for key in called {
        let replicas: Vec<&Member> = match key.strip_prefix(route::HTTP_KEY_PREFIX) {
            Some(name) => view.http_replicas(name).collect(),
            None => view.replicas(key, None).collect(),
        };
        addrs.extend(inner.in_preference(key, replicas).into_iter().take(inner.subset).filter_map(|m| m.addr));
    }
    addrs
}

/// With subsetting, gives back the connections this caller opened outside its subsets
/// (a sticky key's replica, a subset it left as the mesh changed) once they go unused:
/// what it holds stays bounded by its subsets.
fn close_unused_outside_subsets(inner: &Inner, view: &View) {
    if inner.subset == 0 {
        return;
    }
    let keep = subsets(inner, view, &called(inner));
    let closed = inner.peers.close_unused_outside(&keep, UNUSED_OUTSIDE_SUBSETS, crate::clock::now());
    if closed > 0 {
        tracing::debug!(closed, "connections outside this caller's subsets, unused, closed");
    }
}

fn connect_ahead(inner: &Inner, view: &View) {
    let called = called(inner);
    if called.is_empty() {
        return;
    }
    // With subsetting, only the replicas of this caller's subsets.
    let subsets: Option<Vec<SocketAddr>> = (inner.subset > 0).then(|| subsets(inner, view, &called));
    // A few a round: a node that starts calling a large mesh does not open every
    // connection at once (its calls open the ones they need meanwhile).
    let mut started = 0;
    for member in view.members.iter().filter(|m| !m.is_self && m.state == MemberState::Serving) {
        let Some(addr) = member.addr else { continue };
        let calls_it = (member.services.keys().any(|s| called.contains(s))
            || member.http.iter().any(|h| called.contains(&route::http_key(h))))
            && subsets.as_ref().is_none_or(|addrs| addrs.contains(&addr));
        if calls_it && started < CONNECT_AHEAD_PER_ROUND {
            let peer = inner.peers.get(addr);
            if peer.open_conn().is_none() && peer.pickable("", crate::clock::now()).is_some() {
                peer.probe();
                started += 1;
            }
        }
    }
}
