//! `meshrpc demo` under load: the demo process relays its children's output, and keeps
//! none of it once they have started (it used to queue every line of the gateway's
//! request log in memory).

use std::time::Duration;

use meshrpc_tests::{
    harness::{free_port, http, terminate},
    hostile::status_kib,
};
use tokio::process::Command;

const MESHRPC: &str = env!("CARGO_BIN_EXE_meshrpc-cli");

#[tokio::test(flavor = "multi_thread")]
async fn the_demo_keeps_no_output_while_its_gateway_is_under_load() {
    if !meshrpc_tests::harness::tool("wrk") {
        return;
    }
    let (http_port, mesh_port) = (free_port(), free_port());
    let mut demo = Command::new(MESHRPC)
        .args(["demo", "--http-port", &http_port.to_string(), "--mesh-port", &mesh_port.to_string()])
        // A line per call from every node (off by default): the relay sees them all.
        .env("MESHRPC_REQUEST_LOG", "on")
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{http_port}/greeter/greet/Max");
    let ready = meshrpc_tests::harness::eventually(Duration::from_secs(60), || async {
        tokio::net::TcpStream::connect(("127.0.0.1", http_port)).await.ok()?;
        (http("GET", &url, "", &[]).await.status == 200).then_some(())
    })
    .await;
    assert!(ready.is_some(), "the demo answers");
    let pid = demo.id().unwrap();
    let before = status_kib(pid, "VmRSS");
    let out = Command::new("wrk").args(["-t2", "-c16", "-d8s", "--timeout", "5s", &url]).output().await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let requests: u64 = text
        .lines()
        .find_map(|l| l.trim().split_once(" requests in ").map(|(n, _)| n.trim().parse().unwrap()))
        .unwrap_or_else(|| panic!("{text}"));
    let after = status_kib(pid, "VmRSS");
    eprintln!("demo under {requests} requests: RSS {before} KiB before, {after} KiB after");
    assert!(requests > 5_000, "{text}");
    assert!(!text.contains("Non-2xx"), "{text}");
    // Each request prints a log line (~150 bytes) that the relay used to keep.
    assert!(after <= before + 2048, "the demo grew from {before} to {after} KiB over {requests} requests");
    terminate(&mut demo, Duration::from_secs(20)).await;
}
