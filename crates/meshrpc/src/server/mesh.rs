//! Serving one incoming mesh connection: decode frames, run each request as its own
//! task, answer through the connection's single writer.

use std::{
    borrow::Cow,
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    task::Poll,
    time::Instant,
};

use bytes::{Bytes, BytesMut};
use tokio::{io::AsyncReadExt, net::TcpStream, sync::watch, task::AbortHandle};

use super::{service::Registry, ServerConfig};
use crate::{
    call::{Call, Dispatch, Reply},
    wire::{sender::Sender, Frame, Status},
    Error,
};

/// In-flight handlers of one connection, by request id, so a cancel can abort them.
#[derive(Default)]
struct InFlight {
    tasks: Mutex<HashMap<u64, AbortHandle>>,
}

impl InFlight {
    fn len(&self) -> usize {
        self.tasks.lock().unwrap().len()
    }
    fn finish(&self, id: u64) {
        self.tasks.lock().unwrap().remove(&id);
    }
    fn abort(&self, id: u64) {
        if let Some(task) = self.tasks.lock().unwrap().remove(&id) {
            task.abort();
        }
    }
    fn abort_all(&self) {
        for (_, task) in self.tasks.lock().unwrap().drain() {
            task.abort();
        }
    }
}

/// Serves a connection whose preface was already consumed.
///
/// One task reads frames and runs each handler. A handler that finishes when first
/// polled is answered inline (no task, no thread hop), and every answer produced by one
/// read goes out in one write. A slower handler runs as its own task and writes its own
/// answer through the shared sender: straight to the socket when it is the only call in
/// flight, else queued for one batched write.
pub(crate) async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    caller: String,
    registry: Arc<Registry>,
    config: ServerConfig,
    mut shutdown: watch::Receiver<bool>,
) {
    let (mut read, write) = stream.into_split();
    let sender = Arc::new(Sender::new(write));
    let flusher = tokio::spawn({
        let sender = sender.clone();
        async move { sender.flush_loop().await }
    });
    let in_flight = Arc::new(InFlight::default());
    let mut buf = BytesMut::with_capacity(8 * 1024);
    let mut out = BytesMut::with_capacity(8 * 1024);
    let mut draining = false;

    let why: Option<Error> = 'conn: loop {
        loop {
            match Frame::decode(&mut buf, config.max_frame) {
                Ok(Some(frame)) => {
                    if let Some(answer) = on_frame(frame, &caller, &registry, &config, &sender, &in_flight).await {
                        answer.encode(&mut out);
                    }
                }
                Ok(None) => break,
                Err(e) => break 'conn Some(e),
            }
        }
        if !out.is_empty() {
            if sender.send_encoded(&out, true).is_err() {
                break Some(Error::unavailable(format!("connection to {peer} broke")));
            }
            out.clear();
        }
        tokio::select! {
            read = read.read_buf(&mut buf) => match read {
                Ok(0) => break None,
                Ok(_) => {}
                Err(e) => break Some(e.into()),
            },
            _ = super::stopped(&mut shutdown), if !draining => {
                draining = true;
                Frame::GoAway.encode(&mut out);
            }
        }
    };
    match why {
        // The caller hung up or broke the protocol: nobody waits for these answers.
        Some(e) => tracing::warn!(%peer, error = %e, "closing mesh connection"),
        // The caller hung up: after go-away that is the end of a clean drain.
        None if draining => tracing::debug!(%peer, "drained mesh connection"),
        None => {}
    }
    in_flight.abort_all();
    // Let queued answers out before closing our side (a peer that reads nothing gets 1 s).
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), sender.flushed()).await;
    flusher.abort();
    sender.shutdown();
}

/// Handles one frame; returns the frame to answer with now, if any.
async fn on_frame(
    frame: Frame,
    caller: &str,
    registry: &Arc<Registry>,
    config: &ServerConfig,
    sender: &Arc<Sender>,
    in_flight: &Arc<InFlight>,
) -> Option<Frame> {
    match frame {
        Frame::Request { id, codec, deadline, trace_id, service, method, payload } => {
            let (Ok(service), Ok(method)) = (std::str::from_utf8(&service), std::str::from_utf8(&method)) else {
                return Some(failed(id, &Error::bad_request("service and method must be UTF-8")));
            };
            if in_flight.len() >= config.max_in_flight {
                let message = format!("more than {} calls in flight on one connection", config.max_in_flight);
                return Some(failed(id, &Error::Overloaded { message }));
            }
            let start = Instant::now();
            let log = RequestLog::begin(service, method, caller, start);
            let call = Call {
                service: Cow::Owned(service.to_owned()),
                method: Cow::Owned(method.to_owned()),
                codec,
                deadline: deadline.map(|d| start + d),
                trace_id,
                key: None,
                payload,
            };
            let mut answer = registry.dispatch(call);
            // Poll once here: a handler that is ready at once costs no task and no wake-up.
            let first = std::future::poll_fn(|cx| Poll::Ready(answer.as_mut().poll(cx))).await;
            if let Poll::Ready(result) = first {
                RequestLog::end(log, &result);
                return Some(response(id, result));
            }
            let sender = sender.clone();
            let done = in_flight.clone();
            // Hold the lock across spawn so the task cannot finish before it is recorded.
            let mut tasks = in_flight.tasks.lock().unwrap();
            let task = tokio::spawn(async move {
                let result = answer.await;
                RequestLog::end(log, &result);
                // Write it ourselves when it is the only call in flight: no hop back to
                // the connection task.
                let alone = done.len() <= 1;
                let _ = sender.send(&response(id, result), alone);
                done.finish(id);
            });
            tasks.insert(id, task.abort_handle());
            None
        }
        Frame::Cancel { id } => {
            in_flight.abort(id);
            None
        }
        Frame::Ping { id } => Some(Frame::Pong { id }),
        Frame::Pong { .. } | Frame::Response { .. } | Frame::GoAway => None,
    }
}

fn response(id: u64, result: Result<Reply, Error>) -> Frame {
    let (status, payload) = match result {
        Ok(Reply::Ok(b)) => (Status::Ok, b),
        Ok(Reply::AppError(b)) => (Status::AppError, b),
        Err(e) => (Status::Failed, error_payload(&e)),
    };
    Frame::Response { id, status, payload }
}

fn failed(id: u64, err: &Error) -> Frame {
    Frame::Response { id, status: Status::Failed, payload: error_payload(err) }
}

pub(crate) fn error_payload(err: &Error) -> Bytes {
    serde_json::to_vec(err).unwrap_or_default().into()
}

/// One line per call, like the seed's GIN request log. Built only when the
/// `meshrpc::request` target logs at info, so a quiet node copies no names per call.
pub(crate) struct RequestLog {
    service: String,
    method: String,
    caller: String,
    start: Instant,
}

impl RequestLog {
    pub(crate) fn begin(service: &str, method: &str, caller: &str, start: Instant) -> Option<RequestLog> {
        tracing::enabled!(target: "meshrpc::request", tracing::Level::INFO).then(|| RequestLog {
            service: service.to_owned(),
            method: method.to_owned(),
            caller: caller.to_owned(),
            start,
        })
    }

    pub(crate) fn end(log: Option<RequestLog>, result: &Result<Reply, Error>) {
        let Some(log) = log else { return };
        let status = match result {
            Ok(Reply::Ok(_)) => "ok",
            Ok(Reply::AppError(_)) => "application",
            Err(e) => e.code(),
        };
        tracing::info!(
            target: "meshrpc::request",
            caller = %log.caller, service = log.service, method = log.method, status,
            micros = log.start.elapsed().as_micros() as u64,
            "call"
        );
    }
}
