//! Membership of 100 … 1,000 nodes, simulated (issue 22): that many chitchat instances in
//! this one process, configured and thinned as meshrpc runs them, over chitchat's
//! in-memory transport (every message is still encoded and decoded). Prints, per size:
//! the rounds until every node sees every other, the largest digest (a `Syn`), and the
//! bytes, messages and CPU per node per round once idle, with what they come to at
//! meshrpc's 100 ms rounds. Two cores cannot run 1,000 nodes' rounds in real time, so
//! the simulation slows time down (a round every [`ROUND`]) and counts per round.
//! Bounded: at most 120 rounds to converge, a 10-round window. Run by
//! `bench/gossip-sim.sh`.

use std::{
    net::{Ipv4Addr, SocketAddr},
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use async_trait::async_trait;
use chitchat::{
    spawn_chitchat,
    transport::{ChannelTransport, RecvOutcome, SendOutcome, Socket, Transport},
    ChitchatEnvelope, ChitchatHandle, ChitchatId, ChitchatMessage,
};
use meshrpc::__private::gossip_simulation as sim;

const SIZES: [usize; 4] = [100, 250, 500, 1_000];
/// One simulated gossip round (meshrpc's is 100 ms).
const ROUND: Duration = Duration::from_secs(1);
const REAL_ROUND: Duration = Duration::from_millis(100);

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

fn cpu_seconds() -> f64 {
    let text = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = text.rsplit_once(')').map_or("", |(_, r)| r);
    // After the command: utime and stime are fields 11 and 12 (ticks of 1/100 s).
    let field = |i: usize| after.split_whitespace().nth(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    (field(11) + field(12)) as f64 / 100.0
}

struct Row {
    n: usize,
    converged_s: f64,
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
        let config = sim::config(id, "sim", if i == 0 { Vec::new() } else { vec![seed.to_string()] }, ROUND);
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
    let mut converged_s = f64::NAN;
    while start.elapsed() < ROUND * 120 {
        if nodes.iter().all(|(_, live)| live.load(Ordering::Relaxed) >= n) {
            converged_s = start.elapsed().as_secs_f64();
            break;
        }
        tokio::time::sleep(ROUND / 10).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await; // past every node's joining rounds
    let (bytes0, messages0, cpu0) =
        (meter.bytes.load(Ordering::Relaxed), meter.messages.load(Ordering::Relaxed), cpu_seconds());
    meter.largest_syn.store(0, Ordering::Relaxed);
    let t0 = Instant::now();
    tokio::time::sleep(ROUND * 10).await;
    // Per node per round, then at meshrpc's real rate.
    let rounds = t0.elapsed().as_secs_f64() / ROUND.as_secs_f64();
    let real = ROUND.as_secs_f64() / REAL_ROUND.as_secs_f64();
    let per_node = |v: f64| v / rounds / n as f64 * real / ROUND.as_secs_f64();
    let rss_kib = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:")?.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(0);
    let row = Row {
        n,
        converged_s: converged_s / ROUND.as_secs_f64(),
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

#[tokio::main]
async fn main() {
    let sizes: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let sizes = if sizes.is_empty() { SIZES.to_vec() } else { sizes };
    let mut rows = Vec::new();
    for n in sizes {
        eprintln!("{n} nodes");
        let row = run(n).await;
        eprintln!(
            "{n} nodes: converged in {:.0} rounds, largest digest {} B, {:.0} B/s, {:.1} messages/s, {:.3} % CPU per node",
            row.converged_s, row.largest_syn, row.bytes_per_node_s, row.messages_per_node_s, row.cpu_pct_per_node
        );
        rows.push(row);
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("## Membership, simulated (bench/gossip-sim.sh)\n");
    println!(
        "{cores} cores; N chitchat nodes in one process as meshrpc configures them (thinned past {} live members), in-memory transport that still encodes every message; time slowed to a round per {:?}, costs per round scaled to meshrpc's {:?} rounds; idle window 10 rounds after convergence.\n",
        sim::FULL_RATE_UP_TO, ROUND, REAL_ROUND
    );
    println!("| nodes | converged (rounds) | largest digest (Syn, bytes) | bytes per node per s | messages per node per s | CPU per node (% of a core) | process RSS |");
    println!("|--:|--:|--:|--:|--:|--:|--:|");
    for r in rows {
        println!(
            "| {} | {:.0} | {} | {:.0} | {:.1} | {:.3} | {:.0} MiB |",
            r.n, r.converged_s, r.largest_syn, r.bytes_per_node_s, r.messages_per_node_s, r.cpu_pct_per_node, r.rss_mib
        );
    }
}
