//! JSON over HTTP/1.1 and h2c (feature `http`): `POST /{service}/{method}` on every node's
//! port, published axum routers under `/{name}/…`, and [`serve_http`] for front doors.

mod connection;
mod driver;
mod encoding;
mod envelope;
mod exposition;
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
pub use envelope::error_response;
#[cfg_attr(not(feature = "cluster"), allow(unused_imports))]
pub(crate) use exposition::render_metrics;
#[cfg(feature = "gateway")]
pub(crate) use exposition::{encode_figures, exposition, GoldenMetrics};
#[cfg(feature = "tls")]
pub use rpc::rpc_router_with_policy;
#[cfg_attr(not(feature = "gateway"), allow(unused_imports))]
pub(crate) use rpc::{admitted_call, make_call, websocket_call, Hop};
pub use rpc::{
    envelope, pinned_version, rpc_call, rpc_router, sticky_key, KEY_HEADER, TIMEOUT_HEADER, TRACEPARENT_HEADER,
    VERSION_HEADER,
};
#[cfg(feature = "gateway")]
pub(crate) use websocket::is_upgrade as is_websocket;

use crate::{
    admission::Admission,
    call::{BoxFuture, Dispatch},
    limits::HttpLimits,
    metrics::Figures,
    server::{NewDoor, Server},
    transport::{Door, Rewind},
};
use unread::{Answers, HttpConn};

/// HTTP on a node's port as it is set up before serving: the routers published on it
/// and, on a cluster node, what the cluster mounts. The door is made of it when serving
/// starts ([`NewDoor`]), from the server as it then is (its layers and policy).
#[derive(Default)]
struct HttpSetup {
    published: Arc<Published>,
    /// What a cluster serves in place of the server's own dispatch and figures.
    mount: Option<HttpMount>,
}

/// What a cluster node serves over HTTP besides its published routers.
#[derive(Clone)]
pub(crate) struct HttpMount {
    /// Where `POST /{service}/{method}` goes (the node's services first, else the mesh).
    pub(crate) dispatch: Arc<dyn Dispatch>,
    /// What `/metrics` shows.
    pub(crate) figures: Figures,
    /// Routes at the root besides RPC and `/metrics` (`/openapi.json`).
    pub(crate) routes: Router,
}

/// The routers published under `/{name}/…`: the part of a node's HTTP that changes while
/// it serves (a router may be published at any time, and is mounted at once).
#[derive(Default)]
pub(crate) struct Published(RwLock<PublishedRouters>);

#[derive(Default)]
struct PublishedRouters {
    routers: Vec<(String, Router)>,
    /// The door's routes with these routers in them, made on the first request after a
    /// router was published.
    app: Option<Router>,
}

impl Published {
    /// Mounts `router` under `/{name}` (replacing a router of the same name).
    pub(crate) fn publish(&self, name: &str, router: Router) {
        let mut published = self.0.write().unwrap();
        published.routers.retain(|(n, _)| n != name);
        published.routers.push((name.to_owned(), router));
        published.app = None;
    }

    /// Names of the published routers.
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    pub(crate) fn names(&self) -> Vec<String> {
        self.0.read().unwrap().routers.iter().map(|(n, _)| n.clone()).collect()
    }

    /// The app made last, else the one `make` makes of the routers now.
    fn app(&self, make: impl FnOnce(&[(String, Router)]) -> Router) -> Router {
        if let Some(app) = &self.0.read().unwrap().app {
            return app.clone();
        }
        let mut published = self.0.write().unwrap();
        let app = match &published.app {
            Some(app) => app.clone(), // made meanwhile
            None => make(&published.routers),
        };
        published.app = Some(app.clone());
        app
    }
}

impl NewDoor for HttpSetup {
    fn new_door(&self, server: &Server) -> Arc<dyn Door> {
        let config = server.config();
        let policy = HttpPolicy {
            #[cfg(feature = "tls")]
            access: server.access(),
        };
        let fixed = match &self.mount {
            Some(mount) => fixed_routes(mount.dispatch.clone(), config.http, mount.figures.clone(), &policy)
                .merge(policy.ruled(mount.routes.clone(), crate::spec::NODE_SERVICE, "schema")),
            None => fixed_routes(server.dispatch(), config.http, server.figures(), &policy),
        };
        Arc::new(HttpDoor {
            conn: HttpConn {
                header_timeout: config.header_timeout,
                idle_timeout: config.http.idle_timeout,
                stuck_timeout: config.stuck_timeout,
                answers: Answers::new(config.http.max_unread_answers, server.counters()),
            },
            fixed,
            policy,
            published: self.published.clone(),
        })
    }

    fn as_any(self: Arc<Self>) -> Arc<dyn std::any::Any + Send + Sync> {
        self
    }
}

/// The HTTP side of a node's port while it serves: the RPC routes, `/metrics` and what a
/// cluster mounts, fixed when serving starts, and the published routers.
pub(crate) struct HttpDoor {
    /// What each connection is given (timeouts, the budget of unread answers).
    conn: HttpConn,
    /// Every route but the published routers.
    fixed: Router,
    policy: HttpPolicy,
    published: Arc<Published>,
}

impl HttpDoor {
    fn app(&self) -> Router {
        self.published.app(|routers| {
            let mut app = self.fixed.clone();
            for (name, router) in routers {
                app = app.nest(&format!("/{name}"), self.policy.ruled(router.clone(), name, "http"));
            }
            app
        })
    }
}

/// `POST /{service}/{method}` to `dispatch` and `/metrics` showing `figures`.
fn fixed_routes(dispatch: Arc<dyn Dispatch>, limits: HttpLimits, figures: Figures, policy: &HttpPolicy) -> Router {
    let metrics = axum::routing::get(move |headers: axum::http::HeaderMap| {
        std::future::ready(exposition::render_metrics(&figures, &headers))
    });
    let stats = policy.ruled(Router::new().route("/metrics", metrics), crate::spec::NODE_SERVICE, "stats");
    rpc::router(dispatch, limits, policy.admission()).merge(stats)
}

/// Who may have what a node serves over HTTP: with a policy (feature `tls`), RPC calls
/// pass it as mesh calls do, and what the node shows and publishes is ruled as its calls:
/// `/metrics` as `meshrpc.stats`, `/openapi.json` as `meshrpc.schema`, a router `name` as
/// `name.http` (the admin port stays open to scrapers and probes).
struct HttpPolicy {
    #[cfg(feature = "tls")]
    access: Option<Arc<crate::access::Access>>,
}

impl HttpPolicy {
    fn admission(&self) -> Admission {
        Admission {
            peer: None,
            #[cfg(feature = "tls")]
            access: self.access.clone(),
        }
    }

    #[cfg_attr(not(feature = "tls"), allow(unused_variables))]
    fn ruled(&self, router: Router, service: &str, method: &'static str) -> Router {
        #[cfg(feature = "tls")]
        let router = policed(router, &self.access, service, method);
        router
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
}

/// HTTP on a node's port (feature `http`).
impl Server {
    /// Also answers HTTP/1.1 and h2c on this port: `POST /{service}/{method}` with a JSON
    /// body of named arguments, `/ping`, `/__heartbeat__`, and published routers.
    pub fn with_http(self) -> Self {
        self.http_setup();
        self
    }

    /// Publishes a plain HTTP router under `/{name}/…` (turning HTTP on, as
    /// [`with_http`](Self::with_http) does). Works before and while serving.
    pub fn publish_http(&self, name: &str, router: Router) -> &Self {
        self.published_http().publish(name, router);
        self
    }

    /// The routers published on this port (turning HTTP on): a cluster publishes more
    /// while it serves.
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    pub(crate) fn published_http(&self) -> Arc<Published> {
        self.http_setup().published.clone()
    }

    /// HTTP as a cluster node serves it: `mount` in place of the server's own dispatch and
    /// figures (turning HTTP on).
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    pub(crate) fn mount_http(mut self, mount: HttpMount) -> Self {
        let published = self.published_http();
        self.set_new_door(Arc::new(HttpSetup { published, mount: Some(mount) }));
        self
    }

    fn http_setup(&self) -> Arc<HttpSetup> {
        let setup = self.new_door_or_init(|| Arc::new(HttpSetup::default()));
        setup.as_any().downcast::<HttpSetup>().expect("the only door of a server is HTTP")
    }
}
