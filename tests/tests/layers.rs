//! Issue 20: what the layering makes possible — a connection over any byte stream, a
//! router published while serving, the call context across `tokio::spawn`, and proxied
//! HTTP going through the one replica picker.

use std::{net::SocketAddr, time::Duration};

use meshrpc::{
    transport::{ConnectOptions, Connection, StreamLink},
    CallContext, Cluster, Server,
};
use meshrpc_tests::harness::{eventually, http, Node};
use serde::{Deserialize, Serialize};

const MESHRPC: &str = env!("CARGO_BIN_EXE_meshrpc-cli");
const LABNODE: &str = env!("CARGO_BIN_EXE_labnode");

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error("{0}")]
pub struct ProbeError(String);

impl From<meshrpc::Error> for ProbeError {
    fn from(e: meshrpc::Error) -> Self {
        ProbeError(e.to_string())
    }
}

/// What a handler saw of its call context: (trace id, milliseconds left).
type Seen = Option<(u128, u64)>;

#[meshrpc::service]
pub trait Probe {
    /// The context in the handler itself, in a task spawned with it, and in a task
    /// spawned without it.
    async fn contexts(&self) -> Result<(Seen, Seen, Seen), ProbeError>;
    async fn echo(&self, text: String) -> Result<String, ProbeError>;
}

struct Prober;

fn seen() -> Seen {
    CallContext::current().map(|c| (c.trace_id, c.remaining().unwrap_or_default().as_millis() as u64))
}

#[meshrpc::async_trait]
impl Probe for Prober {
    async fn contexts(&self) -> Result<(Seen, Seen, Seen), ProbeError> {
        let here = seen();
        let ctx = CallContext::current().expect("a handler runs in its call's context");
        // As the handler docs show: `scope` carries the context into the spawned task.
        let kept = tokio::spawn(ctx.scope(async { seen() })).await.unwrap();
        let lost = tokio::spawn(async { seen() }).await.unwrap();
        Ok((here, kept, lost))
    }

    async fn echo(&self, text: String) -> Result<String, ProbeError> {
        Ok(text)
    }
}

async fn probe_server() -> (SocketAddr, Server) {
    let server = Server::bind("127.0.0.1:0").await.unwrap();
    server.publish(ProbeServer::new(Prober));
    (server.local_addr(), server)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connection_runs_over_any_async_byte_stream() {
    let (addr, server) = probe_server().await;
    let (near, far) = tokio::io::duplex(16 * 1024);
    tokio::spawn(server.serve_link(StreamLink::new(far, addr)));
    let conn = Connection::over(StreamLink::new(near, addr), ConnectOptions::default().caller("duplex")).await.unwrap();
    let probe = ProbeClient::new(conn.clone());
    assert_eq!(probe.echo("over a duplex".into()).await.unwrap(), "over a duplex");
    // Many calls at once, larger than the duplex buffer in total, share the stream.
    let calls = (0..200).map(|i| {
        let probe = probe.clone();
        tokio::spawn(async move { probe.echo(format!("{i}:{}", "x".repeat(1000))).await })
    });
    for (i, call) in calls.enumerate() {
        assert!(call.await.unwrap().unwrap().starts_with(&format!("{i}:")));
    }
    assert_eq!(conn.in_flight(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_call_context_survives_tokio_spawn_when_scoped() {
    let (addr, server) = probe_server().await;
    tokio::spawn(server.serve());
    let probe = ProbeClient::new(meshrpc::connect(addr).await.unwrap()).with_timeout(Duration::from_secs(20));
    let ctx = CallContext {
        deadline: Some(std::time::Instant::now() + Duration::from_secs(5)),
        trace_id: 4242,
        span_id: 7,
        version: None,
    };
    let (here, kept, lost) = ctx.scope(probe.contexts()).await.unwrap();
    // The caller's trace id and its (sooner) deadline travel with the call...
    let (trace, left) = here.expect("context in the handler");
    assert_eq!(trace, 4242);
    assert!(left > 0 && left <= 5000, "{left} ms left");
    // ...into a task spawned with `scope`, and not into one spawned without it.
    assert_eq!(kept.map(|k| k.0), Some(4242));
    assert!(kept.unwrap().1 <= 5000);
    assert_eq!(lost, None);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_router_published_while_serving_is_mounted_and_advertised() {
    let node = Cluster::builder("late").tag("late-router").listen("127.0.0.1:0").start().await.unwrap();
    let serving = node.clone();
    tokio::spawn(async move { serving.serve().await });
    // Two segments below the name: `/late/hello` alone would be an RPC route.
    let url = format!("http://{}/late/say/hello", node.local_addr().unwrap());
    let before = eventually(Duration::from_secs(5), || async {
        let a = http("GET", &url, "", &[]).await;
        (a.status == 404).then_some(a)
    })
    .await
    .expect("the node answers HTTP");
    assert_eq!(before.json()["errors"][0]["code"], "not_found");

    let router = axum::Router::new().route("/say/hello", axum::routing::get(|| async { "hello, late" }));
    node.publish_http("late", router).unwrap();
    let after = http("GET", &url, "", &[]).await;
    assert_eq!((after.status, after.body.as_str()), (200, "hello, late"));
    let view = node.wait_view(|v| v.knows_http("late")).await;
    assert!(view.members.iter().any(|m| m.is_self && m.http == ["late"]));
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn proxied_http_avoids_a_killed_replica_after_its_first_failure() {
    let tag = "proxy-failover";
    let gateway =
        Node::start(MESHRPC, &["gateway", "--listen", "127.0.0.1:0", "--listen-addr", "127.0.0.1:0", "--tag", tag])
            .await;
    let mesh = gateway.line("mesh on ", Duration::from_secs(10)).await.expect("mesh address");
    let _lab1 = Node::start(LABNODE, &["--tag", tag, "--nodes", &mesh, "--name", "lab1"]).await;
    let mut lab2 = Node::start(LABNODE, &["--tag", tag, "--nodes", &mesh, "--name", "lab2"]).await;
    let echo = gateway.url("/labhttp/echo");
    let healthz = gateway.url("/healthz");
    let both = eventually(Duration::from_secs(15), || async {
        (http("GET", &healthz, "", &[]).await.json()["members"] == 3).then_some(())
    })
    .await;
    assert!(both.is_some(), "the gateway never saw both replicas");
    // Both replicas answer proxied requests before the kill.
    for _ in 0..4 {
        assert_eq!(http("PUT", &echo, "body", &[]).await.status, 200);
    }
    lab2.kill().await;
    // Requests with a body cannot be sent twice: at most the first one may hit the dead
    // replica; every later one is picked elsewhere, as mesh calls are.
    let mut statuses = Vec::new();
    for _ in 0..20 {
        statuses.push(http("PUT", &echo, "body", &[]).await.status);
    }
    let failed = statuses.iter().filter(|s| **s != 200).count();
    assert!(failed <= 1, "statuses after the kill: {statuses:?}");
    assert!(statuses[1..].iter().all(|s| *s == 200), "statuses after the kill: {statuses:?}");
    // Bodiless requests are retried on another replica: none fails.
    for _ in 0..10 {
        assert_eq!(http("GET", &echo, "", &[]).await.status, 200);
    }
}

/// A server layer: calls without the token are refused before any handler runs.
#[derive(Clone)]
struct RequireToken<S>(S);

impl<S> tower_service::Service<meshrpc::call::Call> for RequireToken<S>
where
    S: tower_service::Service<
        meshrpc::call::Call,
        Response = meshrpc::call::Reply,
        Error = meshrpc::Error,
        Future = meshrpc::call::BoxFuture<Result<meshrpc::call::Reply, meshrpc::Error>>,
    >,
{
    type Response = meshrpc::call::Reply;
    type Error = meshrpc::Error;
    type Future = meshrpc::call::BoxFuture<Result<meshrpc::call::Reply, meshrpc::Error>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), meshrpc::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, call: meshrpc::call::Call) -> Self::Future {
        if call.metadata.get("authorization") != Some("Bearer s3cret") {
            let refused =
                meshrpc::Error::PermissionDenied { message: format!("{}.{} needs a token", call.service, call.method) };
            return Box::pin(std::future::ready(Err(refused)));
        }
        self.0.call(call)
    }
}

/// A client layer: every call carries the token.
#[derive(Clone)]
struct AddToken<S>(S);

impl<S> tower_service::Service<meshrpc::call::Call> for AddToken<S>
where
    S: tower_service::Service<meshrpc::call::Call, Response = meshrpc::call::Reply, Error = meshrpc::Error>,
{
    type Response = meshrpc::call::Reply;
    type Error = meshrpc::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), meshrpc::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, mut call: meshrpc::call::Call) -> S::Future {
        call.metadata.insert("Authorization", "Bearer s3cret");
        self.0.call(call)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_layer_refuses_calls_a_client_layer_did_not_sign() {
    let server = Server::bind("127.0.0.1:0").await.unwrap().layer(tower_layer::layer_fn(RequireToken)).with_http();
    server.publish(ProbeServer::new(Prober));
    let addr = server.local_addr();
    tokio::spawn(server.serve());
    let channel = meshrpc::Channel::from(meshrpc::connect(addr).await.unwrap());

    // Without the client layer: refused, typed, before the handler.
    let err = ProbeClient::new(channel.clone()).echo("hi".into()).await.unwrap_err();
    assert_eq!(err, ProbeError("permission denied: probe.echo needs a token".into()));
    // With it: the metadata crosses the wire and the call goes through.
    let signed = ProbeClient::new(channel.layer(tower_layer::layer_fn(AddToken)));
    assert_eq!(signed.echo("hi".into()).await.unwrap(), "hi");
    // The server layer guards the HTTP door of the same port too: 403 in the envelope.
    let refused = http("POST", &format!("http://{addr}/probe/echo"), r#"{"text":"hi"}"#, &[]).await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert_eq!(refused.json()["errors"][0]["code"], "permission_denied");
}

/// A node that calls a service it publishes before it serves is told why nobody answers
/// (it was told "another version of its methods" before), and is answered once it serves.
#[tokio::test(flavor = "multi_thread")]
async fn a_service_called_before_its_node_serves_says_starting_then_answers() {
    use greeter::{Greeter, GreeterClient, GreeterServer, MyGreeter};
    let node = Cluster::builder("early").tag("early-call").listen("127.0.0.1:0").start().await.unwrap();
    node.publish(GreeterServer::new(MyGreeter::default()));
    let client = GreeterClient::new(node.client(GreeterClient::SPEC).with_timeout(Duration::from_millis(300)));
    let told = eventually(Duration::from_secs(5), || async {
        let early = format!("{:?}", client.greet("Max".into()).await);
        early.contains("no replica of `greeter` takes calls: 1 starting").then_some(early)
    })
    .await;
    assert!(told.is_some(), "{:?}", client.greet("Max".into()).await);
    let serving = node.clone();
    tokio::spawn(async move { serving.serve().await });
    node.wait_for(&[GreeterClient::SPEC], Duration::from_secs(5)).await.unwrap();
    assert_eq!(client.greet("Max".into()).await.unwrap(), "Hello, Max");
    node.shutdown().await;
}
