//! `meshrpc gateway`: the generic API gateway, itself a cluster node.

use meshrpc::{Cluster, Gateway, HttpLimits, ServerConfig};

#[derive(clap::Args)]
pub struct GatewayArgs {
    /// HTTP address of the gateway.
    #[arg(long, default_value = "0.0.0.0:8282")]
    listen: String,
    /// Overrides the HTTP port (as Go meshRPC's gateway read it).
    #[arg(long, env = "APP_HTTP_PORT")]
    http_port: Option<u16>,
    /// Mesh address other nodes join through.
    #[arg(long, env = "MESHRPC_LISTEN_ADDR", default_value = "0.0.0.0:11999")]
    listen_addr: String,
    /// Nodes to join through (comma separated; a missing port means 11999).
    #[arg(short = 'N', long, env = "MESHRPC_CLUSTER_NODES", value_delimiter = ',')]
    nodes: Vec<String>,
    /// Cluster tag.
    #[arg(short = 'T', long, env = "MESHRPC_CLUSTER_TAGNAME", default_value = "example")]
    tag: String,
    /// Admin port (plaintext, read-only: /ping, /healthz, /ready, /metrics), for probes
    /// and scrapers when the mesh port takes mutual TLS only.
    #[arg(long, env = "MESHRPC_ADMIN_ADDR")]
    admin_addr: Option<String>,
    /// Mutual TLS: a directory with ca.pem, node.pem, node.key and gossip.key
    /// (`meshrpc cert issue`; docs/security.md).
    #[arg(long, env = "MESHRPC_TLS_DIR")]
    tls_dir: Option<std::path::PathBuf>,
    /// Authorization policy (TOML, docs/security.md; needs --tls-dir). Reloaded when it
    /// changes and on SIGHUP.
    #[arg(long, env = "MESHRPC_POLICY")]
    policy: Option<std::path::PathBuf>,
    /// Largest accepted request body, in bytes.
    #[arg(long, default_value_t = 4 * 1024 * 1024)]
    max_body: usize,
    /// Seconds a client may take to send its headers or body.
    #[arg(long, default_value_t = 10)]
    client_timeout: u64,
    /// Seconds a call through the gateway may take (RPC or proxied HTTP), unless the
    /// request's `meshrpc-timeout-ms` header says otherwise.
    #[arg(long, default_value_t = 30.0)]
    timeout: f64,
    /// Services /healthz requires to answer (comma separated).
    #[arg(long, value_delimiter = ',')]
    require: Vec<String>,
}

pub async fn run(args: GatewayArgs) -> Result<(), Box<dyn std::error::Error>> {
    let mut listen: std::net::SocketAddr =
        tokio::net::lookup_host(&args.listen).await?.next().ok_or("no address to listen on")?;
    if let Some(port) = args.http_port {
        listen.set_port(port);
    }
    let timeout = std::time::Duration::from_secs(args.client_timeout);
    let cluster = Cluster::builder("gateway")
        .tag(args.tag)
        .seeds(&args.nodes)
        .listen(args.listen_addr)
        .tls_dir(args.tls_dir)
        .policy_file(args.policy)
        .admin_addr(args.admin_addr)
        .start()
        .await?;
    let node = cluster.clone();
    tokio::spawn(async move { node.serve_until_signal().await });

    let mut limits = HttpLimits::default();
    limits.max_body = args.max_body;
    limits.body_timeout = timeout;
    limits.default_timeout = std::time::Duration::from_secs_f64(args.timeout);
    let gateway = Gateway::new(cluster.clone()).limits(limits).require(args.require);
    let app = gateway.observe(gateway.router());
    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!("listening on {}", listener.local_addr()?);
    println!("mesh on {}", cluster.local_addr().expect("listening"));
    let mut config = ServerConfig::default();
    config.header_timeout = timeout;
    meshrpc::serve_http(listener, app, config, meshrpc::wait_for_signal()).await;
    cluster.shutdown().await;
    Ok(())
}
