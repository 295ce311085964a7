//! # meshrpc
//!
//! Automatic RPC and service mesh for Rust services: a trait is the contract.
//! `#[meshrpc::service]` on a trait generates `XServer<T>` (publish it on a node),
//! `XClient` (implements the trait, so a remote value replaces a local one) and
//! `XClient::SPEC`. Implementations put `#[meshrpc::async_trait]` on their `impl`, as
//! with tonic. This example runs (it is a doctest):
//!
//! ```
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Debug, Serialize, Deserialize)]
//! pub enum GreetError {
//!     Rpc(meshrpc::Error),
//! }
//!
//! // Transport failures reach callers as the service's own error type.
//! impl From<meshrpc::Error> for GreetError {
//!     fn from(e: meshrpc::Error) -> Self {
//!         GreetError::Rpc(e)
//!     }
//! }
//!
//! #[meshrpc::service]
//! pub trait Greeter {
//!     async fn greet(&self, name: String) -> Result<String, GreetError>;
//! }
//!
//! struct MyGreeter;
//!
//! #[meshrpc::async_trait]
//! impl Greeter for MyGreeter {
//!     async fn greet(&self, name: String) -> Result<String, GreetError> {
//!         Ok(format!("Hello, {name}"))
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // A node serving it (mesh frames on one port)...
//! let server = meshrpc::Server::bind("127.0.0.1:0").await?;
//! server.publish(GreeterServer::new(MyGreeter));
//! let addr = server.local_addr();
//! tokio::spawn(server.serve());
//!
//! // ...and a client that is a `Greeter` too.
//! let greeter = GreeterClient::new(meshrpc::connect(addr).await?);
//! assert_eq!(greeter.greet("Max".into()).await.unwrap(), "Hello, Max");
//! # Ok(())
//! # }
//! ```
//!
//! For a mesh of nodes see `Cluster` (feature `cluster`); for an HTTP front door,
//! `Gateway` (feature `gateway`). The README walks through the whole story and
//! `docs/architecture.md` maps the code.
//!
//! The library reads no environment variable and changes no process-wide setting by
//! itself: a binary asks, with the `from_env()` constructors (`ClusterBuilder::from_env`,
//! [`Telemetry::from_env`](telemetry::Telemetry::from_env), `TlsConfig::from_env`, `Access::from_env`; the README's
//! "Configuration" lists every variable), [`Telemetry::install`](telemetry::Telemetry::install), [`raise_fd_limit`](server::raise_fd_limit) and
//! `init_logging`.
//!
//! ## Where things are
//!
//! The root holds what most programs use (and [`prelude`] holds it for a glob import);
//! the rest lives in the module of its concept, as in tonic: [`call`] (calls as values:
//! `Call`, `Reply`, `Dispatch`, middleware's view), [`client`], [`server`], [`stream`],
//! [`spec`] (what `#[service]` generates a description of), [`transport`] (mesh
//! connections and links), [`proto`] (the wire protocol, no I/O), [`metrics`],
//! [`telemetry`], [`identity`], and behind their features `cluster`, `gateway`, `http`,
//! `openapi` and `tls`.
//!
//! ## Cargo features
//!
//! | feature | default | adds |
//! |---|---|---|
//! | (none) | | a client ([`connect`], [`Channel`]) and a server ([`Server`]) speaking mesh frames |
//! | `http` | yes | JSON over HTTP/1.1 and h2c on a node's port, published axum routers, `serve_http` |
//! | `cluster` | yes | `Cluster`: gossip membership, balancing, failover, drain; [`app`]: many services placed into nodes by a file (implies `http`) |
//! | `gateway` | yes | `Gateway`: the HTTP front door with `/healthz` and `/metrics` (implies `cluster`) |
//! | `logging` | yes | `init_logging`, a `tracing` subscriber for binaries |
//! | `tls` | yes | mutual TLS on the mesh port ([`TlsConfig`]), sealed gossip, the authorization policy ([`Access`](tls::Access)), HTTPS and bearer tokens at the gateway |

// The lints are the workspace's (`[workspace.lints]` in the root Cargo.toml); the library
// also forbids what the workspace only denies, so no `allow` can let unsafe code in.
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

mod admission;
pub mod call;
pub mod client;
mod clock;
mod codec;
mod codegen;
mod context;
mod env;
mod error;
pub mod identity;
mod limits;
pub mod metrics;
pub mod middleware;
pub mod proto;
mod request_log;
#[cfg(feature = "schema")]
mod schema;
pub mod server;
pub mod spec;
pub mod stream;
pub mod telemetry;
mod throttle;
mod trace;
pub mod transport;

#[cfg(feature = "tls")]
mod access;
#[cfg(feature = "cluster")]
pub mod app;
#[cfg(feature = "cluster")]
pub mod cluster;
#[cfg(feature = "gateway")]
pub mod gateway;
#[cfg(feature = "http")]
pub mod grpc;
#[cfg(feature = "http")]
pub mod http;
#[cfg(feature = "logging")]
mod logging;
#[cfg(feature = "http")]
pub mod openapi;

// The everyday names, at the root; everything else lives in the module of its concept.
pub use async_trait::async_trait;
pub use client::{CallOptions, Channel};
#[cfg(feature = "cluster")]
pub use cluster::{wait_for_signal, Cluster, ClusterBuilder};
pub use codec::Codec;
pub use context::CallContext;
pub use error::Error;
#[cfg(feature = "gateway")]
pub use gateway::Gateway;
#[cfg(feature = "http")]
pub use http::serve_http;
#[cfg(feature = "logging")]
pub use logging::init as init_logging;
pub use meshrpc_macros::service;
pub use server::{Server, ServerConfig};
pub use stream::{Stream, StreamSender};
pub use transport::connect;
#[cfg(feature = "tls")]
pub use transport::TlsConfig;

/// Hooks for a deterministic simulation of a mesh in one process (`sim/`): see
/// [`transport::Network`] for the sockets; the monotonic clock is tokio's already.
#[doc(hidden)]
pub mod simulation {
    pub use crate::clock::install;
    #[cfg(feature = "cluster")]
    pub use crate::cluster::failover::retry_calls_that_reached_a_replica;
}

/// What most programs need, in one `use meshrpc::prelude::*;`.
pub mod prelude {
    #[cfg(feature = "gateway")]
    pub use crate::Gateway;
    pub use crate::{async_trait, connect, service, CallContext, CallOptions, Channel, Error, Server, Stream};
    #[cfg(feature = "cluster")]
    pub use crate::{Cluster, ClusterBuilder};
}

/// Mutual TLS and who may call what (feature `tls`): node credentials (the files of a
/// credentials directory and the form of node certificates, docs/security.md) and the
/// authorization policy.
#[cfg(feature = "tls")]
pub mod tls {
    pub use crate::access::{Access, AccessPolicy, PolicyError};
    pub use crate::identity::{NODE_DNS_NAME, URI_SCHEME};
    pub use crate::transport::{
        fingerprint, https_config, identity_of, TlsConfig, CA_FILE, CERT_FILE, GOSSIP_KEY_FILE, KEY_FILE,
    };
}

/// Items generated code refers to. Not part of the public API.
#[doc(hidden)]
pub mod __private {
    /// A gossip node without I/O, for the gossip simulation (`bench/gossip-sim`).
    #[cfg(feature = "cluster")]
    pub use crate::cluster::gossip::simulation as gossip_simulation;
    /// A gossip node speaking whatever facts it is given: the tests' impostors use it to
    /// speak as a process on the host (no key) or a holder of the gossip key would.
    #[cfg(feature = "cluster")]
    pub use crate::cluster::gossip::Impostor as GossipImpostor;
    pub use crate::codegen::*;
}
