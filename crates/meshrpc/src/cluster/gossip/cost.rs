//! What gossip costs a node (in `/metrics`): datagrams and bytes each way, and the
//! datagrams its seal dropped.

use std::sync::atomic::{AtomicU64, Ordering};

/// Gossip datagrams and bytes a node sent and received (sent as sealed, received as
/// opened, with `tls`).
#[derive(Debug, Default)]
pub(crate) struct GossipCost {
    pub(crate) sent: AtomicU64,
    pub(crate) sent_bytes: AtomicU64,
    pub(crate) received: AtomicU64,
    pub(crate) received_bytes: AtomicU64,
    /// Datagrams dropped by sealed gossip: not sealed with the cluster's key (random,
    /// forged, or unsealed), sealed but replayed or too old. This node's own, not the
    /// process's.
    pub(crate) forged: AtomicU64,
    pub(crate) replayed: AtomicU64,
}

impl GossipCost {
    pub(crate) fn figures(&self) -> [crate::metrics::Figure; 6] {
        use crate::metrics::Figure;
        let v = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let (messages, bytes) = ("Gossip datagrams, by direction", "Bytes of gossip datagrams, by direction");
        [
            Figure::counter("meshrpc_gossip_datagrams", messages, v(&self.sent)).with_label("direction", "sent"),
            Figure::counter("meshrpc_gossip_datagrams", messages, v(&self.received))
                .with_label("direction", "received"),
            Figure::counter("meshrpc_gossip_bytes", bytes, v(&self.sent_bytes)).with_label("direction", "sent"),
            Figure::counter("meshrpc_gossip_bytes", bytes, v(&self.received_bytes)).with_label("direction", "received"),
            Figure::counter(
                "meshrpc_gossip_forged",
                "Gossip datagrams dropped: not sealed with the cluster's gossip key",
                v(&self.forged),
            ),
            Figure::counter(
                "meshrpc_gossip_replayed",
                "Sealed gossip datagrams dropped as replayed or too old",
                v(&self.replayed),
            ),
        ]
    }
}
