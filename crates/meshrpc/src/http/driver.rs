//! The driver of one HTTP connection (HTTP/1.1 or h2c), serving it so that an idle
//! keep-alive connection costs little more than its socket: after [`PARK_AFTER`] with no
//! request and no bytes moving, an HTTP/1 connection hands hyper's state back (its 8 KiB
//! read and 8 KiB write buffers) and waits for the next request with nothing but the
//! socket; the next bytes start a fresh hyper connection over the same socket, invisibly
//! to the client.
//!
//! Also: a header timeout for slow clients, an idle timeout for silent ones, a graceful
//! close on shutdown.

use std::{
    future::Future,
    io,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::{Bytes, BytesMut};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf},
    sync::watch,
};

use super::unread::{HttpConn, Unsent};
use crate::transport::{stopped, PortCounters, Rewind};

/// An HTTP/1 connection this quiet (no request running, no bytes either way) parks.
pub(crate) const PARK_AFTER: Duration = Duration::from_millis(500);
/// The HTTP/2 connection preface (h2c with prior knowledge).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// The head of an HTTP/2 frame (length, type, flags, stream id).
const H2_FRAME_HEAD: usize = 9;

type Response = axum::response::Response;
type Request = axum::http::Request<Incoming>;

/// Serves HTTP/1.1 or h2c on one connection until it ends, it stays silent for its idle
/// timeout, its answer stays unread for its stuck timeout, or `shutdown` fires (then it
/// closes gracefully).
pub(crate) async fn http_connection<I, S>(io: I, service: S, conn: HttpConn, mut shutdown: watch::Receiver<bool>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: tower::Service<Request, Response = Response, Error = std::convert::Infallible> + Clone + Send + Unpin + 'static,
    S::Future: Send + 'static,
{
    let (header_timeout, idle_timeout) = (conn.header_timeout, conn.idle_timeout);
    let activity = Activity::new();
    // Answers of a known size are charged to the port's budget until written.
    let unsent = Unsent::new(conn.answers.clone());
    let charged = unsent.clone();
    let service = tower::ServiceExt::map_response(service, move |resp| charged.charge(resp));
    let mut io = Watched { io, activity: activity.clone(), unsent: unsent.clone() };
    let mut prefix = BytesMut::new();
    // A new connection must start its request within the header timeout (decisions.md:
    // a few seconds before a handshake completes); a kept-alive one has the idle timeout.
    let mut wait = header_timeout;
    loop {
        // Parked (or new): nothing but the socket until the next request's first bytes.
        if prefix.is_empty() {
            let quiet_until = activity.last() + wait;
            tokio::select! {
                read = io.read_buf(&mut prefix) => match read {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                },
                _ = stopped(&mut shutdown) => return,
                _ = tokio::time::sleep_until(quiet_until.into()) => return,
            }
        }
        // Enough bytes to tell h2c's preface from HTTP/1, and a GET's whole head (a
        // WebSocket upgrade is a GET whose head says so).
        let tell = async {
            // h2c's first bytes end with the head of the client's first frame (its
            // SETTINGS): a bare preface is held no longer than a bare request line.
            while (prefix.len() < H2_PREFACE.len() && H2_PREFACE.starts_with(&prefix))
                || (prefix.starts_with(H2_PREFACE) && prefix.len() < H2_PREFACE.len() + H2_FRAME_HEAD)
            {
                if io.read_buf(&mut prefix).await? == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
            }
            while prefix.starts_with(b"GET ") && prefix.len() < 8192 && !prefix.windows(4).any(|w| w == b"\r\n\r\n") {
                if io.read_buf(&mut prefix).await? == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
            }
            Ok::<_, io::Error>(())
        };
        match tokio::time::timeout(header_timeout, tell).await {
            Ok(Ok(())) => {}
            _ => return,
        }
        let rewound = Rewind::new(std::mem::take(&mut prefix).freeze(), io);
        // Each way of serving is boxed: a parked connection's task keeps only this loop's
        // state, not room for the largest of them (idle keep-alive clients are many).
        if rewound.prefix.starts_with(H2_PREFACE) {
            return Box::pin(serve_h2(rewound, service, &conn, &activity, &unsent, shutdown)).await;
        }
        if asks_upgrade(&rewound.prefix) {
            // A WebSocket: hyper hands the socket over after the 101; the connection is
            // the WebSocket's from then on (it never parks).
            return Box::pin(serve_upgradable(rewound, service, header_timeout, shutdown)).await;
        }
        match Box::pin(serve_h1(rewound, service.clone(), &conn, &activity, &unsent, &mut shutdown)).await {
            // Parked: go on with the socket and what hyper had read past the last request.
            Some((back, read_buf)) => {
                unsent.clear(); // every answer went out whole
                io = back;
                prefix.extend_from_slice(&read_buf);
                wait = idle_timeout;
            }
            None => return,
        }
    }
}

/// Serves HTTP/1 until the connection ends (`None`) or parks: then the socket comes back,
/// with bytes hyper read and did not use.
async fn serve_h1<I, S>(
    io: Rewind<Watched<I>>,
    service: S,
    conn_limits: &HttpConn,
    activity: &Activity,
    unsent: &Unsent,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<(Watched<I>, Bytes)>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: tower::Service<Request, Response = Response, Error = std::convert::Infallible> + Clone + Send + Unpin + 'static,
    S::Future: Send + 'static,
{
    let running = Arc::new(AtomicUsize::new(0));
    let counted = Counted { inner: service, running: running.clone() };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(conn_limits.header_timeout);
    let mut conn = builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(counted));
    let mut parking = false;
    let mut closing: Option<Instant> = None;
    // When the park or idle timer last fired while a request ran: it then waits a whole
    // period again from there (a deadline left in the past would fire in a loop).
    let (mut quiet_from, mut idle_from) = (activity.last(), activity.last());
    loop {
        let quiet = activity.last().max(quiet_from) + PARK_AFTER;
        let idle = activity.last().max(idle_from) + conn_limits.patience(unsent);
        tokio::select! {
            done = std::future::poll_fn(|cx| conn.poll_without_shutdown(cx)) => {
                if done.is_err() || !parking {
                    // The client left, broke the protocol, or we are shutting down.
                    let _ = tokio::time::timeout(Duration::from_secs(1), async {
                        let mut io = conn.into_parts().io.into_inner();
                        tokio::io::AsyncWriteExt::shutdown(&mut io).await
                    }).await;
                    return None;
                }
                let parts = conn.into_parts();
                let Rewind { prefix, stream: io } = parts.io.into_inner();
                // What the rewind still held, then what hyper read past the request.
                let mut rest = BytesMut::from(&prefix[..]);
                rest.extend_from_slice(&parts.read_buf);
                return Some((io, rest.freeze()));
            }
            _ = stopped(shutdown), if closing.is_none() => {
                Pin::new(&mut conn).graceful_shutdown();
                // A request still being answered gets the time a call has.
                closing = Some(crate::clock::now() + Duration::from_secs(30));
            }
            _ = tokio::time::sleep_until(quiet.into()), if !parking && closing.is_none() => {
                let now = crate::clock::now();
                if running.load(Ordering::Acquire) > 0 {
                    quiet_from = now;
                } else if activity.last() + PARK_AFTER <= now {
                    // Idle between requests: hyper ends the connection without a word
                    // (nothing is in flight) and hands the socket back.
                    Pin::new(&mut conn).graceful_shutdown();
                    parking = true;
                }
            }
            _ = tokio::time::sleep_until(idle.into()), if closing.is_none() => {
                let now = crate::clock::now();
                if running.load(Ordering::Acquire) > 0 {
                    idle_from = now;
                } else if activity.last() + conn_limits.patience(unsent) <= now {
                    conn_limits.closing(unsent);
                    Pin::new(&mut conn).graceful_shutdown();
                    closing = Some(now + Duration::from_secs(1));
                }
            }
            _ = tokio::time::sleep_until(closing.unwrap_or_else(crate::clock::now).into()), if closing.is_some() => return None,
        }
    }
}

/// True when the request head read so far asks to upgrade the connection (a WebSocket).
fn asks_upgrade(head: &[u8]) -> bool {
    let end = head.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(head.len());
    head[..end].split(|b| *b == b'\n').any(|line| line.len() > 8 && line[..8].eq_ignore_ascii_case(b"upgrade:"))
}

async fn serve_upgradable<I, S>(
    io: Rewind<Watched<I>>,
    service: S,
    header_timeout: Duration,
    mut shutdown: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: tower::Service<Request, Response = Response, Error = std::convert::Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    let (alive, mut sessions) = tokio::sync::mpsc::channel::<()>(1);
    let (_abandon, abandoned) = watch::channel(());
    let tie = UpgradeTie { _alive: alive, abandoned };
    let service = tower::ServiceExt::map_request(service, move |mut req: Request| {
        req.extensions_mut().insert(tie.clone());
        req
    });
    {
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder.timer(TokioTimer::new()).header_read_timeout(header_timeout);
        let conn = builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(service)).with_upgrades();
        tokio::pin!(conn);
        tokio::select! {
            _ = conn.as_mut() => {}
            _ = stopped(&mut shutdown) => {
                conn.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(Duration::from_secs(30), conn).await;
            }
        }
    }
    // hyper handed the socket to the session, which runs in a task of its own: this
    // connection still counts (towards the connection cap, in a drain) until it ends.
    // If this task is stopped first (the drain's timeout), the session ends with it.
    let _ = sessions.recv().await;
}

/// Ties an upgraded session (a WebSocket) to the connection it came from, whose task
/// waits for it: the session holds it while it runs, and ends when
/// [`abandoned`](Self::abandoned) resolves (that task was stopped).
#[derive(Clone)]
pub(crate) struct UpgradeTie {
    _alive: tokio::sync::mpsc::Sender<()>,
    abandoned: watch::Receiver<()>,
}

impl UpgradeTie {
    /// Resolves once the connection's task is gone.
    pub(crate) async fn abandoned(&mut self) {
        while self.abandoned.changed().await.is_ok() {}
    }
}

async fn serve_h2<I, S>(
    io: Rewind<Watched<I>>,
    service: S,
    limits: &HttpConn,
    activity: &Activity,
    unsent: &Unsent,
    mut shutdown: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: tower::Service<Request, Response = Response, Error = std::convert::Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder.timer(TokioTimer::new());
    // Counted as on HTTP/1: a connection with a request running is not idle, however
    // quiet its socket (a call may take longer than the idle timeout).
    let running = Arc::new(AtomicUsize::new(0));
    let counted = Counted { inner: service, running: running.clone() };
    let conn = builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(counted));
    tokio::pin!(conn);
    // When the idle timer last fired while a request ran (see `serve_h1`).
    let mut idle_from = activity.last();
    let grace = loop {
        let quiet_until = activity.last().max(idle_from) + limits.patience(unsent);
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = stopped(&mut shutdown) => break Duration::from_secs(30),
            _ = tokio::time::sleep_until(quiet_until.into()) => {
                let now = crate::clock::now();
                if running.load(Ordering::Acquire) > 0 {
                    idle_from = now;
                } else if activity.last() + limits.patience(unsent) <= now {
                    limits.closing(unsent);
                    break Duration::from_secs(1);
                }
            }
        }
    };
    conn.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(grace, conn).await;
}

/// Counts the requests being answered (a connection with one running never parks), and
/// boxes their futures (hyper hands the connection back only for `Unpin` ones).
#[derive(Clone)]
struct Counted<S> {
    inner: S,
    running: Arc<AtomicUsize>,
}

impl<S> tower::Service<Request> for Counted<S>
where
    S: tower::Service<Request, Response = Response, Error = std::convert::Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, std::convert::Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let running = Running::start(&self.running);
        let answer = self.inner.call(req);
        Box::pin(async move {
            let resp = answer.await;
            drop(running);
            resp
        })
    }
}

/// One request being answered, until dropped.
struct Running(Arc<AtomicUsize>);

impl Running {
    fn start(count: &Arc<AtomicUsize>) -> Running {
        count.fetch_add(1, Ordering::AcqRel);
        Running(count.clone())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// When a connection last moved bytes, either way.
#[derive(Clone)]
struct Activity {
    base: Instant,
    nanos: Arc<AtomicU64>,
}

impl Activity {
    fn new() -> Activity {
        Activity { base: crate::clock::now(), nanos: Arc::default() }
    }

    fn now(&self) {
        self.nanos.store(crate::clock::since(self.base).as_nanos() as u64, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.base + Duration::from_nanos(self.nanos.load(Ordering::Relaxed))
    }
}

/// An IO that notes when bytes move, and gives back the charge of answers written.
struct Watched<I> {
    io: I,
    activity: Activity,
    unsent: Arc<Unsent>,
}

impl<I: AsyncRead + Unpin> AsyncRead for Watched<I> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.now();
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Watched<I> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        if let Poll::Ready(Ok(n @ 1..)) = polled {
            self.activity.now();
            self.unsent.written(n);
        }
        polled
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n @ 1..)) = polled {
            self.activity.now();
            self.unsent.written(n);
        }
        polled
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

impl HttpConn {
    /// How long the connection may stay silent: its idle timeout, or its stuck timeout
    /// while an answer of it waits unread.
    fn patience(&self, unsent: &Unsent) -> Duration {
        if unsent.held() > 0 {
            self.stuck_timeout
        } else {
            self.idle_timeout
        }
    }

    /// The connection is closed for its silence: counted when its caller left an answer
    /// unread.
    fn closing(&self, unsent: &Unsent) {
        if unsent.held() > 0 {
            PortCounters::add(&self.answers.counters.stuck_closed);
        }
    }
}
