//! zstd on the mesh (wire feature `ZSTD`): a request's or an answer's payload of
//! [`COMPRESS_FROM`] bytes or more goes compressed when that saves bytes, flagged in its
//! codec or status byte; the receiver expands it within its frame limit, so a small frame
//! cannot make it hold more than a large one would (a zip bomb is a protocol violation).

use bytes::Bytes;

use crate::error::Error;

/// Payloads shorter than this are never compressed: too little to gain.
pub const COMPRESS_FROM: usize = 1024;

/// The flag, in a request's codec byte or an answer's status byte, of a compressed payload.
pub(super) const COMPRESSED: u8 = 0x80;

/// zstd's fastest level: the mesh trades little CPU for bytes on slow links.
#[cfg(feature = "zstd")]
const LEVEL: i32 = 1;

/// `payload` compressed, when it is long enough and comes out shorter.
pub(super) fn compress(payload: &[u8]) -> Option<Vec<u8>> {
    if payload.len() < COMPRESS_FROM {
        return None;
    }
    #[cfg(feature = "zstd")]
    {
        let packed = zstd::bulk::compress(payload, LEVEL).ok()?;
        (packed.len() < payload.len()).then_some(packed)
    }
    #[cfg(not(feature = "zstd"))]
    None
}

/// A compressed payload expanded, refused past `limit` bytes (the receiver's largest
/// frame) before it holds more.
pub(super) fn expand(packed: &[u8], limit: usize) -> Result<Bytes, Error> {
    #[cfg(feature = "zstd")]
    {
        use std::io::Read;
        let decoder = zstd::stream::read::Decoder::new(packed)
            .map_err(|e| Error::protocol(format!("a compressed payload: {e}")))?;
        let mut out = Vec::with_capacity(packed.len().saturating_mul(4).min(limit));
        decoder
            .take(limit as u64 + 1)
            .read_to_end(&mut out)
            .map_err(|e| Error::protocol(format!("a compressed payload that does not expand: {e}")))?;
        if out.len() > limit {
            return Err(Error::protocol(format!("a compressed payload expands past the frame limit of {limit} bytes")));
        }
        Ok(Bytes::from(out))
    }
    #[cfg(not(feature = "zstd"))]
    {
        let _ = (packed, limit);
        Err(Error::protocol("a compressed payload, and this build has no zstd (feature ZSTD was not offered)"))
    }
}
