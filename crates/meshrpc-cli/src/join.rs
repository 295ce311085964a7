//! Joining the cluster as a client-only node, with progress on stderr.

use std::time::{Duration, Instant};

use meshrpc::{Cluster, ClusterBuilder};

/// Where to join.
#[derive(clap::Args, Clone)]
pub(crate) struct JoinArgs {
    /// Nodes to join through (comma separated; a missing port means 11999).
    #[arg(short = 'N', long, env = "MESHRPC_CLUSTER_NODES", value_delimiter = ',', default_value = "127.0.0.1:11999")]
    pub nodes: Vec<String>,
    /// Cluster tag.
    #[arg(short = 'T', long, env = "MESHRPC_CLUSTER_TAGNAME", default_value = "example")]
    pub tag: String,
    /// Mutual TLS: a directory with ca.pem, node.pem, node.key and gossip.key
    /// (`meshrpc cert issue`; docs/security.md).
    #[arg(long, env = "MESHRPC_TLS_DIR")]
    pub tls_dir: Option<std::path::PathBuf>,
    /// How long to wait for the cluster, in seconds.
    #[arg(long, default_value_t = 5.0)]
    pub wait: f64,
}

/// Joins and waits until `ready` holds for the view (or the wait runs out).
pub(crate) async fn join(
    args: &JoinArgs,
    what: &str,
    ready: impl Fn(&meshrpc::cluster::View) -> bool,
) -> Result<Cluster, Box<dyn std::error::Error>> {
    let cluster = ClusterBuilder::from_env("meshrpc-cli")
        .tag(&args.tag)
        .seeds(&args.nodes)
        .tls_dir(args.tls_dir.clone())
        .start()
        .await?;
    let deadline = Instant::now() + Duration::from_secs_f64(args.wait);
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    loop {
        if tokio::time::timeout(Duration::from_millis(100), cluster.wait_view(&ready)).await.is_ok() {
            break;
        }
        if Instant::now() >= deadline {
            let members = cluster.view().members.len();
            // Advertised, but out of reach: say why rather than "not found".
            let unfetched: Vec<String> = cluster
                .unfetched_method_lists()
                .into_iter()
                .map(|(service, why)| {
                    format!("; `{service}` is advertised, but its method list could not be fetched: {why}")
                })
                .collect();
            return Err(format!(
                "{what}: not found within {:.1} s joining {} (tag `{}`; {} node{} seen{}){}",
                args.wait,
                args.nodes.join(","),
                args.tag,
                members.saturating_sub(1),
                if members == 2 { "" } else { "s" },
                match (members, &args.tls_dir) {
                    (1, None) => ": check the address and tag; a mutual-TLS cluster also needs --tls-dir",
                    (1, Some(_)) => ": check the address and tag, and that the credentials are this cluster's",
                    _ => "",
                },
                unfetched.concat()
            )
            .into());
        }
        if tty {
            eprint!(
                "\rjoining {} … {:.1} s",
                args.nodes.join(","),
                args.wait - (deadline - Instant::now()).as_secs_f64()
            );
        }
    }
    if tty {
        eprint!("\r\x1b[K");
    }
    Ok(cluster)
}
