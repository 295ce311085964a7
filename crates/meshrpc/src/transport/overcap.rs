//! Connections past a listener's cap, and the descriptors a process has for connections.
//!
//! Past the cap a connection never reaches a handler: its first bytes are read in a small
//! lane (`OVER_CAP` at once) and it gets a liveness or readiness answer (a probe), the
//! mesh protocol's own refusal (`overloaded`), a `503`, or nothing. When the lane is full
//! its oldest connection still silent gives way to the new one: a probe sends its request
//! at once, so a flood of silent connections cannot keep it out. Silent means no byte in
//! its socket: a probe the lane has not read yet (a starved node) is not taken for silent.

use std::{
    collections::VecDeque,
    mem::MaybeUninit,
    sync::{
        atomic::{AtomicBool, AtomicIsize, Ordering},
        Arc, OnceLock, Weak,
    },
    time::Duration,
};

use bytes::BytesMut;
use tokio::{
    net::TcpStream,
    task::{AbortHandle, JoinSet},
};

use super::port_stream::{answer_and_close, Rewind};
use crate::{
    call::BoxFuture,
    proto::{refusal, sniff, Sniffed, OVERLOADED},
};

/// Connections past the cap read or answered at once, per listener.
pub(crate) const OVER_CAP: usize = 64;
/// Connections past the cap closed to make room but not yet dropped: an aborted task
/// keeps its socket open until the runtime drops it, later under load. Counted against
/// the lane, so it holds at most `OVER_CAP + CLOSING` descriptors.
const CLOSING: usize = 64;
/// The descriptors the lane past the cap may hold, per listener.
pub(crate) const OVER_CAP_FDS: usize = OVER_CAP + CLOSING;
/// How long a connection past the cap has to send its first bytes.
const FIRST_BYTES: Duration = Duration::from_secs(1);
/// How long a probe served past the cap may take.
const PROBE_TIME: Duration = Duration::from_secs(5);
/// The paths of liveness probes, answered `204` past the cap without a handler.
const LIVENESS: [&[u8]; 2] = [b"/ping", b"/__heartbeat__"];
/// The paths of readiness and health probes, served past the cap by the listener's
/// [`Probes`] (their answers depend on the node's state).
const READINESS: [&[u8]; 2] = [b"/healthz", b"/ready"];

/// Serves one probe (`GET /healthz`, `GET /ready`) that came past the cap, its first bytes
/// already read: the listener's own HTTP service, for that request.
pub(crate) type Probes = Arc<dyn Fn(Rewind<TcpStream>) -> BoxFuture<()> + Send + Sync>;

/// The connections of one listener past its cap.
pub(crate) struct OverCap {
    tasks: JoinSet<()>,
    /// Tasks in the order they came, each with its flag "answering" (no longer silent) and
    /// its socket, to look for bytes the task has not read yet.
    order: VecDeque<Waiting>,
}

struct Waiting {
    task: AbortHandle,
    answering: Arc<AtomicBool>,
    stream: Weak<TcpStream>,
}

impl Waiting {
    fn gone_or_answering(&self) -> bool {
        self.task.is_finished() || self.answering.load(Ordering::Relaxed)
    }

    /// No byte waits in its socket (and its peer has not closed it): a connection that
    /// sends nothing, not a probe the lane has yet to read.
    fn silent(&self) -> bool {
        let Some(stream) = self.stream.upgrade() else { return false };
        let mut byte = [MaybeUninit::<u8>::uninit()];
        // Non-blocking (tokio's sockets are): `WouldBlock` is an empty socket.
        matches!(socket2::SockRef::from(&*stream).peek(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }
}

impl OverCap {
    pub(crate) fn new() -> OverCap {
        OverCap { tasks: JoinSet::new(), order: VecDeque::new() }
    }

    /// Takes a connection past the cap: read, answered, closed. With the lane full, the
    /// oldest connection still silent is closed to make room, else the new one is.
    pub(crate) fn admit(&mut self, stream: TcpStream, max_connections: usize, probes: Option<Probes>) {
        // Tasks that ended (or were aborted and dropped) give their place back now; aborted
        // ones not yet dropped still hold a descriptor, and count.
        while self.tasks.try_join_next().is_some() {}
        if self.tasks.len() >= OVER_CAP && (self.tasks.len() >= OVER_CAP_FDS || !self.evict_oldest_silent()) {
            return; // every one is being answered, or too many are closing: this one is closed at once
        }
        let answering = Arc::new(AtomicBool::new(false));
        let stream = Arc::new(stream);
        let weak = Arc::downgrade(&stream);
        let task = self.tasks.spawn(over_capacity(stream, max_connections, probes, answering.clone()));
        self.order.push_back(Waiting { task, answering, stream: weak });
        if self.order.len() > 4 * OVER_CAP {
            self.order.retain(|waiting| !waiting.gone_or_answering());
        }
    }

    /// Closes the oldest connection that is still silent; false if none is.
    fn evict_oldest_silent(&mut self) -> bool {
        self.order.retain(|waiting| !waiting.gone_or_answering());
        let Some(at) = self.order.iter().position(Waiting::silent) else { return false };
        let waiting = self.order.remove(at).expect("found");
        waiting.task.abort();
        true
    }

    /// Reaps a finished connection (pending while there is none).
    pub(crate) async fn join_next(&mut self) {
        if self.tasks.join_next().await.is_none() {
            std::future::pending::<()>().await;
        }
    }

    pub(crate) async fn shutdown(&mut self) {
        self.tasks.shutdown().await;
    }
}

/// What the first bytes of a connection past the cap ask for.
#[derive(Debug, PartialEq, Eq)]
enum Asked {
    Mesh,
    Liveness,
    Readiness,
    Http,
    Nothing,
}

fn asked(first: &[u8]) -> Asked {
    if sniff(first) == Sniffed::Mesh {
        return Asked::Mesh;
    }
    let path = [&b"GET "[..], b"HEAD "].iter().find_map(|m| first.strip_prefix(*m));
    let probe = |paths: &[&[u8]]| {
        path.is_some_and(|p| {
            paths
                .iter()
                .any(|probe| p.strip_prefix(*probe).is_some_and(|rest| matches!(rest.first(), Some(b' ' | b'?'))))
        })
    };
    if probe(&LIVENESS) {
        Asked::Liveness
    } else if probe(&READINESS) {
        Asked::Readiness
    } else if first.iter().take_while(|b| b.is_ascii_uppercase()).count() > 2 {
        Asked::Http
    } else {
        Asked::Nothing
    }
}

/// A connection past the cap: liveness probes get their 204, readiness probes the
/// listener's own answer, mesh callers a handshake refusal saying `overloaded`, other
/// HTTP requests a 503 saying why; anything else is closed.
async fn over_capacity(
    shared: Arc<TcpStream>,
    max_connections: usize,
    probes: Option<Probes>,
    answering: Arc<AtomicBool>,
) {
    let mut first = BytesMut::with_capacity(256);
    let told = tokio::time::timeout(FIRST_BYTES, async {
        // A mesh hello is told by its preface; an HTTP request by its whole head.
        while sniff(&first) != Sniffed::Mesh && first.len() < 256 && !first.windows(4).any(|w| w == b"\r\n\r\n") {
            shared.readable().await.ok()?;
            match shared.try_read_buf(&mut first) {
                Ok(0) => return None,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return None,
            }
        }
        Some(())
    });
    if told.await.ok().flatten().is_none() && first.is_empty() {
        return;
    }
    answering.store(true, Ordering::Relaxed);
    // The lane looks at a socket only for an instant, and no longer once it is answering.
    let mut shared = shared;
    let stream = loop {
        match Arc::try_unwrap(shared) {
            Ok(stream) => break stream,
            Err(again) => {
                shared = again;
                tokio::task::yield_now().await;
            }
        }
    };
    let why = format!("the node serves its maximum of {max_connections} connections");
    let answer = match asked(&first) {
        Asked::Mesh => {
            let mut out = BytesMut::new();
            refusal(&format!("{OVERLOADED}{why}"), &mut out);
            out.to_vec()
        }
        Asked::Liveness => b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n".to_vec(),
        Asked::Readiness if probes.is_some() => {
            let serve = probes.expect("checked");
            let _ = tokio::time::timeout(PROBE_TIME, serve(Rewind::new(first.freeze(), stream))).await;
            return;
        }
        Asked::Readiness | Asked::Http => {
            let body = format!(r#"{{"data":null,"errors":[{{"code":"overloaded","message":"overloaded: {why}"}}]}}"#);
            format!(
                "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes()
        }
        Asked::Nothing => return,
    };
    answer_and_close(stream, &answer).await;
}

/// Descriptors this process's listeners may fill with the connections they serve: the
/// soft limit, less what was open when the first listener started, [`FD_RESERVE`] for
/// the rest (outgoing connections, files) and the lane of connections past the cap.
/// Every listener of the process takes from it.
pub(crate) struct FdRoom {
    left: AtomicIsize,
    /// The soft limit it was made from.
    pub(crate) limit: u64,
    /// Connections it had room for.
    pub(crate) connections: usize,
}

/// Descriptors kept for what is not an accepted connection.
const FD_RESERVE: u64 = 32;

impl FdRoom {
    /// The process's room (made when the first listener starts).
    pub(crate) fn get() -> &'static FdRoom {
        static ROOM: OnceLock<FdRoom> = OnceLock::new();
        ROOM.get_or_init(|| {
            let limit = soft_fd_limit();
            let open = std::fs::read_dir("/proc/self/fd").map_or(16, |dir| dir.count()) as u64;
            let room = limit.saturating_sub(open + FD_RESERVE + OVER_CAP_FDS as u64).min(isize::MAX as u64) as usize;
            FdRoom { left: AtomicIsize::new(room as isize), limit, connections: room }
        })
    }

    /// Takes a descriptor for a connection: `None` when there is no room.
    pub(crate) fn take(&'static self) -> Option<FdHeld> {
        if self.left.fetch_sub(1, Ordering::AcqRel) <= 0 {
            self.left.fetch_add(1, Ordering::AcqRel);
            return None;
        }
        Some(FdHeld(self))
    }
}

/// A descriptor a connection holds; given back when dropped.
pub(crate) struct FdHeld(&'static FdRoom);

impl Drop for FdHeld {
    fn drop(&mut self) {
        self.0.left.fetch_add(1, Ordering::AcqRel);
    }
}

#[cfg(unix)]
fn soft_fd_limit() -> u64 {
    rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(soft, _)| soft)
}

#[cfg(not(unix))]
fn soft_fd_limit() -> u64 {
    u64::MAX
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_connection_past_the_cap_asks_for() {
        assert_eq!(asked(b"MESHRPC22\0\0\0\x07"), Asked::Mesh);
        assert_eq!(asked(b"GET /ping HTTP/1.1\r\n\r\n"), Asked::Liveness);
        assert_eq!(asked(b"HEAD /__heartbeat__ HTTP/1.1\r\n\r\n"), Asked::Liveness);
        assert_eq!(asked(b"GET /healthz HTTP/1.1\r\n\r\n"), Asked::Readiness);
        assert_eq!(asked(b"GET /ready?full=1 HTTP/1.1\r\n\r\n"), Asked::Readiness);
        assert_eq!(asked(b"GET /pingpong HTTP/1.1\r\n\r\n"), Asked::Http);
        assert_eq!(asked(b"POST /ping HTTP/1.1\r\n\r\n"), Asked::Http);
        assert_eq!(asked(b"\x16\x03\x01"), Asked::Nothing);
    }
}
