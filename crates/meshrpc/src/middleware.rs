//! Middleware, the tower way: wrap the calls a [`Channel`](crate::Channel) makes
//! ([`Channel::layer`](crate::Channel::layer)) or the calls a [`Server`](crate::Server)
//! answers ([`Server::layer`](crate::Server::layer)) with any
//! [`tower_layer::Layer`] whose service takes a [`Call`] and answers
//! `Result<Reply, Error>`: an auth check, a log line, a metric.
//!
//! ```
//! use std::task::{Context, Poll};
//! use meshrpc::{Error, call::{BoxFuture, Call, Reply}, middleware::DispatchService};
//!
//! /// Adds a token to every call (a client layer).
//! #[derive(Clone)]
//! struct AddToken<S>(S);
//!
//! impl<S> tower_service::Service<Call> for AddToken<S>
//! where
//!     S: tower_service::Service<Call, Response = Reply, Error = Error>,
//! {
//!     type Response = Reply;
//!     type Error = Error;
//!     type Future = S::Future;
//!     fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
//!         self.0.poll_ready(cx)
//!     }
//!     fn call(&mut self, mut call: Call) -> S::Future {
//!         call.metadata.insert("authorization", "Bearer s3cret");
//!         self.0.call(call)
//!     }
//! }
//!
//! # async fn demo(channel: meshrpc::Channel) {
//! let channel = channel.layer(tower_layer::layer_fn(AddToken));
//! # }
//! ```

use std::{
    future::poll_fn,
    sync::Arc,
    task::{Context, Poll},
};

use tower_layer::Layer;
use tower_service::Service;

use crate::{
    call::{BoxFuture, Call, Dispatch, Reply},
    error::Error,
};

/// What a layer wraps: the calls' next stop (the network, the local services, or the next
/// layer in) as a tower service.
#[derive(Clone)]
pub struct DispatchService {
    inner: Arc<dyn Dispatch>,
}

impl std::fmt::Debug for DispatchService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DispatchService")
    }
}

impl Service<Call> for DispatchService {
    type Response = Reply;
    type Error = Error;
    type Future = BoxFuture<Result<Reply, Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: Call) -> Self::Future {
        self.inner.dispatch(call)
    }
}

/// A tower service (layers around a [`DispatchService`]) as a [`Dispatch`].
struct Layered<S> {
    service: S,
    /// What the layers wrap (it knows which methods exist).
    inner: Arc<dyn Dispatch>,
}

impl<S> Dispatch for Layered<S>
where
    S: Service<Call, Response = Reply, Error = Error> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
{
    fn dispatch(&self, call: Call) -> BoxFuture<Result<Reply, Error>> {
        let mut service = self.service.clone();
        Box::pin(async move {
            poll_fn(|cx| service.poll_ready(cx)).await?;
            service.call(call).await
        })
    }

    fn has_method(&self, service: &str, method: &str) -> Option<bool> {
        self.inner.has_method(service, method)
    }

    fn entry_version(&self, service: &str, key: Option<&str>) -> Option<std::sync::Arc<str>> {
        self.inner.entry_version(service, key)
    }
}

/// Wraps `inner` in `layer`.
pub(crate) fn wrap<L>(inner: Arc<dyn Dispatch>, layer: &L) -> Arc<dyn Dispatch>
where
    L: Layer<DispatchService>,
    L::Service: Service<Call, Response = Reply, Error = Error> + Clone + Send + Sync + 'static,
    <L::Service as Service<Call>>::Future: Send + 'static,
{
    Arc::new(Layered { service: layer.layer(DispatchService { inner: inner.clone() }), inner })
}

/// A layer kept for later, type-erased (a cluster builder applies it when it starts).
#[derive(Clone)]
pub(crate) struct DynLayer(Arc<WrapFn>);

type WrapFn = dyn Fn(Arc<dyn Dispatch>) -> Arc<dyn Dispatch> + Send + Sync;

#[cfg_attr(not(feature = "cluster"), allow(dead_code))]
impl DynLayer {
    pub(crate) fn new<L>(layer: L) -> DynLayer
    where
        L: Layer<DispatchService> + Send + Sync + 'static,
        L::Service: Service<Call, Response = Reply, Error = Error> + Clone + Send + Sync + 'static,
        <L::Service as Service<Call>>::Future: Send + 'static,
    {
        DynLayer(Arc::new(move |inner| wrap(inner, &layer)))
    }

    pub(crate) fn apply(&self, inner: Arc<dyn Dispatch>) -> Arc<dyn Dispatch> {
        (self.0)(inner)
    }
}

impl std::fmt::Debug for DynLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DynLayer")
    }
}
