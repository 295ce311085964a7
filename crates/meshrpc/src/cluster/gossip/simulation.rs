//! For the gossip simulation (`bench/gossip-sim`): a meshrpc gossip node without I/O, as
//! a node runs it (its settings, wire format, facts and joins), driven by the caller's
//! clock and network. Not part of the API.

use std::{net::SocketAddr, sync::Arc, time::Instant};

use super::{swim, wire, GossipConfig};

/// How often a node pulls the member list from a random member, on average, in a mesh of
/// `members`.
pub fn anti_entropy_every(members: usize) -> std::time::Duration {
    swim::anti_entropy_every(members)
}

/// The largest datagram a node sends.
pub const MAX_DATAGRAM: usize = wire::MAX_DATAGRAM;

/// One gossip node.
pub struct Node(swim::Node);

impl Node {
    /// The node gossiping at `addr`, started at `started_ns`, of cluster `tag`, with
    /// these facts; `seed` seeds its random choices.
    pub fn new(
        addr: SocketAddr,
        started_ns: u64,
        tag: &str,
        kv: &[(&str, &str)],
        key: Option<[u8; 32]>,
        seed: u64,
        now: Instant,
    ) -> Node {
        let id = wire::NodeId { addr, started_ns, bump: 0 };
        let kv = kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let mut node = swim::Node::new(id, tag, &GossipConfig::default(), key, &kv, Arc::default(), seed, now);
        node.news = Some(Vec::new());
        Node(node)
    }

    /// A datagram from `from`.
    pub fn receive(&mut self, datagram: &mut [u8], from: SocketAddr, now: Instant, wall_ms: u64) {
        self.0.receive(datagram, from, now, wall_ms)
    }

    /// Timers and upkeep due by `now`.
    pub fn poll(&mut self, now: Instant, wall_ms: u64) {
        self.0.poll(now, wall_ms)
    }

    /// When `poll` has something to do next.
    pub fn deadline(&self) -> Instant {
        self.0.deadline()
    }

    /// True if the node is alone and due to say hello to its seeds.
    pub fn wants_seeds(&mut self, now: Instant) -> bool {
        self.0.wants_seeds(now)
    }

    /// Says hello to the seeds at `addrs`.
    pub fn hello(&mut self, addrs: &[SocketAddr], now: Instant, wall_ms: u64) {
        self.0.hello(addrs.iter().copied(), now, wall_ms)
    }

    /// Leaves the cluster.
    pub fn leave(&mut self, now: Instant, wall_ms: u64) {
        self.0.leave(now, wall_ms)
    }

    /// The datagrams to send.
    pub fn sends(&mut self) -> Vec<(SocketAddr, Vec<u8>)> {
        self.0.sends().collect()
    }

    /// Members up, and members whose facts are known.
    pub fn members(&self) -> (usize, usize) {
        (self.0.members_up(), self.0.members_known())
    }

    /// Members it saw go up (`true`) or down since last asked: (gossip address, start).
    pub fn news(&mut self) -> Vec<(bool, SocketAddr, u64)> {
        let news = self.0.news.as_mut().map(std::mem::take).unwrap_or_default();
        news.into_iter().map(|(up, id)| (up, id.addr, id.started_ns)).collect()
    }

    /// News it still has to pass on, and its join if under way (pulls of the member list).
    pub fn backlog(&self) -> usize {
        self.0.backlog()
    }

    /// Pulls the member list from a random member now (anti-entropy does it once every
    /// [`anti_entropy_every`] on average).
    pub fn pull_members_now(&mut self, now: Instant, wall_ms: u64) {
        self.0.pull_members_now(now, wall_ms)
    }

    /// Whether its view changed since last asked.
    pub fn view_changed(&mut self) -> bool {
        self.0.view().is_some()
    }
}
