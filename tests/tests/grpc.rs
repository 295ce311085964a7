//! Issue 32, part 2a: gRPC in. `meshrpc proto` writes the cluster's `.proto` files, the
//! real protoc (grpcio-tools, PyPI) compiles them, and a Python client made with grpcio
//! calls the mesh through the gateway: unary calls, every argument shape, a recursive
//! struct, the service's own error, server streams, deadlines, and refusals with their
//! gRPC status codes.

use std::time::Duration;

use meshrpc_tests::harness::{eventually, http, python, Node};

const MESHRPC: &str = env!("CARGO_BIN_EXE_meshrpc-cli");
const LABNODE: &str = env!("CARGO_BIN_EXE_labnode");

#[tokio::test(flavor = "multi_thread")]
async fn a_grpcio_client_calls_the_mesh_through_the_gateway() {
    let Some(python) = python(&["grpc", "grpc_tools"]) else { return };
    let tag = "grpc";
    let gateway =
        Node::start(MESHRPC, &["gateway", "--listen", "127.0.0.1:0", "--listen-addr", "127.0.0.1:0", "--tag", tag])
            .await;
    let mesh = gateway.line("mesh on ", Duration::from_secs(10)).await.expect("mesh address");
    let _lab = Node::start(LABNODE, &["--tag", tag, "--nodes", &mesh, "--name", "lab1"]).await;
    let openapi = gateway.url("/openapi.json");
    let ready = eventually(Duration::from_secs(15), || async {
        let doc = http("GET", &openapi, "", &[]).await;
        doc.body.contains("/streamer/count").then_some(())
    })
    .await;
    assert!(ready.is_some(), "the gateway never saw the lab node's services");

    // The .proto files, one per service, written by the CLI.
    let work = std::env::temp_dir().join(format!("meshrpc-grpc-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    let out = tokio::process::Command::new(MESHRPC)
        .args(["proto", "--nodes", &mesh, "--tag", tag, "-o"])
        .arg(&work)
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "meshrpc proto: {}", String::from_utf8_lossy(&out.stderr));
    let written = String::from_utf8_lossy(&out.stdout);
    for service in ["greeter", "lab", "streamer", "faulty"] {
        assert!(written.contains(&format!("{service}.proto")), "{written}");
    }
    let streamer = std::fs::read_to_string(work.join("streamer.proto")).unwrap();
    assert!(streamer.contains("rpc count(CountRequest) returns (stream Tick);"), "{streamer}");
    assert!(streamer.contains("`sum` takes a stream of the caller's items"), "{streamer}");

    // protoc (grpcio-tools) compiles every one of them.
    let protos: Vec<_> = std::fs::read_dir(&work)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "proto"))
        .collect();
    let out = tokio::process::Command::new(&python)
        .args(["-m", "grpc_tools.protoc"])
        .arg(format!("-I{}", work.display()))
        .arg(format!("--python_out={}", work.display()))
        .arg(format!("--grpc_python_out={}", work.display()))
        .args(&protos)
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "protoc refused a .proto: {}", String::from_utf8_lossy(&out.stderr));

    let out = tokio::process::Command::new(&python)
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/grpc_client.py"))
        .env("GATEWAY", gateway.addr.to_string())
        .env("STUBS", &work)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .await
        .unwrap();
    let report = String::from_utf8_lossy(&out.stderr);
    println!("{report}");
    assert!(out.status.success(), "the grpcio client's tests failed:\n{report}");
    assert!(report.contains("Ran 11 tests"), "{report}");
    let _ = std::fs::remove_dir_all(&work);
}
