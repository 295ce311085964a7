//! The seed's `mesh_api`: a custom gateway. Its own routes call the generated
//! `GreeterClient`; the generic gateway routes (RPC, meshed HTTP handlers, `/healthz`,
//! `/metrics`) are merged in.

use std::time::Duration;

use axum::{
    extract::Path,
    http::StatusCode,
    routing::{get, post},
    Json, Router,
};
use greeter::{Greeter, GreeterClient, Postcard};
use meshrpc::{ClusterBuilder, Gateway, ServerConfig};

/// Flags and environment, as in Go meshRPC's example.
#[derive(clap::Args, Debug, Clone)]
pub struct ApiArgs {
    /// Nodes to join through (comma separated; a missing port means 11999).
    #[arg(short = 'N', long, env = "MESHRPC_CLUSTER_NODES", value_delimiter = ',')]
    pub nodes: Vec<String>,
    /// Cluster tag.
    #[arg(short = 'T', long, env = "MESHRPC_CLUSTER_TAGNAME", default_value = "example")]
    pub tag: String,
    /// Mesh address other nodes join through.
    #[arg(long, env = "MESHRPC_LISTEN_ADDR", default_value = "0.0.0.0:11999")]
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
    /// Require a bearer token of every API caller: static API keys, one `subject:token`
    /// per line (docs/security.md). Health endpoints stay open.
    #[arg(long, env = "MESHRPC_API_KEYS")]
    pub api_keys: Option<std::path::PathBuf>,
    /// HTTPS: the API's certificate chain (PEM), with --tls-key (`meshrpc cert https`).
    #[arg(long, env = "MESHRPC_HTTPS_CERT", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// HTTPS: the private key (PEM) of --tls-cert.
    #[arg(long, env = "MESHRPC_HTTPS_KEY", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
    /// HTTP host of the API.
    #[arg(long = "http-host", env = "APP_HTTP_HOST", default_value = "0.0.0.0")]
    pub http_host: String,
    /// HTTP port of the API.
    #[arg(short = 'P', long = "http-port", env = "APP_HTTP_PORT", default_value_t = 8282)]
    pub http_port: u16,
}

type ApiError = (StatusCode, Json<String>);

fn failed(e: greeter::GreetError) -> ApiError {
    (StatusCode::INTERNAL_SERVER_ERROR, Json(e.to_string()))
}

/// The custom routes, written against the trait: `svc` may be a remote client or a
/// local implementation.
pub fn routes<G: Greeter + Clone>(svc: G) -> Router {
    let greet = svc.clone();
    Router::new()
        // curl http://localhost:8282/greeter/greet/Max → "Hello, Max"
        .route(
            "/greeter/greet/{name}",
            get(move |Path(name): Path<String>| async move { greet.greet(name).await.map(Json).map_err(failed) }),
        )
        // curl -X POST http://localhost:8282/greeter/sendPostcard/Max/World/Hello
        .route(
            "/greeter/sendPostcard/{recipient}/{address}/{message}",
            post(move |Path((recipient, address, message)): Path<(String, String, String)>| async move {
                let card = Postcard { picture_url: String::new(), address, recipient: recipient.clone(), message };
                svc.send_postcard(card).await.map_err(failed)?;
                Ok::<_, ApiError>(Json(format!("Postcard sent to {recipient}")))
            }),
        )
}

/// Joins the cluster, serves the API until SIGTERM or Ctrl-C.
pub async fn run(args: ApiArgs) -> Result<(), meshrpc::Error> {
    let cluster = ClusterBuilder::from_env("mesh-api")
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

    let greeter = GreeterClient::new(cluster.client(GreeterClient::SPEC));
    let mut gateway = Gateway::new(cluster.clone()).require(["greeter"]);
    // The node's policy also rules the API's callers (`user:<token subject>`).
    if let Some(access) = cluster.access() {
        gateway = gateway.access(access.clone());
    }
    let mut app = routes(greeter).merge(gateway.router());
    if let Some(keys) = &args.api_keys {
        app = gateway.authenticate(app, meshrpc::gateway::BearerAuth::new().api_keys_file(keys)?);
    }
    let app = gateway.observe(app);
    let https = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(meshrpc::transport::https_config(cert, key)?),
        _ => None,
    };

    let listener = tokio::net::TcpListener::bind((args.http_host.as_str(), args.http_port)).await?;
    println!("listening on {}", listener.local_addr()?);
    println!("mesh on {}", cluster.local_addr().expect("listening"));
    // As the seed's mesh_api: wait for the dependency, but serve /healthz meanwhile.
    let waiter = cluster.clone();
    tokio::spawn(async move {
        match waiter.wait_for(&[GreeterClient::SPEC], Duration::from_secs(600)).await {
            Ok(()) => println!("ready: greeter answers"),
            Err(e) => tracing::warn!(error = %e, "greeter not reachable"),
        }
    });
    // A front door takes more clients than a node takes peers: an idle keep-alive client
    // costs about 5 KiB here.
    let mut config = ServerConfig::default();
    config.max_connections = 10_000;
    match https {
        Some(tls) => meshrpc::http::serve_https(listener, app, config, tls, meshrpc::wait_for_signal()).await,
        None => meshrpc::serve_http(listener, app, config, meshrpc::wait_for_signal()).await,
    }
    cluster.shutdown().await;
    Ok(())
}
