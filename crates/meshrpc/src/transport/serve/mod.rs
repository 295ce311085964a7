//! Serving one incoming mesh connection: the tokio shell around [`ResponderState`].
//!
//! One task reads frames and runs each call (`calls.rs`). A handler that finishes when
//! first polled is answered inline (no task, no thread hop), and every answer produced by
//! one read goes out in one write. A slower handler runs as its own task and writes its
//! own answer through the shared sender: straight to the link when it is the only call in
//! flight, else queued for one batched write.
//!
//! The task is a [`Driver`], in the manner of hyper's `proto/h1/dispatch.rs`: its loop is
//! a sequence of turns, and each concern of a turn has one method — answering what was
//! read (with fairness), writing, backpressure (and the stuck timeout), the partial-frame
//! budget, the one timer (idle, slow frame, the drain's end for streams), waiting, drain
//! and teardown.

mod calls;

use std::{
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::BytesMut;
use tokio::{
    sync::watch,
    task::{AbortHandle, JoinHandle},
    time::Sleep,
};

use self::calls::{on_inbound, Answers, Caller, Served};
use super::{
    guard::{Guard, PortCounters},
    link::{read_some, room_for_read, write_all, Link},
    sender::Sender,
    stopped,
    streams::StreamHandle,
};
use crate::{
    admission::Admission,
    call::Dispatch,
    error::Error,
    proto::{Expired, Frame, Negotiated, NodeHandshake, ResponderState},
};

type State = ResponderState<AbortHandle, Arc<StreamHandle>>;

/// Bytes a read makes room for.
const READ_CHUNK: usize = 8 * 1024;
/// Bytes of answers one connection produces before it lets other tasks run.
const FAIR_SHARE: usize = 64 * 1024;
/// An emptied buffer larger than this is given back rather than kept.
const KEEP_BUFFER: usize = 1024 * 1024;

/// Limits of one served mesh connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MeshLimits {
    pub(crate) max_frame: u32,
    pub(crate) max_in_flight: usize,
    pub(crate) handshake_timeout: Duration,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) frame_timeout: Duration,
    /// Answers queued for a caller beyond this stop the reading of its requests.
    pub(crate) max_queued: usize,
    /// How long a caller may leave its answers unread before it is closed.
    pub(crate) stuck_timeout: Duration,
    /// How long a drain lets open streams run before ending them with `unavailable`.
    pub(crate) drain_timeout: Duration,
    /// Compress large answers to callers that take zstd.
    pub(crate) compress: bool,
}

/// Serves a mesh connection whose first bytes (`inbox`) were already read.
pub(crate) async fn serve_mesh(
    link: Arc<dyn Link>,
    inbox: BytesMut,
    dispatch: Arc<dyn Dispatch>,
    limits: MeshLimits,
    guard: Arc<Guard>,
    admission: Admission,
    shutdown: watch::Receiver<bool>,
) {
    if let Some(driver) = Driver::start(link, inbox, dispatch, limits, guard, admission, shutdown).await {
        driver.run().await;
    }
}

/// Why serving a connection stops.
enum Stop {
    /// The caller hung up.
    HungUp,
    /// The node closes it: the caller broke a rule or a bound, a timer ran out, the
    /// socket failed.
    Close(Error),
}

impl From<Error> for Stop {
    fn from(e: Error) -> Stop {
        Stop::Close(e)
    }
}

/// What the connection's one timer is set for.
#[derive(Debug, Clone, Copy)]
enum Due {
    /// The state's deadline: the caller idle, or a frame slow to arrive.
    Expiry(Expired),
    /// The send queue, stream items included, has been full without a write this long.
    Stalled,
    /// The drain's time for open streams is up.
    StreamsEnd,
}

/// One served mesh connection: what its turns share.
struct Driver {
    /// This node compresses large answers (told to, and the caller takes zstd).
    compress: bool,
    /// Both sides offered zstd: the caller's requests may come compressed.
    takes_zstd: bool,
    link: Arc<dyn Link>,
    peer: SocketAddr,
    limits: MeshLimits,
    guard: Arc<Guard>,
    dispatch: Arc<dyn Dispatch>,
    caller: Caller,
    answers: Answers,
    /// The state and sender, as calls and streams see them.
    served: Arc<Served>,
    state: Arc<Mutex<State>>,
    sender: Arc<Sender>,
    /// The writer task: flushes what the fast path could not write.
    flusher: JoinHandle<()>,
    /// The largest frame the caller may send.
    max_in: u32,
    /// Bytes read and not yet decoded.
    inbox: BytesMut,
    /// This turn's answers, encoded for one write.
    out: BytesMut,
    /// When the latest read happened, told to the state on the next quiet turn.
    heard: Option<Instant>,
    /// This connection's share of the node's partial-frame budget.
    held: usize,
    /// Since when the send queue (stream items included) has been full, and the writes
    /// done then: a caller that reads nothing while its streams fill the queue is closed
    /// after the stuck timeout, though its requests are still read.
    stalled: Option<(Instant, u64)>,
    shutdown: watch::Receiver<bool>,
    /// Mirrors the state's drain flag, read every turn without the lock.
    draining: bool,
    /// When open streams are ended with `unavailable`: shortly before the drain's time is
    /// up, so their callers hear why rather than see the connection drop.
    drain_deadline: Option<Instant>,
    /// One timer for every deadline, moved only when a deadline comes sooner than the one
    /// it is set for (`armed`); when it fires at a deadline that activity has since pushed
    /// back, it is set again (a new timer each turn cost a timer-wheel insert and removal
    /// per call).
    timer: Pin<Box<Sleep>>,
    armed: Option<Instant>,
}

impl Driver {
    /// Shakes hands, names the caller and starts the writer task: the connection's
    /// driver, or `None` when the connection ended there.
    async fn start(
        link: Arc<dyn Link>,
        mut inbox: BytesMut,
        dispatch: Arc<dyn Dispatch>,
        limits: MeshLimits,
        guard: Arc<Guard>,
        admission: Admission,
        shutdown: watch::Receiver<bool>,
    ) -> Option<Driver> {
        let peer = link.peer_addr();
        let mut out = BytesMut::with_capacity(READ_CHUNK);
        let hello = shake(&*link, &mut inbox, &mut out, &limits, &guard).await?;
        let caller = Caller::new(&hello, peer, admission);
        let compress = limits.compress && hello.features.contains(crate::proto::Features::ZSTD);
        let sender = Arc::new(Sender::new(link.clone(), limits.max_queued).compressing(compress));
        if sender.send_encoded(&out, true).is_err() {
            return None;
        }
        out.clear();
        let flusher = tokio::spawn({
            let sender = sender.clone();
            async move { sender.flush_loop().await }
        });
        let state = Arc::new(Mutex::new(
            State::new(limits.max_in_flight, limits.idle_timeout, crate::clock::now())
                .with_frame_timeout(limits.frame_timeout),
        ));
        let answers =
            Answers { max_out: hello.max_out, max_queued: limits.max_queued, counters: guard.counters.clone() };
        let served = Arc::new(Served {
            state: state.clone(),
            sender: sender.clone(),
            max_queued: limits.max_queued,
            max_out: hello.max_out,
            item_runs: hello.features.contains(crate::proto::Features::ITEM_RUNS),
        });
        Some(Driver {
            link,
            peer,
            limits,
            guard,
            dispatch,
            caller,
            answers,
            served,
            state,
            sender,
            flusher,
            max_in: hello.max_in,
            compress,
            takes_zstd: hello.features.contains(crate::proto::Features::ZSTD),
            inbox,
            out,
            heard: None,
            held: 0,
            stalled: None,
            shutdown,
            draining: false,
            drain_deadline: None,
            timer: Box::pin(tokio::time::sleep(Duration::ZERO)),
            armed: None,
        })
    }

    /// Serves the connection turn by turn until it stops, then tears it down.
    async fn run(mut self) {
        let why = loop {
            if let Err(why) = self.turn().await {
                break why;
            }
        };
        self.close(why).await;
    }

    /// One turn: answer a fair share of what was read and write it, hold back while the
    /// caller reads nothing; then, unless read frames are still waiting, charge what is
    /// left of a frame, set the timer and wait for bytes, the shutdown or the timer.
    async fn turn(&mut self) -> Result<(), Stop> {
        let backlog = self.answer_read().await?;
        self.write_answers()?;
        self.hold_back().await?;
        self.watch_stall()?;
        if backlog {
            tokio::task::yield_now().await; // the node's other connections, then the rest
            return Ok(());
        }
        self.charge_partial()?;
        let deadline = self.set_timer();
        self.wait(deadline).await
    }

    /// Answers the whole frames read so far, until a turn's share of answers is encoded:
    /// `true` when frames are left for the next turn. Requests already read wait while a
    /// turn's share of answers is pending: a caller whose cheap requests ask for large
    /// answers gets a turn, not the worker thread. Nor are more answered than its queue
    /// has room for (at most one answer past it).
    async fn answer_read(&mut self) -> Result<bool, Stop> {
        // Answers only: a stream's items in the bulk lane (bounded by its credit and its
        // own wait for room) must not keep the requests beside it from being answered.
        let room = self.limits.max_queued.saturating_sub(self.sender.answers_queued());
        loop {
            if self.out.len() >= FAIR_SHARE.min(room) {
                return Ok(true);
            }
            let Some(frame) = Frame::decode_with(&mut self.inbox, self.max_in, self.takes_zstd)? else {
                return Ok(false);
            };
            // Each frame spends from the task's cooperative budget, so a long pipeline of
            // cheap requests yields to other tasks too.
            tokio::task::consume_budget().await;
            let now = crate::clock::now();
            let charged = || StreamHandle::charged_to(Some(self.guard.items.clone()));
            let inbound = self.state.lock().unwrap().on_frame(frame, now, charged);
            let answer = on_inbound(inbound, now, &self.caller, &*self.dispatch, &self.served, &self.answers).await;
            if let Some(answer) = answer {
                answer.encode_with(&mut self.out, self.compress);
            }
        }
    }

    /// Writes the turn's answers in one go.
    fn write_answers(&mut self) -> Result<(), Stop> {
        if !self.out.is_empty() {
            if self.sender.send_encoded(&self.out, true).is_err() {
                return Err(Stop::Close(Error::unavailable(format!("connection to {} broke", self.peer))));
            }
            self.out.clear();
        }
        Ok(())
    }

    /// Backpressure: while the caller leaves answers unread, read none of its requests
    /// (TCP then slows it down); one that stays stuck is closed. Meanwhile it holds its
    /// queue and nothing more: the buffer answers were encoded in is given back.
    async fn hold_back(&mut self) -> Result<(), Stop> {
        if self.sender.answers_queued() < self.limits.max_queued {
            return Ok(());
        }
        if self.out.capacity() > READ_CHUNK {
            self.out = BytesMut::new();
        }
        let room = self.sender.answers_room(self.limits.max_queued / 2);
        if tokio::time::timeout(self.limits.stuck_timeout, room).await.is_err() {
            PortCounters::add(&self.guard.counters.stuck_closed);
            return Err(Stop::Close(Error::unavailable(format!(
                "the caller left {} bytes of answers unread for {:?}",
                self.sender.answers_queued(),
                self.limits.stuck_timeout
            ))));
        }
        Ok(())
    }

    /// Stream items count for the stuck timeout though not for holding requests back: a
    /// queue that stays full with no write for that long closes the connection.
    fn watch_stall(&mut self) -> Result<(), Stop> {
        if self.sender.queued() < self.limits.max_queued {
            if self.stalled.take().is_some() {
                self.sender.watching(false);
            }
            return Ok(());
        }
        self.sender.watching(true);
        let (now, writes) = (crate::clock::now(), self.sender.writes());
        match self.stalled {
            Some((since, seen)) if seen == writes => {
                if now.saturating_duration_since(since) >= self.limits.stuck_timeout {
                    PortCounters::add(&self.guard.counters.stuck_closed);
                    return Err(Stop::Close(Error::unavailable(format!(
                        "the caller left {} bytes of answers and stream items unread for {:?}",
                        self.sender.queued(),
                        self.limits.stuck_timeout
                    ))));
                }
            }
            _ => self.stalled = Some((now, writes)),
        }
        Ok(())
    }

    /// Bytes left after every whole frame was taken belong to one frame not yet whole:
    /// they are charged to the node's partial-frame budget (shared by every connection:
    /// touched only when this share moves).
    fn charge_partial(&mut self) -> Result<(), Stop> {
        if self.held != self.inbox.len() && !self.guard.budget.update(self.held, self.inbox.len()) {
            PortCounters::add(&self.guard.counters.shed_partial_frames);
            return Err(Stop::Close(Error::Overloaded {
                message: format!(
                    "the node's budget for partial frames is spent ({} bytes held here)",
                    self.inbox.len()
                ),
            }));
        }
        self.held = self.inbox.len();
        Ok(())
    }

    /// Tells the state what arrived and what is held, and sets the timer for the soonest
    /// deadline: the state's (idle, slow frame) or the drain's end for open streams.
    fn set_timer(&mut self) -> Option<(Instant, Due)> {
        let deadline = {
            let now = crate::clock::now();
            let mut state = self.state.lock().unwrap();
            if let Some(at) = self.heard.take() {
                state.heard(at);
            }
            state.partial(now, self.inbox.len());
            match (state.deadline(), self.drain_deadline) {
                (Some((at, why)), Some(drain)) if at < drain => Some((at, Due::Expiry(why))),
                (_, Some(drain)) => Some((drain, Due::StreamsEnd)),
                (deadline, None) => deadline.map(|(at, why)| (at, Due::Expiry(why))),
            }
        };
        // A full send queue's stuck timeout, if it comes first.
        let stall = self.stalled.map(|(since, _)| (since + self.limits.stuck_timeout, Due::Stalled));
        let deadline = match (deadline, stall) {
            (Some(due), Some(stall)) if stall.0 < due.0 => Some(stall),
            (None, stall) => stall,
            (due, _) => due,
        };
        if let Some((at, _)) = deadline {
            if self.armed.is_none_or(|armed| at < armed) {
                self.timer.as_mut().reset(at.into());
                self.armed = Some(at);
            }
        }
        deadline
    }

    /// Waits for the next bytes, the shutdown or the timer (set for `deadline`).
    async fn wait(&mut self, deadline: Option<(Instant, Due)>) -> Result<(), Stop> {
        if self.inbox.is_empty() && self.inbox.capacity() > KEEP_BUFFER {
            self.inbox = BytesMut::new(); // give back what a large frame took
        }
        room_for_read(&mut self.inbox);
        tokio::select! {
            read = self.link.read_buf(&mut self.inbox) => match read {
                Ok(0) => return Err(Stop::HungUp),
                Ok(_) => self.heard = Some(crate::clock::now()),
                Err(e) => return Err(Stop::Close(e.into())),
            },
            _ = stopped(&mut self.shutdown), if !self.draining => self.start_drain(),
            // A queue filled by a stream or a call's task between turns: watch it.
            _ = self.sender.filled() => {}
            _ = &mut self.timer, if self.armed.is_some() => {
                self.armed = None;
                match deadline {
                    Some((at, Due::StreamsEnd)) if at <= crate::clock::now() => self.end_streams(),
                    Some((at, Due::Expiry(expired))) if at <= crate::clock::now() => return Err(self.expire(expired)),
                    _ => {} // pushed back by activity: set again next turn
                }
            }
        }
        Ok(())
    }

    /// The node drains: the caller is told (go-away, written next turn), and open streams
    /// get most of the drain's time before they are ended.
    fn start_drain(&mut self) {
        if let Some(go_away) = self.state.lock().unwrap().go_away() {
            go_away.encode(&mut self.out);
        }
        self.draining = true;
        self.drain_deadline = Some(crate::clock::now() + self.limits.drain_timeout.mul_f64(0.9));
    }

    /// The drain's time for open streams is up: each ends with `unavailable`.
    fn end_streams(&mut self) {
        let why = Error::unavailable("the node drained: its streams ran past the drain timeout");
        let (tasks, ends) = self.state.lock().unwrap().end_streams(&why);
        for task in tasks {
            task.abort();
        }
        for end in ends {
            end.encode(&mut self.out);
        }
        let _ = self.sender.send_encoded(&self.out, false);
        self.out.clear();
        self.drain_deadline = None;
    }

    /// The caller was idle too long, or a frame took too long to arrive: counted, closed.
    fn expire(&self, expired: Expired) -> Stop {
        PortCounters::add(match expired {
            Expired::Idle(_) => &self.guard.counters.idle_closed,
            Expired::SlowFrame(_) => &self.guard.counters.slow_frames,
        });
        Stop::Close(Error::unavailable(expired.to_string()))
    }

    /// Teardown: why logged, running calls stopped, queued answers let out (a peer that
    /// reads nothing gets 1 s); then `Drop` closes our side.
    async fn close(self, why: Stop) {
        let peer = self.peer;
        match why {
            // An idle caller is closed quietly; one that broke the protocol is worth a warning.
            Stop::Close(e @ Error::Unavailable { .. }) => tracing::debug!(%peer, error = %e, "closing mesh connection"),
            Stop::Close(e) => tracing::warn!(%peer, error = %e, "closing mesh connection"),
            // The caller hung up: after go-away that is the end of a clean drain.
            Stop::HungUp if self.draining => tracing::debug!(%peer, "drained mesh connection"),
            Stop::HungUp => {}
        }
        for task in self.state.lock().unwrap().close() {
            task.abort();
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), self.sender.flushed()).await;
    }
}

/// However the connection ends — also when its task is aborted mid-turn (a drain past its
/// time) — its running calls and writer task are stopped, its share of the partial-frame
/// budget given back and our side closed: nothing keeps the socket or the budget.
impl Drop for Driver {
    fn drop(&mut self) {
        self.guard.budget.update(self.held, 0);
        self.held = 0;
        if let Ok(mut state) = self.state.lock() {
            for task in state.close() {
                task.abort();
            }
        }
        self.flusher.abort();
        self.sender.shutdown();
    }
}

/// The handshake: reads the caller's hello (within the handshake timeout) and writes the
/// answer in `out`. A caller refused is told why, once (1 s to read it); one that says
/// nothing in time is dropped silently.
async fn shake(
    link: &dyn Link,
    inbox: &mut BytesMut,
    out: &mut BytesMut,
    limits: &MeshLimits,
    guard: &Guard,
) -> Option<Negotiated> {
    let handshake = NodeHandshake::new(limits.max_frame);
    let shake = async {
        loop {
            if let Some(done) = handshake.receive(inbox, out)? {
                return Ok(done);
            }
            match read_some(link, inbox).await {
                Ok(0) => return Err(Error::unavailable("closed during the handshake")),
                Ok(_) => {}
                Err(e) => return Err(e.into()),
            }
        }
    };
    match tokio::time::timeout(limits.handshake_timeout, shake).await {
        Ok(Ok(hello)) => Some(hello),
        Ok(Err(e)) => {
            if !out.is_empty() {
                PortCounters::add(&guard.counters.refused_handshakes);
                tracing::warn!(peer = %link.peer_addr(), error = %e, "mesh handshake refused");
                let _ = tokio::time::timeout(Duration::from_secs(1), write_all(link, out)).await;
                link.shutdown();
            }
            None
        }
        Err(_) => None, // silent: nothing to answer
    }
}
