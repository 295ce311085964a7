//! Streams on a connection, either side: where a call's received items wait for their
//! reader ([`StreamHandle`], [`Received`]), and the task that sends a call's items as
//! credit allows ([`pump`]).
//!
//! Items wait in an unbounded queue, yet what waits is bounded: the protocol state
//! refuses an item beyond the credit its reader granted (`proto::flow`).

use std::{
    collections::VecDeque,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    task::{Context, Poll, Waker},
};

use bytes::{Bytes, BytesMut};
use futures_core::Stream as _;
use tokio::sync::Notify;

use super::{guard::FrameBudget, sender::GatherTurn};
use crate::{
    call::{Items, Polled, Reply},
    error::Error,
    proto::{end, item_cost, Frame, ItemRun, ItemSlot, RunWriter},
};

/// What arrives for a reader.
pub(crate) enum Delivery {
    /// An item, and its cost.
    Item(Bytes, u32),
    /// Items from one frame, split off as the reader takes them.
    Run(ItemRun),
    /// The end.
    End(Option<Result<Reply, Error>>),
}

impl Delivery {
    /// The credit it holds.
    fn cost(&self) -> usize {
        match self {
            Delivery::Item(_, cost) => *cost as usize,
            Delivery::Run(run) => run.cost() as usize,
            Delivery::End(_) => 0,
        }
    }
}

/// Received items waiting for their reader. The reader takes all of them at once, and a
/// delivery wakes it only when it found the inbox empty: one lock and at most one wake-up
/// per batch of items, not per item.
#[derive(Default)]
struct Inbox {
    items: VecDeque<Delivery>,
    waker: Option<Waker>,
    /// The reader is gone: items are dropped as they come.
    reader_gone: bool,
}

/// The shell's handle of one call's streams (the `S` of the protocol states).
pub(crate) struct StreamHandle {
    inbox: Mutex<Inbox>,
    /// Wakes the sender of this call's items when credit comes (or the call ends).
    credit: Notify,
    /// The task sending this call's items, stopped when the call ends.
    pump: Mutex<Option<tokio::task::AbortHandle>>,
    stopped: AtomicBool,
    /// The node-wide budget received items are charged to until read (nodes only).
    budget: Option<Arc<FrameBudget>>,
}

impl Drop for StreamHandle {
    fn drop(&mut self) {
        let inbox = std::mem::take(&mut *self.inbox.lock().unwrap());
        self.release(inbox.items);
    }
}

impl StreamHandle {
    pub(crate) fn new() -> Arc<StreamHandle> {
        StreamHandle::charged_to(None)
    }

    /// A handle whose received items are charged to `budget` until read.
    pub(crate) fn charged_to(budget: Option<Arc<FrameBudget>>) -> Arc<StreamHandle> {
        Arc::new(StreamHandle {
            inbox: Mutex::default(),
            credit: Notify::new(),
            pump: Mutex::new(None),
            stopped: AtomicBool::new(false),
            budget,
        })
    }

    /// An item or a run of them arrived (costing its credit). `false`: the budget it is
    /// charged to is spent (the items are dropped).
    pub(crate) fn item(&self, items: Delivery) -> bool {
        let inbox = self.inbox.lock().unwrap();
        if inbox.reader_gone {
            return true; // nobody reads any more: nothing is held
        }
        if let Some(budget) = &self.budget {
            if !budget.update(0, items.cost()) {
                return false;
            }
        }
        self.deliver(inbox, items);
        true
    }

    /// Items arrived together (a caller's stream: no budget to charge).
    pub(crate) fn items(&self, items: impl Iterator<Item = Delivery>) {
        let mut inbox = self.inbox.lock().unwrap();
        if inbox.reader_gone {
            return;
        }
        let was_empty = inbox.items.is_empty();
        inbox.items.extend(items);
        let waker = if was_empty { inbox.waker.take() } else { None };
        drop(inbox);
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// The items ended: cleanly (`None`) or with an error.
    pub(crate) fn end(&self, outcome: Option<Result<Reply, Error>>) {
        let inbox = self.inbox.lock().unwrap();
        if !inbox.reader_gone {
            self.deliver(inbox, Delivery::End(outcome));
        }
    }

    fn deliver(&self, mut inbox: std::sync::MutexGuard<'_, Inbox>, delivery: Delivery) {
        let was_empty = inbox.items.is_empty();
        inbox.items.push_back(delivery);
        let waker = if was_empty { inbox.waker.take() } else { None };
        drop(inbox);
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Releases the budget charged for items never read.
    fn release(&self, items: impl IntoIterator<Item = Delivery>) {
        if let Some(budget) = &self.budget {
            let held: usize = items.into_iter().map(|d| d.cost()).sum();
            budget.update(held, 0);
        }
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

    /// The reader of the received items.
    pub(crate) fn reader(self: &Arc<Self>, id: u64, owner: Arc<dyn Owner>) -> Received {
        Received { id, taken: VecDeque::new(), owner, handle: self.clone(), ended: false, unreported: 0 }
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
    /// The credit call `id`'s items may still spend; `None`: the call is over.
    fn credit(&self, id: u64) -> Option<u32>;
    /// The items just sent spent `bytes` of it.
    fn spent(&self, id: u64, bytes: u32);
    /// Sends whole frames of this call, in parts, in the bulk lane (waiting while the peer
    /// leaves too much unread).
    fn send_bulk(&self, group: Vec<Bytes>) -> impl std::future::Future<Output = Result<(), Error>> + Send;
    /// The call's items ended (their end frame is out).
    fn items_sent(&self, id: u64);
    /// Tells the peer this call's items lack credit for the next one (a `Credit` of 0).
    fn blocked(&self, id: u64);
    /// Waits for this stream's turn to gather a batch (a few streams of a connection at
    /// once), then for room for it in the send queue. A sender holds its turn while it
    /// takes items from its producer and queues them: however many streams a peer opens
    /// and reads nothing of, only a few batches are held.
    fn gather_turn(&self) -> impl std::future::Future<Output = GatherTurn> + Send;
    /// The largest frame the peer accepts: an item whose frame is larger ends its stream
    /// with `too_large` instead of breaking the connection.
    fn max_frame(&self) -> u32;
    /// The peer takes several items to a frame (feature `ITEM_RUNS`).
    fn item_runs(&self) -> bool;
}

/// Received items as [`Items`]: reads grant their credit back.
pub(crate) struct Received {
    id: u64,
    /// Items taken from the inbox, not yet read.
    taken: VecDeque<Delivery>,
    owner: Arc<dyn Owner>,
    handle: Arc<StreamHandle>,
    ended: bool,
    /// Credit of items read and not yet reported (reported every [`BATCH`] bytes, and
    /// whenever the reader is about to wait).
    unreported: u32,
}

impl Received {
    fn report(&mut self) {
        if self.unreported > 0 {
            self.owner.consumed(self.id, std::mem::take(&mut self.unreported));
        }
    }

    pub(crate) fn into_items(self) -> Items {
        Items::new(self)
    }
}

impl futures_core::Stream for Received {
    type Item = Result<Reply, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.ended {
            return Poll::Ready(None);
        }
        // Items that keep coming are a run of work without an await that waits: spend the
        // task's budget, so that a caller woken on this thread (its answer read meanwhile)
        // gets its turn instead of waiting until the stream pauses.
        let coop = std::task::ready!(tokio::task::coop::poll_proceed(cx));
        if self.taken.is_empty() {
            let this = &mut *self;
            let mut inbox = this.handle.inbox.lock().unwrap();
            std::mem::swap(&mut inbox.items, &mut this.taken);
            if this.taken.is_empty() {
                inbox.waker = Some(cx.waker().clone());
                drop(inbox);
                this.report();
                return Poll::Pending;
            }
        }
        let next = match self.taken.front_mut().expect("not empty") {
            Delivery::Run(run) => {
                let item = run.next_item().expect("a run holds at least one item");
                if run.is_empty() {
                    self.taken.pop_front();
                }
                Delivery::Item(item.0, item.1)
            }
            _ => self.taken.pop_front().expect("not empty"),
        };
        coop.made_progress();
        match next {
            Delivery::Item(payload, cost) => {
                if let Some(budget) = &self.handle.budget {
                    budget.update(cost as usize, 0);
                }
                self.unreported += cost;
                if self.unreported as usize >= BATCH {
                    self.report();
                }
                Poll::Ready(Some(Ok(Reply::Ok(payload))))
            }
            Delivery::End(outcome) => {
                self.ended = true;
                Poll::Ready(outcome)
            }
            Delivery::Run(_) => unreachable!("a run is taken item by item"),
        }
    }
}

impl Drop for Received {
    fn drop(&mut self) {
        // Items never read are released, and none are kept from now on.
        let left = {
            let mut inbox = self.handle.inbox.lock().unwrap();
            inbox.reader_gone = true;
            inbox.waker = None;
            std::mem::take(&mut inbox.items)
        };
        self.handle.release(std::mem::take(&mut self.taken).into_iter().chain(left));
        if !self.ended {
            self.owner.abandoned(self.id);
        }
    }
}

/// Bytes of frames a stream's sender gathers before it sends them (one lock, one queue
/// entry and one credit update for many small items).
const BATCH: usize = 64 * 1024;
/// Items a stream's sender takes per unit of the task's cooperative budget: it yields its
/// thread every 128 × this many items that are always ready.
const ITEMS_PER_BUDGET_UNIT: u32 = 4;
/// A payload this large is written from its own buffer, not copied into the batch.
const NO_COPY: usize = 16 * 1024;

/// What the producer of a stream's items gave.
enum Got {
    /// An item, encoded in place at the end of the batch (see [`RunWriter::begin_item`]).
    Appended(ItemSlot),
    /// An item as its own bytes, or the end.
    Next(Option<Result<Reply, Error>>),
}

/// Polls `items` for the next item; `in_place`: into the batch's open run.
fn poll_items(
    items: &mut Items,
    cx: &mut Context<'_>,
    in_place: bool,
    id: u64,
    runs: &mut RunWriter,
    batch: &mut BytesMut,
) -> Poll<Got> {
    if !in_place {
        return Pin::new(items).poll_next(cx).map(Got::Next);
    }
    let slot = runs.begin_item(id, batch);
    match items.poll_into(cx, batch) {
        Poll::Ready(Polled::Appended) => Poll::Ready(Got::Appended(slot)),
        polled => {
            runs.cancel_item(slot, batch);
            polled.map(|polled| match polled {
                Polled::Next(next) => Got::Next(next),
                Polled::Appended => unreachable!("matched above"),
            })
        }
    }
}

/// Sends call `id`'s items as credit allows, then their end. Items ready at once go out
/// together, in batches of whole frames; small items of a producer that encodes (a typed
/// stream) are encoded straight into the batch. Runs as its own task, whose abort handle
/// the stream handle keeps: when the call ends, the task and the producer of the items are
/// dropped.
pub(crate) async fn pump<O: ItemSink>(owner: Arc<O>, handle: Arc<StreamHandle>, id: u64, mut items: Items) {
    // Frames gathered: small ones encoded into `batch`, large payloads as their own parts.
    let mut batch = BytesMut::new();
    let mut runs = RunWriter::default();
    let (item_runs, max_run) = (owner.item_runs(), owner.max_frame() as usize);
    // Items go into runs in place while they are small (a large one is encoded on its own
    // and sent from its own buffer).
    let mut in_place = item_runs;
    // An item frame's bytes before its payload (the id never changes).
    let item_header = Frame::Item { id, payload: Bytes::new() }.encoded_len();
    let mut parts: Vec<Bytes> = Vec::new();
    let mut gathered = 0usize;
    let mut polled_items = 0u32;
    // Credit known to be left (it only grows behind our back), and what the batch spent.
    let mut credit = 0u32;
    let mut spent = 0u32;
    // This stream's turn to gather: held from taking items until they are queued.
    let mut turn: Option<GatherTurn>;
    let flush = |batch: &mut BytesMut,
                 runs: &mut RunWriter,
                 parts: &mut Vec<Bytes>,
                 gathered: &mut usize,
                 spent: &mut u32,
                 turn: &mut Option<GatherTurn>| {
        runs.close(batch);
        owner.spent(id, std::mem::take(spent));
        *gathered = 0;
        if !batch.is_empty() {
            parts.push(batch.split().freeze());
        }
        let group = std::mem::take(parts);
        let owner = owner.clone();
        let turn = turn.take();
        async move {
            let sent = if group.is_empty() { Ok(()) } else { owner.send_bulk(group).await };
            drop(turn);
            sent
        }
    };
    loop {
        // Take the turn, then the next item; a producer with nothing ready is waited for
        // without the turn (other streams gather meanwhile).
        let now = owner.gather_turn().await;
        let ready =
            std::future::poll_fn(|cx| Poll::Ready(poll_items(&mut items, cx, in_place, id, &mut runs, &mut batch)))
                .await;
        let mut got = match ready {
            Poll::Ready(got) => {
                turn = Some(now);
                got
            }
            Poll::Pending => {
                drop(now);
                let next = items.next().await;
                turn = Some(owner.gather_turn().await);
                Got::Next(next)
            }
        };
        loop {
            let next = match got {
                Got::Appended(slot) => {
                    let len = RunWriter::item_len(&slot, &batch);
                    let cost = item_cost(len);
                    // The common case: credit known, a small item, room in the run.
                    if len < NO_COPY && cost <= credit && runs.end_item(&slot, &mut batch, max_run) {
                        credit -= cost;
                        spent += cost;
                        gathered += 4 + len;
                        None
                    } else {
                        // Anything else takes the item's own path below. A small item is
                        // copied out (the batch keeps its room); a large one keeps its bytes.
                        let payload = if len < NO_COPY {
                            let item = Bytes::copy_from_slice(RunWriter::item(&slot, &batch));
                            runs.cancel_item(slot, &mut batch);
                            item
                        } else {
                            runs.take_item(slot, &mut batch).freeze()
                        };
                        Some(Some(Ok(Reply::Ok(payload))))
                    }
                }
                Got::Next(next) => Some(next),
            };
            if let Some(next) = next {
                if let Some(Ok(Reply::Ok(payload))) = &next {
                    in_place = item_runs && payload.len() < NO_COPY;
                }
                let frame = match next {
                    Some(Ok(Reply::Ok(payload))) if item_header + payload.len() > max_run => {
                        let size = (item_header + payload.len()) as u64;
                        end(id, Err(Error::TooLarge { size, limit: max_run as u64 }))
                    }
                    Some(Ok(Reply::Ok(payload))) => {
                        let cost = item_cost(payload.len());
                        let mut said = false;
                        while cost > credit {
                            // What the call's state says is left, less what this batch spent.
                            match owner.credit(id).map(|now| now.saturating_sub(spent)) {
                                None => return,
                                Some(now) if now >= cost => {
                                    credit = now;
                                    if turn.is_none() {
                                        turn = Some(owner.gather_turn().await);
                                    }
                                }
                                Some(_) => {
                                    // Out of credit: send what is gathered (the turn goes
                                    // with it), then wait for a grant (once stuck, say so:
                                    // the reader then grants all it can).
                                    let sent =
                                        flush(&mut batch, &mut runs, &mut parts, &mut gathered, &mut spent, &mut turn);
                                    if sent.await.is_err() {
                                        return;
                                    }
                                    if owner.credit(id).is_some_and(|now| now >= cost) {
                                        continue;
                                    }
                                    if !std::mem::replace(&mut said, true) {
                                        owner.blocked(id);
                                    }
                                    handle.credit.notified().await
                                }
                            }
                        }
                        credit -= cost;
                        spent += cost;
                        Frame::Item { id, payload }
                    }
                    Some(Ok(Reply::Stream(_))) => end(id, Err(Error::internal("a stream inside a stream"))),
                    Some(Ok(reply)) => end(id, Ok(Some(reply))),
                    Some(Err(e)) => end(id, Err(e)),
                    None => end(id, Ok(None)),
                };
                let last = !matches!(frame, Frame::Item { .. });
                match frame {
                    // Small items of a peer that takes runs go several to a frame.
                    Frame::Item { id, payload }
                        if item_runs && payload.len() < NO_COPY && RunWriter::frame_len(payload.len()) <= max_run =>
                    {
                        gathered += 4 + payload.len();
                        runs.push(id, &payload, &mut batch, max_run);
                    }
                    Frame::Item { id, payload } if payload.len() >= NO_COPY => {
                        runs.close(&mut batch);
                        Frame::encode_item_header(id, payload.len(), &mut batch);
                        gathered += batch.len() + payload.len();
                        parts.push(batch.split().freeze());
                        parts.push(payload);
                    }
                    frame => {
                        runs.close(&mut batch);
                        gathered += frame.encoded_len();
                        frame.encode(&mut batch);
                    }
                }
                if last {
                    let _ = flush(&mut batch, &mut runs, &mut parts, &mut gathered, &mut spent, &mut turn).await;
                    owner.items_sent(id);
                    return;
                }
            }
            if gathered >= BATCH {
                break;
            }
            // Gather what is ready now; wait only with nothing gathered. Items spend from
            // the task's budget: a producer that is always ready still lets the thread's
            // other tasks (the connection's writer, the calls beside the stream) in every
            // few hundred items. The batch is kept meanwhile, not sent short.
            polled_items = polled_items.wrapping_add(1);
            let polled = loop {
                let ready = std::future::poll_fn(|cx| {
                    if polled_items % ITEMS_PER_BUDGET_UNIT != 0 {
                        return Poll::Ready(Some(poll_items(&mut items, cx, in_place, id, &mut runs, &mut batch)));
                    }
                    let Poll::Ready(coop) = tokio::task::coop::poll_proceed(cx) else { return Poll::Ready(None) };
                    let polled = poll_items(&mut items, cx, in_place, id, &mut runs, &mut batch);
                    if polled.is_ready() {
                        coop.made_progress();
                    }
                    Poll::Ready(Some(polled))
                });
                match ready.await {
                    Some(polled) => break polled,
                    None => tokio::task::yield_now().await,
                }
            };
            match polled {
                Poll::Ready(ready) => got = ready,
                Poll::Pending => break,
            }
        }
        if flush(&mut batch, &mut runs, &mut parts, &mut gathered, &mut spent, &mut turn).await.is_err() {
            return;
        }
        // Many ready items are one long run of work: let the thread's other tasks in.
        tokio::task::consume_budget().await;
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
