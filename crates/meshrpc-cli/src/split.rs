//! `meshrpc split greeter v1=90 v2=10`: shift a service's calls between its versions,
//! cluster-wide, at runtime; `--clear` ends the rule.

use crate::join::{join, JoinArgs};

#[derive(clap::Args)]
pub(crate) struct SplitArgs {
    /// The service whose calls to split (none with `--app`).
    #[arg(required_unless_present = "app")]
    service: Option<String>,
    /// Shares per version, e.g. `v1=90 v2=10` (weights, not necessarily percentages).
    weights: Vec<String>,
    /// Split whole requests: each request that enters the application (at the gateway,
    /// or a first call from outside any handler) gets a version by these weights, and
    /// every service it reaches serves it at that version.
    #[arg(long)]
    app: bool,
    /// Remove the rule: calls go to any replica again.
    #[arg(long, conflicts_with = "weights")]
    clear: bool,
    #[command(flatten)]
    join: JoinArgs,
}

pub(crate) async fn run(args: SplitArgs) -> Result<(), Box<dyn std::error::Error>> {
    // With `--app` there is no service: what clap took for one is the first share.
    let (service, mut shares) = match (args.app, args.service) {
        (true, first) => (meshrpc::cluster::APP_SPLIT.to_owned(), first.into_iter().collect()),
        (false, Some(service)) => (service, Vec::new()),
        (false, None) => unreachable!("clap requires a service without --app"),
    };
    shares.extend(args.weights);
    match (args.clear, shares.is_empty()) {
        (true, false) => return Err("--clear takes no shares".into()),
        (false, true) => return Err("give shares per version (`v1=90 v2=10`), or --clear".into()),
        _ => {}
    }
    let weights = if args.clear { Vec::new() } else { meshrpc::cluster::Split::parse_weights(&shares.join(" "))? };
    let cluster =
        join(&args.join, "a node to pass the rule on", |v| v.members.iter().any(|m| m.addr.is_some())).await?;
    // The rule must reach a node that stays before this one leaves.
    let split = cluster.spread_split(&service, weights).await?;
    let (name, versions) = match args.app {
        true => ("application".to_owned(), Some(cluster.app_versions().versions)),
        false => (service.clone(), cluster.services().into_iter().find(|s| s.name == service).map(|s| s.versions)),
    };
    match (&split.weights[..], versions) {
        ([], _) if args.app => println!("{name}: split cleared; requests are not pinned to a version"),
        ([], _) => println!("{name}: split cleared; calls go to any replica"),
        (weights, versions) => {
            let shares: Vec<String> = weights.iter().map(|(v, w)| format!("{v}={w}")).collect();
            println!("{name}: split {} (set by {})", shares.join(" "), split.set_by);
            let versions = versions.unwrap_or_default();
            for (version, _) in weights.iter().filter(|(v, w)| *w > 0 && !versions.contains_key(v)) {
                println!("note: no replica runs version `{version}` yet; its share goes to the others until one does");
            }
        }
    }
    Ok(())
}
