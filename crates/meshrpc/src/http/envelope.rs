//! The JSON envelope of every HTTP answer (`{"data": …, "errors": […]}`), errors in it,
//! and who a call over HTTP is from, as request lines name it.

use axum::{
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use bytes::Bytes;

use crate::call::Call;

/// `{"data":null,"errors":[{"code":…,"message":…[,"detail":…]}]}`
pub fn error_response(status: StatusCode, code: &str, message: &str, detail: Option<&[u8]>) -> Response {
    json_response(status, Bytes::from(errors_body(error_entry(code, message, detail)).to_string()))
}

/// One entry of an answer's `errors`: `{"code":…,"message":…[,"detail":…]}` (`detail`: JSON).
pub(crate) fn error_entry(code: &str, message: &str, detail: Option<&[u8]>) -> serde_json::Value {
    let mut entry = serde_json::json!({ "code": code, "message": message });
    if let Some(detail) = detail {
        entry["detail"] = serde_json::from_slice(detail).unwrap_or(serde_json::Value::Null);
    }
    entry
}

/// `{"data":null,"errors":[entry]}`
pub(crate) fn errors_body(entry: serde_json::Value) -> serde_json::Value {
    serde_json::json!({ "data": null, "errors": [entry] })
}

/// The message of an application error: a string error reads as itself; anything else
/// keeps its structure in `detail`.
pub(crate) fn app_error_message(detail: &[u8]) -> String {
    serde_json::from_slice::<String>(detail).unwrap_or_else(|_| "the service returned an error".into())
}

pub(crate) fn json_response(status: StatusCode, body: Bytes) -> Response {
    (status, [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response()
}

/// Who makes a call over HTTP, for request lines: `http`, or the verified caller's name.
pub(crate) fn http_caller(call: &Call) -> String {
    call.peer.as_ref().map_or_else(|| "http".to_owned(), |p| format!("{p} (http)"))
}
