//! Issue 36: HTTP callers that go quiet, read slowly or not at all, or send what a node
//! cannot take. Each test drives a real `labnode` over loopback the way the problem was
//! found, and asserts what the caller sees and what the node spends (counts, CPU time,
//! memory), never how long anything took.

use std::time::Duration;

use meshrpc_tests::{
    harness::{http, Node},
    hostile::cpu_ticks,
};
use tokio::{io::AsyncWriteExt, net::TcpStream};

const LABNODE: &str = env!("CARGO_BIN_EXE_labnode");

fn pid(node: &Node) -> u32 {
    node.child.id().expect("running")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_quiet_http1_request_costs_no_cpu_while_it_waits() {
    let node = Node::start(LABNODE, &[]).await;
    // A call that runs 3 s without a byte moving, beside a POST that sent 8 of its 100
    // body bytes and went quiet.
    let url = node.url("/lab/sleep");
    let call = tokio::spawn(async move { http("POST", &url, r#"{"millis":3000}"#, &[]).await });
    let mut partial = TcpStream::connect(node.addr).await.unwrap();
    partial.write_all(b"POST /lab/sleep HTTP/1.1\r\nhost: lab\r\ncontent-length: 100\r\n\r\n{\"millis").await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = cpu_ticks(pid(&node));
    let answer = call.await.unwrap();
    let used = cpu_ticks(pid(&node)) - before;
    assert_eq!((answer.status, answer.json()["data"].as_u64()), (200, Some(3000)), "{}", answer.body);
    eprintln!("a quiet 3 s HTTP/1 call and a quiet partial body: {used} CPU ticks (1/100 s) of the node");
    // Before the fix the connection tasks spun from 500 ms on: ≈ 230 ticks per request.
    assert!(used <= 50, "{used} ticks of CPU while two HTTP/1 requests waited quietly for 3 s");
    drop(partial);
}
