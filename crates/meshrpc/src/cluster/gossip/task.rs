//! The gossip node on a socket: one tokio task per node owns the gossip port and its
//! [`swim::Node`], feeds it datagrams, commands and the time, sends what it says to send,
//! looks seed names up for it, and hands its view to the [`Membership`]. Nothing else
//! reads or writes gossip.
//!
//! [`Membership`]: super::Membership

use std::{collections::BTreeMap, net::SocketAddr, sync::Arc};

use tokio::{
    net::UdpSocket,
    sync::{mpsc, oneshot, watch},
};

use super::{
    cost::GossipCost,
    swim::{self, now_ms, Node, Raw},
    wire::NodeId,
    GossipConfig,
};
use crate::transport::{Datagrams, Network};

/// What the node asks of its gossip task.
pub(crate) enum Command {
    /// New facts about this node.
    Facts(BTreeMap<String, String>),
    /// Leave the cluster (members know at once), then stop.
    Leave(oneshot::Sender<()>),
}

/// Binds `bind` and gossips there as `id`, a member of cluster `tag`, until the command
/// sender is dropped or asks it to leave.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn spawn(
    id: NodeId,
    bind: SocketAddr,
    tag: &str,
    seeds: Vec<String>,
    config: &GossipConfig,
    key: Option<[u8; 32]>,
    kv: &BTreeMap<String, String>,
    cost: Arc<GossipCost>,
    network: Option<&Arc<dyn Network>>,
) -> std::io::Result<(mpsc::UnboundedSender<Command>, watch::Receiver<Arc<Vec<Raw>>>)> {
    let socket = match network {
        None => Socket::Os(UdpSocket::bind(bind).await?),
        Some(network) => Socket::Seam(network.bind_datagrams(bind).await?),
    };
    let node = Node::new(id, tag, config, key, kv, cost, swim::random_seed(), crate::clock::now());
    let (view_tx, view) = watch::channel(Arc::new(Vec::new()));
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(run(node, socket, seeds, rx, view_tx));
    Ok((tx, view))
}

/// The gossip port: the operating system's, or a [`Network`]'s.
enum Socket {
    Os(UdpSocket),
    Seam(Box<dyn Datagrams>),
}

impl Socket {
    async fn recv_from(&self, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr)> {
        match self {
            Socket::Os(socket) => socket.recv_from(buf).await,
            Socket::Seam(socket) => socket.recv_from(buf).await,
        }
    }

    fn try_send_to(&self, datagram: &[u8], to: SocketAddr) -> std::io::Result<usize> {
        match self {
            Socket::Os(socket) => socket.try_send_to(datagram, to),
            Socket::Seam(socket) => socket.try_send_to(datagram, to),
        }
    }
}

async fn run(
    mut node: Node,
    socket: Socket,
    seeds: Vec<String>,
    mut commands: mpsc::UnboundedReceiver<Command>,
    view: watch::Sender<Arc<Vec<Raw>>>,
) {
    let mut buf = vec![0u8; 65_536];
    let (found_tx, mut found_rx) = mpsc::unbounded_channel::<Vec<SocketAddr>>();
    loop {
        if let Some(members) = node.view() {
            view.send_replace(Arc::new(members));
        }
        for (to, datagram) in node.sends() {
            send(&socket, &datagram, to).await;
        }
        if node.wants_seeds(crate::clock::now()) {
            // Addresses at once; names looked up aside: a slow name server must not hold
            // up acks to probes.
            let (addrs, names): (Vec<_>, Vec<_>) = seeds.iter().partition(|s| s.parse::<SocketAddr>().is_ok());
            node.hello(addrs.iter().filter_map(|s| s.parse().ok()), crate::clock::now(), now_ms());
            if !names.is_empty() {
                let (names, found) = (names.into_iter().cloned().collect::<Vec<_>>(), found_tx.clone());
                tokio::spawn(async move {
                    let _ = found.send(look_up(&names).await);
                });
            }
            continue;
        }
        let deadline = node.deadline();
        tokio::select! {
            Some(addrs) = found_rx.recv() => node.hello(addrs, crate::clock::now(), now_ms()),
            received = socket.recv_from(&mut buf) => {
                if let Ok((len, from)) = received {
                    node.receive(&mut buf[..len], from, crate::clock::now(), now_ms());
                }
            }
            command = commands.recv() => match command {
                Some(Command::Facts(kv)) => node.facts(kv, crate::clock::now(), now_ms()),
                Some(Command::Leave(done)) => {
                    leave(&mut node, &socket);
                    let _ = done.send(());
                    return;
                }
                // The membership is gone (its cluster dropped): leave as well, so that
                // members do not wait for failure detection.
                None => return leave(&mut node, &socket),
            },
            _ = tokio::time::sleep_until(deadline.into()) => node.poll(crate::clock::now(), now_ms()),
        }
    }
}

/// Sends one datagram. tokio learns that a new socket is writable only once its reactor
/// has turned, and until then `try_send_to` says it would block: a node's first datagram —
/// its hello to the seed — was dropped that way, often, and the join waited for the next
/// hello, a second later. So a datagram that would block waits for the socket, briefly;
/// one the kernel still cannot take is lost, as on the wire.
async fn send(socket: &Socket, datagram: &[u8], to: SocketAddr) {
    if let Err(e) = socket.try_send_to(datagram, to) {
        if let (Socket::Os(socket), std::io::ErrorKind::WouldBlock) = (socket, e.kind()) {
            let _ = tokio::time::timeout(SEND_WAIT, socket.send_to(datagram, to)).await;
        }
    }
}

/// How long a datagram waits for room in the socket's send buffer.
const SEND_WAIT: std::time::Duration = std::time::Duration::from_millis(20);

fn leave(node: &mut Node, socket: &Socket) {
    node.leave(crate::clock::now(), now_ms());
    for (to, datagram) in node.sends() {
        let _ = socket.try_send_to(&datagram, to);
    }
}

/// The addresses of the seeds: names are looked up again each time (in Swarm or
/// Kubernetes a seed's name often has no address for the first seconds).
async fn look_up(seeds: &[String]) -> Vec<SocketAddr> {
    let mut addrs = Vec::new();
    for seed in seeds {
        match seed.parse::<SocketAddr>() {
            Ok(addr) => addrs.push(addr),
            Err(_) => {
                let found = tokio::time::timeout(swim::SEEDS_EVERY, tokio::net::lookup_host(seed.as_str())).await;
                if let Ok(Ok(found)) = found {
                    addrs.extend(found);
                }
            }
        }
    }
    addrs
}
