//! RPC over HTTP on a node (and at the gateway): `POST /{service}/{method}` with a
//! JSON body, answered in the seed's envelope `{"data": …, "errors": […]}`.

use std::{borrow::Cow, sync::Arc, time::Duration};

use axum::{
    body::Body,
    extract::{Extension, Path, State},
    http::{header, HeaderMap, HeaderValue, Method, StatusCode},
    response::{IntoResponse, Response},
    routing::{any, get},
    Router,
};
use bytes::{BufMut, Bytes, BytesMut};
use http_body_util::{BodyExt, LengthLimitError, Limited};

use crate::{
    admission::Admission,
    call::Input,
    call::{Call, Dispatch, Reply},
    codec::Codec,
    context::{new_span_id, new_trace_id, parse_traceparent, traceparent},
    error::Error,
    identity::Identity,
    limits::HttpLimits,
    request_log::RequestLog,
};

use super::{
    encoding,
    envelope::{app_error_message, error_response, http_caller, json_response},
    streams, websocket,
};

/// Header carrying a per-request timeout in milliseconds.
pub const TIMEOUT_HEADER: &str = "meshrpc-timeout-ms";
/// Header carrying the sticky-session key (calls with one key stay on one replica).
pub const KEY_HEADER: &str = "meshrpc-key";
/// Header pinning a call to replicas running one version of its service.
pub const VERSION_HEADER: &str = "meshrpc-version";

#[derive(Clone)]
struct RpcState {
    dispatch: Arc<dyn Dispatch>,
    limits: HttpLimits,
    admission: Admission,
}

/// Routes every `POST /{service}/{method}` to `dispatch`, plus `/ping` and
/// `/__heartbeat__` (204) and a JSON 404 for anything else.
///
/// A request carrying an `Arc<meshrpc::identity::Identity>` extension (put there by an auth layer
/// of your own, or by a node's mutual-TLS port) makes calls as that caller: it is the
/// call's [`peer`](Call::peer).
pub fn rpc_router(dispatch: Arc<dyn Dispatch>, limits: HttpLimits) -> Router {
    router(dispatch, limits, Admission::default())
}

/// As [`rpc_router`], and every call must be allowed by `access` for its caller (the
/// request's `Arc<Identity>` extension) first: else `403 permission_denied`.
#[cfg(feature = "tls")]
pub fn rpc_router_with_policy(
    dispatch: Arc<dyn Dispatch>,
    limits: HttpLimits,
    access: Arc<crate::access::Access>,
) -> Router {
    router(dispatch, limits, Admission { peer: None, access: Some(access) })
}

pub(crate) fn router(dispatch: Arc<dyn Dispatch>, limits: HttpLimits, admission: Admission) -> Router {
    Router::new()
        .route("/ping", get(|| async { StatusCode::NO_CONTENT }))
        .route("/__heartbeat__", get(|| async { StatusCode::NO_CONTENT }))
        .route("/{service}/{method}", any(rpc))
        .fallback(not_found)
        .with_state(RpcState { dispatch, limits, admission })
}

async fn not_found(method: Method, uri: axum::http::Uri) -> Response {
    error_response(StatusCode::NOT_FOUND, "not_found", &format!("no route for {method} {}", uri.path()), None)
}

async fn rpc(
    State(state): State<RpcState>,
    Path((service, method)): Path<(String, String)>,
    peer: Option<Extension<Arc<Identity>>>,
    req: axum::extract::Request,
) -> Response {
    let mut admission = state.admission;
    admission.peer = peer.map(|p| p.0);
    let (mut parts, body) = req.into_parts();
    if websocket::is_upgrade(&parts.headers) {
        return websocket_call(state.dispatch.clone(), &state.limits, &admission, service, method, &mut parts).await;
    }
    let hop = Hop::of(&parts.headers, &parts.extensions);
    admitted_call(
        &*state.dispatch,
        &state.limits,
        &admission,
        service,
        method,
        &parts.method,
        &parts.headers,
        body,
        hop,
    )
    .await
}

/// A call over a WebSocket (a method that takes a stream): admitted before the upgrade,
/// so a refusal is a plain HTTP answer.
pub(crate) async fn websocket_call(
    dispatch: Arc<dyn Dispatch>,
    limits: &HttpLimits,
    admission: &Admission,
    service: String,
    method: String,
    parts: &mut axum::http::request::Parts,
) -> Response {
    use axum::extract::FromRequestParts;
    let ws = match axum::extract::ws::WebSocketUpgrade::from_request_parts(parts, &()).await {
        Ok(ws) => ws,
        Err(rejection) => return rejection.into_response(),
    };
    // A WebSocket lasts until its client closes it, unless the upgrade names a timeout.
    let timeout = match timeout_of(&parts.headers, None) {
        Ok(timeout) => timeout,
        Err(bad) => return envelope(Err(bad)),
    };
    let mut call = Call::new(service, method, Bytes::new());
    call.deadline = timeout.map(|t| crate::clock::now() + t);
    let hop = Hop::of(&parts.headers, &parts.extensions);
    (call.trace_id, call.parent_span) = (hop.trace_id, hop.span);
    call.key = sticky_key(&parts.headers);
    call.version = pinned_version(&parts.headers);
    if let Err(denied) = admission.admit(&mut call) {
        return envelope(Err(denied));
    }
    if call.version.is_none() {
        call.version = dispatch.entry_version(&call.service, call.key.as_deref());
    }
    let tie = parts.extensions.get::<super::driver::UpgradeTie>().cloned();
    let mut resp = websocket::answer(ws, dispatch, call, *limits, tie);
    if let Ok(value) = HeaderValue::from_str(&hop.traceparent()) {
        resp.headers_mut().insert(TRACEPARENT_HEADER, value);
    }
    resp
}

/// Answers one `POST /{service}/{method}`: reads the body within the limits, makes the
/// call and wraps the outcome in the envelope.
pub async fn rpc_call(
    dispatch: &dyn Dispatch,
    limits: &HttpLimits,
    service: String,
    method: String,
    http_method: &Method,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    let hop = Hop::of(headers, &Default::default());
    admitted_call(dispatch, limits, &Admission::default(), service, method, http_method, headers, body, hop).await
}

#[allow(clippy::too_many_arguments)] // the parts of a request, taken apart by axum
pub(crate) async fn admitted_call(
    dispatch: &dyn Dispatch,
    limits: &HttpLimits,
    admission: &Admission,
    service: String,
    method: String,
    http_method: &Method,
    headers: &HeaderMap,
    body: Body,
    hop: Hop,
) -> Response {
    if http_method != Method::POST {
        let mut resp = error_response(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            &format!("RPC routes take POST with a JSON body, not {http_method}"),
            None,
        );
        resp.headers_mut().insert(header::ALLOW, HeaderValue::from_static("POST"));
        return resp;
    }
    let timeout = match timeout_of(headers, Some(limits.default_timeout)) {
        Ok(timeout) => timeout,
        Err(bad) => return envelope(Err(bad)),
    };
    let (payload, input) = if streams::is_ndjson(headers) {
        match streams::split_ndjson(body, limits).await {
            Ok((args, items)) => (args, Some(Input::new(items))),
            Err(e) => return envelope(Err(e)),
        }
    } else {
        match read_body(body, headers, limits).await {
            Ok(b) => (b, None),
            Err(resp) => return resp,
        }
    };
    // This HTTP hop's span: the parent of the call it makes.
    let Hop { trace_id, parent: caller_span, span: hop } = hop;
    let call = Call {
        service: Cow::Owned(service),
        method: Cow::Owned(method),
        codec: Codec::Json,
        deadline: timeout.map(|t| crate::clock::now() + t),
        trace_id,
        parent_span: hop,
        key: sticky_key(headers),
        version: pinned_version(headers),
        metadata: Default::default(),
        peer: None,
        input,
        payload,
    };
    let (result, version) = match make_call(dispatch, admission, call, caller_span).await {
        Ok(made) => made,
        Err(denied) => return envelope(Err(denied)),
    };
    let mut resp = match result {
        Ok(Reply::Stream(items)) => streams::response(items, streams::Format::of(headers)),
        result => encoding::compress(envelope(result), headers).await,
    };
    if let Ok(value) = HeaderValue::from_str(&traceparent(trace_id, hop)) {
        resp.headers_mut().insert(TRACEPARENT_HEADER, value);
    }
    if let Some(value) = version.and_then(|v| HeaderValue::from_str(&v).ok()) {
        resp.headers_mut().insert(VERSION_HEADER, value);
    }
    resp
}

/// Makes a call that came over HTTP (JSON or gRPC): admits it (else the refusal), gives
/// it its version at the front door, logs and traces it. Answers the outcome and the
/// version that served it.
pub(crate) async fn make_call(
    dispatch: &dyn Dispatch,
    admission: &Admission,
    mut call: Call,
    caller_span: u64,
) -> Result<(Result<Reply, Error>, Option<Arc<str>>), Error> {
    admission.admit(&mut call)?;
    // The front door: under an application split the request gets its version here, and
    // its answer names it.
    if call.version.is_none() {
        call.version = dispatch.entry_version(&call.service, call.key.as_deref());
    }
    let (trace_id, hop) = (call.trace_id, call.parent_span);
    let version = call.version.clone();
    let caller = http_caller(&call);
    let log = RequestLog::begin(None, &call, "http", &caller, crate::clock::now(), dispatch).until_done();
    let exported = crate::trace::start(&call.service, &call.method, || caller.clone());
    // A stream takes the log along: the call ends when the stream does.
    let result = log.finish(dispatch.dispatch(call).await);
    if let Some(span) = exported {
        span.end(trace_id, hop, caller_span, true, crate::request_log::status_of(&result));
    }
    Ok((result, version))
}

/// A request's timeout: its `meshrpc-timeout-ms` header (`0`: no deadline, a
/// long-lived stream), else `default`. Anything but a whole number of milliseconds is a
/// `bad_request` naming the header, never a silent default.
fn timeout_of(headers: &HeaderMap, default: Option<Duration>) -> Result<Option<Duration>, Error> {
    let Some(value) = headers.get(TIMEOUT_HEADER) else { return Ok(default) };
    let ms = value.to_str().ok().and_then(|v| v.trim().parse::<u64>().ok()).ok_or_else(|| {
        Error::bad_request(format!(
            "{TIMEOUT_HEADER} must be a whole number of milliseconds (0: no deadline), not {:?}",
            String::from_utf8_lossy(value.as_bytes())
        ))
    })?;
    Ok((ms > 0).then(|| Duration::from_millis(ms)))
}

/// The W3C trace context header, taken from requests and set on answers.
pub const TRACEPARENT_HEADER: &str = "traceparent";

/// One HTTP hop of a trace: the trace it joins, the caller's span (its parent; 0 for a
/// new trace) and its own span, the parent of the calls it makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Hop {
    pub(crate) trace_id: u128,
    pub(crate) parent: u64,
    pub(crate) span: u64,
}

impl Hop {
    /// The hop a gateway's `observe` started for this request (it is in the extensions),
    /// else a new one from the request's W3C `traceparent`: a malformed header is ignored
    /// and a new trace starts.
    pub(crate) fn of(headers: &HeaderMap, extensions: &axum::http::Extensions) -> Hop {
        if let Some(hop) = extensions.get::<Hop>() {
            return *hop;
        }
        let (trace_id, parent) = headers
            .get(TRACEPARENT_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_traceparent)
            .unwrap_or_else(|| (new_trace_id(), 0));
        Hop { trace_id, parent, span: new_span_id() }
    }

    /// The `traceparent` this hop answers with: the trace, and this hop's span.
    pub(crate) fn traceparent(&self) -> String {
        traceparent(self.trace_id, self.span)
    }
}

/// The version a request pins its call to: the `meshrpc-version` header.
pub fn pinned_version(headers: &HeaderMap) -> Option<Arc<str>> {
    headers.get(VERSION_HEADER).and_then(|v| v.to_str().ok()).filter(|v| !v.is_empty()).map(Arc::from)
}

/// The sticky-session key: the `meshrpc-key` header, else the `meshrpc-key` cookie.
pub fn sticky_key(headers: &HeaderMap) -> Option<Arc<str>> {
    if let Some(v) = headers.get(KEY_HEADER).and_then(|v| v.to_str().ok()) {
        return Some(Arc::from(v));
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(KEY_HEADER)?.strip_prefix('='))
        .map(Arc::from)
}

async fn read_body(body: Body, headers: &HeaderMap, limits: &HttpLimits) -> Result<Bytes, Response> {
    let too_large = |size: u64| {
        let err = Error::TooLarge { size, limit: limits.max_body as u64 };
        error_response(StatusCode::PAYLOAD_TOO_LARGE, err.code(), &err.to_string(), None)
    };
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if let Some(n) = declared.filter(|n| *n > limits.max_body as u64) {
        return Err(too_large(n));
    }
    let collect = Limited::new(body, limits.max_body).collect();
    match tokio::time::timeout(limits.body_timeout, collect).await {
        Ok(Ok(collected)) => encoding::decode(collected.to_bytes(), headers, limits.max_body),
        Ok(Err(e)) if e.is::<LengthLimitError>() => Err(too_large(limits.max_body as u64 + 1)),
        Ok(Err(e)) => Err(error_response(StatusCode::BAD_REQUEST, "bad_request", &format!("reading body: {e}"), None)),
        Err(_) => Err(error_response(
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            &format!("request body not received within {:?}", limits.body_timeout),
            None,
        )),
    }
}

/// Wraps a call's outcome in the envelope. A successful value's JSON is copied in as
/// bytes, never decoded and re-encoded.
pub fn envelope(result: Result<Reply, Error>) -> Response {
    match result {
        Ok(Reply::Stream(items)) => streams::response(items, streams::Format::Ndjson),
        Ok(Reply::Ok(data)) => {
            let mut out = BytesMut::with_capacity(data.len() + 24);
            out.put_slice(b"{\"data\":");
            out.put_slice(if data.is_empty() { b"null" } else { &data });
            out.put_slice(b",\"errors\":[]}");
            json_response(StatusCode::OK, out.freeze())
        }
        Ok(Reply::AppError(detail)) => {
            error_response(StatusCode::UNPROCESSABLE_ENTITY, "application", &app_error_message(&detail), Some(&detail))
        }
        Err(Error::Application { detail }) => error_response(
            StatusCode::UNPROCESSABLE_ENTITY,
            "application",
            "the service returned an error",
            Some(detail.as_bytes()),
        ),
        Err(e) => {
            let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            error_response(status, e.code(), &e.to_string(), None)
        }
    }
}
