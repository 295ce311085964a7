//! gRPC beside JSON (feature `http`): every method of a service is a gRPC method too, its
//! messages protobuf compiled from the service's JSON Schemas (docs/grpc.md). The gateway
//! serves them (HTTP/2, `application/grpc`, `grpc-timeout`, gRPC status codes, server
//! streams as gRPC streams); `meshrpc proto` writes the `.proto` files.
//!
//! Here: the shape of a service's messages ([`ServiceShape`]), protobuf's encoding of
//! JSON by that shape, the `.proto` text, and gRPC's framing and headers — no sockets.

mod proto_file;
mod shape;
mod wire;

use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};

pub use shape::{package_of, MethodNames, ServiceShape};

/// `application/grpc`, with or without a `+proto` suffix.
pub fn is_grpc(content_type: Option<&str>) -> bool {
    content_type.is_some_and(|t| {
        t == "application/grpc" || t.starts_with("application/grpc+") || t.starts_with("application/grpc;")
    })
}

/// A gRPC path `/{package}.{Service}/{method}` taken apart: `(package, Service, method)`.
pub fn split_path(path: &str) -> Option<(&str, &str, &str)> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    let (package, grpc_name) = service.rsplit_once('.')?;
    (!method.is_empty() && !method.contains('/')).then_some((package, grpc_name, method))
}

/// The `grpc-timeout` header: up to 8 digits and a unit (`H`, `M`, `S`, `m`, `u`, `n`).
pub fn parse_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// One message in gRPC's framing: a flag (not compressed) and its length first.
pub fn frame(message: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(message.len() + 5);
    out.put_u8(0);
    out.put_u32(message.len() as u32);
    out.put_slice(message);
    out.freeze()
}

/// Why a request's body is not one gRPC message.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// The body ends inside a message or its prefix.
    #[error("a gRPC message was cut short ({0} bytes of framing)")]
    Short(usize),
    /// The message's flag says compressed.
    #[error("the message is compressed and this server takes none (grpc-accept-encoding: identity)")]
    Compressed,
    /// No message, or more than one.
    #[error("a unary call takes one message, not {0}")]
    Count(usize),
}

/// The one message of a unary request's body.
pub fn unframe_one(mut body: Bytes) -> Result<Bytes, FrameError> {
    let mut messages = Vec::new();
    while body.has_remaining() {
        if body.len() < 5 {
            return Err(FrameError::Short(body.len()));
        }
        let compressed = body.get_u8();
        let len = body.get_u32() as usize;
        if compressed != 0 {
            return Err(FrameError::Compressed);
        }
        if body.len() < len {
            return Err(FrameError::Short(body.len() + 5));
        }
        messages.push(body.split_to(len));
    }
    match messages.len() {
        1 => Ok(messages.pop().expect("one")),
        n => Err(FrameError::Count(n)),
    }
}

/// A `grpc-message` value: percent-encoded, as the spec asks (bytes outside printable
/// ASCII, and `%`).
pub fn percent_encode(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for b in message.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A JSON value as the protobuf message `at` of `shape` (what a caller reads).
#[cfg_attr(not(feature = "gateway"), allow(dead_code))]
pub(crate) fn encode_reply(shape: &ServiceShape, method: &str, json: &[u8]) -> Result<Vec<u8>, String> {
    let method = shape.method(method).ok_or("no such method")?;
    let value: serde_json::Value = if json.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(json).map_err(|e| format!("the answer is not JSON: {e}"))?
    };
    let mut out = Vec::new();
    wire::encode(shape, method.reply, &value, &mut out)?;
    Ok(out)
}

/// A caller's protobuf message as the JSON arguments of `method`.
#[cfg_attr(not(feature = "gateway"), allow(dead_code))]
pub(crate) fn decode_request(shape: &ServiceShape, method: &str, message: &[u8]) -> Result<Vec<u8>, String> {
    let method = shape.method(method).ok_or("no such method")?;
    let value = wire::decode(shape, method.request, message)?;
    let value = if shape.untyped {
        // The caller's JSON text is the arguments.
        match value {
            serde_json::Value::Null => serde_json::json!({}),
            other => other,
        }
    } else {
        value
    };
    Ok(value.to_string().into_bytes())
}

/// Whether `method` can be called over gRPC: it is known and takes no stream of items.
#[cfg_attr(not(feature = "gateway"), allow(dead_code))]
pub(crate) fn callable(shape: &ServiceShape, method: &str) -> Result<(), String> {
    match shape.method(method) {
        None => Err(format!("unknown method `{method}` on service `{}`", shape.service)),
        Some(m) if m.takes_items => Err(format!(
            "`{}.{method}` takes a stream of the caller's items: not served over gRPC (use HTTP with NDJSON, or a WebSocket)",
            shape.service
        )),
        Some(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests;
