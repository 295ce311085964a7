//! `meshrpc gateway`: the generic API gateway, itself a cluster node.

use meshrpc::{server::HttpLimits, ClusterBuilder, Gateway, ServerConfig};

#[derive(clap::Args)]
pub(crate) struct GatewayArgs {
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
    /// HTTPS: the gateway's certificate chain (PEM), with --tls-key. HTTP/1.1 and HTTP/2.
    #[arg(long, env = "MESHRPC_HTTPS_CERT", requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// HTTPS: the private key (PEM) of --tls-cert.
    #[arg(long, env = "MESHRPC_HTTPS_KEY", requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// Require a bearer token: static API keys, one `subject:token` per line.
    #[arg(long, env = "MESHRPC_API_KEYS")]
    api_keys: Option<std::path::PathBuf>,
    /// Require a bearer token: JWTs signed with HS256 and the secret in this file.
    #[arg(long)]
    jwt_hs256_secret: Option<std::path::PathBuf>,
    /// Require a bearer token: JWTs signed with RS256, checked with this PEM public key.
    #[arg(long, conflicts_with = "jwt_hs256_secret")]
    jwt_rs256_key: Option<std::path::PathBuf>,
    /// Accepted JWT issuers (`iss`, then required; comma separated).
    #[arg(long, value_delimiter = ',')]
    jwt_issuer: Vec<String>,
    /// Accepted JWT audiences (`aud`, then required; comma separated). Without it, `aud`
    /// is not checked.
    #[arg(long, value_delimiter = ',')]
    jwt_audience: Vec<String>,
    /// Keep to at most this many replicas of each service (0: all of them): callers of one
    /// name share the replicas out evenly (docs/resilience.md, "Subsetting").
    #[arg(long, env = "MESHRPC_SUBSET", default_value_t = 0)]
    subset: usize,
    /// Client connections served at once; past it, `/ping` still answers and the rest get
    /// a fast 503. An idle keep-alive connection costs about 4 KiB, a busy one about 20.
    #[arg(long, default_value_t = 10_000)]
    max_connections: usize,
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
    /// Each client's rate: `100/s`, `6000/m`, `100/s:200` (a burst of 200). A client is
    /// its bearer token's subject, else its IP address. Over it: 429 with Retry-After.
    #[arg(long)]
    rate_limit: Option<meshrpc::gateway::Rate>,
    /// A route's rate across all clients: `/greeter/greet=50/s` (or `/greeter=…` for all
    /// of a service's routes). Repeatable.
    #[arg(long = "route-limit", value_parser = route_limit)]
    route_limits: Vec<(String, meshrpc::gateway::Rate)>,
    /// Rate limits from a TOML file (`client = "100/s"`, `[route]` `"/greeter/greet" =
    /// "50/s"`; docs/resilience.md); flags add to it.
    #[arg(long, env = "MESHRPC_RATE_LIMITS")]
    rate_limits: Option<std::path::PathBuf>,
}

fn route_limit(s: &str) -> Result<(String, meshrpc::gateway::Rate), String> {
    let (path, rate) = s.split_once('=').ok_or("expected PATH=RATE, as in /greeter/greet=50/s")?;
    if !path.starts_with('/') {
        return Err(format!("route `{path}` must start with `/`"));
    }
    Ok((path.to_owned(), rate.parse().map_err(|e: meshrpc::Error| e.to_string())?))
}

pub(crate) async fn run(args: GatewayArgs) -> Result<(), Box<dyn std::error::Error>> {
    let mut listen: std::net::SocketAddr =
        tokio::net::lookup_host(&args.listen).await?.next().ok_or("no address to listen on")?;
    if let Some(port) = args.http_port {
        listen.set_port(port);
    }
    let timeout = std::time::Duration::from_secs(args.client_timeout);
    let cluster = ClusterBuilder::from_env("gateway")
        .tag(args.tag)
        .seeds(&args.nodes)
        .listen(args.listen_addr)
        .tls_dir(args.tls_dir)
        .policy_file(args.policy)
        .admin_addr(args.admin_addr)
        .subset(args.subset)
        .start()
        .await?;
    let node = cluster.clone();
    tokio::spawn(async move { node.serve_until_signal().await });

    let mut limits = HttpLimits::default();
    limits.max_body = args.max_body;
    limits.body_timeout = timeout;
    limits.default_timeout = std::time::Duration::from_secs_f64(args.timeout);
    let mut gateway = Gateway::new(cluster.clone()).limits(limits).require(args.require);
    // The node's policy also rules outside callers (`user:<token subject>`).
    if let Some(access) = cluster.access() {
        gateway = gateway.access(access.clone());
    }
    let mut rate_limits = match &args.rate_limits {
        Some(path) => meshrpc::gateway::RateLimits::from_file(path)?,
        None => meshrpc::gateway::RateLimits::new(),
    };
    if let Some(rate) = args.rate_limit {
        rate_limits = rate_limits.per_client(rate);
    }
    for (path, rate) in args.route_limits {
        rate_limits = rate_limits.route(path, rate);
    }
    // Inside authentication: a client is its token's subject.
    let mut routes = gateway.rate_limit(gateway.router(), rate_limits);
    let jwt_claims = (&args.jwt_issuer[..], &args.jwt_audience[..]);
    if let Some(auth) = bearer_auth(&args.api_keys, &args.jwt_hs256_secret, &args.jwt_rs256_key, jwt_claims)? {
        routes = gateway.authenticate(routes, auth);
    }
    let app = gateway.observe(routes);
    let https = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(meshrpc::transport::https_config(cert, key)?),
        _ => None,
    };
    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!("listening on {}", listener.local_addr()?);
    println!("mesh on {}", cluster.local_addr().expect("listening"));
    if let Some(admin) = cluster.admin_addr() {
        println!("admin on {admin}");
    }
    let mut config = ServerConfig::default();
    config.header_timeout = timeout;
    config.max_connections = args.max_connections;
    match https {
        Some(tls) => meshrpc::http::serve_https(listener, app, config, tls, meshrpc::wait_for_signal()).await,
        None => meshrpc::serve_http(listener, app, config, meshrpc::wait_for_signal()).await,
    }
    cluster.shutdown().await;
    Ok(())
}

/// The bearer-token check the flags ask for, if any.
fn bearer_auth(
    api_keys: &Option<std::path::PathBuf>,
    hs256: &Option<std::path::PathBuf>,
    rs256: &Option<std::path::PathBuf>,
    (issuers, audiences): (&[String], &[String]),
) -> Result<Option<meshrpc::gateway::BearerAuth>, Box<dyn std::error::Error>> {
    if (!issuers.is_empty() || !audiences.is_empty()) && hs256.is_none() && rs256.is_none() {
        return Err("--jwt-issuer and --jwt-audience need a JWT key: --jwt-hs256-secret or --jwt-rs256-key".into());
    }
    if api_keys.is_none() && hs256.is_none() && rs256.is_none() {
        return Ok(None);
    }
    let mut auth = meshrpc::gateway::BearerAuth::new();
    if let Some(path) = api_keys {
        auth = auth.api_keys_file(path)?;
    }
    let read = |p: &std::path::Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
    if let Some(path) = hs256 {
        let secret = read(path)?;
        let secret = secret.trim_ascii();
        if secret.len() < 32 {
            return Err(format!("{}: an HS256 secret needs at least 32 bytes", path.display()).into());
        }
        auth = auth.jwt_hs256(secret);
    }
    if let Some(path) = rs256 {
        auth = auth.jwt_rs256(&read(path)?)?;
    }
    if !issuers.is_empty() {
        let issuers: Vec<&str> = issuers.iter().map(String::as_str).collect();
        auth = auth.jwt_issuer(&issuers);
    }
    if !audiences.is_empty() {
        let audiences: Vec<&str> = audiences.iter().map(String::as_str).collect();
        auth = auth.jwt_audience(&audiences);
    }
    Ok(Some(auth))
}
