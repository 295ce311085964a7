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
pub async fn colocated<T, E: From<Error>>(
    channel: &crate::Channel,
    service: &str,
    method: &str,
    call: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, E> {
    let now = std::time::Instant::now();
    colocated_unary(channel.call_context_at(false, now), now, service, method, call).await
}

/// As [`colocated`], for a method answering with a stream: the deadline covers the
/// whole stream, unless the channel says `without_stream_deadline`.
pub async fn colocated_stream<T, TE, E>(
    channel: &crate::Channel,
    service: &str,
    method: &str,
    call: impl std::future::Future<Output = Result<crate::Stream<T, TE>, E>>,
) -> Result<crate::Stream<T, TE>, E>
where
    T: Send + 'static,
    TE: From<Error> + Send + 'static,
    E: From<Error>,
{
    let now = std::time::Instant::now();
    let ctx = channel.call_context_at(true, now);
    let deadline = ctx.deadline;
    // A stream is one call: it stays in flight until the stream ends.
    let (stream, log) = run_colocated(ctx, now, service, method, call).await;
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

async fn colocated_unary<T, E: From<Error>>(
    ctx: crate::CallContext,
    now: std::time::Instant,
    service: &str,
    method: &str,
    call: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, E> {
    let (result, log) = run_colocated(ctx, now, service, method, call).await;
    if let Some(log) = log {
        log.end_with("ok");
    }
    result
}

/// Runs the call until its deadline; its log, if it succeeded (for the caller to end),
/// else ended with how it failed.
async fn run_colocated<T, E: From<Error>>(
    ctx: crate::CallContext,
    now: std::time::Instant,
    service: &str,
    method: &str,
    call: impl std::future::Future<Output = Result<T, E>>,
) -> (Result<T, E>, Option<crate::request_log::RequestLog>) {
    let log = crate::request_log::RequestLog::begin_local(service, method, ctx.trace_id, now);
    let deadline = ctx.deadline;
    match crate::context::until_deadline(ctx.scope(call), deadline).await {
        Ok(Ok(value)) => (Ok(value), Some(log)),
        Ok(Err(e)) => {
            log.end_with("application");
            (Err(e), None)
        }
        Err(()) => {
            log.end_with("timeout");
            (Err(E::from(Error::Timeout)), None)
        }
    }
}

/// The answer to a method the service does not have.
pub fn unknown_method(service: &str, method: &str) -> BoxFuture<Result<Reply, Error>> {
    let err = Error::UnknownMethod { service: service.into(), method: method.into() };
    Box::pin(std::future::ready(Err(err)))
}
