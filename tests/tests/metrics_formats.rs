//! Issue 36: `/metrics` as other tools read it. Every port that shows metrics (a node's
//! port, its admin port, the gateway) answers the Prometheus text format 0.0.4 unless
//! `Accept` asks for OpenMetrics: `promtool check metrics` finds nothing to say, Python's
//! parser (PyPI prometheus-client) types every family, and its OpenMetrics parser reads
//! the other format.

use std::time::Duration;

use meshrpc_tests::harness::{eventually, http, python, tool, Node};
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
    let gateway =
        Node::start(MESHRPC, &["gateway", "--listen", "127.0.0.1:0", "--listen-addr", "127.0.0.1:0", "--tag", tag])
            .await;
    let mesh = gateway.line("mesh on ", Duration::from_secs(10)).await.expect("mesh address");
    let lab = Node::start(
        LABNODE,
        &["--tag", tag, "--name", "lab", "--nodes", mesh.trim(), "--admin-addr", "127.0.0.1:0", "--fail-percent", "10"],
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
