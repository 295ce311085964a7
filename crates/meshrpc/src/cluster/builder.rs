//! Configuring and starting a node: seeds, the port (TCP for calls and HTTP, UDP for
//! gossip, one number), the advertised address.

use std::{
    net::{SocketAddr, ToSocketAddrs, UdpSocket},
    sync::{Arc, Mutex},
    time::Duration,
};

use super::{gossip::Membership, maintain, peers::Peers, Cluster, GossipConfig, Inner, Member, Policy, DEFAULT_PORT};
use crate::{
    call::{Call, Dispatch, Reply},
    error::Error,
    middleware::DispatchService,
    middleware::DynLayer,
    server::Server,
    server::ServerConfig,
    transport::Network,
};

/// Configures and starts a cluster node.
#[derive(Debug, Clone)]
pub struct ClusterBuilder {
    pub(crate) name: String,
    pub(super) tag: String,
    pub(super) seeds: Vec<String>,
    pub(crate) listen: Option<String>,
    pub(super) advertise: Option<std::net::IpAddr>,
    pub(super) policy: Policy,
    pub(super) gossip: GossipConfig,
    pub(super) server: ServerConfig,
    pub(super) drain_grace: Duration,
    pub(super) layers: Vec<DynLayer>,
    pub(super) admin: Option<String>,
    pub(crate) service_version: Option<String>,
    pub(super) colocated: super::Colocated,
    pub(super) resilience: super::Resilience,
    pub(super) subset: usize,
    pub(super) network: Option<NetworkSeam>,
    #[cfg(feature = "tls")]
    pub(super) credentials: super::security::Credentials,
}

/// The [`Network`] a node runs on, if not the operating system's.
#[derive(Clone)]
pub(super) struct NetworkSeam(Arc<dyn Network>);

impl std::fmt::Debug for NetworkSeam {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NetworkSeam")
    }
}

impl ClusterBuilder {
    /// Runs the node on `network` instead of the operating system's sockets: its mesh
    /// port, its connections to peers and its gossip (a simulated network: `sim/`). The
    /// listen address and seeds are then addresses on that network; such a node has no
    /// TLS, no admin port and no HTTP on its mesh port.
    pub fn network(mut self, network: Arc<dyn Network>) -> Self {
        self.network = Some(NetworkSeam(network));
        self
    }

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

    /// Address to serve on (mesh, HTTP and UDP gossip share the port). Without it the
    /// node is client-only: it calls others and serves nothing.
    pub fn listen(mut self, addr: impl Into<String>) -> Self {
        self.listen = Some(addr.into());
        self
    }

    /// The IP peers reach this node by, when it listens on `0.0.0.0` (default: the local
    /// address routing to the first seed; [`from_env`](Self::from_env) reads
    /// `MESHRPC_ADVERTISE_IP`).
    pub fn advertise_ip(mut self, ip: std::net::IpAddr) -> Self {
        self.advertise = Some(ip);
        self
    }

    /// How calls spread over replicas (sticky keys always stick).
    pub fn balance(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// Keep to at most `size` replicas of each service this node calls (0, the default:
    /// all of them). Callers of one name take near-equal, deterministic shares of the
    /// replicas (docs/resilience.md, "Subsetting"), so a node's connections stay bounded
    /// however many replicas a service has; a replica of its subset that is down or
    /// ejected is stood in for by the next one in the caller's order.
    pub fn subset(mut self, size: usize) -> Self {
        self.subset = size;
        self
    }

    /// Gossip interval and failure detection.
    pub fn gossip(mut self, config: GossipConfig) -> Self {
        self.gossip = config;
        self
    }

    /// Every call this node serves goes through `layer` first (tower middleware, as
    /// [`Server::layer`]).
    pub fn layer<L>(mut self, layer: L) -> Self
    where
        L: tower_layer::Layer<DispatchService> + Send + Sync + 'static,
        L::Service: tower_service::Service<Call, Response = Reply, Error = Error> + Clone + Send + Sync + 'static,
        <L::Service as tower_service::Service<Call>>::Future: Send + 'static,
    {
        self.layers.push(DynLayer::new(layer));
        self
    }

    /// Mutual TLS with these credentials (feature `tls`): the port takes only callers
    /// holding a certificate of the cluster CA, this node calls peers over TLS and picks
    /// a replica only if its certificate carries the service, and gossip is sealed with
    /// the cluster's gossip key.
    #[cfg(feature = "tls")]
    pub fn tls(mut self, tls: crate::transport::TlsConfig) -> Self {
        self.credentials.tls = Some(tls);
        self
    }

    /// As [`tls`](Self::tls), reading `ca.pem`, `node.pem`, `node.key` and `gossip.key`
    /// from `dir` when the node starts (`None`: plaintext). Flag `--tls-dir`, env
    /// `MESHRPC_TLS_DIR` in the `meshrpc` command and the examples.
    #[cfg(feature = "tls")]
    pub fn tls_dir(mut self, dir: impl Into<Option<std::path::PathBuf>>) -> Self {
        self.credentials.tls_dir = dir.into();
        self
    }

    /// Every call from the network must be allowed by this policy (needs TLS).
    #[cfg(feature = "tls")]
    pub fn access(mut self, access: Arc<crate::access::Access>) -> Self {
        self.credentials.access = Some(access);
        self
    }

    /// As [`access`](Self::access), reading the policy file when the node starts (and
    /// again whenever it changes, or on SIGHUP). `None`: no policy. A malformed file keeps
    /// the node from starting; the error names the line.
    #[cfg(feature = "tls")]
    pub fn policy_file(mut self, path: impl Into<Option<std::path::PathBuf>>) -> Self {
        self.credentials.policy_file = path.into();
        self
    }

    /// Also serve the admin port on `addr` (`None`: none): plaintext and read-only —
    /// `/ping`, `/__heartbeat__`, `/healthz`, `/ready`, `/metrics` — for probes and
    /// scrapers, which cannot pass the mesh port's mutual TLS. Flag `--admin-addr`, env
    /// `MESHRPC_ADMIN_ADDR`.
    pub fn admin_addr(mut self, addr: impl Into<Option<String>>) -> Self {
        self.admin = addr.into();
        self
    }

    /// zstd on the mesh for this node: its answers, and its requests, of 1 KiB or more go
    /// compressed to peers that take it (`ServerConfig::compress` for its port, and its
    /// own calls). For nodes on slow links; env `MESHRPC_COMPRESS=on`.
    pub fn compress(mut self, on: bool) -> Self {
        self.server.compress = on;
        self
    }

    /// Limits and timeouts of this node's port.
    pub fn server_config(mut self, config: ServerConfig) -> Self {
        self.server = config;
        self
    }

    /// Whether this node's calls to services it publishes itself run in process
    /// ([`Colocated::Prefer`](super::Colocated), the default), share with remote replicas,
    /// or always go through encoding.
    pub fn colocated(mut self, policy: super::Colocated) -> Self {
        self.colocated = policy;
        self
    }

    /// How this node's calls recover from failing and slow replicas: retries of
    /// idempotent methods within a budget, outlier ejection, hedging (docs/resilience.md).
    /// Default: all on ([`Resilience::default`](super::Resilience)).
    pub fn resilience(mut self, resilience: super::Resilience) -> Self {
        self.resilience = resilience;
        self
    }

    /// The version this node advertises for every service it publishes (split rules and
    /// pinned calls route by it). Default: each service's own (the version of the crate
    /// that defines its trait; [`from_env`](Self::from_env) reads `MESHRPC_SERVICE_VERSION`).
    pub fn service_version(mut self, version: impl Into<String>) -> Self {
        self.service_version = Some(version.into());
        self
    }

    /// Binds the port, starts gossip and returns the node (serving starts with
    /// [`Cluster::serve`]).
    pub async fn start(self) -> Result<Cluster, Error> {
        #[cfg(feature = "tls")]
        let (tls, access) = self.credentials.clone().load(self.listen.is_some())?;
        #[cfg(feature = "tls")]
        let rules = Arc::new(super::gossip::rules::RuleGate::new(&self.tag, tls.clone(), access.clone()));
        #[cfg(not(feature = "tls"))]
        let rules = Arc::new(super::gossip::rules::RuleGate::new(&self.tag));
        // A caller without the gossip key follows a node's view instead of gossiping.
        #[cfg(feature = "tls")]
        let gossips = self.listen.is_some() || tls.as_ref().is_none_or(|t| t.gossip_key().is_some());
        #[cfg(not(feature = "tls"))]
        let gossips = true;
        let network = self.network.as_ref().map(|n| n.0.clone());
        // On another network the OS cannot tell the node's address (its probes would
        // look at the real machine's).
        let unspecified =
            self.listen.as_deref().is_none_or(|l| l.parse::<SocketAddr>().is_ok_and(|a| a.ip().is_unspecified()));
        if network.is_some() && self.advertise.is_none() && unspecified {
            return Err(Error::bad_request("a node on a given network needs advertise_ip (its address there)"));
        }
        #[cfg(feature = "tls")]
        if network.is_some() && tls.is_some() {
            return Err(Error::bad_request("a node on a simulated network has no TLS"));
        }
        let (server, gossip_bind, mesh_addr) = match &self.listen {
            Some(listen) => {
                let server = match &network {
                    None => bind_tcp_and_udp(listen).await?,
                    Some(network) => {
                        let addr =
                            listen.parse().map_err(|_| Error::bad_request(format!("listen address {listen}")))?;
                        Server::listening_on(network.listen(addr).await.map_err(|e| Error::from(e).context("bind"))?)
                    }
                }
                .with_config(self.server);
                #[cfg(feature = "tls")]
                let server = match (&tls, &access) {
                    (Some(tls), access) => {
                        let server = server.with_tls(tls.clone());
                        match access {
                            Some(access) => server.with_access(access.clone()),
                            None => server,
                        }
                    }
                    (None, _) => server,
                };
                let mut server = server.with_http();
                for layer in &self.layers {
                    server.set_dispatch(layer.apply(server.dispatch()));
                }
                let bound = server.local_addr();
                #[cfg(feature = "tls")]
                let plaintext = tls.is_none();
                #[cfg(not(feature = "tls"))]
                let plaintext = true;
                if plaintext && !bound.ip().is_loopback() {
                    tracing::warn!(
                        addr = %bound,
                        "serving without TLS on a non-loopback address: anyone who reaches it may call any \
                         method, and read and write the cluster's gossip and rules (docs/security.md)"
                    );
                }
                let ip = if bound.ip().is_unspecified() { self.advertise_ip_guess() } else { bound.ip() };
                (Some(server), bound, Some(SocketAddr::new(ip, bound.port())))
            }
            None => {
                // A client-only node still gossips (to learn the view) on a free UDP port.
                let ip = self.advertise.unwrap_or_else(|| self.advertise_ip_guess());
                let port = match &network {
                    None => UdpSocket::bind((ip, 0))?.local_addr()?.port(),
                    // A simulated host binds its unspecified address.
                    Some(network) => {
                        let any = SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, 0));
                        network.bind_datagrams(any).await?.local_addr().port()
                    }
                };
                let bind_ip = if network.is_some() { std::net::Ipv4Addr::UNSPECIFIED.into() } else { ip };
                (None, SocketAddr::new(bind_ip, port), None)
            }
        };
        #[cfg(feature = "tls")]
        let security = super::security::gossiped(tls.as_ref(), rules.clone());
        #[cfg(not(feature = "tls"))]
        let security = super::gossip::Security { cert: None, gossip_key: None, rules: rules.clone() };
        let client_ip = match (gossip_bind.ip().is_unspecified(), self.advertise) {
            (true, Some(ip)) => ip,
            _ => gossip_bind.ip(),
        };
        let gossip_advertise = SocketAddr::new(mesh_addr.map_or(client_ip, |a| a.ip()), gossip_bind.port());
        let (membership, follow) = if gossips {
            let membership = Membership::join(
                &self.name,
                &self.tag,
                (gossip_bind, gossip_advertise),
                mesh_addr,
                self.seeds.clone(),
                &self.gossip,
                &security,
                network.as_ref(),
            )
            .await?;
            (membership, None)
        } else {
            let (membership, view) = Membership::without_gossip();
            (membership, Some(view))
        };
        let admin = match (&self.admin, &server) {
            (Some(_), _) if network.is_some() => {
                return Err(Error::bad_request("a node on a simulated network has no admin port"))
            }
            (Some(addr), Some(_)) => Some(super::admin::Admin::bind(addr).await?),
            (Some(_), None) => return Err(Error::bad_request("a client-only node has no admin port")),
            (None, _) => None,
        };
        let admin_addr = admin.as_ref().and_then(|a| a.local_addr());
        let registry = server.as_ref().map_or_else(Arc::default, |s| s.registry().clone());
        let local = server.as_ref().map_or_else(|| registry.clone() as Arc<dyn Dispatch>, Server::dispatch);
        let http = server.as_ref().map(Server::published_http);
        let limiter = server.as_ref().map(Server::limiter);
        let name = self.name;
        let inner = Arc::new(Inner {
            name: name.clone(),
            mesh_addr,
            registry,
            local,
            http,
            membership,
            rules,
            seeds: self.seeds.clone(),
            #[cfg(feature = "tls")]
            peers: Peers::new(&name, self.server.compress, network.clone(), tls.clone()),
            #[cfg(not(feature = "tls"))]
            peers: Peers::new(&name, self.server.compress, network.clone()),
            policy: self.policy,
            balancers: Mutex::default(),
            shutdown: server.as_ref().map(Server::shutdown_handle),
            server: Mutex::new(server),
            drain_grace: self.drain_grace.max(self.gossip.interval * 3),
            started: crate::clock::now(),
            admin: Mutex::new(admin),
            admin_addr,
            #[cfg(feature = "tls")]
            tls,
            #[cfg(feature = "tls")]
            access,
            #[cfg(feature = "tls")]
            unproven: Default::default(),
            service_version: self.service_version,
            traffic: Default::default(),
            colocated: self.colocated,
            layered: !self.layers.is_empty(),
            policies: super::resilience::Policies::new(self.resilience),
            limiter,
            hedging: Default::default(),
            subset: self.subset,
            subset_seen: Default::default(),
        });
        inner.registry.add_node_methods(Arc::new(super::remote::NodeMethods { inner: Arc::downgrade(&inner) }));
        inner.registry.forward_unknown(Arc::new(super::remote::Forward { inner: Arc::downgrade(&inner) }));
        if let Some(view) = follow {
            let me = Member::from_state(&name, [("name", name.as_str()), ("state", "serving")], true);
            tokio::spawn(super::remote::follow(Arc::downgrade(&inner), self.seeds.clone(), view, me));
        }
        if let Some(wanted) = inner.membership.take_wanted() {
            tokio::spawn(super::remote::fetch_method_lists(Arc::downgrade(&inner), wanted));
        }
        tokio::spawn(maintain(Arc::downgrade(&inner)));
        tokio::spawn(super::traffic::pass_on_splits(Arc::downgrade(&inner)));
        #[cfg(feature = "tls")]
        if inner.tls.is_some() || inner.access.is_some() {
            tokio::spawn(super::security::watch(Arc::downgrade(&inner)));
        }
        Ok(Cluster { inner })
    }

    fn advertise_ip_guess(&self) -> std::net::IpAddr {
        if let Some(ip) = self.advertise {
            return ip;
        }
        // The source address the kernel would use towards the first seed; no packet is sent.
        let towards = self.seeds.iter().find_map(|s| s.to_socket_addrs().ok()?.next());
        let source = |towards: SocketAddr| {
            let probe = UdpSocket::bind((std::net::Ipv4Addr::UNSPECIFIED, 0)).ok()?;
            probe.connect(towards).ok()?;
            Some(probe.local_addr().ok()?.ip()).filter(|ip| !ip.is_unspecified())
        };
        towards
            .and_then(source)
            // No seed resolves yet (Swarm lists a task in DNS only once it is healthy, and it
            // cannot be healthy before it serves): the address the host name resolves to, as
            // containers and pods have it; else the default route's source address.
            .or_else(own_address)
            .or_else(|| source(SocketAddr::from(([192, 0, 2, 1], 9))))
            .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST))
    }
}

/// The first non-loopback address this machine's host name resolves to.
fn own_address() -> Option<std::net::IpAddr> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?.trim().to_owned();
    if name.is_empty() {
        return None;
    }
    (name.as_str(), 0).to_socket_addrs().ok()?.map(|a| a.ip()).find(|ip| !ip.is_loopback() && !ip.is_unspecified())
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
