//! The one seam between the protocol and the bytes: a [`Link`] is a connected byte
//! stream that several tasks may read and write through a shared reference, waiting on
//! readiness (never on a timer). TCP is one through [`TcpLink`]; any
//! `AsyncRead + AsyncWrite` (TLS, an in-process duplex) becomes one through [`StreamLink`].

use std::{
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex},
    task::Poll,
};

use bytes::{Buf, BytesMut};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::{
        tcp::{OwnedReadHalf, OwnedWriteHalf},
        TcpStream,
    },
    sync::{watch, Notify},
};

use crate::error::LinkFailure;

/// A future borrowed from a link.
pub type Ready<'a> = Pin<Box<dyn Future<Output = io::Result<()>> + Send + 'a>>;
/// A read borrowed from a link: how many bytes it added (`0`: end of stream).
pub type Reading<'a> = Pin<Box<dyn Future<Output = io::Result<usize>> + Send + 'a>>;

/// A connected byte stream shared by the tasks of one connection.
pub trait Link: Send + Sync + 'static {
    /// Resolves when a read may make progress (data, end of stream or an error).
    fn readable(&self) -> Ready<'_>;
    /// Reads what is there without waiting: `WouldBlock` when nothing is, `Ok(0)` at the end.
    fn try_read_buf(&self, buf: &mut BytesMut) -> io::Result<usize>;
    /// Resolves when a write may make progress.
    fn writable(&self) -> Ready<'_>;
    /// Reads at least one byte into `buf`, waiting for them (`Ok(0)`: end of stream). For
    /// a link with one reader; the default waits with `readable` and takes with
    /// `try_read_buf`.
    fn read_buf<'a>(&'a self, buf: &'a mut BytesMut) -> Reading<'a> {
        Box::pin(read_some(self, buf))
    }
    /// Writes what fits without waiting: `WouldBlock` when nothing does.
    fn try_write(&self, buf: &[u8]) -> io::Result<usize>;
    /// Writes from several buffers in order without waiting (one syscall where the link
    /// can); by default, from the first non-empty one.
    fn try_write_vectored(&self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match bufs.iter().find(|b| !b.is_empty()) {
            Some(first) => self.try_write(first),
            None => Ok(0),
        }
    }
    /// Closes the sending direction once written data is out: the peer reads end of stream.
    fn shutdown(&self);
    /// The other end.
    fn peer_addr(&self) -> SocketAddr;
}

/// A TCP connection as a [`Link`].
pub struct TcpLink {
    /// Reads by the one reader of a served connection go through `AsyncRead`, which
    /// notices a short read and waits for the next readiness without another syscall.
    read: Mutex<OwnedReadHalf>,
    write: OwnedWriteHalf,
    peer: SocketAddr,
}

impl TcpLink {
    /// Wraps a connected stream.
    pub fn new(stream: TcpStream) -> TcpLink {
        let peer = stream.peer_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let (read, write) = stream.into_split();
        TcpLink { read: Mutex::new(read), write, peer }
    }

    fn stream(&self) -> &TcpStream {
        self.write.as_ref()
    }

    /// One read straight into `buf`'s spare room, through `AsyncRead`.
    fn poll_read_into(&self, cx: &mut std::task::Context<'_>, buf: &mut BytesMut) -> Poll<io::Result<usize>> {
        room_for_read(buf);
        let mut half = self.read.lock().unwrap();
        let read = half.read_buf(buf);
        tokio::pin!(read);
        read.poll(cx)
    }
}

impl std::fmt::Debug for TcpLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpLink").field("peer", &self.peer).finish()
    }
}

impl Link for TcpLink {
    fn readable(&self) -> Ready<'_> {
        Box::pin(self.stream().readable())
    }
    fn try_read_buf(&self, buf: &mut BytesMut) -> io::Result<usize> {
        // Through `AsyncRead` with a waker that does nothing: a short read clears the
        // socket's readiness, so the caller's next try answers `WouldBlock` without a
        // syscall (`TcpStream::try_read_buf` would ask the kernel again, for `EAGAIN`).
        // The one reader of a calling connection uses this; a served connection reads
        // with `read_buf` alone (the two must not wait on one socket at once).
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match self.poll_read_into(&mut cx, buf) {
            Poll::Ready(read) => read,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
    fn read_buf<'a>(&'a self, buf: &'a mut BytesMut) -> Reading<'a> {
        Box::pin(std::future::poll_fn(move |cx| self.poll_read_into(cx, buf)))
    }
    fn writable(&self) -> Ready<'_> {
        Box::pin(self.stream().writable())
    }
    fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        self.stream().try_write(buf)
    }
    fn try_write_vectored(&self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        self.stream().try_write_vectored(bufs)
    }
    fn shutdown(&self) {
        let _ = socket2::SockRef::from(self.stream()).shutdown(std::net::Shutdown::Write);
    }
    fn peer_addr(&self) -> SocketAddr {
        self.peer
    }
}

/// Most bytes one `TcpLink::read_buf` takes.
const READ_CHUNK: usize = 16 * 1024;
/// The most a read makes room for at once.
const MAX_READ_CHUNK: usize = 1024 * 1024;

/// Makes room in `buf` for the rest of the frame it begins, as announced (at most
/// `max` bytes): a caller trusts its node's lengths, so a large answer or item is read in
/// place, without growing and copying its buffer as it arrives.
pub(crate) fn room_for_frame(buf: &mut BytesMut, max: u32) {
    if buf.len() >= 4 {
        let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]).min(max) as usize;
        let missing = (4 + len).saturating_sub(buf.len());
        if missing > buf.capacity() - buf.len() {
            buf.reserve(missing.max(READ_CHUNK));
            return;
        }
    }
    room_for_read(buf);
}

/// Makes room in `buf` for the next read: a chunk, or as much again as `buf` holds (the
/// part of a large frame that arrived), so a large frame takes a few reads, not one per
/// 16 KiB; memory still only grows as bytes arrive (at most twice what did).
pub(crate) fn room_for_read(buf: &mut BytesMut) {
    if buf.capacity() - buf.len() < 1024 {
        buf.reserve(buf.len().clamp(READ_CHUNK, MAX_READ_CHUNK));
    }
}

/// Bytes a [`StreamLink`] holds in each direction before it stops reading or refuses writes.
const STREAM_BUFFER: usize = 256 * 1024;

/// Any `AsyncRead + AsyncWrite` as a [`Link`]: two small tasks move its bytes to and from
/// bounded buffers that the connection's tasks share. One extra hop per direction, so TCP
/// does without it. Dropping the link stops both tasks and closes the stream.
pub struct StreamLink {
    shared: Arc<Shared>,
    /// Dropped with the link: the pump tasks see it and end.
    _alive: watch::Sender<()>,
}

struct Shared {
    peer: SocketAddr,
    inbound: Mutex<Inbound>,
    outbound: Mutex<Outbound>,
    /// Woken when bytes (or the end) arrive, and when the writer made room.
    arrived: Notify,
    room: Notify,
    /// Wakes the pump tasks: there is room to read into, or bytes to write.
    to_reader: Notify,
    to_writer: Notify,
}

#[derive(Default)]
struct Inbound {
    bytes: BytesMut,
    ended: bool,
    error: Option<LinkFailure>,
}

#[derive(Default)]
struct Outbound {
    bytes: BytesMut,
    shutdown: bool,
    error: Option<LinkFailure>,
}

impl StreamLink {
    /// Wraps `stream`, whose other end is `peer` (for logs). Spawns its two pump tasks.
    pub fn new<S>(stream: S, peer: SocketAddr) -> StreamLink
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let shared = Arc::new(Shared {
            peer,
            inbound: Mutex::default(),
            outbound: Mutex::default(),
            arrived: Notify::new(),
            room: Notify::new(),
            to_reader: Notify::new(),
            to_writer: Notify::new(),
        });
        let (alive, gone) = watch::channel(());
        let (read, write) = tokio::io::split(stream);
        tokio::spawn(pump_in(shared.clone(), read, gone.clone()));
        tokio::spawn(pump_out(shared.clone(), write, gone));
        StreamLink { shared, _alive: alive }
    }
}

impl Shared {
    /// Waits on `notify` until `ready` holds, without missing a wake-up in between.
    async fn wait(&self, notify: &Notify, ready: impl Fn(&Shared) -> bool) {
        loop {
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if ready(self) {
                return;
            }
            notified.await;
        }
    }
}

async fn pump_in<R: AsyncRead + Unpin>(link: Arc<Shared>, mut read: R, mut gone: watch::Receiver<()>) {
    let mut chunk = BytesMut::with_capacity(16 * 1024);
    loop {
        let got = tokio::select! {
            got = async {
                link.wait(&link.to_reader, |l| l.inbound.lock().unwrap().bytes.len() < STREAM_BUFFER).await;
                chunk.reserve(16 * 1024);
                read.read_buf(&mut chunk).await
            } => got,
            _ = gone.changed() => return,
        };
        let more = {
            let mut inb = link.inbound.lock().unwrap();
            match got {
                Ok(0) => {
                    inb.ended = true;
                    false
                }
                Ok(_) => {
                    inb.bytes.extend_from_slice(&chunk.split());
                    true
                }
                Err(e) => {
                    inb.error = Some(LinkFailure(Arc::new(e)));
                    false
                }
            }
        };
        link.arrived.notify_waiters();
        if !more {
            return;
        }
    }
}

async fn pump_out<W: AsyncWrite + Unpin>(link: Arc<Shared>, mut write: W, mut gone: watch::Receiver<()>) {
    let mut chunk = BytesMut::new();
    loop {
        let woke = tokio::select! {
            _ = link.wait(&link.to_writer, |l| {
                let out = l.outbound.lock().unwrap();
                !out.bytes.is_empty() || out.shutdown
            }) => true,
            _ = gone.changed() => false,
        };
        let shutdown = {
            let mut out = link.outbound.lock().unwrap();
            std::mem::swap(&mut out.bytes, &mut chunk);
            out.shutdown || !woke
        };
        let result = async {
            write.write_all(&chunk).await?;
            write.flush().await?;
            if shutdown {
                write.shutdown().await?;
            }
            Ok::<_, io::Error>(())
        };
        // Whatever was queued still goes out after the link is dropped, within a bound.
        let result = match tokio::time::timeout(std::time::Duration::from_secs(5), result).await {
            Ok(r) => r,
            Err(_) => Err(io::ErrorKind::TimedOut.into()),
        };
        chunk.clear();
        let failed = result.is_err();
        if let Err(e) = result {
            link.outbound.lock().unwrap().error = Some(LinkFailure(Arc::new(e)));
        }
        link.room.notify_waiters();
        if failed || shutdown {
            return;
        }
    }
}

impl Link for StreamLink {
    fn readable(&self) -> Ready<'_> {
        Box::pin(async move {
            self.shared
                .wait(&self.shared.arrived, |l| {
                    let inb = l.inbound.lock().unwrap();
                    !inb.bytes.is_empty() || inb.ended || inb.error.is_some()
                })
                .await;
            Ok(())
        })
    }

    fn try_read_buf(&self, buf: &mut BytesMut) -> io::Result<usize> {
        let mut inb = self.shared.inbound.lock().unwrap();
        if !inb.bytes.is_empty() {
            let n = inb.bytes.len();
            buf.extend_from_slice(&inb.bytes);
            inb.bytes.clear();
            drop(inb);
            self.shared.to_reader.notify_one();
            return Ok(n);
        }
        match (&inb.error, inb.ended) {
            (Some(failure), _) => Err(failure.to_io()),
            (None, true) => Ok(0),
            (None, false) => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    fn writable(&self) -> Ready<'_> {
        Box::pin(async move {
            self.shared
                .wait(&self.shared.room, |l| {
                    let out = l.outbound.lock().unwrap();
                    out.bytes.len() < STREAM_BUFFER || out.error.is_some()
                })
                .await;
            Ok(())
        })
    }

    fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        let mut out = self.shared.outbound.lock().unwrap();
        if let Some(failure) = &out.error {
            return Err(failure.to_io());
        }
        if out.shutdown {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        let n = buf.len().min(STREAM_BUFFER.saturating_sub(out.bytes.len()));
        if n == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        out.bytes.extend_from_slice(&buf[..n]);
        drop(out);
        self.shared.to_writer.notify_one();
        Ok(n)
    }

    fn shutdown(&self) {
        self.shared.outbound.lock().unwrap().shutdown = true;
        self.shared.to_writer.notify_one();
    }

    fn peer_addr(&self) -> SocketAddr {
        self.shared.peer
    }
}

impl<L: Link + ?Sized> Link for Arc<L> {
    fn readable(&self) -> Ready<'_> {
        (**self).readable()
    }
    fn try_read_buf(&self, buf: &mut BytesMut) -> io::Result<usize> {
        (**self).try_read_buf(buf)
    }
    fn writable(&self) -> Ready<'_> {
        (**self).writable()
    }
    fn read_buf<'a>(&'a self, buf: &'a mut BytesMut) -> Reading<'a> {
        (**self).read_buf(buf)
    }
    fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        (**self).try_write(buf)
    }
    fn try_write_vectored(&self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        (**self).try_write_vectored(bufs)
    }
    fn shutdown(&self) {
        (**self).shutdown()
    }
    fn peer_addr(&self) -> SocketAddr {
        (**self).peer_addr()
    }
}

/// Reads at least one byte into `buf`, waiting on readiness. `Ok(0)`: end of stream.
pub(crate) async fn read_some<L: Link + ?Sized>(link: &L, buf: &mut BytesMut) -> io::Result<usize> {
    loop {
        link.readable().await?;
        match link.try_read_buf(buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            other => return other,
        }
    }
}

/// Writes all of `buf`, waiting on readiness.
pub(crate) async fn write_all(link: &dyn Link, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        link.writable().await?;
        match link.try_write(buf) {
            Ok(n) => buf.advance(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
