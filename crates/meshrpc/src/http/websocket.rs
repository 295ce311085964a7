//! Calls over a WebSocket (`GET /{service}/{method}` with `Upgrade: websocket`), for
//! methods that take a stream of items: bidirectional streams, and client streams.
//!
//! The client's first text message is the arguments object; each later text message is
//! one item; an empty text message ends its items (WebSocket has no half-close: a close
//! frame from the client ends the whole call). The node sends each answer item as a text
//! message `{"data":<item>}` (a method answering with a value sends that one), then
//! closes (1000). A failure is sent as `{"data":null,"errors":[{"code":…,"message":…}]}`
//! before the close, whose reason is the message: 1008 for the client's mistakes (a method
//! that takes no stream, one that does not exist, arguments that do not fit, a denied
//! call), 1007 when the client's message was not JSON, 1011 when the node failed. The node pings
//! after [`HEARTBEAT`](super::streams::HEARTBEAT) without traffic. A call over a
//! WebSocket has no deadline unless the `meshrpc-timeout-ms` header of the upgrade sets
//! one: the client ends it by closing.

use std::sync::Arc;

use axum::{
    extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade},
    http::{header, HeaderMap},
    response::Response,
};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};

use super::{
    driver::UpgradeTie,
    envelope::{app_error_message, error_entry, errors_body, http_caller},
    streams::HEARTBEAT,
};
use crate::{
    call::{Call, Dispatch, Reply},
    call::{Input, Items},
    error::Error,
    limits::HttpLimits,
    request_log::RequestLog,
};

/// Close codes the node uses (RFC 6455, 7.4.1).
const NORMAL: u16 = 1000;
const INVALID_DATA: u16 = 1007;
/// The client asked for what the node does not do: a method that takes no stream, one that
/// does not exist, arguments that do not fit, a call the policy denies.
const POLICY_VIOLATION: u16 = 1008;
const INTERNAL: u16 = 1011;

/// The close code a failed call ends its session with: the client's mistakes are 1008,
/// not 1011 (which says the node failed).
fn close_code(e: &Error) -> u16 {
    match e.code() {
        "bad_request" | "unknown_service" | "unknown_method" | "permission_denied" | "too_large" => POLICY_VIOLATION,
        _ => INTERNAL,
    }
}

/// True when the request asks to upgrade to a WebSocket.
pub(crate) fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.get(header::UPGRADE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// Answers the upgrade; `call` (admitted already, without arguments) runs once the
/// client's first message brings them. The session holds `tie` (the connection it came
/// from counts until it ends) and ends if that connection's task is stopped.
pub(crate) fn answer(
    ws: WebSocketUpgrade,
    dispatch: Arc<dyn Dispatch>,
    call: Call,
    limits: HttpLimits,
    tie: Option<UpgradeTie>,
) -> Response {
    ws.max_message_size(limits.max_body).on_upgrade(move |socket| async move {
        match tie {
            Some(mut tie) => {
                tokio::select! {
                    _ = session(socket, dispatch, call, limits) => {}
                    _ = tie.abandoned() => tracing::debug!("WebSocket session stopped with its connection"),
                }
            }
            None => session(socket, dispatch, call, limits).await,
        }
    })
}

async fn session(socket: WebSocket, dispatch: Arc<dyn Dispatch>, mut call: Call, limits: HttpLimits) {
    let (mut out, mut incoming) = socket.split();
    let first = tokio::time::timeout(limits.body_timeout, incoming.next()).await;
    let args = match first {
        Ok(Some(Ok(Message::Text(text)))) if is_json(text.as_bytes()) => Bytes::from(text),
        Err(_) => {
            let why = Error::bad_request(format!("no arguments message within {:?}", limits.body_timeout));
            return close(&mut out, Err(why), INVALID_DATA).await;
        }
        Ok(None | Some(Err(_)) | Some(Ok(Message::Close(_)))) => return,
        Ok(Some(Ok(_))) => {
            let why = Error::bad_request("the first message must be the arguments, a JSON object in a text message");
            return close(&mut out, Err(why), INVALID_DATA).await;
        }
    };
    // The client's items go through a small queue: when the call reads them slowly, the
    // socket is not read and the client's sending slows down.
    let (items_tx, items) = Items::channel(16);
    call.payload = args;
    call.input = Some(Input::new(items));
    let reading = tokio::spawn(async move {
        let mut index = 0u64;
        loop {
            let Ok(permit) = items_tx.reserve().await else { return None };
            let item = match incoming.next().await {
                Some(Ok(Message::Text(text))) if text.is_empty() => return None, // the end of the client's items
                Some(Ok(Message::Text(text))) if is_json(text.as_bytes()) => Ok(Reply::Ok(Bytes::from(text))),
                Some(Ok(Message::Text(_) | Message::Binary(_))) => {
                    let why = Error::bad_request(format!("WebSocket message {} is not a JSON text message", index + 1));
                    permit.send(Err(why.clone()));
                    return Some(why);
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                // The client left: the call is cancelled with the session.
                Some(Ok(Message::Close(_))) | None => {
                    permit.send(Err(Error::Cancelled));
                    return None;
                }
                Some(Err(e)) => Err(Error::bad_request(format!("reading the WebSocket: {e}"))),
            };
            let last = item.is_err();
            permit.send(item);
            index += 1;
            if last {
                return None;
            }
        }
    });
    // Counted as one call: in flight while the session runs (a stream answer until it ends).
    let log = RequestLog::begin(None, &call, "http", &http_caller(&call), crate::clock::now(), &*dispatch).until_done();
    let outcome = match log.finish(dispatch.dispatch(call).await) {
        Ok(Reply::Stream(mut answers)) => {
            let mut beat = tokio::time::interval(HEARTBEAT);
            beat.tick().await;
            loop {
                tokio::select! {
                    item = answers.next() => match item {
                        Some(Ok(Reply::Ok(item))) => {
                            beat.reset();
                            if out.send(Message::Text(data(&item))).await.is_err() {
                                break Ok(None);
                            }
                        }
                        Some(other) => break other.map(Some),
                        None => break Ok(None),
                    },
                    _ = beat.tick() => {
                        if out.send(Message::Ping(Bytes::new())).await.is_err() {
                            break Ok(None);
                        }
                    }
                }
            }
        }
        other => other.map(Some),
    };
    // A client whose message was not JSON hears that, whatever the method made of it.
    let garbage = match reading.is_finished() {
        true => reading.await.ok().flatten(),
        false => {
            reading.abort();
            None
        }
    };
    match (garbage, outcome) {
        (Some(why), _) => close(&mut out, Err(why), INVALID_DATA).await,
        (None, Ok(Some(Reply::Ok(value)))) => {
            let _ = out.send(Message::Text(data(&value))).await;
            close(&mut out, Ok(()), NORMAL).await
        }
        (None, Ok(Some(Reply::AppError(detail)))) => {
            close(&mut out, Err(Error::Application { detail: String::from_utf8_lossy(&detail).into_owned() }), INTERNAL)
                .await
        }
        (None, Ok(Some(Reply::Stream(_)))) => {
            close(&mut out, Err(Error::protocol("a stream inside a stream")), INTERNAL).await
        }
        (None, Ok(None)) => close(&mut out, Ok(()), NORMAL).await,
        (None, Err(e)) => {
            let code = close_code(&e);
            close(&mut out, Err(e), code).await
        }
    }
}

type Out = futures_util::stream::SplitSink<WebSocket, Message>;

/// Sends the error (if any) as a message, then closes with `code` and the error's message
/// as the reason (cut to the 123 bytes a close frame holds).
async fn close(out: &mut Out, outcome: Result<(), Error>, code: u16) {
    let reason = match outcome {
        Ok(()) => String::new(),
        Err(e) => {
            let (entry, message) = match &e {
                Error::Application { detail } => {
                    let message = app_error_message(detail.as_bytes());
                    (error_entry("application", &message, Some(detail.as_bytes())), message)
                }
                e => (error_entry(e.code(), &e.to_string(), None), e.to_string()),
            };
            let body = errors_body(entry).to_string();
            let _ = out.send(Message::Text(body.into())).await;
            let mut end = message.len().min(123);
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message[..end].to_owned()
        }
    };
    let _ = out.send(Message::Close(Some(CloseFrame { code, reason: Utf8Bytes::from(reason) }))).await;
}

fn data(item: &[u8]) -> Utf8Bytes {
    let mut text = String::with_capacity(item.len() + 10);
    text.push_str("{\"data\":");
    text.push_str(std::str::from_utf8(item).unwrap_or("null"));
    text.push('}');
    text.into()
}

fn is_json(bytes: &[u8]) -> bool {
    serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_ok()
}
