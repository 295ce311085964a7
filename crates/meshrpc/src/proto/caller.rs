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

use super::{Frame, Negotiated, Status};
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
pub enum Incoming<W> {
    /// Hand this answer to the waiter of the call.
    Answer(W, Result<Reply, Error>),
    /// Write this frame back.
    Send(Frame),
    /// Nothing to do.
    Nothing,
}

/// The caller's state of one connection. `W` is whatever the shell wakes a waiting
/// caller with (a oneshot sender, say).
#[derive(Debug)]
pub struct CallerState<W> {
    limits: Negotiated,
    next_id: u64,
    pending: HashMap<u64, Waiting<W>, BuildHasherDefault<IdHasher>>,
    /// Deadlines of calls, soonest first; entries of calls already answered are
    /// dropped lazily (and the heap rebuilt once they outnumber the live ones).
    deadlines: BinaryHeap<Reverse<(Instant, u64)>>,
    /// The deadline the shell's timer is set for, if any.
    armed: Option<Instant>,
    state: ConnState,
}

#[derive(Debug)]
struct Waiting<W> {
    waiter: W,
    deadline: Option<Instant>,
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

impl<W> CallerState<W> {
    /// The state right after a handshake.
    pub fn new(limits: Negotiated) -> Self {
        CallerState {
            limits,
            next_id: 1,
            pending: HashMap::default(),
            deadlines: BinaryHeap::new(),
            armed: None,
            state: ConnState::Open,
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

    /// Adds a waiting call that times out at `deadline`.
    pub fn register(&mut self, waiter: W, deadline: Option<Instant>) -> Result<Registered, Error> {
        match self.state {
            ConnState::Open => {}
            ConnState::Draining => return Err(Error::unavailable("the peer is draining")),
            ConnState::Closed => return Err(Error::unavailable(
                "the connection is closed (a Connection does not reconnect: connect again, or call through a Cluster)",
            )),
        }
        let id = self.next_id;
        self.next_id += 1;
        self.pending.insert(id, Waiting { waiter, deadline });
        let mut rearm = false;
        if let Some(d) = deadline {
            if self.deadlines.len() > 2 * self.pending.len() + 64 {
                self.deadlines = self.pending.iter().filter_map(|(id, w)| Some(Reverse((w.deadline?, *id)))).collect();
            }
            self.deadlines.push(Reverse((d, id)));
            rearm = self.armed.is_none_or(|armed| d < armed);
        }
        Ok(Registered { id, alone: self.pending.len() == 1, rearm })
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

    /// Withdraws every call whose deadline is at or before `now`: their waiters (to be
    /// failed with `timeout`) and the cancel frames to send the peer.
    pub fn expire(&mut self, now: Instant) -> Vec<(W, Frame)> {
        let mut expired = Vec::new();
        while let Some(Reverse((d, id))) = self.deadlines.peek().copied() {
            if d > now {
                break;
            }
            self.deadlines.pop();
            if self.pending.get(&id).is_some_and(|w| w.deadline == Some(d)) {
                let w = self.pending.remove(&id).expect("checked above");
                expired.push((w.waiter, Frame::Cancel { id }));
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
        let r = self.register(waiter, deadline)?;
        frame.set_request_id(r.id);
        Ok((r.id, frame, r.alone))
    }

    /// Starts a ping; its answer is an empty `Reply::Ok`.
    pub fn start_ping(&mut self, waiter: W, deadline: Option<Instant>) -> Result<(Registered, Frame), Error> {
        let r = self.register(waiter, deadline)?;
        Ok((r, Frame::Ping { id: r.id }))
    }

    /// Withdraws a call the caller gave up on; returns the cancel to send if it was still
    /// waiting.
    pub fn cancel(&mut self, id: u64) -> Option<Frame> {
        self.pending.remove(&id).map(|_| Frame::Cancel { id })
    }

    /// True once the peer drained and the last answer is in: the caller hangs up, so the
    /// draining node knows no request is still on its way.
    pub fn drained(&self) -> bool {
        self.state == ConnState::Draining && self.pending.is_empty()
    }

    /// Handles one frame from the peer.
    pub fn on_frame(&mut self, frame: Frame) -> Incoming<W> {
        match frame {
            Frame::Response { id, status, payload } => {
                let Some(Waiting { waiter, .. }) = self.pending.remove(&id) else { return Incoming::Nothing };
                let result = match status {
                    Status::Ok => Ok(Reply::Ok(payload)),
                    Status::AppError => Ok(Reply::AppError(payload)),
                    Status::Failed => Err(serde_json::from_slice(&payload)
                        .unwrap_or_else(|_| Error::protocol(String::from_utf8_lossy(&payload).into_owned()))),
                };
                Incoming::Answer(waiter, result)
            }
            Frame::Pong { id } => match self.pending.remove(&id) {
                Some(w) => Incoming::Answer(w.waiter, Ok(Reply::Ok(Bytes::new()))),
                None => Incoming::Nothing,
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

    /// Closes the connection: returns every waiter, to be failed with the reason.
    pub fn close(&mut self) -> Vec<W> {
        self.state = ConnState::Closed;
        self.deadlines.clear();
        self.pending.drain().map(|(_, w)| w.waiter).collect()
    }
}

/// The request frame for `call` (id 0 until registered), checked against what the
/// handshake settled: names, deadline, metadata, size. An error means nothing may be sent.
pub fn request(call: Call, now: Instant, limits: &Negotiated) -> Result<Frame, Error> {
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
    let frame = Frame::Request {
        id: 0,
        codec: call.codec,
        deadline: call.deadline.map(|d| d - now),
        trace_id: call.trace_id,
        service: bytes_of(call.service),
        method: bytes_of(call.method),
        metadata: call.metadata,
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
