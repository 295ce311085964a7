//! What a node counts: the golden metrics of every call it makes and answers (calls by
//! result code, their latency, by service, method and peer: [`node_stats`]), and the
//! figures each layer lists (the port, the concurrency limit, the cluster's policies).
//! The `http` feature renders both on `/metrics`; the gateway adds its own.

pub(crate) mod calls;
#[cfg_attr(not(feature = "http"), allow(dead_code))] // shown by `/metrics`
mod figures;

pub use calls::{node_stats, Direction, NodeStats, SeriesStats, LATENCY_BOUNDS_SECONDS};
pub(crate) use figures::{Figure, Figures};
