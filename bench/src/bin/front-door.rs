//! The front door under load (issue 21): `meshrpc gateway` (with one greeter replica
//! behind it) next to nginx answering a static 200, in one run, same client, same
//! machine. Run by `bench/front-door.sh`, which installs nginx and wrk and builds the
//! release binaries.
//!
//! Per target: memory for 10,000 idle TCP connections, for 10,000 keep-alive connections
//! after one request each, and 5 s / 30 s after those clients closed; then the
//! concurrency curve with wrk at 100, 1,000, 5,000 and 15,000 connections (req/s, p50,
//! p99, errors, peak RSS, RSS 30 s after).

use std::{
    path::Path,
    process::Stdio,
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
    process::{Child, Command},
};

const CONNECTIONS: usize = 10_000;
const LEVELS: [usize; 4] = [100, 1_000, 5_000, 15_000];
const REQUEST: &[u8] =
    b"POST /greeter/greet HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 14\r\n\r\n{\"name\":\"Max\"}";

struct Target {
    name: &'static str,
    port: u16,
    /// Processes whose RSS is the target's (nginx: master and workers).
    pids: Vec<u32>,
    _children: Vec<Child>,
}

impl Target {
    fn rss_kib(&self) -> u64 {
        self.pids.iter().map(|p| status(*p, "VmRSS:")).sum()
    }
}

fn status(pid: u32, key: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines().find_map(|l| l.strip_prefix(key)?.split_whitespace().next()?.parse().ok()).unwrap_or(0)
}

fn children_of(pid: u32) -> Vec<u32> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    text.split_whitespace().filter_map(|p| p.parse().ok()).collect()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn line_starting(child: &mut Child, prefix: &str) -> String {
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let found = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(rest) = line.strip_prefix(prefix) {
                return rest.to_owned();
            }
        }
        panic!("exited before printing {prefix}")
    })
    .await
    .expect("start-up");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    found
}

async fn start_gateway(meshrpc: &str) -> Target {
    let port = free_port();
    let mut gateway = Command::new(meshrpc)
        .args(["gateway", "--listen", &format!("127.0.0.1:{port}"), "--listen-addr", "127.0.0.1:0", "--tag", "door"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = gateway.id().unwrap();
    // "listening on", then "mesh on": the second names where replicas join.
    let mut lines = BufReader::new(gateway.stdout.take().unwrap()).lines();
    let mut mesh = String::new();
    while let Some(line) = lines.next_line().await.unwrap() {
        if let Some(m) = line.strip_prefix("mesh on ") {
            mesh = m.to_owned();
            break;
        }
    }
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let mut replica = Command::new(meshrpc)
        .args(["example", "greeter", "--nodes", &mesh, "--listen-addr", "127.0.0.1:0", "--tag", "door"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    line_starting(&mut replica, "listening on ").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !answers(port).await {
        assert!(Instant::now() < deadline, "the gateway never answered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Target { name: "meshrpc gateway", port, pids: vec![pid], _children: vec![gateway, replica] }
}

/// nginx answering a static 200 (`upstream`: None), or as a reverse proxy in front of a
/// replica's own HTTP route, as its documentation recommends for proxying: an upstream
/// block with idle keep-alive connections to it (HTTP/1.1, `Connection` cleared).
async fn start_nginx(dir: &Path, upstream: Option<&str>) -> Target {
    let port = free_port();
    std::fs::create_dir_all(dir.join("logs")).unwrap();
    let (upstream_block, location) = match upstream {
        None => (String::new(), "return 200 '{\"data\":\"Hello, Max\",\"errors\":[]}';".to_owned()),
        Some(addr) => (
            format!("  upstream replica {{ server {addr}; keepalive 256; keepalive_requests 1000000; }}\n"),
            "proxy_pass http://replica; proxy_http_version 1.1; proxy_set_header Connection \"\";".to_owned(),
        ),
    };
    let conf = format!(
        "worker_processes 2;\nworker_rlimit_nofile 40000;\npid {pid};\nerror_log {dir}/logs/error.log;\nevents {{ worker_connections 20000; }}\nhttp {{\n  access_log off;\n  client_body_temp_path {dir};\n  proxy_temp_path {dir};\n  keepalive_timeout 60s;\n  keepalive_requests 1000000;\n{upstream_block}  server {{\n    listen 127.0.0.1:{port} backlog=4096;\n    location / {{ {location} }}\n  }}\n}}\n",
        pid = dir.join("nginx.pid").display(),
        dir = dir.display(),
    );
    std::fs::write(dir.join("nginx.conf"), conf).unwrap();
    let child = Command::new("nginx")
        .args([
            "-p",
            &dir.display().to_string(),
            "-c",
            &dir.join("nginx.conf").display().to_string(),
            "-g",
            "daemon off;",
        ])
        .kill_on_drop(true)
        .spawn()
        .expect("nginx (bench/front-door.sh installs it)");
    let master = child.id().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !answers(port).await {
        assert!(Instant::now() < deadline, "nginx never answered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut pids = vec![master];
    pids.extend(children_of(master));
    let name = if upstream.is_some() { "nginx proxy → replica" } else { "nginx static 200" };
    Target { name, port, pids, _children: vec![child] }
}

/// nginx as a reverse proxy in front of a greeter replica's own HTTP route (the replica
/// alone: no gateway), the same replica the gateway calls over the mesh.
async fn start_nginx_proxy(meshrpc: &str, dir: &Path) -> Target {
    let mut replica = Command::new(meshrpc)
        .args(["example", "greeter", "--listen-addr", "127.0.0.1:0", "--tag", "door-proxy"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let addr = line_starting(&mut replica, "listening on ").await;
    let mut target = start_nginx(dir, Some(addr.trim())).await;
    target._children.push(replica);
    target
}

async fn answers(port: u16) -> bool {
    let Ok(mut conn) = TcpStream::connect(("127.0.0.1", port)).await else { return false };
    ask(&mut conn).await
}

async fn ask(conn: &mut TcpStream) -> bool {
    if conn.write_all(REQUEST).await.is_err() {
        return false;
    }
    let mut buf = [0u8; 1024];
    let mut got = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), conn.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
            _ => return false,
        }
        if got.ends_with(b"\"errors\":[]}") {
            return got.starts_with(b"HTTP/1.1 200");
        }
    }
}

struct Memory {
    base: u64,
    idle: u64,
    keepalive: u64,
    after5: u64,
    after30: u64,
}

async fn memory(t: &Target) -> Memory {
    let base = t.rss_kib();
    let mut conns = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        conns.push(TcpStream::connect(("127.0.0.1", t.port)).await.unwrap());
    }
    // Younger than any handshake or header timeout (meshrpc: 5 s).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = t.rss_kib();
    drop(conns);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut conns = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        let mut c = TcpStream::connect(("127.0.0.1", t.port)).await.unwrap();
        assert!(ask(&mut c).await, "{}: a request failed", t.name);
        conns.push(c);
    }
    // Younger than the keep-alive timeout (60 s), past meshrpc's park delay and trim.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let keepalive = t.rss_kib();
    drop(conns);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after5 = t.rss_kib();
    tokio::time::sleep(Duration::from_secs(25)).await;
    let after30 = t.rss_kib();
    Memory { base, idle, keepalive, after5, after30 }
}

struct Level {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
    peak_kib: u64,
    after30_kib: u64,
}

async fn level(t: &Target, conns: usize, script: &Path) -> Level {
    let url = format!("http://127.0.0.1:{}/greeter/greet", t.port);
    let wrk = Command::new("wrk")
        .args(["-t2", &format!("-c{conns}"), "-d10s", "--timeout", "5s", "--latency", "-s"])
        .arg(script)
        .arg(&url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("wrk");
    let mut peak = 0;
    let sampling = async {
        loop {
            peak = peak.max(t.rss_kib());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let out = tokio::select! {
        out = wrk.wait_with_output() => out.unwrap(),
        _ = sampling => unreachable!(),
    };
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let num = |prefix: &str| -> f64 {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix).map(|r| r.trim().to_owned()))
            .map(|v| parse_ms(&v))
            .unwrap_or(f64::NAN)
    };
    let rps = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:").map(|r| r.trim().parse().unwrap_or(f64::NAN)))
        .unwrap_or(f64::NAN);
    // Socket errors (connect, read, write, timeout) and non-2xx answers.
    let mut errors = 0;
    for line in text.lines() {
        let l = line.trim();
        if let Some(rest) = l.strip_prefix("Socket errors:") {
            errors += rest.split(',').filter_map(|p| p.split_whitespace().last()?.parse::<u64>().ok()).sum::<u64>();
        }
        if let Some(rest) = l.strip_prefix("Non-2xx or 3xx responses:") {
            errors += rest.trim().parse::<u64>().unwrap_or(0);
        }
    }
    tokio::time::sleep(Duration::from_secs(30)).await;
    Level { rps, p50_ms: num("50%"), p99_ms: num("99%"), errors, peak_kib: peak, after30_kib: t.rss_kib() }
}

/// wrk's "1.23ms", "450.00us", "1.2s" in ms.
fn parse_ms(v: &str) -> f64 {
    let v = v.split_whitespace().next().unwrap_or("");
    let (n, scale) = if let Some(n) = v.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = v.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1000.0)
    } else {
        (v, 1.0)
    };
    n.parse::<f64>().map_or(f64::NAN, |x| x * scale)
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

#[tokio::main]
async fn main() {
    let meshrpc = std::env::args().nth(1).expect("usage: front-door <path to the meshrpc binary>");
    let dir = std::env::temp_dir().join(format!("meshrpc-front-door-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join("post.lua");
    std::fs::write(
        &script,
        "wrk.method = \"POST\"\nwrk.body = '{\"name\":\"Max\"}'\nwrk.headers[\"Content-Type\"] = \"application/json\"\n",
    )
    .unwrap();
    let mut results = Vec::new();
    for which in ["meshrpc", "nginx", "nginx-proxy"] {
        let target = match which {
            "meshrpc" => start_gateway(&meshrpc).await,
            "nginx" => start_nginx(&dir.join("nginx"), None).await,
            _ => start_nginx_proxy(&meshrpc, &dir.join("nginx-proxy")).await,
        };
        eprintln!("{}: memory", target.name);
        let memory = memory(&target).await;
        let mut levels = Vec::new();
        for conns in LEVELS {
            eprintln!("{}: {conns} connections", target.name);
            levels.push(level(&target, conns, &script).await);
        }
        results.push((target.name, memory, levels));
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("## The front door (bench/front-door.sh)\n");
    println!(
        "{cores} cores; one client process, the same for all; nginx: 2 workers, `return 200` with the gateway's answer, then as a reverse proxy (upstream keep-alive) in front of a greeter replica's own HTTP route; meshrpc: `meshrpc gateway` with one greeter replica behind it (RSS: the gateway's or nginx's alone, never the replica's).\n"
    );
    let per = |delta: u64| format!("{:.1} KiB each", delta as f64 / CONNECTIONS as f64);
    let row = |label: &str, cell: &dyn Fn(&Memory) -> String| {
        let cells: Vec<String> = results.iter().map(|r| cell(&r.1)).collect();
        println!("| {label} | {} |", cells.join(" | "));
    };
    println!("| | {} |", results.iter().map(|r| r.0).collect::<Vec<_>>().join(" | "));
    println!("|---|{}", "--:|".repeat(results.len()));
    row("base", &|m| mib(m.base));
    for (label, pick) in [
        ("10,000 idle TCP connections, no bytes", (|x: &Memory| x.idle) as fn(&Memory) -> u64),
        ("10,000 keep-alive connections after one request each", |x: &Memory| x.keepalive),
    ] {
        row(label, &|m| {
            let d = pick(m).saturating_sub(m.base);
            format!("+{} ({})", mib(d), per(d))
        });
    }
    row("5 s after those clients closed", &|m| mib(m.after5));
    row("30 s after", &|m| mib(m.after30));
    println!();
    println!("| connections | target | req/s | p50 | p99 | errors | peak RSS | RSS 30 s after |");
    println!("|--:|---|--:|--:|--:|--:|--:|--:|");
    for (i, conns) in LEVELS.iter().enumerate() {
        for (name, _, levels) in &results {
            let l = &levels[i];
            println!(
                "| {conns} | {name} | {:.0} | {:.2} ms | {:.2} ms | {} | {} | {} |",
                l.rps,
                l.p50_ms,
                l.p99_ms,
                l.errors,
                mib(l.peak_kib),
                mib(l.after30_kib)
            );
        }
    }
    // Issue 34's row: the gateway against nginx proxying to the same kind of replica.
    println!();
    println!("| connections | gateway ÷ nginx proxy, req/s | gateway p99 ÷ nginx proxy p99 |");
    println!("|--:|--:|--:|");
    for (i, conns) in LEVELS.iter().enumerate() {
        let (g, p) = (&results[0].2[i], &results[2].2[i]);
        println!("| {conns} | {:.2}× | {:.2}× |", g.rps / p.rps, g.p99_ms / p.p99_ms);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
