//! The systems under test: each one a server (run in its own process) and a client
//! factory answering the same small "greet" call.

use std::{future::Future, net::SocketAddr, pin::Pin, sync::Arc, time::Duration};

use bytes::{Buf, BufMut, BytesMut};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::{mpsc, oneshot, Mutex},
};

pub type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One client connection; `call` may run concurrently from many tasks.
pub trait Client: Send + Sync + 'static {
    fn call(&self) -> BoxFut<'_, ()>;
}

pub const NAME: &str = "Max";

// ---------------------------------------------------------------- meshrpc

#[derive(Debug, Serialize, Deserialize, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Rpc(#[from] meshrpc::Error),
}

#[meshrpc::service]
pub trait Greeter {
    async fn greet(&self, name: String) -> Result<String, BenchError>;
}

pub struct Greet;

#[meshrpc::async_trait]
impl Greeter for Greet {
    async fn greet(&self, name: String) -> Result<String, BenchError> {
        Ok(format!("Hello, {name}"))
    }
}

/// One link of the seed's hop chain: calls the next node until `left` is 0.
#[meshrpc::service]
pub trait Hop {
    async fn hop(&self, left: u32) -> Result<u32, BenchError>;
}

pub struct HopNode {
    pub next: Option<Arc<dyn Hop>>,
}

#[meshrpc::async_trait]
impl Hop for HopNode {
    async fn hop(&self, left: u32) -> Result<u32, BenchError> {
        match (&self.next, left) {
            (Some(next), 1..) => Ok(next.hop(left - 1).await? + 1),
            _ => Ok(0),
        }
    }
}

/// A meshrpc node taking mutual TLS only, with the credentials in `dir`.
pub async fn serve_meshrpc_tls(addr: &str, dir: &str) {
    let tls = meshrpc::TlsConfig::from_dir(dir).unwrap();
    let server = meshrpc::Server::bind(addr).await.unwrap().with_tls(tls);
    server.publish(GreeterServer::new(Greet));
    println!("listening on {}", server.local_addr());
    server.serve().await.unwrap();
}

pub async fn serve_meshrpc(addr: &str, next: Option<&str>) {
    // The bench keeps a fixed number of calls in flight (64): the adaptive concurrency
    // limit may follow latency down, but never below that, or a chain of five processes on
    // two cores sheds the bench's own calls as `overloaded` (it went to 58).
    let mut config = meshrpc::server::ServerConfig::default();
    config.concurrency = meshrpc::server::ConcurrencyLimit::Adaptive { initial: 128, min: 128, max: 4096 };
    let server = meshrpc::Server::bind(addr).await.unwrap().with_config(config);
    server.publish(GreeterServer::new(Greet));
    let next: Option<Arc<dyn Hop>> = match next {
        Some(n) => Some(Arc::new(HopClient::new(meshrpc::connect(n).await.unwrap()))),
        None => None,
    };
    server.publish(HopServer::new(HopNode { next }));
    println!("listening on {}", server.local_addr());
    server.serve().await.unwrap();
}

pub struct MeshrpcClient(GreeterClient);

impl MeshrpcClient {
    pub async fn connect(addr: SocketAddr, codec: meshrpc::Codec) -> Self {
        MeshrpcClient(GreeterClient::new(meshrpc::connect(addr).await.unwrap()).with_codec(codec))
    }

    /// Over mutual TLS, with the client credentials in `dir`.
    pub async fn connect_tls(addr: SocketAddr, dir: &std::path::Path) -> Self {
        let options = meshrpc::transport::ConnectOptions::default().tls(meshrpc::TlsConfig::from_dir(dir).unwrap());
        let conn = meshrpc::transport::Connection::connect(addr, options).await.unwrap();
        MeshrpcClient(GreeterClient::new(conn))
    }
}

impl Client for MeshrpcClient {
    fn call(&self) -> BoxFut<'_, ()> {
        Box::pin(async move {
            let r = self.0.greet(NAME.into()).await.unwrap();
            debug_assert_eq!(r, "Hello, Max");
        })
    }
}

pub struct HopChainClient(pub HopClient);

impl Client for HopChainClient {
    fn call(&self) -> BoxFut<'_, ()> {
        Box::pin(async move {
            assert_eq!(self.0.hop(4).await.unwrap(), 4);
        })
    }
}

// ---------------------------------------------------------------- raw floor

/// Echoes length-prefixed messages, every complete frame of a read in one write.
pub async fn serve_raw(addr: &str) {
    let listener = TcpListener::bind(addr).await.unwrap();
    println!("listening on {}", listener.local_addr().unwrap());
    loop {
        let (mut s, _) = listener.accept().await.unwrap();
        s.set_nodelay(true).unwrap();
        tokio::spawn(async move {
            let mut buf = BytesMut::with_capacity(64 * 1024);
            let mut out = BytesMut::with_capacity(64 * 1024);
            loop {
                match s.read_buf(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                while buf.len() >= 4 {
                    let len = u32::from_be_bytes(buf[..4].try_into().unwrap()) as usize;
                    if buf.len() < 4 + len {
                        break;
                    }
                    out.put_slice(&buf[..4 + len]);
                    buf.advance(4 + len);
                }
                if s.write_all(&out).await.is_err() {
                    return;
                }
                out.clear();
            }
        });
    }
}

/// Sequential ping-pong: one 32-byte message, wait for its echo.
pub struct RawPingPong(Mutex<TcpStream>);

impl RawPingPong {
    pub async fn connect(addr: SocketAddr) -> Self {
        let s = TcpStream::connect(addr).await.unwrap();
        s.set_nodelay(true).unwrap();
        RawPingPong(Mutex::new(s))
    }
}

impl Client for RawPingPong {
    fn call(&self) -> BoxFut<'_, ()> {
        Box::pin(async move {
            let mut s = self.0.lock().await;
            let mut msg = [0u8; 36];
            msg[..4].copy_from_slice(&32u32.to_be_bytes());
            s.write_all(&msg).await.unwrap();
            s.read_exact(&mut msg).await.unwrap();
        })
    }
}

/// A minimal multiplexed socket: ids in frames, one writer and one reader task.
pub struct RawMux {
    tx: mpsc::UnboundedSender<(u64, oneshot::Sender<()>)>,
}

impl RawMux {
    pub async fn connect(addr: SocketAddr) -> Self {
        let s = TcpStream::connect(addr).await.unwrap();
        s.set_nodelay(true).unwrap();
        let (mut r, mut w) = s.into_split();
        let (tx, mut rx) = mpsc::unbounded_channel::<(u64, oneshot::Sender<()>)>();
        let pending = Arc::new(std::sync::Mutex::new(std::collections::HashMap::<u64, oneshot::Sender<()>>::new()));
        let p = pending.clone();
        tokio::spawn(async move {
            let mut batch = Vec::new();
            let mut out = BytesMut::new();
            while rx.recv_many(&mut batch, 256).await > 0 {
                for (id, done) in batch.drain(..) {
                    p.lock().unwrap().insert(id, done);
                    out.put_u32(32);
                    out.put_u64(id);
                    out.put_slice(&[0u8; 24]);
                }
                if w.write_all(&out).await.is_err() {
                    return;
                }
                out.clear();
            }
        });
        tokio::spawn(async move {
            let mut buf = BytesMut::with_capacity(64 * 1024);
            loop {
                if matches!(r.read_buf(&mut buf).await, Ok(0) | Err(_)) {
                    return;
                }
                while buf.len() >= 36 {
                    let id = u64::from_be_bytes(buf[4..12].try_into().unwrap());
                    buf.advance(36);
                    if let Some(done) = pending.lock().unwrap().remove(&id) {
                        let _ = done.send(());
                    }
                }
            }
        });
        RawMux { tx }
    }
}

static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl Client for RawMux {
    fn call(&self) -> BoxFut<'_, ()> {
        Box::pin(async move {
            let (done, wait) = oneshot::channel();
            let id = NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.tx.send((id, done)).unwrap();
            wait.await.unwrap();
        })
    }
}

// ---------------------------------------------------------------- tonic

#[derive(Clone, PartialEq, prost::Message)]
pub struct HelloRequest {
    #[prost(string, tag = "1")]
    pub name: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct HelloReply {
    #[prost(string, tag = "1")]
    pub message: String,
}

/// What `tonic-build` would generate for `service Greeter { rpc Greet }`, by hand (so
/// the bench needs no protoc).
#[derive(Clone)]
struct TonicGreeter;

impl tonic::server::NamedService for TonicGreeter {
    const NAME: &'static str = "bench.Greeter";
}

impl tonic::codegen::Service<tonic::codegen::http::Request<tonic::body::Body>> for TonicGreeter {
    type Response = tonic::codegen::http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFut<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: tonic::codegen::http::Request<tonic::body::Body>) -> Self::Future {
        struct Unary;
        impl tonic::server::UnaryService<HelloRequest> for Unary {
            type Response = HelloReply;
            type Future = BoxFut<'static, Result<tonic::Response<HelloReply>, tonic::Status>>;
            fn call(&mut self, req: tonic::Request<HelloRequest>) -> Self::Future {
                Box::pin(async move {
                    Ok(tonic::Response::new(HelloReply { message: format!("Hello, {}", req.into_inner().name) }))
                })
            }
        }
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::<HelloReply, HelloRequest>::default());
            Ok(grpc.unary(Unary, req).await)
        })
    }
}

pub async fn serve_tonic(addr: &str) {
    let listener = TcpListener::bind(addr).await.unwrap();
    println!("listening on {}", listener.local_addr().unwrap());
    let incoming = tokio_stream_of(listener);
    tonic::transport::Server::builder().add_service(TonicGreeter).serve_with_incoming(incoming).await.unwrap();
}

fn tokio_stream_of(listener: TcpListener) -> impl futures::Stream<Item = std::io::Result<TcpStream>> {
    futures::stream::unfold(listener, |l| async move {
        let next = l.accept().await.map(|(s, _)| {
            let _ = s.set_nodelay(true);
            s
        });
        Some((next, l))
    })
}

pub struct TonicClient(tonic::client::Grpc<tonic::transport::Channel>);

impl TonicClient {
    pub async fn connect(addr: SocketAddr) -> Self {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .tcp_nodelay(true)
            .connect()
            .await
            .unwrap();
        TonicClient(tonic::client::Grpc::new(channel))
    }
}

impl Client for TonicClient {
    fn call(&self) -> BoxFut<'_, ()> {
        Box::pin(async move {
            let mut grpc = self.0.clone();
            grpc.ready().await.unwrap();
            let path = tonic::codegen::http::uri::PathAndQuery::from_static("/bench.Greeter/Greet");
            let codec = tonic_prost::ProstCodec::<HelloRequest, HelloReply>::default();
            let r = grpc.unary(tonic::Request::new(HelloRequest { name: NAME.into() }), path, codec).await.unwrap();
            debug_assert_eq!(r.into_inner().message, "Hello, Max");
        })
    }
}

// ---------------------------------------------------------------- tarpc

#[tarpc::service]
pub trait World {
    async fn greet(name: String) -> String;
}

#[derive(Clone)]
struct TarpcGreeter;

impl World for TarpcGreeter {
    async fn greet(self, _: tarpc::context::Context, name: String) -> String {
        format!("Hello, {name}")
    }
}

/// tarpc as its examples run it: one task per connection (`tokio::spawn` of the channel,
/// each request spawned too), the bincode format, `TCP_NODELAY` on both ends.
pub async fn serve_tarpc(addr: &str) {
    use tarpc::server::{BaseChannel, Channel};
    let listener = TcpListener::bind(addr).await.unwrap();
    println!("listening on {}", listener.local_addr().unwrap());
    loop {
        let (stream, _) = listener.accept().await.unwrap();
        stream.set_nodelay(true).unwrap();
        let channel = BaseChannel::with_defaults(tarpc_transport(stream));
        tokio::spawn(channel.execute(TarpcGreeter.serve()).for_each(|f| async move {
            tokio::spawn(f);
        }));
    }
}

type TarpcTransport<Item, SinkItem> =
    tarpc::serde_transport::Transport<TcpStream, Item, SinkItem, tarpc::tokio_serde::formats::Bincode<Item, SinkItem>>;

fn tarpc_transport<Item, SinkItem>(stream: TcpStream) -> TarpcTransport<Item, SinkItem>
where
    Item: for<'de> Deserialize<'de>,
    SinkItem: Serialize,
{
    let framed = tarpc::tokio_util::codec::Framed::new(stream, tarpc::tokio_util::codec::LengthDelimitedCodec::new());
    tarpc::serde_transport::new(framed, tarpc::tokio_serde::formats::Bincode::default())
}

pub struct TarpcClient(WorldClient);

impl TarpcClient {
    pub async fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        let mut config = tarpc::client::Config::default();
        config.max_in_flight_requests = 4096;
        TarpcClient(WorldClient::new(config, tarpc_transport(stream)).spawn())
    }
}

impl Client for TarpcClient {
    fn call(&self) -> BoxFut<'_, ()> {
        Box::pin(async move {
            let mut ctx = tarpc::context::current();
            ctx.deadline = std::time::Instant::now() + Duration::from_secs(30);
            let r = self.0.greet(ctx, NAME.into()).await.unwrap();
            debug_assert_eq!(r, "Hello, Max");
        })
    }
}
