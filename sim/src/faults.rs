//! Faults drawn from the seed, and their injection between the simulation's steps. To
//! add a fault: a [`Fault`] variant, a line in [`plan`] that draws it, and its start and
//! end in [`Injector`].

use std::time::Duration;

use crate::{Config, Rng, Shared};

/// When the first fault may start (the nodes have joined by then).
pub const START: Duration = Duration::from_secs(2);

/// One fault, between two hosts or on one node.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// Nothing gets through between the two, either way.
    Partition(String, String),
    /// Messages between the two are held, then delivered when it ends (a slow link).
    Hold(String, String),
    /// This share of messages between the two is lost (percent).
    Loss(String, String, u32),
    /// Messages between the two take up to this long (ms).
    Delay(String, String, u64),
    /// The node crashes (loses every task and connection) and restarts when it ends.
    Crash(String),
    /// The node's ledger answers errors.
    Faulty(String),
    /// The node drains (graceful shutdown) and restarts when it ends.
    Drain(String),
    /// Every node's wall clock moves by this much (ms; negative: back).
    ClockJump(i64),
    /// The node is cut off from every other host briefly: a stalled process.
    Stall(String),
    /// The mesh splits in two: these nodes on one side, every other host on the other.
    Split(Vec<String>),
}

/// A fault and when it starts and ends.
#[derive(Debug, Clone)]
pub struct Planned {
    /// When it starts (simulated time).
    pub at: Duration,
    /// When it ends.
    pub until: Duration,
    /// What it is.
    pub fault: Fault,
}

/// The run's faults: a handful to a dozen, each 0.2–4 s long, within the fault window.
pub fn plan(config: &Config) -> Vec<Planned> {
    let mut rng = Rng::new(config.seed ^ 0xfa17);
    let nodes: Vec<String> = (0..config.nodes).map(|i| format!("n{i}")).collect();
    let hosts: Vec<String> = nodes.iter().cloned().chain((0..config.callers).map(|c| format!("c{c}"))).collect();
    let end = START + config.faults;
    let count = rng.between(3, 12);
    let mut plan = Vec::new();
    // A node is crashed or drained by one fault at a time.
    let mut down_until = vec![Duration::ZERO; nodes.len()];
    for _ in 0..count {
        let at = START + Duration::from_millis(rng.below(config.faults.as_millis() as u64 - 500));
        let until = (at + Duration::from_millis(rng.between(200, 4000))).min(end);
        let pick = |rng: &mut Rng, of: &[String]| of[rng.below(of.len() as u64) as usize].clone();
        let pair = |rng: &mut Rng| {
            let a = pick(rng, &hosts);
            let mut b = pick(rng, &hosts);
            while b == a {
                b = pick(rng, &hosts);
            }
            (a, b)
        };
        let fault = match rng.below(10) {
            9 => {
                let mut side: Vec<String> = Vec::new();
                for _ in 0..rng.between(1, (nodes.len() as u64 / 2).max(1)) {
                    let n = pick(&mut rng, &nodes);
                    if !side.contains(&n) {
                        side.push(n);
                    }
                }
                side.sort();
                Fault::Split(side)
            }
            0 => {
                let (a, b) = pair(&mut rng);
                Fault::Partition(a, b)
            }
            1 => {
                let (a, b) = pair(&mut rng);
                Fault::Hold(a, b)
            }
            2 => {
                let (a, b) = pair(&mut rng);
                Fault::Loss(a, b, rng.between(5, 50) as u32)
            }
            3 => {
                let (a, b) = pair(&mut rng);
                Fault::Delay(a, b, rng.between(20, 400))
            }
            4 | 5 => {
                let i = rng.below(nodes.len() as u64) as usize;
                if down_until[i] > at {
                    continue;
                }
                down_until[i] = until;
                if rng.below(2) == 0 {
                    Fault::Crash(nodes[i].clone())
                } else {
                    Fault::Drain(nodes[i].clone())
                }
            }
            6 => Fault::Faulty(pick(&mut rng, &nodes)),
            7 => Fault::ClockJump(rng.between(0, 20_000) as i64 - 10_000),
            _ => Fault::Stall(pick(&mut rng, &nodes)),
        };
        plan.push(Planned { at, until, fault });
    }
    plan.sort_by_key(|p| p.at);
    plan
}

/// Starts and ends the planned faults as simulated time reaches them.
pub(crate) struct Injector {
    /// (when, start?, fault), in time order.
    events: Vec<(Duration, bool, Fault)>,
    next: usize,
    hosts: Vec<String>,
}

impl Injector {
    pub(crate) fn new(plan: &[Planned], hosts: &[String]) -> Injector {
        let mut events: Vec<_> =
            plan.iter().flat_map(|p| [(p.at, true, p.fault.clone()), (p.until, false, p.fault.clone())]).collect();
        events.sort_by_key(|e| (e.0, e.1));
        Injector { events, next: 0, hosts: hosts.to_vec() }
    }

    pub(crate) fn apply_due(&mut self, sim: &mut turmoil::Sim<'_>, shared: &Shared) {
        let now = sim.elapsed();
        while let Some((at, start, fault)) = self.events.get(self.next).cloned() {
            if at > now {
                break;
            }
            self.next += 1;
            let line = format!("{:>8.3} fault {} {fault:?}", now.as_secs_f64(), if start { "starts" } else { "ends" });
            shared.log.lock().unwrap().push(line);
            match (fault, start) {
                (Fault::Partition(a, b), true) => sim.partition(a, b),
                (Fault::Partition(a, b), false) => sim.repair(a, b),
                (Fault::Hold(a, b), true) => sim.hold(a, b),
                (Fault::Hold(a, b), false) => sim.release(a, b),
                (Fault::Loss(a, b, pct), true) => sim.set_link_fail_rate(a, b, f64::from(pct) / 100.0),
                (Fault::Loss(a, b, _), false) => sim.set_link_fail_rate(a, b, 0.0),
                (Fault::Delay(a, b, ms), true) => sim.set_link_max_message_latency(a, b, Duration::from_millis(ms)),
                (Fault::Delay(a, b, _), false) => sim.set_link_max_message_latency(a, b, Duration::from_millis(3)),
                (Fault::Crash(n), true) => {
                    shared.incarnations.lock().unwrap().remove(&n);
                    sim.crash(n)
                }
                (Fault::Crash(n), false) => sim.bounce(n),
                (Fault::Faulty(n), true) => {
                    shared.books.faulty.lock().unwrap().insert(n);
                }
                (Fault::Faulty(n), false) => {
                    shared.books.faulty.lock().unwrap().remove(&n);
                }
                (Fault::Drain(n), true) => {
                    shared.incarnations.lock().unwrap().remove(&n);
                    shared.draining.lock().unwrap().push(n)
                }
                (Fault::Drain(n), false) => {
                    shared.draining.lock().unwrap().retain(|d| *d != n);
                    sim.bounce(n);
                }
                (Fault::ClockJump(ms), true) => crate::jump_wall_clock(ms),
                (Fault::ClockJump(_), false) => {}
                (Fault::Split(side), start) => {
                    for a in &side {
                        for b in self.hosts.iter().filter(|h| !side.contains(h)) {
                            if start {
                                sim.partition(a.as_str(), b.as_str());
                            } else {
                                sim.repair(a.as_str(), b.as_str());
                            }
                        }
                    }
                }
                (Fault::Stall(n), start) => {
                    for other in self.hosts.iter().filter(|h| **h != n) {
                        if start {
                            sim.hold(n.as_str(), other.as_str());
                        } else {
                            sim.release(n.as_str(), other.as_str());
                        }
                    }
                }
            }
        }
    }
}
