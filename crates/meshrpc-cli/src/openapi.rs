//! `meshrpc openapi`: the OpenAPI 3.1 document of every service in the cluster, as the
//! gateway serves it at /openapi.json (JSON Schemas from services that publish them).

use std::time::Duration;

use crate::join::{join, JoinArgs};

#[derive(clap::Args)]
pub(crate) struct OpenapiArgs {
    /// Write it to this file instead of standard output.
    #[arg(long, short = 'o')]
    out: Option<std::path::PathBuf>,
    /// Print TypeScript types instead (for a web front end calling the gateway).
    #[arg(long)]
    typescript: bool,
    #[command(flatten)]
    join: JoinArgs,
}

pub(crate) async fn run(args: OpenapiArgs) -> Result<(), Box<dyn std::error::Error>> {
    let cluster = join(&args.join, "cluster", |v| v.members.iter().any(|m| !m.services.is_empty())).await?;
    tokio::time::sleep(Duration::from_millis(300)).await; // let gossip settle
    let openapi = cluster.openapi(Duration::from_secs(2)).await;
    let document = if args.typescript {
        crate::typescript::declarations(&openapi)
    } else {
        serde_json::to_string_pretty(&openapi)?
    };
    match args.out {
        Some(path) => std::fs::write(&path, document + "\n").map_err(|e| format!("{}: {e}", path.display()))?,
        None => println!("{document}"),
    }
    Ok(())
}
