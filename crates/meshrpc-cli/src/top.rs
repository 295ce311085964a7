//! `meshrpc top`: per service and method, cluster-wide requests/s, success rate and
//! p50/p95/p99 latency, refreshed live in the terminal (as `linkerd viz stat`); `--json`
//! for scripts. Gathered from every node over the mesh (`meshrpc.stats`).

use std::time::Duration;

use meshrpc::cluster::{MeshSnapshot, MethodRates};
use serde::Serialize;

use crate::join::{join, JoinArgs};

#[derive(clap::Args)]
pub(crate) struct TopArgs {
    /// Print JSON for scripts (one object per refresh).
    #[arg(long)]
    json: bool,
    /// Seconds between refreshes (the rates are over this interval).
    #[arg(long, default_value_t = 2.0)]
    interval: f64,
    /// Print one refresh and exit.
    #[arg(long)]
    once: bool,
    #[command(flatten)]
    join: JoinArgs,
}

/// How long a node may take to answer before it is shown as unreachable.
const NODE_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Serialize)]
struct Top {
    interval_s: f64,
    methods: Vec<MethodRates>,
    edges: Vec<meshrpc::cluster::Edge>,
    /// Nodes whose figures could not be had, with why.
    unreachable: Vec<(String, String)>,
}

pub(crate) async fn run(args: TopArgs) -> Result<(), Box<dyn std::error::Error>> {
    let cluster = join(&args.join, "cluster", |v| v.members.len() > 1).await?;
    tokio::time::sleep(Duration::from_millis(300)).await; // let gossip settle
    let interval = Duration::from_secs_f64(args.interval.max(0.1));
    let mut before = cluster.gather_stats(NODE_TIMEOUT).await;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = meshrpc::wait_for_signal() => return Ok(()),
        }
        let after = cluster.gather_stats(NODE_TIMEOUT).await;
        let top = figures(&before, &after);
        if args.json {
            println!("{}", serde_json::to_string(&top)?);
        } else {
            if !args.once {
                print!("\x1b[2J\x1b[H");
            }
            print_table(&args.join.tag, &top);
        }
        if args.once {
            return Ok(());
        }
        before = after;
    }
}

fn figures(before: &MeshSnapshot, after: &MeshSnapshot) -> Top {
    let unreachable = after
        .nodes
        .iter()
        .filter(|(m, _)| !m.is_self)
        .filter_map(|(m, s)| s.as_ref().err().map(|e| (m.name.clone(), e.to_string())))
        .collect();
    let edges = meshrpc::cluster::edges(before, after).into_iter().filter(|e| e.from != "meshrpc-cli").collect();
    let methods = meshrpc::cluster::method_rates(before, after)
        .into_iter()
        .filter(|m| m.service != "meshrpc") // the figures' own calls
        .collect();
    Top { interval_s: after.at.saturating_duration_since(before.at).as_secs_f64(), methods, edges, unreachable }
}

fn ms(seconds: Option<f64>) -> String {
    seconds.map_or("-".into(), |s| if s >= 20.0 { ">10s".into() } else { format!("{}ms", s * 1e3) })
}

fn print_table(tag: &str, top: &Top) {
    println!("cluster tag: {tag}  (rates over the last {:.1} s)\n", top.interval_s);
    println!("{:<28} {:>9} {:>9} {:>9} {:>9} {:>9}", "SERVICE.METHOD", "RPS", "SUCCESS", "P50", "P95", "P99");
    for m in &top.methods {
        let success = m.success_rate.map_or("-".into(), |r| format!("{:.2}%", r * 100.0));
        println!(
            "{:<28} {:>9.1} {:>9} {:>9} {:>9} {:>9}",
            format!("{}.{}", m.service, m.method),
            m.rps,
            success,
            ms(m.p50),
            ms(m.p95),
            ms(m.p99)
        );
    }
    if !top.edges.is_empty() {
        println!("\n{:<16} {:<16} {:<14} {:>9} {:>9}", "FROM", "TO", "SERVICE", "RPS", "SUCCESS");
        for e in &top.edges {
            let success = e.success_rate.map_or("-".into(), |r| format!("{:.2}%", r * 100.0));
            println!("{:<16} {:<16} {:<14} {:>9.1} {:>9}", e.from, e.to, e.service, e.rps, success);
        }
    }
    for (node, why) in &top.unreachable {
        println!("UNREACHABLE: {node}: {why}");
    }
}
