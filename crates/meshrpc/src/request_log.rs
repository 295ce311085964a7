//! One log line per call, like the seed's GIN request log (target `meshrpc::request`).

use std::time::Instant;

use crate::{call::Reply, error::Error};

/// A call being logged. Built only when the `meshrpc::request` target logs at info, so a
/// quiet node copies no names per call.
pub(crate) struct RequestLog {
    service: String,
    method: String,
    caller: String,
    start: Instant,
}

impl RequestLog {
    pub(crate) fn begin(service: &str, method: &str, caller: &str, start: Instant) -> Option<RequestLog> {
        tracing::enabled!(target: "meshrpc::request", tracing::Level::INFO).then(|| RequestLog {
            service: service.to_owned(),
            method: method.to_owned(),
            caller: caller.to_owned(),
            start,
        })
    }

    /// Logs the call when it ends: with its result, or as `cancelled` if it is dropped
    /// first (the caller cancelled it, or its connection closed).
    pub(crate) fn until_done(log: Option<RequestLog>) -> Running {
        Running(log)
    }

    pub(crate) fn end(log: Option<RequestLog>, result: &Result<Reply, Error>) {
        let Some(log) = log else { return };
        let status = match result {
            Ok(Reply::Ok(_)) => "ok",
            Ok(Reply::AppError(_)) => "application",
            Err(e) => e.code(),
        };
        tracing::info!(
            target: "meshrpc::request",
            caller = %log.caller, service = log.service, method = log.method, status,
            micros = log.start.elapsed().as_micros() as u64,
            "call"
        );
    }
}

/// A call that is logged when it ends (see [`RequestLog::until_done`]).
pub(crate) struct Running(Option<RequestLog>);

impl Running {
    pub(crate) fn end(mut self, result: &Result<Reply, Error>) {
        RequestLog::end(self.0.take(), result);
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        RequestLog::end(self.0.take(), &Err(Error::Cancelled));
    }
}
