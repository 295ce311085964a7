//! Serving one incoming mesh connection: the tokio shell around [`ResponderState`].
//!
//! One task reads frames and runs each call. A handler that finishes when first polled is
//! answered inline (no task, no thread hop), and every answer produced by one read goes
//! out in one write. A slower handler runs as its own task and writes its own answer
//! through the shared sender: straight to the link when it is the only call in flight,
//! else queued for one batched write.

use std::{
    sync::{Arc, Mutex},
    task::Poll,
    time::{Duration, Instant},
};

use bytes::BytesMut;
use tokio::{sync::watch, task::AbortHandle};

use super::{
    guard::{Guard, PortCounters},
    link::{read_some, write_all, Link},
    sender::Sender,
    stopped,
    streams::{pump, ItemSink, Owner, StreamHandle},
};
use crate::{
    admission::Admission,
    call::{Dispatch, Reply},
    call::{Input, Items},
    error::Error,
    proto::{response_within, Expired, Frame, Inbound, NodeHandshake, ResponderState},
    request_log::{LastMethod, RequestLog},
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
}

/// Serves a mesh connection whose first bytes (`inbox`) were already read.
pub(crate) async fn serve_mesh(
    link: Arc<dyn Link>,
    mut inbox: BytesMut,
    dispatch: Arc<dyn Dispatch>,
    limits: MeshLimits,
    guard: Arc<Guard>,
    admission: Admission,
    mut shutdown: watch::Receiver<bool>,
) {
    let peer = link.peer_addr();
    let handshake = NodeHandshake::new(limits.max_frame);
    let mut out = BytesMut::with_capacity(READ_CHUNK);
    let shake = async {
        loop {
            match handshake.receive(&mut inbox, &mut out) {
                Ok(Some(done)) => return Ok(done),
                Ok(None) => {}
                Err(e) => return Err(e),
            }
            match read_some(&*link, &mut inbox).await {
                Ok(0) => return Err(Error::unavailable("closed during the handshake")),
                Ok(_) => {}
                Err(e) => return Err(e.into()),
            }
        }
    };
    let hello = match tokio::time::timeout(limits.handshake_timeout, shake).await {
        Ok(Ok(hello)) => hello,
        Ok(Err(e)) => {
            if !out.is_empty() {
                PortCounters::add(&guard.counters.refused_handshakes);
                tracing::warn!(%peer, error = %e, "mesh handshake refused");
                let _ = tokio::time::timeout(Duration::from_secs(1), write_all(&*link, &out)).await;
                link.shutdown();
            }
            return;
        }
        Err(_) => return, // silent: nothing to answer
    };
    // The caller's name goes in the request logs; an anonymous one by its address.
    let name: Arc<str> =
        if hello.peer_name.is_empty() { peer.to_string().into() } else { format!("{}@{peer}", hello.peer_name).into() };
    // The metrics label: the node's name (shared by its replicas), never an address.
    let label: Arc<str> = if hello.peer_name.is_empty() { "client".into() } else { hello.peer_name.as_str().into() };
    let caller = Caller { name, peer: label, admission, last_method: Mutex::default() };
    let sender = Arc::new(Sender::new(link.clone()));
    if sender.send_encoded(&out, true).is_err() {
        return;
    }
    out.clear();
    let flusher = tokio::spawn({
        let sender = sender.clone();
        async move { sender.flush_loop().await }
    });
    let state = Arc::new(Mutex::new(
        State::new(limits.max_in_flight, limits.idle_timeout, Instant::now()).with_frame_timeout(limits.frame_timeout),
    ));
    let answers = Answers { max_out: hello.max_out, max_queued: limits.max_queued, counters: guard.counters.clone() };
    let served = Arc::new(Served {
        state: state.clone(),
        sender: sender.clone(),
        max_queued: limits.max_queued,
        max_out: hello.max_out,
    });
    // Open streams end with `unavailable` shortly before the drain's time is up, so their
    // callers hear why rather than see the connection drop.
    let mut drain_deadline: Option<Instant> = None;

    let max_in = hello.max_in;
    // Mirrors the state's drain flag, read every turn without the lock.
    let mut draining = false;
    // This connection's share of the node's partial-frame budget.
    let mut held = 0;
    let mut heard = None;
    // One timer for the idle and slow-frame deadlines, moved only when a deadline comes
    // sooner than the one it is set for; when it fires at a deadline that activity has
    // since pushed back, it is set again (a new timer each turn cost a timer-wheel
    // insert and removal per call).
    let timer = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(timer);
    let mut armed: Option<Instant> = None;

    let why: Option<Error> = 'conn: loop {
        // Requests already read wait while a turn's share of answers is pending: a caller
        // whose cheap requests ask for large answers gets a turn, not the worker thread.
        // Nor are more answered than its queue has room for (at most one answer past it).
        let room = limits.max_queued.saturating_sub(sender.queued());
        let mut backlog = false;
        loop {
            if out.len() >= FAIR_SHARE.min(room) {
                backlog = true;
                break;
            }
            match Frame::decode(&mut inbox, max_in) {
                Ok(Some(frame)) => {
                    // Each frame spends from the task's cooperative budget, so a long
                    // pipeline of cheap requests yields to other tasks too.
                    tokio::task::consume_budget().await;
                    let now = Instant::now();
                    let charged = || StreamHandle::charged_to(Some(guard.items.clone()));
                    let inbound = state.lock().unwrap().on_frame(frame, now, charged);
                    if let Some(answer) = on_inbound(inbound, now, &caller, &*dispatch, &served, &answers).await {
                        answer.encode(&mut out);
                    }
                }
                Ok(None) => break,
                Err(e) => break 'conn Some(e),
            }
        }
        if !out.is_empty() {
            if sender.send_encoded(&out, true).is_err() {
                break Some(Error::unavailable(format!("connection to {peer} broke")));
            }
            out.clear();
        }
        // Backpressure: while the caller leaves answers unread, read none of its requests
        // (TCP then slows it down); one that stays stuck is closed. Meanwhile it holds its
        // queue and nothing more: the buffer answers were encoded in is given back.
        if sender.queued() >= limits.max_queued {
            if out.capacity() > READ_CHUNK {
                out = BytesMut::new();
            }
            let room = sender.room(limits.max_queued / 2);
            if tokio::time::timeout(limits.stuck_timeout, room).await.is_err() {
                PortCounters::add(&guard.counters.stuck_closed);
                break Some(Error::unavailable(format!(
                    "the caller left {} bytes of answers unread for {:?}",
                    sender.queued(),
                    limits.stuck_timeout
                )));
            }
        }
        if backlog {
            tokio::task::yield_now().await; // the node's other connections, then the rest
            continue;
        }
        // Bytes left after every whole frame was taken belong to one frame not yet whole.
        // (The budget is shared by every connection: touched only when this share moves.)
        if held != inbox.len() && !guard.budget.update(held, inbox.len()) {
            PortCounters::add(&guard.counters.shed_partial_frames);
            break Some(Error::Overloaded {
                message: format!("the node's budget for partial frames is spent ({} bytes held here)", inbox.len()),
            });
        }
        held = inbox.len();
        if inbox.is_empty() && inbox.capacity() > KEEP_BUFFER {
            inbox = BytesMut::new(); // give back what a large frame took
        }
        super::link::room_for_read(&mut inbox);
        let deadline = {
            let now = Instant::now();
            let mut state = state.lock().unwrap();
            if let Some(at) = heard.take() {
                state.heard(at);
            }
            state.partial(now, inbox.len());
            match (state.deadline(), drain_deadline) {
                (Some((at, why)), Some(drain)) if at < drain => Some((at, Some(why))),
                (_, Some(drain)) => Some((drain, None)),
                (deadline, None) => deadline.map(|(at, why)| (at, Some(why))),
            }
        };
        if let Some((at, _)) = deadline {
            if armed.is_none_or(|armed| at < armed) {
                timer.as_mut().reset(at.into());
                armed = Some(at);
            }
        }
        tokio::select! {
            read = link.read_buf(&mut inbox) => match read {
                Ok(0) => break None,
                Ok(_) => heard = Some(Instant::now()),
                Err(e) => break Some(e.into()),
            },
            _ = stopped(&mut shutdown), if !draining => {
                if let Some(go_away) = state.lock().unwrap().go_away() {
                    go_away.encode(&mut out);
                }
                draining = true;
                drain_deadline = Some(Instant::now() + limits.drain_timeout.mul_f64(0.9));
            }
            _ = &mut timer, if armed.is_some() => {
                armed = None;
                match deadline {
                    Some((at, None)) if at <= Instant::now() => {
                        let why = Error::unavailable("the node drained: its streams ran past the drain timeout");
                        let (tasks, ends) = state.lock().unwrap().end_streams(&why);
                        for task in tasks {
                            task.abort();
                        }
                        for end in ends {
                            end.encode(&mut out);
                        }
                        let _ = sender.send_encoded(&out, false);
                        out.clear();
                        drain_deadline = None;
                    }
                    Some((at, Some(expired))) if at <= Instant::now() => {
                        PortCounters::add(match expired {
                            Expired::Idle(_) => &guard.counters.idle_closed,
                            Expired::SlowFrame(_) => &guard.counters.slow_frames,
                        });
                        break Some(Error::unavailable(expired.to_string()));
                    }
                    _ => {} // pushed back by activity: set again next turn
                }
            }
        }
    };
    guard.budget.update(held, 0);
    match why {
        // An idle caller is closed quietly; one that broke the protocol is worth a warning.
        Some(e @ Error::Unavailable { .. }) => tracing::debug!(%peer, error = %e, "closing mesh connection"),
        Some(e) => tracing::warn!(%peer, error = %e, "closing mesh connection"),
        // The caller hung up: after go-away that is the end of a clean drain.
        None if draining => tracing::debug!(%peer, "drained mesh connection"),
        None => {}
    }
    for task in state.lock().unwrap().close() {
        task.abort();
    }
    // Let queued answers out before closing our side (a peer that reads nothing gets 1 s).
    let _ = tokio::time::timeout(Duration::from_secs(1), sender.flushed()).await;
    flusher.abort();
    sender.shutdown();
}

/// Who is calling: a name for the request logs, the identity and policy for each call.
struct Caller {
    name: Arc<str>,
    /// Its name as a metrics label.
    peer: Arc<str>,
    admission: Admission,
    /// The request-log slot of the method this caller called last.
    last_method: Mutex<LastMethod>,
}

/// How answers go back to one caller.
struct Answers {
    /// The largest frame the caller accepts.
    max_out: u32,
    max_queued: usize,
    counters: Arc<PortCounters>,
}

impl Answers {
    fn frame(&self, id: u64, result: Result<Reply, Error>) -> Frame {
        let (frame, refused) = response_within(id, result, self.max_out);
        if refused {
            PortCounters::add(&self.counters.oversized_answers);
        }
        frame
    }
}

/// One served connection, as its streams see it: where credit is kept and frames go.
struct Served {
    state: Arc<Mutex<State>>,
    sender: Arc<Sender>,
    max_queued: usize,
    /// The largest frame the caller accepts.
    max_out: u32,
}

impl Owner for Served {
    fn consumed(&self, id: u64, cost: u32) {
        let credit = self.state.lock().unwrap().consumed(id, cost);
        if let Some(frame) = credit {
            let _ = self.sender.send(&frame, false);
        }
    }

    /// A handler that drops the caller's items early needs no word to the caller: the
    /// call's answer ends its sending.
    fn abandoned(&self, _id: u64) {}
}

impl ItemSink for Served {
    fn max_frame(&self) -> u32 {
        self.max_out
    }

    fn credit(&self, id: u64) -> Option<u32> {
        self.state.lock().unwrap().credit(id)
    }

    fn spent(&self, id: u64, bytes: u32) {
        self.state.lock().unwrap().spent(id, bytes);
    }

    async fn send_bulk(&self, group: Vec<bytes::Bytes>) -> Result<(), Error> {
        // Items wait like answers: a caller that reads nothing holds at most its queue.
        self.sender.room(self.max_queued).await;
        self.sender.send_bulk(group).map_err(|_| Error::unavailable("the caller's connection broke"))
    }

    fn items_sent(&self, id: u64) {
        self.state.lock().unwrap().finished(id);
    }

    fn blocked(&self, id: u64) {
        let _ = self.sender.send(&Frame::Credit { id, bytes: 0 }, false);
    }
}

impl Served {
    /// Answers call `id` with a stream: the opening response, then its items as the
    /// caller grants credit. Runs in the call's task (the caller's cancel stops it).
    async fn stream(self: Arc<Self>, id: u64, items: Items, inline: bool) {
        let handle = self.state.lock().unwrap().answer_stream(id, StreamHandle::new(), inline);
        let Some(handle) = handle else { return }; // cancelled meanwhile
                                                   // The opening goes in the bulk lane too, ahead of the items.
        let mut opening = BytesMut::new();
        Frame::Response { id, status: crate::proto::Status::Stream, payload: bytes::Bytes::new() }.encode(&mut opening);
        if self.send_bulk(vec![opening.freeze()]).await.is_err() {
            return;
        }
        pump(self, handle, id, items).await;
    }
}

/// Acts on one decoded frame; returns the frame to answer with now, if any.
async fn on_inbound(
    inbound: Inbound<AbortHandle, Arc<StreamHandle>>,
    now: Instant,
    caller: &Caller,
    dispatch: &dyn Dispatch,
    served: &Arc<Served>,
    answers: &Answers,
) -> Option<Frame> {
    let (sender, state) = (&served.sender, &served.state);
    match inbound {
        Inbound::Call { id, mut call, items } => {
            let with_items = items.is_some();
            if let Some(items) = items {
                call.input = Some(Input::new(items.reader(id, served.clone()).into_items()));
            }
            let finish = |answer: Frame| {
                if with_items {
                    state.lock().unwrap().finished(id);
                }
                Some(answer)
            };
            if let Err(denied) = caller.admission.admit(&mut call) {
                return finish(answers.frame(id, Err(denied)));
            }
            let log = RequestLog::begin(
                Some(&mut caller.last_method.lock().unwrap()),
                &call,
                &caller.peer,
                &caller.name,
                now,
                dispatch,
            );
            let mut answer = dispatch.dispatch(call);
            // Poll once here: a handler that is ready at once costs no task and no wake-up.
            let first = std::future::poll_fn(|cx| Poll::Ready(answer.as_mut().poll(cx))).await;
            if let Poll::Ready(result) = first {
                // A stream takes the log along: the call ends when the stream does.
                let result = log.finish(result);
                let Ok(Reply::Stream(items)) = result else { return finish(answers.frame(id, result)) };
                // Recorded under the lock before the task can run: a short stream that ends
                // at once must find its entry to remove.
                let mut running = state.lock().unwrap();
                let task = tokio::spawn(served.clone().stream(id, items, true));
                running.started(id, task.abort_handle());
                return None;
            }
            let sender = sender.clone();
            let done = state.clone();
            let served = served.clone();
            let (max_out, max_queued, counters) = (answers.max_out, answers.max_queued, answers.counters.clone());
            let log = log.until_done();
            // Hold the lock across spawn so the task cannot finish before it is recorded.
            let mut running = state.lock().unwrap();
            let task = tokio::spawn(async move {
                let result = log.finish(answer.await);
                if let Ok(Reply::Stream(items)) = result {
                    return served.stream(id, items, false).await;
                }
                let frame = Answers { max_out, max_queued, counters }.frame(id, result);
                // An answer waits for room like the connection's own: a caller that
                // reads nothing holds at most its queue and its running calls' answers.
                sender.room(max_queued).await;
                // Write it ourselves when it is the only call in flight: no hop back to
                // the connection task.
                let alone = done.lock().unwrap().in_flight() <= 1;
                let _ = sender.send(&frame, alone);
                done.lock().unwrap().finished(id);
            });
            running.started(id, task.abort_handle());
            None
        }
        Inbound::Send(frame) => Some(frame),
        Inbound::Item(stream, id, payload, cost) => {
            if stream.item(payload, cost) {
                return None;
            }
            PortCounters::add(&answers.counters.shed_stream_items);
            let why = Error::Overloaded { message: "the node's budget for unread stream items is spent".into() };
            let refused = state.lock().unwrap().refuse(id, why)?;
            Box::pin(on_inbound(refused, now, caller, dispatch, served, answers)).await
        }
        Inbound::ItemsEnd(stream, outcome) => {
            stream.end(outcome);
            None
        }
        Inbound::Credit(stream) => {
            stream.credit();
            None
        }
        Inbound::Abort(task, stream, end) => {
            if let Some(task) = task {
                task.abort();
            }
            if let Some(stream) = stream {
                stream.fail(Error::Cancelled);
            }
            end
        }
        Inbound::Nothing => None,
    }
}
