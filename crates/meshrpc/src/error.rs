//! The one error type every layer of meshrpc returns.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// What went wrong with a call, as seen by the caller.
///
/// User error types fold this in with `From<meshrpc::Error>`, so a transport failure
/// reaches the caller as the user's own error type and is never swallowed.
///
/// An error crosses the wire as its code and message (docs/wire.md). `Internal`, `Tls`
/// and `Unavailable` may also keep the error underneath (an I/O error, a TLS alert) for
/// the local caller, through [`std::error::Error::source`]; it is not sent, and errors
/// compare without it.
#[derive(Debug, Clone, thiserror::Error, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(tag = "code", rename_all = "snake_case")]
#[non_exhaustive]
#[allow(missing_docs)] // fields are named for what they hold
pub enum Error {
    /// The arguments could not be decoded (malformed JSON, wrong types, missing fields).
    #[error("bad request: {message}")]
    BadRequest { message: String },
    /// No node publishes a service with this name.
    #[error("unknown service `{service}`")]
    UnknownService { service: String },
    /// The service exists but has no such method.
    #[error("unknown method `{method}` on service `{service}`")]
    UnknownMethod { service: String, method: String },
    /// The call's deadline passed before an answer came back.
    #[error("deadline exceeded")]
    Timeout,
    /// The caller gave up on the call.
    #[error("call cancelled")]
    Cancelled,
    /// No replica could be reached, or the connection broke mid-call
    /// ([`Error::unavailable`]).
    #[error("unavailable: {message}")]
    #[non_exhaustive]
    Unavailable {
        message: String,
        #[serde(skip)]
        source: Option<ErrorSource>,
    },
    /// The peer refused the call because too many are in flight.
    #[error("overloaded: {message}")]
    Overloaded { message: String },
    /// A message exceeded the configured size limit.
    #[error("message too large: {size} bytes, limit {limit}")]
    TooLarge { size: u64, limit: u64 },
    /// The peer broke the wire protocol or sent an undecodable answer.
    #[error("protocol error: {message}")]
    Protocol { message: String },
    /// A TLS handshake failed or was refused: a plaintext caller of a mutual-TLS node, a
    /// certificate from another CA, expired or for another cluster (feature `tls`;
    /// [`Error::tls`]).
    #[error("tls: {message}")]
    #[non_exhaustive]
    Tls {
        message: String,
        #[serde(skip)]
        source: Option<ErrorSource>,
    },
    /// The caller may not make this call (refused by a server layer or a policy before
    /// the handler ran).
    #[error("permission denied: {message}")]
    PermissionDenied { message: String },
    /// The handler failed without an answer (it panicked), or a local failure
    /// ([`Error::internal`]).
    #[error("internal error: {message}")]
    #[non_exhaustive]
    Internal {
        message: String,
        #[serde(skip)]
        source: Option<ErrorSource>,
    },
    /// A remote application error, type-erased (JSON text of the service's error type).
    /// Generated clients decode application errors into the trait's own error type
    /// instead; this variant serves callers without the type, such as the CLI.
    #[error("application error: {detail}")]
    Application { detail: String },
}

/// Errors compare as their wire forms do: the error underneath takes no part.
impl PartialEq for Error {
    fn eq(&self, other: &Self) -> bool {
        use Error::*;
        match (self, other) {
            (BadRequest { message: a }, BadRequest { message: b })
            | (Unavailable { message: a, .. }, Unavailable { message: b, .. })
            | (Overloaded { message: a }, Overloaded { message: b })
            | (Protocol { message: a }, Protocol { message: b })
            | (Tls { message: a, .. }, Tls { message: b, .. })
            | (PermissionDenied { message: a }, PermissionDenied { message: b })
            | (Internal { message: a, .. }, Internal { message: b, .. })
            | (UnknownService { service: a }, UnknownService { service: b })
            | (Application { detail: a }, Application { detail: b }) => a == b,
            (UnknownMethod { service: s, method: m }, UnknownMethod { service: t, method: n }) => (s, m) == (t, n),
            (TooLarge { size: s, limit: l }, TooLarge { size: t, limit: m }) => (s, l) == (t, m),
            (Timeout, Timeout) | (Cancelled, Cancelled) => true,
            _ => false,
        }
    }
}

impl Eq for Error {}

/// The error underneath an [`Error`] (an I/O error, a TLS alert): what
/// [`std::error::Error::source`] returns, for the local caller to inspect or downcast.
/// It never crosses the wire.
#[derive(Clone)]
pub struct ErrorSource(Arc<dyn std::error::Error + Send + Sync>);

impl<E: std::error::Error + Send + Sync + 'static> From<E> for ErrorSource {
    fn from(err: E) -> Self {
        ErrorSource(Arc::new(err))
    }
}

// `Error::source` reaches the error itself through this (so it downcasts to its own type).
impl std::ops::Deref for ErrorSource {
    type Target = dyn std::error::Error + Send + Sync;

    fn deref(&self) -> &Self::Target {
        &*self.0
    }
}

impl std::fmt::Debug for ErrorSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl Error {
    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Error::BadRequest { message: message.into() }
    }
    /// `Unavailable`: no replica could be reached, or the connection broke.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Error::Unavailable { message: message.into(), source: None }
    }
    /// `Internal`: a failure of this side, not the peer's.
    pub fn internal(message: impl Into<String>) -> Self {
        Error::Internal { message: message.into(), source: None }
    }
    /// `Tls`: a handshake failed or was refused, or credentials could not be loaded.
    pub fn tls(message: impl Into<String>) -> Self {
        Error::Tls { message: message.into(), source: None }
    }
    pub(crate) fn protocol(message: impl Into<String>) -> Self {
        Error::Protocol { message: message.into() }
    }

    /// The same error keeping `cause` underneath it ([`std::error::Error::source`]), for
    /// `Internal`, `Tls` and `Unavailable`; the other kinds carry none and stay as they are.
    pub fn with_source(mut self, cause: impl Into<ErrorSource>) -> Self {
        if let Error::Internal { source, .. } | Error::Tls { source, .. } | Error::Unavailable { source, .. } =
            &mut self
        {
            *source = Some(cause.into());
        }
        self
    }

    /// The same error with `what` in front of its message ("connect: connection refused").
    pub(crate) fn context(mut self, what: &str) -> Self {
        match &mut self {
            Error::Unavailable { message, .. }
            | Error::Protocol { message }
            | Error::Tls { message, .. }
            | Error::Internal { message, .. } => *message = format!("{what}: {message}"),
            _ => {}
        }
        self
    }

    /// Stable short name of the variant, used in JSON error bodies and logs.
    pub fn code(&self) -> &'static str {
        match self {
            Error::BadRequest { .. } => "bad_request",
            Error::UnknownService { .. } => "unknown_service",
            Error::UnknownMethod { .. } => "unknown_method",
            Error::Timeout => "timeout",
            Error::Cancelled => "cancelled",
            Error::Unavailable { .. } => "unavailable",
            Error::Overloaded { .. } => "overloaded",
            Error::TooLarge { .. } => "too_large",
            Error::Protocol { .. } => "protocol",
            Error::Internal { .. } => "internal",
            Error::PermissionDenied { .. } => "permission_denied",
            Error::Tls { .. } => "tls",
            Error::Application { .. } => "application",
        }
    }

    /// The gRPC status code this error maps to (docs/grpc.md): `UNKNOWN` (2) is the
    /// service's own error.
    pub fn grpc_status(&self) -> u32 {
        match self {
            Error::Cancelled => 1,
            Error::Application { .. } => 2,
            Error::BadRequest { .. } => 3,
            Error::Timeout => 4,
            Error::PermissionDenied { .. } => 7,
            Error::Overloaded { .. } | Error::TooLarge { .. } => 8,
            Error::UnknownService { .. } | Error::UnknownMethod { .. } => 12,
            Error::Protocol { .. } | Error::Internal { .. } => 13,
            Error::Unavailable { .. } | Error::Tls { .. } => 14,
        }
    }

    /// The HTTP status this error maps to (documented in the README).
    pub fn http_status(&self) -> u16 {
        match self {
            Error::BadRequest { .. } => 400,
            Error::UnknownService { .. } | Error::UnknownMethod { .. } => 404,
            Error::PermissionDenied { .. } => 403,
            Error::TooLarge { .. } => 413,
            Error::Application { .. } => 422,
            Error::Cancelled => 499,
            Error::Internal { .. } => 500,
            Error::Protocol { .. } | Error::Tls { .. } => 502,
            Error::Unavailable { .. } | Error::Overloaded { .. } => 503,
            Error::Timeout => 504,
        }
    }
}

/// An I/O error becomes what it means for a call: the peer could not be reached or went
/// away (`Unavailable`, saying which: refused, reset, ...), a timeout, or a local failure
/// (`Internal`: out of file descriptors, address in use, permission denied).
impl From<std::io::Error> for Error {
    fn from(err: std::io::Error) -> Self {
        use std::io::ErrorKind::*;
        #[cfg(feature = "tls")]
        if let Some(tls) = tls_cause(&err) {
            return Error::tls(tls.to_string()).with_source(tls.clone());
        }
        let what = match err.kind() {
            ConnectionRefused => "connection refused",
            ConnectionReset => "connection reset by peer",
            ConnectionAborted => "connection aborted",
            NotConnected => "not connected",
            BrokenPipe => "connection closed by peer (broken pipe)",
            UnexpectedEof => "connection closed by peer",
            HostUnreachable => "host unreachable",
            NetworkUnreachable => "network unreachable",
            NetworkDown => "network down",
            AddrNotAvailable => "address not available",
            TimedOut => return Error::Timeout,
            _ => return Error::internal(format!("I/O: {err}")).with_source(err),
        };
        Error::unavailable(format!("{what} ({err})")).with_source(err)
    }
}

/// The error that broke a link's stream (a [`StreamLink`](crate::transport::StreamLink)), handed to
/// every later read or write as an `io::Error` whose inner error is this, so its cause —
/// a TLS alert — survives. Here, below the transport, so errors can look inside it.
#[derive(Debug, Clone)]
pub(crate) struct LinkFailure(pub(crate) std::sync::Arc<std::io::Error>);

impl LinkFailure {
    pub(crate) fn to_io(&self) -> std::io::Error {
        std::io::Error::new(self.0.kind(), self.clone())
    }
}

impl std::fmt::Display for LinkFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for LinkFailure {}

/// The TLS error behind an I/O error (a handshake failure, an alert from the peer), also
/// through a [`StreamLink`](crate::transport::StreamLink) that passed it on.
#[cfg(feature = "tls")]
fn tls_cause(err: &std::io::Error) -> Option<&rustls::Error> {
    let inner = err.get_ref()?;
    if let Some(tls) = inner.downcast_ref::<rustls::Error>() {
        return Some(tls);
    }
    tls_cause(&inner.downcast_ref::<LinkFailure>()?.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_map_to_what_they_mean() {
        use std::io::{Error as Io, ErrorKind};
        let refused = Error::from(Io::from(ErrorKind::ConnectionRefused));
        assert!(matches!(&refused, Error::Unavailable { message, .. } if message.starts_with("connection refused")));
        let reset = Error::from(Io::from(ErrorKind::ConnectionReset));
        assert!(matches!(&reset, Error::Unavailable { message, .. } if message.starts_with("connection reset")));
        assert_eq!(Error::from(Io::from(ErrorKind::TimedOut)), Error::Timeout);
        let in_use = Error::from(Io::from(ErrorKind::AddrInUse));
        assert!(matches!(in_use, Error::Internal { .. }), "a bind failure is ours, not the peer's");
        let ctx = refused.context("connect");
        assert!(ctx.to_string().starts_with("unavailable: connect: connection refused"), "{ctx}");
    }

    #[test]
    fn the_error_underneath_stays_local() {
        use std::error::Error as _;
        let io = std::io::Error::new(std::io::ErrorKind::AddrInUse, "address in use");
        let err = Error::from(io).context("bind");
        let source = err.source().expect("the I/O error is kept");
        assert_eq!(source.downcast_ref::<std::io::Error>().map(|e| e.kind()), Some(std::io::ErrorKind::AddrInUse));
        // The wire form is the code and the message, as before; what comes back equals it.
        let wire = serde_json::to_value(&err).unwrap();
        assert_eq!(wire, serde_json::json!({ "code": "internal", "message": "bind: I/O: address in use" }));
        let back: Error = serde_json::from_value(wire).unwrap();
        assert!(back.source().is_none());
        assert_eq!(back, err);
        assert_ne!(Error::internal("x"), Error::unavailable("x"));
        let kinds = [
            Error::bad_request("x"),
            Error::UnknownMethod { service: "s".into(), method: "m".into() },
            Error::Timeout,
            Error::TooLarge { size: 2, limit: 1 },
            Error::tls("x").with_source(std::fmt::Error),
            Error::Application { detail: "{}".into() },
        ];
        for kind in kinds {
            assert_eq!(kind, serde_json::from_value::<Error>(serde_json::to_value(&kind).unwrap()).unwrap());
        }
    }
}
