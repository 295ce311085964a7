//! Mutual TLS from the test's side: credentials made with the real `meshrpc ca` and
//! `meshrpc cert` commands, and an HTTPS client that presents them (or not).

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer, ServerName};

use crate::harness::HttpAnswer;

/// A cluster CA in a fresh temporary directory; node credentials are issued next to it.
pub struct Pki {
    pub root: PathBuf,
    meshrpc: String,
}

impl Pki {
    /// `meshrpc ca init --tag TAG` in a new directory named after `name`.
    pub fn new(meshrpc: &str, name: &str, tag: &str) -> Pki {
        let root = std::env::temp_dir().join(format!("meshrpc-pki-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        let pki = Pki { root, meshrpc: meshrpc.to_owned() };
        pki.run(&["ca", "init", "--dir", pki.ca().to_str().unwrap(), "--tag", tag]);
        pki
    }

    pub fn ca(&self) -> PathBuf {
        self.root.join("ca")
    }

    /// `meshrpc cert issue` for `node` serving `services`, into `root/<dir>`; `extra`
    /// flags (`--days`, `--valid-from`) go last. Returns the directory.
    pub fn issue(&self, dir: &str, node: &str, services: &[&str], extra: &[&str]) -> PathBuf {
        let out = self.root.join(dir);
        let (ca, to, services) = (self.ca(), out.display().to_string(), services.join(","));
        let mut args = vec!["cert", "issue", "--ca", ca.to_str().unwrap(), "--node", node, "--out", &to];
        if !services.is_empty() {
            args.extend(["--service", &services]);
        }
        args.extend(extra);
        self.run(&args);
        out
    }

    /// `meshrpc cert issue --caller NAME` into `root/<dir>`: an identity that only calls
    /// (no gossip key). Returns the directory.
    pub fn issue_caller(&self, dir: &str, name: &str) -> PathBuf {
        let out = self.root.join(dir);
        let (ca, to) = (self.ca(), out.display().to_string());
        self.run(&["cert", "issue", "--ca", ca.to_str().unwrap(), "--caller", name, "--out", &to]);
        out
    }

    fn run(&self, args: &[&str]) -> String {
        let out = std::process::Command::new(&self.meshrpc).args(args).output().unwrap();
        assert!(out.status.success(), "meshrpc {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// A rustls client trusting `ca_pem`, presenting the certificate in `client` if given.
pub fn client_config(ca_pem: &Path, client: Option<&Path>) -> Arc<rustls::ClientConfig> {
    client_config_alpn(ca_pem, client, b"http/1.1")
}

/// As [`client_config`], asking for `alpn` (`h2` for HTTP/2).
pub fn client_config_alpn(ca_pem: &Path, client: Option<&Path>, alpn: &[u8]) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_pem).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match client {
        Some(dir) => {
            let chain = CertificateDer::pem_file_iter(dir.join("node.pem")).unwrap().map(Result::unwrap).collect();
            let key = PrivateKeyDer::from_pem_file(dir.join("node.key")).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![alpn.to_vec()];
    Arc::new(config)
}

/// One HTTPS request to `addr` (as server name `name`) over HTTP/1.1; `Err` with the
/// TLS or I/O error as text when the handshake or the request fails.
pub async fn https(
    config: Arc<rustls::ClientConfig>,
    addr: std::net::SocketAddr,
    name: &str,
    method: &str,
    path: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> Result<HttpAnswer, String> {
    let work = async {
        let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let server = ServerName::try_from(name.to_owned()).map_err(|e| e.to_string())?;
        let tls = tokio_rustls::TlsConnector::from(config).connect(server, tcp).await.map_err(|e| e.to_string())?;
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        let io = hyper_util::rt::TokioIo::new(tls);
        let mut req = hyper::Request::builder().method(method);
        if h2 {
            req = req.uri(format!("https://{name}{path}"));
        } else {
            req = req.uri(path).header("host", name);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(Bytes::from(body.to_owned()))).unwrap();
        let resp = if h2 {
            let (mut send, conn) = hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            send.send_request(req).await.map_err(|e| e.to_string())?
        } else {
            let (mut send, conn) = hyper::client::conn::http1::handshake(io).await.map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            send.send_request(req).await.map_err(|e| e.to_string())?
        };
        let version = resp.version();
        let status = resp.status().as_u16();
        let mut headers = resp.headers().clone();
        // The protocol spoken, for tests of ALPN.
        headers.insert("x-test-version", format!("{version:?}").parse().unwrap());
        let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok(HttpAnswer { status, body: String::from_utf8_lossy(&body).into_owned(), headers })
    };
    tokio::time::timeout(Duration::from_secs(10), work).await.map_err(|_| "timed out".to_owned())?
}
