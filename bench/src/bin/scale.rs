//! Membership at scale (issue 22): a `meshrpc gateway` and N `meshrpc example greeter`
//! replicas joined through it, on this machine, for N = 16, 32, 64, 128: time until the
//! gateway sees them all, then the idle cost of the whole mesh over a window (CPU, RSS,
//! UDP datagrams), then 2,000 calls through the gateway. Run by `bench/scale.sh`.

use std::{
    process::Stdio,
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
    process::{Child, Command},
};

const SIZES: [usize; 4] = [16, 32, 64, 128];
/// Idle before measuring (gossip settles), then the measured window.
const SETTLE: Duration = Duration::from_secs(10);
const WINDOW: Duration = Duration::from_secs(10);
const CALLS: usize = 2_000;

fn stat(pid: u32) -> (u64, u64) {
    // utime + stime (clock ticks), RSS pages.
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = text.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // After the command: state is field 0; utime 11, stime 12, rss 21.
    (num(11) + num(12), num(21))
}

fn udp_in_datagrams() -> u64 {
    let text = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
    let mut lines = text.lines().filter(|l| l.starts_with("Udp:"));
    let (names, values) = (lines.next().unwrap_or(""), lines.next().unwrap_or(""));
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "InDatagrams")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

fn spawn(meshrpc: &str, args: &[&str]) -> Child {
    Command::new(meshrpc)
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// Reads the child's stdout until a line starts with each prefix; returns the rests.
async fn lines(child: &mut Child, prefixes: &[&str]) -> Vec<String> {
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut found = vec![String::new(); prefixes.len()];
    while found.iter().any(String::is_empty) {
        let Some(l) = lines.next_line().await.unwrap() else { panic!("exited before printing {prefixes:?}") };
        for (i, p) in prefixes.iter().enumerate() {
            if let Some(rest) = l.strip_prefix(p) {
                found[i] = rest.to_owned();
            }
        }
    }
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    found
}

async fn members(http: &str) -> usize {
    let Ok(mut conn) = TcpStream::connect(http).await else { return 0 };
    let _ = conn.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await;
    let mut body = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), conn.read_to_string(&mut body)).await;
    body.split("\"members\":")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
        .unwrap_or(0)
}

async fn call(http: &str) -> bool {
    let Ok(mut conn) = TcpStream::connect(http).await else { return false };
    let req =
        b"POST /greeter/greet HTTP/1.1\r\nhost: x\r\ncontent-length: 14\r\nconnection: close\r\n\r\n{\"name\":\"Max\"}";
    if conn.write_all(req).await.is_err() {
        return false;
    }
    let mut body = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), conn.read_to_string(&mut body)).await;
    body.starts_with("HTTP/1.1 200")
}

struct Row {
    n: usize,
    converged_s: f64,
    /// Of which spent starting the processes (the last one spawned at).
    spawned_s: f64,
    cpu_pct: f64,
    rss_mib: f64,
    datagrams: f64,
    failed: usize,
}

async fn run(meshrpc: &str, n: usize) -> Row {
    let tag = format!("scale{n}");
    let mut gateway =
        spawn(meshrpc, &["gateway", "--listen", "127.0.0.1:0", "--listen-addr", "127.0.0.1:0", "--tag", &tag]);
    let gateway_pid = gateway.id().unwrap();
    let found = lines(&mut gateway, &["listening on ", "mesh on "]).await;
    let (http, seed) = (found[0].clone(), found[1].clone());
    let start = Instant::now();
    let mut replicas = Vec::new();
    for _ in 0..n {
        replicas.push(spawn(
            meshrpc,
            &["example", "greeter", "--nodes", &seed, "--listen-addr", "127.0.0.1:0", "--tag", &tag],
        ));
    }
    let spawned = start.elapsed().as_secs_f64();
    let mut converged = f64::NAN;
    while start.elapsed() < Duration::from_secs(120) {
        if members(&http).await > n {
            converged = start.elapsed().as_secs_f64();
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(SETTLE).await;
    let mut pids: Vec<u32> = replicas.iter().filter_map(Child::id).collect();
    pids.push(gateway_pid);
    let before: Vec<(u64, u64)> = pids.iter().map(|p| stat(*p)).collect();
    let udp_before = udp_in_datagrams();
    let t0 = Instant::now();
    tokio::time::sleep(WINDOW).await;
    let secs = t0.elapsed().as_secs_f64();
    let after: Vec<(u64, u64)> = pids.iter().map(|p| stat(*p)).collect();
    let udp = udp_in_datagrams() - udp_before;
    let ticks: u64 = before.iter().zip(&after).map(|(b, a)| a.0.saturating_sub(b.0)).sum();
    let page_kib = 4;
    let rss: u64 = after.iter().take(n).map(|a| a.1 * page_kib).sum();
    let mut failed = 0;
    for _ in 0..CALLS {
        if !call(&http).await {
            failed += 1;
        }
    }
    drop(replicas);
    drop(gateway);
    tokio::time::sleep(Duration::from_secs(2)).await;
    Row {
        n,
        converged_s: converged,
        spawned_s: spawned,
        cpu_pct: ticks as f64 / secs, // 100 ticks/s = one core: ticks/s is % of a core
        rss_mib: rss as f64 / 1024.0 / n as f64,
        datagrams: udp as f64 / secs / (n + 1) as f64,
        failed,
    }
}

#[tokio::main]
async fn main() {
    let meshrpc = std::env::args().nth(1).expect("usage: scale <path to the meshrpc binary> [sizes…]");
    let sizes: Vec<usize> = std::env::args().skip(2).filter_map(|a| a.parse().ok()).collect();
    let sizes = if sizes.is_empty() { SIZES.to_vec() } else { sizes };
    let mut rows = Vec::new();
    for n in sizes {
        eprintln!("{n} replicas");
        rows.push(run(&meshrpc, n).await);
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("## Membership at scale (bench/scale.sh)\n");
    println!(
        "{cores} cores; a `meshrpc gateway` and N `meshrpc example greeter` replicas joined through it; idle {} s, then measured over {} s; then {CALLS} calls through the gateway.\n",
        SETTLE.as_secs(),
        WINDOW.as_secs()
    );
    println!("| replicas | converged (s) from the first start, after the last | idle CPU of the mesh (% of one core) | per node | RSS per node | UDP datagrams per node per s | failed calls |");
    println!("|--:|--:|--:|--:|--:|--:|--:|");
    let base = rows.first().map_or(f64::NAN, |r| r.cpu_pct / (r.n + 1) as f64);
    for r in &rows {
        let per = r.cpu_pct / (r.n + 1) as f64;
        println!(
            "| {} | {:.2}, {:.2} | {:.1} | {:.2} % ({:.2} × the first row) | {:.1} MiB | {:.0} | {} |",
            r.n,
            r.converged_s,
            r.converged_s - r.spawned_s,
            r.cpu_pct,
            per,
            per / base,
            r.rss_mib,
            r.datagrams,
            r.failed
        );
    }
}
