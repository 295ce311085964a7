//! Who is in the cluster and what each node serves: chitchat gossip underneath, a
//! plain [`View`] on top. The key/value schema each node advertises lives here.

use std::{
    collections::BTreeMap,
    net::{SocketAddr, ToSocketAddrs},
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use chitchat::{
    spawn_chitchat, transport::UdpTransport, ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig,
    NodeState, ProtocolVersion,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::thin::{GossipTraffic, Thinned};
use crate::{error::Error, spec::ServiceSpec};

const KEY_NAME: &str = "name";
const KEY_ADDR: &str = "addr";
const KEY_STATE: &str = "state";
const KEY_STARTED: &str = "started";
/// `<sha256 of the certificate> <not-after, Unix seconds>`.
const KEY_CERT: &str = "cert";
/// `limit=8 running=3 overloaded=12 budget=102 ejected=<node>/<service>,…`: where this
/// node's policies stand ([`Policies`]).
const KEY_POLICIES: &str = "policies";

/// What a node gossips about its credentials, how its gossip is sealed, and who may
/// write the rules it reads.
#[derive(Clone)]
pub(crate) struct Security {
    /// The `cert` value (see [`KEY_CERT`]).
    pub(crate) cert: Option<String>,
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    pub(crate) gossip_key: Option<[u8; 32]>,
    pub(crate) rules: Arc<super::rules::RuleGate>,
}
const PREFIX_SERVICE: &str = "svc:";
/// `ver:<service>`: the version of the service this node runs.
const PREFIX_VERSION: &str = "ver:";
/// `split:<service>`: a weighted split rule, as this node last saw it (see [`Split`]).
const PREFIX_SPLIT: &str = "split:";
/// `mirror:<service>`: a mirror rule (`<version>=<percent>`), as this node last saw it.
const PREFIX_MIRROR: &str = "mirror:";
const PREFIX_HTTP: &str = "http:";

/// Where a member is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberState {
    /// Joined, not yet accepting calls.
    Starting,
    /// Takes calls.
    Serving,
    /// Finishing in-flight calls before it leaves: pick it no more.
    Draining,
}

/// One node as the cluster sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    /// Unique node id.
    pub id: String,
    /// The node's name (usually its main service).
    pub name: String,
    /// Mesh (and HTTP) address; `None` for client-only nodes.
    pub addr: Option<SocketAddr>,
    /// Starting, serving or draining.
    pub state: MemberState,
    /// Published services by name.
    pub services: BTreeMap<String, Advertised>,
    /// Published plain HTTP routers.
    pub http: Vec<String>,
    /// When the node started (Unix ms).
    pub started_ms: u64,
    /// SHA-256 of the node's certificate, as it gossips it (mutual TLS).
    pub cert_fingerprint: Option<String>,
    /// When that certificate expires (Unix seconds).
    pub cert_not_after: Option<u64>,
    /// This is the local node.
    pub is_self: bool,
    /// Split rules this member gossips, by service (each node passes on the newest it saw).
    pub splits: BTreeMap<String, Split>,
    /// Mirror rules this member gossips, by service: one entry, `(version, percent)`.
    pub mirrors: BTreeMap<String, Split>,
    /// Where its resilience policies stand, as it last gossiped them.
    pub policies: Option<Policies>,
}

/// Where a node's resilience policies stand (docs/resilience.md), gossiped at most every
/// two seconds when it changes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policies {
    /// Its concurrency limit now (`None`: no limit, or a client-only node).
    pub concurrency_limit: Option<u64>,
    /// Calls its handlers run now.
    pub running: u64,
    /// Calls it refused at its limit so far.
    pub overloaded: u64,
    /// Retries its retry budget allows now.
    pub retry_budget_left: u64,
    /// Replicas it has ejected from picking now: `<node id>/<service>` (at most 8 listed).
    pub ejected: Vec<String>,
}

impl Policies {
    /// Most ejections listed in gossip (the budget is under 1 KiB per node).
    pub(crate) const MAX_LISTED: usize = 8;

    pub(crate) fn encode(&self) -> String {
        let limit = self.concurrency_limit.map_or("none".to_owned(), |l| l.to_string());
        let mut out = format!(
            "limit={limit} running={} overloaded={} budget={}",
            self.running, self.overloaded, self.retry_budget_left
        );
        if !self.ejected.is_empty() {
            let listed: Vec<&str> = self.ejected.iter().take(Self::MAX_LISTED).map(String::as_str).collect();
            out.push_str(&format!(" ejected={}", listed.join(",")));
        }
        out
    }

    fn decode(v: &str) -> Policies {
        let mut p = Policies::default();
        for (k, v) in v.split(' ').filter_map(|kv| kv.split_once('=')) {
            match k {
                "limit" => p.concurrency_limit = v.parse().ok(),
                "running" => p.running = v.parse().unwrap_or(0),
                "overloaded" => p.overloaded = v.parse().unwrap_or(0),
                "budget" => p.retry_budget_left = v.parse().unwrap_or(0),
                "ejected" => p.ejected = v.split(',').map(str::to_owned).collect(),
                _ => {}
            }
        }
        p
    }
}

impl Member {
    /// Reads a member from its gossiped key/values.
    pub fn from_state(
        id: &str,
        kv: impl IntoIterator<Item = (impl AsRef<str>, impl AsRef<str>)>,
        is_self: bool,
    ) -> Member {
        let mut m = Member {
            id: id.to_owned(),
            name: String::new(),
            addr: None,
            state: MemberState::Starting,
            services: BTreeMap::new(),
            http: Vec::new(),
            started_ms: 0,
            cert_fingerprint: None,
            cert_not_after: None,
            is_self,
            splits: BTreeMap::new(),
            mirrors: BTreeMap::new(),
            policies: None,
        };
        let mut versions = Vec::new();
        for (k, v) in kv {
            let (k, v) = (k.as_ref(), v.as_ref());
            match k {
                KEY_NAME => m.name = v.to_owned(),
                KEY_ADDR => m.addr = v.parse().ok(),
                KEY_STARTED => m.started_ms = v.parse().unwrap_or(0),
                KEY_POLICIES => m.policies = Some(Policies::decode(v)),
                KEY_CERT => {
                    let mut parts = v.split(' ');
                    m.cert_fingerprint = parts.next().map(str::to_owned);
                    m.cert_not_after = parts.next().and_then(|t| t.parse().ok());
                }
                KEY_STATE => {
                    m.state = match v {
                        "serving" => MemberState::Serving,
                        "draining" => MemberState::Draining,
                        _ => MemberState::Starting,
                    }
                }
                _ => {
                    if let Some(name) = k.strip_prefix(PREFIX_SERVICE) {
                        m.services.insert(name.to_owned(), Advertised::decode(v));
                    } else if let Some(name) = k.strip_prefix(PREFIX_HTTP) {
                        m.http.push(name.to_owned());
                    } else if let Some(name) = k.strip_prefix(PREFIX_VERSION) {
                        versions.push((name.to_owned(), v.to_owned()));
                    } else if let Some(name) = k.strip_prefix(PREFIX_SPLIT) {
                        if let Some(split) = Split::decode(v) {
                            m.splits.insert(name.to_owned(), split);
                        }
                    } else if let Some(name) = k.strip_prefix(PREFIX_MIRROR) {
                        if let Some(mirror) = Split::decode(v) {
                            m.mirrors.insert(name.to_owned(), mirror);
                        }
                    }
                }
            }
        }
        for (service, version) in versions {
            if let Some(adv) = m.services.get_mut(&service) {
                adv.version = version;
            }
        }
        m
    }

    /// True if this member takes calls for `service` (built from the same method set,
    /// when `fingerprint` is given).
    pub fn serves(&self, service: &str, fingerprint: Option<&str>) -> bool {
        self.state == MemberState::Serving
            && self.addr.is_some()
            && self.services.get(service).is_some_and(|s| fingerprint.is_none_or(|want| want == s.fingerprint))
    }
}

/// A published service as gossiped: its fingerprint and methods with argument names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Advertised {
    /// Fingerprint of the method set (see `ServiceSpec::fingerprint`).
    pub fingerprint: String,
    /// The version of the service this member runs (empty if it does not say).
    pub version: String,
    /// The methods, in declaration order.
    pub methods: Vec<AdvertisedMethod>,
}

/// A method as gossiped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdvertisedMethod {
    /// Method name.
    pub name: String,
    /// Argument names.
    pub args: Vec<String>,
    /// The argument that is a stream of the caller's items, if any.
    pub items: Option<String>,
    /// The answer is a stream.
    pub streams: bool,
    /// Marked idempotent (its calls may be retried, hedged and mirrored).
    pub idempotent: bool,
    /// The method's own timeout, if it has one.
    #[serde(serialize_with = "millis", deserialize_with = "from_millis")]
    pub timeout: Option<Duration>,
    /// Slow calls are hedged.
    pub hedge: bool,
}

fn millis<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&(d.as_secs_f64() * 1e3)),
        None => s.serialize_none(),
    }
}

fn from_millis<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let ms: Option<f64> = Option::deserialize(d)?;
    ms.map(|ms| Duration::try_from_secs_f64(ms / 1e3).map_err(serde::de::Error::custom)).transpose()
}

impl Advertised {
    /// `fp !greet(name) send_postcard(card) watch(filter)* chat(room,*lines)* !^get(id)@200`:
    /// `!` before a method marks it idempotent, `^` hedged; `*` before an argument the
    /// stream of the caller's items, `*` after `)` a stream answer; `@` its timeout in
    /// milliseconds.
    fn encode(spec: &ServiceSpec) -> String {
        let mut out = spec.fingerprint();
        for m in spec.methods {
            let args: Vec<String> =
                m.args.iter().map(|a| if m.items == Some(*a) { format!("*{a}") } else { (*a).to_owned() }).collect();
            let idempotent = if m.idempotent { "!" } else { "" };
            let hedge = if m.hedge { "^" } else { "" };
            let streams = if m.streams { "*" } else { "" };
            let timeout = m.timeout.map_or(String::new(), |t| format!("@{}", t.as_secs_f64() * 1e3));
            out.push_str(&format!(" {idempotent}{hedge}{}({}){streams}{timeout}", m.name, args.join(",")));
        }
        out
    }

    fn decode(v: &str) -> Advertised {
        let mut parts = v.split(' ');
        let fingerprint = parts.next().unwrap_or_default().to_owned();
        let methods = parts
            .filter_map(|m| {
                let (m, timeout) = match m.rsplit_once('@') {
                    Some((m, ms)) => {
                        let ms: f64 = ms.parse().ok()?;
                        (m, Some(Duration::try_from_secs_f64(ms / 1e3).ok()?))
                    }
                    None => (m, None),
                };
                let (m, streams) = m.strip_suffix('*').map_or((m, false), |m| (m, true));
                let (m, idempotent) = m.strip_prefix('!').map_or((m, false), |m| (m, true));
                let (m, hedge) = m.strip_prefix('^').map_or((m, false), |m| (m, true));
                let (name, args) = m.strip_suffix(')')?.split_once('(')?;
                let mut items = None;
                let args = args
                    .split(',')
                    .filter(|a| !a.is_empty())
                    .map(|a| match a.strip_prefix('*') {
                        Some(stream) => {
                            items = Some(stream.to_owned());
                            stream.to_owned()
                        }
                        None => a.to_owned(),
                    })
                    .collect();
                Some(AdvertisedMethod { name: name.to_owned(), args, items, streams, idempotent, timeout, hedge })
            })
            .collect();
        Advertised { fingerprint, version: String::new(), methods }
    }

    /// The method of this name, if the service has one.
    pub fn method(&self, name: &str) -> Option<&AdvertisedMethod> {
        self.methods.iter().find(|m| m.name == name)
    }

    /// True if the service has a method of this name.
    pub fn has_method(&self, name: &str) -> bool {
        self.methods.iter().any(|m| m.name == name)
    }
}

/// A weighted split of a service's calls between its versions (`v1=90 v2=10`), set at
/// runtime (`meshrpc split`, [`Cluster::set_split`](super::Cluster::set_split)): the newest
/// rule wins, and every node passes on the newest it saw, so a rule outlives the node that
/// set it. No weights: the rule is cleared. With mutual TLS, a rule is signed by its
/// writer and only writers the policy allows are followed (docs/security.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Split {
    /// When it was set (Unix ms).
    pub set_ms: u64,
    /// Who set it: with mutual TLS, the node name of the certificate that signed it.
    pub set_by: String,
    /// `(version, weight)`, in the order given.
    pub weights: Vec<(String, u32)>,
    /// The writer's signature and certificate (mutual TLS), as gossiped (and shared with
    /// callers that follow a node's view, which check it too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) proof: Option<String>,
}

impl Split {
    /// Newest first: by time, then by setter (so every node agrees on one winner).
    pub(crate) fn order(&self) -> (u64, &str) {
        (self.set_ms, &self.set_by)
    }

    /// `<set_ms> <set_by> v1=90 v2=10 ~<signature>` (no weights: cleared; the signature
    /// with mutual TLS only).
    pub(crate) fn encode(&self) -> String {
        let mut out = format!("{} {}", self.set_ms, self.set_by);
        for (version, weight) in &self.weights {
            out.push_str(&format!(" {version}={weight}"));
        }
        if let Some(proof) = &self.proof {
            out.push_str(&format!(" ~{proof}"));
        }
        out
    }

    pub(crate) fn decode(v: &str) -> Option<Split> {
        let mut parts = v.split(' ');
        let set_ms = parts.next()?.parse().ok()?;
        let set_by = parts.next()?.to_owned();
        let mut proof = None;
        let mut weights = Vec::new();
        for part in parts {
            match part.strip_prefix('~') {
                Some(token) if proof.is_none() => proof = Some(token.to_owned()),
                Some(_) => return None,
                None => {
                    let (version, weight) = part.split_once('=')?;
                    weights.push((version.to_owned(), weight.parse().ok()?));
                }
            }
        }
        Some(Split { set_ms, set_by, weights, proof })
    }

    /// Parses `v1=90 v2=10` (or `v1=90,v2=10`) as given on a command line.
    pub fn parse_weights(text: &str) -> Result<Vec<(String, u32)>, Error> {
        let weights: Vec<(String, u32)> = text
            .split([' ', ','])
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (version, weight) = p.split_once('=').ok_or_else(|| {
                    Error::bad_request(format!("`{p}`: write each share as VERSION=WEIGHT, e.g. v1=90 v2=10"))
                })?;
                let weight = weight
                    .parse::<u32>()
                    .map_err(|_| Error::bad_request(format!("`{p}`: the weight must be a whole number")))?;
                if version.is_empty() || version.contains(char::is_whitespace) {
                    return Err(Error::bad_request(format!("`{p}`: a version is one word")));
                }
                Ok((version.to_owned(), weight))
            })
            .collect::<Result<_, _>>()?;
        if weights.is_empty() || weights.iter().all(|(_, w)| *w == 0) {
            return Err(Error::bad_request("a split needs at least one version with a weight above 0"));
        }
        Ok(weights)
    }
}

/// The live members, sorted by id.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct View {
    /// The members, sorted by id.
    pub members: Vec<Member>,
}

impl View {
    /// Members serving `service` (compatible ones only, when `fingerprint` is given).
    pub fn replicas<'a>(&'a self, service: &'a str, fingerprint: Option<&'a str>) -> impl Iterator<Item = &'a Member> {
        self.members.iter().filter(move |m| m.serves(service, fingerprint))
    }

    /// Members serving the HTTP router `name`.
    pub fn http_replicas<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Member> {
        self.members.iter().filter(move |m| m.state == MemberState::Serving && m.http.iter().any(|h| h == name))
    }

    /// True if some member publishes `service` with a method of this name.
    pub fn has_method(&self, service: &str, method: &str) -> bool {
        self.members.iter().any(|m| m.services.get(service).is_some_and(|s| s.has_method(method)))
    }

    /// True if any live member publishes `service`, compatible or not.
    pub fn knows(&self, service: &str) -> bool {
        self.members.iter().any(|m| m.services.contains_key(service))
    }

    /// The newest split rule for `service` any member gossips (`None`: no rule, or the
    /// newest one cleared it).
    pub fn split(&self, service: &str) -> Option<&Split> {
        self.newest_split(service).filter(|s| !s.weights.is_empty())
    }

    /// The newest split rule for `service`, a clearing one included.
    pub fn newest_split(&self, service: &str) -> Option<&Split> {
        self.newest(service, |m| &m.splits)
    }

    /// Every service with a split rule anyone gossips.
    pub fn split_services(&self) -> std::collections::BTreeSet<&str> {
        self.ruled(|m| &m.splits)
    }

    /// The newest rule for `service` among the members' `rules` (splits or mirrors). A
    /// rule stamped more than an hour ahead of this node's clock is ignored: it could never
    /// be replaced.
    fn newest(&self, service: &str, rules: impl Fn(&Member) -> &BTreeMap<String, Split>) -> Option<&Split> {
        let horizon = (SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default() + Duration::from_secs(3600))
            .as_millis() as u64;
        self.members
            .iter()
            .filter_map(|m| rules(m).get(service))
            .filter(|r| r.set_ms <= horizon)
            .max_by(|a, b| a.order().cmp(&b.order()))
    }

    /// Every service some member has one of `rules` for.
    fn ruled(&self, rules: impl Fn(&Member) -> &BTreeMap<String, Split>) -> std::collections::BTreeSet<&str> {
        self.members.iter().flat_map(|m| rules(m).keys().map(String::as_str)).collect()
    }

    /// The newest mirror rule for `service` (`None`: none, or cleared): its one entry is
    /// `(version, percent)`.
    pub fn mirror(&self, service: &str) -> Option<&Split> {
        self.newest_mirror(service).filter(|s| !s.weights.is_empty())
    }

    /// The newest mirror rule for `service`, a clearing one included.
    pub fn newest_mirror(&self, service: &str) -> Option<&Split> {
        self.newest(service, |m| &m.mirrors)
    }

    /// Every service with a mirror rule anyone gossips.
    pub fn mirror_services(&self) -> std::collections::BTreeSet<&str> {
        self.ruled(|m| &m.mirrors)
    }

    /// True if some member serves `name` or publishes an HTTP router under it.
    pub fn knows_http(&self, name: &str) -> bool {
        self.members.iter().any(|m| m.state == MemberState::Serving && m.http.iter().any(|h| h == name))
    }
}

/// Gossip settings.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct GossipConfig {
    /// How often a node gossips with a peer.
    pub interval: Duration,
    /// Phi-accrual threshold above which a silent node is declared dead.
    pub phi_threshold: f64,
}

impl Default for GossipConfig {
    fn default() -> Self {
        GossipConfig { interval: Duration::from_millis(100), phi_threshold: 8.0 }
    }
}

/// This node's membership: gossip running in the background and the latest view — or,
/// for a caller that does not gossip, the view a node it reaches shares ([`remote`]).
///
/// [`remote`]: super::remote
pub(crate) struct Membership {
    /// `None` for a caller that follows a node's view instead of gossiping.
    handle: Option<Arc<ChitchatHandle>>,
    view: watch::Receiver<Arc<View>>,
    traffic: Arc<GossipTraffic>,
    /// The last measure of [`own_state_bytes`](Self::own_state_bytes).
    own_bytes: std::sync::atomic::AtomicU64,
    /// This node's own state, as last advertised.
    state: std::sync::Mutex<MemberState>,
    /// The same, read on every colocated call without a lock: serving now.
    serving: std::sync::atomic::AtomicBool,
}

/// chitchat as meshrpc runs it: the cluster id, gossip interval, failure detection.
pub(crate) fn chitchat_config(
    id: ChitchatId,
    tag: &str,
    listen_addr: SocketAddr,
    seeds: Vec<String>,
    config: &GossipConfig,
) -> ChitchatConfig {
    ChitchatConfig {
        chitchat_id: id,
        cluster_id: format!("meshrpc/{tag}"),
        gossip_interval: config.interval,
        listen_addr,
        seed_nodes: seeds,
        failure_detector_config: FailureDetectorConfig {
            phi_threshold: config.phi_threshold,
            // Inter-arrival samples kept per peer (8 bytes each): 100 give phi a steady
            // estimate; 1,000 cost a node 8 KiB for every other node (11 GB for a simulated
            // mesh of 1,000).
            sampling_window_size: 100,
            max_interval: Duration::from_secs(2),
            initial_interval: config.interval * 5,
            dead_node_grace_period: Duration::from_secs(60),
        },
        marked_for_deletion_grace_period: Duration::from_secs(3600),
        catchup_callback: None,
        extra_liveness_predicate: None,
        // V1 compresses digests with zstd: measured, it doubles a node's idle CPU (0.50 %
        // against 0.26 % at 16 nodes) for fewer bytes; V0 also stays readable by every
        // chitchat 0.x node.
        protocol_version: ProtocolVersion::V0,
    }
}

impl Membership {
    /// Joins (or founds) the cluster named `tag`, gossiping on UDP `gossip_bind`;
    /// peers reach it at `gossip_addr`.
    pub(crate) async fn join(
        name: &str,
        tag: &str,
        (gossip_bind, gossip_addr): (SocketAddr, SocketAddr),
        mesh_addr: Option<SocketAddr>,
        seeds: Vec<String>,
        config: &GossipConfig,
        security: &Security,
    ) -> Result<Membership, Error> {
        let started = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let node_id = format!("{name}-{}-{:x}", gossip_addr.port(), started.as_nanos() as u64 & 0xff_ffff);
        let id = ChitchatId::new(node_id, started.as_millis() as u64, gossip_addr);
        let chitchat_config = chitchat_config(id.clone(), tag, gossip_bind, seeds, config);
        let mut kv = vec![
            (KEY_NAME.to_owned(), name.to_owned()),
            (KEY_STATE.to_owned(), "starting".to_owned()),
            (KEY_STARTED.to_owned(), started.as_millis().to_string()),
        ];
        if let Some(addr) = mesh_addr {
            kv.push((KEY_ADDR.to_owned(), addr.to_string()));
        }
        if let Some(cert) = &security.cert {
            kv.push((KEY_CERT.to_owned(), cert.clone()));
        }
        let rules = security.rules.clone();
        let live = Arc::new(std::sync::atomic::AtomicUsize::new(1));
        let traffic = Arc::new(GossipTraffic::default());
        let seed_names = chitchat_config.seed_nodes.clone();
        let seeds: Vec<SocketAddr> =
            chitchat_config.seed_nodes.iter().filter_map(|s| s.to_socket_addrs().ok()).flatten().collect();
        let spawned = match security.gossip_key {
            #[cfg(feature = "tls")]
            Some(key) => {
                let transport = Thinned {
                    inner: super::sealed::SealedTransport::new(key),
                    live: live.clone(),
                    seeds: seeds.clone(),
                    traffic: traffic.clone(),
                };
                spawn_chitchat(chitchat_config, kv, &transport).await
            }
            _ => {
                let transport = Thinned { inner: UdpTransport, live: live.clone(), seeds, traffic: traffic.clone() };
                spawn_chitchat(chitchat_config, kv, &transport).await
            }
        };
        let handle = Arc::new(spawned.map_err(|e| Error::unavailable(format!("gossip on {gossip_addr}: {e:#}")))?);

        let chitchat = handle.chitchat();
        let (tx, view) = watch::channel(Arc::new(View::default()));
        let mut watched = chitchat.lock().await.live_nodes_watcher();
        tokio::spawn(async move {
            loop {
                let mut next = View { members: members(&watched.borrow_and_update(), &id) };
                rules.filter(&mut next.members);
                live.store(next.members.len(), std::sync::atomic::Ordering::Relaxed);
                // Calls from members keep their names in the metrics, whoever else calls.
                crate::call_stats::members_seen(next.members.iter().map(|m| m.name.as_str()));
                tx.send_if_modified(|current| {
                    let changed = **current != next;
                    if changed {
                        *current = Arc::new(next);
                    }
                    changed
                });
                // A new view, or a new policy: the rules are checked again.
                tokio::select! {
                    changed = watched.changed() => if changed.is_err() { return },
                    _ = rules.rechecked() => {}
                }
            }
        });
        super::seeds::keep_looking(Arc::downgrade(&handle), view.clone(), seed_names, gossip_addr);
        Ok(Membership {
            handle: Some(handle),
            view,
            traffic,
            own_bytes: std::sync::atomic::AtomicU64::new(0),
            state: std::sync::Mutex::new(MemberState::Starting),
            serving: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// The membership of a caller that gossips nothing: its view is what `follow` sends.
    pub(crate) fn without_gossip() -> (Membership, watch::Sender<Arc<View>>) {
        let (tx, view) = watch::channel(Arc::new(View::default()));
        let membership = Membership {
            handle: None,
            view,
            traffic: Arc::default(),
            own_bytes: std::sync::atomic::AtomicU64::new(0),
            state: std::sync::Mutex::new(MemberState::Starting),
            serving: std::sync::atomic::AtomicBool::new(false),
        };
        (membership, tx)
    }

    /// False for a caller that follows a node's view instead of gossiping.
    pub(crate) fn gossips(&self) -> bool {
        self.handle.is_some()
    }

    /// The latest view.
    pub(crate) fn view(&self) -> Arc<View> {
        self.view.borrow().clone()
    }

    /// Bytes of keys and values this node gossips about itself (decisions.md's budget:
    /// under 1 KiB). Measured when gossip's lock is free, else the last measure.
    pub(crate) fn own_state_bytes(&self) -> u64 {
        let Some(handle) = &self.handle else { return 0 };
        let chitchat = handle.chitchat();
        if let Ok(mut c) = chitchat.try_lock() {
            let bytes = c.self_node_state().key_values().map(|(k, v)| (k.len() + v.len()) as u64).sum();
            self.own_bytes.store(bytes, std::sync::atomic::Ordering::Relaxed);
        }
        self.own_bytes.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// What gossip cost this node so far.
    pub(crate) fn traffic(&self) -> &GossipTraffic {
        &self.traffic
    }

    /// A receiver that wakes on every change of the view.
    pub(crate) fn watch(&self) -> watch::Receiver<Arc<View>> {
        self.view.clone()
    }

    /// Advertises a published service, at `version`.
    pub(crate) async fn advertise_service(&self, spec: &ServiceSpec, version: &str) {
        self.set(format!("{PREFIX_VERSION}{}", spec.name), version.to_owned()).await;
        self.set(format!("{PREFIX_SERVICE}{}", spec.name), Advertised::encode(spec)).await;
    }

    /// Gossips a split rule for `service` (this node's own copy of the newest it saw).
    pub(crate) async fn advertise_split(&self, service: &str, split: &Split) {
        self.set(format!("{PREFIX_SPLIT}{service}"), split.encode()).await;
    }

    /// Gossips a mirror rule for `service`, as [`advertise_split`](Self::advertise_split).
    pub(crate) async fn advertise_mirror(&self, service: &str, mirror: &Split) {
        self.set(format!("{PREFIX_MIRROR}{service}"), mirror.encode()).await;
    }

    /// Advertises a published HTTP router.
    pub(crate) async fn advertise_http(&self, name: &str) {
        self.set(format!("{PREFIX_HTTP}{name}"), String::new()).await;
    }

    /// True while this node takes calls (read without a lock).
    pub(crate) fn serving(&self) -> bool {
        self.serving.load(std::sync::atomic::Ordering::Acquire)
    }

    /// This node's state, as last advertised.
    pub(crate) fn state(&self) -> MemberState {
        *self.state.lock().unwrap()
    }

    /// Advertises the node's state.
    pub(crate) async fn set_state(&self, state: MemberState) {
        *self.state.lock().unwrap() = state;
        self.serving.store(state == MemberState::Serving, std::sync::atomic::Ordering::Release);
        let v = match state {
            MemberState::Starting => "starting",
            MemberState::Serving => "serving",
            MemberState::Draining => "draining",
        };
        self.set(KEY_STATE.to_owned(), v.to_owned()).await;
    }

    /// Gossips this node's current certificate (after a rotation).
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    pub(crate) async fn advertise_cert(&self, value: String) {
        self.set(KEY_CERT.to_owned(), value).await;
    }

    /// Gossips where this node's policies stand.
    pub(crate) async fn advertise_policies(&self, value: String) {
        self.set(KEY_POLICIES.to_owned(), value).await;
    }

    async fn set(&self, key: String, value: String) {
        let Some(handle) = &self.handle else { return };
        let chitchat = handle.chitchat();
        let mut c = chitchat.lock().await;
        c.self_node_state().set(key, value);
    }
}

fn members(live: &BTreeMap<ChitchatId, NodeState>, me: &ChitchatId) -> Vec<Member> {
    live.iter().map(|(id, state)| Member::from_state(&id.node_id, state.key_values(), id == me)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_split_wins_and_a_clear_is_a_rule_too() {
        let member = |id: &str, split: &str| Member::from_state(id, [("split:greeter", split)], false);
        let view = View {
            members: vec![
                member("a", "100 ops v1=90 v2=10"),
                member("b", "200 ops v1=50 v2=50"),
                member("c", "150 dev v2=100"),
            ],
        };
        assert_eq!(view.split("greeter").unwrap().weights[1], ("v2".to_string(), 50));
        let cleared = View { members: vec![member("a", "100 ops v1=90 v2=10"), member("b", "300 ops")] };
        assert_eq!(cleared.split("greeter"), None);
        assert_eq!(cleared.newest_split("greeter").unwrap().set_ms, 300);
        assert!(Split::parse_weights("v1=90, v2=10").is_ok());
        assert!(Split::parse_weights("v1=0").is_err());
        assert!(Split::parse_weights("v1:90").unwrap_err().to_string().contains("VERSION=WEIGHT"));
    }

    #[test]
    fn a_member_reads_back_what_it_advertised() {
        let kv = [
            ("name", "greeter"),
            ("addr", "127.0.0.1:11999"),
            ("state", "serving"),
            (
                "svc:greeter",
                "abc !greet(name) send_postcard(card) ping() chat(room,*lines)* !^get(id)@0.5 slow()*@2000",
            ),
            ("http:greeter", ""),
            ("started", "42"),
            ("ver:greeter", "2.1.0"),
            ("split:greeter", "1700000000000 ops-cli v1=90 v2=10"),
            ("policies", "limit=8 running=3 overloaded=12 budget=102 ejected=b-1/lab,c-2/lab"),
            ("unknown-key", "ignored"),
        ];
        let m = Member::from_state("greeter-1", kv, false);
        assert_eq!(m.addr, Some("127.0.0.1:11999".parse().unwrap()));
        assert_eq!(m.services["greeter"].version, "2.1.0");
        let policies = m.policies.clone().unwrap();
        assert_eq!((policies.concurrency_limit, policies.overloaded, policies.ejected.len()), (Some(8), 12, 2));
        assert_eq!(Policies::decode(&policies.encode()), policies);
        let split = &m.splits["greeter"];
        assert_eq!((split.set_ms, split.set_by.as_str()), (1_700_000_000_000, "ops-cli"));
        assert_eq!(split.weights, [("v1".to_string(), 90), ("v2".to_string(), 10)]);
        assert_eq!(Split::decode(&split.encode()).as_ref(), Some(split));
        assert_eq!(
            (m.state, m.started_ms, m.http.as_slice()),
            (MemberState::Serving, 42, &["greeter".to_string()][..])
        );
        assert!(m.serves("greeter", None) && m.serves("greeter", Some("abc")));
        let methods = &m.services["greeter"].methods;
        assert_eq!(
            (methods[1].name.as_str(), methods[1].args.as_slice()),
            ("send_postcard", &["card".to_string()][..])
        );
        assert_eq!((methods[2].name.as_str(), methods[2].args.len()), ("ping", 0));
        let chat = &methods[3];
        assert_eq!((chat.name.as_str(), chat.items.as_deref(), chat.streams), ("chat", Some("lines"), true));
        assert!(methods[0].idempotent && !methods[1].idempotent);
        assert_eq!(chat.args, ["room", "lines"]);
        let (get, slow) = (&methods[4], &methods[5]);
        assert_eq!((get.name.as_str(), get.idempotent, get.hedge), ("get", true, true));
        assert_eq!(get.timeout, Some(Duration::from_micros(500)));
        assert_eq!((slow.streams, slow.timeout, slow.hedge), (true, Some(Duration::from_secs(2)), false));
        assert!(methods[..4].iter().all(|m| m.timeout.is_none() && !m.hedge));
        assert!(!m.serves("greeter", Some("other-version")), "incompatible replica is not a replica");
        let draining = Member { state: MemberState::Draining, ..m.clone() };
        let view = View { members: vec![m, draining] };
        assert_eq!(view.replicas("greeter", None).count(), 1);
        assert!(view.knows("greeter") && !view.knows("billing"));
    }
}
