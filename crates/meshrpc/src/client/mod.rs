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
    codec::Codec,
    context::{new_trace_id, CallContext},
    error::Error,
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
        let ctx = CallContext::current();
        let own = Instant::now() + self.options.timeout.unwrap_or(DEFAULT_TIMEOUT);
        let deadline = match ctx.and_then(|c| c.deadline) {
            Some(inherited) => inherited.min(own),
            None => own,
        };
        let call = Call {
            service: service.into(),
            method: method.into(),
            codec: self.options.codec,
            deadline: Some(deadline),
            trace_id: ctx.map_or_else(new_trace_id, |c| c.trace_id),
            key: self.options.key.clone(),
            metadata: Default::default(),
            payload,
            peer: None,
        };
        self.target.dispatch(call).await
    }

    /// A typed call, as generated clients make it: transport failures become the
    /// caller's own error type through `From<meshrpc::Error>`.
    pub async fn call<A, T, E>(&self, service: &'static str, method: &'static str, args: &A) -> Result<T, E>
    where
        A: Serialize,
        T: DeserializeOwned,
        E: DeserializeOwned + From<Error>,
    {
        let codec = self.options.codec;
        let payload = codec.encode(args)?;
        match self.call_raw(service, method, payload).await? {
            Reply::Ok(bytes) => codec.decode(&bytes).map_err(|e| E::from(answer_error(e))),
            Reply::AppError(bytes) => Err(codec.decode::<E>(&bytes).map_err(answer_error)?),
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
