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
    // (Attempts before lab joined were hops of the trace too: the answered one is ours.)
    let spans = eventually(Duration::from_secs(10), || async {
        let spans = spans_of(&got.lock().unwrap(), trace);
        let has = |name: &str| spans.iter().any(|(_, _, n)| n == name);
        (has("lab/relay_deadline") && has("lab/deadline_left")).then_some(spans)
    })
    .await
    .expect("the spans of the trace exported");
    let find =
        |name: &str| spans.iter().find(|(_, _, n)| n == name).cloned().unwrap_or_else(|| panic!("{name}: {spans:?}"));
    let hop = spans.iter().find(|(id, _, _)| id == parts[2]).cloned().expect("the answered hop's span");
    assert_eq!(hop.2, "HTTP POST /lab/relay_deadline");
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

/// A collector that takes connections and never answers: the exporter's queue (4096
/// spans) fills, spans past it are dropped and counted, and calls go on unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_collector_costs_dropped_spans_not_calls() {
    use meshrpc_tests::lab::{Lab, LabClient};
    const CALLS: u64 = 8000;
    // Never accepted: connections wait in its backlog, requests are never answered.
    let collector = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", collector.local_addr().unwrap());
    let node = Node::start_env(LABNODE, &["--tag", "otlp-stall"], &[("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)]).await;
    let lab = LabClient::new(meshrpc::connect(node.addr).await.unwrap());
    let started = std::time::Instant::now();
    for _ in 0..CALLS {
        assert_eq!(lab.whoami().await.unwrap(), "lab");
    }
    // Spans that left the queue: one batch of 512 at once, then one per export timeout (5 s).
    let taken = 512 * (2 + started.elapsed().as_secs() / 5);
    let metrics = http("GET", &node.url("/metrics"), "", &[]).await.body;
    let dropped: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("meshrpc_spans_dropped_total ")?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no meshrpc_spans_dropped_total in {metrics}"));
    assert!(dropped >= CALLS - 4096 - taken && dropped <= CALLS, "{dropped} of {CALLS} spans dropped");
    drop(collector);
}

/// The README's custom gateway (`mesh-api`): its own routes (`GET /greeter/greet/{name}`)
/// sit behind `gateway.observe(...)` beside the generic ones, and carry the caller's trace
/// as those do: the answer names it, the greeter's request line has it, and the exported
/// spans chain caller → the route's hop → the greeter's call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_gateway_routes_carry_the_trace() {
    let tag = "tracing-custom";
    let (endpoint, got) = otlp_receiver().await;
    let env = [("RUST_LOG", "info"), ("MESHRPC_REQUEST_LOG", "on"), ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str())];
    let api = Node::start_logged_env(
        MESHRPC,
        &["example", "mesh-api", "--http-host", "127.0.0.1", "--http-port", "0", "--listen-addr", "127.0.0.1:0"],
        &[env.as_slice(), &[("MESHRPC_CLUSTER_TAGNAME", tag)]].concat(),
    )
    .await;
    let mesh = api.line("mesh on ", Duration::from_secs(10)).await.expect("mesh address");
    let greeter = Node::start_logged_env(
        MESHRPC,
        &["example", "greeter", "--listen-addr", "127.0.0.1:0", "--tag", tag, "--nodes", mesh.trim()],
        &env,
    )
    .await;
    let incoming = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let url = api.url("/greeter/greet/Max");
    let answer = eventually(Duration::from_secs(15), || async {
        let answer = http("GET", &url, "", &[("traceparent", incoming)]).await;
        (answer.status == 200).then_some(answer)
    })
    .await
    .expect("mesh-api reached the greeter");
    assert_eq!(answer.body, r#""Hello, Max""#);
    let traceparent = answer.headers.get("traceparent").expect("the answer names the trace").to_str().unwrap();
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!((parts[0], parts[1], parts[3]), ("00", "0af7651916cd43dd8448eb211c80319c", "01"), "{traceparent}");
    assert_ne!(parts[2], "b7ad6b7169203331", "the route's span is its own");
    let trace = parts[1];
    // Both request lines: the gateway's and the greeter's.
    for (who, node) in [("mesh-api", &api), ("greeter", &greeter)] {
        let line = node.logged(trace, Duration::from_secs(10)).await;
        assert!(line.is_some(), "{who} logged no line with trace {trace}: {:?}", node.output());
    }
    // (Attempts before the greeter joined were hops of the trace too: the answered one is ours.)
    let spans = eventually(Duration::from_secs(10), || async {
        let spans = spans_of(&got.lock().unwrap(), trace);
        spans.iter().any(|(_, _, n)| n == "greeter/greet").then_some(spans)
    })
    .await
    .expect("the greeter's span exported");
    let hop = spans.iter().find(|(id, _, _)| id == parts[2]).cloned().expect("the answered hop's span");
    assert_eq!((hop.1.as_str(), hop.2.as_str()), ("b7ad6b7169203331", "HTTP GET /greeter/greet/{name}"));
    let call = spans.iter().find(|(_, _, n)| n == "greeter/greet").unwrap();
    assert_eq!(call.1, hop.0, "the greeter's call is a child of the route's hop");

    // Every route behind `observe` answers with a trace context: the other custom route,
    // the generic ones, and a request nothing answers.
    for (method, path, status) in [
        ("POST", "/greeter/sendPostcard/Max/World/Hello", 200),
        ("POST", "/greeter/greet", 200),
        ("GET", "/healthz", 200),
        ("GET", "/nothing/here", 404),
    ] {
        let body = if path == "/greeter/greet" { r#"{"name":"Ada"}"# } else { "" };
        let answer = http(method, &api.url(path), body, &[("traceparent", incoming)]).await;
        assert_eq!(answer.status, status, "{path}: {}", answer.body);
        let traceparent = answer.headers.get("traceparent").map(|v| v.to_str().unwrap().to_owned());
        assert!(traceparent.as_deref().is_some_and(|t| t.contains(trace)), "{path}: {traceparent:?}");
    }
}
