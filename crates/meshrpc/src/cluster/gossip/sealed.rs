//! Sealed gossip (with the `tls` feature and a `gossip.key`): every datagram on the wire
//! is encrypted and authenticated with the cluster's gossip key (ChaCha20-Poly1305), and
//! carries its send time and a random nonce, so that a host without the key can neither
//! inject, alter, read nor replay membership state.
//!
//! chitchat's [`Transport`] hands sockets typed envelopes, and keeps their encoding to
//! itself; so a sealed socket wraps chitchat's own UDP socket, bound to loopback, and a
//! relay socket next to it: outgoing envelopes are encoded by chitchat into the relay,
//! sealed and sent on; incoming datagrams are opened and handed to chitchat's socket
//! through the relay. Any process on the host can send to chitchat's socket too: it is
//! read whenever the gossip port is (so nothing piles up there to crowd out the relay's
//! datagrams), and what it decodes is taken only if the relay sent it (its source
//! address); anything else is dropped and counted as injected
//! (`meshrpc_gossip_injected_total`). The relay is connected to chitchat's socket, so the
//! kernel drops whatever else is sent to it. Each opened datagram's sender waits in a
//! queue until chitchat decodes it (in order: one loopback socket to another); a datagram
//! whose chitchat header is malformed is dropped before it is relayed, so the queue and
//! what chitchat decodes stay in step.
//!
//! Datagram: `"MRG1" | nonce (12) | sealed(send time ms (8) | chitchat bytes) | tag (16)`.

use std::{
    collections::{HashSet, VecDeque},
    net::{Ipv4Addr, SocketAddr},
    sync::{atomic::Ordering, Arc},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use async_trait::async_trait;
use chitchat::{
    transport::{RecvOutcome, SendOutcome, Socket, Transport, UdpSocket as ChitchatSocket},
    ChitchatEnvelope,
};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use tokio::net::UdpSocket;

use super::thin::GossipCost;
use crate::throttle::Throttle;

const MAGIC: &[u8; 4] = b"MRG1";
const HEADER: usize = MAGIC.len() + NONCE_LEN;
const TAG: usize = 16;
/// How far a datagram's send time may be from the receiver's clock (either way).
pub(crate) const MAX_SKEW: Duration = Duration::from_secs(30);
/// Nonces remembered to refuse replays: those of the last `2 × MAX_SKEW`, at most this
/// many (≈ 36 bytes each, so ≤ 9 MiB); past it the oldest are forgotten first.
pub(crate) const MAX_REMEMBERED: usize = 262_144;
const MAX_DATAGRAM: usize = 65_507;

static DROPPED_WARNING: Throttle = Throttle::new(Duration::from_secs(10));
static INJECTED_WARNING: Throttle = Throttle::new(Duration::from_secs(10));

/// A chitchat transport whose datagrams are sealed with the cluster's gossip key.
pub struct SealedTransport {
    key: [u8; 32],
    /// Where the datagrams it drops are counted (the node's).
    cost: Arc<GossipCost>,
}

impl SealedTransport {
    /// Seals with `key` (the 32 bytes of `gossip.key`).
    pub fn new(key: [u8; 32]) -> Self {
        SealedTransport { key, cost: Arc::default() }
    }

    /// The same, counting what it drops in `cost`.
    pub(crate) fn counted(key: [u8; 32], cost: Arc<GossipCost>) -> Self {
        SealedTransport { key, cost }
    }
}

#[async_trait]
impl Transport for SealedTransport {
    async fn open(&self, listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        let outer = UdpSocket::bind(listen_addr).await?;
        let inner = ChitchatSocket::open((Ipv4Addr::LOCALHOST, 0).into()).await?;
        let relay = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let inner_addr = inner.local_addr()?;
        relay.connect(inner_addr).await?;
        let relay_addr = relay.local_addr()?;
        let key = LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &self.key).expect("a 32-byte key"));
        Ok(Box::new(SealedSocket {
            outer,
            inner,
            relay,
            relay_addr,
            key,
            cost: self.cost.clone(),
            seen: Seen::default(),
            senders: VecDeque::new(),
            buf: vec![0; MAX_DATAGRAM],
        }))
    }
}

struct SealedSocket {
    /// The gossip port, facing the network.
    outer: UdpSocket,
    /// chitchat's own socket on loopback: it encodes and decodes envelopes.
    inner: ChitchatSocket,
    /// Loopback, connected to `inner`: what chitchat sends lands here to be sealed, and
    /// opened datagrams go to chitchat from here.
    relay: UdpSocket,
    /// The relay's address: the only sender chitchat's socket takes datagrams from.
    relay_addr: SocketAddr,
    key: LessSafeKey,
    cost: Arc<GossipCost>,
    seen: Seen,
    /// The real senders of the datagrams handed to `inner` and not yet decoded, oldest
    /// first (kept across a cancelled `recv`).
    senders: VecDeque<SocketAddr>,
    buf: Vec<u8>,
}

/// Opened datagrams waiting for chitchat to decode them, at most.
const MAX_RELAYED: usize = 64;

#[async_trait]
impl Socket for SealedSocket {
    fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.outer.local_addr()?)
    }

    async fn send(&mut self, to: SocketAddr, envelope: ChitchatEnvelope) -> anyhow::Result<SendOutcome> {
        // chitchat encodes the envelope into the relay (loopback: it is there at once).
        let relay_addr = self.relay.local_addr()?;
        self.inner.send(relay_addr, envelope).await?;
        let len = self.relay.recv(&mut self.buf).await?;
        let sealed = seal(&self.key, now_ms(), &self.buf[..len]);
        let num_bytes_sent = self.outer.send_to(&sealed, to).await?;
        Ok(SendOutcome { num_bytes_sent })
    }

    async fn recv(&mut self) -> anyhow::Result<RecvOutcome> {
        loop {
            // Both sockets at once, so that what another process sends to chitchat's socket
            // is read (and dropped) as fast as it comes. Each branch is cancel-safe: a
            // datagram is only taken from a socket by a completed read.
            tokio::select! {
                biased;
                decoded = self.inner.recv() => {
                    let outcome = decoded?;
                    if outcome.from_addr != self.relay_addr {
                        self.cost.injected.fetch_add(1, Ordering::Relaxed);
                        let from = outcome.from_addr;
                        INJECTED_WARNING.log(|also| {
                            tracing::warn!(%from, also_dropped = also, "unsealed gossip sent to the node's loopback hand-off: dropped")
                        });
                        continue;
                    }
                    if let Some(from) = self.senders.pop_front() {
                        return Ok(RecvOutcome { from_addr: from, ..outcome });
                    }
                }
                received = self.outer.recv_from(&mut self.buf) => {
                    let (len, from) = match received {
                        Ok(got) => got,
                        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => continue,
                        Err(e) => return Err(e.into()),
                    };
                    let opened = open(&self.key, &mut self.buf[..len], now_ms(), &mut self.seen)
                        .and_then(|plain| if chitchat_header(plain) { Ok(plain) } else { Err(Dropped::Forged) });
                    match opened {
                        // No await between the queue and the socket: a cancelled `recv`
                        // cannot leave them out of step.
                        Ok(plain) => {
                            if self.senders.len() < MAX_RELAYED && self.relay.try_send(plain).is_ok() {
                                self.senders.push_back(from);
                            }
                        }
                        Err(why) => {
                            match why {
                                Dropped::Forged => &self.cost.forged,
                                Dropped::Replayed | Dropped::Stale => &self.cost.replayed,
                            }
                            .fetch_add(1, Ordering::Relaxed);
                            DROPPED_WARNING.log(|also| {
                                tracing::warn!(%from, reason = why.as_str(), also_dropped = also, "gossip datagram dropped")
                            });
                        }
                    }
                }
            }
        }
    }
}

/// True if `plain` starts as a chitchat message does (its magic number, a protocol
/// version and a message type it knows), so chitchat will not drop it unseen.
fn chitchat_header(plain: &[u8]) -> bool {
    const MAGIC: [u8; 2] = 45_139u16.to_le_bytes();
    plain.len() >= 4 && plain[..2] == MAGIC && plain[2] <= 1 && plain[3] <= 3
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

/// Why a datagram was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dropped {
    /// Not sealed with our key (random bytes, another cluster, a forgery, a bit flip).
    Forged,
    /// Sealed, but its nonce was seen already.
    Replayed,
    /// Sealed, but sent further from now than [`MAX_SKEW`].
    Stale,
}

impl Dropped {
    fn as_str(self) -> &'static str {
        match self {
            Dropped::Forged => "not sealed with the cluster's gossip key",
            Dropped::Replayed => "replayed",
            Dropped::Stale => "too old or from the future",
        }
    }
}

pub(crate) fn seal(key: &LessSafeKey, sent_ms: u64, plain: &[u8]) -> Vec<u8> {
    let nonce: [u8; NONCE_LEN] = random_nonce();
    let mut out = Vec::with_capacity(HEADER + 8 + plain.len() + TAG);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&nonce);
    let mut body = Vec::with_capacity(8 + plain.len() + TAG);
    body.extend_from_slice(&sent_ms.to_be_bytes());
    body.extend_from_slice(plain);
    key.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(&out[..HEADER]), &mut body)
        .expect("sealing fits in memory");
    out.extend_from_slice(&body);
    out
}

/// Opens a datagram in place; the plaintext chitchat bytes on success.
pub(crate) fn open<'a>(
    key: &LessSafeKey,
    datagram: &'a mut [u8],
    now_ms: u64,
    seen: &mut Seen,
) -> Result<&'a [u8], Dropped> {
    if datagram.len() < HEADER + 8 + TAG || &datagram[..MAGIC.len()] != MAGIC {
        return Err(Dropped::Forged);
    }
    let (header, body) = datagram.split_at_mut(HEADER);
    let nonce: [u8; NONCE_LEN] = header[MAGIC.len()..].try_into().expect("nonce length");
    let plain = key
        .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(&*header), body)
        .map_err(|_| Dropped::Forged)?;
    let sent_ms = u64::from_be_bytes(plain[..8].try_into().expect("8 bytes"));
    if sent_ms.abs_diff(now_ms) > MAX_SKEW.as_millis() as u64 {
        return Err(Dropped::Stale);
    }
    if !seen.insert(nonce, now_ms) {
        return Err(Dropped::Replayed);
    }
    Ok(&plain[8..])
}

fn random_nonce() -> [u8; NONCE_LEN] {
    use ring::rand::SecureRandom;
    let mut nonce = [0u8; NONCE_LEN];
    ring::rand::SystemRandom::new().fill(&mut nonce).expect("the system's random source");
    nonce
}

/// Nonces of recently accepted datagrams, oldest first.
#[derive(Default)]
pub(crate) struct Seen {
    order: VecDeque<(u64, [u8; NONCE_LEN])>,
    set: HashSet<[u8; NONCE_LEN]>,
}

impl Seen {
    /// False if `nonce` was seen. Forgets nonces older than twice the skew window
    /// (replaying those is caught as stale) and, past [`MAX_REMEMBERED`], the oldest.
    fn insert(&mut self, nonce: [u8; NONCE_LEN], now_ms: u64) -> bool {
        let horizon = now_ms.saturating_sub(2 * MAX_SKEW.as_millis() as u64);
        while self.order.front().is_some_and(|(at, _)| *at < horizon) || self.order.len() >= MAX_REMEMBERED {
            let (_, old) = self.order.pop_front().expect("not empty");
            self.set.remove(&old);
        }
        if !self.set.insert(nonce) {
            return false;
        }
        self.order.push_back((now_ms, nonce));
        true
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.set.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> LessSafeKey {
        LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &[byte; 32]).unwrap())
    }

    #[test]
    fn sealed_datagrams_open_once() {
        let (k, mut seen) = (key(1), Seen::default());
        let mut d = seal(&k, 1_000_000, b"gossip");
        let copy = d.clone();
        assert_eq!(open(&k, &mut d, 1_000_100, &mut seen).unwrap(), b"gossip");
        let mut replay = copy.clone();
        assert_eq!(open(&k, &mut replay, 1_000_200, &mut seen), Err(Dropped::Replayed));
        // Another key, a flipped bit, garbage, a truncated datagram: forged.
        let mut other = copy.clone();
        assert_eq!(open(&key(2), &mut other, 1_000_100, &mut Seen::default()), Err(Dropped::Forged));
        let mut flipped = copy.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert_eq!(open(&k, &mut flipped, 1_000_100, &mut Seen::default()), Err(Dropped::Forged));
        assert_eq!(open(&k, &mut [0u8; 64], 1_000_100, &mut Seen::default()), Err(Dropped::Forged));
        assert_eq!(open(&k, &mut copy[..10].to_vec(), 1_000_100, &mut Seen::default()), Err(Dropped::Forged));
    }

    #[test]
    fn old_datagrams_are_stale_and_the_memory_is_bounded() {
        let k = key(1);
        let mut old = seal(&k, 1_000_000, b"x");
        let late = 1_000_000 + MAX_SKEW.as_millis() as u64 + 1;
        assert_eq!(open(&k, &mut old, late, &mut Seen::default()), Err(Dropped::Stale));
        let mut seen = Seen::default();
        for i in 0..1000u64 {
            let mut nonce = [0u8; NONCE_LEN];
            nonce[..8].copy_from_slice(&i.to_be_bytes());
            assert!(seen.insert(nonce, i * 1000));
        }
        // Only the last two skew windows' worth is kept.
        assert!(seen.len() <= 61, "{}", seen.len());
    }

    #[test]
    fn the_nonce_memory_stops_at_its_cap() {
        // More datagrams than the cap within one window: the oldest nonces are forgotten.
        let mut seen = Seen::default();
        for i in 0..MAX_REMEMBERED as u64 + 1000 {
            let mut nonce = [0u8; NONCE_LEN];
            nonce[..8].copy_from_slice(&i.to_be_bytes());
            assert!(seen.insert(nonce, 1_000_000));
        }
        assert_eq!(seen.len(), MAX_REMEMBERED);
        assert_eq!(seen.order.len(), MAX_REMEMBERED);
    }
}
