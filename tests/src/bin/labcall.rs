//! A caller process: joins the cluster as a client, waits for `lab`, makes calls and
//! prints one JSON report on stdout. Used by the cluster tests.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use clap::Parser;
use meshrpc::{cluster::Policy, ClusterBuilder};
use meshrpc_tests::lab::{Lab, LabClient, LabError};
use serde::Serialize;

#[derive(Parser)]
struct Args {
    /// Mutual TLS credentials (`ca.pem`, `node.pem`, `node.key`, `gossip.key`).
    #[arg(long, env = "MESHRPC_TLS_DIR")]
    tls_dir: Option<std::path::PathBuf>,
    #[arg(long, value_delimiter = ',')]
    nodes: Vec<String>,
    #[arg(long, default_value = "test")]
    tag: String,
    /// Stop after this many calls...
    #[arg(long)]
    calls: Option<u64>,
    /// ...or after this long.
    #[arg(long, default_value_t = 0)]
    duration_ms: u64,
    #[arg(long, default_value_t = 1)]
    concurrency: u64,
    /// Sticky keys: call i uses key `key-(i % keys)`.
    #[arg(long)]
    keys: Option<u64>,
    /// Wait until this many replicas of `lab` are in the view before calling.
    #[arg(long, default_value_t = 1)]
    replicas: usize,
    #[arg(long, default_value = "rr")]
    policy: String,
    /// Each call sleeps this long on the server (0: `whoami` only).
    #[arg(long, default_value_t = 0)]
    sleep_ms: u64,
    /// Each worker waits this long after each call (paces the caller, one call a turn).
    #[arg(long, default_value_t = 0)]
    pause_ms: u64,
    #[arg(long, default_value_t = 5000)]
    timeout_ms: u64,
    #[arg(long, default_value_t = 10_000)]
    wait_ms: u64,
    /// Keep to a subset of this many replicas (0: all).
    #[arg(long, default_value_t = 0)]
    subset: usize,
    /// Wait until this many callers (`labcall` members) are in the view before calling
    /// (the subsets are cut from the callers a caller sees).
    #[arg(long, default_value_t = 0)]
    callers: usize,
}

#[derive(Default, Serialize)]
struct Report {
    join_ms: u64,
    first_call_ms: u64,
    ok: u64,
    errors: BTreeMap<String, u64>,
    per_node: BTreeMap<String, u64>,
    /// Replicas refused for gossiping a service their certificate does not carry.
    unproven: Vec<String>,
    /// Unix ms of each node's first answer.
    first_seen: BTreeMap<String, u64>,
    /// Answers per node per 100 ms bucket (unix ms).
    node_buckets: BTreeMap<String, BTreeMap<u64, u64>>,
    keys: BTreeMap<String, String>,
    /// Calls whose sticky key landed on another node than the key's earlier calls.
    key_moves: u64,
    max_latency_ms: u64,
    /// The most mesh connections this caller held open at once (sampled every 500 ms).
    peers_connected_max: usize,
    /// (unix ms of the 100 ms bucket, ok, errors)
    buckets: BTreeMap<u64, (u64, u64)>,
    wait_error: Option<String>,
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    meshrpc::telemetry::Telemetry::from_env().install();
    let args = Args::parse();
    let start = Instant::now();
    let policy = if args.policy == "p2c" { Policy::LeastLoaded } else { Policy::RoundRobin };
    let cluster = ClusterBuilder::from_env("labcall")
        .tag(&args.tag)
        .seeds(&args.nodes)
        .balance(policy)
        .subset(args.subset)
        .tls_dir(args.tls_dir)
        .start()
        .await
        .unwrap();
    let report = Arc::new(Mutex::new(Report::default()));
    if let Err(e) = cluster.wait_for(&[LabClient::SPEC], Duration::from_millis(args.wait_ms)).await {
        report.lock().unwrap().wait_error = Some(e.to_string());
        println!("{}", serde_json::to_string(&*report.lock().unwrap()).unwrap());
        return;
    }
    let fingerprint = LabClient::SPEC.fingerprint();
    // While it waits, what it sees (stderr, every 5 s): why a caller was slow to start.
    let watching = {
        let (cluster, fingerprint) = (cluster.clone(), fingerprint.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                let view = cluster.view();
                let replicas = view.replicas("lab", Some(&fingerprint)).count();
                let states: Vec<String> = view.members.iter().map(|m| format!("{}:{:?}", m.name, m.state)).collect();
                eprintln!(
                    "labcall: waiting {} ms: {replicas} replicas of lab, {} members: {}",
                    start.elapsed().as_millis(),
                    view.members.len(),
                    states.join(" ")
                );
            }
        })
    };
    let callers = args.callers;
    let enough = cluster.wait_view(|v| {
        v.replicas("lab", Some(&fingerprint)).count() >= args.replicas
            && v.members.iter().filter(|m| m.name == "labcall").count() >= callers
    });
    let _ = tokio::time::timeout(Duration::from_millis(args.wait_ms), enough).await;
    watching.abort();
    report.lock().unwrap().join_ms = start.elapsed().as_millis() as u64;
    println!("calling");

    let lab = LabClient::new(cluster.client(LabClient::SPEC)).with_timeout(Duration::from_millis(args.timeout_ms));
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let stop_at = (args.duration_ms > 0).then(|| Instant::now() + Duration::from_millis(args.duration_ms));
    let workers: Vec<_> = (0..args.concurrency)
        .map(|_| {
            let (lab, next, report) = (lab.clone(), next.clone(), report.clone());
            let (limit, keys, sleep_ms, pause_ms) = (args.calls, args.keys, args.sleep_ms, args.pause_ms);
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if limit.is_some_and(|l| i >= l) || stop_at.is_some_and(|t| Instant::now() >= t) {
                        return;
                    }
                    if pause_ms > 0 {
                        tokio::time::sleep(Duration::from_millis(pause_ms)).await;
                    }
                    let key = keys.map(|k| format!("key-{}", i % k));
                    let client = match &key {
                        Some(k) => lab.with_key(k.as_str()),
                        None => lab.clone(),
                    };
                    let began = Instant::now();
                    let answer: Result<String, LabError> = async {
                        if sleep_ms > 0 {
                            client.sleep(sleep_ms).await?;
                        }
                        client.whoami().await
                    }
                    .await;
                    let took = began.elapsed().as_millis() as u64;
                    let now = unix_ms();
                    let mut r = report.lock().unwrap();
                    r.max_latency_ms = r.max_latency_ms.max(took);
                    let bucket = r.buckets.entry(now / 100 * 100).or_default();
                    match answer {
                        Ok(node) => {
                            bucket.0 += 1;
                            r.ok += 1;
                            if r.first_call_ms == 0 {
                                r.first_call_ms = start.elapsed().as_millis() as u64;
                            }
                            *r.per_node.entry(node.clone()).or_default() += 1;
                            r.first_seen.entry(node.clone()).or_insert(now);
                            *r.node_buckets.entry(node.clone()).or_default().entry(now / 100 * 100).or_default() += 1;
                            if let Some(k) = key {
                                if r.keys.insert(k, node.clone()).is_some_and(|before| before != node) {
                                    r.key_moves += 1;
                                }
                            }
                        }
                        Err(e) => {
                            bucket.1 += 1;
                            let code = match e {
                                LabError::Rpc(e) => e.code().to_owned(),
                                other => other.to_string(),
                            };
                            *r.errors.entry(code).or_default() += 1;
                        }
                    }
                }
            })
        })
        .collect();
    // Connections open: a peer with an answered keepalive (one a second) has one.
    let sampler = {
        let (cluster, report) = (cluster.clone(), report.clone());
        tokio::spawn(async move {
            loop {
                let view = cluster.view();
                let open =
                    view.members.iter().filter_map(|m| m.addr).filter(|a| cluster.peer_latency(*a).is_some()).count();
                {
                    let mut r = report.lock().unwrap();
                    r.peers_connected_max = r.peers_connected_max.max(open);
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    };
    for w in workers {
        w.await.unwrap();
    }
    sampler.abort();
    report.lock().unwrap().unproven =
        cluster.unproven_replicas().into_iter().map(|u| format!("{}/{}", u.node, u.service)).collect();
    println!("{}", serde_json::to_string(&*report.lock().unwrap()).unwrap());
}
