//! # meshrpc
//!
//! Automatic RPC and service mesh for Rust services: a trait is the contract.
//!
//! ```ignore
//! #[meshrpc::service]
//! pub trait Greeter {
//!     async fn greet(&self, name: String) -> Result<String, GreetError>;
//! }
//! ```
//!
//! generates `GreeterServer<T>` (publish it on a node), `GreeterClient` (implements
//! `Greeter`, so a remote value replaces a local one) and `GreeterClient::SPEC`.
//! Implementations use `#[meshrpc::async_trait]` on their `impl` block, as with tonic.
//! See the README for the whole walkthrough.

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
        let err = Error::UnknownMethod {
            service: service.into(),
            method: method.into(),
        };
        Box::pin(std::future::ready(Err(err)))
    }
}
