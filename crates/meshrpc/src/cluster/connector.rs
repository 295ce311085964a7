//! How a node reaches a replica's HTTP routers (the gateway's proxy, gRPC channels):
//! plain TCP, or mutual TLS with the node's own certificate when the mesh runs TLS
//! (pooled, as plain connections are: no handshake per request).

use std::{
    future::Future,
    io,
    pin::Pin,
    task::{Context, Poll},
};

use axum::http::Uri;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::{
    client::legacy::connect::{Connected, Connection, HttpConnector},
    rt::TokioIo,
};
use tokio::net::TcpStream;

use crate::transport::TlsConfig;

/// Connects to replicas, over TLS when `tls` is set.
#[derive(Clone)]
pub(crate) struct ReplicaConnector {
    http: HttpConnector,
    tls: Option<TlsConfig>,
}

impl ReplicaConnector {
    pub(crate) fn new(http: HttpConnector, tls: Option<TlsConfig>) -> Self {
        ReplicaConnector { http, tls }
    }
}

/// A connection to a replica.
pub(crate) enum ReplicaIo {
    Plain(TokioIo<TcpStream>),
    Tls(Box<TokioIo<tokio_rustls::client::TlsStream<TcpStream>>>),
}

impl tower::Service<Uri> for ReplicaConnector {
    type Response = ReplicaIo;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = Pin<Box<dyn Future<Output = Result<ReplicaIo, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.http.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.http.call(uri);
        let tls = self.tls.clone();
        Box::pin(async move {
            let tcp = connecting.await?;
            match tls {
                None => Ok(ReplicaIo::Plain(tcp)),
                Some(tls) => {
                    let (stream, _) = tls.connect(tcp.into_inner()).await?;
                    Ok(ReplicaIo::Tls(Box::new(TokioIo::new(stream))))
                }
            }
        })
    }
}

impl Connection for ReplicaIo {
    fn connected(&self) -> Connected {
        match self {
            ReplicaIo::Plain(io) => io.connected(),
            ReplicaIo::Tls(_) => Connected::new(),
        }
    }
}

impl Read for ReplicaIo {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: ReadBufCursor<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ReplicaIo::Plain(io) => Pin::new(io).poll_read(cx, buf),
            ReplicaIo::Tls(io) => Pin::new(&mut **io).poll_read(cx, buf),
        }
    }
}

impl Write for ReplicaIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ReplicaIo::Plain(io) => Pin::new(io).poll_write(cx, buf),
            ReplicaIo::Tls(io) => Pin::new(&mut **io).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ReplicaIo::Plain(io) => Pin::new(io).poll_flush(cx),
            ReplicaIo::Tls(io) => Pin::new(&mut **io).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ReplicaIo::Plain(io) => Pin::new(io).poll_shutdown(cx),
            ReplicaIo::Tls(io) => Pin::new(&mut **io).poll_shutdown(cx),
        }
    }
}
