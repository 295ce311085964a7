//! A cluster node: gossip membership, service discovery, balanced calls with failover,
//! graceful drain. Built on the direct [`Server`] and
//! [`Connection`](crate::Connection).

pub mod balance;
pub mod membership;
mod peers;

use std::{
    collections::HashMap,
    net::{SocketAddr, ToSocketAddrs, UdpSocket},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde::Serialize;

pub use balance::Policy;
pub use membership::{Advertised, GossipConfig, Member, MemberState, View};

use self::{
    balance::{Balance, Candidate},
    membership::Membership,
    peers::Peers,
};
use crate::{
    call::{BoxFuture, Call, Dispatch, Reply},
    server::Registry,
    Channel, Error, Server, ServerConfig, Service, ServiceSpec, ShutdownHandle,
};

/// Mesh port used when a seed names no port (as in Go meshRPC).
pub const DEFAULT_PORT: u16 = 11999;
/// Calls that provably never reached a replica are tried on up to this many replicas.
const MAX_ATTEMPTS: usize = 3;

/// Configures and starts a cluster node.
#[derive(Debug, Clone)]
pub struct ClusterBuilder {
    name: String,
    tag: String,
    seeds: Vec<String>,
    listen: Option<String>,
    advertise: Option<std::net::IpAddr>,
    policy: Policy,
    gossip: GossipConfig,
    server: ServerConfig,
    drain_grace: Duration,
}

impl ClusterBuilder {
    /// The namespace: nodes with different tags do not see each other
    /// (`MESHRPC_CLUSTER_TAGNAME`). Default `meshrpc`.
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.tag = tag.into();
        self
    }

    /// Seed nodes to join through: `host[:port]`; a missing port means 11999. DNS names
    /// are re-resolved periodically, so one name can stand for every replica.
    pub fn seeds<I: IntoIterator<Item = S>, S: AsRef<str>>(mut self, seeds: I) -> Self {
        self.seeds.extend(seeds.into_iter().filter_map(|s| parse_seed(s.as_ref())));
        self
    }

    /// Adds seeds from `MESHRPC_CLUSTER_NODES` (comma separated).
    pub fn seeds_from_env(self) -> Self {
        let env = std::env::var("MESHRPC_CLUSTER_NODES").unwrap_or_default();
        self.seeds(env.split(','))
    }

    /// Address to serve on (mesh, HTTP and UDP gossip share the port). Without it the
    /// node is client-only: it calls others and serves nothing.
    pub fn listen(mut self, addr: impl Into<String>) -> Self {
        self.listen = Some(addr.into());
        self
    }

    /// The IP peers reach this node by, when it listens on `0.0.0.0`
    /// (default: `MESHRPC_ADVERTISE_IP`, else the local address routing to the first seed).
    pub fn advertise_ip(mut self, ip: std::net::IpAddr) -> Self {
        self.advertise = Some(ip);
        self
    }

    /// How calls spread over replicas (sticky keys always stick).
    pub fn balance(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    pub fn gossip(mut self, config: GossipConfig) -> Self {
        self.gossip = config;
        self
    }

    pub fn server_config(mut self, config: ServerConfig) -> Self {
        self.server = config;
        self
    }

    /// Binds the port, starts gossip and returns the node (serving starts with
    /// [`Cluster::serve`]).
    pub async fn start(self) -> Result<Cluster, Error> {
        let (server, gossip_bind, mesh_addr) = match &self.listen {
            Some(listen) => {
                let server = bind_tcp_and_udp(listen).await?.with_config(self.server);
                let bound = server.local_addr();
                let ip = if bound.ip().is_unspecified() { self.advertise_ip_guess() } else { bound.ip() };
                (Some(server), bound, Some(SocketAddr::new(ip, bound.port())))
            }
            None => {
                // A client-only node still gossips (to learn the view) on a free UDP port.
                let ip = self.advertise.unwrap_or_else(|| self.advertise_ip_guess());
                let port = UdpSocket::bind((ip, 0))?.local_addr()?.port();
                (None, SocketAddr::new(ip, port), None)
            }
        };
        let gossip_advertise = SocketAddr::new(mesh_addr.map_or(gossip_bind.ip(), |a| a.ip()), gossip_bind.port());
        let membership = Membership::join(
            &self.name,
            &self.tag,
            gossip_bind,
            gossip_advertise,
            mesh_addr,
            self.seeds.clone(),
            &self.gossip,
        )
        .await?;
        let registry = server.as_ref().map_or_else(Arc::default, |s| s.registry().clone());
        let name = self.name;
        let inner = Arc::new(Inner {
            name: name.clone(),
            mesh_addr,
            registry,
            membership,
            peers: Peers::new(&name),
            policy: self.policy,
            balancers: Mutex::default(),
            shutdown: server.as_ref().map(Server::shutdown_handle),
            server: Mutex::new(server),
            drain_grace: self.drain_grace.max(self.gossip.interval * 3),
            started: Instant::now(),
        });
        tokio::spawn(maintain(Arc::downgrade(&inner)));
        Ok(Cluster { inner })
    }

    fn advertise_ip_guess(&self) -> std::net::IpAddr {
        if let Some(ip) = self.advertise {
            return ip;
        }
        if let Some(ip) = std::env::var("MESHRPC_ADVERTISE_IP").ok().and_then(|v| v.parse().ok()) {
            return ip;
        }
        // The source address the kernel would use towards the first seed; no packet is sent.
        let towards = self.seeds.iter().find_map(|s| s.to_socket_addrs().ok()?.next());
        towards
            .and_then(|seed| {
                let probe = UdpSocket::bind((std::net::Ipv4Addr::UNSPECIFIED, 0)).ok()?;
                probe.connect(seed).ok()?;
                Some(probe.local_addr().ok()?.ip())
            })
            .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST))
    }
}

/// Binds the mesh port so that the same port number is also free for UDP gossip. With
/// port 0 the kernel picks a TCP port whose UDP twin may be taken: pick again.
async fn bind_tcp_and_udp(listen: &str) -> Result<Server, Error> {
    for _ in 0..32 {
        let server = Server::bind(listen).await?;
        match UdpSocket::bind(server.local_addr()) {
            // Released at once: the gossip layer binds it right after.
            Ok(_) => return Ok(server),
            Err(e) if !listen.ends_with(":0") => {
                return Err(Error::unavailable(format!("UDP {} for gossip: {e}", server.local_addr())));
            }
            Err(_) => continue,
        }
    }
    Err(Error::unavailable(format!("no port free for both TCP and UDP on {listen}")))
}

fn parse_seed(s: &str) -> Option<String> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    let has_port = match s.rsplit_once(':') {
        Some((host, port)) => {
            !host.is_empty() && port.parse::<u16>().is_ok() && (!host.contains(':') || host.ends_with(']'))
        }
        None => false,
    };
    Some(if has_port { s.to_owned() } else { format!("{s}:{DEFAULT_PORT}") })
}

/// A node of the mesh. Cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    mesh_addr: Option<SocketAddr>,
    registry: Arc<Registry>,
    membership: Membership,
    peers: Peers,
    policy: Policy,
    balancers: Mutex<HashMap<String, Arc<dyn Balance>>>,
    server: Mutex<Option<Server>>,
    shutdown: Option<ShutdownHandle>,
    drain_grace: Duration,
    started: Instant,
}

/// A service as the cluster sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceStatus {
    pub name: String,
    /// Fingerprint of the method set → node ids serving it.
    pub versions: std::collections::BTreeMap<String, Vec<String>>,
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
        }
    }

    /// This node's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The mesh address peers reach this node by (`None` for client-only nodes).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.inner.mesh_addr
    }

    /// Publishes a service on this node; the cluster learns of it by gossip.
    pub fn publish(&self, service: impl Service) -> &Self {
        let spec = service.spec();
        self.inner.registry.publish(Arc::new(service));
        let inner = self.inner.clone();
        tokio::spawn(async move { inner.membership.advertise_service(spec).await });
        self
    }

    /// Publishes a plain HTTP router, served under `/{name}/…` on this node and through
    /// the gateway. Publish before [`serve`](Self::serve).
    pub fn publish_http(&self, name: &str, router: axum::Router) -> &Self {
        self.inner.registry.publish_http(name, router);
        let (inner, name) = (self.inner.clone(), name.to_owned());
        tokio::spawn(async move { inner.membership.advertise_http(&name).await });
        self
    }

    /// A channel to `spec`'s service, balanced over its compatible replicas. Pass it to
    /// a generated client: `GreeterClient::new(cluster.client(GreeterClient::SPEC))`.
    pub fn client(&self, spec: &'static ServiceSpec) -> Channel {
        Channel::new(ClusterDispatch { inner: self.inner.clone(), fingerprint: Some(spec.fingerprint()) })
    }

    /// A channel to any service by name, without a version check (gateway, CLI).
    pub fn channel(&self) -> Channel {
        Channel::new(ClusterDispatch { inner: self.inner.clone(), fingerprint: None })
    }

    /// The live members.
    pub fn members(&self) -> Vec<Member> {
        self.inner.membership.view().members.clone()
    }

    /// The latest view, and a receiver that wakes on changes.
    pub fn view(&self) -> tokio::sync::watch::Receiver<Arc<View>> {
        self.inner.membership.watch()
    }

    /// Published services across the cluster, with the replicas of each method set.
    pub fn services(&self) -> Vec<ServiceStatus> {
        let view = self.inner.membership.view();
        let mut out: std::collections::BTreeMap<String, ServiceStatus> = Default::default();
        for m in view.members.iter().filter(|m| m.state == MemberState::Serving) {
            for (name, adv) in &m.services {
                let s = out
                    .entry(name.clone())
                    .or_insert_with(|| ServiceStatus { name: name.clone(), versions: Default::default() });
                s.versions.entry(adv.fingerprint.clone()).or_default().push(m.id.clone());
            }
        }
        out.into_values().collect()
    }

    /// Last keepalive round trip to a peer, if connected.
    pub fn peer_latency(&self, addr: SocketAddr) -> Option<Duration> {
        self.inner.peers.all().into_iter().find(|p| p.addr == addr)?.last_ping()
    }

    /// How long this node has been up.
    pub fn uptime(&self) -> Duration {
        self.inner.started.elapsed()
    }

    /// Pings one replica of `service`; returns the round trip.
    pub async fn ping(&self, service: &str, timeout: Duration) -> Result<Duration, Error> {
        self.inner.ping(service, None, timeout).await
    }

    /// Waits until every listed service has a compatible replica that answers a ping.
    /// The error names the services still missing at the deadline.
    pub async fn wait_for(&self, specs: &[&'static ServiceSpec], timeout: Duration) -> Result<(), Error> {
        let deadline = Instant::now() + timeout;
        let mut missing: Vec<&ServiceSpec> = specs.to_vec();
        let mut view = self.inner.membership.watch();
        loop {
            let mut still = Vec::new();
            for spec in missing {
                let fp = spec.fingerprint();
                let left = deadline.saturating_duration_since(Instant::now()).min(Duration::from_secs(1));
                if self.inner.ping(spec.name, Some(&fp), left).await.is_err() {
                    still.push(spec);
                }
            }
            missing = still;
            if missing.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let names: Vec<_> = missing.iter().map(|s| s.name).collect();
                return Err(Error::unavailable(format!(
                    "services not reachable within {timeout:?}: {}",
                    names.join(", ")
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
        let Some(mut server) = server else {
            return Err(Error::Internal { message: "serve called twice or on a client-only node".into() });
        };
        // Plain HTTP on any node reaches any service: local first, else the mesh.
        server.set_http_dispatch(Arc::new(PreferLocal { registry: self.inner.registry.clone(), mesh: self.channel() }));
        for spec in self.inner.registry.specs() {
            self.inner.membership.advertise_service(spec).await;
        }
        for name in self.inner.registry.http_names() {
            self.inner.membership.advertise_http(&name).await;
        }
        self.inner.membership.set_state(MemberState::Serving).await;
        tracing::info!(node = %self.inner.name, addr = ?self.inner.mesh_addr, "serving");
        server.serve().await
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

    /// Serves until SIGTERM or Ctrl-C, then drains.
    pub async fn serve_until_signal(&self) -> Result<(), Error> {
        let me = self.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("signal received: draining");
            me.shutdown().await;
        });
        self.serve().await
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

impl Inner {
    fn balancer(&self, service: &str) -> Arc<dyn Balance> {
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

    async fn ping(&self, service: &str, fingerprint: Option<&str>, timeout: Duration) -> Result<Duration, Error> {
        let view = self.membership.view();
        let mut last = Error::UnknownService { service: service.to_owned() };
        for m in view.replicas(service, fingerprint) {
            if m.is_self {
                return Ok(Duration::ZERO);
            }
            let peer = self.peers.get(m.addr.expect("replicas have addresses"));
            let attempt = async { peer.connection().await?.ping(timeout).await };
            match tokio::time::timeout(timeout, attempt).await {
                Ok(Ok(rtt)) => return Ok(rtt),
                Ok(Err(e)) => last = e,
                Err(_) => last = Error::Timeout,
            }
        }
        Err(last)
    }

    async fn call(self: Arc<Self>, call: Call, fingerprint: Option<String>) -> Result<Reply, Error> {
        let balancer = self.balancer(&call.service);
        let mut tried: Vec<SocketAddr> = Vec::new();
        let mut last_error = None;
        for _ in 0..MAX_ATTEMPTS {
            let view = self.membership.view();
            let replicas: Vec<(&Member, Option<Arc<peers::Peer>>)> = view
                .replicas(&call.service, fingerprint.as_deref())
                .filter(|m| !tried.contains(&m.addr.expect("replicas have addresses")))
                .map(|m| (m, (!m.is_self).then(|| self.peers.get(m.addr.expect("replicas have addresses")))))
                .filter(|(_, p)| p.as_ref().is_none_or(|p| p.usable()))
                .collect();
            let candidates: Vec<Candidate> = replicas
                .iter()
                .map(|(m, p)| Candidate { id: &m.id, load: p.as_ref().map_or(0.0, |p| p.load()) })
                .collect();
            let Some(i) = balancer.pick(&candidates, call.key.as_deref()) else {
                return Err(
                    last_error.unwrap_or_else(|| self.nobody_serves(&view, &call.service, fingerprint.as_deref()))
                );
            };
            let (member, peer) = &replicas[i];
            let Some(peer) = peer else {
                return self.registry.dispatch(call).await; // this node is the replica
            };
            tried.push(peer.addr);
            let conn = match peer.connection().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::debug!(replica = %member.id, error = %e, "connect failed: trying another replica");
                    last_error = Some(e);
                    continue;
                }
            };
            let start = Instant::now();
            let pending = match conn.send_call(call.clone()) {
                Ok(p) => p,
                Err(e) if e.is_retryable_elsewhere() => {
                    last_error = Some(e);
                    continue;
                }
                Err(e) => return Err(e),
            };
            match pending.answer().await {
                Ok(reply) => {
                    peer.observe(start.elapsed());
                    return Ok(reply);
                }
                // Refused before the handler ran: safe to go elsewhere.
                Err(e @ Error::Overloaded { .. }) => last_error = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_error.unwrap_or_else(|| Error::unavailable("no attempt made")))
    }

    fn nobody_serves(&self, view: &View, service: &str, fingerprint: Option<&str>) -> Error {
        if !view.knows(service) {
            return Error::UnknownService { service: service.to_owned() };
        }
        let incompatible =
            view.members.iter().filter(|m| m.services.contains_key(service) && !m.serves(service, fingerprint)).count();
        Error::unavailable(if view.replicas(service, fingerprint).next().is_none() && incompatible > 0 {
            format!("no compatible replica of `{service}`: {incompatible} serve another version of its methods")
        } else {
            format!("no reachable replica of `{service}`")
        })
    }
}

/// How often connections to peers are pinged, and how long a ping may take: a peer that
/// vanishes without closing its connections (a partition) is dropped from picks within
/// about twice this.
pub const KEEPALIVE: Duration = Duration::from_secs(1);

/// Background upkeep: forget peers that left, ping the rest.
async fn maintain(inner: std::sync::Weak<Inner>) {
    let mut tick = tokio::time::interval(KEEPALIVE);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        let view = inner.membership.view();
        let live: Vec<SocketAddr> = view.members.iter().filter_map(|m| m.addr).collect();
        inner.peers.retain(&live);
        for peer in inner.peers.all() {
            tokio::spawn(async move { peer.keepalive(KEEPALIVE).await });
        }
    }
}

/// The cluster's balanced, failover-aware dispatch.
struct ClusterDispatch {
    inner: Arc<Inner>,
    fingerprint: Option<String>,
}

impl Dispatch for ClusterDispatch {
    fn dispatch(&self, call: Call) -> BoxFuture<Result<Reply, Error>> {
        Box::pin(self.inner.clone().call(call, self.fingerprint.clone()))
    }
}

/// HTTP on a node: its own services locally, anything else through the mesh.
struct PreferLocal {
    registry: Arc<Registry>,
    mesh: Channel,
}

impl Dispatch for PreferLocal {
    fn dispatch(&self, call: Call) -> BoxFuture<Result<Reply, Error>> {
        if self.registry.specs().iter().any(|s| s.name == call.service) {
            self.registry.dispatch(call)
        } else {
            self.mesh.dispatch(call)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_get_the_default_port() {
        assert_eq!(parse_seed("greeter"), Some("greeter:11999".into()));
        assert_eq!(parse_seed(" 10.0.0.1:7000 "), Some("10.0.0.1:7000".into()));
        assert_eq!(parse_seed("[::1]:7000"), Some("[::1]:7000".into()));
        assert_eq!(parse_seed(""), None);
    }
}
