//! chitchat as meshrpc 0.1.0 … (gossip version 1) ran it, kept here as the model the SWIM
//! membership is measured against: its configuration, and the transport wrapper that
//! thinned a node's gossip rounds in large meshes (issue 22).
//!
//! A node starts a gossip round every interval with 3 random peers, and every round's
//! messages carry a digest of every node; past [`FULL_RATE_UP_TO`] live members a node
//! starts only one in ⌈N / FULL_RATE_UP_TO⌉ of its rounds (answers always go). Rounds to
//! seeds and every round of a node's first [`JOINING`] go out.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use async_trait::async_trait;
use chitchat::{
    transport::{RecvOutcome, SendOutcome, Socket, Transport},
    ChitchatConfig, ChitchatEnvelope, ChitchatId, ChitchatMessage, FailureDetectorConfig, ProtocolVersion,
};
// tokio's clock, as chitchat's own: under a paused clock a node's joining period is
// measured in the same virtual time as its rounds.
use tokio::time::Instant;

/// Up to this many live members every round goes out (the gossip of small meshes is
/// unchanged).
pub const FULL_RATE_UP_TO: usize = 24;
/// A node's own rounds all go out for this long after it starts.
pub const JOINING: Duration = Duration::from_secs(3);

/// chitchat as meshrpc runs it: the cluster id, gossip interval, failure detection.
pub fn config(
    id: ChitchatId,
    tag: &str,
    listen_addr: SocketAddr,
    seeds: Vec<String>,
    interval: Duration,
) -> ChitchatConfig {
    ChitchatConfig {
        chitchat_id: id,
        cluster_id: format!("meshrpc/{tag}"),
        gossip_interval: interval,
        listen_addr,
        seed_nodes: seeds,
        failure_detector_config: FailureDetectorConfig {
            phi_threshold: 8.0,
            // Inter-arrival samples kept per peer (8 bytes each): 100 give phi a steady
            // estimate; 1,000 cost a node 8 KiB for every other node (11 GB for a simulated
            // mesh of 1,000).
            sampling_window_size: 100,
            max_interval: Duration::from_secs(2),
            initial_interval: interval * 5,
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

/// Wraps a transport so that a node in a large mesh starts fewer gossip rounds.
pub struct Thinned<T> {
    pub inner: T,
    /// Live members, as the node's view counts them.
    pub live: Arc<AtomicUsize>,
    pub seeds: Vec<SocketAddr>,
}

#[async_trait]
impl<T: Transport> Transport for Thinned<T> {
    async fn open(&self, listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        Ok(Box::new(ThinnedSocket {
            inner: self.inner.open(listen_addr).await?,
            live: self.live.clone(),
            seeds: self.seeds.clone(),
            started: Instant::now(),
            rounds: 0,
        }))
    }
}

struct ThinnedSocket {
    inner: Box<dyn Socket>,
    live: Arc<AtomicUsize>,
    seeds: Vec<SocketAddr>,
    started: Instant,
    rounds: usize,
}

/// Whether the `round`-th `Syn` goes out in a mesh of `live` members.
pub fn starts_round(round: usize, live: usize) -> bool {
    let stride = live.div_ceil(FULL_RATE_UP_TO).max(1);
    round.is_multiple_of(stride)
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
        self.inner.send(to, envelope).await
    }

    async fn recv(&mut self) -> anyhow::Result<RecvOutcome> {
        self.inner.recv().await
    }
}

/// `inner`, thinned as a node whose view counts `live` members.
pub fn transport<T: Transport>(inner: T, live: Arc<AtomicUsize>, seeds: Vec<SocketAddr>) -> impl Transport {
    Thinned { inner, live, seeds }
}
