//! The wire: frames and the multiplexed connection that carries them. No business
//! logic lives here.

pub mod connection;
pub mod frame;
pub(crate) mod sender;

pub use connection::{connect, ConnectOptions, Connection, PendingCall, State};
pub use frame::{Frame, Status, DEFAULT_MAX_FRAME, PREFACE};
