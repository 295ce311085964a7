//! Accepting connections: one loop for every listener of the crate, and the mesh port's
//! sniffing of mesh callers from everything else (HTTP).

use std::{net::SocketAddr, sync::atomic::Ordering, sync::Arc, time::Duration};

use bytes::BytesMut;
use tokio::{
    io::AsyncReadExt,
    net::{TcpListener, TcpStream},
    sync::watch,
    task::JoinSet,
};

#[cfg(feature = "tls")]
use super::port_stream::answer_and_close;
use super::{
    guard::{Guard, PortCounters},
    overcap::{FdRoom, OverCap, Probes},
    port_stream::{PortStream, Rewind},
    serve_mesh, stopped, Link, MeshLimits, TcpLink,
};
use crate::{
    admission::Admission,
    call::{BoxFuture, Dispatch},
    proto::{sniff, Sniffed},
    throttle::Throttle,
};

/// What answers the connections of a port that are not mesh callers (HTTP, with the
/// `http` feature).
pub(crate) trait Door: Send + Sync + 'static {
    /// Serves one connection until it ends or `shutdown` fires (then closes gracefully).
    /// Its calls are stamped with (and checked against) `admission`.
    fn serve(self: Arc<Self>, io: Rewind, admission: Admission, shutdown: watch::Receiver<bool>) -> BoxFuture<()>;
}

/// How many connections a listener serves at once, and what it counts.
#[derive(Clone)]
pub(crate) struct Cap {
    pub(crate) max_connections: usize,
    pub(crate) counters: Arc<PortCounters>,
    /// What serves a readiness probe past the cap (none: it gets the 503 of the rest).
    pub(crate) probes: Option<Probes>,
}

static CAP_WARNING: Throttle = Throttle::new(Duration::from_secs(10));
static ACCEPT_FAILURES: Throttle = Throttle::new(Duration::from_secs(10));
static FD_WARNING: std::sync::Once = std::sync::Once::new();

/// Accepts connections until `shutdown` fires, serving each with `serve`; then waits up to
/// `drain` for them to finish, and stops the rest. Past `cap.max_connections` (or the
/// descriptors the process has: [`FdRoom`]) a new connection gets a liveness answer or a
/// refusal, never a handler.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    mut shutdown: watch::Receiver<bool>,
    drain: Duration,
    cap: Cap,
    mut serve: impl FnMut(TcpStream, SocketAddr) -> BoxFuture<()>,
) {
    let fds = FdRoom::get();
    if fds.connections < cap.max_connections {
        FD_WARNING.call_once(|| {
            tracing::warn!(
                fd_limit = fds.limit, max_connections = cap.max_connections, serving_at_most = fds.connections,
                "the file descriptor limit is below the connection cap: connections past what it allows are refused as at the cap"
            )
        });
    }
    let mut conns = JoinSet::new();
    let mut over = OverCap::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let room = if conns.len() < cap.max_connections { fds.take() } else { None };
                    if let Some(fd) = room {
                        let _ = stream.set_nodelay(true);
                        let served = serve(stream, peer);
                        conns.spawn(async move {
                            served.await;
                            drop(fd);
                        });
                        cap.counters.open_connections.store(conns.len() as u64, Ordering::Relaxed);
                        continue;
                    }
                    PortCounters::add(&cap.counters.refused_connections);
                    CAP_WARNING.log(|left_out| tracing::warn!(
                        %peer, max_connections = cap.max_connections.min(fds.connections), also_refused = left_out,
                        "connection cap reached: refusing new connections"
                    ));
                    over.admit(stream, cap.max_connections.min(fds.connections), cap.probes.clone());
                }
                Err(e) => {
                    // Out of file descriptors (the process opened more than its room
                    // foresaw) and the like: back off, keep serving.
                    ACCEPT_FAILURES.log(|left_out| tracing::warn!(error = %e, also_failed = left_out, "accept failed"));
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = stopped(&mut shutdown) => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {
                cap.counters.open_connections.store(conns.len() as u64, Ordering::Relaxed);
            }
            _ = over.join_next() => {}
        }
    }
    drop(listener);
    over.shutdown().await;
    let drained = tokio::time::timeout(drain, async { while conns.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(left = conns.len(), "drain timeout: closing remaining connections");
        conns.shutdown().await;
    }
}

/// How a mesh port serves its connections.
#[derive(Clone)]
pub(crate) struct Port {
    pub(crate) dispatch: Arc<dyn Dispatch>,
    pub(crate) door: Option<Arc<dyn Door>>,
    pub(crate) mesh: MeshLimits,
    pub(crate) guard: Arc<Guard>,
    pub(crate) max_connections: usize,
    /// Mutual TLS: only callers holding a certificate of the cluster CA get past it.
    #[cfg(feature = "tls")]
    pub(crate) tls: Option<super::TlsConfig>,
    /// The policy every call from this port passes.
    #[cfg(feature = "tls")]
    pub(crate) access: Option<Arc<crate::access::Access>>,
}

/// Serves a mesh port: each connection's first bytes tell a mesh caller from anything else.
pub(crate) async fn serve_port(listener: TcpListener, port: Port, shutdown: watch::Receiver<bool>, drain: Duration) {
    let stop = shutdown.clone();
    // Past the cap, `/healthz` and `/ready` get what the port's HTTP door answers (not
    // on a mutual-TLS port: nothing is served there in plaintext).
    #[cfg(feature = "tls")]
    let door = port.door.clone().filter(|_| port.tls.is_none());
    #[cfg(not(feature = "tls"))]
    let door = port.door.clone();
    let probes: Option<Probes> = door.map(|door| {
        let stop = shutdown.clone();
        Arc::new(move |io: Rewind<TcpStream>| {
            let io = Rewind::new(io.prefix, PortStream::Tcp(io.stream));
            door.clone().serve(io, Admission::default(), stop.clone())
        }) as Probes
    });
    let cap = Cap { max_connections: port.max_connections, counters: port.guard.counters.clone(), probes };
    accept_loop(listener, shutdown, drain, cap, move |stream, _| {
        let (port, stop) = (port.clone(), stop.clone());
        Box::pin(async move { serve_connection(stream, port, stop).await })
    })
    .await
}

async fn serve_connection(stream: TcpStream, port: Port, shutdown: watch::Receiver<bool>) {
    #[cfg(feature = "tls")]
    if let Some(tls) = port.tls.clone() {
        return serve_tls_connection(stream, tls, port, shutdown).await;
    }
    serve_stream(PortStream::Tcp(stream), Admission::default(), port, shutdown).await
}

/// Tells a mesh caller from anything else by the first bytes, then serves it.
async fn serve_stream(mut stream: PortStream, admission: Admission, port: Port, shutdown: watch::Receiver<bool>) {
    let mut first = BytesMut::with_capacity(1024);
    // Read (not peek) until the bytes tell: waiting on readiness, a partial preface costs
    // nothing while it stays partial.
    let told = tokio::time::timeout(port.mesh.handshake_timeout, async {
        loop {
            match sniff(&first) {
                Sniffed::NeedMore => {}
                told => return Some(told),
            }
            match stream.read_buf(&mut first).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    })
    .await;
    match told {
        Ok(Some(Sniffed::Mesh)) => {
            let link: Arc<dyn Link> = match stream {
                PortStream::Tcp(tcp) => Arc::new(TcpLink::new(tcp)),
                #[cfg(feature = "tls")]
                PortStream::Tls(tls) => {
                    let (tcp, session) = tls.into_inner();
                    Arc::new(super::tls_link::TlsLink::new(tcp, rustls::Connection::Server(session)))
                }
            };
            serve_mesh(link, first, port.dispatch, port.mesh, port.guard, admission, shutdown).await
        }
        Ok(Some(_)) => {
            if let Some(door) = port.door {
                door.serve(Rewind::new(first.freeze(), stream), admission, shutdown).await;
            }
        }
        Ok(None) | Err(_) => {} // closed or silent: nothing to answer
    }
}

/// A mutual-TLS port: a ClientHello gets the handshake (the caller must present a
/// certificate of the cluster CA); a plaintext mesh caller or HTTP client gets told, in
/// its own protocol, that this port takes mutual TLS only.
#[cfg(feature = "tls")]
async fn serve_tls_connection(stream: TcpStream, tls: super::TlsConfig, port: Port, shutdown: watch::Receiver<bool>) {
    use crate::proto::{refusal, TLS_REQUIRED};
    const HANDSHAKE: u8 = 0x16; // a TLS record carrying a ClientHello
    let peer = stream.peer_addr().map_or_else(|_| "?".to_owned(), |p| p.to_string());
    let refused = |why: &dyn std::fmt::Display| {
        PortCounters::add(&port.guard.counters.refused_tls);
        TLS_REFUSALS.log(|also| tracing::warn!(%peer, reason = %why, also_refused = also, "TLS handshake refused"));
    };
    let mut first = [0u8; 1];
    let peeked = tokio::time::timeout(port.mesh.handshake_timeout, stream.peek(&mut first)).await;
    match peeked {
        Ok(Ok(1..)) if first[0] == HANDSHAKE => {}
        Ok(Ok(1..)) => {
            refused(&"a plaintext client on the mutual-TLS port");
            let answer = if first[0] == crate::proto::MAGIC[0] {
                let mut out = BytesMut::new();
                refusal(&format!("{TLS_REQUIRED}this node accepts only mutual-TLS callers (set --tls-dir)"), &mut out);
                out.to_vec()
            } else if first[0].is_ascii_uppercase() {
                let body = r#"{"data":null,"errors":[{"code":"tls","message":"tls: this port accepts only mutual-TLS clients holding a cluster certificate"}]}"#;
                format!(
                    "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                )
                .into_bytes()
            } else {
                Vec::new()
            };
            answer_and_close(stream, &answer).await;
            return;
        }
        Ok(_) => return, // closed
        Err(_) => return refused(&"no ClientHello within the handshake timeout"),
    }
    let shake = tokio::time::timeout(port.mesh.handshake_timeout, tls.accept(stream)).await;
    let (stream, identity) = match shake {
        Ok(Ok(done)) => done,
        Ok(Err(e)) => return refused(&e),
        Err(_) => return refused(&"the TLS handshake did not finish within the handshake timeout"),
    };
    let admission = Admission { peer: Some(identity), access: port.access.clone() };
    serve_stream(PortStream::Tls(Box::new(stream)), admission, port, shutdown).await
}

#[cfg(feature = "tls")]
static TLS_REFUSALS: Throttle = Throttle::new(Duration::from_secs(5));
