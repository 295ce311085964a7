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
//! [`Telemetry::from_env`], `TlsConfig::from_env`, `Access::from_env`; the README's
//! "Configuration" lists every variable), [`Telemetry::install`], [`raise_fd_limit`] and
//! `init_logging`.
//!
//! ## Cargo features
//!
//! | feature | default | adds |
//! |---|---|---|
//! | (none) | | a client ([`connect`], [`Channel`]) and a server ([`Server`]) speaking mesh frames |
//! | `http` | yes | JSON over HTTP/1.1 and h2c on a node's port, published axum routers, `serve_http` |
//! | `cluster` | yes | `Cluster`: gossip membership, balancing, failover, drain (implies `http`) |
//! | `gateway` | yes | `Gateway`: the HTTP front door with `/healthz` and `/metrics` (implies `cluster`) |
//! | `logging` | yes | `init_logging`, a `tracing` subscriber for binaries |
//! | `tls` | yes | mutual TLS on the mesh port ([`TlsConfig`]), sealed gossip, the authorization policy ([`Access`]), HTTPS and bearer tokens at the gateway |

// The lints are the workspace's (`[workspace.lints]` in the root Cargo.toml); the library
// also forbids what the workspace only denies, so no `allow` can let unsafe code in.
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

mod admission;
mod call;
mod call_stats;
mod client;
mod codec;
mod codegen;
mod context;
mod env;
mod error;
#[cfg_attr(not(feature = "http"), allow(dead_code))] // shown by `/metrics`
mod figures;
mod identity;
mod limits;
mod middleware;
#[cfg(feature = "http")]
mod openapi;
#[cfg(feature = "otlp")]
mod otlp;
mod request_log;
#[cfg(feature = "schema")]
mod schema;
mod server;
mod spec;
mod stream;
mod telemetry;
mod throttle;
mod trace;
mod transport;

pub mod proto;

#[cfg(feature = "tls")]
mod access;
#[cfg(feature = "cluster")]
mod cluster;
#[cfg(feature = "gateway")]
mod gateway;
#[cfg(feature = "http")]
mod http;
#[cfg(feature = "logging")]
mod logging;

#[cfg(feature = "tls")]
pub use access::{Access, AccessPolicy, PolicyError};
pub use async_trait::async_trait;
pub use call::{BoxFuture, Call, Dispatch, Input, Items, Metadata, Reply};
pub use call_stats::{node_stats, Direction, NodeStats, SeriesStats, LATENCY_BOUNDS_SECONDS};
pub use client::{CallOptions, Channel, DEFAULT_TIMEOUT};
#[cfg(feature = "cluster")]
pub use cluster::{
    edges, method_rates, wait_for_signal, Advertised, AdvertisedMethod, Balance, Candidate, Cluster, ClusterBuilder,
    Colocated, Edge, Ejection, GossipConfig, HttpReplica, LeastLoaded, Member, MemberState, MeshSnapshot, MethodRates,
    MirrorStats, Policies, Policy, RejectedRule, Resilience, ResilienceStats, RetryBudget, RoundRobin, ServiceStatus,
    Split, Sticky, View, DEFAULT_PORT, KEEPALIVE,
};
#[cfg(all(feature = "cluster", feature = "tls"))]
pub use cluster::{UnprovenReplica, EXPIRY_WARNING};
pub use codec::Codec;
pub use context::CallContext;
pub use error::Error;
#[cfg(all(feature = "gateway", feature = "tls"))]
pub use gateway::{BearerAuth, TokenError};
#[cfg(feature = "gateway")]
pub use gateway::{Gateway, Metrics, Rate, RateLimits};
#[cfg(feature = "http")]
pub use http::{
    envelope, error_response, pinned_version, rpc_call, rpc_router, serve_http, sticky_key, KEY_HEADER, TIMEOUT_HEADER,
    TRACEPARENT_HEADER, VERSION_HEADER,
};
#[cfg(all(feature = "http", feature = "tls"))]
pub use http::{rpc_router_with_policy, serve_https};
pub use identity::{Identity, IdentityError, IdentityKind};
pub use limits::HttpLimits;
#[cfg(feature = "logging")]
pub use logging::init as init_logging;
pub use meshrpc_macros::service;
pub use middleware::DispatchService;
#[cfg(feature = "http")]
pub use openapi::{document as openapi_document, ServiceDoc};
pub use server::{raise_fd_limit, ConcurrencyLimit, Registry, Server, ServerConfig, Service, ShutdownHandle};
pub use spec::{MethodSpec, ServiceSpec};
pub use stream::{Stream, StreamClosed, StreamSender};
#[cfg(feature = "otlp")]
pub use telemetry::OtlpExport;
pub use telemetry::{RequestLines, Telemetry};
pub use transport::{
    connect, ConnectOptions, Connection, Link, PendingCall, PortCounters, Reading, Ready, StreamLink, TcpLink,
};
#[cfg(feature = "tls")]
pub use transport::{https_config, TlsConfig};

/// Node credentials (feature `tls`): the files of a credentials directory and the form
/// of node certificates (docs/security.md).
#[cfg(feature = "tls")]
pub mod tls {
    pub use crate::identity::{NODE_DNS_NAME, URI_SCHEME};
    pub use crate::transport::{fingerprint, identity_of, TlsConfig, CA_FILE, CERT_FILE, GOSSIP_KEY_FILE, KEY_FILE};
}

/// Items generated code refers to. Not part of the public API.
#[doc(hidden)]
pub mod __private {
    #[cfg(feature = "cluster")]
    pub use crate::cluster::gossip_simulation;
    /// chitchat's transport sealed with a gossip key: the tests' impostors use it to speak
    /// as a holder of the key would.
    #[cfg(all(feature = "cluster", feature = "tls"))]
    pub use crate::cluster::SealedTransport;
    pub use crate::codegen::*;
}
