//! The one liveness mechanism of a calling connection: a ping every period, and a
//! connection that receives nothing for the timeout after its ping went out is dead.
//! Anything received counts, not only the pong: a node busy sending answers is alive,
//! though its pong waits behind them.

use std::{
    sync::{atomic::Ordering, Weak},
    time::Duration,
};

use super::{Connection, Handle};
use crate::{error::Error, proto::ConnState};

/// Pings the node every `every` while the connection is open and has users, recording
/// each round trip; closes it when nothing at all arrived within `timeout` of a ping.
pub(super) async fn run(handle: Weak<Handle>, every: Duration, timeout: Duration) {
    let mut tick = tokio::time::interval(every);
    // A ping that waited out its timeout does not make up for the ticks it missed.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(handle) = handle.upgrade() else { return };
        let conn = Connection { handle };
        if conn.state() == ConnState::Closed {
            return;
        }
        let inner = conn.inner();
        inner.heard.store(false, Ordering::Relaxed);
        match conn.ping(timeout).await {
            Ok(rtt) => *inner.latency.lock().unwrap() = Some(rtt),
            // Its pong waits behind what it is sending us.
            Err(Error::Timeout) if inner.heard.load(Ordering::Relaxed) => {}
            Err(Error::Timeout) => {
                if conn.state() == ConnState::Open {
                    tracing::warn!(peer = %inner.peer, ?timeout, "keepalive: nothing received, closing the connection");
                    inner
                        .close(Error::unavailable(format!("{} sent nothing for {timeout:?} after a ping", inner.peer)));
                }
                return;
            }
            Err(_) => {} // not sent (draining, closing): the next tick looks again
        }
    }
}
