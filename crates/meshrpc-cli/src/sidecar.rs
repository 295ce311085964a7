//! `meshrpc sidecar`: a node beside gRPC servers that are not meshrpc services (tonic,
//! grpc-go…), publishing each in the mesh so that callers reach its replicas through the
//! cluster's picker (`Cluster::grpc_channel`; docs/grpc.md, "gRPC out").

use meshrpc::ClusterBuilder;

#[derive(clap::Args)]
pub(crate) struct SidecarArgs {
    /// A gRPC service and the address of its server beside this node:
    /// `boutique.CurrencyService=127.0.0.1:7000` (repeat).
    #[arg(long = "grpc", required = true, value_parser = upstream)]
    upstreams: Vec<(String, std::net::SocketAddr)>,
    /// Mesh address (other nodes join through it; callers reach the services on it).
    #[arg(long, env = "MESHRPC_LISTEN_ADDR", default_value = "0.0.0.0:11999")]
    listen_addr: String,
    /// Nodes to join through (comma separated; a missing port means 11999).
    #[arg(short = 'N', long, env = "MESHRPC_CLUSTER_NODES", value_delimiter = ',')]
    nodes: Vec<String>,
    /// Cluster tag.
    #[arg(short = 'T', long, env = "MESHRPC_CLUSTER_TAGNAME", default_value = "example")]
    tag: String,
    /// Mutual TLS: a directory with ca.pem, node.pem, node.key and gossip.key.
    #[arg(long, env = "MESHRPC_TLS_DIR")]
    tls_dir: Option<std::path::PathBuf>,
    /// Authorization policy (TOML, docs/security.md; needs --tls-dir): a caller needs
    /// `{service}.http`.
    #[arg(long, env = "MESHRPC_POLICY")]
    policy: Option<std::path::PathBuf>,
}

fn upstream(s: &str) -> Result<(String, std::net::SocketAddr), String> {
    let (name, addr) = s.split_once('=').ok_or("expected NAME=ADDR, as in boutique.CurrencyService=127.0.0.1:7000")?;
    Ok((name.to_owned(), addr.parse().map_err(|e| format!("`{addr}`: {e}"))?))
}

pub(crate) async fn run(args: SidecarArgs) -> Result<(), Box<dyn std::error::Error>> {
    let cluster = ClusterBuilder::from_env("sidecar")
        .tag(args.tag)
        .seeds(&args.nodes)
        .listen(args.listen_addr)
        .tls_dir(args.tls_dir)
        .policy_file(args.policy)
        .start()
        .await?;
    for (name, addr) in &args.upstreams {
        cluster.publish_grpc(name, *addr)?;
        println!("publishing {name} served by {addr}");
    }
    let addr = cluster.local_addr().expect("listening");
    println!("listening on {addr}");
    println!("mesh on {addr}");
    cluster.serve_until_signal().await?;
    Ok(())
}
