//! The wire protocol without I/O: frames, the handshake (both sides, once) and the state
//! of a connection on either side (ids, pending calls, limits, drain, idle time).
//!
//! Nothing here reads a socket, spawns a task or reads a clock: callers pass in the
//! bytes they received and the current [`Instant`](std::time::Instant), and get back
//! frames to write and calls to deliver or complete. `transport` is the async shell that
//! drives it; the tests here drive two states against each other byte by byte.

mod caller;
mod compress;
mod flow;
mod frame;
mod handshake;
mod responder;
mod run;

pub use caller::{request, CallerState, ConnState, Incoming, Registered};
pub use compress::COMPRESS_FROM;
pub use flow::{item_cost, RecvWindow, SendWindow, Spend, SHARED_WINDOW, STREAM_WINDOW};
pub use frame::{Frame, Status, DEFAULT_MAX_FRAME};
pub use handshake::{
    refusal, sniff, CallerHandshake, Features, Negotiated, NodeHandshake, Sniffed, MAGIC, OVERLOADED, PREFACE_LEN,
    TLS_REQUIRED, VERSION,
};
pub use responder::{end, response, response_within, Expired, Inbound, ResponderState};
pub use run::{ItemRun, ItemSlot, RunWriter};

#[cfg(test)]
mod tests;
