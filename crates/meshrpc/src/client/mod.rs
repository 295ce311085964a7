//! The calling side used by generated clients: a [`Channel`] carries calls to
//! whatever answers them (a connection, a cluster's balanced replicas, or the local
//! registry) and applies per-call options.

use std::{
    borrow::Cow,
    sync::Arc,
    time::{Duration, Instant},
};

use serde::{de::DeserializeOwned, Serialize};

use crate::{
    call::{Call, Dispatch, Reply},
    call::{Input, Items},
    codec::Codec,
    context::{new_trace_id, CallContext},
    error::Error,
    stream::{self, Stream},
};

/// Timeout of a call when nothing else sets one.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Per-call options carried by a channel.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct CallOptions {
    /// `None`: [`DEFAULT_TIMEOUT`].
    pub timeout: Option<Duration>,
    /// How arguments and answers are encoded.
    pub codec: Codec,
    /// Sticky-session key.
    pub key: Option<Arc<str>>,
    /// Only replicas running this version of the service answer.
    pub version: Option<Arc<str>>,
    /// Streaming calls run without the timeout: the stream lasts until either side ends
    /// it (else the timeout covers the whole stream).
    pub unbounded_streams: bool,
}

/// A handle for making calls. Cheap to clone.
#[derive(Clone)]
pub struct Channel {
    target: Arc<dyn Dispatch>,
    options: CallOptions,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel").field("options", &self.options).finish_non_exhaustive()
    }
}

impl Channel {
    /// A channel over anything that answers calls.
    pub fn new(target: impl Dispatch) -> Self {
        Channel { target: Arc::new(target), options: CallOptions::default() }
    }

    /// The same channel with a different timeout for each call.
    pub fn with_timeout(&self, timeout: Duration) -> Self {
        let mut c = self.clone();
        c.options.timeout = Some(timeout);
        c
    }

    /// The same channel with each call's timeout at most `max`: how a method's own
    /// `#[meshrpc(timeout = "..")]` applies (a caller may shorten it, never extend it).
    pub fn with_timeout_at_most(&self, max: Duration) -> Self {
        let mut c = self.clone();
        c.options.timeout = Some(self.options.timeout.unwrap_or(DEFAULT_TIMEOUT).min(max));
        c
    }

    /// The same channel with another codec.
    pub fn with_codec(&self, codec: Codec) -> Self {
        let mut c = self.clone();
        c.options.codec = codec;
        c
    }

    /// The same channel with a sticky-session key: every call with the same key goes
    /// to the same replica while it lives.
    pub fn with_key(&self, key: impl Into<Arc<str>>) -> Self {
        let mut c = self.clone();
        c.options.key = Some(key.into());
        c
    }

    /// The same channel with every call pinned to replicas running `version` of their
    /// service (a split rule does not apply to pinned calls).
    pub fn with_version(&self, version: impl Into<Arc<str>>) -> Self {
        let mut c = self.clone();
        c.options.version = Some(version.into());
        c
    }

    /// The same channel with every call going through `layer` first (tower middleware:
    /// add metadata, log, count). Layers added later run first.
    pub fn layer<L>(&self, layer: L) -> Channel
    where
        L: tower_layer::Layer<crate::middleware::DispatchService>,
        L::Service: tower_service::Service<Call, Response = Reply, Error = Error> + Clone + Send + Sync + 'static,
        <L::Service as tower_service::Service<Call>>::Future: Send + 'static,
    {
        Channel { target: crate::middleware::wrap(self.target.clone(), &layer), options: self.options.clone() }
    }

    /// The same channel whose streaming calls have no deadline of their own: a stream
    /// lasts until either side ends it or the caller drops it (a deadline inherited from
    /// the call being served still applies). Without this, the timeout covers the whole
    /// stream.
    pub fn without_stream_deadline(&self) -> Self {
        let mut c = self.clone();
        c.options.unbounded_streams = true;
        c
    }

    /// The options every call through this channel gets.
    pub fn options(&self) -> &CallOptions {
        &self.options
    }

    /// Calls with pre-encoded arguments. The deadline is the sooner of this channel's
    /// timeout and the deadline of the call being served, if any.
    pub async fn call_raw(
        &self,
        service: impl Into<Cow<'static, str>>,
        method: impl Into<Cow<'static, str>>,
        payload: bytes::Bytes,
    ) -> Result<Reply, Error> {
        self.target.dispatch(self.new_call(service.into(), method.into(), payload, None, false)).await
    }

    /// Calls with pre-encoded arguments and items, expecting a stream (`streaming`: the
    /// answer may be a stream, so [`without_stream_deadline`](Self::without_stream_deadline)
    /// applies).
    pub async fn call_raw_items(
        &self,
        service: impl Into<Cow<'static, str>>,
        method: impl Into<Cow<'static, str>>,
        payload: bytes::Bytes,
        input: Option<Items>,
        streaming: bool,
    ) -> Result<Reply, Error> {
        self.target.dispatch(self.new_call(service.into(), method.into(), payload, input, streaming)).await
    }

    /// The context a call through this channel runs in: the sooner of its timeout and the
    /// deadline of the call being served, and that call's trace (or a new one).
    pub fn call_context(&self, streaming: bool) -> CallContext {
        self.call_context_at(streaming, crate::clock::now())
    }

    /// [`call_context`](Self::call_context) as of `now`.
    pub(crate) fn call_context_at(&self, streaming: bool, now: Instant) -> CallContext {
        let ctx = CallContext::current();
        let own = (!(streaming && self.options.unbounded_streams))
            .then(|| now + self.options.timeout.unwrap_or(DEFAULT_TIMEOUT));
        let deadline = match (ctx.as_ref().and_then(|c| c.deadline), own) {
            (Some(inherited), Some(own)) => Some(inherited.min(own)),
            (inherited, own) => inherited.or(own),
        };
        // A version this channel pins its calls to wins over the one the request carries.
        match ctx {
            Some(c) => CallContext {
                deadline,
                trace_id: c.trace_id,
                span_id: c.span_id,
                version: self.options.version.clone().or(c.version),
            },
            None => {
                CallContext { deadline, trace_id: new_trace_id(), span_id: 0, version: self.options.version.clone() }
            }
        }
    }

    /// The in-process implementation of `spec`'s service, if calls through this channel
    /// may go straight to it (see [`Dispatch::colocated`]). A channel with layers never
    /// does: its layers must see every call.
    pub fn colocated(&self, spec: &'static crate::spec::ServiceSpec) -> Option<Arc<dyn std::any::Any + Send + Sync>> {
        self.target.colocated(spec)
    }

    /// Whether a call of `service` through this channel takes the colocated path now
    /// (never for a call pinned to a version).
    pub fn colocated_now(&self, service: &str) -> bool {
        self.options.version.is_none() && self.target.colocated_now(service)
    }

    fn new_call(
        &self,
        service: Cow<'static, str>,
        method: Cow<'static, str>,
        payload: bytes::Bytes,
        input: Option<Items>,
        streaming: bool,
    ) -> Call {
        let ctx = self.call_context(streaming);
        Call {
            service,
            method,
            codec: self.options.codec,
            deadline: ctx.deadline,
            trace_id: ctx.trace_id,
            parent_span: ctx.span_id,
            key: self.options.key.clone(),
            version: ctx.version,
            metadata: Default::default(),
            payload,
            input: input.map(Input::new),
            peer: None,
        }
    }

    /// Encodes a typed stream in this channel's codec, as a call's items.
    pub fn items<I, IE>(&self, items: Stream<I, IE>) -> Items
    where
        I: Serialize + Send + 'static,
        IE: Serialize + Send + 'static,
    {
        stream::encode(self.options.codec, items)
    }

    /// A typed call, as generated clients make it: transport failures become the
    /// caller's own error type through `From<meshrpc::Error>`.
    pub async fn call<A, T, E>(&self, service: &'static str, method: &'static str, args: &A) -> Result<T, E>
    where
        A: Serialize,
        T: DeserializeOwned,
        E: DeserializeOwned + From<Error>,
    {
        self.call_with(service, method, args, None).await
    }

    /// A typed call sending `input` (a method that takes a stream), answered with a value.
    pub async fn call_with<A, T, E>(
        &self,
        service: &'static str,
        method: &'static str,
        args: &A,
        input: Option<Items>,
    ) -> Result<T, E>
    where
        A: Serialize,
        T: DeserializeOwned,
        E: DeserializeOwned + From<Error>,
    {
        let codec = self.options.codec;
        let payload = codec.encode(args)?;
        match self.call_raw_items(service, method, payload, input, false).await? {
            Reply::Ok(bytes) => codec.decode(&bytes).map_err(|e| E::from(answer_error(e))),
            Reply::AppError(bytes) => Err(codec.decode::<E>(&bytes).map_err(answer_error)?),
            Reply::Stream(_) => Err(E::from(Error::protocol("a stream where a value was expected"))),
        }
    }

    /// A typed call answered with a stream (sending `input` for a bidirectional one).
    pub async fn open<A, T, TE, E>(
        &self,
        service: &'static str,
        method: &'static str,
        args: &A,
        input: Option<Items>,
    ) -> Result<Stream<T, TE>, E>
    where
        A: Serialize,
        T: DeserializeOwned + Send + 'static,
        TE: DeserializeOwned + From<Error> + Send + 'static,
        E: DeserializeOwned + From<Error>,
    {
        let codec = self.options.codec;
        let payload = codec.encode(args)?;
        match self.call_raw_items(service, method, payload, input, true).await? {
            Reply::Stream(items) => Ok(stream::decode(codec, items)),
            Reply::AppError(bytes) => Err(codec.decode::<E>(&bytes).map_err(answer_error)?),
            Reply::Ok(_) => Err(E::from(Error::protocol("a value where a stream was expected"))),
        }
    }
}

/// An answer we cannot decode means the peer speaks another version of the trait.
fn answer_error(e: Error) -> Error {
    Error::protocol(format!("undecodable answer: {e}"))
}

impl Dispatch for Channel {
    fn dispatch(&self, call: Call) -> crate::call::BoxFuture<Result<Reply, Error>> {
        self.target.dispatch(call)
    }
    fn colocated(&self, spec: &'static crate::spec::ServiceSpec) -> Option<Arc<dyn std::any::Any + Send + Sync>> {
        self.target.colocated(spec)
    }
    fn colocated_now(&self, service: &str) -> bool {
        self.target.colocated_now(service)
    }
    fn has_method(&self, service: &str, method: &str) -> Option<bool> {
        self.target.has_method(service, method)
    }
    fn entry_version(&self, service: &str, key: Option<&str>) -> Option<Arc<str>> {
        self.target.entry_version(service, key)
    }
}

impl<D: Dispatch> From<Arc<D>> for Channel {
    fn from(target: Arc<D>) -> Self {
        Channel { target, options: CallOptions::default() }
    }
}

impl From<crate::transport::Connection> for Channel {
    fn from(conn: crate::transport::Connection) -> Self {
        Channel::new(conn)
    }
}

impl From<Arc<dyn Dispatch>> for Channel {
    fn from(target: Arc<dyn Dispatch>) -> Self {
        Channel { target, options: CallOptions::default() }
    }
}
