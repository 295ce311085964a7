//! A client of a deployment's front door, as its users reach it: plain HTTP, or HTTPS
//! trusting a CA file and carrying a bearer token — on keep-alive connections (hyper's
//! pooled client), HTTP/1.1.

use std::{
    future::Future,
    io,
    path::Path,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Uri;
use hyper_util::{
    client::legacy::connect::{Connected, Connection},
    rt::TokioIo,
};
use rustls_pki_types::{pem::PemObject, CertificateDer, ServerName};
use tokio::net::TcpStream;

/// Where a front door is, and how to get in.
#[derive(Clone)]
pub struct Front {
    base: String,
    tls: Option<Arc<rustls::ClientConfig>>,
    token: Option<String>,
    client: hyper_util::client::legacy::Client<Connector, Full<Bytes>>,
}

impl Front {
    /// `http://host:port`.
    pub fn plain(base: &str) -> Front {
        Front::new(base.to_owned(), None, None)
    }

    /// `https://host:port`, trusting `ca_pem`, each request with `Authorization: Bearer
    /// token`.
    pub fn https(base: &str, ca_pem: &Path, token: &str) -> Front {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(ca_pem).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Front::new(base.to_owned(), Some(Arc::new(config)), Some(token.to_owned()))
    }

    fn new(base: String, tls: Option<Arc<rustls::ClientConfig>>, token: Option<String>) -> Front {
        let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(Connector { tls: tls.clone() });
        Front { base, tls, token, client }
    }

    /// The same door on fresh connections (a client of its own).
    pub fn fresh(&self) -> Front {
        Front::new(self.base.clone(), self.tls.clone(), self.token.clone())
    }

    /// `method path` with `body`: the status and body, or `None` if no answer came (a
    /// refused or reset connection).
    pub async fn request(&self, method: &str, path: &str, body: &str) -> Option<(u16, String)> {
        let mut req = hyper::Request::builder().method(method).uri(format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            req = req.header("authorization", format!("Bearer {token}"));
        }
        let req = req.body(Full::new(Bytes::from(body.to_owned()))).ok()?;
        let resp = self.client.request(req).await.ok()?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.ok()?.to_bytes();
        Some((status, String::from_utf8_lossy(&body).into_owned()))
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Option<(u16, String)> {
        self.request("GET", path, "").await
    }

    /// The same request with no token: what an anonymous client gets.
    pub async fn anonymous(&self, method: &str, path: &str, body: &str) -> Option<(u16, String)> {
        Front { token: None, ..self.clone() }.request(method, path, body).await
    }
}

/// TCP, and TLS on top for `https` URIs.
#[derive(Clone)]
struct Connector {
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl tower_service::Service<Uri> for Connector {
    type Response = Io;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Io>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let tls = self.tls.clone();
        Box::pin(async move {
            let host = uri.host().unwrap_or("localhost").to_owned();
            let https = uri.scheme_str() == Some("https");
            let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            match (https, tls) {
                (true, Some(config)) => {
                    let name =
                        ServerName::try_from(host).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
                    let stream = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await?;
                    Ok(Io::Tls(Box::new(TokioIo::new(stream))))
                }
                (true, None) => Err(io::Error::new(io::ErrorKind::InvalidInput, "an https URI on a plain front door")),
                (false, _) => Ok(Io::Plain(TokioIo::new(tcp))),
            }
        })
    }
}

enum Io {
    Plain(TokioIo<TcpStream>),
    Tls(Box<TokioIo<tokio_rustls::client::TlsStream<TcpStream>>>),
}

impl Connection for Io {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl hyper::rt::Read for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(io) => Pin::new(io).poll_read(cx, buf),
            Io::Tls(io) => Pin::new(io.as_mut()).poll_read(cx, buf),
        }
    }
}

impl hyper::rt::Write for Io {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(io) => Pin::new(io).poll_write(cx, buf),
            Io::Tls(io) => Pin::new(io.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(io) => Pin::new(io).poll_flush(cx),
            Io::Tls(io) => Pin::new(io.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(io) => Pin::new(io).poll_shutdown(cx),
            Io::Tls(io) => Pin::new(io.as_mut()).poll_shutdown(cx),
        }
    }
}
