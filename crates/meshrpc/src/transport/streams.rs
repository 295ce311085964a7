//! Streams on a connection, either side: where a call's received items wait for their
//! reader ([`StreamHandle`], [`Received`]), and the task that sends a call's items as
//! credit allows ([`pump`]).
//!
//! Items wait in an unbounded queue, yet what waits is bounded: the protocol state
//! refuses an item beyond the credit its reader granted (`proto::flow`).

use std::{
    pin::Pin,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    task::{Context, Poll},
};

use bytes::Bytes;
use tokio::sync::{mpsc, Notify};

use super::guard::FrameBudget;
use crate::{
    call::Reply,
    error::Error,
    proto::{end, Frame, Spend},
    stream::Items,
};

/// What arrives for a reader.
enum Delivery {
    Item(Bytes, u32),
    End(Option<Result<Reply, Error>>),
}

/// The shell's handle of one call's streams (the `S` of the protocol states).
pub(crate) struct StreamHandle {
    to_reader: mpsc::UnboundedSender<Delivery>,
    reader: Mutex<Option<mpsc::UnboundedReceiver<Delivery>>>,
    /// Wakes the sender of this call's items when credit comes (or the call ends).
    credit: Notify,
    /// The task sending this call's items, stopped when the call ends.
    pump: Mutex<Option<tokio::task::AbortHandle>>,
    stopped: AtomicBool,
    /// The node-wide budget received items are charged to until read (nodes only).
    budget: Option<Arc<FrameBudget>>,
    /// Bytes of received items charged to it and not yet read.
    charged: AtomicUsize,
}

impl Drop for StreamHandle {
    fn drop(&mut self) {
        if let Some(budget) = &self.budget {
            budget.update(*self.charged.get_mut(), 0);
        }
    }
}

impl StreamHandle {
    pub(crate) fn new() -> Arc<StreamHandle> {
        StreamHandle::charged_to(None)
    }

    /// A handle whose received items are charged to `budget` until read.
    pub(crate) fn charged_to(budget: Option<Arc<FrameBudget>>) -> Arc<StreamHandle> {
        let (to_reader, reader) = mpsc::unbounded_channel();
        Arc::new(StreamHandle {
            to_reader,
            reader: Mutex::new(Some(reader)),
            credit: Notify::new(),
            pump: Mutex::new(None),
            stopped: AtomicBool::new(false),
            budget,
            charged: AtomicUsize::new(0),
        })
    }

    /// An item arrived (it cost `cost` of credit). `false`: the budget it is charged to is
    /// spent (the item is dropped).
    pub(crate) fn item(&self, payload: Bytes, cost: u32) -> bool {
        let cost = cost as usize;
        if let Some(budget) = &self.budget {
            if !budget.update(0, cost) {
                return false;
            }
            self.charged.fetch_add(cost, Ordering::AcqRel);
        }
        if self.to_reader.send(Delivery::Item(payload, cost as u32)).is_err() {
            self.read(cost as u32); // nobody reads any more: nothing is held
        }
        true
    }

    /// An item of `cost` was read: its charge is released.
    fn read(&self, cost: u32) {
        if let Some(budget) = &self.budget {
            self.charged.fetch_sub(cost as usize, Ordering::AcqRel);
            budget.update(cost as usize, 0);
        }
    }

    /// The items ended: cleanly (`None`) or with an error.
    pub(crate) fn end(&self, outcome: Option<Result<Reply, Error>>) {
        let _ = self.to_reader.send(Delivery::End(outcome));
    }

    /// Credit came: the sender may go on.
    pub(crate) fn credit(&self) {
        self.credit.notify_one();
    }

    /// The call is over: its items stop going out (the producer is dropped).
    pub(crate) fn stop_sending(&self) {
        let mut slot = self.pump.lock().unwrap();
        self.stopped.store(true, Ordering::Release);
        if let Some(pump) = slot.take() {
            pump.abort();
        }
        self.credit.notify_one();
    }

    /// The call failed: the reader sees `why`, and the sending stops.
    pub(crate) fn fail(&self, why: Error) {
        self.end(Some(Err(why)));
        self.stop_sending();
    }

    /// The reader of the received items (once).
    pub(crate) fn reader(self: &Arc<Self>, id: u64, owner: Arc<dyn Owner>) -> Received {
        let rx = self.reader.lock().unwrap().take();
        Received { id, rx, owner, handle: self.clone(), ended: false }
    }
}

/// The side of the connection a reader of items lives on.
pub(crate) trait Owner: Send + Sync + 'static {
    /// The reader took an item of `cost`: grant credit back when it is time.
    fn consumed(&self, id: u64, cost: u32);
    /// The reader was dropped before the end.
    fn abandoned(&self, id: u64);
}

/// The side of the connection a call's items are sent from.
pub(crate) trait ItemSink: Send + Sync + 'static {
    /// May an item of `payload` bytes go out now?
    fn spend(&self, id: u64, payload: usize) -> Spend;
    /// Sends a frame of this call (items wait while the peer leaves too much unread).
    fn send(&self, frame: Frame) -> impl std::future::Future<Output = Result<(), Error>> + Send;
    /// The call's items ended (their end frame is out).
    fn items_sent(&self, id: u64);
}

/// Received items as [`Items`]: each read grants its credit back.
pub(crate) struct Received {
    id: u64,
    rx: Option<mpsc::UnboundedReceiver<Delivery>>,
    owner: Arc<dyn Owner>,
    handle: Arc<StreamHandle>,
    ended: bool,
}

impl futures_core::Stream for Received {
    type Item = Result<Reply, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.ended {
            return Poll::Ready(None);
        }
        let Some(rx) = self.rx.as_mut() else { return Poll::Ready(None) };
        match rx.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Delivery::Item(payload, cost))) => {
                self.handle.read(cost);
                self.owner.consumed(self.id, cost);
                Poll::Ready(Some(Ok(Reply::Ok(payload))))
            }
            Poll::Ready(Some(Delivery::End(outcome))) => {
                self.ended = true;
                Poll::Ready(outcome)
            }
            Poll::Ready(None) => {
                self.ended = true;
                Poll::Ready(Some(Err(Error::unavailable("the stream's connection closed"))))
            }
        }
    }
}

impl Drop for Received {
    fn drop(&mut self) {
        // Items never read are released with their queue.
        if let Some(mut rx) = self.rx.take() {
            rx.close();
            while let Ok(delivery) = rx.try_recv() {
                if let Delivery::Item(_, cost) = delivery {
                    self.handle.read(cost);
                }
            }
        }
        if !self.ended {
            self.owner.abandoned(self.id);
        }
    }
}

impl Received {
    pub(crate) fn into_items(self) -> Items {
        Items::new(self)
    }
}

/// Sends call `id`'s items as credit allows, then their end. Runs as its own task, whose
/// abort handle the stream handle keeps: when the call ends, the task and the producer
/// of the items are dropped.
pub(crate) async fn pump<O: ItemSink>(owner: Arc<O>, handle: Arc<StreamHandle>, id: u64, mut items: Items) {
    loop {
        let next = items.next().await;
        let frame = match next {
            Some(Ok(Reply::Ok(payload))) => {
                loop {
                    match owner.spend(id, payload.len()) {
                        Spend::Go => break,
                        Spend::Wait => handle.credit.notified().await,
                        Spend::Gone => return,
                    }
                }
                Frame::Item { id, payload }
            }
            Some(Ok(Reply::Stream(_))) => end(id, Err(Error::Internal { message: "a stream inside a stream".into() })),
            Some(Ok(reply)) => end(id, Ok(Some(reply))),
            Some(Err(e)) => end(id, Err(e)),
            None => end(id, Ok(None)),
        };
        let last = !matches!(frame, Frame::Item { .. });
        if owner.send(frame).await.is_err() || last {
            owner.items_sent(id);
            return;
        }
    }
}

/// Starts [`pump`] as a task whose handle `handle` keeps.
pub(crate) fn start_pump<O: ItemSink>(owner: Arc<O>, handle: &Arc<StreamHandle>, id: u64, items: Items) {
    let task = tokio::spawn(pump(owner, handle.clone(), id, items));
    let mut slot = handle.pump.lock().unwrap();
    if handle.stopped.load(Ordering::Acquire) {
        task.abort(); // the call ended before its items began
    } else {
        *slot = Some(task.abort_handle());
    }
}
