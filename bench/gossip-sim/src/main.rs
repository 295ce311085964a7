//! Membership of many nodes, simulated in one process, two models side by side:
//! meshrpc's gossip as nodes run it today (`swim.rs`: its real gossip node without I/O on
//! a discrete-event loop), and chitchat as meshrpc 0.1.0 ran it (issue 22; below), kept
//! to measure against.
//!
//! **chitchat**: that many chitchat instances, configured and thinned as 0.1.0 ran them,
//! over chitchat's in-memory transport (every message is still encoded and decoded).
//!
//! **Virtual time.** The nodes run on one current-thread tokio runtime whose clock is
//! paused: it moves to the next timer only once every node has finished what the last
//! one started. chitchat and meshrpc's thinning read tokio's clock, so rounds, failure
//! detection and the joining period all happen in simulated time at meshrpc's real
//! settings (a round every 100 ms) however long the machine takes to compute them — a
//! discrete-event simulation with chitchat itself as the model. Costs are counted per
//! simulated second: bytes and messages from the transport, CPU from the process's real
//! CPU time. Bounded: 60 simulated seconds to converge, a 10-second idle window, and a
//! real-time limit per size. Run by `bench/gossip-sim.sh`.

use std::{
    net::{Ipv4Addr, SocketAddr},
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use async_trait::async_trait;
use chitchat::{
    spawn_chitchat,
    transport::{ChannelTransport, RecvOutcome, SendOutcome, Socket, Transport},
    ChitchatEnvelope, ChitchatHandle, ChitchatId, ChitchatMessage,
};
use chitchat_model as sim;

use tokio::time::Instant;

mod chitchat_model;
mod swim;

const SIZES: [usize; 2] = [100, 1_000];
/// meshrpc's gossip round.
const ROUND: Duration = Duration::from_millis(100);
/// Simulated time allowed to converge.
const CONVERGE_WITHIN: Duration = Duration::from_secs(60);
/// Simulated idle time measured once converged (after every node's joining period).
const IDLE_WINDOW: Duration = Duration::from_secs(10);
/// Real time one size may take before it is given up.
const REAL_LIMIT: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// Counts what the transport carries, and the largest `Syn` (its digest).
#[derive(Default)]
struct Meter {
    bytes: AtomicU64,
    messages: AtomicU64,
    largest_syn: AtomicU64,
}

struct Metered {
    inner: ChannelTransport,
    meter: Arc<Meter>,
}

#[async_trait]
impl Transport for Metered {
    async fn open(&self, addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        Ok(Box::new(MeteredSocket { inner: self.inner.open(addr).await?, meter: self.meter.clone() }))
    }
}

struct MeteredSocket {
    inner: Box<dyn Socket>,
    meter: Arc<Meter>,
}

#[async_trait]
impl Socket for MeteredSocket {
    fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        self.inner.local_addr()
    }

    async fn send(&mut self, to: SocketAddr, envelope: ChitchatEnvelope) -> anyhow::Result<SendOutcome> {
        let syn = matches!(envelope.message, ChitchatMessage::Syn { .. });
        let outcome = self.inner.send(to, envelope).await?;
        let n = outcome.num_bytes_sent as u64;
        self.meter.bytes.fetch_add(n, Ordering::Relaxed);
        self.meter.messages.fetch_add(1, Ordering::Relaxed);
        if syn {
            self.meter.largest_syn.fetch_max(n, Ordering::Relaxed);
        }
        Ok(outcome)
    }

    async fn recv(&mut self) -> anyhow::Result<RecvOutcome> {
        self.inner.recv().await
    }
}

/// CPU time of this process so far, from every thread's `schedstat` (ns).
fn cpu_seconds() -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return 0.0 };
    let ns: u64 = tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    ns as f64 / 1e9
}

struct Row {
    n: usize,
    /// Simulated seconds until every node saw every other as live (`None`: not within
    /// [`CONVERGE_WITHIN`]).
    converged_s: Option<f64>,
    /// Simulated seconds reached when it stopped waiting for convergence.
    waited_s: f64,
    /// Share of all (node, peer) pairs where the node saw the peer live, then.
    seen: f64,
    /// Real seconds the size took to simulate.
    real_s: f64,
    largest_syn: u64,
    bytes_per_node_s: f64,
    messages_per_node_s: f64,
    cpu_pct_per_node: f64,
    rss_mib: f64,
}

async fn run(n: usize) -> Row {
    let meter = Arc::new(Meter::default());
    let transport = ChannelTransport::with_mtu(65_507);
    let addr = |i: usize| SocketAddr::from((Ipv4Addr::new(10, (i >> 8) as u8, i as u8, 1), 11999));
    let seed = addr(0);
    let mut nodes: Vec<(ChitchatHandle, Arc<AtomicUsize>)> = Vec::with_capacity(n);
    let start = Instant::now();
    for i in 0..n {
        let id = ChitchatId::new(format!("greeter-11999-{i:06x}"), 1, addr(i));
        let config = {
            let listen = id.gossip_advertise_addr;
            sim::config(id, "sim", listen, if i == 0 { Vec::new() } else { vec![seed.to_string()] }, ROUND)
        };
        let live = Arc::new(AtomicUsize::new(1));
        let metered = Metered { inner: transport.clone(), meter: meter.clone() };
        let thinned = sim::transport(metered, live.clone(), vec![seed]);
        // What a meshrpc node gossips about itself (≈ 250 bytes).
        let kv = vec![
            ("name".to_owned(), "greeter".to_owned()),
            ("state".to_owned(), "serving".to_owned()),
            ("started".to_owned(), "1764140000000".to_owned()),
            ("addr".to_owned(), format!("{}:11999", addr(i).ip())),
            ("svc:greeter".to_owned(), "aef5bec4d5c99723 greet(name) sendPostcard(card) farewell()".to_owned()),
            ("http:greeter".to_owned(), String::new()),
        ];
        let handle = spawn_chitchat(config, kv, &thinned).await.unwrap();
        let mut watch = handle.chitchat().lock().await.live_nodes_watcher();
        let counted = live.clone();
        tokio::spawn(async move {
            loop {
                counted.store(watch.borrow_and_update().len(), Ordering::Relaxed);
                if watch.changed().await.is_err() {
                    return;
                }
            }
        });
        nodes.push((handle, live));
    }
    let real_start = std::time::Instant::now();
    let mut converged_s = None;
    while start.elapsed() < CONVERGE_WITHIN && real_start.elapsed() < REAL_LIMIT {
        if nodes.iter().all(|(_, live)| live.load(Ordering::Relaxed) >= n) {
            converged_s = Some(start.elapsed().as_secs_f64());
            break;
        }
        tokio::time::sleep(ROUND / 2).await;
    }
    let waited_s = start.elapsed().as_secs_f64();
    let seen = nodes.iter().map(|(_, live)| live.load(Ordering::Relaxed) as f64).sum::<f64>() / (n * n) as f64;
    // Past every node's joining period, when rounds are thinned.
    tokio::time::sleep_until(start + Duration::from_secs(4)).await;
    let (bytes0, messages0, cpu0) =
        (meter.bytes.load(Ordering::Relaxed), meter.messages.load(Ordering::Relaxed), cpu_seconds());
    meter.largest_syn.store(0, Ordering::Relaxed);
    let t0 = Instant::now();
    tokio::time::sleep(IDLE_WINDOW).await;
    let secs = t0.elapsed().as_secs_f64();
    let per_node = |v: f64| v / secs / n as f64;
    let rss_kib = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:")?.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(0);
    let row = Row {
        n,
        converged_s,
        waited_s,
        seen,
        real_s: real_start.elapsed().as_secs_f64(),
        largest_syn: meter.largest_syn.load(Ordering::Relaxed),
        bytes_per_node_s: per_node((meter.bytes.load(Ordering::Relaxed) - bytes0) as f64),
        messages_per_node_s: per_node((meter.messages.load(Ordering::Relaxed) - messages0) as f64),
        cpu_pct_per_node: per_node(cpu_seconds() - cpu0) * 100.0,
        rss_mib: rss_kib as f64 / 1024.0,
    };
    for (handle, _) in nodes {
        let _ = handle.shutdown().await;
    }
    row
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let sizes: Vec<usize> = args.iter().filter_map(|a| a.parse().ok()).collect();
    let model = args.iter().find_map(|a| a.strip_prefix("--model=")).unwrap_or("both").to_owned();
    if model == "swim" || model == "both" {
        // 10,000 nodes would hold 10⁸ member records (facts included, ≈ 1 MiB per node at
        // 1,000): past this machine's 24 GiB; 3,000 is the largest size that fits.
        let sizes = if sizes.is_empty() { vec![100, 1_000, 3_000] } else { sizes.clone() };
        swim_table(&sizes);
    }
    if model == "chitchat" || model == "both" {
        // chitchat cannot run past ≈ 1,000 nodes: its digest outgrows a datagram.
        let sizes = if sizes.is_empty() { SIZES.to_vec() } else { sizes.into_iter().filter(|n| *n <= 1_000).collect() };
        chitchat_table(&sizes);
    }
}

fn swim_table(sizes: &[usize]) {
    let mut rows = Vec::new();
    for &n in sizes {
        eprintln!("meshrpc gossip: {n} nodes");
        let calm = swim::run(swim::Scenario { n, loss: 0.0, restarts: 0.0, seed: 1 }, cpu_seconds);
        eprintln!("swim: {n} nodes: {calm:?}");
        let faulty = swim::run(swim::Scenario { n, loss: 0.05, restarts: 0.10, seed: 2 }, cpu_seconds);
        eprintln!("swim: {n} nodes, 5 % loss, 10 % restarting: {faulty:?}");
        rows.push((n, calm, faulty));
    }
    let s = |v: Option<f64>| v.map_or("—".to_owned(), |s| format!("{s:.1}"));
    println!("## Membership, simulated: meshrpc's gossip (version 2)\n");
    println!("N meshrpc gossip nodes (the node a cluster runs, without its socket: foca's SWIM at meshrpc's settings — a probe every 1 s, 3 indirect probes, suspicion 3 s, news to 3 members every 200 ms — facts announced and pulled page by page, joins by hello and member-list pulls, anti-entropy) in one process, a discrete-event loop on virtual time: every datagram encoded, carried 0.1–0.5 ms, decoded; all nodes started within 100 ms, gossiping a greeter's facts. Idle window 60 s from the moment no node has news left to pass on or is still joining (quiet); the member-list pull of anti-entropy measured once and counted at its rate, one every max(30 s, N × 0.3 s) per node.\n");
    println!("| nodes | all views complete (s) | quiet (s) | idle datagram bytes per node per s | datagrams per node per s | member-list pull (bytes) → per node per s | largest datagram | CPU per node (% of a core) | killed node known dead by all (s) | left node known by all (s) | 5 % loss + 10 % restarts: live members declared down | longest held down (s) | RSS | real |");
    println!("|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
    for (n, r, f) in rows {
        println!(
            "| {n} | {} | {:.1} | {:.0} | {:.1} | {} → {:.0} | {} | {:.4} | {} | {} | {} | {:.1} | {:.0} MiB | {:.0} s |",
            r.converged_s.map_or(format!("not within 60 ({:.1} % seen)", r.seen * 100.0), |c| format!("{c:.1}")),
            r.quiet_s,
            r.datagram_bytes_per_node_s,
            r.datagrams_per_node_s,
            r.member_list_bytes,
            r.sync_bytes_per_node_s,
            r.largest_datagram.max(f.largest_datagram),
            r.cpu_pct_per_node,
            s(r.kill_detected_s),
            s(r.leave_detected_s),
            f.false_downs,
            f.longest_false_down_s,
            r.rss_mib.max(f.rss_mib),
            r.real_s + f.real_s
        );
    }
    println!();
}

fn chitchat_table(sizes: &[usize]) {
    let mut rows = Vec::new();
    for &n in sizes {
        eprintln!("{n} nodes");
        // A fresh paused runtime per size: simulated time starts at zero.
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
        let row = rt.block_on(run(n));
        drop(rt);
        eprintln!(
            "{n} nodes: converged in {} s, largest digest {} B, {:.0} B/s, {:.1} messages/s, {:.3} % CPU per node ({:.0} s real)",
            row.converged_s.map_or("—".to_owned(), |s| format!("{s:.1}")),
            row.largest_syn,
            row.bytes_per_node_s,
            row.messages_per_node_s,
            row.cpu_pct_per_node,
            row.real_s
        );
        rows.push(row);
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("## Membership, simulated (bench/gossip-sim.sh)\n");
    println!(
        "{cores} cores (the simulation uses one); N chitchat nodes in one process as meshrpc configures them (rounds every {:?}, thinned past {} live members), all started at once, over an in-memory transport that still encodes every message; on virtual time (tokio's paused clock); idle window {:?} from 4 s after the start.\n",
        ROUND, sim::FULL_RATE_UP_TO, IDLE_WINDOW
    );
    println!("| nodes | converged (simulated s) | largest digest (Syn, bytes) | bytes per node per s | messages per node per s | CPU per node (% of a core) | process RSS | real time |");
    println!("|--:|--:|--:|--:|--:|--:|--:|--:|");
    for r in rows {
        println!(
            "| {} | {} | {} | {:.0} | {:.1} | {:.3} | {:.0} MiB | {:.0} s |",
            r.n,
            r.converged_s.map_or(
                format!("not within {:.1} ({:.0} % of views complete)", r.waited_s, r.seen * 100.0),
                |s| format!("{s:.1}")
            ),
            r.largest_syn,
            r.bytes_per_node_s,
            r.messages_per_node_s,
            r.cpu_pct_per_node,
            r.rss_mib,
            r.real_s
        );
    }
}
