//! The serving side of a connection: which calls run, how many may, whether the node
//! drains, and when a silent caller has been idle too long.

use std::{
    borrow::Cow,
    collections::HashMap,
    time::{Duration, Instant},
};

use bytes::Bytes;

use super::{
    flow::{item_cost, RecvWindow, SendWindow, Spend, StreamFlow},
    Frame, Status,
};
use crate::{
    call::{Call, Reply},
    error::Error,
};

/// What a received frame asks of the shell.
#[derive(Debug)]
pub enum Inbound<H, S> {
    /// Run this call and answer request `id` with [`response`].
    Call {
        /// The request id to answer.
        id: u64,
        /// The call, its deadline made absolute.
        call: Call,
        /// The caller sends items: the handle they arrive at (the call then stays
        /// registered until [`ResponderState::finished`]).
        items: Option<S>,
    },
    /// An item of call `id`'s stream from the caller, and its cost (give it back with
    /// [`ResponderState::consumed`] once read).
    Item(S, u64, Bytes, u32),
    /// Several items of that stream, from one frame (feature `ITEM_RUNS`).
    Run(S, u64, super::ItemRun),
    /// The caller's items ended: cleanly (`None`) or with its error.
    ItemsEnd(S, Option<Result<Reply, Error>>),
    /// The caller granted credit: a sender waiting for it may go on.
    Credit(S),
    /// Write this frame back (a pong, or a call refused before it ran).
    Send(Frame),
    /// Stop a running call's handler (the caller cancelled it, or broke its stream's
    /// flow control: then send the frame that ends the call).
    Abort(Option<H>, Option<S>, Option<Frame>),
    /// Nothing to do.
    Nothing,
}

/// The node's state of one connection. `H` is whatever the shell stops a running
/// handler with (an abort handle, say); `S` the shell's handle of a call's streams.
#[derive(Debug)]
pub struct ResponderState<H, S> {
    running: HashMap<u64, Running<H, S>>,
    max_in_flight: usize,
    draining: bool,
    idle_timeout: Option<Duration>,
    last_heard: Instant,
    frame_timeout: Option<Duration>,
    /// When the frame that is not yet whole began to arrive.
    partial_since: Option<Instant>,
    /// Calls started so far (a stream's window shrinks while others share the connection).
    started: u64,
}

/// A call that did not finish at once, or that has streams.
#[derive(Debug)]
struct Running<H, S> {
    handle: Option<H>,
    stream: Option<S>,
    /// The caller's items (`recv`, until they ended), the answer's (`send`, once its
    /// stream opened).
    flow: StreamFlow,
}

impl<H, S> Running<H, S> {
    fn new(started: u64) -> Self {
        Running { handle: None, stream: None, flow: StreamFlow::new(started) }
    }
}

/// Why a connection's deadline passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expired {
    /// Nothing arrived for this long while no call ran.
    Idle(Duration),
    /// A frame began and was not whole within this long.
    SlowFrame(Duration),
}

impl std::fmt::Display for Expired {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Expired::Idle(d) => write!(f, "idle for {d:?}"),
            Expired::SlowFrame(d) => write!(f, "a frame took longer than {d:?} to arrive"),
        }
    }
}

impl<H, S> ResponderState<H, S> {
    /// A new connection: at most `max_in_flight` running calls; closed when nothing is
    /// received for `idle_timeout` while no call runs (`None`: never).
    pub fn new(max_in_flight: usize, idle_timeout: Option<Duration>, now: Instant) -> Self {
        ResponderState {
            running: HashMap::new(),
            max_in_flight,
            draining: false,
            idle_timeout,
            last_heard: now,
            frame_timeout: None,
            partial_since: None,
            started: 0,
        }
    }

    /// A frame that began to arrive must be whole within `timeout`: a peer cannot pin a
    /// partial frame's memory for longer.
    pub fn with_frame_timeout(mut self, timeout: Duration) -> Self {
        self.frame_timeout = Some(timeout);
        self
    }

    /// Records what is buffered after every whole frame was taken: `pending` bytes of a
    /// frame not yet whole (0: none).
    pub fn partial(&mut self, now: Instant, pending: usize) {
        match (pending, self.partial_since) {
            (0, _) => self.partial_since = None,
            (_, None) => self.partial_since = Some(now),
            (_, Some(_)) => {}
        }
    }

    /// The soonest moment the connection must be closed if nothing changes, and why: a
    /// partial frame's time budget, else idleness while no call runs.
    pub fn deadline(&self) -> Option<(Instant, Expired)> {
        if let (Some(since), Some(timeout)) = (self.partial_since, self.frame_timeout) {
            return Some((since + timeout, Expired::SlowFrame(timeout)));
        }
        let timeout = self.idle_timeout?;
        self.running.is_empty().then(|| (self.last_heard + timeout, Expired::Idle(timeout)))
    }

    /// Handles one frame from the caller; `make` gives the handle of a call's streams when
    /// its caller sends items.
    pub fn on_frame(&mut self, frame: Frame, now: Instant, make: impl FnOnce() -> S) -> Inbound<H, S>
    where
        S: Clone,
    {
        self.last_heard = now;
        match frame {
            Frame::Request {
                id,
                codec,
                deadline,
                trace_id,
                parent_span,
                service,
                method,
                metadata,
                items,
                payload,
            } => {
                let (Ok(service), Ok(method)) = (std::str::from_utf8(&service), std::str::from_utf8(&method)) else {
                    return Inbound::Send(response(id, Err(Error::bad_request("service and method must be UTF-8"))));
                };
                if self.running.len() >= self.max_in_flight {
                    let message = format!("more than {} calls in flight on one connection", self.max_in_flight);
                    return Inbound::Send(response(id, Err(Error::Overloaded { message })));
                }
                if self.running.contains_key(&id) {
                    return Inbound::Send(response(id, Err(Error::protocol(format!("request id {id} is in use")))));
                }
                self.started += 1;
                let mut metadata = metadata;
                let version = metadata.remove(crate::call::VERSION_METADATA).map(std::sync::Arc::from);
                let call = Call {
                    service: Cow::Owned(service.to_owned()),
                    method: Cow::Owned(method.to_owned()),
                    codec,
                    deadline: deadline.map(|d| now + d),
                    trace_id,
                    parent_span,
                    key: None,
                    version,
                    metadata,
                    input: None,
                    peer: None,
                    payload,
                };
                let items = items.then(|| {
                    let stream = make();
                    let mut running = Running::new(self.started);
                    running.stream = Some(stream.clone());
                    running.flow.recv = Some(RecvWindow::default());
                    self.running.insert(id, running);
                    stream
                });
                Inbound::Call { id, call, items }
            }
            Frame::Item { id, payload } => {
                let Some(r) = self.running.get_mut(&id) else { return Inbound::Nothing };
                let (Some(window), Some(stream)) = (r.flow.recv.as_mut(), &r.stream) else { return Inbound::Nothing };
                let cost = item_cost(payload.len());
                match window.received(cost) {
                    Ok(()) => Inbound::Item(stream.clone(), id, payload, cost),
                    // This call alone pays: it ends, the connection and other calls live on.
                    Err(e) => self.refuse(id, e).unwrap_or(Inbound::Nothing),
                }
            }
            Frame::Items { id, run } => {
                let Some(r) = self.running.get_mut(&id) else { return Inbound::Nothing };
                let (Some(window), Some(stream)) = (r.flow.recv.as_mut(), &r.stream) else { return Inbound::Nothing };
                match window.received_items(run.cost(), run.largest()) {
                    Ok(()) => Inbound::Run(stream.clone(), id, run),
                    Err(e) => self.refuse(id, e).unwrap_or(Inbound::Nothing),
                }
            }
            Frame::End { id, status, payload } => {
                let Some(r) = self.running.get_mut(&id) else { return Inbound::Nothing };
                let (Some(_), Some(stream)) = (r.flow.recv.take(), &r.stream) else { return Inbound::Nothing };
                let outcome = match status {
                    Status::Ok | Status::Stream => None,
                    Status::AppError => Some(Ok(Reply::AppError(payload))),
                    Status::Failed => Some(Err(serde_json::from_slice(&payload)
                        .unwrap_or_else(|_| Error::protocol(String::from_utf8_lossy(&payload).into_owned())))),
                };
                Inbound::ItemsEnd(stream.clone(), outcome)
            }
            // A sender out of credit says so with a grant of 0 (its items are ours to read).
            Frame::Credit { id, bytes: 0 } => match self.running.get_mut(&id).and_then(|e| e.flow.blocked()) {
                Some(bytes) => Inbound::Send(Frame::Credit { id, bytes }),
                None => Inbound::Nothing,
            },
            Frame::Credit { id, bytes } => match self.running.get_mut(&id) {
                Some(Running { flow: StreamFlow { send: Some(window), .. }, stream: Some(stream), .. }) => {
                    window.grant(bytes);
                    Inbound::Credit(stream.clone())
                }
                _ => Inbound::Nothing,
            },
            Frame::Cancel { id } => match self.running.remove(&id) {
                Some(r) => Inbound::Abort(r.handle, r.stream, None),
                None => Inbound::Nothing,
            },
            Frame::Ping { id } => Inbound::Send(Frame::Pong { id }),
            Frame::Pong { .. } | Frame::Response { .. } | Frame::GoAway => Inbound::Nothing,
        }
    }

    /// The answer of call `id` is a stream: its items get credit, and `stream` is told when
    /// more comes. Returns the handle to use (the call's own, if it has one already);
    /// `None`: the call is gone (cancelled meanwhile). `inline`: the answer came on the
    /// handler's first poll, so the call was not registered yet.
    pub fn answer_stream(&mut self, id: u64, stream: S, inline: bool) -> Option<S>
    where
        S: Clone,
    {
        if inline {
            let started = self.started;
            self.running.entry(id).or_insert_with(|| Running::new(started));
        }
        let r = self.running.get_mut(&id)?;
        r.flow.send = Some(SendWindow::default());
        Some(r.stream.get_or_insert(stream).clone())
    }

    /// Ends call `id` with `why` while it runs (its caller broke its stream's flow
    /// control, or the node cannot hold its items): what to stop, and the frame to send.
    pub fn refuse(&mut self, id: u64, why: Error) -> Option<Inbound<H, S>> {
        let r = self.running.remove(&id)?;
        let end = if r.flow.send.is_some() { end(id, Err(why)) } else { response(id, Err(why)) };
        Some(Inbound::Abort(r.handle, r.stream, Some(end)))
    }

    /// The credit call `id`'s answer items may still spend (`None`: the call is over).
    pub fn credit(&self, id: u64) -> Option<u32> {
        self.running.get(&id)?.flow.credit()
    }

    /// Call `id`'s answer spent `bytes` of its credit.
    pub fn spent(&mut self, id: u64, bytes: u32) {
        if let Some(r) = self.running.get_mut(&id) {
            r.flow.spent(bytes);
        }
    }

    /// May an item of `payload` bytes of call `id`'s answer go out now?
    pub fn spend(&mut self, id: u64, payload: usize) -> Spend {
        self.running.get_mut(&id).map_or(Spend::Gone, |r| r.flow.spend(payload))
    }

    /// The handler took an item of `cost` from call `id`'s items: the credit frame to send
    /// back, when it is time to.
    pub fn consumed(&mut self, id: u64, cost: u32) -> Option<Frame> {
        let (started, others) = (self.started, self.running.len() > 1);
        let grant = self.running.get_mut(&id)?.flow.consumed(cost, started, others)?;
        Some(Frame::Credit { id, bytes: grant })
    }

    /// Records bytes received at `at` (a partial frame counts as life too). A shell may
    /// report a read after frames it held were handled: an older time changes nothing.
    pub fn heard(&mut self, at: Instant) {
        self.last_heard = self.last_heard.max(at);
    }

    /// A call that did not finish at once now runs under `handle`.
    pub fn started(&mut self, id: u64, handle: H) {
        let started = self.started;
        self.running.entry(id).or_insert_with(|| Running::new(started)).handle = Some(handle);
    }

    /// A running call answered.
    pub fn finished(&mut self, id: u64) {
        self.running.remove(&id);
    }

    /// Calls running.
    pub fn in_flight(&self) -> usize {
        self.running.len()
    }

    /// Starts draining: returns the go-away to send, once.
    pub fn go_away(&mut self) -> Option<Frame> {
        (!std::mem::replace(&mut self.draining, true)).then_some(Frame::GoAway)
    }

    /// True once go-away was sent.
    pub fn draining(&self) -> bool {
        self.draining
    }

    /// The connection is over: returns the handles of every running call, to stop them.
    pub fn close(&mut self) -> Vec<H> {
        // In call order: the same close stops them in the same order every time (the
        // simulation replays runs byte for byte).
        let mut running: Vec<_> = self.running.drain().collect();
        running.sort_unstable_by_key(|(id, _)| *id);
        running.into_iter().filter_map(|(_, r)| r.handle).collect()
    }

    /// Ends every call whose answer is a stream still open: their handles, to stop them,
    /// and the end frames (failed with `why`) to send.
    pub fn end_streams(&mut self, why: &Error) -> (Vec<H>, Vec<Frame>) {
        let mut open: Vec<u64> =
            self.running.iter().filter(|(_, r)| r.flow.send.is_some()).map(|(id, _)| *id).collect();
        open.sort_unstable();
        let mut handles = Vec::new();
        let mut ends = Vec::new();
        for id in open {
            let r = self.running.remove(&id).expect("listed above");
            handles.extend(r.handle);
            ends.push(end(id, Err(why.clone())));
        }
        (handles, ends)
    }
}

/// The end frame of call `id`'s answer stream: clean (`Ok(None)`), the item error or a
/// failure.
pub fn end(id: u64, outcome: Result<Option<Reply>, Error>) -> Frame {
    match outcome {
        Ok(None) => Frame::End { id, status: Status::Ok, payload: Bytes::new() },
        Ok(Some(reply)) => match response(id, Ok(reply)) {
            Frame::Response { status, payload, .. } => Frame::End { id, status, payload },
            other => other,
        },
        Err(e) => match response(id, Err(e)) {
            Frame::Response { status, payload, .. } => Frame::End { id, status, payload },
            other => other,
        },
    }
}

/// The response frame for a call's outcome, refused as `too_large` for that call alone when
/// it would exceed `max_out`, the largest frame the caller accepts (then `true`).
pub fn response_within(id: u64, result: Result<Reply, Error>, max_out: u32) -> (Frame, bool) {
    let frame = response(id, result);
    let size = frame.encoded_len() as u64;
    if size > u64::from(max_out) {
        return (response(id, Err(Error::TooLarge { size, limit: max_out.into() })), true);
    }
    (frame, false)
}

/// The response frame for a call's outcome.
pub fn response(id: u64, result: Result<Reply, Error>) -> Frame {
    let (status, payload) = match result {
        Ok(Reply::Ok(b)) => (Status::Ok, b),
        Ok(Reply::AppError(b)) => (Status::AppError, b),
        Ok(Reply::Stream(_)) => (Status::Stream, Bytes::new()),
        Err(e) => (Status::Failed, Bytes::from(serde_json::to_vec(&e).unwrap_or_default())),
    };
    Frame::Response { id, status, payload }
}
