//! `boutique --placement placements/three.toml --group 1 --nodes 127.0.0.1:7001`: one group
//! of the app as a node; without `--group`, every group in this process, each its own node.

use std::{path::PathBuf, time::Duration};

use boutique::placement::{start_all, start_group, wait_all_ready, wait_for_dependencies, NodeOptions, Placement};
use clap::Parser;

#[derive(Parser)]
#[command(about = "Online Boutique on meshrpc: runs one group of a placement, or all of them")]
struct Cli {
    /// The placement file (`groups = [["currency", ...], ...]`).
    #[arg(long, env = "MESHRPC_PLACEMENT")]
    placement: PathBuf,
    /// The group to run (from 0); without it, every group, each its own node.
    #[arg(long, env = "MESHRPC_PLACEMENT_GROUP")]
    group: Option<usize>,
    /// Nodes to join through (comma separated; a missing port means 11999).
    #[arg(short = 'N', long, env = "MESHRPC_CLUSTER_NODES", value_delimiter = ',')]
    nodes: Vec<String>,
    /// Mesh address of the node (with `--group`); without it, the IP all groups listen on
    /// (each on a free port). Port 0 picks a free port.
    #[arg(long, env = "MESHRPC_LISTEN_ADDR", default_value = "127.0.0.1:0")]
    listen_addr: String,
    /// Cluster tag: nodes with another tag are invisible.
    #[arg(short = 'T', long, env = "MESHRPC_CLUSTER_TAGNAME", default_value = "boutique")]
    tag: String,
    /// The application version its services run at (`v2` runs the second release of the
    /// code: a changed payment contract). Requests pinned to a version are served by
    /// that version end to end (`meshrpc split --app v1=90 v2=10`).
    #[arg(long, env = "MESHRPC_SERVICE_VERSION")]
    app_version: Option<String>,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    meshrpc::init_logging("warn");
    match run(Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("boutique: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    let placement = Placement::load(&cli.placement)?;
    let nodes = match cli.group {
        Some(group) => {
            let options =
                NodeOptions { tag: cli.tag, seeds: cli.nodes, listen: cli.listen_addr, version: cli.app_version };
            vec![start_group(&placement, group, options).await?]
        }
        None => {
            let ip = cli.listen_addr.rsplit_once(':').map_or(cli.listen_addr.as_str(), |(ip, _)| ip);
            start_all(&placement, &cli.tag, &cli.nodes, ip, cli.app_version.as_deref()).await?
        }
    };
    let groups = match cli.group {
        Some(group) => &placement.groups()[group..=group],
        None => placement.groups(),
    };
    for (node, services) in nodes.iter().zip(groups) {
        let names: Vec<_> = services.iter().map(|s| s.name()).collect();
        println!("{} serves {}", node.local_addr().expect("a listening node"), names.join(", "));
    }
    // The harness and scripts wait for this line: the first node, the one to join through.
    println!("listening on {}", nodes[0].local_addr().expect("a listening node"));
    // Ready once every node reaches the services its group calls (other groups may still
    // be starting: a node waits up to a minute, then says what it still misses).
    let ready = (placement.clone(), nodes.clone(), cli.group);
    tokio::spawn(async move {
        let (placement, nodes, group) = ready;
        let waited = match group {
            Some(group) => {
                let services = placement.group(group).unwrap_or_default();
                wait_for_dependencies(&nodes[0], services, Duration::from_secs(60)).await
            }
            None => wait_all_ready(&placement, &nodes, Duration::from_secs(60)).await,
        };
        match waited {
            Ok(()) => println!("ready"),
            Err(e) => eprintln!("boutique: not ready: {e}"),
        }
    });
    let served: Vec<_> =
        nodes.into_iter().map(|node| tokio::spawn(async move { node.serve_until_signal().await })).collect();
    for node in served {
        node.await??;
    }
    Ok(())
}
