//! Spans of the calls a node serves, for an exporter: each has the call's 128-bit trace
//! id, its own span id and its parent's (the caller's span), so spans of one request on
//! every node join into one trace. With feature `otlp` and an exporter in the process's
//! `Telemetry` (`OTEL_EXPORTER_OTLP_ENDPOINT` for the binaries), they are sent to an
//! OpenTelemetry collector (docs/observability.md); otherwise recording one costs a check
//! of a flag.

#[cfg(feature = "otlp")]
mod otlp;
mod span;

use std::time::SystemTime;

#[cfg(feature = "otlp")]
pub(crate) use otlp::DROPPED;
pub(crate) use span::{Sink, SpanRecord};

/// The exporter of the process's telemetry, started on first use.
fn sink() -> Option<&'static Sink> {
    #[cfg(feature = "otlp")]
    {
        static SINK: std::sync::OnceLock<Option<Sink>> = std::sync::OnceLock::new();
        let export = crate::telemetry::current().otlp.as_ref()?;
        SINK.get_or_init(|| otlp::start(export)).as_ref()
    }
    #[cfg(not(feature = "otlp"))]
    None
}

/// Whether spans are exported (the caller then builds them).
fn exporting() -> bool {
    sink().is_some()
}

/// Exports a span (nothing without an exporter).
fn record(span: SpanRecord) {
    if let Some(sink) = sink() {
        sink(span);
    }
}

/// A span under way: what is known when its call starts (only built while exporting).
pub(crate) struct Started {
    service: String,
    method: String,
    peer: String,
    start: SystemTime,
}

/// Starts a span of `service.method` from `peer`, if spans are exported.
pub(crate) fn start(service: &str, method: &str, peer: impl FnOnce() -> String) -> Option<Started> {
    exporting().then(|| Started {
        service: service.to_owned(),
        method: method.to_owned(),
        peer: peer(),
        start: crate::clock::wall(),
    })
}

impl Started {
    /// Ends it with `code` and exports it; `http` names it as an HTTP hop.
    pub(crate) fn end(self, trace_id: u128, span_id: u64, parent: u64, http: bool, code: &'static str) {
        let name = if http {
            format!("HTTP POST /{}/{}", self.service, self.method)
        } else {
            format!("{}/{}", self.service, self.method)
        };
        self.end_named(name, trace_id, span_id, parent, code);
    }

    /// As [`end`](Self::end), named `name` (a custom HTTP route: `HTTP GET /greeter/greet/{name}`).
    #[cfg_attr(not(feature = "gateway"), allow(dead_code))]
    pub(crate) fn end_named(self, name: String, trace_id: u128, span_id: u64, parent: u64, code: &'static str) {
        record(SpanRecord {
            trace_id,
            span_id,
            parent,
            name,
            service: self.service,
            method: self.method,
            peer: self.peer,
            start: self.start,
            end: crate::clock::wall(),
            code,
        });
    }
}

/// An HTTP status as a span's code: `ok` below 400, else what it says.
#[cfg_attr(not(feature = "gateway"), allow(dead_code))]
pub(crate) fn http_code(status: u16) -> &'static str {
    match status {
        ..=399 => "ok",
        401 | 403 => "permission_denied",
        404 => "not_found",
        408 | 504 => "timeout",
        429 | 503 => "unavailable",
        400..=499 => "bad_request",
        _ => "internal",
    }
}
