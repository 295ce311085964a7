//! Streams over HTTP: a stream answer as NDJSON (`application/x-ndjson`, the default) or
//! Server-Sent Events (`Accept: text/event-stream`), flushed item by item; a caller's
//! items from an NDJSON request body (first line: the arguments object).
//!
//! NDJSON lines are `{"data":<item>}`; a stream that fails ends with
//! `{"data":null,"errors":[{"code":…,"message":…}]}`. Blank lines are heartbeats. SSE
//! events are `data: <item>`, then `event: end` (clean) or `event: error` with
//! `{"code":…,"message":…}`; comments (`: heartbeat`) are heartbeats. A heartbeat goes out
//! after [`HEARTBEAT`] without an item, so neither side takes the stream for idle.

use std::{
    convert::Infallible,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use axum::{
    body::Body,
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use bytes::{BufMut, Bytes, BytesMut};
use http_body_util::BodyExt;

use super::envelope::{app_error_message, error_entry, errors_body};
use crate::{call::Items, call::Reply, error::Error, limits::HttpLimits};

/// The longest a stream answer goes without a byte: a heartbeat follows.
pub(crate) const HEARTBEAT: Duration = Duration::from_secs(15);

/// How a stream answer is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Ndjson,
    EventStream,
}

impl Format {
    /// SSE when the client asks for it, else NDJSON.
    pub(crate) fn of(headers: &HeaderMap) -> Format {
        let sse = headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.contains("text/event-stream"));
        if sse {
            Format::EventStream
        } else {
            Format::Ndjson
        }
    }
}

/// A stream answer as a chunked response, one chunk per item.
pub(crate) fn response(items: Items, format: Format) -> Response {
    let content_type = match format {
        Format::Ndjson => "application/x-ndjson",
        Format::EventStream => "text/event-stream",
    };
    let body = Body::from_stream(Chunks {
        items,
        format,
        heartbeat: Box::pin(tokio::time::sleep(HEARTBEAT)),
        done: false,
        index: 0,
    });
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}

struct Chunks {
    items: Items,
    format: Format,
    heartbeat: Pin<Box<tokio::time::Sleep>>,
    done: bool,
    index: u64,
}

impl futures_core::Stream for Chunks {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        if let Poll::Ready(next) = Pin::new(&mut self.items).poll_next(cx) {
            let deadline = tokio::time::Instant::from_std(crate::clock::now()) + HEARTBEAT;
            self.heartbeat.as_mut().reset(deadline);
            let index = self.index;
            self.index += 1;
            let chunk = match next {
                Some(Ok(Reply::Ok(item))) => item_chunk(self.format, &item),
                Some(Ok(Reply::AppError(detail))) => {
                    self.done = true;
                    let mut entry = error_entry("application", &app_error_message(&detail), Some(&detail));
                    entry["item"] = index.into();
                    error_chunk(self.format, entry)
                }
                Some(Ok(Reply::Stream(_))) => {
                    self.done = true;
                    error_chunk(self.format, entry_of(&Error::protocol("a stream inside a stream"), index))
                }
                Some(Err(e)) => {
                    self.done = true;
                    error_chunk(self.format, entry_of(&e, index))
                }
                None => {
                    self.done = true;
                    match self.format {
                        Format::Ndjson => return Poll::Ready(None),
                        Format::EventStream => Bytes::from_static(b"event: end\ndata: {}\n\n"),
                    }
                }
            };
            return Poll::Ready(Some(Ok(chunk)));
        }
        if self.heartbeat.as_mut().poll(cx).is_ready() {
            let deadline = tokio::time::Instant::from_std(crate::clock::now()) + HEARTBEAT;
            self.heartbeat.as_mut().reset(deadline);
            let beat = match self.format {
                Format::Ndjson => Bytes::from_static(b"\n"),
                Format::EventStream => Bytes::from_static(b": heartbeat\n\n"),
            };
            return Poll::Ready(Some(Ok(beat)));
        }
        Poll::Pending
    }
}

use std::future::Future as _;

fn entry_of(e: &Error, index: u64) -> serde_json::Value {
    let mut entry = error_entry(e.code(), &e.to_string(), None);
    entry["item"] = index.into();
    entry
}

fn item_chunk(format: Format, item: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(item.len() + 16);
    match format {
        Format::Ndjson => {
            out.put_slice(b"{\"data\":");
            out.put_slice(item);
            out.put_slice(b"}\n");
        }
        Format::EventStream => {
            // JSON from serde_json holds no raw newline, so one `data:` line carries it.
            out.put_slice(b"data: ");
            out.put_slice(item);
            out.put_slice(b"\n\n");
        }
    }
    out.freeze()
}

fn error_chunk(format: Format, entry: serde_json::Value) -> Bytes {
    match format {
        Format::Ndjson => Bytes::from(format!("{}\n", errors_body(entry))),
        Format::EventStream => Bytes::from(format!("event: error\ndata: {entry}\n\n")),
    }
}

/// True when the request body is NDJSON: the arguments, then the caller's items.
pub(crate) fn is_ndjson(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-ndjson"))
}

/// Splits an NDJSON body into its first line (the arguments, read now, within the body
/// timeout) and the items after it (read as the call consumes them). A line longer than
/// `limits.max_body`, or one that is not JSON, ends the items with `bad_request` naming
/// the line.
pub(crate) async fn split_ndjson(body: Body, limits: &HttpLimits) -> Result<(Bytes, Items), Error> {
    let mut lines = Lines { body, buf: BytesMut::new(), scanned: 0, max: limits.max_body, line: 0, ended: false };
    let args = match tokio::time::timeout(limits.body_timeout, lines.next()).await {
        Err(_) => return Err(Error::bad_request(format!("no arguments line within {:?}", limits.body_timeout))),
        Ok(None) => Bytes::new(),
        Ok(Some(Err(e))) => return Err(e),
        Ok(Some(Ok(line))) => line,
    };
    // Items are read by a task into a small queue: the call reads them as it goes, and the
    // client's sending slows down with it. A call holds at most the queue's two lines, the
    // one being sent and the one arriving (each at most `max_body`); the task ends with the
    // call, even while the client sends nothing.
    let (tx, items) = Items::channel(2);
    tokio::spawn(async move {
        loop {
            let line = tokio::select! {
                line = lines.next() => line,
                _ = tx.closed() => return,
            };
            let Some(line) = line else { return };
            let item = line.map(Reply::Ok);
            let last = item.is_err();
            if tx.send(item).await.is_err() || last {
                return;
            }
        }
    });
    Ok((args, items))
}

struct Lines {
    body: Body,
    buf: BytesMut,
    /// Bytes of `buf` already known to hold no newline (each byte is looked at once).
    scanned: usize,
    max: usize,
    line: u64,
    ended: bool,
}

impl Lines {
    /// The next non-blank line, checked to be JSON.
    async fn next(&mut self) -> Option<Result<Bytes, Error>> {
        loop {
            if let Some(at) = self.buf[self.scanned..].iter().position(|b| *b == b'\n').map(|i| i + self.scanned) {
                self.scanned = 0;
                let line = self.buf.split_to(at + 1).freeze().slice(..at);
                if let Some(line) = self.checked(line) {
                    return Some(line);
                }
                continue;
            }
            self.scanned = self.buf.len();
            if self.buf.len() > self.max {
                self.ended = true;
                let e = Error::TooLarge { size: self.buf.len() as u64, limit: self.max as u64 };
                return Some(Err(Error::bad_request(format!("NDJSON line {}: {e}", self.line + 1))));
            }
            if self.ended {
                self.scanned = 0;
                let rest = std::mem::take(&mut self.buf).freeze();
                return self.checked(rest);
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
                Some(Err(e)) => {
                    self.ended = true;
                    return Some(Err(Error::bad_request(format!("reading the body: {e}"))));
                }
                None => self.ended = true,
            }
        }
    }

    /// Counts every line (blank ones too, so errors name the line of the body).
    fn checked(&mut self, line: Bytes) -> Option<Result<Bytes, Error>> {
        self.line += 1;
        let trimmed = line.trim_ascii();
        if trimmed.is_empty() {
            return None;
        }
        let line = line.slice_ref(trimmed);
        match serde_json::from_slice::<serde::de::IgnoredAny>(&line) {
            Ok(_) => Some(Ok(line)),
            Err(e) => {
                self.ended = true;
                self.buf.clear();
                Some(Err(Error::bad_request(format!("NDJSON line {} is not JSON: {e}", self.line))))
            }
        }
    }
}
