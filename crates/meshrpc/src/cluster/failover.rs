//! Whether a failed call may go to another replica: one pure function, decided from the
//! error and how far the call got.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::Error;

/// The bug the simulation must catch (`sim/`'s own test): set, a call of any method is
/// retried when its connection broke after it was sent — it may have run already.
static BROKEN: AtomicBool = AtomicBool::new(false);

/// Breaks (or mends) failover on purpose, for the process: with `on`, calls that are not
/// idempotent are retried after they reached a replica. Only for checking that a
/// simulation catches it; never in a node.
#[allow(unreachable_pub)] // re-exported as `meshrpc::simulation::retry_calls_that_reached_a_replica`
pub fn retry_calls_that_reached_a_replica(on: bool) {
    BROKEN.store(on, Ordering::Relaxed);
}

/// How far a call got before it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reached {
    /// It never left this node (connecting failed, or the connection refused to send it).
    NotSent,
    /// It was sent: the replica may have run it.
    Sent,
    /// It was sent, and its attempt timeout passed (before the call's deadline).
    TimedOut,
}

/// True when another replica may take a failed call: it provably never ran a handler,
/// or its method is idempotent and the failure is one another replica may not share.
pub(crate) fn may_retry(error: &Error, reached: Reached, idempotent: bool) -> bool {
    match reached {
        // Nothing left this node: a broken or refusing peer is worth avoiding, but a call
        // that is itself wrong (too large, past its deadline) fails the same anywhere.
        Reached::NotSent => {
            matches!(
                error,
                Error::Unavailable { .. } | Error::Overloaded { .. } | Error::Protocol { .. } | Error::Tls { .. }
            )
        }
        // The replica refused it before its handler ran; or it may have run, which does
        // no harm to an idempotent method, and the replica is at fault.
        Reached::Sent => {
            matches!(error, Error::Overloaded { .. })
                || (idempotent && matches!(error, Error::Unavailable { .. } | Error::Internal { .. }))
                || (BROKEN.load(Ordering::Relaxed) && matches!(error, Error::Unavailable { .. }))
        }
        Reached::TimedOut => idempotent,
    }
}

/// What a call's outcome says about the replica that answered it, for outlier ejection:
/// `Some(true)` it answered (an application error is an answer), `Some(false)` it failed,
/// `None` nothing (it refused under load, or the caller gave up).
pub(crate) fn judged(outcome: Result<(), &Error>) -> Option<bool> {
    match outcome {
        Ok(()) => Some(true),
        Err(Error::Internal { .. } | Error::Unavailable { .. } | Error::Timeout | Error::Protocol { .. }) => {
            Some(false)
        }
        Err(Error::Overloaded { .. } | Error::Cancelled) => None,
        Err(_) => Some(true),
    }
}

/// A call is sent to at most this many replicas (and tried on at most twice as many).
pub(super) const MAX_ATTEMPTS: usize = 3;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_table() {
        let unavailable = Error::unavailable("refused");
        let overloaded = Error::Overloaded { message: "busy".into() };
        let protocol = Error::protocol("no common version");
        let too_large = Error::TooLarge { size: 2, limit: 1 };
        let internal = Error::internal("panic");
        let app = Error::Application { detail: "{}".into() };
        let table = [
            (&unavailable, Reached::NotSent, false, true),
            (&overloaded, Reached::NotSent, false, true),
            (&protocol, Reached::NotSent, false, true),
            (&Error::tls("expired"), Reached::NotSent, false, true),
            (&too_large, Reached::NotSent, true, false),
            (&Error::Timeout, Reached::NotSent, true, false),
            (&Error::bad_request("name too long"), Reached::NotSent, true, false),
            (&overloaded, Reached::Sent, false, true),
            (&unavailable, Reached::Sent, false, false), // the connection broke mid-call: it may have run
            (&unavailable, Reached::Sent, true, true),   // ... which an idempotent method allows
            (&internal, Reached::Sent, false, false),
            (&internal, Reached::Sent, true, true),
            (&Error::Timeout, Reached::Sent, true, false), // the call's own deadline passed
            (&Error::Timeout, Reached::TimedOut, true, true),
            (&Error::Timeout, Reached::TimedOut, false, false),
            (&app, Reached::Sent, true, false),
            (&Error::Cancelled, Reached::Sent, true, false),
            (&Error::UnknownMethod { service: "s".into(), method: "m".into() }, Reached::Sent, true, false),
            (&Error::bad_request("bad"), Reached::Sent, true, false),
        ];
        for (error, reached, idempotent, expected) in table {
            assert_eq!(
                may_retry(error, reached, idempotent),
                expected,
                "{error:?} {reached:?} idempotent {idempotent}"
            );
        }
    }

    #[test]
    fn what_an_outcome_says_about_the_replica() {
        assert_eq!(judged(Ok(())), Some(true));
        assert_eq!(judged(Err(&Error::Application { detail: "{}".into() })), Some(true));
        assert_eq!(judged(Err(&Error::bad_request("x"))), Some(true));
        assert_eq!(judged(Err(&Error::internal("panic"))), Some(false));
        assert_eq!(judged(Err(&Error::unavailable("reset"))), Some(false));
        assert_eq!(judged(Err(&Error::Timeout)), Some(false));
        assert_eq!(judged(Err(&Error::Overloaded { message: "busy".into() })), None);
        assert_eq!(judged(Err(&Error::Cancelled)), None);
    }
}
