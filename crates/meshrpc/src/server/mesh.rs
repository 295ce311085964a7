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
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::{mpsc, watch},
    task::AbortHandle,
};

use super::{service::Registry, ServerConfig};
use crate::{
    call::{Call, Dispatch, Reply},
    wire::{Frame, Status},
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
/// One task reads frames, runs each handler and writes the answers. A handler that
/// finishes when first polled (most do) is answered inline, with no task spawned and no
/// thread hop; slower ones run as their own task and send their answer back through
/// `outbox`. Every answer produced by one read goes out in one write.
pub(crate) async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    caller: String,
    registry: Arc<Registry>,
    config: ServerConfig,
    mut shutdown: watch::Receiver<bool>,
) {
    let (mut read, mut write) = stream.into_split();
    let (outbox, mut answers) = mpsc::unbounded_channel();
    let in_flight = Arc::new(InFlight::default());
    let mut buf = BytesMut::with_capacity(8 * 1024);
    let mut out = BytesMut::with_capacity(8 * 1024);
    let mut batch = Vec::new();
    let mut draining = false;

    let why: Option<Error> = 'conn: loop {
        loop {
            match Frame::decode(&mut buf, config.max_frame) {
                Ok(Some(frame)) => {
                    if let Some(answer) = on_frame(frame, &caller, &registry, &config, &outbox, &in_flight).await {
                        answer.encode(&mut out);
                    }
                }
                Ok(None) => break,
                Err(e) => break 'conn Some(e),
            }
        }
        if !out.is_empty() {
            if let Err(e) = write.write_all(&out).await {
                break Some(e.into());
            }
            out.clear();
        }
        tokio::select! {
            read = read.read_buf(&mut buf) => match read {
                Ok(0) => break None,
                Ok(_) => {}
                Err(e) => break Some(e.into()),
            },
            _ = answers.recv_many(&mut batch, 256) => {
                for frame in batch.drain(..) {
                    frame.encode(&mut out);
                }
            }
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
    let _ = write.shutdown().await;
}

/// Handles one frame; returns the frame to answer with now, if any.
async fn on_frame(
    frame: Frame,
    caller: &str,
    registry: &Arc<Registry>,
    config: &ServerConfig,
    outbox: &mpsc::UnboundedSender<Frame>,
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
            let call = Call {
                service: Cow::Owned(service.to_owned()),
                method: Cow::Owned(method.to_owned()),
                codec,
                deadline: deadline.map(|d| start + d),
                trace_id,
                key: None,
                payload,
            };
            let (service, method) = (call.service.clone(), call.method.clone());
            let mut answer = registry.dispatch(call);
            // Poll once here: a handler that is ready at once costs no task and no wake-up.
            let first = std::future::poll_fn(|cx| Poll::Ready(answer.as_mut().poll(cx))).await;
            if let Poll::Ready(result) = first {
                log_call(&service, &method, &result, start, caller);
                return Some(response(id, result));
            }
            let outbox = outbox.clone();
            let done = in_flight.clone();
            let caller = caller.to_owned();
            // Hold the lock across spawn so the task cannot finish before it is recorded.
            let mut tasks = in_flight.tasks.lock().unwrap();
            let task = tokio::spawn(async move {
                let result = answer.await;
                log_call(&service, &method, &result, start, &caller);
                let _ = outbox.send(response(id, result));
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

/// One line per call, like the seed's GIN request log.
pub(crate) fn log_call(service: &str, method: &str, result: &Result<Reply, Error>, start: Instant, caller: &str) {
    let status = match result {
        Ok(Reply::Ok(_)) => "ok",
        Ok(Reply::AppError(_)) => "application",
        Err(e) => e.code(),
    };
    tracing::info!(
        target: "meshrpc::request",
        %caller, service, method, status, micros = start.elapsed().as_micros() as u64,
        "call"
    );
}
