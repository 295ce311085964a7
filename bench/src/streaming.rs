//! Streaming rows: items/s and MB/s of one server stream over one connection — meshrpc,
//! tonic and the raw socket floor side by side, each server in its own process — for
//! small (32-byte) and large (64 KiB) items; and meshrpc's unary latency on the same
//! connection while a stream runs at full speed.

use std::{
    net::SocketAddr,
    pin::Pin,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::{BufMut, Bytes, BytesMut};
use futures::StreamExt;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

use crate::{
    measure::median,
    systems::{BenchError, BoxFut, GreeterServer},
    Opts, Server,
};

/// Payload bytes of a small item, as each system frames it: a 30-byte blob is 32 bytes
/// encoded by postcard and by protobuf alike.
pub const SMALL: usize = 30;
/// Payload bytes of a middling item (1 KiB encoded: 1,021 bytes and a 3-byte length, in
/// postcard and protobuf alike).
pub const MEDIUM: usize = 1021;
/// Payload bytes of a large item.
pub const LARGE: usize = 64 * 1024;

// ---------------------------------------------------------------- meshrpc

#[meshrpc::service]
pub trait Firehose {
    /// `count` items of `size` bytes, as fast as the reader takes them.
    async fn flood(&self, count: u64, size: u32) -> Result<meshrpc::Stream<Bytes, BenchError>, BenchError>;
}

pub struct Flood;

/// The same blob `left` more times.
struct Blobs {
    blob: Bytes,
    left: u64,
}

impl futures::Stream for Blobs {
    type Item = Result<Bytes, BenchError>;
    fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        self.left -= 1;
        Poll::Ready(Some(Ok(self.blob.clone())))
    }
}

#[meshrpc::async_trait]
impl Firehose for Flood {
    async fn flood(&self, count: u64, size: u32) -> Result<meshrpc::Stream<Bytes, BenchError>, BenchError> {
        Ok(meshrpc::Stream::new(Blobs { blob: Bytes::from(vec![7u8; size as usize]), left: count }))
    }
}

pub async fn serve_meshrpc(addr: &str) {
    let server = meshrpc::Server::bind(addr).await.unwrap();
    server.publish(FirehoseServer::new(Flood));
    server.publish(GreeterServer::new(crate::systems::Greet));
    println!("listening on {}", server.local_addr());
    server.serve().await.unwrap();
}

// ---------------------------------------------------------------- tonic

#[derive(Clone, PartialEq, prost::Message)]
pub struct FloodRequest {
    #[prost(uint64, tag = "1")]
    pub count: u64,
    #[prost(uint32, tag = "2")]
    pub size: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Chunk {
    #[prost(bytes = "bytes", tag = "1")]
    pub data: Bytes,
}

/// What `tonic-build` would generate for `service Firehose { rpc Flood(FloodRequest)
/// returns (stream Chunk) }`, by hand.
#[derive(Clone)]
struct TonicFirehose;

impl tonic::server::NamedService for TonicFirehose {
    const NAME: &'static str = "bench.Firehose";
}

type ChunkStream = Pin<Box<dyn futures::Stream<Item = Result<Chunk, tonic::Status>> + Send>>;

impl tonic::codegen::Service<tonic::codegen::http::Request<tonic::body::Body>> for TonicFirehose {
    type Response = tonic::codegen::http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFut<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: tonic::codegen::http::Request<tonic::body::Body>) -> Self::Future {
        struct Streaming;
        impl tonic::server::ServerStreamingService<FloodRequest> for Streaming {
            type Response = Chunk;
            type ResponseStream = ChunkStream;
            type Future = BoxFut<'static, Result<tonic::Response<ChunkStream>, tonic::Status>>;
            fn call(&mut self, req: tonic::Request<FloodRequest>) -> Self::Future {
                Box::pin(async move {
                    let FloodRequest { count, size } = req.into_inner();
                    let blob = Bytes::from(vec![7u8; size as usize]);
                    let chunks = Blobs { blob, left: count }.map(|b| Ok(Chunk { data: b.unwrap() }));
                    Ok(tonic::Response::new(Box::pin(chunks) as ChunkStream))
                })
            }
        }
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::<Chunk, FloodRequest>::default());
            Ok(grpc.server_streaming(Streaming, req).await)
        })
    }
}

/// HTTP/2 windows for tonic, both sides: larger than meshrpc's 1 MiB per stream, so flow
/// control never holds tonic back more than it holds meshrpc.
const H2_WINDOW: u32 = 4 * 1024 * 1024;

pub async fn serve_tonic(addr: &str) {
    let listener = TcpListener::bind(addr).await.unwrap();
    println!("listening on {}", listener.local_addr().unwrap());
    let incoming = futures::stream::unfold(listener, |l| async move {
        let next = l.accept().await.map(|(s, _)| {
            let _ = s.set_nodelay(true);
            s
        });
        Some((next, l))
    });
    tonic::transport::Server::builder()
        .initial_stream_window_size(H2_WINDOW)
        .initial_connection_window_size(H2_WINDOW)
        .add_service(TonicFirehose)
        .serve_with_incoming(incoming)
        .await
        .unwrap();
}

async fn tonic_flood(addr: SocketAddr, count: u64, size: usize) -> u64 {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .tcp_nodelay(true)
        .initial_stream_window_size(H2_WINDOW)
        .initial_connection_window_size(H2_WINDOW)
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/bench.Firehose/Flood");
    let codec = tonic_prost::ProstCodec::<FloodRequest, Chunk>::default();
    let req = tonic::Request::new(FloodRequest { count, size: size as u32 });
    let mut chunks = grpc.server_streaming(req, path, codec).await.unwrap().into_inner();
    let mut n = 0;
    while let Some(chunk) = chunks.message().await.unwrap() {
        debug_assert_eq!(chunk.data.len(), size);
        n += 1;
    }
    n
}

// ---------------------------------------------------------------- raw floor

/// The floor: the server writes `count` length-prefixed items of `size` bytes, batched
/// into 64 KiB writes, and the client parses them. No encoding, no flow control.
pub async fn serve_raw(addr: &str) {
    let listener = TcpListener::bind(addr).await.unwrap();
    println!("listening on {}", listener.local_addr().unwrap());
    loop {
        let (mut s, _) = listener.accept().await.unwrap();
        s.set_nodelay(true).unwrap();
        tokio::spawn(async move {
            let mut ask = [0u8; 12];
            if s.read_exact(&mut ask).await.is_err() {
                return;
            }
            let count = u64::from_be_bytes(ask[..8].try_into().unwrap());
            let size = u32::from_be_bytes(ask[8..].try_into().unwrap()) as usize;
            let item = vec![7u8; size];
            let mut out = BytesMut::with_capacity(128 * 1024);
            for _ in 0..count {
                out.put_u32(size as u32);
                out.put_slice(&item);
                if out.len() >= 64 * 1024 && s.write_all(&out).await.is_err() {
                    return;
                }
                if out.len() >= 64 * 1024 {
                    out.clear();
                }
            }
            let _ = s.write_all(&out).await;
        });
    }
}

async fn raw_flood(addr: SocketAddr, count: u64, size: usize) -> u64 {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    let mut ask = [0u8; 12];
    ask[..8].copy_from_slice(&count.to_be_bytes());
    ask[8..].copy_from_slice(&(size as u32).to_be_bytes());
    s.write_all(&ask).await.unwrap();
    let mut buf = BytesMut::with_capacity(256 * 1024);
    let mut n = 0;
    while n < count {
        if s.read_buf(&mut buf).await.unwrap() == 0 {
            break;
        }
        while buf.len() >= 4 {
            let len = u32::from_be_bytes(buf[..4].try_into().unwrap()) as usize;
            if buf.len() < 4 + len {
                break;
            }
            let item = buf.split_to(4 + len);
            std::hint::black_box(&item[4..]);
            n += 1;
        }
        if buf.capacity() - buf.len() < 64 * 1024 {
            buf.reserve(256 * 1024);
        }
    }
    n
}

async fn meshrpc_flood(client: &FirehoseClient, count: u64, size: usize) -> u64 {
    let mut items = client.flood(count, size as u32).await.unwrap();
    let mut n = 0;
    while let Some(item) = items.next().await {
        debug_assert_eq!(item.unwrap().len(), size);
        n += 1;
    }
    n
}

// ---------------------------------------------------------------- measuring

/// One streaming measurement: items/s and MB/s (of item payload), medians of the passes.
#[derive(Clone, Default)]
pub struct StreamRow {
    pub name: &'static str,
    pub size: usize,
    pub items_per_s: Vec<f64>,
}

impl StreamRow {
    fn rate(&self) -> f64 {
        median(self.items_per_s.clone())
    }
    fn mb_per_s(&self) -> f64 {
        self.rate() * self.size as f64 / 1e6
    }
}

/// How many items make a run of about `secs` (after one warm-up run).
/// An item's size as the table names it: encoded, for the small and middling ones.
fn label(size: usize) -> String {
    match size {
        SMALL => "32".into(),
        MEDIUM => "1024".into(),
        _ => size.to_string(),
    }
}

fn items_for(size: usize, secs: f64) -> u64 {
    // Aimed at ~2 GB/s for large items and ~5 M items/s for small ones: a run is then at
    // most about `secs`, and a slower system simply takes longer.
    let per_s = if size >= 1000 { 2e9 / size as f64 } else { 5e6 };
    ((per_s * secs) as u64).max(1000)
}

async fn timed<F: std::future::Future<Output = u64>>(count: u64, run: F) -> f64 {
    let start = Instant::now();
    let got = run.await;
    assert_eq!(got, count, "a stream lost items");
    got as f64 / start.elapsed().as_secs_f64()
}

/// Items/s of one stream of `count` items of `size` bytes from `system`'s server at `addr`.
pub async fn flood(system: &str, addr: SocketAddr, size: usize, count: u64) -> f64 {
    match system {
        "raw" => timed(count, raw_flood(addr, count, size)).await,
        "tonic" => timed(count, tonic_flood(addr, count, size)).await,
        _ => {
            let client = FirehoseClient::new(meshrpc::connect(addr).await.unwrap())
                .with_codec(meshrpc::Codec::Postcard)
                .without_stream_deadline();
            timed(count, meshrpc_flood(&client, count, size)).await
        }
    }
}

/// The streaming table: each system against its own server process, three passes.
pub async fn run(opts: &Opts) -> (Vec<StreamRow>, Vec<Beside>) {
    let systems = ["raw floor", "meshrpc postcard", "meshrpc json", "tonic"];
    let mut rows = Vec::new();
    for size in [SMALL, MEDIUM, LARGE] {
        for name in systems {
            // JSON writes bytes as an array of numbers: only its small row means anything.
            if name == "meshrpc json" && size != SMALL {
                continue;
            }
            rows.push(StreamRow { name, size, items_per_s: Vec::new() });
        }
    }
    let secs = opts.secs.min(2.0);
    for pass in 0..3 {
        for row in &mut rows {
            eprintln!("streams pass {}: {} {} B", pass + 1, row.name, row.size);
            let count = items_for(row.size, secs);
            let kind = match row.name {
                "raw floor" => "stream-raw",
                "tonic" => "stream-tonic",
                _ => "stream-meshrpc",
            };
            let server = Server::start(kind, &["127.0.0.1:0"]).await;
            let addr = server.addr;
            let size = row.size;
            let rate = match row.name {
                "raw floor" => {
                    raw_flood(addr, count / 10, size).await;
                    timed(count, raw_flood(addr, count, size)).await
                }
                "tonic" => {
                    tonic_flood(addr, count / 10, size).await;
                    timed(count, tonic_flood(addr, count, size)).await
                }
                name => {
                    let codec = if name == "meshrpc json" { meshrpc::Codec::Json } else { meshrpc::Codec::Postcard };
                    let conn = meshrpc::connect(addr).await.unwrap();
                    let client = FirehoseClient::new(conn).with_codec(codec).without_stream_deadline();
                    meshrpc_flood(&client, count / 10, size).await;
                    timed(count, meshrpc_flood(&client, count, size)).await
                }
            };
            row.items_per_s.push(rate);
        }
    }
    let mut beside = Vec::new();
    for size in [LARGE, SMALL] {
        beside.push(unary_beside_a_stream(opts, size).await);
    }
    (rows, beside)
}

/// p50s (µs) of sequential unary calls on one meshrpc connection: idle, while a stream of
/// `size`-byte items runs at full speed on the same connection, and on a second connection
/// beside it (which tells the wait behind the stream from the CPU the stream takes); and
/// through a cluster to a node serving both, idle and beside the stream (the cluster puts
/// the stream on a lane of its own).
pub struct Beside {
    size: usize,
    idle: f64,
    busy: f64,
    apart: f64,
    cluster_idle: f64,
    cluster_busy: f64,
}

/// A cluster node serving the stream and the unary call, for the beside rows.
pub async fn serve_cluster(addr: &str, tag: &str) {
    let cluster = meshrpc::ClusterBuilder::from_env("bench-streams").tag(tag).listen(addr).start().await.unwrap();
    cluster.publish(FirehoseServer::new(Flood));
    cluster.publish(GreeterServer::new(crate::systems::Greet));
    println!("listening on {}", cluster.local_addr().unwrap());
    cluster.serve().await.unwrap();
}

async fn unary_beside_a_stream(opts: &Opts, size: usize) -> Beside {
    let server = Server::start("stream-meshrpc", &["127.0.0.1:0"]).await;
    let conn = meshrpc::connect(server.addr).await.unwrap();
    let greeter = crate::systems::GreeterClient::new(conn.clone()).with_codec(meshrpc::Codec::Postcard);
    let calls = (opts.calls / 4).max(500);
    let p50 = |greeter: crate::systems::GreeterClient| async move {
        let mut took = Vec::with_capacity(calls as usize);
        for _ in 0..calls {
            let start = Instant::now();
            crate::systems::Greeter::greet(&greeter, crate::systems::NAME.into()).await.unwrap();
            took.push(start.elapsed().as_secs_f64() * 1e6);
        }
        median(took)
    };
    let idle = p50(greeter.clone()).await;
    let firehose = FirehoseClient::new(conn).with_codec(meshrpc::Codec::Postcard).without_stream_deadline();
    let flood = tokio::spawn(async move { meshrpc_flood(&firehose, u64::MAX, size).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let busy = p50(greeter).await;
    let other = meshrpc::connect(server.addr).await.unwrap();
    let apart = p50(crate::systems::GreeterClient::new(other).with_codec(meshrpc::Codec::Postcard)).await;
    assert!(!flood.is_finished(), "the stream ran the whole time");
    flood.abort();
    drop(server);

    let tag = format!("bench-streams-{}-{size}", std::process::id());
    let server = Server::start("stream-cluster", &["127.0.0.1:0", &tag]).await;
    let caller = meshrpc::ClusterBuilder::from_env("bench-streams-caller")
        .tag(&tag)
        .seeds([server.addr.to_string()])
        .start()
        .await
        .unwrap();
    caller
        .wait_for(&[crate::systems::GreeterClient::SPEC, FirehoseClient::SPEC], Duration::from_secs(20))
        .await
        .unwrap();
    let greeter = crate::systems::GreeterClient::new(caller.client(crate::systems::GreeterClient::SPEC))
        .with_codec(meshrpc::Codec::Postcard);
    let cluster_idle = p50(greeter.clone()).await;
    let firehose = FirehoseClient::new(caller.client(FirehoseClient::SPEC))
        .with_codec(meshrpc::Codec::Postcard)
        .without_stream_deadline();
    let flood = tokio::spawn(async move { meshrpc_flood(&firehose, u64::MAX, size).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let cluster_busy = p50(greeter).await;
    assert!(!flood.is_finished(), "the stream ran the whole time");
    flood.abort();
    caller.shutdown().await;
    Beside { size, idle, busy, apart, cluster_idle, cluster_busy }
}

pub fn print(rows: &[StreamRow], beside: &[Beside]) {
    println!();
    println!("Server streams, one connection, each system its own server process (median of 3 passes):");
    println!("| system | item | items/s | MB/s | ÷ floor | ÷ tonic |");
    println!("|---|---|---|---|---|---|");
    for row in rows {
        let same = |name: &str| rows.iter().find(|r| r.name == name && r.size == row.size);
        let floor = same("raw floor").map_or(f64::NAN, StreamRow::rate);
        let tonic = same("tonic").map_or(f64::NAN, StreamRow::rate);
        println!(
            "| {} | {} B | {:.0} k | {:.0} | {:.2} | {:.2} |",
            row.name,
            label(row.size),
            row.rate() / 1e3,
            row.mb_per_s(),
            row.rate() / floor,
            row.rate() / tonic,
        );
    }
    let small = |name: &str| rows.iter().find(|r| r.name == name && r.size == SMALL).map_or(f64::NAN, StreamRow::rate);
    let large = |name: &str| rows.iter().find(|r| r.name == name && r.size == LARGE).map_or(f64::NAN, StreamRow::rate);
    let medium =
        |name: &str| rows.iter().find(|r| r.name == name && r.size == MEDIUM).map_or(f64::NAN, StreamRow::rate);
    println!(
        "targets: small items ≥ 1.5 × tonic: {:.2} ×; 1 KiB items ÷ tonic: {:.2} ×; large items ≥ 0.9 × the floor's MB/s: {:.2} ×",
        small("meshrpc postcard") / small("tonic"),
        medium("meshrpc postcard") / medium("tonic"),
        large("meshrpc postcard") / large("raw floor"),
    );
    for b in beside {
        println!(
            "unary p50 beside a full-speed stream of {} B items, same connection [target ≤ 1.5 × idle]: {:.1} µs ÷ {:.1} µs idle = {:.2} × (on a second connection beside it: {:.1} µs = {:.2} ×)",
            label(b.size),
            b.busy,
            b.idle,
            b.busy / b.idle,
            b.apart,
            b.apart / b.idle
        );
        println!(
            "unary p50 beside a full-speed stream of {} B items, through a cluster (the stream on its lane) [target ≤ 1.5 × idle]: {:.1} µs ÷ {:.1} µs idle = {:.2} ×",
            label(b.size),
            b.cluster_busy,
            b.cluster_idle,
            b.cluster_busy / b.cluster_idle,
        );
    }
}
