//! Whether a failed call may go to another replica: one pure function, decided from the
//! error and how far the call got.

use crate::error::Error;

/// How far a call got before it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reached {
    /// It never left this node (connecting failed, or the connection refused to send it).
    NotSent,
    /// It was sent: the replica may have run it.
    Sent,
}

/// True when the call provably never ran a handler and another replica may take it.
/// A call that may have run is never retried: methods need not be idempotent.
pub(crate) fn may_retry(error: &Error, reached: Reached) -> bool {
    match reached {
        // Nothing left this node: a broken or refusing peer is worth avoiding, but a call
        // that is itself wrong (too large, past its deadline) fails the same anywhere.
        Reached::NotSent => {
            matches!(
                error,
                Error::Unavailable { .. } | Error::Overloaded { .. } | Error::Protocol { .. } | Error::Tls { .. }
            )
        }
        // The replica refused it before its handler ran.
        Reached::Sent => matches!(error, Error::Overloaded { .. }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_table() {
        let unavailable = Error::unavailable("refused");
        let overloaded = Error::Overloaded { message: "busy".into() };
        let protocol = Error::protocol("no common version");
        let too_large = Error::TooLarge { size: 2, limit: 1 };
        let internal = Error::Internal { message: "panic".into() };
        let app = Error::Application { detail: "{}".into() };
        let table = [
            (&unavailable, Reached::NotSent, true),
            (&overloaded, Reached::NotSent, true),
            (&protocol, Reached::NotSent, true),
            (&Error::Tls { message: "expired".into() }, Reached::NotSent, true),
            (&too_large, Reached::NotSent, false),
            (&Error::Timeout, Reached::NotSent, false),
            (&Error::bad_request("name too long"), Reached::NotSent, false),
            (&overloaded, Reached::Sent, true),
            (&unavailable, Reached::Sent, false), // the connection broke mid-call: it may have run
            (&Error::Timeout, Reached::Sent, false),
            (&internal, Reached::Sent, false),
            (&app, Reached::Sent, false),
            (&Error::Cancelled, Reached::Sent, false),
            (&Error::UnknownMethod { service: "s".into(), method: "m".into() }, Reached::Sent, false),
        ];
        for (error, reached, expected) in table {
            assert_eq!(may_retry(error, reached), expected, "{error:?} {reached:?}");
        }
    }
}
