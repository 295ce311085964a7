//! The handshake, written once for both sides (docs/wire.md, "Handshake").
//!
//! The caller sends `MESHRPC` and the highest wire version it speaks as an ASCII digit,
//! then the lowest one, its feature bits, the largest frame it accepts and its name. The
//! node answers `MESHRPC` with the chosen version, the features both sides have and the
//! largest frame it accepts — or `MESHRPC0` with the versions it speaks and a reason, and
//! closes. Each side then sends frames no larger than the other accepts.

use bytes::{Buf, BufMut, BytesMut};

use crate::error::Error;

/// First seven bytes of every mesh connection: what tells mesh traffic from HTTP.
pub const MAGIC: &[u8; 7] = b"MESHRPC";
/// The magic and one version byte.
pub const PREFACE_LEN: usize = 8;
/// The highest wire version this build speaks.
pub const VERSION: u8 = 2;
/// The lowest wire version this build speaks (1 had no negotiation and is refused).
const MIN_VERSION: u8 = 2;
/// Version byte of a refusal.
const REFUSED: u8 = b'0';
/// Longest caller name carried (longer names are cut).
const MAX_NAME: usize = 255;

/// Optional protocol features, negotiated once per connection: both sides use a feature
/// only when both offered it. Bits are assigned in docs/wire.md, so later features
/// (streams, 128-bit trace context...) are added without a new version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Features(u32);

impl Features {
    /// No optional feature.
    pub const NONE: Features = Features(0);
    /// Requests may carry metadata (`REQUEST_META` frames).
    pub const METADATA: Features = Features(1);
    /// Streaming methods: items, their end and flow-control credit (kinds 7, 8, 10, 11),
    /// and the `Stream` response status.
    pub const STREAMS: Features = Features(2);
    /// Requests carry the whole W3C trace context: a 128-bit trace id and the parent span
    /// id (kind 12). Without it only the trace id's low 64 bits cross.
    pub const TRACE: Features = Features(4);
    /// A stream's items may come several to a frame (kind 13): one header, one lookup and
    /// one credit check per run of items instead of per item.
    pub const ITEM_RUNS: Features = Features(8);
    /// Request and answer payloads of 1 KiB or more may be zstd-compressed (a flag in the
    /// codec or status byte); each side expands them within its frame limit.
    pub const ZSTD: Features = Features(16);

    /// The raw bits, as sent on the wire.
    pub fn bits(self) -> u32 {
        self.0
    }

    /// Features from raw bits (unknown bits are kept: the other side may know them).
    pub fn from_bits(bits: u32) -> Features {
        Features(bits)
    }

    /// True when every feature of `other` is in `self`.
    pub fn contains(self, other: Features) -> bool {
        self.0 & other.0 == other.0
    }

    /// The features both have.
    pub fn intersection(self, other: Features) -> Features {
        Features(self.0 & other.0)
    }

    /// These features but `other`'s.
    pub fn without(self, other: Features) -> Features {
        Features(self.0 & !other.0)
    }
}

/// The features this build implements.
const SUPPORTED: Features = Features(
    Features::METADATA.0
        | Features::STREAMS.0
        | Features::TRACE.0
        | Features::ITEM_RUNS.0
        | if cfg!(feature = "zstd") { Features::ZSTD.0 } else { 0 },
);

/// What a handshake settled for one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// The wire version both speak.
    pub version: u8,
    /// The features both offered.
    pub features: Features,
    /// Largest frame this side accepts.
    pub max_in: u32,
    /// Largest frame the peer accepts: never send more.
    pub max_out: u32,
    /// The peer's name (the caller's, on a node; empty if it gave none).
    pub peer_name: String,
}

/// What the first bytes of a connection say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sniffed {
    /// Too few bytes to tell.
    NeedMore,
    /// A mesh caller.
    Mesh,
    /// Anything else (HTTP, or garbage for the HTTP parser to refuse).
    Other,
}

/// Tells a mesh connection from anything else by its first bytes.
pub fn sniff(first: &[u8]) -> Sniffed {
    let n = first.len().min(MAGIC.len());
    if first[..n] != MAGIC[..n] {
        Sniffed::Other
    } else if n < MAGIC.len() {
        Sniffed::NeedMore
    } else {
        Sniffed::Mesh
    }
}

fn version_digit(v: u8) -> u8 {
    b'0' + v
}

fn version_of(digit: u8) -> Option<u8> {
    digit.checked_sub(b'0').filter(|v| (1..=9).contains(v))
}

/// The calling side of the handshake.
#[derive(Debug, Clone)]
pub struct CallerHandshake {
    max_in: u32,
    name: Vec<u8>,
    offered: Features,
}

impl CallerHandshake {
    /// A caller named `name` (for the node's logs) accepting frames up to `max_in`.
    pub fn new(name: &str, max_in: u32) -> CallerHandshake {
        let name = name.as_bytes();
        CallerHandshake { max_in, name: name[..name.len().min(MAX_NAME)].to_vec(), offered: SUPPORTED }
    }

    /// Offers every supported feature but `these` (a caller that will not compress).
    pub fn without(mut self, these: Features) -> CallerHandshake {
        self.offered = self.offered.without(these);
        self
    }

    /// The bytes to send first.
    pub fn hello(&self, out: &mut BytesMut) {
        out.put_slice(MAGIC);
        out.put_u8(version_digit(VERSION));
        out.put_u8(version_digit(MIN_VERSION));
        out.put_u32(self.offered.bits());
        out.put_u32(self.max_in);
        out.put_u8(self.name.len() as u8);
        out.put_slice(&self.name);
    }

    /// Takes the node's answer off `buf`: `Ok(None)` while it is incomplete.
    pub fn receive(&self, buf: &mut BytesMut) -> Result<Option<Negotiated>, Error> {
        if buf.len() < PREFACE_LEN {
            return Ok(None);
        }
        if &buf[..MAGIC.len()] != MAGIC {
            return Err(Error::protocol("the peer is not a meshrpc node (no MESHRPC preface)"));
        }
        if buf[MAGIC.len()] == REFUSED {
            // MESHRPC0, lowest and highest version it speaks, reason length, reason.
            if buf.len() < PREFACE_LEN + 3 || buf.len() < PREFACE_LEN + 3 + usize::from(buf[PREFACE_LEN + 2]) {
                return Ok(None);
            }
            let (lo, hi) = (buf[PREFACE_LEN], buf[PREFACE_LEN + 1]);
            let reason = String::from_utf8_lossy(&buf[PREFACE_LEN + 3..][..usize::from(buf[PREFACE_LEN + 2])]);
            if let Some(why) = reason.strip_prefix(TLS_REQUIRED) {
                return Err(Error::tls(format!("the node refused a plaintext caller: {why}")));
            }
            if let Some(why) = reason.strip_prefix(OVERLOADED) {
                return Err(Error::Overloaded { message: why.to_owned() });
            }
            return Err(Error::protocol(format!(
                "the node refused the handshake: {reason} (it speaks wire versions {}..={}, we speak {MIN_VERSION}..={VERSION})",
                lo.wrapping_sub(b'0'),
                hi.wrapping_sub(b'0'),
            )));
        }
        if buf.len() < PREFACE_LEN + 8 {
            return Ok(None);
        }
        let version = version_of(buf[MAGIC.len()])
            .filter(|v| (MIN_VERSION..=VERSION).contains(v))
            .ok_or_else(|| Error::protocol(format!("the node chose wire version byte {}", buf[MAGIC.len()])))?;
        buf.advance(PREFACE_LEN);
        let features = Features::from_bits(buf.get_u32());
        let max_out = buf.get_u32();
        if !self.offered.contains(features) {
            return Err(Error::protocol(format!("the node chose features {:#x} we did not offer", features.bits())));
        }
        Ok(Some(Negotiated { version, features, max_in: self.max_in, max_out, peer_name: String::new() }))
    }
}

/// The node's side of the handshake.
#[derive(Debug, Clone)]
pub struct NodeHandshake {
    max_in: u32,
    offered: Features,
}

impl NodeHandshake {
    /// A node accepting frames up to `max_in`.
    pub fn new(max_in: u32) -> NodeHandshake {
        NodeHandshake { max_in, offered: SUPPORTED }
    }

    /// Takes every supported feature but `these` (a node that will not compress).
    pub fn without(mut self, these: Features) -> NodeHandshake {
        self.offered = self.offered.without(these);
        self
    }

    /// Takes the caller's hello off `buf` and writes the answer to `out`: `Ok(None)` while
    /// the hello is incomplete. An error has already been answered with a refusal in `out`
    /// (write it, then close).
    pub fn receive(&self, buf: &mut BytesMut, out: &mut BytesMut) -> Result<Option<Negotiated>, Error> {
        match sniff(buf) {
            Sniffed::NeedMore => return Ok(None),
            Sniffed::Other => return Err(self.refuse(out, "not a mesh preface".into())),
            Sniffed::Mesh if buf.len() < PREFACE_LEN => return Ok(None),
            Sniffed::Mesh => {}
        }
        let Some(their_max) = version_of(buf[MAGIC.len()]) else {
            return Err(self.refuse(out, format!("bad version byte {}", buf[MAGIC.len()])));
        };
        // Version 1 sent its name right after the preface; it cannot be answered in a
        // way it understands, so it gets the refusal (and the node logs why).
        let their_min = if their_max == 1 {
            1
        } else {
            if buf.len() < PREFACE_LEN + 10 {
                return Ok(None);
            }
            match version_of(buf[PREFACE_LEN]) {
                Some(v) if v <= their_max => v,
                _ => return Err(self.refuse(out, format!("bad lowest version byte {}", buf[PREFACE_LEN]))),
            }
        };
        let version = their_max.min(VERSION);
        if version < their_min.max(MIN_VERSION) {
            let reason = format!(
                "no common wire version: the caller speaks {their_min}..={their_max}, this node {MIN_VERSION}..={VERSION}"
            );
            return Err(self.refuse(out, reason));
        }
        let name_len = usize::from(buf[PREFACE_LEN + 9]);
        if buf.len() < PREFACE_LEN + 10 + name_len {
            return Ok(None);
        }
        buf.advance(PREFACE_LEN + 1);
        let features = Features::from_bits(buf.get_u32()).intersection(self.offered);
        let max_out = buf.get_u32();
        buf.advance(1);
        let peer_name = String::from_utf8_lossy(&buf.split_to(name_len)).into_owned();
        out.put_slice(MAGIC);
        out.put_u8(version_digit(version));
        out.put_u32(features.bits());
        out.put_u32(self.max_in);
        Ok(Some(Negotiated { version, features, max_in: self.max_in, max_out, peer_name }))
    }

    fn refuse(&self, out: &mut BytesMut, reason: String) -> Error {
        refusal(&reason, out);
        Error::protocol(reason)
    }
}

/// Reasons that start with this refuse a plaintext caller of a node that accepts only
/// mutual TLS; the caller reports them as [`Error::Tls`].
pub const TLS_REQUIRED: &str = "tls: ";

/// Reasons that start with this refuse a caller because the node is at its connection
/// cap; the caller reports them as [`Error::Overloaded`] (safe to try another replica).
pub const OVERLOADED: &str = "overloaded: ";

/// Writes a refusal (`MESHRPC0`, the versions this side speaks, a reason of at most 255
/// bytes) to `out`.
pub fn refusal(reason: &str, out: &mut BytesMut) {
    let mut end = reason.len().min(MAX_NAME);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let text = &reason.as_bytes()[..end];
    out.put_slice(MAGIC);
    out.put_u8(REFUSED);
    out.put_u8(version_digit(MIN_VERSION));
    out.put_u8(version_digit(VERSION));
    out.put_u8(text.len() as u8);
    out.put_slice(text);
}
