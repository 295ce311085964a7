//! The admin port (`--admin-addr`): plaintext, read-only, for probes and scrapers —
//! `/ping`, `/__heartbeat__`, `/healthz`, `/ready`, `/metrics` and `/openapi.json`, no RPC and no published
//! routers (as Linkerd's proxy admin port). With mutual TLS on the mesh port, this is
//! where Kubernetes and Prometheus look.

use std::net::SocketAddr;

use axum::{http::StatusCode, routing::get, Json, Router};
use tokio::net::TcpListener;

use super::{Cluster, MemberState};
use crate::{error::Error, metrics::Figures, server::ServerConfig};

/// A bound admin listener, served once the node serves.
pub(super) struct Admin {
    listener: TcpListener,
}

impl Admin {
    pub(super) async fn bind(addr: &str) -> Result<Admin, Error> {
        let listener =
            TcpListener::bind(addr).await.map_err(|e| Error::from(e).context(&format!("admin port {addr}")))?;
        Ok(Admin { listener })
    }

    pub(super) fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// Serves until the node shuts down.
    pub(super) async fn serve(self, cluster: Cluster, figures: Figures) {
        let state = {
            let cluster = cluster.clone();
            move || cluster.inner.membership.state()
        };
        let ready = state.clone();
        let health = state;
        let router = Router::new()
            .route("/ping", get(|| async { StatusCode::NO_CONTENT }))
            .route("/__heartbeat__", get(|| async { StatusCode::NO_CONTENT }))
            .route(
                "/ready",
                get(move || {
                    let state = ready();
                    async move {
                        let code = if state == MemberState::Serving {
                            StatusCode::OK
                        } else {
                            StatusCode::SERVICE_UNAVAILABLE
                        };
                        (code, Json(serde_json::json!({ "state": state })))
                    }
                }),
            )
            .route(
                "/healthz",
                get(move || {
                    let state = health();
                    async move { Json(serde_json::json!({ "status": "ok", "state": state })) }
                }),
            )
            .route(
                "/metrics",
                get(move |headers: axum::http::HeaderMap| {
                    std::future::ready(crate::http::render_metrics(&figures, &headers))
                }),
            )
            .route(
                "/openapi.json",
                get({
                    let cluster = cluster.clone();
                    move || {
                        let cluster = cluster.clone();
                        async move { Json(cluster.openapi(std::time::Duration::from_secs(2)).await) }
                    }
                }),
            );
        let stopped = async move { cluster.stopped().await };
        crate::http::serve_http(self.listener, router, ServerConfig::default(), stopped).await;
    }
}
