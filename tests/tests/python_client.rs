//! Issue 17: a second-language client proves docs/wire.md. `clients/python/` speaks the
//! binary mesh protocol, written from the spec alone; its own tests run here against a
//! real node: calls, typed errors, deadlines, cancellation, limits, refusals, keepalive.

use meshrpc_tests::harness::{tool, Node};

const LABNODE: &str = env!("CARGO_BIN_EXE_labnode");

#[tokio::test(flavor = "multi_thread")]
async fn the_python_client_passes_its_tests_against_a_real_node() {
    if !tool("python3") {
        return;
    }
    // A short idle timeout, so the keepalive test means something.
    let node = Node::start(LABNODE, &["--tag", "python-client", "--name", "py", "--idle-ms", "1500"]).await;
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../clients/python");
    let out = tokio::process::Command::new("python3")
        .args(["-m", "unittest", "-v", "test_client"])
        .current_dir(dir)
        .env("MESHRPC_NODE", node.addr.to_string())
        .env("MESHRPC_IDLE_WAIT", "4")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .await
        .expect("running python3");
    let report = String::from_utf8_lossy(&out.stderr);
    println!("{report}");
    assert!(out.status.success(), "the Python client's tests failed:\n{report}");
    assert!(report.contains("Ran 11 tests"), "{report}");
}
