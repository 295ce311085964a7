//! A call in flight through the layers: what generated clients hand down, and what
//! every layer (a wire connection, a local registry, a balanced cluster channel)
//! knows how to answer.

use std::{borrow::Cow, future::Future, pin::Pin, sync::Arc, time::Instant};

use bytes::Bytes;

use crate::{Codec, Error};

/// A boxed, sendable future: the currency between layers.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// One call: target, encoded arguments and what travels with them.
#[derive(Debug, Clone)]
pub struct Call {
    /// The service name.
    pub service: Cow<'static, str>,
    /// The method name.
    pub method: Cow<'static, str>,
    /// How `payload` is encoded (and the answer will be).
    pub codec: Codec,
    /// When the caller stops waiting.
    pub deadline: Option<Instant>,
    /// Shared by every hop of one request.
    pub trace_id: u64,
    /// Sticky-session key: calls with the same key go to the same replica.
    pub key: Option<Arc<str>>,
    /// Encoded arguments.
    pub payload: Bytes,
}

/// A successful exchange: the handler answered, with its `Ok` or its `Err`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Encoded `Ok` value.
    Ok(Bytes),
    /// Encoded application error (the trait's `E`).
    AppError(Bytes),
}

/// Anything that answers calls: a connection to a peer, the local registry of published
/// services, or a cluster channel balancing over replicas.
pub trait Dispatch: Send + Sync + 'static {
    /// Answers one call.
    fn dispatch(&self, call: Call) -> BoxFuture<Result<Reply, Error>>;
}

impl<D: Dispatch + ?Sized> Dispatch for Arc<D> {
    fn dispatch(&self, call: Call) -> BoxFuture<Result<Reply, Error>> {
        (**self).dispatch(call)
    }
}
