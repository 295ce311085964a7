//! `Content-Encoding` on the RPC routes (a node's HTTP port and the gateway alike): a
//! gzip request body is decompressed within the body limit — a zip bomb gets
//! `413 too_large`, never more memory than the limit — and an answer of
//! [`COMPRESS_AT`] bytes or more goes out gzip-compressed to a caller whose
//! `Accept-Encoding` takes it. Streams are not compressed (each item must leave as it
//! comes).

use std::io::{Read, Write};

use axum::{
    body::Body,
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::Response,
};
use bytes::Bytes;

use super::envelope::error_response;
use crate::error::Error;

/// Answers shorter than this go as they are: gzip's header and the CPU cost more than
/// the bytes saved.
pub(crate) const COMPRESS_AT: usize = 1024;

/// The body as sent, decoded per its `Content-Encoding`: at most `max` bytes once
/// decompressed.
#[allow(clippy::result_large_err)] // the error is the answer, sent as it is (as read_body's)
pub(crate) fn decode(body: Bytes, headers: &HeaderMap, max: usize) -> Result<Bytes, Response> {
    let Some(encoding) = headers.get(header::CONTENT_ENCODING) else { return Ok(body) };
    let encoding = encoding.to_str().unwrap_or("").trim().to_ascii_lowercase();
    match encoding.as_str() {
        "" | "identity" => Ok(body),
        "gzip" | "x-gzip" => {
            let mut out = Vec::with_capacity((body.len() * 4).min(max));
            // One byte past the limit tells a body that is too large from one that fits.
            let read = flate2::read::MultiGzDecoder::new(&body[..]).take(max as u64 + 1).read_to_end(&mut out);
            match read {
                Ok(n) if n > max => {
                    let err = Error::TooLarge { size: max as u64 + 1, limit: max as u64 };
                    Err(error_response(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        err.code(),
                        &format!("the gzip body expands past the body limit ({max} bytes)"),
                        None,
                    ))
                }
                Ok(_) => Ok(Bytes::from(out)),
                Err(e) => Err(error_response(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    &format!("the body is not valid gzip: {e}"),
                    None,
                )),
            }
        }
        other => Err(error_response(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_encoding",
            &format!("Content-Encoding `{other}` is not supported: send gzip or identity"),
            None,
        )),
    }
}

/// Whether `Accept-Encoding` takes gzip (named, or `*`, with a quality above 0).
pub(crate) fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers.get_all(header::ACCEPT_ENCODING).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).any(
        |coding| {
            let mut parts = coding.split(';');
            let name = parts.next().unwrap_or("").trim();
            let refused = parts.any(|p| {
                p.trim().strip_prefix("q=").and_then(|q| q.trim().parse::<f32>().ok()).is_some_and(|q| q <= 0.0)
            });
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
        },
    )
}

/// `answer` gzip-compressed when the caller takes it and it is whole and large enough.
pub(crate) async fn compress(answer: Response, request: &HeaderMap) -> Response {
    let compressible = answer.headers().get(header::CONTENT_ENCODING).is_none()
        && answer.headers().get(header::CONTENT_TYPE).is_some_and(|t| t.as_bytes().starts_with(b"application/json"));
    let size = hyper::body::Body::size_hint(answer.body()).exact();
    if !compressible || size.is_none_or(|n| (n as usize) < COMPRESS_AT) {
        return answer;
    }
    let (mut parts, body) = answer.into_parts();
    parts.headers.append(header::VARY, HeaderValue::from_static("accept-encoding"));
    if !accepts_gzip(request) {
        return Response::from_parts(parts, body);
    }
    // The body is already in memory (an envelope): collecting it does not wait.
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return error_response(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the answer could not be read", None);
    };
    let mut gz = flate2::write::GzEncoder::new(Vec::with_capacity(bytes.len() / 4), flate2::Compression::fast());
    if gz.write_all(&bytes).is_err() {
        return Response::from_parts(parts, Body::from(bytes));
    }
    let Ok(compressed) = gz.finish() else { return Response::from_parts(parts, Body::from(bytes)) };
    parts.headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(compressed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        pairs.iter().map(|(k, v)| (k.clone(), HeaderValue::from_str(v).unwrap())).collect()
    }

    fn gzip(data: &[u8]) -> Bytes {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(data).unwrap();
        Bytes::from(gz.finish().unwrap())
    }

    #[test]
    fn accept_encoding_is_read_with_its_qualities() {
        let accepts = |v: &str| accepts_gzip(&headers(&[(header::ACCEPT_ENCODING, v)]));
        assert!(accepts("gzip"));
        assert!(accepts("br, GZIP;q=0.5"));
        assert!(accepts("*"));
        assert!(!accepts("gzip;q=0"));
        assert!(!accepts("br, deflate"));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }

    #[test]
    fn a_gzip_body_is_decoded_within_the_limit() {
        let gz = headers(&[(header::CONTENT_ENCODING, "gzip")]);
        let json = br#"{"name":"Max"}"#;
        assert_eq!(decode(gzip(json), &gz, 1024).unwrap(), &json[..]);
        // Exactly at the limit fits; one byte more does not, however small it was sent.
        let zeros = vec![0u8; 1 << 20];
        assert_eq!(decode(gzip(&zeros), &gz, 1 << 20).unwrap().len(), 1 << 20);
        let bomb = gzip(&vec![0u8; (1 << 20) + 1]);
        assert!(bomb.len() < 2048, "{} bytes sent", bomb.len());
        assert_eq!(decode(bomb, &gz, 1 << 20).unwrap_err().status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(decode(Bytes::from_static(b"not gzip"), &gz, 1024).unwrap_err().status(), StatusCode::BAD_REQUEST);
        let br = headers(&[(header::CONTENT_ENCODING, "br")]);
        assert_eq!(decode(gzip(json), &br, 1024).unwrap_err().status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert_eq!(decode(Bytes::from_static(json), &HeaderMap::new(), 1024).unwrap(), &json[..]);
    }
}
