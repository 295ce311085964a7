//! A node's server: the registry of published services and the dispatch of every call
//! to them, whatever door it came in by. The port serves mesh frames; with the `http`
//! feature it answers HTTP/1.1 and h2c too (see [`Server::with_http`]).

mod limit;
mod service;

use std::{
    net::SocketAddr,
    sync::{Arc, OnceLock},
    time::Duration,
};

use tokio::{net::TcpListener, sync::watch};

pub use crate::limits::HttpLimits;
pub use limit::ConcurrencyLimit;
pub(crate) use limit::Limiter;
pub use service::{Registry, Service};

use crate::{
    call::{Call, Dispatch, Reply},
    client::Channel,
    error::Error,
    proto::DEFAULT_MAX_FRAME,
    transport::{serve_mesh, serve_port, Door, FrameBudget, Guard, Link, MeshLimits, Port, PortCounters},
};

/// Server limits and timeouts: everything a peer can make a node hold is bounded here
/// (README, "Limits").
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Largest accepted mesh frame (16 MiB).
    pub max_frame: u32,
    /// Calls one mesh connection may have in flight; more are refused with `Overloaded`
    /// (4096).
    pub max_in_flight: usize,
    /// HTTP request limits (enforced with the `http` feature).
    pub http: HttpLimits,
    /// How long a new connection may take to send its first bytes, mesh handshake or
    /// HTTP headers (5 s).
    pub header_timeout: Duration,
    /// A mesh connection that sends nothing for this long while no call of it runs is
    /// closed (10 s; callers ping every few seconds). `None`: never.
    pub idle_timeout: Option<Duration>,
    /// A frame that began to arrive must be whole within this (30 s).
    pub frame_timeout: Duration,
    /// Bytes held in frames not yet whole, across all connections; past it the
    /// connection that asks for more is closed (64 MiB).
    pub max_partial_bytes: usize,
    /// Answers queued for one caller beyond this stop the reading of its requests until
    /// it reads (256 KiB).
    pub max_queued: usize,
    /// Bytes of stream items received and not yet read by their handlers, across all
    /// connections; an item past it ends its call with `overloaded` (64 MiB). (Each
    /// stream also holds at most its 1 MiB credit window.)
    pub max_stream_bytes: usize,
    /// How long a caller may leave its answers unread before it is closed (10 s).
    pub stuck_timeout: Duration,
    /// Connections served at once (mesh and HTTP); past it new ones get only a liveness
    /// answer or a refusal (1024).
    pub max_connections: usize,
    /// How long a shutdown waits for in-flight calls (30 s).
    pub drain_timeout: Duration,
    /// Calls the node's handlers run at once, across all connections and doors; more
    /// are refused with `overloaded` before they run (adaptive: from 128, between 8 and
    /// 4096, following latency).
    pub concurrency: ConcurrencyLimit,
    /// zstd on the mesh: answers of 1 KiB or more go compressed to callers that take it
    /// (wire feature `ZSTD`: every build with the cargo feature `zstd`). Off by default:
    /// on loopback and fast links it costs more CPU than it saves time (docs/performance.md,
    /// "Compression"); on for callers behind slow links.
    pub compress: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_frame: DEFAULT_MAX_FRAME,
            max_in_flight: 4096,
            http: HttpLimits::default(),
            header_timeout: Duration::from_secs(5),
            idle_timeout: Some(Duration::from_secs(10)),
            frame_timeout: Duration::from_secs(30),
            max_partial_bytes: 64 * 1024 * 1024,
            max_stream_bytes: 64 * 1024 * 1024,
            max_queued: 256 * 1024,
            stuck_timeout: Duration::from_secs(10),
            max_connections: 1024,
            drain_timeout: Duration::from_secs(30),
            concurrency: ConcurrencyLimit::default(),
            compress: false,
        }
    }
}

impl ServerConfig {
    fn mesh_limits(&self) -> MeshLimits {
        MeshLimits {
            max_frame: self.max_frame,
            max_in_flight: self.max_in_flight,
            handshake_timeout: self.header_timeout,
            idle_timeout: self.idle_timeout,
            frame_timeout: self.frame_timeout,
            // Some room: with none at all a connection would turn without ever reading.
            max_queued: self.max_queued.max(1),
            stuck_timeout: self.stuck_timeout,
            drain_timeout: self.drain_timeout,
            compress: self.compress,
        }
    }
}

/// A bound server: publish services, then `serve`.
pub struct Server {
    listener: Listening,
    registry: Arc<Registry>,
    /// The registry behind the server layers: what every incoming call goes through.
    dispatch: Arc<dyn Dispatch>,
    config: ServerConfig,
    shutdown: watch::Sender<bool>,
    /// What makes the door of connections that are not mesh callers (HTTP) when serving
    /// starts; without one they are closed.
    door: OnceLock<Arc<dyn NewDoor>>,
    counters: Arc<PortCounters>,
    /// Made from the config when serving starts: one per node.
    guard: OnceLock<Arc<Guard>>,
    /// The node-wide concurrency limit every call from any door passes first.
    limiter: Arc<Limiter>,
    #[cfg(feature = "tls")]
    tls: Option<crate::transport::TlsConfig>,
    #[cfg(feature = "tls")]
    access: Option<Arc<crate::access::Access>>,
}

impl Server {
    /// The policy calls from the network pass (feature `tls`).
    #[cfg(feature = "tls")]
    #[cfg_attr(not(feature = "http"), allow(dead_code))]
    pub(crate) fn access(&self) -> Option<Arc<crate::access::Access>> {
        self.access.clone()
    }
}

/// Makes what answers a port's connections that are not mesh callers, when serving starts,
/// from the server as it then is (its layers, policy, counters). The `http` layer has one.
pub(crate) trait NewDoor: Send + Sync + 'static {
    fn new_door(&self, server: &Server) -> Arc<dyn Door>;
    /// For the layer that installed it, to find it again.
    #[cfg_attr(not(feature = "http"), allow(dead_code))]
    fn as_any(self: Arc<Self>) -> Arc<dyn std::any::Any + Send + Sync>;
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("addr", &self.local_addr()).field("config", &self.config).finish()
    }
}

/// Stops a running server gracefully: go-away to mesh peers, in-flight calls finish.
#[derive(Clone, Debug)]
pub struct ShutdownHandle(watch::Sender<bool>);

impl ShutdownHandle {
    /// Starts the drain; `serve` returns when it is done.
    pub fn shutdown(&self) {
        self.0.send_replace(true);
    }

    /// Resolves once shutdown was requested.
    pub async fn requested(&self) {
        crate::transport::stopped(&mut self.0.subscribe()).await
    }
}

/// Where a server takes its connections from.
enum Listening {
    Os(TcpListener),
    /// A [`Network`](crate::transport::Network)'s listener: mesh callers only.
    Seam(Box<dyn crate::transport::Listener>),
}

impl Server {
    /// Binds the port. A node holds a descriptor per connection: a process serving many
    /// calls [`raise_fd_limit`] first.
    pub async fn bind(addr: impl tokio::net::ToSocketAddrs) -> Result<Server, Error> {
        let listener = TcpListener::bind(addr).await.map_err(|e| Error::from(e).context("bind"))?;
        Ok(Server::with_listener(Listening::Os(listener)))
    }

    /// A server taking its connections from `listener`, a [`Network`](crate::transport::Network)'s
    /// (a simulated one): mesh callers only, no TLS, no HTTP on the port.
    pub fn listening_on(listener: Box<dyn crate::transport::Listener>) -> Server {
        Server::with_listener(Listening::Seam(listener))
    }

    fn with_listener(listener: Listening) -> Server {
        let registry = Arc::<Registry>::default();
        let config = ServerConfig::default();
        let limiter = Arc::new(Limiter::new(config.concurrency));
        registry.limit(limiter.clone());
        Server {
            listener,
            dispatch: registry.clone(),
            registry,
            limiter,
            config,
            shutdown: watch::channel(false).0,
            door: OnceLock::new(),
            counters: Arc::default(),
            guard: OnceLock::new(),
            #[cfg(feature = "tls")]
            tls: None,
            #[cfg(feature = "tls")]
            access: None,
        }
    }

    /// What this node's port counted: refused connections, connections closed for
    /// misbehaving, oversized answers.
    pub fn counters(&self) -> Arc<PortCounters> {
        self.counters.clone()
    }

    fn guard(&self) -> Arc<Guard> {
        let make = || {
            Arc::new(Guard {
                counters: self.counters.clone(),
                budget: FrameBudget::new(self.config.max_partial_bytes),
                items: Arc::new(FrameBudget::new(self.config.max_stream_bytes)),
            })
        };
        self.guard.get_or_init(make).clone()
    }

    /// Replaces the limits and timeouts.
    pub fn with_config(mut self, config: ServerConfig) -> Self {
        self.limiter.configure(config.concurrency);
        self.config = config;
        self
    }

    /// The node-wide concurrency limit now (`None`: off), the calls running under it, and
    /// the calls it refused so far.
    pub fn concurrency(&self) -> (Option<usize>, usize, u64) {
        (self.limiter.limit(), self.limiter.in_flight(), self.limiter.refused())
    }

    #[cfg_attr(not(feature = "cluster"), allow(dead_code))] // gossiped by the cluster
    pub(crate) fn limiter(&self) -> Arc<Limiter> {
        self.limiter.clone()
    }

    /// The node's figures for `/metrics`: its port's counters and its concurrency limit.
    #[cfg_attr(not(feature = "http"), allow(dead_code))] // shown by `/metrics`
    pub(crate) fn figures(&self) -> crate::metrics::Figures {
        let (counters, limiter) = (self.counters.clone(), self.limiter.clone());
        Arc::new(move || {
            let mut figures = counters.figures();
            figures.extend(limiter.figures());
            #[cfg(feature = "otlp")]
            figures.push(crate::metrics::Figure::counter(
                "meshrpc_spans_dropped",
                "Spans the OTLP exporter dropped because its queue was full",
                crate::trace::DROPPED.load(std::sync::atomic::Ordering::Relaxed),
            ));
            figures
        })
    }

    /// Serves mutual TLS only (feature `tls`): callers must hold a certificate of the
    /// cluster CA in `tls`; plaintext callers are refused with an error saying so.
    #[cfg(feature = "tls")]
    pub fn with_tls(mut self, tls: crate::transport::TlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Every call arriving from the network (mesh or HTTP) must be allowed by `access`
    /// for its verified caller, else it fails with `permission_denied` before any layer
    /// or handler runs (feature `tls`). In-process calls are not checked.
    #[cfg(feature = "tls")]
    pub fn with_access(mut self, access: Arc<crate::access::Access>) -> Self {
        self.access = Some(access);
        self
    }

    /// The limits and timeouts.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// Every incoming call — mesh, HTTP or a cluster's own — goes through `layer` before
    /// it reaches a service (tower middleware: authorize, log, count). Layers added later
    /// run first. A layer that answers `Err` stops the call before any handler runs.
    pub fn layer<L>(mut self, layer: L) -> Self
    where
        L: tower_layer::Layer<crate::middleware::DispatchService>,
        L::Service: tower_service::Service<Call, Response = Reply, Error = Error> + Clone + Send + Sync + 'static,
        <L::Service as tower_service::Service<Call>>::Future: Send + 'static,
    {
        self.set_dispatch(crate::middleware::wrap(self.dispatch.clone(), &layer));
        self
    }

    pub(crate) fn set_dispatch(&mut self, dispatch: Arc<dyn Dispatch>) {
        self.dispatch = dispatch;
    }

    /// What incoming calls go through: the server layers, then the published services.
    pub fn dispatch(&self) -> Arc<dyn Dispatch> {
        self.dispatch.clone()
    }

    /// Publishes a service (a generated `XServer`).
    pub fn publish(&self, service: impl Service) -> &Self {
        self.registry.publish(Arc::new(service));
        self
    }

    /// What will make the door of connections that are not mesh callers: the one
    /// installed, else the one `init` makes.
    #[cfg_attr(not(feature = "http"), allow(dead_code))]
    pub(crate) fn new_door_or_init<N: NewDoor>(&self, init: impl FnOnce() -> Arc<N>) -> Arc<dyn NewDoor> {
        self.door.get_or_init(|| init()).clone()
    }

    /// Replaces what will make the door (before serving).
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    pub(crate) fn set_new_door(&mut self, door: Arc<dyn NewDoor>) {
        self.door = OnceLock::from(door);
    }

    /// The published services.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        match &self.listener {
            Listening::Os(listener) => listener.local_addr().expect("bound listener has an address"),
            Listening::Seam(listener) => listener.local_addr(),
        }
    }

    /// An in-process channel to the published services: the same dispatch, layers,
    /// deadlines and errors as a remote call, without the network.
    pub fn local_channel(&self) -> Channel {
        Channel::from(self.dispatch.clone())
    }

    /// A handle that stops `serve` gracefully.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle(self.shutdown.clone())
    }

    /// Serves one mesh connection that was accepted elsewhere (over TLS, an in-process
    /// duplex...): the handshake, then calls to the published services, until it closes or
    /// this server shuts down. Returns when the connection is over.
    pub fn serve_link(&self, link: impl Link) -> impl std::future::Future<Output = ()> + Send + 'static {
        serve_one_link(link, self.dispatch.clone(), self.config.mesh_limits(), self.guard(), &self.shutdown)
    }

    /// Serves until shut down, then drains: peers get go-away, in-flight calls finish
    /// (up to `drain_timeout`).
    pub async fn serve(self) -> Result<(), Error> {
        let guard = self.guard();
        let door = self.door.get().map(|door| door.new_door(&self));
        let listener = match self.listener {
            Listening::Os(listener) => listener,
            Listening::Seam(listener) => {
                let serve = {
                    let (dispatch, limits, shutdown) =
                        (self.dispatch, self.config.mesh_limits(), self.shutdown.clone());
                    move |link| serve_one_link(link, dispatch.clone(), limits, guard.clone(), &shutdown)
                };
                let (shutdown, config) = (self.shutdown.subscribe(), &self.config);
                serve_seam(listener, serve, shutdown, config.max_connections, config.drain_timeout).await;
                return Ok(());
            }
        };
        let Server { dispatch, config, shutdown, .. } = self;
        let port = Port {
            dispatch,
            door,
            mesh: config.mesh_limits(),
            guard,
            max_connections: config.max_connections,
            #[cfg(feature = "tls")]
            tls: self.tls,
            #[cfg(feature = "tls")]
            access: self.access,
        };
        serve_port(listener, port, shutdown.subscribe(), config.drain_timeout).await;
        Ok(())
    }
}

/// One mesh connection accepted elsewhere, served until it closes or `shutdown` fires
/// ([`Server::serve_link`], and each connection of a [`Network`](crate::transport::Network)'s
/// listener).
fn serve_one_link(
    link: impl Link,
    dispatch: Arc<dyn Dispatch>,
    limits: MeshLimits,
    guard: Arc<Guard>,
    shutdown: &watch::Sender<bool>,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    serve_mesh(
        Arc::new(link),
        bytes::BytesMut::new(),
        dispatch,
        limits,
        guard,
        crate::admission::Admission::default(),
        shutdown.subscribe(),
    )
}

/// Serves the mesh connections of a [`Network`](crate::transport::Network)'s listener
/// with `serve` until shut down; then closes the listener (new connections are refused,
/// as on the OS's port) and waits up to `drain` for the others to finish (they get
/// go-away).
async fn serve_seam<F>(
    listener: Box<dyn crate::transport::Listener>,
    serve: impl Fn(crate::transport::StreamLink) -> F,
    mut shutdown: watch::Receiver<bool>,
    max_connections: usize,
    drain: Duration,
) where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((link, _)) if conns.len() < max_connections => {
                    conns.spawn(serve(link));
                }
                Ok(_) => {} // over the cap: dropped, so closed
                Err(e) => {
                    tracing::debug!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            _ = crate::transport::stopped(&mut shutdown) => break,
        }
    }
    drop(listener);
    let _ = tokio::time::timeout(drain, async { while conns.join_next().await.is_some() {} }).await;
}

/// Raises the process's soft limit of open files to its hard limit and returns the new
/// soft limit (logging a warning when it cannot). A node holds a descriptor per
/// connection: with the usual soft limit of 1024, the limit and not `max_connections`
/// would decide how many it serves (README, "Limits"). The limit is the whole process's,
/// so binaries call this before they serve; the library never does.
pub fn raise_fd_limit() -> std::io::Result<u64> {
    #[cfg(unix)]
    let raised = rlimit::increase_nofile_limit(u64::MAX);
    #[cfg(not(unix))]
    let raised = Ok(u64::MAX);
    match &raised {
        Ok(limit) => tracing::debug!(limit, "file descriptor limit"),
        Err(e) => tracing::warn!(error = %e, "could not raise the file descriptor limit"),
    }
    raised
}
