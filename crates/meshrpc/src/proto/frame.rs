//! Frames (see `docs/wire.md`).
//!
//! Every frame is `u32 length | u8 kind | u64 id | body`, big-endian, where `length`
//! counts everything after itself. Decoding checks the length against a limit before
//! buffering anything, so a peer cannot make us allocate more than the limit.

use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::compress::{expand, COMPRESSED};
use super::run::ItemRun;
use crate::{call::Metadata, codec::Codec, error::Error};

/// Default limit on one frame (16 MiB).
pub const DEFAULT_MAX_FRAME: u32 = 16 * 1024 * 1024;

pub(super) const HEADER: usize = 4 + 1 + 8;

/// Outcome carried by a response frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// The handler returned `Ok`; payload is the encoded value.
    Ok,
    /// The handler returned `Err`; payload is the encoded user error.
    AppError,
    /// meshrpc failed the call; payload is the JSON of [`Error`].
    Failed,
    /// (Response only) the handler's `Ok` value is a stream: its items follow as
    /// [`Frame::Item`]s under the same id, closed by a [`Frame::End`]. Payload empty.
    Stream,
}

impl Status {
    fn to_byte(&self) -> u8 {
        match self {
            Status::Ok => 0,
            Status::AppError => 1,
            Status::Failed => 2,
            Status::Stream => 3,
        }
    }

    fn from_byte(b: u8) -> Result<Status, Error> {
        Ok(match b {
            0 => Status::Ok,
            1 => Status::AppError,
            2 => Status::Failed,
            3 => Status::Stream,
            s => return Err(Error::protocol(format!("unknown status {s}"))),
        })
    }
}

/// One unit on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)] // the fields are described in docs/wire.md
pub enum Frame {
    /// A call.
    Request {
        id: u64,
        codec: Codec,
        /// Time the caller will still wait; `None` means no deadline.
        deadline: Option<Duration>,
        /// The trace (128 bits; only the low 64 cross without feature `TRACE`).
        trace_id: u128,
        /// The caller's span, the parent of this call's (0: none; sent with `TRACE`).
        parent_span: u64,
        service: Bytes,
        method: Bytes,
        /// Sent as a `REQUEST_META` frame when not empty (feature `METADATA`).
        metadata: Metadata,
        /// The caller sends a stream of items after the request (kind 11, feature
        /// `STREAMS`).
        items: bool,
        payload: Bytes,
    },
    /// The answer to request `id`.
    Response { id: u64, status: Status, payload: Bytes },
    /// The caller gave up on request `id`.
    Cancel { id: u64 },
    /// Asks for a pong (keepalive, latency).
    Ping { id: u64 },
    /// Answers ping `id`.
    Pong { id: u64 },
    /// The sender drains: send no new requests on this connection.
    GoAway,
    /// One item of call `id`'s stream (from the caller: its items; from the node: the
    /// answer's), in the call's codec.
    Item { id: u64, payload: Bytes },
    /// The end of that stream: `Ok` (clean, empty payload), `AppError` (the item error,
    /// encoded) or `Failed` (JSON of [`Error`]).
    End { id: u64, status: Status, payload: Bytes },
    /// The receiver of call `id`'s stream grants `bytes` more of credit to its sender.
    Credit { id: u64, bytes: u32 },
    /// Several items of call `id`'s stream in one frame (kind 13, feature `ITEM_RUNS`).
    Items { id: u64, run: ItemRun },
}

const REQUEST: u8 = 1;
const RESPONSE: u8 = 2;
const CANCEL: u8 = 3;
const PING: u8 = 4;
const PONG: u8 = 5;
const GOAWAY: u8 = 6;
const ITEM: u8 = 7;
const END: u8 = 8;
const REQUEST_META: u8 = 9;
const CREDIT: u8 = 10;
const REQUEST_ITEMS: u8 = 11;
/// A request with its whole trace context (feature `TRACE`): a flags byte (bit 0: items
/// follow), the 128-bit trace id and the parent span id, then as `REQUEST_META`.
const REQUEST_TRACED: u8 = 12;
/// A run of items (feature `ITEM_RUNS`): `u32 length | item`, repeated.
pub(super) const ITEMS: u8 = 13;

impl Frame {
    /// Whether a request carries more trace context than the 64 bits every peer takes
    /// (it is sent so only when feature `TRACE` was negotiated).
    fn traced(trace_id: u128, parent_span: u64) -> bool {
        trace_id > u128::from(u64::MAX) || parent_span != 0
    }

    /// Sets the id of a request frame (other kinds are left as they are).
    pub fn set_request_id(&mut self, new: u64) {
        if let Frame::Request { id, .. } = self {
            *id = new;
        }
    }

    /// The call the frame belongs to (0 for go-away, which concerns the connection).
    pub fn id(&self) -> u64 {
        match self {
            Frame::Request { id, .. }
            | Frame::Response { id, .. }
            | Frame::Cancel { id }
            | Frame::Ping { id }
            | Frame::Pong { id }
            | Frame::Item { id, .. }
            | Frame::Items { id, .. }
            | Frame::End { id, .. }
            | Frame::Credit { id, .. } => *id,
            Frame::GoAway => 0,
        }
    }

    /// Appends only the header of an item frame whose payload is `len` bytes (the payload
    /// follows it on the wire, written from its own buffer).
    pub fn encode_item_header(id: u64, len: usize, out: &mut BytesMut) {
        out.reserve(HEADER);
        out.put_u32((HEADER - 4 + len) as u32);
        out.put_u8(ITEM);
        out.put_u64(id);
    }

    /// Encoded size in bytes, including the length prefix.
    pub fn encoded_len(&self) -> usize {
        HEADER
            + match self {
                Frame::Request { service, method, metadata, payload, items, trace_id, parent_span, .. } => {
                    let traced = Frame::traced(*trace_id, *parent_span);
                    let meta: usize = if metadata.is_empty() && !items && !traced {
                        0
                    } else {
                        1 + metadata.iter().map(|(n, v)| 1 + n.len() + 2 + v.len()).sum::<usize>()
                    };
                    let trace = if traced { 1 + 16 + 8 } else { 8 };
                    1 + 8 + trace + 1 + service.len() + 1 + method.len() + meta + payload.len()
                }
                Frame::Response { payload, .. } | Frame::End { payload, .. } => 1 + payload.len(),
                Frame::Item { payload, .. } => payload.len(),
                Frame::Items { run, .. } => run.body().len(),
                Frame::Credit { .. } => 4,
                _ => 0,
            }
    }

    /// Appends the frame to `out`, a request's or an answer's payload compressed when
    /// `compress` (both sides offered feature `ZSTD`) and it pays (`COMPRESS_FROM`, 1 KiB, or
    /// more, and shorter compressed).
    pub fn encode_with(&self, out: &mut BytesMut, compress: bool) {
        if compress {
            let payload = match self {
                Frame::Request { payload, .. } | Frame::Response { payload, .. } => Some(payload),
                _ => None,
            };
            if let Some(packed) = payload.and_then(|p| super::compress::compress(p)) {
                let mut frame = self.clone();
                if let Frame::Request { payload, .. } | Frame::Response { payload, .. } = &mut frame {
                    *payload = Bytes::from(packed);
                }
                let start = out.len();
                frame.encode(out);
                // The codec byte of a request and the status byte of an answer both follow
                // the header (length, kind, id).
                out[start + HEADER] |= COMPRESSED;
                return;
            }
        }
        self.encode(out)
    }

    /// Appends the frame to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        out.reserve(self.encoded_len());
        out.put_u32((self.encoded_len() - 4) as u32);
        match self {
            Frame::Request {
                id,
                codec,
                deadline,
                trace_id,
                parent_span,
                service,
                method,
                metadata,
                items,
                payload,
            } => {
                let traced = Frame::traced(*trace_id, *parent_span);
                let with_meta = !metadata.is_empty() || *items || traced;
                out.put_u8(match (traced, items, with_meta) {
                    (true, _, _) => REQUEST_TRACED,
                    (false, true, _) => REQUEST_ITEMS,
                    (false, false, true) => REQUEST_META,
                    (false, false, false) => REQUEST,
                });
                out.put_u64(*id);
                out.put_u8(codec.to_byte());
                // 0 means "no deadline"; a real deadline is at least 1 µs.
                out.put_u64(deadline.map_or(0, |d| (d.as_micros() as u64).max(1)));
                if traced {
                    out.put_u8(u8::from(*items));
                    out.put_u128(*trace_id);
                    out.put_u64(*parent_span);
                } else {
                    out.put_u64(*trace_id as u64);
                }
                out.put_u8(service.len() as u8);
                out.put_slice(service);
                out.put_u8(method.len() as u8);
                out.put_slice(method);
                if with_meta {
                    out.put_u8(metadata.len() as u8);
                    for (name, value) in metadata.iter() {
                        out.put_u8(name.len() as u8);
                        out.put_slice(name.as_bytes());
                        out.put_u16(value.len() as u16);
                        out.put_slice(value.as_bytes());
                    }
                }
                out.put_slice(payload);
            }
            Frame::Response { id, status, payload } => {
                out.put_u8(RESPONSE);
                out.put_u64(*id);
                out.put_u8(status.to_byte());
                out.put_slice(payload);
            }
            Frame::Item { id, payload } => {
                out.put_u8(ITEM);
                out.put_u64(*id);
                out.put_slice(payload);
            }
            Frame::Items { id, run } => {
                out.put_u8(ITEMS);
                out.put_u64(*id);
                out.put_slice(run.body());
            }
            Frame::End { id, status, payload } => {
                out.put_u8(END);
                out.put_u64(*id);
                out.put_u8(status.to_byte());
                out.put_slice(payload);
            }
            Frame::Credit { id, bytes } => {
                out.put_u8(CREDIT);
                out.put_u64(*id);
                out.put_u32(*bytes);
            }
            Frame::Cancel { id } => {
                out.put_u8(CANCEL);
                out.put_u64(*id);
            }
            Frame::Ping { id } => {
                out.put_u8(PING);
                out.put_u64(*id);
            }
            Frame::Pong { id } => {
                out.put_u8(PONG);
                out.put_u64(*id);
            }
            Frame::GoAway => {
                out.put_u8(GOAWAY);
                out.put_u64(0);
            }
        }
    }

    /// Takes one whole frame off the front of `buf`, if it holds one.
    ///
    /// `Ok(None)`: more bytes are needed. `Err`: the peer broke the protocol; the
    /// connection must be closed (the stream can no longer be trusted).
    pub fn decode(buf: &mut BytesMut, max_frame: u32) -> Result<Option<Frame>, Error> {
        Frame::decode_with(buf, max_frame, false)
    }

    /// As [`decode`](Self::decode), taking requests and answers compressed with zstd when
    /// `compressed` (both sides offered feature `ZSTD`): expanded within `max_frame`.
    /// Without it, a compressed payload is a protocol violation.
    pub fn decode_with(buf: &mut BytesMut, max_frame: u32, compressed: bool) -> Result<Option<Frame>, Error> {
        let unpack = |body: &Bytes| {
            if !compressed {
                return Err(Error::protocol("a compressed payload, and feature ZSTD was not negotiated"));
            }
            expand(body, max_frame as usize)
        };
        if buf.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
        if len > max_frame {
            return Err(Error::TooLarge { size: len.into(), limit: max_frame.into() });
        }
        if (len as usize) < HEADER - 4 {
            return Err(Error::protocol(format!("frame length {len} is shorter than a header")));
        }
        // Nothing is reserved for the rest: a peer that announces a large frame gets
        // memory only as its bytes arrive.
        if buf.len() < 4 + len as usize {
            return Ok(None);
        }
        buf.advance(4);
        let mut body = buf.split_to(len as usize).freeze();
        let kind = body.get_u8();
        let id = body.get_u64();
        let frame = match kind {
            REQUEST | REQUEST_META | REQUEST_ITEMS | REQUEST_TRACED => {
                let short = || Error::protocol("truncated request frame");
                let traced = kind == REQUEST_TRACED;
                if body.remaining() < 1 + 8 + if traced { 1 + 16 + 8 } else { 8 } + 1 {
                    return Err(short());
                }
                let codec_byte = body.get_u8();
                let packed = codec_byte & COMPRESSED != 0;
                let codec = Codec::from_byte(codec_byte & !COMPRESSED)
                    .ok_or_else(|| Error::protocol(format!("unknown codec {codec_byte}")))?;
                let deadline = match body.get_u64() {
                    0 => None,
                    us => Some(Duration::from_micros(us)),
                };
                let (items, trace_id, parent_span) = if traced {
                    let flags = body.get_u8();
                    (flags & 1 == 1, body.get_u128(), body.get_u64())
                } else {
                    (kind == REQUEST_ITEMS, u128::from(body.get_u64()), 0)
                };
                let service = take_name(&mut body).ok_or_else(short)?;
                let method = take_name(&mut body).ok_or_else(short)?;
                let metadata = if kind == REQUEST { Metadata::default() } else { take_metadata(&mut body)? };
                if packed {
                    body = unpack(&body)?;
                }
                Frame::Request {
                    id,
                    codec,
                    deadline,
                    trace_id,
                    parent_span,
                    service,
                    method,
                    metadata,
                    items,
                    payload: body,
                }
            }
            RESPONSE | END => {
                if body.remaining() < 1 {
                    return Err(Error::protocol("truncated response or end frame"));
                }
                let status_byte = body.get_u8();
                // Only an answer's payload may come compressed, never a stream's end.
                let packed = kind == RESPONSE && status_byte & COMPRESSED != 0;
                let status = Status::from_byte(if kind == RESPONSE { status_byte & !COMPRESSED } else { status_byte })?;
                if packed {
                    body = unpack(&body)?;
                }
                match (kind, status) {
                    (RESPONSE, status) => Frame::Response { id, status, payload: body },
                    (_, Status::Stream) => return Err(Error::protocol("an end frame cannot open a stream")),
                    (_, status) => Frame::End { id, status, payload: body },
                }
            }
            ITEM => Frame::Item { id, payload: body },
            ITEMS => Frame::Items { id, run: ItemRun::parse(body)? },
            CREDIT => {
                if body.remaining() != 4 {
                    return Err(Error::protocol("a credit frame carries 4 bytes"));
                }
                Frame::Credit { id, bytes: body.get_u32() }
            }
            CANCEL => Frame::Cancel { id },
            PING => Frame::Ping { id },
            PONG => Frame::Pong { id },
            GOAWAY => Frame::GoAway,
            k => return Err(Error::protocol(format!("unknown frame kind {k}"))),
        };
        Ok(Some(frame))
    }
}

fn take_metadata(body: &mut Bytes) -> Result<Metadata, Error> {
    let bad = || Error::protocol("truncated or non-UTF-8 metadata");
    let mut metadata = Metadata::default();
    let count = if body.remaining() >= 1 { body.get_u8() } else { return Err(bad()) };
    for _ in 0..count {
        let name = take_name(body).ok_or_else(bad)?;
        if body.remaining() < 2 {
            return Err(bad());
        }
        let len = usize::from(body.get_u16());
        if body.remaining() < len {
            return Err(bad());
        }
        let value = body.split_to(len);
        let text = |b: Bytes| String::from_utf8(b.to_vec()).map_err(|_| bad());
        metadata.push_raw(text(name)?, text(value)?);
    }
    Ok(metadata)
}

fn take_name(body: &mut Bytes) -> Option<Bytes> {
    if body.remaining() < 1 {
        return None;
    }
    let n = body.get_u8() as usize;
    (body.remaining() >= n).then(|| body.split_to(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> Frame {
        Frame::Request {
            id: 7,
            codec: Codec::Postcard,
            deadline: Some(Duration::from_millis(1500)),
            trace_id: 42,
            parent_span: 0,
            service: Bytes::from_static(b"greeter"),
            method: Bytes::from_static(b"greet"),
            metadata: Metadata::default(),
            items: false,
            payload: Bytes::from_static(b"\x03Max"),
        }
    }

    fn all_frames() -> Vec<Frame> {
        let mut with_metadata = request();
        if let Frame::Request { metadata, .. } = &mut with_metadata {
            metadata.insert("Authorization", "Bearer x");
            metadata.insert("tenant", "");
        }
        let mut with_items = request();
        if let Frame::Request { items, .. } = &mut with_items {
            *items = true;
        }
        // Kind 12: the whole trace context, with items and metadata too.
        let mut traced = with_metadata.clone();
        if let Frame::Request { trace_id, parent_span, items, .. } = &mut traced {
            (*trace_id, *parent_span, *items) =
                (0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736, 0x00f0_67aa_0ba9_02b7, true);
        }
        vec![
            request(),
            with_metadata,
            with_items,
            traced,
            Frame::Response { id: 7, status: Status::Stream, payload: Bytes::new() },
            Frame::Item { id: 7, payload: Bytes::from_static(b"{\"n\":1}") },
            Frame::Item { id: 7, payload: Bytes::new() },
            Frame::Items { id: 7, run: ItemRun::parse(Bytes::from_static(b"\0\0\0\x02hi\0\0\0\0")).unwrap() },
            Frame::End { id: 7, status: Status::Ok, payload: Bytes::new() },
            Frame::End { id: 7, status: Status::Failed, payload: Bytes::from_static(b"{\"code\":\"timeout\"}") },
            Frame::Credit { id: 7, bytes: 65536 },
            Frame::Response { id: 7, status: Status::AppError, payload: Bytes::from_static(b"{}") },
            Frame::Cancel { id: 9 },
            Frame::Ping { id: 1 },
            Frame::Pong { id: 1 },
            Frame::GoAway,
        ]
    }

    #[test]
    fn every_frame_round_trips_even_split_byte_by_byte() {
        let mut wire = BytesMut::new();
        for f in all_frames() {
            f.encode(&mut wire);
        }
        let wire = wire.freeze();
        // Feed one byte at a time: the decoder must never return a partial frame.
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for b in wire.iter() {
            buf.put_u8(*b);
            while let Some(f) = Frame::decode(&mut buf, DEFAULT_MAX_FRAME).unwrap() {
                out.push(f);
            }
        }
        assert_eq!(out, all_frames());
        assert!(buf.is_empty());
    }

    #[test]
    fn an_announced_frame_reserves_nothing_before_its_bytes_arrive() {
        let mut buf = BytesMut::with_capacity(64);
        buf.put_u32(15 * 1024 * 1024);
        buf.put_u8(2);
        assert_eq!(Frame::decode(&mut buf, DEFAULT_MAX_FRAME).unwrap(), None);
        assert!(buf.capacity() < 1024, "capacity {}", buf.capacity());
    }

    #[test]
    fn oversized_length_is_refused_before_buffering() {
        let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0xff, 1][..]);
        let err = Frame::decode(&mut buf, 1024).unwrap_err();
        assert_eq!(err, Error::TooLarge { size: 0xffff_ffff, limit: 1024 });
        assert!(buf.capacity() < 1024 * 1024, "no allocation for the claimed size");
    }

    #[test]
    fn garbage_is_a_protocol_error_not_a_panic() {
        let mut seed: u32 = 1;
        for _ in 0..2000 {
            let mut buf = BytesMut::new();
            let n = (seed % 64) as usize;
            for _ in 0..n {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                buf.put_u8((seed >> 16) as u8);
            }
            // Either needs more bytes, decodes something, or errors: never panics.
            let _ = Frame::decode(&mut buf, 4096);
        }
        let mut bad_kind = BytesMut::new();
        bad_kind.put_u32(9);
        bad_kind.put_u8(99);
        bad_kind.put_u64(0);
        assert!(matches!(Frame::decode(&mut bad_kind, 4096), Err(Error::Protocol { .. })));
    }

    #[test]
    fn deadline_zero_means_none_and_tiny_deadlines_survive() {
        let mut f = request();
        if let Frame::Request { deadline, .. } = &mut f {
            *deadline = Some(Duration::from_nanos(10));
        }
        let mut buf = BytesMut::new();
        f.encode(&mut buf);
        let Some(Frame::Request { deadline, .. }) = Frame::decode(&mut buf, 1 << 20).unwrap() else { panic!() };
        assert_eq!(deadline, Some(Duration::from_micros(1)));
    }
}
