//! Gossip that costs a node the same in a mesh of 128 as in one of 24 (issue 22).
//!
//! chitchat starts a gossip round every interval with `GOSSIP_COUNT` (3) random peers,
//! and every round's messages carry a digest of every node: a node's idle work grows with
//! the mesh (measured: 2.6 × per node at 128 nodes against 16). Its interval is fixed at
//! start, so the transport thins the rounds instead: past [`FULL_RATE_UP_TO`] live
//! members, a node starts only one in ⌈N / FULL_RATE_UP_TO⌉ of its rounds (a round it
//! skips is a `Syn` not sent; answers to others' rounds always go). Rounds to seeds and
//! every round of a node's first [`JOINING`] go out, so a new node is known at once.
//! Failover does not wait on gossip: a peer a node calls is watched by its mesh
//! connection's keepalive.
//!
//! The same wrapper counts what gossip costs the node ([`GossipCost`], in `/metrics`).

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use async_trait::async_trait;
// tokio's clock, as chitchat's own: under a paused clock (the gossip simulation) a node's
// joining period is measured in the same virtual time as its rounds.
use chitchat::{
    transport::{RecvOutcome, SendOutcome, Socket, Transport},
    ChitchatEnvelope, ChitchatMessage,
};
use tokio::time::Instant;

/// Up to this many live members every round goes out (the gossip of small meshes is
/// unchanged).
pub(crate) const FULL_RATE_UP_TO: usize = 24;
/// A node's own rounds all go out for this long after it starts.
pub(crate) const JOINING: Duration = Duration::from_secs(3);

/// Gossip datagrams and bytes a node sent and received (sent as sealed, received as
/// opened, with `tls`).
#[derive(Debug, Default)]
pub(crate) struct GossipCost {
    pub(crate) sent: AtomicU64,
    pub(crate) sent_bytes: AtomicU64,
    pub(crate) received: AtomicU64,
    pub(crate) received_bytes: AtomicU64,
    /// Datagrams dropped by sealed gossip (feature `tls`): not sealed with the cluster's
    /// key (random or forged), sealed but replayed or too old, and unsealed ones another
    /// process sent to chitchat's loopback socket. This node's own, not the process's.
    pub(crate) forged: AtomicU64,
    pub(crate) replayed: AtomicU64,
    pub(crate) injected: AtomicU64,
}

impl GossipCost {
    fn count(messages: &AtomicU64, bytes: &AtomicU64, size: usize) {
        messages.fetch_add(1, Ordering::Relaxed);
        bytes.fetch_add(size as u64, Ordering::Relaxed);
    }

    pub(crate) fn figures(&self) -> [crate::metrics::Figure; 7] {
        use crate::metrics::Figure;
        let v = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let (messages, bytes) = ("Gossip datagrams, by direction", "Bytes of gossip datagrams, by direction");
        [
            Figure::counter("meshrpc_gossip_datagrams", messages, v(&self.sent)).with_label("direction", "sent"),
            Figure::counter("meshrpc_gossip_datagrams", messages, v(&self.received))
                .with_label("direction", "received"),
            Figure::counter("meshrpc_gossip_bytes", bytes, v(&self.sent_bytes)).with_label("direction", "sent"),
            Figure::counter("meshrpc_gossip_bytes", bytes, v(&self.received_bytes)).with_label("direction", "received"),
            Figure::counter(
                "meshrpc_gossip_forged",
                "Gossip datagrams dropped: not sealed with the cluster's gossip key",
                v(&self.forged),
            ),
            Figure::counter(
                "meshrpc_gossip_replayed",
                "Sealed gossip datagrams dropped as replayed or too old",
                v(&self.replayed),
            ),
            Figure::counter(
                "meshrpc_gossip_injected",
                "Unsealed gossip datagrams sent to a node's loopback hand-off by another process, dropped",
                v(&self.injected),
            ),
        ]
    }
}

/// Wraps a transport so that a node in a large mesh starts fewer gossip rounds.
pub(crate) struct Thinned<T> {
    pub(crate) inner: T,
    /// Live members, as the node's view counts them.
    pub(crate) live: Arc<AtomicUsize>,
    pub(crate) seeds: Vec<SocketAddr>,
    pub(crate) cost: Arc<GossipCost>,
}

#[async_trait]
impl<T: Transport> Transport for Thinned<T> {
    async fn open(&self, listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        Ok(Box::new(ThinnedSocket {
            inner: self.inner.open(listen_addr).await?,
            live: self.live.clone(),
            seeds: self.seeds.clone(),
            cost: self.cost.clone(),
            started: Instant::now(),
            rounds: 0,
        }))
    }
}

struct ThinnedSocket {
    inner: Box<dyn Socket>,
    live: Arc<AtomicUsize>,
    seeds: Vec<SocketAddr>,
    cost: Arc<GossipCost>,
    started: Instant,
    rounds: usize,
}

/// Whether the `round`-th `Syn` goes out in a mesh of `live` members.
pub(crate) fn starts_round(round: usize, live: usize) -> bool {
    let stride = live.div_ceil(FULL_RATE_UP_TO).max(1);
    round % stride == 0
}

#[async_trait]
impl Socket for ThinnedSocket {
    fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        self.inner.local_addr()
    }

    async fn send(&mut self, to: SocketAddr, envelope: ChitchatEnvelope) -> anyhow::Result<SendOutcome> {
        let thinnable = matches!(envelope.message, ChitchatMessage::Syn { .. })
            && self.started.elapsed() > JOINING
            && !self.seeds.contains(&to);
        if thinnable {
            self.rounds = self.rounds.wrapping_add(1);
            if !starts_round(self.rounds, self.live.load(Ordering::Relaxed)) {
                return Ok(SendOutcome { num_bytes_sent: 0 });
            }
        }
        let outcome = self.inner.send(to, envelope).await?;
        GossipCost::count(&self.cost.sent, &self.cost.sent_bytes, outcome.num_bytes_sent);
        Ok(outcome)
    }

    async fn recv(&mut self) -> anyhow::Result<RecvOutcome> {
        let outcome = self.inner.recv().await?;
        GossipCost::count(&self.cost.received, &self.cost.received_bytes, outcome.num_bytes_received);
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_meshes_gossip_every_round_large_ones_a_share() {
        let share = |live: usize| (0..1200).filter(|r| starts_round(*r, live)).count();
        assert_eq!(share(16), 1200);
        assert_eq!(share(24), 1200);
        assert_eq!(share(48), 600);
        assert_eq!(share(128), 200); // one in ⌈128 / 24⌉ = 6
        assert_eq!(share(1000), 1200 / 42 + 1);
    }
}

/// For the gossip simulation (`bench/`): chitchat's configuration and transport as
/// meshrpc sets them up. Not part of the API.
#[doc(hidden)]
pub mod simulation {
    use std::{net::SocketAddr, sync::atomic::AtomicUsize, sync::Arc};

    /// Up to this many live members every gossip round goes out.
    pub const FULL_RATE_UP_TO: usize = super::FULL_RATE_UP_TO;

    /// The configuration of a node `id` of cluster `tag`: meshrpc's, but for a round
    /// every `interval` (the default is 100 ms; a simulation of many nodes on few cores
    /// slows time down to keep up).
    pub fn config(
        id: chitchat::ChitchatId,
        tag: &str,
        seeds: Vec<String>,
        interval: std::time::Duration,
    ) -> chitchat::ChitchatConfig {
        let listen = id.gossip_advertise_addr;
        let gossip = crate::cluster::GossipConfig { interval, ..Default::default() };
        super::super::chitchat_config(id, tag, listen, seeds, &gossip)
    }

    /// `inner`, thinned as a node whose view counts `live` members.
    pub fn transport<T: chitchat::transport::Transport>(
        inner: T,
        live: Arc<AtomicUsize>,
        seeds: Vec<SocketAddr>,
    ) -> impl chitchat::transport::Transport {
        super::Thinned { inner, live, seeds, cost: Default::default() }
    }
}
