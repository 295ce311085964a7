//! Online Boutique's call graph on tonic, the way a tonic user would build it: one
//! process per service, each a gRPC server (tonic 0.14, prost messages from
//! `proto/boutique.proto`) holding one HTTP/2 channel per service it calls, and the
//! frontend an HTTP JSON server (axum) calling them. The application logic is the
//! boutique's own (examples/boutique), so bench/boutique.sh compares transports on the
//! same code.

/// The generated messages, servers and clients.
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("boutique");
}

pub mod clients;
mod convert;
pub mod frontend;
pub mod servers;
