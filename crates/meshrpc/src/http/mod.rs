//! JSON over HTTP/1.1 and h2c (feature `http`): `POST /{service}/{method}` on every node's
//! port, published axum routers under `/{name}/…`, and [`serve_http`] for front doors.

mod connection;
mod driver;
mod metrics;
mod rpc;
mod streams;
mod unread;
mod websocket;

use std::sync::{Arc, RwLock};

use axum::Router;
use tokio::sync::watch;

pub use connection::serve_http;
#[cfg(feature = "tls")]
pub use connection::serve_https;
#[cfg_attr(not(feature = "cluster"), allow(unused_imports))]
pub(crate) use metrics::render_metrics;
#[cfg(feature = "gateway")]
pub(crate) use metrics::{encode_figures, exposition, GoldenMetrics};
#[cfg(feature = "tls")]
pub use rpc::rpc_router_with_policy;
#[cfg_attr(not(feature = "gateway"), allow(unused_imports))]
pub(crate) use rpc::{admitted_call, websocket_call, Hop};
pub use rpc::{
    envelope, error_response, pinned_version, rpc_call, rpc_router, sticky_key, KEY_HEADER, TIMEOUT_HEADER,
    TRACEPARENT_HEADER, VERSION_HEADER,
};
#[cfg(feature = "gateway")]
pub(crate) use websocket::is_upgrade as is_websocket;

use crate::{
    call::{BoxFuture, Dispatch},
    figures::Figures,
    identity::Admission,
    limits::HttpLimits,
    server::Server,
    server::ServerConfig,
    transport::{Door, PortCounters, Rewind},
};
use unread::{Answers, HttpConn};

/// The HTTP side of a node's port: the RPC routes and the published routers, looked up
/// per request so a router published while serving is mounted at once.
pub(crate) struct HttpDoor {
    limits: HttpLimits,
    /// What each connection is given (timeouts, the budget of unread answers).
    conn: HttpConn,
    /// What `/metrics` shows.
    figures: RwLock<Figures>,
    dispatch: RwLock<Arc<dyn Dispatch>>,
    /// The policy RPC calls pass (feature `tls`).
    #[cfg(feature = "tls")]
    access: RwLock<Option<Arc<crate::access::Access>>>,
    routers: RwLock<Vec<(String, Router)>>,
    /// Routes a cluster adds at the root (`/openapi.json`).
    node_routes: RwLock<Option<Router>>,
    /// The routes built from the above; dropped when they change.
    app: RwLock<Option<Router>>,
}

impl HttpDoor {
    pub(crate) fn new(
        dispatch: Arc<dyn Dispatch>,
        config: &ServerConfig,
        figures: Figures,
        counters: Arc<PortCounters>,
    ) -> Arc<HttpDoor> {
        Arc::new(HttpDoor {
            limits: config.http,
            conn: HttpConn {
                header_timeout: config.header_timeout,
                idle_timeout: config.http.idle_timeout,
                stuck_timeout: config.stuck_timeout,
                answers: Answers::new(config.http.max_unread_answers, counters),
            },
            figures: RwLock::new(figures),
            dispatch: RwLock::new(dispatch),
            #[cfg(feature = "tls")]
            access: RwLock::default(),
            routers: RwLock::default(),
            node_routes: RwLock::default(),
            app: RwLock::default(),
        })
    }

    /// What `/metrics` shows (a cluster adds its own figures to the server's).
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    pub(crate) fn set_figures(&self, figures: Figures) {
        *self.figures.write().unwrap() = figures;
        *self.app.write().unwrap() = None;
    }

    /// Routes served at the root besides RPC and `/metrics` (a cluster's `/openapi.json`).
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    pub(crate) fn set_node_routes(&self, routes: Router) {
        *self.node_routes.write().unwrap() = Some(routes);
        *self.app.write().unwrap() = None;
    }

    /// Where `POST /{service}/{method}` goes.
    pub(crate) fn set_dispatch(&self, dispatch: Arc<dyn Dispatch>) {
        *self.dispatch.write().unwrap() = dispatch;
        *self.app.write().unwrap() = None;
    }

    /// The policy RPC calls over HTTP pass.
    #[cfg(feature = "tls")]
    pub(crate) fn set_access(&self, access: Option<Arc<crate::access::Access>>) {
        *self.access.write().unwrap() = access;
        *self.app.write().unwrap() = None;
    }

    /// Mounts `router` under `/{name}` (replacing a router of the same name).
    pub(crate) fn publish(&self, name: &str, router: Router) {
        let mut routers = self.routers.write().unwrap();
        routers.retain(|(n, _)| n != name);
        routers.push((name.to_owned(), router));
        *self.app.write().unwrap() = None;
    }

    /// Names of the published routers.
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    pub(crate) fn names(&self) -> Vec<String> {
        self.routers.read().unwrap().iter().map(|(n, _)| n.clone()).collect()
    }

    fn app(&self) -> Router {
        if let Some(app) = self.app.read().unwrap().as_ref() {
            return app.clone();
        }
        let figures = self.figures.read().unwrap().clone();
        let metrics = axum::routing::get(move |headers: axum::http::HeaderMap| {
            std::future::ready(metrics::render_metrics(&figures, &headers))
        });
        let dispatch = self.dispatch.read().unwrap().clone();
        let admission = Admission {
            peer: None,
            #[cfg(feature = "tls")]
            access: self.access.read().unwrap().clone(),
        };
        // With a policy, what a node shows and publishes over HTTP is ruled as its calls:
        // `/metrics` as `meshrpc.stats`, `/openapi.json` as `meshrpc.schema`, a router
        // `name` as `name.http` (the admin port stays open to scrapers and probes).
        #[cfg(feature = "tls")]
        let access = self.access.read().unwrap().clone();
        #[cfg(feature = "tls")]
        let ruled = |router: Router, service: &str, method: &'static str| policed(router, &access, service, method);
        #[cfg(not(feature = "tls"))]
        let ruled = |router: Router, _: &str, _: &'static str| router;
        let node = crate::call_stats::NODE_SERVICE;
        let mut app = rpc::router(dispatch, self.limits, admission).merge(ruled(
            Router::new().route("/metrics", metrics),
            node,
            "stats",
        ));
        if let Some(routes) = self.node_routes.read().unwrap().clone() {
            app = app.merge(ruled(routes, node, "schema"));
        }
        for (name, router) in self.routers.read().unwrap().iter() {
            app = app.nest(&format!("/{name}"), ruled(router.clone(), name, "http"));
        }
        *self.app.write().unwrap() = Some(app.clone());
        app
    }
}

/// `router`, answering 403 to callers `access` does not allow `service.method`.
#[cfg(feature = "tls")]
fn policed(router: Router, access: &Option<Arc<crate::access::Access>>, service: &str, method: &'static str) -> Router {
    let Some(access) = access.clone() else { return router };
    let service: Arc<str> = Arc::from(service);
    router.layer(axum::middleware::from_fn(move |req: axum::extract::Request, next: axum::middleware::Next| {
        let (access, service) = (access.clone(), service.clone());
        async move {
            let peer = req.extensions().get::<Arc<crate::identity::Identity>>().cloned();
            match access.admit(peer.as_deref(), &service, method) {
                Ok(()) => next.run(req).await,
                Err(denied) => {
                    let status = axum::http::StatusCode::from_u16(denied.http_status()).expect("a status");
                    error_response(status, denied.code(), &denied.to_string(), None)
                }
            }
        }
    }))
}

impl Door for HttpDoor {
    fn set_dispatch(&self, dispatch: Arc<dyn Dispatch>) {
        HttpDoor::set_dispatch(self, dispatch)
    }

    #[cfg(feature = "tls")]
    fn set_access(&self, access: Option<Arc<crate::access::Access>>) {
        HttpDoor::set_access(self, access)
    }

    fn serve(self: Arc<Self>, io: Rewind, admission: Admission, shutdown: watch::Receiver<bool>) -> BoxFuture<()> {
        let conn = self.conn.clone();
        let service = tower::service_fn(move |mut req: axum::http::Request<_>| {
            use tower::ServiceExt;
            // The connection's verified caller makes this request's calls.
            if let Some(peer) = &admission.peer {
                req.extensions_mut().insert(peer.clone());
            }
            self.app().oneshot(req)
        });
        Box::pin(driver::http_connection(io, service, conn, shutdown))
    }

    fn as_any(self: Arc<Self>) -> Arc<dyn std::any::Any + Send + Sync> {
        self
    }
}

/// HTTP on a node's port (feature `http`).
impl Server {
    /// Also answers HTTP/1.1 and h2c on this port: `POST /{service}/{method}` with a JSON
    /// body of named arguments, `/ping`, `/__heartbeat__`, and published routers.
    pub fn with_http(self) -> Self {
        self.http_door();
        self
    }

    /// Publishes a plain HTTP router under `/{name}/…` (turning HTTP on, as
    /// [`with_http`](Self::with_http) does). Works before and while serving.
    pub fn publish_http(&self, name: &str, router: Router) -> &Self {
        self.http_door().publish(name, router);
        self
    }

    pub(crate) fn http_door(&self) -> Arc<HttpDoor> {
        let door = self.door_or_init(|| {
            let door = HttpDoor::new(self.dispatch(), self.config(), self.figures(), self.counters());
            #[cfg(feature = "tls")]
            door.set_access(self.access());
            door
        });
        door.as_any().downcast::<HttpDoor>().expect("the only door of a server is HTTP")
    }
}
