//! zstd on the mesh (wire feature `ZSTD`): a request's or an answer's payload of
//! [`COMPRESS_FROM`] bytes or more goes compressed when that saves bytes, flagged in its
//! codec or status byte; the receiver expands it within its frame limit and 256 times its
//! size, so a small frame cannot make it hold much more than its bytes (a zip bomb is a
//! protocol violation).

use bytes::Bytes;

use crate::error::Error;

/// Payloads shorter than this are never compressed: too little to gain.
pub const COMPRESS_FROM: usize = 1024;

/// The flag, in a request's codec byte or an answer's status byte, of a compressed payload.
pub(super) const COMPRESSED: u8 = 0x80;

/// A payload never expands to more than this many times its compressed size: a sender
/// sends plain what would compress further, so a small frame cannot cost a receiver a
/// frame limit's worth of memory and CPU (legitimate JSON compresses 5–30×).
pub(super) const MAX_RATIO: usize = 256;

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
        (packed.len() < payload.len() && payload.len() <= packed.len() * MAX_RATIO).then_some(packed)
    }
    #[cfg(not(feature = "zstd"))]
    None
}

/// A compressed payload expanded, refused past `max_frame` bytes (the receiver's largest
/// frame) or [`MAX_RATIO`] times its size, before it holds more.
pub(super) fn expand(packed: &[u8], max_frame: usize) -> Result<Bytes, Error> {
    let limit = max_frame.min(packed.len().saturating_mul(MAX_RATIO));
    #[cfg(feature = "zstd")]
    {
        use std::io::Read;
        let mut decoder = zstd::stream::read::Decoder::new(packed)
            .map_err(|e| Error::protocol(format!("a compressed payload: {e}")))?;
        // Nor may its header make the decoder reserve a window larger than the payload
        // may be.
        let window = usize::BITS - limit.max(1 << 10).next_power_of_two().leading_zeros() - 1;
        decoder
            .window_log_max(window.clamp(10, 27))
            .map_err(|e| Error::protocol(format!("a compressed payload: {e}")))?;
        let mut out = Vec::with_capacity(packed.len().saturating_mul(4).min(limit));
        decoder
            .take(limit as u64 + 1)
            .read_to_end(&mut out)
            .map_err(|e| Error::protocol(format!("a compressed payload that does not expand: {e}")))?;
        if out.len() > limit {
            return Err(Error::protocol(format!(
                "a compressed payload expands past {limit} bytes (the frame limit, and {MAX_RATIO} times its size)"
            )));
        }
        Ok(Bytes::from(out))
    }
    #[cfg(not(feature = "zstd"))]
    {
        let _ = limit;
        Err(Error::protocol("a compressed payload, and this build has no zstd (feature ZSTD was not offered)"))
    }
}
