//! Forwarding plain HTTP to the meshed handlers a node published (`publish_http`):
//! method, path, query, headers and a streaming body go through; hop-by-hop headers
//! do not.

use std::sync::atomic::{AtomicUsize, Ordering};

use axum::{
    body::Body,
    http::{header, HeaderName, Request, Response, StatusCode, Uri},
};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};

use crate::{cluster::MemberState, server::http::error_response, Cluster};

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Body>;

pub(crate) struct Proxy {
    client: HttpClient,
    next: AtomicUsize,
}

impl Default for Proxy {
    fn default() -> Self {
        let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(std::time::Duration::from_secs(3)));
        Proxy { client: Client::builder(TokioExecutor::new()).build(connector), next: AtomicUsize::new(0) }
    }
}

const HOP_BY_HOP: [HeaderName; 5] =
    [header::CONNECTION, header::TE, header::TRAILER, header::TRANSFER_ENCODING, header::UPGRADE];

impl Proxy {
    /// Sends the request to a replica publishing the HTTP router `name`, round robin;
    /// a replica that has not answered (headers) within `timeout` gets a 504.
    pub(crate) async fn forward(
        &self,
        cluster: &Cluster,
        name: &str,
        mut req: Request<Body>,
        timeout: std::time::Duration,
    ) -> Response<Body> {
        let members = cluster.members();
        let replicas: Vec<_> = members
            .iter()
            .filter(|m| m.state == MemberState::Serving && m.http.iter().any(|h| h == name))
            .filter_map(|m| m.addr)
            .collect();
        if replicas.is_empty() {
            let msg = format!("no reachable replica serves HTTP for `{name}`");
            return error_response(StatusCode::SERVICE_UNAVAILABLE, "unavailable", &msg, None);
        }
        let addr = replicas[self.next.fetch_add(1, Ordering::Relaxed) % replicas.len()];
        let path = req.uri().path_and_query().map_or("/", |p| p.as_str()).to_owned();
        *req.uri_mut() = match Uri::builder().scheme("http").authority(addr.to_string()).path_and_query(path).build() {
            Ok(uri) => uri,
            Err(e) => return error_response(StatusCode::BAD_REQUEST, "bad_request", &e.to_string(), None),
        };
        for h in &HOP_BY_HOP {
            req.headers_mut().remove(h);
        }
        let answer = match tokio::time::timeout(timeout, self.client.request(req)).await {
            Ok(answer) => answer,
            Err(_) => {
                let msg = format!("replica {addr} did not answer within {timeout:?}");
                return error_response(StatusCode::GATEWAY_TIMEOUT, "timeout", &msg, None);
            }
        };
        match answer {
            Ok(resp) => {
                let (mut parts, body) = resp.into_parts();
                for h in &HOP_BY_HOP {
                    parts.headers.remove(h);
                }
                Response::from_parts(parts, Body::new(body))
            }
            Err(e) => {
                let msg = format!("replica {addr} did not answer: {e}");
                error_response(StatusCode::BAD_GATEWAY, "unavailable", &msg, None)
            }
        }
    }
}
