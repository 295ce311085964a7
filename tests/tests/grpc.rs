//! Issue 32, part 2a: gRPC in. `meshrpc proto` writes the cluster's `.proto` files, the
//! real protoc (grpcio-tools, PyPI) compiles them, and a Python client made with grpcio
//! calls the mesh through the gateway: unary calls, every argument shape, a recursive
//! struct, the service's own error, server streams, deadlines, and refusals with their
//! gRPC status codes. Part 2b: gRPC out — a meshrpc node calls replicas of a real tonic
//! service through the mesh's picker, with tonic's own generated client.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use boutique::{
    currency::{Currency, CurrencyError, FixedRates},
    Money,
};
use boutique_tonic::{pb, servers::Served};
use meshrpc::Cluster;
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

/// The boutique's currency service on tonic, counting the calls it answers.
struct Counting {
    calls: Arc<AtomicU64>,
}

#[meshrpc::async_trait]
impl Currency for Counting {
    async fn supported_currencies(&self) -> Result<Vec<String>, CurrencyError> {
        FixedRates.supported_currencies().await
    }
    async fn convert(&self, from: Money, to_code: String) -> Result<Money, CurrencyError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        FixedRates.convert(from, to_code).await
    }
}

/// A tonic server of the currency service on a free port, as its users run it.
fn tonic_currency() -> (SocketAddr, Arc<AtomicU64>, TonicServer) {
    tonic_currency_on("127.0.0.1:0".parse().unwrap())
}

/// A tonic server on a runtime of its own: dropped, it stops as a killed process would,
/// its connections with it.
struct TonicServer(Option<tokio::sync::oneshot::Sender<()>>, Option<std::thread::JoinHandle<()>>);

impl Drop for TonicServer {
    fn drop(&mut self) {
        drop(self.0.take());
        if let Some(thread) = self.1.take() {
            let _ = thread.join();
        }
    }
}

fn tonic_currency_on(addr: SocketAddr) -> (SocketAddr, Arc<AtomicU64>, TonicServer) {
    let calls = Arc::new(AtomicU64::new(0));
    let counted = calls.clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (bound, listening) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
            bound.send(listener.local_addr().unwrap()).unwrap();
            let served = Served::<dyn Currency>(Arc::new(Counting { calls: counted }));
            let server = tonic::transport::Server::builder()
                .add_service(pb::currency_service_server::CurrencyServiceServer::new(served))
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener));
            tokio::select! {
                served = server => served.expect("tonic serves"),
                _ = stopped => {}
            }
        });
        // Dropping the runtime ends every connection task it holds.
        drop(runtime);
    });
    let addr = listening.recv().expect("the tonic server listens");
    (addr, calls, TonicServer(Some(stop), Some(thread)))
}

const CURRENCY: &str = "boutique.CurrencyService";

#[tokio::test(flavor = "multi_thread")]
async fn a_meshrpc_node_calls_tonic_replicas_through_the_mesh() {
    let tag = "grpc-out";
    // Two replicas of an existing tonic service, each with a meshrpc node beside it: one
    // the `meshrpc sidecar` command, one a node of this process (`Cluster::publish_grpc`).
    let (addr_a, calls_a, _tonic_a) = tonic_currency();
    let (addr_b, calls_b, tonic_b) = tonic_currency();
    let upstream = format!("{CURRENCY}={addr_a}");
    let sidecar =
        Node::start(MESHRPC, &["sidecar", "--grpc", &upstream, "--listen-addr", "127.0.0.1:0", "--tag", tag]).await;
    let mesh = sidecar.line("mesh on ", Duration::from_secs(10)).await.expect("mesh address");
    let node_b =
        Cluster::builder("currency-b").tag(tag).seeds([mesh.as_str()]).listen("127.0.0.1:0").start().await.unwrap();
    node_b.publish_grpc(CURRENCY, addr_b).unwrap();
    let serving_b = node_b.clone();
    tokio::spawn(async move { serving_b.serve().await });

    // A meshrpc node calling it with tonic's own generated client, its transport the mesh.
    let caller =
        Cluster::builder("caller").tag(tag).seeds([mesh.as_str()]).listen("127.0.0.1:0").start().await.unwrap();
    let serving = caller.clone();
    tokio::spawn(async move { serving.serve().await });
    let both = eventually(Duration::from_secs(15), || async {
        (caller.view().http_replicas(CURRENCY).count() == 2).then_some(())
    })
    .await;
    assert!(both.is_some(), "the caller never saw both replicas");
    let mut currency = pb::currency_service_client::CurrencyServiceClient::new(caller.grpc_channel(CURRENCY));
    let euros = || pb::CurrencyConversionRequest {
        from: Some(pb::Money { currency_code: "EUR".into(), units: 10, nanos: 0 }),
        to_code: "USD".into(),
    };
    for _ in 0..40 {
        let dollars = currency.convert(euros()).await.expect("a conversion through the mesh").into_inner();
        assert_eq!((dollars.currency_code.as_str(), dollars.units, dollars.nanos), ("USD", 11, 305_000_000));
    }
    let (a, b) = (calls_a.load(Ordering::Relaxed), calls_b.load(Ordering::Relaxed));
    println!("40 calls: {a} to replica a, {b} to replica b");
    assert_eq!(a + b, 40);
    assert!(a >= 5 && b >= 5, "the picker balances across the replicas: {a} / {b}");

    // The tonic service's own errors come through as its status and message.
    let bad = pb::CurrencyConversionRequest { to_code: "XXX".into(), ..euros() };
    let status = currency.convert(bad).await.expect_err("no rate for XXX");
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
    assert!(status.message().contains("XXX"), "{status:?}");

    // Through the gateway, tonic's own channel reaches the same replicas (the gateway
    // passes a published gRPC service's calls on untouched).
    let gateway = Node::start(
        MESHRPC,
        &["gateway", "--listen", "127.0.0.1:0", "--listen-addr", "127.0.0.1:0", "--tag", tag, "--nodes", &mesh],
    )
    .await;
    let through_gateway = eventually(Duration::from_secs(15), || async {
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{}", gateway.addr)).ok()?;
        let mut client = pb::currency_service_client::CurrencyServiceClient::new(endpoint.connect().await.ok()?);
        client.convert(euros()).await.ok().map(|r| r.into_inner())
    })
    .await
    .expect("a conversion through the gateway");
    assert_eq!((through_gateway.currency_code.as_str(), through_gateway.units), ("USD", 11));

    // Replica b's tonic server stops, its node stays: its node answers UNAVAILABLE (HTTP
    // 502), and the channel stops picking it.
    let before = calls_a.load(Ordering::Relaxed);
    drop(tonic_b);
    let mut failed = Vec::new();
    for _ in 0..20 {
        if let Err(status) = currency.convert(euros()).await {
            failed.push(status);
        }
    }
    assert!(failed.len() <= 2, "{failed:?}");
    assert!(failed.iter().all(|s| s.code() == tonic::Code::Unavailable), "{failed:?}");
    assert_eq!(calls_a.load(Ordering::Relaxed), before + 20 - failed.len() as u64);
    // Back on its address: picked again once its backoff passed.
    let (addr_b, calls_b, _tonic_b) = tonic_currency_on(addr_b);
    let back = eventually(Duration::from_secs(10), || async {
        let _ = currency.clone().convert(euros()).await;
        (calls_b.load(Ordering::Relaxed) > 0).then_some(())
    })
    .await;
    assert!(back.is_some(), "replica b never came back");

    // Replica a's node goes away: the calls go to b. The one sent over a connection that
    // had just died fails with UNAVAILABLE (as a call in flight does with tonic's own
    // channel), and a is not picked again.
    let before = calls_b.load(Ordering::Relaxed);
    drop(sidecar);
    let mut failed = Vec::new();
    for _ in 0..20 {
        if let Err(status) = currency.convert(euros()).await {
            failed.push(status);
        }
    }
    assert!(failed.len() <= 1, "{failed:?}");
    assert!(failed.iter().all(|s| s.code() == tonic::Code::Unavailable), "{failed:?}");
    assert_eq!(calls_b.load(Ordering::Relaxed), before + 20 - failed.len() as u64);

    // A name that is not `package.Service` is refused with the reason.
    let refused = node_b.publish_grpc("currency", addr_b).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(refused.contains("package.Service"), "{refused}");
}
