//! A call in flight through the layers: what generated clients hand down, and what
//! every layer (a wire connection, a local registry, a balanced cluster channel)
//! knows how to answer.

use std::{
    any::Any,
    borrow::Cow,
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Instant,
};

use futures_core::Stream as FuturesStream;

use bytes::Bytes;

use crate::{codec::Codec, error::Error, identity::Identity, spec::ServiceSpec};

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
    /// Shared by every hop of one request (128 bits, as W3C Trace Context).
    pub trace_id: u128,
    /// The caller's span, the parent of this call's (0: none).
    pub parent_span: u64,
    /// Sticky-session key: calls with the same key go to the same replica.
    pub key: Option<Arc<str>>,
    /// Only replicas running this version of the service may answer (a pinned call:
    /// testing a canary, `meshrpc-version` at the gateway, an application split). It
    /// travels with the call (as the metadata entry [`VERSION_METADATA`]), so the calls
    /// its handler makes are pinned to it too.
    pub version: Option<Arc<str>>,
    /// Name/value pairs that travel with the call (set by client layers, read by server
    /// layers: an auth token, a tenant).
    pub metadata: Metadata,
    /// Encoded arguments.
    pub payload: Bytes,
    /// The caller's stream of items, for a method that takes one (client and
    /// bidirectional streams).
    pub input: Option<Input>,
    /// Who sent the call, as verified by the node it arrived at: the caller's certificate
    /// (mutual TLS), or a bearer token's subject vouched for by a gateway. `None` for calls
    /// made in-process and over plaintext. Set by the node, never taken from the wire.
    pub peer: Option<Arc<Identity>>,
}

impl Call {
    /// A call of `service.method` with encoded arguments, JSON, no deadline, a new trace.
    pub fn new(service: impl Into<Cow<'static, str>>, method: impl Into<Cow<'static, str>>, payload: Bytes) -> Call {
        Call {
            service: service.into(),
            method: method.into(),
            codec: Codec::Json,
            deadline: None,
            trace_id: crate::context::new_trace_id(),
            parent_span: 0,
            key: None,
            version: None,
            metadata: Metadata::default(),
            payload,
            input: None,
            peer: None,
        }
    }

    /// The same call with a stream of items for a method that takes one.
    pub fn with_input(mut self, items: Items) -> Call {
        self.input = Some(Input::new(items));
        self
    }
}

/// The metadata entry a pinned call's version travels in (taken out of the metadata on
/// arrival: a server layer sees it as [`Call::version`]).
pub const VERSION_METADATA: &str = "meshrpc-version";

/// Name/value pairs carried with a call, in order. Names are lower-case (they are
/// lower-cased on insert); at most [`Metadata::MAX_ENTRIES`] entries, names of at most
/// 255 bytes and values of at most 65,535 bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metadata(Vec<(String, String)>);

impl Metadata {
    /// Most entries one call carries.
    pub const MAX_ENTRIES: usize = 64;

    /// Sets `name` to `value`, replacing an earlier value of the same name.
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<String>) {
        let name = name.into().to_ascii_lowercase();
        let value = value.into();
        match self.0.iter_mut().find(|(n, _)| *n == name) {
            Some(entry) => entry.1 = value,
            None => self.0.push((name, value)),
        }
    }

    /// The value of `name` (any case), if set.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The entries, in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when nothing is set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Checks the bounds the wire puts on metadata.
    pub(crate) fn check(&self) -> Result<(), Error> {
        if self.0.len() > Self::MAX_ENTRIES {
            return Err(Error::bad_request(format!("more than {} metadata entries", Self::MAX_ENTRIES)));
        }
        match self.0.iter().find(|(n, v)| n.is_empty() || n.len() > 255 || v.len() > usize::from(u16::MAX)) {
            Some((n, _)) => {
                Err(Error::bad_request(format!("metadata `{n}`: names take 1 to 255 bytes, values at most 65535")))
            }
            None => Ok(()),
        }
    }

    /// Removes `name` (any case), giving its value.
    pub fn remove(&mut self, name: &str) -> Option<String> {
        let at = self.0.iter().position(|(n, _)| n.eq_ignore_ascii_case(name))?;
        Some(self.0.remove(at).1)
    }

    pub(crate) fn push_raw(&mut self, name: String, value: String) {
        self.0.push((name, value));
    }
}

/// A successful exchange: the handler answered, with its `Ok` or its `Err`.
#[derive(Debug)]
pub enum Reply {
    /// Encoded `Ok` value.
    Ok(Bytes),
    /// Encoded application error (the trait's `E`).
    AppError(Bytes),
    /// The `Ok` value is a stream: its encoded items (a streaming method's answer).
    Stream(Items),
}

impl PartialEq for Reply {
    /// Values compare by their bytes; streams are never equal (their items are not here
    /// yet).
    fn eq(&self, other: &Reply) -> bool {
        match (self, other) {
            (Reply::Ok(a), Reply::Ok(b)) | (Reply::AppError(a), Reply::AppError(b)) => a == b,
            _ => false,
        }
    }
}

/// Anything that answers calls: a connection to a peer, the local registry of published
/// services, or a cluster channel balancing over replicas.
pub trait Dispatch: Send + Sync + 'static {
    /// Answers one call.
    fn dispatch(&self, call: Call) -> BoxFuture<Result<Reply, Error>>;

    /// The in-process implementation of `spec`'s service (an `Arc<dyn Trait>` inside the
    /// `Any`), when calls through this target may go straight to it: the colocated fast
    /// path, no encoding and no socket. `None` by default.
    fn colocated(&self, spec: &'static ServiceSpec) -> Option<Arc<dyn Any + Send + Sync>> {
        let _ = spec;
        None
    }

    /// Whether a call of `service` takes the colocated path now.
    fn colocated_now(&self, service: &str) -> bool {
        let _ = service;
        false
    }

    /// The version a request entering the application through this target is pinned to
    /// (an application split chooses it, by `key` when sticky), so that the front door
    /// can name it in its answer; `None` by default, and when no split is in force.
    fn entry_version(&self, service: &str, key: Option<&str>) -> Option<Arc<str>> {
        let _ = (service, key);
        None
    }

    /// Whether `service.method` exists behind this target: `Some(false)` when it knows a
    /// call of it would end `unknown_service` or `unknown_method`, `None` when it cannot
    /// tell (the default). Calls of methods that do not exist take no metrics series.
    fn has_method(&self, service: &str, method: &str) -> Option<bool> {
        let _ = (service, method);
        None
    }
}

impl<D: Dispatch + ?Sized> Dispatch for Arc<D> {
    fn dispatch(&self, call: Call) -> BoxFuture<Result<Reply, Error>> {
        (**self).dispatch(call)
    }
    fn colocated(&self, spec: &'static ServiceSpec) -> Option<Arc<dyn Any + Send + Sync>> {
        (**self).colocated(spec)
    }
    fn colocated_now(&self, service: &str) -> bool {
        (**self).colocated_now(service)
    }
    fn has_method(&self, service: &str, method: &str) -> Option<bool> {
        (**self).has_method(service, method)
    }
    fn entry_version(&self, service: &str, key: Option<&str>) -> Option<Arc<str>> {
        (**self).entry_version(service, key)
    }
}

/// Encoded items as every layer carries them: each `Ok(Reply::Ok(bytes))` is an item in
/// the call's codec; the stream ends after `None` (cleanly), `Ok(Reply::AppError(bytes))`
/// (the item error type, encoded) or `Err(error)`.
pub struct Items {
    inner: Pin<Box<dyn ItemSource>>,
}

/// What [`Items::poll_into`] found.
pub(crate) enum Polled {
    /// The next item, encoded onto the end of the buffer it was given.
    Appended,
    /// The next item (or end) as [`Items::poll_next`] gives it.
    Next(Option<Result<Reply, Error>>),
}

/// A source of encoded items. Sources that encode (typed streams, and the layers that
/// only pass items on) can put the next item straight into the sender's frame buffer:
/// a stream of small items then costs no buffer, no `Bytes` and no copy per item.
pub(crate) trait ItemSource: FuturesStream<Item = Result<Reply, Error>> + Send {
    /// The next item, appended to `out` if this source can encode it there (on any other
    /// outcome `out` is left as it was).
    fn poll_into(self: Pin<&mut Self>, cx: &mut Context<'_>, out: &mut bytes::BytesMut) -> Poll<Polled> {
        let _ = out;
        self.poll_next(cx).map(Polled::Next)
    }
}

pin_project_lite::pin_project! {
    /// Any stream of encoded items (its items come as `Bytes`).
    struct Plain<S> {
        #[pin]
        inner: S,
    }
}

impl<S: FuturesStream<Item = Result<Reply, Error>>> FuturesStream for Plain<S> {
    type Item = Result<Reply, Error>;
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.project().inner.poll_next(cx)
    }
}

impl<S: FuturesStream<Item = Result<Reply, Error>> + Send> ItemSource for Plain<S> {}

impl std::fmt::Debug for Items {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Items")
    }
}

impl Items {
    /// Encoded items from any stream of them.
    pub fn new(inner: impl FuturesStream<Item = Result<Reply, Error>> + Send + 'static) -> Self {
        Items { inner: Box::pin(Plain { inner }) }
    }

    /// Items from a source that may encode them straight into a sender's buffer.
    pub(crate) fn from_source(source: impl ItemSource + 'static) -> Self {
        Items { inner: Box::pin(source) }
    }

    /// The next item or end.
    pub async fn next(&mut self) -> Option<Result<Reply, Error>> {
        std::future::poll_fn(|cx| self.inner.as_mut().poll_next(cx)).await
    }

    /// The next item, appended to `out` when its source encodes it there (see
    /// [`ItemSource::poll_into`]).
    pub(crate) fn poll_into(&mut self, cx: &mut Context<'_>, out: &mut bytes::BytesMut) -> Poll<Polled> {
        self.inner.as_mut().poll_into(cx, out)
    }
}

impl FuturesStream for Items {
    type Item = Result<Reply, Error>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

/// A caller's items for one call, taken by whichever attempt sends the call (a call is
/// cloned when a cluster retries it elsewhere; its items can go out only once).
#[derive(Clone)]
pub struct Input(Arc<Mutex<Option<Items>>>);

impl std::fmt::Debug for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Input")
    }
}

impl Input {
    /// Items to send with a call.
    pub fn new(items: Items) -> Self {
        Input(Arc::new(Mutex::new(Some(items))))
    }

    /// The items, if no attempt took them yet.
    pub fn take(&self) -> Option<Items> {
        self.0.lock().unwrap().take()
    }

    /// True while no attempt took the items.
    pub fn available(&self) -> bool {
        self.0.lock().unwrap().is_some()
    }
}
