//! What the code `#[meshrpc::service]` generates calls: encoding a handler's answer,
//! taking a stream's items, the colocated fast path, and type checks with readable
//! errors. Reached as `meshrpc::__private`, never named by users (as tonic's `codegen`).

pub use async_trait::async_trait;
pub use bytes::Bytes;
pub use serde;

pub use crate::call::BoxFuture;
#[cfg(feature = "schema")]
pub use crate::schema::{schema_document, schema_generator, MethodSchema};
use crate::{
    call::{Items, Reply},
    Codec, Error,
};
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
pub fn colocated<T, E, F>(channel: &crate::Channel, service: &str, method: &str, call: F) -> ColocatedCall<F>
where
    E: From<Error>,
    F: std::future::Future<Output = Result<T, E>> + Unpin,
{
    let now = crate::clock::now();
    ColocatedCall::new(channel.call_context_at(false, now), now, service, method, call)
}

/// As [`colocated`], for a method answering with a stream: the deadline covers the
/// whole stream, unless the channel says `without_stream_deadline`.
pub async fn colocated_stream<T, TE, E, F>(
    channel: &crate::Channel,
    service: &str,
    method: &str,
    call: F,
) -> Result<crate::Stream<T, TE>, E>
where
    T: Send + 'static,
    TE: From<Error> + Send + 'static,
    E: From<Error>,
    F: std::future::Future<Output = Result<crate::Stream<T, TE>, E>> + Unpin,
{
    let now = crate::clock::now();
    let ctx = channel.call_context_at(true, now);
    let deadline = ctx.deadline;
    // A stream is one call: it stays in flight until the stream ends.
    let mut call = ColocatedCall::new(ctx, now, service, method, call);
    let (stream, log) = std::future::poll_fn(|cx| call.poll_keeping_log(cx)).await;
    let stream = stream?;
    let stream = match deadline {
        Some(deadline) => stream.until(deadline),
        None => stream,
    };
    Ok(match log {
        Some(log) => log.follow_typed(stream, deadline),
        None => stream,
    })
}

/// A call on the in-process implementation (see [`colocated`]): a hand-written future,
/// so that the fast path moves no nested state machines and sets a timer only for a
/// call that waits.
pub struct ColocatedCall<F> {
    /// The handler's future, until it ends or its deadline passes.
    call: Option<F>,
    ctx: crate::CallContext,
    /// Armed at the deadline once the call first waits.
    timer: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    /// Ended when the call is: with its result, or `cancelled` if it is dropped first.
    log: Option<crate::request_log::RequestLog>,
}

impl<F> ColocatedCall<F> {
    fn new(ctx: crate::CallContext, now: std::time::Instant, service: &str, method: &str, call: F) -> Self {
        let log = crate::request_log::RequestLog::begin_local(service, method, ctx.trace_id, now);
        ColocatedCall { call: Some(call), ctx, timer: None, log: Some(log) }
    }

    /// Polls the call in its context until its deadline; when it succeeds, its log is
    /// handed over (for the caller to end), else ended with how it failed.
    fn poll_keeping_log<T, E>(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<(Result<T, E>, Option<crate::request_log::RequestLog>)>
    where
        E: From<Error>,
        F: std::future::Future<Output = Result<T, E>> + Unpin,
    {
        use std::{future::Future, task::Poll};
        let call = self.call.as_mut().expect("a colocated call polled after it ended");
        let (out, status) = match crate::context::poll_in(&self.ctx, || std::pin::Pin::new(call).poll(cx)) {
            Poll::Ready(Ok(value)) => return Poll::Ready((Ok(value), self.log.take())),
            Poll::Ready(Err(e)) => (Err(e), "application"),
            Poll::Pending => {
                let Some(deadline) = self.ctx.deadline else { return Poll::Pending };
                let timer = self.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline.into())));
                if timer.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                self.drop_call();
                (Err(E::from(Error::Timeout)), "timeout")
            }
        };
        if let Some(log) = self.log.take() {
            log.end_with(status);
        }
        Poll::Ready((out, None))
    }
}

impl<T, E, F> std::future::Future for ColocatedCall<F>
where
    E: From<Error>,
    F: std::future::Future<Output = Result<T, E>> + Unpin,
{
    type Output = Result<T, E>;

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<T, E>> {
        self.poll_keeping_log(cx).map(|(out, log)| {
            if let Some(log) = log {
                log.end_with("ok");
            }
            out
        })
    }
}

impl<F> ColocatedCall<F> {
    /// Drops the handler in its context, at its deadline (its drop-time code sees the
    /// call's context, as a handler served remotely does).
    fn drop_call(&mut self) {
        if let Some(call) = self.call.take() {
            crate::context::poll_in(&self.ctx, || drop(call));
        }
    }
}

impl<F> Drop for ColocatedCall<F> {
    fn drop(&mut self) {
        // Dropped before it ended: its caller gave up. (The handler drops outside its
        // context here: this may run where no task-local can be set.)
        if let Some(log) = self.log.take() {
            log.end_with("cancelled");
        }
    }
}

/// The answer to a method the service does not have.
pub fn unknown_method(service: &str, method: &str) -> BoxFuture<Result<Reply, Error>> {
    let err = Error::UnknownMethod { service: service.into(), method: method.into() };
    Box::pin(std::future::ready(Err(err)))
}
