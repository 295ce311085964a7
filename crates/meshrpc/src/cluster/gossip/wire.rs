//! Gossip on the wire (version 2, docs/wire.md): what a datagram on a gossip port holds.
//!
//! ```text
//! plain:  "MRG2" | cluster (8) | kind (1) | body
//! sealed: "MRS2" | nonce (12) | sealed(send time ms (8) | plain datagram) | tag (16)
//! ```
//!
//! `cluster` is the first 8 bytes of SHA-256 of the cluster tag: a node drops the
//! datagrams of other clusters. The kinds: a SWIM message (foca's, postcard-encoded:
//! probes, acks, membership updates and the announcements of new node facts piggybacked
//! on them); a hello (a joiner asks a seed address who is there) and its answer; a page of
//! a member's facts asked of that member, and its answer; a page of the member list asked
//! of any member (a joiner's and the rare anti-entropy's full-state exchange). Every
//! datagram is at most [`MAX_DATAGRAM`] bytes.

use std::net::SocketAddr;

use foca::{Identity, Invalidates};
use serde::{Deserialize, Serialize};

pub(crate) const MAGIC_PLAIN: &[u8; 4] = b"MRG2";
/// The gossip protocol version of this node, as log lines name it.
pub(crate) const VERSION: u8 = 2;
/// Every datagram a node sends is at most this long (sealed: with its 40 bytes of seal).
pub(crate) const MAX_DATAGRAM: usize = 1400;
/// The most a SWIM message may take of a datagram (the rest is header and seal).
pub(crate) const MAX_SWIM: usize = MAX_DATAGRAM - 64;
/// Bytes of a node's facts (or of the member list) in one page.
pub(crate) const PAGE: usize = 1100;
const HEADER: usize = 4 + 8 + 1;

/// A member as SWIM knows it: where it gossips, when it started (a restart is a new
/// member), and how often it came back after being declared down (`renew`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) struct NodeId {
    pub(crate) addr: SocketAddr,
    pub(crate) started_ns: u64,
    pub(crate) bump: u16,
}

impl Identity for NodeId {
    type Addr = SocketAddr;

    fn renew(&self) -> Option<Self> {
        Some(NodeId { bump: self.bump.wrapping_add(1), ..*self })
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        (self.started_ns, self.bump) > (adversary.started_ns, adversary.bump)
    }
}

/// "My facts are at `version` now": a custom broadcast, piggybacked on SWIM messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Announced {
    pub(crate) addr: SocketAddr,
    pub(crate) started_ns: u64,
    pub(crate) version: u32,
}

impl Invalidates for Announced {
    fn invalidates(&self, other: &Self) -> bool {
        self.addr == other.addr && (self.started_ns, self.version) >= (other.started_ns, other.version)
    }
}

/// What a datagram carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Body {
    /// A SWIM message, as foca encodes it.
    Swim(Vec<u8>),
    /// Who gossips at this address? (A joiner asks its seeds.)
    Hello,
    /// The answer to [`Body::Hello`].
    HelloBack(NodeId),
    /// Page `page` of the facts of the member that started at `started_ns`, unless they
    /// are still at `have`.
    Facts { started_ns: u64, have: u32, page: u16 },
    /// A page of the facts of member `of` (its gossip address: a node bound to every
    /// address may answer from another). `pages == 0`: still at the version asked about.
    FactsPage { of: SocketAddr, started_ns: u64, version: u32, page: u16, pages: u16, bytes: Vec<u8> },
    /// Page `page` of the member list (postcard of foca's members).
    Members { page: u16 },
    /// A page of the member list of member `of`.
    MembersPage { of: SocketAddr, page: u16, pages: u16, bytes: Vec<u8> },
}

/// The cluster's 8 bytes.
pub(crate) fn cluster_id(tag: &str) -> [u8; 8] {
    let digest = ring::digest::digest(&ring::digest::SHA256, format!("meshrpc/{tag}").as_bytes());
    digest.as_ref()[..8].try_into().expect("8 bytes")
}

/// A plain datagram.
pub(crate) fn encode(cluster: &[u8; 8], body: &Body) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + 64);
    out.extend_from_slice(MAGIC_PLAIN);
    out.extend_from_slice(cluster);
    out.push(VERSION);
    postcard::to_io(body, &mut out).expect("encoding to memory");
    out
}

/// Why a datagram was not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unread {
    /// Not a gossip datagram of any meshrpc version.
    Garbage,
    /// Gossip of meshrpc 0.1.0 (chitchat's, plain or sealed as "MRG1").
    Version1,
    /// Gossip of another cluster.
    OtherCluster,
    /// This version's header, but a body it cannot read.
    Malformed,
}

/// True if `datagram` is 0.1.0 gossip: chitchat's header (its magic number, protocol
/// version 0 or 1) or 0.1.0's seal.
pub(crate) fn is_version1(datagram: &[u8]) -> bool {
    const CHITCHAT: [u8; 2] = 45_139u16.to_le_bytes();
    datagram.starts_with(b"MRG1") || (datagram.len() >= 4 && datagram[..2] == CHITCHAT && datagram[2] <= 1)
}

/// Reads a plain datagram of cluster `cluster`.
pub(crate) fn decode(cluster: &[u8; 8], datagram: &[u8]) -> Result<Body, Unread> {
    if !datagram.starts_with(MAGIC_PLAIN) {
        return Err(if is_version1(datagram) { Unread::Version1 } else { Unread::Garbage });
    }
    if datagram.len() < HEADER || datagram[HEADER - 1] != VERSION {
        return Err(Unread::Malformed);
    }
    if &datagram[4..12] != cluster {
        return Err(Unread::OtherCluster);
    }
    postcard::from_bytes(&datagram[HEADER..]).map_err(|_| Unread::Malformed)
}

/// How many pages `len` bytes take (at least one: an empty list is one empty page).
pub(crate) fn pages(len: usize) -> usize {
    len.div_ceil(PAGE).max(1)
}

/// Page `page` of `bytes`.
pub(crate) fn page(bytes: &[u8], page: usize) -> &[u8] {
    let start = (page * PAGE).min(bytes.len());
    &bytes[start..(start + PAGE).min(bytes.len())]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagrams_round_trip_and_stay_small() {
        let cluster = cluster_id("t");
        let id = NodeId { addr: "10.0.0.1:11999".parse().unwrap(), started_ns: u64::MAX, bump: 3 };
        let full = vec![7u8; PAGE];
        for body in [
            Body::Hello,
            Body::HelloBack(id),
            Body::Swim(vec![1; MAX_SWIM]),
            Body::Facts { started_ns: 1, have: 2, page: 3 },
            Body::FactsPage {
                of: "[ffff::1]:65535".parse().unwrap(),
                started_ns: u64::MAX,
                version: u32::MAX,
                page: 60,
                pages: 60,
                bytes: full.clone(),
            },
            Body::MembersPage {
                of: "[ffff::1]:65535".parse().unwrap(),
                page: u16::MAX,
                pages: u16::MAX,
                bytes: full.clone(),
            },
        ] {
            let d = encode(&cluster, &body);
            assert!(d.len() + super::super::sealed::OVERHEAD <= MAX_DATAGRAM, "{body:?}: {}", d.len());
            assert_eq!(decode(&cluster, &d), Ok(body));
        }
        let d = encode(&cluster, &Body::Hello);
        assert_eq!(decode(&cluster_id("u"), &d), Err(Unread::OtherCluster));
        assert_eq!(decode(&cluster, b"GET / HTTP/1.1\r\n"), Err(Unread::Garbage));
        assert_eq!(decode(&cluster, &[0x53, 0xb0, 0, 0, 1]), Err(Unread::Version1));
        let mut bad = d.clone();
        bad.push(0xff);
        bad[HEADER] = 0xee;
        assert_eq!(decode(&cluster, &bad), Err(Unread::Malformed));
    }

    #[test]
    fn a_restart_wins_over_the_member_it_replaces() {
        let a = NodeId { addr: "10.0.0.1:1".parse().unwrap(), started_ns: 5, bump: 0 };
        let restarted = NodeId { started_ns: 6, ..a };
        assert!(restarted.win_addr_conflict(&a) && !a.win_addr_conflict(&restarted));
        assert!(a.renew().unwrap().win_addr_conflict(&a));
    }

    #[test]
    fn pages_cover_the_bytes() {
        let bytes: Vec<u8> = (0..2500).map(|i| i as u8).collect();
        assert_eq!(pages(bytes.len()), 3);
        assert_eq!(pages(0), 1);
        let joined: Vec<u8> = (0..3).flat_map(|p| page(&bytes, p).to_vec()).collect();
        assert_eq!(joined, bytes);
        assert!(page(&bytes, 9).is_empty());
    }
}
