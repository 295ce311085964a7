//! Who is in the cluster and what each node serves: chitchat gossip underneath (sealed
//! with the cluster's key, thinned in large meshes, seeds looked up again while alone), a
//! plain [`View`] on top. The key/value schema is [`schema`]; who may write the rules
//! every node follows is [`rules`].

pub(crate) mod methods;
pub(super) mod rules;
mod schema;
#[cfg(feature = "tls")]
pub(crate) mod sealed;
mod seeds;
pub(crate) mod thin;
mod view;

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
use tokio::sync::watch;

use schema::*;
pub use schema::{Advertised, AdvertisedMethod, Member, MemberState, Policies, Split};
use thin::{GossipCost, Thinned};
pub use view::View;

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
/// [`remote`]: super::super::remote
pub(crate) struct Membership {
    /// `None` for a caller that follows a node's view instead of gossiping.
    handle: Option<Arc<ChitchatHandle>>,
    view: watch::Receiver<Arc<View>>,
    cost: Arc<GossipCost>,
    /// The last measure of [`own_state_bytes`](Self::own_state_bytes).
    own_bytes: std::sync::atomic::AtomicU64,
    /// This node's own state, as last advertised.
    state: std::sync::Mutex<MemberState>,
    /// The same, read on every colocated call without a lock: serving now.
    serving: std::sync::atomic::AtomicBool,
    /// The method lists of the services members advertise, fetched by key.
    pub(crate) book: Arc<methods::MethodBook>,
    /// What the book wants fetched: taken once by the cluster, which fetches over the mesh.
    wanted: std::sync::Mutex<Option<tokio::sync::mpsc::Receiver<methods::Wanted>>>,
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
        let mut kv = vec![(KEY_NAME.to_owned(), name.to_owned()), (KEY_STATE.to_owned(), "starting".to_owned())];
        if let Some(addr) = mesh_addr {
            kv.push((KEY_ADDR.to_owned(), addr.to_string()));
        }
        if let Some(cert) = &security.cert {
            kv.push((KEY_CERT.to_owned(), cert.clone()));
        }
        let rules = security.rules.clone();
        let live = Arc::new(std::sync::atomic::AtomicUsize::new(1));
        let cost = Arc::new(GossipCost::default());
        let seed_names = chitchat_config.seed_nodes.clone();
        let seeds: Vec<SocketAddr> =
            chitchat_config.seed_nodes.iter().filter_map(|s| s.to_socket_addrs().ok()).flatten().collect();
        let spawned = match security.gossip_key {
            #[cfg(feature = "tls")]
            Some(key) => {
                let transport = Thinned {
                    inner: sealed::SealedTransport::counted(key, cost.clone()),
                    live: live.clone(),
                    seeds: seeds.clone(),
                    cost: cost.clone(),
                };
                spawn_chitchat(chitchat_config, kv, &transport).await
            }
            _ => {
                let transport = Thinned { inner: UdpTransport, live: live.clone(), seeds, cost: cost.clone() };
                spawn_chitchat(chitchat_config, kv, &transport).await
            }
        };
        let handle = Arc::new(spawned.map_err(|e| Error::unavailable(format!("gossip on {gossip_addr}: {e:#}")))?);

        let chitchat = handle.chitchat();
        let (tx, view) = watch::channel(Arc::new(View::default()));
        let mut watched = chitchat.lock().await.live_nodes_watcher();
        let (book, wanted) = methods::MethodBook::new();
        let lists = book.clone();
        tokio::spawn(async move {
            loop {
                let mut next = View { members: members(&watched.borrow_and_update(), &id, &lists) };
                rules.filter(&mut next.members);
                live.store(next.members.len(), std::sync::atomic::Ordering::Relaxed);
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
                    changed = watched.changed() => if changed.is_err() { return },
                    _ = rules.rechecked() => {}
                    _ = lists.changed.notified() => {}
                }
            }
        });
        seeds::keep_looking(Arc::downgrade(&handle), view.clone(), seed_names, gossip_addr);
        Ok(Membership {
            handle: Some(handle),
            view,
            cost,
            own_bytes: std::sync::atomic::AtomicU64::new(0),
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
            handle: None,
            view,
            cost: Arc::default(),
            own_bytes: std::sync::atomic::AtomicU64::new(0),
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
        let Some(handle) = &self.handle else { return };
        let chitchat = handle.chitchat();
        let mut c = chitchat.lock().await;
        c.self_node_state().set(key, value);
    }
}

/// Says once per member (a few hundred at most are remembered) that it gossips as
/// meshrpc 0.1.0 does: it is read as before, but it cannot read this node's method lists
/// or versions (docs/deploy.md, "Upgrading"). 0.1.0 nodes gossip `started`; newer ones
/// do not.
fn older_node(member: &Member) {
    static TOLD: std::sync::Mutex<Option<std::collections::HashSet<String>>> = std::sync::Mutex::new(None);
    let mut told = TOLD.lock().unwrap();
    let told = told.get_or_insert_with(Default::default);
    if told.len() >= 512 || !told.insert(member.id.clone()) {
        return;
    }
    tracing::warn!(
        member = %member.id,
        name = %member.name,
        "member gossips as meshrpc 0.1.0 (gossip schema 1; this node: schema 2): read as before, but it does not \
         see this node's method lists nor versions; upgrade it (docs/deploy.md, \"Upgrading\")"
    );
}

/// The members of the view, their services' method lists filled in from the book; a
/// service whose list the book lacks is left out of its member until the list is fetched
/// (a few milliseconds after it appears in gossip).
fn members(live: &BTreeMap<ChitchatId, NodeState>, me: &ChitchatId, book: &methods::MethodBook) -> Vec<Member> {
    let mut advertised = Vec::new();
    let mut missing: std::collections::HashMap<methods::ListKey, Vec<SocketAddr>> = Default::default();
    let members = live
        .iter()
        .map(|(id, state)| {
            let mut m = Member::from_state(&id.node_id, state.key_values(), id == me);
            if m.started_ms == 0 {
                // The generation is the start (Unix ms), as `join` sets it.
                m.started_ms = id.generation_id;
            } else {
                older_node(&m);
            }
            for (k, v) in state.key_values() {
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
                        missing.entry(key.clone()).or_default().extend(m.addr);
                    }
                    _ => {}
                }
                advertised.push(key);
            }
            m
        })
        .collect();
    book.want(&advertised, missing);
    members
}
