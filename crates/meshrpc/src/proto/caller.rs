//! The calling side of a connection: call ids, the calls waiting for an answer, the
//! frame limit the peer set, and whether the peer is draining.

use std::{collections::HashMap, time::Instant};

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
    pending: HashMap<u64, W>,
    state: ConnState,
}

impl<W> CallerState<W> {
    /// The state right after a handshake.
    pub fn new(limits: Negotiated) -> Self {
        CallerState { limits, next_id: 1, pending: HashMap::new(), state: ConnState::Open }
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

    /// Adds a waiting call: returns its id and whether it is the only call in flight.
    pub fn register(&mut self, waiter: W) -> Result<(u64, bool), Error> {
        match self.state {
            ConnState::Open => {}
            ConnState::Draining => return Err(Error::unavailable("the peer is draining")),
            ConnState::Closed => return Err(Error::unavailable(
                "the connection is closed (a Connection does not reconnect: connect again, or call through a Cluster)",
            )),
        }
        let id = self.next_id;
        self.next_id += 1;
        self.pending.insert(id, waiter);
        Ok((id, self.pending.len() == 1))
    }

    /// Starts a call: checks it against the limits and returns its id, the frame to send,
    /// and whether it is the only call in flight. An error means nothing was sent, so the
    /// call may go to another replica. (A shell that shares this state between tasks can
    /// build the frame with [`request`] outside its lock and [`register`](Self::register)
    /// under it.)
    pub fn start_call(&mut self, call: Call, now: Instant, waiter: W) -> Result<(u64, Frame, bool), Error> {
        let mut frame = request(call, now, &self.limits)?;
        let (id, alone) = self.register(waiter)?;
        frame.set_request_id(id);
        Ok((id, frame, alone))
    }

    /// Starts a ping; its answer is an empty `Reply::Ok`.
    pub fn start_ping(&mut self, waiter: W) -> Result<(u64, Frame, bool), Error> {
        let (id, alone) = self.register(waiter)?;
        Ok((id, Frame::Ping { id }, alone))
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
                let Some(waiter) = self.pending.remove(&id) else { return Incoming::Nothing };
                let result = match status {
                    Status::Ok => Ok(Reply::Ok(payload)),
                    Status::AppError => Ok(Reply::AppError(payload)),
                    Status::Failed => Err(serde_json::from_slice(&payload)
                        .unwrap_or_else(|_| Error::protocol(String::from_utf8_lossy(&payload).into_owned()))),
                };
                Incoming::Answer(waiter, result)
            }
            Frame::Pong { id } => match self.pending.remove(&id) {
                Some(waiter) => Incoming::Answer(waiter, Ok(Reply::Ok(Bytes::new()))),
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
        self.pending.drain().map(|(_, w)| w).collect()
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
