//! The sending side of a connection shared by many callers.
//!
//! A lone caller writes its frame straight to the socket (no task hop: a cross-thread
//! wake-up costs more than the write on small machines). When other calls are in flight,
//! frames queue and a writer task flushes them in one write per wake-up: fewer syscalls
//! under load. Once anything is queued, later frames queue behind it, so order is kept.

use std::{io::ErrorKind, sync::Mutex};

use bytes::{Buf, BytesMut};
use tokio::{net::tcp::OwnedWriteHalf, sync::Notify};

use super::Frame;

pub(crate) struct Sender {
    half: OwnedWriteHalf,
    queue: Mutex<Queue>,
    wake: Notify,
}

#[derive(Default)]
struct Queue {
    bytes: BytesMut,
    /// The writer task owns the socket until the queue is empty.
    flushing: bool,
    broken: bool,
}

/// The socket failed; the connection is over.
#[derive(Debug)]
pub(crate) struct Broken;

impl Sender {
    pub(crate) fn new(half: OwnedWriteHalf) -> Sender {
        Sender { half, queue: Mutex::default(), wake: Notify::new() }
    }

    /// Sends a frame: written at once when `direct` and nothing is queued, else queued
    /// for the writer task.
    pub(crate) fn send(&self, frame: &Frame, direct: bool) -> Result<(), Broken> {
        self.send_with(direct, |bytes| frame.encode(bytes))
    }

    /// Sends frames already encoded, as [`send`](Self::send) does.
    pub(crate) fn send_encoded(&self, frames: &[u8], direct: bool) -> Result<(), Broken> {
        self.send_with(direct, |bytes| bytes.extend_from_slice(frames))
    }

    /// Resolves once everything queued has been written (or the socket broke).
    pub(crate) async fn flushed(&self) {
        loop {
            {
                let q = self.queue.lock().unwrap();
                if q.broken || (!q.flushing && q.bytes.is_empty()) {
                    return;
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    }

    fn send_with(&self, direct: bool, encode: impl FnOnce(&mut BytesMut)) -> Result<(), Broken> {
        let mut q = self.queue.lock().unwrap();
        if q.broken {
            return Err(Broken);
        }
        encode(&mut q.bytes);
        if q.flushing {
            return Ok(());
        }
        if !direct {
            q.flushing = true;
            self.wake.notify_one();
            return Ok(());
        }
        match self.half.try_write(&q.bytes) {
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
                return Err(Broken);
            }
        }
        Ok(())
    }

    /// The writer task: flushes whatever the fast path could not write. The socket is
    /// written outside the lock, so callers queueing frames never wait on a syscall.
    pub(crate) async fn flush_loop(&self) {
        let mut chunk = BytesMut::with_capacity(16 * 1024);
        loop {
            self.wake.notified().await;
            loop {
                {
                    let mut q = self.queue.lock().unwrap();
                    if q.bytes.is_empty() {
                        q.flushing = false;
                        break;
                    }
                    std::mem::swap(&mut q.bytes, &mut chunk);
                }
                while !chunk.is_empty() {
                    if self.half.writable().await.is_err() {
                        self.queue.lock().unwrap().broken = true;
                        return;
                    }
                    match self.half.try_write(&chunk) {
                        Ok(n) => chunk.advance(n),
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                        Err(_) => {
                            self.queue.lock().unwrap().broken = true;
                            return;
                        }
                    }
                }
                chunk.clear();
                if chunk.capacity() > 1 << 20 {
                    chunk = BytesMut::with_capacity(16 * 1024); // give back memory after a large frame
                }
            }
        }
    }

    /// Half-closes the socket: the peer reads end-of-stream.
    pub(crate) fn shutdown(&self) {
        let _ = socket2::SockRef::from(self.half.as_ref()).shutdown(std::net::Shutdown::Write);
    }
}
