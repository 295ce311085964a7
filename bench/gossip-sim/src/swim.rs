//! The SWIM model (issue 35): N foca instances in this one process, driven by a
//! discrete-event loop on virtual time — every datagram encoded by foca, carried (late,
//! or lost) and decoded by its receiver; every timer foca asks for fired at its simulated
//! time. foca is sans-IO, so no runtime is involved: the loop *is* the network and the
//! clock, and a seed makes every run the same.
//!
//! What a meshrpc node would add to foca, modelled here as the design proposes:
//! - an identity of a few dozen bytes (node, generation, a digest of what it serves:
//!   method lists are fetched by key, docs/wire.md), so a membership update stays small;
//! - a full-state exchange over TCP ("sync": push-pull with its seed as it joins, then
//!   with a random member every 0.5 s until two in a row teach it nothing, then
//!   anti-entropy paced at `max(30 s, N × 300 ms)` per node, so its bytes per node per
//!   second stay flat in N).
//!   Its bytes are counted apart from the datagrams (a TCP exchange, not a datagram).

use std::{
    cmp::Reverse,
    collections::BinaryHeap,
    num::{NonZeroU32, NonZeroUsize},
    time::Duration,
};

use foca::{Config, Foca, Identity, Member, Notification, PostcardCodec, Runtime, Timer};
use rand::{rngs::StdRng, RngExt, SeedableRng};
use serde::{Deserialize, Serialize};

/// A member's identity as gossiped: its node (its address, in a real mesh), its
/// generation (a restart is a new one) and the digest of what it serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SimId {
    node: u32,
    generation: u16,
    serves: u64,
}

impl Identity for SimId {
    type Addr = u32;

    fn renew(&self) -> Option<Self> {
        Some(SimId { generation: self.generation.wrapping_add(1), ..*self })
    }

    fn addr(&self) -> u32 {
        self.node
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.generation.wrapping_sub(adversary.generation) < u16::MAX / 2
    }
}

type Node = Foca<SimId, PostcardCodec, StdRng, foca::NoCustomBroadcast>;

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
    Deliver {
        to: u32,
        data: Vec<u8>,
    },
    Timer {
        node: u32,
        generation: u16,
        timer: Timer<SimId>,
    },
    /// A full-state exchange with a member this node knows.
    Sync {
        node: u32,
        generation: u16,
        kind: SyncKind,
    },
}

/// Why a node syncs.
#[derive(Debug, Clone, Copy)]
enum SyncKind {
    /// While joining: every 0.5 s until two syncs in a row teach it nothing (at most 12).
    Join { round: u8, fruitless: u8 },
    /// Anti-entropy, paced so its bytes per node per second stay flat in N.
    AntiEntropy,
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

const PROBE_PERIOD: Duration = Duration::from_secs(1);
const CONVERGE_WITHIN: f64 = 60.0;
const IDLE_WINDOW: f64 = 10.0;
/// Datagram latency on a LAN: 0.1–0.5 ms.
const LATENCY_US: std::ops::Range<u64> = 100..500;

fn config(n: usize) -> Config {
    let mut c = Config::new_lan(NonZeroU32::new(n as u32).unwrap());
    c.max_packet_size = NonZeroUsize::new(1400).unwrap();
    // Suspicion: 3 probe periods (memberlist's 4 × log10 N would be 16 s at 10,000); a
    // suspected member that is alive refutes within it.
    c.suspect_to_down_after = PROBE_PERIOD * 3;
    c.probe_period = PROBE_PERIOD;
    c
}

fn anti_entropy_every(n: usize) -> f64 {
    (n as f64 * 0.3).max(30.0)
}

struct Sim {
    now_us: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<Queued>>,
    nodes: Vec<Option<Node>>,
    ids: Vec<SimId>,
    /// How many members each node sees up.
    up: Vec<usize>,
    rng: StdRng,
    scenario: Scenario,
    datagram_bytes: u64,
    datagrams: u64,
    sync_bytes: u64,
    largest: usize,
    /// (node, member) → since when the node holds the live member down.
    false_down_since: std::collections::HashMap<(u32, u32), u64>,
    false_downs: u64,
    longest_false_down_us: u64,
    /// Nodes that know the watched node (killed or left) down.
    watched: Option<(u32, Vec<bool>, usize)>,
}

/// foca's runtime for one node's step: what it sends and asks for goes into the queue.
struct Step<'a> {
    sim: &'a mut Sim,
    node: u32,
    generation: u16,
}

impl Runtime<SimId> for Step<'_> {
    fn notify(&mut self, notification: Notification<'_, SimId>) {
        let sim = &mut *self.sim;
        let me = self.node as usize;
        match notification {
            Notification::MemberUp(id) => {
                sim.up[me] += 1;
                if let Some(since) = sim.false_down_since.remove(&(self.node, id.node)) {
                    sim.longest_false_down_us = sim.longest_false_down_us.max(sim.now_us - since);
                }
            }
            Notification::MemberDown(id) => {
                sim.up[me] = sim.up[me].saturating_sub(1);
                let live = sim.nodes[id.node as usize].is_some() && sim.ids[id.node as usize] == *id;
                if live {
                    sim.false_downs += 1;
                    sim.false_down_since.insert((self.node, id.node), sim.now_us);
                }
                if let Some((watched, knows, count)) = &mut sim.watched {
                    if id.node == *watched && !knows[me] {
                        knows[me] = true;
                        *count += 1;
                    }
                }
            }
            _ => {}
        }
    }

    fn send_to(&mut self, to: SimId, data: &[u8]) {
        let sim = &mut *self.sim;
        sim.datagrams += 1;
        sim.datagram_bytes += data.len() as u64;
        sim.largest = sim.largest.max(data.len());
        if sim.rng.random_bool(sim.scenario.loss) {
            return;
        }
        let at = sim.now_us + sim.rng.random_range(LATENCY_US);
        sim.push(at, Event::Deliver { to: to.node, data: data.to_vec() });
    }

    fn submit_after(&mut self, timer: Timer<SimId>, after: Duration) {
        let at = self.sim.now_us + after.as_micros() as u64;
        let (node, generation) = (self.node, self.generation);
        self.sim.push(at, Event::Timer { node, generation, timer });
    }
}

impl Sim {
    fn push(&mut self, at: u64, event: Event) {
        self.seq += 1;
        self.queue.push(Reverse(Queued(at, self.seq, event)));
    }

    /// Runs `f` on node `i` with a runtime feeding the queue.
    fn step(&mut self, i: u32, f: impl FnOnce(&mut Node, &mut Step<'_>)) {
        let Some(mut node) = self.nodes[i as usize].take() else { return };
        let generation = self.ids[i as usize].generation;
        f(&mut node, &mut Step { sim: self, node: i, generation });
        self.nodes[i as usize] = Some(node);
    }

    fn start(&mut self, i: u32, seed_node: u32) {
        let id = self.ids[i as usize];
        let rng = StdRng::seed_from_u64(self.scenario.seed ^ (u64::from(i) << 20) ^ u64::from(id.generation));
        self.nodes[i as usize] = Some(Foca::new(id, config(self.scenario.n), rng, PostcardCodec));
        self.up[i as usize] = 0;
        if i != seed_node {
            let seed = self.ids[seed_node as usize];
            self.step(i, |node, rt| node.announce(seed, rt).unwrap());
            // The join's full-state exchange with the seed, then with random members.
            let kind = SyncKind::Join { round: 0, fruitless: 0 };
            self.push(self.now_us + 1_000, Event::Sync { node: i, generation: id.generation, kind });
        }
        let every = (anti_entropy_every(self.scenario.n) * 1e6) as u64;
        let first = self.now_us + self.rng.random_range(0..every);
        self.push(first, Event::Sync { node: i, generation: id.generation, kind: SyncKind::AntiEntropy });
    }

    /// A full-state exchange of node `i` with a member it knows (the seed while it has
    /// none): both sides' member lists encoded, carried and applied.
    fn sync(&mut self, i: u32, kind: SyncKind) {
        let knew = self.up[i as usize];
        let Some(node) = &self.nodes[i as usize] else { return };
        let known: Vec<u32> = node.iter_members().map(|m| m.id().node).collect();
        let peer = match known.len() {
            0 => 0,
            k => known[self.rng.random_range(0..k)],
        };
        if peer == i || self.nodes[peer as usize].is_none() {
            return;
        }
        let encode = |node: &Node| {
            let mut members: Vec<Member<SimId>> = node.iter_membership_state().cloned().collect();
            members.push(Member::alive(*node.identity()));
            postcard::to_allocvec(&members).unwrap()
        };
        let mine = encode(self.nodes[i as usize].as_ref().unwrap());
        let theirs = encode(self.nodes[peer as usize].as_ref().unwrap());
        self.sync_bytes += (mine.len() + theirs.len()) as u64;
        let apply = |sim: &mut Sim, to: u32, bytes: &[u8]| {
            let members: Vec<Member<SimId>> = postcard::from_bytes(bytes).unwrap();
            // What a sync teaches is not gossiped on: the other side has it, and the
            // rest get it by their own syncs (gossiping it would flood every node with
            // every join).
            sim.step(to, |node, rt| node.apply_many(members.into_iter(), false, rt).unwrap());
        };
        apply(self, peer, &mine);
        apply(self, i, &theirs);
        let generation = self.ids[i as usize].generation;
        let next = match kind {
            SyncKind::AntiEntropy => Some((anti_entropy_every(self.scenario.n), kind)),
            SyncKind::Join { round, fruitless } => {
                let fruitless = if self.up[i as usize] > knew { 0 } else { fruitless + 1 };
                (fruitless < 2 && round < 12).then_some((0.5, SyncKind::Join { round: round + 1, fruitless }))
            }
        };
        if let Some((after, kind)) = next {
            self.push(self.now_us + (after * 1e6) as u64, Event::Sync { node: i, generation, kind });
        }
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Deliver { to, data } => {
                self.step(to, |node, rt| {
                    let _ = node.handle_data(&data, rt);
                });
            }
            Event::Timer { node, generation, timer } => {
                if self.ids[node as usize].generation == generation {
                    self.step(node, |n, rt| {
                        let _ = n.handle_timer(timer, rt);
                    });
                }
            }
            Event::Sync { node, generation, kind } => {
                if self.ids[node as usize].generation == generation && self.nodes[node as usize].is_some() {
                    self.sync(node, kind);
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

    fn converged(&self) -> bool {
        let live = self.live().count();
        self.live().all(|i| self.up[i] + 1 >= live)
    }

    fn now_s(&self) -> f64 {
        self.now_us as f64 / 1e6
    }
}

/// A cold start of `n` nodes (all within 100 ms), then an idle window, a kill, a leave,
/// and, if the scenario says so, loss and restarts.
pub fn run(scenario: Scenario, cpu_seconds: impl Fn() -> f64) -> Report {
    let real = std::time::Instant::now();
    let n = scenario.n;
    let mut sim = Sim {
        now_us: 0,
        seq: 0,
        queue: BinaryHeap::new(),
        nodes: (0..n).map(|_| None).collect(),
        ids: (0..n as u32).map(|node| SimId { node, generation: 0, serves: 0x9e37_79b9_7f4a_7c15 }).collect(),
        up: vec![0; n],
        rng: StdRng::seed_from_u64(scenario.seed),
        scenario,
        datagram_bytes: 0,
        datagrams: 0,
        sync_bytes: 0,
        largest: 0,
        false_down_since: Default::default(),
        false_downs: 0,
        longest_false_down_us: 0,
        watched: None,
    };
    let mut report = Report::default();
    for i in 0..n as u32 {
        sim.now_us = sim.rng.random_range(0..100_000);
        sim.start(i, 0);
    }
    sim.now_us = 0;
    // Cold start: wait for every view to be complete.
    while sim.now_s() < CONVERGE_WITHIN {
        sim.run_until(sim.now_s() + 0.1);
        if sim.converged() {
            report.converged_s = Some(sim.now_s());
            break;
        }
    }
    let live = sim.live().count();
    report.seen = sim.live().map(|i| (sim.up[i] + 1) as f64).sum::<f64>() / (live * live) as f64;

    // Idle: what a node costs once the mesh is known (past every joining sync, and once
    // every node has sent what it had to disseminate).
    sim.run_until(sim.now_s().max(5.0));
    while sim.now_s() < CONVERGE_WITHIN && sim.nodes.iter().flatten().any(|node| node.updates_backlog() > 0) {
        sim.run_until(sim.now_s() + 0.5);
    }
    report.quiet_s = sim.now_s();
    let (bytes0, datagrams0, cpu0) = (sim.datagram_bytes, sim.datagrams, cpu_seconds());
    sim.largest = 0;
    let t0 = sim.now_s();
    sim.run_until(t0 + IDLE_WINDOW);
    let per_node = |v: f64| v / IDLE_WINDOW / n as f64;
    report.datagram_bytes_per_node_s = per_node((sim.datagram_bytes - bytes0) as f64);
    report.datagrams_per_node_s = per_node((sim.datagrams - datagrams0) as f64);
    // Anti-entropy is rare: its rate from its schedule, not from a 10 s window.
    let full_state = postcard::to_allocvec(&sim.nodes[0].as_ref().unwrap().iter_membership_state().collect::<Vec<_>>())
        .unwrap()
        .len() as f64;
    report.sync_bytes_per_node_s = 2.0 * full_state / anti_entropy_every(n);
    report.cpu_pct_per_node = per_node(cpu_seconds() - cpu0) * 100.0;

    // A node killed: how long until every live node knows it down.
    let victim = (n / 2) as u32;
    sim.nodes[victim as usize] = None;
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
    // foca tells 3 members; a leaving meshrpc node would tell a few more (each gossip
    // round picks 3 others), so that a leave is known everywhere in one dissemination.
    sim.step(leaver, |node, rt| {
        node.leave_cluster(&mut *rt).unwrap();
        for _ in 0..3 {
            let _ = node.gossip(&mut *rt);
        }
    });
    sim.nodes[leaver as usize] = None;
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
            // Down for one to three seconds, then back as a new generation.
            sim.nodes[node as usize] = None;
            let down_for = sim.rng.random_range(1.0..3.0);
            sim.run_until(at + down_for);
            sim.ids[node as usize] = sim.ids[node as usize].renew().unwrap();
            sim.start(node, 0);
        }
        sim.run_until(start + 30.0);
        report.false_downs = sim.false_downs;
        let open = sim.false_down_since.values().map(|since| sim.now_us - since).max().unwrap_or(0);
        report.longest_false_down_s = sim.longest_false_down_us.max(open) as f64 / 1e6;
    }
    report.largest_datagram = sim.largest;
    report.real_s = real.elapsed().as_secs_f64();
    report.rss_mib = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:")?.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(0) as f64
        / 1024.0;
    report
}
