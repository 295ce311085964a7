//! A persistent, multiplexed connection to one node (the calling side): the tokio shell
//! around [`CallerState`].
//!
//! One reader task matches responses to pending calls by id. Sending goes through the
//! sender: a lone caller writes its frame itself, concurrent callers' frames are batched
//! by a writer task. Many calls share the one connection.

mod answers;
mod deadlines;
mod keepalive;
mod options;

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicUsize},
        Arc, Mutex,
    },
    time::Duration,
};

use bytes::BytesMut;
use tokio::{
    net::TcpStream,
    sync::{oneshot, watch, Notify},
};

use super::{
    link::{read_some, write_all, Link, TcpLink},
    sender::{GatherTurn, Sender},
    streams::{start_pump, ItemSink, Owner, StreamHandle},
};
use crate::{
    call::Items,
    call::{BoxFuture, Call, Dispatch, Reply},
    error::Error,
    identity::Identity,
    proto::{request, CallerHandshake, CallerState, ConnState, Frame, Negotiated},
};

pub use self::options::ConnectOptions;

type Waiter = oneshot::Sender<Result<Reply, Error>>;
/// The protocol state of a calling connection.
type Proto = CallerState<Waiter, Arc<StreamHandle>>;
type Answer = oneshot::Receiver<Result<Reply, Error>>;

/// A live connection to a meshrpc node. Cheap to clone; all clones share the link, and
/// dropping the last one closes it. While open it pings the node every few seconds
/// ([`ConnectOptions::keepalive`]), so the node does not take it for idle and a dead node
/// is noticed: one that sends nothing for the keepalive timeout after a ping.
///
/// It does not reconnect: once closed, every call fails with `unavailable`
/// ("connection … is closed") and a new one must be made. A `Cluster` reconnects for you.
#[derive(Clone)]
pub struct Connection {
    handle: Arc<Handle>,
}

/// The users' share of a connection: when the last `Connection` goes, so does the link.
struct Handle {
    inner: Arc<Inner>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.inner.close(Error::unavailable(format!("connection to {} dropped", self.inner.peer)));
    }
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection").field("peer", &self.inner().peer).field("state", &self.state()).finish()
    }
}

struct Inner {
    peer: SocketAddr,
    sender: Sender,
    /// The link, shared: the reader task reads it, and so does a lone caller waiting for
    /// its answer (it then needs no hand-off from another task, which costs a
    /// cross-thread wake-up on a multi-threaded runtime).
    link: Arc<dyn Link>,
    /// Bytes read and not yet decoded; whoever holds it reads and dispatches.
    inbox: Mutex<BytesMut>,
    proto: Mutex<Proto>,
    /// This, for the readers of answer streams (they report what they consumed).
    this: std::sync::Weak<Inner>,
    /// What the handshake settled (a copy, read without the lock).
    limits: Negotiated,
    /// Who the node proved to be in the TLS handshake.
    identity: Option<Arc<Identity>>,
    state: watch::Sender<ConnState>,
    /// A call's deadline is sooner than the one the deadline timer is set for.
    rearm: Notify,
    /// Lone callers reading the link themselves (see [`LoneReader`]).
    lone_readers: AtomicUsize,
    /// Wakes the reader task when the last lone caller is done.
    reader_resume: Notify,
    /// Bytes arrived since the keepalive last cleared it: the peer is alive.
    heard: AtomicBool,
    /// The round trip of the latest keepalive ping answered.
    latency: Mutex<Option<Duration>>,
}

/// Connects to a node's mesh port with default options.
pub async fn connect(addr: impl tokio::net::ToSocketAddrs) -> Result<Connection, Error> {
    Connection::connect(addr, ConnectOptions::default()).await
}

impl Connection {
    /// Opens a TCP connection, shakes hands and starts the reader and writer tasks.
    pub async fn connect(addr: impl tokio::net::ToSocketAddrs, opts: ConnectOptions) -> Result<Connection, Error> {
        let stream = tokio::time::timeout(opts.connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| Error::unavailable("connect timed out"))?
            .map_err(|e| Error::from(e).context("connect"))?;
        stream.set_nodelay(true)?;
        #[cfg(feature = "tls")]
        if let Some(tls) = opts.tls.clone() {
            let peer = stream.peer_addr()?;
            let (stream, identity) = tokio::time::timeout(opts.connect_timeout, tls.connect(stream))
                .await
                .map_err(|_| Error::tls(format!("no TLS handshake from {peer}")))?
                .map_err(|e| e.context(&peer.to_string()))?;
            let (tcp, session) = stream.into_inner();
            let link = super::tls_link::TlsLink::new(tcp, rustls::Connection::Client(session));
            return Connection::shake(Arc::new(link), opts, Some(identity)).await;
        }
        Connection::over(TcpLink::new(stream), opts).await
    }

    /// Shakes hands over an already connected link (TCP, TLS, an in-process duplex) and
    /// starts the reader and writer tasks.
    pub async fn over(link: impl Link, opts: ConnectOptions) -> Result<Connection, Error> {
        Connection::shake(Arc::new(link), opts, None).await
    }

    async fn shake(
        link: Arc<dyn Link>,
        opts: ConnectOptions,
        identity: Option<Arc<Identity>>,
    ) -> Result<Connection, Error> {
        let peer = link.peer_addr();
        let handshake = CallerHandshake::new(opts.caller.as_deref().unwrap_or(""), opts.max_frame);
        let mut inbox = BytesMut::with_capacity(8 * 1024);
        let shake = async {
            let mut hello = BytesMut::new();
            handshake.hello(&mut hello);
            write_all(&*link, &hello).await?;
            loop {
                if let Some(done) = handshake.receive(&mut inbox)? {
                    return Ok::<_, Error>(done);
                }
                if read_some(&*link, &mut inbox).await? == 0 {
                    return Err(Error::unavailable(format!("{peer} closed the connection during the handshake")));
                }
            }
        };
        let limits = tokio::time::timeout(opts.connect_timeout, shake)
            .await
            .map_err(|_| Error::unavailable(format!("no handshake from {peer}")))?
            .map_err(|e| match e {
                Error::Protocol { message } => Error::protocol(format!("{peer}: {message}")),
                e => e,
            })?;
        let inner = Arc::new_cyclic(|this| Inner {
            this: this.clone(),
            peer,
            // Nobody watches a caller's queue.
            sender: Sender::new(link.clone(), usize::MAX)
                .compressing(opts.compress && limits.features.contains(crate::proto::Features::ZSTD)),
            link,
            inbox: Mutex::new(inbox),
            proto: Mutex::new(CallerState::new(limits.clone())),
            limits,
            identity,
            state: watch::channel(ConnState::Open).0,
            rearm: Notify::new(),
            lone_readers: AtomicUsize::new(0),
            reader_resume: Notify::new(),
            heard: AtomicBool::new(false),
            latency: Mutex::new(None),
        });
        inner.start();
        let conn = Connection { handle: Arc::new(Handle { inner }) };
        if let Some(every) = opts.keepalive {
            let timeout = opts.keepalive_timeout.unwrap_or(every * 3);
            tokio::spawn(keepalive::run(Arc::downgrade(&conn.handle), every, timeout));
        }
        Ok(conn)
    }

    fn inner(&self) -> &Arc<Inner> {
        &self.handle.inner
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.inner().peer
    }

    /// Who the node proved to be in the TLS handshake (`None` over plaintext).
    pub fn peer_identity(&self) -> Option<&Arc<Identity>> {
        self.inner().identity.as_ref()
    }

    /// Open, draining (the peer sent go-away) or closed.
    pub fn state(&self) -> ConnState {
        *self.inner().state.borrow()
    }

    /// The round trip of the latest keepalive ping answered (`None` before the first,
    /// or without keepalive).
    pub fn latency(&self) -> Option<Duration> {
        *self.inner().latency.lock().unwrap()
    }

    /// True if both are the same connection.
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    pub(crate) fn same(&self, other: &Connection) -> bool {
        Arc::ptr_eq(self.inner(), other.inner())
    }

    /// Calls in flight on this connection (the load the p2c balancer sees).
    pub fn in_flight(&self) -> usize {
        self.inner().proto.lock().unwrap().in_flight()
    }

    /// Calls in flight on this connection, keepalive pings not counted.
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    pub(crate) fn calls_in_flight(&self) -> usize {
        self.inner().proto.lock().unwrap().calls_in_flight()
    }

    /// Calls started on this connection so far (keepalive pings not counted).
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    pub(crate) fn calls_started(&self) -> u64 {
        self.inner().proto.lock().unwrap().calls_started()
    }

    /// Resolves when the connection stops taking new calls (go-away or closed).
    pub async fn unusable(&self) {
        let mut rx = self.inner().state.subscribe();
        let _ = rx.wait_for(|s| *s != ConnState::Open).await;
    }

    /// Round-trips a ping frame and returns the time it took.
    pub async fn ping(&self, timeout: Duration) -> Result<Duration, Error> {
        let start = crate::clock::now();
        let (tx, rx) = oneshot::channel();
        let started = self.inner().proto.lock().unwrap().start_ping(tx, Some(start + timeout));
        let (registered, frame) = started.map_err(|e| self.inner().about_peer(e))?;
        self.inner().registered(registered);
        self.inner().send(&frame, registered.alone, registered.id)?;
        self.inner().wait(registered.id, rx, registered.alone).await?;
        Ok(crate::clock::since(start))
    }

    /// Closes the connection; pending calls fail with `Unavailable`.
    pub fn close(&self) {
        self.inner().close(Error::unavailable("connection closed locally"));
    }

    /// Sends a call and returns the pending answer. An error here means the call
    /// provably never left this process, so it is safe to try another replica.
    pub fn send_call(&self, call: Call) -> Result<PendingCall, Error> {
        let deadline = call.deadline;
        let input = call.input.clone();
        if input.as_ref().is_some_and(|i| !i.available()) {
            return Err(Error::Cancelled); // an earlier attempt sent the items: no retry
        }
        // Built outside the lock: many callers share it.
        let mut frame = request(call, crate::clock::now(), &self.inner().limits)?;
        let (tx, rx) = oneshot::channel();
        let handle = input.is_some().then(StreamHandle::new);
        let registered = self.inner().proto.lock().unwrap().register(tx, deadline, handle.clone());
        let registered = registered.map_err(|e| self.inner().about_peer(e))?;
        self.inner().registered(registered);
        frame.set_request_id(registered.id);
        self.inner().send(&frame, registered.alone, registered.id)?;
        if let (Some(items), Some(handle)) = (input.and_then(|i| i.take()), handle) {
            start_pump(self.inner().clone(), &handle, registered.id, items);
        }
        Ok(PendingCall { conn: self.clone(), id: registered.id, rx, alone: registered.alone })
    }
}

/// A call on the wire, waiting for its answer. Dropping it cancels the call.
pub struct PendingCall {
    conn: Connection,
    id: u64,
    rx: Answer,
    alone: bool,
}

impl std::fmt::Debug for PendingCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingCall").field("id", &self.id).field("peer", &self.conn.inner().peer).finish()
    }
}

impl PendingCall {
    /// Waits for the answer, the deadline, or the connection's end.
    pub async fn answer(self) -> Result<Reply, Error> {
        match self.conn.inner().wait(self.id, self.rx, self.alone).await? {
            // The stream's reader keeps the connection open while it reads.
            Reply::Stream(items) => Ok(Reply::Stream(Items::new(KeepOpen { items, _conn: self.conn }))),
            reply => Ok(reply),
        }
    }
}

/// Items read from a connection, which stays open while they are read.
struct KeepOpen {
    items: Items,
    _conn: Connection,
}

impl futures_core::Stream for KeepOpen {
    type Item = Result<Reply, Error>;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        std::pin::Pin::new(&mut self.items).poll_next(cx)
    }
}

impl Dispatch for Connection {
    fn dispatch(&self, call: Call) -> BoxFuture<Result<Reply, Error>> {
        let pending = self.send_call(call);
        Box::pin(async move { pending?.answer().await })
    }
}

impl Inner {
    fn start(self: &Arc<Self>) {
        let (writer, mut state) = (self.clone(), self.state.subscribe());
        tokio::spawn(async move {
            tokio::select! {
                _ = writer.sender.flush_loop() => writer.close(Error::unavailable(format!("connection to {} broke", writer.peer))),
                _ = state.wait_for(|s| *s == ConnState::Closed) => {}
            }
            writer.sender.shutdown();
        });
        let reader = self.clone();
        let mut state = self.state.subscribe();
        tokio::spawn(async move {
            let why = tokio::select! {
                why = reader.read_loop() => why,
                _ = state.wait_for(|s| *s == ConnState::Closed) => return,
            };
            reader.close(why);
        });
        let timer = self.clone();
        let mut state = self.state.subscribe();
        tokio::spawn(async move {
            tokio::select! {
                _ = timer.deadline_loop() => {}
                _ = state.wait_for(|s| *s == ConnState::Closed) => {}
            }
        });
    }

    /// Adds the peer to an error about this connection.
    fn about_peer(&self, e: Error) -> Error {
        match e {
            e @ Error::Unavailable { .. } => e.context(&self.peer.to_string()),
            e => e,
        }
    }

    fn send(&self, frame: &Frame, direct: bool, id: u64) -> Result<(), Error> {
        self.sender.send(frame, direct).map_err(|_| {
            if let Some((_, Some(stream))) = self.proto.lock().unwrap().cancel(id) {
                stream.stop_sending();
            }
            Error::unavailable(format!("connection to {} is broken", self.peer))
        })
    }

    /// After go-away, the side that called hangs up once its last answer is in: the
    /// draining node then knows no request is still on its way.
    fn close_if_drained(&self) {
        if self.proto.lock().unwrap().drained() {
            self.close(Error::unavailable(format!("{} drained", self.peer)));
        }
    }

    fn close(&self, why: Error) {
        let waiters = self.proto.lock().unwrap().close();
        if !waiters.is_empty() {
            tracing::debug!(peer = %self.peer, %why, failed = waiters.len(), "connection closed");
        }
        for (tx, stream) in waiters {
            if let Some(tx) = tx {
                let _ = tx.send(Err(why.clone()));
            }
            if let Some(stream) = stream {
                stream.fail(why.clone());
            }
        }
        self.state.send_replace(ConnState::Closed);
    }
}

/// Bytes of items a caller queues for a node before its streams wait.
const MAX_QUEUED_ITEMS: usize = 1024 * 1024;

impl Owner for Inner {
    fn consumed(&self, id: u64, cost: u32) {
        let credit = self.proto.lock().unwrap().consumed(id, cost);
        if let Some(frame) = credit {
            let _ = self.sender.send(&frame, false);
        }
    }

    fn abandoned(&self, id: u64) {
        let cancel = self.proto.lock().unwrap().cancel(id);
        if let Some((frame, stream)) = cancel {
            let _ = self.sender.send(&frame, false);
            if let Some(stream) = stream {
                stream.stop_sending();
            }
        }
        self.close_if_drained();
    }
}

impl ItemSink for Inner {
    fn max_frame(&self) -> u32 {
        self.limits.max_out
    }

    fn item_runs(&self) -> bool {
        self.limits.features.contains(crate::proto::Features::ITEM_RUNS)
    }

    async fn gather_turn(&self) -> GatherTurn {
        self.sender.gather_turn(MAX_QUEUED_ITEMS).await
    }

    fn credit(&self, id: u64) -> Option<u32> {
        self.proto.lock().unwrap().credit(id)
    }

    fn spent(&self, id: u64, bytes: u32) {
        self.proto.lock().unwrap().spent(id, bytes);
    }

    async fn send_bulk(&self, group: Vec<bytes::Bytes>) -> Result<(), Error> {
        self.sender.room(MAX_QUEUED_ITEMS).await;
        self.sender.send_bulk(group).map_err(|_| Error::unavailable(format!("connection to {} broke", self.peer)))
    }

    fn items_sent(&self, id: u64) {
        self.proto.lock().unwrap().items_sent(id);
    }

    fn blocked(&self, id: u64) {
        let _ = self.sender.send(&Frame::Credit { id, bytes: 0 }, false);
    }
}
