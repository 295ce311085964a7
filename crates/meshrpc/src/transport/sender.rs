//! The sending side of a connection shared by many callers.
//!
//! A lone caller writes its frame straight to the socket (no task hop: a cross-thread
//! wake-up costs more than the write on small machines). When other calls are in flight,
//! frames queue and a writer task flushes them in one write per wake-up: fewer syscalls
//! under load. Once anything is queued, later frames queue behind it, so order is kept.
//!
//! Stream items go in a second, bulk lane, written only when nothing else waits: an answer,
//! a credit grant or a ping queued behind a stream's items overtakes them (whole batches
//! of frames at a time), so a full-speed stream does not hold up the calls beside it.
//! Everything one stream sends (its items and its end) goes in the bulk lane, in order.

use std::{
    collections::VecDeque,
    io::ErrorKind,
    sync::{Arc, Mutex},
};

use bytes::{Buf, Bytes, BytesMut};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use super::Link;
use crate::proto::Frame;

pub(crate) struct Sender {
    link: Arc<dyn Link>,
    queue: Mutex<Queue>,
    wake: Notify,
    /// Woken when the writer made progress: wrote a chunk, emptied the queue, or broke.
    progress: Notify,
    /// Writes done so far (a queue that stays full while this stands still is stuck).
    writes: std::sync::atomic::AtomicU64,
    /// Turns of the connection's streams to gather a batch: however many streams a peer
    /// opens, at most [`GATHERERS`] batches are being gathered or wait for room at once.
    gathering: Arc<Semaphore>,
    /// Bytes queued at which the queue counts as full, and the wake-up of whoever watches
    /// for a full queue (the serving side closes one that stays full with no write).
    full_at: usize,
    filled: Notify,
    /// The watcher already has its eye on a full queue (no wake-up needed meanwhile).
    watched: std::sync::atomic::AtomicBool,
    /// Large requests and answers go compressed (feature `ZSTD` negotiated).
    compress: bool,
}

/// Streams of one connection that may gather a batch at once (the others wait holding
/// nothing): enough to keep the writer busy while another batch is encoded.
pub(crate) const GATHERERS: usize = 4;

/// A stream's turn to gather a batch and queue it; the next one waiting goes when it is
/// dropped.
pub(crate) type GatherTurn = OwnedSemaphorePermit;

#[derive(Default)]
struct Queue {
    bytes: BytesMut,
    /// Groups of whole stream frames (a large item's payload is its own part, written
    /// without a copy), each written whole when `bytes` is empty.
    bulk: VecDeque<Vec<Bytes>>,
    bulk_len: usize,
    /// Bytes the writer task took and is writing.
    writing: usize,
    /// What it is writing is a bulk group (stream frames), not answers.
    writing_bulk: bool,
    /// The writer task owns the socket until the queue is empty.
    flushing: bool,
    broken: bool,
}

/// Bytes of answers queued or being written.
fn q_answers(q: &Queue) -> usize {
    q.bytes.len() + if q.writing_bulk { 0 } else { q.writing }
}

/// The socket failed; the connection is over.
#[derive(Debug)]
pub(crate) struct Broken;

impl Sender {
    /// A sender over `link` whose queue counts as full at `full_at` bytes.
    pub(crate) fn new(link: Arc<dyn Link>, full_at: usize) -> Sender {
        Sender {
            link,
            queue: Mutex::default(),
            wake: Notify::new(),
            progress: Notify::new(),
            writes: Default::default(),
            gathering: Arc::new(Semaphore::new(GATHERERS)),
            full_at,
            filled: Notify::new(),
            watched: Default::default(),
            compress: false,
        }
    }

    /// Compresses large requests and answers (both sides offered zstd).
    pub(crate) fn compressing(mut self, compress: bool) -> Sender {
        self.compress = compress;
        self
    }

    /// Waits for a stream's turn to gather a batch, then for room for it in the queue
    /// (at most `limit` bytes queued).
    pub(crate) async fn gather_turn(&self, limit: usize) -> GatherTurn {
        let turn = self.gathering.clone().acquire_owned().await.expect("never closed");
        self.room(limit).await;
        turn
    }

    /// Sends a frame: written at once when `direct` and nothing is queued, else queued
    /// for the writer task.
    pub(crate) fn send(&self, frame: &Frame, direct: bool) -> Result<(), Broken> {
        let compressible = matches!(frame, Frame::Request { .. } | Frame::Response { .. });
        if self.compress && compressible && frame.encoded_len() > crate::proto::COMPRESS_FROM {
            // Compressed before the queue is locked: the other senders do not wait for it.
            let mut encoded = BytesMut::new();
            frame.encode_with(&mut encoded, true);
            return self.send_encoded(&encoded, direct);
        }
        self.send_with(direct, |bytes| frame.encode(bytes))
    }

    /// Sends frames already encoded, as [`send`](Self::send) does.
    pub(crate) fn send_encoded(&self, frames: &[u8], direct: bool) -> Result<(), Broken> {
        self.send_with(direct, |bytes| bytes.extend_from_slice(frames))
    }

    /// Queues whole stream frames, in parts, in the bulk lane (written when nothing else
    /// waits; nothing is written between the parts of one group).
    pub(crate) fn send_bulk(&self, group: Vec<Bytes>) -> Result<(), Broken> {
        let mut q = self.queue.lock().unwrap();
        if q.broken {
            return Err(Broken);
        }
        q.bulk_len += group.iter().map(Bytes::len).sum::<usize>();
        q.bulk.push_back(group);
        self.note_full(&q);
        if !q.flushing {
            q.flushing = true;
            self.wake.notify_one();
        }
        Ok(())
    }

    /// Resolves when a frame was queued while the queue was full (at once if that
    /// happened since the last call).
    pub(crate) async fn filled(&self) {
        self.filled.notified().await
    }

    /// The watcher has its eye on the full queue (`true`) or saw it not full (`false`):
    /// only in the second case does filling it wake the watcher.
    pub(crate) fn watching(&self, on: bool) {
        self.watched.store(on, std::sync::atomic::Ordering::Relaxed);
    }

    fn note_full(&self, q: &Queue) {
        if q.bytes.len() + q.bulk_len + q.writing >= self.full_at
            && !self.watched.load(std::sync::atomic::Ordering::Relaxed)
        {
            self.filled.notify_one();
        }
    }

    /// Resolves once everything queued has been written (or the socket broke).
    pub(crate) async fn flushed(&self) {
        self.until(|q| q.broken || (!q.flushing && q.bytes.is_empty() && q.bulk.is_empty())).await
    }

    /// Bytes of answers (everything but the bulk lane) waiting to be written: what a peer
    /// that reads nothing makes us hold beyond its streams, which their credit bounds.
    pub(crate) fn answers_queued(&self) -> usize {
        q_answers(&self.queue.lock().unwrap())
    }

    /// Bytes waiting to be written, stream items included.
    pub(crate) fn queued(&self) -> usize {
        let q = self.queue.lock().unwrap();
        q.bytes.len() + q.bulk_len + q.writing
    }

    /// Writes the writer task finished so far.
    pub(crate) fn writes(&self) -> u64 {
        self.writes.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Resolves once at most `limit` bytes wait to be written (or the socket broke).
    pub(crate) async fn room(&self, limit: usize) {
        self.until(|q| q.broken || q.bytes.len() + q.bulk_len + q.writing <= limit).await
    }

    /// Resolves once at most `limit` bytes of answers wait to be written (or the socket
    /// broke): a stream's queued items never hold an answer back.
    pub(crate) async fn answers_room(&self, limit: usize) {
        self.until(|q| q.broken || q_answers(q) <= limit).await
    }

    async fn until(&self, done: impl Fn(&Queue) -> bool) {
        loop {
            let progress = self.progress.notified();
            tokio::pin!(progress);
            progress.as_mut().enable();
            if done(&self.queue.lock().unwrap()) {
                return;
            }
            progress.await;
        }
    }

    fn send_with(&self, direct: bool, encode: impl FnOnce(&mut BytesMut)) -> Result<(), Broken> {
        let mut q = self.queue.lock().unwrap();
        if q.broken {
            return Err(Broken);
        }
        encode(&mut q.bytes);
        if q.flushing {
            self.note_full(&q);
            return Ok(());
        }
        if !direct {
            q.flushing = true;
            self.wake.notify_one();
            self.note_full(&q);
            return Ok(());
        }
        match self.link.try_write(&q.bytes) {
            Ok(n) if n == q.bytes.len() => q.bytes.clear(),
            Ok(n) => {
                q.bytes.advance(n);
                q.flushing = true;
                self.wake.notify_one();
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                q.flushing = true;
                self.wake.notify_one();
            }
            Err(_) => {
                q.broken = true;
                self.progress.notify_waiters();
                return Err(Broken);
            }
        }
        self.note_full(&q);
        Ok(())
    }

    /// The writer task: flushes whatever the fast path could not write. The socket is
    /// written outside the lock, so callers queueing frames never wait on a syscall.
    pub(crate) async fn flush_loop(&self) {
        let mut chunk = BytesMut::with_capacity(16 * 1024);
        loop {
            self.wake.notified().await;
            // Let the callers this worker is about to run queue their frames first: one
            // write for all of them instead of one each (lone callers write directly and
            // never wait for this).
            tokio::task::yield_now().await;
            loop {
                let bulk = {
                    let mut q = self.queue.lock().unwrap();
                    if !q.bytes.is_empty() {
                        std::mem::swap(&mut q.bytes, &mut chunk);
                        (q.writing, q.writing_bulk) = (chunk.len(), false);
                        None
                    } else if let Some(group) = q.bulk.pop_front() {
                        let len = group.iter().map(Bytes::len).sum::<usize>();
                        q.bulk_len -= len;
                        (q.writing, q.writing_bulk) = (len, true);
                        Some(group)
                    } else {
                        q.flushing = false;
                        self.progress.notify_waiters();
                        break;
                    }
                };
                let written = match bulk {
                    Some(group) => self.write_group(group).await,
                    None => self.write_all(&mut chunk).await,
                };
                if written.is_err() {
                    return self.broke();
                }
                chunk.clear();
                self.queue.lock().unwrap().writing = 0;
                self.writes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                self.progress.notify_waiters();
                if chunk.capacity() > 1 << 20 {
                    chunk = BytesMut::with_capacity(16 * 1024); // give back memory after a large frame
                }
            }
        }
    }

    async fn write_all(&self, bytes: &mut impl Buf) -> Result<(), Broken> {
        while bytes.has_remaining() {
            self.link.writable().await.map_err(|_| Broken)?;
            match self.link.try_write(bytes.chunk()) {
                Ok(n) => bytes.advance(n),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => return Err(Broken),
            }
        }
        Ok(())
    }

    /// Writes a group's parts in order, several per syscall.
    async fn write_group(&self, mut group: Vec<Bytes>) -> Result<(), Broken> {
        let mut first = 0;
        while first < group.len() {
            self.link.writable().await.map_err(|_| Broken)?;
            let slices: Vec<std::io::IoSlice<'_>> =
                group[first..].iter().take(64).map(|b| std::io::IoSlice::new(b)).collect();
            match self.link.try_write_vectored(&slices) {
                Ok(mut n) => {
                    drop(slices);
                    while n > 0 {
                        let part = &mut group[first];
                        let step = n.min(part.len());
                        part.advance(step);
                        n -= step;
                        if part.is_empty() {
                            first += 1;
                        }
                    }
                    while first < group.len() && group[first].is_empty() {
                        first += 1;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => return Err(Broken),
            }
        }
        Ok(())
    }

    fn broke(&self) {
        self.queue.lock().unwrap().broken = true;
        self.progress.notify_waiters();
    }

    /// Half-closes the link: the peer reads end-of-stream.
    pub(crate) fn shutdown(&self) {
        self.link.shutdown();
    }
}
