//! A persistent, multiplexed connection to one peer (the calling side).
//!
//! One reader task matches responses to pending calls by id. Sending goes through
//! the sender: a lone caller writes its frame itself, concurrent callers'
//! frames are batched by a writer task. Many calls share the one connection.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use bytes::{Bytes, BytesMut};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{
        tcp::{OwnedReadHalf, OwnedWriteHalf},
        TcpStream,
    },
    sync::{oneshot, watch},
};

use super::{
    frame::{Frame, Status, DEFAULT_MAX_FRAME, PREFACE},
    sender::Sender,
};
use crate::{
    call::{BoxFuture, Call, Dispatch, Reply},
    Error,
};

type Answer = oneshot::Receiver<Result<Reply, Error>>;
type Pending = HashMap<u64, oneshot::Sender<Result<Reply, Error>>>;

/// Connection limits and timeouts.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    pub connect_timeout: Duration,
    pub max_frame: u32,
    /// Who is calling, for the peer's request logs (a cluster sets its node name).
    pub caller: Option<std::sync::Arc<str>>,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self { connect_timeout: Duration::from_secs(3), max_frame: DEFAULT_MAX_FRAME, caller: None }
    }
}

/// A live connection to a meshrpc node. Cheap to clone; all clones share the socket.
#[derive(Clone)]
pub struct Connection {
    inner: Arc<Inner>,
}

struct Inner {
    peer: SocketAddr,
    sender: Sender,
    /// The socket's read side, shared: the reader task reads it, and so does a lone
    /// caller waiting for its answer (it then needs no hand-off from another task,
    /// which costs a cross-thread wake-up on a multi-threaded runtime).
    read: OwnedReadHalf,
    /// Bytes read and not yet decoded; whoever holds it reads and dispatches.
    inbox: Mutex<BytesMut>,
    /// `None` once the connection is closed: no call can be left waiting on it.
    pending: Mutex<Option<Pending>>,
    next_id: AtomicU64,
    /// Largest frame we accept from the peer.
    max_in: u32,
    /// Largest frame the peer accepts from us.
    max_out: u32,
    state: watch::Sender<State>,
}

/// Where a connection is in its life; only ever moves forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum State {
    Open,
    /// The peer sent go-away: in-flight calls finish, new ones go elsewhere.
    Draining,
    Closed,
}

/// Connects to a node's mesh port with default options.
pub async fn connect(addr: impl tokio::net::ToSocketAddrs) -> Result<Connection, Error> {
    Connection::connect(addr, ConnectOptions::default()).await
}

impl Connection {
    /// Opens a connection and starts its reader and writer tasks.
    pub async fn connect(addr: impl tokio::net::ToSocketAddrs, opts: ConnectOptions) -> Result<Connection, Error> {
        let stream = tokio::time::timeout(opts.connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| Error::unavailable("connect timed out"))?
            .map_err(|e| Error::unavailable(format!("connect: {e}")))?;
        stream.set_nodelay(true)?;
        let peer = stream.peer_addr()?;
        let (mut read, mut write) = stream.into_split();
        // Preface, then who is calling (length-prefixed, at most 255 bytes).
        let caller = opts.caller.as_deref().unwrap_or("").as_bytes();
        let caller = &caller[..caller.len().min(255)];
        let mut hello = PREFACE.to_vec();
        hello.push(caller.len() as u8);
        hello.extend_from_slice(caller);
        write.write_all(&hello).await?;
        // The server answers with its preface and the largest frame it accepts; we never
        // send more than that, so an oversized call fails locally with a typed error.
        let mut hello = [0u8; PREFACE.len() + 4];
        tokio::time::timeout(opts.connect_timeout, read.read_exact(&mut hello))
            .await
            .map_err(|_| Error::unavailable("no handshake from peer"))??;
        if &hello[..PREFACE.len()] != PREFACE {
            return Err(Error::protocol(format!("{peer} is not a meshrpc node")));
        }
        let peer_max = u32::from_be_bytes(hello[PREFACE.len()..].try_into().expect("4 bytes"));
        Ok(Self::start(peer, read, write, opts.max_frame, peer_max.min(opts.max_frame)))
    }

    fn start(peer: SocketAddr, read: OwnedReadHalf, write: OwnedWriteHalf, max_in: u32, max_out: u32) -> Connection {
        let inner = Arc::new(Inner {
            peer,
            sender: Sender::new(write),
            read,
            inbox: Mutex::new(BytesMut::with_capacity(8 * 1024)),
            pending: Mutex::new(Some(HashMap::new())),
            next_id: AtomicU64::new(1),
            max_in,
            max_out,
            state: watch::channel(State::Open).0,
        });
        let (writer, mut state) = (inner.clone(), inner.state.subscribe());
        tokio::spawn(async move {
            tokio::select! {
                _ = writer.sender.flush_loop() => writer.close(Error::unavailable(format!("connection to {} broke", writer.peer))),
                _ = state.wait_for(|s| *s == State::Closed) => {}
            }
            writer.sender.shutdown();
        });
        let reader = inner.clone();
        let mut state = inner.state.subscribe();
        tokio::spawn(async move {
            let why = tokio::select! {
                why = reader.read_loop() => why,
                _ = state.wait_for(|s| *s == State::Closed) => return,
            };
            reader.close(why);
        });
        Connection { inner }
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.inner.peer
    }

    /// Open, draining (the peer sent go-away) or closed.
    pub fn state(&self) -> State {
        *self.inner.state.borrow()
    }

    /// Calls in flight on this connection (the load the p2c balancer sees).
    pub fn in_flight(&self) -> usize {
        self.inner.pending.lock().unwrap().as_ref().map_or(0, HashMap::len)
    }

    /// Resolves when the connection stops taking new calls (go-away or closed).
    pub async fn unusable(&self) {
        let mut rx = self.inner.state.subscribe();
        let _ = rx.wait_for(|s| *s != State::Open).await;
    }

    /// Round-trips a ping frame and returns the time it took.
    pub async fn ping(&self, timeout: Duration) -> Result<Duration, Error> {
        let start = Instant::now();
        let (id, rx, alone) = self.register()?;
        self.send(Frame::Ping { id }, alone)?;
        self.wait(id, rx, Some(start + timeout), alone).await?;
        Ok(start.elapsed())
    }

    /// Closes the connection; pending calls fail with `Unavailable`.
    pub fn close(&self) {
        self.inner.close(Error::unavailable("connection closed locally"));
    }

    /// Registers a pending call; also says whether it is the only call in flight.
    fn register(&self) -> Result<(u64, Answer, bool), Error> {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let mut pending = self.inner.pending.lock().unwrap();
        // Checked under the lock: `close_if_drained` must not miss a call registered now.
        if self.state() == State::Draining {
            return Err(Error::unavailable(format!("{} is draining", self.inner.peer)));
        }
        let alone = match pending.as_mut() {
            Some(pending) => {
                pending.insert(id, tx);
                pending.len() == 1
            }
            None => return Err(Error::unavailable(format!("connection to {} is closed", self.inner.peer))),
        };
        Ok((id, rx, alone))
    }

    fn send(&self, frame: Frame, direct: bool) -> Result<(), Error> {
        self.inner
            .sender
            .send(&frame, direct)
            .map_err(|_| Error::unavailable(format!("connection to {} is broken", self.inner.peer)))
    }

    async fn wait(&self, id: u64, rx: Answer, deadline: Option<Instant>, alone: bool) -> Result<Reply, Error> {
        // If the caller drops this future, the guard withdraws the call and tells the peer.
        let guard = CancelOnDrop { inner: &self.inner, id };
        let received = async {
            let mut rx = rx;
            if !alone {
                return rx.await;
            }
            // The only call in flight reads the socket too: whichever of it and the reader
            // task gets there first decodes the answer.
            loop {
                tokio::select! {
                    biased;
                    answer = &mut rx => return answer,
                    ready = self.inner.read.readable() => match ready {
                        Ok(()) => {
                            if let Err(why) = self.inner.pump() {
                                self.inner.close(why);
                            }
                        }
                        Err(_) => return rx.await, // the reader task reports the error
                    },
                }
            }
        };
        let answer = match deadline {
            Some(d) => tokio::time::timeout_at(d.into(), received).await.map_err(|_| Error::Timeout),
            None => Ok(received.await),
        };
        match answer {
            Ok(Ok(reply)) => {
                std::mem::forget(guard);
                reply
            }
            Ok(Err(_)) => {
                std::mem::forget(guard);
                Err(Error::unavailable(format!("connection to {} closed mid-call", self.inner.peer)))
            }
            Err(e) => Err(e), // guard cancels
        }
    }
}

impl Connection {
    /// Sends a call and returns the pending answer. An error here means the call
    /// provably never left this process, so it is safe to try another replica.
    pub fn send_call(&self, call: Call) -> Result<PendingCall, Error> {
        if call.service.len() > 255 || call.method.len() > 255 {
            return Err(Error::bad_request("service and method names are at most 255 bytes"));
        }
        let now = Instant::now();
        if call.deadline.is_some_and(|d| d <= now) {
            return Err(Error::Timeout);
        }
        let (id, rx, alone) = self.register()?;
        let frame = Frame::Request {
            id,
            codec: call.codec,
            deadline: call.deadline.map(|d| d - now),
            trace_id: call.trace_id,
            service: bytes_of(call.service),
            method: bytes_of(call.method),
            payload: call.payload,
        };
        let size = frame.encoded_len() as u64;
        if size > u64::from(self.inner.max_out) {
            self.inner.forget(id);
            return Err(Error::TooLarge { size, limit: self.inner.max_out.into() });
        }
        if let Err(e) = self.send(frame, alone) {
            self.inner.forget(id);
            return Err(e);
        }
        Ok(PendingCall { conn: self.clone(), id, rx, deadline: call.deadline, alone })
    }
}

/// A call on the wire, waiting for its answer. Dropping it cancels the call.
pub struct PendingCall {
    conn: Connection,
    id: u64,
    rx: Answer,
    deadline: Option<Instant>,
    alone: bool,
}

impl PendingCall {
    /// Waits for the answer, the deadline, or the connection's end.
    pub async fn answer(self) -> Result<Reply, Error> {
        self.conn.wait(self.id, self.rx, self.deadline, self.alone).await
    }
}

impl Dispatch for Connection {
    fn dispatch(&self, call: Call) -> BoxFuture<Result<Reply, Error>> {
        let pending = self.send_call(call);
        Box::pin(async move { pending?.answer().await })
    }
}

fn bytes_of(s: std::borrow::Cow<'static, str>) -> Bytes {
    match s {
        std::borrow::Cow::Borrowed(s) => Bytes::from_static(s.as_bytes()),
        std::borrow::Cow::Owned(s) => Bytes::from(s),
    }
}

struct CancelOnDrop<'a> {
    inner: &'a Inner,
    id: u64,
}

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        if self.inner.forget(self.id) {
            let _ = self.inner.sender.send(&Frame::Cancel { id: self.id }, false);
        }
    }
}

impl Inner {
    /// Withdraws a pending call; true if it was still pending.
    fn forget(&self, id: u64) -> bool {
        self.pending.lock().unwrap().as_mut().is_some_and(|p| p.remove(&id).is_some())
    }

    fn complete(&self, id: u64, result: Result<Reply, Error>) {
        let (waiter, idle) = match self.pending.lock().unwrap().as_mut() {
            Some(p) => (p.remove(&id), p.is_empty()),
            None => (None, false),
        };
        if let Some(tx) = waiter {
            let _ = tx.send(result);
        }
        if idle {
            self.close_if_drained();
        }
    }

    /// After go-away, the side that called hangs up once its last answer is in: the
    /// draining server then knows no request is still on its way.
    fn close_if_drained(&self) {
        let idle = self.pending.lock().unwrap().as_ref().is_some_and(HashMap::is_empty);
        if idle && *self.state.borrow() == State::Draining {
            self.close(Error::unavailable(format!("{} drained", self.peer)));
        }
    }

    fn close(&self, why: Error) {
        let pending = self.pending.lock().unwrap().take();
        if let Some(pending) = pending {
            tracing::debug!(peer = %self.peer, %why, failed = pending.len(), "connection closed");
            for (_, tx) in pending {
                let _ = tx.send(Err(why.clone()));
            }
        }
        self.state.send_replace(State::Closed);
    }

    /// The reader task: waits for bytes and dispatches the frames they complete.
    async fn read_loop(&self) -> Error {
        loop {
            if let Err(e) = self.read.readable().await {
                return Error::unavailable(format!("connection to {}: {e}", self.peer));
            }
            match self.pump() {
                // Yield either way: a caller woken by the same readiness may be about to
                // take its own answer, and a caller pumping right now should finish first.
                Ok(_) => tokio::task::yield_now().await,
                Err(why) => return why,
            }
        }
    }

    /// Reads whatever the socket holds without waiting and dispatches every complete
    /// frame. Returns `false` without reading if another task is at it.
    fn pump(&self) -> Result<bool, Error> {
        let Ok(mut buf) = self.inbox.try_lock() else { return Ok(false) };
        loop {
            match self.read.try_read_buf(&mut *buf) {
                Ok(0) => return Err(Error::unavailable(format!("connection to {} closed", self.peer))),
                Ok(_) => loop {
                    match Frame::decode(&mut buf, self.max_in) {
                        Ok(Some(frame)) => self.on_frame(frame),
                        Ok(None) => break,
                        Err(e) => return Err(Error::unavailable(format!("{}: {e}", self.peer))),
                    }
                },
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(true),
                Err(e) => return Err(Error::unavailable(format!("connection to {}: {e}", self.peer))),
            }
            if buf.capacity() - buf.len() < 1024 {
                buf.reserve(8 * 1024);
            }
        }
    }

    fn on_frame(&self, frame: Frame) {
        match frame {
            Frame::Response { id, status, payload } => {
                let result = match status {
                    Status::Ok => Ok(Reply::Ok(payload)),
                    Status::AppError => Ok(Reply::AppError(payload)),
                    Status::Failed => Err(serde_json::from_slice(&payload)
                        .unwrap_or_else(|_| Error::protocol(String::from_utf8_lossy(&payload).into_owned()))),
                };
                self.complete(id, result);
            }
            Frame::Pong { id } => self.complete(id, Ok(Reply::Ok(Bytes::new()))),
            Frame::Ping { id } => {
                let _ = self.sender.send(&Frame::Pong { id }, false);
            }
            Frame::GoAway => {
                tracing::debug!(peer = %self.peer, "peer is draining");
                self.state.send_if_modified(|s| {
                    let open = *s == State::Open;
                    if open {
                        *s = State::Draining;
                    }
                    open
                });
                self.close_if_drained();
            }
            Frame::Request { id, .. } => {
                let err = Error::protocol("this side of the connection serves no calls");
                let payload = serde_json::to_vec(&err).unwrap_or_default();
                let _ =
                    self.sender.send(&Frame::Response { id, status: Status::Failed, payload: payload.into() }, false);
            }
            Frame::Cancel { .. } => {}
        }
    }
}
