//! The network seam: where a node's sockets come from. By default the operating system's
//! (tokio's TCP and UDP); a [`Network`] given to a [`Server`](crate::server::Server) or a
//! cluster (`ClusterBuilder::network`) replaces them all — the mesh port, the connections
//! to peers and the gossip socket — with its own: the simulation under `sim/` gives each
//! node turmoil's simulated network that way. Plaintext mesh connections only: a node on a
//! `Network` has no TLS, no HTTP on its mesh port and no admin port.

use std::{io, net::SocketAddr, sync::Arc};

use futures_core::future::BoxFuture;

use super::{ConnectOptions, Connection, StreamLink};
use crate::error::Error;

/// A source of connections and datagram sockets.
pub trait Network: Send + Sync + 'static {
    /// Opens a stream connection to `addr`.
    fn connect(&self, addr: SocketAddr) -> BoxFuture<'static, io::Result<StreamLink>>;
    /// Listens for stream connections at `addr`.
    fn listen(&self, addr: SocketAddr) -> BoxFuture<'static, io::Result<Box<dyn Listener>>>;
    /// Binds a datagram socket at `addr` (port 0: any free one).
    fn bind_datagrams(&self, addr: SocketAddr) -> BoxFuture<'static, io::Result<Box<dyn Datagrams>>>;
}

/// A listening socket of a [`Network`].
pub trait Listener: Send + Sync + 'static {
    /// Where it listens.
    fn local_addr(&self) -> SocketAddr;
    /// The next connection and who it is from. Cancel-safe.
    fn accept(&self) -> BoxFuture<'_, io::Result<(StreamLink, SocketAddr)>>;
}

/// A datagram socket of a [`Network`].
pub trait Datagrams: Send + Sync + 'static {
    /// Where it is bound.
    fn local_addr(&self) -> SocketAddr;
    /// The next datagram into `buf`: its length and sender. Cancel-safe.
    fn recv_from<'a>(&'a self, buf: &'a mut [u8]) -> BoxFuture<'a, io::Result<(usize, SocketAddr)>>;
    /// Sends `datagram` to `to` if the socket can take it now.
    fn try_send_to(&self, datagram: &[u8], to: SocketAddr) -> io::Result<usize>;
}

/// Connects to `addr` through `network` (the operating system's without one), then shakes
/// hands as [`Connection::connect`] does.
#[cfg_attr(not(feature = "cluster"), allow(dead_code))]
pub(crate) async fn connect(
    network: Option<&Arc<dyn Network>>,
    addr: SocketAddr,
    opts: ConnectOptions,
) -> Result<Connection, Error> {
    let Some(network) = network else { return Connection::connect(addr, opts).await };
    let link = tokio::time::timeout(opts.connect_timeout, network.connect(addr))
        .await
        .map_err(|_| Error::unavailable("connect timed out"))?
        .map_err(|e| Error::from(e).context("connect"))?;
    Connection::over(link, opts).await
}
