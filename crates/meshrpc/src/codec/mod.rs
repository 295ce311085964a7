//! Payload codecs. JSON is the default (curl friendly, tolerant to added fields);
//! postcard is the opt-in compact binary codec. A server answers in the codec it was
//! called with.

use bytes::Bytes;
use serde::{de::DeserializeOwned, Serialize};

use crate::error::Error;

mod finite;

/// How a call's arguments and results are encoded on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum Codec {
    /// JSON: arguments as an object keyed by parameter name.
    #[default]
    Json,
    /// postcard: arguments as a tuple in declaration order.
    Postcard,
}

impl Codec {
    pub(crate) fn to_byte(self) -> u8 {
        match self {
            Codec::Json => 0,
            Codec::Postcard => 1,
        }
    }

    pub(crate) fn from_byte(b: u8) -> Option<Self> {
        match b {
            0 => Some(Codec::Json),
            1 => Some(Codec::Postcard),
            _ => None,
        }
    }

    /// Encodes a value. A value JSON cannot carry (a NaN or infinite float, which
    /// serde_json would write as `null`) is an error, never a different value.
    pub fn encode<T: Serialize + ?Sized>(self, value: &T) -> Result<Bytes, Error> {
        let out = match self {
            // The walk visits the value's structure, not its bytes: a large string is one
            // step, so it costs little next to the encoding itself.
            Codec::Json => finite::check(value)
                .map_err(|e| e.to_string())
                .and_then(|()| serde_json::to_vec(value).map_err(|e| e.to_string())),
            Codec::Postcard => postcard::to_stdvec(value).map_err(|e| e.to_string()),
        };
        out.map(Bytes::from).map_err(|e| Error::internal(format!("encode: {e}")))
    }

    /// Encodes a value at the end of `out` (many small values into one buffer, each split
    /// off after: one allocation for many). Errors as [`encode`](Self::encode).
    pub(crate) fn encode_into<T: Serialize + ?Sized>(self, value: &T, out: &mut bytes::BytesMut) -> Result<(), Error> {
        use bytes::BufMut;
        let done = match self {
            Codec::Json => finite::check(value)
                .map_err(|e| e.to_string())
                .and_then(|()| serde_json::to_writer(out.writer(), value).map_err(|e| e.to_string())),
            Codec::Postcard => postcard::serialize_with_flavor(value, Append(out)).map_err(|e| e.to_string()),
        };
        done.map_err(|e| Error::internal(format!("encode: {e}")))
    }

    /// Decodes a value; errors name the offending field (`card.address: invalid type…`).
    pub fn decode<T: DeserializeOwned>(self, bytes: &[u8]) -> Result<T, Error> {
        match self {
            Codec::Json => {
                // The fast path; only a failure pays for the field path in its message.
                if let Ok(value) = serde_json::from_slice(bytes) {
                    return Ok(value);
                }
                let de = &mut serde_json::Deserializer::from_slice(bytes);
                let value = serde_path_to_error::deserialize(de).map_err(|e| {
                    let path = e.path().to_string();
                    let inner = e.into_inner();
                    // `?` is serde_path_to_error's "somewhere": say nothing rather than that.
                    if path == "." || path == "?" || path.is_empty() {
                        Error::bad_request(inner.to_string())
                    } else {
                        Error::bad_request(format!("{path}: {inner}"))
                    }
                })?;
                Ok(value)
            }
            Codec::Postcard => postcard::from_bytes(bytes).map_err(|e| Error::bad_request(e.to_string())),
        }
    }

    /// Decodes a value from bytes it may keep: a `bytes::Bytes` of 16 KiB or more in
    /// postcard comes out as a slice of `bytes` (no copy: a 64 KiB item stays where the
    /// connection read it), a shorter one copied without serde, any other type as
    /// [`decode`](Self::decode) gives it.
    pub(crate) fn decode_owned<T: DeserializeOwned + 'static>(self, bytes: bytes::Bytes) -> Result<T, Error> {
        if self == Codec::Postcard {
            let mut slot: Option<T> = None;
            if let Some(as_bytes) = (&mut slot as &mut dyn std::any::Any).downcast_mut::<Option<bytes::Bytes>>() {
                if let Some(start) = postcard_byte_string(&bytes) {
                    *as_bytes = Some(if bytes.len() - start >= SLICE_FROM {
                        // Advanced, not sliced: no count of the shared buffer taken and
                        // given back.
                        let mut bytes = bytes;
                        bytes::Buf::advance(&mut bytes, start);
                        bytes
                    } else {
                        // A small item kept by its reader must not keep the whole buffer
                        // it was read into alive.
                        bytes::Bytes::copy_from_slice(&bytes[start..])
                    });
                    return Ok(slot.take().expect("just set"));
                }
            }
        }
        self.decode(&bytes)
    }

    /// Decodes a method's arguments. An empty JSON body means "no arguments" (`{}`), so
    /// `curl -X POST …/service/method` works for zero-argument methods.
    pub fn decode_args<T: DeserializeOwned>(self, bytes: &[u8]) -> Result<T, Error> {
        if self == Codec::Json && bytes.iter().all(u8::is_ascii_whitespace) {
            return self.decode(b"{}");
        }
        self.decode(bytes)
    }
}

/// A byte string at least this long is handed out as part of the buffer it arrived in
/// (which it then keeps alive: at most a few times its own size); a shorter one is copied.
const SLICE_FROM: usize = 16 * 1024;

/// Where the bytes of a postcard byte string start, if `encoded` is exactly one (a varint
/// length, then that many bytes).
fn postcard_byte_string(encoded: &[u8]) -> Option<usize> {
    let mut len: u64 = 0;
    for (i, byte) in encoded.iter().take(10).enumerate() {
        len |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            let start = i + 1;
            // A varint padded with zero groups is not postcard's: let postcard refuse it.
            let canonical = i == 0 || *byte != 0;
            return (canonical && (encoded.len() - start) as u64 == len).then_some(start);
        }
    }
    None
}

/// postcard appends straight to a buffer (its `io::Write` path goes through a `Result`
/// and a length check per byte).
struct Append<'a>(&'a mut bytes::BytesMut);

impl postcard::ser_flavors::Flavor for Append<'_> {
    type Output = ();
    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        bytes::BufMut::put_u8(self.0, data);
        Ok(())
    }
    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(data);
        Ok(())
    }
    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct Args {
        name: String,
        age: u32,
    }

    #[test]
    fn a_postcard_byte_string_decodes_as_a_slice_and_anything_else_as_before() {
        for len in [0usize, 1, 127, 128, 300, 70_000] {
            let item = bytes::Bytes::from(vec![7u8; len]);
            let encoded = Codec::Postcard.encode(&item).unwrap();
            let back: bytes::Bytes = Codec::Postcard.decode_owned(encoded.clone()).unwrap();
            assert_eq!(back, item);
            // Large: the same memory, not a copy; small: a copy of its own.
            let same = back.as_ptr() == encoded[encoded.len() - len..].as_ptr();
            assert_eq!(same, len >= SLICE_FROM, "{len} bytes");
        }
        // A wrong length, and other types, take postcard's own path and its errors.
        for odd in [&[3u8, 1, 2][..], &[0x80, 0x00], &[0x81, 0x00, 9], &[1, 5, 6], &[]] {
            let odd = bytes::Bytes::copy_from_slice(odd);
            let (sliced, copied) =
                (Codec::Postcard.decode_owned::<bytes::Bytes>(odd.clone()), Codec::Postcard.decode(&odd));
            assert_eq!(sliced, copied, "{odd:?}");
        }
        let v: Vec<u8> = Codec::Postcard.decode_owned(bytes::Bytes::from_static(&[2, 1, 2])).unwrap();
        assert_eq!(v, [1, 2]);
        let json: bytes::Bytes = Codec::Json.decode_owned(bytes::Bytes::from_static(b"[1,2]")).unwrap();
        assert_eq!(&json[..], [1, 2]);
    }

    #[test]
    fn both_codecs_round_trip() {
        let v = Args { name: "Max".into(), age: 7 };
        for codec in [Codec::Json, Codec::Postcard] {
            let bytes = codec.encode(&v).unwrap();
            assert_eq!(codec.decode::<Args>(&bytes).unwrap(), v);
        }
    }

    #[test]
    fn json_errors_name_the_field() {
        let err = Codec::Json.decode::<Args>(br#"{"name":"Max","age":"old"}"#).unwrap_err();
        let Error::BadRequest { message } = err else { panic!("{err:?}") };
        assert!(message.starts_with("age: invalid type: string"), "{message}");
        let err = Codec::Json.decode::<Args>(br#"{"name":"Max"}"#).unwrap_err();
        assert!(err.to_string().contains("missing field `age`"), "{err}");
    }

    #[test]
    fn json_never_turns_a_float_into_null() {
        #[derive(Serialize)]
        struct Reading {
            value: Option<f64>,
        }
        for v in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let err = Codec::Json.encode(&v).unwrap_err();
            assert!(err.to_string().contains("has no JSON form"), "{err}");
            assert!(Codec::Json.encode(&Reading { value: Some(v) }).is_err());
            assert!(Codec::Json.encode(&vec![(1u8, v as f32)]).is_err());
            // postcard carries them as they are.
            assert!(
                Codec::Postcard.decode::<f64>(&Codec::Postcard.encode(&v).unwrap()).unwrap().is_nan() == v.is_nan()
            );
        }
        assert_eq!(&Codec::Json.encode(&Reading { value: None }).unwrap()[..], br#"{"value":null}"#);
        assert_eq!(&Codec::Json.encode(&1.5f64).unwrap()[..], b"1.5");
    }

    #[test]
    fn malformed_json_says_what_without_a_placeholder_path() {
        let err = Codec::Json.decode::<Args>(br#"{"name":"Max""#).unwrap_err();
        assert!(err.to_string().starts_with("bad request: EOF while parsing"), "{err}");
    }

    #[test]
    fn empty_json_body_is_no_arguments() {
        #[derive(Deserialize)]
        struct NoArgs {}
        Codec::Json.decode_args::<NoArgs>(b"").unwrap();
        Codec::Json.decode_args::<NoArgs>(b" \n").unwrap();
    }
}
