//! Forwarding plain HTTP to the meshed handlers a node published (`publish_http`):
//! method, path, query, headers and a streaming body go through; hop-by-hop headers
//! do not. Replicas are picked by the cluster's one picker, as mesh calls are.

use axum::body::HttpBody as _;

use axum::{
    body::Body,
    http::{header, HeaderName, Request, Response, StatusCode, Uri},
};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};

use crate::{cluster::Cluster, http::error_response, http::sticky_key};

#[cfg(feature = "tls")]
type Connector = crate::cluster::connector::ReplicaConnector;
#[cfg(not(feature = "tls"))]
type Connector = hyper_util::client::legacy::connect::HttpConnector;

pub(crate) struct Proxy {
    client: Client<Connector, Body>,
}

/// Replicas a bodiless request may try when the first ones cannot be reached.
const MAX_ATTEMPTS: usize = 3;

impl Proxy {
    /// A proxy reaching replicas as `cluster` does (over mutual TLS when it does).
    pub(crate) fn new(cluster: &Cluster) -> Self {
        let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(std::time::Duration::from_secs(3)));
        #[cfg(feature = "tls")]
        let connector = crate::cluster::connector::ReplicaConnector::new(connector, cluster.tls().cloned());
        #[cfg(not(feature = "tls"))]
        let _ = cluster;
        Proxy { client: Client::builder(TokioExecutor::new()).build(connector) }
    }
}

const HOP_BY_HOP: [HeaderName; 5] =
    [header::CONNECTION, header::TE, header::TRAILER, header::TRANSFER_ENCODING, header::UPGRADE];

impl Proxy {
    /// Sends the request to a replica publishing the HTTP router `name`, picked as mesh
    /// calls are. A replica that cannot be reached is marked down (not picked again until
    /// its backoff passes); a request without a body then goes to another replica. A
    /// replica that has not answered (headers) within `timeout` gets a 504.
    pub(crate) async fn forward(
        &self,
        cluster: &Cluster,
        name: &str,
        req: Request<Body>,
        timeout: std::time::Duration,
    ) -> Response<Body> {
        let key = sticky_key(req.headers());
        let bodiless = req.body().size_hint().exact() == Some(0);
        let (mut parts, body) = req.into_parts();
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
        for h in &HOP_BY_HOP {
            parts.headers.remove(h);
        }
        let mut body = Some(body);
        let mut tried = Vec::new();
        loop {
            let replica = match cluster.pick_http(name, key.as_deref(), &tried).await {
                Ok(r) => r,
                Err(e) => return error_response(StatusCode::SERVICE_UNAVAILABLE, e.code(), &e.to_string(), None),
            };
            let addr = replica.addr;
            tried.push(addr);
            let uri =
                match Uri::builder().scheme("http").authority(addr.to_string()).path_and_query(path.as_str()).build() {
                    Ok(uri) => uri,
                    Err(e) => return error_response(StatusCode::BAD_REQUEST, "bad_request", &e.to_string(), None),
                };
            let mut req = Request::from_parts(parts.clone(), body.take().unwrap_or_default());
            *req.uri_mut() = uri;
            let answer = match tokio::time::timeout(timeout, self.client.request(req)).await {
                Ok(answer) => answer,
                Err(_) => {
                    replica.timed_out();
                    let msg = format!("replica {addr} did not answer within {timeout:?}");
                    return error_response(StatusCode::GATEWAY_TIMEOUT, "timeout", &msg, None);
                }
            };
            match answer {
                Ok(resp) => {
                    replica.answered(resp.status().as_u16());
                    let (mut parts, body) = resp.into_parts();
                    for h in &HOP_BY_HOP {
                        parts.headers.remove(h);
                    }
                    return Response::from_parts(parts, Body::new(body));
                }
                Err(e) => {
                    if e.is_connect() {
                        replica.failed();
                        if bodiless && tried.len() < MAX_ATTEMPTS {
                            tracing::debug!(replica = %addr, error = %e, "HTTP replica unreachable: trying another");
                            continue;
                        }
                    }
                    let msg = format!("replica {addr} did not answer: {e}");
                    return error_response(StatusCode::BAD_GATEWAY, "unavailable", &msg, None);
                }
            }
        }
    }
}
