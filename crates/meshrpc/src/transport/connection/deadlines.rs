//! The one deadline timer of a calling connection: `CallerState` keeps every call's
//! deadline and says which is soonest; this sleeps until then and fails what is due.

use super::Inner;
use crate::error::Error;

impl Inner {
    /// After a call is registered: wakes the deadline timer if this call's is sooner.
    pub(super) fn registered(&self, r: crate::proto::Registered) {
        if r.rearm {
            self.rearm.notify_one();
        }
    }

    /// The one timer of the connection: sleeps until the soonest deadline of a call in
    /// flight, then fails every call past its deadline with `timeout` and tells the peer.
    pub(super) async fn deadline_loop(&self) {
        loop {
            let rearm = self.rearm.notified();
            tokio::pin!(rearm);
            rearm.as_mut().enable();
            let next = self.proto.lock().unwrap().next_deadline();
            match next {
                Some(at) => tokio::select! {
                    _ = tokio::time::sleep_until(at.into()) => self.expire(),
                    _ = rearm => {}
                },
                None => rearm.await,
            }
        }
    }

    pub(super) fn expire(&self) {
        let expired = self.proto.lock().unwrap().expire(crate::clock::now());
        for (tx, stream, cancel) in expired {
            if let Some(tx) = tx {
                let _ = tx.send(Err(Error::Timeout));
            }
            if let Some(stream) = stream {
                stream.fail(Error::Timeout);
            }
            let _ = self.sender.send(&cancel, false);
        }
        self.close_if_drained();
    }
}
