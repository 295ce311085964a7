//! Where a call from the network is let in: the caller a node verified is stamped on
//! it, and with a policy (feature `tls`) checked before any handler or layer runs. The
//! mesh serving loop, RPC over HTTP and the gateway all call [`Admission::admit`].

use std::sync::Arc;

use crate::{call::Call, error::Error, identity::Identity};

/// What a node knows of a connection's caller, stamped on each of its calls; with a
/// policy (feature `tls`), the check every call from the network passes first.
#[derive(Debug, Clone, Default)]
pub(crate) struct Admission {
    pub(crate) peer: Option<Arc<Identity>>,
    #[cfg(feature = "tls")]
    pub(crate) access: Option<Arc<crate::access::Access>>,
}

impl Admission {
    /// Stamps the caller on `call`; `Err(permission_denied)` when the policy refuses it.
    pub(crate) fn admit(&self, call: &mut Call) -> Result<(), Error> {
        call.peer.clone_from(&self.peer);
        #[cfg(feature = "tls")]
        if let Some(access) = &self.access {
            return access.admit(call.peer.as_deref(), &call.service, &call.method);
        }
        Ok(())
    }
}
