//! Credentials for the mTLS rows: a cluster CA, a node certificate for the server and one
//! for the client, as `meshrpc ca init` / `meshrpc cert issue` make them.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, SanType};

const TAG: &str = "bench";

/// Writes `root/server` and `root/client` (ca.pem, node.pem, node.key, gossip.key).
pub fn make(root: &Path) -> (PathBuf, PathBuf) {
    let _ = std::fs::remove_dir_all(root);
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::default();
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::DigitalSignature];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let node = |name: &str, services: &[String]| {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![SanType::DnsName(meshrpc::tls::NODE_DNS_NAME.try_into().unwrap())];
        for uri in meshrpc::identity::Identity::uris(TAG, name, services) {
            params.subject_alt_names.push(SanType::URI(uri.try_into().unwrap()));
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &issuer).unwrap();
        std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
        std::fs::write(dir.join("node.pem"), cert.pem()).unwrap();
        std::fs::write(dir.join("node.key"), key.serialize_pem()).unwrap();
        std::fs::write(dir.join("gossip.key"), "42".repeat(32)).unwrap();
        dir
    };
    (node("server", &["greeter".into(), "hop".into()]), node("client", &[]))
}
