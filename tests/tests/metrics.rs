//! Issue 36: the golden metrics as users and other tools read them. Every port that shows
//! metrics (a node's port, its admin port, the gateway) answers the Prometheus text format
//! 0.0.4 unless `Accept` asks for OpenMetrics: `promtool check metrics` finds nothing to
//! say, Python's parser (PyPI prometheus-client) types every family, and its OpenMetrics
//! parser reads the other format. Calls of methods that do not exist, and callers naming
//! themselves anew, take no series from real methods.

use std::{collections::HashMap, time::Duration};

use meshrpc::{
    call::{Call, Dispatch},
    transport::{ConnectOptions, Connection},
};
use meshrpc_tests::{
    harness::{eventually, generic_gateway, http, python, read_lines, tool, Lines, Node},
    lab::{Lab, LabClient},
};
use tokio::io::AsyncWriteExt;

const LABNODE: &str = env!("CARGO_BIN_EXE_labnode");
const MESHRPC: &str = env!("CARGO_BIN_EXE_meshrpc-cli");

/// What Prometheus sends.
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
/// What a browser sends.
const BROWSER_ACCEPT: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";

/// Runs `program` under `python` with `input` on stdin: (success, stdout and stderr).
async fn run(command: &str, args: &[&str], input: &str) -> (bool, String) {
    let mut child = tokio::process::Command::new(command)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{command}: {e}"));
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).await.unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// Families Python's Prometheus text parser leaves untyped, one a line; then `families N`.
const UNTYPED: &str = r#"
import sys
from prometheus_client.parser import text_string_to_metric_families
families = list(text_string_to_metric_families(sys.stdin.read()))
for f in families:
    if f.type in ("unknown", "untyped"):
        print("untyped", f.name)
print("families", len(families))
"#;

/// Reads OpenMetrics with Python's parser (which insists on `# EOF` and OpenMetrics names).
const OPENMETRICS: &str = r#"
import sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
families = list(text_string_to_metric_families(sys.stdin.read()))
print("families", len(families), sorted(f.name for f in families if f.type == "counter")[:3])
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metrics_port_passes_promtool_and_python_in_both_formats() {
    if !tool("promtool") {
        return;
    }
    let Some(python) = python(&["prometheus_client"]) else { return };
    let tag = "metrics-formats";
    let (gateway, mesh) = generic_gateway(MESHRPC, tag).await;
    let lab = Node::start(
        LABNODE,
        &["--tag", tag, "--name", "lab", "--nodes", &mesh, "--admin-addr", "127.0.0.1:0", "--fail-percent", "10"],
    )
    .await;
    let admin = lab.line("admin on ", Duration::from_secs(10)).await.expect("admin address");
    // Calls of every kind, so that each family has samples: answers, errors, a histogram.
    let greet = gateway.url("/greeter/greet");
    let up = eventually(Duration::from_secs(15), || async {
        (http("POST", &greet, r#"{"name":"Ada"}"#, &[]).await.status == 200).then_some(())
    })
    .await;
    assert!(up.is_some(), "the gateway never reached the lab node");
    for i in 0..20 {
        http("POST", &gateway.url("/faulty/read"), format!(r#"{{"key":{i}}}"#), &[]).await;
        http("POST", &gateway.url("/lab/refuse"), r#"{"reason":"no"}"#, &[]).await;
    }
    let urls = [
        ("node", lab.url("/metrics")),
        ("admin port", format!("http://{}/metrics", admin.trim())),
        ("gateway", gateway.url("/metrics")),
    ];
    for (what, url) in &urls {
        // No `Accept`, and a browser's: the text format, which a browser shows.
        for accept in [None, Some(BROWSER_ACCEPT)] {
            let headers: Vec<(&str, &str)> = accept.map(|a| ("accept", a)).into_iter().collect();
            let answer = http("GET", url, "", &headers).await;
            assert_eq!(answer.status, 200);
            let content_type = answer.headers["content-type"].to_str().unwrap();
            assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8", "{what} ({accept:?})");
            assert!(answer.body.contains("meshrpc_calls_total{"), "{what}: {}", answer.body);
            let (clean, said) = run("promtool", &["check", "metrics"], &answer.body).await;
            assert!(clean && said.trim().is_empty(), "promtool on the {what}'s /metrics:\n{said}");
            let (parsed, said) = run(&python, &["-c", UNTYPED], &answer.body).await;
            assert!(parsed && !said.contains("untyped"), "Python on the {what}'s /metrics:\n{said}");
            println!("{what}: promtool clean, Python: {}", said.trim());
        }
        // Prometheus itself asks for OpenMetrics, and gets it.
        let answer = http("GET", url, "", &[("accept", PROMETHEUS_ACCEPT)]).await;
        let content_type = answer.headers["content-type"].to_str().unwrap();
        assert_eq!(content_type, "application/openmetrics-text; version=1.0.0; charset=utf-8", "{what}");
        assert!(answer.body.ends_with("# EOF\n"), "{what}");
        let (parsed, said) = run(&python, &["-c", OPENMETRICS], &answer.body).await;
        assert!(parsed, "Python's OpenMetrics parser on the {what}'s /metrics:\n{said}");
        println!("{what} (OpenMetrics): {}", said.trim());
    }
}

/// The samples of `metric` in a Prometheus text answer whose labels include `labels`:
/// `(their labels, value)`. A histogram's value is its count up to the bound that the label
/// `le` names (all of it without one).
fn samples(text: &str, metric: &str, labels: &[(&str, &str)]) -> Vec<(HashMap<String, String>, f64)> {
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("Prometheus text");
    let le = labels.iter().find(|(k, _)| *k == "le").map(|(_, v)| v.parse::<f64>().unwrap());
    scrape
        .samples
        .into_iter()
        .filter(|s| s.metric == metric && labels.iter().all(|(k, v)| *k == "le" || s.labels.get(k) == Some(*v)))
        .map(|s| {
            let value = match s.value {
                prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v) => v,
                prometheus_parse::Value::Histogram(buckets) => {
                    let upto = buckets.iter().filter(|b| le.is_none_or(|le| b.less_than <= le));
                    upto.map(|b| b.count).fold(0.0, f64::max)
                }
                other => panic!("{metric}: {other:?}"),
            };
            (s.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(), value)
        })
        .collect()
}

/// The sum of those samples.
fn sum(text: &str, metric: &str, labels: &[(&str, &str)]) -> f64 {
    samples(text, metric, labels).iter().map(|(_, v)| v).sum()
}

/// Calls of `service.method` that ended with `code`, by peer.
fn calls(text: &str, service: &str, method: &str, code: &str) -> std::collections::BTreeMap<String, f64> {
    let labels = [("direction", "inbound"), ("service", service), ("method", method), ("code", code)];
    samples(text, "meshrpc_calls_total", &labels).into_iter().map(|(l, v)| (l["peer"].clone(), v)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_methods_and_self_named_callers_leave_real_methods_their_series() {
    const UNKNOWN: usize = 1_100; // past the 1,024 series a node keeps
    let lab = Node::start(LABNODE, &["--tag", "metrics-series", "--name", "series"]).await;
    // Methods that do not exist, over HTTP and over the mesh.
    let url = |i: usize| lab.url(&format!("/lab/m{i}"));
    for chunk in (0..UNKNOWN).collect::<Vec<_>>().chunks(50) {
        let mut answers = tokio::task::JoinSet::new();
        for i in chunk {
            let url = url(*i);
            answers.spawn(async move { http("POST", &url, "{}", &[]).await });
        }
        while let Some(answer) = answers.join_next().await {
            assert_eq!(answer.unwrap().status, 404);
        }
    }
    let conn = meshrpc::connect(lab.addr).await.unwrap();
    for i in 0..UNKNOWN {
        let answer = conn.dispatch(Call::new("nowhere", format!("m{i}"), "{}".into())).await;
        assert_eq!(answer.err().map(|e| e.code()), Some("unknown_service"));
    }
    // 100 callers naming themselves anew, on one real method.
    for i in 0..100 {
        let opts = ConnectOptions::default().caller(format!("caller{i}"));
        let lab = LabClient::new(Connection::connect(lab.addr, opts).await.unwrap());
        lab.nothing().await.unwrap();
    }
    // Real callers, after all that.
    assert_eq!(http("POST", &lab.url("/lab/whoami"), "{}", &[]).await.status, 200);
    let named = |name: &str| Connection::connect(lab.addr, ConnectOptions::default().caller(name.to_owned()));
    LabClient::new(named("mesh-api").await.unwrap()).nothing().await.unwrap();
    let api = LabClient::new(named("mesh-api").await.unwrap());
    api.deadline_left().await.unwrap();

    let text = http("GET", &lab.url("/metrics"), "", &[]).await.body;
    // A real method called for the first time has its own series, with its caller's name.
    assert_eq!(calls(&text, "lab", "whoami", "ok"), [("http".to_owned(), 1.0)].into(), "{text}");
    assert_eq!(calls(&text, "lab", "deadline_left", "ok"), [("mesh-api".to_owned(), 1.0)].into());
    // The self-named callers took 32 names of that one method; the rest, and the real
    // caller after them, count under its `other`: every call is there.
    let nothing = calls(&text, "lab", "nothing", "ok");
    assert_eq!(nothing.len(), 33, "{nothing:?}");
    assert_eq!((nothing["other"], nothing.values().sum::<f64>()), (69.0, 101.0), "{nothing:?}");
    // Methods that do not exist have no series: their calls are in one, labelled `other`.
    let series = samples(&text, "meshrpc_calls_total", &[]);
    let made_up = |m: &str| m.strip_prefix('m').is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()));
    assert!(!series.iter().any(|(l, _)| made_up(&l["method"])), "{text}");
    let unknown = calls(&text, "other", "other", "unknown_method")["other"];
    let nowhere = calls(&text, "other", "other", "unknown_service")["other"];
    assert_eq!((unknown, nowhere), (UNKNOWN as f64, UNKNOWN as f64));

    // A member of the cluster keeps its name on that method, whatever others named themselves.
    let member = meshrpc::Cluster::builder("member").tag("metrics-series").seeds([lab.addr.to_string()]).start();
    let member = member.await.unwrap();
    let kept = eventually(Duration::from_secs(15), || async {
        // A connection of its own each time: the node counts a connection's calls where the
        // first one went (before it saw the member join, under `other`).
        LabClient::new(named("member").await.ok()?).nothing().await.ok()?;
        let text = http("GET", &lab.url("/metrics"), "", &[]).await.body;
        calls(&text, "lab", "nothing", "ok").contains_key("member").then_some(())
    })
    .await;
    assert!(kept.is_some(), "{}", http("GET", &lab.url("/metrics"), "", &[]).await.body);
    member.shutdown().await;
}

/// The next line (a guard against a hang, not a measure).
async fn line(lines: &mut Lines) -> Option<String> {
    tokio::time::timeout(Duration::from_secs(20), lines.recv()).await.expect("a line within 20 s")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_is_one_call_in_flight_until_it_ends_and_counted_by_how_it_ended() {
    let tag = "metrics-streams";
    let (gateway, mesh) = generic_gateway(MESHRPC, tag).await;
    let mut lab = Node::start(LABNODE, &["--tag", tag, "--name", "ticker", "--nodes", &mesh]).await;
    let url = gateway.url("/streamer/ticks");
    let up = eventually(Duration::from_secs(15), || async {
        (http("POST", &gateway.url("/streamer/count"), r#"{"from":0,"to":2,"pad":0}"#, &[]).await.status == 200)
            .then_some(())
    })
    .await;
    assert!(up.is_some(), "the gateway never reached the streamer");
    let ticks = |direction: &'static str| [("direction", direction), ("service", "streamer"), ("method", "ticks")];
    let metrics = |node: &Node| {
        let url = node.url("/metrics");
        async move { http("GET", &url, "", &[]).await.body }
    };

    // A stream cut at its deadline: in flight while it runs, then `timeout`, not `ok`.
    let (_, mut lines) = read_lines("POST", &url, r#"{"every_ms":100}"#, &[("meshrpc-timeout-ms", "1500")]).await;
    assert!(line(&mut lines).await.is_some_and(|l| l.starts_with(r#"{"data":"#)));
    let (at_lab, at_gateway) = (metrics(&lab).await, metrics(&gateway).await);
    assert_eq!(sum(&at_lab, "meshrpc_calls_in_flight", &ticks("inbound")), 1.0, "{at_lab}");
    assert_eq!(sum(&at_gateway, "meshrpc_calls_in_flight", &ticks("outbound")), 1.0, "{at_gateway}");
    assert_eq!(sum(&at_gateway, "meshrpc_calls_in_flight", &ticks("inbound")), 1.0, "the gateway's HTTP side");
    let mut items = 1;
    let last = loop {
        let l = line(&mut lines).await.expect("the stream ends with an error line");
        if l.contains(r#""errors""#) {
            break l;
        }
        items += 1;
    };
    assert!(last.contains(r#""code":"timeout""#), "{last}");
    // The node counts the call as it finishes it, which may be just after its last line
    // left: read its metrics once the call is counted (or after 5 s, and fail below).
    let counted = |text: &str| {
        let mut labels = ticks("inbound").to_vec();
        labels.push(("code", "timeout"));
        sum(text, "meshrpc_calls_total", &labels) > 0.0
    };
    let mut at_lab = metrics(&lab).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !counted(&at_lab) && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        at_lab = metrics(&lab).await;
    }
    let ended = |code: &'static str| {
        let mut labels = ticks("inbound").to_vec();
        labels.push(("code", code));
        sum(&at_lab, "meshrpc_calls_total", &labels)
    };
    assert_eq!((ended("timeout"), ended("ok")), (1.0, 0.0), "{at_lab}");
    assert_eq!(sum(&at_lab, "meshrpc_calls_in_flight", &ticks("inbound")), 0.0);
    let sent = sum(&at_lab, "meshrpc_stream_items_total", &ticks("inbound"));
    assert!(sent >= items as f64, "{sent} items counted, {items} read");
    assert!(sum(&at_lab, "meshrpc_stream_bytes_total", &ticks("inbound")) >= sent);
    // Its duration runs to its end (its 1.5 s deadline), not to its first item.
    let mut within_a_second = ticks("inbound").to_vec();
    within_a_second.push(("le", "1"));
    assert_eq!(sum(&at_lab, "meshrpc_call_duration_seconds", &ticks("inbound")), 1.0);
    assert_eq!(sum(&at_lab, "meshrpc_call_duration_seconds", &within_a_second), 0.0, "{at_lab}");

    // A reader that hangs up: `cancelled`, and no longer in flight.
    let (reading, mut lines) = read_lines("POST", &url, r#"{"every_ms":100}"#, &[("meshrpc-timeout-ms", "0")]).await;
    line(&mut lines).await;
    reading.abort();
    let cancelled = eventually(Duration::from_secs(10), || async {
        let at_lab = metrics(&lab).await;
        let mut labels = ticks("inbound").to_vec();
        labels.push(("code", "cancelled"));
        (sum(&at_lab, "meshrpc_calls_total", &labels) == 1.0
            && sum(&at_lab, "meshrpc_calls_in_flight", &ticks("inbound")) == 0.0)
            .then_some(())
    })
    .await;
    assert!(cancelled.is_some(), "{}", metrics(&lab).await);

    // A replica killed mid-stream: the caller's side counts it `unavailable`.
    let (_, mut lines) = read_lines("POST", &url, r#"{"every_ms":100}"#, &[("meshrpc-timeout-ms", "0")]).await;
    line(&mut lines).await;
    lab.kill().await;
    let last = loop {
        let l = line(&mut lines).await.expect("the stream ends with an error line");
        if l.contains(r#""errors""#) {
            break l;
        }
    };
    assert!(last.contains(r#""code":"unavailable""#), "{last}");
    let at_gateway = metrics(&gateway).await;
    for direction in ["outbound", "inbound"] {
        let mut labels = ticks(direction).to_vec();
        labels.push(("code", "unavailable"));
        assert_eq!(sum(&at_gateway, "meshrpc_calls_total", &labels), 1.0, "{direction}: {at_gateway}");
        assert_eq!(sum(&at_gateway, "meshrpc_calls_in_flight", &ticks(direction)), 0.0, "{direction}");
    }
}
