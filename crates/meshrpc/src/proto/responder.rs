//! The serving side of a connection: which calls run, how many may, whether the node
//! drains, and when a silent caller has been idle too long.

use std::{
    borrow::Cow,
    collections::HashMap,
    time::{Duration, Instant},
};

use bytes::Bytes;

use super::{Frame, Status};
use crate::{
    call::{Call, Reply},
    error::Error,
};

/// What a received frame asks of the shell.
#[derive(Debug)]
pub enum Inbound<H> {
    /// Run this call and answer request `id` with [`response`].
    Call {
        /// The request id to answer.
        id: u64,
        /// The call, its deadline made absolute.
        call: Call,
    },
    /// Write this frame back (a pong, or a call refused before it ran).
    Send(Frame),
    /// The caller cancelled a running call: stop its handler.
    Abort(H),
    /// Nothing to do.
    Nothing,
}

/// The node's state of one connection. `H` is whatever the shell stops a running
/// handler with (an abort handle, say).
#[derive(Debug)]
pub struct ResponderState<H> {
    running: HashMap<u64, H>,
    max_in_flight: usize,
    draining: bool,
    idle_timeout: Option<Duration>,
    last_heard: Instant,
    frame_timeout: Option<Duration>,
    /// When the frame that is not yet whole began to arrive.
    partial_since: Option<Instant>,
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

impl<H> ResponderState<H> {
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

    /// Handles one frame from the caller.
    pub fn on_frame(&mut self, frame: Frame, now: Instant) -> Inbound<H> {
        self.last_heard = now;
        match frame {
            Frame::Request { id, codec, deadline, trace_id, service, method, metadata, payload } => {
                let (Ok(service), Ok(method)) = (std::str::from_utf8(&service), std::str::from_utf8(&method)) else {
                    return Inbound::Send(response(id, Err(Error::bad_request("service and method must be UTF-8"))));
                };
                if self.running.len() >= self.max_in_flight {
                    let message = format!("more than {} calls in flight on one connection", self.max_in_flight);
                    return Inbound::Send(response(id, Err(Error::Overloaded { message })));
                }
                let call = Call {
                    service: Cow::Owned(service.to_owned()),
                    method: Cow::Owned(method.to_owned()),
                    codec,
                    deadline: deadline.map(|d| now + d),
                    trace_id,
                    key: None,
                    metadata,
                    peer: None,
                    payload,
                };
                Inbound::Call { id, call }
            }
            Frame::Cancel { id } => self.running.remove(&id).map_or(Inbound::Nothing, Inbound::Abort),
            Frame::Ping { id } => Inbound::Send(Frame::Pong { id }),
            Frame::Pong { .. } | Frame::Response { .. } | Frame::GoAway => Inbound::Nothing,
        }
    }

    /// Records bytes received (a partial frame counts as life too).
    pub fn heard(&mut self, now: Instant) {
        self.last_heard = now;
    }

    /// A call that did not finish at once now runs under `handle`.
    pub fn started(&mut self, id: u64, handle: H) {
        self.running.insert(id, handle);
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
        self.running.drain().map(|(_, h)| h).collect()
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
        Err(e) => (Status::Failed, Bytes::from(serde_json::to_vec(&e).unwrap_or_default())),
    };
    Frame::Response { id, status, payload }
}
