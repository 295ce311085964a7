//! Issue 14: one trace across hops. A request through the gateway to service A, which
//! calls service B, carries one W3C trace id: in the request logs of all three, in the
//! `traceparent` of the answer, and in the spans each node exports over OTLP to a
//! receiver this test runs.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use meshrpc_tests::harness::{eventually, http, Node};

const LABNODE: &str = env!("CARGO_BIN_EXE_labnode");
const MESHRPC: &str = env!("CARGO_BIN_EXE_meshrpc-cli");

/// An OTLP/HTTP receiver: every JSON body POSTed to `/v1/traces`.
async fn otlp_receiver() -> (String, Arc<Mutex<Vec<serde_json::Value>>>) {
    let got: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
    let store = got.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| {
            let store = store.clone();
            async move {
                store.lock().unwrap().push(serde_json::from_slice(&body).expect("OTLP JSON"));
                "{}"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), got)
}

/// `(span id, parent span id, name)` of every span of `trace`, as exported.
fn spans_of(got: &[serde_json::Value], trace: &str) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for body in got {
        for rs in body["resourceSpans"].as_array().into_iter().flatten() {
            for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                for span in ss["spans"].as_array().into_iter().flatten() {
                    if span["traceId"] == trace {
                        out.push((
                            span["spanId"].as_str().unwrap_or_default().to_owned(),
                            span["parentSpanId"].as_str().unwrap_or_default().to_owned(),
                            span["name"].as_str().unwrap_or_default().to_owned(),
                        ));
                    }
                }
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_across_gateway_and_two_services() {
    let tag = "tracing";
    let (endpoint, got) = otlp_receiver().await;
    let env = [("RUST_LOG", "info"), ("MESHRPC_REQUEST_LOG", "on"), ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str())];
    let gateway = Node::start_logged_env(
        MESHRPC,
        &["gateway", "--listen", "127.0.0.1:0", "--listen-addr", "127.0.0.1:0", "--tag", tag],
        &env,
    )
    .await;
    let mesh = gateway.line("mesh on ", Duration::from_secs(10)).await.expect("mesh address");
    let mesh = mesh.trim_start_matches("mesh on ").to_owned();
    let a = Node::start_logged_env(LABNODE, &["--tag", tag, "--name", "a", "--nodes", &mesh], &env).await;
    let b = Node::start_logged_env(LABNODE, &["--tag", tag, "--name", "b"], &env).await;
    let relay = gateway.url("/lab/relay_deadline");
    let body = format!(r#"{{"addr":"{}"}}"#, b.addr);
    let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let answer = eventually(Duration::from_secs(15), || async {
        let answer = http("POST", &relay, body.clone(), &[("traceparent", incoming)]).await;
        (answer.status == 200).then_some(answer)
    })
    .await
    .expect("the gateway reached lab on a");
    // The answer names the caller's trace, and the gateway's own span.
    let traceparent = answer.headers["traceparent"].to_str().unwrap().to_owned();
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!((parts[0], parts[1], parts[3]), ("00", "4bf92f3577b34da6a3ce929d0e0e4736", "01"), "{traceparent}");
    assert_ne!(parts[2], "00f067aa0ba902b7", "the gateway's span is its own");
    let trace = parts[1];

    // The same trace id in the request logs of all three.
    for (who, node) in [("gateway", &gateway), ("a", &a), ("b", &b)] {
        let line = node.logged(trace, Duration::from_secs(10)).await;
        assert!(line.is_some(), "{who} logged no line with trace {trace}: {:?}", node.output());
    }
    // Spans: the gateway's HTTP hop (child of the caller's span), a's call (child of the
    // gateway's hop), b's call (child of a's).
    let spans = eventually(Duration::from_secs(10), || async {
        let spans = spans_of(&got.lock().unwrap(), trace);
        (spans.len() >= 3).then_some(spans)
    })
    .await
    .expect("three spans of the trace exported");
    let find =
        |name: &str| spans.iter().find(|(_, _, n)| n == name).cloned().unwrap_or_else(|| panic!("{name}: {spans:?}"));
    let hop = find("HTTP POST /lab/relay_deadline");
    let at_a = find("lab/relay_deadline");
    let at_b = find("lab/deadline_left");
    assert_eq!(hop.1, "00f067aa0ba902b7", "the gateway's hop continues the caller's span");
    assert_eq!(hop.0, parts[2]);
    assert_eq!(at_a.1, hop.0, "a's span is a child of the gateway's");
    assert_eq!(at_b.1, at_a.0, "b's span is a child of a's");

    // A malformed traceparent is ignored: the call succeeds in a new trace.
    let answer = http("POST", &relay, body.clone(), &[("traceparent", "00-nonsense-01")]).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let fresh = answer.headers["traceparent"].to_str().unwrap().to_owned();
    assert!(fresh.len() == 55 && !fresh.contains(trace), "{fresh}");
}
