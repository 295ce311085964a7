//! Who is on the other end of a connection: the identity a node's certificate carries
//! (with the `tls` feature), or the one a gateway vouches for (a bearer token's subject).
//!
//! A node certificate names its cluster tag, its node name and the services it may serve
//! in URI SANs (docs/security.md):
//!
//! ```text
//! meshrpc://<tag>/node/<name>
//! meshrpc://<tag>/service/<service>     (one per service)
//! ```

use std::time::{Duration, SystemTime};

/// Calls denied by the authorization policy in this process (mesh and HTTP alike), for
/// `/metrics`.
pub(crate) static CALLS_DENIED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// URI scheme of the SANs of node certificates.
#[cfg_attr(not(feature = "tls"), allow(unreachable_pub))]
pub const URI_SCHEME: &str = "meshrpc://";
/// DNS SAN every node certificate carries: callers check the chain against the cluster
/// CA and this name, then read who the node is from its URI SANs.
#[cfg_attr(not(feature = "tls"), allow(unreachable_pub, dead_code))]
pub const NODE_DNS_NAME: &str = "meshrpc";

/// The verified identity of a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The cluster tag the certificate was issued for.
    pub tag: String,
    /// The node name (`meshrpc://<tag>/node/<name>`), or for callers a gateway vouches
    /// for, the bearer token's subject.
    pub node: String,
    /// Services the certificate allows the node to serve.
    pub services: Vec<String>,
    /// When the certificate stops being valid (`None`: not from a certificate).
    pub not_after: Option<SystemTime>,
    /// How this identity was established.
    pub kind: IdentityKind,
}

/// How an [`Identity`] was established.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityKind {
    /// A certificate from the cluster CA, verified in the TLS handshake.
    Certificate,
    /// A bearer token (API key or JWT) verified by a gateway, which calls on its behalf.
    Token,
}

impl Identity {
    /// An identity a gateway established from a bearer token (`subject`: the API key's
    /// name or the JWT's `sub`).
    pub fn token_subject(subject: impl Into<String>) -> Identity {
        Identity {
            tag: String::new(),
            node: subject.into(),
            services: Vec::new(),
            not_after: None,
            kind: IdentityKind::Token,
        }
    }

    /// Whether the certificate allows serving `service`.
    pub fn proves(&self, service: &str) -> bool {
        self.kind == IdentityKind::Certificate && self.services.iter().any(|s| s == service)
    }

    /// Time left before the certificate expires (zero once expired; `None` without one).
    pub fn expires_in(&self, now: SystemTime) -> Option<Duration> {
        self.not_after.map(|t| t.duration_since(now).unwrap_or_default())
    }

    /// Reads an identity from a certificate's URI SANs (see the module docs). Unrelated
    /// SANs are ignored; the certificate must name exactly one tag and one node.
    pub fn from_uris<'a>(
        uris: impl IntoIterator<Item = &'a str>,
        not_after: Option<SystemTime>,
    ) -> Result<Identity, IdentityError> {
        let (mut tag, mut node, mut services) = (None::<String>, None::<String>, Vec::new());
        for uri in uris {
            let Some(rest) = uri.strip_prefix(URI_SCHEME) else { continue };
            let Some((t, path)) = rest.split_once('/') else { return Err(IdentityError::MalformedSan(uri.into())) };
            if let Some(known) = tag.as_deref().filter(|known| *known != t) {
                return Err(IdentityError::TwoTags(known.into(), t.into()));
            }
            tag = Some(t.to_owned());
            match path.split_once('/') {
                Some(("node", name)) if !name.is_empty() => {
                    if node.replace(name.to_owned()).is_some() {
                        return Err(IdentityError::TwoNodes);
                    }
                }
                Some(("service", name)) if !name.is_empty() => services.push(name.to_owned()),
                _ => return Err(IdentityError::MalformedSan(uri.into())),
            }
        }
        let tag = tag.ok_or(IdentityError::NotANodeCertificate)?;
        let Some(node) = node else { return Err(IdentityError::NoNode { tag }) };
        Ok(Identity { tag, node, services, not_after, kind: IdentityKind::Certificate })
    }

    /// The URI SANs of a node certificate for this tag, node and services.
    pub fn uris(tag: &str, node: &str, services: &[String]) -> Vec<String> {
        let mut uris = vec![format!("{URI_SCHEME}{tag}/node/{node}")];
        uris.extend(services.iter().map(|s| format!("{URI_SCHEME}{tag}/service/{s}")));
        uris
    }
}

/// Why a certificate carries no node identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// The certificate could not be parsed (the parser's message).
    #[error("unreadable certificate: {0}")]
    UnreadableCertificate(String),
    /// Its subject alternative names could not be parsed (the parser's message).
    #[error("unreadable SANs: {0}")]
    UnreadableSans(String),
    /// A `meshrpc://` SAN that is not `meshrpc://<tag>/node/<name>` or
    /// `meshrpc://<tag>/service/<name>`.
    #[error("malformed SAN `{0}`")]
    MalformedSan(String),
    /// SANs of two cluster tags.
    #[error("SANs name two cluster tags (`{0}` and `{1}`)")]
    TwoTags(String, String),
    /// Two node SANs.
    #[error("SANs name two nodes")]
    TwoNodes,
    /// No `meshrpc://` SAN at all.
    #[error("no meshrpc:// SAN: not a meshrpc node certificate")]
    NotANodeCertificate,
    /// No node SAN for its tag.
    #[error("no `meshrpc://{tag}/node/<name>` SAN")]
    #[allow(missing_docs)] // the cluster tag it names
    NoNode { tag: String },
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.kind {
            IdentityKind::Certificate => write!(f, "node:{}", self.node),
            IdentityKind::Token => write!(f, "user:{}", self.node),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_round_trip() {
        let services = vec!["greeter".to_owned(), "billing".to_owned()];
        let uris = Identity::uris("prod", "node-1", &services);
        let id = Identity::from_uris(uris.iter().map(String::as_str), None).unwrap();
        assert_eq!((id.tag.as_str(), id.node.as_str()), ("prod", "node-1"));
        assert_eq!(id.services, services);
        assert!(id.proves("greeter") && !id.proves("mesh-api"));
        assert_eq!(id.to_string(), "node:node-1");
    }

    #[test]
    fn malformed_sans_are_refused() {
        let bad = |uris: &[&str]| Identity::from_uris(uris.iter().copied(), None).unwrap_err();
        assert_eq!(bad(&[]).to_string(), "no meshrpc:// SAN: not a meshrpc node certificate");
        assert_eq!(bad(&["meshrpc://a/service/x"]).to_string(), "no `meshrpc://a/node/<name>` SAN");
        let two_tags = bad(&["meshrpc://a/node/x", "meshrpc://b/service/y"]);
        assert_eq!(two_tags, IdentityError::TwoTags("a".into(), "b".into()));
        assert_eq!(two_tags.to_string(), "SANs name two cluster tags (`a` and `b`)");
        assert_eq!(bad(&["meshrpc://a/node/x", "meshrpc://a/node/y"]), IdentityError::TwoNodes);
        assert_eq!(bad(&["meshrpc://a/thing/x"]).to_string(), "malformed SAN `meshrpc://a/thing/x`");
        // Other SANs (a DNS name written as a URI elsewhere) are ignored.
        let ok = Identity::from_uris(["https://example.com/", "meshrpc://a/node/x"], None).unwrap();
        assert_eq!(ok.node, "x");
    }

    #[test]
    fn tokens_prove_no_service() {
        let user = Identity::token_subject("alice");
        assert!(!user.proves("greeter"));
        assert_eq!(user.to_string(), "user:alice");
    }
}
