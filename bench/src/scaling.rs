//! The multi-core view: throughput over several connections, the server's runtime
//! pinned to 1 or 2 workers.

use std::sync::Arc;

use crate::{measure::throughput, systems, systems::Client, Opts, Server};

/// Throughput with several connections, the server's runtime at 1 and 2 workers.
pub(crate) struct Scaling {
    system: &'static str,
    workers: usize,
    connections: usize,
    calls_per_s: f64,
    p99_us: f64,
}

pub(crate) async fn scaling(opts: &Opts) -> Vec<Scaling> {
    let mut out = Vec::new();
    for system in ["raw floor", "meshrpc postcard", "tonic", "tarpc"] {
        let kind = match system {
            "raw floor" => "raw",
            "meshrpc postcard" => "meshrpc",
            other => other,
        };
        for workers in [1, 2] {
            let server = Server::start_with_workers(kind, &["127.0.0.1:0"], Some(workers)).await;
            for connections in [4, 16] {
                let mut clients: Vec<Arc<dyn Client>> = Vec::new();
                for _ in 0..connections {
                    clients.push(match system {
                        "raw floor" => Arc::new(systems::RawMux::connect(server.addr).await),
                        "meshrpc postcard" => {
                            Arc::new(systems::MeshrpcClient::connect(server.addr, meshrpc::Codec::Postcard).await)
                        }
                        "tonic" => Arc::new(systems::TonicClient::connect(server.addr).await),
                        _ => Arc::new(systems::TarpcClient::connect(server.addr).await),
                    });
                }
                let (calls_per_s, p99_us) = throughput(clients, opts.in_flight, opts.secs / 1.5).await;
                out.push(Scaling { system, workers, connections, calls_per_s, p99_us });
            }
        }
    }
    out
}

pub(crate) fn print_scaling(rows: &[Scaling], in_flight: usize) {
    println!();
    println!(
        "Multi-core view: {in_flight} calls in flight on each of 4 or 16 connections (one client process with 2 workers), the server's runtime at 1 or 2 workers; calls/s (p99 µs), and ÷ the raw multiplexer in the same cell."
    );
    println!();
    println!("| system | 1 worker, 4 conns | 1 worker, 16 conns | 2 workers, 4 conns | 2 workers, 16 conns |");
    println!("|---|---|---|---|---|");
    let floor = |w: usize, c: usize| {
        rows.iter().find(|r| r.system == "raw floor" && r.workers == w && r.connections == c).map(|r| r.calls_per_s)
    };
    let mut systems: Vec<&str> = rows.iter().map(|r| r.system).collect();
    systems.dedup();
    for system in systems {
        let cells: Vec<String> = [(1, 4), (1, 16), (2, 4), (2, 16)]
            .iter()
            .map(|&(w, c)| {
                rows.iter()
                    .find(|r| r.system == system && r.workers == w && r.connections == c)
                    .map(|r| {
                        let ratio = floor(w, c).map(|f| r.calls_per_s / f).unwrap_or(f64::NAN);
                        format!("{:.0} ({:.0}) = {ratio:.2}", r.calls_per_s, r.p99_us)
                    })
                    .unwrap_or_default()
            })
            .collect();
        println!("| {system} | {} |", cells.join(" | "));
    }
}
