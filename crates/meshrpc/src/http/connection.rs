//! One HTTP connection (HTTP/1.1 or h2c): a header timeout for slow clients, an idle
//! timeout for silent ones, a graceful close on shutdown; and `serve_http`, the front
//! door's accept loop.

use std::{
    io,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use axum::Router;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpListener,
    sync::watch,
};

use crate::{
    server::ServerConfig,
    transport::{accept_loop, stopped, Cap, PortCounters},
};

/// Serves HTTP/1.1 or h2c on one connection until it ends, it stays silent for
/// `idle_timeout`, or `shutdown` fires (then it closes gracefully).
pub(super) async fn http_connection<I, S>(
    io: I,
    service: S,
    header_timeout: Duration,
    idle_timeout: Duration,
    mut shutdown: watch::Receiver<bool>,
) where
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
    let heard = Heard::new();
    let io = Watched { io, heard: heard.clone() };
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(header_timeout);
    builder.http2().timer(TokioTimer::new());
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), TowerToHyperService::new(service));
    tokio::pin!(conn);
    let grace = loop {
        let quiet_until = heard.last() + idle_timeout;
        tokio::select! {
            _ = conn.as_mut() => return,
            // A request still being answered gets the time a call has (the server's drain
            // timeout bounds the whole drain).
            _ = stopped(&mut shutdown) => break Duration::from_secs(30),
            _ = tokio::time::sleep_until(quiet_until.into()) => {
                if heard.last() + idle_timeout <= Instant::now() {
                    // Silent for the idle timeout: nothing is asked of us; a peer that
                    // does not take the goodbye within a second is cut.
                    break Duration::from_secs(1);
                }
            }
        }
    };
    conn.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(grace, conn).await;
}

/// When a connection last received bytes.
#[derive(Clone)]
struct Heard {
    base: Instant,
    nanos: Arc<AtomicU64>,
}

impl Heard {
    fn new() -> Heard {
        Heard { base: Instant::now(), nanos: Arc::default() }
    }

    fn now(&self) {
        self.nanos.store(self.base.elapsed().as_nanos() as u64, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.base + Duration::from_nanos(self.nanos.load(Ordering::Relaxed))
    }
}

/// An IO that notes when it received bytes.
struct Watched<I> {
    io: I,
    heard: Heard,
}

impl<I: AsyncRead + Unpin> AsyncRead for Watched<I> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.heard.now();
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Watched<I> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// A port's counters in the Prometheus text format.
pub(crate) fn render_counters(counters: &PortCounters) -> ([(axum::http::HeaderName, &'static str); 1], String) {
    let mut out = String::new();
    for (name, help, value) in counters.values() {
        out.push_str(&format!("# HELP {name} {help}.\n# TYPE {name} counter\n{name}_total {value}\n"));
    }
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], out)
}

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
/// handshake must finish within `config.header_timeout`. See [`https_config`](crate::https_config).
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
    let cap = Cap { max_connections: config.max_connections, counters: Arc::default() };
    let (header_timeout, idle_timeout) = (config.header_timeout, config.http.idle_timeout);
    let serving = accept_loop(listener, stopping, config.drain_timeout, cap, move |stream, _| {
        let (router, conn_stop) = (router.clone(), conn_stop.clone());
        match tls.clone() {
            None => Box::pin(http_connection(stream, router, header_timeout, idle_timeout, conn_stop)),
            #[cfg(feature = "tls")]
            Some(tls) => Box::pin(async move {
                let accept = tokio_rustls::TlsAcceptor::from(tls).accept(stream);
                match tokio::time::timeout(header_timeout, accept).await {
                    Ok(Ok(stream)) => http_connection(stream, router, header_timeout, idle_timeout, conn_stop).await,
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
