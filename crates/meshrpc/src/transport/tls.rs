//! Mutual TLS on the mesh port (feature `tls`): a node's credentials, read from a
//! directory (`ca.pem`, `node.pem`, `node.key`, `gossip.key`) and re-read when the files
//! change, and the handshakes of both sides. TLS 1.3 only, rustls with the `ring`
//! provider (it builds with a C compiler alone, where `aws-lc-rs` also needs cmake).

use std::{
    fmt,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, RwLock},
    time::{Duration, Instant, SystemTime},
};

use rustls::{
    client::ResolvesClientCert,
    server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier},
    sign::CertifiedKey,
    ClientConfig, RootCertStore, ServerConfig, SignatureScheme,
};
use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::{
    error::Error,
    identity::{Identity, IdentityError, NODE_DNS_NAME},
};

/// Files of a credentials directory.
pub const CA_FILE: &str = "ca.pem";
/// The node's certificate (PEM).
pub const CERT_FILE: &str = "node.pem";
/// The node's private key (PEM).
pub const KEY_FILE: &str = "node.key";
/// The cluster's gossip key (64 hex digits).
pub const GOSSIP_KEY_FILE: &str = "gossip.key";

/// How often, at most, a handshake looks for new certificate files.
const RECHECK: Duration = Duration::from_secs(1);

/// A node's TLS credentials: the cluster CA it trusts, its own certificate and key
/// (reloaded when the files change: rotation without dropping a connection), and the
/// gossip key. Cheap to clone.
#[derive(Clone)]
pub struct TlsConfig {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    tag: String,
    own: Arc<OwnCert>,
    /// Checks a member's certificate against the cluster CA (handshakes, signed state).
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    verifier: Arc<dyn rustls::server::danger::ClientCertVerifier>,
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    gossip_key: Option<[u8; 32]>,
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig").field("dir", &self.inner.dir).field("identity", &self.identity()).finish()
    }
}

/// ring's suites, AES-128-GCM first: on the small records of RPC it costs less than
/// AES-256 (fewer rounds) and than ChaCha20 where AES instructions exist.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    use rustls::crypto::ring::{cipher_suite::*, default_provider};
    let mut provider = default_provider();
    let first = [TLS13_AES_128_GCM_SHA256, TLS13_AES_256_GCM_SHA384, TLS13_CHACHA20_POLY1305_SHA256];
    provider.cipher_suites.retain(|s| !first.contains(s));
    provider.cipher_suites.splice(0..0, first);
    Arc::new(provider)
}

fn tls_error(message: impl Into<String>) -> Error {
    Error::tls(message)
}

impl TlsConfig {
    /// Reads `ca.pem`, `node.pem`, `node.key` (and `gossip.key`, if present) from `dir`.
    pub fn from_dir(dir: impl Into<PathBuf>) -> Result<TlsConfig, Error> {
        let dir = dir.into();
        let ca_path = dir.join(CA_FILE);
        let mut roots = RootCertStore::empty();
        let cas = CertificateDer::pem_file_iter(&ca_path)
            .map_err(|e| tls_error(format!("{}: {e}", ca_path.display())).with_source(e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| tls_error(format!("{}: {e}", ca_path.display())).with_source(e))?;
        if cas.is_empty() {
            return Err(tls_error(format!("{}: no certificate", ca_path.display())));
        }
        for ca in cas {
            roots.add(ca).map_err(|e| tls_error(format!("{}: {e}", ca_path.display())).with_source(e))?;
        }
        let roots = Arc::new(roots);
        let own = Arc::new(OwnCert::load(&dir)?);
        let tag = own.current().identity.tag.clone();
        let versions = &[&rustls::version::TLS13];
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
            .build()
            .map_err(|e| tls_error(format!("client verifier: {e}")).with_source(e))?;
        let mut server = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(versions)
            .map_err(|e| tls_error(e.to_string()).with_source(e))?
            .with_client_cert_verifier(verifier.clone())
            .with_cert_resolver(own.clone());
        // HTTP clients on the mesh port may ask for h2; mesh callers ask for nothing.
        server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let client = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(versions)
            .map_err(|e| tls_error(e.to_string()).with_source(e))?
            .with_root_certificates(roots)
            .with_client_cert_resolver(own.clone());
        let gossip_key = read_gossip_key(&dir.join(GOSSIP_KEY_FILE))?;
        Ok(TlsConfig {
            inner: Arc::new(Inner {
                dir,
                tag,
                own,
                verifier,
                server: Arc::new(server),
                client: Arc::new(client),
                gossip_key,
            }),
        })
    }

    /// This node's identity (from its current certificate).
    pub fn identity(&self) -> Arc<Identity> {
        self.inner.own.current().identity.clone()
    }

    /// SHA-256 of this node's current certificate, hex.
    pub fn fingerprint(&self) -> String {
        self.inner.own.current().fingerprint.clone()
    }

    /// The directory the credentials come from.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The key gossip datagrams are sealed with (`gossip.key`), if the directory has one.
    pub fn gossip_key(&self) -> Option<[u8; 32]> {
        self.inner.gossip_key
    }

    /// Re-reads the certificate and key now (SIGHUP); on an error the old ones stay.
    pub fn reload(&self) -> Result<bool, Error> {
        self.inner.own.reload(&self.inner.dir)
    }

    /// The server side of a handshake; the client must present a certificate of the
    /// cluster CA naming this cluster's tag.
    pub(crate) async fn accept<S>(&self, io: S) -> Result<(tokio_rustls::server::TlsStream<S>, Arc<Identity>), Error>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let stream = tokio_rustls::TlsAcceptor::from(self.inner.server.clone())
            .accept(io)
            .await
            .map_err(|e| tls_error(format!("handshake: {e}")).with_source(e))?;
        let identity = self.peer_identity(stream.get_ref().1.peer_certificates())?;
        Ok((stream, identity))
    }

    /// The client side of a handshake with a node of this cluster.
    pub(crate) async fn connect<S>(&self, io: S) -> Result<(tokio_rustls::client::TlsStream<S>, Arc<Identity>), Error>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let name = ServerName::try_from(NODE_DNS_NAME).expect("a valid DNS name");
        let stream =
            tokio_rustls::TlsConnector::from(self.inner.client.clone()).connect(name, io).await.map_err(|e| {
                let hint = if e.kind() == std::io::ErrorKind::UnexpectedEof {
                    " (the node closed the connection: does it run without TLS, or refuse this certificate?)"
                } else {
                    ""
                };
                tls_error(format!("handshake: {e}{hint}"))
            })?;
        let identity = self.peer_identity(stream.get_ref().1.peer_certificates())?;
        Ok((stream, identity))
    }

    /// Signs `message` with this node's key: the signature scheme, the signature, and the
    /// certificate (DER) that proves who signed (cluster state a member writes).
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    pub(crate) fn sign(&self, message: &[u8]) -> Result<super::tls_sign::Signed, Error> {
        super::tls_sign::sign(&self.inner.own.current().key, message)
    }

    /// Checks that `cert` is a certificate of this cluster's CA and tag, valid at `at`, and
    /// that it signed `message`: who signed.
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    pub(crate) fn verify_signed(
        &self,
        signed: &super::tls_sign::Signed,
        message: &[u8],
        at: SystemTime,
    ) -> Result<Identity, String> {
        let signer = super::tls_sign::verify(&*self.inner.verifier, signed, message, at)?;
        let identity = identity_of(signer).map_err(|e| e.to_string())?;
        if identity.tag != self.inner.tag {
            return Err(format!("signed by a certificate of cluster `{}`, not `{}`", identity.tag, self.inner.tag));
        }
        Ok(identity)
    }

    fn peer_identity(&self, certs: Option<&[CertificateDer<'static>]>) -> Result<Arc<Identity>, Error> {
        let cert = certs.and_then(|c| c.first()).ok_or_else(|| tls_error("the peer presented no certificate"))?;
        let identity = identity_of(cert).map_err(|e| tls_error(e.to_string()).with_source(e))?;
        if identity.tag != self.inner.tag {
            return Err(tls_error(format!(
                "the peer's certificate is for cluster `{}`, this node's for `{}`",
                identity.tag, self.inner.tag
            )));
        }
        Ok(Arc::new(identity))
    }
}

/// A TLS server configuration for a public HTTPS front door (`serve_https`) from PEM
/// files: a certificate chain and its key — a public certificate, not a cluster one.
/// TLS 1.2 and 1.3; ALPN `h2`, `http/1.1`.
pub fn https_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, Error> {
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| tls_error(format!("{}: {e}", cert.display())).with_source(e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_error(format!("{}: {e}", cert.display())).with_source(e))?;
    if chain.is_empty() {
        return Err(tls_error(format!("{}: no certificate", cert.display())));
    }
    let key_der =
        PrivateKeyDer::from_pem_file(key).map_err(|e| tls_error(format!("{}: {e}", key.display())).with_source(e))?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error(e.to_string()).with_source(e))?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| tls_error(format!("{}: {e}", key.display())).with_source(e))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The identity a node certificate (DER) carries, and its expiry.
pub fn identity_of(cert: &[u8]) -> Result<Identity, IdentityError> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(cert).map_err(|e| IdentityError::UnreadableCertificate(e.to_string()))?;
    let not_after = cert.validity().not_after.timestamp();
    let not_after = SystemTime::UNIX_EPOCH + Duration::from_secs(not_after.max(0) as u64);
    let san = cert.subject_alternative_name().map_err(|e| IdentityError::UnreadableSans(e.to_string()))?;
    let uris = san.iter().flat_map(|san| san.value.general_names.iter()).filter_map(|name| match name {
        x509_parser::extensions::GeneralName::URI(uri) => Some(*uri),
        _ => None,
    });
    Identity::from_uris(uris, Some(not_after))
}

fn read_gossip_key(path: &Path) -> Result<Option<[u8; 32]>, Error> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(tls_error(format!("{}: {e}", path.display()))),
    };
    let hex = text.trim();
    let bad = || tls_error(format!("{}: expected 64 hex digits", path.display()));
    if hex.len() != 64 || !hex.is_ascii() {
        return Err(bad());
    }
    let mut key = [0u8; 32];
    for (i, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(Some(key))
}

/// The node's own certificate and key, re-read when the files change.
struct OwnCert {
    dir: PathBuf,
    loaded: RwLock<Arc<Loaded>>,
    checked: Mutex<Instant>,
}

struct Loaded {
    key: Arc<CertifiedKey>,
    identity: Arc<Identity>,
    fingerprint: String,
    stamp: Stamp,
}

type Stamp = (Option<SystemTime>, Option<SystemTime>);

fn stamp(dir: &Path) -> Stamp {
    let m = |f: &str| std::fs::metadata(dir.join(f)).and_then(|m| m.modified()).ok();
    (m(CERT_FILE), m(KEY_FILE))
}

impl fmt::Debug for OwnCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnCert").field("dir", &self.dir).finish_non_exhaustive()
    }
}

impl OwnCert {
    fn load(dir: &Path) -> Result<OwnCert, Error> {
        Ok(OwnCert {
            dir: dir.to_owned(),
            loaded: RwLock::new(Arc::new(read_own(dir)?)),
            checked: Mutex::new(crate::clock::now()),
        })
    }

    /// The current certificate; looks at the files' times at most once per [`RECHECK`].
    fn current(&self) -> Arc<Loaded> {
        let due = {
            let mut checked = self.checked.lock().unwrap();
            let due = crate::clock::since(*checked) >= RECHECK;
            if due {
                *checked = crate::clock::now();
            }
            due
        };
        if due && stamp(&self.dir) != self.loaded.read().unwrap().stamp {
            if let Err(e) = self.reload(&self.dir) {
                tracing::error!(error = %e, "certificate reload failed: the previous certificate stays in use");
            }
        }
        self.loaded.read().unwrap().clone()
    }

    fn reload(&self, dir: &Path) -> Result<bool, Error> {
        let fresh = read_own(dir)?;
        let mut loaded = self.loaded.write().unwrap();
        let changed = fresh.fingerprint != loaded.fingerprint;
        if changed {
            tracing::info!(node = %fresh.identity.node, fingerprint = %fresh.fingerprint, "certificate reloaded");
        }
        *loaded = Arc::new(fresh);
        Ok(changed)
    }
}

fn read_own(dir: &Path) -> Result<Loaded, Error> {
    let stamp = stamp(dir);
    let (cert_path, key_path) = (dir.join(CERT_FILE), dir.join(KEY_FILE));
    let chain = CertificateDer::pem_file_iter(&cert_path)
        .map_err(|e| tls_error(format!("{}: {e}", cert_path.display())).with_source(e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_error(format!("{}: {e}", cert_path.display())).with_source(e))?;
    let first = chain.first().ok_or_else(|| tls_error(format!("{}: no certificate", cert_path.display())))?;
    let identity = identity_of(first).map_err(|e| tls_error(format!("{}: {e}", cert_path.display())).with_source(e))?;
    let fingerprint = fingerprint(first);
    let key = PrivateKeyDer::from_pem_file(&key_path)
        .map_err(|e| tls_error(format!("{}: {e}", key_path.display())).with_source(e))?;
    let signer = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| tls_error(format!("{}: {e}", key_path.display())).with_source(e))?;
    let key = Arc::new(CertifiedKey::new(chain, signer));
    key.keys_match().map_err(|e| {
        tls_error(format!("{} does not match {}: {e}", key_path.display(), cert_path.display())).with_source(e)
    })?;
    Ok(Loaded { key, identity: Arc::new(identity), fingerprint, stamp })
}

/// SHA-256 of a certificate (DER), hex: how logs, gossip and `meshrpc cert show` name it.
pub fn fingerprint(der: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, der).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

impl ResolvesServerCert for OwnCert {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current().key.clone())
    }
}

impl ResolvesClientCert for OwnCert {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.current().key.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}
