//! meshrpc's gossip, simulated: N real gossip nodes (`meshrpc::__private::gossip_simulation`:
//! the node a cluster runs, without its socket — foca's SWIM, meshrpc's wire format,
//! facts announced and pulled page by page, joins by hello, member-list pulls and
//! anti-entropy, at a node's real settings) in this one process, driven by a
//! discrete-event loop on virtual time: every datagram encoded by its sender, carried
//! (0.1–0.5 ms, or lost) and decoded by its receiver; every node polled at the time it
//! asks for. No runtime is involved: the loop *is* the network and the clock, and a seed
//! makes every run the same (unsealed: sealing draws its nonces from the system).

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, HashMap},
    net::{Ipv4Addr, SocketAddr},
    time::{Duration, Instant},
};

use meshrpc::__private::gossip_simulation::{anti_entropy_every, Node, MAX_DATAGRAM};
use rand::{rngs::StdRng, RngExt, SeedableRng};

/// An event in the queue: due at `.0` (µs), in order of scheduling `.1` among equals.
struct Queued(u64, u64, Event);

impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        (self.0, self.1) == (other.0, other.1)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Queued {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.0, self.1).cmp(&(other.0, other.1))
    }
}

/// What happens at a simulated time.
enum Event {
    Deliver { to: u32, from: SocketAddr, data: Vec<u8> },
    Poll { node: u32, life: u64 },
}

/// The scenario of one run.
#[derive(Debug, Clone, Copy)]
pub struct Scenario {
    pub n: usize,
    /// Share of datagrams lost.
    pub loss: f64,
    /// Share of nodes restarted (each once, at a random time of the fault window).
    pub restarts: f64,
    pub seed: u64,
}

/// What a run measured.
#[derive(Debug, Default)]
pub struct Report {
    /// Simulated seconds until every node saw every other up.
    pub converged_s: Option<f64>,
    /// Share of (node, member) pairs seen up when it stopped waiting.
    pub seen: f64,
    /// Simulated second when no node had updates left to disseminate (the idle window
    /// starts there).
    pub quiet_s: f64,
    pub datagram_bytes_per_node_s: f64,
    pub datagrams_per_node_s: f64,
    pub sync_bytes_per_node_s: f64,
    /// Bytes of one member-list pull (asks and pages).
    pub member_list_bytes: u64,
    pub largest_datagram: usize,
    pub cpu_pct_per_node: f64,
    /// Simulated seconds until every live node knew a killed node down.
    pub kill_detected_s: Option<f64>,
    /// Simulated seconds until every live node knew a node that left down.
    pub leave_detected_s: Option<f64>,
    /// Live members declared down by some node (loss and restarts scenario), and the
    /// longest a node held a live member down.
    pub false_downs: u64,
    pub longest_false_down_s: f64,
    pub real_s: f64,
    pub rss_mib: f64,
}

const CONVERGE_WITHIN: f64 = 60.0;
const IDLE_WINDOW: f64 = 60.0;
/// Datagram latency on a LAN: 0.1–0.5 ms.
const LATENCY_US: std::ops::Range<u64> = 100..500;
/// What every node gossips about itself: a greeter's facts (docs/wire.md).
const FACTS: [(&str, &str); 4] = [
    ("name", "greeter"),
    ("addr", "10.0.0.1:11999"),
    ("state", "serving"),
    ("svc:greeter", "6a0328b628b064c0 #Qm9vLmJhcg 0.1.0"),
];
/// The simulation's wall clock (Unix ms at virtual time zero).
const EPOCH_MS: u64 = 1_790_000_000_000;

fn addr(i: u32) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::new(10, (i >> 16) as u8, (i >> 8) as u8, i as u8), 11999))
}

struct Sim {
    base: Instant,
    now_us: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<Queued>>,
    nodes: Vec<Option<Node>>,
    /// Each node's current life (its start, ns): a restart is a new one.
    lives: Vec<u64>,
    /// When each node's earliest pending poll is due.
    polls: Vec<Option<u64>>,
    by_addr: HashMap<SocketAddr, u32>,
    rng: StdRng,
    scenario: Scenario,
    datagram_bytes: u64,
    datagrams: u64,
    /// Bytes of member-list pulls (asks and pages), among `datagram_bytes`.
    list_bytes: u64,
    /// The same, of node 0's own pulls only (asks it sends, pages it gets).
    list_bytes_of_0: u64,
    kinds: [u64; 8],
    largest: usize,
    /// (node, member) → since when the node holds a live member down.
    false_down_since: HashMap<(u32, u32), u64>,
    false_downs: u64,
    longest_false_down_us: u64,
    /// Nodes that know the watched node (killed or left) down.
    watched: Option<(u32, Vec<bool>, usize)>,
}

impl Sim {
    fn push(&mut self, at: u64, event: Event) {
        self.seq += 1;
        self.queue.push(Reverse(Queued(at, self.seq, event)));
    }

    fn instant(&self) -> Instant {
        self.base + Duration::from_micros(self.now_us)
    }

    fn wall_ms(&self) -> u64 {
        EPOCH_MS + self.now_us / 1000
    }

    /// Runs `f` on node `i`, then carries what it sends, reads its news and schedules
    /// its next poll.
    fn step(&mut self, i: u32, f: impl FnOnce(&mut Node, Instant, u64)) {
        let (now, wall) = (self.instant(), self.wall_ms());
        let Some(mut node) = self.nodes[i as usize].take() else { return };
        f(&mut node, now, wall);
        if node.wants_seeds(now) && i != 0 {
            node.hello(&[addr(0)], now, wall);
        }
        let from = addr(i);
        for (to, data) in node.sends() {
            self.datagrams += 1;
            self.datagram_bytes += data.len() as u64;
            if let Some(kind) = data.get(13).filter(|_| data.starts_with(b"MRG2")) {
                self.kinds[usize::from(*kind).min(7)] += 1;
            }
            // Plain datagrams: "MRG2", the cluster (8), the version, then the body's kind
            // (5: a member-list ask, 6: a page of it; docs/wire.md).
            if data.starts_with(b"MRG2") && matches!(data.get(13), Some(5 | 6)) {
                self.list_bytes += data.len() as u64;
                if (data[13] == 5 && i == 0) || (data[13] == 6 && to == addr(0)) {
                    self.list_bytes_of_0 += data.len() as u64;
                }
            }
            self.largest = self.largest.max(data.len());
            if self.rng.random_bool(self.scenario.loss) {
                continue;
            }
            let Some(&to) = self.by_addr.get(&to) else { continue };
            let at = self.now_us + self.rng.random_range(LATENCY_US);
            self.push(at, Event::Deliver { to, from, data });
        }
        for (up, member, life) in node.news() {
            let Some(&m) = self.by_addr.get(&member) else { continue };
            let live = self.nodes[m as usize].is_some() && self.lives[m as usize] == life;
            if up {
                if let Some(since) = self.false_down_since.remove(&(i, m)) {
                    self.longest_false_down_us = self.longest_false_down_us.max(self.now_us - since);
                }
            } else {
                if live {
                    if std::env::var("SIM_DEBUG").is_ok() && self.false_downs < 10 {
                        eprintln!("{:.3} s: node {i} holds live {m} (life {life}) down", self.now_us as f64 / 1e6);
                    }
                    self.false_downs += 1;
                    self.false_down_since.insert((i, m), self.now_us);
                }
                if let Some((watched, knows, count)) = &mut self.watched {
                    if m == *watched && !knows[i as usize] {
                        knows[i as usize] = true;
                        *count += 1;
                    }
                }
            }
        }
        let due = node.deadline().saturating_duration_since(self.base).as_micros() as u64;
        let due = due.max(self.now_us);
        self.nodes[i as usize] = Some(node);
        if self.polls[i as usize].is_none_or(|p| due < p) {
            self.polls[i as usize] = Some(due);
            let life = self.lives[i as usize];
            self.push(due, Event::Poll { node: i, life });
        }
    }

    fn start(&mut self, i: u32) {
        let life = self.lives[i as usize];
        let seed = self.scenario.seed ^ (u64::from(i) << 20) ^ life;
        self.nodes[i as usize] = Some(Node::new(addr(i), life, "sim", &FACTS, None, seed, self.instant()));
        self.polls[i as usize] = None;
        self.step(i, |node, now, wall| node.poll(now, wall));
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Deliver { to, from, mut data } => {
                self.step(to, |node, now, wall| node.receive(&mut data, from, now, wall));
            }
            Event::Poll { node, life } => {
                if self.lives[node as usize] == life && self.polls[node as usize] == Some(self.now_us) {
                    self.polls[node as usize] = None;
                    self.step(node, |n, now, wall| n.poll(now, wall));
                }
            }
        }
    }

    /// Runs events up to simulated second `until`.
    fn run_until(&mut self, until_s: f64) {
        let until = (until_s * 1e6) as u64;
        while let Some(Reverse(Queued(at, _, _))) = self.queue.peek() {
            if *at > until {
                break;
            }
            let Reverse(Queued(at, _, event)) = self.queue.pop().unwrap();
            self.now_us = at;
            self.handle(event);
        }
        self.now_us = self.now_us.max(until);
    }

    fn live(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.nodes.len()).filter(|&i| self.nodes[i].is_some())
    }

    /// Members whose facts node `i` knows.
    fn known(&self, i: usize) -> usize {
        self.nodes[i].as_ref().map_or(0, |n| n.members().1)
    }

    fn converged(&self) -> bool {
        let live = self.live().count();
        self.live().all(|i| self.known(i) + 1 >= live)
    }

    fn now_s(&self) -> f64 {
        self.now_us as f64 / 1e6
    }

    /// Kills node `i` (no goodbye).
    fn kill(&mut self, i: u32) {
        self.nodes[i as usize] = None;
        self.polls[i as usize] = None;
    }
}

/// A cold start of `n` nodes (all within 100 ms), then an idle window, a kill, a leave,
/// and, if the scenario says so, loss and restarts.
pub fn run(scenario: Scenario, cpu_seconds: impl Fn() -> f64) -> Report {
    let real = std::time::Instant::now();
    let n = scenario.n;
    let mut sim = Sim {
        base: Instant::now(),
        now_us: 0,
        seq: 0,
        queue: BinaryHeap::new(),
        nodes: (0..n).map(|_| None).collect(),
        lives: vec![1; n],
        polls: vec![None; n],
        by_addr: (0..n as u32).map(|i| (addr(i), i)).collect(),
        rng: StdRng::seed_from_u64(scenario.seed),
        scenario,
        datagram_bytes: 0,
        datagrams: 0,
        list_bytes: 0,
        list_bytes_of_0: 0,
        kinds: [0; 8],
        largest: 0,
        false_down_since: Default::default(),
        false_downs: 0,
        longest_false_down_us: 0,
        watched: None,
    };
    let mut report = Report::default();
    // Every node starts within the first 100 ms.
    let mut starts: Vec<(u64, u32)> = (0..n as u32).map(|i| (sim.rng.random_range(0..100_000), i)).collect();
    starts.sort_unstable();
    for (at, i) in starts {
        sim.run_until(at as f64 / 1e6);
        sim.start(i);
    }
    // Cold start: wait for every view to be complete.
    while sim.now_s() < CONVERGE_WITHIN {
        sim.run_until(sim.now_s() + 0.1);
        if sim.converged() {
            report.converged_s = Some(sim.now_s());
            break;
        }
    }
    let live = sim.live().count();
    report.seen = sim.live().map(|i| (sim.known(i) + 1) as f64).sum::<f64>() / (live * live) as f64;

    // Idle: what a node costs once the mesh is known (past every joining sync, and once
    // every node has sent what it had to disseminate).
    sim.run_until(sim.now_s().max(5.0));
    while sim.now_s() < CONVERGE_WITHIN && sim.nodes.iter().flatten().any(|node| node.backlog() > 0) {
        sim.run_until(sim.now_s() + 0.5);
    }
    report.quiet_s = sim.now_s();
    let (bytes0, datagrams0, lists0, cpu0) = (sim.datagram_bytes, sim.datagrams, sim.list_bytes, cpu_seconds());
    sim.largest = 0;
    let t0 = sim.now_s();
    let kinds0 = sim.kinds;

    sim.run_until(t0 + IDLE_WINDOW);
    eprintln!(
        "idle datagrams by kind (Swim, Hello, HelloBack, Facts, FactsPage, Members, MembersPage): {:?}",
        sim.kinds.iter().zip(kinds0).map(|(a, b)| a - b).collect::<Vec<_>>()
    );
    let (cpu1, datagrams1) = (cpu_seconds(), sim.datagrams);
    let per_node = |v: f64| v / IDLE_WINDOW / n as f64;
    // Member-list pulls (anti-entropy: one per node every max(30 s, N × 0.3 s) on average)
    // apart: one is measured whole, and counted at that rate.
    let in_window = per_node((sim.list_bytes - lists0) as f64);
    report.datagram_bytes_per_node_s = per_node((sim.datagram_bytes - bytes0) as f64) - in_window;
    // Node 0's pull alone (at 100 nodes others' anti-entropy pulls, 3 a second, overlap it).
    sim.run_until(sim.now_s() + 1.0); // a pull node 0 was answering or making ends first
    let lists1 = sim.list_bytes_of_0;
    sim.step(0, |node, now, wall| node.pull_members_now(now, wall));
    sim.run_until(sim.now_s() + 1.0);
    report.member_list_bytes = sim.list_bytes_of_0 - lists1;
    report.sync_bytes_per_node_s = report.member_list_bytes as f64 / anti_entropy_every(n).as_secs_f64();
    report.datagrams_per_node_s = per_node((datagrams1 - datagrams0) as f64);
    report.cpu_pct_per_node = per_node(cpu1 - cpu0) * 100.0;

    // A node killed: how long until every live node knows it down.
    let victim = (n / 2) as u32;
    sim.kill(victim);
    sim.watched = Some((victim, vec![false; n], 0));
    let killed_at = sim.now_s();
    let everyone = |sim: &Sim| sim.live().count();
    while sim.now_s() < killed_at + 30.0 {
        sim.run_until(sim.now_s() + 0.1);
        if sim.watched.as_ref().is_some_and(|(_, _, c)| *c >= everyone(&sim)) {
            report.kill_detected_s = Some(sim.now_s() - killed_at);
            break;
        }
    }
    // A node that leaves.
    let leaver = (n / 3) as u32;
    sim.watched = Some((leaver, vec![false; n], 0));
    sim.step(leaver, |node, now, wall| node.leave(now, wall));
    sim.kill(leaver);
    let left_at = sim.now_s();
    while sim.now_s() < left_at + 30.0 {
        sim.run_until(sim.now_s() + 0.1);
        if sim.watched.as_ref().is_some_and(|(_, _, c)| *c >= everyone(&sim)) {
            report.leave_detected_s = Some(sim.now_s() - left_at);
            break;
        }
    }
    if report.leave_detected_s.is_none() {
        let knows = sim.watched.as_ref().map_or(0, |w| w.2);
        eprintln!("leave: {knows} of {} live nodes know it down after 30 s", sim.live().count());
    }
    sim.watched = None;
    sim.false_downs = 0;
    sim.false_down_since.clear();

    // Loss and restarts, for 30 s: live members declared down are counted.
    if scenario.loss > 0.0 || scenario.restarts > 0.0 {
        let start = sim.now_s();
        let restarts = (n as f64 * scenario.restarts) as usize;
        let mut plan: Vec<(f64, u32)> = (0..restarts)
            .map(|_| (start + sim.rng.random_range(0.0..20.0), sim.rng.random_range(1..n as u32)))
            .collect();
        plan.sort_by(|a, b| a.0.total_cmp(&b.0));
        for (at, node) in plan {
            sim.run_until(at);
            if sim.nodes[node as usize].is_none() {
                continue;
            }
            // Down for one to three seconds, then back as a new life.
            sim.kill(node);
            let down_for = sim.rng.random_range(1.0..3.0);
            sim.run_until(at + down_for);
            sim.lives[node as usize] += 1;
            sim.start(node);
        }
        sim.run_until(start + 30.0);
        report.false_downs = sim.false_downs;
        let open = sim.false_down_since.values().map(|since| sim.now_us - since).max().unwrap_or(0);
        report.longest_false_down_s = sim.longest_false_down_us.max(open) as f64 / 1e6;
    }
    report.largest_datagram = sim.largest;
    assert!(sim.largest <= MAX_DATAGRAM, "a datagram of {} bytes", sim.largest);
    report.real_s = real.elapsed().as_secs_f64();
    report.rss_mib = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:")?.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(0) as f64
        / 1024.0;
    report
}
