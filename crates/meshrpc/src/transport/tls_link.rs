//! A mutual-TLS connection as a [`Link`], driven on the socket's readiness like
//! [`TcpLink`](super::TcpLink): rustls encrypts and decrypts in the caller's task, with
//! no pump tasks and no extra hop (a [`StreamLink`](super::StreamLink) over tokio-rustls
//! costs two task hops a round trip, which a TLS hop at 20 µs cannot afford).
//!
//! Ciphertext a write could not hand to the kernel stays here and goes out on the next
//! write, or when the connection's reader waits: `readable` also waits for the socket to
//! take it. Every connection has a reader waiting, so nothing written stays behind.

use std::{
    io::{self, Read, Write},
    mem::MaybeUninit,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex},
    task::Poll,
};

use bytes::BytesMut;
use tokio::{
    io::{AsyncRead, ReadBuf},
    net::{
        tcp::{OwnedReadHalf, OwnedWriteHalf},
        TcpStream,
    },
};

use super::link::{Link, Reading, Ready};
use crate::error::LinkFailure;

/// Plaintext one write encrypts at most (it then waits for the socket like TCP does).
const MAX_PLAIN_WRITE: usize = 64 * 1024;

/// A TLS session over TCP, after its handshake.
pub(crate) struct TlsLink {
    /// The one reader of a connection reads through `AsyncRead`, which notices a short
    /// read and waits for the next readiness without another syscall (as `TcpLink`).
    read: Mutex<OwnedReadHalf>,
    write: OwnedWriteHalf,
    peer: SocketAddr,
    state: Mutex<State>,
}

/// Most ciphertext one `read_buf` takes from the socket at a time.
const READ_CHUNK: usize = 16 * 1024;

struct State {
    conn: rustls::Connection,
    /// Decrypted bytes waiting in `conn`.
    plain: usize,
    /// Ciphertext not yet taken by the socket, from `sent` on.
    out: Vec<u8>,
    sent: usize,
    /// The peer closed (close_notify or end of stream) and every byte was read.
    ended: bool,
    failed: Option<LinkFailure>,
}

/// The socket as `io::Read`/`io::Write` for rustls, without waiting.
struct Socket<'a>(&'a TcpStream);

impl Read for Socket<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.try_read(buf)
    }
}

impl TlsLink {
    /// Takes over a session whose handshake is done (bytes it already decrypted included).
    pub(crate) fn new(tcp: TcpStream, mut conn: rustls::Connection) -> TlsLink {
        let peer = tcp.peer_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let (plain, failed) = match conn.process_new_packets() {
            Ok(io) => (io.plaintext_bytes_to_read(), None),
            Err(e) => (0, Some(LinkFailure(Arc::new(io::Error::new(io::ErrorKind::InvalidData, e))))),
        };
        let state = State { conn, plain, out: Vec::new(), sent: 0, ended: false, failed };
        let (read, write) = tcp.into_split();
        TlsLink { read: Mutex::new(read), write, peer, state: Mutex::new(state) }
    }

    fn tcp(&self) -> &TcpStream {
        self.write.as_ref()
    }

    /// Decrypts `ciphertext` and appends the plaintext to `buf`; how many bytes it added.
    fn take(&self, st: &mut State, mut ciphertext: &[u8], buf: &mut BytesMut) -> io::Result<usize> {
        let mut added = 0;
        while !ciphertext.is_empty() {
            if let Err(e) = st.conn.read_tls(&mut ciphertext) {
                return Err(Self::fail(st, e));
            }
            self.process(st)?;
            added += st.drain(buf);
        }
        Ok(added)
    }

    /// Lets rustls act on what it read; answers what it wants answered.
    fn process(&self, st: &mut State) -> io::Result<()> {
        match st.conn.process_new_packets() {
            Ok(io) => {
                st.plain = io.plaintext_bytes_to_read();
                st.ended = io.peer_has_closed() && st.plain == 0;
            }
            Err(e) => {
                // Tell the peer why (an alert), then stay broken.
                st.queue();
                let _ = self.flush(st);
                return Err(Self::fail(st, io::Error::new(io::ErrorKind::InvalidData, e)));
            }
        }
        if st.conn.wants_write() {
            st.queue();
            if let Err(e) = self.flush(st) {
                return Err(Self::fail(st, e));
            }
        }
        Ok(())
    }

    /// Hands queued ciphertext to the socket; `true` when none is left.
    fn flush(&self, st: &mut State) -> io::Result<bool> {
        while st.sent < st.out.len() {
            match self.tcp().try_write(&st.out[st.sent..]) {
                Ok(n) => st.sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        st.out.clear();
        st.sent = 0;
        Ok(true)
    }

    fn fail(st: &mut State, e: io::Error) -> io::Error {
        let failure = LinkFailure(Arc::new(e));
        let err = failure.to_io();
        st.failed = Some(failure);
        err
    }
}

impl State {
    /// Moves what rustls wants to send (records, alerts, tickets) to `out`.
    fn queue(&mut self) {
        while self.conn.wants_write() {
            if self.conn.write_tls(&mut self.out).is_err() {
                break;
            }
        }
    }

    fn pending(&self) -> bool {
        self.sent < self.out.len()
    }

    /// Moves decrypted bytes to `buf`.
    fn drain(&mut self, buf: &mut BytesMut) -> usize {
        if self.plain == 0 {
            return 0;
        }
        let start = buf.len();
        buf.resize(start + self.plain, 0);
        let n = self.conn.reader().read(&mut buf[start..]).unwrap_or(0);
        buf.truncate(start + n);
        self.plain -= n.min(self.plain);
        n
    }
}

impl Link for TlsLink {
    fn readable(&self) -> Ready<'_> {
        Box::pin(async move {
            loop {
                let pending = {
                    let st = self.state.lock().unwrap();
                    if st.plain > 0 || st.ended || st.failed.is_some() {
                        return Ok(());
                    }
                    st.pending()
                };
                if !pending {
                    return self.tcp().readable().await;
                }
                tokio::select! {
                    r = self.tcp().readable() => return r,
                    w = self.tcp().writable() => {
                        w?;
                        let mut st = self.state.lock().unwrap();
                        if let Err(e) = self.flush(&mut st) {
                            Self::fail(&mut st, e);
                        }
                    }
                }
            }
        })
    }

    fn try_read_buf(&self, buf: &mut BytesMut) -> io::Result<usize> {
        let mut st = self.state.lock().unwrap();
        loop {
            if let Some(f) = &st.failed {
                return Err(f.to_io());
            }
            if st.plain > 0 {
                return Ok(st.drain(buf));
            }
            if st.ended {
                return Ok(0);
            }
            match st.conn.read_tls(&mut Socket(self.tcp())) {
                Ok(0) => {
                    st.ended = true;
                    return Ok(0);
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Err(e),
                Err(e) => return Err(Self::fail(&mut st, e)),
            }
            self.process(&mut st)?;
        }
    }

    fn read_buf<'a>(&'a self, buf: &'a mut BytesMut) -> Reading<'a> {
        Box::pin(std::future::poll_fn(move |cx| loop {
            {
                let mut st = self.state.lock().unwrap();
                if let Some(f) = &st.failed {
                    return Poll::Ready(Err(f.to_io()));
                }
                if st.plain > 0 {
                    return Poll::Ready(Ok(st.drain(buf)));
                }
                if st.ended {
                    return Poll::Ready(Ok(0));
                }
                // Ciphertext a write left behind goes out while we wait to read.
                if st.pending() && self.tcp().poll_write_ready(cx).is_ready() {
                    if let Err(e) = self.flush(&mut st) {
                        return Poll::Ready(Err(Self::fail(&mut st, e)));
                    }
                    continue;
                }
            }
            let mut chunk = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
            let mut read = ReadBuf::uninit(&mut chunk);
            let polled = Pin::new(&mut *self.read.lock().unwrap()).poll_read(cx, &mut read);
            let mut st = self.state.lock().unwrap();
            match polled {
                Poll::Ready(Ok(())) if read.filled().is_empty() => {
                    st.ended = true;
                    return Poll::Ready(Ok(0));
                }
                Poll::Ready(Ok(())) => match self.take(&mut st, read.filled(), buf) {
                    Ok(0) => continue, // a record not yet whole
                    done => return Poll::Ready(done),
                },
                Poll::Ready(Err(e)) => return Poll::Ready(Err(Self::fail(&mut st, e))),
                Poll::Pending => return Poll::Pending,
            }
        }))
    }

    fn writable(&self) -> Ready<'_> {
        Box::pin(self.tcp().writable())
    }

    fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        let mut st = self.state.lock().unwrap();
        if let Some(f) = &st.failed {
            return Err(f.to_io());
        }
        match self.flush(&mut st) {
            Ok(true) => {}
            Ok(false) => return Err(io::ErrorKind::WouldBlock.into()),
            Err(e) => return Err(Self::fail(&mut st, e)),
        }
        let n = st.conn.writer().write(&buf[..buf.len().min(MAX_PLAIN_WRITE)])?;
        st.queue();
        // What the socket does not take now goes with the next write, or when the reader
        // waits (see `readable`).
        if let Err(e) = self.flush(&mut st) {
            return Err(Self::fail(&mut st, e));
        }
        Ok(n)
    }

    fn shutdown(&self) {
        let mut st = self.state.lock().unwrap();
        st.conn.send_close_notify();
        st.queue();
        if matches!(self.flush(&mut st), Ok(true)) {
            let _ = socket2::SockRef::from(self.tcp()).shutdown(std::net::Shutdown::Write);
        }
        // Otherwise the socket closes with the link: the peer sees the end either way.
    }

    fn peer_addr(&self) -> SocketAddr {
        self.peer
    }
}
