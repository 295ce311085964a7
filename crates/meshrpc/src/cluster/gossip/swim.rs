//! A gossip node without I/O: foca (SWIM: a probe a period, indirect probes through
//! others, suspicion before death, refutation), the members' facts ([`facts`]), joins and
//! anti-entropy. It takes datagrams, commands and the time, and hands back datagrams to
//! send and the view; every datagram goes through [`wire`], sealed with the cluster's
//! gossip key when there is one ([`sealed`]). [`task`] runs one on a socket under tokio;
//! the gossip simulation (`bench/gossip-sim`) runs thousands on virtual time.
//!
//! Joining: a node says hello to its seed addresses (names looked up again every second
//! while it is alone), announces itself to whoever answers, and pulls the member list
//! from it, then from random members every 0.5 s until six pulls in a row teach it
//! nothing (at most [`JOIN_SYNCS`]). Afterwards a full exchange is rare: one pull every
//! `max(30 s, N × 0.3 s)` per node, so its bytes per node per second stay flat in N.
//!
//! [`facts`]: super::facts
//! [`sealed`]: super::sealed
//! [`task`]: super::task

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    num::{NonZeroU32, NonZeroUsize},
    sync::{atomic::Ordering, Arc, Mutex},
    time::{Duration, Instant},
};

use foca::{AccumulatingRuntime, BroadcastHandler, Config, Foca, Member, OwnedNotification, PostcardCodec, Timer};
use rand::{rngs::StdRng, RngExt, SeedableRng};

use super::{
    cost::GossipCost,
    facts::{Facts, Table},
    sealed,
    wire::{self, Announced, Body, NodeId, Unread},
    GossipConfig,
};
use crate::throttle::Throttle;

/// Member-list pulls of a joining node, at most (every 0.5 s: 20 s). It stops earlier
/// once [`JOIN_FRUITLESS`] pulls in a row taught it nothing: in a mesh started all at once
/// (a cold start of 128 processes on 2 cores takes seconds), joins trickle in, and a node
/// that stopped at the first lull missed later joiners until anti-entropy.
pub(crate) const JOIN_SYNCS: u8 = 40;
const JOIN_FRUITLESS: u8 = 6;
const JOIN_SYNC_EVERY: Duration = Duration::from_millis(500);
/// Members in one page of the member list (≤ [`wire::PAGE`] bytes even with IPv6).
const MEMBERS_PER_PAGE: usize = 28;
/// Pages of the member list asked ahead of those received.
const PAGES_AHEAD: u16 = 8;
/// A joining node publishes its first view once its first member-list pull is done and
/// every member's facts are known, or after this at most (a member that went away
/// unannounced, a CLI that exited, answers no pull until SWIM drops it).
const SETTLE: Duration = Duration::from_secs(1);
/// A member-list pull not finished within this is given up.
const SYNC_TIMEOUT: Duration = Duration::from_secs(2);
/// Announcements remembered (the newest version per address), at most.
const MAX_ANNOUNCED: usize = 65_536;
/// How often the node's upkeep runs (asks due, syncs, anti-entropy).
const TICK: Duration = Duration::from_millis(100);
/// How often an alone node says hello to its seeds (names looked up again).
pub(crate) const SEEDS_EVERY: Duration = Duration::from_secs(1);
/// How often a node that has members says hello to a seed that is not one of them.
pub(crate) const SEEDS_AGAIN: Duration = Duration::from_secs(5);
/// A random member is asked whether its facts moved on this often (anti-entropy).
const RECHECK_EVERY: Duration = Duration::from_secs(1);

static VERSION1_WARNING: Throttle = Throttle::new(Duration::from_secs(10));
static DROPPED_WARNING: Throttle = Throttle::new(Duration::from_secs(10));
static GARBAGE_WARNING: Throttle = Throttle::new(Duration::from_secs(10));
static SHARED_ADDR_WARNING: Throttle = Throttle::new(Duration::from_secs(10));
/// How many times a node takes a new identity to outrank a former self at its address.
const MAX_RENAMES: u8 = 2;

/// A member of the view as the node hands it over.
#[derive(Debug, Clone)]
pub(crate) struct Raw {
    pub(crate) id: NodeId,
    pub(crate) facts: Arc<Facts>,
    pub(crate) is_self: bool,
}

/// The custom broadcasts: announcements of new facts, disseminated while they are news.
struct Announcements {
    newest: std::collections::BTreeMap<SocketAddr, (u64, u32)>,
    inbox: Arc<Mutex<Vec<Announced>>>,
}

impl BroadcastHandler<NodeId> for Announcements {
    type Key = Announced;
    type Error = postcard::Error;

    fn receive_item(&mut self, data: &[u8], _sender: Option<&NodeId>) -> Result<Option<Announced>, postcard::Error> {
        let a: Announced = postcard::from_bytes(data)?;
        let newer = self.newest.get(&a.addr).is_none_or(|seen| (a.started_ns, a.version) > *seen);
        if !newer {
            return Ok(None);
        }
        if self.newest.len() >= MAX_ANNOUNCED {
            self.newest.clear(); // forgotten: at worst an old announcement is passed on once more
        }
        self.newest.insert(a.addr, (a.started_ns, a.version));
        self.inbox.lock().unwrap().push(a);
        Ok(Some(a))
    }
}

type Swim = Foca<NodeId, PostcardCodec, StdRng, Announcements>;

/// A member-list pull in progress.
struct Sync {
    peer: SocketAddr,
    pages: Option<u16>,
    asked: u16,
    got: u16,
    since: Instant,
    members_before: usize,
}

/// One gossip node, without I/O.
pub(crate) struct Node {
    swim: Swim,
    rt: AccumulatingRuntime<NodeId>,
    sealer: Option<(ring::aead::LessSafeKey, sealed::Seen)>,
    cluster: [u8; 8],
    table: Table,
    own: Arc<Facts>,
    inbox: Arc<Mutex<Vec<Announced>>>,
    timers: BTreeMap<(Instant, u64), Timer<NodeId>>,
    timer_seq: u64,
    cost: Arc<GossipCost>,
    /// Datagrams to send, sealed when there is a key.
    out: Vec<(SocketAddr, Vec<u8>)>,
    config: GossipConfig,
    size_class: u32,
    rng: StdRng,
    sync: Option<Sync>,
    joining: Option<(u8, u8)>,
    now: Instant,
    wall_ms: u64,
    next_tick: Instant,
    next_sync: Instant,
    next_seeds: Instant,
    next_recheck: Instant,
    next_hello_back: Instant,
    /// Until when a joining node holds its view back while it learns the members' facts
    /// (so that its first view is whole, not the seed alone); `None` once settled.
    settling: Option<Instant>,
    /// Times this node took a new identity to outrank its former self.
    renames: u8,
    /// Members this node saw go up (`true`) or down, when a simulation asks for them.
    pub(crate) news: Option<Vec<(bool, NodeId)>>,
}

fn swim_config(members: usize, gossip: &GossipConfig) -> Config {
    // foca passes each piece of news on 4 × log10(N + 1) times: once in a mesh it believes
    // has one member. A node that is starting counts on at least 32 (6 times), or the
    // joins of a mesh started all at once would reach only some of it.
    let mut c = Config::new_lan(NonZeroU32::new(members.max(32) as u32).expect("not zero"));
    c.probe_period = gossip.probe_period;
    c.probe_rtt = gossip.probe_period / 2;
    // Suspicion: 3 probe periods (memberlist's 4 × log10 N would be 16 s at 10,000); a
    // suspected member that is alive refutes within it.
    c.suspect_to_down_after = gossip.probe_period * 3;
    c.max_packet_size = NonZeroUsize::new(wire::MAX_SWIM).expect("not zero");
    c.periodic_gossip =
        Some(foca::PeriodicParams { frequency: gossip.interval, num_members: NonZeroUsize::new(3).expect("not zero") });
    // After a partition heals, each side holds the other's members down, and down is
    // final for an identity: a member comes back only by renewing it, which it does once
    // told it is down — by a member it still talks to. Announcing to members held down
    // starts that exchange (the announced-to answers "you are down" to one it holds
    // down itself; both renew). foca does it every 65 s; the simulation (sim/) found
    // members still invisible 20 s after a split healed. Every 5 probe periods, to two.
    c.periodic_announce_to_down_members = Some(foca::PeriodicParams {
        frequency: gossip.probe_period * 5,
        num_members: NonZeroUsize::new(2).expect("not zero"),
    });
    c
}

/// Full-state exchanges after joining, per node: paced so their bytes per node per
/// second stay flat in N (on average: each wait is drawn from half to one and a half of
/// it, so that nodes that joined together do not pull together).
pub(crate) fn anti_entropy_every(members: usize) -> Duration {
    Duration::from_millis(300 * members as u64).max(Duration::from_secs(30))
}

pub(crate) fn random_seed() -> u64 {
    crate::clock::entropy(|| {
        use ring::rand::SecureRandom;
        let mut bytes = [0u8; 8];
        ring::rand::SystemRandom::new().fill(&mut bytes).expect("the system's random source");
        u64::from_le_bytes(bytes)
    })
}

impl Node {
    /// The node `id` of the cluster `tag`, knowing `kv` about itself; `seed` seeds its
    /// random choices (a simulation makes runs repeatable with it).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        id: NodeId,
        tag: &str,
        config: &GossipConfig,
        key: Option<[u8; 32]>,
        kv: &BTreeMap<String, String>,
        cost: Arc<GossipCost>,
        seed: u64,
        now: Instant,
    ) -> Node {
        let inbox = Arc::new(Mutex::new(Vec::new()));
        let handler = Announcements { newest: Default::default(), inbox: inbox.clone() };
        let mut rng = StdRng::seed_from_u64(seed);
        let swim_rng = StdRng::seed_from_u64(rng.random());
        let mut swim = Foca::with_custom_broadcast(id, swim_config(1, config), swim_rng, PostcardCodec, handler);
        swim.set_max_members(config.max_members);
        let table = Table::new(&id, kv);
        let own = Arc::new(Facts { version: table.own_version(), kv: kv.clone().into_iter().collect() });
        Node {
            swim,
            rt: AccumulatingRuntime::new(),
            sealer: key.map(|k| (sealed::key(&k), sealed::Seen::default())),
            cluster: wire::cluster_id(tag),
            table,
            own,
            inbox,
            timers: BTreeMap::new(),
            timer_seq: 0,
            cost,
            out: Vec::new(),
            config: config.clone(),
            size_class: 0,
            rng,
            sync: None,
            joining: Some((0, 0)),
            now,
            wall_ms: 0,
            next_tick: now,
            next_sync: now,
            next_seeds: now,
            next_recheck: now + RECHECK_EVERY,
            next_hello_back: now,
            settling: Some(now + SETTLE),
            renames: 0,
            news: None,
        }
    }

    /// Moves the node's clock (monotonic `now`, and the wall clock in Unix ms that seals
    /// and opens datagrams).
    fn at(&mut self, now: Instant, wall_ms: u64) {
        self.now = self.now.max(now);
        self.wall_ms = wall_ms;
    }

    /// A datagram arrived from `from`.
    pub(crate) fn receive(&mut self, datagram: &mut [u8], from: SocketAddr, now: Instant, wall_ms: u64) {
        self.at(now, wall_ms);
        self.received(datagram, from);
        self.flush();
    }

    /// New facts about this node.
    pub(crate) fn facts(&mut self, kv: BTreeMap<String, String>, now: Instant, wall_ms: u64) {
        self.at(now, wall_ms);
        self.set_facts(kv);
        self.flush();
    }

    /// Leaves the cluster: members know at once.
    pub(crate) fn leave(&mut self, now: Instant, wall_ms: u64) {
        self.at(now, wall_ms);
        let _ = self.swim.leave_cluster(&mut self.rt);
        self.flush();
    }

    /// Timers and upkeep due by `now`.
    pub(crate) fn poll(&mut self, now: Instant, wall_ms: u64) {
        self.at(now, wall_ms);
        self.fire_timers();
        if self.now >= self.next_tick {
            self.next_tick = self.now + TICK;
            self.upkeep();
        }
        self.flush();
    }

    /// When [`poll`](Self::poll) has something to do next.
    pub(crate) fn deadline(&self) -> Instant {
        let timer = self.timers.first_key_value().map(|((at, _), _)| *at);
        timer.map_or(self.next_tick, |t| t.min(self.next_tick))
    }

    /// True if the node is due to say hello to its seeds (whose names the caller looks
    /// up: the node does no I/O): every second while it is alone, every
    /// [`SEEDS_AGAIN`] after (to a seed that is not a member then: a restarted seed
    /// knows nobody, and learns the mesh from the hellos).
    pub(crate) fn wants_seeds(&mut self, now: Instant) -> bool {
        let every = if self.swim.num_members() == 0 { SEEDS_EVERY } else { SEEDS_AGAIN };
        let due = now >= self.next_seeds;
        if due {
            self.next_seeds = now + every;
        }
        due
    }

    /// Says hello to the seeds at `addrs` that are not members now.
    pub(crate) fn hello(&mut self, addrs: impl IntoIterator<Item = SocketAddr>, now: Instant, wall_ms: u64) {
        self.at(now, wall_ms);
        let own = self.swim.identity().addr;
        let is_member = |a: &SocketAddr| self.swim.member_at(a).is_some_and(|m| m.state() != foca::State::Down);
        let strangers: Vec<SocketAddr> = addrs.into_iter().filter(|a| *a != own && !is_member(a)).collect();
        for addr in strangers {
            self.send(addr, &Body::Hello);
        }
    }

    /// The datagrams to send, oldest first.
    pub(crate) fn sends(&mut self) -> std::vec::Drain<'_, (SocketAddr, Vec<u8>)> {
        self.out.drain(..)
    }

    /// The members with known facts, this node first, if they changed since last asked.
    pub(crate) fn view(&mut self) -> Option<Vec<Raw>> {
        if let Some(until) = self.settling {
            let alone = self.swim.num_members() == 0 && self.sync.is_none();
            let pulled_once = self.joining.is_none_or(|(rounds, _)| rounds > 0);
            let whole = !alone && pulled_once && self.table.known_count() >= self.swim.num_members();
            if whole || self.now >= until {
                self.settling = None;
            } else if !alone {
                return None;
            }
        }
        if !self.table.take_changed() {
            return None;
        }
        let me = Raw { id: *self.swim.identity(), facts: self.own.clone(), is_self: true };
        let members = std::iter::once(me)
            .chain(self.table.known().map(|(id, facts)| Raw { id: *id, facts: facts.clone(), is_self: false }))
            .collect();
        Some(members)
    }

    /// Members SWIM holds up (facts known or not).
    pub(crate) fn members_up(&self) -> usize {
        self.swim.num_members()
    }

    /// Starts a member-list pull with a random member now (the simulation measures one).
    pub(crate) fn pull_members_now(&mut self, now: Instant, wall_ms: u64) {
        self.at(now, wall_ms);
        if self.sync.is_none() {
            if let Some(peer) = self.random_member() {
                self.start_sync(peer);
            }
        }
        self.flush();
    }

    /// Members whose facts this node knows.
    pub(crate) fn members_known(&self) -> usize {
        self.table.known_count()
    }

    /// News and announcements this node still has to pass on, and its join if under way.
    pub(crate) fn backlog(&self) -> usize {
        // A joining node's member-list pulls are work left too (they end after a few
        // fruitless rounds).
        self.swim.updates_backlog() + self.swim.custom_broadcast_backlog() + usize::from(self.joining.is_some())
    }

    fn set_facts(&mut self, kv: BTreeMap<String, String>) {
        let Some(version) = self.table.set_own(&kv) else {
            tracing::warn!(
                limit = super::facts::MAX_FACTS,
                "this node's gossiped facts would pass their limit: the change is not gossiped"
            );
            return;
        };
        self.own = Arc::new(Facts { version, kv: kv.into_iter().collect() });
        let me = self.swim.identity();
        let a = Announced { addr: me.addr, started_ns: me.started_ns, version };
        let _ = self.swim.add_broadcast(&postcard::to_allocvec(&a).expect("encoding to memory"));
        // Spread it now rather than at the next periodic gossip.
        let _ = self.swim.gossip(&mut self.rt);
    }

    fn send(&mut self, to: SocketAddr, body: &Body) {
        let plain = wire::encode(&self.cluster, body);
        let datagram = match &self.sealer {
            Some((key, _)) => sealed::seal(key, self.wall_ms, &plain),
            None => plain,
        };
        self.cost.sent.fetch_add(1, Ordering::Relaxed);
        self.cost.sent_bytes.fetch_add(datagram.len() as u64, Ordering::Relaxed);
        self.out.push((to, datagram));
    }

    fn received(&mut self, datagram: &mut [u8], from: SocketAddr) {
        self.cost.received.fetch_add(1, Ordering::Relaxed);
        self.cost.received_bytes.fetch_add(datagram.len() as u64, Ordering::Relaxed);
        if wire::is_version1(datagram) {
            return self.unread(Unread::Version1, from);
        }
        let plain: &[u8] = match &mut self.sealer {
            Some((key, seen)) => match sealed::open(key, datagram, self.wall_ms, seen) {
                Ok(plain) => plain,
                Err(why) => {
                    match why {
                        sealed::Dropped::Forged => &self.cost.forged,
                        sealed::Dropped::Replayed | sealed::Dropped::Stale => &self.cost.replayed,
                    }
                    .fetch_add(1, Ordering::Relaxed);
                    DROPPED_WARNING.log(|also| {
                        tracing::warn!(%from, reason = why.as_str(), also_dropped = also, "gossip datagram dropped")
                    });
                    return;
                }
            },
            None if sealed::is_sealed(datagram) => {
                self.cost.forged.fetch_add(1, Ordering::Relaxed);
                DROPPED_WARNING.log(|also| {
                    tracing::warn!(%from, also_dropped = also, "sealed gossip dropped: this node has no gossip key")
                });
                return;
            }
            None => datagram,
        };
        match wire::decode(&self.cluster, plain) {
            Ok(body) => self.handle(body, from),
            Err(why) => self.unread(why, from),
        }
    }

    fn unread(&self, why: Unread, from: SocketAddr) {
        match why {
            Unread::Version1 => VERSION1_WARNING.log(|also| {
                tracing::warn!(
                    %from,
                    also_refused = also,
                    "gossip of a meshrpc 0.1.0 node refused (gossip version 1; this node: version {}): \
                     upgrade it (docs/deploy.md, \"Upgrading\")",
                    wire::VERSION
                )
            }),
            Unread::OtherCluster => {}
            Unread::Garbage | Unread::Malformed => {
                crate::transport::GOSSIP_GARBAGE.fetch_add(1, Ordering::Relaxed);
                GARBAGE_WARNING.log(|also| {
                    tracing::warn!(%from, also_dropped = also, "a datagram on the gossip port is not gossip: dropped")
                });
            }
        }
    }

    fn handle(&mut self, body: Body, from: SocketAddr) {
        match body {
            Body::Swim(data) => {
                if let Err(e) = self.swim.handle_data(&data, &mut self.rt) {
                    tracing::debug!(%from, error = %e, "SWIM message not taken");
                }
                // A node that knows nobody (a seed restarted, a node cut off for long)
                // while members still probe its former self asks them who they are, and
                // joins through them.
                if self.swim.num_members() == 0 && self.now >= self.next_hello_back {
                    self.next_hello_back = self.now + TICK;
                    self.send(from, &Body::Hello);
                }
                let announced = std::mem::take(&mut *self.inbox.lock().unwrap());
                for a in &announced {
                    self.table.announced(a);
                }
            }
            Body::Hello => {
                let me = *self.swim.identity();
                self.send(from, &Body::HelloBack(me));
            }
            Body::HelloBack(id) => {
                if id.addr != self.swim.identity().addr {
                    let _ = self.swim.announce(id, &mut self.rt);
                    // A joiner pulls the member list from its seed; a member does not
                    // (the seed answering may be the one that knows nobody).
                    if self.sync.is_none() && self.joining.is_some() {
                        self.start_sync(id.addr);
                    }
                }
            }
            Body::Facts { started_ns, have, page } => {
                if let Some(answer) = self.table.answer(started_ns, have, page) {
                    self.send(from, &answer);
                }
            }
            Body::FactsPage { of, started_ns, version, page, pages, bytes } => {
                for ask in self.table.page(of, started_ns, version, page, pages, bytes) {
                    self.send(of, &ask);
                }
            }
            Body::Members { page } => {
                let me = Member::alive(*self.swim.identity());
                let all = self.swim.iter_membership_state();
                let total = all.len() + 1;
                let chunk: Vec<Member<NodeId>> = std::iter::once(me)
                    .chain(all.cloned())
                    .skip(usize::from(page) * MEMBERS_PER_PAGE)
                    .take(MEMBERS_PER_PAGE)
                    .collect();
                let pages = total.div_ceil(MEMBERS_PER_PAGE).min(usize::from(u16::MAX)) as u16;
                let bytes = postcard::to_allocvec(&chunk).expect("encoding to memory");
                let of = self.swim.identity().addr;
                self.send(from, &Body::MembersPage { of, page, pages, bytes });
            }
            Body::MembersPage { of, page, pages, bytes } => self.members_page(of, page, pages, &bytes),
        }
        self.outrank_former_self();
    }

    /// A restarted node is a new identity at the same address, and wins over its former
    /// self by starting later. When the wall clock was stepped back between the two (NTP,
    /// a restored VM) it starts *earlier*: members would keep the former identity (foca
    /// keeps a down member for a day) and ignore the new one, so the node stayed invisible
    /// — found by the simulation (sim/, seed 87). So once this node hears of an identity
    /// at its own address that outranks it, it takes one that outranks that.
    fn outrank_former_self(&mut self) {
        let me = *self.swim.identity();
        let Some(former) = self.swim.member_at(&me.addr).map(|m| *m.id()) else { return };
        if former == me || !foca::Identity::win_addr_conflict(&former, &me) {
            return;
        }
        // Once is what a restart needs. More means another live process claims this
        // address (a restored VM, two containers sharing an IP and port): renaming on
        // would make the two leapfrog for ever, so the later of them keeps it.
        if self.renames >= MAX_RENAMES {
            SHARED_ADDR_WARNING.log(|also| {
                tracing::warn!(addr = %me.addr, also, "another node gossips from this node's address: check for two processes with one address")
            });
            return;
        }
        self.renames += 1;
        let renamed = NodeId { started_ns: former.started_ns.saturating_add(1), bump: 0, ..me };
        if self.swim.change_identity(renamed, &mut self.rt).is_err() {
            return;
        }
        tracing::info!(
            addr = %me.addr,
            "a former run of this node started later by the wall clock (stepped back since?): outranking it"
        );
        self.table.renamed(renamed.started_ns);
        let a = Announced { addr: me.addr, started_ns: renamed.started_ns, version: self.table.own_version() };
        let _ = self.swim.add_broadcast(&postcard::to_allocvec(&a).expect("encoding to memory"));
    }

    fn start_sync(&mut self, peer: SocketAddr) {
        let members_before = self.swim.num_members();
        self.sync = Some(Sync { peer, pages: None, asked: 1, got: 0, since: self.now, members_before });
        self.send(peer, &Body::Members { page: 0 });
    }

    fn members_page(&mut self, from: SocketAddr, page: u16, pages: u16, bytes: &[u8]) {
        let Some(sync) = &mut self.sync else { return };
        if sync.peer != from || page >= pages {
            return;
        }
        let Ok(members) = postcard::from_bytes::<Vec<Member<NodeId>>>(bytes) else { return };
        if members.len() > MEMBERS_PER_PAGE {
            return;
        }
        if sync.pages.is_none() {
            sync.pages = Some(pages);
        }
        let total = sync.pages.expect("set");
        sync.got += 1;
        let mut ask = Vec::new();
        while sync.asked < total && sync.asked < sync.got + PAGES_AHEAD {
            ask.push(sync.asked);
            sync.asked += 1;
        }
        let done = sync.got >= total;
        // What a pull teaches is not gossiped on: the other side has it, and the rest get
        // it by their own pulls (gossiping it would flood every node with every join).
        let _ = self.swim.apply_many(members.into_iter(), false, &mut self.rt);
        for p in ask {
            self.send(from, &Body::Members { page: p });
        }
        if done {
            self.sync_done();
        }
    }

    fn sync_done(&mut self) {
        let Some(sync) = self.sync.take() else { return };
        let learned = self.swim.num_members().saturating_sub(sync.members_before);
        let now = self.now;
        self.next_sync = match &mut self.joining {
            Some((rounds, fruitless)) => {
                *rounds += 1;
                *fruitless = if learned == 0 { *fruitless + 1 } else { 0 };
                if *fruitless >= JOIN_FRUITLESS || *rounds >= JOIN_SYNCS {
                    self.joining = None;
                    now + self.anti_entropy_wait()
                } else {
                    now + JOIN_SYNC_EVERY
                }
            }
            None => now + self.anti_entropy_wait(),
        };
    }

    fn anti_entropy_wait(&mut self) -> Duration {
        anti_entropy_every(self.swim.num_members()).mul_f64(self.rng.random_range(0.5..1.5))
    }

    fn random_member(&mut self) -> Option<SocketAddr> {
        self.swim.random_member().map(|id| id.addr)
    }

    fn upkeep(&mut self) {
        let now = self.now;
        // SWIM's settings follow the size of the mesh (dissemination rounds grow with log N).
        let class = (self.swim.num_members() + 1).next_power_of_two().trailing_zeros();
        if class != self.size_class {
            self.size_class = class;
            let _ = self.swim.set_config(swim_config(1 << class, &self.config));
        }
        if self.sync.as_ref().is_some_and(|s| now.duration_since(s.since) > SYNC_TIMEOUT) {
            self.sync_done();
        }
        if self.sync.is_none() && now >= self.next_sync {
            if let Some(peer) = self.random_member() {
                self.start_sync(peer);
            }
        }
        if now >= self.next_recheck {
            self.next_recheck = now + RECHECK_EVERY;
            if let Some(peer) = self.random_member() {
                self.table.recheck(peer);
            }
        }
        for (to, ask) in self.table.asks(now) {
            self.send(to, &ask);
        }
    }

    fn fire_timers(&mut self) {
        let now = self.now;
        while let Some(entry) = self.timers.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let timer = entry.remove();
            let _ = self.swim.handle_timer(timer, &mut self.rt);
        }
    }

    /// Queues what foca wants sent, schedules its timers, applies its news, and asks
    /// for the facts of members newly up.
    fn flush(&mut self) {
        while let Some((to, data)) = self.rt.to_send() {
            self.send(to.addr, &Body::Swim(data.to_vec()));
        }
        while let Some((after, timer)) = self.rt.to_schedule() {
            self.timer_seq += 1;
            self.timers.insert((self.now + after, self.timer_seq), timer);
        }
        while let Some(news) = self.rt.to_notify() {
            if let Some(seen) = &mut self.news {
                match &news {
                    OwnedNotification::MemberUp(id) => seen.push((true, *id)),
                    OwnedNotification::MemberDown(id) => seen.push((false, *id)),
                    // A member renamed (a restart, a rejoin) was never held down here.
                    _ => {}
                }
            }
            match news {
                OwnedNotification::MemberUp(id) => self.table.up(id),
                OwnedNotification::MemberDown(id) => self.table.down(&id),
                OwnedNotification::Rename(old, new) => {
                    self.table.down(&old);
                    if self.swim.member_at(&new.addr).is_some_and(|m| *m.id() == new && m.state() != foca::State::Down)
                    {
                        self.table.up(new);
                    }
                }
                _ => {}
            }
        }
        // Newly known members' facts are asked for at once, not at the next tick.
        for (to, ask) in self.table.asks(self.now) {
            self.send(to, &ask);
        }
    }
}

pub(crate) fn now_ms() -> u64 {
    crate::clock::wall_ms()
}

/// When a node starts (Unix ns): its identity, with its gossip address.
pub(crate) fn now_ns() -> u64 {
    crate::clock::wall_ns()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(port: u16, config: &GossipConfig, now: Instant) -> Node {
        let id = NodeId { addr: SocketAddr::from(([127, 0, 0, 1], port)), started_ns: u64::from(port), bump: 0 };
        let kv = BTreeMap::from([("name".to_owned(), format!("n{port}"))]);
        Node::new(id, "test", config, None, &kv, Arc::default(), u64::from(port), now)
    }

    /// Delivers every datagram the nodes send, 1 ms of simulated time a step.
    fn step(nodes: &mut [Node], now: Instant) {
        let mut sent = Vec::new();
        for (i, n) in nodes.iter_mut().enumerate() {
            n.poll(now, 0);
            sent.extend(n.sends().map(|(to, data)| (i, to, data)));
        }
        for (from, to, mut data) in sent {
            let from = SocketAddr::from(([127, 0, 0, 1], 1000 + from as u16));
            if let Some(n) = nodes.get_mut(usize::from(to.port() - 1000)) {
                n.receive(&mut data, from, now, 0);
            }
        }
    }

    #[test]
    fn a_joiner_and_its_new_facts_reach_the_seed_in_round_trips_not_rounds() {
        // Simulated time: the join is hello, hello-back, announce, a facts pull; a change
        // of facts is an announcement and a pull — none waits for a probe period.
        let start = crate::clock::now();
        let config = GossipConfig::default();
        let mut nodes = vec![node(1000, &config, start)];
        let mut now = start;
        while now < start + Duration::from_secs(2) {
            now += Duration::from_millis(1);
            step(&mut nodes, now);
            let _ = nodes[0].view();
        }
        let joined = now;
        nodes.push(node(1001, &config, now));
        nodes[1].hello([SocketAddr::from(([127, 0, 0, 1], 1000))], now, 0);
        let seen = |nodes: &mut Vec<Node>, what: &str| {
            nodes[0].view().is_some_and(|v| v.iter().any(|r| r.facts.kv.iter().any(|(_, x)| x == what)))
        };
        let mut known = None;
        while known.is_none() && now < joined + Duration::from_secs(2) {
            now += Duration::from_millis(1);
            step(&mut nodes, now);
            known = seen(&mut nodes, "n1001").then(|| now - joined);
        }
        let known = known.expect("the joiner never reached the seed's view");
        assert!(known <= Duration::from_millis(20), "joiner in the seed's view after {known:?}");
        let serving =
            BTreeMap::from([("name".to_owned(), "n1001".to_owned()), ("state".to_owned(), "serving".to_owned())]);
        let changed = now;
        nodes[1].facts(serving, now, 0);
        let mut known = None;
        while known.is_none() && now < changed + Duration::from_secs(2) {
            now += Duration::from_millis(1);
            step(&mut nodes, now);
            known = seen(&mut nodes, "serving").then(|| now - changed);
        }
        let known = known.expect("the new facts never reached the seed's view");
        // An announcement rides the next gossip round (every `interval`, 100 ms).
        assert!(known <= config.interval + Duration::from_millis(20), "new facts in the seed's view after {known:?}");
    }

    #[test]
    fn a_node_joining_an_idle_mesh_learns_every_member_and_its_facts() {
        // The mesh forms and goes quiet (no news left to pass on); a newcomer learns it all
        // from its pulls.
        let start = crate::clock::now();
        let config = GossipConfig::default();
        let mut nodes: Vec<Node> = (0..=32).map(|i| node(1000 + i, &config, start)).collect();
        let seed = SocketAddr::from(([127, 0, 0, 1], 1000));
        for n in &mut nodes[1..] {
            n.hello([seed], start, 0);
        }
        let mut now = start;
        while now < start + Duration::from_secs(30) {
            now += Duration::from_millis(5);
            step(&mut nodes, now);
        }
        let formed: Vec<usize> = nodes.iter().map(|n| n.table.known().count()).collect();
        assert!(formed.iter().all(|k| *k == 32), "the mesh formed: {formed:?}");
        nodes.push(node(1033, &config, now));
        nodes[33].hello([seed], now, 0);
        let joined = now;
        while now < joined + Duration::from_secs(10) {
            now += Duration::from_millis(5);
            step(&mut nodes, now);
        }
        assert_eq!((nodes[33].members_up(), nodes[33].table.known().count()), (33, 33), "what the newcomer knows");
    }

    #[test]
    fn a_node_holds_no_more_members_than_its_cap() {
        // Without a key anyone can gossip: 40 nodes say hello to one that holds at most 8.
        let start = crate::clock::now();
        let capped = GossipConfig { max_members: 8, ..GossipConfig::default() };
        let mut nodes: Vec<Node> = vec![node(1000, &capped, start)];
        nodes.extend((1..=40).map(|i| node(1000 + i, &GossipConfig::default(), start)));
        let target = SocketAddr::from(([127, 0, 0, 1], 1000));
        for n in &mut nodes[1..] {
            n.hello([target], start, 0);
        }
        let mut now = start;
        while now < start + Duration::from_secs(20) {
            now += Duration::from_millis(10);
            step(&mut nodes, now);
            let held = nodes[0].swim.iter_membership_state().count();
            assert!(held <= 8, "holds {held} members");
        }
        assert_eq!(nodes[0].members_up(), 8, "the cap is reached, and kept");
        let others: Vec<usize> = nodes[1..].iter().map(Node::members_up).collect();
        assert!(others.iter().all(|up| *up >= 39), "the others still form their mesh: {others:?}");
        assert_eq!(nodes[0].table.known().count(), 8, "facts held only for members held");
    }
}
