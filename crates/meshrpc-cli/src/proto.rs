//! `meshrpc proto`: a `.proto` file per service of the cluster, as the gateway serves it
//! over gRPC (messages from the JSON Schemas of services that publish them; docs/grpc.md).

use std::time::Duration;

use crate::join::{join, JoinArgs};

#[derive(clap::Args)]
pub(crate) struct ProtoArgs {
    /// Only these services (all of the cluster's by default).
    services: Vec<String>,
    /// Write `{package}.proto` files into this directory instead of printing them.
    #[arg(long, short = 'o')]
    out: Option<std::path::PathBuf>,
    #[command(flatten)]
    join: JoinArgs,
}

pub(crate) async fn run(args: ProtoArgs) -> Result<(), Box<dyn std::error::Error>> {
    let cluster = join(&args.join, "cluster", |v| v.members.iter().any(|m| !m.services.is_empty())).await?;
    tokio::time::sleep(Duration::from_millis(300)).await; // let gossip settle
    let known: Vec<String> = cluster.services().into_iter().map(|s| s.name).collect();
    let wanted = if args.services.is_empty() { known.clone() } else { args.services.clone() };
    if let Some(unknown) = wanted.iter().find(|s| !known.contains(s)) {
        return Err(format!("unknown service `{unknown}` (the cluster serves: {})", known.join(", ")).into());
    }
    if let Some(dir) = &args.out {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    for service in wanted {
        let shape = cluster.grpc_shape(&service, Duration::from_secs(2)).await?;
        let text = shape.proto_file();
        match &args.out {
            Some(dir) => {
                let path = dir.join(format!("{}.proto", meshrpc::grpc::package_of(&service)));
                std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
                println!("{}", path.display());
            }
            None => println!("{text}"),
        }
    }
    Ok(())
}
