//! Deterministic simulation of a meshrpc mesh: N real cluster nodes (the library's
//! `Cluster`, serving the greeter and the simulation's [`ledger`]) and callers, all in one
//! process on turmoil's simulated network and clock, with faults drawn from a seed
//! ([`faults`]) and the invariants of the mesh checked during and after each run
//! ([`Report::violations`]). The same seed gives the same run: [`Report::log`] is
//! byte-identical between two runs of one seed (when built with `--cfg tokio_unstable`,
//! which lets turmoil seed tokio's own random choices: `sim/run.sh` does).
//!
//! The seams it runs through are the library's: `transport::Network` for every socket
//! (mesh port, connections to peers, gossip), tokio's clock for every deadline and
//! timeout, and `meshrpc::simulation::install` for the wall clock and random seeds.

pub mod faults;
pub mod ledger;
pub mod net;
mod rng;
mod traffic;

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicI64, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, SystemTime},
};

use meshrpc::cluster::Cluster;

pub use faults::Fault;
use ledger::{Books, LedgerNode, LedgerServer};
pub use rng::Rng;

/// The mesh port of every node.
const PORT: u16 = 7000;
/// Calls' deadline.
pub const DEADLINE: Duration = Duration::from_secs(2);
/// After the faults stop, every caller's calls must succeed again within this.
pub const CONVERGENCE: Duration = Duration::from_secs(20);
/// How many attempts an idempotent call may make (the cluster's failover limit).
pub const ATTEMPTS: u32 = 3;

/// One run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Everything random in the run comes from it: faults, traffic, turmoil's network,
    /// tokio's choices, the nodes' seeds.
    pub seed: u64,
    /// Nodes serving (at least 2: the first two are the seeds).
    pub nodes: usize,
    /// Client-only nodes calling.
    pub callers: usize,
    /// How long faults are injected (traffic runs through it, then the mesh must heal).
    pub faults: Duration,
    /// Runs the library with a bug injected on purpose: calls that are not idempotent are
    /// retried after they reached a replica (the simulation must catch it).
    pub broken_retries: bool,
    /// These faults instead of the seed's (a regression test's scenario).
    pub plan: Option<Vec<faults::Planned>>,
}

impl Config {
    /// A run of `seed` with `nodes` nodes, two callers and 10 s of faults.
    pub fn new(seed: u64, nodes: usize) -> Config {
        Config {
            seed,
            nodes: nodes.max(2),
            callers: 2,
            faults: Duration::from_secs(10),
            broken_retries: false,
            plan: None,
        }
    }

    /// The command that replays this run.
    pub fn replay(&self) -> String {
        let broken = if self.broken_retries { " --broken-retries" } else { "" };
        format!("sim/run.sh --seed {} --nodes {}{broken}", self.seed, self.nodes)
    }
}

/// What a run saw.
#[derive(Debug, Default)]
pub struct Report {
    /// Every event (faults, calls and how they ended), in order, with its simulated time.
    pub log: Vec<String>,
    /// Invariants broken.
    pub violations: Vec<String>,
    /// Calls made.
    pub calls: u64,
    /// Calls that failed with a code (allowed during faults).
    pub failed: u64,
}

/// What the hosts of a run share with the harness.
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) books: Arc<Books>,
    pub(crate) log: Mutex<Vec<String>>,
    pub(crate) violations: Mutex<Vec<String>>,
    pub(crate) next_id: AtomicU64,
    /// Nodes told to drain (by name).
    pub(crate) draining: Mutex<Vec<String>>,
    /// Which calls were deposits (ids), for the effect check.
    pub(crate) deposits: Mutex<Vec<u64>>,
    pub(crate) calls: AtomicU64,
    pub(crate) failed: AtomicU64,
    /// Each node's current incarnation: when it started (its members' `started_ms`).
    pub(crate) incarnations: Mutex<std::collections::BTreeMap<String, u64>>,
    /// Nodes that saw every node serving after the faults stopped.
    pub(crate) converged: Mutex<std::collections::BTreeSet<String>>,
}

impl Shared {
    pub(crate) fn log(&self, line: String) {
        let t = turmoil::sim_elapsed().unwrap_or_default();
        self.log.lock().unwrap().push(format!("{:>8.3} {line}", t.as_secs_f64()));
    }

    pub(crate) fn violation(&self, what: String) {
        self.log(format!("VIOLATION {what}"));
        self.violations.lock().unwrap().push(what);
    }

    pub(crate) fn seeds(&self) -> Vec<String> {
        ["n0", "n1"].iter().map(|n| SocketAddr::new(turmoil::lookup(*n), PORT).to_string()).collect()
    }

    pub(crate) fn faults_end(&self) -> Duration {
        self.config.faults + faults::START
    }
}

/// The wall clock's offset from the simulated time (a clock-jump fault moves it), and the
/// state of the random seeds handed to nodes: both the run's, reset at its start.
static WALL_JUMP_MS: AtomicI64 = AtomicI64::new(0);
static ENTROPY: AtomicU64 = AtomicU64::new(0);
/// One run at a time per process: the hooks above are process-wide.
static RUNNING: Mutex<()> = Mutex::new(());

fn wall() -> SystemTime {
    let base = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let t = base + turmoil::sim_elapsed().unwrap_or_default();
    let jump = WALL_JUMP_MS.load(Ordering::Relaxed);
    if jump >= 0 {
        t + Duration::from_millis(jump as u64)
    } else {
        t - Duration::from_millis(jump.unsigned_abs())
    }
}

fn entropy() -> u64 {
    rng::splitmix(ENTROPY.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed))
}

/// Runs one simulation.
pub fn run(config: &Config) -> Report {
    let _one = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
    meshrpc::simulation::install(wall, entropy);
    WALL_JUMP_MS.store(0, Ordering::Relaxed);
    ENTROPY.store(config.seed ^ 0x5eed, Ordering::Relaxed);
    meshrpc::simulation::retry_calls_that_reached_a_replica(config.broken_retries);
    let shared = Arc::new(Shared {
        config: config.clone(),
        books: Arc::default(),
        log: Mutex::default(),
        violations: Mutex::default(),
        next_id: AtomicU64::new(1),
        draining: Mutex::default(),
        deposits: Mutex::default(),
        calls: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        converged: Mutex::default(),
        incarnations: Mutex::default(),
    });
    let mut sim = turmoil::Builder::new()
        .rng_seed(config.seed)
        .enable_random_order()
        .simulation_duration(shared.faults_end() + CONVERGENCE + Duration::from_secs(40))
        .tick_duration(Duration::from_millis(2))
        .min_message_latency(Duration::from_micros(200))
        .max_message_latency(Duration::from_millis(3))
        .build();
    let names: Vec<String> = (0..config.nodes).map(|i| format!("n{i}")).collect();
    for name in &names {
        let (name, shared) = (name.clone(), shared.clone());
        sim.host(name.clone(), move || node(name.clone(), shared.clone()));
    }
    for c in 0..config.callers {
        let name = format!("c{c}");
        sim.client(name.clone(), traffic::caller(name, shared.clone()));
    }
    let plan = config.plan.clone().unwrap_or_else(|| faults::plan(config));
    let hosts: Vec<String> = names.iter().cloned().chain((0..config.callers).map(|c| format!("c{c}"))).collect();
    let mut faults = faults::Injector::new(&plan, &hosts);
    loop {
        faults.apply_due(&mut sim, &shared);
        match sim.step() {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => {
                shared.violation(format!("the simulation stopped: {e}"));
                break;
            }
        }
    }
    check_effects(&shared);
    meshrpc::simulation::retry_calls_that_reached_a_replica(false);
    let log = std::mem::take(&mut *shared.log.lock().unwrap());
    let violations = std::mem::take(&mut *shared.violations.lock().unwrap());
    Report {
        log,
        violations,
        calls: shared.calls.load(Ordering::Relaxed),
        failed: shared.failed.load(Ordering::Relaxed),
    }
}

/// A node: joins through the seeds, serves the ledger and the greeter until it is told to
/// drain (then stays down until the plan restarts it) or crashes.
async fn node(name: String, shared: Arc<Shared>) -> turmoil::Result {
    let ip = turmoil::lookup(name.as_str());
    let cluster = Cluster::builder(name.clone())
        .listen(format!("0.0.0.0:{PORT}"))
        .advertise_ip(ip)
        .seeds(shared.seeds())
        .network(Arc::new(net::SimNet))
        .start()
        .await?;
    cluster.publish(LedgerServer::new(LedgerNode { name: name.clone(), books: shared.books.clone() }));
    cluster.publish(greeter::GreeterServer::new(greeter::MyGreeter::default()));
    let drain = {
        let (cluster, shared, name) = (cluster.clone(), shared.clone(), name.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(50)).await;
                if shared.draining.lock().unwrap().contains(&name) {
                    cluster.shutdown().await;
                    return;
                }
            }
        })
    };
    // This incarnation, as members know it (from its own view; a node may take a new
    // identity when it finds its former self outranks it), until it drains.
    let record = {
        let (cluster, shared, name) = (cluster.clone(), shared.clone(), name.clone());
        tokio::spawn(async move {
            loop {
                if let Some(me) = cluster.members().into_iter().find(|m| m.name == name) {
                    shared.incarnations.lock().unwrap().insert(name.clone(), me.started_ms);
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    };
    let view = {
        let (cluster, shared, name) = (cluster.clone(), shared.clone(), name.clone());
        tokio::spawn(async move {
            let end = shared.faults_end();
            while turmoil::sim_elapsed().unwrap_or_default() < end {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            if traffic::converged(&cluster, &shared, &name).await {
                shared.converged.lock().unwrap().insert(name);
            }
        })
    };
    cluster.serve().await?;
    drain.abort();
    view.abort();
    record.abort();
    shared.log(format!("{name} drained"));
    std::future::pending::<()>().await;
    Ok(())
}

/// Every deposit's effect happened at most once; every look's at most once per attempt.
fn check_effects(shared: &Shared) {
    let effects = shared.books.effects.lock().unwrap().clone();
    let deposits: std::collections::BTreeSet<u64> = shared.deposits.lock().unwrap().iter().copied().collect();
    for (id, times) in effects {
        let most = if deposits.contains(&id) { 1 } else { ATTEMPTS };
        if times > most {
            let kind = if deposits.contains(&id) { "deposit (not idempotent)" } else { "look (idempotent)" };
            shared.violation(format!("call {id}, a {kind}, took effect {times} times (at most {most})"));
        }
    }
}

/// Moves the wall clock of every node by `ms` (a clock-jump fault).
pub(crate) fn jump_wall_clock(ms: i64) {
    WALL_JUMP_MS.fetch_add(ms, Ordering::Relaxed);
}
