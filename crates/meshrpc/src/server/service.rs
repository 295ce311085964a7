//! Published services and the local dispatch every incoming call goes through,
//! whatever door it came in by (mesh frame, HTTP, in-process channel).

use std::{
    any::Any,
    future::Future,
    panic::AssertUnwindSafe,
    pin::Pin,
    sync::{Arc, RwLock},
    task::{Context, Poll},
};

use bytes::Bytes;

use crate::{
    call::Items,
    call::{BoxFuture, Call, Dispatch, Reply},
    codec::Codec,
    context::CallContext,
    error::Error,
    spec::ServiceSpec,
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

    /// The implementation as an `Arc<dyn Trait>` inside the `Any`, for callers in this
    /// process (the colocated fast path). `None`: calls always go through `call`.
    fn local(&self) -> Option<Arc<dyn Any + Send + Sync>> {
        None
    }

    /// JSON Schemas of the methods' types (`#[meshrpc::service(schema)]`, feature
    /// `schema`): `{"service", "methods": [{"name", "args", "items", "value", "streams",
    /// "error"}], "components": {...}}`, references pointing into `components`. `None`:
    /// the service does not describe its types.
    fn schemas(&self) -> Option<String> {
        None
    }
}

/// The services and HTTP routers published on one node.
#[derive(Default)]
pub struct Registry {
    /// A node publishes a handful of services: a scan beats hashing the name per call.
    services: RwLock<Vec<Arc<dyn Service>>>,
    /// Their implementations for in-process callers, taken once at publish.
    locals: RwLock<Vec<(&'static ServiceSpec, Arc<dyn Any + Send + Sync>)>>,
    /// The node's concurrency limit, which every call run here passes first.
    limiter: std::sync::OnceLock<Arc<super::Limiter>>,
    /// The node's own methods that layers above add (the cluster's `view` and `rule`).
    node_methods: std::sync::OnceLock<Arc<dyn Dispatch>>,
    /// Where calls of services this node does not publish go (a cluster forwards them to
    /// a replica); without it they fail `unknown_service`.
    elsewhere: std::sync::OnceLock<Arc<dyn Dispatch>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.specs().iter().map(|s| s.name)).finish()
    }
}

impl Registry {
    /// Runs calls under `limiter` from now on.
    pub(crate) fn limit(&self, limiter: Arc<super::Limiter>) {
        let _ = self.limiter.set(limiter);
    }

    /// Answers the node's methods other than `stats` and `schema` with `methods`.
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    pub(crate) fn add_node_methods(&self, methods: Arc<dyn Dispatch>) {
        let _ = self.node_methods.set(methods);
    }

    /// Sends calls of services this node does not publish to `elsewhere`.
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    pub(crate) fn forward_unknown(&self, elsewhere: Arc<dyn Dispatch>) {
        let _ = self.elsewhere.set(elsewhere);
    }

    pub(crate) fn publish(&self, service: Arc<dyn Service>) {
        let spec = service.spec();
        let mut locals = self.locals.write().unwrap();
        locals.retain(|(s, _)| s.name != spec.name);
        if let Some(local) = service.local() {
            locals.push((spec, local));
        }
        let mut services = self.services.write().unwrap();
        services.retain(|s| s.spec().name != spec.name);
        services.push(service);
    }

    /// The in-process implementation of `spec`'s service, if one built from the same
    /// method set is published here.
    pub fn local(&self, spec: &'static ServiceSpec) -> Option<Arc<dyn Any + Send + Sync>> {
        let locals = self.locals.read().unwrap();
        let (published, local) = locals.iter().find(|(s, _)| s.name == spec.name)?;
        (std::ptr::eq(*published, spec) || published.fingerprint() == spec.fingerprint()).then(|| local.clone())
    }

    /// Specs of every published service.
    pub fn specs(&self) -> Vec<&'static ServiceSpec> {
        let mut specs: Vec<_> = self.services.read().unwrap().iter().map(|s| s.spec()).collect();
        specs.sort_by_key(|s| s.name);
        specs
    }

    /// The spec's version of the service of this name published here.
    pub fn spec_version(&self, service: &str) -> Option<&'static str> {
        self.services.read().unwrap().iter().map(|s| s.spec()).find(|s| s.name == service).map(|s| s.version)
    }

    /// True when a service of this name is published here.
    pub fn serves(&self, service: &str) -> bool {
        self.services.read().unwrap().iter().any(|s| s.spec().name == service)
    }

    /// The methods every node answers itself (service `meshrpc`): `stats` (its golden
    /// metrics) and `schema` (`{"service": name}`: that service's JSON Schemas, or `null`).
    fn node_method(&self, call: &Call) -> Result<Reply, Error> {
        match &*call.method {
            "stats" => crate::metrics::calls::answer(call),
            "schema" => {
                #[derive(serde::Deserialize)]
                struct Args {
                    service: String,
                }
                let args: Args = call.codec.decode_args(&call.payload)?;
                let service = self.find(&args.service).ok_or(Error::UnknownService { service: args.service })?;
                let schemas: Option<serde_json::Value> =
                    service.schemas().and_then(|text| serde_json::from_str(&text).ok());
                call.codec.encode(&schemas).map(Reply::Ok)
            }
            other => Err(Error::UnknownMethod { service: crate::spec::NODE_SERVICE.into(), method: other.to_owned() }),
        }
    }

    /// The JSON Schemas of a published service, if it describes its types.
    pub fn schemas(&self, service: &str) -> Option<serde_json::Value> {
        self.find(service)?.schemas().and_then(|text| serde_json::from_str(&text).ok())
    }

    fn find(&self, service: &str) -> Option<Arc<dyn Service>> {
        self.services.read().unwrap().iter().find(|s| s.spec().name == service).cloned()
    }
}

impl Dispatch for Registry {
    fn colocated(&self, spec: &'static ServiceSpec) -> Option<Arc<dyn Any + Send + Sync>> {
        self.local(spec)
    }

    fn colocated_now(&self, _service: &str) -> bool {
        true
    }

    fn has_method(&self, service: &str, method: &str) -> Option<bool> {
        if service == crate::spec::NODE_SERVICE {
            let more = self.node_methods.get().and_then(|more| more.has_method(service, method));
            return Some(matches!(method, "stats" | "schema") || more == Some(true));
        }
        match self.find(service) {
            Some(s) => Some(s.spec().method(method).is_some()),
            // A call this node would forward exists if a replica has the method.
            None => self.elsewhere.get().map_or(Some(false), |elsewhere| elsewhere.has_method(service, method)),
        }
    }

    fn dispatch(&self, call: Call) -> BoxFuture<Result<Reply, Error>> {
        let Some(service) = self.find(&call.service) else {
            if call.service == crate::spec::NODE_SERVICE {
                if let (Some(more), false) = (self.node_methods.get(), matches!(&*call.method, "stats" | "schema")) {
                    return more.dispatch(call);
                }
                return Box::pin(std::future::ready(self.node_method(&call)));
            }
            if let Some(elsewhere) = self.elsewhere.get() {
                return elsewhere.dispatch(call);
            }
            let err = Error::UnknownService { service: call.service.into_owned() };
            return Box::pin(std::future::ready(Err(err)));
        };
        let Some(method) = service.spec().method(&call.method) else {
            let err = Error::UnknownMethod { service: call.service.into_owned(), method: call.method.into_owned() };
            return Box::pin(std::future::ready(Err(err)));
        };
        // A method's own timeout holds whoever called (HTTP, the CLI, an old client).
        let deadline = match method.timeout {
            Some(timeout) => {
                let own = crate::clock::now() + timeout;
                Some(call.deadline.map_or(own, |d| d.min(own)))
            }
            None => call.deadline,
        };
        // Past the node's concurrency limit, nothing runs.
        let open_ended = deadline.is_none();
        let permit = match self.limiter.get().map(|l| l.admit(&call.service, &call.method, open_ended)).transpose() {
            Ok(permit) => permit,
            Err(e) => return Box::pin(std::future::ready(Err(e))),
        };
        let input = call.input.and_then(|i| i.take());
        // This call's span: the parent of the calls its handler makes.
        let span_id = crate::context::new_span_id();
        let (trace_id, parent) = (call.trace_id, call.parent_span);
        let exported = crate::trace::start(&call.service, &call.method, || {
            call.peer.as_ref().map_or_else(String::new, |p| p.to_string())
        });
        let span = tracing::enabled!(target: "meshrpc::call", tracing::Level::DEBUG).then(|| {
            tracing::debug_span!(
                target: "meshrpc::call", "call", service = %call.service, method = %call.method,
                trace_id = %format_args!("{trace_id:032x}"), span_id = %format_args!("{span_id:016x}")
            )
        });
        let handler = service.call(&call.method, call.codec, call.payload, input);
        let ctx = CallContext { deadline, trace_id, span_id, version: call.version };
        Box::pin(async move {
            let run = Self::run(handler, ctx, deadline);
            let result = match span {
                Some(span) => tracing::Instrument::instrument(run, span).await,
                None => run.await,
            };
            drop(permit);
            if let Some(span) = exported {
                span.end(trace_id, span_id, parent, false, crate::request_log::status_of(&result));
            }
            result
        })
    }
}

impl Registry {
    /// Runs a handler in its call's context until its deadline.
    async fn run(
        handler: BoxFuture<Result<Reply, Error>>,
        ctx: CallContext,
        deadline: Option<std::time::Instant>,
    ) -> Result<Reply, Error> {
        {
            // The handler runs inside its call context, so calls it makes inherit the
            // deadline; when the deadline passes, the handler future is dropped.
            let guarded = CatchUnwind { inner: ctx.scope(handler) };
            // An already-expired deadline stops the handler at its first await.
            let outcome = crate::context::until_deadline(guarded, deadline).await.map_err(|()| Error::Timeout)?;
            match outcome {
                // The deadline covers the whole stream.
                Ok(Ok(Reply::Stream(items))) => Ok(Reply::Stream(match deadline {
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
                    Err(Error::internal(message))
                }
            }
        }
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
