//! gRPC services that are not meshrpc services (tonic, grpc-go, anything that speaks
//! gRPC over HTTP/2), in the mesh: a node publishes one that runs beside it
//! ([`Cluster::publish_grpc`], or `meshrpc sidecar`), and callers reach its replicas
//! through the cluster's picker with a [`GrpcChannel`] — a tower service that tonic's
//! generated clients take as their transport. Balancing, backoff of unreachable
//! replicas, outlier ejection, draining and the policy (a publisher's `name.http`) are
//! the mesh's; the messages go through untouched.

use std::{
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use axum::{
    body::Body,
    extract::Request,
    http::{header, HeaderValue, Response, StatusCode, Uri},
};
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::TokioExecutor,
};

use super::Cluster;
use crate::error::Error;

#[cfg(feature = "tls")]
type Connector = super::connector::ReplicaConnector;
#[cfg(not(feature = "tls"))]
type Connector = HttpConnector;

/// What a [`GrpcChannel`] sends: any body, boxed.
type BoxBody = http_body_util::combinators::UnsyncBoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// A gRPC answer: the replica's own status, headers, messages and trailers, or the
/// mesh's `UNAVAILABLE` when no replica could take the call.
pub type GrpcResponse = Response<Body>;

/// A channel to the replicas of a gRPC service published in the mesh
/// ([`Cluster::publish_grpc`]): give it to a tonic-generated client as its transport,
///
/// ```ignore
/// let currency = CurrencyServiceClient::new(cluster.grpc_channel("boutique.CurrencyService"));
/// ```
///
/// Each request goes to a replica picked as mesh calls are (the balancing policy, a
/// sticky `meshrpc-key` header, backoff of replicas that cannot be reached, draining),
/// over HTTP/2 connections kept per replica (mutual TLS when the mesh runs it).
#[derive(Clone)]
pub struct GrpcChannel {
    cluster: Cluster,
    name: Arc<str>,
    client: Client<Connector, BoxBody>,
}

impl std::fmt::Debug for GrpcChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcChannel").field("name", &self.name).finish()
    }
}

fn h2_client<C>(connector: C) -> Client<C, BoxBody>
where
    C: hyper_util::client::legacy::connect::Connect + Clone + Send + Sync + 'static,
{
    Client::builder(TokioExecutor::new()).http2_only(true).build(connector)
}

fn tcp() -> HttpConnector {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(std::time::Duration::from_secs(3)));
    connector
}

impl Cluster {
    /// A channel to the replicas of the gRPC service `name` (`package.Service`, as in its
    /// `.proto`), published in the mesh by the nodes beside them.
    pub fn grpc_channel(&self, name: &str) -> GrpcChannel {
        #[cfg(feature = "tls")]
        let connector = super::connector::ReplicaConnector::new(tcp(), self.tls().cloned());
        #[cfg(not(feature = "tls"))]
        let connector = tcp();
        GrpcChannel { cluster: self.clone(), name: Arc::from(name), client: h2_client(connector) }
    }

    /// Publishes the gRPC service `name` (`package.Service`) served by `upstream`, a
    /// server beside this node (tonic, grpc-go…) that speaks HTTP/2 without TLS: callers'
    /// requests to `/{name}/…` on this node's port go to it as they came, and its answers
    /// (trailers too) come back. Callers find it with [`grpc_channel`](Self::grpc_channel).
    pub fn publish_grpc(&self, name: &str, upstream: SocketAddr) -> Result<&Self, Error> {
        if name.contains('/') || !name.contains('.') {
            return Err(Error::bad_request(format!(
                "`{name}`: a gRPC service is named `package.Service`, as in its .proto"
            )));
        }
        let client = h2_client(tcp());
        // Mounted under `/{name}`: the router sees the rest of the path.
        let prefix: Arc<str> = Arc::from(format!("/{name}"));
        let forward = move |req: Request| forward_upstream(client.clone(), upstream, prefix.clone(), req);
        let router = axum::Router::new().route("/{*method}", axum::routing::any(forward));
        self.publish_http(name, router)
    }
}

/// One request to the upstream server, its path as the caller sent it.
async fn forward_upstream(
    client: Client<HttpConnector, BoxBody>,
    upstream: SocketAddr,
    prefix: Arc<str>,
    req: Request,
) -> Response<Body> {
    let path = format!("{prefix}{}", req.uri().path_and_query().map_or("", |p| p.as_str()));
    let uri = match Uri::builder().scheme("http").authority(upstream.to_string()).path_and_query(path.as_str()).build()
    {
        Ok(uri) => uri,
        Err(e) => return grpc_error(StatusCode::OK, 13, &format!("a path the upstream cannot take: {e}")),
    };
    let (mut parts, body) = req.into_parts();
    parts.uri = uri;
    parts.headers.remove(header::CONNECTION);
    let body = body.map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>).boxed_unsync();
    match client.request(Request::from_parts(parts, body)).await {
        Ok(resp) => resp.map(Body::new),
        // UNAVAILABLE, and an HTTP 502: the caller's channel takes this replica for down
        // (gRPC clients read a 502 as UNAVAILABLE too).
        Err(e) => grpc_error(
            StatusCode::BAD_GATEWAY,
            14,
            &format!("the gRPC server {upstream} beside this node did not answer: {e}"),
        ),
    }
}

/// A gRPC error answer made here (status in the headers, no message: "trailers only").
fn grpc_error(http: StatusCode, code: u32, message: &str) -> Response<Body> {
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = http;
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.insert("grpc-status", HeaderValue::from(code));
    if let Ok(value) = HeaderValue::from_str(&crate::grpc::percent_encode(message)) {
        headers.insert("grpc-message", value);
    }
    resp
}

impl<B> tower::Service<Request<B>> for GrpcChannel
where
    B: axum::body::HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = GrpcResponse;
    /// Every failure is an answer with a gRPC status, as a gRPC client expects.
    type Error = std::convert::Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<GrpcResponse, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let channel = self.clone();
        Box::pin(async move {
            let key = crate::http::sticky_key(req.headers());
            let replica = match channel.cluster.pick_http(&channel.name, key.as_deref(), &[]).await {
                Ok(replica) => replica,
                Err(e) => return Ok(grpc_error(StatusCode::OK, 14, &e.to_string())),
            };
            let (mut parts, body) = req.into_parts();
            let path = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
            parts.uri =
                match Uri::builder().scheme("http").authority(replica.addr.to_string()).path_and_query(path).build() {
                    Ok(uri) => uri,
                    Err(e) => return Ok(grpc_error(StatusCode::OK, 13, &format!("a gRPC path: {e}"))),
                };
            let body = body.map_err(Into::into).boxed_unsync();
            match channel.client.request(Request::from_parts(parts, body)).await {
                Ok(resp) => {
                    replica.answered(resp.status().as_u16());
                    if resp.status() == StatusCode::BAD_GATEWAY {
                        // Its node is up, its gRPC server is not: not picked until its
                        // backoff passes, as a replica that cannot be reached.
                        replica.failed();
                    }
                    Ok(resp.map(Body::new))
                }
                Err(e) => {
                    // Refused, reset, closed: not picked again until its backoff passes.
                    replica.failed();
                    let message = format!("replica {} of `{}` went away: {e}", replica.addr, channel.name);
                    Ok(grpc_error(StatusCode::OK, 14, &message))
                }
            }
        })
    }
}
