//! The compression row (`meshrpc-bench compression`, and in the full run): a 64 KiB JSON
//! answer (a page of products) with zstd and without, on loopback and over rate-limited
//! links between network namespaces (as root). The links are shaped with `tc tbf` (a
//! token bucket): `netem`, which would add delay too, is not in every kernel (not in this
//! VM's), and a rate is what compression is for.

use std::{net::SocketAddr, process::Stdio, sync::Arc, time::Duration};

use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

use crate::systems::BenchError;

/// A product, as a catalog answers it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Product {
    pub id: String,
    pub name: String,
    pub description: String,
    pub picture: String,
    pub price_units: i64,
    pub price_nanos: i32,
    pub categories: Vec<String>,
}

#[meshrpc::service]
pub trait Catalog {
    /// `count` products from `from`.
    async fn page(&self, from: u32, count: u32) -> Result<Vec<Product>, BenchError>;
}

struct Products;

const WORDS: &[&str] = &[
    "vintage",
    "camera",
    "lens",
    "strap",
    "leather",
    "brass",
    "film",
    "roll",
    "sunglasses",
    "polarized",
    "frame",
    "kitchen",
    "mug",
    "ceramic",
    "handmade",
    "blue",
    "green",
    "tank",
    "top",
    "cotton",
    "linen",
    "candle",
    "holder",
];

#[meshrpc::async_trait]
impl Catalog for Products {
    async fn page(&self, from: u32, count: u32) -> Result<Vec<Product>, BenchError> {
        Ok((from..from + count).map(product).collect())
    }
}

/// A product with plausible, varied text (a pseudo-random walk over a small vocabulary).
fn product(i: u32) -> Product {
    let mut x = u64::from(i).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut word = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        WORDS[(x % WORDS.len() as u64) as usize]
    };
    let name = format!("{} {} {}", word(), word(), word());
    let description: Vec<&str> = (0..12).map(|_| word()).collect();
    Product {
        id: format!("{:010X}", u64::from(i).wrapping_mul(2_654_435_761)),
        name,
        description: description.join(" "),
        picture: format!("/static/img/products/{}-{i}.jpg", word()),
        price_units: i64::from(i % 300) + 5,
        price_nanos: ((i * 7_919) % 1_000_000_000) as i32,
        categories: vec![word().into(), word().into()],
    }
}

/// Products in a page of about 64 KiB of JSON.
const PAGE: u32 = 240;

/// The catalog on `addr`, its answers compressed for callers that take zstd when `compress`.
pub async fn serve(addr: &str, compress: bool) {
    let mut config = meshrpc::ServerConfig::default();
    config.compress = compress;
    let server = meshrpc::Server::bind(addr).await.unwrap().with_config(config);
    server.publish(CatalogServer::new(Products));
    println!("listening on {}", server.local_addr());
    server.serve().await.unwrap();
}

/// Two network namespaces joined by a veth pair shaped to `rate` both ways; removed on drop.
struct Link {
    names: [String; 2],
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = std::process::Command::new("ip").args(args).output().map_err(|e| format!("ip: {e}"))?;
    out.status
        .success()
        .then_some(())
        .ok_or_else(|| format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr)))
}

impl Link {
    fn new(rate: &str) -> Result<Link, String> {
        let pid = std::process::id();
        let names = [format!("mrbz{pid}a"), format!("mrbz{pid}b")];
        let link = Link { names: names.clone() };
        for ns in &names {
            ip(&["netns", "add", ns])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        ip(&["link", "add", "bza", "netns", &names[0], "type", "veth", "peer", "name", "bzb", "netns", &names[1]])?;
        for (ns, dev, addr) in [(&names[0], "bza", "10.77.0.1/24"), (&names[1], "bzb", "10.77.0.2/24")] {
            ip(&["-n", ns, "addr", "add", addr, "dev", dev])?;
            ip(&["-n", ns, "link", "set", dev, "up"])?;
            let shaped = std::process::Command::new("ip")
                .args(["netns", "exec", ns, "tc", "qdisc", "add", "dev", dev, "root", "tbf", "rate", rate])
                .args(["burst", "64kb", "latency", "400ms"])
                .output()
                .map_err(|e| format!("tc: {e}"))?;
            if !shaped.status.success() {
                return Err(format!("tc tbf: {}", String::from_utf8_lossy(&shaped.stderr)));
            }
        }
        Ok(link)
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        for ns in &self.names {
            let _ = ip(&["netns", "del", ns]);
        }
    }
}

/// The catalog server in namespace `ns` (or here), and its address.
async fn server(ns: Option<&str>, kind: &str, listen: &str) -> (Child, SocketAddr) {
    let exe = std::env::current_exe().unwrap();
    let mut command = match ns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).arg(&exe);
            c
        }
        None => Command::new(&exe),
    };
    command.args(["serve", kind, listen]).env("RUST_LOG", "warn").stdout(Stdio::piped()).kill_on_drop(true);
    let mut child = command.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await.unwrap().unwrap().unwrap();
    let addr = line.strip_prefix("listening on ").unwrap().parse().unwrap();
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, addr)
}

/// One pass: p50 of sequential calls, and answers per second with 8 in flight.
pub struct Pass {
    pub p50_ms: f64,
    pub per_s: f64,
}

async fn measure(client: Arc<CatalogClient>, secs: f64) -> Pass {
    let page = || async { client.page(0, PAGE).await.expect("a page") };
    for _ in 0..5 {
        page().await;
    }
    let mut took = Vec::new();
    let started = std::time::Instant::now();
    while took.len() < 30 || (started.elapsed().as_secs_f64() < secs / 2.0 && took.len() < 2_000) {
        let t = std::time::Instant::now();
        page().await;
        took.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    took.sort_by(f64::total_cmp);
    let p50_ms = took[took.len() / 2];
    let done = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let until = std::time::Instant::now() + Duration::from_secs_f64(secs / 2.0);
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let (client, done) = (client.clone(), done.clone());
            tokio::spawn(async move {
                while std::time::Instant::now() < until {
                    client.page(0, PAGE).await.expect("a page");
                    done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    Pass { p50_ms, per_s: done.load(std::sync::atomic::Ordering::Relaxed) as f64 / (secs / 2.0) }
}

async fn client(addr: SocketAddr) -> Arc<CatalogClient> {
    Arc::new(CatalogClient::new(meshrpc::connect(addr).await.unwrap()).with_codec(meshrpc::Codec::Json))
}

/// Runs the row: loopback, then each rate when namespaces can be made here.
pub async fn run(secs: f64) -> Vec<(String, Pass, Pass)> {
    let mut rows = Vec::new();
    let (_plain, plain) = server(None, "catalog", "127.0.0.1:0").await;
    let (_zstd, zstd) = server(None, "catalog-zstd", "127.0.0.1:0").await;
    rows.push((
        "loopback".to_owned(),
        measure(client(plain).await, secs).await,
        measure(client(zstd).await, secs).await,
    ));
    for rate in ["1gbit", "100mbit", "10mbit"] {
        let link = match Link::new(rate) {
            Ok(link) => link,
            Err(why) => {
                println!("compression over shaped links skipped: {why} (needs root, ip and tc)");
                break;
            }
        };
        let (_plain, plain) = server(Some(&link.names[1]), "catalog", "10.77.0.2:0").await;
        let (_zstd, zstd) = server(Some(&link.names[1]), "catalog-zstd", "10.77.0.2:0").await;
        // The client runs in the other namespace: this process stays here, so it asks a
        // child of its own there.
        let exe = std::env::current_exe().unwrap();
        let out = Command::new("ip")
            .args(["netns", "exec", &link.names[0]])
            .arg(&exe)
            .args(["compression-client", &plain.to_string(), &zstd.to_string(), &secs.to_string()])
            .output()
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let nums: Vec<f64> = text.split_whitespace().filter_map(|w| w.parse().ok()).collect();
        if let [a, b, c, d] = nums[..] {
            rows.push((format!("{rate}/s"), Pass { p50_ms: a, per_s: b }, Pass { p50_ms: c, per_s: d }));
        } else {
            println!("compression client in {}: {text} {}", link.names[0], String::from_utf8_lossy(&out.stderr));
        }
        drop(link);
    }
    rows
}

/// `meshrpc-bench compression-client PLAIN ZSTD SECS`: a pass against each server, printed
/// as four numbers (run inside a namespace by [`run`]).
pub async fn client_passes(plain: SocketAddr, zstd: SocketAddr, secs: f64) {
    let plain = measure(client(plain).await, secs).await;
    let zstd = measure(client(zstd).await, secs).await;
    println!("{} {} {} {}", plain.p50_ms, plain.per_s, zstd.p50_ms, zstd.per_s);
}

pub fn print(rows: &[(String, Pass, Pass)]) {
    let json = serde_json::to_vec(&(0..PAGE).map(product).collect::<Vec<_>>()).unwrap();
    let packed = zstd_len(&json);
    println!();
    println!(
        "Compression (a {:.0} KiB JSON answer, {:.1} KiB with zstd level 1; 8 calls in flight for answers/s):",
        json.len() as f64 / 1024.0,
        packed as f64 / 1024.0
    );
    println!(
        "| link | p50 ms plain | p50 ms zstd | p50 plain ÷ zstd | answers/s plain | answers/s zstd | zstd ÷ plain |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (link, plain, zstd) in rows {
        println!(
            "| {link} | {:.2} | {:.2} | {:.2}× | {:.0} | {:.0} | {:.2}× |",
            plain.p50_ms,
            zstd.p50_ms,
            plain.p50_ms / zstd.p50_ms,
            plain.per_s,
            zstd.per_s,
            zstd.per_s / plain.per_s
        );
    }
}

fn zstd_len(data: &[u8]) -> usize {
    zstd::bulk::compress(data, 1).map_or(data.len(), |c| c.len())
}
