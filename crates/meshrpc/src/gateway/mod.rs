//! The HTTP front door of a cluster (axum): every published RPC method as
//! `POST /{service}/{method}`, every published HTTP router under `/{service}/…`,
//! plus `/healthz`, `/metrics` and request logs. Merge [`Gateway::router`] into your
//! own router to build a custom gateway.

#[cfg(feature = "tls")]
mod auth;
mod dashboard;
mod grpc;
mod metrics;
mod proxy;
mod ratelimit;

use std::{sync::Arc, time::Duration};

use axum::{
    extract::{MatchedPath, Request, State},
    http::{HeaderValue, Method, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
    routing::get,
    Router,
};

#[cfg(feature = "tls")]
pub use auth::{BearerAuth, TokenError};
pub use metrics::Metrics;
pub use ratelimit::{Rate, RateLimits};

use crate::{
    admission::Admission,
    client::Channel,
    cluster::Cluster,
    context::CallContext,
    http::{admitted_call, envelope, error_response, Hop},
    identity::Identity,
    limits::HttpLimits,
};

/// Labels a response for metrics and logs: which service and method answered.
#[derive(Clone, Debug)]
struct Answered {
    service: String,
    method: String,
}

/// Builds the gateway's routes.
#[derive(Clone)]
pub struct Gateway {
    shared: Arc<Shared>,
}

struct Shared {
    cluster: Cluster,
    channel: Channel,
    settings: Settings,
    metrics: Arc<Metrics>,
    proxy: proxy::Proxy,
    grpc_shapes: grpc::Shapes,
}

#[derive(Clone, Default)]
struct Settings {
    limits: HttpLimits,
    require: Vec<String>,
    admission: Admission,
}

impl Gateway {
    /// A gateway in front of `cluster`.
    pub fn new(cluster: Cluster) -> Self {
        Self::with(cluster, Settings::default())
    }

    fn with(cluster: Cluster, settings: Settings) -> Self {
        let channel = cluster.channel();
        let proxy = proxy::Proxy::new(&cluster);
        let mut metrics = Metrics::default();
        metrics.watch(cluster.clone());
        let metrics = Arc::new(metrics);
        Gateway {
            shared: Arc::new(Shared { cluster, channel, settings, metrics, proxy, grpc_shapes: Default::default() }),
        }
    }

    fn change(self, f: impl FnOnce(&mut Settings)) -> Self {
        let mut settings = self.shared.settings.clone();
        f(&mut settings);
        Self::with(self.shared.cluster.clone(), settings)
    }

    /// Body size and timeouts for callers.
    pub fn limits(self, limits: HttpLimits) -> Self {
        self.change(|s| s.limits = limits)
    }

    /// Services `/healthz` requires to answer before it reports ready.
    pub fn require<I: IntoIterator<Item = S>, S: Into<String>>(self, services: I) -> Self {
        self.change(|s| s.require = services.into_iter().map(Into::into).collect())
    }

    /// Outside callers must be allowed by `access` (feature `tls`): their identity is the
    /// request's `Arc<Identity>` extension — a bearer token's subject with
    /// [`BearerAuth`], or whatever your own auth layer puts there. Denied: `403
    /// permission_denied`. A proxied HTTP router `r` is checked as the method `r.http`.
    #[cfg(feature = "tls")]
    pub fn access(self, access: Arc<crate::access::Access>) -> Self {
        self.change(|s| s.admission.access = Some(access))
    }

    /// Requires a bearer token (API key or JWT) on every route but the health ones, and
    /// makes calls as its subject (feature `tls`). Apply it outermost.
    #[cfg(feature = "tls")]
    pub fn authenticate(&self, router: Router, auth: BearerAuth) -> Router {
        router.layer(axum::middleware::from_fn_with_state(auth, BearerAuth::layer))
    }

    /// Limits the rate of requests to `router`'s routes, per client and per route: a
    /// request over a limit gets `429 rate_limited` with `Retry-After` (the probes and
    /// `/metrics` never do). Apply it inside [`authenticate`](Self::authenticate), so a
    /// client is its token's subject (else its IP address).
    pub fn rate_limit(&self, router: Router, limits: RateLimits) -> Router {
        if limits.is_empty() {
            return router;
        }
        let limiter = Arc::new(ratelimit::Limiter::new(limits, self.shared.metrics.clone()));
        router.layer(axum::middleware::from_fn_with_state(limiter, ratelimit::limit))
    }

    /// The generic routes: `/healthz`, `/metrics`, `/ping`, `/__heartbeat__`, the live
    /// [`dashboard`](Self::dashboard), `/openapi.json` (OpenAPI 3.1 of every service) and
    /// `/docs` (a page reading it, embedded: no CDN), and every service of the cluster
    /// under `/{service}/…`.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/healthz", get(healthz))
            .route("/metrics", get(metrics))
            .route("/openapi.json", get(openapi))
            .route("/docs", get(|| async { axum::response::Html(include_str!("docs.html")) }))
            .route("/ping", get(|| async { StatusCode::NO_CONTENT }))
            .route("/__heartbeat__", get(|| async { StatusCode::NO_CONTENT }))
            .fallback(mesh)
            .with_state(self.shared.clone())
            .merge(self.dashboard())
    }

    /// The live dashboard alone: `/dashboard` (an embedded page: it works offline) and
    /// `/dashboard/events` (Server-Sent Events, a snapshot a second): nodes and their
    /// states, the services each serves, the calls between nodes with their requests/s,
    /// each service's golden metrics. At most 16 open at once.
    pub fn dashboard(&self) -> Router {
        dashboard::dashboard(self.shared.cluster.clone())
    }

    /// Wraps a router (yours merged with [`router`](Self::router)) with metrics and
    /// request logs.
    pub fn observe(&self, router: Router) -> Router {
        router.layer(axum::middleware::from_fn_with_state(self.shared.clone(), observe))
    }

    /// Metrics of this gateway.
    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }
}

async fn observe(State(shared): State<Arc<Shared>>, mut req: Request, next: Next) -> Response {
    let start = crate::clock::now();
    let (method, path) = (req.method().clone(), req.uri().path().to_owned());
    // Custom routes are labelled by their pattern (bounded), the mesh by what answered.
    let matched = req.extensions().get::<MatchedPath>().map(|m| m.as_str().to_owned());
    // The trace this request joins (its `traceparent`) or starts, and this hop's span: the
    // generic routes answer as this hop; a custom route's handler runs inside it, so the
    // calls it makes (through generated clients) carry it on.
    let hop = Hop::of(req.headers(), req.extensions());
    req.extensions_mut().insert(hop);
    let exported = crate::trace::start("http", &path, || "http".to_owned());
    shared.metrics.started();
    let version = crate::http::pinned_version(req.headers());
    let context = CallContext { deadline: None, trace_id: hop.trace_id, span_id: hop.span, version };
    let mut resp = context.scope(next.run(req)).await;
    let status = resp.status().as_u16();
    if !resp.headers().contains_key(crate::http::TRACEPARENT_HEADER) {
        // A custom route (the generic ones answer it themselves): this hop is its span.
        if let Ok(value) = HeaderValue::from_str(&hop.traceparent()) {
            resp.headers_mut().insert(crate::http::TRACEPARENT_HEADER, value);
        }
        if let Some(span) = exported {
            let name = format!("HTTP {method} {}", matched.as_deref().unwrap_or(&path));
            span.end_named(name, hop.trace_id, hop.span, hop.parent, crate::trace::http_code(status));
        }
    }
    let (service, route) = match (resp.extensions().get::<Answered>(), matched) {
        (Some(a), _) => (a.service.clone(), a.method.clone()),
        (None, Some(m)) => (m.trim_start_matches('/').split('/').next().unwrap_or_default().to_owned(), m),
        (None, None) => ("none".to_owned(), "none".to_owned()),
    };
    let took = crate::clock::since(start);
    shared.metrics.finished(&service, &route, status, took.as_secs_f64());
    // A line per request only when asked (`MESHRPC_REQUEST_LOG`); the RPC calls are in
    // the summary either way, and everything in `/metrics`.
    if crate::request_log::line_picked() {
        // The trace this request joined or started, as its answer says (`traceparent`).
        let trace_id = resp
            .headers()
            .get(crate::http::TRACEPARENT_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split('-').nth(1))
            .unwrap_or("-")
            .to_owned();
        tracing::info!(
            target: "meshrpc::gateway", %method, %path, status, micros = took.as_micros() as u64, %trace_id, "request"
        );
    }
    resp
}

async fn metrics(State(shared): State<Arc<Shared>>, headers: axum::http::HeaderMap) -> Response {
    shared.metrics.answer(&headers)
}

/// The OpenAPI 3.1 document of every service in the cluster.
async fn openapi(State(shared): State<Arc<Shared>>) -> Response {
    axum::Json(shared.cluster.openapi(Duration::from_secs(2)).await).into_response()
}

async fn healthz(State(shared): State<Arc<Shared>>) -> Response {
    let mut missing = Vec::new();
    for service in &shared.settings.require {
        if shared.cluster.ping(service, Duration::from_secs(1)).await.is_err() {
            missing.push(service.clone());
        }
    }
    let members = shared.cluster.members().len();
    if missing.is_empty() {
        let body = serde_json::json!({ "status": "ok", "members": members, "required": shared.settings.require });
        (StatusCode::OK, axum::Json(body)).into_response()
    } else {
        let msg = format!("required services not answering: {}", missing.join(", "));
        error_response(StatusCode::SERVICE_UNAVAILABLE, "not_ready", &msg, None)
    }
}

/// `/{service}/{method}` → RPC when the service has that method; anything else under a
/// service that published an HTTP router → that router; otherwise a JSON 404.
async fn mesh(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let path = req.uri().path().to_owned();
    let mut segments = path.trim_start_matches('/').splitn(2, '/');
    let service = segments.next().unwrap_or_default().to_owned();
    let rest = segments.next().unwrap_or_default().to_owned();
    let view = shared.cluster.view();
    let is_method = view.has_method(&service, &rest);
    let label = |mut resp: Response, method: &str| {
        resp.extensions_mut().insert(Answered { service: service.clone(), method: method.to_owned() });
        resp
    };
    let mut admission = shared.settings.admission.clone();
    admission.peer = req.extensions().get::<Arc<Identity>>().cloned();
    if grpc::is_grpc(&req) {
        return grpc::call(&shared, admission, req).await;
    }
    if is_method {
        let (mut parts, body) = req.into_parts();
        if crate::http::is_websocket(&parts.headers) {
            let dispatch: Arc<dyn crate::call::Dispatch> = Arc::new(shared.channel.clone());
            let limits = &shared.settings.limits;
            let resp =
                crate::http::websocket_call(dispatch, limits, &admission, service.clone(), rest.clone(), &mut parts);
            return label(resp.await, &rest);
        }
        let hop = Hop::of(&parts.headers, &parts.extensions);
        let resp = admitted_call(
            &shared.channel,
            &shared.settings.limits,
            &admission,
            service.clone(),
            rest.clone(),
            &parts.method,
            &parts.headers,
            body,
            hop,
        )
        .await;
        return label(resp, &rest);
    }
    if view.knows_http(&service) {
        let mut check = crate::call::Call::new(service.clone(), "http", Default::default());
        if let Err(denied) = admission.admit(&mut check) {
            return label(envelope(Err(denied)), "http");
        }
        let resp = shared.proxy.forward(&shared.cluster, &service, req, shared.settings.limits.default_timeout).await;
        return label(resp, "http");
    }
    let (status, code, msg) = if view.knows(&service) {
        (StatusCode::NOT_FOUND, "unknown_method", format!("unknown method `{rest}` on service `{service}`"))
    } else if req.method() == Method::POST && !rest.is_empty() && !rest.contains('/') {
        (StatusCode::NOT_FOUND, "unknown_service", format!("unknown service `{service}`"))
    } else {
        (StatusCode::NOT_FOUND, "not_found", format!("no route for {} {path}", req.method()))
    };
    error_response(status, code, &msg, None)
}
