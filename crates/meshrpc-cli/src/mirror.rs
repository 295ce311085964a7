//! `meshrpc mirror greeter --to v2 --percent 10`: copy a share of a service's calls of
//! idempotent methods to another version, compare the answers, drop the copies.

use crate::join::{join, JoinArgs};

#[derive(clap::Args)]
pub(crate) struct MirrorArgs {
    /// The service whose calls to mirror.
    service: String,
    /// The version the copies go to.
    #[arg(long, required_unless_present = "clear")]
    to: Option<String>,
    /// Share of the calls copied, 1 to 100.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100))]
    percent: u32,
    /// Remove the rule.
    #[arg(long, conflicts_with = "to")]
    clear: bool,
    #[command(flatten)]
    join: JoinArgs,
}

pub(crate) async fn run(args: MirrorArgs) -> Result<(), Box<dyn std::error::Error>> {
    let cluster =
        join(&args.join, "a node to pass the rule on", |v| v.members.iter().any(|m| m.addr.is_some())).await?;
    let to = args.to.clone().map(|v| (v, args.percent));
    let rule = cluster.spread_mirror(&args.service, to).await?;
    match rule.weights.first() {
        None => println!("{}: mirroring cleared", args.service),
        Some((version, percent)) => println!(
            "{}: {percent} % of the calls of its idempotent methods are mirrored to version `{version}` (set by {}); callers count same and different answers (`meshrpc_mirror_*` on their admin port)",
            args.service, rule.set_by
        ),
    }
    Ok(())
}
