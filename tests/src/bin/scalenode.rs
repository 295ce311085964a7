//! A member of the scale scenario (tests/tests/scale.rs): a node serving `Lab` that
//! reports what the harness measures from outside.
//!
//! - `listening on ADDR` once it accepts connections;
//! - `view N AT` each time the number of `lab` replicas it sees serving changes (`AT`:
//!   Unix ms), so the harness knows when every node sees every other;
//! - on SIGUSR1, a round of calls to every replica it sees (round robin, through the
//!   mesh even to itself), then `reached K failed F`: K distinct replicas answered.

use std::{
    collections::BTreeSet,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use clap::Parser;
use meshrpc::{
    cluster::{Colocated, Policy},
    ClusterBuilder,
};
use meshrpc_tests::lab::{Lab, LabClient, LabNode, LabServer};

#[derive(Parser)]
struct Args {
    #[arg(long)]
    listen: String,
    #[arg(long)]
    name: String,
    #[arg(long, value_delimiter = ',')]
    nodes: Vec<String>,
    #[arg(long)]
    tag: String,
}

fn unix_ms() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis()
}

#[tokio::main]
async fn main() -> Result<(), meshrpc::Error> {
    meshrpc::init_logging("warn");
    meshrpc::telemetry::Telemetry::from_env().install();
    let _ = meshrpc::server::raise_fd_limit();
    let args = Args::parse();
    let cluster = ClusterBuilder::from_env(args.name.clone())
        .tag(args.tag)
        .seeds(&args.nodes)
        .listen(args.listen)
        .balance(Policy::RoundRobin)
        .colocated(Colocated::Off)
        .start()
        .await?;
    cluster.publish(LabServer::new(LabNode::new(args.name.clone())));
    println!("listening on {}", cluster.local_addr().expect("listening"));

    let fingerprint = LabClient::SPEC.fingerprint();
    let watched = cluster.clone();
    tokio::spawn(async move {
        let mut last = usize::MAX;
        loop {
            let view = watched.wait_view(|v| v.replicas("lab", Some(&fingerprint)).count() != last).await;
            last = view.replicas("lab", Some(&fingerprint)).count();
            println!("view {last} {}", unix_ms());
        }
    });

    let caller = cluster.clone();
    tokio::spawn(async move {
        let mut asked = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1()).unwrap();
        let lab = LabClient::new(caller.client(LabClient::SPEC)).with_timeout(Duration::from_secs(2));
        while asked.recv().await.is_some() {
            let fingerprint = LabClient::SPEC.fingerprint();
            let replicas = caller.view().replicas("lab", Some(&fingerprint)).count();
            let (mut reached, mut failed) = (BTreeSet::new(), 0);
            // Round robin: every replica comes up within one pass. Passes go on (for 10 s at
            // most, a pause between them) until each was reached: a replica whose connect is
            // still under way or timed out on a loaded machine (every node connects to every
            // other at once) is skipped by the picker, and answers a later pass.
            let until = std::time::Instant::now() + Duration::from_secs(10);
            while std::time::Instant::now() < until {
                for _ in 0..replicas {
                    match lab.whoami().await {
                        Ok(name) => {
                            reached.insert(name);
                        }
                        Err(e) => {
                            failed += 1;
                            println!("call failed: {e}");
                        }
                    }
                }
                if reached.len() >= replicas {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let view = caller.view();
            let missed: Vec<&str> = view
                .replicas("lab", Some(&fingerprint))
                .map(|m| m.name.as_str())
                .filter(|name| !reached.contains(*name))
                .collect();
            if !missed.is_empty() {
                println!("call failed: never reached {missed:?}; ejected {:?}", caller.resilience_stats().ejected);
            }
            println!("reached {} failed {failed}", reached.len());
        }
    });
    cluster.serve_until_signal().await
}
