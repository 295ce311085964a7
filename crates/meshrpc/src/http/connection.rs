//! `serve_http` (and `serve_https`), the front door's accept loop; each connection is
//! served by `driver::http_connection`.

use std::sync::Arc;

use axum::Router;
use tokio::{
    net::{TcpListener, TcpStream},
    sync::watch,
};

use super::{
    driver::http_connection,
    unread::{Answers, HttpConn},
};
use crate::{
    call::BoxFuture,
    server::ServerConfig,
    transport::{accept_loop, Cap, PortCounters, Probes, Rewind},
};

/// Serves an axum router over HTTP/1.1 and h2c until `shutdown` fires, then lets open
/// requests finish (up to `drain_timeout`). The gateway's front door; `config` bounds its
/// connections as it does a node's.
pub async fn serve_http(
    listener: TcpListener,
    router: Router,
    config: ServerConfig,
    shutdown: impl std::future::Future<Output = ()>,
) {
    serve_router(listener, router, config, None, shutdown).await
}

/// As [`serve_http`], over TLS (feature `tls`): HTTP/1.1 and HTTP/2 by ALPN. The TLS
/// handshake must finish within `config.header_timeout`. See [`https_config`](crate::transport::https_config).
#[cfg(feature = "tls")]
pub async fn serve_https(
    listener: TcpListener,
    router: Router,
    config: ServerConfig,
    tls: Arc<rustls::ServerConfig>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    serve_router(listener, router, config, Some(tls), shutdown).await
}

/// Without the `tls` feature there is no TLS configuration to pass.
#[cfg(not(feature = "tls"))]
#[derive(Clone)]
enum TlsServer {}
#[cfg(feature = "tls")]
type TlsServer = Arc<rustls::ServerConfig>;

async fn serve_router(
    listener: TcpListener,
    router: Router,
    config: ServerConfig,
    tls: Option<TlsServer>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let (stop, stopping) = watch::channel(false);
    let conn_stop = stopping.clone();
    let counters = Arc::<PortCounters>::default();
    let header_timeout = config.header_timeout;
    let conn = HttpConn {
        header_timeout,
        idle_timeout: config.http.idle_timeout,
        stuck_timeout: config.stuck_timeout,
        answers: Answers::new(config.http.max_unread_answers, counters.clone()),
    };
    // Past the cap, `/healthz` and `/ready` are still answered by the router (plaintext
    // only: a TLS client's first bytes are its ClientHello).
    let probes = tls.is_none().then(|| {
        let (router, stop, conn) = (router.clone(), stopping.clone(), conn.clone());
        Arc::new(move |io: Rewind<TcpStream>| {
            let peer = io.stream.peer_addr().unwrap_or_else(|_| std::net::SocketAddr::from(([0, 0, 0, 0], 0)));
            let router = with_peer(router.clone(), peer);
            Box::pin(http_connection(io, router, conn.clone(), stop.clone())) as BoxFuture<()>
        }) as Probes
    });
    let cap = Cap { max_connections: config.max_connections, counters, probes };
    let serving = accept_loop(listener, stopping, config.drain_timeout, cap, move |stream, _| {
        let (conn_stop, conn) = (conn_stop.clone(), conn.clone());
        let peer = stream.peer_addr().unwrap_or_else(|_| std::net::SocketAddr::from(([0, 0, 0, 0], 0)));
        let router = with_peer(router.clone(), peer);
        match tls.clone() {
            None => Box::pin(http_connection(stream, router, conn, conn_stop)),
            #[cfg(feature = "tls")]
            Some(tls) => Box::pin(async move {
                let accept = tokio_rustls::TlsAcceptor::from(tls).accept(stream);
                match tokio::time::timeout(header_timeout, accept).await {
                    Ok(Ok(stream)) => http_connection(stream, router, conn, conn_stop).await,
                    Ok(Err(e)) => tracing::debug!(error = %e, "HTTPS handshake failed"),
                    Err(_) => tracing::debug!("HTTPS handshake timed out"),
                }
            }),
            #[cfg(not(feature = "tls"))]
            Some(never) => match never {},
        }
    });
    tokio::pin!(serving);
    tokio::select! {
        _ = &mut serving => return,
        _ = shutdown => { stop.send_replace(true); }
    }
    serving.await;
}

/// Handlers may ask who connected (`ConnectInfo<SocketAddr>`, as with axum's own server):
/// the gateway's rate limits key on it.
fn with_peer(
    router: Router,
    peer: std::net::SocketAddr,
) -> impl tower::Service<
    hyper::Request<hyper::body::Incoming>,
    Response = axum::response::Response,
    Error = std::convert::Infallible,
    Future = impl Send + 'static,
> + Clone
       + Send
       + Unpin
       + 'static {
    tower::ServiceExt::map_request(router, move |mut req: hyper::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(axum::extract::ConnectInfo(peer));
        req
    })
}
