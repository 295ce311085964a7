//! The calling side of a connection: call ids, the calls waiting for an answer and
//! their deadlines, the frame limit the peer set, and whether the peer is draining.
//!
//! Deadlines need no timer per call: the state keeps them in a heap and tells the
//! shell the earliest one, so one timer per connection serves every call (a timer per
//! call cost more than the rest of the call's bookkeeping together).

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, HashMap},
    hash::{BuildHasherDefault, Hasher},
    time::Instant,
};

use bytes::Bytes;

use super::{
    flow::{item_cost, RecvWindow, SendWindow, Spend, StreamFlow},
    Frame, Negotiated, Status,
};
use crate::{
    call::{Call, Reply},
    error::Error,
};

/// Where a connection is in its life; only ever moves forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ConnState {
    /// Takes new calls.
    Open,
    /// The peer sent go-away: in-flight calls finish, new ones go elsewhere.
    Draining,
    /// Nothing more crosses it.
    Closed,
}

/// What a received frame asks of the shell.
#[derive(Debug)]
pub enum Incoming<W, S> {
    /// Hand this answer to the waiter of the call; the call is over (stop sending its
    /// items, if it has a stream handle).
    Answer(W, Option<S>, Result<Reply, Error>),
    /// The answer is a stream: hand the waiter a reader of `S`'s items.
    Opened(W, S),
    /// An item of the answer's stream, and its cost (give it back with
    /// [`CallerState::consumed`] once read).
    Item(S, Bytes, u32),
    /// Several items of that stream, from one frame (feature `ITEM_RUNS`).
    Run(S, super::ItemRun),
    /// The answer's stream ended: cleanly (`None`) or with an error. The call is over.
    End(S, Option<Result<Reply, Error>>),
    /// The node granted credit: a sender waiting for it may go on.
    Credit(S),
    /// Write this frame back.
    Send(Frame),
    /// The node broke the protocol: close the connection.
    Violation(Error),
    /// Nothing to do.
    Nothing,
}

/// The caller's state of one connection. `W` is whatever the shell wakes a waiting
/// caller with (a oneshot sender, say); `S` the shell's handle of a call's streams
/// (where items go, and who waits for credit).
#[derive(Debug)]
pub struct CallerState<W, S> {
    limits: Negotiated,
    next_id: u64,
    pending: HashMap<u64, Waiting<W, S>, BuildHasherDefault<IdHasher>>,
    /// Deadlines of calls, soonest first; entries of calls already answered are
    /// dropped lazily (and the heap rebuilt once they outnumber the live ones).
    deadlines: BinaryHeap<Reverse<(Instant, u64)>>,
    /// The deadline the shell's timer is set for, if any.
    armed: Option<Instant>,
    state: ConnState,
    /// Calls started so far (a stream's window shrinks while others share the connection).
    started: u64,
    /// Pings among them.
    pings: u64,
    /// Pings waiting for their pong (in `pending` with the calls).
    pings_pending: usize,
    /// Calls in flight with a stream either way (their handle is set).
    streaming: usize,
}

#[derive(Debug)]
struct Waiting<W, S> {
    /// Until the answer (or its stream's opening) arrives.
    waiter: Option<W>,
    /// The shell's handle, for a call with items either way.
    stream: Option<S>,
    deadline: Option<Instant>,
    /// Our items' credit (`send`), the answer's items (`recv`, once its stream opened).
    flow: StreamFlow,
    /// A keepalive ping, not a call.
    ping: bool,
}

impl<W, S> Waiting<W, S> {
    fn new(waiter: W, deadline: Option<Instant>, stream: Option<S>, started: u64) -> Self {
        let mut flow = StreamFlow::new(started);
        flow.send = stream.is_some().then(SendWindow::default);
        Waiting { waiter: Some(waiter), stream, deadline, flow, ping: false }
    }
}

/// Call ids are a counter: they need no hashing beyond spreading their bits.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8 | u64::from(*b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// A call the state took: its id, whether it is the only call in flight, and whether
/// its deadline is now the earliest (the shell's timer must be set sooner).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Registered {
    /// The call's request id.
    pub id: u64,
    /// No other call is in flight.
    pub alone: bool,
    /// Re-arm the timer: ask [`CallerState::next_deadline`].
    pub rearm: bool,
}

impl<W, S> CallerState<W, S> {
    /// The state right after a handshake.
    pub fn new(limits: Negotiated) -> Self {
        CallerState {
            limits,
            next_id: 1,
            pending: HashMap::default(),
            deadlines: BinaryHeap::new(),
            armed: None,
            state: ConnState::Open,
            started: 0,
            pings: 0,
            pings_pending: 0,
            streaming: 0,
        }
    }

    /// What the handshake settled.
    pub fn limits(&self) -> &Negotiated {
        &self.limits
    }

    /// Open, draining or closed.
    pub fn state(&self) -> ConnState {
        self.state
    }

    /// Calls waiting for an answer.
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// Calls waiting for an answer, pings not counted (a connection with none is idle).
    pub fn calls_in_flight(&self) -> usize {
        self.pending.len() - self.pings_pending
    }

    /// Calls started so far, pings not counted (a connection whose count stands still is
    /// not used).
    pub fn calls_started(&self) -> u64 {
        self.started - self.pings
    }

    /// Adds a waiting call that times out at `deadline`; `stream`: the call sends items
    /// (its handle is told of credit and of the call's end).
    pub fn register(&mut self, waiter: W, deadline: Option<Instant>, stream: Option<S>) -> Result<Registered, Error> {
        match self.state {
            ConnState::Open => {}
            ConnState::Draining => return Err(Error::unavailable("the peer is draining")),
            ConnState::Closed => return Err(Error::unavailable(
                "the connection is closed (a Connection does not reconnect: connect again, or call through a Cluster)",
            )),
        }
        let id = self.next_id;
        self.next_id += 1;
        self.started += 1;
        let streams = stream.is_some();
        self.streaming += usize::from(streams);
        self.pending.insert(id, Waiting::new(waiter, deadline, stream, self.started));
        let mut rearm = false;
        if let Some(d) = deadline {
            if self.deadlines.len() > 2 * self.pending.len() + 64 {
                self.deadlines = self.pending.iter().filter_map(|(id, w)| Some(Reverse((w.deadline?, *id)))).collect();
            }
            self.deadlines.push(Reverse((d, id)));
            rearm = self.armed.is_none_or(|armed| d < armed);
        }
        // A call without items is alone when no other such call is in flight: streams
        // beside it do not make its request wait for the writer task, nor its answer for
        // the reader task (it reads the link itself, their items too).
        let alone = if streams { self.pending.len() == 1 } else { self.pending.len() - self.streaming == 1 };
        Ok(Registered { id, alone, rearm })
    }

    /// Deadlines held, answered calls' included (bounded by twice the calls in flight
    /// plus 64).
    pub fn deadlines_held(&self) -> usize {
        self.deadlines.len()
    }

    /// When the shell's timer should fire next (and remembers that it is set for then);
    /// `None`: no call has a deadline.
    pub fn next_deadline(&mut self) -> Option<Instant> {
        while let Some(Reverse((d, id))) = self.deadlines.peek().copied() {
            if self.pending.get(&id).is_some_and(|w| w.deadline == Some(d)) {
                self.armed = Some(d);
                return Some(d);
            }
            self.deadlines.pop();
        }
        self.armed = None;
        None
    }

    /// Withdraws every call whose deadline is at or before `now`: their waiters and
    /// stream handles (to be failed with `timeout`) and the cancel frames to send the peer.
    pub fn expire(&mut self, now: Instant) -> Vec<(Option<W>, Option<S>, Frame)> {
        let mut expired = Vec::new();
        while let Some(Reverse((d, id))) = self.deadlines.peek().copied() {
            if d > now {
                break;
            }
            self.deadlines.pop();
            if self.pending.get(&id).is_some_and(|w| w.deadline == Some(d)) {
                let w = self.take(id).expect("checked above");
                expired.push((w.waiter, w.stream, Frame::Cancel { id }));
            }
        }
        self.armed = None;
        expired
    }

    /// Starts a call: checks it against the limits and returns its id, the frame to send,
    /// and whether it is the only call in flight. An error means nothing was sent, so the
    /// call may go to another replica. (A shell that shares this state between tasks can
    /// build the frame with [`request`] outside its lock and [`register`](Self::register)
    /// under it.)
    pub fn start_call(&mut self, call: Call, now: Instant, waiter: W) -> Result<(u64, Frame, bool), Error> {
        let deadline = call.deadline;
        let mut frame = request(call, now, &self.limits)?;
        let r = self.register(waiter, deadline, None)?;
        frame.set_request_id(r.id);
        Ok((r.id, frame, r.alone))
    }

    /// Starts a ping; its answer is an empty `Reply::Ok`.
    pub fn start_ping(&mut self, waiter: W, deadline: Option<Instant>) -> Result<(Registered, Frame), Error> {
        let r = self.register(waiter, deadline, None)?;
        self.pings += 1;
        if let Some(w) = self.pending.get_mut(&r.id) {
            w.ping = true;
            self.pings_pending += 1;
        }
        Ok((r, Frame::Ping { id: r.id }))
    }

    /// Withdraws a call the caller gave up on; returns the cancel to send if it was still
    /// waiting (and its stream handle: its sending must stop).
    pub fn cancel(&mut self, id: u64) -> Option<(Frame, Option<S>)> {
        self.take(id).map(|w| (Frame::Cancel { id }, w.stream))
    }

    /// Removes call `id`'s entry, counting its stream out.
    fn take(&mut self, id: u64) -> Option<Waiting<W, S>> {
        let w = self.pending.remove(&id)?;
        self.streaming -= usize::from(w.stream.is_some());
        self.pings_pending -= usize::from(w.ping);
        Some(w)
    }

    /// The credit call `id`'s items may still spend (`None`: the call is over). Only its
    /// sender spends it, so it can only grow until [`spent`](Self::spent) is told.
    pub fn credit(&self, id: u64) -> Option<u32> {
        self.pending.get(&id)?.flow.credit()
    }

    /// Call `id`'s sender spent `bytes` of its credit (checked against
    /// [`credit`](Self::credit) first).
    pub fn spent(&mut self, id: u64, bytes: u32) {
        if let Some(w) = self.pending.get_mut(&id) {
            w.flow.spent(bytes);
        }
    }

    /// May an item of `payload` bytes of call `id` go out now?
    pub fn spend(&mut self, id: u64, payload: usize) -> Spend {
        self.pending.get_mut(&id).map_or(Spend::Gone, |w| w.flow.spend(payload))
    }

    /// Our items of call `id` ended (its end frame is sent): no more credit is needed.
    pub fn items_sent(&mut self, id: u64) {
        if let Some(w) = self.pending.get_mut(&id) {
            w.flow.send = None;
        }
    }

    /// The reader took an item of `cost` from call `id`'s answer: the credit frame to
    /// send back, when it is time to.
    pub fn consumed(&mut self, id: u64, cost: u32) -> Option<Frame> {
        let (started, others) = (self.started, self.pending.len() > 1);
        let grant = self.pending.get_mut(&id)?.flow.consumed(cost, started, others)?;
        Some(Frame::Credit { id, bytes: grant })
    }

    /// True once the peer drained and the last answer is in: the caller hangs up, so the
    /// draining node knows no request is still on its way.
    pub fn drained(&self) -> bool {
        self.state == ConnState::Draining && self.pending.is_empty()
    }

    /// Handles one frame from the peer; `make` gives a stream handle when the answer to
    /// a call without one turns out to be a stream.
    pub fn on_frame(&mut self, frame: Frame, make: impl FnOnce() -> S) -> Incoming<W, S>
    where
        S: Clone,
    {
        match frame {
            Frame::Response { id, status: Status::Stream, .. } => {
                let Some(w) = self.pending.get_mut(&id) else { return Incoming::Nothing };
                let Some(waiter) = w.waiter.take() else {
                    return Incoming::Violation(Error::protocol(format!("call {id} was answered twice")));
                };
                if w.stream.is_none() {
                    self.streaming += 1;
                }
                let stream = w.stream.get_or_insert_with(make).clone();
                w.flow.recv = Some(RecvWindow::default());
                Incoming::Opened(waiter, stream)
            }
            Frame::Response { id, status, payload } => {
                let Some(w) = self.take(id) else { return Incoming::Nothing };
                let Some(waiter) = w.waiter else {
                    return Incoming::Violation(Error::protocol(format!("call {id} was answered twice")));
                };
                Incoming::Answer(waiter, w.stream, outcome(status, payload))
            }
            Frame::Item { id, payload } => {
                let Some(w) = self.pending.get_mut(&id) else { return Incoming::Nothing };
                let (Some(window), Some(stream)) = (w.flow.recv.as_mut(), &w.stream) else {
                    return Incoming::Violation(Error::protocol(format!("an item for call {id}, which has no stream")));
                };
                let cost = item_cost(payload.len());
                if let Err(e) = window.received(cost) {
                    return Incoming::Violation(e);
                }
                Incoming::Item(stream.clone(), payload, cost)
            }
            Frame::Items { id, run } => {
                let Some(w) = self.pending.get_mut(&id) else { return Incoming::Nothing };
                let (Some(window), Some(stream)) = (w.flow.recv.as_mut(), &w.stream) else {
                    return Incoming::Violation(Error::protocol(format!("items for call {id}, which has no stream")));
                };
                if let Err(e) = window.received_items(run.cost(), run.largest()) {
                    return Incoming::Violation(e);
                }
                Incoming::Run(stream.clone(), run)
            }
            Frame::End { id, status, payload } => {
                let Some(w) = self.take(id) else { return Incoming::Nothing };
                match (w.flow.recv, w.stream, w.waiter) {
                    (Some(_), Some(stream), _) => {
                        Incoming::End(stream, (status != Status::Ok).then(|| outcome(status, payload)))
                    }
                    // A node that ends a call before its stream's opening reached us (it
                    // failed it meanwhile): the end is the call's answer.
                    (None, stream, Some(waiter)) if status != Status::Ok => {
                        Incoming::Answer(waiter, stream, outcome(status, payload))
                    }
                    _ => Incoming::Violation(Error::protocol(format!("an end for call {id}, which has no stream"))),
                }
            }
            // A sender out of credit says so with a grant of 0 (its items are ours to read).
            Frame::Credit { id, bytes: 0 } => match self.pending.get_mut(&id).and_then(|e| e.flow.blocked()) {
                Some(bytes) => Incoming::Send(Frame::Credit { id, bytes }),
                None => Incoming::Nothing,
            },
            Frame::Credit { id, bytes } => match self.pending.get_mut(&id) {
                Some(Waiting { flow: StreamFlow { send: Some(window), .. }, stream: Some(stream), .. }) => {
                    window.grant(bytes);
                    Incoming::Credit(stream.clone())
                }
                _ => Incoming::Nothing, // credit for items already ended
            },
            Frame::Pong { id } => match self.take(id) {
                Some(Waiting { waiter: Some(waiter), .. }) => {
                    Incoming::Answer(waiter, None, Ok(Reply::Ok(Bytes::new())))
                }
                _ => Incoming::Nothing,
            },
            Frame::Ping { id } => Incoming::Send(Frame::Pong { id }),
            Frame::GoAway => {
                if self.state == ConnState::Open {
                    self.state = ConnState::Draining;
                }
                Incoming::Nothing
            }
            Frame::Request { id, .. } => {
                Incoming::Send(super::response(id, Err(Error::protocol("this side of the connection serves no calls"))))
            }
            Frame::Cancel { .. } => Incoming::Nothing,
        }
    }

    /// Closes the connection: returns every waiter and stream handle, to be failed with
    /// the reason.
    pub fn close(&mut self) -> Vec<(Option<W>, Option<S>)> {
        self.state = ConnState::Closed;
        self.deadlines.clear();
        self.streaming = 0;
        self.pings_pending = 0;
        self.pending.drain().map(|(_, w)| (w.waiter, w.stream)).collect()
    }
}

/// What a response or end frame says: the value, the application error or the failure.
fn outcome(status: Status, payload: Bytes) -> Result<Reply, Error> {
    match status {
        Status::Ok | Status::Stream => Ok(Reply::Ok(payload)),
        Status::AppError => Ok(Reply::AppError(payload)),
        Status::Failed => Err(serde_json::from_slice(&payload)
            .unwrap_or_else(|_| Error::protocol(String::from_utf8_lossy(&payload).into_owned()))),
    }
}

/// The request frame for `call` (id 0 until registered), checked against what the
/// handshake settled: names, deadline, metadata, size. An error means nothing may be sent.
pub fn request(mut call: Call, now: Instant, limits: &Negotiated) -> Result<Frame, Error> {
    // A pinned version travels as metadata, to peers that take it (an older one serves
    // the call, and its own calls are not pinned).
    if let Some(version) = call.version.take() {
        if limits.features.contains(super::Features::METADATA) {
            call.metadata.insert(crate::call::VERSION_METADATA, &*version);
        }
    }
    if call.service.len() > 255 || call.method.len() > 255 {
        return Err(Error::bad_request("service and method names are at most 255 bytes"));
    }
    if call.deadline.is_some_and(|d| d <= now) {
        return Err(Error::Timeout);
    }
    if !call.metadata.is_empty() {
        call.metadata.check()?;
        if !limits.features.contains(super::Features::METADATA) {
            return Err(Error::protocol("the peer does not take call metadata (wire feature METADATA)"));
        }
    }
    let items = call.input.is_some();
    if items && !limits.features.contains(super::Features::STREAMS) {
        return Err(Error::protocol("the peer does not take streams of items (wire feature STREAMS)"));
    }
    // A peer without feature TRACE takes the trace id's low 64 bits, and no parent.
    let (trace_id, parent_span) = if limits.features.contains(super::Features::TRACE) {
        (call.trace_id, call.parent_span)
    } else {
        (u128::from(call.trace_id as u64), 0)
    };
    let frame = Frame::Request {
        id: 0,
        codec: call.codec,
        deadline: call.deadline.map(|d| d - now),
        trace_id,
        parent_span,
        service: bytes_of(call.service),
        method: bytes_of(call.method),
        metadata: call.metadata,
        items,
        payload: call.payload,
    };
    let size = frame.encoded_len() as u64;
    if size > u64::from(limits.max_out) {
        return Err(Error::TooLarge { size, limit: limits.max_out.into() });
    }
    Ok(frame)
}

fn bytes_of(s: std::borrow::Cow<'static, str>) -> Bytes {
    match s {
        std::borrow::Cow::Borrowed(s) => Bytes::from_static(s.as_bytes()),
        std::borrow::Cow::Owned(s) => Bytes::from(s),
    }
}
