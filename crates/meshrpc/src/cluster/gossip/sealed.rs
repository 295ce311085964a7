//! Sealed gossip (a `gossip.key`, with mutual TLS): every datagram on the wire is
//! encrypted and authenticated with the cluster's gossip key (ChaCha20-Poly1305), and
//! carries its send time and a random nonce, so that a host without the key can neither
//! inject, alter, read nor replay membership state. The gossip engine seals and opens
//! every datagram of its one socket itself: nothing unsealed is read anywhere.
//!
//! Datagram: `"MRS2" | nonce (12) | sealed(send time ms (8) | plain datagram) | tag (16)`.

use std::{
    collections::{HashSet, VecDeque},
    time::Duration,
};

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};

const MAGIC: &[u8; 4] = b"MRS2";
const HEADER: usize = MAGIC.len() + NONCE_LEN;
const TAG: usize = 16;
/// What sealing adds to a datagram.
#[cfg(test)]
pub(crate) const OVERHEAD: usize = HEADER + 8 + TAG;
/// How far a datagram's send time may be from the receiver's clock (either way).
pub(crate) const MAX_SKEW: Duration = Duration::from_secs(30);
/// Nonces remembered to refuse replays: those of the last `2 × MAX_SKEW`, at most this
/// many (≈ 36 bytes each, so ≤ 9 MiB); past it the oldest are forgotten first.
pub(crate) const MAX_REMEMBERED: usize = 262_144;

/// The cluster's gossip key, ready to seal.
pub(crate) fn key(bytes: &[u8; 32]) -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, bytes).expect("a 32-byte key"))
}

/// True if `datagram` looks sealed (its magic), whatever the key.
pub(crate) fn is_sealed(datagram: &[u8]) -> bool {
    datagram.starts_with(MAGIC)
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
    pub(crate) fn as_str(self) -> &'static str {
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

/// Opens a datagram in place; the plain datagram on success.
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
