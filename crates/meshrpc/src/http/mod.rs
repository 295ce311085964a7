//! JSON over HTTP/1.1 and h2c (feature `http`): `POST /{service}/{method}` on every node's
//! port, published axum routers under `/{name}/…`, and [`serve_http`] for front doors.

mod rpc;

use std::{
    sync::{Arc, RwLock},
    time::Duration,
};

use axum::Router;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpListener,
    sync::watch,
};

pub use rpc::{envelope, error_response, rpc_call, rpc_router, sticky_key, KEY_HEADER, TIMEOUT_HEADER};

use crate::{
    call::{BoxFuture, Dispatch},
    limits::HttpLimits,
    server::Server,
    server::ServerConfig,
    transport::{accept_loop, stopped, Door, Rewind},
};

/// The HTTP side of a node's port: the RPC routes and the published routers, looked up
/// per request so a router published while serving is mounted at once.
pub(crate) struct HttpDoor {
    limits: HttpLimits,
    header_timeout: Duration,
    dispatch: RwLock<Arc<dyn Dispatch>>,
    routers: RwLock<Vec<(String, Router)>>,
    /// The routes built from the above; dropped when they change.
    app: RwLock<Option<Router>>,
}

impl HttpDoor {
    pub(crate) fn new(dispatch: Arc<dyn Dispatch>, config: &ServerConfig) -> Arc<HttpDoor> {
        Arc::new(HttpDoor {
            limits: config.http,
            header_timeout: config.header_timeout,
            dispatch: RwLock::new(dispatch),
            routers: RwLock::default(),
            app: RwLock::default(),
        })
    }

    /// Where `POST /{service}/{method}` goes.
    pub(crate) fn set_dispatch(&self, dispatch: Arc<dyn Dispatch>) {
        *self.dispatch.write().unwrap() = dispatch;
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
        let mut app = rpc_router(self.dispatch.read().unwrap().clone(), self.limits);
        for (name, router) in self.routers.read().unwrap().iter() {
            app = app.nest(&format!("/{name}"), router.clone());
        }
        *self.app.write().unwrap() = Some(app.clone());
        app
    }
}

impl Door for HttpDoor {
    fn set_dispatch(&self, dispatch: Arc<dyn Dispatch>) {
        HttpDoor::set_dispatch(self, dispatch)
    }

    fn serve(self: Arc<Self>, io: Rewind, shutdown: watch::Receiver<bool>) -> BoxFuture<()> {
        let timeout = self.header_timeout;
        let service = tower::service_fn(move |req| {
            use tower::ServiceExt;
            self.app().oneshot(req)
        });
        Box::pin(http_connection(io, service, timeout, shutdown))
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
        let door = self.door_or_init(|| HttpDoor::new(self.dispatch(), self.config()));
        door.as_any().downcast::<HttpDoor>().expect("the only door of a server is HTTP")
    }
}

/// Serves HTTP/1.1 or h2c on one connection, with a header timeout for slow clients and a
/// graceful close on shutdown.
async fn http_connection<I, S>(io: I, service: S, header_timeout: Duration, mut shutdown: watch::Receiver<bool>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: tower::Service<
            axum::http::Request<hyper::body::Incoming>,
            Response = axum::response::Response,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(header_timeout);
    builder.http2().timer(TokioTimer::new());
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), TowerToHyperService::new(service));
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = stopped(&mut shutdown) => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// Serves an axum router over HTTP/1.1 and h2c until `shutdown` fires, then lets open
/// requests finish (up to `drain_timeout`). The gateway's front door.
pub async fn serve_http(
    listener: TcpListener,
    router: Router,
    config: ServerConfig,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let (stop, stopping) = watch::channel(false);
    let conn_stop = stopping.clone();
    let serving = accept_loop(listener, stopping, config.drain_timeout, move |stream, _| {
        Box::pin(http_connection(stream, router.clone(), config.header_timeout, conn_stop.clone()))
    });
    tokio::pin!(serving);
    tokio::select! {
        _ = &mut serving => return,
        _ = shutdown => { stop.send_replace(true); }
    }
    serving.await;
}
