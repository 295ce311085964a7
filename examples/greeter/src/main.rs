//! A greeter node: serves `Greeter` over the mesh and a legacy HTTP handler
//! (`GET /greeter/check`), joining the cluster through any node.
//!
//! ```text
//! greeter --nodes 127.0.0.1:11999 --listen-addr 127.0.0.1:0
//! ```

use axum::{routing::get, Router};
use clap::Parser;
use greeter::{GreeterServer, MyGreeter};
use meshrpc::Cluster;

#[derive(Parser)]
#[command(about = "A greeter node of a meshrpc cluster")]
struct Args {
    /// Nodes to join through (comma separated; a missing port means 11999).
    #[arg(short = 'N', long, env = "MESHRPC_CLUSTER_NODES", value_delimiter = ',')]
    nodes: Vec<String>,
    /// Cluster tag: nodes with another tag are invisible.
    #[arg(short = 'T', long, env = "MESHRPC_CLUSTER_TAGNAME", default_value = "example")]
    tag: String,
    /// Mesh address (also HTTP and UDP gossip). Port 0 picks a free port.
    #[arg(long, env = "MESHRPC_LISTEN_ADDR", default_value = "0.0.0.0:0")]
    listen_addr: String,
}

/// The seed's legacy handler: `All ok! <RFC 3339 time>`.
fn legacy_router() -> Router {
    Router::new().route("/check", get(|| async { format!("All ok! {}", greeter::rfc3339_now()) }))
}

#[tokio::main]
async fn main() -> Result<(), meshrpc::Error> {
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))
        .init();
    let args = Args::parse();
    let cluster = Cluster::builder("greeter").tag(args.tag).seeds(&args.nodes).listen(args.listen_addr).start().await?;
    cluster.publish(GreeterServer::new(MyGreeter::default()));
    cluster.publish_http("greeter", legacy_router());
    println!("listening on {}", cluster.local_addr().expect("a listening node"));
    cluster.serve_until_signal().await
}
