//! What one served connection does with a call it read: admission, the request log, the
//! handler polled once inline (answered in the turn's write when it is ready at once) or
//! run as its own task (answering through the sender), and answers that are streams.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    task::Poll,
    time::Instant,
};

use bytes::BytesMut;
use tokio::task::AbortHandle;

use super::State;
use crate::{
    admission::Admission,
    call::{Dispatch, Reply},
    call::{Input, Items},
    error::Error,
    proto::{response_within, Frame, Inbound, Negotiated},
    request_log::{LastMethod, RequestLog},
    transport::{
        guard::PortCounters,
        sender::{GatherTurn, Sender},
        streams::{pump, Delivery, ItemSink, Owner, StreamHandle},
    },
};

/// Who is calling: a name for the request logs, the identity and policy for each call.
pub(super) struct Caller {
    name: Arc<str>,
    /// Its name as a metrics label.
    peer: Arc<str>,
    admission: Admission,
    /// The request-log slot of the method this caller called last.
    last_method: Mutex<LastMethod>,
}

impl Caller {
    /// Names the caller of `peer` by the name its hello gave (an anonymous one by its
    /// address, in the request logs; as `client` in metrics, never by an address).
    pub(super) fn new(hello: &Negotiated, peer: SocketAddr, admission: Admission) -> Caller {
        let name: Arc<str> = if hello.peer_name.is_empty() {
            peer.to_string().into()
        } else {
            format!("{}@{peer}", hello.peer_name).into()
        };
        let label: Arc<str> =
            if hello.peer_name.is_empty() { "client".into() } else { hello.peer_name.as_str().into() };
        Caller { name, peer: label, admission, last_method: Mutex::default() }
    }
}

/// How answers go back to one caller.
pub(super) struct Answers {
    /// The largest frame the caller accepts.
    pub(super) max_out: u32,
    pub(super) max_queued: usize,
    pub(super) counters: Arc<PortCounters>,
}

impl Answers {
    fn frame(&self, id: u64, result: Result<Reply, Error>) -> Frame {
        let (frame, refused) = response_within(id, result, self.max_out);
        if refused {
            PortCounters::add(&self.counters.oversized_answers);
        }
        frame
    }
}

/// One served connection, as its calls and streams see it: where credit is kept and
/// frames go.
pub(super) struct Served {
    pub(super) state: Arc<Mutex<State>>,
    pub(super) sender: Arc<Sender>,
    pub(super) max_queued: usize,
    /// The largest frame the caller accepts.
    pub(super) max_out: u32,
    /// The caller takes several items to a frame (feature `ITEM_RUNS`).
    pub(super) item_runs: bool,
}

impl Owner for Served {
    fn consumed(&self, id: u64, cost: u32) {
        let credit = self.state.lock().unwrap().consumed(id, cost);
        if let Some(frame) = credit {
            let _ = self.sender.send(&frame, false);
        }
    }

    /// A handler that drops the caller's items early needs no word to the caller: the
    /// call's answer ends its sending.
    fn abandoned(&self, _id: u64) {}
}

impl ItemSink for Served {
    fn max_frame(&self) -> u32 {
        self.max_out
    }

    fn item_runs(&self) -> bool {
        self.item_runs
    }

    async fn gather_turn(&self) -> GatherTurn {
        self.sender.gather_turn(self.max_queued).await
    }

    fn credit(&self, id: u64) -> Option<u32> {
        self.state.lock().unwrap().credit(id)
    }

    fn spent(&self, id: u64, bytes: u32) {
        self.state.lock().unwrap().spent(id, bytes);
    }

    async fn send_bulk(&self, group: Vec<bytes::Bytes>) -> Result<(), Error> {
        // Items wait like answers: a caller that reads nothing holds at most its queue.
        self.sender.room(self.max_queued).await;
        self.sender.send_bulk(group).map_err(|_| Error::unavailable("the caller's connection broke"))
    }

    fn items_sent(&self, id: u64) {
        self.state.lock().unwrap().finished(id);
    }

    fn blocked(&self, id: u64) {
        let _ = self.sender.send(&Frame::Credit { id, bytes: 0 }, false);
    }
}

impl Served {
    /// Answers call `id` with a stream: the opening response, then its items as the
    /// caller grants credit. Runs in the call's task (the caller's cancel stops it).
    async fn stream(self: Arc<Self>, id: u64, items: Items, inline: bool) {
        let handle = self.state.lock().unwrap().answer_stream(id, StreamHandle::new(), inline);
        let Some(handle) = handle else { return }; // cancelled meanwhile
                                                   // The opening goes in the bulk lane too, ahead of the items.
        let mut opening = BytesMut::new();
        Frame::Response { id, status: crate::proto::Status::Stream, payload: bytes::Bytes::new() }.encode(&mut opening);
        if self.send_bulk(vec![opening.freeze()]).await.is_err() {
            return;
        }
        pump(self, handle, id, items).await;
    }
}

/// Acts on one decoded frame; returns the frame to answer with now, if any.
pub(super) async fn on_inbound(
    inbound: Inbound<AbortHandle, Arc<StreamHandle>>,
    now: Instant,
    caller: &Caller,
    dispatch: &dyn Dispatch,
    served: &Arc<Served>,
    answers: &Answers,
) -> Option<Frame> {
    let (sender, state) = (&served.sender, &served.state);
    match inbound {
        Inbound::Call { id, mut call, items } => {
            let with_items = items.is_some();
            if let Some(items) = items {
                call.input = Some(Input::new(items.reader(id, served.clone()).into_items()));
            }
            let finish = |answer: Frame| {
                if with_items {
                    state.lock().unwrap().finished(id);
                }
                Some(answer)
            };
            if let Err(denied) = caller.admission.admit(&mut call) {
                return finish(answers.frame(id, Err(denied)));
            }
            let log = RequestLog::begin(
                Some(&mut caller.last_method.lock().unwrap()),
                &call,
                &caller.peer,
                &caller.name,
                now,
                dispatch,
            );
            let mut answer = dispatch.dispatch(call);
            // Poll once here: a handler that is ready at once costs no task and no wake-up.
            let first = std::future::poll_fn(|cx| Poll::Ready(answer.as_mut().poll(cx))).await;
            if let Poll::Ready(result) = first {
                // A stream takes the log along: the call ends when the stream does.
                let result = log.finish(result);
                let Ok(Reply::Stream(items)) = result else { return finish(answers.frame(id, result)) };
                // Recorded under the lock before the task can run: a short stream that ends
                // at once must find its entry to remove.
                let mut running = state.lock().unwrap();
                let task = tokio::spawn(served.clone().stream(id, items, true));
                running.started(id, task.abort_handle());
                return None;
            }
            let sender = sender.clone();
            let done = state.clone();
            let served = served.clone();
            let (max_out, max_queued, counters) = (answers.max_out, answers.max_queued, answers.counters.clone());
            let log = log.until_done();
            // Hold the lock across spawn so the task cannot finish before it is recorded.
            let mut running = state.lock().unwrap();
            let task = tokio::spawn(async move {
                let result = log.finish(answer.await);
                if let Ok(Reply::Stream(items)) = result {
                    return served.stream(id, items, false).await;
                }
                let frame = Answers { max_out, max_queued, counters }.frame(id, result);
                // An answer waits for room like the connection's own: a caller that
                // reads nothing holds at most its queue and its running calls' answers.
                sender.answers_room(max_queued).await;
                // Write it ourselves when it is the only call in flight: no hop back to
                // the connection task.
                let alone = done.lock().unwrap().in_flight() <= 1;
                let _ = sender.send(&frame, alone);
                done.lock().unwrap().finished(id);
            });
            running.started(id, task.abort_handle());
            None
        }
        Inbound::Send(frame) => Some(frame),
        Inbound::Item(stream, id, payload, cost) => {
            if stream.item(Delivery::Item(payload, cost)) {
                return None;
            }
            PortCounters::add(&answers.counters.shed_stream_items);
            let why = Error::Overloaded { message: "the node's budget for unread stream items is spent".into() };
            let refused = state.lock().unwrap().refuse(id, why)?;
            Box::pin(on_inbound(refused, now, caller, dispatch, served, answers)).await
        }
        Inbound::Run(stream, id, run) => {
            if stream.item(Delivery::Run(run)) {
                return None;
            }
            PortCounters::add(&answers.counters.shed_stream_items);
            let why = Error::Overloaded { message: "the node's budget for unread stream items is spent".into() };
            let refused = state.lock().unwrap().refuse(id, why)?;
            Box::pin(on_inbound(refused, now, caller, dispatch, served, answers)).await
        }
        Inbound::ItemsEnd(stream, outcome) => {
            stream.end(outcome);
            None
        }
        Inbound::Credit(stream) => {
            stream.credit();
            None
        }
        Inbound::Abort(task, stream, end) => {
            if let Some(task) = task {
                task.abort();
            }
            if let Some(stream) = stream {
                stream.fail(Error::Cancelled);
            }
            end
        }
        Inbound::Nothing => None,
    }
}
