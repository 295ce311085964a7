//! `meshrpc-sim`: runs simulations of a mesh, one per seed, and prints each failing seed
//! with the command that replays it.
//!
//! `meshrpc-sim [--seeds FROM..TO | --seed S] [--nodes N | --nodes A..B] [--log] [--broken-retries]`

use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let (mut seeds, mut nodes, mut print_log, mut broken) = (1..=20u64, (8usize, 8usize), false, false);
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_default();
        match arg.as_str() {
            "--seed" => {
                let s: u64 = value().parse().expect("--seed N");
                seeds = s..=s;
            }
            "--seeds" => {
                let v = value();
                let (from, to) = v.split_once("..").expect("--seeds FROM..TO");
                seeds = from.parse().expect("FROM")..=to.parse().expect("TO");
            }
            "--nodes" => {
                let v = value();
                nodes = match v.split_once("..") {
                    Some((a, b)) => (a.parse().expect("--nodes A..B"), b.parse().expect("--nodes A..B")),
                    None => {
                        let n = v.parse().expect("--nodes N");
                        (n, n)
                    }
                };
            }
            "--broken-retries" => broken = true,
            "--log" => print_log = true,
            other => {
                eprintln!("unknown argument {other}\nusage: meshrpc-sim [--seeds FROM..TO | --seed S] [--nodes N | --nodes A..B] [--log] [--broken-retries]");
                return ExitCode::from(2);
            }
        }
    }
    let (mut failed, mut runs) = (Vec::new(), 0);
    for seed in seeds {
        // A range of sizes: each seed picks its own.
        let nodes = nodes.0 + (meshrpc_sim::Rng::new(seed).below((nodes.1.max(nodes.0) - nodes.0 + 1) as u64) as usize);
        let config = meshrpc_sim::Config { broken_retries: broken, ..meshrpc_sim::Config::new(seed, nodes) };
        let started = std::time::Instant::now();
        let report = meshrpc_sim::run(&config);
        runs += 1;
        if print_log {
            for line in &report.log {
                println!("{line}");
            }
        }
        let verdict = if report.violations.is_empty() { "ok" } else { "FAILED" };
        println!(
            "seed {seed} nodes {nodes}: {verdict} ({} calls, {} failed with a code, {:.1} s)",
            report.calls,
            report.failed,
            started.elapsed().as_secs_f64()
        );
        if !report.violations.is_empty() {
            for v in &report.violations {
                println!("  {v}");
            }
            println!("  replay: {}", config.replay());
            failed.push(seed);
        }
    }
    if failed.is_empty() {
        println!("{runs} seeds passed");
        ExitCode::SUCCESS
    } else {
        println!("{} of {runs} seeds failed: {failed:?}", failed.len());
        ExitCode::FAILURE
    }
}
