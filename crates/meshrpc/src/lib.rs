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
//! // A node serving it (mesh frames, HTTP/1.1 and h2c on one port)...
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
//! For a mesh of nodes see [`Cluster`]; for an HTTP front door, [`Gateway`]. The README
//! walks through the whole story.

pub mod call;
pub mod client;
pub mod cluster;
pub mod codec;
pub mod context;
pub mod error;
pub mod gateway;
pub mod logging;
pub mod server;
pub mod spec;
pub mod wire;

pub use async_trait::async_trait;
pub use call::{Call, Dispatch, Reply};
pub use client::{CallOptions, Channel};
pub use cluster::{Cluster, ClusterBuilder, Policy};
pub use codec::Codec;
pub use context::CallContext;
pub use error::Error;
pub use gateway::Gateway;
pub use meshrpc_macros::service;
pub use server::{serve_http, Server, ServerConfig, Service, ShutdownHandle};
pub use spec::{MethodSpec, ServiceSpec};
pub use wire::{connect, Connection};

/// Items generated code refers to. Not part of the public API.
#[doc(hidden)]
pub mod __private {
    pub use async_trait::async_trait;
    pub use bytes::Bytes;
    pub use serde;

    use crate::{call::BoxFuture, Codec, Error, Reply};

    /// Encodes a handler's result in the codec it was called with.
    pub fn reply<T: serde::Serialize, E: serde::Serialize>(codec: Codec, result: Result<T, E>) -> Result<Reply, Error> {
        match result {
            Ok(v) => codec.encode(&v).map(Reply::Ok),
            Err(e) => codec.encode(&e).map(Reply::AppError),
        }
    }

    /// A service's error type must carry transport failures and cross the network.
    pub fn assert_error_type<E: From<Error> + serde::Serialize + serde::de::DeserializeOwned>() {}

    pub fn unknown_method(service: &str, method: &str) -> BoxFuture<Result<Reply, Error>> {
        let err = Error::UnknownMethod { service: service.into(), method: method.into() };
        Box::pin(std::future::ready(Err(err)))
    }
}
