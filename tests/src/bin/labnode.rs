//! A cluster node serving `Lab` and the greeter, for the integration tests.
//! Prints `listening on ADDR` once it accepts connections; drains on SIGTERM.

use clap::Parser;
use meshrpc::ClusterBuilder;
use meshrpc_tests::{
    faults::{Faults, FaultyNode, FaultyServer},
    lab::{LabNode, LabServer, LabV2Node, LabV2Server},
    streams::{StreamerNode, StreamerServer},
};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    /// Admin port (plaintext, read-only: /ping, /healthz, /ready, /metrics), for probes
    /// and scrapers when the mesh port takes mutual TLS only.
    #[arg(long, env = "MESHRPC_ADMIN_ADDR")]
    admin_addr: Option<String>,
    /// Mutual TLS credentials (`ca.pem`, `node.pem`, `node.key`, `gossip.key`).
    #[arg(long, env = "MESHRPC_TLS_DIR")]
    tls_dir: Option<std::path::PathBuf>,
    /// Authorization policy file.
    #[arg(long, env = "MESHRPC_POLICY")]
    policy: Option<std::path::PathBuf>,
    /// Node name (answered by `Lab::whoami`).
    #[arg(long, default_value = "lab")]
    name: String,
    #[arg(long, value_delimiter = ',')]
    nodes: Vec<String>,
    #[arg(long, default_value = "test")]
    tag: String,
    /// Largest accepted mesh frame and HTTP body, in bytes.
    #[arg(long)]
    max_frame: Option<u32>,
    /// Publish `lab` with a different method set (an incompatible version).
    #[arg(long)]
    v2: bool,
    /// Compress answers of 1 KiB or more on the mesh (`ServerConfig::compress`).
    #[arg(long)]
    compress: bool,
    /// Calls one connection may have in flight.
    #[arg(long)]
    max_in_flight: Option<usize>,
    /// Every `whoami` takes this many extra milliseconds.
    #[arg(long, default_value_t = 0)]
    slow_ms: u64,
    /// Limits of the node's port (ServerConfig), for the hardening tests.
    #[arg(long)]
    idle_ms: Option<u64>,
    #[arg(long)]
    header_timeout_ms: Option<u64>,
    #[arg(long)]
    frame_timeout_ms: Option<u64>,
    #[arg(long)]
    max_partial_bytes: Option<usize>,
    #[arg(long)]
    max_queued: Option<usize>,
    #[arg(long)]
    stuck_ms: Option<u64>,
    #[arg(long)]
    max_connections: Option<usize>,
    #[arg(long)]
    http_idle_ms: Option<u64>,
    /// Bytes of unread stream items the node holds, node-wide.
    #[arg(long)]
    max_stream_bytes: Option<usize>,
    /// The version this node advertises for its services.
    #[arg(long)]
    service_version: Option<String>,
    /// How long a drain lets calls and streams finish.
    #[arg(long)]
    drain_ms: Option<u64>,
    /// `Faulty`: share of `read`/`fetch` calls that fail with `internal`.
    #[arg(long, default_value_t = 0)]
    fail_percent: u64,
    /// `Faulty`: share of `read`/`fetch` calls that stall for `--stall-ms`.
    #[arg(long, default_value_t = 0)]
    stall_percent: u64,
    #[arg(long, default_value_t = 1000)]
    stall_ms: u64,
    /// `Faulty`: `read`/`fetch` never answer.
    #[arg(long)]
    hang: bool,
    /// `Faulty`: how long `write` takes.
    #[arg(long, default_value_t = 0)]
    write_ms: u64,
    /// `Faulty`: where executions of `write` are appended.
    #[arg(long)]
    write_log: Option<std::path::PathBuf>,
    /// `Faulty`: workers for `work` (0: no limit).
    #[arg(long, default_value_t = 0)]
    workers: usize,
    /// The node-wide concurrency limit: `off`, a number, or `adaptive` (the default).
    #[arg(long)]
    concurrency_limit: Option<String>,
    /// The status `/labhttp/echo` answers with (a replica whose HTTP router fails).
    #[arg(long, default_value_t = 200)]
    http_status: u16,
    /// Once serving, this node writes a split rule itself: `SERVICE VERSION=WEIGHT…`.
    #[arg(long)]
    write_split: Option<String>,
    /// Once serving, this node writes a mirror rule itself: `SERVICE VERSION=PERCENT`.
    #[arg(long)]
    write_mirror: Option<String>,
    /// Also publish `wide`, a service of 200 methods.
    #[arg(long)]
    wide: bool,
}

#[tokio::main]
async fn main() -> Result<(), meshrpc::Error> {
    meshrpc::init_logging("warn");
    meshrpc::telemetry::Telemetry::from_env().install();
    let _ = meshrpc::server::raise_fd_limit();
    let args = Args::parse();
    let mut config = meshrpc::ServerConfig::default();
    if let Some(max) = args.max_in_flight {
        config.max_in_flight = max;
    }
    config.compress = args.compress;
    if let Some(max) = args.max_frame {
        config.max_frame = max;
        config.http.max_body = max as usize;
    }
    let ms = std::time::Duration::from_millis;
    if let Some(v) = args.idle_ms {
        config.idle_timeout = Some(ms(v));
    }
    if let Some(v) = args.header_timeout_ms {
        config.header_timeout = ms(v);
    }
    if let Some(v) = args.frame_timeout_ms {
        config.frame_timeout = ms(v);
    }
    if let Some(v) = args.max_partial_bytes {
        config.max_partial_bytes = v;
    }
    if let Some(v) = args.max_queued {
        config.max_queued = v;
    }
    if let Some(v) = args.stuck_ms {
        config.stuck_timeout = ms(v);
    }
    if let Some(v) = args.max_connections {
        config.max_connections = v;
    }
    if let Some(v) = args.http_idle_ms {
        config.http.idle_timeout = ms(v);
    }
    if let Some(v) = args.max_stream_bytes {
        config.max_stream_bytes = v;
    }
    if let Some(v) = args.drain_ms {
        config.drain_timeout = ms(v);
    }
    match args.concurrency_limit.as_deref() {
        None | Some("adaptive") => {}
        Some("off") => config.concurrency = meshrpc::server::ConcurrencyLimit::Off,
        Some(n) => {
            config.concurrency = meshrpc::server::ConcurrencyLimit::Fixed(n.parse().expect("--concurrency-limit"))
        }
    }
    let mut builder = ClusterBuilder::from_env(args.name.clone());
    if let Some(version) = &args.service_version {
        builder = builder.service_version(version.clone());
    }
    let cluster = builder
        .tag(args.tag)
        .seeds(&args.nodes)
        .listen(args.listen)
        .server_config(config)
        .tls_dir(args.tls_dir)
        .policy_file(args.policy)
        .admin_addr(args.admin_addr)
        .start()
        .await?;
    if args.v2 {
        cluster.publish(LabV2Server::new(LabV2Node(args.name.clone())));
    } else {
        let mut lab = LabNode::new(args.name.clone());
        lab.slow = std::time::Duration::from_millis(args.slow_ms);
        cluster.publish(LabServer::new(lab));
    }
    let faults = Faults {
        fail_percent: args.fail_percent,
        stall_percent: args.stall_percent,
        stall: ms(args.stall_ms),
        hang: args.hang,
        write_time: ms(args.write_ms),
        workers: args.workers,
        write_log: args.write_log.clone(),
    };
    cluster.publish(FaultyServer::new(FaultyNode::new(args.name.clone(), faults).expect("write log")));
    cluster.publish(greeter::GreeterServer::new(greeter::MyGreeter::default()));
    cluster.publish(StreamerServer::new(StreamerNode::default()));
    cluster.publish_http("labhttp", http_router(args.http_status))?;
    if args.wide {
        cluster.publish(meshrpc_tests::wide::WideServer::new(meshrpc_tests::wide::WideNode));
    }
    println!("listening on {}", cluster.local_addr().expect("listening"));
    if let Some(admin) = cluster.admin_addr() {
        println!("admin on {admin}");
    }
    let rule = |text: &str| {
        let (service, weights) = text.split_once(' ').expect("SERVICE VERSION=WEIGHT");
        (service.to_owned(), meshrpc::cluster::Split::parse_weights(weights).expect("weights"))
    };
    if let Some((service, weights)) = args.write_split.as_deref().map(rule) {
        let written = cluster.set_split(&service, weights).await;
        println!("wrote split: {written:?}");
    }
    if let Some((service, mut weights)) = args.write_mirror.as_deref().map(rule) {
        let written = cluster.set_mirror(&service, weights.pop()).await;
        println!("wrote mirror: {written:?}");
    }
    cluster.serve_until_signal().await
}

/// A plain HTTP router for the gateway's proxy tests: `/labhttp/echo` answers with what
/// it received (with `status`), `/labhttp/slow?ms=N` answers after N ms.
fn http_router(status: u16) -> axum::Router {
    let status = axum::http::StatusCode::from_u16(status).expect("--http-status");
    use axum::{
        body::Bytes,
        extract::RawQuery,
        http::{HeaderMap, Method, Uri},
        routing::{any, get},
    };
    axum::Router::new()
        .route(
            "/echo",
            any(
                move |method: Method, uri: Uri, RawQuery(query): RawQuery, headers: HeaderMap, body: Bytes| async move {
                    let header = headers.get("x-test").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
                    (status, format!("{method} {} {} {header} {}", uri.path(), query.unwrap_or_default(), body.len()))
                },
            ),
        )
        .route(
            "/slow",
            get(|RawQuery(query): RawQuery| async move {
                let ms = query.and_then(|q| q.strip_prefix("ms=")?.parse().ok()).unwrap_or(0);
                tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
                "done"
            }),
        )
}
