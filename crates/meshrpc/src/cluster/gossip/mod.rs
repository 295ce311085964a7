//! Who is in the cluster and what each node serves: SWIM membership with bounded
//! datagrams underneath ([`swim`], sealed with the cluster's key), each member's facts
//! pulled from the member ([`facts`]), a plain [`View`] on top. The key/value schema is
//! [`schema`]; who may write the rules every node follows is [`rules`]; method lists are
//! fetched by key over the mesh ([`methods`]).

mod cost;
mod facts;
pub(crate) mod methods;
pub(super) mod rules;
mod schema;
pub(crate) mod sealed;
#[doc(hidden)]
pub mod simulation;
mod swim;
mod task;
mod view;
mod wire;

use std::{collections::BTreeMap, net::SocketAddr, sync::Arc, time::Duration};

use tokio::sync::{mpsc, watch};

pub(crate) use cost::GossipCost;
use schema::*;
pub use schema::{Advertised, AdvertisedMethod, Member, MemberState, Policies, Split};
use swim::Raw;
use task::Command;
pub use view::View;
use wire::NodeId;

use crate::{error::Error, spec::ServiceSpec};

/// What a node gossips about its credentials, how its gossip is sealed, and who may
/// write the rules it reads.
#[derive(Clone)]
pub(crate) struct Security {
    /// The `cert` value (see [`KEY_CERT`]).
    pub(crate) cert: Option<String>,
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    pub(crate) gossip_key: Option<[u8; 32]>,
    pub(crate) rules: Arc<rules::RuleGate>,
}

/// Gossip settings.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct GossipConfig {
    /// How often a node passes news (membership changes, new facts) to 3 random members;
    /// a node with no news sends nothing.
    pub interval: Duration,
    /// Unused since gossip version 2 (SWIM detects failures by probes: see
    /// [`probe_period`](Self::probe_period)); kept so that code setting it still builds.
    pub phi_threshold: f64,
    /// How often a node probes one member; a member that answers no probe, direct or
    /// through 3 others, is suspected, and declared dead 3 periods later unless it
    /// refutes.
    pub probe_period: Duration,
    /// Members (up, or down and not yet forgotten) a node holds at most; past it, gossip
    /// about a member it does not hold is ignored. Bounds what gossip — a stranger's, in
    /// a cluster without a key — can make a node hold (docs/security.md). Default 16,384.
    pub max_members: usize,
}

impl Default for GossipConfig {
    fn default() -> Self {
        GossipConfig {
            interval: Duration::from_millis(100),
            phi_threshold: 8.0,
            probe_period: Duration::from_secs(1),
            max_members: 16_384,
        }
    }
}

/// This node's membership: gossip running in the background and the latest view — or,
/// for a caller that does not gossip, the view a node it reaches shares ([`remote`]).
///
/// [`remote`]: super::super::remote
pub(crate) struct Membership {
    /// The engine's commands; `None` for a caller that follows a node's view instead of
    /// gossiping.
    engine: Option<mpsc::UnboundedSender<Command>>,
    view: watch::Receiver<Arc<View>>,
    cost: Arc<GossipCost>,
    /// This node's facts, as last gossiped.
    own: std::sync::Mutex<BTreeMap<String, String>>,
    /// This node's own state, as last advertised.
    state: std::sync::Mutex<MemberState>,
    /// The same, read on every colocated call without a lock: serving now.
    serving: std::sync::atomic::AtomicBool,
    /// The method lists of the services members advertise, fetched by key.
    pub(crate) book: Arc<methods::MethodBook>,
    /// What the book wants fetched: taken once by the cluster, which fetches over the mesh.
    wanted: std::sync::Mutex<Option<tokio::sync::mpsc::Receiver<methods::Wanted>>>,
}

impl Membership {
    /// Joins (or founds) the cluster named `tag`, gossiping on UDP `gossip_bind`;
    /// peers reach it at `gossip_addr`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn join(
        name: &str,
        tag: &str,
        (gossip_bind, gossip_addr): (SocketAddr, SocketAddr),
        mesh_addr: Option<SocketAddr>,
        seeds: Vec<String>,
        config: &GossipConfig,
        security: &Security,
        network: Option<&Arc<dyn crate::transport::Network>>,
    ) -> Result<Membership, Error> {
        let id = NodeId { addr: gossip_addr, started_ns: swim::now_ns(), bump: 0 };
        let mut kv =
            BTreeMap::from([(KEY_NAME.to_owned(), name.to_owned()), (KEY_STATE.to_owned(), "starting".to_owned())]);
        if let Some(addr) = mesh_addr {
            kv.insert(KEY_ADDR.to_owned(), addr.to_string());
        }
        if let Some(cert) = &security.cert {
            kv.insert(KEY_CERT.to_owned(), cert.clone());
        }
        let rules = security.rules.clone();
        let cost = Arc::new(GossipCost::default());
        let (engine, mut raw) =
            task::spawn(id, gossip_bind, tag, seeds, config, security.gossip_key, &kv, cost.clone(), network)
                .await
                .map_err(|e| Error::unavailable(format!("gossip on {gossip_addr}: {e}")))?;

        let (tx, view) = watch::channel(Arc::new(View::default()));
        let (book, wanted) = methods::MethodBook::new();
        let lists = book.clone();
        tokio::spawn(async move {
            loop {
                let mut next = View { members: members(&raw.borrow_and_update(), &lists) };
                rules.filter(&mut next.members);
                // Calls from members keep their names in the metrics, whoever else calls.
                crate::metrics::calls::members_seen(next.members.iter().map(|m| m.name.as_str()));
                tx.send_if_modified(|current| {
                    let changed = **current != next;
                    if changed {
                        *current = Arc::new(next);
                    }
                    changed
                });
                // A new view, or a new policy: the rules are checked again.
                tokio::select! {
                    changed = raw.changed() => if changed.is_err() { return },
                    _ = rules.rechecked() => {}
                    _ = lists.changed.notified() => {}
                }
            }
        });
        Ok(Membership {
            engine: Some(engine),
            view,
            cost,
            own: std::sync::Mutex::new(kv),
            state: std::sync::Mutex::new(MemberState::Starting),
            serving: std::sync::atomic::AtomicBool::new(false),
            book,
            wanted: std::sync::Mutex::new(Some(wanted)),
        })
    }

    /// The membership of a caller that gossips nothing: its view is what `follow` sends.
    pub(crate) fn without_gossip() -> (Membership, watch::Sender<Arc<View>>) {
        let (tx, view) = watch::channel(Arc::new(View::default()));
        let membership = Membership {
            engine: None,
            view,
            cost: Arc::default(),
            own: Default::default(),
            state: std::sync::Mutex::new(MemberState::Starting),
            serving: std::sync::atomic::AtomicBool::new(false),
            // A caller that follows a node's view gets the lists with it.
            book: methods::MethodBook::new().0,
            wanted: std::sync::Mutex::new(None),
        };
        (membership, tx)
    }

    /// False for a caller that follows a node's view instead of gossiping.
    pub(crate) fn gossips(&self) -> bool {
        self.engine.is_some()
    }

    /// The latest view.
    pub(crate) fn view(&self) -> Arc<View> {
        self.view.borrow().clone()
    }

    /// Bytes of keys and values this node gossips about itself (decisions.md's budget:
    /// under 1 KiB).
    pub(crate) fn own_state_bytes(&self) -> u64 {
        self.own.lock().unwrap().iter().map(|(k, v)| (k.len() + v.len()) as u64).sum()
    }

    /// What gossip cost this node so far.
    pub(crate) fn cost(&self) -> &GossipCost {
        &self.cost
    }

    /// A receiver that wakes on every change of the view.
    pub(crate) fn watch(&self) -> watch::Receiver<Arc<View>> {
        self.view.clone()
    }

    /// What the method book wants fetched (once; `None` after, or without gossip).
    pub(crate) fn take_wanted(&self) -> Option<tokio::sync::mpsc::Receiver<methods::Wanted>> {
        self.wanted.lock().unwrap().take()
    }

    /// Advertises a published service, at `version` (its method list is kept in the book,
    /// for members that fetch it).
    pub(crate) async fn advertise_service(&self, spec: &ServiceSpec, version: &str) {
        self.book.publish(spec);
        if version.contains(char::is_whitespace) {
            tracing::warn!(service = spec.name, version, "a version is one word: this one is not advertised");
        }
        self.set(format!("{PREFIX_SERVICE}{}", spec.name), Advertised::encode(spec, version)).await;
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

    async fn set(&self, key: String, value: String) {
        let Some(engine) = &self.engine else { return };
        let mut own = self.own.lock().unwrap();
        if own.get(&key) == Some(&value) {
            return;
        }
        own.insert(key, value);
        let _ = engine.send(Command::Facts(own.clone()));
    }

    /// Leaves the cluster: members know at once (not after failure detection). Gossip
    /// stops.
    pub(crate) async fn leave(&self) {
        let Some(engine) = &self.engine else { return };
        let (done, left) = tokio::sync::oneshot::channel();
        if engine.send(Command::Leave(done)).is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(1), left).await;
        }
    }
}

/// The members of the view, their services' method lists filled in from the book; a
/// service whose list the book lacks is left out of its member until the list is fetched
/// (a few milliseconds after it appears in gossip).
fn members(live: &[Raw], book: &methods::MethodBook) -> Vec<Member> {
    let mut advertised = Vec::new();
    let mut missing: std::collections::BTreeMap<methods::ListKey, Vec<(bool, SocketAddr)>> = Default::default();
    let mut members: Vec<Member> = live
        .iter()
        .map(|raw| {
            let kv = &raw.facts.kv;
            let name = kv.iter().find(|(k, _)| k == KEY_NAME).map_or("", |(_, v)| v.as_str());
            let id = format!("{name}-{}-{:x}", raw.id.addr.port(), raw.id.started_ns & 0xff_ffff);
            let mut m = Member::from_state(&id, kv.iter().map(|(k, v)| (k, v)), raw.is_self);
            m.started_ms = raw.id.started_ns / 1_000_000;
            for (k, v) in kv {
                let Some(service) = k.strip_prefix(PREFIX_SERVICE) else { continue };
                let Some((fingerprint, digest)) = Advertised::key_of(v) else { continue };
                let key = methods::ListKey {
                    service: service.to_owned(),
                    fingerprint: fingerprint.to_owned(),
                    digest: digest.to_owned(),
                };
                match (book.methods(&key), m.services.get_mut(service)) {
                    (Some(methods), Some(adv)) => adv.methods = (*methods).clone(),
                    // Until its method list is known, a member does not serve the service:
                    // no call goes to it without the method's options (idempotent,
                    // timeout, hedge), and nothing answers 404 for a method it has.
                    (None, _) => {
                        m.services.remove(service);
                        let serving = m.state == MemberState::Serving;
                        let from = missing.entry(key.clone()).or_default();
                        from.extend(m.addr.map(|a| (serving, a)));
                    }
                    _ => {}
                }
                advertised.push(key);
            }
            m
        })
        .collect();
    members.sort_by(|a, b| a.id.cmp(&b.id));
    // Asked of serving members only, if any: one still starting may not take connections
    // yet, and a refused fetch backs off for a second or more.
    let missing = missing
        .into_iter()
        .map(|(key, from)| {
            let any_serving = from.iter().any(|(serving, _)| *serving);
            (key, from.into_iter().filter(|(serving, _)| *serving || !any_serving).map(|(_, a)| a).collect())
        })
        .collect();
    book.want(&advertised, missing);
    members
}

/// A gossip node speaking whatever facts it is given, for the tests' impostors (a process
/// on the host without the key, or a holder of the gossip key and nothing else). Not part
/// of the API. Gossips until dropped.
#[doc(hidden)]
pub struct Impostor {
    _engine: mpsc::UnboundedSender<Command>,
    /// Where it gossips.
    pub addr: SocketAddr,
}

impl Impostor {
    /// Starts one on a free port of `ip`, gossiping `kv` to `seeds` of cluster `tag`,
    /// sealed with `key` if given.
    pub async fn start(
        tag: &str,
        ip: std::net::IpAddr,
        seeds: &[SocketAddr],
        kv: &[(&str, &str)],
        key: Option<[u8; 32]>,
    ) -> std::io::Result<Impostor> {
        let port = std::net::UdpSocket::bind((ip, 0))?.local_addr()?.port();
        let addr = SocketAddr::new(ip, port);
        let id = NodeId { addr, started_ns: swim::now_ns(), bump: 0 };
        let kv: BTreeMap<String, String> = kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let seeds = seeds.iter().map(ToString::to_string).collect();
        let (engine, _) =
            task::spawn(id, addr, tag, seeds, &GossipConfig::default(), key, &kv, Arc::default(), None).await?;
        Ok(Impostor { _engine: engine, addr })
    }
}
