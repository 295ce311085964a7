//! A cluster node serving `Lab` and the greeter, for the integration tests.
//! Prints `listening on ADDR` once it accepts connections; drains on SIGTERM.

use clap::Parser;
use meshrpc::Cluster;
use meshrpc_tests::lab::{LabNode, LabServer, LabV2Node, LabV2Server};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
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
    /// Calls one connection may have in flight.
    #[arg(long)]
    max_in_flight: Option<usize>,
    /// Every `whoami` takes this many extra milliseconds.
    #[arg(long, default_value_t = 0)]
    slow_ms: u64,
}

#[tokio::main]
async fn main() -> Result<(), meshrpc::Error> {
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .init();
    let args = Args::parse();
    let mut config = meshrpc::ServerConfig::default();
    if let Some(max) = args.max_in_flight {
        config.max_in_flight = max;
    }
    if let Some(max) = args.max_frame {
        config.max_frame = max;
        config.http.max_body = max as usize;
    }
    let cluster = Cluster::builder(args.name.clone())
        .tag(args.tag)
        .seeds(&args.nodes)
        .listen(args.listen)
        .server_config(config)
        .start()
        .await?;
    if args.v2 {
        cluster.publish(LabV2Server::new(LabV2Node(args.name)));
    } else {
        let mut lab = LabNode::new(args.name);
        lab.slow = std::time::Duration::from_millis(args.slow_ms);
        cluster.publish(LabServer::new(lab));
    }
    cluster.publish(greeter::GreeterServer::new(greeter::MyGreeter::default()));
    println!("listening on {}", cluster.local_addr().expect("listening"));
    cluster.serve_until_signal().await
}
