//! Who is calling the gateway from outside (feature `tls`): a bearer token — a static API
//! key or a JWT (HS256 or RS256) — checked before anything else, whose subject becomes
//! the caller's [`Identity`] for the gateway's policy. Health endpoints stay open.
//!
//! A custom gateway with its own scheme puts an `Arc<meshrpc::identity::Identity>` in the request's
//! extensions from its own axum layer instead; the RPC routes make their calls as it.

use std::{collections::HashMap, path::Path, sync::Arc, time::Duration};

use axum::{
    extract::{Request, State},
    http::{header, HeaderValue, StatusCode},
    middleware::Next,
    response::Response,
};
use http_body_util::BodyExt;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::{error::Error, http::error_response, identity::Identity};

/// A refused request's body is read and dropped up to this many bytes, so that its
/// client, still sending, gets the 401 rather than a reset; past it (or past
/// [`REFUSED_BODY_TIME`]) the connection is closed after the answer.
pub(crate) const REFUSED_BODY_DRAINED: usize = 1024 * 1024;
/// How long a refused request's body is read for, at most.
pub(crate) const REFUSED_BODY_TIME: Duration = Duration::from_secs(2);

/// Bearer-token authentication for the gateway.
#[derive(Clone, Default)]
pub struct BearerAuth {
    keys: Arc<HashMap<String, String>>,
    jwt: Option<Arc<Jwt>>,
    /// Claims a JWT must carry (`iss`, `aud`), kept to apply whichever is set first: the
    /// key or the claims.
    claims: Vec<Claim>,
}

/// A requirement on JWTs (an issuer, an audience).
type Claim = Arc<dyn Fn(&mut Validation) + Send + Sync>;

/// Why a request proves no subject (its 401 says so).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The request carries no `Authorization: Bearer` header.
    #[error("a bearer token is required (Authorization: Bearer …)")]
    Missing,
    /// Not one of the API keys, and no JWTs are accepted.
    #[error("unknown API key")]
    UnknownKey,
    /// Not a valid JWT, and no API keys are accepted.
    #[error("invalid token: {0}")]
    Invalid(#[source] jsonwebtoken::errors::Error),
    /// Neither one of the API keys nor a valid JWT.
    #[error("neither an API key nor a valid token: {0}")]
    NeitherKeyNorToken(#[source] jsonwebtoken::errors::Error),
}

struct Jwt {
    key: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for BearerAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BearerAuth").field("api_keys", &self.keys.len()).field("jwt", &self.jwt.is_some()).finish()
    }
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
}

/// Paths open without a token: probes and scrapers.
const OPEN: [&str; 4] = ["/ping", "/__heartbeat__", "/healthz", "/metrics"];

impl BearerAuth {
    /// No scheme yet: add API keys and/or a JWT key.
    pub fn new() -> BearerAuth {
        BearerAuth::default()
    }

    /// Static API keys: `token → subject`.
    pub fn api_keys(mut self, keys: impl IntoIterator<Item = (String, String)>) -> Self {
        self.keys = Arc::new(keys.into_iter().collect());
        self
    }

    /// API keys from a file: one `subject:token` per line (`#` comments).
    pub fn api_keys_file(self, path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::bad_request(format!("API keys {}: {e}", path.display())))?;
        let mut keys = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (subject, token) =
                line.split_once(':').filter(|(s, t)| !s.is_empty() && t.len() >= 16).ok_or_else(|| {
                    Error::bad_request(format!(
                        "{}:{}: expected `subject:token` with a token of at least 16 characters",
                        path.display(),
                        i + 1
                    ))
                })?;
            keys.push((token.to_owned(), subject.to_owned()));
        }
        Ok(self.api_keys(keys))
    }

    /// JWTs signed with HS256 and this shared secret.
    pub fn jwt_hs256(self, secret: &[u8]) -> Self {
        self.jwt(DecodingKey::from_secret(secret), Algorithm::HS256)
    }

    /// JWTs signed with RS256, verified with this PEM public key.
    pub fn jwt_rs256(self, public_key_pem: &[u8]) -> Result<Self, Error> {
        let key = DecodingKey::from_rsa_pem(public_key_pem)
            .map_err(|e| Error::bad_request(format!("RS256 public key: {e}")))?;
        Ok(self.jwt(key, Algorithm::RS256))
    }

    fn jwt(mut self, key: DecodingKey, alg: Algorithm) -> Self {
        let mut validation = Validation::new(alg);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.validate_aud = false;
        for claim in &self.claims {
            claim(&mut validation);
        }
        self.jwt = Some(Arc::new(Jwt { key, validation }));
        self
    }

    /// Also require the JWT's `iss` to be one of these (a token without `iss` is refused).
    pub fn jwt_issuer(self, issuers: &[&str]) -> Self {
        let issuers: Vec<String> = issuers.iter().map(|s| s.to_string()).collect();
        self.validate(move |v| {
            v.set_issuer(&issuers);
            v.required_spec_claims.insert("iss".to_owned());
        })
    }

    /// Also require the JWT's `aud` to name one of these (a token without `aud` is
    /// refused). Without it, `aud` is not checked.
    pub fn jwt_audience(self, audiences: &[&str]) -> Self {
        let audiences: Vec<String> = audiences.iter().map(|s| s.to_string()).collect();
        self.validate(move |v| {
            v.set_audience(&audiences);
            v.validate_aud = true;
            v.required_spec_claims.insert("aud".to_owned());
        })
    }

    /// Adds a requirement on JWTs, to the key set already and to one set later.
    fn validate(mut self, change: impl Fn(&mut Validation) + Send + Sync + 'static) -> Self {
        if let Some(jwt) = self.jwt.take() {
            let mut validation = jwt.validation.clone();
            change(&mut validation);
            self.jwt = Some(Arc::new(Jwt { key: jwt.key.clone(), validation }));
        }
        self.claims.push(Arc::new(change));
        self
    }

    /// The subject a token proves, or why it proves none.
    pub fn verify(&self, token: &str) -> Result<String, TokenError> {
        if let Some(subject) = self.keys.iter().find_map(|(k, s)| same(k.as_bytes(), token.as_bytes()).then_some(s)) {
            return Ok(subject.clone());
        }
        let Some(jwt) = &self.jwt else {
            return Err(TokenError::UnknownKey);
        };
        match jsonwebtoken::decode::<Claims>(token, &jwt.key, &jwt.validation) {
            Ok(data) => Ok(data.claims.sub),
            Err(e) if self.keys.is_empty() => Err(TokenError::Invalid(e)),
            Err(e) => Err(TokenError::NeitherKeyNorToken(e)),
        }
    }

    /// The axum middleware: `401` with a JSON error for a missing or bad token; the
    /// caller's identity in the request's extensions otherwise.
    pub async fn layer(State(auth): State<BearerAuth>, mut req: Request, next: Next) -> Response {
        if OPEN.contains(&req.uri().path()) {
            return next.run(req).await;
        }
        let token = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")));
        let verdict = match token {
            None => Err(TokenError::Missing),
            Some(token) => auth.verify(token.trim()),
        };
        match verdict {
            Ok(subject) => {
                req.extensions_mut().insert(Arc::new(Identity::token_subject(subject)));
                next.run(req).await
            }
            Err(why) => {
                tracing::info!(target: "meshrpc::gateway", path = %req.uri().path(), reason = %why, "unauthenticated request");
                let mut resp = error_response(StatusCode::UNAUTHORIZED, "unauthenticated", &why.to_string(), None);
                resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                let http1 = req.version() < axum::http::Version::HTTP_2;
                if !drained(req.into_body()).await && http1 {
                    resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
                }
                resp
            }
        }
    }
}

/// Reads a refused request's body to its end, within [`REFUSED_BODY_DRAINED`] bytes and
/// [`REFUSED_BODY_TIME`]: false if it had more, or took longer.
async fn drained(mut body: axum::body::Body) -> bool {
    let read = async {
        let mut total = 0usize;
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { return false };
            total += frame.data_ref().map_or(0, |d| d.len());
            if total > REFUSED_BODY_DRAINED {
                return false;
            }
        }
        true
    };
    tokio::time::timeout(REFUSED_BODY_TIME, read).await.unwrap_or(false)
}

/// Compares without a shortcut on the first differing byte.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_keys_and_hs256_tokens_prove_a_subject() {
        let auth = BearerAuth::new()
            .api_keys([("k".repeat(20), "ci-bot".to_owned())])
            .jwt_hs256(b"a shared secret of the issuer");
        assert_eq!(auth.verify(&"k".repeat(20)).unwrap(), "ci-bot");
        assert!(auth.verify(&"k".repeat(19)).is_err());
        let claims = serde_json::json!({ "sub": "alice", "exp": 4_102_444_800u64 });
        let key = jsonwebtoken::EncodingKey::from_secret(b"a shared secret of the issuer");
        let token = jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap();
        assert_eq!(auth.verify(&token).unwrap(), "alice");
        let expired = serde_json::json!({ "sub": "alice", "exp": 1_000_000_000u64 });
        let token = jsonwebtoken::encode(&jsonwebtoken::Header::default(), &expired, &key).unwrap();
        assert!(auth.verify(&token).unwrap_err().to_string().contains("Expired"), "{:?}", auth.verify(&token));
        let other = jsonwebtoken::EncodingKey::from_secret(b"another secret");
        let forged = jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &other).unwrap();
        assert!(auth.verify(&forged).unwrap_err().to_string().contains("InvalidSignature"));
    }

    #[test]
    fn an_issuer_or_audience_asked_for_must_be_in_the_token() {
        let key = jsonwebtoken::EncodingKey::from_secret(b"a shared secret of the issuer");
        let token =
            |claims: serde_json::Value| jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap();
        let exp = 4_102_444_800u64;
        // The claims hold whichever comes first, the key or the claims.
        let auth = BearerAuth::new().jwt_issuer(&["idp"]).jwt_hs256(b"a shared secret of the issuer");
        assert_eq!(auth.verify(&token(serde_json::json!({"sub": "a", "exp": exp, "iss": "idp"}))).unwrap(), "a");
        let missing = auth.verify(&token(serde_json::json!({"sub": "a", "exp": exp}))).unwrap_err().to_string();
        assert!(missing.contains("iss"), "{missing}");
        assert!(auth.verify(&token(serde_json::json!({"sub": "a", "exp": exp, "iss": "other"}))).is_err());
        // `aud` is checked only when asked for, and then required.
        let no_aud = serde_json::json!({"sub": "a", "exp": exp, "iss": "idp", "aud": "elsewhere"});
        assert!(auth.verify(&token(no_aud.clone())).is_ok());
        let auth = auth.jwt_audience(&["meshrpc"]);
        assert!(auth.verify(&token(no_aud)).is_err());
        let missing =
            auth.verify(&token(serde_json::json!({"sub": "a", "exp": exp, "iss": "idp"}))).unwrap_err().to_string();
        assert!(missing.contains("aud"), "{missing}");
        let ok = serde_json::json!({"sub": "a", "exp": exp, "iss": "idp", "aud": ["x", "meshrpc"]});
        assert_eq!(auth.verify(&token(ok)).unwrap(), "a");
    }
}
