//! meshrpc side by side with tonic, tarpc and the loopback floor, in one run, with every
//! server in its own process on 127.0.0.1. Run: `bench/run.sh` (or
//! `cargo run --release -p meshrpc-bench -- [--quick]`).

mod colocated;
mod compression;
mod measure;
mod pki;
mod scaling;
mod streaming;
mod systems;

use std::{
    net::SocketAddr,
    process::Stdio,
    sync::Arc,
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use measure::{cpu_ns, latency, median, throughput, throughput_cpu};
use scaling::{print_scaling, scaling};
use systems::Client;
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

struct Opts {
    calls: u64,
    warmup: u64,
    secs: f64,
    in_flight: usize,
    soak_calls: u64,
}

fn main() {
    meshrpc::telemetry::Telemetry::from_env().install();
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("serve") {
        return serve(&args[2], &args[3], args.get(4).map(String::as_str));
    }
    if args.get(1).map(String::as_str) == Some("load") {
        let secs = args.get(4).map_or(10.0, |s| s.parse().unwrap());
        return load(&args[2], args[3].parse().unwrap(), secs, args.get(5).map_or(64, |s| s.parse().unwrap()));
    }
    if args.get(1).map(String::as_str) == Some("flood") {
        // `meshrpc-bench flood SYSTEM ADDR SIZE COUNT`: one stream against a server started
        // with `serve stream-…`, for profiling either side.
        let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
        let (size, count) = (args[4].parse().unwrap(), args[5].parse().unwrap());
        let rate = rt.block_on(streaming::flood(&args[2], args[3].parse().unwrap(), size, count));
        return println!("{}: {rate:.0} items/s", args[2]);
    }
    let quick = args.iter().any(|a| a == "--quick");
    let opts = if quick {
        Opts { calls: 2_000, warmup: 200, secs: 0.5, in_flight: 64, soak_calls: 20_000 }
    } else {
        Opts { calls: 20_000, warmup: 2_000, secs: 3.0, in_flight: 64, soak_calls: 1_000_000 }
    };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    // `meshrpc-bench colocated`: the colocated fast path alone.
    if args.get(1).map(String::as_str) == Some("colocated") {
        return rt.block_on(async { colocated::print(colocated::run(opts.calls * 50).await, f64::NAN) });
    }
    // `meshrpc-bench compression`: the compression row alone.
    if args.get(1).map(String::as_str) == Some("compression") {
        return rt.block_on(async { compression::print(&compression::run(opts.secs * 2.0).await) });
    }
    if args.get(1).map(String::as_str) == Some("compression-client") {
        let (plain, zstd, secs) = (args[2].parse().unwrap(), args[3].parse().unwrap(), args[4].parse().unwrap());
        return rt.block_on(compression::client_passes(plain, zstd, secs));
    }
    // `meshrpc-bench streams`: the streaming rows alone.
    if args.get(1).map(String::as_str) == Some("streams") {
        return rt.block_on(async {
            let (streams, beside) = streaming::run(&opts).await;
            streaming::print(&streams, &beside);
        });
    }
    rt.block_on(run(opts));
}

/// `meshrpc-bench load SYSTEM ADDR [SECS] [IN_FLIGHT]`: the throughput test alone against
/// a server started with `meshrpc-bench serve`, for profiling either side (`perf record
/// -p`); in flight 1 is the sequential test.
fn load(system: &str, addr: SocketAddr, secs: f64, in_flight: usize) {
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    // `BENCH_CLIENT_WORKERS=1`: a client whose calls and I/O stay on one thread.
    if let Some(workers) = std::env::var("BENCH_CLIENT_WORKERS").ok().and_then(|w| w.parse().ok()) {
        rt.worker_threads(workers);
    }
    let rt = rt.enable_all().build().unwrap();
    rt.block_on(async move {
        let client: Arc<dyn Client> = match system {
            "raw" if in_flight == 1 => Arc::new(systems::RawPingPong::connect(addr).await),
            "raw" => Arc::new(systems::RawMux::connect(addr).await),
            "meshrpc" => Arc::new(systems::MeshrpcClient::connect(addr, meshrpc::Codec::Postcard).await),
            "tonic" => Arc::new(systems::TonicClient::connect(addr).await),
            "tarpc" => Arc::new(systems::TarpcClient::connect(addr).await),
            other => panic!("unknown system {other}"),
        };
        let (calls_per_s, p99) = throughput(vec![client], in_flight, secs).await;
        println!("{system}: {calls_per_s:.0} calls/s, p99 {p99:.0} µs");
    });
}

fn serve(kind: &str, addr: &str, next: Option<&str>) {
    // As the node binaries do (the others' servers keep the limit they are given).
    if matches!(kind, "meshrpc" | "meshrpc-tls" | "stream-meshrpc" | "gateway-replica" | "gateway") {
        let _ = meshrpc::server::raise_fd_limit();
    }
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    // The multi-core view pins the server's runtime to 1 or 2 workers.
    if let Some(workers) = std::env::var("BENCH_SERVER_WORKERS").ok().and_then(|w| w.parse().ok()) {
        rt.worker_threads(workers);
    }
    let rt = rt.enable_all().build().unwrap();
    rt.block_on(async move {
        match kind {
            "raw" => systems::serve_raw(addr).await,
            "meshrpc" => systems::serve_meshrpc(addr, next).await,
            "meshrpc-tls" => systems::serve_meshrpc_tls(addr, next.unwrap()).await,
            "tonic" => systems::serve_tonic(addr).await,
            "tarpc" => systems::serve_tarpc(addr).await,
            "stream-meshrpc" => streaming::serve_meshrpc(addr).await,
            "stream-tonic" => streaming::serve_tonic(addr).await,
            "stream-raw" => streaming::serve_raw(addr).await,
            "stream-cluster" => streaming::serve_cluster(addr, next.unwrap()).await,
            "gateway-replica" => serve_gateway_replica(addr, next.unwrap()).await,
            "gateway" => serve_gateway(addr, next.unwrap()).await,
            "catalog" => compression::serve(addr, false).await,
            "catalog-zstd" => compression::serve(addr, true).await,
            other => panic!("unknown server kind {other}"),
        }
    });
}

async fn serve_gateway_replica(addr: &str, tag: &str) {
    let cluster = meshrpc::ClusterBuilder::from_env("bench-greeter").tag(tag).listen(addr).start().await.unwrap();
    cluster.publish(systems::GreeterServer::new(systems::Greet));
    println!("listening on {}", cluster.local_addr().unwrap());
    cluster.serve().await.unwrap();
}

async fn serve_gateway(seed: &str, tag: &str) {
    let cluster = meshrpc::ClusterBuilder::from_env("bench-gateway")
        .tag(tag)
        .seeds([seed])
        .listen("127.0.0.1:0")
        .start()
        .await
        .unwrap();
    let node = cluster.clone();
    tokio::spawn(async move { node.serve().await });
    cluster.wait_for(&[systems::GreeterClient::SPEC], Duration::from_secs(20)).await.unwrap();
    let gateway = meshrpc::Gateway::new(cluster);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    println!("listening on {}", listener.local_addr().unwrap());
    meshrpc::serve_http(listener, gateway.router(), meshrpc::ServerConfig::default(), std::future::pending()).await;
}

/// A server process of the bench.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    async fn start(kind: &str, args: &[&str]) -> Server {
        Server::start_with_workers(kind, args, None).await
    }

    async fn start_with_workers(kind: &str, args: &[&str], workers: Option<usize>) -> Server {
        let mut command = Command::new(std::env::current_exe().unwrap());
        command.arg("serve").arg(kind).args(args).env("RUST_LOG", "warn").stdout(Stdio::piped()).kill_on_drop(true);
        if let Some(w) = workers {
            command.env("BENCH_SERVER_WORKERS", w.to_string());
        }
        let mut child = command.spawn().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await.unwrap().unwrap().unwrap();
        let addr = line.strip_prefix("listening on ").unwrap().parse().unwrap();
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Server { child, addr }
    }

    /// (peak RSS, current RSS) in KiB, from /proc.
    fn rss(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id().unwrap())).unwrap_or_default();
        let field = |name: &str| {
            status.lines().find_map(|l| l.strip_prefix(name)?.split_whitespace().next()?.parse().ok()).unwrap_or(0)
        };
        (field("VmHWM:"), field("VmRSS:"))
    }
}

#[derive(Clone, Default)]
struct Row {
    name: String,
    /// Latency percentiles in µs: p50, p90, p99, max; one entry per pass.
    latency: Vec<[f64; 4]>,
    /// Calls per second with `in_flight` concurrent calls on one connection.
    throughput: Vec<f64>,
    /// p99 (µs) of the calls of the throughput test, one entry per pass.
    load_p99: Vec<f64>,
    /// Server CPU (user, sys) µs per call during the throughput test, one entry per pass.
    cpu_us: Vec<(f64, f64)>,
    /// Server CPU µs per call during the sequential test, one entry per pass.
    seq_cpu_us: Vec<f64>,
    rss_kib: u64,
}

impl Row {
    fn p(&self, i: usize) -> f64 {
        median(self.latency.iter().map(|l| l[i]).collect())
    }
    fn tput(&self) -> f64 {
        median(self.throughput.clone())
    }
    fn load_p99(&self) -> f64 {
        median(self.load_p99.clone())
    }
    fn seq_cpu(&self) -> f64 {
        median(self.seq_cpu_us.clone())
    }
    fn cpu(&self) -> (f64, f64) {
        (median(self.cpu_us.iter().map(|c| c.0).collect()), median(self.cpu_us.iter().map(|c| c.1).collect()))
    }
}

/// Runs one system: its server in a fresh process, latency then throughput.
async fn measure(system: &str, opts: &Opts, row: &mut Row) {
    let kind = match system {
        "raw floor" => "raw",
        "meshrpc json" | "meshrpc postcard" => "meshrpc",
        "meshrpc mtls" => "meshrpc-tls",
        other => other,
    };
    let credentials = credentials();
    let server_dir = credentials.0.display().to_string();
    let args: &[&str] = if kind == "meshrpc-tls" { &["127.0.0.1:0", &server_dir] } else { &["127.0.0.1:0"] };
    let server = Server::start(kind, args).await;
    let addr = server.addr;
    // One connection per server while latency is measured: a tokio server with a second
    // (idle) connection answers measurably slower here, so every system gets one.
    let client: Arc<dyn Client> = match system {
        "raw floor" => Arc::new(systems::RawPingPong::connect(addr).await),
        "meshrpc json" => Arc::new(systems::MeshrpcClient::connect(addr, meshrpc::Codec::Json).await),
        "meshrpc postcard" => Arc::new(systems::MeshrpcClient::connect(addr, meshrpc::Codec::Postcard).await),
        "meshrpc mtls" => Arc::new(systems::MeshrpcClient::connect_tls(addr, &credentials.1).await),
        "tonic" => Arc::new(systems::TonicClient::connect(addr).await),
        "tarpc" => Arc::new(systems::TarpcClient::connect(addr).await),
        other => panic!("{other}"),
    };
    let pid = server.child.id().unwrap_or(0);
    let before = cpu_ns(pid);
    row.latency.push(latency(&*client, opts).await);
    row.seq_cpu_us.push((cpu_ns(pid) - before) as f64 / 1000.0 / (opts.calls + opts.warmup) as f64);
    // The floor's throughput ceiling is a multiplexed socket; the others reuse their client.
    let conc: Arc<dyn Client> = match system {
        "raw floor" => {
            drop(client);
            Arc::new(systems::RawMux::connect(addr).await)
        }
        _ => client,
    };
    let (tput, p99, cpu) = throughput_cpu(vec![conc], opts.in_flight, opts.secs, server.child.id()).await;
    row.throughput.push(tput);
    row.load_p99.push(p99);
    row.cpu_us.push(cpu);
    row.rss_kib = row.rss_kib.max(server.rss().0);
}

const PASSES: usize = 3;

/// This VM's loopback has modes (decisions.md names two; a third showed in issue 12): a
/// sequential floor near 7 µs, near 17 µs, or near 60 µs, each lasting from seconds to
/// hours. Ratios are only compared within one mode.
fn vm_mode(floor_p50_us: f64) -> &'static str {
    if floor_p50_us < 11.0 {
        "fastest (≈ 7 µs)"
    } else if floor_p50_us < 35.0 {
        "fast (≈ 17 µs)"
    } else {
        "slow (≈ 60 µs)"
    }
}

async fn run(opts: Opts) {
    let systems = ["raw floor", "meshrpc json", "meshrpc postcard", "meshrpc mtls", "tonic", "tarpc"];
    let mut rows: Vec<Row> = systems.iter().map(|s| Row { name: s.to_string(), ..Row::default() }).collect();
    // Forward, backward, forward: drift between passes shows in the table.
    for pass in 0..PASSES {
        let order: Vec<usize> =
            if pass % 2 == 0 { (0..systems.len()).collect() } else { (0..systems.len()).rev().collect() };
        for i in order {
            eprintln!("pass {}: {}", pass + 1, systems[i]);
            measure(systems[i], &opts, &mut rows[i]).await;
        }
    }

    eprintln!("multi-core view");
    let scaling = scaling(&opts).await;
    eprintln!("interleaved floor vs meshrpc");
    let paired = interleaved(&opts).await;
    eprintln!("TLS handshakes");
    let handshakes = handshakes().await;
    eprintln!("hop chain");
    let (hop, local_hop_ns) = hop_chain(&opts).await;
    eprintln!("gateway");
    let gateway = gateway(&opts).await;
    eprintln!("soak");
    let soak = soak(&opts).await;
    eprintln!("streams");
    let (streams, beside) = streaming::run(&opts).await;
    eprintln!("colocated");
    let colocated = colocated::run(opts.calls * 50).await;
    eprintln!("compression");
    let compression = compression::run(opts.secs * 2.0).await;

    print_report(&opts, &rows, &hop, local_hop_ns, gateway, soak);
    print_interleaved(&paired, (2 * opts.calls / 500).max(1) * 500);
    print_scaling(&scaling, opts.in_flight);
    print_mtls(&rows, &paired, handshakes);
    streaming::print(&streams, &beside);
    colocated::print(colocated, rows.iter().find(|r| r.name == "meshrpc postcard").map_or(f64::NAN, |r| r.p(0)));
    compression::print(&compression);
}

/// The mTLS credentials of this run (made once).
fn credentials() -> (std::path::PathBuf, std::path::PathBuf) {
    static MADE: std::sync::OnceLock<(std::path::PathBuf, std::path::PathBuf)> = std::sync::OnceLock::new();
    MADE.get_or_init(|| pki::make(&std::env::temp_dir().join(format!("meshrpc-bench-pki-{}", std::process::id()))))
        .clone()
}

/// Median time (µs) to open a connection to a new peer, handshake included: plaintext,
/// then mutual TLS (TCP, TLS 1.3, then the mesh handshake).
async fn handshakes() -> (f64, f64) {
    let (server_dir, client_dir) = credentials();
    let plain = Server::start("meshrpc", &["127.0.0.1:0"]).await;
    let tls = Server::start("meshrpc-tls", &["127.0.0.1:0", &server_dir.display().to_string()]).await;
    let config = meshrpc::TlsConfig::from_dir(&client_dir).unwrap();
    let (mut p, mut t) = (Vec::new(), Vec::new());
    for _ in 0..200 {
        let start = Instant::now();
        let conn = meshrpc::connect(plain.addr).await.unwrap();
        p.push(start.elapsed().as_secs_f64() * 1e6);
        drop(conn);
        let start = Instant::now();
        let conn = meshrpc::transport::Connection::connect(
            tls.addr,
            meshrpc::transport::ConnectOptions::default().tls(config.clone()),
        )
        .await
        .unwrap();
        t.push(start.elapsed().as_secs_f64() * 1e6);
        drop(conn);
    }
    (median(p), median(t))
}

fn print_mtls(rows: &[Row], paired: &[(&str, f64, f64)], (plain_connect, tls_connect): (f64, f64)) {
    let json = rows.iter().find(|r| r.name == "meshrpc json").unwrap();
    let mtls = rows.iter().find(|r| r.name == "meshrpc mtls").unwrap();
    let find = |n: &str| paired.iter().find(|p| p.0 == n).map(|p| p.1).unwrap_or(f64::NAN);
    let (pj, pt) = (find("meshrpc json"), find("meshrpc mtls"));
    println!();
    println!(
        "mTLS (JSON codec): passes p50 {:.1} µs = {:.2} × plaintext ({:.1} µs); interleaved p50 {pt:.1} µs = {:.2} × plaintext ({pj:.1} µs) [target ≤ 1.15]; {:.0} calls/s @{} = {:.2} × plaintext ({:.0}) [target ≥ 0.8]. New peer (connect + handshakes): plaintext {plain_connect:.0} µs, mutual TLS {tls_connect:.0} µs.",
        mtls.p(0),
        mtls.p(0) / json.p(0),
        json.p(0),
        pt / pj,
        mtls.tput(),
        64,
        mtls.tput() / json.tput(),
        json.tput()
    );
}

/// p50/p99 (µs) of the floor and of meshrpc (JSON, postcard), measured in alternating
/// blocks of calls against servers running side by side, so drift of the machine hits
/// all alike: the fairest ratio to the floor this machine gives.
async fn interleaved(opts: &Opts) -> Vec<(&'static str, f64, f64)> {
    // One server per client: each server has exactly one connection, as in the passes.
    let raw = Server::start("raw", &["127.0.0.1:0"]).await;
    let json = Server::start("meshrpc", &["127.0.0.1:0"]).await;
    let postcard = Server::start("meshrpc", &["127.0.0.1:0"]).await;
    let (server_dir, client_dir) = credentials();
    let mtls = Server::start("meshrpc-tls", &["127.0.0.1:0", &server_dir.display().to_string()]).await;
    let clients: Vec<(&'static str, Box<dyn Client>)> = vec![
        ("raw floor", Box::new(systems::RawPingPong::connect(raw.addr).await)),
        ("meshrpc json", Box::new(systems::MeshrpcClient::connect(json.addr, meshrpc::Codec::Json).await)),
        ("meshrpc postcard", Box::new(systems::MeshrpcClient::connect(postcard.addr, meshrpc::Codec::Postcard).await)),
        ("meshrpc mtls", Box::new(systems::MeshrpcClient::connect_tls(mtls.addr, &client_dir).await)),
    ];
    let mut hists: Vec<Histogram<u64>> =
        clients.iter().map(|_| Histogram::new_with_bounds(1, 60_000_000_000, 3).unwrap()).collect();
    for (_, c) in &clients {
        for _ in 0..opts.warmup {
            c.call().await;
        }
    }
    let block = 500;
    for _ in 0..(2 * opts.calls / block).max(1) {
        for ((_, c), h) in clients.iter().zip(hists.iter_mut()) {
            for _ in 0..block {
                let t = Instant::now();
                c.call().await;
                h.record(t.elapsed().as_nanos() as u64).unwrap();
            }
        }
    }
    clients
        .iter()
        .zip(hists)
        .map(|((name, _), h)| {
            (*name, h.value_at_quantile(0.5) as f64 / 1000.0, h.value_at_quantile(0.99) as f64 / 1000.0)
        })
        .collect()
}

fn print_interleaved(paired: &[(&str, f64, f64)], calls: u64) {
    let (floor50, floor99) = (paired[0].1, paired[0].2);
    let parts: Vec<String> = paired
        .iter()
        .map(|(n, p50, p99)| {
            format!(
                "{n} p50 {p50:.1} µs ({:.2} × floor), p99 {p99:.1} µs ({:.2} × floor p99, {:.2} × floor p50)",
                p50 / floor50,
                p99 / floor99,
                p99 / floor50
            )
        })
        .collect();
    println!();
    println!(
        "Interleaved (blocks of 500 sequential calls in turn against servers running side by side, {calls} calls each): {}.",
        parts.join("; ")
    );
}

/// A→B→C→D→E, each a process calling the next: 5 RPC hops per call (client→A included).
async fn hop_chain(opts: &Opts) -> (Row, f64) {
    let mut servers: Vec<Server> = Vec::new();
    for _ in 0..5 {
        let next = servers.last().map(|s| s.addr.to_string());
        let mut args = vec!["127.0.0.1:0".to_string()];
        args.extend(next);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        servers.push(Server::start("meshrpc", &args).await);
    }
    let head = servers.last().unwrap().addr;
    let client = systems::HopChainClient(systems::HopClient::new(meshrpc::connect(head).await.unwrap()));
    let mut row = Row { name: "hop chain (5 hops)".into(), ..Row::default() };
    row.latency.push(latency(&client, opts).await);
    row.throughput.push(throughput(vec![Arc::new(client)], opts.in_flight, opts.secs).await.0);

    // The same chain in one process: the seed's "non-RPC call".
    use systems::Hop;
    let mut local: Option<Arc<dyn Hop>> = None;
    for _ in 0..5 {
        local = Some(Arc::new(systems::HopNode { next: local.take() }));
    }
    let local = local.unwrap();
    let n = 200_000;
    let t = Instant::now();
    for _ in 0..n {
        assert_eq!(local.hop(4).await.unwrap(), 4);
    }
    (row, t.elapsed().as_nanos() as f64 / n as f64 / 5.0)
}

struct GatewayFigures {
    p50_us: f64,
    p99_us: f64,
    rps_c1: f64,
    rps_c32: f64,
}

/// wrk against the gateway (HTTP/1.1 keep-alive) in front of one replica.
async fn gateway(opts: &Opts) -> Option<GatewayFigures> {
    if std::process::Command::new("wrk").arg("--version").output().is_err() {
        eprintln!("wrk not installed: gateway figures skipped (bench/run.sh installs it)");
        return None;
    }
    let tag = format!("bench-{}", std::process::id());
    let replica = Server::start("gateway-replica", &["127.0.0.1:0", &tag]).await;
    let seed = replica.addr.to_string();
    let gw = Server::start("gateway", &[&seed, &tag]).await;
    let script = std::env::temp_dir().join(format!("meshrpc-bench-{}.lua", std::process::id()));
    std::fs::write(&script, "wrk.method = \"POST\"\nwrk.body = '{\"name\":\"Max\"}'\n").unwrap();
    let url = format!("http://{}/greeter/greet", gw.addr);
    let secs = format!("{}s", opts.secs.ceil() as u64);
    let wrk = |conns: &'static str| {
        let out = std::process::Command::new("wrk")
            .args(["-t1", "-c", conns, "-d", &secs, "--latency", "-s"])
            .arg(&script)
            .arg(&url)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let c1 = wrk("1");
    let c32 = wrk("32");
    let _ = std::fs::remove_file(&script);
    if c1.contains("Non-2xx") || c32.contains("Non-2xx") {
        eprintln!("gateway answered errors:\n{c1}\n{c32}");
    }
    let pct = |text: &str, p: &str| -> f64 {
        let v = text
            .lines()
            .find(|l| l.trim_start().starts_with(p))
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap_or("0us");
        parse_wrk_duration(v)
    };
    let rps = |text: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with("Requests/sec:"))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0.0)
    };
    drop((replica, gw));
    Some(GatewayFigures { p50_us: pct(&c1, "50%"), p99_us: pct(&c1, "99%"), rps_c1: rps(&c1), rps_c32: rps(&c32) })
}

fn parse_wrk_duration(v: &str) -> f64 {
    let (num, unit) = v.split_at(v.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(v.len()));
    let n: f64 = num.parse().unwrap_or(0.0);
    match unit {
        "us" => n,
        "ms" => n * 1000.0,
        "s" => n * 1_000_000.0,
        _ => n,
    }
}

struct Soak {
    calls: u64,
    rss_kib: Vec<u64>,
}

/// Many calls against one meshrpc server, sampling its RSS: memory must stay flat.
async fn soak(opts: &Opts) -> Soak {
    let server = Server::start("meshrpc", &["127.0.0.1:0"]).await;
    let client: Arc<dyn Client> = Arc::new(systems::MeshrpcClient::connect(server.addr, meshrpc::Codec::Json).await);
    let per_task = opts.soak_calls / opts.in_flight as u64;
    let mut rss = vec![server.rss().1];
    for _ in 0..10 {
        let tasks: Vec<_> = (0..opts.in_flight)
            .map(|_| {
                let c = client.clone();
                tokio::spawn(async move {
                    for _ in 0..per_task / 10 {
                        c.call().await;
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        rss.push(server.rss().1);
    }
    Soak { calls: per_task / 10 * 10 * opts.in_flight as u64, rss_kib: rss }
}

fn print_report(opts: &Opts, rows: &[Row], hop: &Row, local_hop_ns: f64, gw: Option<GatewayFigures>, soak: Soak) {
    let floor = &rows[0];
    let tonic = rows.iter().find(|r| r.name == "tonic").unwrap();
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!("## meshrpc bench");
    println!();
    println!(
        "{nproc} cores, Linux {}, {} sequential calls after {} warm-up; throughput: {} calls in flight on one connection for {} s after 0.5 s of warm-up; {PASSES} passes (forward, reverse, forward), median shown, each pass's p50 in brackets.",
        kernel.trim(), opts.calls, opts.warmup, opts.in_flight, opts.secs
    );
    println!();
    let modes: Vec<String> = floor
        .latency
        .iter()
        .enumerate()
        .map(|(i, l)| format!("pass {}: floor p50 {:.1} µs, {} mode", i + 1, l[0], vm_mode(l[0])))
        .collect();
    println!("VM loopback mode of each pass (from the floor's own p50): {}.", modes.join("; "));
    println!();
    let tarpc = rows.iter().find(|r| r.name == "tarpc").unwrap();
    println!("| system | p50 µs | p90 µs | p99 µs | max µs | p50 ÷ floor | p99 ÷ floor p99 | calls/s @{} | ÷ raw mux | ÷ tonic | ÷ tarpc | p99 under load µs | ÷ raw mux p99 | server CPU µs/call @{} (user+sys) | ÷ echo server | server CPU µs/call, sequential | ÷ echo server | server peak RSS |", opts.in_flight, opts.in_flight);
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        let passes: Vec<String> = r.latency.iter().map(|l| format!("{:.0}", l[0])).collect();
        println!(
            "| {} | {:.1} [{}] | {:.1} | {:.1} | {:.0} | {:.2} | {:.2} | {:.0} | {:.2} | {:.2} | {:.2} | {:.0} | {:.2} | {:.1} + {:.1} = {:.1} | {:.2} | {:.1} | {:.2} | {:.1} MiB |",
            r.name,
            r.p(0),
            passes.join(", "),
            r.p(1),
            r.p(2),
            r.p(3),
            r.p(0) / floor.p(0),
            r.p(2) / floor.p(2),
            r.tput(),
            r.tput() / floor.tput(),
            r.tput() / tonic.tput(),
            r.tput() / tarpc.tput(),
            r.load_p99(),
            r.load_p99() / floor.load_p99(),
            r.cpu().0,
            r.cpu().1,
            r.cpu().0 + r.cpu().1,
            (r.cpu().0 + r.cpu().1) / (floor.cpu().0 + floor.cpu().1),
            r.seq_cpu(),
            r.seq_cpu() / floor.seq_cpu(),
            r.rss_kib as f64 / 1024.0
        );
    }
    println!();
    let per_hop = hop.p(0) / 5.0;
    println!(
        "Hop chain A→B→C→D→E (5 processes, 5 RPC hops a call): p50 {:.1} µs, p99 {:.1} µs a call; **{:.1} µs per hop** = {:.2} × floor (Go meshRPC: 197.4 µs per hop); {:.0} chain calls/s at {} in flight. Same chain in one process (no RPC): {:.0} ns per hop.",
        hop.p(0), hop.p(2), per_hop, per_hop / floor.p(0), hop.tput(), opts.in_flight, local_hop_ns
    );
    println!();
    let direct = rows.iter().find(|r| r.name == "meshrpc json").unwrap();
    match gw {
        Some(g) => println!(
            "Gateway (wrk, HTTP/1.1 keep-alive, POST /greeter/greet → one replica): 1 connection p50 {:.0} µs, p99 {:.0} µs, {:.0} req/s; 32 connections {:.0} req/s. p50 ÷ direct meshrpc call p50 = {:.2}.",
            g.p50_us, g.p99_us, g.rps_c1, g.rps_c32, g.p50_us / direct.p(0)
        ),
        None => println!("Gateway: not measured (wrk missing)."),
    }
    println!();
    let mib: Vec<String> = soak.rss_kib.iter().map(|k| format!("{:.1}", *k as f64 / 1024.0)).collect();
    println!(
        "Soak: {} calls at {} in flight; server RSS (MiB) every tenth: {}.",
        soak.calls,
        opts.in_flight,
        mib.join(" → ")
    );
}
