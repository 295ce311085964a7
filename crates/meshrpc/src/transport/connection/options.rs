//! What a calling connection is opened with: timeouts, limits, the caller's name, its
//! keepalive and (feature `tls`) its credentials.

use std::{sync::Arc, time::Duration};

use crate::proto::DEFAULT_MAX_FRAME;

/// Connection limits and timeouts.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ConnectOptions {
    /// How long connecting and the handshake may take.
    pub connect_timeout: Duration,
    /// Largest frame accepted from the node.
    pub max_frame: u32,
    /// Who is calling, for the peer's request logs (a cluster sets its node name).
    pub caller: Option<Arc<str>>,
    /// How often an open connection pings the node (3 s; nodes close mesh connections
    /// silent for 10 s). `None`: never.
    pub keepalive: Option<Duration>,
    /// How long a connection whose ping is out may receive nothing before it is taken
    /// for dead and closed (anything received counts, not only the pong: a node busy
    /// sending answers is alive). `None`: three keepalive periods.
    pub keepalive_timeout: Option<Duration>,
    /// Compress requests of 1 KiB or more with zstd when the node takes it (wire feature
    /// `ZSTD`). Off by default; answers come compressed when the node is told to
    /// (`ServerConfig::compress`), whatever this says.
    pub compress: bool,
    /// Mutual TLS with the node (feature `tls`): the caller's credentials.
    #[cfg(feature = "tls")]
    pub tls: Option<crate::transport::TlsConfig>,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(3),
            max_frame: DEFAULT_MAX_FRAME,
            caller: None,
            keepalive: Some(Duration::from_secs(3)),
            keepalive_timeout: None,
            compress: false,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }
}

impl ConnectOptions {
    /// The same options with another connect and handshake timeout.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The same options compressing large requests or not (wire feature `ZSTD`).
    pub fn compress(mut self, on: bool) -> Self {
        self.compress = on;
        self
    }

    /// The same options naming the caller in the node's request logs.
    pub fn caller(mut self, name: impl Into<Arc<str>>) -> Self {
        self.caller = Some(name.into());
        self
    }

    /// The same options with another keepalive period (`None`: no pings).
    pub fn keepalive(mut self, every: Option<Duration>) -> Self {
        self.keepalive = every;
        self
    }

    /// The same options with another keepalive timeout: how long a connection whose
    /// ping is out may receive nothing.
    pub fn keepalive_timeout(mut self, timeout: Duration) -> Self {
        self.keepalive_timeout = Some(timeout);
        self
    }

    /// The same options over mutual TLS with `tls`'s credentials (feature `tls`).
    #[cfg(feature = "tls")]
    pub fn tls(mut self, tls: crate::transport::TlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// The same options with another limit on frames from the node.
    pub fn max_frame(mut self, bytes: u32) -> Self {
        self.max_frame = bytes;
        self
    }
}
