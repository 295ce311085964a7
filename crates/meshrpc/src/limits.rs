//! Limits a node applies to HTTP callers (plain data; the `http` feature enforces them).

use std::time::Duration;

/// Limits applied to HTTP callers.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct HttpLimits {
    /// Largest accepted request body.
    pub max_body: usize,
    /// How long a client may take to send its body.
    pub body_timeout: Duration,
    /// Timeout of a call when the request names none.
    pub default_timeout: Duration,
    /// A client connection that sends nothing for this long is closed (60 s). A request
    /// being answered keeps it open only while it stays under this.
    pub idle_timeout: Duration,
    /// Bytes of answers (of a known size) waiting for HTTP callers to read them, across
    /// a port's connections (64 MiB): an answer that does not fit is replaced by `503
    /// overloaded`, and a connection whose answer the node can write no more of for
    /// `stuck_timeout` is closed.
    pub max_unread_answers: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            max_body: 4 * 1024 * 1024,
            body_timeout: Duration::from_secs(10),
            default_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_unread_answers: 64 * 1024 * 1024,
        }
    }
}
