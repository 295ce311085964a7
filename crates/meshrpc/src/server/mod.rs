//! A node's server: one port for mesh frames, HTTP/1.1 and h2c, told apart by the
//! first bytes of each connection.

pub mod http;
mod mesh;
mod service;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::watch,
    task::JoinSet,
};

pub use self::http::HttpLimits;
pub use service::{Registry, Service};

use crate::{
    client::Channel,
    wire::{DEFAULT_MAX_FRAME, PREFACE},
    Error,
};

/// Server limits and timeouts.
#[derive(Debug, Clone, Copy)]
pub struct ServerConfig {
    /// Largest accepted mesh frame.
    pub max_frame: u32,
    /// Calls one mesh connection may have in flight; more are refused with `Overloaded`.
    pub max_in_flight: usize,
    /// HTTP request limits.
    pub http: HttpLimits,
    /// How long a new connection may take to send its first bytes or HTTP headers.
    pub header_timeout: Duration,
    /// How long a shutdown waits for in-flight calls.
    pub drain_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_frame: DEFAULT_MAX_FRAME,
            max_in_flight: 4096,
            http: HttpLimits::default(),
            header_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(30),
        }
    }
}

/// A bound server: publish services, then `serve`.
pub struct Server {
    listener: TcpListener,
    registry: Arc<Registry>,
    config: ServerConfig,
    shutdown: watch::Sender<bool>,
    http_dispatch: Option<Arc<dyn crate::Dispatch>>,
}

/// Stops a running server gracefully: go-away to mesh peers, in-flight calls finish.
#[derive(Clone)]
pub struct ShutdownHandle(watch::Sender<bool>);

impl ShutdownHandle {
    pub fn shutdown(&self) {
        self.0.send_replace(true);
    }
}

impl Server {
    /// Binds the port (mesh and HTTP alike).
    pub async fn bind(addr: impl tokio::net::ToSocketAddrs) -> Result<Server, Error> {
        let listener = TcpListener::bind(addr).await?;
        Ok(Server {
            listener,
            registry: Arc::default(),
            config: ServerConfig::default(),
            shutdown: watch::channel(false).0,
            http_dispatch: None,
        })
    }

    /// Replaces the limits and timeouts.
    pub fn with_config(mut self, config: ServerConfig) -> Self {
        self.config = config;
        self
    }

    /// Publishes a service (a generated `XServer`).
    pub fn publish(&self, service: impl Service) -> &Self {
        self.registry.publish(Arc::new(service));
        self
    }

    /// Publishes a plain HTTP router under `/{name}/…`.
    pub fn publish_http(&self, name: &str, router: axum::Router) -> &Self {
        self.registry.publish_http(name, router);
        self
    }

    /// Where `POST /{service}/{method}` on this port goes (default: the local services).
    pub fn set_http_dispatch(&mut self, dispatch: Arc<dyn crate::Dispatch>) {
        self.http_dispatch = Some(dispatch);
    }

    /// The published services.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound listener has an address")
    }

    /// An in-process channel to the published services: the same dispatch, deadlines and
    /// errors as a remote call, without the network.
    pub fn local_channel(&self) -> Channel {
        Channel::new(self.registry.clone())
    }

    /// A handle that stops `serve` gracefully.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle(self.shutdown.clone())
    }

    /// Serves until shut down, then drains: peers get go-away, in-flight calls finish
    /// (up to `drain_timeout`).
    pub async fn serve(self) -> Result<(), Error> {
        let Server { listener, registry, config, shutdown, http_dispatch } = self;
        let dispatch = http_dispatch.unwrap_or_else(|| registry.clone());
        let mut router = http::rpc_router(dispatch, config.http);
        for (name, r) in registry.http_routers() {
            router = router.nest(&format!("/{name}"), r);
        }
        let mut stop = shutdown.subscribe();
        let mut conns = JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let (stream, peer) = match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            // Out of file descriptors and the like: back off, keep serving.
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let _ = stream.set_nodelay(true);
                    conns.spawn(serve_connection(stream, peer, registry.clone(), router.clone(), config, shutdown.subscribe()));
                }
                _ = stopped(&mut stop) => break,
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        }
        drop(listener);
        let drained =
            tokio::time::timeout(config.drain_timeout, async { while conns.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            tracing::warn!(left = conns.len(), "drain timeout: closing remaining connections");
            conns.shutdown().await;
        }
        Ok(())
    }
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    registry: Arc<Registry>,
    router: axum::Router,
    config: ServerConfig,
    shutdown: watch::Receiver<bool>,
) {
    match tokio::time::timeout(config.header_timeout, sniff(&stream)).await {
        Ok(Ok(true)) => {
            let mut stream = stream;
            let handshake = async {
                let mut preface = [0u8; PREFACE.len() + 1];
                stream.read_exact(&mut preface).await?;
                let mut caller = vec![0u8; usize::from(preface[PREFACE.len()])];
                stream.read_exact(&mut caller).await?;
                let mut hello = PREFACE.to_vec();
                hello.extend_from_slice(&config.max_frame.to_be_bytes());
                stream.write_all(&hello).await?;
                Ok::<_, std::io::Error>(String::from_utf8_lossy(&caller).into_owned())
            };
            // The caller's name goes in the request logs; an anonymous one by its address.
            if let Ok(Ok(caller)) = tokio::time::timeout(config.header_timeout, handshake).await {
                let caller = if caller.is_empty() { peer.to_string() } else { format!("{caller}@{peer}") };
                mesh::serve(stream, peer, caller, registry, config, shutdown).await;
            }
        }
        Ok(Ok(false)) => http_connection(stream, router, config.header_timeout, shutdown).await,
        Ok(Err(_)) | Err(_) => {} // closed or silent: nothing to answer
    }
}

/// Serves HTTP/1.1 or h2c on one connection, with a header timeout for slow clients and
/// a graceful close on shutdown.
pub(crate) async fn http_connection(
    stream: TcpStream,
    router: axum::Router,
    header_timeout: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(header_timeout);
    builder.http2().timer(TokioTimer::new());
    let service = TowerToHyperService::new(router);
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
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
    router: axum::Router,
    config: ServerConfig,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let (stop, _) = watch::channel(false);
    let mut conns = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    conns.spawn(http_connection(stream, router.clone(), config.header_timeout, stop.subscribe()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = &mut shutdown => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    stop.send_replace(true);
    let _ = tokio::time::timeout(config.drain_timeout, async { while conns.join_next().await.is_some() {} }).await;
}

/// True if the connection starts with the mesh preface. Anything else is HTTP's to
/// answer (including garbage, which gets a 400 from the HTTP parser).
async fn sniff(stream: &TcpStream) -> std::io::Result<bool> {
    let mut buf = [0u8; PREFACE.len()];
    loop {
        let n = stream.peek(&mut buf).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if buf[..n] != PREFACE[..n] {
            return Ok(false);
        }
        if n == PREFACE.len() {
            return Ok(true);
        }
        // A partial preface: wait briefly for the rest rather than spin on peek.
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Resolves once shutdown was requested (or the server is gone).
pub(crate) async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}
