//! gRPC at the front door: `POST /{package}.{Service}/{method}` with `content-type:
//! application/grpc` (HTTP/2) is the call `{service}.{method}`, its protobuf message made
//! the JSON arguments by the service's shape and its answer made protobuf again. Status
//! codes and `grpc-message` travel in trailers; a streaming answer is a gRPC server stream.

use std::{
    borrow::Cow,
    collections::HashMap,
    convert::Infallible,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    body::Body,
    extract::Request,
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::Response,
};
use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Limited, StreamBody};
use hyper::body::Frame;

use crate::{
    admission::Admission,
    call::{Call, Items, Reply},
    codec::Codec,
    error::Error,
    grpc::{self, ServiceShape},
    http::{make_call, pinned_version, sticky_key, Hop, TRACEPARENT_HEADER, VERSION_HEADER},
};

use super::Shared;

/// Shapes kept, by service and fingerprint (a new contract is a new shape).
const MAX_SHAPES: usize = 256;
/// How long the gateway waits for a replica to describe its service.
const SCHEMA_TIMEOUT: Duration = Duration::from_secs(2);

/// The shapes of the services gRPC callers called, made once per contract.
#[derive(Default)]
pub(super) struct Shapes(Mutex<HashMap<(String, String), Arc<ServiceShape>>>);

/// A gRPC request to the front door.
pub(super) fn is_grpc(req: &Request) -> bool {
    grpc::is_grpc(req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()))
}

/// An answer carrying only a status (its trailers).
fn status(code: u32, message: &str) -> Response {
    respond(vec![trailers(code, message, None)], HeaderMap::new())
}

fn failed(error: &Error) -> Response {
    respond(vec![error_trailers(error)], HeaderMap::new())
}

/// An error's status; the service's own error (a stream's, after items) with its detail.
fn error_trailers(error: &Error) -> Frame<Bytes> {
    match error {
        Error::Application { detail } => trailers(2, &app_message(detail.as_bytes()), Some(detail.as_bytes())),
        other => trailers(other.grpc_status(), &other.to_string(), None),
    }
}

/// `grpc-message` of the service's own error: a string error reads as itself, any other
/// as its JSON (most gRPC clients show the message only).
fn app_message(detail: &[u8]) -> String {
    serde_json::from_slice::<String>(detail).unwrap_or_else(|_| String::from_utf8_lossy(detail).into_owned())
}

fn trailers(code: u32, message: &str, detail: Option<&[u8]>) -> Frame<Bytes> {
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from(code));
    if !message.is_empty() {
        if let Ok(value) = HeaderValue::from_str(&grpc::percent_encode(message)) {
            trailers.insert("grpc-message", value);
        }
    }
    // The service's own error, as its JSON (the HTTP answer's `errors[0].detail`).
    if let Some(Ok(value)) = detail.map(|d| HeaderValue::from_str(&grpc::percent_encode(&String::from_utf8_lossy(d)))) {
        trailers.insert("meshrpc-error-detail", value);
    }
    Frame::trailers(trailers)
}

fn respond(frames: Vec<Frame<Bytes>>, headers: HeaderMap) -> Response {
    let stream = futures_util::stream::iter(frames.into_iter().map(Ok::<_, Infallible>));
    response(Body::new(StreamBody::new(stream)), headers)
}

fn response(body: Body, headers: HeaderMap) -> Response {
    let mut resp = Response::new(body);
    *resp.status_mut() = StatusCode::OK;
    resp.headers_mut().extend(headers);
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    resp.headers_mut().insert("grpc-accept-encoding", HeaderValue::from_static("identity"));
    resp
}

impl Shared {
    /// The shape of `service` at the contract its replicas serve now.
    async fn shape(&self, service: &str) -> Result<Arc<ServiceShape>, Error> {
        let fingerprint = {
            let view = self.cluster.view();
            let member = view.replicas(service, None).next();
            member.and_then(|m| m.services.get(service)).map(|a| a.fingerprint.clone())
        };
        let key = (service.to_owned(), fingerprint.ok_or_else(|| Error::UnknownService { service: service.into() })?);
        if let Some(shape) = self.grpc_shapes.0.lock().unwrap().get(&key) {
            return Ok(shape.clone());
        }
        let shape = Arc::new(self.cluster.grpc_shape(service, SCHEMA_TIMEOUT).await?);
        let mut shapes = self.grpc_shapes.0.lock().unwrap();
        if shapes.len() >= MAX_SHAPES {
            shapes.clear();
        }
        shapes.insert(key, shape.clone());
        Ok(shape)
    }
}

/// Answers one gRPC call.
pub(super) async fn call(shared: &Arc<Shared>, admission: Admission, req: Request) -> Response {
    let path = req.uri().path().to_owned();
    let Some((package, grpc_name, method)) = grpc::split_path(&path) else {
        return status(12, &format!("not a gRPC method path: {path}"));
    };
    // A gRPC server published in the mesh as it is (`publish_grpc`, `meshrpc sidecar`):
    // its replicas answer the call untouched.
    let published = &path[1..path[1..].find('/').map_or(path.len(), |i| i + 1)];
    if shared.cluster.view().knows_http(published) {
        use tower::ServiceExt;
        // Ruled as every published router: the caller needs `{name}.http`.
        let mut check = Call::new(published.to_owned(), "http", Bytes::new());
        if let Err(denied) = admission.admit(&mut check) {
            return failed(&denied);
        }
        let channel = shared.cluster.grpc_channel(published);
        let Ok(resp) = channel.oneshot(req).await;
        let (service, method) = (published.to_owned(), method.to_owned());
        let mut resp = resp;
        resp.extensions_mut().insert(super::Answered { service, method });
        return resp;
    }
    let services = shared.cluster.services();
    let Some(service) = services.iter().find(|s| grpc::package_of(&s.name) == package).map(|s| s.name.clone()) else {
        return status(12, &format!("unknown service `{package}.{grpc_name}`"));
    };
    let method = method.to_owned();
    let mut resp = serve(shared, admission, req, &service, &method).await;
    resp.extensions_mut().insert(super::Answered { service, method });
    resp
}

async fn serve(shared: &Arc<Shared>, admission: Admission, req: Request, service: &str, method: &str) -> Response {
    let shape = match shared.shape(service).await {
        Ok(shape) => shape,
        Err(e) => return failed(&e),
    };
    if let Err(why) = grpc::callable(&shape, method) {
        return status(12, &why);
    }
    if let Some((_, grpc_name, _)) = grpc::split_path(req.uri().path()).filter(|(_, g, _)| *g != shape.grpc_name) {
        return status(12, &format!("unknown service `{}.{grpc_name}` (it is `{}`)", shape.package, shape.grpc_name));
    }
    let limits = &shared.settings.limits;
    let timeout = match req.headers().get("grpc-timeout").map(|v| v.to_str().ok().and_then(grpc::parse_timeout)) {
        None => Some(limits.default_timeout),
        Some(Some(timeout)) => Some(timeout),
        Some(None) => return status(3, "grpc-timeout must be up to 8 digits and a unit (H, M, S, m, u, n)"),
    };
    let (parts, body) = req.into_parts();
    let body = match tokio::time::timeout(limits.body_timeout, Limited::new(body, limits.max_body).collect()).await {
        Ok(Ok(body)) => body.to_bytes(),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            let error = Error::TooLarge { size: limits.max_body as u64 + 1, limit: limits.max_body as u64 };
            return failed(&error);
        }
        Ok(Err(e)) => return status(13, &format!("reading the request: {e}")),
        Err(_) => return status(4, &format!("request not received within {:?}", limits.body_timeout)),
    };
    let message = match grpc::unframe_one(body) {
        Ok(message) => message,
        Err(e @ grpc::FrameError::Compressed) => return status(12, &e.to_string()),
        Err(e) => return status(3, &e.to_string()),
    };
    let payload = match grpc::decode_request(&shape, method, &message) {
        Ok(json) => Bytes::from(json),
        Err(why) => return status(3, &format!("decoding {service}.{method}'s request: {why}")),
    };
    let Hop { trace_id, parent: caller_span, span: hop } = Hop::of(&parts.headers, &parts.extensions);
    let call = Call {
        service: Cow::Owned(service.to_owned()),
        method: Cow::Owned(method.to_owned()),
        codec: Codec::Json,
        deadline: timeout.map(|t| crate::clock::now() + t),
        trace_id,
        parent_span: hop,
        key: sticky_key(&parts.headers),
        version: pinned_version(&parts.headers),
        metadata: Default::default(),
        peer: None,
        input: None,
        payload,
    };
    let (result, version) = match make_call(&shared.channel, &admission, call, caller_span).await {
        Ok(made) => made,
        Err(denied) => return failed(&denied),
    };
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_str(&crate::context::traceparent(trace_id, hop)) {
        headers.insert(TRACEPARENT_HEADER, value);
    }
    if let Some(value) = version.and_then(|v| HeaderValue::from_str(&v).ok()) {
        headers.insert(VERSION_HEADER, value);
    }
    match result {
        Ok(Reply::Stream(items)) => {
            response(Body::new(StreamBody::new(stream(shape, method.to_owned(), items))), headers)
        }
        Ok(reply) => respond(answer(&shape, method, reply), headers),
        Err(e) => respond(vec![error_trailers(&e)], headers),
    }
}

/// The frames of one answer (a stream's item, or a unary call's value): its message and,
/// for a unary call, its status; an error's status alone.
fn answer(shape: &ServiceShape, method: &str, reply: Reply) -> Vec<Frame<Bytes>> {
    match reply {
        Reply::Ok(json) => match grpc::encode_reply(shape, method, &json) {
            Ok(message) => vec![Frame::data(grpc::frame(&message)), trailers(0, "", None)],
            Err(why) => vec![trailers(13, &format!("the answer does not fit its schema: {why}"), None)],
        },
        Reply::AppError(detail) => vec![trailers(2, &app_message(&detail), Some(&detail))],
        Reply::Stream(_) => vec![trailers(13, "a stream inside a stream", None)],
    }
}

/// A streaming answer: a message per item, then the status.
fn stream(
    shape: Arc<ServiceShape>,
    method: String,
    items: Items,
) -> impl futures_core::Stream<Item = Result<Frame<Bytes>, Infallible>> {
    futures_util::stream::unfold(Some(items), move |items| {
        let (shape, method) = (shape.clone(), method.clone());
        async move {
            let mut items = items?;
            let frames = match items.next().await {
                Some(Ok(Reply::Ok(json))) => match grpc::encode_reply(&shape, &method, &json) {
                    Ok(message) => return Some((vec![Frame::data(grpc::frame(&message))], Some(items))),
                    Err(why) => vec![trailers(13, &format!("an item does not fit its schema: {why}"), None)],
                },
                Some(Ok(reply)) => answer(&shape, &method, reply),
                Some(Err(e)) => vec![error_trailers(&e)],
                None => vec![trailers(0, "", None)],
            };
            Some((frames, None))
        }
    })
    .flat_map(|frames| futures_util::stream::iter(frames.into_iter().map(Ok)))
}
