//! Gossip impostors: a gossip node that speaks meshrpc's gossip (version 2) from this host
//! with whatever facts it is told, as an attacker would — unsealed (a process with no key
//! at all), or sealed with the cluster's gossip key (a holder of `gossip.key` and nothing
//! else); and a node of meshrpc 0.1.0 (plain chitchat, gossip version 1).

use std::{
    net::SocketAddr,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use chitchat::{
    spawn_chitchat, transport::UdpTransport, ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig,
    ProtocolVersion,
};

/// A gossip node gossiping `kv` about itself to `seeds` in cluster `tag`, until dropped.
pub struct Impostor {
    _node: meshrpc::__private::GossipImpostor,
}

impl Impostor {
    /// Starts it on a free loopback port; `key`: seal with this gossip key.
    pub async fn start(tag: &str, seeds: &[SocketAddr], kv: &[(&str, &str)], key: Option<[u8; 32]>) -> Impostor {
        let ip = std::net::Ipv4Addr::LOCALHOST.into();
        let node = meshrpc::__private::GossipImpostor::start(tag, ip, seeds, kv, key).await;
        Impostor { _node: node.expect("the impostor gossips") }
    }
}

/// A node of meshrpc 0.1.0 (chitchat, unsealed) gossiping `kv` to `seeds`, until dropped.
pub struct OldNode {
    _handle: ChitchatHandle,
}

impl OldNode {
    /// Starts it on a free loopback port.
    pub async fn start(tag: &str, seeds: &[SocketAddr], kv: &[(&str, &str)]) -> OldNode {
        let listen = SocketAddr::from(([127, 0, 0, 1], crate::harness::free_port()));
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
        let config = ChitchatConfig {
            chitchat_id: ChitchatId::new(format!("old-{}", listen.port()), now, listen),
            cluster_id: format!("meshrpc/{tag}"),
            gossip_interval: Duration::from_millis(100),
            listen_addr: listen,
            seed_nodes: seeds.iter().map(ToString::to_string).collect(),
            failure_detector_config: FailureDetectorConfig::default(),
            marked_for_deletion_grace_period: Duration::from_secs(3600),
            catchup_callback: None,
            extra_liveness_predicate: None,
            protocol_version: ProtocolVersion::V0,
        };
        let kv = kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let handle = spawn_chitchat(config, kv, &UdpTransport).await;
        OldNode { _handle: handle.expect("the old node gossips") }
    }
}

/// The gossip key of a credentials directory.
pub fn gossip_key(dir: &std::path::Path) -> [u8; 32] {
    let hex = std::fs::read_to_string(dir.join("gossip.key")).unwrap();
    let hex = hex.trim();
    let mut key = [0u8; 32];
    for (i, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap();
    }
    key
}

/// Every UDP port process `pid` has open (on any address).
pub fn udp_ports(pid: u32) -> Vec<u16> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter_map(|l| l.to_str()?.strip_prefix("socket:[")?.strip_suffix(']').map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let mut ports = Vec::new();
    for table in ["udp", "udp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(inode)) = (fields.get(1), fields.get(9)) else { continue };
            if inodes.iter().any(|i| i == inode) {
                if let Some(port) = local.rsplit(':').next().and_then(|p| u16::from_str_radix(p, 16).ok()) {
                    ports.push(port);
                }
            }
        }
    }
    ports.sort_unstable();
    ports.dedup();
    ports
}
