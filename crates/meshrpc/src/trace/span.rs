//! What a finished span is, and where spans go: the exporter (`otlp.rs`) is one place.

use std::time::SystemTime;

/// One span: a call served (`server`) or an HTTP request passed on (`http`).
#[derive(Debug, Clone)]
#[cfg_attr(not(feature = "otlp"), allow(dead_code))] // read by the exporter
pub(crate) struct SpanRecord {
    pub(crate) trace_id: u128,
    pub(crate) span_id: u64,
    /// 0: a root span.
    pub(crate) parent: u64,
    /// `service/method`.
    pub(crate) name: String,
    pub(crate) service: String,
    pub(crate) method: String,
    /// The calling node's name (`http` over HTTP).
    pub(crate) peer: String,
    pub(crate) start: SystemTime,
    pub(crate) end: SystemTime,
    /// `ok`, `application` or the error code.
    pub(crate) code: &'static str,
}

/// Where spans go, if anywhere.
pub(crate) type Sink = Box<dyn Fn(SpanRecord) + Send + Sync>;
