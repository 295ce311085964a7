//! The tokio shell: drives `proto` over a [`Link`] (TCP today; anything that is
//! `AsyncRead + AsyncWrite` through [`StreamLink`]), and the one accept loop of the crate.
//! It waits on readiness, never on a timer.

mod accept;
mod connection;
mod guard;
mod link;
mod network;
mod overcap;
mod port_stream;
mod sender;
mod serve;
mod streams;
#[cfg(feature = "tls")]
mod tls;
#[cfg(feature = "tls")]
mod tls_link;
#[cfg(feature = "tls")]
mod tls_sign;

#[cfg_attr(not(feature = "http"), allow(unused_imports))]
pub(crate) use accept::{accept_loop, serve_port, Cap, Door, Port};
pub use connection::{connect, ConnectOptions, Connection, PendingCall};
pub use guard::PortCounters;
#[cfg(feature = "cluster")]
pub(crate) use guard::GOSSIP_GARBAGE;
pub(crate) use guard::{FrameBudget, Guard};
pub use link::{Link, Reading, Ready, StreamLink, TcpLink};
#[cfg_attr(not(feature = "cluster"), allow(unused_imports))]
pub(crate) use network::connect as connect_through;
pub use network::{Datagrams, Listener, Network};
#[cfg_attr(not(feature = "http"), allow(unused_imports))]
pub(crate) use overcap::Probes;
#[cfg_attr(not(feature = "http"), allow(unused_imports))] // what a Door is given
pub(crate) use port_stream::Rewind;
pub(crate) use serve::{serve_mesh, MeshLimits};
#[cfg(feature = "tls")]
pub use tls::{fingerprint, https_config, identity_of, TlsConfig, CA_FILE, CERT_FILE, GOSSIP_KEY_FILE, KEY_FILE};
#[cfg(all(feature = "cluster", feature = "tls"))]
pub(crate) use tls_sign::Signed;

/// Resolves once shutdown was requested (or the one who could request it is gone).
pub(crate) async fn stopped(rx: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}
