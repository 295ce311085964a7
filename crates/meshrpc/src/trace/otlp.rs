//! An OTLP/HTTP exporter of call spans (feature `otlp`), JSON encoded as the
//! OpenTelemetry protocol specifies: posted to the process's `OtlpExport::traces_endpoint`
//! (`Telemetry::from_env` reads `OTEL_EXPORTER_OTLP_ENDPOINT` and the others), in batches
//! of at most 512 spans, at least every second. At most 4096 spans wait; past that they
//! are dropped and counted (`meshrpc_spans_dropped_total`), so a slow collector costs a
//! node nothing else.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, UNIX_EPOCH},
};

use bytes::Bytes;
use http_body_util::Full;
use tokio::sync::mpsc;

use crate::{
    telemetry::OtlpExport,
    trace::span::{Sink, SpanRecord},
};

/// Spans dropped because the exporter's queue was full.
pub(crate) static DROPPED: AtomicU64 = AtomicU64::new(0);

const QUEUE: usize = 4096;
const BATCH: usize = 512;
const EVERY: Duration = Duration::from_secs(1);

/// The exporter `export` asks for, started (inside a tokio runtime).
pub(crate) fn start(export: &OtlpExport) -> Option<Sink> {
    let endpoint = &export.traces_endpoint;
    let uri: hyper::Uri = match endpoint.parse() {
        Ok(uri) => uri,
        Err(e) => {
            tracing::warn!(%endpoint, error = %e, "OTLP endpoint is not a URL: spans are not exported");
            return None;
        }
    };
    let handle = tokio::runtime::Handle::try_current().ok()?;
    let (tx, rx) = mpsc::channel(QUEUE);
    handle.spawn(send_batches(uri, export.service_name.clone(), rx));
    tracing::info!(%endpoint, "exporting spans (OTLP/HTTP, JSON)");
    Some(Box::new(move |span| {
        if tx.try_send(span).is_err() {
            DROPPED.fetch_add(1, Ordering::Relaxed);
        }
    }))
}

async fn send_batches(uri: hyper::Uri, service: String, mut rx: mpsc::Receiver<SpanRecord>) {
    let client =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let deadline = tokio::time::sleep(EVERY);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                span = rx.recv() => match span {
                    Some(span) => {
                        batch.push(span);
                        if batch.len() >= BATCH {
                            break;
                        }
                    }
                    None => return,
                },
                () = &mut deadline => break,
            }
        }
        if batch.is_empty() {
            continue;
        }
        let body = encode(&service, &batch);
        batch.clear();
        let request = hyper::Request::post(uri.clone())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .expect("a valid request");
        match tokio::time::timeout(Duration::from_secs(5), client.request(request)).await {
            Ok(Ok(resp)) if resp.status().is_success() => {}
            Ok(Ok(resp)) => tracing::debug!(status = %resp.status(), "OTLP collector refused a batch"),
            Ok(Err(e)) => tracing::debug!(error = %e, "OTLP export failed"),
            Err(_) => tracing::debug!("OTLP export timed out"),
        }
    }
}

/// An `ExportTraceServiceRequest` in OTLP's JSON encoding.
fn encode(service: &str, spans: &[SpanRecord]) -> String {
    let nanos = |t: std::time::SystemTime| t.duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos().to_string();
    let spans: Vec<serde_json::Value> = spans
        .iter()
        .map(|s| {
            let mut span = serde_json::json!({
                "traceId": format!("{:032x}", s.trace_id),
                "spanId": format!("{:016x}", s.span_id),
                "name": s.name,
                "kind": 2, // SPAN_KIND_SERVER
                "startTimeUnixNano": nanos(s.start),
                "endTimeUnixNano": nanos(s.end),
                "attributes": [
                    { "key": "rpc.system", "value": { "stringValue": "meshrpc" } },
                    { "key": "rpc.service", "value": { "stringValue": s.service } },
                    { "key": "rpc.method", "value": { "stringValue": s.method } },
                    { "key": "meshrpc.peer", "value": { "stringValue": s.peer } },
                    { "key": "meshrpc.code", "value": { "stringValue": s.code } },
                ],
                // STATUS_CODE_ERROR for failures; an application error is an answer.
                "status": { "code": if s.code == "ok" || s.code == "application" { 1 } else { 2 } },
            });
            if s.parent != 0 {
                span["parentSpanId"] = format!("{:016x}", s.parent).into();
            }
            span
        })
        .collect();
    serde_json::json!({
        "resourceSpans": [{
            "resource": { "attributes": [{ "key": "service.name", "value": { "stringValue": service } }] },
            "scopeSpans": [{ "scope": { "name": "meshrpc", "version": env!("CARGO_PKG_VERSION") }, "spans": spans }],
        }]
    })
    .to_string()
}
