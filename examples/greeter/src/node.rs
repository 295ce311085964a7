//! The greeter node: serves `Greeter` over the mesh and a legacy HTTP handler
//! (`GET /greeter/check`), joining the cluster through any node.

use axum::{routing::get, Router};
use meshrpc::ClusterBuilder;

use crate::{GreeterServer, MyGreeter};

/// Flags and environment, as in Go meshRPC's example.
#[derive(clap::Args, Debug, Clone)]
pub struct NodeArgs {
    /// Nodes to join through (comma separated; a missing port means 11999).
    #[arg(short = 'N', long, env = "MESHRPC_CLUSTER_NODES", value_delimiter = ',')]
    pub nodes: Vec<String>,
    /// Cluster tag: nodes with another tag are invisible.
    #[arg(short = 'T', long, env = "MESHRPC_CLUSTER_TAGNAME", default_value = "example")]
    pub tag: String,
    /// Mesh address (also HTTP and UDP gossip). Port 0 picks a free port.
    #[arg(long, env = "MESHRPC_LISTEN_ADDR", default_value = "0.0.0.0:0")]
    pub listen_addr: String,
    /// Admin port (plaintext, read-only: /ping, /healthz, /ready, /metrics), for probes
    /// and scrapers when the mesh port takes mutual TLS only.
    #[arg(long, env = "MESHRPC_ADMIN_ADDR")]
    pub admin_addr: Option<String>,
    /// Mutual TLS: a directory with ca.pem, node.pem, node.key and gossip.key
    /// (`meshrpc cert issue`; docs/security.md).
    #[arg(long, env = "MESHRPC_TLS_DIR")]
    pub tls_dir: Option<std::path::PathBuf>,
    /// Authorization policy (TOML, docs/security.md; needs --tls-dir). Reloaded when it
    /// changes and on SIGHUP.
    #[arg(long, env = "MESHRPC_POLICY")]
    pub policy: Option<std::path::PathBuf>,
}

/// The seed's legacy handler: `All ok! <RFC 3339 time>`.
pub fn legacy_router() -> Router {
    Router::new().route("/check", get(|| async { format!("All ok! {}", crate::rfc3339_now()) }))
}

/// Runs a greeter node until SIGTERM or Ctrl-C, then drains.
pub async fn run(args: NodeArgs) -> Result<(), meshrpc::Error> {
    let cluster = ClusterBuilder::from_env("greeter")
        .tag(args.tag)
        .seeds(&args.nodes)
        .listen(args.listen_addr)
        .tls_dir(args.tls_dir)
        .policy_file(args.policy)
        .admin_addr(args.admin_addr)
        .start()
        .await?;
    cluster.publish(GreeterServer::new(MyGreeter::default()));
    cluster.publish_http("greeter", legacy_router())?;
    println!("listening on {}", cluster.local_addr().expect("a listening node"));
    cluster.serve_until_signal().await
}
