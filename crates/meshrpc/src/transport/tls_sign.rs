//! Signed cluster state (feature `tls`): a member signs what it writes for the whole
//! cluster (split and mirror rules) with its node key, and carries its certificate, so
//! every reader can check who wrote it against the cluster CA — whoever relays it.
//!
//! A signature travels as one token: `<scheme>.<signature>.<certificate>`, the scheme as
//! TLS numbers it (decimal) and both others base64url without padding.
#![cfg_attr(not(feature = "cluster"), allow(dead_code))]

use std::time::{SystemTime, UNIX_EPOCH};

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use ring::signature::{self, UnparsedPublicKey, VerificationAlgorithm};
use rustls::{server::danger::ClientCertVerifier, sign::CertifiedKey, SignatureScheme};
use rustls_pki_types::{CertificateDer, UnixTime};

use crate::error::Error;

/// Schemes a node signs with, in order of preference (ECDSA P-256 is what
/// `meshrpc cert issue` makes).
const SCHEMES: &[SignatureScheme] = &[
    SignatureScheme::ECDSA_NISTP256_SHA256,
    SignatureScheme::ECDSA_NISTP384_SHA384,
    SignatureScheme::ED25519,
    SignatureScheme::RSA_PSS_SHA256,
];

/// A signature, and the certificate whose key made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Signed {
    scheme: u16,
    signature: Vec<u8>,
    cert: Vec<u8>,
}

impl Signed {
    /// `<scheme>.<signature>.<certificate>`.
    pub(crate) fn to_token(&self) -> String {
        format!("{}.{}.{}", self.scheme, URL_SAFE_NO_PAD.encode(&self.signature), URL_SAFE_NO_PAD.encode(&self.cert))
    }

    /// Reads a token; `None` if it is not one.
    pub(crate) fn from_token(token: &str) -> Option<Signed> {
        let mut parts = token.split('.');
        let scheme = parts.next()?.parse().ok()?;
        let signature = URL_SAFE_NO_PAD.decode(parts.next()?).ok()?;
        let cert = URL_SAFE_NO_PAD.decode(parts.next()?).ok()?;
        parts.next().is_none().then_some(Signed { scheme, signature, cert })
    }
}

pub(super) fn sign(key: &CertifiedKey, message: &[u8]) -> Result<Signed, Error> {
    let failed = |why: String| Error::tls(format!("signing: {why}"));
    let signer = key.key.choose_scheme(SCHEMES).ok_or_else(|| failed("the node key has no usable scheme".into()))?;
    let signature = signer.sign(message).map_err(|e| failed(e.to_string()))?;
    let cert = key.cert.first().ok_or_else(|| failed("no certificate".into()))?.to_vec();
    Ok(Signed { scheme: u16::from(signer.scheme()), signature, cert })
}

/// Checks that the certificate chains to the cluster CA and was valid at `at` (when the
/// state was written), and that its key made the signature over `message`; the
/// certificate (DER), to read who signed.
pub(super) fn verify<'s>(
    verifier: &dyn ClientCertVerifier,
    signed: &'s Signed,
    message: &[u8],
    at: SystemTime,
) -> Result<&'s [u8], String> {
    let cert = CertificateDer::from(signed.cert.as_slice());
    let at = UnixTime::since_unix_epoch(at.duration_since(UNIX_EPOCH).unwrap_or_default());
    verifier.verify_client_cert(&cert, &[], at).map_err(|e| format!("certificate: {e}"))?;
    let (_, parsed) = x509_parser::parse_x509_certificate(&signed.cert).map_err(|e| format!("certificate: {e}"))?;
    let algorithm: &'static dyn VerificationAlgorithm = match SignatureScheme::from(signed.scheme) {
        SignatureScheme::ECDSA_NISTP256_SHA256 => &signature::ECDSA_P256_SHA256_ASN1,
        SignatureScheme::ECDSA_NISTP384_SHA384 => &signature::ECDSA_P384_SHA384_ASN1,
        SignatureScheme::ED25519 => &signature::ED25519,
        SignatureScheme::RSA_PSS_SHA256 => &signature::RSA_PSS_2048_8192_SHA256,
        other => return Err(format!("signature scheme {other:?} not accepted")),
    };
    let key = parsed.public_key().subject_public_key.data.as_ref();
    UnparsedPublicKey::new(algorithm, key)
        .verify(message, &signed.signature)
        .map_err(|_| "the signature does not match the certificate".to_owned())?;
    Ok(&signed.cert)
}

#[cfg(test)]
mod tests {
    use super::Signed;

    #[test]
    fn tokens_round_trip_and_garbage_is_refused() {
        let signed = Signed { scheme: 0x0403, signature: vec![1, 2, 3, 250], cert: vec![9; 40] };
        let token = signed.to_token();
        assert!(token.starts_with("1027.") && !token.contains(' '), "{token}");
        assert_eq!(Signed::from_token(&token), Some(signed));
        for bad in ["", "1027", "x.AQ.AQ", "1027.AQ", "1027.AQ.AQ.AQ", "1027.!!.AQ"] {
            assert_eq!(Signed::from_token(bad), None, "{bad}");
        }
    }
}
