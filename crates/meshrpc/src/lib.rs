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

mod call;
mod call_stats;
mod client;
mod codec;
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
pub use call::{BoxFuture, Call, Dispatch, Metadata, Reply};
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
pub use stream::{Input, Items, Stream, StreamClosed, StreamSender};
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
    pub use async_trait::async_trait;
    pub use bytes::Bytes;
    pub use serde;

    pub use crate::call::BoxFuture;
    #[cfg(feature = "schema")]
    pub use crate::schema::{schema_document, schema_generator, MethodSchema};
    use crate::{Codec, Error, Items, Reply};
    #[cfg(feature = "schema")]
    pub use schemars;

    /// Encodes a handler's result in the codec it was called with; a value the codec
    /// cannot carry fails the call (`internal`, naming `method`).
    pub fn reply<T: serde::Serialize, E: serde::Serialize + 'static>(
        codec: Codec,
        method: &str,
        result: Result<T, E>,
    ) -> Result<Reply, Error> {
        match result {
            Ok(v) => codec.encode(&v).map(Reply::Ok).map_err(|e| e.context(&format!("the answer of {method}"))),
            Err(e) => app_error(codec, method, e),
        }
    }

    /// A handler's error. One whose error type is `meshrpc::Error` answers with that error
    /// itself (its code, its HTTP status: an `unavailable` replica is seen as one by
    /// retries and outlier ejection), as a tonic handler answers with a `Status`.
    fn app_error<E: serde::Serialize + 'static>(codec: Codec, method: &str, e: E) -> Result<Reply, Error> {
        if let Some(e) = (&e as &dyn std::any::Any).downcast_ref::<Error>() {
            return Err(e.clone());
        }
        codec.encode(&e).map(Reply::AppError).map_err(|e| e.context(&format!("the answer of {method}")))
    }

    /// An answer must cross the network.
    pub fn assert_value_type<T: serde::Serialize + serde::de::DeserializeOwned>() {}

    /// A service's error type must carry transport failures and cross the network.
    pub fn assert_error_type<E: From<Error> + serde::Serialize + serde::de::DeserializeOwned>() {}

    /// Encodes a streaming handler's result: its stream's items, or its error.
    pub fn reply_stream<T, TE, E>(
        codec: Codec,
        method: &str,
        result: Result<crate::Stream<T, TE>, E>,
    ) -> Result<Reply, Error>
    where
        T: serde::Serialize + Send + 'static,
        TE: serde::Serialize + Send + 'static,
        E: serde::Serialize + 'static,
    {
        match result {
            Ok(stream) => Ok(Reply::Stream(crate::stream::encode(codec, stream))),
            Err(e) => app_error(codec, method, e),
        }
    }

    /// The caller's items of a method that takes a stream, typed; `bad_request` when the
    /// call came without them.
    pub fn take_items<T, E>(codec: Codec, method: &str, input: Option<Items>) -> Result<crate::Stream<T, E>, Error>
    where
        T: serde::de::DeserializeOwned + Send + 'static,
        E: serde::de::DeserializeOwned + From<Error> + Send + 'static,
    {
        match input {
            Some(items) => Ok(crate::stream::decode(codec, items)),
            None => Err(Error::bad_request(format!(
                "{method} takes a stream of items: send them with the call (over HTTP: an NDJSON body whose first line holds the arguments)"
            ))),
        }
    }

    /// Refuses items sent to a method that takes none.
    pub fn no_items(method: &str, input: &Option<Items>) -> Result<(), Error> {
        match input {
            Some(_) => Err(Error::bad_request(format!("{method} takes no stream of items"))),
            None => Ok(()),
        }
    }

    /// A stream's item type must cross the network, and its error type carry transport
    /// failures.
    pub fn assert_item_types<
        T: serde::Serialize + serde::de::DeserializeOwned,
        E: From<Error> + serde::Serialize + serde::de::DeserializeOwned,
    >() {
    }

    /// Runs a call on the service's in-process implementation (the colocated fast path):
    /// in the context a remote call would have (deadline, trace), cut at its deadline,
    /// and logged as a call from `local`.
    pub async fn colocated<T, E: From<Error>>(
        channel: &crate::Channel,
        service: &str,
        method: &str,
        call: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        let now = std::time::Instant::now();
        colocated_unary(channel.call_context_at(false, now), now, service, method, call).await
    }

    /// As [`colocated`], for a method answering with a stream: the deadline covers the
    /// whole stream, unless the channel says `without_stream_deadline`.
    pub async fn colocated_stream<T, TE, E>(
        channel: &crate::Channel,
        service: &str,
        method: &str,
        call: impl std::future::Future<Output = Result<crate::Stream<T, TE>, E>>,
    ) -> Result<crate::Stream<T, TE>, E>
    where
        T: Send + 'static,
        TE: From<Error> + Send + 'static,
        E: From<Error>,
    {
        let now = std::time::Instant::now();
        let ctx = channel.call_context_at(true, now);
        // A stream is one call: it stays in flight until the stream ends.
        let (stream, log) = run_colocated(ctx, now, service, method, call).await;
        let stream = stream?;
        let stream = match ctx.deadline {
            Some(deadline) => stream.until(deadline),
            None => stream,
        };
        Ok(match log {
            Some(log) => log.follow_typed(stream, ctx.deadline),
            None => stream,
        })
    }

    async fn colocated_unary<T, E: From<Error>>(
        ctx: crate::CallContext,
        now: std::time::Instant,
        service: &str,
        method: &str,
        call: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        let (result, log) = run_colocated(ctx, now, service, method, call).await;
        if let Some(log) = log {
            log.end_with("ok");
        }
        result
    }

    /// Runs the call until its deadline; its log, if it succeeded (for the caller to end),
    /// else ended with how it failed.
    async fn run_colocated<T, E: From<Error>>(
        ctx: crate::CallContext,
        now: std::time::Instant,
        service: &str,
        method: &str,
        call: impl std::future::Future<Output = Result<T, E>>,
    ) -> (Result<T, E>, Option<crate::request_log::RequestLog>) {
        let log = crate::request_log::RequestLog::begin_local(service, method, ctx.trace_id, now);
        match crate::context::until_deadline(ctx.scope(call), ctx.deadline).await {
            Ok(Ok(value)) => (Ok(value), Some(log)),
            Ok(Err(e)) => {
                log.end_with("application");
                (Err(e), None)
            }
            Err(()) => {
                log.end_with("timeout");
                (Err(E::from(Error::Timeout)), None)
            }
        }
    }

    /// The answer to a method the service does not have.
    pub fn unknown_method(service: &str, method: &str) -> BoxFuture<Result<Reply, Error>> {
        let err = Error::UnknownMethod { service: service.into(), method: method.into() };
        Box::pin(std::future::ready(Err(err)))
    }
}
