//! Issue 7: fault tests where every node is its own host (a network namespace with its
//! own IP on a bridge). Each scenario is bounded in time and prints what it measured.
//! Needs root; elsewhere each test says why it skipped — or fails, under CI, the heavy
//! tier and `./test.sh` as root (`tests/src/tier.rs`: one rule for the whole suite).

use std::time::{Duration, Instant};

use meshrpc_tests::{
    harness::{last_failure_ms, report_errors, unix_ms, Caller, Node},
    netns::Net,
    tls::Pki,
};
use serde_json::Value;

const MESHRPC: &str = env!("CARGO_BIN_EXE_meshrpc-cli");
const LABNODE: &str = env!("CARGO_BIN_EXE_labnode");
const LABCALL: &str = env!("CARGO_BIN_EXE_labcall");
const SCALENODE: &str = env!("CARGO_BIN_EXE_scalenode");
const CALLER: u8 = 100;

/// Scenarios run one at a time: their timing claims need the machine's two cores.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Waits for its turn; `None` (the test says it skipped) where namespaces cannot be made.
async fn scenario() -> Option<tokio::sync::MutexGuard<'static, ()>> {
    let turn = ONE_AT_A_TIME.lock().await;
    meshrpc_tests::tier::netns().then_some(turn)
}

/// Plaintext, or every node (and the caller) with its own certificate: mutual TLS and
/// sealed gossip. The TLS runs belong to the heavy tier.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Plain,
    Tls,
}

/// Whether this mode runs in this tier (the TLS matrix is heavy: `./test.sh --heavy`).
fn runs(mode: Mode) -> bool {
    mode == Mode::Plain || meshrpc_tests::tier::heavy("the TLS matrix of the netns suite")
}

struct Mesh {
    net: Net,
    tag: String,
    seed: Option<Node>,
    seed_addr: String,
    replicas: Vec<(u8, Node)>,
    pki: Option<Pki>,
}

impl Mesh {
    /// `--tls-dir` for a node named `name`, with a certificate for `services` (TLS mode).
    fn tls_args(&self, name: &str, services: &[&str]) -> Vec<String> {
        match &self.pki {
            None => Vec::new(),
            Some(pki) => {
                let dir = pki.issue(name, name, services, &[]);
                vec!["--tls-dir".into(), dir.display().to_string()]
            }
        }
    }

    /// A seed (a greeter node, serving no `lab`) on host 1 and `n` lab replicas on hosts 2….
    async fn new(subnet: u8, n: u8, mode: Mode) -> Mesh {
        let mut net = Net::new(subnet);
        let seed_ip = net.host(1);
        for h in 2..2 + 5 {
            net.host(h);
        }
        net.host(CALLER);
        net.host(CALLER + 1);
        let tag = format!("netns{subnet}");
        let seed_addr = format!("{seed_ip}:11999");
        let pki = (mode == Mode::Tls).then(|| Pki::new(MESHRPC, &tag, &tag));
        let mut mesh = Mesh { net, tag, seed: None, seed_addr, replicas: Vec::new(), pki };
        mesh.start_seed().await;
        for h in 2..2 + n {
            mesh.start_replica(h).await;
        }
        mesh
    }

    async fn start_seed(&mut self) {
        let tls = self.tls_args("seed", &["greeter"]);
        let mut args = vec!["example", "greeter", "--listen-addr", &self.seed_addr, "--tag", &self.tag];
        args.extend(tls.iter().map(String::as_str));
        self.seed = Some(self.net.start(1, MESHRPC, &args).await);
    }

    async fn start_replica(&mut self, h: u8) -> u64 {
        let listen = format!("10.213.{}.{h}:11999", self.seed_addr.split('.').nth(2).unwrap());
        let name = format!("r{h}");
        let tls = self.tls_args(&name, &["lab", "greeter", "labhttp"]);
        let mut args = vec!["--listen", &listen, "--nodes", &self.seed_addr, "--tag", &self.tag, "--name", &name];
        args.extend(tls.iter().map(String::as_str));
        let node = self.net.start(h, LABNODE, &args).await;
        self.replicas.push((h, node));
        unix_ms()
    }

    fn replica(&mut self, h: u8) -> &mut Node {
        &mut self.replicas.iter_mut().find(|(n, _)| *n == h).unwrap().1
    }

    /// A caller on its own host, `duration_ms` of load from 32 concurrent callers.
    async fn load(&self, replicas: usize, duration_ms: u64) -> Caller {
        let (bin, mut args) = self.net.exec_args(CALLER, LABCALL);
        let replicas = replicas.to_string();
        let duration = duration_ms.to_string();
        let extra = [
            "--nodes",
            &self.seed_addr,
            "--tag",
            &self.tag,
            "--replicas",
            &replicas,
            "--duration-ms",
            &duration,
            "--concurrency",
            "32",
            "--sleep-ms",
            "2",
            "--timeout-ms",
            "3000",
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        args.extend(self.tls_args("caller", &[]));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut caller = Caller::start(&bin, &args);
        caller.calling().await;
        caller
    }
}

/// TLS runs use their own subnets (and tags), so the two modes never meet.
fn tls_subnet(mode: Mode) -> u8 {
    if mode == Mode::Tls {
        20
    } else {
        0
    }
}

fn answered_after(v: &Value, node: &str, t: u64) -> Option<u64> {
    v["node_buckets"][node].as_object()?.keys().map(|k| k.parse::<u64>().unwrap()).filter(|b| *b >= t).min()
}

#[tokio::test(flavor = "multi_thread")]
async fn scale_out_from_one_to_five_replicas_under_load() {
    scale_out_from_one_to_five_replicas_under_load_in(Mode::Plain).await
}

#[tokio::test(flavor = "multi_thread")]
async fn scale_out_from_one_to_five_replicas_under_load_over_mtls() {
    scale_out_from_one_to_five_replicas_under_load_in(Mode::Tls).await
}

async fn scale_out_from_one_to_five_replicas_under_load_in(mode: Mode) {
    if !runs(mode) {
        return;
    }
    let Some(_turn) = scenario().await else { return };
    let mut mesh = Mesh::new(11 + tls_subnet(mode), 1, mode).await;
    let caller = mesh.load(1, 8000).await;
    let mut started = Vec::new();
    for h in 3..=6 {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        started.push((h, mesh.start_replica(h).await));
    }
    let report = caller.report().await;
    let mut waits = Vec::new();
    for (h, at) in started {
        let first = report["first_seen"][format!("r{h}")].as_u64().unwrap_or(u64::MAX);
        waits.push(first.saturating_sub(at));
    }
    eprintln!(
        "netns scale-out 1→5: ok {}, failed {}, ms from start to first answer for r3..r6: {waits:?}",
        report["ok"],
        report_errors(&report)
    );
    assert_eq!(report_errors(&report), 0, "{}", report["errors"]);
    assert!(waits.iter().all(|w| *w <= 3000), "a new replica waited too long for traffic: {waits:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_a_replica_under_load() {
    kill_a_replica_under_load_in(Mode::Plain).await
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_a_replica_under_load_over_mtls() {
    kill_a_replica_under_load_in(Mode::Tls).await
}

async fn kill_a_replica_under_load_in(mode: Mode) {
    if !runs(mode) {
        return;
    }
    let Some(_turn) = scenario().await else { return };
    let mut mesh = Mesh::new(12 + tls_subnet(mode), 3, mode).await;
    let caller = mesh.load(3, 6000).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let killed = unix_ms();
    mesh.replica(3).kill().await;
    let report = caller.report().await;
    let last_error = last_failure_ms(&report).unwrap_or(killed);
    eprintln!(
        "netns kill -9: ok {}, failed {} (≤ 32 in flight), max latency {} ms, errors stopped {} ms after the kill",
        report["ok"],
        report_errors(&report),
        report["max_latency_ms"],
        last_error.saturating_sub(killed)
    );
    // Only calls in flight on it fail, as `unavailable` (none waits out its deadline: that
    // would be `timeout`); how long it took is printed above, not asserted.
    assert!(report_errors(&report) <= 32, "{}", report["errors"]);
    assert!(report["errors"].as_object().unwrap().keys().all(|k| k == "unavailable"), "{}", report["errors"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn drain_a_replica_under_load() {
    drain_a_replica_under_load_in(Mode::Plain).await
}

#[tokio::test(flavor = "multi_thread")]
async fn drain_a_replica_under_load_over_mtls() {
    drain_a_replica_under_load_in(Mode::Tls).await
}

async fn drain_a_replica_under_load_in(mode: Mode) {
    if !runs(mode) {
        return;
    }
    let Some(_turn) = scenario().await else { return };
    let mut mesh = Mesh::new(13 + tls_subnet(mode), 3, mode).await;
    let caller = mesh.load(3, 5000).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let start = Instant::now();
    let status = mesh.replica(3).terminate(Duration::from_secs(15)).await.expect("drained replica exits");
    let drain = start.elapsed();
    let report = caller.report().await;
    eprintln!("netns SIGTERM drain: ok {}, failed {}, drain took {drain:?}", report["ok"], report_errors(&report));
    assert!(status.success());
    assert_eq!(report_errors(&report), 0, "{}", report["errors"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn partition_a_replica_then_heal() {
    partition_a_replica_then_heal_in(Mode::Plain).await
}

#[tokio::test(flavor = "multi_thread")]
async fn partition_a_replica_then_heal_over_mtls() {
    partition_a_replica_then_heal_in(Mode::Tls).await
}

async fn partition_a_replica_then_heal_in(mode: Mode) {
    if !runs(mode) {
        return;
    }
    let Some(_turn) = scenario().await else { return };
    let mesh = Mesh::new(14 + tls_subnet(mode), 3, mode).await;
    let caller = mesh.load(3, 14_000).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let cut = unix_ms();
    mesh.net.link(3, false);
    tokio::time::sleep(Duration::from_millis(5000)).await;
    let healed = unix_ms();
    mesh.net.link(3, true);
    let report = caller.report().await;
    let last_error = last_failure_ms(&report).unwrap_or(cut);
    let back = answered_after(&report, "r3", healed);
    eprintln!(
        "netns partition: ok {}, failed {} {}, routed around {} ms after the cut, r3 answering again {:?} ms after healing",
        report["ok"], report_errors(&report), report["errors"], last_error.saturating_sub(cut), back.map(|b| b.saturating_sub(healed))
    );
    // Calls caught on the cut link fail when keepalive gives up on it (documented bound:
    // KEEPALIVE + KEEPALIVE_TIMEOUT = 3 s; the times are printed above): at most the
    // calls in flight then, and r3 takes calls again once the link is back.
    assert!(report_errors(&report) <= 64, "{}", report["errors"]);
    back.expect("r3 never answered again after the link came back");
}

#[tokio::test(flavor = "multi_thread")]
async fn restart_the_seed() {
    restart_the_seed_in(Mode::Plain).await
}

#[tokio::test(flavor = "multi_thread")]
async fn restart_the_seed_over_mtls() {
    restart_the_seed_in(Mode::Tls).await
}

async fn restart_the_seed_in(mode: Mode) {
    if !runs(mode) {
        return;
    }
    let Some(_turn) = scenario().await else { return };
    let mut mesh = Mesh::new(15 + tls_subnet(mode), 3, mode).await;
    let caller = mesh.load(3, 7000).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    mesh.seed.as_mut().unwrap().kill().await;
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let restarted = Instant::now();
    mesh.start_seed().await;
    // The restarted seed knows nobody; the others still gossip to it and it learns them.
    let (bin, mut args) = mesh.net.exec_args(CALLER + 1, MESHRPC);
    let seed_addr = mesh.seed_addr.clone();
    args.extend(["status", "--json", "--nodes", &seed_addr, "--tag", &mesh.tag, "--wait", "2"].map(String::from));
    args.extend(mesh.tls_args("status", &[]));
    let mut rejoined = None;
    let mut last = String::new();
    while restarted.elapsed() < Duration::from_secs(15) {
        let out = tokio::process::Command::new(&bin).args(&args).output().await.unwrap();
        last = format!("{}{}", String::from_utf8_lossy(&out.stderr), String::from_utf8_lossy(&out.stdout));
        if let Ok(v) = serde_json::from_slice::<Value>(&out.stdout) {
            let names: Vec<&str> = v["members"].as_array().unwrap().iter().filter_map(|m| m["name"].as_str()).collect();
            if ["r2", "r3", "r4"].iter().all(|r| names.contains(r)) {
                rejoined = Some(restarted.elapsed());
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let report = caller.report().await;
    eprintln!(
        "netns seed restart: ok {}, failed {}, restarted seed saw every replica after {rejoined:?}",
        report["ok"],
        report_errors(&report)
    );
    assert_eq!(report_errors(&report), 0, "{}", report["errors"]);
    assert!(rejoined.is_some(), "the restarted seed never learned the mesh; last status: {last}");
}

/// A seed named by a host name that has no address yet (a Swarm service or a headless
/// Kubernetes Service whose first task is still starting): the node finds the cluster
/// within seconds of the name resolving, not at chitchat's next look-up a minute later.
#[tokio::test(flavor = "multi_thread")]
async fn a_seed_name_that_resolves_late() {
    let Some(_turn) = scenario().await else { return };
    let mut net = Net::new(16);
    let seed_ip = net.host(1);
    let node_ip = net.host(2);
    net.hosts_file(2, "127.0.0.1 localhost\n");
    let tag = "netns16";
    let seed =
        net.start(1, SCALENODE, &["--listen", &format!("{seed_ip}:11999"), "--name", "seed", "--tag", tag]).await;
    let listen = format!("{node_ip}:11999");
    let args = ["--listen", &listen, "--name", "late", "--tag", tag, "--nodes", "seed.mesh.test:11999"];
    let node = net.start(2, SCALENODE, &args).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(node.logged("view 2 ", Duration::ZERO).await.is_none(), "joined before its seed's name resolved");
    let resolvable = unix_ms();
    net.hosts_file(2, &format!("127.0.0.1 localhost\n{seed_ip} seed.mesh.test\n"));
    let joined = node.logged("view 2 ", Duration::from_secs(15)).await;
    let seed_saw = seed.logged("view 2 ", Duration::from_secs(5)).await;
    eprintln!("netns late seed name: joined {joined:?} (name resolvable from {resolvable})");
    assert!(joined.is_some() && seed_saw.is_some(), "the node never found its seed once the name resolved");
}
