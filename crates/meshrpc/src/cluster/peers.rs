//! Connections to the other nodes: opened on first use, shared by every call, dropped
//! from picking the moment they break, reconnected with backoff.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use super::{balance::PeakEwma, outlier::Accrual};
use crate::{
    error::Error,
    identity::Identity,
    proto::ConnState as State,
    transport::{ConnectOptions, Connection, Network},
};

const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
const EWMA_TAU: Duration = Duration::from_secs(10);
/// A peer's stream lane is looked at this often: once no call started on it since the last
/// look and none is in flight, it closes a second later (11–21 s after the last started).
const LANE_IDLE: Duration = Duration::from_secs(10);
/// After a stream lane could not be opened, streams share the peer's connection this long.
const LANE_BACKOFF: Duration = Duration::from_secs(5);

/// Every peer this node has talked to, by mesh address.
pub(crate) struct Peers {
    map: Mutex<BTreeMap<SocketAddr, Arc<Peer>>>,
    dial: Arc<Dial>,
}

/// How this node connects to its peers: its options, over its network.
struct Dial {
    options: ConnectOptions,
    /// None: the operating system's.
    network: Option<Arc<dyn Network>>,
}

impl Dial {
    async fn to(&self, addr: SocketAddr) -> Result<Connection, Error> {
        crate::transport::connect_through(self.network.as_ref(), addr, self.options.clone()).await
    }
}

impl Peers {
    /// Connections opened as `caller` (the node's name, for peers' request logs).
    pub(crate) fn new(
        caller: &str,
        compress: bool,
        network: Option<Arc<dyn Network>>,
        #[cfg(feature = "tls")] tls: Option<crate::transport::TlsConfig>,
    ) -> Self {
        // Peers are on the same network: a connect that takes a second is not coming, and
        // the call waiting on it should move to another replica.
        let options = ConnectOptions {
            connect_timeout: Duration::from_secs(1),
            caller: Some(caller.into()),
            keepalive: Some(super::KEEPALIVE),
            keepalive_timeout: Some(super::KEEPALIVE_TIMEOUT),
            compress,
            #[cfg(feature = "tls")]
            tls,
            ..ConnectOptions::default()
        };
        Peers { map: Mutex::default(), dial: Arc::new(Dial { options, network }) }
    }

    pub(crate) fn get(&self, addr: SocketAddr) -> Arc<Peer> {
        self.map.lock().unwrap().entry(addr).or_insert_with(|| Arc::new(Peer::new(addr, self.dial.clone()))).clone()
    }

    /// Why the last connection attempt to `addr` failed, if it did and none succeeded since.
    pub(crate) fn refused(&self, addr: SocketAddr) -> Option<Error> {
        let peer = self.map.lock().unwrap().get(&addr).cloned()?;
        let refused = peer.refused.lock().unwrap().clone();
        refused
    }

    /// The open connection to `addr`, if there is one (none is opened).
    pub(crate) fn connected(&self, addr: SocketAddr) -> Option<Connection> {
        self.map.lock().unwrap().get(&addr)?.open_conn()
    }

    /// A connection for one exchange with `addr`: the open one if there is, else a new one
    /// that is not kept (closed when the caller drops it), so that a node asking a member
    /// it does not call for something opens no lasting connection (subsets stay bounded).
    pub(crate) async fn once(&self, addr: SocketAddr) -> Result<Connection, Error> {
        match self.connected(addr) {
            Some(conn) => Ok(conn),
            None => self.dial.to(addr).await,
        }
    }

    pub(crate) fn all(&self) -> Vec<Arc<Peer>> {
        self.map.lock().unwrap().values().cloned().collect()
    }

    /// Closes the connections to peers not in `keep` that started no call for `after`
    /// (subsetting: what a caller opened outside its subsets — a sticky key's replica, a
    /// subset it left — is given back). Returns how many it closed.
    pub(crate) fn close_unused_outside(&self, keep: &[SocketAddr], after: Duration, now: Instant) -> usize {
        let mut closed = 0;
        for peer in self.all() {
            let Some(conn) = peer.open_conn() else { continue };
            // Its streams count: they run on its lane.
            let (calls, busy) = peer.activity(&conn);
            let mut quiet = peer.quiet.lock().unwrap();
            if quiet.0 != calls || keep.contains(&peer.addr) {
                *quiet = (calls, now);
            } else if now.duration_since(quiet.1) >= after && !busy {
                drop(quiet);
                // Given back, not broken: the peer stays pickable (a call opens a new
                // connection), with no backoff.
                peer.given_back.store(true, std::sync::atomic::Ordering::Release);
                peer.close();
                closed += 1;
            }
        }
        closed
    }

    /// Forgets peers no longer in the view, closing their connections.
    pub(crate) fn retain(&self, live: &[SocketAddr]) {
        self.map.lock().unwrap().retain(|addr, peer| {
            let keep = live.contains(addr);
            if !keep {
                peer.close();
            }
            keep
        });
    }
}

/// What the picker needs to know of a peer it may pick.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pickable {
    /// Ejected for the service (it answered it badly).
    pub(crate) ejected: bool,
    /// Its last connection broke or could not be made, and none is open: it may be gone
    /// (a killed container's address answers nothing), so no call should be the one to
    /// find out — a connect there waits out the whole connect timeout.
    pub(crate) recovering: bool,
}

/// One peer: its connection (if any), backoff and observed latency.
pub(crate) struct Peer {
    pub(crate) addr: SocketAddr,
    dial: Arc<Dial>,
    conn: Mutex<Option<Connection>>,
    /// The stream lane: a second connection for calls that stream (see
    /// [`stream_connection`](Self::stream_connection)), open while they run.
    lane: Mutex<Option<Connection>>,
    lane_connecting: tokio::sync::Mutex<()>,
    /// Until when streams share the connection: the last lane could not be opened.
    lane_refused_until: Mutex<Option<Instant>>,
    /// Serializes connection attempts so a burst of calls opens one connection.
    connecting: tokio::sync::Mutex<()>,
    /// A reconnection runs in the background ([`probe`](Self::probe)).
    probing: std::sync::atomic::AtomicBool,
    /// Connection attempts that failed so far: a call that waited for the lock while one
    /// failed fails too.
    failed_connects: std::sync::atomic::AtomicU64,
    /// Why the last connection attempt failed (none: it succeeded, or none was made).
    refused: Mutex<Option<Error>>,
    health: Mutex<Health>,
    /// Who the peer proved to be when last connected (mutual TLS).
    identity: Mutex<Option<Arc<Identity>>>,
    /// Calls its connection had started when last looked at, and since when that count
    /// stands still ([`Peers::close_unused_outside`]).
    quiet: Mutex<(u64, Instant)>,
    /// Its connection was closed as unused: its end is no failure.
    given_back: std::sync::atomic::AtomicBool,
}

struct Health {
    down_until: Option<Instant>,
    failures: u32,
    ewma: PeakEwma,
    /// How it has been answering each service (outlier ejection).
    accruals: Vec<(Box<str>, Accrual)>,
    /// The end of its latest ejection: nothing to look up before it.
    ejected_until: Option<Instant>,
}

impl Peer {
    fn new(addr: SocketAddr, dial: Arc<Dial>) -> Peer {
        Peer {
            addr,
            dial,
            conn: Mutex::new(None),
            lane: Mutex::new(None),
            lane_connecting: tokio::sync::Mutex::new(()),
            lane_refused_until: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
            probing: std::sync::atomic::AtomicBool::new(false),
            failed_connects: std::sync::atomic::AtomicU64::new(0),
            refused: Mutex::new(None),
            identity: Mutex::new(None),
            quiet: Mutex::new((0, crate::clock::now())),
            given_back: std::sync::atomic::AtomicBool::new(false),
            health: Mutex::new(Health {
                down_until: None,
                failures: 0,
                ewma: PeakEwma::new(Duration::from_millis(1), EWMA_TAU, crate::clock::now()),
                accruals: Vec::new(),
                ejected_until: None,
            }),
        }
    }

    /// Whether it may be picked for `service` now: `None` while in backoff after a failure
    /// or while its connection drains; else whether it is ejected for `service` (one look
    /// at its health, as the picker asks for every candidate of every call).
    pub(crate) fn pickable(&self, service: &str, now: Instant) -> Option<Pickable> {
        let (ejected, failed) = {
            let h = self.health.lock().unwrap();
            if h.down_until.is_some_and(|t| t > now) {
                return None;
            }
            let ejected = h.ejected_until.is_some_and(|t| t > now)
                && h.accruals.iter().any(|(s, a)| &**s == service && a.ejected(now));
            (ejected, h.failures > 0)
        };
        match self.open_conn().map(|c| c.state()) {
            Some(State::Draining) => None,
            open => Some(Pickable { ejected, recovering: failed && open.is_none() }),
        }
    }

    /// Expected cost of one more call: peak-EWMA latency × (calls in flight + 1), the
    /// streams on its lane included, keepalive pings not (one a second on every
    /// connection made an idle peer look busy).
    pub(crate) fn load(&self) -> f64 {
        let in_flight =
            self.open_conn().map_or(0, |c| c.calls_in_flight()) + self.open_lane().map_or(0, |c| c.calls_in_flight());
        self.health.lock().unwrap().ewma.load(in_flight)
    }

    pub(crate) fn observe(&self, rtt: Duration) {
        let mut h = self.health.lock().unwrap();
        h.ewma.observe(rtt, crate::clock::now());
        h.failures = 0;
    }

    /// True while ejected from picking for `service` (it answered it badly).
    pub(crate) fn ejected(&self, service: &str, now: Instant) -> bool {
        let h = self.health.lock().unwrap();
        h.ejected_until.is_some_and(|t| t > now) && h.accruals.iter().any(|(s, a)| &**s == service && a.ejected(now))
    }

    /// Runs `f` on how the peer has been answering `service`.
    pub(crate) fn accrual<T>(&self, service: &str, f: impl FnOnce(&mut Accrual) -> T) -> T {
        let mut h = self.health.lock().unwrap();
        let h = &mut *h;
        let i = match h.accruals.iter().position(|(s, _)| &**s == service) {
            Some(i) => i,
            None => {
                h.accruals.push((service.into(), Accrual::default()));
                h.accruals.len() - 1
            }
        };
        let out = f(&mut h.accruals[i].1);
        h.ejected_until = h.accruals.iter().filter_map(|(_, a)| a.ejected_until()).max();
        out
    }

    /// Services this peer is ejected for right now.
    pub(crate) fn ejections(&self, now: Instant) -> Vec<String> {
        let h = self.health.lock().unwrap();
        h.accruals.iter().filter(|(_, a)| a.ejected(now)).map(|(s, _)| s.to_string()).collect()
    }

    /// The round trip of its connection's latest keepalive ping.
    pub(crate) fn latency(&self) -> Option<Duration> {
        self.open_conn()?.latency()
    }

    pub(crate) fn open_conn(&self) -> Option<Connection> {
        self.conn.lock().unwrap().as_ref().filter(|c| c.state() != State::Closed).cloned()
    }

    /// The open connection, or a new one.
    pub(crate) async fn connection(self: &Arc<Self>) -> Result<Connection, Error> {
        self.connect(true).await
    }

    /// As [`connection`](Self::connection); a failed attempt that `tells` makes the calls
    /// waiting for it fail at once (a background attempt does not: on a loaded machine it
    /// may fail where a call's own attempt would not).
    async fn connect(self: &Arc<Self>, tells: bool) -> Result<Connection, Error> {
        if let Some(c) = self.open_conn() {
            return Ok(c);
        }
        let failed_before = self.failed_connects.load(std::sync::atomic::Ordering::Acquire);
        let _one_at_a_time = self.connecting.lock().await;
        if let Some(c) = self.open_conn() {
            return Ok(c);
        }
        // An attempt that failed while this call waited for its turn answers for it too:
        // fail now, so the call moves to another replica, instead of waiting out a connect
        // timeout of its own (calls queued on a black-holed peer would otherwise finish
        // one connect timeout apart: the eighth after eight seconds).
        if self.failed_connects.load(std::sync::atomic::Ordering::Acquire) != failed_before {
            return Err(Error::unavailable(format!(
                "connection to {}: unreachable (a connect just failed)",
                self.addr
            )));
        }
        match self.dial.to(self.addr).await {
            Ok(conn) => {
                *self.conn.lock().unwrap() = Some(conn.clone());
                *self.quiet.lock().unwrap() = (0, crate::clock::now());
                self.identity.lock().unwrap().clone_from(&conn.peer_identity().cloned());
                self.health.lock().unwrap().down_until = None;
                *self.refused.lock().unwrap() = None;
                // Stop picking this peer the moment its connection breaks, long before
                // gossip declares it dead.
                let (peer, watched) = (Arc::downgrade(self), conn.clone());
                tokio::spawn(async move {
                    watched.unusable().await;
                    if let (Some(peer), State::Closed) = (peer.upgrade(), watched.state()) {
                        if !peer.given_back.swap(false, std::sync::atomic::Ordering::AcqRel) {
                            peer.mark_down();
                        }
                    }
                });
                Ok(conn)
            }
            Err(e) => {
                *self.refused.lock().unwrap() = Some(e.clone());
                self.mark_down();
                if tells {
                    self.failed_connects.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
                }
                Err(e)
            }
        }
    }

    fn open_lane(&self) -> Option<Connection> {
        self.lane.lock().unwrap().as_ref().filter(|c| c.state() == State::Open).cloned()
    }

    /// The connection for a call that streams (items, or an answer of items), given the
    /// peer's `main` connection: a second connection to the peer, the stream lane, opened
    /// by the first such call and closed once idle ([`LANE_IDLE`]). A full-speed stream
    /// fills the socket buffers between two nodes; on a connection of its own, the unary
    /// calls beside it never wait behind its bytes (head-of-line blocking: 2.3–2.8 × a
    /// unary call's p50 on a shared connection, 1.2–1.4 × beside it). Two connections per
    /// peer (a third only while a draining lane finishes its streams). If the lane cannot
    /// be opened, `main` carries the call, and the streams after it for [`LANE_BACKOFF`].
    pub(crate) async fn stream_connection(self: &Arc<Self>, main: Connection) -> Connection {
        if let Some(lane) = self.open_lane() {
            return lane;
        }
        let refused = || self.lane_refused_until.lock().unwrap().is_some_and(|t| t > crate::clock::now());
        if refused() {
            return main;
        }
        let _one_at_a_time = self.lane_connecting.lock().await;
        if let Some(lane) = self.open_lane() {
            return lane;
        }
        if refused() {
            return main; // the attempt this call waited for failed
        }
        let lane = match self.dial.to(self.addr).await {
            Ok(lane) => lane,
            Err(e) => {
                tracing::debug!(peer = %self.addr, error = %e, "no stream lane: streams share the connection");
                *self.lane_refused_until.lock().unwrap() = Some(crate::clock::now() + LANE_BACKOFF);
                return main;
            }
        };
        *self.lane.lock().unwrap() = Some(lane.clone());
        tokio::spawn(close_when_idle(Arc::downgrade(self), lane.clone()));
        lane
    }

    /// Calls started on its connections so far, and whether any is in flight.
    fn activity(&self, conn: &Connection) -> (u64, bool) {
        let lane = self.lane.lock().unwrap().clone();
        let started = conn.calls_started() + lane.as_ref().map_or(0, |l| l.calls_started());
        (started, conn.calls_in_flight() > 0 || lane.is_some_and(|l| l.calls_in_flight() > 0))
    }

    /// False when the peer proved an identity (mutual TLS) that does not carry `service`:
    /// it must never be called for it. Unknown (never connected, plaintext): true.
    pub(crate) fn may_serve(&self, service: &str) -> bool {
        self.identity.lock().unwrap().as_ref().is_none_or(|id| id.proves(service))
    }

    /// Reconnects in the background (one attempt at a time): the peer is picked again
    /// once it has a connection, or its backoff grows.
    pub(crate) fn probe(self: &Arc<Self>) {
        if self.probing.swap(true, std::sync::atomic::Ordering::AcqRel) {
            return;
        }
        let peer = self.clone();
        tokio::spawn(async move {
            if let Err(e) = peer.connect(false).await {
                tracing::debug!(peer = %peer.addr, error = %e, "reconnecting in the background failed");
            }
            peer.probing.store(false, std::sync::atomic::Ordering::Release);
        });
    }

    /// Keeps the peer out of picks for a backoff that grows with each failure.
    pub(crate) fn mark_down(&self) {
        let mut h = self.health.lock().unwrap();
        h.failures = h.failures.saturating_add(1);
        let backoff = BACKOFF_MIN.saturating_mul(1 << h.failures.min(5).saturating_sub(1)).min(BACKOFF_MAX);
        h.down_until = Some(crate::clock::now() + backoff);
    }

    fn close(&self) {
        if let Some(c) = self.conn.lock().unwrap().take() {
            c.close();
        }
        if let Some(c) = self.lane.lock().unwrap().take() {
            c.close();
        }
    }
}

/// Closes a peer's stream `lane` once idle: no call started on it for [`LANE_IDLE`] and
/// none in flight. It leaves the slot first, so no new call gets it; the calls that got it
/// just before then still register (a second's grace) and run to their end. A lane the
/// peer drains ends its streams within the peer's drain and closes itself.
async fn close_when_idle(peer: std::sync::Weak<Peer>, lane: Connection) {
    let mut started = lane.calls_started();
    while tokio::time::timeout(LANE_IDLE, lane.unusable()).await.is_err() {
        let now = lane.calls_started();
        if now == started && lane.calls_in_flight() == 0 {
            break;
        }
        started = now;
    }
    if let Some(peer) = peer.upgrade() {
        let mut slot = peer.lane.lock().unwrap();
        if slot.as_ref().is_some_and(|c| c.same(&lane)) {
            *slot = None;
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    while lane.calls_in_flight() > 0 && lane.state() != State::Closed {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    lane.close();
}
