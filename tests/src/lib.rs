//! The integration harness: a test service (`Lab`) that makes server-side behaviour
//! observable, a node binary serving it, and helpers that start real processes and
//! talk to them over real sockets.

pub mod browser;
pub mod docker;
pub mod faults;
pub mod front;
pub mod harness;
pub mod hostile;
pub mod impostor;
pub mod lab;
pub mod netns;
pub mod placements;
pub mod relay;
pub mod streams;
pub mod tier;
pub mod tls;
pub mod wide;
