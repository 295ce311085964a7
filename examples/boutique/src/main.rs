//! `boutique --placement placements/three.toml --group 1 --nodes 127.0.0.1:7001`: one group
//! of the app as a node; without `--group`, every group in this process, each its own node.

use std::path::PathBuf;

use clap::Parser;
use meshrpc::ClusterBuilder;

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
    /// Mesh address of the node (with `--group`); without it, the first group's, the
    /// others on the same IP (each on a free port). Port 0 picks a free port.
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
    let cli = Cli::parse();
    let app = boutique::placement::app();
    let placement = match app.load_placement(&cli.placement) {
        Ok(placement) => placement,
        Err(e) => return fail(e),
    };
    let node = || {
        let builder = ClusterBuilder::from_env("boutique").tag(&cli.tag).seeds(&cli.nodes).listen(&cli.listen_addr);
        match &cli.app_version {
            Some(version) => builder.service_version(version),
            None => builder,
        }
    };
    match app.run(&placement, cli.group, node).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

fn fail(e: meshrpc::app::AppError) -> std::process::ExitCode {
    eprintln!("boutique: {e}");
    std::process::ExitCode::FAILURE
}
