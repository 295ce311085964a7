//! Published services and the local dispatch every incoming call goes through,
//! whatever door it came in by (mesh frame, HTTP, in-process channel).

use std::{
    future::Future,
    panic::AssertUnwindSafe,
    pin::Pin,
    sync::{Arc, RwLock},
    task::{Context, Poll},
};

use bytes::Bytes;

use crate::{
    call::{BoxFuture, Call, Dispatch, Reply},
    codec::Codec,
    context::CallContext,
    error::Error,
    spec::ServiceSpec,
    stream::Items,
};

/// A service a node can publish. Generated as `XServer<T>` by `#[meshrpc::service]`;
/// implement it by hand only for dynamic services.
pub trait Service: Send + Sync + 'static {
    /// What the service offers.
    fn spec(&self) -> &'static ServiceSpec;
    /// Decodes the arguments (and the caller's items, for a method that takes a stream),
    /// runs the method and encodes its result.
    fn call(&self, method: &str, codec: Codec, payload: Bytes, input: Option<Items>)
        -> BoxFuture<Result<Reply, Error>>;
}

/// The services and HTTP routers published on one node.
#[derive(Default)]
pub struct Registry {
    /// A node publishes a handful of services: a scan beats hashing the name per call.
    services: RwLock<Vec<Arc<dyn Service>>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.specs().iter().map(|s| s.name)).finish()
    }
}

impl Registry {
    pub(crate) fn publish(&self, service: Arc<dyn Service>) {
        let mut services = self.services.write().unwrap();
        services.retain(|s| s.spec().name != service.spec().name);
        services.push(service);
    }

    /// Specs of every published service.
    pub fn specs(&self) -> Vec<&'static ServiceSpec> {
        let mut specs: Vec<_> = self.services.read().unwrap().iter().map(|s| s.spec()).collect();
        specs.sort_by_key(|s| s.name);
        specs
    }

    /// True when a service of this name is published here.
    pub fn serves(&self, service: &str) -> bool {
        self.services.read().unwrap().iter().any(|s| s.spec().name == service)
    }

    fn find(&self, service: &str) -> Option<Arc<dyn Service>> {
        self.services.read().unwrap().iter().find(|s| s.spec().name == service).cloned()
    }
}

impl Dispatch for Registry {
    fn dispatch(&self, call: Call) -> BoxFuture<Result<Reply, Error>> {
        let Some(service) = self.find(&call.service) else {
            let err = Error::UnknownService { service: call.service.into_owned() };
            return Box::pin(std::future::ready(Err(err)));
        };
        if service.spec().method(&call.method).is_none() {
            let err = Error::UnknownMethod { service: call.service.into_owned(), method: call.method.into_owned() };
            return Box::pin(std::future::ready(Err(err)));
        }
        let input = call.input.and_then(|i| i.take());
        let handler = service.call(&call.method, call.codec, call.payload, input);
        let ctx = CallContext { deadline: call.deadline, trace_id: call.trace_id };
        Box::pin(async move {
            // The handler runs inside its call context, so calls it makes inherit the
            // deadline; when the deadline passes, the handler future is dropped.
            let guarded = CatchUnwind { inner: ctx.scope(handler) };
            let mut guarded = std::pin::pin!(guarded);
            // A handler that answers on its first poll needs no timer (most do); one that
            // waits is dropped when the deadline passes. An already-expired deadline stops
            // the handler at its first await.
            let first = std::future::poll_fn(|cx| Poll::Ready(guarded.as_mut().poll(cx))).await;
            let outcome = match (first, call.deadline) {
                (Poll::Ready(outcome), _) => outcome,
                (Poll::Pending, Some(d)) => {
                    tokio::time::timeout_at(d.into(), guarded).await.map_err(|_| Error::Timeout)?
                }
                (Poll::Pending, None) => guarded.await,
            };
            match outcome {
                // The deadline covers the whole stream.
                Ok(Ok(Reply::Stream(items))) => Ok(Reply::Stream(match call.deadline {
                    Some(d) => items.until(d),
                    None => items,
                })),
                Ok(result) => result,
                Err(panic) => {
                    let message = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "handler panicked".into());
                    Err(Error::Internal { message })
                }
            }
        })
    }
}

pin_project_lite::pin_project! {
    /// Turns a panic inside a handler into an error answer instead of a lost call.
    struct CatchUnwind<F> {
        #[pin]
        inner: F,
    }
}

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, Box<dyn std::any::Any + Send>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.project().inner;
        match std::panic::catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Err(panic) => Poll::Ready(Err(panic)),
        }
    }
}
