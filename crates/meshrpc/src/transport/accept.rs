//! Accepting connections: one loop for every listener of the crate, and the mesh port's
//! sniffing of mesh callers from everything else (HTTP).

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use bytes::{Buf, Bytes, BytesMut};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::watch,
    task::JoinSet,
};

use super::{serve_mesh, stopped, MeshLimits, TcpLink};
use crate::{
    call::{BoxFuture, Dispatch},
    proto::{sniff, Sniffed},
};

/// What answers the connections of a port that are not mesh callers (HTTP, with the
/// `http` feature).
pub(crate) trait Door: Send + Sync + 'static {
    /// Serves one connection until it ends or `shutdown` fires (then closes gracefully).
    fn serve(self: Arc<Self>, io: Rewind, shutdown: watch::Receiver<bool>) -> BoxFuture<()>;
    /// Where the calls the door takes go (the server's layers and services).
    fn set_dispatch(&self, dispatch: Arc<dyn Dispatch>);
    /// For the layer that installed the door, to find it again.
    #[cfg_attr(not(feature = "http"), allow(dead_code))]
    fn as_any(self: Arc<Self>) -> Arc<dyn std::any::Any + Send + Sync>;
}

/// Accepts connections until `shutdown` fires, serving each with `serve`; then waits up to
/// `drain` for them to finish, and stops the rest.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    mut shutdown: watch::Receiver<bool>,
    drain: Duration,
    mut serve: impl FnMut(TcpStream, SocketAddr) -> BoxFuture<()>,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    conns.spawn(serve(stream, peer));
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = stopped(&mut shutdown) => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    let drained = tokio::time::timeout(drain, async { while conns.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(left = conns.len(), "drain timeout: closing remaining connections");
        conns.shutdown().await;
    }
}

/// How a mesh port serves its connections.
#[derive(Clone)]
pub(crate) struct Port {
    pub(crate) dispatch: Arc<dyn Dispatch>,
    pub(crate) door: Option<Arc<dyn Door>>,
    pub(crate) mesh: MeshLimits,
}

/// Serves a mesh port: each connection's first bytes tell a mesh caller from anything else.
pub(crate) async fn serve_port(listener: TcpListener, port: Port, shutdown: watch::Receiver<bool>, drain: Duration) {
    let stop = shutdown.clone();
    accept_loop(listener, shutdown, drain, move |stream, _| {
        let (port, stop) = (port.clone(), stop.clone());
        Box::pin(async move { serve_connection(stream, port, stop).await })
    })
    .await
}

async fn serve_connection(mut stream: TcpStream, port: Port, shutdown: watch::Receiver<bool>) {
    let mut first = BytesMut::with_capacity(1024);
    // Read (not peek) until the bytes tell: waiting on readiness, a partial preface costs
    // nothing while it stays partial.
    let told = tokio::time::timeout(port.mesh.handshake_timeout, async {
        loop {
            match sniff(&first) {
                Sniffed::NeedMore => {}
                told => return Some(told),
            }
            match stream.read_buf(&mut first).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    })
    .await;
    match told {
        Ok(Some(Sniffed::Mesh)) => {
            serve_mesh(Arc::new(TcpLink::new(stream)), first, port.dispatch, port.mesh, shutdown).await
        }
        Ok(Some(_)) => {
            if let Some(door) = port.door {
                door.serve(Rewind::new(first.freeze(), stream), shutdown).await;
            }
        }
        Ok(None) | Err(_) => {} // closed or silent: nothing to answer
    }
}

/// A TCP stream whose first bytes were already read: they are read again first.
pub(crate) struct Rewind {
    prefix: Bytes,
    stream: TcpStream,
}

impl Rewind {
    pub(crate) fn new(prefix: Bytes, stream: TcpStream) -> Rewind {
        Rewind { prefix, stream }
    }
}

impl AsyncRead for Rewind {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
