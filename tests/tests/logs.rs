//! What a node logs about the calls it serves (decisions.md, issue 21): a summary per
//! method every interval by default, a line per call only when asked.

use std::time::Duration;

use meshrpc::call::{Call, Reply};
use meshrpc_tests::harness::Node;

const LABNODE: &str = env!("CARGO_BIN_EXE_labnode");

async fn calls(node: &Node, n: usize) {
    let conn = meshrpc::connect(node.addr).await.unwrap();
    for _ in 0..n {
        let pending = conn.send_call(Call::new("lab", "whoami", bytes::Bytes::from_static(b"{}"))).unwrap();
        assert!(matches!(pending.answer().await.unwrap(), Reply::Ok(_)));
    }
}

fn count(node: &Node, text: &str) -> usize {
    node.output().iter().filter(|l| l.contains(text)).count()
}

#[tokio::test]
async fn by_default_a_summary_per_interval_and_no_line_per_call() {
    let env = [("RUST_LOG", "info"), ("MESHRPC_LOG_SUMMARY_MS", "300")];
    let node = Node::start_logged_env(LABNODE, &["--tag", "logs1"], &env).await;
    calls(&node, 200).await;
    let line = node.logged("meshrpc::summary", Duration::from_secs(5)).await.expect("a summary line");
    for field in ["service=\"lab\"", "method=\"whoami\"", "calls=200", "errors=0", "p99_us="] {
        assert!(line.contains(field), "{line}");
    }
    assert_eq!(count(&node, "meshrpc::request"), 0, "per-call lines are off by default");
}

#[tokio::test]
async fn request_lines_on_or_sampled_when_asked() {
    let env = [("RUST_LOG", "info"), ("MESHRPC_REQUEST_LOG", "sample:10")];
    let sampled = Node::start_logged_env(LABNODE, &["--tag", "logs2"], &env).await;
    calls(&sampled, 200).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let n = count(&sampled, "meshrpc::request");
    assert!((19..=21).contains(&n), "sample:10 of 200 calls gave {n} lines");
    let env = [("RUST_LOG", "info"), ("MESHRPC_REQUEST_LOG", "on")];
    let every = Node::start_logged_env(LABNODE, &["--tag", "logs3"], &env).await;
    calls(&every, 50).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(count(&every, "meshrpc::request"), 50);
}
