//! `meshrpc split greeter v1=90 v2=10`: shift a service's calls between its versions,
//! cluster-wide, at runtime; `--clear` ends the rule.

use crate::join::{join, JoinArgs};

#[derive(clap::Args)]
pub(crate) struct SplitArgs {
    /// The service whose calls to split.
    service: String,
    /// Shares per version, e.g. `v1=90 v2=10` (weights, not necessarily percentages).
    #[arg(required_unless_present = "clear")]
    weights: Vec<String>,
    /// Remove the rule: calls go to any replica again.
    #[arg(long, conflicts_with = "weights")]
    clear: bool,
    #[command(flatten)]
    join: JoinArgs,
}

pub(crate) async fn run(args: SplitArgs) -> Result<(), Box<dyn std::error::Error>> {
    let weights =
        if args.clear { Vec::new() } else { meshrpc::cluster::Split::parse_weights(&args.weights.join(" "))? };
    let cluster =
        join(&args.join, "a node to pass the rule on", |v| v.members.iter().any(|m| m.addr.is_some())).await?;
    // The rule must reach a node that stays before this one leaves.
    let split = cluster.spread_split(&args.service, weights).await?;
    let versions = cluster.services().into_iter().find(|s| s.name == args.service).map(|s| s.versions);
    match (&split.weights[..], versions) {
        ([], _) => println!("{}: split cleared; calls go to any replica", args.service),
        (weights, versions) => {
            let shares: Vec<String> = weights.iter().map(|(v, w)| format!("{v}={w}")).collect();
            println!("{}: split {} (set by {})", args.service, shares.join(" "), split.set_by);
            let versions = versions.unwrap_or_default();
            for (version, _) in weights.iter().filter(|(v, w)| *w > 0 && !versions.contains_key(v)) {
                println!("note: no replica runs version `{version}` yet; its share goes to the others until one does");
            }
        }
    }
    Ok(())
}
