//! Issue 15: a mesh of many nodes, each its own host (a network namespace with its own
//! IP), joined through one seed: 8, 16, 32 and 64 nodes, one size after the other. For
//! each it measures what an operator sizing a mesh asks, prints a table, and asserts
//! what must hold at any size: every node sees every other, every node reaches every
//! other, connections stay at one per caller and peer, a killed node costs at most the
//! calls in flight on it and every node drops it from its view, a new node gets calls.
//! Heavy tier (`./test.sh --heavy`), as root; each phase is bounded in time.

use std::time::{Duration, Instant};

use meshrpc_tests::{
    harness::{eventually, last_failure_ms, report_errors, unix_ms, Caller, Node},
    netns::Net,
};

const SCALENODE: &str = env!("CARGO_BIN_EXE_scalenode");
const LABCALL: &str = env!("CARGO_BIN_EXE_labcall");
const SIZES: [u8; 4] = [8, 16, 32, 64];
const SUBNET: u8 = 40;
const CALLER: u8 = 200;
/// The caller's concurrency: the most calls that can be in flight on a killed node.
const IN_FLIGHT: u64 = 8;
/// Gossip is measured over this window, after the mesh converged and settled.
const IDLE: Duration = Duration::from_secs(5);
/// Guards against hanging (not claims about speed).
const CONVERGE_WITHIN: Duration = Duration::from_secs(60);
const DETECT_WITHIN: Duration = Duration::from_secs(60);

/// What one size measured.
struct Row {
    nodes: u8,
    converged_ms: u64,
    gossip_bytes_per_s: f64,
    gossip_packets_per_s: f64,
    rss_kib_avg: u64,
    rss_kib_max: u64,
    connections_avg: f64,
    connections_max: usize,
    kill_failed: u64,
    routed_around_ms: u64,
    detected_ms: u64,
    new_node_called_ms: u64,
    new_node_seen_ms: u64,
}

/// Whether this machine and tier run the scenario (else it says why).
fn runs() -> bool {
    meshrpc_tests::tier::heavy("the scale scenario") && meshrpc_tests::tier::netns()
}

fn addr(h: u8) -> String {
    format!("10.213.{SUBNET}.{h}:11999")
}

/// `view N AT` lines: the first time at or after `since` that the node saw `count`.
fn saw(node: &Node, count: u8, since: u64) -> Option<u64> {
    node.output().iter().find_map(|l| {
        let rest = l.strip_prefix(&format!("view {count} "))?;
        rest.trim().parse::<u64>().ok().filter(|at| *at >= since)
    })
}

/// Waits until each of `nodes` saw `count` replicas at or after `since`; the latest time.
async fn all_saw(nodes: &[(u8, Node)], count: u8, since: u64, within: Duration) -> u64 {
    let latest = eventually(within, || async {
        nodes.iter().map(|(_, n)| saw(n, count, since)).collect::<Option<Vec<u64>>>()?.into_iter().max()
    })
    .await;
    latest.unwrap_or_else(|| {
        let behind: Vec<u8> = nodes.iter().filter(|(_, n)| saw(n, count, since).is_none()).map(|(h, _)| *h).collect();
        panic!("hosts {behind:?} never saw {count} replicas within {within:?}")
    })
}

fn rss_kib(node: &Node) -> u64 {
    let pid = node.child.id().expect("running");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

async fn start_node(net: &Net, h: u8, tag: &str) -> Node {
    let (listen, name) = (addr(h), format!("n{h}"));
    let mut args = vec!["--listen", &listen, "--name", &name, "--tag", tag];
    let seed = addr(1);
    if h != 1 {
        args.extend(["--nodes", &seed]);
    }
    net.start(h, SCALENODE, &args).await
}

fn caller(net: &Net, tag: &str, replicas: u8, duration_ms: u64) -> Caller {
    let (bin, mut args) = net.exec_args(CALLER, LABCALL);
    let more = [
        "--nodes".to_owned(),
        addr(1),
        "--tag".into(),
        tag.into(),
        "--replicas".into(),
        replicas.to_string(),
        "--duration-ms".into(),
        duration_ms.to_string(),
        "--concurrency".into(),
        IN_FLIGHT.to_string(),
        "--timeout-ms".into(),
        "2000".into(),
        "--wait-ms".into(),
        "30000".into(),
    ];
    args.extend(more);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Caller::start(&bin, &args)
}

async fn measure(net: &Net, n: u8) -> Row {
    let tag = format!("scale{n}");
    let mut nodes: Vec<(u8, Node)> = Vec::new();
    for h in 1..=n {
        nodes.push((h, start_node(net, h, &tag).await));
    }
    let all_started = unix_ms();

    // Convergence: every node sees all n (itself included) serving.
    let converged = all_saw(&nodes, n, 0, CONVERGE_WITHIN).await;
    let converged_ms = converged.saturating_sub(all_started);

    // Idle: what gossip costs each node (no mesh connection is open yet).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before: Vec<_> = nodes.iter().map(|(h, _)| net.traffic(*h)).collect();
    let t0 = Instant::now();
    tokio::time::sleep(IDLE).await;
    let secs = t0.elapsed().as_secs_f64();
    let after: Vec<_> = nodes.iter().map(|(h, _)| net.traffic(*h)).collect();
    let sent: u64 = before.iter().zip(&after).map(|(b, a)| a.1 - b.1).sum();
    let packets: u64 = before.iter().zip(&after).map(|(b, a)| a.3 - b.3).sum();
    let gossip_bytes_per_s = sent as f64 / secs / n as f64;
    let gossip_packets_per_s = packets as f64 / secs / n as f64;
    let rss: Vec<u64> = nodes.iter().map(|(_, node)| rss_kib(node)).collect();

    // All to all: every node calls every replica it sees, itself included, through the mesh.
    for (_, node) in &nodes {
        let pid = node.child.id().expect("running").to_string();
        let sent = std::process::Command::new("kill").args(["-USR1", &pid]).status().unwrap();
        assert!(sent.success());
    }
    for (h, node) in &nodes {
        let line = node.line("reached ", Duration::from_secs(60)).await;
        let line = line.unwrap_or_else(|| panic!("host {h} did not finish its round of calls"));
        let why: Vec<String> = node.output().into_iter().filter(|l| l.starts_with("call failed")).collect();
        assert_eq!(line, format!("{n} failed 0"), "host {h}: reached {line}: {why:?}");
    }
    let connections: Vec<usize> = nodes.iter().map(|(h, _)| net.established(*h)).collect();
    let connections_max = *connections.iter().max().unwrap();
    // One connection to each peer it calls and one from each peer calling it; its
    // connection to itself shows both ends: 2 n at most.
    assert!(connections_max <= 2 * n as usize, "a node holds {connections_max} connections in a mesh of {n}");

    // Kill -9 the last node under load from a caller on its own host.
    let mut load = caller(net, &tag, n, 4000);
    load.calling().await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let killed = unix_ms();
    let (victim, mut gone) = nodes.pop().unwrap();
    gone.kill().await;
    let report = load.report().await;
    let kill_failed = report_errors(&report);
    let last_error = last_failure_ms(&report).unwrap_or(killed);
    assert!(kill_failed <= IN_FLIGHT, "{kill_failed} calls failed with {IN_FLIGHT} in flight: {}", report["errors"]);
    assert!(report["max_latency_ms"].as_u64().unwrap() < 2000, "a call hung to its deadline");
    assert!(report["ok"].as_u64().unwrap() > 0);
    let detected = all_saw(&nodes, n - 1, killed, DETECT_WITHIN).await;

    // A new node on a host of its own: how soon callers use it and every node sees it.
    let load = {
        let mut load = caller(net, &tag, n - 1, 5000);
        load.calling().await;
        load
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let newcomer = victim + 1;
    let node = start_node(net, newcomer, &tag).await;
    let listening = unix_ms();
    nodes.push((newcomer, node));
    let report = load.report().await;
    let first_call = report["first_seen"][format!("n{newcomer}")].as_u64();
    let first_call = first_call.unwrap_or_else(|| panic!("the new node got no calls: {}", report["per_node"]));
    assert_eq!(report_errors(&report), 0, "{}", report["errors"]);
    let seen = all_saw(&nodes, n, listening, CONVERGE_WITHIN).await;

    drop(nodes);
    tokio::time::sleep(Duration::from_secs(1)).await;
    Row {
        nodes: n,
        converged_ms,
        gossip_bytes_per_s,
        gossip_packets_per_s,
        rss_kib_avg: rss.iter().sum::<u64>() / rss.len() as u64,
        rss_kib_max: *rss.iter().max().unwrap(),
        connections_avg: connections.iter().sum::<usize>() as f64 / connections.len() as f64,
        connections_max,
        kill_failed,
        routed_around_ms: last_error.saturating_sub(killed),
        detected_ms: detected.saturating_sub(killed),
        new_node_called_ms: first_call.saturating_sub(listening),
        new_node_seen_ms: seen.saturating_sub(listening),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_mesh_of_8_to_64_nodes_each_on_its_own_host() {
    if !runs() {
        return;
    }
    let mut net = Net::new(SUBNET);
    let most = *SIZES.iter().max().unwrap();
    for h in 1..=most + 1 {
        net.host(h);
    }
    net.host(CALLER);
    net.static_neighbors();
    let mut rows = Vec::new();
    // `MESHRPC_SCALE_SIZES=32,64` runs those sizes only (to reproduce one).
    let sizes: Vec<u8> = match std::env::var("MESHRPC_SCALE_SIZES") {
        Ok(list) => list.split(',').filter_map(|n| n.trim().parse().ok()).filter(|n| *n <= most).collect(),
        Err(_) => SIZES.to_vec(),
    };
    for n in sizes {
        eprintln!("scale: {n} nodes");
        rows.push(measure(&net, n).await);
    }
    println!("| nodes | converged (ms) | gossip sent per node (bytes/s, packets/s) | RSS per node (avg, max) | connections per node after all-to-all (avg, max) | kill -9: failed calls (≤ {IN_FLIGHT} in flight), routed around (ms) | every node dropped it (ms) | new node: first call (ms), seen by all (ms) |");
    println!("|--:|--:|--:|--:|--:|--:|--:|--:|");
    for r in &rows {
        println!(
            "| {} | {} | {:.0} B/s, {:.1} | {:.1} MiB, {:.1} MiB | {:.1}, {} | {}, {} | {} | {}, {} |",
            r.nodes,
            r.converged_ms,
            r.gossip_bytes_per_s,
            r.gossip_packets_per_s,
            r.rss_kib_avg as f64 / 1024.0,
            r.rss_kib_max as f64 / 1024.0,
            r.connections_avg,
            r.connections_max,
            r.kill_failed,
            r.routed_around_ms,
            r.detected_ms,
            r.new_node_called_ms,
            r.new_node_seen_ms,
        );
    }
}
